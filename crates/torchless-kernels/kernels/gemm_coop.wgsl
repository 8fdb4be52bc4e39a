enable f16;
enable wgpu_cooperative_matrix;

// Batched matrix product on cooperative matrices (tensor cores, simdgroup matrices): the same op, bindings
// and epilogue as gemm.wgsl, whose shared section below is copied verbatim (a test checks). Chosen by the
// host only when the adapter offers a fitting configuration, has f16 and subgroups, and a fixed subgroup
// size S; the workgroup size is set from S so that each subgroup owns a fixed block of C.
//
// Inputs are staged through workgroup memory in the matrix type: f16 passes through; f32 and bf16 are
// rounded to f16 for the 16×16 f16 entry point. bf16 (and f32) values beyond f16's range (|v| > 65504)
// are CLAMPED to ±65504, and values below f16's smallest subnormal (6e-8) flush to 0: callers that need
// bf16's range ask for the tiled kernel. The 8×8 f32 entry point stages f32 exactly.

// ---- gemm shared: begin ----
override DT_A: u32 = 0u;
override DT_B: u32 = 0u;
// 1 when A is stored [K, M] (op(A) = Aᵀ); 1 when B is stored [N, K] (op(B) = Bᵀ).
override TRANS_A: u32 = 0u;
override TRANS_B: u32 = 0u;
// Epilogue: BIAS 1 adds bias[n] (dtype DT_BIAS); RES 1 adds res[z, m, n] (dtype DT_RES, batch stride
// p.res_bstride), RES 2 adds the value already in c (in-place accumulate, the output is f32).
override BIAS: u32 = 0u;
override DT_BIAS: u32 = 0u;
override RES: u32 = 0u;
override DT_RES: u32 = 0u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    alpha: f32,
    // Element offsets between consecutive batch entries (0 when the operand is shared).
    a_bstride: u32,
    b_bstride: u32,
    res_bstride: u32,
    batch: u32,
}

// Every entry point uses all of these; absent epilogue operands are bound to `a`.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> bias_buf: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> res_buf: array<vec4<u32>>;

// Element e (flat index) of an operand, from whichever word holds it.
fn a_elem(e: u32) -> f32 {
    let wi = word_index(DT_A, e);
    return decode(DT_A, a[wi >> 2u][wi & 3u], e);
}

fn b_elem(e: u32) -> f32 {
    let wi = word_index(DT_B, e);
    return decode(DT_B, b[wi >> 2u][wi & 3u], e);
}

// Elements e..e+3 of A as f32; those at or past `v` (the count in bounds) read as 0. Aligned full runs are
// one vec4 load; others (ragged edges, 16-bit rows of odd length that start mid-word) go element by element.
fn a_run4(e: u32, v: u32) -> vec4<f32> {
    if (v == 4u && (e & 3u) == 0u) {
        if (DT_A == DT_F32) {
            return bitcast<vec4<f32>>(a[e >> 2u]);
        }
        let q = a[e >> 3u];
        let w = select(q.xy, q.zw, (e & 4u) != 0u);
        return vec4<f32>(unpack_pair(DT_A, w.x), unpack_pair(DT_A, w.y));
    }
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (i < v) {
            r[i] = a_elem(e + i);
        }
    }
    return r;
}

fn b_run4(e: u32, v: u32) -> vec4<f32> {
    if (v == 4u && (e & 3u) == 0u) {
        if (DT_B == DT_F32) {
            return bitcast<vec4<f32>>(b[e >> 2u]);
        }
        let q = b[e >> 3u];
        let w = select(q.xy, q.zw, (e & 4u) != 0u);
        return vec4<f32>(unpack_pair(DT_B, w.x), unpack_pair(DT_B, w.y));
    }
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (i < v) {
            r[i] = b_elem(e + i);
        }
    }
    return r;
}

// A run of `ch` elements along an operand's contiguous dimension: the flat index of its first element
// and how many of its elements are in bounds (0..ch).
struct Run {
    e: u32,
    v: u32,
}

