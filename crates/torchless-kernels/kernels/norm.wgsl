// Row norms: rmsnorm (plain or Gemma's 1 + w), layernorm (optional bias), each optionally fused with a
// residual add (sum = x + res is written, then normed). A body file: row_units.wgsl precedes it (loads,
// stores and values by unit), and row_reduce_subgroup.wgsl or row_reduce_workgroup.wgsl follows it with
// the reduction and the entry point `main`.
//
// Work split: TPR threads (a power of two) share one row; a workgroup of WG threads holds WG / TPR rows.
// A row is read in "units": UNIT = 4 loads a vec4<u32> (the row must start on a 16-byte boundary: n a
// multiple of 4 for f32, of 8 for f16/bf16), UNIT = 1 loads one u32 word (any row). A thread takes its
// units UPT at a time ("a chunk": units b + lane + k * TPR, k < UPT), and issues the UPT loads of a chunk
// together, before any arithmetic on them, so that UPT loads per thread are in flight (a load past the
// row's end reads the row's last unit again instead of branching). A row of at most UPT * TPR units is one
// chunk, kept in registers from the read to the write: one read of memory. Longer rows stream chunk by
// chunk and read all but their last chunk a second time for the output (mostly from L2).
//
// f16/bf16 rows of odd length share a word with their neighbour rows: the host then launches the even
// rows and the odd rows as two dispatches (row0, row_step = 2), and a thread writes a shared word by
// read-modify-write of its own half, which no other thread of the dispatch touches.
//
// Statistics are robust to overflow: a partial is (p, count, m, q) with p a power of two near max |t|
// (t = v for rmsnorm, v - shift for layernorm), m the mean of t / p and q the sum of (t / p - m)^2 (for
// rmsnorm m stays 0 and q is the sum of (v / p)^2); partials merge by exact power-of-two rescaling and
// Chan's pairwise update, so one reduction gives both the mean and the variance, and mean(x^2) is never
// formed as an f32 that could overflow for |x| ~ 1e30.

override DTYPE: u32 = 0u;        // x, res, sum, y
override WDTYPE: u32 = 0u;       // weight and bias
override MODE: u32 = 0u;         // 0 rmsnorm, 1 layernorm
override GEMMA: bool = false;    // rmsnorm scales by (1 + w)
override HAS_BIAS: bool = false; // layernorm adds b
override ADD: bool = false;      // the row is x + res, written to sum before it is normed
override UNIT: u32 = 4u;         // words per load: 4 or 1
override TPR: u32 = 256u;        // threads per row
override UPT: u32 = 4u;          // units per thread and chunk, 1 to 4
override WG: u32 = 256u;         // threads per workgroup, a multiple of TPR
override CHUNK: u32 = 16u;       // row_reduce_workgroup.wgsl: partials merged per thread in its first level
// Every row is one chunk of whole vec4 units (UNIT 4, at most UPT units a thread), so a thread's values stay
// in registers from the read to the write; its statistics then come from two cheap reductions (held_stats).
override HELD: bool = false;

