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
    scale: f32,
    _pad: u32,
}

const WG: u32 = 256u;
// The largest k.
const KMAX: u32 = 64u;
const NONE_KEY: u32 = 0u;
const NONE_INDEX: u32 = 0xffffffffu;

// Bindings per entry point:
//   embedding_vec (table, ids, emb_out); embedding_any (table_w, ids, emb_out_w);
//   argmax_rows (x, idx_out); argmax_partial, topk_partial (x, scratch); argmax_merge (scratch_in, idx_out);
//   topk_rows (x, val_out, topk_idx); topk_merge (x, scratch_in2, val_out2, topk_idx2).
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
@group(0) @binding(2) var<storage, read> scratch_in2: array<u32>;
@group(0) @binding(3) var<storage, read_write> val_out2: array<u32>;
@group(0) @binding(4) var<storage, read_write> topk_idx2: array<u32>;

// ---- exact conversions on bit patterns (as in convert.wgsl) ---------------------------------------

fn f16_from_f32_bits(v: u32) -> u32 {
    let sign = (v >> 16u) & 0x8000u;
    let e = v & 0x7f800000u;
    let man = v & 0x007fffffu;
    if (e == 0x7f800000u) {
        return sign | 0x7c00u | select(0u, 0x0200u, man != 0u) | (man >> 13u);
    }
    let half_exp = i32(e >> 23u) - 112;
    if (half_exp >= 31) {
        return sign | 0x7c00u;
    }
    if (half_exp <= 0) {
        if (14 - half_exp > 24) {
            return sign;
        }
        let mm = man | 0x00800000u;
        let shift = u32(14 - half_exp);
        let round_bit = 1u << (shift - 1u);
        var hm = mm >> shift;
        if ((mm & round_bit) != 0u && (mm & (3u * round_bit - 1u)) != 0u) {
            hm += 1u;
        }
        return sign | hm;
    }
    let h = sign | (u32(half_exp) << 10u) | (man >> 13u);
    if ((man & 0x1000u) != 0u && (man & 0x2fffu) != 0u) {
        return h + 1u;
    }
    return h;
}

fn f32_bits_from_f16(h: u32) -> u32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0x1fu) {
        if (m == 0u) {
            return sign | 0x7f800000u;
        }
        return sign | 0x7fc00000u | (m << 13u);
    }
    if (e == 0u) {
        if (m == 0u) {
            return sign;
        }
        let top = firstLeadingBit(m);
        return sign | ((top + 103u) << 23u) | ((m << (23u - top)) & 0x7fffffu);
    }
    return sign | ((e + 112u) << 23u) | (m << 13u);
}

fn bf16_from_f32_bits(v: u32) -> u32 {
    if ((v & 0x7fffffffu) > 0x7f800000u) {
        return (v >> 16u) | 0x40u;
    }
    if ((v & 0x8000u) != 0u && (v & 0x17fffu) != 0u) {
        return (v >> 16u) + 1u;
    }
    return v >> 16u;
}

// The f32 bits of the 16-bit value h of dtype dt.
fn widen_bits(dt: u32, h: u32) -> u32 {
    if (dt == DT_BF16) {
        return h << 16u;
    }
    return f32_bits_from_f16(h);
}

// The nearest 16-bit value of dtype dt to the f32 with bits v.
fn narrow_bits(dt: u32, v: u32) -> u32 {
    if (dt == DT_BF16) {
        return bf16_from_f32_bits(v);
    }
    return f16_from_f32_bits(v);
}

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

