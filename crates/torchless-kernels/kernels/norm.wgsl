// Row norms: rmsnorm (plain or Gemma's 1 + w), layernorm (optional bias), each optionally fused with a
// residual add (sum = x + res is written, then normed).
//
// Work split: TPR threads (a power of two) share one row; a workgroup of WG threads holds WG / TPR rows.
// A row is read in "units": UNIT = 4 loads a vec4<u32> (the row must start on a 16-byte boundary: n a
// multiple of 4 for f32, of 8 for f16/bf16), UNIT = 1 loads one u32 word (any row). With CACHE > 0 each
// thread keeps its CACHE units in registers between the reduction and the write (one read, one write);
// with CACHE = 0 (rows too long for registers) it streams the row from memory once per pass.
//
// f16/bf16 rows of odd length share a word with their neighbour rows: the host then launches the even
// rows and the odd rows as two dispatches (row0, row_step = 2), and a thread writes a shared word by
// read-modify-write of its own half, which no other thread of the dispatch touches.
//
// Statistics are robust to overflow: each thread keeps (p, sum of (v / p)^k) with p a power of two near
// max |v|, combined by exact rescaling; mean(x^2) is never formed as an f32 that could overflow for
// |x| ~ 1e30.

override DTYPE: u32 = 0u;        // x, res, sum, y
override WDTYPE: u32 = 0u;       // weight and bias
override MODE: u32 = 0u;         // 0 rmsnorm, 1 layernorm
override GEMMA: bool = false;    // rmsnorm scales by (1 + w)
override HAS_BIAS: bool = false; // layernorm adds b
override ADD: bool = false;      // the row is x + res, written to sum before it is normed
override UNIT: u32 = 4u;         // words per load: 4 or 1
override TPR: u32 = 256u;        // threads per row
override CACHE: u32 = 4u;        // units per thread kept in registers (<= 4); 0 streams from memory
override WG: u32 = 256u;         // threads per workgroup, a multiple of TPR
override CHUNK: u32 = 16u;       // partials combined per thread in the first reduction level (divides TPR)

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

var<workgroup> red_m: array<f32, WG>;
var<workgroup> red_s: array<f32, WG>;
var<private> cache: array<vec4<u32>, 4>;

// Elements per unit.
fn epu() -> u32 {
    return UNIT * per_word(DTYPE);
}

// ---- memory access by unit ------------------------------------------------------------------------

fn ld_x(g: u32) -> vec4<u32> {
    if (UNIT == 4u) {
        return x[g];
    }
    return vec4<u32>(x[g >> 2u][g & 3u], 0u, 0u, 0u);
}

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

fn st_y(g: u32, v: vec4<u32>, col0: u32) {
    if (UNIT == 4u) {
        y[g] = v;
    } else {
        y[g >> 2u][g & 3u] = merge_word(v.x, y[g >> 2u][g & 3u], col0);
    }
}

// The word to store for a one-word unit whose first column is col0 (wrapped below 0 for a row starting in
// the high half): halves outside [0, n) keep the old value.
fn merge_word(new_w: u32, old_w: u32, col0: u32) -> u32 {
    if (DTYPE == DT_F32) {
        return new_w;
    }
    var m = 0u;
    if (col0 < p.n) {
        m = m | 0xffffu;
    }
    if (col0 + 1u < p.n) {
        m = m | 0xffff0000u;
    }
    return (new_w & m) | (old_w & ~m);
}

// Whether column c (wrapped below 0 for a row starting mid-word) lies in the row; whole vec4 units always do.
fn in_row(c: u32) -> bool {
    return UNIT == 4u || c < p.n;
}

// ---- values of a unit -----------------------------------------------------------------------------

fn uval(u: vec4<u32>, e: u32) -> f32 {
    if (DTYPE == DT_F32) {
        return bitcast<f32>(u[e]);
    }
    let pair = unpack_pair(DTYPE, u[e >> 1u]);
    return select(pair.x, pair.y, (e & 1u) == 1u);
}

fn pack_unit(o: array<f32, 8>) -> vec4<u32> {
    if (DTYPE == DT_F32) {
        return vec4<u32>(bitcast<u32>(o[0]), bitcast<u32>(o[1]), bitcast<u32>(o[2]), bitcast<u32>(o[3]));
    }
    return vec4<u32>(pack_pair(DTYPE, vec2<f32>(o[0], o[1])), pack_pair(DTYPE, vec2<f32>(o[2], o[3])),
                     pack_pair(DTYPE, vec2<f32>(o[4], o[5])), pack_pair(DTYPE, vec2<f32>(o[6], o[7])));
}

