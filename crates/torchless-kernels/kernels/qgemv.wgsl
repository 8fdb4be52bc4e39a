// Quantized GEMV for decode: y[r, o] = Σ_i W[o, i]·x[r, i] for 1 ≤ b ≤ 8 rows of x, with W in a ggml block
// format (QTYPE) in the device layout of src/quant.rs: every block's quants (16-byte aligned) in one region,
// every block's scales (d, m, qh) in a second region starting at word p.scale_base[m] of matrix m. The
// weights are read once for all rows of x and never expanded.
//
// x is used as integers (qgemv_xcore.wgsl): per 32 values a scale d and two signed bytes per value, x ≈
// d·(256·hi + lo) / 256 (per group of 16 values a vec4<u32> of hi bytes and one of lo bytes), and per group
// (d/256, Σx). The groups are stored in the order the threads read them (position g · units + u for group
// g of unit u), so a warp's loads of x are contiguous. x comes quantized by qgemv_x.wgsl, in a launch of
// its own (xq: a row's hi vectors, then its lo vectors; xs: (d/256, Σx)), or, with one row of x and
// FUSED, each workgroup quantizes it into its workgroup memory first, from x in f32 (and RMS-normalises
// it where NORM asks). The workgroup is then TEAMS teams of WG threads, each team the workgroup of the
// unfused form (ROWS rows of its own), so that x is quantized once for TEAMS · ROWS rows. FUSED saves a
// launch (~4.5 µs on an H200) and wins in the benches, but lost in Llama-3-8B decode there, so the host
// uses it only when asked (ops/qmatmul/gpu.rs `auto_tune`). A weight group of 16 is
// w = a·q + b (q the unsigned integer quant, 0..63, or Q8_0's signed byte; a and b the group's scale and
// offset: b = −8a for Q4_0, −dmin·m for the K-quants), so its contribution is a·(d/256)·(256·q·hi + q·lo) +
// b·Σx: the integer dots are packed 4×8-bit dot products (dp4a), one instruction each where the adapter has
// them, and unpacking costs a shift and a mask per four weights.
//
// One dispatch can serve up to three weight matrices of the same type and row length that share x (PARTS:
// Q, K and V), each with its own output and bias: the workgroups are split between them, each owning ROWS
// (1..=4) consecutive rows of one matrix. With GATED the two matrices (gate, up) are read by the same
// workgroups, ROWS/2 rows of each, and the output is act(gate)·up (SwiGLU or GeGLU), so an MLP's first half
// is one dispatch.
//
// With ROPE (gemv_rope.wgsl), a decode step's Q, K and V projections (PARTS 3) also rotate Q and K and
// store K and V in the KV caches: y1 and y2 are then the caches [capacity, rows of the part] (f32, or f16
// or bf16 written a word of two rows at a time: CACHE_DT) and row r of x goes to cache row pos + r.
//
// A row is cut into *units* of whole 16-byte quant vectors: a block for the 32-weight formats (32 weights), a quarter block for the K-quants (64 weights).
// Thread li takes units li, li + WG, ...: it loads the unit's quant vectors of each of its ROWS rows
// (vec4<u32> loads; neighbouring threads read neighbouring vectors) and their scales, then walks the unit in
// groups of 16 weights (Q6_K, whose 16-weight sub-blocks each have a scale), or in sub-blocks of 32 (every
// other format, unit_xdot): their scales decoded once a unit, the two groups of a sub-block, which share
// one weight scale and one x block, summed as integers before the one conversion to f32. On the H200 that
// cut Llama-3-8B q4_k decode from 279 to 295 tok/s: the kernel was bound by its instruction count as much
// as by its loads. Accumulation is in f32; the workgroup then reduces.
//
// This file is the body of two modules (ops/qmatmul/gpu.rs): followed by reduce_workgroup.wgsl (a workgroup-memory
// tree) or reduce_subgroup.wgsl (subgroupAdd), which hold the reduction (`put`, `total`) and the entry point
// `main`, which calls `run` below.

// 0 q8_0, 1 q4_0, 2 q4_1, 3 q5_0, 4 q5_1, 5 q4_k, 6 q5_k, 7 q6_k (QuantType::ALL order).
override QTYPE: u32 = 0u;
// Threads per workgroup: a power of two, 32..=256.
override WG: u32 = 64u;
// Weight rows per workgroup (its "slots"), 1..=4; 2 or 4 with GATED (half gate, half up).
override ROWS: u32 = 1u;
// Rows of x, 1..=8.
override BATCH: u32 = 1u;
// Length of the reduction scratch (vec4s), set by the host.
override RED_LEN: u32 = 64u;
override BIAS_DT: u32 = 0u;
// Weight matrices (1..=3); 2 with GATED.
override PARTS: u32 = 1u;
override GATED: bool = false;
// GATED activation: 0 silu, 1 gelu_tanh.
override ACT: u32 = 0u;

const Q8_0: u32 = 0u;
const Q4_0: u32 = 1u;
const Q4_1: u32 = 2u;
const Q5_0: u32 = 3u;
const Q5_1: u32 = 4u;
const Q4_K: u32 = 5u;
const Q5_K: u32 = 6u;
const Q6_K: u32 = 7u;

// x quantized by the workgroup (one row of x): bindings 1 and 2 then hold x in f32 and the norm weight.
override FUSED: bool = false;
// FUSED: the x groups (cols / 16) that workgroup memory holds.
override XCAP: u32 = 1u;

