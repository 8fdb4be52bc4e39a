// RoPE angles, shared by rope.wgsl and the GEMVs' RoPE epilogue (gemv_rope.wgsl). The coefficient table and
// why the angle is exact: the top of rope.wgsl.

// A position as its four bytes, p = Σ q[k] · 256^k.
fn split_position(pos: u32) -> vec4<f32> {
    return vec4<f32>(vec4<u32>(pos & 255u, (pos >> 8u) & 255u, (pos >> 16u) & 255u, pos >> 24u));
}

struct CosSin {
    c: vec4<f32>,
    s: vec4<f32>,
}

// cos and sin (times `scale`) of 2π · Σ q[k] · (hi[k] + lo[k]) for four frequencies.
fn rope_cos_sin(q: vec4<f32>, hi: array<vec4<f32>, 4>, lo: array<vec4<f32>, 4>, scale: f32) -> CosSin {
    // Exact: multiples of 2^-16 (see the top of rope.wgsl).
    let whole = fract(fract(q.x * hi[0]) + fract(q.y * hi[1]) + fract(q.z * hi[2]) + fract(q.w * hi[3]));
    let rest = q.x * lo[0] + q.y * lo[1] + q.z * lo[2] + q.w * lo[3]; // [0, 2^-6)
    let quadrant = round(4.0 * (whole + rest)); // 0 ..= 4
    // whole − quadrant/4 is exact (two multiples of 2^-16 below 1); the small rest joins after it.
    let x = ((whole - 0.25 * quadrant) + rest) * 6.283185307179586; // [-π/4, π/4] up to rounding
    let z = x * x;
    // Cephes sinf/cosf minimax polynomials on [-π/4, π/4] (about 1 ulp): driver sin/cos only promise
    // 2^-11 absolute accuracy.
    let s = x + x * z * (-1.6666654611e-1 + z * (8.3321608736e-3 + z * -1.9515295891e-4));
    let c = 1.0 - 0.5 * z + z * z * (4.166664568298827e-2 + z * (-1.388731625493765e-3 + z * 2.443315711809948e-5));
    // Quadrant k adds k·π/2: 1 → (−sin, cos), 2 → (−cos, −sin), 3 → (sin, −cos).
    let k = vec4<u32>(quadrant) & vec4<u32>(3u);
    let swap = (k & vec4<u32>(1u)) == vec4<u32>(1u);
    let neg_c = (k == vec4<u32>(1u)) | (k == vec4<u32>(2u));
    let neg_s = k >= vec4<u32>(2u);
    let cc = select(c, s, swap);
    let ss = select(s, c, swap);
    return CosSin(select(cc, -cc, neg_c) * scale, select(ss, -ss, neg_s) * scale);
}

