// Gathers and selections: embedding lookup, argmax and top-k.
//
// Argmax and top-k order values by an integer key (order_key): larger values first, every NaN above
// +inf, -0 equal to +0, ties broken by the lower index. Comparing keys instead of floats keeps the GPU
// exact where drivers flush subnormals, and equal to the CPU. A row is split into chunks, one workgroup
// each (so a single 128k-vocab row still spreads over many workgroups); a merge pass combines the
// chunks' results. The sentinel (key 0, index 0xffffffff) is below every real value: no float maps to
// key 0.

// argmax/topk: the dtype of x; embedding: the dtype of the table.
override DTYPE: u32 = 0u;
// embedding: the output dtype.
override OUT_DTYPE: u32 = 0u;
// embedding: multiply by p.scale.
override SCALED: bool = false;
// topk's scan: false reads x's elements, true (topk_merge) the chunks' (key, index) pairs, two a vec4 of x.
// A constant, so that the scan's loops over a unit's elements unroll.
override PAIRS: bool = false;

struct Params {
    // argmax/topk: rows of x; embedding: number of ids.
    rows: u32,
    // argmax/topk: row length; embedding: dim.
    n: u32,
    // argmax/topk: workgroups per row and elements per workgroup.
    chunks: u32,
    chunk_len: u32,
    // topk: k; embedding: vocabulary size.
    k: u32,
    // embedding: threads to run.
    threads: u32,
    // embedding: the scale; repeat_penalty: the factor of positive logits (1 / penalty).
    scale: f32,
    // repeat_penalty: the factor of the others (the penalty).
    scale_neg: f32,
}

const WG: u32 = 256u;
// The largest k.
const KMAX: u32 = 64u;
const NONE_KEY: u32 = 0u;
const NONE_INDEX: u32 = 0xffffffffu;

// Bindings per entry point:
//   embedding_vec (table, ids, emb_out); embedding_any (table_w, ids, emb_out_w);
//   argmax_rows (x, idx_out); argmax_partial, topk_partial (x, scratch); argmax_merge (scratch_in, idx_out);
//   topk_rows (x, val_out, topk_idx); topk_merge (x = the partials, x_vals = x, val_out2, topk_idx2);
//   repeat_penalty (pen_x, pen_ids).
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> table: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> table_w: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> emb_out: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> emb_out_w: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> idx_out: array<u32>;
@group(0) @binding(2) var<storage, read_write> scratch: array<u32>;
@group(0) @binding(1) var<storage, read> scratch_in: array<u32>;
@group(0) @binding(2) var<storage, read_write> val_out: array<u32>;
@group(0) @binding(3) var<storage, read_write> topk_idx: array<u32>;
@group(0) @binding(2) var<storage, read> x_vals: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> val_out2: array<u32>;
@group(0) @binding(4) var<storage, read_write> topk_idx2: array<u32>;
@group(0) @binding(1) var<storage, read_write> pen_x: array<f32>;
@group(0) @binding(2) var<storage, read> pen_ids: array<u32>;

// The f32 bits of element h (0 or 1) of word w of dtype DTYPE.
fn elem_bits(w: u32, h: u32) -> u32 {
    if (DTYPE == DT_F32) {
        return w;
    }
    return widen_bits(DTYPE, (w >> (16u * h)) & 0xffffu);
}

// ---- embedding -----------------------------------------------------------------------------------

fn scaled_bits(b: u32) -> u32 {
    if (SCALED) {
        return bitcast<u32>(bitcast<f32>(b) * p.scale);
    }
    return b;
}

// dim % 8 == 0: a thread writes EMB_UNITS output vec4s (4 f32 or 8 16-bit values each), WG apart so that
// writes are coalesced; rows start on vec4 boundaries in every dtype. All of a thread's loads are issued
// before its first store: with one vec4 in flight a thread, embedding ran at 88-90 % of copy.
const EMB_UNITS: u32 = 4u;

// What output vec4 t needs from memory: the table words (b only for f32 tables into 16-bit outputs),
// whether its id was in range, and where its first value sits in a 16-bit table's vec4 (0 or 4: an f32
// output takes half of one).
struct EmbLoad {
    a: vec4<u32>,
    b: vec4<u32>,
    found: bool,
    off: u32,
}

fn emb_load(t: u32) -> EmbLoad {
    var l: EmbLoad;
    if (t >= p.threads) {
        return l;
    }
    let per_vec = select(8u, 4u, OUT_DTYPE == DT_F32);
    let per_row = p.n / per_vec;
    let id = ids[t / per_row];
    // Out of range: zeros, and no read.
    l.found = id < p.k;
    if (!l.found) {
        return l;
    }
    // The table element of the first value.
    let s = id * p.n + (t % per_row) * per_vec;
    l.off = s % 8u;
    if (DTYPE == DT_F32) {
        l.a = table[s / 4u];
        if (OUT_DTYPE != DT_F32) {
            l.b = table[s / 4u + 1u];
        }
    } else {
        l.a = table[s / 8u];
    }
    return l;
}