struct Params {
    rows: u32,
    n: u32,
    row0: u32,
    row_step: u32,
    eps: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Every binding is used by the one entry point; the host binds the output again for res and sum when
// ADD is off (never accessed then), the weight again for b when there is no bias, and the residual's own
// buffer as sum for the in-place residual update (each word is read through res, then written through sum,
// by the same thread).
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read> x: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read_write> res: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read_write> y: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read_write> sum: array<vec4<u32>>;

// ---- memory access by unit (x and y: row_units.wgsl) --------------------------------------------------

fn ld_res(g: u32) -> vec4<u32> {
    if (UNIT == 4u) {
        return res[g];
    }
    return vec4<u32>(res[g >> 2u][g & 3u], 0u, 0u, 0u);
}

fn ld_sum(g: u32) -> vec4<u32> {
    if (UNIT == 4u) {
        return sum[g];
    }
    return vec4<u32>(sum[g >> 2u][g & 3u], 0u, 0u, 0u);
}

// Only the halves whose column lies in the row are replaced (UNIT = 1 with 16-bit types).
fn st_sum(g: u32, v: vec4<u32>, col0: u32) {
    if (UNIT == 4u) {
        sum[g] = v;
    } else {
        sum[g >> 2u][g & 3u] = merge_word(v.x, sum[g >> 2u][g & 3u], col0);
    }
}

// Whether column c (wrapped below 0 for a row starting mid-word) lies in the row; whole vec4 units always do.
fn in_row(c: u32) -> bool {
    return UNIT == 4u || c < p.n;
}

// ---- values of a unit -----------------------------------------------------------------------------

// UNIT 4: a unit's values as two vec4s (f32: elements 0..3 in lo, hi unused; 16-bit: 0..3 and 4..7).
// Spelled out so that no private array is indexed by a loop variable (naga's loop counters keep drivers
// from unrolling such loops, and the arrays then live in slow local memory).
struct Vals {
    lo: vec4<f32>,
    hi: vec4<f32>,
}

fn unit_vals(u: vec4<u32>) -> Vals {
    if (DTYPE == DT_F32) {
        return Vals(bitcast<vec4<f32>>(u), vec4<f32>(0.0));
    }
    return Vals(vec4<f32>(unpack_pair(DTYPE, u.x), unpack_pair(DTYPE, u.y)),
                vec4<f32>(unpack_pair(DTYPE, u.z), unpack_pair(DTYPE, u.w)));
}

fn pack_vals(v: Vals) -> vec4<u32> {
    if (DTYPE == DT_F32) {
        return bitcast<vec4<u32>>(v.lo);
    }
    return vec4<u32>(pack_pair(DTYPE, v.lo.xy), pack_pair(DTYPE, v.lo.zw), pack_pair(DTYPE, v.hi.xy),
                     pack_pair(DTYPE, v.hi.zw));
}

// x + res of one unit, rounded to DTYPE.
fn add_unit(a: vec4<u32>, r: vec4<u32>) -> vec4<u32> {
    if (UNIT == 4u) {
        let va = unit_vals(a);
        let vr = unit_vals(r);
        return pack_vals(Vals(va.lo + vr.lo, va.hi + vr.hi));
    }
    var o: array<f32, 8>;
    for (var e = 0u; e < epu(); e++) {
        o[e] = uval(a, e) + uval(r, e);
    }
    return pack_unit(o);
}

// ---- weight and bias ------------------------------------------------------------------------------

fn param_vec(bias: bool, i: u32) -> vec4<u32> {
    if (bias) {
        return b[i];
    }
    return w[i];
}

// The weight (or bias) values of the unit whose first column is col0.
fn params_of(bias: bool, col0: u32) -> array<f32, 8> {
    var o: array<f32, 8>;
    if (UNIT == 4u) {
        // col0 is a multiple of epu() (4 or 8).
        if (WDTYPE == DT_F32) {
            let a = param_vec(bias, col0 >> 2u);
            o[0] = bitcast<f32>(a.x);
            o[1] = bitcast<f32>(a.y);
            o[2] = bitcast<f32>(a.z);
            o[3] = bitcast<f32>(a.w);
            if (epu() == 8u) {
                let c = param_vec(bias, (col0 >> 2u) + 1u);
                o[4] = bitcast<f32>(c.x);
                o[5] = bitcast<f32>(c.y);
                o[6] = bitcast<f32>(c.z);
                o[7] = bitcast<f32>(c.w);
            }
        } else {
            let q = param_vec(bias, col0 >> 3u);
            if (epu() == 8u) {
                let v0 = unpack_pair(WDTYPE, q.x);
                let v1 = unpack_pair(WDTYPE, q.y);
                let v2 = unpack_pair(WDTYPE, q.z);
                let v3 = unpack_pair(WDTYPE, q.w);
                o = array<f32, 8>(v0.x, v0.y, v1.x, v1.y, v2.x, v2.y, v3.x, v3.y);
            } else {
                let h = select(q.xy, q.zw, (col0 & 4u) != 0u);
                let v0 = unpack_pair(WDTYPE, h.x);
                let v1 = unpack_pair(WDTYPE, h.y);
                o[0] = v0.x;
                o[1] = v0.y;
                o[2] = v1.x;
                o[3] = v1.y;
            }
        }
    } else {
        for (var e = 0u; e < epu(); e++) {
            let c = col0 + e;
            if (c < p.n) {
                let wi = word_index(WDTYPE, c);
                o[e] = decode(WDTYPE, param_vec(bias, wi >> 2u)[wi & 3u], c);
            }
        }
    }
    return o;
}

// ---- statistics -----------------------------------------------------------------------------------
//
// p is a power of two (0 while every t is 0) at least half the largest |t| seen. Scaling by a power of
// two is exact, and the reciprocals are formed from the exponent bits: no division, and nothing falls
// into the subnormal range that GPUs flush to zero (1 / 3e38 would).

// The power of two with |m|'s exponent, clamped to [2^-126, 2^126]; 0 for 0.
fn pow2_of(m: f32) -> f32 {
    if (m == 0.0) {
        return 0.0;
    }
    let e = clamp((bitcast<u32>(m) >> 23u) & 0xffu, 1u, 253u);
    return bitcast<f32>(e << 23u);
}

// The exponent of 1 / p for a power of two p from pow2_of: t / p is ldexp(t, inv_exp(p)).
fn inv_exp(p: f32) -> i32 {
    return 127 - i32(bitcast<u32>(p) >> 23u);
}

// 1 / p for a power of two p from pow2_of (exact).
fn pow2_inv(p: f32) -> f32 {
    return bitcast<f32>(u32(inv_exp(p) + 127) << 23u);
}

// Values that are summed after scaling are scaled without a multiplication (ldexp, or pow2_ratio below):
// GPU compilers may factor a common factor out of a sum, x·r + y·r → (x + y)·r, and x + y can overflow
// where x·r + y·r cannot (the likely cause of the NaN that NVIDIA's Vulkan driver gave for layernorm rows
// near f32's largest).
//
// a / p for powers of two a <= p from pow2_of, from the exponent bits: 0 for a = 0 and below 2^-126.
fn pow2_ratio(a: f32, p: f32) -> f32 {
    let d = i32(bitcast<u32>(a) >> 23u) + inv_exp(p);
    return select(0.0, bitcast<f32>(u32(d) << 23u), a != 0.0 && d >= 1);
}

// The partial of no values.
fn empty() -> vec4<f32> {
    return vec4<f32>(0.0);
}

// Merges two partials (p, count, m, q): both are rescaled to the larger p (exactly), then Chan's update
// m = (na ma + nb mb) / n, q = qa + qb + (mb - ma)^2 na nb / n. Written symmetrically in a and b, so that
// every lane of a shuffle reduction ends with the same bits.
fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    if (a.y == 0.0) {
        return b;
    }
    if (b.y == 0.0) {
        return a;
    }
    let n = a.y + b.y;
    let p = max(a.x, b.x);
    if (p == 0.0) {
        return vec4<f32>(0.0, n, 0.0, 0.0);
    }
    let fa = pow2_ratio(a.x, p);
    let fb = pow2_ratio(b.x, p);
    let qa = a.w * fa * fa;
    let qb = b.w * fb * fb;
    if (MODE == 0u) {
        return vec4<f32>(p, n, 0.0, qa + qb);
    }
    let ma = a.z * fa;
    let mb = b.z * fb;
    let d = mb - ma;
    return vec4<f32>(p, n, (a.y * ma + b.y * mb) / n, qa + qb + d * d * (a.y * b.y / n));
}

