// GEMV for decode: y[r, o] = Σ_i w[o, i]·x[r, i] for 1 ≤ b ≤ 8 rows of x, every weight row read once for
// all rows of x. Weights are f32, f16 or bf16 (DTYPE); x and y are f32. One workgroup owns ROWS output rows
// of one matrix (or, gated, ROWS rows of the gate and of the up matrix); its WG threads stride along the row
// in vec4<u32> chunks (4 f32 or 8 16-bit values), accumulate in f32 registers, and reduce at the end.
//
// Up to three matrices that share x run in one dispatch (Q, K and V): workgroups [0, g1) belong to matrix 0,
// [g1, g2) to matrix 1, [g2, n_groups) to matrix 2. Gated (GATED): y = act(w0·x) ⊙ (w1·x).
//
// VEC: every row is a whole number of chunks (in % 4 == 0 for f32, in % 8 == 0 for 16-bit), so rows and the
// rows of x start on 16-byte boundaries; otherwise the scalar path reads one element at a time (a 16-bit
// row may then start in the middle of a word).
//
// gemv.wgsl and gemv_subgroup.wgsl are identical down to the "variant" marker (a test checks it); below it,
// gemv_subgroup.wgsl reduces with subgroupAdd and gemv.wgsl with a workgroup-memory tree.

override DTYPE: u32 = 2u;
override BIAS_DT: u32 = 0u;
// Threads per workgroup: a power of two, at most 256.
override WG: u32 = 256u;
// Output rows per workgroup, 1..=4 (gated: 1..=4 too, each reading two weight rows).
override ROWS: u32 = 1u;
// Rows of x, 1..=8.
override BATCH: u32 = 1u;
override VEC: bool = true;
// Matrices sharing x, 1..=3 (the gated form uses 2).
override NMAT: u32 = 1u;
override GATED: bool = false;
// Gated activation: 0 SiLU (SwiGLU), 1 GELU-tanh (GeGLU).
override ACT: u32 = 0u;
// Length of the cross-subgroup (or tree) scratch, set by the host.
override RED_LEN: u32 = 256u;

const MAX_SLOTS: u32 = 8u;
const MAX_ACC: u32 = 32u;

const F_BIAS0: u32 = 1u;
const F_BIAS1: u32 = 2u;
const F_BIAS2: u32 = 4u;
const F_RES: u32 = 8u;
const F_ACCUM: u32 = 16u;

struct Params {
    in_len: u32,
    // vec4 chunks per weight row (VEC only)
    in_vec: u32,
    // vec4 words per row of x (VEC only)
    x_vec: u32,
    flags: u32,
    n0: u32,
    n1: u32,
    n2: u32,
    g1: u32,
    g2: u32,
    n_groups: u32,
    _pad0: u32,
    _pad1: u32,
}

// Absent operands are bound to a dummy (x for read-only slots, y0 for outputs) and never read.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> w0: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> w1: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> w2: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> bias0: array<u32>;
@group(0) @binding(6) var<storage, read> bias1: array<u32>;
@group(0) @binding(7) var<storage, read> bias2: array<u32>;
@group(0) @binding(8) var<storage, read> res: array<u32>;
@group(0) @binding(9) var<storage, read_write> y0: array<u32>;
@group(0) @binding(10) var<storage, read_write> y1: array<u32>;
@group(0) @binding(11) var<storage, read_write> y2: array<u32>;

// acc[s * BATCH + r]: the partial dot product of slot s (a weight row) with row r of x.
var<private> acc: array<f32, MAX_ACC>;
// Per slot: its matrix and the index of its row's first chunk (VEC) or element.
var<private> slot_m: array<u32, MAX_SLOTS>;
var<private> slot_base: array<u32, MAX_SLOTS>;

fn n_slots() -> u32 {
    return select(ROWS, 2u * ROWS, GATED);
}

fn wload(m: u32, i: u32) -> vec4<u32> {
    if (NMAT == 1u || m == 0u) {
        return w0[i];
    }
    if (NMAT == 2u || m == 1u) {
        return w1[i];
    }
    return w2[i];
}

// Element e of matrix m (scalar path).
fn wscalar(m: u32, e: u32) -> f32 {
    let word = word_index(DTYPE, e);
    let v = wload(m, word >> 2u);
    return decode(DTYPE, v[word & 3u], e);
}

fn xword(i: u32) -> f32 {
    return bitcast<f32>(x[i >> 2u][i & 3u]);
}

// Σ of 8 16-bit weights (one vec4<u32>) times x[0..4] = xa, x[4..8] = xb.
fn dot8(w: vec4<u32>, xa: vec4<f32>, xb: vec4<f32>) -> f32 {
    if (DTYPE == DT_BF16) {
        let even = bitcast<vec4<f32>>(w << vec4<u32>(16u));
        let odd = bitcast<vec4<f32>>(w & vec4<u32>(0xffff0000u));
        return dot(even, vec4<f32>(xa.xz, xb.xz)) + dot(odd, vec4<f32>(xa.yw, xb.yw));
    }
    let a = vec4<f32>(unpack2x16float(w.x), unpack2x16float(w.y));
    let b = vec4<f32>(unpack2x16float(w.z), unpack2x16float(w.w));
    return dot(a, xa) + dot(b, xb);
}