// dim % 8 == 0: one thread per output vec4 (4 f32 or 8 16-bit values), so writes are coalesced;
// rows start on vec4 boundaries in every dtype.
@compute @workgroup_size(256)
fn embedding_vec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let t = linear_group_id(wid, nwg) * WG + li;
    if (t >= p.threads) {
        return;
    }
    let out_f32 = OUT_DTYPE == DT_F32;
    let per_vec = select(8u, 4u, out_f32);
    let per_row = p.n / per_vec;
    let id = ids[t / per_row];
    if (id >= p.k) {
        // Out of range: zeros, and no read.
        emb_out[t] = vec4<u32>(0u);
        return;
    }
    let s = id * p.n + (t % per_row) * per_vec; // first table element
    if (DTYPE == OUT_DTYPE && !SCALED) {
        emb_out[t] = table[s / per_vec];
        return;
    }
    // The per_vec values as f32 bits.
    var v: array<u32, 8>;
    if (DTYPE == DT_F32) {
        let a = table[s / 4u];
        var b = vec4<u32>(0u);
        if (!out_f32) {
            b = table[s / 4u + 1u];
        }
        v = array<u32, 8>(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w);
    } else {
        let a = table[s / 8u];
        let off = s % 8u; // 4 when an f32 output takes the second half of the vec4
        for (var j = 0u; j < per_vec; j++) {
            v[j] = elem_bits(a[(off + j) / 2u], (off + j) % 2u);
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

// Whether (ka, ia) comes before (kb, ib): a larger key, or an equal key at a lower index.
fn beats(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia < ib);
}

// Elements per vec4 of x.
fn elems_per_vec4() -> u32 {
    return select(8u, 4u, DTYPE == DT_F32);
}

// The f32 bits of element e of x.
fn x_bits(e: u32) -> u32 {
    let ev = elems_per_vec4();
    let q = x[e / ev];
    let r = e % ev;
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
// A workgroup keeps its best k so far, sorted, in `list`. It streams its elements in tiles of 8 per
// thread, in rounds: a thread drops the elements that cannot beat the list's k-th entry and offers the
// best of the rest. The round's candidates (at most one per thread) are sorted (bitonic, in workgroup
// memory) and merged by rank: an element's new position is its position among its own kind plus the
// number of the other kind that beat it (a binary search). The first round offers each thread's best,
// which sets a high threshold at once; after that most tiles have no candidate at all. Every loop is
// short (a tile takes at most 8 rounds): lavapipe ends any loop after 65535 iterations.

var<workgroup> cand_k: array<u32, WG>;
var<workgroup> cand_i: array<u32, WG>;
var<workgroup> list_k: array<u32, KMAX>;
var<workgroup> list_i: array<u32, KMAX>;
var<workgroup> next_k: array<u32, KMAX>;
var<workgroup> next_i: array<u32, KMAX>;
var<workgroup> n_cand: atomic<u32>;
var<workgroup> more: atomic<u32>;
var<workgroup> list_len: u32;
var<workgroup> round_m: u32;
var<workgroup> round_more: u32;

// This thread's elements of the current tile and which of them are still to be offered.
var<private> pk: array<u32, 8>;
var<private> pi: array<u32, 8>;
var<private> pending: u32;

fn topk_init(li: u32) {
    if (li == 0u) {
        list_len = 0u;
        atomicStore(&n_cand, 0u);
        atomicStore(&more, 0u);
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
        if (beats(cand_k[mid], cand_i[mid], k, i)) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// Sorts the m candidates and merges them into the list; called by the whole workgroup with a
// uniform m in 1..=WG.
fn merge(m: u32, li: u32) {
    let len = list_len;
    let kk = p.k;
    var size = 1u;
    while (size < m) {
        size <<= 1u;
    }
    if (li >= m && li < size) {
        cand_k[li] = NONE_KEY;
        cand_i[li] = NONE_INDEX;
    }
    // Bitonic sort of cand[0..size) into "beats" order.
    for (var span = 2u; span <= size; span <<= 1u) {
        for (var j = span >> 1u; j > 0u; j >>= 1u) {
            workgroupBarrier();
            let q = li ^ j;
            if (li < size && q > li) {
                let ak = cand_k[li];
                let ai = cand_i[li];
                let bk = cand_k[q];
                let bi = cand_i[q];
                // The first half of each span is sorted best-first, the second best-last.
                let swap = select(beats(ak, ai, bk, bi), beats(bk, bi, ak, ai), (li & span) == 0u);
                if (swap) {
                    cand_k[li] = bk;
                    cand_i[li] = bi;
                    cand_k[q] = ak;
                    cand_i[q] = ai;
                }
            }
        }
    }
    workgroupBarrier();
    if (li < m) {
        let ck = cand_k[li];
        let ci = cand_i[li];
        let r = li + list_rank(ck, ci, len);
        if (r < kk) {
            next_k[r] = ck;
            next_i[r] = ci;
        }
    }
    if (li < len) {
        let ek = list_k[li];
        let ei = list_i[li];
        let r = li + cand_rank(ek, ei, m);
        if (r < kk) {
            next_k[r] = ek;
            next_i[r] = ei;
        }
    }
    workgroupBarrier();
    let new_len = min(kk, len + m);
    if (li < new_len) {
        list_k[li] = next_k[li];
        list_i[li] = next_i[li];
    }
    if (li == 0u) {
        list_len = new_len;
    }
    workgroupBarrier();
}

// Offers this thread's pending elements to the list, in rounds, until none is left.
fn consume(li: u32) {
    loop {
        let len = list_len;
        if (len >= p.k) {
            let tk = list_k[p.k - 1u];
            let ti = list_i[p.k - 1u];
            for (var j = 0u; j < 8u; j++) {
                if ((pending & (1u << j)) != 0u && !beats(pk[j], pi[j], tk, ti)) {
                    pending &= ~(1u << j);
                }
            }
        }
        if (pending != 0u) {
            var b = firstTrailingBit(pending);
            for (var j = b + 1u; j < 8u; j++) {
                if ((pending & (1u << j)) != 0u && beats(pk[j], pi[j], pk[b], pi[b])) {
                    b = j;
                }
            }
            let slot = atomicAdd(&n_cand, 1u); // at most one per thread: below WG
            cand_k[slot] = pk[b];
            cand_i[slot] = pi[b];
            pending &= ~(1u << b);
            if (pending != 0u) {
                atomicStore(&more, 1u);
            }
        }
        workgroupBarrier();
        if (li == 0u) {
            round_m = atomicLoad(&n_cand);
            round_more = atomicLoad(&more);
            atomicStore(&n_cand, 0u);
            atomicStore(&more, 0u);
        }
        let m = workgroupUniformLoad(&round_m);
        let again = workgroupUniformLoad(&round_more);
        if (m > 0u) {
            merge(m, li);
        }
        if (again == 0u) {
            break;
        }
    }
}

// Loads tile t of the span into this thread's pending elements (8 per thread: two vec4s of f32 or
// one of 16-bit values).
fn load_x_tile(s: Span, t: u32, li: u32) {
    pending = 0u;
    let ev = elems_per_vec4();
    let pw = per_word(DTYPE);
    let vpt = 8u / ev;
    let v1 = (s.end + ev - 1u) / ev;
    for (var q = 0u; q < vpt; q++) {
        let v = s.start / ev + (t * vpt + q) * WG + li;
        if (v < v1) {
            let w = x[v];
            for (var j = 0u; j < 4u; j++) {
                for (var h = 0u; h < pw; h++) {
                    let e = v * ev + j * pw + h;
                    let slot = (q * 4u + j) * pw + h;
                    if (e >= s.start && e < s.end) {
                        pk[slot] = order_key(elem_bits(w[j], h));
                        pi[slot] = e - s.base;
                        pending |= 1u << slot;
                    }
                }
            }
        }
    }
}

// The span's best k into the list.
fn topk_span(s: Span, li: u32) {
    topk_init(li);
    let ev = elems_per_vec4();
    let vecs = (s.end + ev - 1u) / ev - s.start / ev;
    let tiles = (vecs * ev + 8u * WG - 1u) / (8u * WG);
    for (var t = 0u; t < tiles; t++) {
        load_x_tile(s, t, li);
        consume(li);
    }
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
        val_out[o] = x_bits(row * p.n + i);
    }
}

// One workgroup per chunk: its best k (key, index) pairs into scratch, padded with sentinels.
@compute @workgroup_size(256)
fn topk_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let g = linear_group_id(wid, nwg);
    if (g >= p.rows * p.chunks) {
        return;
    }
    topk_span(span_of(g), li);
    if (li < p.k) {
        let o = 2u * (g * p.k + li);
        let valid = li < list_len;
        scratch[o] = select(NONE_KEY, list_k[li], valid);
        scratch[o + 1u] = select(NONE_INDEX, list_i[li], valid);
    }
}

// One workgroup per row: the best k of its chunks' candidates.
@compute @workgroup_size(256)
fn topk_merge(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let row = linear_group_id(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    topk_init(li);
    let count = p.chunks * p.k;
    let first = row * count;
    let tiles = (count + 8u * WG - 1u) / (8u * WG);
    for (var t = 0u; t < tiles; t++) {
        pending = 0u;
        for (var j = 0u; j < 8u; j++) {
            let c = (t * 8u + j) * WG + li;
            if (c < count) {
                let key = scratch_in2[2u * (first + c)];
                if (key != NONE_KEY) {
                    pk[j] = key;
                    pi[j] = scratch_in2[2u * (first + c) + 1u];
                    pending |= 1u << j;
                }
            }
        }
        consume(li);
    }
    if (li < p.k) {
        let o = row * p.k + li;
        let i = list_i[li];
        topk_idx2[o] = i;
        val_out2[o] = x_bits(row * p.n + i);
    }
}
