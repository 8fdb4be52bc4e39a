// sdpa_decode with subgroup shuffles: K and V rows go straight from memory into registers, with no
// workgroup memory and no barrier in the main loop. Chosen when the adapter has subgroups of at least
// LPR lanes; attention.wgsl holds the workgroup-memory version and the sdpa_decode_reduce pass, which
// merges the partials written here (same layout). attention_kv.wgsl, composed before this file, holds
// the parameters and the K/V element groups both read.
//
// A workgroup (row block, split, kv head) of WG threads is NG = WG / LPR lane groups. A group of LPR
// lanes covers one K/V row: lane `lane` holds the row's element groups lane + LPR·c (a group is one
// vec4<u32>: 4 f32 or 8 16-bit values), at most 16 elements, as the columns ("quads") of a mat4x4.
// Each step a group takes U keys; each lane forms partial dot products with its slice of every query
// row of the block (held in registers), the group sums them with xor shuffles, and every lane updates
// its slice of the online softmax. At the end the groups of a subgroup merge their states with shuffles,
// then the subgroups' states are merged through workgroup memory, a few rows at a time.
// Lanes of a group must be consecutive invocations of one subgroup (LPR <= subgroup size).
//
// The two rows' states live in separate variables guarded by conditions on constants: naga bounds every
// loop with a counter, so drivers would not unroll loops over a private array.

override DTYPE: u32 = 0u;
// Head dimension: a multiple of 4, at most 256, and HD <= 16 · LPR.
override HD: u32 = 128u;
// Lanes per K/V row: 8, 16 or 32, at most the subgroup size.
override LPR: u32 = 16u;
// Query rows per workgroup: 1 or 2.
override RB: u32 = 2u;
// One split: the kernel writes the normalised output itself (binding 4 is the output), no reduce pass.
override DIRECT: bool = false;
// Threads per workgroup (a multiple of the subgroup size). A short context runs one workgroup per KV head,
// so a wide one keeps more loads in flight; a split context has many workgroups and uses 128.
override WG: u32 = 128u;
// The adapter's smallest subgroup size (>= LPR): groups within SG lanes merge by shuffles.
override SG: u32 = 32u;
// With DIRECT, the output also written as the x of the quantized GEMV that takes it (the O projection),
// in its QOUT_LAYOUT for p.qout_units units per row (as attention.wgsl's sdpa_decode_reduce does with
// QOUT): the hi and lo bytes to qx_out, (d / 256, Σ) per group of 16 to qs_out. HD a multiple of 32.
override QOUT: bool = false;
override QOUT_LAYOUT: u32 = 0u;
const U: u32 = 4u; // keys per lane group per step
// Load the next step's K and V words before folding the current ones, so that a step's memory latency
// overlaps the one before's arithmetic (twice the registers for raw words; ops/attention.rs says when).
override PREFETCH: bool = false;

@group(0) @binding(0) var<uniform> p: DecodeParams;
@group(0) @binding(1) var<storage, read> q_in: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> kc: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> vc: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> part: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> qx_out: array<u32>;
@group(0) @binding(6) var<storage, read_write> qs_out: array<vec2<f32>>;
@group(0) @binding(7) var<storage, read> kv_len_buf: array<u32>;

// Element groups per row, per lane (at most 4), and quads (vec4 of f32) per lane (at most 4).
fn groups_per_row() -> u32 {
    return (HD + group_elems() - 1u) / group_elems();
}

fn groups_per_lane() -> u32 {
    return (groups_per_row() + LPR - 1u) / LPR;
}

fn quads_per_lane() -> u32 {
    return groups_per_lane() * group_elems() / 4u;
}

fn lanes_in_group() -> u32 {
    return WG / LPR;
}

// The head-dim vec4 index of quad `k` of lane `lane`'s slice.
fn quad_d4(lane: u32, k: u32) -> u32 {
    if (DTYPE == DT_F32) {
        return lane + LPR * k;
    }
    return 2u * (lane + LPR * (k / 2u)) + (k & 1u);
}

