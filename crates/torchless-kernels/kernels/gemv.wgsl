// GEMV for decode: y[r, o] = Σ_i w[o, i]·x[r, i] for 1 ≤ b ≤ 8 rows of x, every weight row read once for
// all rows of x. Weights are f32, f16 or bf16 (DTYPE); x and y are f32. One workgroup owns ROWS (1..=4)
// output rows of one matrix (gated: ROWS rows of the gate and the same rows of the up matrix); its WG
// threads stride along the rows in vec4<u32> chunks (4 f32 or 8 16-bit values), two chunks in flight per
// step, accumulate in f32 registers and reduce at the end.
//
// Up to six matrices that share x run in one dispatch (Q, K and V; xLSTM's q, k, v, o, ĩ, f̃): workgroups
// [0, g1) belong to matrix 0, [g1, g2) to matrix 1, and so on up to [g5, n_groups) for matrix 5. Gated
// (GATED): y = act(w0·x) ⊙ (w1·x).
//
// With ROPE (gemv_rope.wgsl; NMAT 3, a decode step's Q, K and V), Q and K are rotated as they are written
// and K and V go straight into the KV caches: y1 and y2 are then the caches [capacity, rows of the
// matrix] (f32, or f16 or bf16 written a word of two rows at a time: CACHE_DT), row r of x at cache row
// pos + r.
//
// VEC: every row is a whole number of chunks (in % 4 == 0 for f32, in % 8 == 0 for 16-bit), so rows and the
// rows of x start on 16-byte boundaries; otherwise the scalar path reads one element at a time (a 16-bit
// row may then start in the middle of a word).
//
// Accumulators are indexed with constants only (rows of x unrolled by hand, guarded by BATCH), so drivers
// keep them in registers.
//
// This file is the body of four modules (ops/gemv.rs), after rope_angle.wgsl and gemv_rope.wgsl: followed
// by gemv_parts3.wgsl or gemv_parts6.wgsl (the bindings of each matrix's weights, bias and output and of the
// RoPE table: three matrices in 13 storage buffers, six in 22, for adapters that allow that many; and
// `accumulate`, which runs the loop for this workgroup's matrix), then by reduce_workgroup.wgsl (a
// workgroup-memory tree) or reduce_subgroup.wgsl (subgroup operations), which hold the reduction (`put`,
// `total`) and the entry point `main`, which calls `run` below.

override DTYPE: u32 = 2u;
override BIAS_DT: u32 = 0u;
// Threads per workgroup: a power of two, 32..=256.
override WG: u32 = 64u;
// Output rows per workgroup, 1..=4.
override ROWS: u32 = 1u;
// Rows of x, 1..=8.
override BATCH: u32 = 1u;
override VEC: bool = true;
// Matrices sharing x, 1..=3 (gemv_parts3.wgsl) or 1..=6 (gemv_parts6.wgsl); the gated form uses 2.
override NMAT: u32 = 1u;
override GATED: bool = false;
// Gated activation: 0 SiLU (SwiGLU), 1 GELU-tanh (GeGLU).
override ACT: u32 = 0u;
// Length of the reduction scratch (vec4s), set by the host.
override RED_LEN: u32 = 64u;
// Input RMSNorm of x (VEC only): 0 none, 1 x·w, 2 x·(1 + w) (Gemma). Its weight's dtype is NW_DT.
override NORM: u32 = 0u;
override NW_DT: u32 = 0u;

// reduce_subgroup.wgsl's `put` by transposing shuffles rather than subgroupAdd: on the H100 the fused
// Q/K/V launch alone 23.3–23.6 → 22.8 µs, xLSTM-7B decode 171.3–171.4 → 173.8 tok/s, Llama-3-8B bf16
// 161.5–162.0 → 162.2 (`benchmarks/results/2026-12-08-h100/a2/`).
const PUT_TRANSPOSED: bool = true;

// Epilogue flags (ops/gemv.rs epilogue_flags): the bias of matrix m (bit m), a residual, the output
// accumulated in place, the soft cap cap·tanh(y / cap) last.
const F_BIAS0: u32 = 1u;
const F_RES: u32 = 64u;
const F_ACCUM: u32 = 128u;
const F_SOFTCAP: u32 = 256u;

