// sdpa_decode in tiles: the whole tile's loads are in flight at once, and the online softmax is updated
// once per tile instead of once per key step. attention_subgroup.wgsl walks its keys in small steps,
// each a chain of load, dot products, shuffles, exp and accumulate, so a step's latency (not the memory)
// bounded it: ~1.3 µs per 32 keys on an H200. Here a tile of TK keys goes through three phases with two
// barriers, and every phase works on all of the tile at once:
//   1. scores: a key is read by LPK consecutive lanes of one subgroup, each holding 8 of its elements
//      ("chunk") per slot (NS slots: chunks lane and lane + LPK); a thread takes P keys of the tile (keys
//      g, g + KPP, ... of its key group g) and forms the partial dot products of all RB query rows with
//      them (rows are the components of a vec4, the query slices columns of mat4x4s). The LPK lanes'
//      partials of the P keys are summed by a reduce-scatter of xor shuffles: each round a lane keeps half
//      of its values and adds its partner's, so after log2(P) rounds each lane holds one key's sums.
//      The score (capped, masked) goes to workgroup memory, with each subgroup's (max, sum) of the tile.
//   2. the tile's (max, sum) per row, merged with the running ones; each thread turns one score into its
//      weight exp(s - max).
//   3. each thread adds weight · V for its keys' chunks into its accumulators (mat4x4 columns: elements;
//      components: rows). V was loaded with K, so its latency hides behind phases 1 and 2; the next
//      tile's K is loaded after phase 1 and its V after phase 3, so loads stay in flight.
// At the end the key groups' accumulators are summed through workgroup memory and the rows written out:
// normalised (DIRECT, one split) or as the partials of attention.wgsl's sdpa_decode_reduce.
//
// Needs subgroups of at least LPK lanes (lanes of a key group must be consecutive invocations of one
// subgroup), head_dim a multiple of 8 with head_dim <= 16 · LPK, and at most 4 query rows a workgroup.
// Named registers instead of private arrays: naga bounds every loop with a counter, so drivers would not
// unroll loops over an indexed array and it would live in slow local memory.

override DTYPE: u32 = 0u;
// Head dimension: a multiple of 8, 8 <= HD <= 16 · LPK.
override HD: u32 = 128u;
// Lanes per key: 8, 16 or 32, at most the subgroup size.
override LPK: u32 = 16u;
// Query rows per workgroup: 1..4.
override RB: u32 = 4u;
// One split: the kernel writes the normalised output itself (binding 4 is the output), no reduce pass.
override DIRECT: bool = false;

const WG: u32 = 256u;
const MASKED: f32 = -3.0e38;
// Workgroup memory: two score buffers of up to 256 keys (TK <= 256), reused for the final sums.
const SBUF: u32 = 256u;

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
}

@group(0) @binding(0) var<uniform> p: DecodeParams;
@group(0) @binding(1) var<storage, read> q_in: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> kc: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> vc: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> part: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> kv_len_buf: array<u32>;

var<workgroup> w_s: array<vec4<f32>, 512>;    // [2][SBUF] scores, then weights; then the final sums
var<workgroup> w_max: array<vec4<f32>, 64>;   // per subgroup: the tile's max per row
var<workgroup> w_sum: array<vec4<f32>, 64>;   // per subgroup: the tile's sum of exp(s - max) per row
var<workgroup> w_len: u32;

fn visible(s: f32) -> bool {
    return s > -1.0e38;
}

fn visible4(s: vec4<f32>) -> vec4<bool> {
    return s > vec4<f32>(-1.0e38);
}

// Slots (8-element chunks) per lane: 1 or 2.
fn ns() -> u32 {
    return (HD / 8u + LPK - 1u) / LPK;
}

// Items (one slot of one key: 8 elements, 16 bytes of 16-bit data or 32 of f32) a thread loads per
// tile, from K and from V each.
fn items() -> u32 {
    return select(8u, 4u, DTYPE == DT_F32);
}