// x + res of one unit, rounded to DTYPE.
fn add_unit(a: vec4<u32>, r: vec4<u32>) -> vec4<u32> {
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
// Partial statistics are (p, s): p a power of two (0 for nothing yet) at least half the largest |v| seen,
// s the sum of (v / p)^k (k = 2 for squares, 1 for plain sums). Scaling by a power of two is exact, and
// the reciprocals are formed from the exponent bits: no division, and nothing falls into the subnormal
// range that GPUs flush to zero (1 / 3e38 would).

// The power of two with |m|'s exponent, clamped to [2^-126, 2^126]; 0 for 0.
fn pow2_of(m: f32) -> f32 {
    if (m == 0.0) {
        return 0.0;
    }
    let e = clamp((bitcast<u32>(m) >> 23u) & 0xffu, 1u, 253u);
    return bitcast<f32>(e << 23u);
}

// 1 / p for a power of two p from pow2_of (exact).
fn pow2_inv(p: f32) -> f32 {
    return bitcast<f32>((254u - (bitcast<u32>(p) >> 23u)) << 23u);
}

fn combine_scaled(a: vec2<f32>, c: vec2<f32>, square: bool) -> vec2<f32> {
    let p = max(a.x, c.x);
    if (p == 0.0) {
        return vec2<f32>(0.0, a.y + c.y);
    }
    let r = pow2_inv(p);
    let fa = a.x * r;
    let fc = c.x * r;
    if (square) {
        return vec2<f32>(p, a.y * (fa * fa) + c.y * (fc * fc));
    }
    return vec2<f32>(p, a.y * fa + c.y * fc);
}

// Adds the valid values of a unit, less `shift`, to a running (p, s).
fn accumulate(acc: vec2<f32>, u: vec4<u32>, col0: u32, shift: f32, square: bool) -> vec2<f32> {
    var um = 0.0;
    for (var e = 0u; e < epu(); e++) {
        if (in_row(col0 + e)) {
            um = max(um, abs(uval(u, e) - shift));
        }
    }
    let up = pow2_of(um);
    var a = acc;
    if (up > a.x) {
        a = combine_scaled(a, vec2<f32>(up, 0.0), square);
    }
    if (a.x == 0.0) {
        return a;
    }
    let r = pow2_inv(a.x);
    var s = 0.0;
    for (var e = 0u; e < epu(); e++) {
        if (in_row(col0 + e)) {
            let t = (uval(u, e) - shift) * r;
            s += select(t, t * t, square);
        }
    }
    return vec2<f32>(a.x, a.y + s);
}

// (sum of t, sum of t^2) with t = (v - mean) * r over the valid values of a unit. The sum of t corrects
// the mean for its own rounding (the corrected two-pass algorithm): the f32 mean of values near 1e4 is
// off by up to half an ulp of 1e4, which is large next to a standard deviation of 1.
fn centered(u: vec4<u32>, col0: u32, mean: f32, r: f32) -> vec2<f32> {
    var s = vec2<f32>(0.0, 0.0);
    for (var e = 0u; e < epu(); e++) {
        if (in_row(col0 + e)) {
            let t = (uval(u, e) - mean) * r;
            s += vec2<f32>(t, t * t);
        }
    }
    return s;
}

// kind: 0 scaled squares, 1 scaled sums, 2 plain sums of both components.
fn combine(a: vec2<f32>, c: vec2<f32>, kind: u32) -> vec2<f32> {
    if (kind == 2u) {
        return a + c;
    }
    return combine_scaled(a, c, kind == 0u);
}

// Reduces the partials of each row's TPR threads; every thread gets its row's result. Two levels (three
// barriers instead of log2(TPR)): CHUNK threads' partials are combined by one thread each, then every
// thread combines the TPR / CHUNK chunk results (broadcast reads).
fn reduce(li: u32, lane: u32, v: vec2<f32>, kind: u32) -> vec2<f32> {
    workgroupBarrier();
    red_m[li] = v.x;
    red_s[li] = v.y;
    workgroupBarrier();
    let base = li - lane;
    if (lane < TPR / CHUNK) {
        let i0 = base + lane * CHUNK;
        var acc = vec2<f32>(red_m[i0], red_s[i0]);
        for (var j = 1u; j < CHUNK; j++) {
            acc = combine(acc, vec2<f32>(red_m[i0 + j], red_s[i0 + j]), kind);
        }
        red_m[i0] = acc.x;
        red_s[i0] = acc.y;
    }
    workgroupBarrier();
    var acc = vec2<f32>(red_m[base], red_s[base]);
    for (var j = 1u; j < TPR / CHUNK; j++) {
        acc = combine(acc, vec2<f32>(red_m[base + j * CHUNK], red_s[base + j * CHUNK]), kind);
    }
    return acc;
}

// 1 / sqrt(p^2 q + eps) without forming p^2 (p from pow2_of, q = mean of (v / p)^2, at most 16). A zero
// row gives 0 when eps is 0 (its output is 0 either way).
fn robust_rsqrt(p: f32, q: f32, eps: f32) -> f32 {
    if (p == 0.0 || q == 0.0) {
        return select(0.0, inverseSqrt(eps), eps > 0.0);
    }
    let r = pow2_inv(p);
    let e2 = eps * r * r;
    if (e2 > 1e30) {
        // p^2 q < 16e-30 eps: negligible next to eps (and r * r may be infinite).
        return inverseSqrt(eps);
    }
    return r * inverseSqrt(q + e2);
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

// ---- output ---------------------------------------------------------------------------------------

// The normed unit: rmsnorm v * scale * w (or 1 + w); layernorm ((v - mean) - corr) * scale * w + b.
fn norm_unit(u: vec4<u32>, col0: u32, mean: f32, corr: f32, scale: f32) -> vec4<u32> {
    let wv = params_of(false, col0);
    var bv: array<f32, 8>;
    if (MODE == 1u && HAS_BIAS) {
        bv = params_of(true, col0);
    }
    var o: array<f32, 8>;
    for (var e = 0u; e < epu(); e++) {
        let v = uval(u, e);
        if (MODE == 0u) {
            o[e] = v * scale * select(wv[e], 1.0 + wv[e], GEMMA);
        } else {
            o[e] = ((v - mean) - corr) * scale * wv[e] + bv[e];
        }
    }
    return pack_unit(o);
}

// The unit g of the row as the norm sees it: x, or x + res (written to sum on the first pass).
fn first_load(g: u32, col0: u32) -> vec4<u32> {
    let a = ld_x(g);
    if (!ADD) {
        return a;
    }
    let s = add_unit(a, ld_res(g));
    st_sum(g, s, col0);
    return s;
}

fn reload(g: u32) -> vec4<u32> {
    if (ADD) {
        return ld_sum(g);
    }
    return ld_x(g);
}

@compute @workgroup_size(WG)
fn norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let lane = li % TPR;
    let ri = linear_group_id(wid, nwg) * (WG / TPR) + li / TPR;
    let r = p.row0 + ri * p.row_step;
    let n = p.n;
    let in_rows = r < p.rows;
    let ep = epu();
    // Element offset of the row, its first unit, and its unit count (0 for threads past the last row).
    let es = r * n;
    let fu = es / ep;
    let nu = select(0u, (es + n - 1u) / ep - fu + 1u, in_rows);
    // Column of the first element of unit u: (fu + u) * ep - es (wraps for a row starting mid-word).

    // Pass 1: (p, sum of ((v - shift) / p)^k): k = 2 for rmsnorm (shift 0); k = 1 for layernorm, shifted
    // by the row's first element so that a constant row gives exactly mean = shift and variance 0.
    let square = MODE == 0u;
    var shift = 0.0;
    if (MODE == 1u) {
        if (in_rows) {
            shift = element(es);
        }
        if (ADD) {
            // The in-place sum may overwrite res[es] below.
            workgroupBarrier();
        }
    }
    var acc = vec2<f32>(0.0, 0.0);
    if (CACHE > 0u) {
        for (var k = 0u; k < CACHE; k++) {
            let u = lane + k * TPR;
            if (u < nu) {
                let col0 = (fu + u) * ep - es;
                let v = first_load(fu + u, col0);
                cache[k] = v;
                acc = accumulate(acc, v, col0, shift, square);
            }
        }
    } else {
        for (var u = lane; u < nu; u += TPR) {
            let col0 = (fu + u) * ep - es;
            acc = accumulate(acc, first_load(fu + u, col0), col0, shift, square);
        }
    }
    let tot = reduce(li, lane, acc, select(1u, 0u, square));
    let pw = tot.x;
    let nf = f32(n);

    var mean = 0.0;
    var corr = 0.0;
    var scale: f32;
    if (MODE == 0u) {
        scale = robust_rsqrt(pw, tot.y / nf, p.eps);
    } else {
        // Pass 2: the variance as the mean of ((v - mean) / p)^2, and the mean's correction.
        mean = shift + pw * (tot.y / nf);
        let r_p = select(0.0, pow2_inv(pw), pw > 0.0);
        var d = vec2<f32>(0.0, 0.0);
        if (CACHE > 0u) {
            for (var k = 0u; k < CACHE; k++) {
                let u = lane + k * TPR;
                if (u < nu) {
                    d += centered(cache[k], (fu + u) * ep - es, mean, r_p);
                }
            }
        } else {
            for (var u = lane; u < nu; u += TPR) {
                d += centered(reload(fu + u), (fu + u) * ep - es, mean, r_p);
            }
        }
        let dt = reduce(li, lane, d, 2u);
        let c = dt.x / nf;
        corr = pw * c;
        scale = robust_rsqrt(pw, max(dt.y / nf - c * c, 0.0), p.eps);
    }

    // Pass 3: write.
    if (CACHE > 0u) {
        for (var k = 0u; k < CACHE; k++) {
            let u = lane + k * TPR;
            if (u < nu) {
                let col0 = (fu + u) * ep - es;
                st_y(fu + u, norm_unit(cache[k], col0, mean, corr, scale), col0);
            }
        }
    } else {
        for (var u = lane; u < nu; u += TPR) {
            let col0 = (fu + u) * ep - es;
            st_y(fu + u, norm_unit(reload(fu + u), col0, mean, corr, scale), col0);
        }
    }
}
