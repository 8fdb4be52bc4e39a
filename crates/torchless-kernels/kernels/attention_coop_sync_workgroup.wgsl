// attention_coop.wgsl's synchronisation on every adapter but NVIDIA's (see
// attention_coop_sync_subgroup.wgsl): a subgroup's own round trips through workgroup memory wait on
// the whole workgroup, so the rescale is decided for the whole workgroup, keeping its barriers in
// uniform control flow.

// Per subgroup: whether a row of it moves its reference max this tile (1) or not (0).
var<workgroup> c_need: array<u32, 8>;

fn c_sync_own() {
    workgroupBarrier();
}

// Whether any row of the workgroup moves its reference max this tile (the same for every invocation).
fn c_rescale_needed(need: bool, sg: u32, sl: u32) -> bool {
    let any_need = subgroupAny(need);
    if (sl == 0u) {
        c_need[sg] = u32(any_need);
    }
    let needs = workgroupUniformLoad(&c_need);
    return (needs[0] | needs[1] | needs[2] | needs[3] | needs[4] | needs[5] | needs[6] | needs[7]) != 0u;
}