// Sets up the slots of workgroup g; returns (matrix, first row, rows of that matrix).
fn setup(g: u32) -> vec3<u32> {
    var m = 0u;
    var first = 0u;
    var n = p.n0;
    if (NMAT > 1u && !GATED && g >= p.g1) {
        m = 1u;
        first = p.g1;
        n = p.n1;
    }
    if (NMAT > 2u && g >= p.g2) {
        m = 2u;
        first = p.g2;
        n = p.n2;
    }
    let row0 = (g - first) * ROWS;
    let stride = select(p.in_len, p.in_vec, VEC);
    for (var s = 0u; s < n_slots(); s++) {
        let r = min(row0 + s % ROWS, n - 1u);
        slot_m[s] = select(m, s / ROWS, GATED);
        slot_base[s] = r * stride;
    }
    for (var j = 0u; j < MAX_ACC; j++) {
        acc[j] = 0.0;
    }
    return vec3<u32>(m, row0, n);
}

// This thread's partial sums over its share of the row.
fn accumulate(li: u32) {
    let ns = n_slots();
    if (VEC) {
        for (var k = li; k < p.in_vec; k += WG) {
            var wv: array<vec4<u32>, MAX_SLOTS>;
            for (var s = 0u; s < ns; s++) {
                wv[s] = wload(slot_m[s], slot_base[s] + k);
            }
            for (var r = 0u; r < BATCH; r++) {
                if (DTYPE == DT_F32) {
                    let xa = bitcast<vec4<f32>>(x[r * p.x_vec + k]);
                    for (var s = 0u; s < ns; s++) {
                        acc[s * BATCH + r] += dot(bitcast<vec4<f32>>(wv[s]), xa);
                    }
                } else {
                    let xi = r * p.x_vec + 2u * k;
                    let xa = bitcast<vec4<f32>>(x[xi]);
                    let xb = bitcast<vec4<f32>>(x[xi + 1u]);
                    for (var s = 0u; s < ns; s++) {
                        acc[s * BATCH + r] += dot8(wv[s], xa, xb);
                    }
                }
            }
        }
    } else {
        for (var i = li; i < p.in_len; i += WG) {
            var wv: array<f32, MAX_SLOTS>;
            for (var s = 0u; s < ns; s++) {
                wv[s] = wscalar(slot_m[s], slot_base[s] + i);
            }
            for (var r = 0u; r < BATCH; r++) {
                let xv = xword(r * p.in_len + i);
                for (var s = 0u; s < ns; s++) {
                    acc[s * BATCH + r] += wv[s] * xv;
                }
            }
        }
    }
}

fn bias_of(m: u32, row: u32) -> f32 {
    let wi = word_index(BIAS_DT, row);
    if (m == 0u) {
        return decode(BIAS_DT, bias0[wi], row);
    }
    if (m == 1u) {
        return decode(BIAS_DT, bias1[wi], row);
    }
    return decode(BIAS_DT, bias2[wi], row);
}

fn store(m: u32, i: u32, v: f32) {
    if (NMAT == 1u || m == 0u) {
        y0[i] = bitcast<u32>(v);
    } else if (NMAT == 2u || m == 1u) {
        y1[i] = bitcast<u32>(v);
    } else {
        y2[i] = bitcast<u32>(v);
    }
}

fn gate_act(g: f32) -> f32 {
    if (ACT == 1u) {
        return gelu_tanh(g);
    }
    return silu(g);
}

// Output j = s * BATCH + r of the workgroup (row row0 + s of matrix m, row r of x), from the full dot
// products of its slot (`v`) and, gated, of its up slot (`u`).
fn epilogue(j: u32, info: vec3<u32>, v: f32, u: f32) {
    let s = j / BATCH;
    let r = j % BATCH;
    let m = info.x;
    let row = info.y + s;
    let n = info.z;
    if (row >= n) {
        return;
    }
    if (GATED) {
        y0[r * p.n0 + row] = bitcast<u32>(gate_act(v) * u);
        return;
    }
    var out = v;
    let has_bias = (p.flags & (F_BIAS0 << m)) != 0u;
    if (has_bias) {
        out += bias_of(m, row);
    }
    let i = r * n + row;
    if (m == 0u && (p.flags & F_RES) != 0u) {
        out += bitcast<f32>(res[i]);
    }
    if (m == 0u && (p.flags & F_ACCUM) != 0u) {
        out += bitcast<f32>(y0[i]);
    }
    store(m, i, out);
}

// ---- variant: workgroup-memory tree reduction (no subgroup builtins) ----

var<workgroup> red: array<vec4<f32>, RED_LEN>;
var<workgroup> fin: array<f32, MAX_ACC>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let g = linear_group_id(wid, nwg);
    if (g >= p.n_groups) {
        return;
    }
    let info = setup(g);
    accumulate(li);
    let nacc = n_slots() * BATCH;
    // Four sums at a time; RED_LEN == WG.
    for (var j0 = 0u; j0 < nacc; j0 += 4u) {
        red[li] = vec4<f32>(acc[j0], acc[j0 + 1u], acc[j0 + 2u], acc[j0 + 3u]);
        workgroupBarrier();
        for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
            if (li < stride) {
                red[li] += red[li + stride];
            }
            workgroupBarrier();
        }
        if (li == 0u) {
            let t = red[0];
            fin[j0] = t.x;
            fin[j0 + 1u] = t.y;
            fin[j0 + 2u] = t.z;
            fin[j0 + 3u] = t.w;
        }
    }
    workgroupBarrier();
    let nout = ROWS * BATCH;
    if (li < nout) {
        var u = 0.0;
        if (GATED) {
            u = fin[nout + li];
        }
        epilogue(li, info, fin[li], u);
    }
}