// The row reduction's stages: Chan partials (streamed rows); for held rows, a plain sum after either
// (p, Σ t / p) with p a power of two as in combine (layernorm) or the largest |v| (rmsnorm).
const CHAN: u32 = 0u;
const SCALED_SUM: u32 = 1u;
const SUM: u32 = 2u;
const MAX: u32 = 3u;

fn merge(stage: u32, a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    if (stage == SUM) {
        return a + b;
    }
    if (stage == MAX) {
        // Largest |v|s, compared as bits (abs_bits).
        return bitcast<vec4<f32>>(max(bitcast<vec4<u32>>(a), bitcast<vec4<u32>>(b)));
    }
    if (stage == SCALED_SUM) {
        // Rescaling by the ratio of two powers of two is exact (or flushes what is negligible to 0).
        let p = max(a.x, b.x);
        if (p == 0.0) {
            return vec4<f32>(0.0);
        }
        return vec4<f32>(p, a.y * pow2_ratio(a.x, p) + b.y * pow2_ratio(b.x, p), 0.0, 0.0);
    }
    return combine(a, b);
}

// The partial of the values of unit u of the row (none if u is past the row), less `shift`.
fn unit_stats(c: vec4<u32>, u: u32, shift: f32) -> vec4<f32> {
    if (u >= nu_) {
        return empty();
    }
    if (UNIT == 4u) {
        return unit_stats_vec(unit_vals(c), shift);
    }
    let col0 = col_of(u);
    var mx = 0u;
    var cnt = 0.0;
    for (var e = 0u; e < epu(); e++) {
        if (in_row(col0 + e)) {
            mx = max(mx, bitcast<u32>(uval(c, e) - shift) & 0x7fffffffu);
            cnt += 1.0;
        }
    }
    let pw = pow2_of(bitcast<f32>(mx));
    if (pw == 0.0) {
        return vec4<f32>(0.0, cnt, 0.0, 0.0);
    }
    let r = pow2_inv(pw);
    var m = 0.0;
    if (MODE == 1u) {
        let k = inv_exp(pw);
        for (var e = 0u; e < epu(); e++) {
            if (in_row(col0 + e)) {
                m += ldexp(uval(c, e) - shift, k);
            }
        }
        m = m / cnt;
    }
    var q = 0.0;
    for (var e = 0u; e < epu(); e++) {
        if (in_row(col0 + e)) {
            let t = (uval(c, e) - shift) * r - m;
            q += t * t;
        }
    }
    return vec4<f32>(pw, cnt, m, q);
}

