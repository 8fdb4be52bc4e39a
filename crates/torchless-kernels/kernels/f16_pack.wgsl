// Rounding to f16 for the cooperative kernels that stage their operands in f16 (composed before them).

// Eight values as a chunk of packed f16 pairs, saturating at ±65504 (bf16 and f32 reach far beyond f16's
// range), a NaN kept (common.wgsl's f16_pair_saturating).
fn f16_chunk(lo: vec4<f32>, hi: vec4<f32>) -> vec4<u32> {
    return vec4<u32>(f16_pair_saturating(lo.xy), f16_pair_saturating(lo.zw), f16_pair_saturating(hi.xy),
                     f16_pair_saturating(hi.zw));
}
