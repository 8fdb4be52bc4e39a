// attention_coop.wgsl's synchronisation on NVIDIA (ops/attention.rs `flash_coop_subgroup_sync`): a
// subgroup's own round trips through workgroup memory (its score, probability and rescale rows) wait on
// the subgroup alone, and each subgroup decides its rescale for itself. naga lowers subgroupBarrier to a
// subgroup-scoped OpControlBarrier whose memory semantics name subgroup memory, which Vulkan's memory
// model does not apply to workgroup memory; NVIDIA's driver runs it as a warp sync, which orders shared
// memory as CUDA's __syncwarp does, so the rows are ordered there. Other adapters take
// attention_coop_sync_workgroup.wgsl.

fn c_sync_own() {
    subgroupBarrier();
}

// Whether any row of subgroup sg moves its reference max this tile.
fn c_rescale_needed(need: bool, sg: u32, sl: u32) -> bool {
    return subgroupAny(need);
}