// The run that starts at outer index o (a row of op(A), a column of op(B)) and depth kk. The operand is
// stored [outer, depth] when k_contig (A, Bᵀ) and [depth, outer] otherwise (Aᵀ, B).
fn operand_run(base: u32, o: u32, kk: u32, outer: u32, depth: u32, k_contig: bool, ch: u32) -> Run {
    if (k_contig) {
        let v = select(0u, min(depth - kk, ch), o < outer && kk < depth);
        return Run(base + o * depth + kk, v);
    }
    let v = select(0u, min(outer - o, ch), kk < depth && o < outer);
    return Run(base + kk * outer + o, v);
}

// Where chunk `ci` of a tile of `to` (outer) × `tk` (depth) elements starts, as (outer, depth) offsets,
// when the tile is read in runs of `ch` elements along the contiguous dimension.
fn chunk_coords(ci: u32, to: u32, tk: u32, k_contig: bool, ch: u32) -> vec2<u32> {
    if (k_contig) {
        let per = tk / ch;
        return vec2<u32>(ci / per, (ci % per) * ch);
    }
    let per = to / ch;
    return vec2<u32>((ci % per) * ch, ci / per);
}

fn a_k_contig() -> bool {
    return TRANS_A == 0u;
}

fn b_k_contig() -> bool {
    return TRANS_B != 0u;
}

// The run of A (batch z) starting at row m, depth kk.
fn a_run_at(z: u32, m: u32, kk: u32, ch: u32) -> Run {
    return operand_run(z * p.a_bstride, m, kk, p.m, p.k, a_k_contig(), ch);
}

// The run of op(B) (batch z) starting at column n, depth kk.
fn b_run_at(z: u32, n: u32, kk: u32, ch: u32) -> Run {
    return operand_run(z * p.b_bstride, n, kk, p.n, p.k, b_k_contig(), ch);
}

fn bias_at(n: u32) -> f32 {
    let wi = word_index(DT_BIAS, n);
    return decode(DT_BIAS, bias_buf[wi >> 2u][wi & 3u], n);
}

fn res_at(i: u32) -> f32 {
    let wi = word_index(DT_RES, i);
    return decode(DT_RES, res_buf[wi >> 2u][wi & 3u], i);
}

// Writes columns n..n+3 of row m of batch z: alpha · v, plus the bias and residual, skipping what lies
// outside [M, N].
fn store4(z: u32, m: u32, n: u32, v: vec4<f32>) {
    if (m >= p.m || n >= p.n) {
        return;
    }
    let row = m * p.n;
    let e = z * p.m * p.n + row + n;
    var r = p.alpha * v;
    for (var j = 0u; j < 4u; j++) {
        if (n + j < p.n) {
            if (BIAS != 0u) {
                r[j] += bias_at(n + j);
            }
            if (RES == 1u) {
                r[j] += res_at(z * p.res_bstride + row + n + j);
            } else if (RES == 2u) {
                let ej = e + j;
                r[j] += bitcast<f32>(c[ej >> 2u][ej & 3u]);
            }
        }
    }
    if (n + 3u < p.n && (e & 3u) == 0u) {
        c[e >> 2u] = bitcast<vec4<u32>>(r);
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (n + j < p.n) {
            let ej = e + j;
            c[ej >> 2u][ej & 3u] = bitcast<u32>(r[j]);
        }
    }
}
// ---- gemm shared: end ----

// Workgroup sizes, set by the host from the adapter's (fixed) subgroup size S: 8 subgroups for the 16×16
// entry point, 4 for the 8×8 one. Subgroup `sg` owns a fixed block of the workgroup's tile of C.
override WG16: u32 = 256u;
override WG8: u32 = 128u;

// Per-subgroup scratch for the epilogue: a fragment is stored here, then each lane writes its part of it
// through store4 (bounds, alpha, bias, residual). 8 × 16×16 (or 4 × 8×8) f32.
var<workgroup> Cs: array<f32, 2048>;

