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

// Workgroup size of the 8×8 entry point, set by the host from the adapter's (fixed) subgroup size S:
// 4 subgroups (the 16×16 entry point's WG16, 8 subgroups, is coop16.wgsl's).
override WG8: u32 = 128u;

// Per-subgroup scratch for the 8×8 epilogue: a fragment is stored here, then each lane writes its part
// of it through store4. 4 × 8×8 f32.
var<workgroup> Cs: array<f32, 256>;

// ---- 16×16×16, f16 inputs, f32 accumulators: the product of coop16.wgsl --------------------------------

// Elements e..e+7 of A as packed f16 pairs (v of them in bounds, the rest 0).
fn a_run8h(e: u32, v: u32) -> vec4<u32> {
    if (DT_A == DT_F16 && v == 8u && (e & 7u) == 0u) {
        return a[e >> 3u];
    }
    return f16_chunk(a_run4(e, min(v, 4u)), a_run4(e + 4u, select(0u, v - 4u, v > 4u)));
}

fn b_run8h(e: u32, v: u32) -> vec4<u32> {
    if (DT_B == DT_F16 && v == 8u && (e & 7u) == 0u) {
        return b[e >> 3u];
    }
    return f16_chunk(b_run4(e, min(v, 4u)), b_run4(e + 4u, select(0u, v - 4u, v > 4u)));
}

fn fetch_a16(z: u32, m0: u32, k1: u32, ci: u32) -> vec4<u32> {
    let co = coop_chunk(ci, a_k_contig());
    let r = a_run_at(z, m0 + co.x, k1 + co.y, 8u);
    return a_run8h(r.e, r.v);
}

fn fetch_b16(z: u32, n0: u32, k1: u32, ci: u32) -> vec4<u32> {
    let co = coop_chunk(ci, b_k_contig());
    let r = b_run_at(z, n0 + co.x, k1 + co.y, 8u);
    return b_run8h(r.e, r.v);
}

fn store_c4(z: u32, m: u32, n: u32, v: vec4<f32>) {
    store4(z, m, n, v);
}

@compute @workgroup_size(WG16)
fn gemm_coop16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
               @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) sl: u32,
               @builtin(subgroup_size) ss: u32) {
    coop16_product(wid.z, wid.y * HM, wid.x * HN, p.k, lid, sg, sl, ss);
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

// Where a chunk (outer, depth) starts in an 8×8 staging tile.
fn stage_index8(co: vec2<u32>, k_contig: bool) -> u32 {
    return select(co.y * ESO + co.x, co.x * ESK + co.y, k_contig);
}

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
            let ia = stage_index8(coa, ka);
            let cob = chunk_coords(ci, EN, EK, kb, 4u);
            let rb = b_run_at(z, n0 + cob.x, k1 + cob.y, 4u);
            let vb = b_run4(rb.e, rb.v);
            let ib = stage_index8(cob, kb);
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
