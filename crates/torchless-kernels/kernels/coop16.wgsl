enable f16;
enable wgpu_cooperative_matrix;

// A 16×16×16 cooperative-matrix product (tensor cores; f16 inputs, f32 accumulators) whose operands come
// from functions of the module composing it: the dense GEMM (gemm_coop.wgsl) converts f32/bf16/f16
// operands there, the quantized GEMM (qmatmul_coop.wgsl) dequantizes its weights. The composing module
// provides:
//   a_k_contig(), b_k_contig() -> bool   whether the operand's runs go along K (depth) or along M / N
//   fetch_a16(z, m, k) -> vec4<u32>      8 elements of batch z's A from row m, depth k, along its runs
//                                        (k..k+7 or m..m+7), as packed f16 pairs (common.wgsl's
//                                        f16_chunk); 0 outside the matrix
//   fetch_b16(z, n, k) -> vec4<u32>      the same for op(B) from column n, depth k
//   store_c4(z, m, n, v: vec4<f32>)      columns n..n+3 of row m of C, bounds and epilogue included
//   const HM, HN: u32                    the rows and columns of C a workgroup computes: HM a multiple
//                                        of 64, HN of 32, HM·HN = 32768 (16 subgroups of 64×32)
//
// An HM×HN tile of C per workgroup of 16 subgroups of 32 lanes (WG16 = 512); subgroup sg owns rows
// (sg % (HM / 64))·64 + 0..63 and columns (sg / (HM / 64))·32 + 0..31, 4×2 fragments, so a 16-deep step
// loads 6 fragments for 8 products. K advances by 32 a step, two 16-deep products between a barrier
// pair; the next slice is fetched into registers (already in f16) while the current one is multiplied.
// The tile fits 48 KiB of workgroup memory only with 32-deep slices.
//
// H100, 4096³, 128×256 tiles: the vec4<f16> staging below with 8 subgroups of 64×64 ran f16 at 170.4
// TFLOP/s (`benchmarks/results/2026-12-07c-h100/run48/`, against 137.8 for 128×128 tiles of 64-deep
// slices staged in f16 scalars); 16 subgroups of 64×32 run 188.2 (bf16 177.1 against 161.4, the
// quantized GEMMs 17 to 21 % faster: `2026-12-07d-h100/next49/`): twice the warps hide the barriers
// and the loads better than the larger fragment blocks save. 256×128 tiles run the dense product 2.7 %
// slower but the quantized one 32 to 38 % faster, each weight being dequantized once per 256 rows of x
// (`2026-12-07d-h100/next51/`), so the dense GEMM keeps 128×256 and the quantized one takes 256×128.
// Tried, slower (`2026-12-07e-h100/next53/`, f16 4096³ against 187.4): two slices in flight instead of
// one (169.5: the second slice's registers cost more than the latency they hide) and 48-deep slices, a
// third fewer barriers (171.3).
override WG16: u32 = 512u;
const HK: u32 = 32u;
// Chunks of 8 elements in a slice of A (HM × 32) and of B (HN × 32): 1 to 4 a thread at WG16 = 512.
const ACHUNKS: u32 = HM * 4u;
const BCHUNKS: u32 = HN * 4u;
// Staging row strides in vec4<f16>s (4 halves), rows padded by 8 halves (16 bytes) so that a fragment's
// rows fall in different banks: [outer][depth] tiles (runs along K: A, Bᵀ) and [depth][outer] tiles
// (runs along M or N: Aᵀ, B); the fragment loads read row- or column-major to match.
const HSK: u32 = 10u; // (32 + 8) / 4
const HSOA: u32 = (HM + 8u) / 4u;
const HSOB: u32 = (HN + 8u) / 4u;

