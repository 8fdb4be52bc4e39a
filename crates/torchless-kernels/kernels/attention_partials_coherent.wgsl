// attention_partials.wgsl's binding, @coherent (wgpu's MEMORY_DECORATION_COHERENT: SPIR-V Coherent,
// HLSL globallycoherent): MERGE's last workgroup reads the partials other workgroups wrote, so its loads
// must not be served from a cache that does not see their stores (an SM's L1 on NVIDIA).
@group(0) @binding(4) @coherent var<storage, read_write> part: array<vec4<u32>>;