fn emb_store(t: u32, l: EmbLoad) {
    if (t >= p.threads) {
        return;
    }
    if (!l.found) {
        emb_out[t] = vec4<u32>(0u);
        return;
    }
    if (DTYPE == OUT_DTYPE && !SCALED) {
        emb_out[t] = l.a;
        return;
    }
    let out_f32 = OUT_DTYPE == DT_F32;
    let per_vec = select(8u, 4u, out_f32);
    // The per_vec values as f32 bits.
    var v: array<u32, 8>;
    if (DTYPE == DT_F32) {
        v = array<u32, 8>(l.a.x, l.a.y, l.a.z, l.a.w, l.b.x, l.b.y, l.b.z, l.b.w);
    } else {
        for (var j = 0u; j < per_vec; j++) {
            v[j] = elem_bits(l.a[(l.off + j) / 2u], (l.off + j) % 2u);
        }
    }
    for (var j = 0u; j < per_vec; j++) {
        v[j] = scaled_bits(v[j]);
    }
    if (out_f32) {
        emb_out[t] = vec4<u32>(v[0], v[1], v[2], v[3]);
    } else {
        var q: vec4<u32>;
        for (var j = 0u; j < 4u; j++) {
            q[j] = narrow_bits(OUT_DTYPE, v[2u * j]) | (narrow_bits(OUT_DTYPE, v[2u * j + 1u]) << 16u);
        }
        emb_out[t] = q;
    }
}

@compute @workgroup_size(256)
fn embedding_vec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let t = linear_group_id(wid, nwg) * WG * EMB_UNITS + li;
    let l0 = emb_load(t);
    let l1 = emb_load(t + WG);
    let l2 = emb_load(t + 2u * WG);
    let l3 = emb_load(t + 3u * WG);
    emb_store(t, l0);
    emb_store(t + WG, l1);
    emb_store(t + 2u * WG, l2);
    emb_store(t + 3u * WG, l3);
}

// The raw bits of table element s (a 16-bit value in the low half for 16-bit dtypes).
fn table_raw(s: u32) -> u32 {
    if (DTYPE == DT_F32) {
        return table_w[s];
    }
    return (table_w[s >> 1u] >> (16u * (s & 1u))) & 0xffffu;
}

// Any dim: one thread per output word.
@compute @workgroup_size(256)
fn embedding_any(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let w = linear_group_id(wid, nwg) * WG + li;
    if (w >= p.threads) {
        return;
    }
    let pw = per_word(OUT_DTYPE);
    let total = p.rows * p.n;
    var word = 0u;
    for (var h = 0u; h < pw; h++) {
        let e = w * pw + h;
        if (e < total) {
            let r = e / p.n;
            let id = ids[r];
            var out_bits = 0u;
            if (id < p.k) {
                let raw = table_raw(id * p.n + e % p.n);
                if (DTYPE == OUT_DTYPE && !SCALED) {
                    out_bits = raw;
                } else {
                    var b = raw;
                    if (DTYPE != DT_F32) {
                        b = widen_bits(DTYPE, raw);
                    }
                    b = scaled_bits(b);
                    out_bits = b;
                    if (OUT_DTYPE != DT_F32) {
                        out_bits = narrow_bits(OUT_DTYPE, b);
                    }
                }
            }
            word |= out_bits << (16u * h);
        }
    }
    emb_out_w[w] = word;
}

// ---- ordering ------------------------------------------------------------------------------------

// A key whose unsigned order is the order of the values: NaN above +inf, -0 equal to +0.
fn order_key(b: u32) -> u32 {
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return 0xffffffffu;
    }
    if (b == 0x80000000u) {
        return 0x80000000u;
    }
    return select(b ^ 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// order_key of four values at once.
fn order_key4(b: vec4<u32>) -> vec4<u32> {
    let k = select(b ^ vec4<u32>(0x80000000u), ~b, (b & vec4<u32>(0x80000000u)) != vec4<u32>(0u));
    let zero_or_k = select(k, vec4<u32>(0x80000000u), b == vec4<u32>(0x80000000u));
    return select(zero_or_k, vec4<u32>(0xffffffffu), (b & vec4<u32>(0x7fffffffu)) > vec4<u32>(0x7f800000u));
}

// Whether (ka, ia) comes before (kb, ib): a larger key, or an equal key at a lower index.
fn beats(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia < ib);
}

// Elements per vec4 of x.
fn elems_per_vec4() -> u32 {
    return select(8u, 4u, DTYPE == DT_F32);
}

// The f32 bits of element e of x, given the vec4 of x that holds it.
fn bits_in(q: vec4<u32>, e: u32) -> u32 {
    let r = e % elems_per_vec4();
    let pw = per_word(DTYPE);
    return elem_bits(q[r / pw], r % pw);
}

// The elements [start, end) of x that workgroup `g` of a split scans (row base, one chunk).
struct Span {
    base: u32,
    start: u32,
    end: u32,
}

fn span_of(g: u32) -> Span {
    let row = g / p.chunks;
    let c = g % p.chunks;
    let base = row * p.n;
    let start = base + c * p.chunk_len;
    return Span(base, start, min(start + p.chunk_len, base + p.n));
}

// ---- argmax --------------------------------------------------------------------------------------

var<workgroup> red_k: array<u32, WG>;
var<workgroup> red_i: array<u32, WG>;

