// Row reduction with subgroup shuffles, and the entry point, for a row body file (norm.wgsl, softmax.wgsl)
// that provides:
//   WG (threads per workgroup), TPR (threads per row, a power of two dividing WG; a row's threads are
//   consecutive invocations), merge(stage, a, b) (for each stage the body reduces by, an associative merge
//   of two partials that gives the same bits for (a, b) and (b, a)), empty() (a partial that every stage's
//   merge leaves the other operand unchanged with), and run(g, li): workgroup g's work, which calls
//   row_reduce from every thread (uniform control flow), with a workgroupBarrier between two calls.
// row_reduce_workgroup.wgsl is the same interface built on workgroup memory alone.
//
// A row's partials are merged by xor shuffles within the subgroup (every lane ends with the same bits,
// since combine is symmetric); rows longer than a subgroup then put one partial per subgroup in workgroup
// memory, and after one barrier each subgroup merges its row's entries with shuffles again. One barrier
// in all, against the three of the workgroup-memory tree.

// The adapter's smallest subgroup size: rows of at most this many threads never leave their subgroup.
override SG_MIN: u32 = 4u;

// red[s]: the partial of subgroup s of the workgroup (its row's share).
var<workgroup> red: array<vec4<f32>, WG>;
var<private> sg_size_: u32;

// Every thread of a row gets the row's combined partial. `lane` is the thread's index within its row.
fn row_reduce(li: u32, lane: u32, v: vec4<f32>, stage: u32) -> vec4<f32> {
    let sgs = sg_size_;
    var a = v;
    for (var o = 1u; o < min(TPR, sgs); o <<= 1u) {
        a = merge(stage, a, subgroupShuffleXor(a, o));
    }
    if (TPR <= SG_MIN) {
        return a;
    }
    // Subgroup s holds invocations [s * sgs, (s + 1) * sgs) (consecutive, as every driver we know lays
    // out a one-dimensional workgroup).
    if (li % sgs == 0u) {
        red[li / sgs] = a;
    }
    workgroupBarrier();
    if (TPR <= sgs) {
        return a;
    }
    let nsub = TPR / sgs;
    let first = (li - lane) / sgs;
    var b = empty();
    for (var j = li % sgs; j < nsub; j += sgs) {
        b = merge(stage, b, red[first + j]);
    }
    for (var o = 1u; o < sgs; o <<= 1u) {
        b = merge(stage, b, subgroupShuffleXor(b, o));
    }
    return b;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32, @builtin(subgroup_size) sgs: u32) {
    sg_size_ = sgs;
    run(linear_group_id(wid, nwg), li);
}