// Keys a thread takes per tile (P), key groups (KPP), keys per tile (TK).
fn keys_per_thread() -> u32 {
    return items() / ns();
}

fn key_groups() -> u32 {
    return WG / LPK;
}

fn tile_keys() -> u32 {
    return key_groups() * keys_per_thread();
}

// One item as loaded: 16-bit data in `lo` (8 values); f32 in `lo` (4) and `hi` (4).
struct Item {
    lo: vec4<u32>,
    hi: vec4<u32>,
}

// Slot `s` of key `key` of KV head `kvh` from K (is_v false) or V; zeros past the row.
fn load_item(is_v: bool, key: u32, kvh: u32, lane: u32, s: u32) -> Item {
    var it: Item;
    let ch = lane + s * LPK;
    if (ch >= HD / 8u) {
        return it;
    }
    let e = (key * p.n_kv_heads + kvh) * HD + ch * 8u;
    if (DTYPE == DT_F32) {
        let i = e >> 2u;
        if (is_v) {
            it.lo = vc[i];
            it.hi = vc[i + 1u];
        } else {
            it.lo = kc[i];
            it.hi = kc[i + 1u];
        }
    } else {
        let i = e >> 3u;
        // Not select(): it would load both.
        if (is_v) {
            it.lo = vc[i];
        } else {
            it.lo = kc[i];
        }
    }
    return it;
}

// The 8 elements of an item as two vec4 (elements 0..3, 4..7).
fn item_lo(it: Item) -> vec4<f32> {
    if (DTYPE == DT_F32) {
        return bitcast<vec4<f32>>(it.lo);
    }
    return vec4<f32>(unpack_pair(DTYPE, it.lo.x), unpack_pair(DTYPE, it.lo.y));
}

fn item_hi(it: Item) -> vec4<f32> {
    if (DTYPE == DT_F32) {
        return bitcast<vec4<f32>>(it.hi);
    }
    return vec4<f32>(unpack_pair(DTYPE, it.lo.z), unpack_pair(DTYPE, it.lo.w));
}

// The item number j of a thread's tile (key j / NS of its P keys, slot j % NS), clamped to `last`
// past the split's end (its score is masked).
fn item_key(kb: u32, j: u32, grp: u32, end: u32, last: u32) -> u32 {
    let key = kb + (j / ns()) * key_groups() + grp;
    return select(last, key, key < end);
}

// The thread's K (or V) items of the tile starting at kb.
struct Items {
    i0: Item,
    i1: Item,
    i2: Item,
    i3: Item,
    i4: Item,
    i5: Item,
    i6: Item,
    i7: Item,
}

fn load_items(is_v: bool, kb: u32, grp: u32, end: u32, last: u32, kvh: u32, lane: u32) -> Items {
    let n = ns();
    var r: Items;
    r.i0 = load_item(is_v, item_key(kb, 0u, grp, end, last), kvh, lane, 0u);
    r.i1 = load_item(is_v, item_key(kb, 1u, grp, end, last), kvh, lane, 1u % n);
    r.i2 = load_item(is_v, item_key(kb, 2u, grp, end, last), kvh, lane, 0u);
    r.i3 = load_item(is_v, item_key(kb, 3u, grp, end, last), kvh, lane, 3u % n);
    if (items() > 4u) {
        r.i4 = load_item(is_v, item_key(kb, 4u, grp, end, last), kvh, lane, 0u);
        r.i5 = load_item(is_v, item_key(kb, 5u, grp, end, last), kvh, lane, 5u % n);
        r.i6 = load_item(is_v, item_key(kb, 6u, grp, end, last), kvh, lane, 0u);
        r.i7 = load_item(is_v, item_key(kb, 7u, grp, end, last), kvh, lane, 7u % n);
    }
    return r;
}

