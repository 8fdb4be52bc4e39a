// Attention over a KV cache, in two kernels that share this file:
//
//   sdpa_decode / sdpa_decode_dev + sdpa_decode_reduce: flash-decoding. Workgroup (split, kv head,
//     row block) streams one split of the cache's keys through workgroup memory, every query row of
//     the GQA group reusing each loaded K/V row, and writes a partial (max, sum, weighted V) per row;
//     sdpa_decode_reduce merges the splits. sdpa_decode_dev reads kv_len from a u32 buffer, so a
//     recorded step can be replayed as the context grows. This main pass is the fallback for adapters
//     without (large enough) subgroups; attention_subgroup.wgsl has the faster one, whose partials
//     sdpa_decode_reduce merges too.
//   flash (flash_attention): prefill (attention_coop.wgsl has its tensor-core form). Workgroup (query
//     block, head) keeps its BQ × head_dim output tile in registers and streams K/V tiles through
//     workgroup memory with an online softmax; the scores never leave the workgroup.
//
// Q and the output are f32; K and V are f32, f16 or bf16 (DTYPE), rows [position, kv head, head_dim].
// All arithmetic is f32. Masked scores are MASKED (finite, so no inf - inf); a row with no visible key
// gets zeros. attention_kv.wgsl, composed before this file, holds the decode parameters and the K/V
// element groups that attention_subgroup.wgsl shares.
//
// No private array is indexed by a loop variable: naga bounds every loop with a counter, so drivers do
// not unroll them, and such arrays would live in slow local memory. Per-thread state is spelled out as
// separate variables (guarded by conditions on constants, which the driver folds away), vec4 lanes and
// mat4x4 columns with constant indices.

override DTYPE: u32 = 0u;
// Head dimension: a multiple of 4, at most 256.
override HD: u32 = 128u;
// decode: keys per tile (TK * HD <= 2048, TK <= 64) and query rows per workgroup (RB * HD <= 2048,
// RB * TK <= 1024).
override TK: u32 = 16u;
override RB: u32 = 4u;
// sdpa_decode with one split: the kernel writes the normalised output rows itself (binding 4 is the
// output [tokens, n_heads, head_dim] f32) and no reduce pass follows.
override DIRECT: bool = false;
// sdpa_decode_reduce also writes its output as the x of the quantized GEMV that takes it (the O
// projection), in that GEMV's QOUT_LAYOUT (xquant.wgsl) for p.qout_units units per row: the hi and lo
// bytes to qx_out, (d / 256, Σ) per group of 16 to qs_out, as qgemv_x.wgsl lays out rows of x. It saves
// the launch that would quantize it. HD must be a multiple of 32 (a block of 32 never spans two heads).
override QOUT: bool = false;
override QOUT_LAYOUT: u32 = 0u;

const WG: u32 = 128u;

struct FlashParams {
    q_len: u32,
    kv_len: u32,
    n_heads: u32,
    n_kv_heads: u32,
    group: u32,
    q_offset: u32,
    n_qblocks: u32,
    causal: u32,
    scale: f32,
    softcap: f32,
    window: u32,
    _pad: u32,
}

// Bindings per entry point: sdpa_decode (p, q_in, kc, vc, part), sdpa_decode_dev (the same, kv_len_buf),
// sdpa_decode_reduce (p, part_in, out_r, and with QOUT qx_out, qs_out), flash (fp, q_in, kc, vc, out_f).
@group(0) @binding(0) var<uniform> p: DecodeParams;
@group(0) @binding(0) var<uniform> fp: FlashParams;
@group(0) @binding(1) var<storage, read> q_in: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> kc: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> vc: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> part: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> kv_len_buf: array<u32>;
@group(0) @binding(1) var<storage, read> part_in: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> out_r: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> qx_out: array<u32>;
@group(0) @binding(4) var<storage, read_write> qs_out: array<vec2<f32>>;
@group(0) @binding(4) var<storage, read_write> out_f: array<vec4<u32>>;

fn apply_softcap(s: f32, cap: f32) -> f32 {
    if (cap > 0.0) {
        return cap * safe_tanh(s / cap);
    }
    return s;
}

// ---- decode ----------------------------------------------------------------------------------------

var<workgroup> d_k: array<vec4<f32>, 576>; // K tile [TK][d_stride()]
var<workgroup> d_v: array<vec4<f32>, 576>; // V tile [TK][d_stride()]
var<workgroup> d_q: array<vec4<f32>, 512>; // scaled query rows [RB][HD/4]
var<workgroup> d_s: array<f32, 1024>;      // scores [RB][TK]
var<workgroup> d_len: u32;

// Row stride of the K/V tiles in vec4: odd, so the rows of a tile fall in different banks.
fn d_stride() -> u32 {
    return (HD / 4u) | 1u;
}

fn d_groups_per_row() -> u32 {
    return (HD + group_elems() - 1u) / group_elems();
}

