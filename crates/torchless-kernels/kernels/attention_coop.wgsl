enable f16;
enable wgpu_cooperative_matrix;

// flash_coop: the prefill attention of attention.wgsl's `flash` (same op, parameters and bindings) on
// 16×16×16 f16 cooperative matrices with f32 accumulators, for adapters with 32-lane subgroups and
// head_dim a multiple of 16, at most 128. Composed after attention.wgsl (FlashParams, bindings, MASKED,
// softcap4; attention_kv.wgsl: max4).
//
// Workgroup (query block of 64 rows, head): 4 subgroups, each owning 16 query rows. Q is scaled, rounded
// to f16 and kept in registers as head_dim/16 fragments. The softmax takes two passes over the keys,
// which keeps the output in cooperative accumulators (they cannot be rescaled row by row as an online
// softmax would need): the first computes each row's max and sum from S = Q·Kᵀ, the second recomputes S,
// turns it into P = exp(S - max) / sum in f16 and accumulates P·V. K and V arrive in f16 (the host rounds
// other dtypes once, as f16_chunk rounds) and are staged in tiles of 32 keys. S goes through workgroup
// memory so that each lane can apply the soft cap and masks to its row: lane l owns row l / 2, keys
// (l % 2)·16 + 0..15 of the tile.

const CQ: u32 = 64u;
const CK: u32 = 32u;
// Staging row stride in halves (head_dim at most 128, padded by 8); score and probability strides.
const CSTR: u32 = 136u;
const SSTR: u32 = 36u;
const PSTR: u32 = 40u;
// K tile at 0, V tile at CK·CSTR; at the start the Q block (CQ·CSTR halves) goes through the same array.
const CV: u32 = 4352u;
// Held as vec4<f16>s (as coop16.wgsl stages): a chunk is two 8-byte stores; fragment loads count offsets
// and strides in these vectors.
var<workgroup> c_kv: array<vec4<f16>, 2176>;
// Per subgroup: its 16 rows of scores (f32) and probabilities (f16); the scores also carry the epilogue.
var<workgroup> c_s: array<f32, 2304>;
var<workgroup> c_p: array<f16, 2560>;

// Halves at..at+7 (at a multiple of 8) of c_kv from a chunk of packed f16 pairs.
fn c_put8(at: u32, w: vec4<u32>) {
    let i = at / 4u;
    c_kv[i] = vec4<f16>(vec2<f16>(unpack2x16float(w.x)), vec2<f16>(unpack2x16float(w.y)));
    c_kv[i + 1u] = vec4<f16>(vec2<f16>(unpack2x16float(w.z)), vec2<f16>(unpack2x16float(w.w)));
}

// Elements e..e+7 of key `key`'s row of K (is_v false) or V, as f16 pairs; zeros past kv_len.
fn c_fetch8(is_v: bool, key: u32, kvh: u32, e: u32) -> vec4<u32> {
    if (key >= fp.kv_len) {
        return vec4<u32>(0u);
    }
    let at = (key * fp.n_kv_heads + kvh) * HD + e;
    if (is_v) {
        return vc[at >> 3u];
    }
    return kc[at >> 3u];
}

// The K tile (and the V tile when `with_v`) of keys kt0.. into c_kv: CK rows of HD/8 chunks.
fn c_stage_kv(kt0: u32, kvh: u32, li: u32, with_v: bool) {
    let per_row = HD / 8u;
    for (var c = li; c < CK * per_row; c += 128u) {
        let j = c / per_row;
        let e = (c - j * per_row) * 8u;
        c_put8(j * CSTR + e, c_fetch8(false, kt0 + j, kvh, e));
        if (with_v) {
            c_put8(CV + j * CSTR + e, c_fetch8(true, kt0 + j, kvh, e));
        }
    }
}

// Q fragment f (head-dim columns 16f..) of subgroup sg's rows, from the staged block.
fn c_qfrag(sg: u32, f: u32) -> coop_mat16x16<f16, A> {
    return coopLoadT<coop_mat16x16<f16, A>>(&c_kv[(sg * 16u * CSTR + f * 16u) / 4u], CSTR / 4u);
}

// Keys 16n.. of the K tile as the B operand (rows: head-dim columns 16f..).
fn c_kfrag(f: u32, n: u32) -> coop_mat16x16<f16, B> {
    return coopLoad<coop_mat16x16<f16, B>>(&c_kv[(n * 16u * CSTR + f * 16u) / 4u], CSTR / 4u);
}

