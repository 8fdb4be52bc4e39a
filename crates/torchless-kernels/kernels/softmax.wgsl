// Row-wise softmax, numerically stable, with a scale, an optional soft cap (cap * tanh(x / cap), after the
// scale) and an optional causal mask (row r is query position (r mod q_rows) + offset; columns past it are
// masked). Masked columns and rows with nothing to weigh (fully masked, or all -inf) come out as 0; a row
// with a NaN or +inf score comes out as NaN, every column, as in PyTorch (its sum is NaN there). A body
// file: row_units.wgsl precedes it (loads, stores and values by unit), and row_reduce_subgroup.wgsl or
// row_reduce_workgroup.wgsl follows it with the reduction and the entry point `main`.
//
// Work split as in norm.wgsl: TPR threads per row, WG / TPR rows per workgroup, UNIT = 4 (vec4 loads, rows
// 16-byte aligned) or 1 (word loads, any row); a thread issues the UPT loads of a chunk of units together,
// a row of at most UPT * TPR units stays in registers (one read, one write), longer rows are streamed
// chunk by chunk and all but the last chunk read again for the output. Each thread keeps an online (max,
// sum of exp(v - max)); partials merge by rescaling. Units wholly past the causal mask are never read from
// memory (their loads go to the last visible unit). f16/bf16 rows of odd length are launched as even and
// odd rows (row0, row_step = 2) and words shared with a neighbour row are written by read-modify-write.

override DTYPE: u32 = 0u;
override SOFTCAP: bool = false;
override CAUSAL: bool = false;
override UNIT: u32 = 4u;         // words per load: 4 or 1
override TPR: u32 = 256u;        // threads per row
override UPT: u32 = 4u;          // units per thread and chunk, 1 to 4
override WG: u32 = 256u;         // threads per workgroup, a multiple of TPR
override CHUNK: u32 = 16u;       // row_reduce_workgroup.wgsl: partials merged per thread in its first level

struct Params {
    rows: u32,
    n: u32,
    row0: u32,
    row_step: u32,
    // Causal mask: row r may see columns below (r mod q_rows) + mask_add - mask_sub (saturating at 0):
    // the offset + 1, split into its positive and negative parts.
    q_rows: u32,
    mask_add: u32,
    mask_sub: u32,
    _pad: u32,
    scale: f32,
    cap: f32,
    _pad1: u32,
    _pad2: u32,
}

// For the in-place form the host binds one buffer as both x and y; each word is read through x and
// written through y by the same thread.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<u32>>;

// The mask limit of the thread's row (row_units.wgsl holds the rest of its place in the row; here the
// last unit a load may touch is the last one with a visible column).
var<private> limit_: u32;

// Stands for -inf (WGSL has no infinite constants): below every finite score.
const LOWEST: f32 = -3.4028234663852886e38;

// Whether column c takes part: below the mask limit (which is n without a mask). Whole vec4 units of an
// unmasked row always do.
fn visible(c: u32, limit: u32) -> bool {
    return (UNIT == 4u && !CAUSAL) || c < limit;
}

// The score of one element: scale, then the soft cap.
fn score(v: f32) -> f32 {
    let t = v * p.scale;
    if (SOFTCAP) {
        return p.cap * safe_tanh(t / p.cap);
    }
    return t;
}

// What a row's max is taken over: the score with a soft cap, else the value itself (scale > 0 keeps the
// order).
fn key(v: f32) -> f32 {
    if (SOFTCAP) {
        return score(v);
    }
    return v;
}

const LOG2E: f32 = 1.4426950408889634;

// A key's score less the row's, times log2(e) (exp_neg takes powers of two: one product for both
// factors). Without a soft cap the scale comes after the subtraction: scaled first, a compiler may fuse
// v·scale − m into one fma, whose unrounded product misses the max's rounded one by up to half an ulp,
// far from 0 near 1e30 (NVIDIA's Vulkan driver did: the largest score weighed inf or 0).
fn key_diff(k: f32, m: f32) -> f32 {
    if (SOFTCAP) {
        return (k - m) * LOG2E;
    }
    return (k - m) * (p.scale * LOG2E);
}

