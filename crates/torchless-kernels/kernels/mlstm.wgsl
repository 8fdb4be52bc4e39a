// mLSTM kernels (see ops/mlstm.rs for the math): the recurrent step, the chunkwise form in five passes,
// and the (output-gated) multi-head layer norm. Every tensor is f32 except the layer norm's weight and
// bias (WDTYPE).
//
// Layouts: q, k [B, S, NH, DQK], v and h [B, S, NH, DV], gates [B, S, NH] (S = 1 for the step); the state
// C [B, NH, DQK, DV], n [B, NH, DQK], m [B, NH]. A "head" is b * NH + h; token t of head hd sits in row
// (b * S + t) * NH + h of q, k, v, the gates and h.
//
// Race freedom: a state element is read and written by one invocation only, or its writer is separated
// from every reader by a barrier or a dispatch boundary. mlstm_step runs one workgroup per head, so the new
// m, the gates and the denominator are formed in workgroup memory before any thread uses them; m is read
// and written by invocation 0 alone, n[a] and C[a][e] by the one invocation that owns them. mlstm_step4
// splits a head's columns over workgroups that only read n and m; mlstm_step4_state (or
// mlstm_step4_state_norm, which also normalises h, touching no state) writes them after.

override WG: u32 = 256u;      // threads per workgroup (a power of two)
override TC: u32 = 32u;       // step: columns of C per pass (step4: per workgroup; a power of two dividing WG); chunk_out: WG / 8
override HAS_W: bool = false; // layer norm: weight
override HAS_B: bool = false; // layer norm: bias
override HAS_G: bool = false; // layer norm: output gate, y = σ(o) ⊙ norm
override WDTYPE: u32 = 0u;    // layer norm: dtype of the weight
override BDTYPE: u32 = 0u;    // layer norm: dtype of the bias

struct Params {
    heads: u32,   // B * NH (layer norm: segments = rows * NH)
    nh: u32,
    s: u32,
    dqk: u32,
    dv: u32,      // (layer norm: DH)
    chunk: u32,
    nch: u32,
    tiles: u32,
    eps: f32,
    scale: f32,   // 1 / sqrt(DQK)
    gate_cap: f32, // soft cap of the gate pre-activations ĩ, f̃ (0: none)
    norm_eps: f32, // mlstm_step4_state_norm: the head norm's epsilon (eps is the mLSTM's)
}

@group(0) @binding(0) var<uniform> p: Params;

var<workgroup> red: array<f32, WG>;
var<workgroup> wg_gate: vec4<f32>;

// ln(1 + u) for u >= 0, accurate for tiny u.
fn log1p_pos(u: f32) -> f32 {
    let w = 1.0 + u;
    if (w == 1.0) {
        return u;
    }
    return log(w) * (u / (w - 1.0));
}

// logσ(x) = −softplus(−x), without overflow.
fn log_sigmoid(x: f32) -> f32 {
    return min(x, 0.0) - log1p_pos(exp(-abs(x)));
}

// A gate pre-activation as the recurrence uses it: cap·tanh(x / cap) when a cap is set (the elementwise
// softcap's formula, so fusing it here changes no bits), x otherwise. Every kernel that reads ĩ or f̃
// goes through it, so the step's two launches see the same gates.
fn gate_pre(x: f32) -> f32 {
    if (p.gate_cap > 0.0) {
        return p.gate_cap * safe_tanh(x / p.gate_cap);
    }
    return x;
}