// Rows 16n.. (keys) of the V tile as the B operand, head-dim columns 16f...
fn c_vfrag(n: u32, f: u32) -> coop_mat16x16<f16, B> {
    return coopLoadT<coop_mat16x16<f16, B>>(&c_kv[(CV + n * 16u * CSTR + f * 16u) / 4u], CSTR / 4u);
}

// Fragments of a subgroup's Q rows, head-dim columns 16f.. (those past HD stay zero and unused).
struct QFrags {
    f0: coop_mat16x16<f16, A>,
    f1: coop_mat16x16<f16, A>,
    f2: coop_mat16x16<f16, A>,
    f3: coop_mat16x16<f16, A>,
    f4: coop_mat16x16<f16, A>,
    f5: coop_mat16x16<f16, A>,
    f6: coop_mat16x16<f16, A>,
    f7: coop_mat16x16<f16, A>,
}

// S of the subgroup's rows against the staged K tile, into its rows of c_s.
fn c_scores(q: QFrags, sg: u32) {
    var s0 = coop_mat16x16<f32, C>();
    var s1 = coop_mat16x16<f32, C>();
    s0 = coopMultiplyAdd(q.f0, c_kfrag(0u, 0u), s0);
    s1 = coopMultiplyAdd(q.f0, c_kfrag(0u, 1u), s1);
    if (HD > 16u) {
        s0 = coopMultiplyAdd(q.f1, c_kfrag(1u, 0u), s0);
        s1 = coopMultiplyAdd(q.f1, c_kfrag(1u, 1u), s1);
    }
    if (HD > 32u) {
        s0 = coopMultiplyAdd(q.f2, c_kfrag(2u, 0u), s0);
        s1 = coopMultiplyAdd(q.f2, c_kfrag(2u, 1u), s1);
    }
    if (HD > 48u) {
        s0 = coopMultiplyAdd(q.f3, c_kfrag(3u, 0u), s0);
        s1 = coopMultiplyAdd(q.f3, c_kfrag(3u, 1u), s1);
    }
    if (HD > 64u) {
        s0 = coopMultiplyAdd(q.f4, c_kfrag(4u, 0u), s0);
        s1 = coopMultiplyAdd(q.f4, c_kfrag(4u, 1u), s1);
    }
    if (HD > 80u) {
        s0 = coopMultiplyAdd(q.f5, c_kfrag(5u, 0u), s0);
        s1 = coopMultiplyAdd(q.f5, c_kfrag(5u, 1u), s1);
    }
    if (HD > 96u) {
        s0 = coopMultiplyAdd(q.f6, c_kfrag(6u, 0u), s0);
        s1 = coopMultiplyAdd(q.f6, c_kfrag(6u, 1u), s1);
    }
    if (HD > 112u) {
        s0 = coopMultiplyAdd(q.f7, c_kfrag(7u, 0u), s0);
        s1 = coopMultiplyAdd(q.f7, c_kfrag(7u, 1u), s1);
    }
    coopStoreT(s0, &c_s[sg * 16u * SSTR], SSTR);
    coopStoreT(s1, &c_s[sg * 16u * SSTR + 16u], SSTR);
}

// A lane's 16 scores of the tile at kt0 (keys kt0 + 16·half + 0..15), soft-capped and masked.
struct Scores {
    a: vec4<f32>,
    b: vec4<f32>,
    c: vec4<f32>,
    d: vec4<f32>,
}

fn c_mask4(s: vec4<f32>, kp0: u32, pos: u32, row_ok: bool) -> vec4<f32> {
    let kp = vec4<u32>(kp0) + vec4<u32>(0u, 1u, 2u, 3u);
    var ok = (kp < vec4<u32>(fp.kv_len)) & vec4<bool>(row_ok);
    if (fp.causal != 0u) {
        ok = ok & (kp <= vec4<u32>(pos));
    }
    if (fp.window > 0u) {
        ok = ok & (kp + vec4<u32>(fp.window) > vec4<u32>(pos));
    }
    return select(vec4<f32>(MASKED), softcap4(s, fp.softcap), ok);
}

fn c_s4(at: u32) -> vec4<f32> {
    return vec4<f32>(c_s[at], c_s[at + 1u], c_s[at + 2u], c_s[at + 3u]);
}