struct Params {
    in_len: u32,
    // vec4 chunks per weight row (VEC only)
    in_vec: u32,
    // vec4 words per row of x (VEC only)
    x_vec: u32,
    flags: u32,
    // Rows of each matrix.
    n0: u32,
    n1: u32,
    n2: u32,
    n3: u32,
    n4: u32,
    n5: u32,
    // First workgroup of matrices 1..5.
    g1: u32,
    g2: u32,
    g3: u32,
    g4: u32,
    g5: u32,
    n_groups: u32,
    // Input norm: epsilon.
    eps: f32,
    // Soft cap (F_SOFTCAP).
    cap: f32,
    // ROPE (gemv_rope.wgsl): the position of row 0 of x, the head dim, f32 per coefficient-table row, the
    // cos/sin factor.
    pos: u32,
    head_dim: u32,
    rope_stride: u32,
    rope_scale: f32,
    _pad0: u32,
    _pad1: u32,
}

// Bindings shared by every variant; each matrix's weights (w0..), bias (bias0..) and output (y0..) follow
// from binding 4 in gemv_parts3.wgsl / gemv_parts6.wgsl, with `wload`, `bias_of` and `store`. Absent
// operands are bound to a dummy (x for read-only slots, y0 for outputs) and never read.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> res: array<u32>;
@group(0) @binding(3) var<storage, read> nw: array<vec4<u32>>;

// acc[r]: partial sums of the ROWS slots (lanes) with row r of x; acc[8 + r]: the same for the up matrix.
var<private> acc: array<vec4<f32>, 16>;
// Input norm: this thread's partial sums of x² for rows 0..3 and 4..7 of x.
var<private> ssq_lo: vec4<f32>;
var<private> ssq_hi: vec4<f32>;
// This workgroup's matrix, and the first chunk (VEC) or element of each of its rows.
var<private> mat: u32;
var<private> base: vec4<u32>;
var<private> li_: u32;

// The chunks (or elements) of up to four weight rows.
struct W4 {
    s0: vec4<u32>,
    s1: vec4<u32>,
    s2: vec4<u32>,
    s3: vec4<u32>,
}

// One chunk of a row of x: 4 values (f32 weights) or 8 (16-bit weights, a then b).
struct X8 {
    a: vec4<f32>,
    b: vec4<f32>,
}

fn load_rows(m: u32, k: u32) -> W4 {
    var w: W4;
    w.s0 = wload(m, base.x + k);
    if (ROWS > 1u) {
        w.s1 = wload(m, base.y + k);
    }
    if (ROWS > 2u) {
        w.s2 = wload(m, base.z + k);
    }
    if (ROWS > 3u) {
        w.s3 = wload(m, base.w + k);
    }
    return w;
}

fn xchunk(r: u32, k: u32) -> X8 {
    var c: X8;
    if (DTYPE == DT_F32) {
        c.a = bitcast<vec4<f32>>(x[r * p.x_vec + k]);
    } else {
        let i = r * p.x_vec + 2u * k;
        c.a = bitcast<vec4<f32>>(x[i]);
        c.b = bitcast<vec4<f32>>(x[i + 1u]);
    }
    return c;
}

// One chunk of weights dotted with one chunk of x.
fn dchunk(w: vec4<u32>, c: X8) -> f32 {
    if (DTYPE == DT_F32) {
        return dot(bitcast<vec4<f32>>(w), c.a);
    }
    if (DTYPE == DT_BF16) {
        let even = bitcast<vec4<f32>>(w << vec4<u32>(16u));
        let odd = bitcast<vec4<f32>>(w & vec4<u32>(0xffff0000u));
        return dot(even, vec4<f32>(c.a.xz, c.b.xz)) + dot(odd, vec4<f32>(c.a.yw, c.b.yw));
    }
    let lo = vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
    let hi = vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w));
    return dot(lo, c.a) + dot(hi, c.b);
}

fn dots(w: W4, c: X8) -> vec4<f32> {
    var d = vec4<f32>(dchunk(w.s0, c), 0.0, 0.0, 0.0);
    if (ROWS > 1u) {
        d.y = dchunk(w.s1, c);
    }
    if (ROWS > 2u) {
        d.z = dchunk(w.s2, c);
    }
    if (ROWS > 3u) {
        d.w = dchunk(w.s3, c);
    }
    return d;
}