// ---- 16×16×16, f16 inputs, f32 accumulators ------------------------------------------------------------
// A 128×128 tile of C per workgroup; subgroup sg owns rows (sg & 1)·64 + 0..63 (4 fragments) and columns
// (sg >> 1)·32 + 0..31 (2 fragments). K advances by 32 (two fragment steps); the next slice is loaded into
// registers (already rounded to f16) while the current one is multiplied.
const HM: u32 = 128u;
const HN: u32 = 128u;
const HK: u32 = 32u;
// Staging row strides in halves, padded by 8 (16 bytes): [outer][depth] tiles (runs along K: A, Bᵀ) and
// [depth][outer] tiles (runs along M or N: Aᵀ, B). The fragment loads read row- or column-major to match.
const HSK: u32 = 40u;
const HSO: u32 = 136u;
// Runs of 8 elements per chunk; 128·32/8 chunks per operand tile; at most 4 per thread (WG16 >= 128).
const HCHUNKS: u32 = 512u;

var<workgroup> Ah: array<f16, 5120>; // max(128·40, 32·136)
var<workgroup> Bh: array<f16, 5120>;

// Two values rounded to f16 (clamped to ±65504 first: bf16 and f32 reach far beyond f16's range).
fn f16_bits(v: vec2<f32>) -> u32 {
    return pack2x16float(clamp(v, vec2<f32>(-65504.0), vec2<f32>(65504.0)));
}

// Elements e..e+7 of A as packed f16 pairs (v of them in bounds, the rest 0).
fn a_run8h(e: u32, v: u32) -> vec4<u32> {
    if (DT_A == DT_F16 && v == 8u && (e & 7u) == 0u) {
        return a[e >> 3u];
    }
    let lo = a_run4(e, min(v, 4u));
    let hi = a_run4(e + 4u, select(0u, v - 4u, v > 4u));
    return vec4<u32>(f16_bits(lo.xy), f16_bits(lo.zw), f16_bits(hi.xy), f16_bits(hi.zw));
}

fn b_run8h(e: u32, v: u32) -> vec4<u32> {
    if (DT_B == DT_F16 && v == 8u && (e & 7u) == 0u) {
        return b[e >> 3u];
    }
    let lo = b_run4(e, min(v, 4u));
    let hi = b_run4(e + 4u, select(0u, v - 4u, v > 4u));
    return vec4<u32>(f16_bits(lo.xy), f16_bits(lo.zw), f16_bits(hi.xy), f16_bits(hi.zw));
}

// Where a chunk (outer, depth) starts in a staging tile.
fn stage_index(co: vec2<u32>, k_contig: bool, sk: u32, so: u32) -> u32 {
    return select(co.y * so + co.x, co.x * sk + co.y, k_contig);
}

fn put_a8h(i: u32, w: vec4<u32>) {
    let h0 = vec2<f16>(unpack2x16float(w.x));
    let h1 = vec2<f16>(unpack2x16float(w.y));
    let h2 = vec2<f16>(unpack2x16float(w.z));
    let h3 = vec2<f16>(unpack2x16float(w.w));
    Ah[i] = h0.x;
    Ah[i + 1u] = h0.y;
    Ah[i + 2u] = h1.x;
    Ah[i + 3u] = h1.y;
    Ah[i + 4u] = h2.x;
    Ah[i + 5u] = h2.y;
    Ah[i + 6u] = h3.x;
    Ah[i + 7u] = h3.y;
}

fn put_b8h(i: u32, w: vec4<u32>) {
    let h0 = vec2<f16>(unpack2x16float(w.x));
    let h1 = vec2<f16>(unpack2x16float(w.y));
    let h2 = vec2<f16>(unpack2x16float(w.z));
    let h3 = vec2<f16>(unpack2x16float(w.w));
    Bh[i] = h0.x;
    Bh[i + 1u] = h0.y;
    Bh[i + 2u] = h1.x;
    Bh[i + 3u] = h1.y;
    Bh[i + 4u] = h2.x;
    Bh[i + 5u] = h2.y;
    Bh[i + 6u] = h3.x;
    Bh[i + 7u] = h3.y;
}

// Fragment (row r0, depth k0) of the staged A tile; (depth k0, column n0) of the staged B tile.
fn frag_a16(r0: u32, k0: u32) -> coop_mat16x16<f16, A> {
    if (a_k_contig()) {
        let i = r0 * HSK + k0;
        return coopLoadT<coop_mat16x16<f16, A>>(&Ah[i], HSK);
    }
    let i = k0 * HSO + r0;
    return coopLoad<coop_mat16x16<f16, A>>(&Ah[i], HSO);
}