fn c_lane_scores(sg: u32, sl: u32, kt0: u32, pos: u32, row_ok: bool) -> Scores {
    let at = sg * 16u * SSTR + (sl >> 1u) * SSTR + (sl & 1u) * 16u;
    let k0 = kt0 + (sl & 1u) * 16u;
    return Scores(
        c_mask4(c_s4(at), k0, pos, row_ok),
        c_mask4(c_s4(at + 4u), k0 + 4u, pos, row_ok),
        c_mask4(c_s4(at + 8u), k0 + 8u, pos, row_ok),
        c_mask4(c_s4(at + 12u), k0 + 12u, pos, row_ok),
    );
}

// Masked keys weigh 0 (attention_kv.wgsl).
fn c_exp4(s: vec4<f32>, m: f32) -> vec4<f32> {
    return exp(s - vec4<f32>(m));
}

fn c_sum4(v: vec4<f32>) -> f32 {
    return v.x + v.y + v.z + v.w;
}

fn c_put_p4(at: u32, p: vec4<f32>) {
    let h = vec4<f16>(p);
    c_p[at] = h.x;
    c_p[at + 1u] = h.y;
    c_p[at + 2u] = h.z;
    c_p[at + 3u] = h.w;
}

// Output fragment f (head-dim columns 16f..) of subgroup sg's rows, through its c_s rows, to out_f.
fn c_store_o(o: coop_mat16x16<f32, C>, f: u32, sg: u32, sl: u32, q0: u32, head: u32) {
    coopStoreT(o, &c_s[sg * 16u * SSTR], SSTR);
    workgroupBarrier();
    for (var t = sl; t < 64u; t += 32u) {
        let r = t >> 2u;
        let c4 = t & 3u;
        let i = q0 + sg * 16u + r;
        if (i < fp.q_len) {
            let v = c_s4(sg * 16u * SSTR + r * SSTR + c4 * 4u);
            out_f[(i * fp.n_heads + head) * (HD / 4u) + f * 4u + c4] = bitcast<vec4<u32>>(v);
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(128)
fn flash_coop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32,
              @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) sl: u32) {
    let qb = fp.n_qblocks - 1u - wid.x; // the longest causal rows start first
    let head = wid.y;
    let kvh = head / fp.group;
    let q0 = qb * CQ;
    let q_end = min(q0 + CQ, fp.q_len);
    var hi = fp.kv_len;
    if (fp.causal != 0u) {
        hi = min(hi, fp.q_offset + q_end);
    }
    var lo = 0u;
    if (fp.window > 0u && fp.q_offset + q0 + 1u > fp.window) {
        lo = fp.q_offset + q0 + 1u - fp.window;
    }
    lo = (lo / CK) * CK;

    // The Q block, scaled, in f16 through c_kv; then each subgroup's fragments into registers.
    let per_row = HD / 8u;
    for (var c = li; c < CQ * per_row; c += 128u) {
        let r = c / per_row;
        let e = (c - r * per_row) * 8u;
        let i = q0 + r;
        var w = vec4<u32>(0u);
        if (i < fp.q_len) {
            let at = ((i * fp.n_heads + head) * HD + e) >> 2u;
            w = f16_chunk(bitcast<vec4<f32>>(q_in[at]) * fp.scale, bitcast<vec4<f32>>(q_in[at + 1u]) * fp.scale);
        }
        c_put8(r * CSTR + e, w);
    }
    workgroupBarrier();
    var q: QFrags;
    q.f0 = c_qfrag(sg, 0u);
    if (HD > 16u) { q.f1 = c_qfrag(sg, 1u); }
    if (HD > 32u) { q.f2 = c_qfrag(sg, 2u); }
    if (HD > 48u) { q.f3 = c_qfrag(sg, 3u); }
    if (HD > 64u) { q.f4 = c_qfrag(sg, 4u); }
    if (HD > 80u) { q.f5 = c_qfrag(sg, 5u); }
    if (HD > 96u) { q.f6 = c_qfrag(sg, 6u); }
    if (HD > 112u) { q.f7 = c_qfrag(sg, 7u); }
    workgroupBarrier();

    let row = q0 + sg * 16u + (sl >> 1u);
    let row_ok = row < fp.q_len;
    let pos = fp.q_offset + row;

    // Pass 1: the row's max m and (this lane's half of) its sum l.
    var m = FLOOR;
    var l = 0.0;
    for (var kt0 = lo; kt0 < hi; kt0 += CK) {
        c_stage_kv(kt0, kvh, li, false);
        workgroupBarrier();
        c_scores(q, sg);
        workgroupBarrier();
        let s = c_lane_scores(sg, sl, kt0, pos, row_ok);
        let mb = max(max(max4(s.a), max4(s.b)), max(max4(s.c), max4(s.d)));
        let m_new = max(m, max(mb, subgroupShuffleXor(mb, 1u)));
        let part = c_sum4(c_exp4(s.a, m_new)) + c_sum4(c_exp4(s.b, m_new)) + c_sum4(c_exp4(s.c, m_new))
            + c_sum4(c_exp4(s.d, m_new));
        l = l * exp(m - m_new) + part;
        m = m_new;
        workgroupBarrier();
    }
    let l_row = l + subgroupShuffleXor(l, 1u);
    let inv = select(0.0, 1.0 / l_row, weighed(l_row));

    // Pass 2: O = P·V with P = exp(S - m) / l.
    var o0 = coop_mat16x16<f32, C>();
    var o1 = coop_mat16x16<f32, C>();
    var o2 = coop_mat16x16<f32, C>();
    var o3 = coop_mat16x16<f32, C>();
    var o4 = coop_mat16x16<f32, C>();
    var o5 = coop_mat16x16<f32, C>();
    var o6 = coop_mat16x16<f32, C>();
    var o7 = coop_mat16x16<f32, C>();
    let p_at = sg * 16u * PSTR + (sl >> 1u) * PSTR + (sl & 1u) * 16u;
    for (var kt0 = lo; kt0 < hi; kt0 += CK) {
        c_stage_kv(kt0, kvh, li, true);
        workgroupBarrier();
        c_scores(q, sg);
        workgroupBarrier();
        let s = c_lane_scores(sg, sl, kt0, pos, row_ok);
        c_put_p4(p_at, c_exp4(s.a, m) * inv);
        c_put_p4(p_at + 4u, c_exp4(s.b, m) * inv);
        c_put_p4(p_at + 8u, c_exp4(s.c, m) * inv);
        c_put_p4(p_at + 12u, c_exp4(s.d, m) * inv);
        workgroupBarrier();
        let p0 = coopLoadT<coop_mat16x16<f16, A>>(&c_p[sg * 16u * PSTR], PSTR);
        let p1 = coopLoadT<coop_mat16x16<f16, A>>(&c_p[sg * 16u * PSTR + 16u], PSTR);
        o0 = coopMultiplyAdd(p1, c_vfrag(1u, 0u), coopMultiplyAdd(p0, c_vfrag(0u, 0u), o0));
        if (HD > 16u) { o1 = coopMultiplyAdd(p1, c_vfrag(1u, 1u), coopMultiplyAdd(p0, c_vfrag(0u, 1u), o1)); }
        if (HD > 32u) { o2 = coopMultiplyAdd(p1, c_vfrag(1u, 2u), coopMultiplyAdd(p0, c_vfrag(0u, 2u), o2)); }
        if (HD > 48u) { o3 = coopMultiplyAdd(p1, c_vfrag(1u, 3u), coopMultiplyAdd(p0, c_vfrag(0u, 3u), o3)); }
        if (HD > 64u) { o4 = coopMultiplyAdd(p1, c_vfrag(1u, 4u), coopMultiplyAdd(p0, c_vfrag(0u, 4u), o4)); }
        if (HD > 80u) { o5 = coopMultiplyAdd(p1, c_vfrag(1u, 5u), coopMultiplyAdd(p0, c_vfrag(0u, 5u), o5)); }
        if (HD > 96u) { o6 = coopMultiplyAdd(p1, c_vfrag(1u, 6u), coopMultiplyAdd(p0, c_vfrag(0u, 6u), o6)); }
        if (HD > 112u) { o7 = coopMultiplyAdd(p1, c_vfrag(1u, 7u), coopMultiplyAdd(p0, c_vfrag(0u, 7u), o7)); }
        workgroupBarrier();
    }

    c_store_o(o0, 0u, sg, sl, q0, head);
    if (HD > 16u) { c_store_o(o1, 1u, sg, sl, q0, head); }
    if (HD > 32u) { c_store_o(o2, 2u, sg, sl, q0, head); }
    if (HD > 48u) { c_store_o(o3, 3u, sg, sl, q0, head); }
    if (HD > 64u) { c_store_o(o4, 4u, sg, sl, q0, head); }
    if (HD > 80u) { c_store_o(o5, 5u, sg, sl, q0, head); }
    if (HD > 96u) { c_store_o(o6, 6u, sg, sl, q0, head); }
    if (HD > 112u) { c_store_o(o7, 7u, sg, sl, q0, head); }
}
