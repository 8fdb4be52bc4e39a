// Rotary position embedding on x [tokens, heads, head_dim] (f32, or f16/bf16 packed two per word).
//
// Pairs: HalfSplit (NeoX / Hugging Face Llama) rotates (i, i + half); Interleaved (GPT-J / GGUF) rotates
// (2i, 2i + 1); i < half = rot_dim / 2, and the dims past rot_dim pass through. For a pair (a, b) with
// angle θ = position · inv_freq[i]:  a' = a·cos θ − b·sin θ,  b' = b·cos θ + a·sin θ  (cos, sin scaled by
// attn_scale).
//
// Angles are computed in turns from a table the host builds in f64 (binding 2): eight rows of
// `table_stride` f32 (a multiple of 4), one column per frequency i. With t = inv_freq[i] / 2π (turns per
// position) and c_k = frac(256^k · t) for k = 0..3, row k holds hi_k = c_k rounded down to a multiple of
// 2^-16 and row 4 + k holds lo_k = c_k − hi_k < 2^-16. With the position split into bytes,
// p = Σ p_k · 256^k, we have p · t ≡ Σ p_k · c_k (mod 1), and
//   - p_k · hi_k is a multiple of 2^-16 below 256: exact in f32, and so is its fraction, and so is the sum
//     of the four fractions (a multiple of 2^-16 below 4);
//   - the p_k · lo_k terms are below 2^-8 and carry only their f32 rounding (~1e-10 turns).
// Exactness comes from the grid, not from error-free transformations a driver may simplify away (Mesa
// rewrites TwoSum), and the angle reduced to [-π/4, π/4] is as accurate as its own f32 rounding (~5e-8
// rad) for every u32 position, where the plain f32 product position · inv_freq is off by up to 4e-3 rad
// at position 100000.
//
// Entry points:
//   rope_vec          out of place, one thread per vec4 unit of a row (and per vec4 of the pass-through
//                     tail), looping over `heads_per_thread` heads of one token with the same cos/sin.
//   rope_vec_inplace  the same on one read-write buffer (no pass-through work).
//   rope_words        out of place, any even head_dim and rot_dim: one thread per output word, which
//                     reads each element's partner (the host runs it into a scratch buffer for in place).

override DTYPE: u32 = 0u;
// 0 HalfSplit, 1 Interleaved.
override LAYOUT: u32 = 0u;
// 0: position = p.pos_offset + token; 1: position = positions[token].
override POSITIONS: u32 = 0u;