// Sum of v over the workgroup (every invocation gets it). Call in uniform control flow.
fn wg_sum(li: u32, v: f32) -> f32 {
    red[li] = v;
    workgroupBarrier();
    for (var st = WG / 2u; st > 0u; st = st >> 1u) {
        if (li < st) {
            red[li] += red[li + st];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

// Row of token t of head hd in the token-major tensors.
fn tok_row(hd: u32, t: u32) -> u32 {
    return ((hd / p.nh) * p.s + t) * p.nh + hd % p.nh;
}

// ---- step -----------------------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> st_q: array<f32>;
@group(0) @binding(2) var<storage, read> st_k: array<f32>;
@group(0) @binding(3) var<storage, read> st_v: array<f32>;
@group(0) @binding(4) var<storage, read> st_i: array<f32>;
@group(0) @binding(5) var<storage, read> st_f: array<f32>;
@group(0) @binding(6) var<storage, read_write> st_c: array<f32>;
@group(0) @binding(7) var<storage, read_write> st_n: array<f32>;
@group(0) @binding(8) var<storage, read_write> st_m: array<f32>;
@group(0) @binding(9) var<storage, read_write> st_h: array<f32>;

// One workgroup per head.
@compute @workgroup_size(WG)
fn mlstm_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let hd = linear_group_id(wid, nwg);
    if (hd >= p.heads) {
        return;
    }
    // The new stabiliser and the gates, by invocation 0 (the only one touching m).
    if (li == 0u) {
        let m0 = st_m[hd];
        let lf = log_sigmoid(gate_pre(st_f[hd]));
        let ig = gate_pre(st_i[hd]);
        let m1 = max(lf + m0, ig);
        wg_gate = vec4<f32>(m1, exp(lf + m0 - m1), exp(ig - m1), 0.0);
        st_m[hd] = m1;
    }
    workgroupBarrier();
    let g = wg_gate;

    // n' = f·n + i·k, each element by one invocation; the denominator q̂·n'.
    let qk0 = hd * p.dqk;
    var den = 0.0;
    for (var a = li; a < p.dqk; a += WG) {
        let n1 = g.y * st_n[qk0 + a] + g.z * st_k[qk0 + a];
        st_n[qk0 + a] = n1;
        den += st_q[qk0 + a] * n1;
    }
    den = wg_sum(li, den) * p.scale;
    let inv = 1.0 / (max(abs(den), exp(-g.x)) + p.eps);

    // C' = f·C + i·k·vᵀ and q̂ᵀC': TC columns per pass, WG / TC row groups each summing their rows.
    let c0 = hd * p.dqk * p.dv;
    let v0 = hd * p.dv;
    let rg = li / TC;
    let col = li % TC;
    for (var e0 = 0u; e0 < p.dv; e0 += TC) {
        let e = e0 + col;
        var acc = 0.0;
        if (e < p.dv) {
            let ve = g.z * st_v[v0 + e];
            for (var a = rg; a < p.dqk; a += WG / TC) {
                let idx = c0 + a * p.dv + e;
                let c1 = g.y * st_c[idx] + st_k[qk0 + a] * ve;
                st_c[idx] = c1;
                acc += st_q[qk0 + a] * c1;
            }
        }
        red[li] = acc;
        workgroupBarrier();
        if (li < TC && e < p.dv) {
            var total = 0.0;
            for (var r = 0u; r < WG / TC; r++) {
                total += red[li + r * TC];
            }
            st_h[v0 + e] = total * p.scale * inv;
        }
        workgroupBarrier();
    }
}

// ---- step, vec4 columns ---------------------------------------------------------------------------
//
// mlstm_step with DV a multiple of 4, over the whole GPU: one workgroup per (head, TC vec4 columns of C),
// so a layer's step launches heads × DV/(4·TC) workgroups instead of one per head. Each reads C, v and h
// as vec4s, issues its loads before it waits on any, and works out the new stabiliser, gates and denominator
// itself from the old m and n, which it only reads: mlstm_step4_state (the next launch, one workgroup per
// head) writes the new n and m, so no workgroup reads state another one has already replaced.

@group(0) @binding(1) var<storage, read> s4_q: array<f32>;
@group(0) @binding(2) var<storage, read> s4_k: array<f32>;
@group(0) @binding(3) var<storage, read> s4_v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> s4_i: array<f32>;
@group(0) @binding(5) var<storage, read> s4_f: array<f32>;
@group(0) @binding(6) var<storage, read_write> s4_c: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read_write> s4_n: array<f32>;
@group(0) @binding(8) var<storage, read_write> s4_m: array<f32>;
@group(0) @binding(9) var<storage, read_write> s4_h: array<vec4<f32>>;

// Rows of C a thread of mlstm_step4 loads before it waits on anything (all of them at xLSTM-7B's DQK 256
// with TC 8: WG / TC = 32 row groups of 8 rows).
const STEP_ROWS: u32 = 8u;

var<workgroup> red4: array<vec4<f32>, WG>;

// The sum of v over the invocations whose index is li modulo `keep` (a power of two, at most WG), for
// every invocation: a tree in workgroup memory, log2(WG / keep) barriers. Call in uniform control flow.
fn class_sum(li: u32, v: vec4<f32>, keep: u32) -> vec4<f32> {
    red4[li] = v;
    for (var st = WG / 2u; st >= keep; st >>= 1u) {
        workgroupBarrier();
        if (li < st) {
            red4[li] += red4[li + st];
        }
    }
    workgroupBarrier();
    let total = red4[li % keep];
    workgroupBarrier();
    return total;
}

// (m', f, i, 0) from the old m and the (capped) gate pre-activations f̃, ĩ.
fn step_gates(m0: f32, f_pre: f32, i_pre: f32) -> vec4<f32> {
    let lf = log_sigmoid(f_pre);
    let m1 = max(lf + m0, i_pre);
    return vec4<f32>(m1, exp(lf + m0 - m1), exp(i_pre - m1), 0.0);
}

// Every load of a thread is issued before it waits on any: its rows of C (up to STEP_ROWS) with their
// q and k, v, the denominator's q·n and q·k terms and the gates, so the launch costs one memory round
// trip and two reductions, not a chain of them (the denominator f·(q·n) + i·(q·k) is summed as its two
// dot products, which need no gate).
@compute @workgroup_size(WG)
fn mlstm_step4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let dv4 = p.dv / 4u;
    let slices = (dv4 + TC - 1u) / TC;
    let gid = linear_group_id(wid, nwg);
    let hd = gid / slices;
    if (hd >= p.heads) {
        return;
    }
    let qk0 = hd * p.dqk;
    let c0 = hd * p.dqk * dv4;
    let v0 = hd * dv4;
    let rg = li / TC;
    let stride = WG / TC;
    let e = (gid % slices) * TC + li % TC;
    let col = e < dv4;

    var xs: array<vec4<f32>, STEP_ROWS>;
    var ks: array<f32, STEP_ROWS>;
    var qs: array<f32, STEP_ROWS>;
    var vv = vec4<f32>(0.0);
    if (col) {
        vv = s4_v[v0 + e];
        for (var j = 0u; j < STEP_ROWS; j++) {
            let a = rg + j * stride;
            if (a < p.dqk) {
                xs[j] = s4_c[c0 + a * dv4 + e];
                ks[j] = s4_k[qk0 + a];
                qs[j] = s4_q[qk0 + a];
            }
        }
    }
    var qn = 0.0;
    var qk = 0.0;
    for (var a = li; a < p.dqk; a += WG) {
        let qa = s4_q[qk0 + a];
        qn += qa * s4_n[qk0 + a];
        qk += qa * s4_k[qk0 + a];
    }
    // Every invocation forms the gates: three loads of the same words, and no barrier to publish them.
    let g = step_gates(s4_m[hd], gate_pre(s4_f[hd]), gate_pre(s4_i[hd]));
    let dots = class_sum(li, vec4<f32>(qn, qk, 0.0, 0.0), 1u);
    let den = (g.y * dots.x + g.z * dots.y) * p.scale;
    let inv = 1.0 / (max(abs(den), exp(-g.x)) + p.eps);

    // C' = f·C + i·k·vᵀ and q̂ᵀC' for this workgroup's TC columns, WG / TC row groups each summing rows.
    let ve = g.z * vv;
    var acc = vec4<f32>(0.0);
    if (col) {
        for (var j = 0u; j < STEP_ROWS; j++) {
            let a = rg + j * stride;
            if (a < p.dqk) {
                let y = g.y * xs[j] + ks[j] * ve;
                s4_c[c0 + a * dv4 + e] = y;
                acc += qs[j] * y;
            }
        }
        // Rows past the first STEP_ROWS of each row group (DQK > STEP_ROWS · WG / TC).
        for (var a = rg + STEP_ROWS * stride; a < p.dqk; a += stride) {
            let i0 = c0 + a * dv4 + e;
            let y = g.y * s4_c[i0] + s4_k[qk0 + a] * ve;
            s4_c[i0] = y;
            acc += s4_q[qk0 + a] * y;
        }
    }
    let h = class_sum(li, acc, TC);
    if (li < TC && col) {
        s4_h[v0 + e] = h * (p.scale * inv);
    }
}

// After mlstm_step4: n' = f·n + i·k and m', one workgroup per head (m by invocation 0 alone, after every
// invocation has the gates). Its own bindings: k, the gates, n, m.
@group(0) @binding(1) var<storage, read> ss_k: array<f32>;
@group(0) @binding(2) var<storage, read> ss_i: array<f32>;
@group(0) @binding(3) var<storage, read> ss_f: array<f32>;
@group(0) @binding(4) var<storage, read_write> ss_n: array<f32>;
@group(0) @binding(5) var<storage, read_write> ss_m: array<f32>;

@compute @workgroup_size(WG)
fn mlstm_step4_state(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                     @builtin(local_invocation_index) li: u32) {
    let hd = linear_group_id(wid, nwg);
    if (hd >= p.heads) {
        return;
    }
    let g = step_gates(ss_m[hd], gate_pre(ss_f[hd]), gate_pre(ss_i[hd]));
    let qk0 = hd * p.dqk;
    for (var a = li; a < p.dqk; a += WG) {
        ss_n[qk0 + a] = g.y * ss_n[qk0 + a] + g.z * ss_k[qk0 + a];
    }
    // Every invocation has read the old m before invocation 0 replaces it.
    storageBarrier();
    if (li == 0u) {
        ss_m[hd] = g.x;
    }
}

// ---- chunkwise ------------------------------------------------------------------------------------
//
// Scratch: tok [heads, S] vec4 per token: x = b_t (the running sum of logσ(f̃) in its chunk),
// y = m_t (replaced by exp(b_t + m_c − m_t) / denominator_t in chunk_p), z = w_t = exp(g_c − b_t + ĩ_t − m_{c+1})
// (its weight in the state at the chunk's end), w = ĩ_t − b_t.
// chk [heads, nch + 1] vec4 per chunk: x = m at the chunk's start (entry nch: the final m), y = the state's
// decay exp(g_c + m_c − m_{c+1}), z = g_c, w = max_j (ĩ_j − b_j).
// dn [heads, nch, DQK]: the chunk's contribution to n, then n at the chunk's start.
// pm [heads, nch, L, L]: D_tj·(q̂_t·k_j) / denominator_t for j <= t, 0 above the diagonal.

@group(0) @binding(1) var<storage, read> ca_i: array<f32>;
@group(0) @binding(2) var<storage, read> ca_f: array<f32>;
@group(0) @binding(3) var<storage, read_write> ca_m: array<f32>;
@group(0) @binding(4) var<storage, read_write> ca_tok: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> ca_chk: array<vec4<f32>>;

// One workgroup per head: gate sums, the stabilisers of every token and chunk, the final m.
@compute @workgroup_size(WG)
fn chunk_prep(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let hd = linear_group_id(wid, nwg);
    if (hd >= p.heads) {
        return;
    }
    let tb = hd * p.s;
    let cb = hd * (p.nch + 1u);
    for (var c = li; c < p.nch; c += WG) {
        let t1 = min((c + 1u) * p.chunk, p.s);
        var b = 0.0;
        var mx = -3.0e38;
        for (var t = c * p.chunk; t < t1; t++) {
            let r = tok_row(hd, t);
            b += log_sigmoid(gate_pre(ca_f[r]));
            let ib = gate_pre(ca_i[r]) - b;
            mx = max(mx, ib);
            ca_tok[tb + t] = vec4<f32>(b, 0.0, 0.0, ib);
        }
        ca_chk[cb + c] = vec4<f32>(0.0, 0.0, b, mx);
    }
    storageBarrier();
    if (li == 0u) {
        var m = ca_m[hd];
        for (var c = 0u; c < p.nch; c++) {
            let st = ca_chk[cb + c];
            let m1 = max(st.z + m, st.z + st.w);
            ca_chk[cb + c] = vec4<f32>(m, exp(st.z + m - m1), st.z, st.w);
            m = m1;
        }
        ca_chk[cb + p.nch] = vec4<f32>(m, 1.0, 0.0, 0.0);
        ca_m[hd] = m;
    }
    storageBarrier();
    for (var c = li; c < p.nch; c += WG) {
        let m0 = ca_chk[cb + c].x;
        let g = ca_chk[cb + c].z;
        let m1 = ca_chk[cb + c + 1u].x;
        let t1 = min((c + 1u) * p.chunk, p.s);
        var run = -3.0e38;
        for (var t = c * p.chunk; t < t1; t++) {
            let e = ca_tok[tb + t];
            run = max(run, e.w);
            let mt = max(e.x + m0, e.x + run);
            ca_tok[tb + t] = vec4<f32>(e.x, mt, exp(g + e.w - m1), e.w);
        }
    }
}

@group(0) @binding(1) var<storage, read> cb_k: array<f32>;
@group(0) @binding(2) var<storage, read> cb_tok: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> cb_dn: array<f32>;

// One workgroup per (head, chunk): the chunk's contribution Σ_j w_j·k_j to n.
@compute @workgroup_size(WG)
fn chunk_dn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let id = linear_group_id(wid, nwg);
    if (id >= p.heads * p.nch) {
        return;
    }
    let hd = id / p.nch;
    let c = id % p.nch;
    let t1 = min((c + 1u) * p.chunk, p.s);
    for (var a = li; a < p.dqk; a += WG) {
        var acc = 0.0;
        for (var t = c * p.chunk; t < t1; t++) {
            acc += cb_tok[hd * p.s + t].z * cb_k[tok_row(hd, t) * p.dqk + a];
        }
        cb_dn[id * p.dqk + a] = acc;
    }
}

