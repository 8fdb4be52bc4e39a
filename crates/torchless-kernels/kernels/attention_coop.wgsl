enable f16;
enable wgpu_cooperative_matrix;

// flash_coop: the prefill attention of attention.wgsl's `flash` (same op, parameters and bindings) on
// 16×16×16 f16 cooperative matrices with f32 accumulators, for adapters with 32-lane subgroups and
// head_dim a multiple of 16, at most 128. Composed after attention.wgsl (FlashParams, bindings, MASKED,
// softcap4; attention_kv.wgsl: max4) and before one of the two synchronisation parts (below).
//
// Workgroup (query block of 128 rows, head): 8 subgroups, each owning 16 query rows, so each staged K/V
// tile serves 128 rows. Q is scaled, rounded to f16 and kept in registers as head_dim/16 fragments. One
// pass over the keys in tiles of 32: S = Q·Kᵀ, P = exp(S − m_ref) in f16, O += P·V in cooperative
// accumulators and l += Σ P in f32, O / l at the end. Cooperative accumulators cannot be scaled row by
// row, so an online softmax's rescale on every new max would cost a trip through workgroup memory each
// tile; instead a row's reference max m_ref moves only when a tile's scores pass it by more than RESCALE
// (P stays below e^RESCALE), and then O and l are rescaled through workgroup memory. After the first
// tiles a row's max rarely grows that much, so the rescale is rare, and the result is exact either way.
// K and V arrive in f16 (the host rounds other dtypes once, as f16_chunk rounds); the next tile waits in
// registers while the current one is multiplied. S goes through workgroup memory so that each lane can
// apply the soft cap and masks to its row: lane l owns row l / 2, keys (l % 2)·16 + 0..15 of the tile.
//
// H100, 4096 tokens, 32/8 heads × 128, causal (`benchmarks/results/2026-12-07d-h100/next51/`): 89.9
// TFLOP/s; 68.6 with 64 rows (4 subgroups) a workgroup; 31.4 for the two-pass kernel this replaced (a
// first pass for each row's max and sum: a third more products, a second staging of K, no prefetch).
// Scores and probabilities held as vectors, and the masks skipped on tiles that every row of the block
// sees whole: 108.1 against 89.8 (`2026-12-07e-h100/next53/`).
//
// A subgroup's score, probability and rescale rows are its own: their round trips through workgroup
// memory wait on c_sync_own, a subgroup barrier on NVIDIA and a workgroup barrier elsewhere (composed
// after this file: attention_coop_sync_subgroup.wgsl, attention_coop_sync_workgroup.wgsl, which also
// decide whether to rescale, `c_rescale_needed`); only the shared K/V tile always needs the whole
// workgroup. With subgroup barriers: 117.7 TFLOP/s against 108.3 (`2026-12-07f-h100/next59/`).

const CQ: u32 = 128u;
// Threads a workgroup: 8 subgroups of 32.
const FT: u32 = 256u;
const CK: u32 = 32u;
// Staging row stride in halves (head_dim at most 128, padded by 8); score and probability strides.
const CSTR: u32 = 136u;
const SSTR: u32 = 36u;
const PSTR: u32 = 40u;
// How far (in natural-log units) a row's scores may pass its reference max before it moves: P stays below
// e^8 ≈ 2981, well inside f16.
const RESCALE: f32 = 8.0;
// K tile at 0, V tile at CK·CSTR; at the start the Q block (CQ·CSTR halves) goes through the same array.
const CV: u32 = 4352u;
// Held as vec4<f16>s (as coop16.wgsl stages): a chunk is two 8-byte stores; fragment loads count offsets
// and strides in these vectors.
var<workgroup> c_kv: array<vec4<f16>, 2176>;
// Per subgroup: its 16 rows of scores (f32) and probabilities (f16); the scores also carry the epilogue.
// Held as vectors (4 f32, 4 f16): a lane reads and writes its run of a row in whole vectors; offsets
// and strides below count elements (multiples of 4) and are divided by 4 at each access.
var<workgroup> c_s: array<vec4<f32>, 1152>;
var<workgroup> c_p: array<vec4<f16>, 1280>;

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