struct Params {
    // Threads of the launch: tokens · head_groups · units.
    n_threads: u32,
    // Threads per (token, head group).
    units: u32,
    head_groups: u32,
    heads_per_thread: u32,
    heads: u32,
    // Per head row, in slots (vec4<u32> for rope_vec*, u32 words for rope_words):
    row_slots: u32,
    // slots of the rotated part; the pass-through tail starts here.
    rot_slots: u32,
    // units that rotate (the others only copy the tail).
    rot_units: u32,
    // rot_dim / 2: the number of pairs.
    half: u32,
    // HalfSplit, rope_vec*: slots from a unit's first-half vec4 to its second-half vec4.
    half_slots: u32,
    // rope_vec: units that copy a tail vec4 (0 in place).
    pass_units: u32,
    // f32 per table row.
    table_stride: u32,
    pos_offset: u32,
    attn_scale: f32,
    // rope_vec*: threads launched (workgroups · 256), the stride of the unit loop.
    grid_threads: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// Bindings are numbered per entry point:
//   rope_vec (xv, tab_v, positions, outv), rope_vec_inplace (iov, tab_v, positions),
//   rope_words (xs, tab_s, positions, outs).
@group(0) @binding(1) var<storage, read> xv: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> iov: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> xs: array<u32>;
@group(0) @binding(2) var<storage, read> tab_v: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> tab_s: array<f32>;
@group(0) @binding(3) var<storage, read> positions: array<u32>;
@group(0) @binding(4) var<storage, read_write> outv: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> outs: array<u32>;

// The position of `token`. The positions buffer is read in both modes so that every entry point binds it
// (with a range the host binds the table there); the index is clamped to the buffer.
fn position(token: u32) -> u32 {
    let given = positions[min(token, arrayLength(&positions) - 1u)];
    return select(p.pos_offset + token, given, POSITIONS == 1u);
}

// cos and sin for the four frequencies i0 .. i0 + 3 (i0 a multiple of 4).
fn cos_sin4(q: vec4<f32>, i0: u32) -> CosSin {
    let s4 = p.table_stride / 4u;
    let v = i0 / 4u;
    let hi = array<vec4<f32>, 4>(tab_v[v], tab_v[s4 + v], tab_v[2u * s4 + v], tab_v[3u * s4 + v]);
    let lo = array<vec4<f32>, 4>(tab_v[4u * s4 + v], tab_v[5u * s4 + v], tab_v[6u * s4 + v], tab_v[7u * s4 + v]);
    return rope_cos_sin(q, hi, lo, p.attn_scale);
}

// cos and sin for frequency i.
fn cos_sin1(q: vec4<f32>, i: u32) -> vec2<f32> {
    let s = p.table_stride;
    let hi = array<vec4<f32>, 4>(vec4<f32>(tab_s[i]), vec4<f32>(tab_s[s + i]), vec4<f32>(tab_s[2u * s + i]),
                                 vec4<f32>(tab_s[3u * s + i]));
    let lo = array<vec4<f32>, 4>(vec4<f32>(tab_s[4u * s + i]), vec4<f32>(tab_s[5u * s + i]),
                                 vec4<f32>(tab_s[6u * s + i]), vec4<f32>(tab_s[7u * s + i]));
    let r = rope_cos_sin(q, hi, lo, p.attn_scale);
    return vec2<f32>(r.c.x, r.s.x);
}

// ---- vec4 path ---------------------------------------------------------------------------------
//
// A unit rotates:
//   f32 HalfSplit     slots j and j + half_slots: pairs 4j .. 4j+3 (one vec4 from each half)
//   f32 Interleaved   slots 2j and 2j + 1: pairs 4j .. 4j+3
//   16-bit HalfSplit  slots j and j + half_slots: pairs 8j .. 8j+7
//   16-bit Interleaved slot j (four words, one pair each): pairs 4j .. 4j+3

fn two_slots() -> bool {
    return DTYPE == DT_F32 || LAYOUT == 0u;
}

fn slot_a(j: u32) -> u32 {
    return select(j, 2u * j, DTYPE == DT_F32 && LAYOUT == 1u);
}

fn slot_b(j: u32) -> u32 {
    return select(j + p.half_slots, 2u * j + 1u, DTYPE == DT_F32 && LAYOUT == 1u);
}

struct UnitCosSin {
    lo: CosSin,
    hi: CosSin,
}

fn unit_cos_sin(pos: u32, j: u32) -> UnitCosSin {
    let q = split_position(pos);
    if (DTYPE != DT_F32 && LAYOUT == 0u) {
        return UnitCosSin(cos_sin4(q, 8u * j), cos_sin4(q, 8u * j + 4u));
    }
    let cs = cos_sin4(q, 4u * j);
    return UnitCosSin(cs, cs);
}

fn f32x4(v: vec4<u32>) -> vec4<f32> {
    return bitcast<vec4<f32>>(v);
}

fn unpack4(w0: u32, w1: u32) -> vec4<f32> {
    return vec4<f32>(unpack_pair(DTYPE, w0), unpack_pair(DTYPE, w1));
}

// The rotated pair of slots (a, b) of a two-slot unit.
struct Slots {
    a: vec4<u32>,
    b: vec4<u32>,
}

fn rotate_two(a: vec4<u32>, b: vec4<u32>, cs: UnitCosSin) -> Slots {
    let c = cs.lo.c;
    let s = cs.lo.s;
    if (DTYPE == DT_F32 && LAYOUT == 0u) {
        let u = f32x4(a);
        let v = f32x4(b);
        return Slots(bitcast<vec4<u32>>(u * c - v * s), bitcast<vec4<u32>>(v * c + u * s));
    }
    if (DTYPE == DT_F32) {
        // a = (e0, o0, e1, o1), b = (e2, o2, e3, o3)
        let u = f32x4(a);
        let v = f32x4(b);
        let e = vec4<f32>(u.x, u.z, v.x, v.z);
        let o = vec4<f32>(u.y, u.w, v.y, v.w);
        let e2 = e * c - o * s;
        let o2 = o * c + e * s;
        return Slots(bitcast<vec4<u32>>(vec4<f32>(e2.x, o2.x, e2.y, o2.y)),
                     bitcast<vec4<u32>>(vec4<f32>(e2.z, o2.z, e2.w, o2.w)));
    }
    // 16-bit HalfSplit: eight consecutive first-half elements in a, their partners in b.
    let u0 = unpack4(a.x, a.y);
    let u1 = unpack4(a.z, a.w);
    let v0 = unpack4(b.x, b.y);
    let v1 = unpack4(b.z, b.w);
    let c1 = cs.hi.c;
    let s1 = cs.hi.s;
    let ru0 = u0 * c - v0 * s;
    let rv0 = v0 * c + u0 * s;
    let ru1 = u1 * c1 - v1 * s1;
    let rv1 = v1 * c1 + u1 * s1;
    return Slots(
        vec4<u32>(pack_pair(DTYPE, ru0.xy), pack_pair(DTYPE, ru0.zw), pack_pair(DTYPE, ru1.xy), pack_pair(DTYPE, ru1.zw)),
        vec4<u32>(pack_pair(DTYPE, rv0.xy), pack_pair(DTYPE, rv0.zw), pack_pair(DTYPE, rv1.xy), pack_pair(DTYPE, rv1.zw)));
}

// 16-bit Interleaved: four words, each one (even, odd) pair.
fn rotate_one(a: vec4<u32>, cs: UnitCosSin) -> vec4<u32> {
    let w0 = unpack_pair(DTYPE, a.x);
    let w1 = unpack_pair(DTYPE, a.y);
    let w2 = unpack_pair(DTYPE, a.z);
    let w3 = unpack_pair(DTYPE, a.w);
    let e = vec4<f32>(w0.x, w1.x, w2.x, w3.x);
    let o = vec4<f32>(w0.y, w1.y, w2.y, w3.y);
    let e2 = e * cs.lo.c - o * cs.lo.s;
    let o2 = o * cs.lo.c + e * cs.lo.s;
    return vec4<u32>(pack_pair(DTYPE, vec2<f32>(e2.x, o2.x)), pack_pair(DTYPE, vec2<f32>(e2.y, o2.y)),
                     pack_pair(DTYPE, vec2<f32>(e2.z, o2.z)), pack_pair(DTYPE, vec2<f32>(e2.w, o2.w)));
}

struct Unit {
    j: u32,
    token: u32,
    // first row (token · heads + head) and the number of heads this thread handles
    row0: u32,
    n_heads: u32,
}

fn unit_of(g: u32) -> Unit {
    let j = g % p.units;
    let rest = g / p.units;
    let group = rest % p.head_groups;
    let token = rest / p.head_groups;
    let head0 = group * p.heads_per_thread;
    return Unit(j, token, token * p.heads + head0, min(p.heads_per_thread, p.heads - head0));
}

fn vec_unit(g: u32) {
    let u = unit_of(g);
    if (u.j < p.rot_units) {
        let cs = unit_cos_sin(position(u.token), u.j);
        let sa = slot_a(u.j);
        let sb = slot_b(u.j);
        for (var k = 0u; k < u.n_heads; k++) {
            let base = (u.row0 + k) * p.row_slots;
            if (two_slots()) {
                let r = rotate_two(xv[base + sa], xv[base + sb], cs);
                outv[base + sa] = r.a;
                outv[base + sb] = r.b;
            } else {
                outv[base + sa] = rotate_one(xv[base + sa], cs);
            }
        }
    }
    if (u.j < p.pass_units) {
        for (var k = 0u; k < u.n_heads; k++) {
            let i = (u.row0 + k) * p.row_slots + p.rot_slots + u.j;
            outv[i] = xv[i];
        }
    }
}

fn vec_unit_inplace(g: u32) {
    let u = unit_of(g);
    let cs = unit_cos_sin(position(u.token), u.j);
    let sa = slot_a(u.j);
    let sb = slot_b(u.j);
    for (var k = 0u; k < u.n_heads; k++) {
        let base = (u.row0 + k) * p.row_slots;
        if (two_slots()) {
            let r = rotate_two(iov[base + sa], iov[base + sb], cs);
            iov[base + sa] = r.a;
            iov[base + sb] = r.b;
        } else {
            iov[base + sa] = rotate_one(iov[base + sa], cs);
        }
    }
}

// The vec4 entry points stride over the units when the host launches fewer threads than units.
@compute @workgroup_size(256)
fn rope_vec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    for (var g = linear_group_id(wid, nwg) * 256u + li; g < p.n_threads; g += p.grid_threads) {
        vec_unit(g);
    }
}