// x comes quantized (one row) with its RMS norm deferred: the producing GEMV (QOUT below) quantized x·w,
// and wrote each block's Σx² after the groups' (d/256, Σx) in xs. The reduction sums them in one more slot
// and `x_scale` applies 1/rms(x) to the dot products, as with FUSED and NORM.
override NSS: bool = false;
// The output also written as the next quantized GEMV's x (one row of x; every workgroup owns 32
// consecutive output rows, TEAMS · rows per matrix = 32): 0 no; 1 as it is; 2 times the next norm's
// weight (bias1), its Σy² per block kept for that GEMV's NSS; 3 the same with (1 + weight) (Gemma). y1
// receives the hi and lo bytes, y2 the (d/256, Σ) pairs and the Σy² (qgemv_xcore.wgsl layout, for the
// next GEMV's QOUT_LAYOUT and p.qout_units). It saves that GEMV the launch that quantizes its x.
override QOUT: u32 = 0u;
override QOUT_LAYOUT: u32 = 0u;
// dtype code of the next norm's weight (QOUT 2, 3).
override QOUT_NW_DT: u32 = 0u;
// Load unit u + WG's weights before unit u's arithmetic (not FUSED).
override PREFETCH: bool = false;

// reduce_subgroup.wgsl's `put` by subgroupAdd: its transposing shuffles, which the dense GEMV gains
// from, made Llama-3-8B q4_k decode on the H100 301–324 tok/s against 336–338 (the GEMVs alone no
// slower; `benchmarks/results/2026-12-08-h100/a2/`).
const PUT_TRANSPOSED: bool = false;

// Epilogue flags (ops/gemv.rs epilogue_flags): the bias of matrix m (bit m), a residual, the output
// accumulated in place, the soft cap cap·tanh(y / cap) last.
const F_BIAS0: u32 = 1u;
const F_RES: u32 = 64u;
const F_ACCUM: u32 = 128u;
const F_SOFTCAP: u32 = 256u;

struct Params {
    // Weight rows of each matrix (outputs per row of x).
    rows: vec4<u32>,
    // Word index of each matrix's scales region.
    scale_base: vec4<u32>,
    // Blocks per weight row.
    row_blocks: u32,
    // Units per weight row.
    units: u32,
    // Groups of 16 values per row of x (cols / 16).
    x_groups: u32,
    flags: u32,
    // Workgroups of matrix 0, and of matrices 0 and 1 (matrix 2 takes the rest).
    groups0: u32,
    groups01: u32,
    n_groups: u32,
    // Soft cap (F_SOFTCAP).
    cap: f32,
    // ROPE: the position of row 0 of x, the head dim, f32 per coefficient-table row, the cos/sin factor.
    pos: u32,
    head_dim: u32,
    rope_stride: u32,
    rope_scale: f32,
    // FUSED with NORM, or NSS: the norm's epsilon.
    eps: f32,
    // QOUT: the next GEMV's units per row.
    qout_units: u32,
    _pad1: u32,
    _pad2: u32,
}

// Each matrix is bound twice: its quants as vec4s and its scales as words. Absent operands are bound to a
// dummy and never read. With FUSED, xq holds x in f32 and xs the norm weight (bit patterns, read through
// bitcasts: 16 storage buffers a stage is the portable limit, and every binding is taken).
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> xq: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> xs: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> wq0: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> ws0: array<u32>;
@group(0) @binding(5) var<storage, read> wq1: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read> ws1: array<u32>;
@group(0) @binding(7) var<storage, read> wq2: array<vec4<u32>>;
@group(0) @binding(8) var<storage, read> ws2: array<u32>;
@group(0) @binding(9) var<storage, read> bias0: array<u32>;
@group(0) @binding(10) var<storage, read> bias1: array<u32>;
@group(0) @binding(11) var<storage, read> bias2: array<u32>;
@group(0) @binding(12) var<storage, read> res: array<u32>;
@group(0) @binding(13) var<storage, read_write> y0: array<u32>;
@group(0) @binding(14) var<storage, read_write> y1: array<u32>;
@group(0) @binding(15) var<storage, read_write> y2: array<u32>;
// ROPE: the coefficient table of ops::rope::RopeTable, 8 rows of rope_stride f32 (a dummy without).
@group(0) @binding(16) var<storage, read> rope_tab: array<f32>;

// Quant vector i of matrix m.
fn wq(m: u32, i: u32) -> vec4<u32> {
    if (PARTS > 1u && m == 1u) {
        return wq1[i];
    }
    if (PARTS > 2u && m == 2u) {
        return wq2[i];
    }
    return wq0[i];
}

// Word i of the scales region of matrix m.
fn ws(m: u32, i: u32) -> u32 {
    let j = p.scale_base[m] + i;
    if (PARTS > 1u && m == 1u) {
        return ws1[j];
    }
    if (PARTS > 2u && m == 2u) {
        return ws2[j];
    }
    return ws0[j];
}

// acc<r>[s]: partial dot product of row s of this workgroup with row r of x.
var<private> acc0: vec4<f32>;
var<private> acc1: vec4<f32>;
var<private> acc2: vec4<f32>;
var<private> acc3: vec4<f32>;
var<private> acc4: vec4<f32>;
var<private> acc5: vec4<f32>;
var<private> acc6: vec4<f32>;
var<private> acc7: vec4<f32>;
var<private> li_: u32;
// The matrix of this workgroup (not GATED).
var<private> part_: u32;

// Quant vectors per block.
fn block_vecs() -> u32 {
    switch QTYPE {
        case 0u: { return 2u; }
        case 5u: { return 9u; }
        case 6u: { return 11u; }
        case 7u: { return 13u; }
        default: { return 1u; }
    }
}

