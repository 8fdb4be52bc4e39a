// The activation side of the quantized GEMV (qgemv.wgsl): x [.., cols] (cols a multiple of 32) as two signed
// bytes per value, per block of 32 with d = max|x| / 127: hi = round(x / d) and lo = round((x − d·hi)·256 / d),
// so that x ≈ d·(256·hi + lo) / 256 to within d/512 (d/256 where lo clamps): 1/32000 of the block's largest
// value, as precise as bf16 activations (one byte alone, as llama.cpp uses, flips SmolLM2's close logits).
// The sum of the float values of each group of 16 goes with it, for the weight formats' offsets (b·Σx),
// which are exact.
//
// Layout: the GEMV's thread u reads group g of its unit u (a run of 2 or 4 groups of the row, per LAYOUT)
// while its neighbours read the same g of units u ± 1, so the groups are stored by (g, u): position
// g · units + u of a row. Neighbouring threads then load neighbouring vectors (a warp's load is one
// contiguous run); stored in plain order they were 64 to 128 bytes apart and every load touched a cache
// line per thread.
// With NORM, x is first RMS-normalised (x·w / sqrt(mean(x²) + eps), or x·(1 + w) for Gemma), so that the
// norm before a layer's GEMVs costs no dispatch of its own. One thread per block of 32; with NORM one
// workgroup per row of x, which first sums the row's squares.

// 0: x as it is; 1: rmsnorm(x)·w; 2: rmsnorm(x)·(1 + w) (Gemma).
override NORM: u32 = 0u;
// dtype code of the norm weight.
override NW_DT: u32 = 0u;
// The GEMV's unit: 0 two groups (32-weight block formats), 1 four groups (Q4_K, Q5_K), 2 Q6_K's four
// groups (kernels/qgemv.wgsl `x_group`).
override LAYOUT: u32 = 0u;
const WG: u32 = 256u;