// K/V groups a thread loads per tile (at most 4).
fn d_fetches() -> u32 {
    return (TK * d_groups_per_row() + WG - 1u) / WG;
}

struct KvGroup {
    k: vec4<u32>,
    v: vec4<u32>,
}

// Group `idx` of the K and V tile of `nk` keys from key `ks` (zeros past the tile).
fn d_fetch(idx: u32, ks: u32, nk: u32, kvh: u32) -> KvGroup {
    let epg = group_elems();
    let gpr = d_groups_per_row();
    var f: KvGroup;
    if (idx < nk * gpr) {
        let j = idx / gpr;
        let e = (idx - j * gpr) * epg;
        let w = elem_word(((ks + j) * p.n_kv_heads + kvh) * HD + e);
        let n = elem_word(min(epg, HD - e));
        f.k = k_words(w, n);
        f.v = v_words(w, n);
    }
    return f;
}

fn d_store(idx: u32, nk: u32, f: KvGroup) {
    let epg = group_elems();
    let gpr = d_groups_per_row();
    if (idx < nk * gpr) {
        let j = idx / gpr;
        let g = idx - j * gpr;
        let at = j * d_stride() + g * (epg / 4u);
        d_k[at] = group_lo(f.k);
        d_v[at] = group_lo(f.v);
        if (epg == 8u && g * 8u + 4u < HD) {
            d_k[at + 1u] = group_hi(f.k);
            d_v[at + 1u] = group_hi(f.v);
        }
    }
}

// Online-softmax state of one output vec4: running max, running sum, weighted V.
struct Acc {
    m: f32,
    l: f32,
    a: vec4<f32>,
}

fn acc_empty() -> Acc {
    return Acc(FLOOR, 0.0, vec4<f32>(0.0));
}

// Folds this thread's keys of the tile (every kg_count-th from kg) into the state of output vec4 `o`.
fn d_accumulate(st: Acc, o: u32, nk: u32, kg: u32, kg_count: u32) -> Acc {
    let hd4 = HD / 4u;
    let r = o / hd4;
    let d4 = o - r * hd4;
    var mt = MASKED;
    for (var j = kg; j < nk; j += kg_count) {
        mt = max(mt, d_s[r * TK + j]);
    }
    // Masked keys weigh 0 (attention_kv.wgsl).
    let m_new = max(st.m, mt);
    let alpha = exp(st.m - m_new);
    var a = st.a * alpha;
    var ls = st.l * alpha;
    let stride = d_stride();
    for (var j = kg; j < nk; j += kg_count) {
        let s = d_s[r * TK + j];
        let pj = exp(s - m_new);
        ls += pj;
        a += pj * d_v[j * stride + d4];
    }
    return Acc(m_new, ls, a);
}

// Partials: per (output row, split) one vec4 (max, sum, 0, 0), then head_dim/4 vec4 of weighted V.
fn d_write(st: Acc, o: u32, row0: u32, kvh: u32, split: u32) {
    let hd4 = HD / 4u;
    let r = o / hd4;
    let d4 = o - r * hd4;
    let row = row0 + r;
    let t = row / p.group;
    let head = kvh * p.group + (row - t * p.group);
    write_partial(t * p.n_heads + head, split, d4, st.m, st.l, st.a);
}

// Writes vec4 d4 of the partial of output row `out_row` (token · n_heads + head) for one split, or with
// DIRECT the output itself: a / l, as sdpa_decode_reduce would make of a single split.
fn write_partial(out_row: u32, split: u32, d4: u32, m: f32, l: f32, a: vec4<f32>) {
    let hd4 = HD / 4u;
    if (DIRECT) {
        part[out_row * hd4 + d4] = bitcast<vec4<u32>>(select(vec4<f32>(0.0), a / l, weighed(l)));
        return;
    }
    let at = (out_row * p.n_splits + split) * (hd4 + 1u);
    part[at + 1u + d4] = bitcast<vec4<u32>>(a);
    if (d4 == 0u) {
        part[at] = bitcast<vec4<u32>>(vec4<f32>(m, l, 0.0, 0.0));
    }
}