fn is_k() -> bool {
    return QTYPE >= Q4_K;
}

// One unit of one row as loaded: up to five quant vectors and the decoded block scales.
struct Raw {
    v0: vec4<u32>,
    v1: vec4<u32>,
    v2: vec4<u32>,
    v3: vec4<u32>,
    v4: vec4<u32>,
    d: f32,
    m: f32,
    qh: u32,
}

// Sixteen quants of one group, one per byte (in the order of the weights), and its w = a·q + b.
struct Grp {
    q: vec4<u32>,
    a: f32,
    b: f32,
}

// The f16 scale of block bi of matrix m, in a region of 2-byte scales.
fn half_scale(m: u32, bi: u32) -> f32 {
    let pair = unpack2x16float(ws(m, bi >> 1u));
    return select(pair.x, pair.y, (bi & 1u) == 1u);
}

fn load_unit(m: u32, row: u32, u: u32) -> Raw {
    var r: Raw;
    if (is_k()) {
        let bi = row * p.row_blocks + (u >> 2u);
        let c = u & 3u;
        let base = bi * block_vecs();
        if (QTYPE == Q4_K) {
            r.v0 = wq(m, base);
            r.v1 = wq(m, base + 1u + 2u * c);
            r.v2 = wq(m, base + 2u + 2u * c);
        } else if (QTYPE == Q5_K) {
            r.v0 = wq(m, base);
            r.v1 = wq(m, base + 1u);
            r.v2 = wq(m, base + 2u);
            r.v3 = wq(m, base + 3u + 2u * c);
            r.v4 = wq(m, base + 4u + 2u * c);
        } else {
            // Q6_K unit (h, j): ql vectors 4h + j and 4h + 2 + j, qh vector 8 + 2h + j, scales vector 12.
            let h = c >> 1u;
            let j = c & 1u;
            r.v0 = wq(m, base + 4u * h + j);
            r.v1 = wq(m, base + 4u * h + 2u + j);
            r.v2 = wq(m, base + 8u + 2u * h + j);
            r.v3 = wq(m, base + 12u);
            r.d = half_scale(m, bi);
        }
        return r;
    }
    let bi = row * p.row_blocks + u;
    let base = bi * block_vecs();
    r.v0 = wq(m, base);
    if (QTYPE == Q8_0) {
        r.v1 = wq(m, base + 1u);
        r.d = half_scale(m, bi);
    } else if (QTYPE == Q4_0) {
        r.d = half_scale(m, bi);
    } else if (QTYPE == Q4_1) {
        let dm = unpack2x16float(ws(m, bi));
        r.d = dm.x;
        r.m = dm.y;
    } else {
        let dm = unpack2x16float(ws(m, 2u * bi));
        r.d = dm.x;
        r.m = dm.y;
        r.qh = ws(m, 2u * bi + 1u);
    }
    return r;
}

// Four 4-bit bits of `hb` moved to bit 4 of each byte.
fn spread4(hb: u32) -> u32 {
    return ((hb & 1u) << 4u) | ((hb & 2u) << 11u) | ((hb & 4u) << 18u) | ((hb & 8u) << 25u);
}

const NIBBLES: u32 = 0x0f0f0f0fu;

// Group g (16 weights) of unit u as loaded in r (Q4_K and Q5_K: k_quants and k_scales instead).
fn group(r: Raw, u: u32, g: u32) -> Grp {
    var out: Grp;
    out.a = r.d;
    if (QTYPE == Q8_0) {
        out.q = select(r.v0, r.v1, g == 1u);
        return out;
    }
    if (QTYPE == Q4_0 || QTYPE == Q4_1) {
        // Group 0: low nibbles (weights 0..15), group 1: high nibbles (16..31).
        out.q = (r.v0 >> vec4<u32>(4u * g)) & vec4<u32>(NIBBLES);
        out.b = select(r.m, -8.0 * r.d, QTYPE == Q4_0);
        return out;
    }
    if (QTYPE == Q5_0 || QTYPE == Q5_1) {
        let hq = r.qh >> (16u * g);
        out.q = ((r.v0 >> vec4<u32>(4u * g)) & vec4<u32>(NIBBLES))
            | vec4<u32>(spread4(hq & 0xfu), spread4((hq >> 4u) & 0xfu), spread4((hq >> 8u) & 0xfu),
                        spread4((hq >> 12u) & 0xfu));
        out.b = select(r.m, -16.0 * r.d, QTYPE == Q5_0);
        return out;
    }
    // Q6_K unit (h, j), group k: weights 128h + 32k + 16j .. +15; low 4 bits from ql vector j (k even) or
    // 2 + j (k odd), low (k < 2) or high nibbles; bits 4..5 from qh bits 2k..2k+1; scale 8h + j + 2k.
    let c = u & 3u;
    let h = c >> 1u;
    let j = c & 1u;
    let lv = select(r.v0, r.v1, (g & 1u) == 1u);
    out.q = ((lv >> vec4<u32>(4u * (g >> 1u))) & vec4<u32>(NIBBLES))
        | (((r.v2 >> vec4<u32>(2u * g)) & vec4<u32>(0x03030303u)) << vec4<u32>(4u));
    // Scale 8h + j + 2g: byte j + 2·(g % 2) of word 2h + g / 2 of the scales vector.
    let pair = select(r.v3.xy, r.v3.zw, h == 1u);
    let word = select(pair.x, pair.y, g >= 2u);
    let sc = f32(bitcast<i32>(((word >> (8u * (j + 2u * (g & 1u)))) & 0xffu) << 24u) >> 24u);
    out.a = r.d * sc;
    out.b = -32.0 * out.a;
    return out;
}