// Group slot c of lane `lane` in the row starting at element `row_e`, from K (is_v false) or V, as
// quads (lo, hi); zeros past the row.
fn slot_words(is_v: bool, row_e: u32, lane: u32, c: u32) -> vec4<u32> {
    let epg = group_elems();
    let g = lane + LPR * c;
    let ok = g < groups_per_row();
    let e = row_e + select(0u, g * epg, ok);
    let n = elem_word(min(epg, HD - select(0u, g * epg, ok)));
    var w: vec4<u32>;
    if (is_v) {
        w = v_words(elem_word(e), n);
    } else {
        w = k_words(elem_word(e), n);
    }
    return select(vec4<u32>(0u), w, ok);
}

// The lane's raw words of one K or V row: group slots 0..3 (16-bit rows use at most 2).
struct Raw {
    w0: vec4<u32>,
    w1: vec4<u32>,
    w2: vec4<u32>,
    w3: vec4<u32>,
}

fn load_raw(is_v: bool, key: u32, kvh: u32, lane: u32) -> Raw {
    let row_e = (key * p.n_kv_heads + kvh) * HD;
    let cg = groups_per_lane();
    var r: Raw;
    r.w0 = slot_words(is_v, row_e, lane, 0u);
    if (cg > 1u) { r.w1 = slot_words(is_v, row_e, lane, 1u); }
    if (cg > 2u) { r.w2 = slot_words(is_v, row_e, lane, 2u); }
    if (cg > 3u) { r.w3 = slot_words(is_v, row_e, lane, 3u); }
    return r;
}

// The lane's slice of a row as quads (columns beyond the slice are zero).
fn unpack_raw(r: Raw, lane: u32) -> mat4x4<f32> {
    var m = mat4x4<f32>();
    let cg = groups_per_lane();
    if (DTYPE == DT_F32) {
        m[0] = group_lo(r.w0);
        if (cg > 1u) { m[1] = group_lo(r.w1); }
        if (cg > 2u) { m[2] = group_lo(r.w2); }
        if (cg > 3u) { m[3] = group_lo(r.w3); }
    } else {
        m[0] = group_lo(r.w0);
        m[1] = group_hi(r.w0);
        if (cg > 1u) {
            m[2] = group_lo(r.w1);
            m[3] = group_hi(r.w1);
        }
        // Rows of head_dim ≡ 4 (mod 8): the last group holds 4 elements; the other 4 are not ours.
        if (HD % 8u != 0u) {
            let hd4 = HD / 4u;
            m[1] = select(vec4<f32>(0.0), m[1], quad_d4(lane, 1u) < hd4);
            m[3] = select(vec4<f32>(0.0), m[3], quad_d4(lane, 3u) < hd4);
        }
    }
    return m;
}

// The raw K and V words of one step: U keys of this lane group.
struct Step {
    k0: Raw,
    k1: Raw,
    k2: Raw,
    k3: Raw,
    v0: Raw,
    v1: Raw,
    v2: Raw,
    v3: Raw,
}

// Keys past the split (key >= end) load row `last` instead; their scores are masked.
fn load_step(key: vec4<u32>, end: u32, last: u32, kvh: u32, lane: u32) -> Step {
    let safe = select(vec4<u32>(last), key, key < vec4<u32>(end));
    var s: Step;
    s.k0 = load_raw(false, safe.x, kvh, lane);
    s.k1 = load_raw(false, safe.y, kvh, lane);
    s.k2 = load_raw(false, safe.z, kvh, lane);
    s.k3 = load_raw(false, safe.w, kvh, lane);
    s.v0 = load_raw(true, safe.x, kvh, lane);
    s.v1 = load_raw(true, safe.y, kvh, lane);
    s.v2 = load_raw(true, safe.z, kvh, lane);
    s.v3 = load_raw(true, safe.w, kvh, lane);
    return s;
}

// Sum over the LPR lanes of a group.
fn group_sum(x: vec4<f32>) -> vec4<f32> {
    var s = x;
    s += subgroupShuffleXor(s, 1u);
    s += subgroupShuffleXor(s, 2u);
    s += subgroupShuffleXor(s, 4u);
    if (LPR > 8u) {
        s += subgroupShuffleXor(s, 8u);
    }
    if (LPR > 16u) {
        s += subgroupShuffleXor(s, 16u);
    }
    return s;
}