fn decode_body(kv_len_in: u32, wid: vec3<u32>, li: u32) {
    let kv_len = min(kv_len_in, p.capacity);
    let split = wid.x;
    let kvh = wid.y;
    let row0 = wid.z * RB;
    let hd4 = HD / 4u;
    let stride = d_stride();
    let nrows = min(RB, p.rows - row0);
    let first_pos = i32(kv_len) - i32(p.tokens); // position of token 0 of the step

    // The keys any row may see, cut into n_splits equal runs of whole tiles.
    var lo = 0u;
    if (p.window > 0u) {
        lo = u32(max(0i, first_pos - i32(p.window) + 1i));
    }
    let span = select(0u, kv_len - lo, kv_len > lo);
    let per = (span + p.n_splits - 1u) / p.n_splits;
    let split_len = ((per + TK - 1u) / TK) * TK;
    let k0 = min(lo + split * split_len, kv_len);
    let k1 = min(k0 + split_len, kv_len);

    for (var idx = li; idx < nrows * hd4; idx += WG) {
        let r = idx / hd4;
        let d4 = idx - r * hd4;
        let row = row0 + r;
        let t = row / p.group;
        let head = kvh * p.group + (row - t * p.group);
        d_q[idx] = bitcast<vec4<f32>>(q_in[(t * p.n_heads + head) * hd4 + d4]) * p.scale;
    }

    // P·V roles: nt threads cover the nout output vec4s of the block (opt <= 4 each); kg_count such
    // groups each take every kg_count-th key of a tile and are merged at the end.
    let nout = RB * hd4;
    let nvalid = nrows * hd4;
    let nt = min(nout, WG);
    let kg_count = WG / nt;
    let kg = li / nt;
    let base = li - kg * nt;
    let opt = (nout + nt - 1u) / nt;
    let owner = kg < kg_count;
    var st0 = acc_empty();
    var st1 = acc_empty();
    var st2 = acc_empty();
    var st3 = acc_empty();

    // Register prefetch: the next tile's loads stay in flight while a tile is computed.
    let nf = d_fetches();
    var f0: KvGroup;
    var f1: KvGroup;
    var f2: KvGroup;
    var f3: KvGroup;
    if (k0 < k1) {
        let nk = min(TK, k1 - k0);
        f0 = d_fetch(li, k0, nk, kvh);
        if (nf > 1u) { f1 = d_fetch(li + WG, k0, nk, kvh); }
        if (nf > 2u) { f2 = d_fetch(li + 2u * WG, k0, nk, kvh); }
        if (nf > 3u) { f3 = d_fetch(li + 3u * WG, k0, nk, kvh); }
    }

    for (var ks = k0; ks < k1; ks += TK) {
        let nk = min(TK, k1 - ks);
        workgroupBarrier();
        d_store(li, nk, f0);
        if (nf > 1u) { d_store(li + WG, nk, f1); }
        if (nf > 2u) { d_store(li + 2u * WG, nk, f2); }
        if (nf > 3u) { d_store(li + 3u * WG, nk, f3); }
        workgroupBarrier();

        let next = ks + TK;
        if (next < k1) {
            let nk2 = min(TK, k1 - next);
            f0 = d_fetch(li, next, nk2, kvh);
            if (nf > 1u) { f1 = d_fetch(li + WG, next, nk2, kvh); }
            if (nf > 2u) { f2 = d_fetch(li + 2u * WG, next, nk2, kvh); }
            if (nf > 3u) { f3 = d_fetch(li + 3u * WG, next, nk2, kvh); }
        }

        // Scores of every (row, key) pair of the tile.
        for (var pi = li; pi < nrows * TK; pi += WG) {
            let r = pi / TK;
            let j = pi - r * TK;
            if (j < nk) {
                let qb = r * hd4;
                let kb = j * stride;
                var s4 = vec4<f32>(0.0);
                var d4 = 0u;
                for (; d4 + 4u <= hd4; d4 += 4u) {
                    s4 += d_q[qb + d4] * d_k[kb + d4] + d_q[qb + d4 + 1u] * d_k[kb + d4 + 1u]
                        + d_q[qb + d4 + 2u] * d_k[kb + d4 + 2u] + d_q[qb + d4 + 3u] * d_k[kb + d4 + 3u];
                }
                for (; d4 < hd4; d4++) {
                    s4 += d_q[qb + d4] * d_k[kb + d4];
                }
                let s = apply_softcap(s4.x + s4.y + s4.z + s4.w, p.softcap);
                let pos = first_pos + i32((row0 + r) / p.group);
                let kp = i32(ks + j);
                var ok = true;
                if (p.causal != 0u) {
                    ok = ok && kp <= pos;
                }
                if (p.window > 0u) {
                    ok = ok && kp > pos - i32(p.window);
                }
                d_s[r * TK + j] = select(MASKED, s, ok);
            }
        }
        workgroupBarrier();

        if (owner) {
            if (base < nvalid) { st0 = d_accumulate(st0, base, nk, kg, kg_count); }
            if (opt > 1u && base + nt < nvalid) { st1 = d_accumulate(st1, base + nt, nk, kg, kg_count); }
            if (opt > 2u && base + 2u * nt < nvalid) { st2 = d_accumulate(st2, base + 2u * nt, nk, kg, kg_count); }
            if (opt > 3u && base + 3u * nt < nvalid) { st3 = d_accumulate(st3, base + 3u * nt, nk, kg, kg_count); }
        }
    }

    // Merge the key groups of the workgroup (only when each thread owns one output).
    if (kg_count > 1u) {
        workgroupBarrier();
        if (owner) {
            d_k[li] = st0.a;
            d_s[2u * li] = st0.m;
            d_s[2u * li + 1u] = st0.l;
        }
        workgroupBarrier();
        if (kg == 0u) {
            var merged = acc_empty();
            for (var g = 0u; g < kg_count; g++) {
                merged.m = max(merged.m, d_s[2u * (g * nt + base)]);
            }
            for (var g = 0u; g < kg_count; g++) {
                let at = g * nt + base;
                let w = exp(d_s[2u * at] - merged.m);
                merged.a += w * d_k[at];
                merged.l += w * d_s[2u * at + 1u];
            }
            st0 = merged;
        }
    }

    if (kg == 0u) {
        if (base < nvalid) { d_write(st0, base, row0, kvh, split); }
        if (opt > 1u && base + nt < nvalid) { d_write(st1, base + nt, row0, kvh, split); }
        if (opt > 2u && base + 2u * nt < nvalid) { d_write(st2, base + 2u * nt, row0, kvh, split); }
        if (opt > 3u && base + 3u * nt < nvalid) { d_write(st3, base + 3u * nt, row0, kvh, split); }
    }
}