// 2^d for d <= 0, with d clamped so that -inf and overflowed differences give exactly 0 (GPUs may not
// honour infinities in arithmetic). A row's max key is at least LOWEST, so -inf scores weigh 0, as if
// masked, and a row of them sums to 0. Used where a NaN need not survive: the partials' merge (their sums
// already carry it) and the output weights (a NaN row is written whole, see poisoned_).
fn exp_neg(d: f32) -> f32 {
    return exp2(max(d, -300.0));
}

// exp_neg for the row's sum, keeping a NaN: a NaN d fails the comparison and weighs 2^NaN, where the
// clamp's max would drop it (NVIDIA's max returns the other operand). A NaN score so makes the sum NaN
// whatever max did with it, and +inf, the row's max, makes inf − inf = NaN: either way the row is NaN.
fn exp_neg_keeping_nan(d: f32) -> f32 {
    return select(exp2(d), 0.0, d < -300.0);
}

// The partial of no values: (max key, sum of exp(score - max score), unused, unused).
fn empty() -> vec4<f32> {
    return vec4<f32>(LOWEST, 0.0, 0.0, 0.0);
}

// Merges two partials; symmetric in a and b, so that every lane of a shuffle reduction ends with the same
// bits.
fn combine(a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    let m = max(a.x, b.x);
    return vec4<f32>(m, a.y * exp_neg(key_diff(a.x, m)) + b.y * exp_neg(key_diff(b.x, m)), 0.0, 0.0);
}

// The row reduction's merge: softmax reduces in one stage.
fn merge(stage: u32, a: vec4<f32>, b: vec4<f32>) -> vec4<f32> {
    return combine(a, b);
}

// Whether unit u lies in the row and has a column below the mask limit.
fn unit_visible(u: u32) -> bool {
    let col0 = col_of(u);
    return u < nu_ && (col0 < limit_ || col0 + epu() - 1u < limit_);
}

// Unit u of the row, loaded without a branch: units past the row or wholly masked load the last visible
// unit again (a line another thread of the row loads anyway), so they cost no memory traffic.
fn load_unit(u: u32) -> vec4<u32> {
    return ld_x(fu_ + min(u, last_));
}

// The partial (max key, sum of exp(score − max score)) of the visible values of unit u.
fn unit_part(c: vec4<u32>, u: u32) -> vec4<f32> {
    if (!unit_visible(u)) {
        return empty();
    }
    let col0 = col_of(u);
    var um = LOWEST;
    for (var e = 0u; e < epu(); e++) {
        if (visible(col0 + e, limit_)) {
            um = max(um, key(uval(c, e)));
        }
    }
    var s = 0.0;
    for (var e = 0u; e < epu(); e++) {
        if (visible(col0 + e, limit_)) {
            s += exp_neg_keeping_nan(key_diff(key(uval(c, e)), um));
        }
    }
    return vec4<f32>(um, s, 0.0, 0.0);
}

// Set once the row's statistics are known: the row is written as NaN.
var<private> poisoned_: bool;

// A word of NaNs of DTYPE (two halves for f16 and bf16), written as bits: a conversion of a NaN to f16
// need not give one.
fn nan_word() -> u32 {
    if (DTYPE == DT_F16) {
        return 0x7e007e00u;
    }
    if (DTYPE == DT_BF16) {
        return 0x7fc07fc0u;
    }
    return 0x7fc00000u;
}

fn out_unit(u: vec4<u32>, col0: u32, m: f32, inv: f32) -> vec4<u32> {
    if (poisoned_) {
        return vec4<u32>(nan_word());
    }
    var o: array<f32, 8>;
    for (var e = 0u; e < epu(); e++) {
        if (visible(col0 + e, limit_)) {
            o[e] = exp_neg(key_diff(key(uval(u, e)), m)) * inv;
        }
    }
    return pack_unit(o);
}