// The best of (bk, bi) and the elements of vec4 v of x (the vec4 at x index v, `q`) within the span.
fn best_of_vec4(q: vec4<u32>, v: u32, s: Span, best: vec2<u32>) -> vec2<u32> {
    var bk = best.x;
    var bi = best.y;
    let ev = elems_per_vec4();
    let pw = per_word(DTYPE);
    let e0 = v * ev;
    for (var j = 0u; j < 4u; j++) {
        for (var h = 0u; h < pw; h++) {
            let e = e0 + j * pw + h;
            let key = order_key(elem_bits(q[j], h));
            // Indices rise within a thread: a strictly larger key is the first maximum.
            if (e >= s.start && e < s.end && key > bk) {
                bk = key;
                bi = e - s.base;
            }
        }
    }
    return vec2<u32>(bk, bi);
}

// This thread's best (key, index − base) over the span, reading whole vec4s, four at a time: the four
// loads go out together (a vec4 past the span loads the span's last vec4 again and is skipped), so four
// loads per thread are in flight instead of one.
fn scan_best(s: Span, li: u32) -> vec2<u32> {
    var best = vec2<u32>(NONE_KEY, NONE_INDEX);
    let ev = elems_per_vec4();
    let v1 = (s.end + ev - 1u) / ev;
    for (var v = s.start / ev + li; v < v1; v += 4u * WG) {
        let q0 = x[v];
        let q1 = x[min(v + WG, v1 - 1u)];
        let q2 = x[min(v + 2u * WG, v1 - 1u)];
        let q3 = x[min(v + 3u * WG, v1 - 1u)];
        best = best_of_vec4(q0, v, s, best);
        if (v + WG < v1) {
            best = best_of_vec4(q1, v + WG, s, best);
        }
        if (v + 2u * WG < v1) {
            best = best_of_vec4(q2, v + 2u * WG, s, best);
        }
        if (v + 3u * WG < v1) {
            best = best_of_vec4(q3, v + 3u * WG, s, best);
        }
    }
    return best;
}

// The workgroup's best (key, index); every thread gets it.
fn reduce_best(k: u32, i: u32, li: u32) -> vec2<u32> {
    red_k[li] = k;
    red_i[li] = i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (li < s) {
            let ok = red_k[li + s];
            let oi = red_i[li + s];
            if (beats(ok, oi, red_k[li], red_i[li])) {
                red_k[li] = ok;
                red_i[li] = oi;
            }
        }
        workgroupBarrier();
    }
    return vec2<u32>(red_k[0], red_i[0]);
}

// One workgroup per row.
@compute @workgroup_size(256)
fn argmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let g = linear_group_id(wid, nwg);
    if (g >= p.rows) {
        return;
    }
    let mine = scan_best(span_of(g * p.chunks), li);
    let best = reduce_best(mine.x, mine.y, li);
    if (li == 0u) {
        idx_out[g] = best.y;
    }
}

// One workgroup per chunk: its best (key, index) pair into scratch.
@compute @workgroup_size(256)
fn argmax_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let g = linear_group_id(wid, nwg);
    if (g >= p.rows * p.chunks) {
        return;
    }
    let mine = scan_best(span_of(g), li);
    let best = reduce_best(mine.x, mine.y, li);
    if (li == 0u) {
        scratch[2u * g] = best.x;
        scratch[2u * g + 1u] = best.y;
    }
}

// One workgroup per row: the best of its chunks' pairs.
@compute @workgroup_size(256)
fn argmax_merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let row = linear_group_id(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    var bk = NONE_KEY;
    var bi = NONE_INDEX;
    for (var c = li; c < p.chunks; c += WG) {
        let g = row * p.chunks + c;
        let k = scratch_in[2u * g];
        let i = scratch_in[2u * g + 1u];
        if (beats(k, i, bk, bi)) {
            bk = k;
            bi = i;
        }
    }
    let best = reduce_best(bk, bi, li);
    if (li == 0u) {
        idx_out[row] = best.y;
    }
}

// ---- top-k ---------------------------------------------------------------------------------------
//
// A workgroup keeps its best k so far, sorted, in `list`, and reads its elements once, in tiles of four vec4s
// a thread. An element that beats the list's k-th entry (the threshold) is appended to a buffer of candidates;
// the buffer is merged into the list: each entry's new position is its position among its own kind plus the
// number of the other kind that beat it, counted (up to RANK_MERGE_MAX candidates) or found by binary search
// after a bitonic sort of the candidates in workgroup memory. The threshold is set by the first tile: each
// thread offers its best element, and the list of those (the k-th best of the threads' maxima, which at least
// k elements reach) is merged before the rest is offered. After that the threads scan on without a barrier for
// a round of tiles, comparing each element with the threshold in registers, and the workgroup meets only at
// the end of a round, to merge what the buffer holds. Rounds double from 1 tile to ROUND_TILES, so that the
// threshold tightens while candidates are many and the workgroup meets seldom once they are few (H100, 256 MiB
// / 1 GiB: 64.6 / 73.7 % of the copy bandwidth against 54.8 / 62.3 % with rounds of 8 tiles from the start
// that merged only a buffer over half full). A thread whose element finds the buffer full stops, its tile's
// remaining elements pending, and goes on after the merge (which raises the threshold), so no input, however
// ordered, loses an element. On random data a row of 128k values yields under a thousand candidates in all.
// Every loop is short: lavapipe ends any loop after 65535 iterations.
// Slower, measured: each thread keeping its own best 8 in registers and the workgroup meeting once, at the
// end (H100, 256 MiB: 19.8 % of copy against 81.3 %; 34.3 % with a shared floor under the threads' filters,
// results 2026-12-07 `run43/`): a thread's 8th best filters far less than the workgroup's k-th, so nearly
// every unit runs an insertion.

