// Row-wise softmax, numerically stable, with a scale, an optional soft cap (cap * tanh(x / cap), after the
// scale) and an optional causal mask (row r is query position (r mod q_rows) + offset; columns past it are
// masked). Masked columns and rows with nothing to weigh (fully masked, or all -inf) come out as 0.
//
// Work split as in norm.wgsl: TPR threads per row, WG / TPR rows per workgroup, UNIT = 4 (vec4 loads, rows
// 16-byte aligned) or 1 (word loads, any row); with CACHE > 0 each thread keeps its units in registers
// (one read, one write), with CACHE = 0 the row is streamed twice. Each thread keeps an online (max, sum of
// exp(v - max)); the pairs are combined by rescaling. f16/bf16 rows of odd length are launched as even and
// odd rows (row0, row_step = 2) and words shared with a neighbour row are written by read-modify-write.

override DTYPE: u32 = 0u;
override SOFTCAP: bool = false;
override CAUSAL: bool = false;
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

var<workgroup> red_m: array<f32, WG>;
var<workgroup> red_s: array<f32, WG>;
var<private> cache: array<vec4<u32>, 4>;

// Stands for -inf (WGSL has no infinite constants): below every finite score.
const LOWEST: f32 = -3.4028234663852886e38;

fn epu() -> u32 {
    return UNIT * per_word(DTYPE);
}

fn ld_x(g: u32) -> vec4<u32> {
    if (UNIT == 4u) {
        return x[g];
    }
    return vec4<u32>(x[g >> 2u][g & 3u], 0u, 0u, 0u);
}

fn st_y(g: u32, v: vec4<u32>, col0: u32) {
    if (UNIT == 4u) {
        y[g] = v;
    } else if (DTYPE == DT_F32) {
        y[g >> 2u][g & 3u] = v.x;
    } else {
        // Halves outside the row keep their value (col0 wraps below 0 for a row starting mid-word).
        var m = 0u;
        if (col0 < p.n) {
            m = m | 0xffffu;
        }
        if (col0 + 1u < p.n) {
            m = m | 0xffff0000u;
        }
        y[g >> 2u][g & 3u] = (v.x & m) | (y[g >> 2u][g & 3u] & ~m);
    }
}

// Whether column c takes part: below the mask limit (which is n without a mask). Whole vec4 units of an
// unmasked row always do.
fn visible(c: u32, limit: u32) -> bool {
    return (UNIT == 4u && !CAUSAL) || c < limit;
}

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

// The score of one element: scale, then the soft cap.
fn score(v: f32) -> f32 {
    let t = v * p.scale;
    if (SOFTCAP) {
        return p.cap * safe_tanh(t / p.cap);
    }
    return t;
}

// exp(d) for d <= 0, with d clamped so that -inf and overflowed differences give exactly 0 (GPUs may not
// honour infinities in arithmetic).
fn exp_neg(d: f32) -> f32 {
    return exp(max(d, -200.0));
}

// Whether a score takes part in the sum: -inf scores weigh 0, as if masked.
fn counts(s: f32) -> bool {
    return s > LOWEST;
}

// Adds the unmasked values (columns below `limit`) of a unit to a running (max, sum of exp(v - max)).
fn accumulate(acc: vec2<f32>, u: vec4<u32>, col0: u32, limit: u32) -> vec2<f32> {
    var um = LOWEST;
    for (var e = 0u; e < epu(); e++) {
        if (visible(col0 + e, limit)) {
            um = max(um, score(uval(u, e)));
        }
    }
    var a = acc;
    if (um > a.x) {
        a = vec2<f32>(um, a.y * exp_neg(a.x - um));
    }
    var s = 0.0;
    for (var e = 0u; e < epu(); e++) {
        if (visible(col0 + e, limit)) {
            let t = score(uval(u, e));
            if (counts(t)) {
                s += exp_neg(t - a.x);
            }
        }
    }
    return vec2<f32>(a.x, a.y + s);
}

