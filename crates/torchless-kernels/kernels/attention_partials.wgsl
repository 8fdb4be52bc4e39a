// The split decode kernel's partials (or, with DIRECT, its output): attention_subgroup.wgsl's binding 4.
// attention_partials_coherent.wgsl declares it @coherent for MERGE, whose last workgroup reads what the
// others wrote; this plain form needs no adapter feature.
@group(0) @binding(4) var<storage, read_write> part: array<vec4<u32>>;