fn slice_dot(a: mat4x4<f32>, b: mat4x4<f32>) -> f32 {
    var d = dot(a[0], b[0]);
    if (quads_per_lane() > 1u) { d += dot(a[1], b[1]); }
    if (quads_per_lane() > 2u) { d += dot(a[2], b[2]); }
    if (quads_per_lane() > 3u) { d += dot(a[3], b[3]); }
    return d;
}

// One query row: its scaled slice, its position, and the lane's slice of its online softmax.
struct Row {
    q: mat4x4<f32>,
    pos: i32,
    m: f32,
    l: f32,
    acc: mat4x4<f32>,
}

fn row_init(r: u32, row0: u32, kvh: u32, lane: u32, first_pos: i32) -> Row {
    var row: Row;
    row.m = FLOOR;
    let rr = row0 + r;
    let t = rr / p.group;
    let head = kvh * p.group + (rr - t * p.group);
    row.pos = first_pos + i32(t);
    let hd4 = HD / 4u;
    let base = (t * p.n_heads + head) * hd4;
    let nq = quads_per_lane();
    let d0 = quad_d4(lane, 0u);
    let d1 = quad_d4(lane, 1u);
    let d2 = quad_d4(lane, 2u);
    let d3 = quad_d4(lane, 3u);
    if (d0 < hd4) { row.q[0] = bitcast<vec4<f32>>(q_in[base + d0]) * p.scale; }
    if (nq > 1u && d1 < hd4) { row.q[1] = bitcast<vec4<f32>>(q_in[base + d1]) * p.scale; }
    if (nq > 2u && d2 < hd4) { row.q[2] = bitcast<vec4<f32>>(q_in[base + d2]) * p.scale; }
    if (nq > 3u && d3 < hd4) { row.q[3] = bitcast<vec4<f32>>(q_in[base + d3]) * p.scale; }
    return row;
}

// A row's online-softmax update for one step: its new running max, the factor that rescales what it
// held, and the weights of the step's keys.
struct Fold {
    m: f32,
    alpha: f32,
    pr: vec4<f32>,
}

// `part`: the lane's partial scores of the step's keys (positions kp, in range where `live`).
fn fold_weights(row: Row, part: vec4<f32>, kp: vec4<i32>, live: vec4<bool>) -> Fold {
    var s = softcap4(group_sum(part), p.softcap);
    var ok = live;
    if (p.causal != 0u) {
        ok = ok & (kp <= vec4<i32>(row.pos));
    }
    if (p.window > 0u) {
        ok = ok & (kp > vec4<i32>(row.pos - i32(p.window)));
    }
    s = select(vec4<f32>(MASKED), s, ok);
    var f: Fold;
    // Masked keys weigh 0 (attention_kv.wgsl): with nothing visible yet the row stays empty.
    f.m = max(row.m, max4(s));
    f.alpha = exp(row.m - f.m);
    f.pr = exp(s - vec4<f32>(f.m));
    return f;
}

// The row's state after a step, its output slice rescaled but its V terms not yet added.
fn fold_start(row: Row, f: Fold) -> Row {
    var out = row;
    out.m = f.m;
    out.l = row.l * f.alpha + f.pr.x + f.pr.y + f.pr.z + f.pr.w;
    let nq = quads_per_lane();
    out.acc[0] = row.acc[0] * f.alpha;
    if (nq > 1u) { out.acc[1] = row.acc[1] * f.alpha; }
    if (nq > 2u) { out.acc[2] = row.acc[2] * f.alpha; }
    if (nq > 3u) { out.acc[3] = row.acc[3] * f.alpha; }
    return out;
}

// acc += v · w, column by column, so the columns past the slice stay constant zeros (0 · x does not fold).
fn add_v(acc: mat4x4<f32>, v: mat4x4<f32>, w: f32) -> mat4x4<f32> {
    var out = acc;
    let nq = quads_per_lane();
    out[0] += v[0] * w;
    if (nq > 1u) { out[1] += v[1] * w; }
    if (nq > 2u) { out[2] += v[2] * w; }
    if (nq > 3u) { out[3] += v[3] * w; }
    return out;
}

// The block's (at most two) rows.
struct Rows {
    a: Row,
    b: Row,
}

