// Workgroup reduction through a workgroup-memory tree (no subgroup builtins), and the entry point, for a
// body file (gemv.wgsl, qgemv.wgsl) that provides:
//   WG (threads per workgroup, a power of two), RED_LEN (== WG here), MAX_SLOTS (most accumulator slots),
//   li_ (the thread's local index, set by `run`), p.n_groups (workgroups with work), and
//   run(g, li): workgroup g's work, which hands slot j's partial sums to put(j, ·) from every thread (in
//   uniform control flow), then after a workgroupBarrier reads the sums back with total(j).
// reduce_subgroup.wgsl is the same interface built on subgroupAdd.

// Tree scratch, one vec4 per thread.
var<workgroup> red: array<vec4<f32>, RED_LEN>;
// fin[j]: the workgroup's sum of slot j.
var<workgroup> fin: array<vec4<f32>, MAX_SLOTS>;

fn put(j: u32, v: vec4<f32>) {
    red[li_] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (li_ < stride) {
            red[li_] += red[li_ + stride];
        }
        workgroupBarrier();
    }
    // Thread 0 alone reads red[0] here, and the next put's first write to red[0] is its own: no barrier needed.
    if (li_ == 0u) {
        fin[j] = red[0];
    }
}

fn total(j: u32) -> vec4<f32> {
    return fin[j];
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let g = linear_group_id(wid, nwg);
    if (g >= p.n_groups) {
        return;
    }
    run(g, li);
}