// t = v − shift of a UNIT-4 unit's values (hi is 0 for an f32 unit, which holds 4).
fn unit_t(v: Vals, shift: f32) -> Vals {
    return Vals(v.lo - vec4<f32>(shift), select(vec4<f32>(0.0), v.hi - vec4<f32>(shift), DTYPE != DT_F32));
}

// The bits of a unit's largest |v|. Non-negative floats order as their bits do, with a NaN above them all,
// so the largest |v| of values holding a NaN is NaN (its p then 2^126, and its sums NaN) where GPUs' max
// could drop the NaN (NVIDIA's does) and leave p = 0, whose shortcuts would lose it.
fn abs_bits(v: Vals) -> u32 {
    let mask = vec4<u32>(0x7fffffffu);
    let a = max(bitcast<vec4<u32>>(v.lo) & mask, bitcast<vec4<u32>>(v.hi) & mask);
    return max(max(a.x, a.y), max(a.z, a.w));
}

// unit_stats of a whole UNIT-4 unit (4 f32 or 8 16-bit values, all in the row), in vector operations.
fn unit_stats_vec(v: Vals, shift: f32) -> vec4<f32> {
    let wide = DTYPE != DT_F32;
    let cnt = select(4.0, 8.0, wide);
    let t = unit_t(v, shift);
    let a = t.lo;
    let b = t.hi;
    let pw = pow2_of(bitcast<f32>(abs_bits(t)));
    if (pw == 0.0) {
        return vec4<f32>(0.0, cnt, 0.0, 0.0);
    }
    let r = pow2_inv(pw);
    var ar = a * r;
    var br = b * r;
    var m = 0.0;
    if (MODE == 1u) {
        // Summed: scaled through the exponent.
        let k = vec4<i32>(inv_exp(pw));
        ar = ldexp(a, k);
        br = ldexp(b, k);
        m = dot(ar + br, vec4<f32>(1.0)) / cnt;
    }
    let ta = ar - vec4<f32>(m);
    var q = dot(ta, ta);
    if (wide) {
        let tb = br - vec4<f32>(m);
        q += dot(tb, tb);
    }
    return vec4<f32>(pw, cnt, m, q);
}