@compute @workgroup_size(256)
fn rope_vec_inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) li: u32) {
    for (var g = linear_group_id(wid, nwg) * 256u + li; g < p.n_threads; g += p.grid_threads) {
        vec_unit_inplace(g);
    }
}

// ---- word path -----------------------------------------------------------------------------------

fn element(base: u32, e: u32) -> f32 {
    return decode(DTYPE, xs[base + word_index(DTYPE, e)], e);
}

// Element e (< rot_dim) of the row whose first word is `base`, rotated.
fn rotated_element(base: u32, e: u32, q: vec4<f32>) -> f32 {
    var i: u32;
    var partner: u32;
    var sign: f32;
    if (LAYOUT == 0u) {
        let first = e < p.half;
        i = select(e - p.half, e, first);
        partner = select(e - p.half, e + p.half, first);
        sign = select(1.0, -1.0, first);
    } else {
        i = e >> 1u;
        partner = e ^ 1u;
        sign = select(-1.0, 1.0, (e & 1u) == 1u);
    }
    let cs = cos_sin1(q, i);
    return element(base, e) * cs.x + sign * element(base, partner) * cs.y;
}

@compute @workgroup_size(256)
fn rope_words(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let g = linear_group_id(wid, nwg) * 256u + li;
    if (g >= p.n_threads) {
        return;
    }
    let w = g % p.row_slots;
    let row = g / p.row_slots;
    let base = row * p.row_slots;
    if (w >= p.rot_slots) {
        outs[base + w] = xs[base + w];
        return;
    }
    let q = split_position(position(row / p.heads));
    if (DTYPE == DT_F32) {
        outs[base + w] = bitcast<u32>(rotated_element(base, w, q));
    } else {
        outs[base + w] = pack_pair(DTYPE, vec2<f32>(rotated_element(base, 2u * w, q), rotated_element(base, 2u * w + 1u, q)));
    }
}