// Writes unit u of the row (masked columns as 0).
fn write_unit(c: vec4<u32>, u: u32, m: f32, inv: f32) {
    if (u < nu_) {
        let col0 = col_of(u);
        st_y(fu_ + u, out_unit(c, col0, m, inv), col0);
    }
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
    // Columns below `limit` take part; the rest of the row is written as 0.
    var limit = n;
    if (CAUSAL) {
        let reach = rr % p.q_rows + p.mask_add;
        limit = min(n, select(reach - p.mask_sub, 0u, reach < p.mask_sub));
    }
    limit_ = limit;
    // The unit of the last visible column (of column 0 for a fully masked row).
    last_ = (es_ + max(limit, 1u) - 1u) / ep - fu_;
    let step = UPT * TPR;

    // First read: the partial of each chunk. c0..c3 keep the last chunk for the output.
    var acc = empty();
    var c0 = vec4<u32>(0u);
    var c1 = vec4<u32>(0u);
    var c2 = vec4<u32>(0u);
    var c3 = vec4<u32>(0u);
    var b = 0u;
    for (var bb = 0u; bb < nu_; bb += step) {
        b = bb;
        let u0 = bb + lane;
        // Every load of the chunk first, then the arithmetic.
        c0 = load_unit(u0);
        if (UPT > 1u) {
            c1 = load_unit(u0 + TPR);
        }
        if (UPT > 2u) {
            c2 = load_unit(u0 + 2u * TPR);
        }
        if (UPT > 3u) {
            c3 = load_unit(u0 + 3u * TPR);
        }
        var part = unit_part(c0, u0);
        if (UPT > 1u) {
            part = combine(part, unit_part(c1, u0 + TPR));
        }
        if (UPT > 2u) {
            part = combine(part, unit_part(c2, u0 + 2u * TPR));
        }
        if (UPT > 3u) {
            part = combine(part, unit_part(c3, u0 + 3u * TPR));
        }
        acc = combine(acc, part);
    }

    let tot = row_reduce(li, lane, acc, 0u);
    let top = select(tot.x * p.scale, tot.x, SOFTCAP);
    poisoned_ = is_nan(tot.y) || bitcast<u32>(top) == 0x7f800000u;
    let m = tot.x;
    let inv = select(0.0, 1.0 / tot.y, tot.y > 0.0);

    // Output: the chunks before the last are read again, the last one is still in registers.
    for (var bb = 0u; bb < b; bb += step) {
        let u0 = bb + lane;
        let d0 = load_unit(u0);
        var d1 = vec4<u32>(0u);
        var d2 = vec4<u32>(0u);
        var d3 = vec4<u32>(0u);
        if (UPT > 1u) {
            d1 = load_unit(u0 + TPR);
        }
        if (UPT > 2u) {
            d2 = load_unit(u0 + 2u * TPR);
        }
        if (UPT > 3u) {
            d3 = load_unit(u0 + 3u * TPR);
        }
        write_unit(d0, u0, m, inv);
        if (UPT > 1u) {
            write_unit(d1, u0 + TPR, m, inv);
        }
        if (UPT > 2u) {
            write_unit(d2, u0 + 2u * TPR, m, inv);
        }
        if (UPT > 3u) {
            write_unit(d3, u0 + 3u * TPR, m, inv);
        }
    }
    let u0 = b + lane;
    write_unit(c0, u0, m, inv);
    if (UPT > 1u) {
        write_unit(c1, u0 + TPR, m, inv);
    }
    if (UPT > 2u) {
        write_unit(c2, u0 + 2u * TPR, m, inv);
    }
    if (UPT > 3u) {
        write_unit(c3, u0 + 3u * TPR, m, inv);
    }
}
