enable f16;
enable wgpu_cooperative_matrix;

// A 16×16×16 cooperative-matrix product (tensor cores; f16 inputs, f32 accumulators) whose operands come
// from functions of the module composing it: the dense GEMM (gemm_coop.wgsl) converts f32/bf16/f16
// operands there, the quantized GEMM (qmatmul_coop.wgsl) dequantizes its weights. The composing module
// provides:
//   fetch_a16(z, m0, k1, ci) -> vec4<u32>  chunk ci (coop_chunk) of batch z's A slice at rows m0.., depth
//                                          k1..: 8 elements as packed f16 pairs (common.wgsl's f16_chunk), 0 outside
//   fetch_b16(z, n0, k1, ci) -> vec4<u32>  the same for op(B) at columns n0..
//   a_k_contig(), b_k_contig() -> bool     whether the operand's runs go along K (see coop_chunk)
//   store_c4(z, m, n, v: vec4<f32>)        columns n..n+3 of row m of C, bounds and epilogue included
//
// A 128×128 tile of C per workgroup of 8 subgroups (WG16 = 8 × the adapter's fixed subgroup size);
// subgroup sg owns rows (sg & 1)·64 + 0..63 (4 fragments) and columns (sg >> 1)·32 + 0..31 (2 fragments).
// K advances by 64 a step, four 16-deep products between a barrier pair; the next slice is fetched into
// registers (already in f16) while the current one is multiplied. On the H100 (4096³,
// `benchmarks/results/2026-12-06g-h100/`) 64-deep slices beat 32-deep ones: f16 138.0 against 115.9
// TFLOP/s, bf16 132.7 against 111.4, and the quantized prefill GEMMs q4_k 80.3 against 65.4, q8_0 81.4
// against 62.5. Staged in f16 scalars: an earlier version staging vec4<f16>s (fragments loaded from
// vec4<f16> arrays), double-buffered or not, ran f16 4096³ at 55–57 TFLOP/s on the H200 where this one
// runs at 79, and 109 without index clamps, as the composing modules declare it (GEMM_COOP in
// src/ops/gemm.rs).
override WG16: u32 = 256u;
const HM: u32 = 128u;
const HN: u32 = 128u;
const HK: u32 = 64u;
// Staging row strides in halves, padded by 8 (16 bytes): [outer][depth] tiles (runs along K: A, Bᵀ) and
// [depth][outer] tiles (runs along M or N: Aᵀ, B). The fragment loads read row- or column-major to match.
const HSK: u32 = 72u;
const HSO: u32 = 136u;
// Runs of 8 elements per chunk; 128·64/8 chunks per operand tile; at most 4 per thread (WG16 >= 256).
const HCHUNKS: u32 = 1024u;

var<workgroup> Ah: array<f16, 9216>; // max(128·72, 64·136)
var<workgroup> Bh: array<f16, 9216>;
// Per-subgroup scratch for the epilogue: a fragment is stored here, then each lane writes its part of it
// through store_c4. 8 × 16×16 f32.
var<workgroup> Cs16: array<f32, 2048>;

// Where chunk ci of a 128 (outer) × 64 (depth) slice starts, as (outer, depth) offsets, when the operand
// is read in runs of 8 along its contiguous dimension.
fn coop_chunk(ci: u32, k_contig: bool) -> vec2<u32> {
    if (k_contig) {
        return vec2<u32>(ci / 8u, (ci % 8u) * 8u);
    }
    return vec2<u32>((ci % 16u) * 8u, ci / 16u);
}

// Where chunk ci starts in a staging tile, in halves.
fn stage_index(ci: u32, k_contig: bool) -> u32 {
    let co = coop_chunk(ci, k_contig);
    return select(co.y * HSO + co.x, co.x * HSK + co.y, k_contig);
}

fn stage_a16(ci: u32, w: vec4<u32>) {
    let i = stage_index(ci, a_k_contig());
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

fn stage_b16(ci: u32, w: vec4<u32>) {
    let i = stage_index(ci, b_k_contig());
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

// The workgroup's 128×128 tile of batch z's C at rows m0, columns n0, over depth k.
fn coop16_product(z: u32, m0: u32, n0: u32, k: u32, lid: u32, sg: u32, sl: u32, ss: u32) {
    let ntiles = (k + HK - 1u) / HK;

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