// A lane's query slices: per slot, elements 0..3 and 4..7 as mat4x4 columns (components: rows).
struct Query {
    lo0: mat4x4<f32>,
    hi0: mat4x4<f32>,
    lo1: mat4x4<f32>,
    hi1: mat4x4<f32>,
}

// Elements 8·ch .. 8·ch + 7 of query row r of the block (zeros past the rows or the head).
fn query_chunk(r: u32, row0: u32, kvh: u32, ch: u32) -> mat2x4<f32> {
    let rr = row0 + r;
    if (r >= RB || rr >= p.rows || ch >= HD / 8u) {
        return mat2x4<f32>();
    }
    let t = rr / p.group;
    let head = kvh * p.group + (rr - t * p.group);
    let i = ((t * p.n_heads + head) * HD + ch * 8u) >> 2u;
    return mat2x4<f32>(bitcast<vec4<f32>>(q_in[i]) * p.scale, bitcast<vec4<f32>>(q_in[i + 1u]) * p.scale);
}

fn load_query(row0: u32, kvh: u32, lane: u32) -> Query {
    var q: Query;
    for (var s = 0u; s < ns(); s++) {
        let ch = lane + s * LPK;
        let a = query_chunk(0u, row0, kvh, ch);
        let b = query_chunk(1u, row0, kvh, ch);
        let c = query_chunk(2u, row0, kvh, ch);
        let d = query_chunk(3u, row0, kvh, ch);
        let lo = transpose(mat4x4<f32>(a[0], b[0], c[0], d[0]));
        let hi = transpose(mat4x4<f32>(a[1], b[1], c[1], d[1]));
        if (s == 0u) {
            q.lo0 = lo;
            q.hi0 = hi;
        } else {
            q.lo1 = lo;
            q.hi1 = hi;
        }
    }
    return q;
}

// The partial scores (one per row) of an item: its 8 elements against the query slices of slot s.
fn item_dot(q: Query, it: Item, s: u32) -> vec4<f32> {
    if (s == 0u) {
        return q.lo0 * item_lo(it) + q.hi0 * item_hi(it);
    }
    return q.lo1 * item_lo(it) + q.hi1 * item_hi(it);
}

// Keeps half of (a, b) (b where the lane's `mask` bit is set) and adds the partner lane's other half.
fn fold(a: vec4<f32>, b: vec4<f32>, mask: u32, lane: u32) -> vec4<f32> {
    let up = (lane & mask) != 0u;
    return select(a, b, up) + subgroupShuffleXor(select(b, a, up), mask);
}

// Phase 1: the thread's partial scores of its P keys, reduced across the key group's LPK lanes: the full
// scores (per row) of the key this lane ends up holding, and which of its P keys that is.
struct Held {
    s: vec4<f32>,
    key: u32,
}