// How a row is normed: y = (t / p - m) * s * w (+ b), with t = v - shift, p from pow2_of and m the mean
// of t / p. Kept apart rather than folded into one factor s / p: for a row near f32's largest, 1 / rms is
// below 2^-126, and GPUs flush such subnormal factors to zero (NVIDIA's Vulkan driver does).
struct RowNorm {
    inv_p: f32,
    mean: f32,
    scale: f32,
}

// s = p / sqrt(p^2 q + eps), without forming p^2 (q = mean of (t / p - m)^2, at most 16). A row whose
// t / p - m are all 0 (a zero or constant row) gets s = 0: its output is 0 (or b) whatever s is.
//
// eps / p^2 is scaled through the exponent, never as eps * r * r: r * r overflows for p < 2^-64, and a
// compiler that forms it first turns eps = 0 into 0 * inf = NaN (NVIDIA's Vulkan driver did, for a row of
// values near 1e-30).
fn row_norm(p: f32, m: f32, q: f32, eps: f32) -> RowNorm {
    let r = pow2_inv(p);
    if (p == 0.0 || q == 0.0) {
        return RowNorm(r, m, 0.0);
    }
    let k = inv_exp(p);
    let eps_exp = i32((bitcast<u32>(eps) >> 23u) & 0xffu) - 127;
    if (eps > 0.0 && eps_exp + 2 * k > 100) {
        // eps / p^2 > 2^100 while q <= 16: p^2 q is negligible next to eps; p >= 2^-126 keeps s normal.
        return RowNorm(r, m, p * inverseSqrt(eps));
    }
    // Each step's exponent stays within ldexp's range (|k| <= 126); what falls below 2^-126 is negligible.
    return RowNorm(r, m, inverseSqrt(q + ldexp(ldexp(eps, k), k)));
}

// The value v rounded to DTYPE.
fn round_dt(v: f32) -> f32 {
    if (DTYPE == DT_F32) {
        return v;
    }
    return unpack_pair(DTYPE, pack_pair(DTYPE, vec2<f32>(v, v))).x;
}

// Element i of the tensor as the norm sees it (x, or x + res rounded).
fn element(i: u32) -> f32 {
    let wi = word_index(DTYPE, i);
    let v = decode(DTYPE, x[wi >> 2u][wi & 3u], i);
    if (!ADD) {
        return v;
    }
    return round_dt(v + decode(DTYPE, res[wi >> 2u][wi & 3u], i));
}

// ---- units of the row -----------------------------------------------------------------------------

// The memory unit that unit u of the row is loaded from: past the row's end, its last unit again (the
// same line another thread loads), so that loads need no branch.
fn addr_of(u: u32) -> u32 {
    return fu_ + min(u, last_);
}

// x + res of unit u, written to sum when u lies in the row.
fn add_and_store(a: vec4<u32>, r: vec4<u32>, u: u32) -> vec4<u32> {
    let s = add_unit(a, r);
    if (u < nu_) {
        st_sum(fu_ + u, s, col_of(u));
    }
    return s;
}

// ---- held rows --------------------------------------------------------------------------------------
//
// Merging Chan partials costs two divisions and a rescale, eleven merges deep across a row's 256 threads:
// that chain, not memory, set layernorm's pace. A row held in registers can afford two reductions with
// merges of a few instructions instead: the row's power of two p and Σ t / p first, then Σ (t / p − mean)²,
// the same two-pass statistics (t = v − shift, every term at most 16). Rmsnorm needs no mean: the row's
// largest |v| first (its power of two p), then Σ (v / p)².