// The weights of group g of unit u meet x group 2u + g (32-weight blocks), 4u + g (Q4_K, Q5_K) or, for
// Q6_K, 16·(u / 4) + 8h + 2g + j with u % 4 = 2h + j; qgemv_x.wgsl stores that x group at g · units + u.

// FUSED: x as integers, in layout order (qgemv_xcore.wgsl position).
var<workgroup> xw_hi: array<vec4<u32>, XCAP>;
var<workgroup> xw_lo: array<vec4<u32>, XCAP>;
var<workgroup> xw_s: array<vec2<f32>, XCAP>;

// The hi and lo bytes and the (d/256, Σx) of the group at position `at` of row r of x.
fn x_hi(r: u32, at: u32) -> vec4<u32> {
    if (FUSED) {
        return xw_hi[at];
    }
    return xq[2u * r * p.x_groups + at];
}

fn x_lo(r: u32, at: u32) -> vec4<u32> {
    if (FUSED) {
        return xw_lo[at];
    }
    return xq[(2u * r + 1u) * p.x_groups + at];
}

fn x_sc(r: u32, at: u32) -> vec2<f32> {
    if (FUSED) {
        return xw_s[at];
    }
    return xs[r * p.x_groups + at];
}

// FUSED: vec4 i of x, and word i of the norm weight, for qgemv_xcore.wgsl.
fn x_vec(i: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(xq[i]);
}

fn norm_word(i: u32) -> u32 {
    return bitcast<u32>(xs[i >> 1u][i & 1u]);
}

// FUSED with NORM: each thread's part of the row's sum of squares.
var<workgroup> ssq: array<f32, WG * TEAMS>;

// Quantizes x into workgroup memory (FUSED; nothing otherwise). `wli`: the thread's index in the whole
// workgroup. Called by every thread, in uniform control flow; ends with a barrier. With NORM it quantizes
// x·w (or x·(1 + w)) and keeps the sum of squares: rmsnorm(x)·w is that times the row's one scale
// 1/rms(x), which `x_scale` applies to the dot products (so x is read once and no reduction waits here).
fn prologue(wli: u32) {
    if (!FUSED) {
        return;
    }
    let nb = p.x_groups / 2u;
    let all = WG * TEAMS;
    var ss = 0.0;
    for (var b = wli; b < nb; b += all) {
        let v = load_block(b);
        var w: Block;
        if (NORM > 0u) {
            w = load_norm(b);
            ss += sum_squares(v);
        }
        let q = quantize_block(v, w, 1.0);
        let a0 = position(2u * b);
        let a1 = position(2u * b + 1u);
        xw_hi[a0] = q.g0.hi;
        xw_lo[a0] = q.g0.lo;
        xw_s[a0] = q.g0.s;
        xw_hi[a1] = q.g1.hi;
        xw_lo[a1] = q.g1.lo;
        xw_s[a1] = q.g1.s;
    }
    if (NORM > 0u) {
        ssq[wli] = ss;
    }
    workgroupBarrier();
}

// FUSED with NORM, or NSS: the reduction carries the row's sum of squares in one more slot, past the rows
// of x.
fn norm_slot() -> bool {
    return (FUSED && NORM > 0u) || NSS;
}

// The scale of the dot products: 1/rms(x) where x·w was quantized (FUSED with NORM, or NSS), else 1.
// After the reduction.
fn x_scale() -> f32 {
    if (!norm_slot()) {
        return 1.0;
    }
    return inverseSqrt(total(BATCH).x / f32(16u * p.x_groups) + p.eps);
}

fn dot16(q: vec4<u32>, xv: vec4<u32>) -> i32 {
    return dot4I8Packed(q.x, xv.x) + dot4I8Packed(q.y, xv.y) + dot4I8Packed(q.z, xv.z) + dot4I8Packed(q.w, xv.w);
}

// One row's group of quants dotted with 16 values of x as integers (hi, lo): 256·q·hi + q·lo, exact in i32
// (|q·hi| ≤ 16·127·127).
fn idot(q: vec4<u32>, hi: vec4<u32>, lo: vec4<u32>) -> f32 {
    return f32((dot16(q, hi) << 8u) + dot16(q, lo));
}

// The contribution of group g of unit u of the ROWS rows (q0..q3, scales a, offsets b) with row r of x.
fn xdot(r: u32, u: u32, g: u32, q0: Grp, q1: Grp, q2: Grp, q3: Grp, a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    let at = g * p.units + u;
    let hi = x_hi(r, at);
    let lo = x_lo(r, at);
    let s = x_sc(r, at);
    var qx = vec4<f32>(idot(q0.q, hi, lo), 0.0, 0.0, 0.0);
    if (ROWS > 1u) {
        qx.y = idot(q1.q, hi, lo);
    }
    if (ROWS > 2u) {
        qx.z = idot(q2.q, hi, lo);
    }
    if (ROWS > 3u) {
        qx.w = idot(q3.q, hi, lo);
    }
    return (a * s.x) * qx + b * s.y;
}