fn scores(q: Query, k: Items, lane: u32) -> Held {
    let n = ns();
    let pk = keys_per_thread();
    // Per key: the sum over its slots.
    var s0 = item_dot(q, k.i0, 0u);
    var s1 = item_dot(q, k.i1, 1u % n);
    var s2 = item_dot(q, k.i2, 0u);
    var s3 = item_dot(q, k.i3, 3u % n);
    var s4 = vec4<f32>(0.0);
    var s5 = vec4<f32>(0.0);
    var s6 = vec4<f32>(0.0);
    var s7 = vec4<f32>(0.0);
    if (items() > 4u) {
        s4 = item_dot(q, k.i4, 0u);
        s5 = item_dot(q, k.i5, 5u % n);
        s6 = item_dot(q, k.i6, 0u);
        s7 = item_dot(q, k.i7, 7u % n);
    }
    if (n == 2u) {
        // Items (2j, 2j + 1) are the two slots of key j.
        s0 += s1;
        s1 = s2 + s3;
        s2 = s4 + s5;
        s3 = s6 + s7;
    }
    // Reduce-scatter over masks LPK/2, LPK/4, ...: the lane's bits pick the key it keeps.
    let m1 = LPK / 2u;
    let m2 = LPK / 4u;
    let m3 = LPK / 8u;
    var h: Held;
    if (pk == 8u) {
        let a0 = fold(s0, s4, m1, lane);
        let a1 = fold(s1, s5, m1, lane);
        let a2 = fold(s2, s6, m1, lane);
        let a3 = fold(s3, s7, m1, lane);
        let b0 = fold(a0, a2, m2, lane);
        let b1 = fold(a1, a3, m2, lane);
        h.s = fold(b0, b1, m3, lane);
        h.key = select(0u, 4u, (lane & m1) != 0u) + select(0u, 2u, (lane & m2) != 0u) + select(0u, 1u, (lane & m3) != 0u);
    } else if (pk == 4u) {
        let a0 = fold(s0, s2, m1, lane);
        let a1 = fold(s1, s3, m1, lane);
        h.s = fold(a0, a1, m2, lane);
        h.key = select(0u, 2u, (lane & m1) != 0u) + select(0u, 1u, (lane & m2) != 0u);
    } else {
        h.s = fold(s0, s1, m1, lane);
        h.key = select(0u, 1u, (lane & m1) != 0u);
    }
    // The lanes below the folded bits hold copies of partial sums: finish with a butterfly.
    for (var m = LPK / (2u * pk); m > 0u; m >>= 1u) {
        h.s += subgroupShuffleXor(h.s, m);
    }
    return h;
}

fn softcap4(s: vec4<f32>, cap: f32) -> vec4<f32> {
    if (cap > 0.0) {
        return cap * vec4<f32>(safe_tanh(s.x / cap), safe_tanh(s.y / cap), safe_tanh(s.z / cap), safe_tanh(s.w / cap));
    }
    return s;
}

// A lane's accumulators: per slot, elements 0..3 and 4..7 (columns) of every row (components).
struct Acc {
    lo0: mat4x4<f32>,
    hi0: mat4x4<f32>,
    lo1: mat4x4<f32>,
    hi1: mat4x4<f32>,
}

fn axpy(m: mat4x4<f32>, w: vec4<f32>, v: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(m[0] + w * v.x, m[1] + w * v.y, m[2] + w * v.z, m[3] + w * v.w);
}

// Adds weight w (per row) times the item's V elements into slot s.
fn acc_item(a: Acc, w: vec4<f32>, it: Item, s: u32) -> Acc {
    var r = a;
    if (s == 0u) {
        r.lo0 = axpy(a.lo0, w, item_lo(it));
        r.hi0 = axpy(a.hi0, w, item_hi(it));
    } else {
        r.lo1 = axpy(a.lo1, w, item_lo(it));
        r.hi1 = axpy(a.hi1, w, item_hi(it));
    }
    return r;
}

fn scale_acc(a: Acc, f: vec4<f32>) -> Acc {
    var r: Acc;
    r.lo0 = mat4x4<f32>(a.lo0[0] * f, a.lo0[1] * f, a.lo0[2] * f, a.lo0[3] * f);
    r.hi0 = mat4x4<f32>(a.hi0[0] * f, a.hi0[1] * f, a.hi0[2] * f, a.hi0[3] * f);
    if (ns() > 1u) {
        r.lo1 = mat4x4<f32>(a.lo1[0] * f, a.lo1[1] * f, a.lo1[2] * f, a.lo1[3] * f);
        r.hi1 = mat4x4<f32>(a.hi1[0] * f, a.hi1[1] * f, a.hi1[2] * f, a.hi1[3] * f);
    }
    return r;
}

