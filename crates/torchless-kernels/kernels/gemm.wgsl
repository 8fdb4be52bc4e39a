// Batched matrix product C = alpha · op(A) · op(B) (+ bias[n]) (+ residual[m, n]), f32 output, f32
// accumulation; A and B are f32, f16 or bf16 each, op(X) is X or Xᵀ. This file holds the tiled kernel for
// every adapter; gemm_coop.wgsl holds the cooperative-matrix (tensor core) kernel. Both come after
// gemm_shared.wgsl (parameters, bindings, the loads of A and B and the epilogue).

// The tiled kernel: a 128×128 tile of C per workgroup of 256 threads, each thread an 8×8 register
// micro-tile (rows ty*4..+3 and 64+ty*4..+3, columns tx*4..+3 and 64+tx*4..+3, so workgroup-memory reads
// are conflict-free vec4s). K advances by 8; the next slice is loaded into registers while the current one
// is multiplied, and workgroup memory is double-buffered (one barrier per slice, 16 KiB in all).
const TM: u32 = 128u;
const TN: u32 = 128u;
const TK: u32 = 8u;
// vec4 words of one buffer of one operand: TK rows of 128 values.
const TBUF: u32 = 256u;

// [buffer][depth][outer] in vec4 words: As[buf*256 + k*32 + m/4] holds A(m..m+3, k).
var<workgroup> As: array<vec4<f32>, 512>;
var<workgroup> Bs: array<vec4<f32>, 512>;

// Stores a run of 4 values (chunk coordinates co = (outer, depth)) into buffer `buf` of As.
fn stage_a(buf: u32, co: vec2<u32>, v: vec4<f32>) {
    if (a_k_contig()) {
        // 4 depths of one row: a column of the [depth][outer] tile.
        for (var i = 0u; i < 4u; i++) {
            let w = buf * TBUF + (co.y + i) * 32u + (co.x >> 2u);
            As[w][co.x & 3u] = v[i];
        }
    } else {
        As[buf * TBUF + co.y * 32u + (co.x >> 2u)] = v;
    }
}

fn stage_b(buf: u32, co: vec2<u32>, v: vec4<f32>) {
    if (b_k_contig()) {
        for (var i = 0u; i < 4u; i++) {
            let w = buf * TBUF + (co.y + i) * 32u + (co.x >> 2u);
            Bs[w][co.x & 3u] = v[i];
        }
    } else {
        Bs[buf * TBUF + co.y * 32u + (co.x >> 2u)] = v;
    }
}

fn outer4(acc: vec4<f32>, s: f32, b: vec4<f32>) -> vec4<f32> {
    return fma(vec4<f32>(s), b, acc);
}

// The micro-tile's accumulators, c{2r + h}: row r of the micro-tile, column half h (module-scope, so that
// depth_step can update them from either form of the depth loop; each thread has its own).
var<private> c0: vec4<f32>;
var<private> c1: vec4<f32>;
var<private> c2: vec4<f32>;
var<private> c3: vec4<f32>;
var<private> c4: vec4<f32>;
var<private> c5: vec4<f32>;
var<private> c6: vec4<f32>;
var<private> c7: vec4<f32>;
var<private> c8: vec4<f32>;
var<private> c9: vec4<f32>;
var<private> c10: vec4<f32>;
var<private> c11: vec4<f32>;
var<private> c12: vec4<f32>;
var<private> c13: vec4<f32>;
var<private> c14: vec4<f32>;
var<private> c15: vec4<f32>;

// One depth of the current slice, at word o of the [depth][outer] buffers: the thread's 8 values of A
// times its 8 of B into the accumulators.
fn depth_step(o: u32, tx: u32, ty: u32) {
    let a0 = As[o + ty];
    let a1 = As[o + 16u + ty];
    let b0 = Bs[o + tx];
    let b1 = Bs[o + 16u + tx];
    c0 = outer4(c0, a0.x, b0);
    c1 = outer4(c1, a0.x, b1);
    c2 = outer4(c2, a0.y, b0);
    c3 = outer4(c3, a0.y, b1);
    c4 = outer4(c4, a0.z, b0);
    c5 = outer4(c5, a0.z, b1);
    c6 = outer4(c6, a0.w, b0);
    c7 = outer4(c7, a0.w, b1);
    c8 = outer4(c8, a1.x, b0);
    c9 = outer4(c9, a1.x, b1);
    c10 = outer4(c10, a1.y, b0);
    c11 = outer4(c11, a1.y, b1);
    c12 = outer4(c12, a1.z, b0);
    c13 = outer4(c13, a1.z, b1);
    c14 = outer4(c14, a1.w, b0);
    c15 = outer4(c15, a1.w, b1);
}

