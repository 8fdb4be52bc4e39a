// sdpa_decode's variant of attention_subgroup.wgsl: read-only caches, queries used as given.

@group(0) @binding(2) var<storage, read> kc: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> vc: array<vec4<u32>>;

// Quad `d4` (a vec4 of f32) of the query row starting at vec4 `base`.
fn q_quad(base: u32, d4: u32, pos: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(q_in[base + d4]);
}