// A tile's K and V chunks in registers: slot s holds chunk li + 128·s of each (CK rows of HD/8 chunks,
// at most 4 a thread); named fields, as an indexed array would go to local memory.
struct KvTile {
    k0: vec4<u32>,
    k1: vec4<u32>,
    k2: vec4<u32>,
    k3: vec4<u32>,
    v0: vec4<u32>,
    v1: vec4<u32>,
    v2: vec4<u32>,
    v3: vec4<u32>,
}

// Key row and element of chunk c of a tile.
fn c_chunk(c: u32) -> vec2<u32> {
    let per_row = HD / 8u;
    let j = c / per_row;
    return vec2<u32>(j, (c - j * per_row) * 8u);
}

fn c_fetch_tile(kt0: u32, kvh: u32, li: u32) -> KvTile {
    let n = CK * (HD / 8u);
    var t: KvTile;
    for (var s = 0u; s < 4u; s++) {
        let c = li + FT * s;
        if (c >= n) {
            break;
        }
        let je = c_chunk(c);
        let k = c_fetch8(false, kt0 + je.x, kvh, je.y);
        let v = c_fetch8(true, kt0 + je.x, kvh, je.y);
        switch s {
            case 0u: { t.k0 = k; t.v0 = v; }
            case 1u: { t.k1 = k; t.v1 = v; }
            case 2u: { t.k2 = k; t.v2 = v; }
            default: { t.k3 = k; t.v3 = v; }
        }
    }
    return t;
}

fn c_put_chunk(c: u32, k: vec4<u32>, v: vec4<u32>) {
    if (c < CK * (HD / 8u)) {
        let je = c_chunk(c);
        c_put8(je.x * CSTR + je.y, k);
        c_put8(CV + je.x * CSTR + je.y, v);
    }
}