@compute @workgroup_size(256)
fn gemm_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let tx = lid & 15u;
    let ty = lid >> 4u;
    let z = wid.z;
    let m0 = wid.y * TM;
    let n0 = wid.x * TN;
    let ca = chunk_coords(lid, TM, TK, a_k_contig(), 4u);
    let cb = chunk_coords(lid, TN, TK, b_k_contig(), 4u);
    let ntiles = (p.k + TK - 1u) / TK;

    var ra = a_run_at(z, m0 + ca.x, ca.y, 4u);
    var rb = b_run_at(z, n0 + cb.x, cb.y, 4u);
    var va = a_run4(ra.e, ra.v);
    var vb = b_run4(rb.e, rb.v);
    stage_a(0u, ca, va);
    stage_b(0u, cb, vb);
    workgroupBarrier();

    for (var t = 0u; t < ntiles; t++) {
        let cur = t & 1u;
        let more = t + 1u < ntiles;
        if (more) {
            let k1 = (t + 1u) * TK;
            ra = a_run_at(z, m0 + ca.x, k1 + ca.y, 4u);
            rb = b_run_at(z, n0 + cb.x, k1 + cb.y, 4u);
            va = a_run4(ra.e, ra.v);
            vb = b_run4(rb.e, rb.v);
        }
        let base = cur * TBUF;
        if (a_k_contig() || b_k_contig()) {
            for (var kk = 0u; kk < TK; kk++) {
                depth_step(base + kk * 32u, tx, ty);
            }
        } else {
            // Both operands staged as they lie (Aᵀ·B): the depth loop written out ran at 36.9–37.1 against
            // 32.2–32.5 TFLOP/s on the H100; with an operand transposed into workgroup memory it lost (A·B
            // 30.8–31.3 against 33.6–33.8), so those layouts keep the loop.
            depth_step(base, tx, ty);
            depth_step(base + 32u, tx, ty);
            depth_step(base + 64u, tx, ty);
            depth_step(base + 96u, tx, ty);
            depth_step(base + 128u, tx, ty);
            depth_step(base + 160u, tx, ty);
            depth_step(base + 192u, tx, ty);
            depth_step(base + 224u, tx, ty);
        }
        if (more) {
            stage_a(cur ^ 1u, ca, va);
            stage_b(cur ^ 1u, cb, vb);
        }
        workgroupBarrier();
    }

    let ma = m0 + ty * 4u;
    let mb = m0 + 64u + ty * 4u;
    let na = n0 + tx * 4u;
    let nb = n0 + 64u + tx * 4u;
    store4(z, ma, na, c0);
    store4(z, ma, nb, c1);
    store4(z, ma + 1u, na, c2);
    store4(z, ma + 1u, nb, c3);
    store4(z, ma + 2u, na, c4);
    store4(z, ma + 2u, nb, c5);
    store4(z, ma + 3u, na, c6);
    store4(z, ma + 3u, nb, c7);
    store4(z, mb, na, c8);
    store4(z, mb, nb, c9);
    store4(z, mb + 1u, na, c10);
    store4(z, mb + 1u, nb, c11);
    store4(z, mb + 2u, na, c12);
    store4(z, mb + 2u, nb, c13);
    store4(z, mb + 3u, na, c14);
    store4(z, mb + 3u, nb, c15);
}

// Packing for the tiled kernel: an operand bound as A with TRANS_A 0 (stored [outer, depth]: A, or B used
// transposed with p.m its N) rewritten as f32 [z][depth][outer] into `packed`, so that the product stages it as
// it lies (see depth_major_copy in ops/gemm.rs). A 64×64 tile a workgroup, through workgroup memory so
// that both the reads (runs along depth) and the writes (runs along outer) are coalesced.
const PT: u32 = 64u;
@group(0) @binding(2) var<storage, read_write> packed: array<vec4<u32>>;
// Rows of 65: the transposing stores of a warp fall on different banks.
var<workgroup> pack_tile: array<f32, 4160>;

@compute @workgroup_size(256)
fn pack_depth_major(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let o0 = wid.x * PT;
    let k0 = wid.y * PT;
    let z = wid.z;
    for (var i = 0u; i < 4u; i++) {
        let r = lid + i * 256u;
        let o = r >> 4u;
        let kk = (r & 15u) * 4u;
        let run = a_run_at(z, o0 + o, k0 + kk, 4u);
        let v = a_run4(run.e, run.v);
        for (var j = 0u; j < 4u; j++) {
            pack_tile[(kk + j) * 65u + o] = v[j];
        }
    }
    workgroupBarrier();
    for (var i = 0u; i < 4u; i++) {
        let r = lid + i * 256u;
        let kk = r >> 4u;
        let o = (r & 15u) * 4u;
        let k = k0 + kk;
        let m = o0 + o;
        if (k >= p.k || m >= p.m) {
            continue;
        }
        let t = kk * 65u + o;
        let v = vec4<f32>(pack_tile[t], pack_tile[t + 1u], pack_tile[t + 2u], pack_tile[t + 3u]);
        let e = (z * p.k + k) * p.m + m;
        if (m + 3u < p.m && (e & 3u) == 0u) {
            packed[e >> 2u] = bitcast<vec4<u32>>(v);
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            if (m + j < p.m) {
                let ej = e + j;
                packed[ej >> 2u][ej & 3u] = bitcast<u32>(v[j]);
            }
        }
    }
}
