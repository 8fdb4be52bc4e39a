enable f16;
enable wgpu_cooperative_matrix;

// A 16×16×16 cooperative-matrix product (tensor cores; f16 inputs, f32 accumulators) whose operands come
// from functions of the module composing it, so that it can stage operands that need decoding (the
// quantized GEMM, qmatmul_coop.wgsl, dequantizes its weights here). The composing module provides:
//   fetch_a16(z, m0, k1, ci) -> Half8    chunk ci (coop_chunk) of batch z's A slice at rows m0.., depth k1..
//   fetch_b16(z, n0, k1, ci) -> Half8    the same for op(B) at columns n0..
//   a_k_contig(), b_k_contig() -> bool   whether the operand's runs go along K (see coop_chunk)
//   store_c4(z, m, n, v: vec4<f32>)      columns n..n+3 of row m of C, bounds and epilogue included
// The dense GEMM keeps its own kernel (gemm_coop.wgsl): on the H200 this one ran f16 × f16 at 57 against
// its 79 TFLOP/s (4096³), which its 48 KB of workgroup memory may explain (the dense kernel takes 28).
//
// A 128×128 tile of C per workgroup of 8 subgroups of 32 lanes; subgroup sg owns rows (sg & 1)·64 + 0..63
// (4 fragments) and columns (sg >> 1)·32 + 0..31 (2 fragments). K advances by 32 a step. The slices are
// double-buffered: while a step multiplies one buffer, the next slice (fetched into registers before the
// products) is stored into the other, so a step needs one barrier.
override WG16: u32 = 256u;
const HM: u32 = 128u;
const HN: u32 = 128u;
const HK: u32 = 32u;
// Staging row strides in halves, padded by 8 (16 bytes): [outer][depth] tiles (runs along K: A, Bᵀ) and
// [depth][outer] tiles (runs along M or N: Aᵀ, B). The fragment loads read row- or column-major to match.
const HSK: u32 = 40u;
const HSO: u32 = 136u;
// One staged slice, max(128·40, 32·136) halves; each operand has two.
const HSLICE: u32 = 5120u;
// Runs of 8 elements per chunk, 128·32/8 chunks per operand slice: two per thread.
const HCHUNKS: u32 = 512u;

// Staged in vec4<f16> units: a chunk is two 8-byte stores, and the fragment loads read the same arrays
// (offsets and strides in vec4s: every fragment starts on a multiple of 4 halves).
var<workgroup> Ah: array<vec4<f16>, 2560>;
var<workgroup> Bh: array<vec4<f16>, 2560>;
// Per-subgroup scratch for the epilogue: a fragment is stored here, then each lane writes its part of it
// through store_c4. 8 × 16×16 f32.
var<workgroup> Cs16: array<f32, 2048>;

// Eight consecutive elements of an operand in f16.
struct Half8 {
    lo: vec4<f16>,
    hi: vec4<f16>,
}

// Rounded to f16, clamped to ±65504 first (bf16 and f32 reach far beyond f16's range).
fn to_f16x4(v: vec4<f32>) -> vec4<f16> {
    return vec4<f16>(clamp(v, vec4<f32>(-65504.0), vec4<f32>(65504.0)));
}

// Where chunk ci of a 128 (outer) × 32 (depth) slice starts, as (outer, depth) offsets, when the operand
// is read in runs of 8 along its contiguous dimension.
fn coop_chunk(ci: u32, k_contig: bool) -> vec2<u32> {
    if (k_contig) {
        return vec2<u32>(ci / 4u, (ci % 4u) * 8u);
    }
    return vec2<u32>((ci % 16u) * 8u, ci / 16u);
}

// Where a chunk starts in a staging slice, in halves.
fn stage_index(ci: u32, k_contig: bool) -> u32 {
    let co = coop_chunk(ci, k_contig);
    return select(co.y * HSO + co.x, co.x * HSK + co.y, k_contig);
}

fn stage_a16(s: u32, ci: u32, h: Half8) {
    let i = (s + stage_index(ci, a_k_contig())) >> 2u;
    Ah[i] = h.lo;
    Ah[i + 1u] = h.hi;
}

fn stage_b16(s: u32, ci: u32, h: Half8) {
    let i = (s + stage_index(ci, b_k_contig())) >> 2u;
    Bh[i] = h.lo;
    Bh[i + 1u] = h.hi;
}