@group(0) @binding(1) var<storage, read> cs_chk: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> cs_n: array<f32>;
@group(0) @binding(3) var<storage, read_write> cs_dn: array<f32>;

// One workgroup per head: n at every chunk's start (into dn) and the final n, element a by invocation a.
@compute @workgroup_size(WG)
fn chunk_nscan(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let hd = linear_group_id(wid, nwg);
    if (hd >= p.heads) {
        return;
    }
    for (var a = li; a < p.dqk; a += WG) {
        var n = cs_n[hd * p.dqk + a];
        for (var c = 0u; c < p.nch; c++) {
            let i = (hd * p.nch + c) * p.dqk + a;
            let d = cs_dn[i];
            cs_dn[i] = n;
            n = cs_chk[hd * (p.nch + 1u) + c].y * n + d;
        }
        cs_n[hd * p.dqk + a] = n;
    }
}

@group(0) @binding(1) var<storage, read> cp_q: array<f32>;
@group(0) @binding(2) var<storage, read> cp_k: array<f32>;
@group(0) @binding(3) var<storage, read> cp_dn: array<f32>;
@group(0) @binding(4) var<storage, read> cp_chk: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read_write> cp_tok: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read_write> cp_pm: array<f32>;

// One workgroup per (head, chunk): the intra-chunk matrix and every token's denominator.
@compute @workgroup_size(WG)
fn chunk_p(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let id = linear_group_id(wid, nwg);
    if (id >= p.heads * p.nch) {
        return;
    }
    let hd = id / p.nch;
    let c = id % p.nch;
    let t0 = c * p.chunk;
    let len = min(p.chunk, p.s - t0);
    let pb = id * p.chunk * p.chunk;
    let tb = hd * p.s + t0;
    for (var idx = li; idx < len * len; idx += WG) {
        let t = idx / len;
        let j = idx % len;
        var val = 0.0;
        if (j <= t) {
            let qr = tok_row(hd, t0 + t) * p.dqk;
            let kr = tok_row(hd, t0 + j) * p.dqk;
            var dot = 0.0;
            for (var a = 0u; a < p.dqk; a++) {
                dot += cp_q[qr + a] * cp_k[kr + a];
            }
            let et = cp_tok[tb + t];
            val = exp(et.x + cp_tok[tb + j].w - et.y) * dot * p.scale;
        }
        cp_pm[pb + t * p.chunk + j] = val;
    }
    storageBarrier();
    let m0 = cp_chk[hd * (p.nch + 1u) + c].x;
    for (var t = li; t < len; t += WG) {
        let et = cp_tok[tb + t];
        var den = 0.0;
        for (var j = 0u; j <= t; j++) {
            den += cp_pm[pb + t * p.chunk + j];
        }
        let qr = tok_row(hd, t0 + t) * p.dqk;
        var qn = 0.0;
        for (var a = 0u; a < p.dqk; a++) {
            qn += cp_q[qr + a] * cp_dn[id * p.dqk + a];
        }
        let w_inter = exp(et.x + m0 - et.y);
        den += w_inter * qn * p.scale;
        let inv = 1.0 / (max(abs(den), exp(-et.y)) + p.eps);
        for (var j = 0u; j <= t; j++) {
            cp_pm[pb + t * p.chunk + j] *= inv;
        }
        cp_tok[tb + t] = vec4<f32>(et.x, w_inter * inv, et.z, et.w);
    }
}