// Staged as vec4<f16>s: a chunk is two 8-byte stores instead of eight 2-byte ones; fragment loads count
// offsets and strides in these vectors. (naga takes a cooperative load's element type from the pointer,
// so the 16-byte words NVIDIA's own samples stage through would load as u32 matrices.)
// [outer][depth] needs HM·HSK vectors, [depth][outer] 32·HSOA = 8·HM + 64: fewer for HM ≥ 32.
var<workgroup> Ah: array<vec4<f16>, HM * HSK>;
var<workgroup> Bh: array<vec4<f16>, HN * HSK>;
// Per-subgroup scratch for the epilogue: a fragment is stored here, then each lane writes its part of it
// through store_c4. 16 × 16×16 f32.
var<workgroup> Cs16: array<f32, 4096>;

// Where chunk ci of an `outer` × 32 (depth) slice starts, as (outer, depth) offsets, when the operand is
// read in runs of 8 along its contiguous dimension.
fn coop_chunk(ci: u32, k_contig: bool, outer: u32) -> vec2<u32> {
    if (k_contig) {
        return vec2<u32>(ci / 4u, (ci % 4u) * 8u);
    }
    let per_depth = outer / 8u;
    return vec2<u32>((ci % per_depth) * 8u, ci / per_depth);
}

// Where the chunk at (outer, depth) `co` starts in a staging tile whose [depth][outer] rows are `so`
// vectors long, in vec4<f16>s.
fn stage_index(co: vec2<u32>, k_contig: bool, so: u32) -> u32 {
    return select(co.y * so + co.x / 4u, co.x * HSK + co.y / 4u, k_contig);
}

// Four halves from two words of packed f16 pairs.
fn f16x4(lo: u32, hi: u32) -> vec4<f16> {
    return vec4<f16>(vec2<f16>(unpack2x16float(lo)), vec2<f16>(unpack2x16float(hi)));
}

fn fetch_a_chunk(z: u32, m0: u32, k1: u32, ci: u32) -> vec4<u32> {
    let co = coop_chunk(ci, a_k_contig(), HM);
    return fetch_a16(z, m0 + co.x, k1 + co.y);
}

fn fetch_b_chunk(z: u32, n0: u32, k1: u32, ci: u32) -> vec4<u32> {
    let co = coop_chunk(ci, b_k_contig(), HN);
    return fetch_b16(z, n0 + co.x, k1 + co.y);
}

fn stage_a16(ci: u32, w: vec4<u32>) {
    let i = stage_index(coop_chunk(ci, a_k_contig(), HM), a_k_contig(), HSOA);
    Ah[i] = f16x4(w.x, w.y);
    Ah[i + 1u] = f16x4(w.z, w.w);
}

fn stage_b16(ci: u32, w: vec4<u32>) {
    let i = stage_index(coop_chunk(ci, b_k_contig(), HN), b_k_contig(), HSOB);
    Bh[i] = f16x4(w.x, w.y);
    Bh[i + 1u] = f16x4(w.z, w.w);
}

// Fragment (row r0, depth k0) of the staged A tile; (depth k0, column n0) of the staged B tile.
fn frag_a16(r0: u32, k0: u32) -> coop_mat16x16<f16, A> {
    if (a_k_contig()) {
        return coopLoadT<coop_mat16x16<f16, A>>(&Ah[r0 * HSK + k0 / 4u], HSK);
    }
    return coopLoad<coop_mat16x16<f16, A>>(&Ah[k0 * HSOA + r0 / 4u], HSOA);
}