// Whether unit k of a thread's chunk (unit u0 + k·TPR) was loaded and lies in the row.
fn in_chunk(u0: u32, k: u32) -> bool {
    return k < UPT && u0 + k * TPR < nu_;
}

// t of chunk unit k as loaded in c, 0 when it is not in_chunk.
fn held_t(c: vec4<u32>, u0: u32, k: u32, shift: f32) -> Vals {
    let t = unit_t(unit_vals(c), shift);
    let keep = in_chunk(u0, k);
    return Vals(select(vec4<f32>(0.0), t.lo, keep), select(vec4<f32>(0.0), t.hi, keep));
}

// (p, Σ t / p) of one unit's values, p = pow2_of(max |t|) (0 for an all-zero unit).
fn unit_scaled_sum(t: Vals) -> vec4<f32> {
    let p = pow2_of(bitcast<f32>(abs_bits(t)));
    if (p == 0.0) {
        return vec4<f32>(0.0);
    }
    let k = vec4<i32>(inv_exp(p));
    return vec4<f32>(p, dot(ldexp(t.lo, k) + ldexp(t.hi, k), vec4<f32>(1.0)), 0.0, 0.0);
}

// Σ (t·r − m)² of the values of chunk unit k (none when it is not in_chunk).
fn dev2(v: Vals, u0: u32, k: u32, r: f32, m: f32) -> f32 {
    if (!in_chunk(u0, k)) {
        return 0.0;
    }
    let a = v.lo * r - vec4<f32>(m);
    var q = dot(a, a);
    if (DTYPE != DT_F32) {
        let b = v.hi * r - vec4<f32>(m);
        q += dot(b, b);
    }
    return q;
}

// The statistics of a held row; every thread calls it (two row reductions).
fn held_stats(li: u32, lane: u32, c0: vec4<u32>, c1: vec4<u32>, c2: vec4<u32>, c3: vec4<u32>, u0: u32,
              shift: f32) -> RowNorm {
    let t0 = held_t(c0, u0, 0u, shift);
    let t1 = held_t(c1, u0, 1u, shift);
    let t2 = held_t(c2, u0, 2u, shift);
    let t3 = held_t(c3, u0, 3u, shift);
    let mx = bitcast<f32>(max(max(abs_bits(t0), abs_bits(t1)), max(abs_bits(t2), abs_bits(t3))));
    let nf = f32(p.n);
    // The row's power of two pw and the mean m of t / pw (0 for rmsnorm).
    var pw: f32;
    var m = 0.0;
    if (MODE == 0u) {
        pw = pow2_of(row_reduce(li, lane, vec4<f32>(mx, 0.0, 0.0, 0.0), MAX).x);
    } else {
        let first = row_reduce(li, lane, held_scaled_sum(mx, t0, t1, t2, t3), SCALED_SUM);
        pw = first.x;
        m = first.y / nf;
    }
    let r = pow2_inv(pw);
    let q = dev2(t0, u0, 0u, r, m) + dev2(t1, u0, 1u, r, m) + dev2(t2, u0, 2u, r, m) + dev2(t3, u0, 3u, r, m);
    // The first reduction's workgroup memory may still be read by other subgroups.
    workgroupBarrier();
    let second = row_reduce(li, lane, vec4<f32>(select(0.0, q, pw > 0.0), 0.0, 0.0, 0.0), SUM);
    return row_norm(pw, m, second.x / nf, p.eps);
}