@compute @workgroup_size(128)
fn sdpa_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    decode_body(p.kv_len, wid, li);
}

@compute @workgroup_size(128)
fn sdpa_decode_dev(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    if (li == 0u) {
        d_len = kv_len_buf[0];
    }
    decode_body(workgroupUniformLoad(&d_len), wid, li);
}

var<workgroup> r_w: array<f32, 1024>;      // per-split weights exp(m_s - M) (n_splits <= 1024)
var<workgroup> r_ml: array<vec2<f32>, 128>; // per-thread (max, sum), reduced as a tree
var<workgroup> r_a: array<vec4<f32>, 128>;  // per-thread weighted sums
var<workgroup> r_qmax: array<f32, 64>;      // QOUT: per output vec4, its largest |value| and its sum
var<workgroup> r_qsum: array<f32, 64>;

fn part_ml(at: u32) -> vec2<f32> {
    return bitcast<vec2<f32>>(part_in[at].xy);
}

// Two softmax states (max, sum) as one.
fn merge_ml(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let m = max(a.x, b.x);
    return vec2<f32>(m, a.y * exp(a.x - m) + b.y * exp(b.x - m));
}

// One workgroup per output row merges its n_splits partials (empty splits have sum 0).
@compute @workgroup_size(128)
fn sdpa_decode_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) li: u32) {
    let row = linear_group_id(wid, nwg);
    if (row >= p.tokens * p.n_heads) {
        return;
    }
    let hd4 = HD / 4u;
    let rec = hd4 + 1u;
    let ns = p.n_splits;
    let base = row * ns * rec;

    // The row's overall (max, sum): each thread folds its splits, then a tree over the threads.
    var ml = vec2<f32>(FLOOR, 0.0);
    for (var s = li; s < ns; s += WG) {
        ml = merge_ml(ml, part_ml(base + s * rec));
    }
    r_ml[li] = ml;
    for (var half = WG / 2u; half > 0u; half >>= 1u) {
        workgroupBarrier();
        if (li < half) {
            r_ml[li] = merge_ml(r_ml[li], r_ml[li + half]);
        }
    }
    workgroupBarrier();
    let total = r_ml[0];
    for (var s = li; s < ns; s += WG) {
        r_w[s] = exp(part_ml(base + s * rec).x - total.x);
    }
    workgroupBarrier();

    // ng groups of hd4 threads each sum every ng-th split, eight loads in flight at a time.
    let ng = WG / hd4;
    let g = li / hd4;
    let d4 = li - g * hd4;
    var a = vec4<f32>(0.0);
    if (g < ng) {
        let at = base + 1u + d4;
        var s = g;
        for (; s + 7u * ng < ns; s += 8u * ng) {
            let a0 = bitcast<vec4<f32>>(part_in[at + s * rec]);
            let a1 = bitcast<vec4<f32>>(part_in[at + (s + ng) * rec]);
            let a2 = bitcast<vec4<f32>>(part_in[at + (s + 2u * ng) * rec]);
            let a3 = bitcast<vec4<f32>>(part_in[at + (s + 3u * ng) * rec]);
            let a4 = bitcast<vec4<f32>>(part_in[at + (s + 4u * ng) * rec]);
            let a5 = bitcast<vec4<f32>>(part_in[at + (s + 5u * ng) * rec]);
            let a6 = bitcast<vec4<f32>>(part_in[at + (s + 6u * ng) * rec]);
            let a7 = bitcast<vec4<f32>>(part_in[at + (s + 7u * ng) * rec]);
            a += r_w[s] * a0 + r_w[s + ng] * a1 + r_w[s + 2u * ng] * a2 + r_w[s + 3u * ng] * a3;
            a += r_w[s + 4u * ng] * a4 + r_w[s + 5u * ng] * a5 + r_w[s + 6u * ng] * a6 + r_w[s + 7u * ng] * a7;
        }
        for (; s < ns; s += ng) {
            a += r_w[s] * bitcast<vec4<f32>>(part_in[at + s * rec]);
        }
    }
    r_a[li] = a;
    workgroupBarrier();
    var y = vec4<f32>(0.0);
    if (g == 0u) {
        var sum = vec4<f32>(0.0);
        for (var gg = 0u; gg < ng; gg++) {
            sum += r_a[gg * hd4 + d4];
        }
        y = select(vec4<f32>(0.0), sum / total.y, weighed(total.y));
        out_r[row * hd4 + d4] = bitcast<vec4<u32>>(y);
    }
    if (QOUT) {
        emit_row(row, li, y);
    }
}