@group(0) @binding(1) var<storage, read> co_q: array<f32>;
@group(0) @binding(2) var<storage, read> co_k: array<f32>;
@group(0) @binding(3) var<storage, read> co_v: array<f32>;
@group(0) @binding(4) var<storage, read> co_tok: array<vec4<f32>>;
@group(0) @binding(5) var<storage, read> co_chk: array<vec4<f32>>;
@group(0) @binding(6) var<storage, read> co_pm: array<f32>;
@group(0) @binding(7) var<storage, read_write> co_c: array<f32>;
@group(0) @binding(8) var<storage, read_write> co_h: array<f32>;

const LB: u32 = 64u; // chunk_out: tokens per staged block
const KA: u32 = 32u; // chunk_out: DQK rows per staged slice of the outputs
const KB: u32 = 16u; // chunk_out: DQK rows per staged slice of the state update

var<workgroup> sh_a: array<f32, 2048>; // Q block [LB, KA], V block [LB, TC] or w·V block [LB, TC]
var<workgroup> sh_b: array<f32, 1024>; // C slice [KA, TC] or K block [LB, KB]

// One workgroup of 8 × TC invocations per (head, TC columns of C), through the chunks in order: the
// chunk's outputs from the state at its start (Q·C, staged through workgroup memory in KA-row slices)
// plus its intra-chunk part (P·V), then the state at its end (decay·C + Kᵀ·(w ⊙ V)). Column e of C
// belongs to this workgroup alone; element (a, e) is updated by invocation (a % 8, e) only, and every
// read of C by another invocation is separated from the update by a barrier.
@compute @workgroup_size(WG)
fn chunk_out(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let id = linear_group_id(wid, nwg);
    if (id >= p.heads * p.tiles) {
        return;
    }
    let hd = id / p.tiles;
    let e0 = (id % p.tiles) * TC;
    let col = li % TC;
    let rg = li / TC; // 0..8
    let e = e0 + col;
    let live = e < p.dv;
    let c0 = hd * p.dqk * p.dv;
    for (var c = 0u; c < p.nch; c++) {
        let t0 = c * p.chunk;
        let len = min(p.chunk, p.s - t0);
        let pb = (hd * p.nch + c) * p.chunk * p.chunk;
        // Outputs of tokens blk + rg + 8u, u < 8.
        for (var blk = 0u; blk < len; blk += LB) {
            let nb = min(LB, len - blk);
            var acc: array<f32, 8>;
            for (var u = 0u; u < 8u; u++) {
                acc[u] = 0.0;
            }
            for (var a0 = 0u; a0 < p.dqk; a0 += KA) {
                for (var x = li; x < LB * KA; x += WG) {
                    let t = x / KA;
                    let k = x % KA;
                    var val = 0.0;
                    if (t < nb && a0 + k < p.dqk) {
                        val = co_q[tok_row(hd, t0 + blk + t) * p.dqk + a0 + k];
                    }
                    sh_a[x] = val;
                }
                for (var x = li; x < KA * TC; x += WG) {
                    let k = x / TC;
                    let ee = e0 + x % TC;
                    var val = 0.0;
                    if (a0 + k < p.dqk && ee < p.dv) {
                        val = co_c[c0 + (a0 + k) * p.dv + ee];
                    }
                    sh_b[x] = val;
                }
                workgroupBarrier();
                for (var k = 0u; k < KA; k++) {
                    let cv = sh_b[k * TC + col];
                    for (var u = 0u; u < 8u; u++) {
                        acc[u] += sh_a[(rg + u * 8u) * KA + k] * cv;
                    }
                }
                workgroupBarrier();
            }
            for (var u = 0u; u < 8u; u++) {
                let t = rg + u * 8u;
                if (t < nb) {
                    acc[u] *= p.scale * co_tok[hd * p.s + t0 + blk + t].y;
                }
            }
            for (var jb = 0u; jb <= blk; jb += LB) {
                let nj = min(LB, len - jb);
                for (var x = li; x < LB * TC; x += WG) {
                    let j = x / TC;
                    let ee = e0 + x % TC;
                    var val = 0.0;
                    if (j < nj && ee < p.dv) {
                        val = co_v[tok_row(hd, t0 + jb + j) * p.dv + ee];
                    }
                    sh_a[x] = val;
                }
                workgroupBarrier();
                for (var u = 0u; u < 8u; u++) {
                    let t = blk + rg + u * 8u;
                    if (rg + u * 8u < nb) {
                        let jmax = min(nj, t - jb + 1u);
                        for (var j = 0u; j < jmax; j++) {
                            acc[u] += co_pm[pb + t * p.chunk + jb + j] * sh_a[j * TC + col];
                        }
                    }
                }
                workgroupBarrier();
            }
            for (var u = 0u; u < 8u; u++) {
                let t = rg + u * 8u;
                if (t < nb && live) {
                    co_h[tok_row(hd, t0 + blk + t) * p.dv + e] = acc[u];
                }
            }
        }
        storageBarrier();
        // The state at the chunk's end.
        let decay = co_chk[hd * (p.nch + 1u) + c].y;
        for (var jb = 0u; jb < len; jb += LB) {
            let nj = min(LB, len - jb);
            for (var x = li; x < LB * TC; x += WG) {
                let j = x / TC;
                let ee = e0 + x % TC;
                var val = 0.0;
                if (j < nj && ee < p.dv) {
                    let t = t0 + jb + j;
                    val = co_tok[hd * p.s + t].z * co_v[tok_row(hd, t) * p.dv + ee];
                }
                sh_a[x] = val;
            }
            for (var a0 = 0u; a0 < p.dqk; a0 += KB) {
                for (var x = li; x < LB * KB; x += WG) {
                    let j = x / KB;
                    let k = x % KB;
                    var val = 0.0;
                    if (j < nj && a0 + k < p.dqk) {
                        val = co_k[tok_row(hd, t0 + jb + j) * p.dqk + a0 + k];
                    }
                    sh_b[x] = val;
                }
                workgroupBarrier();
                for (var r = rg; r < KB; r += 8u) {
                    let a = a0 + r;
                    if (a < p.dqk && live) {
                        var upd = 0.0;
                        for (var j = 0u; j < nj; j++) {
                            upd += sh_b[j * KB + r] * sh_a[j * TC + col];
                        }
                        let idx = c0 + a * p.dv + e;
                        co_c[idx] = select(co_c[idx], decay * co_c[idx], jb == 0u) + upd;
                    }
                }
                workgroupBarrier();
            }
        }
        storageBarrier();
    }
}

