// Row reduction through workgroup memory (no subgroup builtins), and the entry point, for a row body file
// (norm.wgsl, softmax.wgsl); the interface is row_reduce_subgroup.wgsl's, plus CHUNK (partials merged per
// thread in the first level, a power of two dividing TPR).

var<workgroup> red: array<vec4<f32>, WG>;

// Every thread of a row gets the row's combined partial, in two levels (two barriers instead of
// log2(TPR)): one thread per CHUNK partials, then every thread over the TPR / CHUNK chunk results
// (broadcast reads, in the same order for every thread: the same bits).
fn row_reduce(li: u32, lane: u32, v: vec4<f32>, stage: u32) -> vec4<f32> {
    red[li] = v;
    workgroupBarrier();
    let base = li - lane;
    if (lane < TPR / CHUNK) {
        let i0 = base + lane * CHUNK;
        var acc = red[i0];
        for (var j = 1u; j < CHUNK; j++) {
            acc = merge(stage, acc, red[i0 + j]);
        }
        red[i0] = acc;
    }
    workgroupBarrier();
    var acc = red[base];
    for (var j = 1u; j < TPR / CHUNK; j++) {
        acc = merge(stage, acc, red[base + j * CHUNK]);
    }
    return acc;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    run(linear_group_id(wid, nwg), li);
}