// QOUT: output row `row` (head row % n_heads of token row / n_heads) quantized as HD / 32 blocks of the
// token's row of x; thread li < HD / 4 holds its vec4 li (`y`). As qgemv.wgsl's emit_block: the eight
// threads of a block share its largest magnitude through workgroup memory, each splits its own vec4 into
// words of its group's hi and lo vectors, and one thread a group writes the group's (d / 256, Σ).
fn emit_row(row: u32, li: u32, y: vec4<f32>) {
    let hd4 = HD / 4u;
    if (li < hd4) {
        r_qmax[li] = amax4(y);
        r_qsum[li] = hsum(y);
    }
    workgroupBarrier();
    if (li >= hd4) {
        return;
    }
    let first = li & ~7u;
    var amax = 0.0;
    for (var k = 0u; k < 8u; k++) {
        amax = max(amax, r_qmax[first + k]);
    }
    set_block_scale(amax);
    let hl = split(y);
    let token = row / p.n_heads;
    let groups = p.n_heads * HD / 16u;
    // Group of 16 values of the token's row that holds this vec4.
    let xg = ((row % p.n_heads) * HD + 4u * li) / 16u;
    let at = position_in(xg, QOUT_LAYOUT, p.qout_units);
    qx_out[x_word(token, groups, at, false, li & 3u)] = hl.x;
    qx_out[x_word(token, groups, at, true, li & 3u)] = hl.y;
    if ((li & 3u) == 0u) {
        let s = r_qsum[li] + r_qsum[li + 1u] + r_qsum[li + 2u] + r_qsum[li + 3u];
        qs_out[token * groups + at] = vec2<f32>(d_ / 256.0, s);
    }
}

// ---- flash (prefill) -------------------------------------------------------------------------------
// 128 threads as 16 (ty) × 8 (tx). Head dims up to 128: BQ = 64 query rows (ty + 16m, m < 4) × BK = 32
// keys (tx + 8n, n < 4) per tile, output rows m in o0..o3, each a mat4x4 of columns d4 = tx + 8c.
// Wider heads: BQ = 32 (m < 2), BK = 16 (n < 2); o0/o1 hold row 0 (columns c and 4 + c), o2/o3 row 1.

const F_CS: u32 = 9u; // Q/K chunk row stride in vec4 (8 vec4 of head dim, padded)

var<workgroup> f_u: array<vec4<f32>, 1024>; // Q chunk [BQ][F_CS] + K chunk [BK][F_CS], then V tile [BK][HD/4]
var<workgroup> f_p: array<f32, 2112>;       // probabilities [BQ][BK + 1]
var<workgroup> f_r: array<f32, 512>;        // per-thread row partials [BQ][8]

fn f_wide() -> bool {
    return HD > 128u;
}

fn f_bq() -> u32 {
    return select(64u, 32u, f_wide());
}

fn f_bk() -> u32 {
    return select(32u, 16u, f_wide());
}

fn f_kbase() -> u32 {
    return f_bq() * F_CS;
}

// Groups of a K chunk row (32 elements).
fn f_groups_per_chunk() -> u32 {
    return 32u / group_elems();
}

// Element offset of key `key`'s row in K or V.
fn f_row_elem(key: u32, kvh: u32) -> u32 {
    return (key * fp.n_kv_heads + kvh) * HD;
}

// Q chunk vec4 `idx` (row idx / 8, column d0 + idx % 8), scaled; zeros outside.
fn f_fetch_q(idx: u32, q0: u32, d0: u32, head: u32) -> vec4<f32> {
    let r = idx / 8u;
    let c = idx - r * 8u;
    let i = q0 + r;
    if (idx < f_bq() * 8u && i < fp.q_len && d0 + c < HD / 4u) {
        return bitcast<vec4<f32>>(q_in[(i * fp.n_heads + head) * (HD / 4u) + d0 + c]) * fp.scale;
    }
    return vec4<f32>(0.0);
}

fn f_store_q(idx: u32, v: vec4<f32>) {
    if (idx < f_bq() * 8u) {
        let r = idx / 8u;
        f_u[r * F_CS + idx - r * 8u] = v;
    }
}

// K chunk group `idx` (key idx / groups-per-chunk), zeros outside.
fn f_fetch_k(idx: u32, kt0: u32, nk: u32, d0: u32, kvh: u32) -> vec4<u32> {
    let gpc = f_groups_per_chunk();
    let epg = group_elems();
    let j = idx / gpc;
    let e = d0 * 4u + (idx - j * gpc) * epg;
    if (j < nk && e < HD) {
        return k_words(elem_word(f_row_elem(kt0 + j, kvh) + e), elem_word(min(epg, HD - e)));
    }
    return vec4<u32>(0u);
}