// Q4_K and Q5_K: (a, b) of the unit's two sub-blocks 2c and 2c + 1 as (a0, a1, b0, b1), decoded once a
// unit. Their scale and min bytes (ggml's get_scale_min_k4) sit side by side: bytes 2c and 2c + 1 of the
// scale words y (scales) and z (mins) for c < 2; for c ≥ 2 the low 4 bits are the nibbles of bytes 2c − 4
// and 2c − 3 of w and the top 2 bits the top bits of the same bytes of y and z. Both as 16-bit pairs.
fn k_scales(v0: vec4<u32>, c: u32) -> vec4<f32> {
    let sh = 16u * (c & 1u);
    let y = (v0.y >> sh) & 0xffffu;
    let z = (v0.z >> sh) & 0xffffu;
    let w = (v0.w >> sh) & 0xffffu;
    let lo = c < 2u;
    let sc = select((w & 0x0f0fu) | ((y >> 2u) & 0x3030u), y & 0x3f3fu, lo);
    let mn = select(((w >> 4u) & 0x0f0fu) | ((z >> 2u) & 0x3030u), z & 0x3f3fu, lo);
    let dd = unpack2x16float(v0.x);
    return vec4<f32>(dd.x * f32(sc & 0xffu), dd.x * f32(sc >> 8u), -dd.y * f32(mn & 0xffu), -dd.y * f32(mn >> 8u));
}

// Q4_K and Q5_K: the quants of group g (a constant at every call) of unit u as loaded in r.
fn k_quants(r: Raw, u: u32, g: u32) -> vec4<u32> {
    let hi = g >> 1u;
    if (QTYPE == Q4_K) {
        return (select(r.v1, r.v2, (g & 1u) == 1u) >> vec4<u32>(4u * hi)) & vec4<u32>(NIBBLES);
    }
    let qv = select(r.v3, r.v4, (g & 1u) == 1u);
    let hv = select(r.v1, r.v2, (g & 1u) == 1u);
    return ((qv >> vec4<u32>(4u * hi)) & vec4<u32>(NIBBLES))
        | (((hv >> vec4<u32>(2u * (u & 3u) + hi)) & vec4<u32>(0x01010101u)) << vec4<u32>(4u));
}

// The quants of group g of unit u: K-quants through k_quants, 32-weight blocks through group().
fn pair_quants(r: Raw, u: u32, g: u32) -> vec4<u32> {
    if (is_k()) {
        return k_quants(r, u, g);
    }
    return group(r, u, g).q;
}

// (a0, a1, b0, b1) of the unit's sub-blocks of 32: a 32-weight block is one (a, b) for both groups.
fn pair_scales(r: Raw, u: u32) -> vec4<f32> {
    if (is_k()) {
        return k_scales(r.v0, u & 3u);
    }
    let g = group(r, u, 0u);
    return vec4<f32>(g.a, g.a, g.b, g.b);
}

// The x block of 32 (16-value groups g0, g0 + 1 of a unit) as loaded: hi and lo bytes, scale and sums.
struct XBlock {
    hi0: vec4<u32>,
    lo0: vec4<u32>,
    hi1: vec4<u32>,
    lo1: vec4<u32>,
    d: f32,
    sum: f32,
}

fn x_block(r: u32, u: u32, g0: u32) -> XBlock {
    let at0 = g0 * p.units + u;
    let at1 = at0 + p.units;
    let s0 = x_sc(r, at0);
    let s1 = x_sc(r, at1);
    return XBlock(x_hi(r, at0), x_lo(r, at0), x_hi(r, at1), x_lo(r, at1), s0.x, s0.y + s1.y);
}

// One row's sub-block (groups g0, g0 + 1, one weight scale) dotted with its x block, in integers: both
// groups share the x block's scale, so they are added before the one conversion to f32.
fn pair_idot(r: Raw, u: u32, g0: u32, x: XBlock) -> i32 {
    let qa = pair_quants(r, u, g0);
    let qb = pair_quants(r, u, g0 + 1u);
    return ((dot16(qa, x.hi0) + dot16(qb, x.hi1)) << 8u) + dot16(qa, x.lo0) + dot16(qb, x.lo1);
}

// One unit of the ROWS rows of this workgroup as loaded (rows past ROWS unused).
struct Rows {
    r0: Raw,
    r1: Raw,
    r2: Raw,
    r3: Raw,
}

// Each row's pair_scales (formats other than Q6_K).
struct RowScales {
    s0: vec4<f32>,
    s1: vec4<f32>,
    s2: vec4<f32>,
    s3: vec4<f32>,
}

// The contribution of sub-block `half` (0 or 1, a constant at every call) of unit u of the ROWS rows with
// row xr of x.
fn pair_half(xr: u32, u: u32, half: u32, rw: Rows, sc: RowScales) -> vec4<f32> {
    let g0 = 2u * half;
    let x = x_block(xr, u, g0);
    var i = vec4<i32>(pair_idot(rw.r0, u, g0, x), 0, 0, 0);
    if (ROWS > 1u) {
        i.y = pair_idot(rw.r1, u, g0, x);
    }
    if (ROWS > 2u) {
        i.z = pair_idot(rw.r2, u, g0, x);
    }
    if (ROWS > 3u) {
        i.w = pair_idot(rw.r3, u, g0, x);
    }
    let second = half == 1u;
    let a = select(vec4<f32>(sc.s0.x, sc.s1.x, sc.s2.x, sc.s3.x), vec4<f32>(sc.s0.y, sc.s1.y, sc.s2.y, sc.s3.y), second);
    let b = select(vec4<f32>(sc.s0.z, sc.s1.z, sc.s2.z, sc.s3.z), vec4<f32>(sc.s0.w, sc.s1.w, sc.s2.w, sc.s3.w), second);
    return (a * x.d) * vec4<f32>(i) + b * x.sum;
}