// Candidates the buffer holds (four per thread).
const CAP: u32 = 4u * WG;
// The round schedule: tiles of the first round after tile 0, the factor each next round grows by, and
// the most tiles a thread scans between two meetings of the workgroup. Fewer merges of fuller buffers are
// slower (H100, 256 MiB: 77.9 % of copy growing 1, 4, 16, … to 64; 60.6 % with 3, then 48; against 80.2 %,
// results 2026-12-06l `run41/`).
const ROUND_FIRST: u32 = 1u;
const ROUND_GROWTH: u32 = 2u;
const ROUND_TILES: u32 = 8u;

// (key, index) pairs: a counted merge reads one 8-byte word a candidate (H100, 256 MiB / 1 GiB: 82.7 /
// 93.0 % of copy against 81.3 / 91.3 % as two arrays; the list as pairs too gained nothing more;
// `benchmarks/results/2026-12-07c-h100/topk/`).
var<workgroup> cand: array<vec2<u32>, CAP>;
var<workgroup> list_k: array<u32, KMAX>;
var<workgroup> list_i: array<u32, KMAX>;
var<workgroup> next_k: array<u32, KMAX>;
var<workgroup> next_i: array<u32, KMAX>;
var<workgroup> n_cand: atomic<u32>;
var<workgroup> list_len: u32;
var<workgroup> round_m: u32;
var<workgroup> round_full: u32;

// This thread's tile: four units (vec4s of x, or two (key, index) pairs each in the merge pass), the
// source position of unit 0 (its vec4 index in x: of the values, or of the merge pass's pairs), and which
// elements are still to be offered (8 bits a unit).
var<private> u0_: vec4<u32>;
var<private> u1_: vec4<u32>;
var<private> u2_: vec4<u32>;
var<private> u3_: vec4<u32>;
var<private> pos_: u32;
var<private> pending: u32;
// The tile the units hold.
var<private> tile_: u32;

fn topk_init(li: u32) {
    if (li == 0u) {
        list_len = 0u;
        atomicStore(&n_cand, 0u);
    }
    workgroupBarrier();
}