fn f_store_k(idx: u32, d0: u32, w: vec4<u32>) {
    let gpc = f_groups_per_chunk();
    let epg = group_elems();
    let j = idx / gpc;
    if (j < f_bk()) {
        let g = idx - j * gpc;
        let at = f_kbase() + j * F_CS + g * (epg / 4u);
        f_u[at] = group_lo(w);
        if (epg == 8u) {
            f_u[at + 1u] = select(vec4<f32>(0.0), group_hi(w), d0 * 4u + g * 8u + 4u < HD);
        }
    }
}

fn f_groups_per_row() -> u32 {
    return (HD + group_elems() - 1u) / group_elems();
}

// V tile group `idx` (key idx / groups-per-row), zeros outside.
fn f_fetch_v(idx: u32, kt0: u32, nk: u32, kvh: u32) -> vec4<u32> {
    let gpr = f_groups_per_row();
    let epg = group_elems();
    let j = idx / gpr;
    let e = (idx - j * gpr) * epg;
    if (j < nk) {
        return v_words(elem_word(f_row_elem(kt0 + j, kvh) + e), elem_word(min(epg, HD - e)));
    }
    return vec4<u32>(0u);
}

fn f_store_v(idx: u32, w: vec4<u32>) {
    let gpr = f_groups_per_row();
    let epg = group_elems();
    let j = idx / gpr;
    if (j < f_bk()) {
        let e = (idx - j * gpr) * epg;
        let at = j * (HD / 4u) + e / 4u;
        f_u[at] = group_lo(w);
        if (epg == 8u && e + 4u < HD) {
            f_u[at + 1u] = group_hi(w);
        }
    }
}

// Scores of query `i` against keys kt0 + tx + 8n (lanes n): soft cap, then masks.
fn f_mask(s: vec4<f32>, i: u32, kt0: u32, nk: u32, tx: u32) -> vec4<f32> {
    let j = vec4<u32>(tx) + vec4<u32>(0u, 8u, 16u, 24u);
    let kp = vec4<u32>(kt0) + j;
    let pos = vec4<u32>(fp.q_offset + i);
    var ok = (j < vec4<u32>(nk)) & (j < vec4<u32>(f_bk())) & vec4<bool>(i < fp.q_len);
    if (fp.causal != 0u) {
        ok = ok & (kp <= pos);
    }
    if (fp.window > 0u) {
        ok = ok & (kp + vec4<u32>(fp.window) > pos);
    }
    return select(vec4<f32>(MASKED), softcap4(s, fp.softcap), ok);
}

struct RowStep {
    m: f32,
    l: f32,
    alpha: f32,
}

// Row r's new max (from every thread's partial), its probabilities for this thread's keys (into f_p),
// its updated partial sum, and the factor that rescales its output.
fn f_row(s: vec4<f32>, r: u32, m_old: f32, l_old: f32, tx: u32) -> RowStep {
    var mt = MASKED;
    for (var t = 0u; t < 8u; t++) {
        mt = max(mt, f_r[r * 8u + t]);
    }
    // Masked keys weigh 0 (attention_kv.wgsl).
    let m_new = max(m_old, mt);
    let alpha = exp(m_old - m_new);
    let pr = exp(s - vec4<f32>(m_new));
    let ps = f_bk() + 1u;
    f_p[r * ps + tx] = pr.x;
    f_p[r * ps + tx + 8u] = pr.y;
    if (!f_wide()) {
        f_p[r * ps + tx + 16u] = pr.z;
        f_p[r * ps + tx + 24u] = pr.w;
    }
    return RowStep(m_new, l_old * alpha + pr.x + pr.y + pr.z + pr.w, alpha);
}

fn f_vcol(j: u32, d4: u32) -> vec4<f32> {
    return select(vec4<f32>(0.0), f_u[j * (HD / 4u) + d4], d4 < HD / 4u);
}

// Columns d4 = tx + 8 (h + c), c < 4, of V row j.
fn f_vmat(j: u32, tx: u32, h: u32) -> mat4x4<f32> {
    let d = tx + 8u * h;
    return mat4x4<f32>(f_vcol(j, d), f_vcol(j, d + 8u), f_vcol(j, d + 16u), f_vcol(j, d + 24u));
}

fn f_store_o(o: mat4x4<f32>, i: u32, head: u32, inv: f32, tx: u32, h: u32) {
    if (i >= fp.q_len) {
        return;
    }
    let hd4 = HD / 4u;
    let at = (i * fp.n_heads + head) * hd4;
    let d = tx + 8u * h;
    if (d < hd4) { out_f[at + d] = bitcast<vec4<u32>>(o[0] * inv); }
    if (d + 8u < hd4) { out_f[at + d + 8u] = bitcast<vec4<u32>>(o[1] * inv); }
    if (d + 16u < hd4) { out_f[at + d + 16u] = bitcast<vec4<u32>>(o[2] * inv); }
    if (d + 24u < hd4) { out_f[at + d + 24u] = bitcast<vec4<u32>>(o[3] * inv); }
}