// ---- multi-head layer norm ------------------------------------------------------------------------

@group(0) @binding(1) var<storage, read> ln_x: array<f32>;
@group(0) @binding(2) var<storage, read> ln_w: array<u32>;
@group(0) @binding(3) var<storage, read> ln_b: array<u32>;
@group(0) @binding(4) var<storage, read_write> ln_y: array<f32>;
@group(0) @binding(5) var<storage, read> ln_g: array<f32>;

// σ(x) from exp(−|x|), which never overflows (1 / (1 + exp(−x)) makes an infinity below x ≈ −88).
fn sigmoid(x: f32) -> f32 {
    let e = exp(-abs(x));
    let r = 1.0 / (1.0 + e);
    return select(e * r, r, x >= 0.0);
}

fn ln_param(is_bias: bool, i: u32) -> f32 {
    if (is_bias) {
        return decode(BDTYPE, ln_b[word_index(BDTYPE, i)], i);
    }
    return decode(WDTYPE, ln_w[word_index(WDTYPE, i)], i);
}

// Segment seg (a (row, head) pair of DH = p.dv elements) of ln_x normalised into ln_y, then ·w, +b and
// ·σ(o) as HAS_W, HAS_B and HAS_G say. Sums over the workgroup: call in uniform control flow.
fn head_layernorm(li: u32, seg: u32, eps: f32) {
    let dh = p.dv;
    let base = seg * dh;
    let col0 = (seg % p.nh) * dh;
    var s = 0.0;
    for (var e = li; e < dh; e += WG) {
        s += ln_x[base + e];
    }
    let mean = wg_sum(li, s) / f32(dh);
    var s2 = 0.0;
    for (var e = li; e < dh; e += WG) {
        let d = ln_x[base + e] - mean;
        s2 += d * d;
    }
    let var_eps = wg_sum(li, s2) / f32(dh) + eps;
    let inv = select(0.0, inverseSqrt(var_eps), var_eps > 0.0);
    for (var e = li; e < dh; e += WG) {
        var y = (ln_x[base + e] - mean) * inv;
        if (HAS_W) {
            y *= ln_param(false, col0 + e);
        }
        if (HAS_B) {
            y += ln_param(true, col0 + e);
        }
        if (HAS_G) {
            y *= sigmoid(ln_g[base + e]);
        }
        ln_y[base + e] = y;
    }
}