// Phase 3: the weights of the thread's keys from buffer `buf`, times their V items.
fn accumulate(a: Acc, v: Items, buf: u32, grp: u32) -> Acc {
    let n = ns();
    let kg = key_groups();
    let base = buf * SBUF + grp;
    var r = a;
    r = acc_item(r, w_s[base + (0u / n) * kg], v.i0, 0u);
    r = acc_item(r, w_s[base + (1u / n) * kg], v.i1, 1u % n);
    r = acc_item(r, w_s[base + (2u / n) * kg], v.i2, 0u);
    r = acc_item(r, w_s[base + (3u / n) * kg], v.i3, 3u % n);
    if (items() > 4u) {
        r = acc_item(r, w_s[base + (4u / n) * kg], v.i4, 0u);
        r = acc_item(r, w_s[base + (5u / n) * kg], v.i5, 5u % n);
        r = acc_item(r, w_s[base + (6u / n) * kg], v.i6, 0u);
        r = acc_item(r, w_s[base + (7u / n) * kg], v.i7, 7u % n);
    }
    return r;
}

// Row r's elements of a slot's accumulator columns.
fn row_of(m: mat4x4<f32>, r: u32) -> vec4<f32> {
    return vec4<f32>(m[0][r], m[1][r], m[2][r], m[3][r]);
}