fn f_inv_sum(r: u32) -> f32 {
    var ls = 0.0;
    for (var t = 0u; t < 8u; t++) {
        ls += f_r[r * 8u + t];
    }
    return select(0.0, 1.0 / ls, weighed(ls));
}

@compute @workgroup_size(128)
fn flash(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    let wide = f_wide();
    let bq = f_bq();
    let bk = f_bk();
    let ty = li / 8u;
    let tx = li - ty * 8u;
    let qb = fp.n_qblocks - 1u - wid.x; // the longest causal rows start first
    let head = wid.y;
    let kvh = head / fp.group;
    let hd4 = HD / 4u;
    let q0 = qb * bq;
    let q_end = min(q0 + bq, fp.q_len);
    let kbase = f_kbase();

    // Keys some row of the block may see.
    var hi = fp.kv_len;
    if (fp.causal != 0u) {
        hi = min(hi, fp.q_offset + q_end);
    }
    var lo = 0u;
    if (fp.window > 0u && fp.q_offset + q0 + 1u > fp.window) {
        lo = fp.q_offset + q0 + 1u - fp.window;
    }

    // Loads per thread: Q chunk (bq/16 = 4 or 2), K chunk (1 or 2), V tile (up to 8).
    let nq = bq / 16u;
    let nkf = (bk * f_groups_per_chunk() + WG - 1u) / WG;
    let nvf = (bk * f_groups_per_row() + WG - 1u) / WG;

    var mrow = vec4<f32>(FLOOR);
    var lrow = vec4<f32>(0.0);
    var o0 = mat4x4<f32>();
    var o1 = mat4x4<f32>();
    var o2 = mat4x4<f32>();
    var o3 = mat4x4<f32>();

    for (var kt0 = lo; kt0 < hi; kt0 += bk) {
        let nk = min(bk, hi - kt0);

        // V tile loads, in flight while the scores are computed.
        let v0 = f_fetch_v(li, kt0, nk, kvh);
        var v1 = vec4<u32>(0u);
        var v2 = vec4<u32>(0u);
        var v3 = vec4<u32>(0u);
        var v4 = vec4<u32>(0u);
        var v5 = vec4<u32>(0u);
        var v6 = vec4<u32>(0u);
        var v7 = vec4<u32>(0u);
        if (nvf > 1u) { v1 = f_fetch_v(li + WG, kt0, nk, kvh); }
        if (nvf > 2u) { v2 = f_fetch_v(li + 2u * WG, kt0, nk, kvh); }
        if (nvf > 3u) { v3 = f_fetch_v(li + 3u * WG, kt0, nk, kvh); }
        if (nvf > 4u) { v4 = f_fetch_v(li + 4u * WG, kt0, nk, kvh); }
        if (nvf > 5u) { v5 = f_fetch_v(li + 5u * WG, kt0, nk, kvh); }
        if (nvf > 6u) { v6 = f_fetch_v(li + 6u * WG, kt0, nk, kvh); }
        if (nvf > 7u) { v7 = f_fetch_v(li + 7u * WG, kt0, nk, kvh); }

        // S = (scale Q) Kᵀ, 32 head-dim elements at a time; s_m lanes are keys tx + 8n.
        var s0 = vec4<f32>(0.0);
        var s1 = vec4<f32>(0.0);
        var s2 = vec4<f32>(0.0);
        var s3 = vec4<f32>(0.0);
        for (var d0 = 0u; d0 < hd4; d0 += 8u) {
            let qa = f_fetch_q(li, q0, d0, head);
            let qb2 = f_fetch_q(li + WG, q0, d0, head);
            var qc = vec4<f32>(0.0);
            var qd = vec4<f32>(0.0);
            if (nq > 2u) {
                qc = f_fetch_q(li + 2u * WG, q0, d0, head);
                qd = f_fetch_q(li + 3u * WG, q0, d0, head);
            }
            let ka = f_fetch_k(li, kt0, nk, d0, kvh);
            var kb2 = vec4<u32>(0u);
            if (nkf > 1u) { kb2 = f_fetch_k(li + WG, kt0, nk, d0, kvh); }
            workgroupBarrier();
            f_store_q(li, qa);
            f_store_q(li + WG, qb2);
            if (nq > 2u) {
                f_store_q(li + 2u * WG, qc);
                f_store_q(li + 3u * WG, qd);
            }
            f_store_k(li, d0, ka);
            if (nkf > 1u) { f_store_k(li + WG, d0, kb2); }
            workgroupBarrier();
            for (var c = 0u; c < 8u; c++) {
                let kt = kbase + tx * F_CS + c;
                var km = mat4x4<f32>(f_u[kt], f_u[kt + 8u * F_CS], vec4<f32>(0.0), vec4<f32>(0.0));
                if (!wide) {
                    km[2] = f_u[kt + 16u * F_CS];
                    km[3] = f_u[kt + 24u * F_CS];
                }
                let qt = ty * F_CS + c;
                s0 += f_u[qt] * km;
                s1 += f_u[qt + 16u * F_CS] * km;
                if (!wide) {
                    s2 += f_u[qt + 32u * F_CS] * km;
                    s3 += f_u[qt + 48u * F_CS] * km;
                }
            }
        }

        // Soft cap and masks; each thread's row maxima over its keys.
        s0 = f_mask(s0, q0 + ty, kt0, nk, tx);
        s1 = f_mask(s1, q0 + ty + 16u, kt0, nk, tx);
        f_r[ty * 8u + tx] = max4(s0);
        f_r[(ty + 16u) * 8u + tx] = max4(s1);
        if (!wide) {
            s2 = f_mask(s2, q0 + ty + 32u, kt0, nk, tx);
            s3 = f_mask(s3, q0 + ty + 48u, kt0, nk, tx);
            f_r[(ty + 32u) * 8u + tx] = max4(s2);
            f_r[(ty + 48u) * 8u + tx] = max4(s3);
        }
        workgroupBarrier();

        // V tile into workgroup memory; probabilities; rescale the output rows.
        f_store_v(li, v0);
        if (nvf > 1u) { f_store_v(li + WG, v1); }
        if (nvf > 2u) { f_store_v(li + 2u * WG, v2); }
        if (nvf > 3u) { f_store_v(li + 3u * WG, v3); }
        if (nvf > 4u) { f_store_v(li + 4u * WG, v4); }
        if (nvf > 5u) { f_store_v(li + 5u * WG, v5); }
        if (nvf > 6u) { f_store_v(li + 6u * WG, v6); }
        if (nvf > 7u) { f_store_v(li + 7u * WG, v7); }
        let u0 = f_row(s0, ty, mrow.x, lrow.x, tx);
        let u1 = f_row(s1, ty + 16u, mrow.y, lrow.y, tx);
        mrow.x = u0.m;
        lrow.x = u0.l;
        mrow.y = u1.m;
        lrow.y = u1.l;
        if (wide) {
            o0 *= u0.alpha;
            o1 *= u0.alpha;
            o2 *= u1.alpha;
            o3 *= u1.alpha;
        } else {
            let u2 = f_row(s2, ty + 32u, mrow.z, lrow.z, tx);
            let u3 = f_row(s3, ty + 48u, mrow.w, lrow.w, tx);
            mrow.z = u2.m;
            lrow.z = u2.l;
            mrow.w = u3.m;
            lrow.w = u3.l;
            o0 *= u0.alpha;
            o1 *= u1.alpha;
            o2 *= u2.alpha;
            o3 *= u3.alpha;
        }
        workgroupBarrier();

        // O += P V.
        let ps = bk + 1u;
        for (var j = 0u; j < nk; j++) {
            let vlo = f_vmat(j, tx, 0u);
            let p0 = f_p[ty * ps + j];
            let p1 = f_p[(ty + 16u) * ps + j];
            if (wide) {
                let vhi = f_vmat(j, tx, 4u);
                o0 += vlo * p0;
                o1 += vhi * p0;
                o2 += vlo * p1;
                o3 += vhi * p1;
            } else {
                let p2 = f_p[(ty + 32u) * ps + j];
                let p3 = f_p[(ty + 48u) * ps + j];
                o0 += vlo * p0;
                o1 += vlo * p1;
                o2 += vlo * p2;
                o3 += vlo * p3;
            }
        }
    }

    // Row sums over the 8 threads of a row, then normalise and store.
    workgroupBarrier();
    f_r[ty * 8u + tx] = lrow.x;
    f_r[(ty + 16u) * 8u + tx] = lrow.y;
    if (!wide) {
        f_r[(ty + 32u) * 8u + tx] = lrow.z;
        f_r[(ty + 48u) * 8u + tx] = lrow.w;
    }
    workgroupBarrier();
    let inv0 = f_inv_sum(ty);
    let inv1 = f_inv_sum(ty + 16u);
    if (wide) {
        f_store_o(o0, q0 + ty, head, inv0, tx, 0u);
        f_store_o(o1, q0 + ty, head, inv0, tx, 4u);
        f_store_o(o2, q0 + ty + 16u, head, inv1, tx, 0u);
        f_store_o(o3, q0 + ty + 16u, head, inv1, tx, 4u);
    } else {
        f_store_o(o0, q0 + ty, head, inv0, tx, 0u);
        f_store_o(o1, q0 + ty + 16u, head, inv1, tx, 0u);
        f_store_o(o2, q0 + ty + 32u, head, f_inv_sum(ty + 32u), tx, 0u);
        f_store_o(o3, q0 + ty + 48u, head, f_inv_sum(ty + 48u), tx, 0u);
    }
}