// Fragment (row r0, depth k0) of the A slice staged at `s`; (depth k0, column n0) of the B slice.
fn frag_a16(s: u32, r0: u32, k0: u32) -> coop_mat16x16<f16, A> {
    if (a_k_contig()) {
        return coopLoadT<coop_mat16x16<f16, A>>(&Ah[(s + r0 * HSK + k0) >> 2u], HSK / 4u);
    }
    return coopLoad<coop_mat16x16<f16, A>>(&Ah[(s + k0 * HSO + r0) >> 2u], HSO / 4u);
}

fn frag_b16(s: u32, k0: u32, n0: u32) -> coop_mat16x16<f16, B> {
    if (b_k_contig()) {
        return coopLoad<coop_mat16x16<f16, B>>(&Bh[(s + n0 * HSK + k0) >> 2u], HSK / 4u);
    }
    return coopLoadT<coop_mat16x16<f16, B>>(&Bh[(s + k0 * HSO + n0) >> 2u], HSO / 4u);
}

// Stores fragment f of subgroup sg (rows m, columns n of C) through the scratch and store_c4.
fn out_frag16(f: coop_mat16x16<f32, C>, sg: u32, sl: u32, ss: u32, z: u32, m: u32, n: u32) {
    let i = sg * 256u;
    coopStoreT(f, &Cs16[i], 16u);
    workgroupBarrier();
    for (var q = sl; q < 64u; q += ss) {
        let r = q >> 2u;
        let cq = (q & 3u) * 4u;
        let s = i + r * 16u + cq;
        store_c4(z, m + r, n + cq, vec4<f32>(Cs16[s], Cs16[s + 1u], Cs16[s + 2u], Cs16[s + 3u]));
    }
    workgroupBarrier();
}

// A slice's two chunks a thread (chunks lid and lid + WG16 of each operand) in named registers: an
// indexed array would go to local memory and make every global load wait at once instead of
// overlapping the products.
struct Slice16 {
    a0: Half8,
    a1: Half8,
    b0: Half8,
    b1: Half8,
}

fn fetch_slice16(z: u32, m0: u32, n0: u32, k1: u32, lid: u32) -> Slice16 {
    return Slice16(
        fetch_a16(z, m0, k1, lid),
        fetch_a16(z, m0, k1, lid + WG16),
        fetch_b16(z, n0, k1, lid),
        fetch_b16(z, n0, k1, lid + WG16),
    );
}

fn stage_slice16(s: u32, lid: u32, q: Slice16) {
    stage_a16(s, lid, q.a0);
    stage_a16(s, lid + WG16, q.a1);
    stage_b16(s, lid, q.b0);
    stage_b16(s, lid + WG16, q.b1);
}

// The workgroup's 128×128 tile of batch z's C at rows m0, columns n0, over depth k.
fn coop16_product(z: u32, m0: u32, n0: u32, k: u32, lid: u32, sg: u32, sl: u32, ss: u32) {
    let ntiles = (k + HK - 1u) / HK;
    stage_slice16(0u, lid, fetch_slice16(z, m0, n0, 0u, lid));
    workgroupBarrier();

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
        let cur = (t & 1u) * HSLICE;
        let more = t + 1u < ntiles;
        var next: Slice16;
        if (more) {
            next = fetch_slice16(z, m0, n0, (t + 1u) * HK, lid);
        }
        for (var k0 = 0u; k0 < HK; k0 += 16u) {
            let a0 = frag_a16(cur, wm, k0);
            let a1 = frag_a16(cur, wm + 16u, k0);
            let a2 = frag_a16(cur, wm + 32u, k0);
            let a3 = frag_a16(cur, wm + 48u, k0);
            let b0 = frag_b16(cur, k0, wn);
            let b1 = frag_b16(cur, k0, wn + 16u);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
            c20 = coopMultiplyAdd(a2, b0, c20);
            c21 = coopMultiplyAdd(a2, b1, c21);
            c30 = coopMultiplyAdd(a3, b0, c30);
            c31 = coopMultiplyAdd(a3, b1, c31);
        }
        // The other buffer was last read in step t - 1, which every subgroup finished before the barrier
        // that ended it.
        if (more) {
            stage_slice16(HSLICE - cur, lid, next);
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
