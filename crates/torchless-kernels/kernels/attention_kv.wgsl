// What the decode kernels (attention.wgsl's workgroup-memory pass and attention_subgroup.wgsl) share,
// composed before each (ops/attention.rs): the decode parameters, the masked score, and the K/V cache's
// element groups. The including module declares DTYPE, HD and the bindings kc and vc.

// Masked scores are MASKED; a row's running max starts at FLOOR, above MASKED and at most any score that
// counts (scores below it weigh nothing), so a masked score's weight exp(MASKED − m) is 0 whatever m is
// and needs no select, and a row that has seen no visible key keeps m = FLOOR and l = 0.
//
// NaN scores (from a NaN or infinite query or key; +inf ones become NaN as inf − inf) must reach the
// output as NaN, as in PyTorch. No gate drops a weight: a NaN score's weight exp(NaN − m) is NaN whether
// or not the GPU's max kept the NaN in m (NVIDIA's max returns the other operand), and so are the row's
// sum l and its output; only `weighed` tests l, from its bits.
const MASKED: f32 = -3.0e38;
const FLOOR: f32 = -1.0e38;

// Whether a row's sum of weights is divided by (a row that saw no key has 0 and comes out as 0; is_nan
// reads the bits, as GPUs' comparisons need not see a NaN).
fn weighed(l: f32) -> bool {
    return l > 0.0 || is_nan(l);
}

fn softcap4(s: vec4<f32>, cap: f32) -> vec4<f32> {
    if (cap > 0.0) {
        return cap * vec4<f32>(safe_tanh(s.x / cap), safe_tanh(s.y / cap), safe_tanh(s.z / cap), safe_tanh(s.w / cap));
    }
    return s;
}

struct DecodeParams {
    kv_len: u32,
    capacity: u32,
    n_heads: u32,
    n_kv_heads: u32,
    group: u32,
    tokens: u32,
    rows: u32,
    n_splits: u32,
    scale: f32,
    softcap: f32,
    window: u32,
    causal: u32,
    // QOUT: the next GEMV's units per row.
    qout_units: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// ---- K/V element groups --------------------------------------------------------------------------
// A group is one vec4<u32>: 4 f32 or 8 16-bit elements.

fn group_elems() -> u32 {
    return select(8u, 4u, DTYPE == DT_F32);
}

// The word holding element `e` of K or V (e is even for 16-bit types: rows are a multiple of 4 long).
fn elem_word(e: u32) -> u32 {
    return select(e >> 1u, e, DTYPE == DT_F32);
}

// Four words of K from word `w` (even). 16-bit rows of head_dim ≡ 4 (mod 8) start mid-vector: then two
// loads are spliced (the second only when `n` > 2 words are wanted, so it never runs past the buffer).
fn k_words(w: u32, n: u32) -> vec4<u32> {
    let i = w >> 2u;
    let a = kc[i];
    if (DTYPE == DT_F32 || HD % 8u == 0u || (w & 3u) == 0u) {
        return a;
    }
    var b = vec4<u32>(0u);
    if (n > 2u) {
        b = kc[i + 1u];
    }
    return vec4<u32>(a.z, a.w, b.x, b.y);
}

fn v_words(w: u32, n: u32) -> vec4<u32> {
    let i = w >> 2u;
    let a = vc[i];
    if (DTYPE == DT_F32 || HD % 8u == 0u || (w & 3u) == 0u) {
        return a;
    }
    var b = vec4<u32>(0u);
    if (n > 2u) {
        b = vc[i + 1u];
    }
    return vec4<u32>(a.z, a.w, b.x, b.y);
}

// Elements 0..3 of a group as f32.
fn group_lo(w: vec4<u32>) -> vec4<f32> {
    if (DTYPE == DT_F32) {
        return bitcast<vec4<f32>>(w);
    }
    return vec4<f32>(unpack_pair(DTYPE, w.x), unpack_pair(DTYPE, w.y));
}

// Elements 4..7 of a 16-bit group as f32.
fn group_hi(w: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(unpack_pair(DTYPE, w.z), unpack_pair(DTYPE, w.w));
}

// The largest of four scores (a running max, which need not keep a NaN: see MASKED and FLOOR above).
fn max4(v: vec4<f32>) -> f32 {
    return max(max(v.x, v.y), max(v.z, v.w));
}
