// Quantized GEMM (prefill) and embedding lookup. W [n, k] is in a ggml block format (QTYPE) in the device
// layout of src/quant.rs (quants region, then scales region from word p.scale_base), read as u32 words.
//
// gemm: out[i, o] = Σ_c x[i, c]·W[o, c] for x [m, k] f32. A workgroup of 256 threads owns a 64 × 64 output
// tile; per step of 32 along k, every thread copies 8 values of x and dequantizes 8 weights into
// workgroup memory (f32), then each thread accumulates a 4 × 4 block of the tile from it.
//
// embedding: out[i, c] = W[ids[i], c]; one thread per 8 outputs; an id out of range gives zeros.

// 0 q8_0, 1 q4_0, 2 q4_1, 3 q5_0, 4 q5_1, 5 q4_k, 6 q5_k, 7 q6_k (QuantType::ALL order).
override QTYPE: u32 = 0u;

struct Params {
    // Rows of x (gemm) or ids (embedding).
    m: u32,
    // Rows of W.
    n: u32,
    // Columns of W and x.
    k: u32,
    row_blocks: u32,
    scale_base: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// gemm: x as f32 bits; embedding: the ids.
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read> w: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;

// Words of a block's quants.
fn block_words() -> u32 {
    switch QTYPE {
        case 0u: { return 8u; }
        case 5u: { return 36u; }
        case 6u: { return 44u; }
        case 7u: { return 52u; }
        default: { return 4u; }
    }
}

fn block_elems() -> u32 {
    return select(32u, 256u, QTYPE >= 5u);
}

fn half_scale(bi: u32) -> f32 {
    let pair = unpack2x16float(w[p.scale_base + (bi >> 1u)]);
    return select(pair.x, pair.y, (bi & 1u) == 1u);
}

fn byte_of(word: u32, i: u32) -> u32 {
    return (word >> (8u * (i & 3u))) & 0xffu;
}

// Byte i of block bi's quants.
fn qbyte(bi: u32, i: u32) -> u32 {
    return byte_of(w[bi * block_words() + i / 4u], i);
}

fn scale_min_k4(bi: u32, j: u32) -> vec2<f32> {
    let s = 4u;
    if (j < 4u) {
        return vec2<f32>(f32(qbyte(bi, s + j) & 63u), f32(qbyte(bi, s + j + 4u) & 63u));
    }
    let sc = (qbyte(bi, s + j + 4u) & 0xfu) | ((qbyte(bi, s + j - 4u) >> 6u) << 4u);
    let mn = (qbyte(bi, s + j + 4u) >> 4u) | ((qbyte(bi, s + j) >> 6u) << 4u);
    return vec2<f32>(f32(sc), f32(mn));
}

// Weights e..e+7 (e a multiple of 8) of row `row`, as a (lo, hi) pair of vec4s.
fn dequant8(row: u32, e: u32) -> array<vec4<f32>, 2> {
    let bi = row * p.row_blocks + e / block_elems();
    let o = e % block_elems();
    var v: array<f32, 8>;
    if (QTYPE == 0u) {
        let d = half_scale(bi);
        for (var i = 0u; i < 8u; i++) {
            let b = qbyte(bi, o + i);
            v[i] = f32(bitcast<i32>(b << 24u) >> 24u) * d;
        }
    } else if (QTYPE <= 4u) {
        // Weights 0..15 are the low nibbles of bytes 0..15, weights 16..31 their high nibbles.
        // Symmetric formats: d·(q − off); the others d·q + m.
        var d: f32;
        var m = 0.0;
        var off = 0.0;
        var qh = 0u;
        if (QTYPE == 1u) {
            d = half_scale(bi);
            off = 8.0;
        } else if (QTYPE == 2u) {
            let dm = unpack2x16float(w[p.scale_base + bi]);
            d = dm.x;
            m = dm.y;
        } else {
            let dm = unpack2x16float(w[p.scale_base + 2u * bi]);
            d = dm.x;
            m = select(dm.y, 0.0, QTYPE == 3u);
            off = select(0.0, 16.0, QTYPE == 3u);
            qh = w[p.scale_base + 2u * bi + 1u];
        }
        let shift = select(0u, 4u, o >= 16u);
        for (var i = 0u; i < 8u; i++) {
            let j = o + i;
            let q = ((qbyte(bi, j % 16u) >> shift) & 0xfu) | (((qh >> j) & 1u) << 4u);
            v[i] = d * (f32(q) - off) + m;
        }
    } else if (QTYPE <= 6u) {
        // Chunk c = o / 64 of 64 weights: bytes 32c + l hold weight l (low nibble) and 32 + l (high).
        let c = o / 64u;
        let hi = (o % 64u) / 32u;
        let l0 = o % 32u;
        let dd = unpack2x16float(w[bi * block_words()]);
        let sm = scale_min_k4(bi, 2u * c + hi);
        let a = dd.x * sm.x;
        let b = dd.y * sm.y;
        let qs = select(16u, 48u, QTYPE == 6u);
        for (var i = 0u; i < 8u; i++) {
            let l = l0 + i;
            var q = (qbyte(bi, qs + 32u * c + l) >> (4u * hi)) & 0xfu;
            if (QTYPE == 6u) {
                q |= ((qbyte(bi, 16u + l) >> (2u * c + hi)) & 1u) << 4u;
            }
            v[i] = a * f32(q) - b;
        }
    } else {
        // Q6_K: half h = o / 128; within it quarter k = (o % 128) / 32, position l.
        let h = o / 128u;
        let k = (o % 128u) / 32u;
        let l0 = o % 32u;
        let d = half_scale(bi);
        for (var i = 0u; i < 8u; i++) {
            let l = l0 + i;
            let lo = (qbyte(bi, 64u * h + 32u * (k & 1u) + l) >> (4u * (k >> 1u))) & 0xfu;
            let hb = (qbyte(bi, 128u + 32u * h + l) >> (2u * k)) & 3u;
            let si = qbyte(bi, 192u + 8u * h + l / 16u + 2u * k);
            let sc = f32(bitcast<i32>(si << 24u) >> 24u);
            v[i] = d * sc * (f32(lo | (hb << 4u)) - 32.0);
        }
    }
    return array<vec4<f32>, 2>(vec4<f32>(v[0], v[1], v[2], v[3]), vec4<f32>(v[4], v[5], v[6], v[7]));
}

// ---- gemm ----

const TILE: u32 = 64u;
const TK: u32 = 32u;
const PITCH: u32 = 33u;

var<workgroup> xs: array<f32, 2112>;
var<workgroup> wsh: array<f32, 2112>;

@compute @workgroup_size(256)
fn gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let n0 = wid.x * TILE;
    let m0 = wid.y * TILE;
    let tx = li % 16u;
    let ty = li / 16u;
    // Loader role: row li / 4 of the tile, 8 values from column (li % 4) · 8 of the step.
    let lr = li / 4u;
    let lc = (li % 4u) * 8u;
    var c: array<f32, 16>;
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        let gm = m0 + lr;
        let gn = n0 + lr;
        for (var i = 0u; i < 8u; i++) {
            var xv = 0.0;
            if (gm < p.m) {
                xv = bitcast<f32>(src[gm * p.k + k0 + lc + i]);
            }
            xs[lr * PITCH + lc + i] = xv;
        }
        var wv = array<vec4<f32>, 2>(vec4<f32>(), vec4<f32>());
        if (gn < p.n) {
            wv = dequant8(gn, k0 + lc);
        }
        for (var i = 0u; i < 4u; i++) {
            wsh[lr * PITCH + lc + i] = wv[0][i];
            wsh[lr * PITCH + lc + 4u + i] = wv[1][i];
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = xs[(ty + 16u * i) * PITCH + kk];
                b[i] = wsh[(tx + 16u * i) * PITCH + kk];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    c[i * 4u + j] += a[i] * b[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let gm = m0 + ty + 16u * i;
        for (var j = 0u; j < 4u; j++) {
            let gn = n0 + tx + 16u * j;
            if (gm < p.m && gn < p.n) {
                out[gm * p.n + gn] = bitcast<u32>(c[i * 4u + j]);
            }
        }
    }
}

// ---- embedding ----

@compute @workgroup_size(64)
fn embedding(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let t = linear_group_id(wid, nwg) * 64u + li;
    let per_row = p.k / 8u;
    if (t >= p.m * per_row) {
        return;
    }
    let i = t / per_row;
    let e = (t % per_row) * 8u;
    let id = src[i];
    var v = array<vec4<f32>, 2>(vec4<f32>(), vec4<f32>());
    if (id < p.n) {
        v = dequant8(id, e);
    }
    let base = i * p.k + e;
    for (var j = 0u; j < 4u; j++) {
        out[base + j] = bitcast<u32>(v[0][j]);
        out[base + 4u + j] = bitcast<u32>(v[1][j]);
    }
}