// Folds a step's U keys into both rows. Key by key, K then V, each row slice is unpacked where it is
// used, so that one unpacked slice is live at a time beside the raw words (which a prefetching loop
// holds twice).
fn fold_step(rows: Rows, kp: vec4<i32>, live: vec4<bool>, st: Step, lane: u32) -> Rows {
    let two = RB > 1u;
    var pa = vec4<f32>(0.0);
    var pb = vec4<f32>(0.0);
    var k = unpack_raw(st.k0, lane);
    pa.x = slice_dot(rows.a.q, k);
    if (two) { pb.x = slice_dot(rows.b.q, k); }
    k = unpack_raw(st.k1, lane);
    pa.y = slice_dot(rows.a.q, k);
    if (two) { pb.y = slice_dot(rows.b.q, k); }
    k = unpack_raw(st.k2, lane);
    pa.z = slice_dot(rows.a.q, k);
    if (two) { pb.z = slice_dot(rows.b.q, k); }
    k = unpack_raw(st.k3, lane);
    pa.w = slice_dot(rows.a.q, k);
    if (two) { pb.w = slice_dot(rows.b.q, k); }
    let fa = fold_weights(rows.a, pa, kp, live);
    var out: Rows;
    out.a = fold_start(rows.a, fa);
    var fb: Fold;
    if (two) {
        fb = fold_weights(rows.b, pb, kp, live);
        out.b = fold_start(rows.b, fb);
    }
    var v = unpack_raw(st.v0, lane);
    out.a.acc = add_v(out.a.acc, v, fa.pr.x);
    if (two) { out.b.acc = add_v(out.b.acc, v, fb.pr.x); }
    v = unpack_raw(st.v1, lane);
    out.a.acc = add_v(out.a.acc, v, fa.pr.y);
    if (two) { out.b.acc = add_v(out.b.acc, v, fb.pr.y); }
    v = unpack_raw(st.v2, lane);
    out.a.acc = add_v(out.a.acc, v, fa.pr.z);
    if (two) { out.b.acc = add_v(out.b.acc, v, fb.pr.z); }
    v = unpack_raw(st.v3, lane);
    out.a.acc = add_v(out.a.acc, v, fa.pr.w);
    if (two) { out.b.acc = add_v(out.b.acc, v, fb.pr.w); }
    return out;
}

var<workgroup> w_acc: array<vec4<f32>, 1024>; // [rows of a round][states][HD/4] slices
var<workgroup> w_ml: array<vec2<f32>, 128>;   // [rows of a round][states] (max, sum)
var<workgroup> w_len: u32;
// QOUT: per output vec4 of a round (its merge_rows slot), its largest |value| and its sum. Sized by the
// host (1024 with QOUT, else 1), so that kernels without QOUT keep their occupancy.
override QCAP: u32 = 1u;
var<workgroup> w_qmax: array<f32, QCAP>;
var<workgroup> w_qsum: array<f32, QCAP>;

// Lanes that share a merged state after the subgroup merge, and the states left per row.
fn state_span() -> u32 {
    return max(LPR, SG);
}

fn states() -> u32 {
    return WG / state_span();
}

// Rows merged per round through workgroup memory (the host keeps states · HD/4 <= 1024, states <= 128).
fn rows_per_round() -> u32 {
    return min(RB, min(1024u / (states() * (HD / 4u)), 128u / states()));
}

// Merges a row's state with that of the lane `mask` away (same slice, another group of the subgroup).
fn merge_lanes(row: Row, mask: u32) -> Row {
    let m_o = subgroupShuffleXor(row.m, mask);
    let l_o = subgroupShuffleXor(row.l, mask);
    let nq = quads_per_lane();
    var a_o = mat4x4<f32>();
    a_o[0] = subgroupShuffleXor(row.acc[0], mask);
    if (nq > 1u) { a_o[1] = subgroupShuffleXor(row.acc[1], mask); }
    if (nq > 2u) { a_o[2] = subgroupShuffleXor(row.acc[2], mask); }
    if (nq > 3u) { a_o[3] = subgroupShuffleXor(row.acc[3], mask); }
    let m = max(row.m, m_o);
    var out = row;
    let wa = exp(row.m - m);
    let wb = exp(m_o - m);
    out.m = m;
    out.l = row.l * wa + l_o * wb;
    out.acc[0] = row.acc[0] * wa + a_o[0] * wb;
    if (nq > 1u) { out.acc[1] = row.acc[1] * wa + a_o[1] * wb; }
    if (nq > 2u) { out.acc[2] = row.acc[2] * wa + a_o[2] * wb; }
    if (nq > 3u) { out.acc[3] = row.acc[3] * wa + a_o[3] * wb; }
    return out;
}