fn frag_b16(k0: u32, n0: u32) -> coop_mat16x16<f16, B> {
    if (b_k_contig()) {
        let i = n0 * HSK + k0;
        return coopLoad<coop_mat16x16<f16, B>>(&Bh[i], HSK);
    }
    let i = k0 * HSO + n0;
    return coopLoadT<coop_mat16x16<f16, B>>(&Bh[i], HSO);
}

// Stores fragment f of subgroup sg (rows m, columns n of C) through the scratch and store4.
fn out_frag16(f: coop_mat16x16<f32, C>, sg: u32, sl: u32, ss: u32, z: u32, m: u32, n: u32) {
    let i = sg * 256u;
    coopStoreT(f, &Cs[i], 16u);
    workgroupBarrier();
    for (var q = sl; q < 64u; q += ss) {
        let r = q >> 2u;
        let cq = (q & 3u) * 4u;
        let s = i + r * 16u + cq;
        store4(z, m + r, n + cq, vec4<f32>(Cs[s], Cs[s + 1u], Cs[s + 2u], Cs[s + 3u]));
    }
    workgroupBarrier();
}

// Chunk `ci` of the A (B) tile at depth k1, fetched as packed f16 pairs; stored into the staging tile.
fn fetch_a16(z: u32, m0: u32, k1: u32, ci: u32) -> vec4<u32> {
    let co = chunk_coords(ci, HM, HK, a_k_contig(), 8u);
    let r = a_run_at(z, m0 + co.x, k1 + co.y, 8u);
    return a_run8h(r.e, r.v);
}

fn fetch_b16(z: u32, n0: u32, k1: u32, ci: u32) -> vec4<u32> {
    let co = chunk_coords(ci, HN, HK, b_k_contig(), 8u);
    let r = b_run_at(z, n0 + co.x, k1 + co.y, 8u);
    return b_run8h(r.e, r.v);
}

fn stage_a16(ci: u32, w: vec4<u32>) {
    put_a8h(stage_index(chunk_coords(ci, HM, HK, a_k_contig(), 8u), a_k_contig(), HSK, HSO), w);
}

fn stage_b16(ci: u32, w: vec4<u32>) {
    put_b8h(stage_index(chunk_coords(ci, HN, HK, b_k_contig(), 8u), b_k_contig(), HSK, HSO), w);
}

