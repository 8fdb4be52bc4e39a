// Workgroup reduction through a workgroup-memory tree (no subgroup builtins), and the entry point, for a
// body file (gemv.wgsl, qgemv.wgsl) that provides:
//   WG (threads per team, a power of two), RED_LEN (== WG · TEAMS here), MAX_SLOTS (most accumulator
//   slots), li_ (the thread's index in its team, set by `run`), p.n_groups (teams with work), and
//   run(g, li): team g's work, which hands slot j's partial sums to put(j, ·) from every thread (in
//   uniform control flow), then after a workgroupBarrier reads the team's sums back with total(j).
// The body may read wli_, the thread's index in the whole workgroup. A workgroup is TEAMS teams of WG
// threads, each reducing over its own threads.
// reduce_subgroup.wgsl is the same interface built on subgroup operations.

override TEAMS: u32 = 1u;

// Tree scratch, one vec4 per thread.
var<workgroup> red: array<vec4<f32>, RED_LEN>;
// fin[team · MAX_SLOTS + j]: the team's sum of slot j.
var<workgroup> fin: array<vec4<f32>, MAX_SLOTS * TEAMS>;
var<private> team_: u32;
var<private> wli_: u32;

fn put(j: u32, v: vec4<f32>) {
    let base = team_ * WG;
    red[base + li_] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (li_ < stride) {
            red[base + li_] += red[base + li_ + stride];
        }
        workgroupBarrier();
    }
    // Thread 0 alone reads red[base] here, and the next put's first write to it is its own: no barrier
    // needed.
    if (li_ == 0u) {
        fin[team_ * MAX_SLOTS + j] = red[base];
    }
}

fn total(j: u32) -> vec4<f32> {
    return fin[team_ * MAX_SLOTS + j];
}

@compute @workgroup_size(WG * TEAMS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let g = linear_group_id(wid, nwg);
    if (g * TEAMS >= p.n_groups) {
        return;
    }
    team_ = li / WG;
    wli_ = li;
    run(g * TEAMS + team_, li % WG);
}