// Unit u of the ROWS rows times row xr of x. Every format but Q6_K goes by sub-blocks of 32 weights (two
// for the K-quants, one block for the 32-weight formats), each sharing one weight scale and one x block:
// the scales are decoded once a unit (sc) and a sub-block's two groups are summed as integers before the
// one conversion to f32. Q6_K, whose 16-weight sub-blocks each have a scale, goes group by group. Both
// unrolled where a loop would keep selects (naga bounds every loop with a counter, and drivers then do not
// unroll it).
fn unit_xdot(xr: u32, u: u32, rw: Rows, sc: RowScales) -> vec4<f32> {
    if (QTYPE != Q6_K) {
        var out = pair_half(xr, u, 0u, rw, sc);
        if (is_k()) {
            out += pair_half(xr, u, 1u, rw, sc);
        }
        return out;
    }
    var out = vec4<f32>(0.0);
    for (var g = 0u; g < 4u; g++) {
        let q0 = group(rw.r0, u, g);
        var q1: Grp;
        var q2: Grp;
        var q3: Grp;
        if (ROWS > 1u) {
            q1 = group(rw.r1, u, g);
        }
        if (ROWS > 2u) {
            q2 = group(rw.r2, u, g);
        }
        if (ROWS > 3u) {
            q3 = group(rw.r3, u, g);
        }
        let a = vec4<f32>(q0.a, q1.a, q2.a, q3.a);
        let b = vec4<f32>(q0.b, q1.b, q2.b, q3.b);
        out += xdot(xr, u, g, q0, q1, q2, q3, a, b);
    }
    return out;
}

// Unit u of every row of this workgroup as loaded.
fn load_rows(rows: vec4<u32>, u: u32) -> Rows {
    var rw: Rows;
    rw.r0 = load_unit(slot_matrix(0u), rows.x, u);
    if (ROWS > 1u) {
        rw.r1 = load_unit(slot_matrix(1u), rows.y, u);
    }
    if (ROWS > 2u) {
        rw.r2 = load_unit(slot_matrix(2u), rows.z, u);
    }
    if (ROWS > 3u) {
        rw.r3 = load_unit(slot_matrix(3u), rows.w, u);
    }
    return rw;
}

// Unit u of every row of this workgroup (loaded: rw) times every row of x. Rows and rows of x are unrolled
// by hand (guarded by ROWS and BATCH) so that every value is a plain register, never an indexed array.
fn step(rw: Rows, u: u32) {
    var sc: RowScales;
    if (QTYPE != Q6_K) {
        sc.s0 = pair_scales(rw.r0, u);
        if (ROWS > 1u) {
            sc.s1 = pair_scales(rw.r1, u);
        }
        if (ROWS > 2u) {
            sc.s2 = pair_scales(rw.r2, u);
        }
        if (ROWS > 3u) {
            sc.s3 = pair_scales(rw.r3, u);
        }
    }
    acc0 += unit_xdot(0u, u, rw, sc);
    if (BATCH > 1u) {
        acc1 += unit_xdot(1u, u, rw, sc);
    }
    if (BATCH > 2u) {
        acc2 += unit_xdot(2u, u, rw, sc);
    }
    if (BATCH > 3u) {
        acc3 += unit_xdot(3u, u, rw, sc);
    }
    if (BATCH > 4u) {
        acc4 += unit_xdot(4u, u, rw, sc);
    }
    if (BATCH > 5u) {
        acc5 += unit_xdot(5u, u, rw, sc);
    }
    if (BATCH > 6u) {
        acc6 += unit_xdot(6u, u, rw, sc);
    }
    if (BATCH > 7u) {
        acc7 += unit_xdot(7u, u, rw, sc);
    }
}

// Rows per matrix of one workgroup: ROWS, or ROWS/2 of each of gate and up with GATED.
fn rows_per_matrix() -> u32 {
    return select(ROWS, ROWS / 2u, GATED);
}

// The matrix that slot s (0..ROWS) of this workgroup reads.
fn slot_matrix(s: u32) -> u32 {
    if (GATED) {
        return select(0u, 1u, s >= ROWS / 2u);
    }
    return part_;
}

// Sets up workgroup g: its matrix and first output row.
fn setup(g: u32, li: u32) -> u32 {
    li_ = li;
    part_ = 0u;
    var first = g;
    if (!GATED && PARTS > 1u && g >= p.groups0) {
        part_ = select(2u, 1u, g < p.groups01);
        first = g - select(p.groups01, p.groups0, part_ == 1u);
    }
    return first * rows_per_matrix();
}

// Whether this workgroup's rows rotate (Q or K of a ROPE dispatch).
fn rotates() -> bool {
    return ROPE > 0u && part_ < 2u;
}

// The row of slot s: row0 + s (of gate, then of up, with GATED), or with HalfSplit RoPE the s % 2 half of
// rotation pair row0 / 2 + s / 2. It may be past the matrix's rows (the slot is then not written).
fn slot_row(row0: u32, s: u32) -> u32 {
    if (GATED) {
        return row0 + s % rows_per_matrix();
    }
    if (rotates()) {
        return rope_slot_row(row0, s);
    }
    return row0 + s;
}

