// The activation side of the quantized GEMV, shared by the module that quantizes x in a launch of its
// own (qgemv_x.wgsl) and the GEMV that quantizes x in each workgroup (qgemv.wgsl with FUSED): x [.., cols]
// (cols a multiple of 32) as two signed bytes per value, per block of 32 with d = max|x| / 127:
// hi = round(x / d) and lo = round((x − d·hi)·256 / d), so that x ≈ d·(256·hi + lo) / 256 to within d/512
// (d/256 where lo clamps): 1/32000 of the block's largest value, as precise as bf16 activations (one byte
// alone, as llama.cpp uses, flips SmolLM2's close logits). The sum of the float values of each group of
// 16 goes with it, for the weight formats' offsets (b·Σx), which are exact.
//
// Layout: the GEMV's thread u reads group g of its unit u (a run of 2 or 4 groups of the row, per LAYOUT)
// while its neighbours read the same g of units u ± 1, so the groups are stored by (g, u): position
// g · units + u of a row. Neighbouring threads then load neighbouring vectors (a warp's load is one
// contiguous run); stored in plain order they were 64 to 128 bytes apart and every load touched a cache
// line per thread.
// With NORM, x is first RMS-normalised (x·w / sqrt(mean(x²) + eps), or x·(1 + w) for Gemma).
//
// The including module provides `p.units` (the GEMV's units per row), `x_vec(i)` (vec4 i of x as f32)
// and `norm_word(i)` (word i of the norm weight); xquant.wgsl, which comes before, the block scale, the
// byte split and the layout's positions.

// 0: x as it is; 1: rmsnorm(x)·w; 2: rmsnorm(x)·(1 + w) (Gemma).
override NORM: u32 = 0u;
// dtype code of the norm weight.
override NW_DT: u32 = 0u;
// The GEMV's unit: 0 two groups (32-weight block formats), 1 four groups (Q4_K, Q5_K), 2 Q6_K's four
// groups (kernels/qgemv.wgsl `x_group`).
override LAYOUT: u32 = 0u;

// Norm weights i..i+3 (i a multiple of 4), with Gemma's 1 added.
fn norm4(i: u32) -> vec4<f32> {
    var n: vec4<f32>;
    if (NW_DT == DT_F32) {
        n = vec4<f32>(bitcast<f32>(norm_word(i)), bitcast<f32>(norm_word(i + 1u)),
                      bitcast<f32>(norm_word(i + 2u)), bitcast<f32>(norm_word(i + 3u)));
    } else {
        n = vec4<f32>(unpack_pair(NW_DT, norm_word(i / 2u)), unpack_pair(NW_DT, norm_word(i / 2u + 1u)));
    }
    if (NORM == 2u) {
        n += vec4<f32>(1.0);
    }
    return n;
}

// Where group xg of a row is stored: g · units + u for the unit u and group g (within it) that read it.
fn position(xg: u32) -> u32 {
    return position_in(xg, LAYOUT, p.units);
}

// Sixteen values as stored: their hi and lo bytes, and (d / 256, their sum).
struct QGroup {
    hi: vec4<u32>,
    lo: vec4<u32>,
    s: vec2<f32>,
}

fn quantize_group(v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) -> QGroup {
    let s0 = split(v0);
    let s1 = split(v1);
    let s2 = split(v2);
    let s3 = split(v3);
    return QGroup(vec4<u32>(s0.x, s1.x, s2.x, s3.x), vec4<u32>(s0.y, s1.y, s2.y, s3.y),
                  vec2<f32>(d_ / 256.0, hsum(v0 + v1 + v2 + v3)));
}

// The 32 values of one block.
struct Block {
    v0: vec4<f32>,
    v1: vec4<f32>,
    v2: vec4<f32>,
    v3: vec4<f32>,
    v4: vec4<f32>,
    v5: vec4<f32>,
    v6: vec4<f32>,
    v7: vec4<f32>,
}

// Block blk of x.
fn load_block(blk: u32) -> Block {
    let i = 8u * blk;
    return Block(x_vec(i), x_vec(i + 1u), x_vec(i + 2u), x_vec(i + 3u), x_vec(i + 4u), x_vec(i + 5u),
                 x_vec(i + 6u), x_vec(i + 7u));
}

// The norm weights of block b of a row (Gemma's 1 added).
fn load_norm(b: u32) -> Block {
    let i = 32u * b;
    return Block(norm4(i), norm4(i + 4u), norm4(i + 8u), norm4(i + 12u), norm4(i + 16u), norm4(i + 20u),
                 norm4(i + 24u), norm4(i + 28u));
}

fn sum_squares(v: Block) -> f32 {
    return dot(v.v0, v.v0) + dot(v.v1, v.v1) + dot(v.v2, v.v2) + dot(v.v3, v.v3) + dot(v.v4, v.v4)
        + dot(v.v5, v.v5) + dot(v.v6, v.v6) + dot(v.v7, v.v7);
}

// Block b of a row, values v (times the norm weights w and `scale` where NORM asks), as its two groups
// (block b is groups 2b and 2b + 1 of the row).
struct QBlock {
    g0: QGroup,
    g1: QGroup,
}

fn quantize_block(v_in: Block, w: Block, scale: f32) -> QBlock {
    var v = v_in;
    if (NORM > 0u) {
        v = Block(v.v0 * w.v0 * scale, v.v1 * w.v1 * scale, v.v2 * w.v2 * scale, v.v3 * w.v3 * scale,
                  v.v4 * w.v4 * scale, v.v5 * w.v5 * scale, v.v6 * w.v6 * scale, v.v7 * w.v7 * scale);
    }
    let amax = max(max(max(amax4(v.v0), amax4(v.v1)), max(amax4(v.v2), amax4(v.v3))),
                   max(max(amax4(v.v4), amax4(v.v5)), max(amax4(v.v6), amax4(v.v7))));
    set_block_scale(amax);
    return QBlock(quantize_group(v.v0, v.v1, v.v2, v.v3), quantize_group(v.v4, v.v5, v.v6, v.v7));
}
