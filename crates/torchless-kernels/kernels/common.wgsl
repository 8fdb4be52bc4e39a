// Prelude shared by every kernel file (prepended by kernels.rs).
//
// Every buffer is an array<u32>: f32 is one word, f16 and bf16 are packed two to a word (element i is
// the low half of word i/2 when i is even). Kernels unpack in registers and accumulate in f32.

const DT_F32: u32 = 0u;
const DT_F16: u32 = 1u;
const DT_BF16: u32 = 2u;
const DT_U32: u32 = 3u;
const DT_I32: u32 = 4u;

// The id of a workgroup launched on a linear grid (folded into 2-D past 65535 groups).
fn linear_group_id(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

fn bf16_pair(w: u32) -> vec2<f32> {
    return vec2<f32>(bitcast<f32>(w << 16u), bitcast<f32>(w & 0xffff0000u));
}

// Round to nearest even; NaN stays NaN.
fn bf16_bits(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return (b >> 16u) | 0x40u;
    }
    return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}

fn pack_bf16(v: vec2<f32>) -> u32 {
    return bf16_bits(v.x) | (bf16_bits(v.y) << 16u);
}

// The two values of a word of a 16-bit type (or the one f32 value, twice).
fn unpack_pair(dt: u32, w: u32) -> vec2<f32> {
    if (dt == DT_F16) {
        return unpack2x16float(w);
    }
    if (dt == DT_BF16) {
        return bf16_pair(w);
    }
    let f = bitcast<f32>(w);
    return vec2<f32>(f, f);
}

fn pack_pair(dt: u32, v: vec2<f32>) -> u32 {
    if (dt == DT_F16) {
        return pack2x16float(v);
    }
    return pack_bf16(v);
}

// Two values as f16, those beyond its range saturating at ±65504 (pack2x16float leaves them undefined).
// A NaN stays NaN, its half written as bits: the clamp could turn it into a bound (GPUs' min and max may
// drop a NaN; NVIDIA's do).
fn f16_pair_saturating(v: vec2<f32>) -> u32 {
    let h = pack2x16float(clamp(v, vec2<f32>(-65504.0), vec2<f32>(65504.0)));
    let nan = (bitcast<vec2<u32>>(v) & vec2<u32>(0x7fffffffu)) > vec2<u32>(0x7f800000u);
    let lo = select(h & 0xffffu, 0x7e00u, nan.x);
    let hi = select(h & 0xffff0000u, 0x7e000000u, nan.y);
    return lo | hi;
}

// Eight values as a chunk of packed f16 pairs, as f16_pair_saturating rounds them (bf16 and f32 reach far
// beyond f16's range): how the cooperative kernels stage their operands in f16.
fn f16_chunk(lo: vec4<f32>, hi: vec4<f32>) -> vec4<u32> {
    return vec4<u32>(f16_pair_saturating(lo.xy), f16_pair_saturating(lo.zw), f16_pair_saturating(hi.xy),
                     f16_pair_saturating(hi.zw));
}

// As pack_pair, but f16 values beyond its range saturate (f16_pair_saturating): what the KV cache stores,
// where an infinite key would turn every score it meets into NaN. The CPU's cache writes saturate the same
// way (ops/rope.rs).
fn pack_pair_saturating(dt: u32, v: vec2<f32>) -> u32 {
    if (dt == DT_F16) {
        return f16_pair_saturating(v);
    }
    return pack_bf16(v);
}

// Element `i` of a float buffer whose word at i's position is `w`.
fn decode(dt: u32, w: u32, i: u32) -> f32 {
    if (dt == DT_F32) {
        return bitcast<f32>(w);
    }
    let p = unpack_pair(dt, w);
    return select(p.x, p.y, (i & 1u) == 1u);
}

// The word that holds element i: i for f32, i/2 for 16-bit types.
fn word_index(dt: u32, i: u32) -> u32 {
    return select(i >> 1u, i, dt == DT_F32 || dt == DT_U32 || dt == DT_I32);
}

// Elements per 32-bit word.
fn per_word(dt: u32) -> u32 {
    return select(2u, 1u, dt == DT_F32 || dt == DT_U32 || dt == DT_I32);
}

fn gelu_tanh(x: f32) -> f32 {
    let c = 0.7978845608028654; // sqrt(2/pi)
    let u = c * (x + 0.044715 * x * x * x);
    return 0.5 * x * (1.0 + safe_tanh(u));
}

// erf to f32 precision: its Taylor series near 0 (relative accuracy matters there), and
// Numerical Recipes' Chebyshev erfc (relative error < 1.2e-7) further out.
fn erf_approx(x: f32) -> f32 {
    let a = abs(x);
    if (a < 0.5) {
        let t = x * x;
        return x * (1.1283791670955126 + t * (-0.37612638903183754 + t * (0.11283791670955126 + t * (-0.026866170645131252 + t * (0.005223977625442188 + t * (-0.0008548327023450852 + t * 0.00012055332981789664))))));
    }
    // Numerical Recipes erfc (Chebyshev), relative error < 1.2e-7.
    let z = 1.0 / (1.0 + 0.5 * a);
    let poly = -a * a - 1.26551223 + z * (1.00002368 + z * (0.37409196 + z * (0.09678418 + z * (-0.18628806 + z * (0.27886807 + z * (-1.13520398 + z * (1.48851587 + z * (-0.82215223 + z * 0.17087277))))))));
    let erfc = z * exp(poly);
    return sign(x) * (1.0 - erfc);
}

fn gelu_erf(x: f32) -> f32 {
    return 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476));
}

fn silu(x: f32) -> f32 {
    return x / (1.0 + exp(-x));
}

// Whether v is a NaN, from its bits: GPUs' comparisons, min and max need not see one.
fn is_nan(v: f32) -> bool {
    return (bitcast<u32>(v) & 0x7fffffffu) > 0x7f800000u;
}

// tanh accurate to a few ulp everywhere: drivers' tanh can lose all relative precision near 0
// (lavapipe's returns 1e-6 for 1e-30) or overflow to NaN for large |x|. A NaN stays NaN (min and sign
// below could lose it).
fn safe_tanh(x: f32) -> f32 {
    if (is_nan(x)) {
        return x;
    }
    let a = abs(x);
    if (a < 0.4) {
        let t = x * x;
        return x * (1.0 + t * (-0.3333333333 + t * (0.1333333333 + t * (-0.0539682540 + t * (0.0218694885 + t * (-0.0088632355 + t * 0.0035921280))))));
    }
    let e = exp(-2.0 * min(a, 15.0));
    return sign(x) * (1.0 - e) / (1.0 + e);
}