// Reduces the (max, sum) partials of each row's TPR threads; every thread gets its row's result. Two
// levels (three barriers instead of log2(TPR)): one thread per CHUNK partials, then every thread over
// the TPR / CHUNK chunk results (broadcast reads). Each level takes the max first, then one exp a partial.
fn reduce_pair(li: u32, lane: u32, v: vec2<f32>) -> vec2<f32> {
    workgroupBarrier();
    red_m[li] = v.x;
    red_s[li] = v.y;
    workgroupBarrier();
    let base = li - lane;
    if (lane < TPR / CHUNK) {
        let i0 = base + lane * CHUNK;
        var m = red_m[i0];
        for (var j = 1u; j < CHUNK; j++) {
            m = max(m, red_m[i0 + j]);
        }
        var t = 0.0;
        for (var j = 0u; j < CHUNK; j++) {
            t += red_s[i0 + j] * exp_neg(red_m[i0 + j] - m);
        }
        red_m[i0] = m;
        red_s[i0] = t;
    }
    workgroupBarrier();
    var m = red_m[base];
    for (var j = 1u; j < TPR / CHUNK; j++) {
        m = max(m, red_m[base + j * CHUNK]);
    }
    var t = 0.0;
    for (var j = 0u; j < TPR / CHUNK; j++) {
        t += red_s[base + j * CHUNK] * exp_neg(red_m[base + j * CHUNK] - m);
    }
    return vec2<f32>(m, t);
}

fn out_unit(u: vec4<u32>, col0: u32, limit: u32, m: f32, inv: f32) -> vec4<u32> {
    var o: array<f32, 8>;
    for (var e = 0u; e < epu(); e++) {
        if (visible(col0 + e, limit)) {
            let t = score(uval(u, e));
            if (counts(t)) {
                o[e] = exp_neg(t - m) * inv;
            }
        }
    }
    return pack_unit(o);
}

@compute @workgroup_size(WG)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) li: u32) {
    let lane = li % TPR;
    let ri = linear_group_id(wid, nwg) * (WG / TPR) + li / TPR;
    let r = p.row0 + ri * p.row_step;
    let n = p.n;
    let in_rows = r < p.rows;
    let ep = epu();
    let es = r * n;
    let fu = es / ep;
    let nu = select(0u, (es + n - 1u) / ep - fu + 1u, in_rows);
    // Columns below `limit` take part; the rest of the row is written as 0.
    var limit = n;
    if (CAUSAL) {
        let reach = r % p.q_rows + p.mask_add;
        limit = min(n, select(reach - p.mask_sub, 0u, reach < p.mask_sub));
    }

    var acc = vec2<f32>(LOWEST, 0.0);
    if (CACHE > 0u) {
        for (var k = 0u; k < CACHE; k++) {
            let u = lane + k * TPR;
            // Units wholly past the mask need not be read.
            let col0 = (fu + u) * ep - es;
            if (u < nu && (col0 < limit || col0 + ep - 1u < limit)) {
                let v = ld_x(fu + u);
                cache[k] = v;
                acc = accumulate(acc, v, col0, limit);
            }
        }
    } else {
        for (var u = lane; u < nu; u += TPR) {
            let col0 = (fu + u) * ep - es;
            if (col0 < limit || col0 + ep - 1u < limit) {
                acc = accumulate(acc, ld_x(fu + u), col0, limit);
            }
        }
    }
    let tot = reduce_pair(li, lane, acc);
    let m = tot.x;
    let inv = select(0.0, 1.0 / tot.y, tot.y > 0.0);

    if (CACHE > 0u) {
        for (var k = 0u; k < CACHE; k++) {
            let u = lane + k * TPR;
            if (u < nu) {
                let col0 = (fu + u) * ep - es;
                var v = vec4<u32>(0u);
                if (col0 < limit || col0 + ep - 1u < limit) {
                    v = cache[k];
                }
                st_y(fu + u, out_unit(v, col0, limit, m, inv), col0);
            }
        }
    } else {
        for (var u = lane; u < nu; u += TPR) {
            let col0 = (fu + u) * ep - es;
            var v = vec4<u32>(0u);
            if (col0 < limit || col0 + ep - 1u < limit) {
                v = ld_x(fu + u);
            }
            st_y(fu + u, out_unit(v, col0, limit, m, inv), col0);
        }
    }
}