// A thread's (p, Σ t / p) of its held values t0..t3 (mx: their largest |t|).
fn held_scaled_sum(mx: f32, t0: Vals, t1: Vals, t2: Vals, t3: Vals) -> vec4<f32> {
    if (mx < 0x1p100f) {
        // The thread's 16 or 32 values summed as they are (no overflow below 2^100), scaled once.
        let pl = pow2_of(mx);
        let rl = pow2_inv(pl);
        let one = vec4<f32>(1.0);
        let sl = dot(t0.lo + t1.lo + t2.lo + t3.lo, one) + dot(t0.hi + t1.hi + t2.hi + t3.hi, one);
        return vec4<f32>(pl, select(0.0, sl * rl, pl > 0.0), 0.0, 0.0);
    }
    // Values near f32's largest: each unit scaled by its own power of two before anything is added.
    // Costs ~5 % of the kernel's speed on an H200 when taken for every row.
    let a = merge(SCALED_SUM, unit_scaled_sum(t0), unit_scaled_sum(t1));
    return merge(SCALED_SUM, a, merge(SCALED_SUM, unit_scaled_sum(t2), unit_scaled_sum(t3)));
}

// ---- output ---------------------------------------------------------------------------------------

// The normed unit: rmsnorm v / p * s * w (or 1 + w); layernorm ((v - shift) / p - m) * s * w + b.
fn norm_unit(u: vec4<u32>, col0: u32, shift: f32, st: RowNorm) -> vec4<u32> {
    let wv = params_of(false, col0);
    var bv: array<f32, 8>;
    if (MODE == 1u && HAS_BIAS) {
        bv = params_of(true, col0);
    }
    if (UNIT == 4u) {
        // Constant indices only: the arrays stay in registers.
        var wl = vec4<f32>(wv[0], wv[1], wv[2], wv[3]);
        var wh = vec4<f32>(wv[4], wv[5], wv[6], wv[7]);
        let v = unit_vals(u);
        if (MODE == 0u) {
            if (GEMMA) {
                wl += vec4<f32>(1.0);
                wh += vec4<f32>(1.0);
            }
            return pack_vals(Vals(v.lo * st.inv_p * st.scale * wl, v.hi * st.inv_p * st.scale * wh));
        }
        let bl = vec4<f32>(bv[0], bv[1], bv[2], bv[3]);
        let bh = vec4<f32>(bv[4], bv[5], bv[6], bv[7]);
        let t = unit_t(v, shift);
        let m = vec4<f32>(st.mean);
        return pack_vals(Vals((t.lo * st.inv_p - m) * st.scale * wl + bl, (t.hi * st.inv_p - m) * st.scale * wh + bh));
    }
    var o: array<f32, 8>;
    for (var e = 0u; e < epu(); e++) {
        let v = uval(u, e);
        if (MODE == 0u) {
            o[e] = v * st.inv_p * st.scale * select(wv[e], 1.0 + wv[e], GEMMA);
        } else {
            o[e] = ((v - shift) * st.inv_p - st.mean) * st.scale * wv[e] + bv[e];
        }
    }
    return pack_unit(o);
}

fn write_unit(c: vec4<u32>, u: u32, shift: f32, st: RowNorm) {
    if (u < nu_) {
        let col0 = col_of(u);
        st_y(fu_ + u, norm_unit(c, col0, shift, st), col0);
    }
}

// The row as the norm sees it, for the second read of a streamed row: x, or the sum written by this
// same thread in the first read.
fn reload(u: u32) -> vec4<u32> {
    if (ADD) {
        return ld_sum(addr_of(u));
    }
    return ld_x(addr_of(u));
}