// One workgroup per (row, head) segment; with HAS_G, the output gate of an mLSTM layer.
@compute @workgroup_size(WG)
fn multihead_layernorm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) li: u32) {
    let seg = linear_group_id(wid, nwg);
    if (seg >= p.heads) {
        return;
    }
    head_layernorm(li, seg, p.eps);
}

// ---- step state and output-gated head norm --------------------------------------------------------
//
// mlstm_step4_state and then the head's output norm in one launch (an mLSTM layer's decode then needs
// two launches, not three): after mlstm_step4 the dispatch boundary makes the head's whole h visible,
// and this kernel already runs one workgroup per head. Bindings: those of the layer norm (h as ln_x,
// y as ln_y, o as ln_g), then the state update's. The two parts share no memory: the norm reads h, o, w,
// b and writes y; the update reads k and the gates and writes n and m.

@group(0) @binding(6) var<storage, read> sn_k: array<f32>;
@group(0) @binding(7) var<storage, read> sn_i: array<f32>;
@group(0) @binding(8) var<storage, read> sn_f: array<f32>;
@group(0) @binding(9) var<storage, read_write> sn_n: array<f32>;
@group(0) @binding(10) var<storage, read_write> sn_m: array<f32>;

@compute @workgroup_size(WG)
fn mlstm_step4_state_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) li: u32) {
    let hd = linear_group_id(wid, nwg);
    if (hd >= p.heads) {
        return;
    }
    // As mlstm_step4_state, m written after the norm's barriers.
    let g = step_gates(sn_m[hd], gate_pre(sn_f[hd]), gate_pre(sn_i[hd]));
    let qk0 = hd * p.dqk;
    for (var a = li; a < p.dqk; a += WG) {
        sn_n[qk0 + a] = g.y * sn_n[qk0 + a] + g.z * sn_k[qk0 + a];
    }
    head_layernorm(li, hd, p.norm_eps);
    storageBarrier();
    if (li == 0u) {
        sn_m[hd] = g.x;
    }
}