fn subgroup_merge(row: Row) -> Row {
    var r = row;
    for (var mask = LPR; mask < SG; mask <<= 1u) {
        r = merge_lanes(r, mask);
    }
    return r;
}

// Puts the lane's merged state of row r (round slot rl) into workgroup memory: the first group of each
// subgroup span writes it.
fn stash_row(rl: u32, row: Row, li: u32) {
    let lane = li % LPR;
    if (li % state_span() >= LPR) {
        return;
    }
    let st = li / state_span();
    let hd4 = HD / 4u;
    let nq = quads_per_lane();
    let at = (rl * states() + st) * hd4;
    let d0 = quad_d4(lane, 0u);
    if (d0 < hd4) { w_acc[at + d0] = row.acc[0]; }
    let d1 = quad_d4(lane, 1u);
    if (nq > 1u && d1 < hd4) { w_acc[at + d1] = row.acc[1]; }
    let d2 = quad_d4(lane, 2u);
    if (nq > 2u && d2 < hd4) { w_acc[at + d2] = row.acc[2]; }
    let d3 = quad_d4(lane, 3u);
    if (nq > 3u && d3 < hd4) { w_acc[at + d3] = row.acc[3]; }
    if (lane == 0u) {
        w_ml[rl * states() + st] = vec2<f32>(row.m, row.l);
    }
}

// Merges the stashed states of rows r0 .. r0 + n and writes the rows' partials (the layout of
// attention.wgsl: per (output row, split) one vec4 (max, sum, 0, 0), then head_dim/4 vec4 of
// weighted V). Called after stash_row and a barrier.
fn merge_rows(li: u32, row0: u32, r0: u32, n: u32, kvh: u32, split: u32) {
    let hd4 = HD / 4u;
    let ng = states();
    for (var o = li; o < n * hd4; o += WG) {
        let rl = o / hd4;
        let r = r0 + rl;
        let d4 = o - rl * hd4;
        var mm = FLOOR;
        for (var g = 0u; g < ng; g++) {
            mm = max(mm, w_ml[rl * ng + g].x);
        }
        var a = vec4<f32>(0.0);
        var ls = 0.0;
        for (var g = 0u; g < ng; g++) {
            let ml = w_ml[rl * ng + g];
            let w = exp(ml.x - mm);
            a += w * w_acc[(rl * ng + g) * hd4 + d4];
            ls += w * ml.y;
        }
        let rr = row0 + r;
        let t = rr / p.group;
        let head = kvh * p.group + (rr - t * p.group);
        let out_row = t * p.n_heads + head;
        if (DIRECT) {
            let y = select(vec4<f32>(0.0), a / ls, weighed(ls));
            part[out_row * hd4 + d4] = bitcast<vec4<u32>>(y);
            if (QOUT) {
                w_qmax[o] = amax4(y);
                w_qsum[o] = hsum(y);
            }
            continue;
        }
        let at = (out_row * p.n_splits + split) * (hd4 + 1u);
        part[at + 1u + d4] = bitcast<vec4<u32>>(a);
        if (d4 == 0u) {
            part[at] = bitcast<vec4<u32>>(vec4<f32>(mm, ls, 0.0, 0.0));
        }
    }
}