fn run(g: u32, li: u32) {
    let lane = li % TPR;
    let r = p.row0 + (g * (WG / TPR) + li / TPR) * p.row_step;
    let n = p.n;
    let ep = epu();
    // Threads past the last row work on the last row (their loads stay in bounds) but write nothing.
    let rr = min(r, p.rows - 1u);
    es_ = rr * n;
    fu_ = es_ / ep;
    let units = (es_ + n - 1u) / ep - fu_ + 1u;
    nu_ = select(0u, units, r < p.rows);
    last_ = units - 1u;
    let step = UPT * TPR;

    // Layernorm works on t = v - shift with the row's first element as shift, so that a constant row
    // gives exactly mean = shift and variance 0, and rows far from 0 (1e4 +- 1) lose no precision.
    var shift = 0.0;
    if (MODE == 1u) {
        shift = element(es_);
        if (ADD) {
            // The in-place sum may overwrite res[es] below.
            workgroupBarrier();
        }
    }

    // First read: the partial of each chunk (not for held rows, whose statistics come after the loop).
    // c0..c3 keep the last chunk for the output.
    let two_pass = HELD;
    var acc = empty();
    var c0 = vec4<u32>(0u);
    var c1 = vec4<u32>(0u);
    var c2 = vec4<u32>(0u);
    var c3 = vec4<u32>(0u);
    var b = 0u;
    for (var bb = 0u; bb < nu_; bb += step) {
        b = bb;
        let u0 = bb + lane;
        let u1 = u0 + TPR;
        let u2 = u1 + TPR;
        let u3 = u2 + TPR;
        // Every load of the chunk first, then the arithmetic.
        c0 = ld_x(addr_of(u0));
        if (UPT > 1u) {
            c1 = ld_x(addr_of(u1));
        }
        if (UPT > 2u) {
            c2 = ld_x(addr_of(u2));
        }
        if (UPT > 3u) {
            c3 = ld_x(addr_of(u3));
        }
        if (ADD) {
            let r0 = ld_res(addr_of(u0));
            var r1 = vec4<u32>(0u);
            var r2 = vec4<u32>(0u);
            var r3 = vec4<u32>(0u);
            if (UPT > 1u) {
                r1 = ld_res(addr_of(u1));
            }
            if (UPT > 2u) {
                r2 = ld_res(addr_of(u2));
            }
            if (UPT > 3u) {
                r3 = ld_res(addr_of(u3));
            }
            c0 = add_and_store(c0, r0, u0);
            if (UPT > 1u) {
                c1 = add_and_store(c1, r1, u1);
            }
            if (UPT > 2u) {
                c2 = add_and_store(c2, r2, u2);
            }
            if (UPT > 3u) {
                c3 = add_and_store(c3, r3, u3);
            }
        }
        if (two_pass) {
            continue;
        }
        var part = unit_stats(c0, u0, shift);
        if (UPT > 1u) {
            part = combine(part, unit_stats(c1, u1, shift));
        }
        if (UPT > 2u) {
            part = combine(part, unit_stats(c2, u2, shift));
        }
        if (UPT > 3u) {
            part = combine(part, unit_stats(c3, u3, shift));
        }
        acc = combine(acc, part);
    }

    var st: RowNorm;
    if (two_pass) {
        st = held_stats(li, lane, c0, c1, c2, c3, b + lane, shift);
    } else {
        let tot = row_reduce(li, lane, acc, CHAN);
        st = row_norm(tot.x, tot.z, tot.w / f32(n), p.eps);
    }

    // Output: the chunks before the last are read again, the last one is still in registers.
    for (var bb = 0u; bb < b; bb += step) {
        let u0 = bb + lane;
        let u1 = u0 + TPR;
        let u2 = u1 + TPR;
        let u3 = u2 + TPR;
        let d0 = reload(u0);
        var d1 = vec4<u32>(0u);
        var d2 = vec4<u32>(0u);
        var d3 = vec4<u32>(0u);
        if (UPT > 1u) {
            d1 = reload(u1);
        }
        if (UPT > 2u) {
            d2 = reload(u2);
        }
        if (UPT > 3u) {
            d3 = reload(u3);
        }
        write_unit(d0, u0, shift, st);
        if (UPT > 1u) {
            write_unit(d1, u1, shift, st);
        }
        if (UPT > 2u) {
            write_unit(d2, u2, shift, st);
        }
        if (UPT > 3u) {
            write_unit(d3, u3, shift, st);
        }
    }
    let u0 = b + lane;
    write_unit(c0, u0, shift, st);
    if (UPT > 1u) {
        write_unit(c1, u0 + TPR, shift, st);
    }
    if (UPT > 2u) {
        write_unit(c2, u0 + 2u * TPR, shift, st);
    }
    if (UPT > 3u) {
        write_unit(c3, u0 + 3u * TPR, shift, st);
    }
}