@compute @workgroup_size(WG16)
fn gemm_coop16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
               @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) sl: u32,
               @builtin(subgroup_size) ss: u32) {
    let z = wid.z;
    let m0 = wid.y * HM;
    let n0 = wid.x * HN;
    let ntiles = (p.k + HK - 1u) / HK;

    // The next slice's chunks live in named registers (slot s holds chunk lid + s·WG16; slots past
    // HCHUNKS fold away, WG16 being a constant): an indexed array would go to local memory and make
    // every global load wait at once instead of overlapping the products.
    let has1 = WG16 < HCHUNKS;
    let has2 = 2u * WG16 < HCHUNKS;
    let has3 = 3u * WG16 < HCHUNKS;
    let c0i = lid;
    let c1i = lid + WG16;
    let c2i = lid + 2u * WG16;
    let c3i = lid + 3u * WG16;
    var pa0 = fetch_a16(z, m0, 0u, c0i);
    var pb0 = fetch_b16(z, n0, 0u, c0i);
    var pa1 = vec4<u32>(0u);
    var pb1 = vec4<u32>(0u);
    var pa2 = vec4<u32>(0u);
    var pb2 = vec4<u32>(0u);
    var pa3 = vec4<u32>(0u);
    var pb3 = vec4<u32>(0u);
    if (has1) {
        pa1 = fetch_a16(z, m0, 0u, c1i);
        pb1 = fetch_b16(z, n0, 0u, c1i);
    }
    if (has2) {
        pa2 = fetch_a16(z, m0, 0u, c2i);
        pb2 = fetch_b16(z, n0, 0u, c2i);
    }
    if (has3) {
        pa3 = fetch_a16(z, m0, 0u, c3i);
        pb3 = fetch_b16(z, n0, 0u, c3i);
    }

    let wm = (sg & 1u) * 64u;
    let wn = (sg >> 1u) * 32u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>();
    var c21 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>();
    var c31 = coop_mat16x16<f32, C>();

    for (var t = 0u; t < ntiles; t++) {
        stage_a16(c0i, pa0);
        stage_b16(c0i, pb0);
        if (has1) {
            stage_a16(c1i, pa1);
            stage_b16(c1i, pb1);
        }
        if (has2) {
            stage_a16(c2i, pa2);
            stage_b16(c2i, pb2);
        }
        if (has3) {
            stage_a16(c3i, pa3);
            stage_b16(c3i, pb3);
        }
        workgroupBarrier();
        if (t + 1u < ntiles) {
            let k1 = (t + 1u) * HK;
            pa0 = fetch_a16(z, m0, k1, c0i);
            pb0 = fetch_b16(z, n0, k1, c0i);
            if (has1) {
                pa1 = fetch_a16(z, m0, k1, c1i);
                pb1 = fetch_b16(z, n0, k1, c1i);
            }
            if (has2) {
                pa2 = fetch_a16(z, m0, k1, c2i);
                pb2 = fetch_b16(z, n0, k1, c2i);
            }
            if (has3) {
                pa3 = fetch_a16(z, m0, k1, c3i);
                pb3 = fetch_b16(z, n0, k1, c3i);
            }
        }
        for (var k0 = 0u; k0 < HK; k0 += 16u) {
            let a0 = frag_a16(wm, k0);
            let a1 = frag_a16(wm + 16u, k0);
            let a2 = frag_a16(wm + 32u, k0);
            let a3 = frag_a16(wm + 48u, k0);
            let b0 = frag_b16(k0, wn);
            let b1 = frag_b16(k0, wn + 16u);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
        }
        workgroupBarrier();
    }

    let m = m0 + wm;
    let n = n0 + wn;
    out_frag16(c00, sg, sl, ss, z, m, n);
    out_frag16(c01, sg, sl, ss, z, m, n + 16u);
    out_frag16(c10, sg, sl, ss, z, m + 16u, n);
    out_frag16(c11, sg, sl, ss, z, m + 16u, n + 16u);
    out_frag16(c20, sg, sl, ss, z, m + 32u, n);
    out_frag16(c21, sg, sl, ss, z, m + 32u, n + 16u);
    out_frag16(c30, sg, sl, ss, z, m + 48u, n);
    out_frag16(c31, sg, sl, ss, z, m + 48u, n + 16u);
}

// ---- f16 pre-pass ---------------------------------------------------------------------------------------
// A product input rounded to f16 once, before a cooperative product that would otherwise convert it in
// every workgroup staging it (qmatmul_coop.wgsl reads x this way): rounded to nearest and clamped to
// ±65504 as the staging of coop16.wgsl rounds. Thread i converts elements 8i..8i+7 of the buffer bound as
// A (DT_A); p.k holds the element count.
@group(0) @binding(2) var<storage, read_write> h_out: array<vec4<f16>>;

fn to_f16x4_clamped(v: vec4<f32>) -> vec4<f16> {
    return vec4<f16>(clamp(v, vec4<f32>(-65504.0), vec4<f32>(65504.0)));
}

@compute @workgroup_size(256)
fn to_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    let e = 8u * i;
    if (e >= p.k) {
        return;
    }
    let v = min(p.k - e, 8u);
    h_out[2u * i] = to_f16x4_clamped(a_run4(e, min(v, 4u)));
    h_out[2u * i + 1u] = to_f16x4_clamped(a_run4(e + 4u, select(0u, v - 4u, v > 4u)));
}

// ---- 8×8×8, f32 inputs and accumulators (Apple's simdgroup matrices) ------------------------------------
// A 64×64 tile of C per workgroup of 4 subgroups; subgroup sg owns rows (sg & 1)·32 and columns
// (sg >> 1)·32 (4×4 fragments). K advances by 16; staged exactly in f32.
const EM: u32 = 64u;
const EN: u32 = 64u;
const EK: u32 = 16u;
const ESK: u32 = 20u;
const ESO: u32 = 68u;
const ECHUNKS: u32 = 256u; // 64·16/4