// ---- rope_qk_kv: one decode/prefill step's q, k and v in one launch --------------------------------
//
// q, k and v f32. q [tokens, heads, hd] rotates in place; k [tokens, kv_heads, hd] rotates into the key
// cache and v is copied into the value cache, both at row `position(token)` of caches [capacity, kv_heads,
// hd]. One thread per pair of elements of a row: pair i < half is the rotated pair of frequency i, pair
// i >= half the two pass-through elements rot_dim + 2(i - half) and the next. rope_qk_kv writes f32
// caches; rope_qk_kv16 writes f16 or bf16 caches (CACHE_DT), where its thread i of a K or V row writes the
// row's word i (elements 2i and 2i + 1, each rotated with its own partner), so that no two threads share a
// word. Params used: n_threads, heads, head_groups (= kv_heads), row_slots (= hd), half, table_stride,
// pos_offset, attn_scale.

// rope_qk_kv16: the caches' dtype (f16 or bf16; rope_qk_kv ignores it).
override CACHE_DT: u32 = 1u;

@group(0) @binding(1) var<storage, read_write> q_io: array<f32>;
@group(0) @binding(4) var<storage, read> k_in: array<f32>;
@group(0) @binding(5) var<storage, read> v_in: array<f32>;
@group(0) @binding(6) var<storage, read_write> k_cache: array<f32>;
@group(0) @binding(7) var<storage, read_write> v_cache: array<f32>;
@group(0) @binding(6) var<storage, read_write> k_cache_w: array<u32>;
@group(0) @binding(7) var<storage, read_write> v_cache_w: array<u32>;

// The two element indices of pair i within a row.
fn pair_of(i: u32) -> vec2<u32> {
    if (i >= p.half) {
        let e = 2u * i; // = rot_dim + 2 (i - half)
        return vec2<u32>(e, e + 1u);
    }
    if (LAYOUT == 0u) {
        return vec2<u32>(i, i + p.half);
    }
    return vec2<u32>(2u * i, 2u * i + 1u);
}