// Input norm: the weights of the elements of chunk k, in X8 order, from whole 16-byte words (every GPU
// buffer is padded to 16 bytes; no per-element decode).
fn norm_chunk(k: u32) -> X8 {
    var n: X8;
    if (NW_DT == DT_F32) {
        if (DTYPE == DT_F32) {
            n.a = bitcast<vec4<f32>>(nw[k]);
        } else {
            n.a = bitcast<vec4<f32>>(nw[2u * k]);
            n.b = bitcast<vec4<f32>>(nw[2u * k + 1u]);
        }
    } else if (DTYPE == DT_F32) {
        let q = nw[k >> 1u];
        let w = select(q.xy, q.zw, (k & 1u) != 0u);
        n.a = vec4<f32>(unpack_pair(NW_DT, w.x), unpack_pair(NW_DT, w.y));
    } else {
        let q = nw[k];
        n.a = vec4<f32>(unpack_pair(NW_DT, q.x), unpack_pair(NW_DT, q.y));
        n.b = vec4<f32>(unpack_pair(NW_DT, q.z), unpack_pair(NW_DT, q.w));
    }
    if (NORM == 2u) {
        n.a += vec4<f32>(1.0);
        n.b += vec4<f32>(1.0);
    }
    return n;
}

fn sumsq(c: X8) -> f32 {
    return dot(c.a, c.a) + select(dot(c.b, c.b), 0.0, DTYPE == DT_F32);
}

fn weighted(c: X8, n: X8) -> X8 {
    return X8(c.a * n.a, c.b * n.b);
}

// Chunk k of every slot (of matrix m) times chunk k of every row of x.
fn vec_step(m: u32, k: u32) {
    let w = load_rows(m, k);
    var u: W4;
    if (GATED) {
        u = load_rows(1u, k);
    }
    var nwc: X8;
    if (NORM > 0u) {
        nwc = norm_chunk(k);
    }
    var c0 = xchunk(0u, k);
    if (NORM > 0u) {
        ssq_lo.x += sumsq(c0);
        c0 = weighted(c0, nwc);
    }
    acc[0] += dots(w, c0);
    if (GATED) {
        acc[8] += dots(u, c0);
    }
    if (BATCH > 1u) {
        var c = xchunk(1u, k);
        if (NORM > 0u) {
            ssq_lo.y += sumsq(c);
            c = weighted(c, nwc);
        }
        acc[1] += dots(w, c);
        if (GATED) {
            acc[9] += dots(u, c);
        }
    }
    if (BATCH > 2u) {
        var c = xchunk(2u, k);
        if (NORM > 0u) {
            ssq_lo.z += sumsq(c);
            c = weighted(c, nwc);
        }
        acc[2] += dots(w, c);
        if (GATED) {
            acc[10] += dots(u, c);
        }
    }
    if (BATCH > 3u) {
        var c = xchunk(3u, k);
        if (NORM > 0u) {
            ssq_lo.w += sumsq(c);
            c = weighted(c, nwc);
        }
        acc[3] += dots(w, c);
        if (GATED) {
            acc[11] += dots(u, c);
        }
    }
    if (BATCH > 4u) {
        var c = xchunk(4u, k);
        if (NORM > 0u) {
            ssq_hi.x += sumsq(c);
            c = weighted(c, nwc);
        }
        acc[4] += dots(w, c);
        if (GATED) {
            acc[12] += dots(u, c);
        }
    }
    if (BATCH > 5u) {
        var c = xchunk(5u, k);
        if (NORM > 0u) {
            ssq_hi.y += sumsq(c);
            c = weighted(c, nwc);
        }
        acc[5] += dots(w, c);
        if (GATED) {
            acc[13] += dots(u, c);
        }
    }
    if (BATCH > 6u) {
        var c = xchunk(6u, k);
        if (NORM > 0u) {
            ssq_hi.z += sumsq(c);
            c = weighted(c, nwc);
        }
        acc[6] += dots(w, c);
        if (GATED) {
            acc[14] += dots(u, c);
        }
    }
    if (BATCH > 7u) {
        var c = xchunk(7u, k);
        if (NORM > 0u) {
            ssq_hi.w += sumsq(c);
            c = weighted(c, nwc);
        }
        acc[7] += dots(w, c);
        if (GATED) {
            acc[15] += dots(u, c);
        }
    }
}

// Element e of matrix m (scalar path).
fn wscalar(m: u32, e: u32) -> f32 {
    let word = word_index(DTYPE, e);
    let v = wload(m, word >> 2u);
    return decode(DTYPE, v[word & 3u], e);
}

fn scalar_rows(m: u32, i: u32) -> vec4<f32> {
    var v = vec4<f32>(wscalar(m, base.x + i), 0.0, 0.0, 0.0);
    if (ROWS > 1u) {
        v.y = wscalar(m, base.y + i);
    }
    if (ROWS > 2u) {
        v.z = wscalar(m, base.z + i);
    }
    if (ROWS > 3u) {
        v.w = wscalar(m, base.w + i);
    }
    return v;
}