var<workgroup> Af: array<f32, 1280>; // max(64·20, 16·68)
var<workgroup> Bf: array<f32, 1280>;

fn frag_a8(r0: u32, k0: u32) -> coop_mat8x8<f32, A> {
    if (a_k_contig()) {
        let i = r0 * ESK + k0;
        return coopLoadT<coop_mat8x8<f32, A>>(&Af[i], ESK);
    }
    let i = k0 * ESO + r0;
    return coopLoad<coop_mat8x8<f32, A>>(&Af[i], ESO);
}

fn frag_b8(k0: u32, n0: u32) -> coop_mat8x8<f32, B> {
    if (b_k_contig()) {
        let i = n0 * ESK + k0;
        return coopLoad<coop_mat8x8<f32, B>>(&Bf[i], ESK);
    }
    let i = k0 * ESO + n0;
    return coopLoadT<coop_mat8x8<f32, B>>(&Bf[i], ESO);
}

fn out_frag8(f: coop_mat8x8<f32, C>, sg: u32, sl: u32, ss: u32, z: u32, m: u32, n: u32) {
    let i = sg * 64u;
    coopStoreT(f, &Cs[i], 8u);
    workgroupBarrier();
    for (var q = sl; q < 16u; q += ss) {
        let r = q >> 1u;
        let cq = (q & 1u) * 4u;
        let s = i + r * 8u + cq;
        store4(z, m + r, n + cq, vec4<f32>(Cs[s], Cs[s + 1u], Cs[s + 2u], Cs[s + 3u]));
    }
    workgroupBarrier();
}

@compute @workgroup_size(WG8)
fn gemm_coop8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
              @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) sl: u32,
              @builtin(subgroup_size) ss: u32) {
    let z = wid.z;
    let m0 = wid.y * EM;
    let n0 = wid.x * EN;
    let ka = a_k_contig();
    let kb = b_k_contig();
    let ntiles = (p.k + EK - 1u) / EK;
    let wm = (sg & 1u) * 32u;
    let wn = (sg >> 1u) * 32u;
    var acc: array<coop_mat8x8<f32, C>, 16>;
    for (var f = 0u; f < 16u; f++) {
        acc[f] = coop_mat8x8<f32, C>();
    }
    for (var t = 0u; t < ntiles; t++) {
        let k1 = t * EK;
        for (var ci = lid; ci < ECHUNKS; ci += WG8) {
            let coa = chunk_coords(ci, EM, EK, ka, 4u);
            let ra = a_run_at(z, m0 + coa.x, k1 + coa.y, 4u);
            let va = a_run4(ra.e, ra.v);
            let ia = stage_index(coa, ka, ESK, ESO);
            let cob = chunk_coords(ci, EN, EK, kb, 4u);
            let rb = b_run_at(z, n0 + cob.x, k1 + cob.y, 4u);
            let vb = b_run4(rb.e, rb.v);
            let ib = stage_index(cob, kb, ESK, ESO);
            // A run along depth lands in one staging row; along outer too (both layouts keep runs contiguous).
            Af[ia] = va.x;
            Af[ia + 1u] = va.y;
            Af[ia + 2u] = va.z;
            Af[ia + 3u] = va.w;
            Bf[ib] = vb.x;
            Bf[ib + 1u] = vb.y;
            Bf[ib + 2u] = vb.z;
            Bf[ib + 3u] = vb.w;
        }
        workgroupBarrier();
        for (var k0 = 0u; k0 < EK; k0 += 8u) {
            for (var i = 0u; i < 4u; i++) {
                let fa = frag_a8(wm + i * 8u, k0);
                for (var j = 0u; j < 4u; j++) {
                    let fb = frag_b8(k0, wn + j * 8u);
                    let f = i * 4u + j;
                    acc[f] = coopMultiplyAdd(fa, fb, acc[f]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            out_frag8(acc[i * 4u + j], sg, sl, ss, z, m0 + wm + i * 8u, n0 + wn + j * 8u);
        }
    }
}