// Every slot's row of this workgroup, clamped to the last row.
fn accumulate(row0: u32) {
    if (rotates()) {
        load_pair_coefficients(row0);
    }
    let want = vec4<u32>(slot_row(row0, 0u), slot_row(row0, 1u), slot_row(row0, 2u), slot_row(row0, 3u));
    let rows = min(want, vec4<u32>(p.rows[part_] - 1u));
    if (!FUSED && PREFETCH) {
        // The next unit's weights are loaded before this one's arithmetic, so that their latency hides
        // under it (the last load repeats the last unit: a cache hit, never out of bounds).
        var cur = load_rows(rows, min(li_, p.units - 1u));
        for (var u = li_; u < p.units; u += WG) {
            let next = load_rows(rows, min(u + WG, p.units - 1u));
            step(cur, u);
            cur = next;
        }
        return;
    }
    if (!FUSED) {
        for (var u = li_; u < p.units; u += WG) {
            step(load_rows(rows, u), u);
        }
        return;
    }
    // The first unit's weights are loaded before x is quantized, so that their latency overlaps the
    // quantization's.
    let first = load_rows(rows, min(li_, p.units - 1u));
    prologue(wli_);
    if (li_ < p.units) {
        step(first, li_);
    }
    for (var u = li_ + WG; u < p.units; u += WG) {
        step(load_rows(rows, u), u);
    }
}

// Hands the accumulators to the variant's `put`: slot r holds the ROWS sums with row r of x.
fn reduce_all() {
    put(0u, acc0);
    if (norm_slot()) {
        // FUSED: the prologue's partial sums of squares, TEAMS per thread of a team: the team's sum is the
        // row's. NSS: the blocks' sums of squares, after x's groups in xs.
        var part = 0.0;
        if (FUSED) {
            for (var k = 0u; k < TEAMS; k++) {
                part += ssq[k * WG + li_];
            }
        } else {
            part = nss_sum();
        }
        put(BATCH, vec4<f32>(part, 0.0, 0.0, 0.0));
    }
    if (BATCH > 1u) {
        put(1u, acc1);
    }
    if (BATCH > 2u) {
        put(2u, acc2);
    }
    if (BATCH > 3u) {
        put(3u, acc3);
    }
    if (BATCH > 4u) {
        put(4u, acc4);
    }
    if (BATCH > 5u) {
        put(5u, acc5);
    }
    if (BATCH > 6u) {
        put(6u, acc6);
    }
    if (BATCH > 7u) {
        put(7u, acc7);
    }
}

fn n_slots() -> u32 {
    return select(BATCH, BATCH + 1u, norm_slot());
}

// n_slots() at its largest.
const MAX_SLOTS: u32 = 8u;

fn bias_of(m: u32, row: u32) -> f32 {
    let i = word_index(BIAS_DT, row);
    var w = bias0[i];
    if (PARTS > 1u && m == 1u) {
        w = bias1[i];
    }
    if (PARTS > 2u && m == 2u) {
        w = bias2[i];
    }
    return decode(BIAS_DT, w, row);
}

fn store_y_word(m: u32, i: u32, w: u32) {
    if (PARTS > 1u && m == 1u) {
        y1[i] = w;
    } else if (PARTS > 2u && m == 2u) {
        y2[i] = w;
    } else {
        y0[i] = w;
    }
}

fn store_y(m: u32, i: u32, v: f32) {
    store_y_word(m, i, bitcast<u32>(v));
}

fn gate_act(g: f32) -> f32 {
    if (ACT == 1u) {
        return gelu_tanh(g);
    }
    return silu(g);
}

// After the reduction: thread r < BATCH writes this workgroup's outputs of row r of x (one per row, or
// act(gate)·up per row pair with GATED). The residual and accumulation flags only come with one matrix.
fn finish(row0: u32) {
    let r = li_;
    if (r >= BATCH) {
        return;
    }
    let v = total(r) * x_scale();
    let m = part_;
    let rows = p.rows[m];
    if (ROPE > 0u) {
        finish_rope(row0, r, v);
        return;
    }
    for (var s = 0u; s < rows_per_matrix(); s++) {
        let row = row0 + s;
        if (row >= rows) {
            return;
        }
        let i = r * rows + row;
        if (GATED) {
            let out = gate_act(v[s]) * v[s + ROWS / 2u];
            store_y(0u, i, out);
            keep_out(row, out);
            continue;
        }
        var out = v[s];
        if ((p.flags & (F_BIAS0 << m)) != 0u) {
            out += bias_of(m, row);
        }
        if ((p.flags & F_RES) != 0u) {
            out += bitcast<f32>(res[i]);
        }
        if ((p.flags & F_ACCUM) != 0u) {
            out += bitcast<f32>(y0[i]);
        }
        if ((p.flags & F_SOFTCAP) != 0u) {
            out = p.cap * safe_tanh(out / p.cap);
        }
        store_y(m, i, out);
        keep_out(row, out);
    }
}

// ROPE: adds the biases, rotates the pairs of Q and K and stores Q into y0, K and V into the caches.
fn finish_rope(row0: u32, r: u32, sums: vec4<f32>) {
    let m = part_;
    let rows = p.rows[m];
    let v = rope_epilogue_values(m, row0, rows, r, sums);
    // Q by row of x; K and V by cache row.
    let out_row = select(p.pos + r, r, m == 0u);
    if (CACHE_DT != DT_F32 && m > 0u) {
        let kw = kv16_words(m, row0, rows, out_row, v);
        if (kw.ok.x) { store_y_word(m, kw.at.x, kw.w.x); }
        if (kw.ok.y) { store_y_word(m, kw.at.y, kw.w.y); }
        return;
    }
    for (var s = 0u; s < ROWS; s++) {
        let row = slot_row(row0, s);
        if (row < rows) {
            store_y(m, out_row * rows + row, v[s]);
        }
    }
}