// The tile fetched by c_fetch_tile into c_kv: K at 0, V at CV.
fn c_put_tile(t: KvTile, li: u32) {
    c_put_chunk(li, t.k0, t.v0);
    c_put_chunk(li + FT, t.k1, t.v1);
    c_put_chunk(li + 2u * FT, t.k2, t.v2);
    c_put_chunk(li + 3u * FT, t.k3, t.v3);
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

// The fragments of staged Q rows 16·j.. (Q's block goes through c_kv 64 rows at a time).
fn c_qfrags(j: u32) -> QFrags {
    var q: QFrags;
    q.f0 = c_qfrag(j, 0u);
    if (HD > 16u) { q.f1 = c_qfrag(j, 1u); }
    if (HD > 32u) { q.f2 = c_qfrag(j, 2u); }
    if (HD > 48u) { q.f3 = c_qfrag(j, 3u); }
    if (HD > 64u) { q.f4 = c_qfrag(j, 4u); }
    if (HD > 80u) { q.f5 = c_qfrag(j, 5u); }
    if (HD > 96u) { q.f6 = c_qfrag(j, 6u); }
    if (HD > 112u) { q.f7 = c_qfrag(j, 7u); }
    return q;
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
    coopStoreT(s0, &c_s[sg * 4u * SSTR], SSTR / 4u);
    coopStoreT(s1, &c_s[sg * 4u * SSTR + 4u], SSTR / 4u);
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
    return c_s[at / 4u];
}

// `visible`: every key of the tile is visible to every row of the block (a uniform test of the
// tile), so only the soft cap applies.
fn c_lane_scores(sg: u32, sl: u32, kt0: u32, pos: u32, row_ok: bool, visible: bool) -> Scores {
    let at = sg * 16u * SSTR + (sl >> 1u) * SSTR + (sl & 1u) * 16u;
    let k0 = kt0 + (sl & 1u) * 16u;
    if (visible) {
        let cap = fp.softcap;
        return Scores(softcap4(c_s4(at), cap), softcap4(c_s4(at + 4u), cap), softcap4(c_s4(at + 8u), cap),
                      softcap4(c_s4(at + 12u), cap));
    }
    return Scores(
        c_mask4(c_s4(at), k0, pos, row_ok),
        c_mask4(c_s4(at + 4u), k0 + 4u, pos, row_ok),
        c_mask4(c_s4(at + 8u), k0 + 8u, pos, row_ok),
        c_mask4(c_s4(at + 12u), k0 + 12u, pos, row_ok),
    );
}

// Whether every key of the tile at kt0 is visible to every row of the block at q0: inside the cache, at
// or before the first row's position (causal), and after the last row's window start. Rows past q_len
// then see keys too; their Q is zeros and they are never stored.
fn c_tile_visible(kt0: u32, q0: u32) -> bool {
    var ok = kt0 + CK <= fp.kv_len;
    if (fp.causal != 0u) {
        ok = ok && kt0 + CK - 1u <= fp.q_offset + q0;
    }
    if (fp.window > 0u) {
        ok = ok && kt0 + fp.window > fp.q_offset + q0 + CQ - 1u;
    }
    return ok;
}

// Masked keys weigh 0 (attention_kv.wgsl).
fn c_exp4(s: vec4<f32>, m: f32) -> vec4<f32> {
    return exp(s - vec4<f32>(m));
}

fn c_sum4(v: vec4<f32>) -> f32 {
    return v.x + v.y + v.z + v.w;
}

fn c_put_p4(at: u32, p: vec4<f32>) {
    c_p[at / 4u] = vec4<f16>(p);
}

// Output fragment o scaled row by row (lane l's `alpha` scales row l / 2), through subgroup sg's c_s rows.
fn c_rescale(o: coop_mat16x16<f32, C>, alpha: f32, sg: u32, sl: u32) -> coop_mat16x16<f32, C> {
    coopStoreT(o, &c_s[sg * 4u * SSTR], SSTR / 4u);
    c_sync_own();
    let at = (sg * 16u * SSTR + (sl >> 1u) * SSTR + (sl & 1u) * 8u) / 4u;
    c_s[at] *= alpha;
    c_s[at + 1u] *= alpha;
    c_sync_own();
    let scaled = coopLoadT<coop_mat16x16<f32, C>>(&c_s[sg * 4u * SSTR], SSTR / 4u);
    c_sync_own();
    return scaled;
}

// Output fragment f (head-dim columns 16f..) of subgroup sg's rows, each row times its 1 / l (lane l's
// `inv` is row l / 2's), through its c_s rows, to out_f.
fn c_store_o(o: coop_mat16x16<f32, C>, f: u32, inv: f32, sg: u32, sl: u32, q0: u32, head: u32) {
    coopStoreT(o, &c_s[sg * 4u * SSTR], SSTR / 4u);
    workgroupBarrier();
    for (var h = 0u; h < 2u; h++) {
        let t = sl + 32u * h;
        let r = t >> 2u;
        let c4 = t & 3u;
        let i = q0 + sg * 16u + r;
        let row_inv = subgroupShuffle(inv, 2u * r);
        if (i < fp.q_len) {
            let v = c_s4(sg * 16u * SSTR + r * SSTR + c4 * 4u) * row_inv;
            out_f[(i * fp.n_heads + head) * (HD / 4u) + f * 4u + c4] = bitcast<vec4<u32>>(v);
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
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
    // c_kv holds 64 rows: two rounds, subgroups 0..3 keeping the first's fragments, 4..7 the second's.
    var q: QFrags;
    for (var h = 0u; h < 2u; h++) {
        for (var c = li; c < 64u * per_row; c += FT) {
            let r = c / per_row;
            let e = (c - r * per_row) * 8u;
            let i = q0 + h * 64u + r;
            var w = vec4<u32>(0u);
            if (i < fp.q_len) {
                let at = ((i * fp.n_heads + head) * HD + e) >> 2u;
                w = f16_chunk(bitcast<vec4<f32>>(q_in[at]) * fp.scale, bitcast<vec4<f32>>(q_in[at + 1u]) * fp.scale);
            }
            c_put8(r * CSTR + e, w);
        }
        workgroupBarrier();
        let qh = c_qfrags(sg % 4u);
        if (sg / 4u == h) {
            q = qh;
        }
        workgroupBarrier();
    }

    let row = q0 + sg * 16u + (sl >> 1u);
    let row_ok = row < fp.q_len;
    let pos = fp.q_offset + row;

    // One pass with a lazily moved reference max (see the top): P = exp(S − m_ref) ≤ e^RESCALE, O and
    // l accumulate against m_ref, and m_ref moves (with O and l rescaled) only when a tile's scores pass
    // it by more than RESCALE. The next tile's K and V wait in registers while this one is multiplied.
    var m_ref = FLOOR;
    var l = 0.0;
    var o0 = coop_mat16x16<f32, C>();
    var o1 = coop_mat16x16<f32, C>();
    var o2 = coop_mat16x16<f32, C>();
    var o3 = coop_mat16x16<f32, C>();
    var o4 = coop_mat16x16<f32, C>();
    var o5 = coop_mat16x16<f32, C>();
    var o6 = coop_mat16x16<f32, C>();
    var o7 = coop_mat16x16<f32, C>();
    let p_at = sg * 16u * PSTR + (sl >> 1u) * PSTR + (sl & 1u) * 16u;
    var kv = c_fetch_tile(lo, kvh, li);
    for (var kt0 = lo; kt0 < hi; kt0 += CK) {
        c_put_tile(kv, li);
        workgroupBarrier();
        if (kt0 + CK < hi) {
            kv = c_fetch_tile(kt0 + CK, kvh, li);
        }
        c_scores(q, sg);
        c_sync_own();
        let s = c_lane_scores(sg, sl, kt0, pos, row_ok, c_tile_visible(kt0, q0));
        let mb = max(max(max4(s.a), max4(s.b)), max(max4(s.c), max4(s.d)));
        let m_tile = max(mb, subgroupShuffleXor(mb, 1u));
        // A row that has weighed nothing yet holds O = 0 and l = 0: its reference moves freely.
        let seen = weighed(l + subgroupShuffleXor(l, 1u));
        if (!seen) {
            m_ref = max(m_ref, m_tile);
        }
        let need = seen && m_tile > m_ref + RESCALE;
        if (c_rescale_needed(need, sg, sl)) {
            let alpha = select(1.0, exp(m_ref - m_tile), need);
            if (need) {
                m_ref = m_tile;
            }
            l *= alpha;
            o0 = c_rescale(o0, alpha, sg, sl);
            if (HD > 16u) { o1 = c_rescale(o1, alpha, sg, sl); }
            if (HD > 32u) { o2 = c_rescale(o2, alpha, sg, sl); }
            if (HD > 48u) { o3 = c_rescale(o3, alpha, sg, sl); }
            if (HD > 64u) { o4 = c_rescale(o4, alpha, sg, sl); }
            if (HD > 80u) { o5 = c_rescale(o5, alpha, sg, sl); }
            if (HD > 96u) { o6 = c_rescale(o6, alpha, sg, sl); }
            if (HD > 112u) { o7 = c_rescale(o7, alpha, sg, sl); }
        }
        let pa = c_exp4(s.a, m_ref);
        let pb = c_exp4(s.b, m_ref);
        let pc = c_exp4(s.c, m_ref);
        let pd = c_exp4(s.d, m_ref);
        l += c_sum4(pa) + c_sum4(pb) + c_sum4(pc) + c_sum4(pd);
        c_put_p4(p_at, pa);
        c_put_p4(p_at + 4u, pb);
        c_put_p4(p_at + 8u, pc);
        c_put_p4(p_at + 12u, pd);
        c_sync_own();
        let p0 = coopLoadT<coop_mat16x16<f16, A>>(&c_p[sg * 4u * PSTR], PSTR / 4u);
        let p1 = coopLoadT<coop_mat16x16<f16, A>>(&c_p[sg * 4u * PSTR + 4u], PSTR / 4u);
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
    let l_row = l + subgroupShuffleXor(l, 1u);
    let inv = select(0.0, 1.0 / l_row, weighed(l_row));

    c_store_o(o0, 0u, inv, sg, sl, q0, head);
    if (HD > 16u) { c_store_o(o1, 1u, inv, sg, sl, q0, head); }
    if (HD > 32u) { c_store_o(o2, 2u, inv, sg, sl, q0, head); }
    if (HD > 48u) { c_store_o(o3, 3u, inv, sg, sl, q0, head); }
    if (HD > 64u) { c_store_o(o4, 4u, inv, sg, sl, q0, head); }
    if (HD > 80u) { c_store_o(o5, 5u, inv, sg, sl, q0, head); }
    if (HD > 96u) { c_store_o(o6, 6u, inv, sg, sl, q0, head); }
    if (HD > 112u) { c_store_o(o7, 7u, inv, sg, sl, q0, head); }
}
