// The quantization of activations for the quantized GEMV (qgemv_xcore.wgsl describes the format), the part
// that depends on nothing of the including module: kernels that produce a GEMV's x (the GEMV itself,
// attention's merge pass) write it quantized with these.

var<private> inv_: f32;
var<private> d_: f32;

fn hsum(v: vec4<f32>) -> f32 {
    return v.x + v.y + v.z + v.w;
}

fn amax4(v: vec4<f32>) -> f32 {
    let a = abs(v);
    return max(max(a.x, a.y), max(a.z, a.w));
}

// The scale of a block whose largest magnitude is `amax`, for `split`.
fn set_block_scale(amax: f32) {
    inv_ = select(0.0, 127.0 / amax, amax > 0.0);
    d_ = amax / 127.0;
}

// Four values as (hi, lo) bytes (of the block of the last `set_block_scale`).
fn split(v: vec4<f32>) -> vec2<u32> {
    let hi = round(v * inv_);
    let lo = clamp(round((v - hi * d_) * (256.0 * inv_)), vec4<f32>(-127.0), vec4<f32>(127.0));
    return vec2<u32>(pack4xI8(vec4<i32>(hi)), pack4xI8(vec4<i32>(lo)));
}

// Where group xg of a row of x is stored for a GEMV of layout `lay` (qgemv_xcore.wgsl LAYOUT) and `units`
// per row: g · units + u for the unit u and group g (within it) that read it.
fn position_in(xg: u32, lay: u32, units: u32) -> u32 {
    if (lay == 2u) {
        // Inverse of qgemv.wgsl's Q6_K x_group: xg = 16·(u / 4) + 8h + 2g + j with u % 4 = 2h + j.
        let w = xg & 15u;
        let rem = w & 7u;
        return (rem >> 1u) * units + 4u * (xg >> 4u) + 2u * (w >> 3u) + (rem & 1u);
    }
    if (lay == 1u) {
        return (xg & 3u) * units + (xg >> 2u);
    }
    return (xg & 1u) * units + (xg >> 1u);
}

// Word w (0..3) of the hi bytes (`lo` false) or the lo bytes of the group at position `at` of row r of x,
// counted in u32 words, in qgemv_x.wgsl's layout: a row's `groups` hi vectors, then its lo vectors.
fn x_word(r: u32, groups: u32, at: u32, lo: bool, w: u32) -> u32 {
    return 4u * ((2u * r + select(0u, 1u, lo)) * groups + at) + w;
}