fn decode_body(kv_len_in: u32, wid: vec3<u32>, li: u32, sl: u32, sg_size: u32) {
    let kv_len = min(kv_len_in, p.capacity);
    let row0 = wid.x * RB;
    let split = wid.y;
    let kvh = wid.z;
    let lane = li % LPK;
    let grp = li / LPK;
    let first_pos = i32(kv_len) - i32(p.tokens);
    let nrows = min(RB, p.rows - row0);

    // The keys any row may see, cut into n_splits equal runs.
    var lo = 0u;
    if (p.window > 0u) {
        lo = u32(max(0i, first_pos - i32(p.window) + 1i));
    }
    let span = select(0u, kv_len - lo, kv_len > lo);
    let per = (span + p.n_splits - 1u) / p.n_splits;
    let k0 = min(lo + split * per, kv_len);
    let k1 = min(k0 + per, kv_len);
    let last = max(k1, 1u) - 1u;

    // Each row's position, for the masks (rows past the block are never visible).
    var pos = vec4<i32>(0);
    var row_ok = vec4<bool>(false);
    for (var r = 0u; r < nrows; r++) {
        pos[r] = first_pos + i32((row0 + r) / p.group);
        row_ok[r] = true;
    }

    let q = load_query(row0, kvh, lane);
    var acc: Acc;
    var m_run = vec4<f32>(MASKED);
    var l_run = vec4<f32>(0.0);
    let tk = tile_keys();
    let pk = keys_per_thread();
    let n_sg = WG / sg_size;
    // The lanes that hold a key's full scores after the reduction (the others hold copies).
    let writer = (lane & (LPK / pk - 1u)) == 0u;

    var kr = load_items(false, k0, grp, k1, last, kvh, lane);
    var vr = load_items(true, k0, grp, k1, last, kvh, lane);
    var buf = 0u;
    for (var kb = k0; kb < k1; kb += tk) {
        // Phase 1: scores of the tile, and each subgroup's (max, sum) of its lanes' scores.
        let h = scores(q, kr, lane);
        let j = h.key * key_groups() + grp;
        let key = kb + j;
        var ok = row_ok & vec4<bool>(key < k1);
        if (p.causal != 0u) {
            ok = ok & (vec4<i32>(i32(key)) <= pos);
        }
        if (p.window > 0u) {
            ok = ok & (vec4<i32>(i32(key)) > pos - vec4<i32>(i32(p.window)));
        }
        let s = select(vec4<f32>(MASKED), softcap4(h.s, p.softcap), ok);
        if (writer) {
            w_s[buf * SBUF + j] = s;
        }
        let mine = select(vec4<f32>(MASKED), s, vec4<bool>(writer));
        let sg_max = subgroupMax(mine);
        let sg_sum = subgroupAdd(select(vec4<f32>(0.0), exp(mine - sg_max), visible4(mine)));
        if (sl == 0u) {
            w_max[li / sg_size] = sg_max;
            w_sum[li / sg_size] = sg_sum;
        }
        let kn = kb + tk;
        if (kn < k1) {
            kr = load_items(false, kn, grp, k1, last, kvh, lane);
        }
        workgroupBarrier();

        // Phase 2: the tile's max and sum per row, merged into the running ones; scores become weights.
        var t_max = vec4<f32>(MASKED);
        for (var i = 0u; i < n_sg; i++) {
            t_max = max(t_max, w_max[i]);
        }
        var t_sum = vec4<f32>(0.0);
        for (var i = 0u; i < n_sg; i++) {
            let mi = w_max[i];
            t_sum += select(vec4<f32>(0.0), w_sum[i] * exp(mi - t_max), visible4(mi));
        }
        let m_new = max(m_run, t_max);
        let alpha = select(vec4<f32>(0.0), exp(m_run - m_new), visible4(m_run));
        let beta = select(vec4<f32>(0.0), exp(t_max - m_new), visible4(t_max));
        l_run = l_run * alpha + t_sum * beta;
        m_run = m_new;
        if (li < tk) {
            let si = w_s[buf * SBUF + li];
            w_s[buf * SBUF + li] = select(vec4<f32>(0.0), exp(si - m_new), visible4(si));
        }
        workgroupBarrier();

        // Phase 3: weights times V.
        acc = accumulate(scale_acc(acc, alpha), vr, buf, grp);
        if (kn < k1) {
            vr = load_items(true, kn, grp, k1, last, kvh, lane);
        }
        // The next tile writes the other score buffer: no barrier needed before it.
        buf ^= 1u;
    }

    // The key groups' accumulators summed, one (row, slot) at a time through w_s; thread t < 2 · LPK
    // sums one vec4 of it over the groups.
    workgroupBarrier();
    let hd4 = HD / 4u;
    for (var r = 0u; r < nrows; r++) {
        let rr = row0 + r;
        let t = rr / p.group;
        let head = kvh * p.group + (rr - t * p.group);
        let out_row = t * p.n_heads + head;
        let at = (out_row * p.n_splits + split) * (hd4 + 1u);
        for (var s = 0u; s < ns(); s++) {
            var a_lo = acc.lo0;
            var a_hi = acc.hi0;
            if (s == 1u) {
                a_lo = acc.lo1;
                a_hi = acc.hi1;
            }
            w_s[grp * 2u * LPK + 2u * lane] = row_of(a_lo, r);
            w_s[grp * 2u * LPK + 2u * lane + 1u] = row_of(a_hi, r);
            workgroupBarrier();
            if (li < 2u * LPK) {
                let d4 = 2u * s * LPK + li;
                var sum = vec4<f32>(0.0);
                for (var g = 0u; g < key_groups(); g++) {
                    sum += w_s[g * 2u * LPK + li];
                }
                if (d4 < hd4) {
                    if (DIRECT) {
                        let l = l_run[r];
                        part[out_row * hd4 + d4] = bitcast<vec4<u32>>(select(vec4<f32>(0.0), sum / l, l > 0.0));
                    } else {
                        part[at + 1u + d4] = bitcast<vec4<u32>>(sum);
                    }
                }
            }
            workgroupBarrier();
        }
        if (!DIRECT && li == 0u) {
            part[at] = bitcast<vec4<u32>>(vec4<f32>(m_run[r], l_run[r], 0.0, 0.0));
        }
    }
}

@compute @workgroup_size(256)
fn sdpa_decode_tile(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32,
                    @builtin(subgroup_invocation_id) sl: u32, @builtin(subgroup_size) sg_size: u32) {
    decode_body(p.kv_len, wid, li, sl, sg_size);
}

@compute @workgroup_size(256)
fn sdpa_decode_tile_dev(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32,
                        @builtin(subgroup_invocation_id) sl: u32, @builtin(subgroup_size) sg_size: u32) {
    if (li == 0u) {
        w_len = kv_len_buf[0];
    }
    decode_body(workgroupUniformLoad(&w_len), wid, li, sl, sg_size);
}