// How many of the first `len` list entries beat (k, i) (the list is sorted).
fn list_rank(k: u32, i: u32, len: u32) -> u32 {
    var lo = 0u;
    var hi = len;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (beats(list_k[mid], list_i[mid], k, i)) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// How many of the first `m` (sorted) candidates beat (k, i).
fn cand_rank(k: u32, i: u32, m: u32) -> u32 {
    var lo = 0u;
    var hi = m;
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        let c = cand[mid];
        if (beats(c.x, c.y, k, i)) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// How many of the first `m` candidates, in any order, beat (k, i).
fn cand_count(k: u32, i: u32, m: u32) -> u32 {
    var r = 0u;
    for (var j = 0u; j < m; j++) {
        let c = cand[j];
        r += select(0u, 1u, beats(c.x, c.y, k, i));
    }
    return r;
}

// Puts (k, i) at place r of the merged list, if that is among the best k.
fn place_next(k: u32, i: u32, r: u32) {
    if (r < p.k) {
        next_k[r] = k;
        next_i[r] = i;
    }
}

// The most candidates merged by counted ranks rather than sorted (H100, 256 MiB / 1 GiB: 80.4–81.1 /
// 91.4–91.7 % of the copy bandwidth against 75.6–75.8 / 86.6–87.0 % sorting every buffer; 77.1 / 91.9 %
// with 256, 77.5 / 89.5 % with 64): after the first tiles a round's buffer holds a few dozen.
const RANK_MERGE_MAX: u32 = 128u;

// Merges the m candidates into the list, emptying the buffer; called by the whole workgroup with a uniform
// m in 1..=CAP. Each entry's new place is its place among its own kind plus the number of the other kind
// that beat it. The candidates' (key, index) pairs are distinct: an element is offered once.
// The two ways stay functions of their own: one function branching on m inside ran top-k slower (H100,
// 79.1–79.5 / 90.1–90.2 % of copy at 256 MiB / 1 GiB against 80.5–80.7 / 91.5 %, results 2026-12-06f).
fn merge(m: u32, li: u32) {
    if (m <= RANK_MERGE_MAX) {
        merge_counted(m, li);
    } else {
        merge_sorted(m, li);
    }
}

// merge for m <= WG candidates, one an invocation, by counting the candidates that beat each (m broadcast
// reads of workgroup memory an invocation, against a sort's log2(m)² / 2 barriers).
fn merge_counted(m: u32, li: u32) {
    let len = list_len;
    if (li < m) {
        let ck = cand[li].x;
        let ci = cand[li].y;
        place_next(ck, ci, list_rank(ck, ci, len) + cand_count(ck, ci, m));
    }
    if (li < len) {
        let ek = list_k[li];
        let ei = list_i[li];
        place_next(ek, ei, li + cand_count(ek, ei, m));
    }
    take_next(len + m, li);
}

// merge by sorting the candidates: a candidate's index is then the count of those that beat it, and an
// entry's is found by binary search.
fn merge_sorted(m: u32, li: u32) {
    let len = list_len;
    sort_candidates(m, li);
    for (var a = li; a < m; a += WG) {
        let ck = cand[a].x;
        let ci = cand[a].y;
        place_next(ck, ci, a + list_rank(ck, ci, len));
    }
    if (li < len) {
        let ek = list_k[li];
        let ei = list_i[li];
        place_next(ek, ei, li + cand_rank(ek, ei, m));
    }
    take_next(len + m, li);
}

// Makes the merged entries in next, the best k of `merged`, the list, and empties the buffer.
fn take_next(merged: u32, li: u32) {
    workgroupBarrier();
    let new_len = min(p.k, merged);
    if (li < new_len) {
        list_k[li] = next_k[li];
        list_i[li] = next_i[li];
    }
    if (li == 0u) {
        list_len = new_len;
        atomicStore(&n_cand, 0u);
    }
    workgroupBarrier();
}

// Sorts the m candidates into "beats" order (bitonic, in workgroup memory, padded to a power of two).
fn sort_candidates(m: u32, li: u32) {
    var size = 1u;
    while (size < m) {
        size <<= 1u;
    }
    for (var a = m + li; a < size; a += WG) {
        cand[a] = vec2<u32>(NONE_KEY, NONE_INDEX);
    }
    // Bitonic sort of cand[0..size) into "beats" order; thread li handles the pairs led by li and li + WG.
    for (var span = 2u; span <= size; span <<= 1u) {
        for (var j = span >> 1u; j > 0u; j >>= 1u) {
            workgroupBarrier();
            for (var a = li; a < size; a += WG) {
                let q = a ^ j;
                if (q > a) {
                    let ca = cand[a];
                    let cb = cand[q];
                    let ak = ca.x;
                    let ai = ca.y;
                    let bk = cb.x;
                    let bi = cb.y;
                    // The first half of each span is sorted best-first, the second best-last.
                    let swap = select(beats(ak, ai, bk, bi), beats(bk, bi, ak, ai), (a & span) == 0u);
                    if (swap) {
                        cand[a] = cb;
                        cand[q] = ca;
                    }
                }
            }
        }
    }
    workgroupBarrier();
}

// The list's k-th entry, which a candidate must beat (the sentinel while the list is short).
fn threshold() -> vec2<u32> {
    if (list_len >= p.k) {
        return vec2<u32>(list_k[p.k - 1u], list_i[p.k - 1u]);
    }
    return vec2<u32>(NONE_KEY, NONE_INDEX);
}

// Element e of a unit: its (key, index within the row). With PAIRS the unit holds two (key, index)
// pairs; otherwise it is vec4 `v` of x, in the row starting at element `base`.
fn unit_elem(w: vec4<u32>, v: u32, e: u32, base: u32) -> vec2<u32> {
    if (PAIRS) {
        return vec2<u32>(w[2u * e], w[2u * e + 1u]);
    }
    let pw = per_word(DTYPE);
    return vec2<u32>(order_key(elem_bits(w[e / pw], e % pw)), v * elems_per_vec4() + e - base);
}

fn elems_per_unit() -> u32 {
    return select(elems_per_vec4(), 2u, PAIRS);
}

// The f32 bits of half h (0 or 1) of each word of a 16-bit vec4 of x.
fn halves_bits(w: vec4<u32>, h: u32) -> vec4<u32> {
    return vec4<u32>(elem_bits(w.x, h), elem_bits(w.y, h), elem_bits(w.z, h), elem_bits(w.w, h));
}

// Bit e set for each element e of unit q that beats t, found for the whole unit at once with vector
// operations, so that only the rare element that beats the threshold runs offer_unit's loop (H100:
// 55.2 / 62.8 % of the copy bandwidth at 256 MiB / 1 GiB against 53.5 / 60.1 % testing each element with
// scalar code). Only units that may_beat lets through get here.
fn beating_bits(w: vec4<u32>, q: u32, base: u32, t: vec2<u32>) -> u32 {
    if (PAIRS) {
        let k = vec2<u32>(w.x, w.z);
        let b = (k > vec2<u32>(t.x)) | ((k == vec2<u32>(t.x)) & (vec2<u32>(w.y, w.w) < vec2<u32>(t.y)));
        return select(0u, 1u, b.x) | select(0u, 2u, b.y);
    }
    let tk = vec4<u32>(t.x);
    let ti = vec4<u32>(t.y);
    // The index of the unit's element 0 within the row (wrapping, as unit_elem's, when the row starts
    // inside the vec4: such elements are not pending).
    let i0 = vec4<u32>((pos_ + q * WG) * elems_per_vec4() - base);
    if (DTYPE == DT_F32) {
        let k = order_key4(w);
        let b = (k > tk) | ((k == tk) & (i0 + vec4<u32>(0u, 1u, 2u, 3u) < ti));
        return select(0u, 1u, b.x) | select(0u, 2u, b.y) | select(0u, 4u, b.z) | select(0u, 8u, b.w);
    }
    // Two elements a word: the low halves are elements 0, 2, 4, 6, the high halves 1, 3, 5, 7.
    let lo = order_key4(halves_bits(w, 0u));
    let hi = order_key4(halves_bits(w, 1u));
    let bl = (lo > tk) | ((lo == tk) & (i0 + vec4<u32>(0u, 2u, 4u, 6u) < ti));
    let bh = (hi > tk) | ((hi == tk) & (i0 + vec4<u32>(1u, 3u, 5u, 7u) < ti));
    return select(0u, 1u, bl.x) | select(0u, 4u, bl.y) | select(0u, 16u, bl.z) | select(0u, 64u, bl.w)
        | select(0u, 2u, bh.x) | select(0u, 8u, bh.y) | select(0u, 32u, bh.z) | select(0u, 128u, bh.w);
}

// The value whose key is k, for may_beat: NaN's key gives +inf (only a NaN beats it, and may_beat lets
// every NaN through), so that no comparison meets a NaN operand.
fn key_value(k: u32) -> f32 {
    if (k == 0xffffffffu) {
        return bitcast<f32>(0x7f800000u);
    }
    return bitcast<f32>(select(~k, k ^ 0x80000000u, k >= 0x80000000u));
}

// Whether some element of unit w may beat a threshold of value tf: one float comparison a vec4 skips
// nearly every unit before beating_bits' key arithmetic (H100, 256 MiB / 1 GiB: 71.0 / 81.0 % of the
// copy bandwidth against 63.9 / 73.4 % without). Conservative: ties, -0 against +0 and every NaN pass,
// and beating_bits decides.
fn may_beat(w: vec4<u32>, tf: f32) -> bool {
    let nan = vec4<u32>(0x7f800000u);
    let abs = vec4<u32>(0x7fffffffu);
    let tv = vec4<f32>(tf);
    if (DTYPE == DT_F32) {
        return any(bitcast<vec4<f32>>(w) >= tv) || any((w & abs) > nan);
    }
    let lo = halves_bits(w, 0u);
    let hi = halves_bits(w, 1u);
    return any(bitcast<vec4<f32>>(lo) >= tv) || any(bitcast<vec4<f32>>(hi) >= tv) || any((lo & abs) > nan)
        || any((hi & abs) > nan);
}

// Offers the pending elements of unit q that beat t (of value tf, where `pretest`); returns the bits of
// those that found the buffer full (the others are no longer pending).
fn offer_unit(w: vec4<u32>, q: u32, base: u32, t: vec2<u32>, pretest: bool, tf: f32) -> u32 {
    if (pretest && !may_beat(w, tf)) {
        return 0u;
    }
    var todo = beating_bits(w, q, base, t) & (pending >> (q * 8u)) & 0xffu;
    var left = 0u;
    let v = pos_ + q * WG;
    // At most 8 turns.
    while (todo != 0u) {
        let e = firstTrailingBit(todo);
        todo &= todo - 1u;
        let c = unit_elem(w, v, e, base);
        let slot = atomicAdd(&n_cand, 1u);
        if (slot < CAP) {
            cand[slot] = c;
        } else {
            left |= 1u << (q * 8u + e);
        }
    }
    return left;
}

// The better of `best` and the best pending element of unit q, as (key, index, pending bit).
fn best_of_unit(w: vec4<u32>, q: u32, base: u32, best: vec3<u32>) -> vec3<u32> {
    var b = best;
    let v = pos_ + q * WG;
    for (var e = 0u; e < elems_per_unit(); e++) {
        let bit = q * 8u + e;
        if ((pending & (1u << bit)) != 0u) {
            let c = unit_elem(w, v, e, base);
            if (beats(c.x, c.y, b.x, b.y)) {
                b = vec3<u32>(c.x, c.y, bit);
            }
        }
    }
    return b;
}

// After the buffer was filled: its count (at most CAP) into round_m, and whether it overflowed, for the
// whole workgroup.
fn count_candidates(li: u32) -> bool {
    workgroupBarrier();
    if (li == 0u) {
        let n = atomicLoad(&n_cand);
        round_m = min(n, CAP);
        round_full = select(0u, 1u, n > CAP);
    }
    return workgroupUniformLoad(&round_full) != 0u;
}

// At the first tile: each pair of threads offers the better of its two best pending elements alone, and
// the list of those is merged, which sets the threshold. Pairs, not threads, so that the merge takes at
// most WG / 2 = RANK_MERGE_MAX candidates by counted ranks rather than a sort, while every workgroup of a
// launch that fits the GPU at once waits on it with no loads in flight (H100, 256 MiB / 1 GiB: 81.5 / 91.5 %
// of copy against 78.8–80.5 / 90.2 % offering a best per thread, results 2026-12-07 `run42/`).
fn offer_first_best(base: u32, li: u32) {
    var b = vec3<u32>(NONE_KEY, NONE_INDEX, 32u);
    b = best_of_unit(u0_, 0u, base, b);
    b = best_of_unit(u1_, 1u, base, b);
    b = best_of_unit(u2_, 2u, base, b);
    b = best_of_unit(u3_, 3u, base, b);
    // The buffer is empty: its first WG entries swap the pair's bests.
    cand[li] = b.xy;
    workgroupBarrier();
    let other = cand[li ^ 1u];
    workgroupBarrier();
    if (b.z < 32u && beats(b.x, b.y, other.x, other.y)) {
        let slot = atomicAdd(&n_cand, 1u); // one per pair: below CAP
        cand[slot] = b.xy;
        pending &= ~(1u << b.z);
    }
    flush_candidates(li);
}

// Merges what the buffer still holds.
fn flush_candidates(li: u32) {
    count_candidates(li);
    let m = workgroupUniformLoad(&round_m);
    if (m > 0u) {
        merge(m, li);
    }
}

// Loads tile t of the span (x's elements, or with PAIRS the vec4s of x that hold a row's chunk
// candidates) into this thread's units and marks the elements they hold pending.
fn load_tile(s: Span, t: u32, li: u32) {
    if (PAIRS) {
        pos_ = s.start + t * 4u * WG + li;
        u0_ = load_pair_unit(pos_, s.end);
        u1_ = load_pair_unit(pos_ + WG, s.end);
        u2_ = load_pair_unit(pos_ + 2u * WG, s.end);
        u3_ = load_pair_unit(pos_ + 3u * WG, s.end);
        pending = pair_pending(u0_, 0u) | pair_pending(u1_, 1u) | pair_pending(u2_, 2u) | pair_pending(u3_, 3u);
    } else {
        load_x_tile(s, t, li);
    }
}

// The thread's part of a round: offers what is pending of its current tile (`tile_`), then loads and
// offers the next tiles below t_end, all against the threshold the round began with; stops early when
// the buffer is full, leaving the rest pending. x's next tile is loaded before this one is tested, so
// that its loads are in flight meanwhile (H100: 74.1 / 83.9 % of copy against 71.0 / 81.0 %). A round
// that offered all its tiles ends by loading the next round's first tile into the spent tile's
// registers, so that its loads are in flight during the merge (H100, 256 MiB / 1 GiB: 80.0–80.3 /
// 89.9 % against 79.3–79.5 / 89.7–89.9 %, results 2026-12-06g `topk.txt`). Holding that tile in registers
// of its own is slower (79.3 / 87.1 % against 81.0 / 91.6 %), and so are two tiles in flight (58.5 /
// 77 %): their registers cost workgroups a multiprocessor (five fit an H100's now, results 2026-12-06e
// `topk_rows.txt`).
fn scan_round(s: Span, t_end: u32, tiles: u32, li: u32) {
    let t = threshold();
    // The float pre-test reads x's values; the merge pass's pairs hold keys.
    let pretest = !PAIRS && t.x != NONE_KEY;
    let tf = key_value(t.x);
    let base = s.base;
    loop {
        let ahead = !PAIRS && tile_ + 1u < t_end;
        var next = Units();
        if (ahead) {
            next = x_tile(s, tile_ + 1u, li);
        }
        if (pending != 0u) {
            var left = offer_unit(u0_, 0u, base, t, pretest, tf);
            left |= offer_unit(u1_, 1u, base, t, pretest, tf);
            left |= offer_unit(u2_, 2u, base, t, pretest, tf);
            left |= offer_unit(u3_, 3u, base, t, pretest, tf);
            pending = left;
            if (left != 0u) {
                break;
            }
        }
        if (tile_ + 1u >= t_end) {
            if (!PAIRS && tile_ + 1u < tiles) {
                tile_ += 1u;
                load_x_tile(s, tile_, li);
            }
            break;
        }
        tile_ += 1u;
        if (ahead) {
            hold_x_tile(s, tile_, li, next);
        } else {
            load_tile(s, tile_, li);
        }
    }
}

// The best k of the span's `tiles` tiles into the list.
fn topk_scan(s: Span, tiles: u32, li: u32) {
    topk_init(li);
    tile_ = 0u;
    load_tile(s, 0u, li);
    offer_first_best(s.base, li);
    var round_tiles = ROUND_FIRST;
    var t_end = min(tiles, 1u + round_tiles);
    loop {
        scan_round(s, t_end, tiles, li);
        let full = count_candidates(li);
        let m = workgroupUniformLoad(&round_m);
        if (m > 0u) {
            merge(m, li);
        }
        if (!full) {
            if (t_end == tiles) {
                break;
            }
            round_tiles = min(ROUND_GROWTH * round_tiles, ROUND_TILES);
            t_end = min(tiles, t_end + round_tiles);
        }
    }
}

// A thread's four vec4s of a tile of x.
struct Units {
    u0: vec4<u32>,
    u1: vec4<u32>,
    u2: vec4<u32>,
    u3: vec4<u32>,
}

// Loads this thread's units of tile t of the span, a vec4 past the span loading the span's last one.
fn x_tile(s: Span, t: u32, li: u32) -> Units {
    let ev = elems_per_vec4();
    let v1 = (s.end + ev - 1u) / ev;
    let v = s.start / ev + t * 4u * WG + li;
    return Units(x[min(v, v1 - 1u)], x[min(v + WG, v1 - 1u)], x[min(v + 2u * WG, v1 - 1u)],
        x[min(v + 3u * WG, v1 - 1u)]);
}

// Loads tile t of the span and marks its elements inside the span pending.
fn load_x_tile(s: Span, t: u32, li: u32) {
    hold_x_tile(s, t, li, x_tile(s, t, li));
}

// Makes `u`, tile t's units, this thread's tile and marks its elements inside the span pending.
fn hold_x_tile(s: Span, t: u32, li: u32, u: Units) {
    let ev = elems_per_vec4();
    let v1 = (s.end + ev - 1u) / ev;
    pos_ = s.start / ev + t * 4u * WG + li;
    u0_ = u.u0;
    u1_ = u.u1;
    u2_ = u.u2;
    u3_ = u.u3;
    if (pos_ * ev >= s.start && (pos_ + 3u * WG + 1u) * ev <= s.end) {
        // Inside the span: every element (the common case, without the per-element tests below).
        pending = select(0x0f0f0f0fu, 0xffffffffu, ev == 8u);
        return;
    }
    pending = 0u;
    for (var q = 0u; q < 4u; q++) {
        let v = pos_ + q * WG;
        for (var e = 0u; e < ev; e++) {
            let g = v * ev + e;
            if (v < v1 && g >= s.start && g < s.end) {
                pending |= 1u << (q * 8u + e);
            }
        }
    }
}

// The span's best k into the list.
fn topk_span(s: Span, li: u32) {
    let ev = elems_per_vec4();
    let vecs = (s.end + ev - 1u) / ev - s.start / ev;
    topk_scan(s, (vecs + 4u * WG - 1u) / (4u * WG), li);
}

// One workgroup per row: values and indices straight out.
@compute @workgroup_size(256)
fn topk_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let row = linear_group_id(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    topk_span(span_of(row * p.chunks), li);
    if (li < p.k) {
        let o = row * p.k + li;
        let i = list_i[li];
        topk_idx[o] = i;
        let e = row * p.n + i;
        val_out[o] = bits_in(x[e / elems_per_vec4()], e);
    }
}

// vec4s of partials a chunk writes: its best k (key, index) pairs, two a vec4, so that every chunk's
// start is vec4-aligned.
fn pair_units() -> u32 {
    return (p.k + 1u) / 2u;
}

// One workgroup per chunk: its best k (key, index) pairs into scratch, padded with sentinels to a whole
// number of vec4s.
@compute @workgroup_size(256)
fn topk_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let g = linear_group_id(wid, nwg);
    if (g >= p.rows * p.chunks) {
        return;
    }
    topk_span(span_of(g), li);
    if (li < 2u * pair_units()) {
        let o = 2u * (g * 2u * pair_units() + li);
        let valid = li < list_len;
        scratch[o] = select(NONE_KEY, list_k[li], valid);
        scratch[o + 1u] = select(NONE_INDEX, list_i[li], valid);
    }
}

// The two candidate pairs of vec4 v of x (sentinels from `end` on).
fn load_pair_unit(v: u32, end: u32) -> vec4<u32> {
    if (v >= end) {
        return vec4<u32>(NONE_KEY, NONE_INDEX, NONE_KEY, NONE_INDEX);
    }
    return x[v];
}

// The pending bits of unit q of pairs: its real (non-sentinel) pairs.
fn pair_pending(w: vec4<u32>, q: u32) -> u32 {
    return (select(0u, 1u, w.x != NONE_KEY) | select(0u, 2u, w.z != NONE_KEY)) << (q * 8u);
}

// One workgroup per row: the best k of its chunks' candidates (bound as x; x itself as x_vals), in tiles
// of four units (two pairs each) a thread.
@compute @workgroup_size(256)
fn topk_merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let row = linear_group_id(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    let units = p.chunks * pair_units();
    let first = row * units;
    topk_scan(Span(0u, first, first + units), (units + 4u * WG - 1u) / (4u * WG), li);
    if (li < p.k) {
        let o = row * p.k + li;
        let i = list_i[li];
        topk_idx2[o] = i;
        let e = row * p.n + i;
        val_out2[o] = bits_in(x_vals[e / elems_per_vec4()], e);
    }
}

// ---- repeat penalty ------------------------------------------------------------------------------
// Each of the p.rows ids scales its logit of the p.n in place: a positive one by p.scale (1 / penalty),
// any other by p.scale_neg (the penalty). Both are products, rounded as the CPU's are. An id past the
// row is skipped, and an id listed more than once counts once (by its first place): the list can be the
// device's ring of recent tokens (sample.wgsl), which the host never reads.
@compute @workgroup_size(64)
fn repeat_penalty(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= p.rows) {
        return;
    }
    let id = pen_ids[gid.x];
    for (var j = 0u; j < gid.x; j++) {
        if (pen_ids[j] == id) {
            return;
        }
    }
    if (id < p.n) {
        let l = pen_x[id];
        pen_x[id] = l * select(p.scale_neg, p.scale, l > 0.0);
    }
}