fn xscalar(r: u32, i: u32) -> f32 {
    let j = r * p.in_len + i;
    return bitcast<f32>(x[j >> 2u][j & 3u]);
}

// Element i of every slot (of matrix m) times element i of every row of x.
fn scalar_step(m: u32, i: u32) {
    let w = scalar_rows(m, i);
    var u = vec4<f32>();
    if (GATED) {
        u = scalar_rows(1u, i);
    }
    let x0 = xscalar(0u, i);
    acc[0] += w * x0;
    acc[8] += u * x0;
    if (BATCH > 1u) {
        let c = xscalar(1u, i);
        acc[1] += w * c;
        acc[9] += u * c;
    }
    if (BATCH > 2u) {
        let c = xscalar(2u, i);
        acc[2] += w * c;
        acc[10] += u * c;
    }
    if (BATCH > 3u) {
        let c = xscalar(3u, i);
        acc[3] += w * c;
        acc[11] += u * c;
    }
    if (BATCH > 4u) {
        let c = xscalar(4u, i);
        acc[4] += w * c;
        acc[12] += u * c;
    }
    if (BATCH > 5u) {
        let c = xscalar(5u, i);
        acc[5] += w * c;
        acc[13] += u * c;
    }
    if (BATCH > 6u) {
        let c = xscalar(6u, i);
        acc[6] += w * c;
        acc[14] += u * c;
    }
    if (BATCH > 7u) {
        let c = xscalar(7u, i);
        acc[7] += w * c;
        acc[15] += u * c;
    }
}

// Sets up workgroup g; returns (matrix, first row, rows of that matrix).
fn setup(g: u32, li: u32) -> vec3<u32> {
    li_ = li;
    var m = 0u;
    var first = 0u;
    var n = p.n0;
    if (!GATED) {
        if (NMAT > 1u && g >= p.g1) {
            m = 1u;
            first = p.g1;
            n = p.n1;
        }
        if (NMAT > 2u && g >= p.g2) {
            m = 2u;
            first = p.g2;
            n = p.n2;
        }
        if (NMAT > 3u && g >= p.g3) {
            m = 3u;
            first = p.g3;
            n = p.n3;
        }
        if (NMAT > 4u && g >= p.g4) {
            m = 4u;
            first = p.g4;
            n = p.n4;
        }
        if (NMAT > 5u && g >= p.g5) {
            m = 5u;
            first = p.g5;
            n = p.n5;
        }
    }
    let row0 = (g - first) * ROWS;
    let stride = select(p.in_len, p.in_vec, VEC);
    mat = m;
    if (rotates()) {
        load_pair_coefficients(row0);
    }
    let want = vec4<u32>(slot_row(row0, 0u), slot_row(row0, 1u), slot_row(row0, 2u), slot_row(row0, 3u));
    let rows = min(want, vec4<u32>(n - 1u));
    base = rows * stride;
    for (var j = 0u; j < 16u; j++) {
        acc[j] = vec4<f32>();
    }
    ssq_lo = vec4<f32>();
    ssq_hi = vec4<f32>();
    return vec3<u32>(m, row0, n);
}

// Whether this workgroup's rows rotate (Q or K of a ROPE dispatch).
fn rotates() -> bool {
    return ROPE > 0u && mat < 2u;
}

// The row of slot s of a workgroup whose first slot is row0 (it may be past the matrix's rows).
fn slot_row(row0: u32, s: u32) -> u32 {
    if (rotates()) {
        return rope_slot_row(row0, s);
    }
    return row0 + s;
}

// This thread's partial sums over its share of the rows of matrix m: chunks li, li + WG, ... two at a
// time. Called by the parts file's `accumulate`.
fn accumulate_matrix(m: u32) {
    if (VEC) {
        var k = li_;
        for (; k + WG < p.in_vec; k += 2u * WG) {
            vec_step(m, k);
            vec_step(m, k + WG);
        }
        if (k < p.in_vec) {
            vec_step(m, k);
        }
    } else {
        for (var i = li_; i < p.in_len; i += WG) {
            scalar_step(m, i);
        }
    }
}