// Pair i (elements e.x, e.y) rotated for position pos, if it rotates (i < half).
fn rotate_pair(v: vec2<f32>, i: u32, pos: u32) -> vec2<f32> {
    if (i >= p.half) {
        return v;
    }
    let cs = cos_sin1(split_position(pos), i);
    return vec2<f32>(v.x * cs.x - v.y * cs.y, v.y * cs.x + v.x * cs.y);
}

// Pair i of row r (< heads) of token's q, rotated in place.
fn rotate_q_pair(token: u32, r: u32, i: u32, pos: u32) {
    let e = pair_of(i);
    let base = (token * p.heads + r) * p.row_slots;
    let v = rotate_pair(vec2<f32>(q_io[base + e.x], q_io[base + e.y]), i, pos);
    q_io[base + e.x] = v.x;
    q_io[base + e.y] = v.y;
}

// What thread g of rope_qk_kv or rope_qk_kv16 works on: slot i (pair or word, head_dim / 2 of them) of
// row r of token `token` (rows: the heads of q, then the KV heads of k, then those of v), at position pos.
// Rows of k and v are also given as their KV head.
struct StepSlot {
    i: u32,
    token: u32,
    r: u32,
    pos: u32,
    kvh: u32,
}

fn step_slot(g: u32) -> StepSlot {
    let slots = p.row_slots / 2u;
    let row = g / slots;
    let per_token = p.heads + 2u * p.head_groups;
    let token = row / per_token;
    let r = row % per_token;
    return StepSlot(g % slots, token, r, position(token), (r - min(r, p.heads)) % p.head_groups);
}

@compute @workgroup_size(256)
fn rope_qk_kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let g = linear_group_id(wid, nwg) * 256u + li;
    if (g >= p.n_threads) {
        return;
    }
    let t = step_slot(g);
    if (t.r < p.heads) {
        rotate_q_pair(t.token, t.r, t.i, t.pos);
        return;
    }
    let hd = p.row_slots;
    let e = pair_of(t.i);
    let src = (t.token * p.head_groups + t.kvh) * hd;
    let dst = (t.pos * p.head_groups + t.kvh) * hd;
    if (t.r >= p.heads + p.head_groups) {
        v_cache[dst + e.x] = v_in[src + e.x];
        v_cache[dst + e.y] = v_in[src + e.y];
        return;
    }
    let v = rotate_pair(vec2<f32>(k_in[src + e.x], k_in[src + e.y]), t.i, t.pos);
    k_cache[dst + e.x] = v.x;
    k_cache[dst + e.y] = v.y;
}

// Element e of the f32 row at k_in[base..] (head dim p.row_slots), rotated for position pos.
fn k_rotated(base: u32, e: u32, pos: u32) -> f32 {
    let x = k_in[base + e];
    if (e >= 2u * p.half) {
        return x;
    }
    // x is the pair's first element a (a' = a·cos − b·sin) or its second b (b' = b·cos + a·sin).
    var first: bool;
    var i: u32;
    var partner: u32;
    if (LAYOUT == 0u) {
        first = e < p.half;
        i = select(e - p.half, e, first);
        partner = select(e - p.half, e + p.half, first);
    } else {
        first = (e & 1u) == 0u;
        i = e / 2u;
        partner = select(e - 1u, e + 1u, first);
    }
    let cs = cos_sin1(split_position(pos), i);
    let y = k_in[base + partner];
    return select(x * cs.x + y * cs.y, x * cs.x - y * cs.y, first);
}

@compute @workgroup_size(256)
fn rope_qk_kv16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let g = linear_group_id(wid, nwg) * 256u + li;
    if (g >= p.n_threads) {
        return;
    }
    let t = step_slot(g);
    if (t.r < p.heads) {
        rotate_q_pair(t.token, t.r, t.i, t.pos);
        return;
    }
    let hd = p.row_slots;
    let src = (t.token * p.head_groups + t.kvh) * hd;
    let dst = (t.pos * p.head_groups + t.kvh) * (hd / 2u) + t.i;
    if (t.r >= p.heads + p.head_groups) {
        v_cache_w[dst] = pack_pair_saturating(CACHE_DT, vec2<f32>(v_in[src + 2u * t.i], v_in[src + 2u * t.i + 1u]));
        return;
    }
    k_cache_w[dst] = pack_pair_saturating(CACHE_DT, vec2<f32>(k_rotated(src, 2u * t.i, t.pos), k_rotated(src, 2u * t.i + 1u, t.pos)));
}