// Team g's work (a team is the whole workgroup unless FUSED), called by the variant's `main` once it has
// recorded its ids. A team past the last (the workgroup's last teams may have no rows)
// works on the last team's rows, for the workgroup's barriers, and writes nothing.
fn run(g: u32, li: u32) {
    let row0 = setup(min(g, p.n_groups - 1u), li);
    load_nss();
    load_qout_norm(row0);
    accumulate(row0);
    reduce_all();
    workgroupBarrier();
    if (g < p.n_groups) {
        finish(row0);
    }
    emit_block(row0);
}

// NSS: the Σx² of thread li_'s first eight blocks, loaded before the main loop and only summed after it
// (a load consumed here would hold up the weight loads behind it); blocks past them are read after it.
var<private> nss_a: vec4<f32>;
var<private> nss_b: vec4<f32>;

fn nss_at(k: u32) -> f32 {
    let nb = p.x_groups / 2u;
    return xs[p.x_groups + min(li_ + k * WG, nb - 1u)].x;
}

fn load_nss() {
    if (NSS) {
        nss_a = vec4<f32>(nss_at(0u), nss_at(1u), nss_at(2u), nss_at(3u));
        nss_b = vec4<f32>(nss_at(4u), nss_at(5u), nss_at(6u), nss_at(7u));
    }
}

// NSS: thread li_'s part of x's Σx² (the reduction adds the parts).
fn nss_sum() -> f32 {
    let nb = p.x_groups / 2u;
    let k = vec4<u32>(0u, 1u, 2u, 3u);
    let first = vec4<u32>(li_) + k * WG;
    var part = dot(select(vec4<f32>(0.0), nss_a, first < vec4<u32>(nb)), vec4<f32>(1.0))
        + dot(select(vec4<f32>(0.0), nss_b, first + 4u * WG < vec4<u32>(nb)), vec4<f32>(1.0));
    for (var blk = li_ + 8u * WG; blk < nb; blk += WG) {
        part += xs[p.x_groups + blk].x;
    }
    return part;
}

// QOUT: the workgroup's 32 outputs (finish); per thread t < 8 (of its vec4 t): the largest |y·w|, Σ y·w
// and Σ y².
var<workgroup> qv: array<f32, 32>;
var<workgroup> q_amax: array<f32, 8>;
var<workgroup> q_sum: array<f32, 8>;
var<workgroup> q_sq: array<f32, 8>;
// QOUT 2, 3, threads t < 8: the next norm's weights of the workgroup's rows 4t..4t + 3, loaded first so
// that their latency hides under the main loop's.
var<private> qn_: vec4<f32>;

fn qout_weight(row: u32) -> f32 {
    return decode(QOUT_NW_DT, bias1[word_index(QOUT_NW_DT, row)], row);
}

// Thread 0 of team 0 owns the workgroup's first row, row0.
fn load_qout_norm(row0: u32) {
    if (QOUT > 1u && wli_ < 8u) {
        let r = row0 + 4u * wli_;
        qn_ = vec4<f32>(qout_weight(r), qout_weight(r + 1u), qout_weight(r + 2u), qout_weight(r + 3u));
    }
}

// QOUT: output `row` (of the workgroup's 32) for emit_block.
fn keep_out(row: u32, v: f32) {
    if (QOUT > 0u) {
        qv[row & 31u] = v;
    }
}

fn qv4(i: u32) -> vec4<f32> {
    return vec4<f32>(qv[i], qv[i + 1u], qv[i + 2u], qv[i + 3u]);
}

fn store_xs(i: u32, v: vec2<f32>) {
    y2[2u * i] = bitcast<u32>(v.x);
    y2[2u * i + 1u] = bitcast<u32>(v.y);
}

// QOUT: the workgroup's block of 32 outputs (rows row0..row0 + 31) quantized as group pair row0 / 16 of
// the next GEMV's x (qgemv_xcore.wgsl, in that GEMV's layout), eight threads a vec4 each; with a norm, the
// block's Σy² too. Called by every thread, in uniform control flow.
fn emit_block(row0: u32) {
    if (QOUT == 0u) {
        return;
    }
    workgroupBarrier();
    let t = wli_;
    var v = vec4<f32>();
    if (t < 8u) {
        let y = qv4(4u * t);
        v = y;
        if (QOUT > 1u) {
            v = y * (qn_ + select(0.0, 1.0, QOUT == 3u));
        }
        q_amax[t] = amax4(v);
        q_sum[t] = hsum(v);
        q_sq[t] = dot(y, y);
    }
    workgroupBarrier();
    if (t >= 8u) {
        return;
    }
    var amax = 0.0;
    for (var k = 0u; k < 8u; k++) {
        amax = max(amax, q_amax[k]);
    }
    set_block_scale(amax);
    let hl = split(v);
    let groups = p.rows[0] / 16u;
    let blk = row0 / 32u;
    // Thread t holds words t % 4 of group t / 4's hi and lo vectors.
    let at = position_in(2u * blk + t / 4u, QOUT_LAYOUT, p.qout_units);
    y1[x_word(0u, groups, at, false, t & 3u)] = hl.x;
    y1[x_word(0u, groups, at, true, t & 3u)] = hl.y;
    if ((t & 3u) == 0u) {
        store_xs(at, vec2<f32>(d_ / 256.0, q_sum[t] + q_sum[t + 1u] + q_sum[t + 2u] + q_sum[t + 3u]));
    }
    if (QOUT > 1u && t == 0u) {
        var ss = 0.0;
        for (var k = 0u; k < 8u; k++) {
            ss += q_sq[k];
        }
        store_xs(groups + blk, vec2<f32>(ss, 0.0));
    }
}
