// Rounding to f16 for the cooperative kernels that stage their operands in f16 (composed before them).

// Two values rounded to f16 (clamped to ±65504 first: bf16 and f32 reach far beyond f16's range).
fn f16_bits(v: vec2<f32>) -> u32 {
    return pack2x16float(clamp(v, vec2<f32>(-65504.0), vec2<f32>(65504.0)));
}

// Eight values as a chunk (packed f16 pairs).
fn f16_chunk(lo: vec4<f32>, hi: vec4<f32>) -> vec4<u32> {
    return vec4<u32>(f16_bits(lo.xy), f16_bits(lo.zw), f16_bits(hi.xy), f16_bits(hi.zw));
}