fn frag_b16(k0: u32, n0: u32) -> coop_mat16x16<f16, B> {
    if (b_k_contig()) {
        return coopLoad<coop_mat16x16<f16, B>>(&Bh[n0 * HSK + k0 / 4u], HSK);
    }
    return coopLoadT<coop_mat16x16<f16, B>>(&Bh[k0 * HSOB + n0 / 4u], HSOB);
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

// A slice's chunks held by one thread: slot s holds chunk lid + s·WG16 of A (a0..a3) and of B (b0..b3).
// Named fields rather than an indexed array, which would go to local memory and make every global load
// wait at once instead of overlapping the products; slots past a slice's chunks fold away (WG16 being
// a constant).
struct Slice {
    a0: vec4<u32>,
    a1: vec4<u32>,
    a2: vec4<u32>,
    a3: vec4<u32>,
    b0: vec4<u32>,
    b1: vec4<u32>,
    b2: vec4<u32>,
    b3: vec4<u32>,
}

// This thread's chunks of the slice at depth k of the tile at (m0, n0).
fn fetch_slice(z: u32, m0: u32, n0: u32, k: u32, lid: u32) -> Slice {
    var s: Slice;
    s.a0 = fetch_a_chunk(z, m0, k, lid);
    s.b0 = fetch_b_chunk(z, n0, k, lid);
    if (WG16 < ACHUNKS) {
        s.a1 = fetch_a_chunk(z, m0, k, lid + WG16);
    }
    if (2u * WG16 < ACHUNKS) {
        s.a2 = fetch_a_chunk(z, m0, k, lid + 2u * WG16);
    }
    if (3u * WG16 < ACHUNKS) {
        s.a3 = fetch_a_chunk(z, m0, k, lid + 3u * WG16);
    }
    if (WG16 < BCHUNKS) {
        s.b1 = fetch_b_chunk(z, n0, k, lid + WG16);
    }
    if (2u * WG16 < BCHUNKS) {
        s.b2 = fetch_b_chunk(z, n0, k, lid + 2u * WG16);
    }
    if (3u * WG16 < BCHUNKS) {
        s.b3 = fetch_b_chunk(z, n0, k, lid + 3u * WG16);
    }
    return s;
}

// This thread's chunks into the staging tiles.
fn stage_slice(s: Slice, lid: u32) {
    stage_a16(lid, s.a0);
    stage_b16(lid, s.b0);
    if (WG16 < ACHUNKS) {
        stage_a16(lid + WG16, s.a1);
    }
    if (2u * WG16 < ACHUNKS) {
        stage_a16(lid + 2u * WG16, s.a2);
    }
    if (3u * WG16 < ACHUNKS) {
        stage_a16(lid + 3u * WG16, s.a3);
    }
    if (WG16 < BCHUNKS) {
        stage_b16(lid + WG16, s.b1);
    }
    if (2u * WG16 < BCHUNKS) {
        stage_b16(lid + 2u * WG16, s.b2);
    }
    if (3u * WG16 < BCHUNKS) {
        stage_b16(lid + 3u * WG16, s.b3);
    }
}

// The workgroup's HM×HN tile of batch z's C at rows m0, columns n0, over depth k.
fn coop16_product(z: u32, m0: u32, n0: u32, k: u32, lid: u32, sg: u32, sl: u32, ss: u32) {
    let ntiles = (k + HK - 1u) / HK;
    var next = fetch_slice(z, m0, n0, 0u, lid);

    let wm = (sg % (HM / 64u)) * 64u;
    let wn = (sg / (HM / 64u)) * 32u;
    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var c20 = coop_mat16x16<f32, C>();
    var c21 = coop_mat16x16<f32, C>();
    var c30 = coop_mat16x16<f32, C>();
    var c31 = coop_mat16x16<f32, C>();

    for (var t = 0u; t < ntiles; t++) {
        stage_slice(next, lid);
        workgroupBarrier();
        if (t + 1u < ntiles) {
            next = fetch_slice(z, m0, n0, (t + 1u) * HK, lid);
        }
        for (var k0 = 0u; k0 < HK; k0 += 16u) {
            let fa0 = frag_a16(wm, k0);
            let fa1 = frag_a16(wm + 16u, k0);
            let fa2 = frag_a16(wm + 32u, k0);
            let fa3 = frag_a16(wm + 48u, k0);
            let fb0 = frag_b16(k0, wn);
            let fb1 = frag_b16(k0, wn + 16u);
            c00 = coopMultiplyAdd(fa0, fb0, c00);
            c01 = coopMultiplyAdd(fa0, fb1, c01);
            c10 = coopMultiplyAdd(fa1, fb0, c10);
            c11 = coopMultiplyAdd(fa1, fb1, c11);
            c20 = coopMultiplyAdd(fa2, fb0, c20);
            c21 = coopMultiplyAdd(fa2, fb1, c21);
            c30 = coopMultiplyAdd(fa3, fb0, c30);
            c31 = coopMultiplyAdd(fa3, fb1, c31);
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