// Hands every accumulator to the variant's `put` (slot j: rows of x first, then the up rows).
fn reduce_all() {
    put(0u, acc[0]);
    if (BATCH > 1u) {
        put(1u, acc[1]);
    }
    if (BATCH > 2u) {
        put(2u, acc[2]);
    }
    if (BATCH > 3u) {
        put(3u, acc[3]);
    }
    if (BATCH > 4u) {
        put(4u, acc[4]);
    }
    if (BATCH > 5u) {
        put(5u, acc[5]);
    }
    if (BATCH > 6u) {
        put(6u, acc[6]);
    }
    if (BATCH > 7u) {
        put(7u, acc[7]);
    }
    if (GATED) {
        put(BATCH, acc[8]);
        if (BATCH > 1u) {
            put(BATCH + 1u, acc[9]);
        }
        if (BATCH > 2u) {
            put(BATCH + 2u, acc[10]);
        }
        if (BATCH > 3u) {
            put(BATCH + 3u, acc[11]);
        }
        if (BATCH > 4u) {
            put(BATCH + 4u, acc[12]);
        }
        if (BATCH > 5u) {
            put(BATCH + 5u, acc[13]);
        }
        if (BATCH > 6u) {
            put(BATCH + 6u, acc[14]);
        }
        if (BATCH > 7u) {
            put(BATCH + 7u, acc[15]);
        }
    }
    if (NORM > 0u) {
        let j = select(BATCH, 2u * BATCH, GATED);
        put(j, ssq_lo);
        if (BATCH > 4u) {
            put(j + 1u, ssq_hi);
        }
    }
}

// The norm's slots: its sums of x² for rows 0..3 of x, and 4..7.
fn norm_slots() -> u32 {
    if (NORM == 0u) {
        return 0u;
    }
    return select(1u, 2u, BATCH > 4u);
}

// Accumulator slots handed to `put`.
fn n_slots() -> u32 {
    return select(BATCH, 2u * BATCH, GATED) + norm_slots();
}

// n_slots() at its largest (BATCH 8, GATED, NORM).
const MAX_SLOTS: u32 = 18u;

fn gate_act(g: f32) -> f32 {
    if (ACT == 1u) {
        return gelu_tanh(g);
    }
    return silu(g);
}

// Output of slot s (row info.y + s of matrix info.x) for row r of x, from the full dot product `v` and,
// gated, the up matrix's `u`.
fn epilogue(r: u32, s: u32, info: vec3<u32>, v: f32, u: f32) {
    let m = info.x;
    let row = slot_row(info.y, s);
    let n = info.z;
    if (row >= n) {
        return;
    }
    if (GATED) {
        y0[r * p.n0 + row] = bitcast<u32>(gate_act(v) * u);
        return;
    }
    var out = v;
    if (ROPE == 0u && (p.flags & (F_BIAS0 << m)) != 0u) {
        out += bias_of(m, row);
    }
    // ROPE: K and V go to cache row pos + r (the bias is in `v` already).
    let i = select(r, p.pos + r, ROPE > 0u && m > 0u) * n + row;
    if (m == 0u && (p.flags & F_RES) != 0u) {
        out += bitcast<f32>(res[i]);
    }
    if (m == 0u && (p.flags & F_ACCUM) != 0u) {
        out += bitcast<f32>(y0[i]);
    }
    if ((p.flags & F_SOFTCAP) != 0u) {
        out = p.cap * safe_tanh(out / p.cap);
    }
    store(m, i, out);
}

// After the reduction: thread r < BATCH writes the ROWS outputs of row r of x.
fn finish(info: vec3<u32>) {
    let r = li_;
    if (r < BATCH) {
        var v = total(r);
        var u = vec4<f32>();
        if (GATED) {
            u = total(BATCH + r);
        }
        if (NORM > 0u) {
            // rmsnorm(x)·W = (x ⊙ w)·W / sqrt(mean(x²) + eps): the scale applies to the dot products.
            let ss = total(select(BATCH, 2u * BATCH, GATED) + r / 4u)[r % 4u];
            let scale = inverseSqrt(ss / f32(p.in_len) + p.eps);
            v *= scale;
            u *= scale;
        }
        if (ROPE > 0u) {
            v = rope_epilogue_values(info.x, info.y, info.z, r, v);
            if (CACHE_DT != DT_F32 && info.x > 0u) {
                let kw = kv16_words(info.x, info.y, info.z, p.pos + r, v);
                if (kw.ok.x) { store_word(info.x, kw.at.x, kw.w.x); }
                if (kw.ok.y) { store_word(info.x, kw.at.y, kw.w.y); }
                return;
            }
        }
        for (var s = 0u; s < ROWS; s++) {
            epilogue(r, s, info, v[s], u[s]);
        }
    }
}

// Workgroup g's work, called by the variant's `main` once it has recorded its ids.
fn run(g: u32, li: u32) {
    let info = setup(g, li);
    accumulate();
    reduce_all();
    workgroupBarrier();
    finish(info);
}
