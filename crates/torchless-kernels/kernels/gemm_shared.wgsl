// The part of the batched matrix product that its two kernels share, composed before each (ops/gemm.rs):
// gemm.wgsl's tiled kernel for every adapter and gemm_coop.wgsl's cooperative-matrix one. Its overrides,
// parameters and bindings, the loads of A and B (ragged sizes, odd K with 16-bit rows that start mid-word,
// batch strides) and the epilogue are the same code in both, so the tiled kernel's tests exercise them for
// the cooperative kernel too.

override DT_A: u32 = 0u;
override DT_B: u32 = 0u;
// 1 when A is stored [K, M] (op(A) = Aᵀ); 1 when B is stored [N, K] (op(B) = Bᵀ).
override TRANS_A: u32 = 0u;
override TRANS_B: u32 = 0u;
// Epilogue: BIAS 1 adds bias[n] (dtype DT_BIAS); RES 1 adds res[z, m, n] (dtype DT_RES, batch stride
// p.res_bstride), RES 2 adds the value already in c (in-place accumulate, the output is f32).
override BIAS: u32 = 0u;
override DT_BIAS: u32 = 0u;
override RES: u32 = 0u;
override DT_RES: u32 = 0u;

struct Params {
    m: u32,
    n: u32,
    k: u32,
    alpha: f32,
    // Element offsets between consecutive batch entries (0 when the operand is shared).
    a_bstride: u32,
    b_bstride: u32,
    res_bstride: u32,
    batch: u32,
}

// Every entry point uses all of these; absent epilogue operands are bound to `a`.
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<u32>>;
@group(0) @binding(4) var<storage, read> bias_buf: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> res_buf: array<vec4<u32>>;

// Element e (flat index) of an operand, from whichever word holds it.
fn a_elem(e: u32) -> f32 {
    let wi = word_index(DT_A, e);
    return decode(DT_A, a[wi >> 2u][wi & 3u], e);
}

fn b_elem(e: u32) -> f32 {
    let wi = word_index(DT_B, e);
    return decode(DT_B, b[wi >> 2u][wi & 3u], e);
}

// Elements e..e+3 of A as f32; those at or past `v` (the count in bounds) read as 0. Aligned full runs are
// one vec4 load; others (ragged edges, 16-bit rows of odd length that start mid-word) go element by element.
fn a_run4(e: u32, v: u32) -> vec4<f32> {
    if (v == 4u && (e & 3u) == 0u) {
        if (DT_A == DT_F32) {
            return bitcast<vec4<f32>>(a[e >> 2u]);
        }
        let q = a[e >> 3u];
        let w = select(q.xy, q.zw, (e & 4u) != 0u);
        return vec4<f32>(unpack_pair(DT_A, w.x), unpack_pair(DT_A, w.y));
    }
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (i < v) {
            r[i] = a_elem(e + i);
        }
    }
    return r;
}

fn b_run4(e: u32, v: u32) -> vec4<f32> {
    if (v == 4u && (e & 3u) == 0u) {
        if (DT_B == DT_F32) {
            return bitcast<vec4<f32>>(b[e >> 2u]);
        }
        let q = b[e >> 3u];
        let w = select(q.xy, q.zw, (e & 4u) != 0u);
        return vec4<f32>(unpack_pair(DT_B, w.x), unpack_pair(DT_B, w.y));
    }
    var r = vec4<f32>(0.0);
    for (var i = 0u; i < 4u; i++) {
        if (i < v) {
            r[i] = b_elem(e + i);
        }
    }
    return r;
}

// A run of `ch` elements along an operand's contiguous dimension: the flat index of its first element
// and how many of its elements are in bounds (0..ch).
struct Run {
    e: u32,
    v: u32,
}

// The run that starts at outer index o (a row of op(A), a column of op(B)) and depth kk. The operand is
// stored [outer, depth] when k_contig (A, Bᵀ) and [depth, outer] otherwise (Aᵀ, B).
fn operand_run(base: u32, o: u32, kk: u32, outer: u32, depth: u32, k_contig: bool, ch: u32) -> Run {
    if (k_contig) {
        let v = select(0u, min(depth - kk, ch), o < outer && kk < depth);
        return Run(base + o * depth + kk, v);
    }
    let v = select(0u, min(outer - o, ch), kk < depth && o < outer);
    return Run(base + kk * outer + o, v);
}

// Where chunk `ci` of a tile of `to` (outer) × `tk` (depth) elements starts, as (outer, depth) offsets,
// when the tile is read in runs of `ch` elements along the contiguous dimension.
fn chunk_coords(ci: u32, to: u32, tk: u32, k_contig: bool, ch: u32) -> vec2<u32> {
    if (k_contig) {
        let per = tk / ch;
        return vec2<u32>(ci / per, (ci % per) * ch);
    }
    let per = to / ch;
    return vec2<u32>((ci % per) * ch, ci / per);
}

fn a_k_contig() -> bool {
    return TRANS_A == 0u;
}

fn b_k_contig() -> bool {
    return TRANS_B != 0u;
}

// The run of A (batch z) starting at row m, depth kk.
fn a_run_at(z: u32, m: u32, kk: u32, ch: u32) -> Run {
    return operand_run(z * p.a_bstride, m, kk, p.m, p.k, a_k_contig(), ch);
}

// The run of op(B) (batch z) starting at column n, depth kk.
fn b_run_at(z: u32, n: u32, kk: u32, ch: u32) -> Run {
    return operand_run(z * p.b_bstride, n, kk, p.n, p.k, b_k_contig(), ch);
}

fn bias_at(n: u32) -> f32 {
    let wi = word_index(DT_BIAS, n);
    return decode(DT_BIAS, bias_buf[wi >> 2u][wi & 3u], n);
}

fn res_at(i: u32) -> f32 {
    let wi = word_index(DT_RES, i);
    return decode(DT_RES, res_buf[wi >> 2u][wi & 3u], i);
}

// Writes columns n..n+3 of row m of batch z: alpha · v, plus the bias and residual, skipping what lies
// outside [M, N].
fn store4(z: u32, m: u32, n: u32, v: vec4<f32>) {
    if (m >= p.m || n >= p.n) {
        return;
    }
    let row = m * p.n;
    let e = z * p.m * p.n + row + n;
    var r = p.alpha * v;
    for (var j = 0u; j < 4u; j++) {
        if (n + j < p.n) {
            if (BIAS != 0u) {
                r[j] += bias_at(n + j);
            }
            if (RES == 1u) {
                r[j] += res_at(z * p.res_bstride + row + n + j);
            } else if (RES == 2u) {
                let ej = e + j;
                r[j] += bitcast<f32>(c[ej >> 2u][ej & 3u]);
            }
        }
    }
    if (n + 3u < p.n && (e & 3u) == 0u) {
        c[e >> 2u] = bitcast<vec4<u32>>(r);
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (n + j < p.n) {
            let ej = e + j;
            c[ej >> 2u][ej & 3u] = bitcast<u32>(r[j]);
        }
    }
}