struct Params {
    // Blocks of 32 values per row of x.
    blocks: u32,
    eps: f32,
    // Blocks in all of x.
    total_blocks: u32,
    // The GEMV's units per row.
    units: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
// The norm weight [cols] (a dummy without NORM).
@group(0) @binding(2) var<storage, read> nw: array<u32>;
// Row r of x: the hi bytes of its groups (a vec4 each, in layout order), then the lo bytes.
@group(0) @binding(3) var<storage, read_write> xq: array<vec4<u32>>;
// Row r: (d / 256, Σ of the group's values) per group, in layout order.
@group(0) @binding(4) var<storage, read_write> xs: array<vec2<f32>>;

var<workgroup> red: array<f32, WG>;
var<private> inv_: f32;
var<private> d_: f32;

fn hsum(v: vec4<f32>) -> f32 {
    return v.x + v.y + v.z + v.w;
}

fn amax4(v: vec4<f32>) -> f32 {
    let a = abs(v);
    return max(max(a.x, a.y), max(a.z, a.w));
}

// Norm weights i..i+3 (i a multiple of 4), with Gemma's 1 added.
fn norm4(i: u32) -> vec4<f32> {
    var n: vec4<f32>;
    if (NW_DT == DT_F32) {
        n = vec4<f32>(bitcast<f32>(nw[i]), bitcast<f32>(nw[i + 1u]), bitcast<f32>(nw[i + 2u]),
                      bitcast<f32>(nw[i + 3u]));
    } else {
        n = vec4<f32>(unpack_pair(NW_DT, nw[i / 2u]), unpack_pair(NW_DT, nw[i / 2u + 1u]));
    }
    if (NORM == 2u) {
        n += vec4<f32>(1.0);
    }
    return n;
}

// Four values as (hi, lo) bytes.
fn split(v: vec4<f32>) -> vec2<u32> {
    let hi = round(v * inv_);
    let lo = clamp(round((v - hi * d_) * (256.0 * inv_)), vec4<f32>(-127.0), vec4<f32>(127.0));
    return vec2<u32>(pack4xI8(vec4<i32>(hi)), pack4xI8(vec4<i32>(lo)));
}

// Where group xg of a row is stored: g · units + u for the unit u and group g (within it) that read it.
fn position(xg: u32) -> u32 {
    if (LAYOUT == 2u) {
        // Inverse of qgemv.wgsl's Q6_K x_group: xg = 16·(u / 4) + 8h + 2g + j with u % 4 = 2h + j.
        let w = xg & 15u;
        let rem = w & 7u;
        return (rem >> 1u) * p.units + 4u * (xg >> 4u) + 2u * (w >> 3u) + (rem & 1u);
    }
    if (LAYOUT == 1u) {
        return (xg & 3u) * p.units + (xg >> 2u);
    }
    return (xg & 1u) * p.units + (xg >> 1u);
}

// Sixteen values (group xg of row r) as their hi and lo vectors and their scale and sum.
fn store_group(r: u32, xg: u32, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) {
    let s0 = split(v0);
    let s1 = split(v1);
    let s2 = split(v2);
    let s3 = split(v3);
    let groups = 2u * p.blocks;
    let at = position(xg);
    xq[2u * r * groups + at] = vec4<u32>(s0.x, s1.x, s2.x, s3.x);
    xq[(2u * r + 1u) * groups + at] = vec4<u32>(s0.y, s1.y, s2.y, s3.y);
    xs[r * groups + at] = vec2<f32>(d_ / 256.0, hsum(v0 + v1 + v2 + v3));
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
    return Block(x[i], x[i + 1u], x[i + 2u], x[i + 3u], x[i + 4u], x[i + 5u], x[i + 6u], x[i + 7u]);
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

// Block blk of x (block b of its row), values v (times the norm weights w and `scale` where NORM asks),
// as bytes, scales and sums.
fn quantize_block(blk: u32, b: u32, v_in: Block, w: Block, scale: f32) {
    var v = v_in;
    if (NORM > 0u) {
        v = Block(v.v0 * w.v0 * scale, v.v1 * w.v1 * scale, v.v2 * w.v2 * scale, v.v3 * w.v3 * scale,
                  v.v4 * w.v4 * scale, v.v5 * w.v5 * scale, v.v6 * w.v6 * scale, v.v7 * w.v7 * scale);
    }
    let amax = max(max(max(amax4(v.v0), amax4(v.v1)), max(amax4(v.v2), amax4(v.v3))),
                   max(max(amax4(v.v4), amax4(v.v5)), max(amax4(v.v6), amax4(v.v7))));
    inv_ = select(0.0, 127.0 / amax, amax > 0.0);
    d_ = amax / 127.0;
    let r = blk / p.blocks;
    store_group(r, 2u * b, v.v0, v.v1, v.v2, v.v3);
    store_group(r, 2u * b + 1u, v.v4, v.v5, v.v6, v.v7);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    if (NORM == 0u) {
        let blk = linear_group_id(wid, nwg) * WG + li;
        if (blk < p.total_blocks) {
            quantize_block(blk, blk % p.blocks, load_block(blk), Block(), 1.0);
        }
        return;
    }
    let row = wid.x;
    let nb = p.blocks;
    // Rows of up to WG blocks (8192 values) stay in registers, with their norm weights, from the sum of
    // squares to the quantization: the launch is a chain of latencies on one workgroup, and this removes
    // a read of x from it. Longer rows are read twice.
    let held = nb <= WG;
    var mine: Block;
    var w: Block;
    var ss = 0.0;
    if (held) {
        if (li < nb) {
            mine = load_block(row * nb + li);
            w = load_norm(li);
            ss = sum_squares(mine);
        }
    } else {
        for (var b = li; b < nb; b += WG) {
            ss += sum_squares(load_block(row * nb + b));
        }
    }
    red[li] = ss;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            red[li] += red[li + s];
        }
        workgroupBarrier();
    }
    let scale = inverseSqrt(red[0] / f32(32u * nb) + p.eps);
    if (held) {
        if (li < nb) {
            quantize_block(row * nb + li, li, mine, w, scale);
        }
        return;
    }
    for (var b = li; b < nb; b += WG) {
        quantize_block(row * nb + b, b, load_block(row * nb + b), load_norm(b), scale);
    }
}
