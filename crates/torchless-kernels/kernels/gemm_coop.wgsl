enable f16;
enable wgpu_cooperative_matrix;

// Batched matrix product on cooperative matrices (tensor cores, simdgroup matrices): the same op, bindings
// and epilogue as gemm.wgsl (gemm_shared.wgsl, composed before this file). Chosen by the
// host only when the adapter offers a fitting configuration, has f16 and subgroups, and a fixed subgroup
// size S; the workgroup size is set from S so that each subgroup owns a fixed block of C.
//
// Inputs are staged through workgroup memory in the matrix type: f16 passes through; f32 and bf16 are
// rounded to f16 for the 16×16 f16 entry point. bf16 (and f32) values beyond f16's range (|v| > 65504)
// are CLAMPED to ±65504, and values below f16's smallest subnormal (6e-8) flush to 0: callers that need
// bf16's range ask for the tiled kernel. The 8×8 f32 entry point stages f32 exactly.

// Workgroup size of the 8×8 entry point, set by the host from the adapter's (fixed) subgroup size S:
// 4 subgroups (the 16×16 entry point's WG16, 16 subgroups, is coop16.wgsl's).
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

fn fetch_a16(z: u32, m: u32, k: u32) -> vec4<u32> {
    let r = a_run_at(z, m, k, 8u);
    return a_run8h(r.e, r.v);
}

fn fetch_b16(z: u32, n: u32, k: u32) -> vec4<u32> {
    let r = b_run_at(z, n, k, 8u);
    return b_run8h(r.e, r.v);
}

fn store_c4(z: u32, m: u32, n: u32, v: vec4<f32>) {
    store4(z, m, n, v);
}

// coop16.wgsl's tile (ops::gemm::COOP16_TILE).
const HM: u32 = 128u;
const HN: u32 = 256u;

@compute @workgroup_size(WG16)
fn gemm_coop16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
               @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) sl: u32,
               @builtin(subgroup_size) ss: u32) {
    coop16_product(wid.z, wid.y * HM, wid.x * HN, p.k, lid, sg, sl, ss);
}

// ---- f16 pre-pass ---------------------------------------------------------------------------------------
// A product input rounded to f16 once, before a cooperative product that would otherwise convert it in
// every workgroup staging it (qmatmul_coop.wgsl reads x this way): rounded as the staging of coop16.wgsl
// rounds (f16_chunk). Thread i converts elements 8i..8i+7 of the buffer bound as A (DT_A) into one chunk
// of packed f16 pairs; p.k holds the element count.
@group(0) @binding(2) var<storage, read_write> h_out: array<vec4<u32>>;

@compute @workgroup_size(256)
fn to_f16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid;
    let e = 8u * i;
    if (e >= p.k) {
        return;
    }
    let v = min(p.k - e, 8u);
    h_out[i] = f16_chunk(a_run4(e, min(v, 4u)), a_run4(e + 4u, select(0u, v - 4u, v > 4u)));
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