// QOUT: the rows merge_rows just wrote (same slots o), quantized as blocks of 32 of their tokens' rows of
// x. The eight slots of a block are consecutive (HD / 4 is a multiple of 8); each thread re-reads the
// output vec4 it wrote and splits it with its block's scale, and one thread a group of 16 writes the
// group's (d / 256, Σ). Called after merge_rows and a barrier.
fn emit_rows(li: u32, row0: u32, r0: u32, n: u32, kvh: u32) {
    let hd4 = HD / 4u;
    let groups = p.n_heads * HD / 16u;
    for (var o = li; o < n * hd4; o += WG) {
        let rl = o / hd4;
        let d4 = o - rl * hd4;
        let rr = row0 + r0 + rl;
        let t = rr / p.group;
        let head = kvh * p.group + (rr - t * p.group);
        let y = bitcast<vec4<f32>>(part[(t * p.n_heads + head) * hd4 + d4]);
        let first = o & ~7u;
        var amax = 0.0;
        for (var k = 0u; k < 8u; k++) {
            amax = max(amax, w_qmax[first + k]);
        }
        set_block_scale(amax);
        let hl = split(y);
        let at = position_in((head * HD + 4u * d4) / 16u, QOUT_LAYOUT, p.qout_units);
        qx_out[x_word(t, groups, at, false, o & 3u)] = hl.x;
        qx_out[x_word(t, groups, at, true, o & 3u)] = hl.y;
        if ((o & 3u) == 0u) {
            let s = w_qsum[o] + w_qsum[o + 1u] + w_qsum[o + 2u] + w_qsum[o + 3u];
            qs_out[t * groups + at] = vec2<f32>(d_ / 256.0, s);
        }
    }
}

fn decode_body(kv_len_in: u32, wid: vec3<u32>, li: u32) {
    let kv_len = min(kv_len_in, p.capacity);
    let row0 = wid.x * RB;
    let split = wid.y;
    let kvh = wid.z;
    let lane = li % LPR;
    let grp = li / LPR;
    let ng = lanes_in_group();
    let first_pos = i32(kv_len) - i32(p.tokens);

    // The keys any row may see, cut into n_splits equal runs of whole steps (ng · U keys).
    var lo = 0u;
    if (p.window > 0u) {
        lo = u32(max(0i, first_pos - i32(p.window) + 1i));
    }
    let step = ng * U;
    let span = select(0u, kv_len - lo, kv_len > lo);
    let per = (span + p.n_splits - 1u) / p.n_splits;
    let split_len = ((per + step - 1u) / step) * step;
    let k0 = min(lo + split * split_len, kv_len);
    let k1 = min(k0 + split_len, kv_len);

    var rows: Rows;
    rows.a = row_init(0u, row0, kvh, lane, first_pos);
    if (RB > 1u) { rows.b = row_init(1u, row0, kvh, lane, first_pos); }

    let last = max(k1, 1u) - 1u;
    let lanes_keys = vec4<u32>(grp) + vec4<u32>(0u, ng, 2u * ng, 3u * ng);
    var cur: Step;
    if (PREFETCH && k0 < k1) {
        cur = load_step(vec4<u32>(k0) + lanes_keys, k1, last, kvh, lane);
    }
    for (var kb = k0; kb < k1; kb += step) {
        let key = vec4<u32>(kb) + lanes_keys;
        var next: Step;
        if (!PREFETCH) {
            cur = load_step(key, k1, last, kvh, lane);
        } else if (kb + step < k1) {
            next = load_step(key + vec4<u32>(step), k1, last, kvh, lane);
        }
        rows = fold_step(rows, vec4<i32>(key), key < vec4<u32>(k1), cur, lane);
        if (PREFETCH) {
            cur = next;
        }
    }

    rows.a = subgroup_merge(rows.a);
    if (RB > 1u) { rows.b = subgroup_merge(rows.b); }
    let nrows = min(RB, p.rows - row0);
    let rr = rows_per_round();
    for (var r0 = 0u; r0 < nrows; r0 += rr) {
        // Row r goes to round slot r - r0 when it is in this round.
        if (r0 == 0u) { stash_row(0u, rows.a, li); }
        if (RB > 1u && r0 <= 1u && 1u < r0 + rr) { stash_row(1u - r0, rows.b, li); }
        workgroupBarrier();
        merge_rows(li, row0, r0, min(rr, nrows - r0), kvh, split);
        workgroupBarrier();
        if (DIRECT && QOUT) {
            // The next round's merge_rows rewrites w_qmax only after its own barrier.
            emit_rows(li, row0, r0, min(rr, nrows - r0), kvh);
        }
    }
}

@compute @workgroup_size(WG)
fn sdpa_decode_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    decode_body(p.kv_len, wid, li);
}

@compute @workgroup_size(WG)
fn sdpa_decode_dev_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    if (li == 0u) {
        w_len = kv_len_buf[0];
    }
    decode_body(workgroupUniformLoad(&w_len), wid, li);
}
