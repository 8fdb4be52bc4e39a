// The RoPE epilogue shared by the dense and quantized GEMVs (gemv.wgsl, qgemv.wgsl): a decode step's Q and
// K projections rotated as they are written, so that RoPE needs no launch of its own. A workgroup owns
// ROWS/2 rotation pairs (ROWS 2 or 4): with HalfSplit (ROPE 1) rows j and j + head_dim/2 of a head (slot
// pairs (0, 1) and (2, 3)), with Interleaved (ROPE 2) rows 2i and 2i + 1, consecutive anyway. Every dim of
// a head rotates (the host checks). The pairs' table coefficients are loaded before the main loop, so the
// epilogue only adds arithmetic.
//
// The including module declares `ROWS`, `rope_tab` (ops::rope::RopeTable's coefficients, 8 rows of
// p.rope_stride f32), the params `p.head_dim`, `p.rope_stride`, `p.rope_scale`, `p.pos` and `p.flags` with
// its bias bits `F_BIAS0 << m`, and `slot_row(row0, s)` and `bias_of(m, row)`.

// 0 none, 1 HalfSplit, 2 Interleaved (ops::rope::RopeLayout).
override ROPE: u32 = 0u;
// The KV caches' dtype (common.wgsl DT_*). With a 16-bit cache a workgroup's thread writes whole words,
// each two adjacent rows of a cache row: slots (0, 1) and, with four slots, (2, 3); a HalfSplit K
// workgroup has four slots (ROWS 4), and its words are slots (0, 2) and (1, 3) (rows j, j + 1 and
// j + half, j + half + 1: row0 / 2 is an even pair and half is even). The host checks both.
override CACHE_DT: u32 = 0u;

// The table coefficients (hi, lo) of this workgroup's one or two rotation pairs.
var<private> pair_hi: array<vec4<f32>, 2>;
var<private> pair_lo: array<vec4<f32>, 2>;

// The row of slot s of a rotating workgroup whose first slot is row0.
fn rope_slot_row(row0: u32, s: u32) -> u32 {
    if (ROPE == 1u) {
        let half = p.head_dim / 2u;
        let pair = row0 / 2u + s / 2u;
        return (pair / half) * p.head_dim + pair % half + (s % 2u) * half;
    }
    return row0 + s;
}

// The table coefficients of the frequency of each of this workgroup's pairs.
fn load_pair_coefficients(row0: u32) {
    let half = p.head_dim / 2u;
    let st = p.rope_stride;
    for (var k = 0u; k < ROWS / 2u; k++) {
        let i = (row0 / 2u + k) % half;
        pair_hi[k] = vec4<f32>(rope_tab[i], rope_tab[st + i], rope_tab[2u * st + i], rope_tab[3u * st + i]);
        pair_lo[k] = vec4<f32>(rope_tab[4u * st + i], rope_tab[5u * st + i], rope_tab[6u * st + i],
                               rope_tab[7u * st + i]);
    }
}

// The slots' values with each pair (a, b) rotated for position `pos`: (a·cos − b·sin, b·cos + a·sin).
fn rotate_pairs(v: vec4<f32>, pos: u32) -> vec4<f32> {
    var out = v;
    for (var k = 0u; k < ROWS / 2u; k++) {
        let h = pair_hi[k];
        let l = pair_lo[k];
        let hi = array<vec4<f32>, 4>(vec4<f32>(h.x), vec4<f32>(h.y), vec4<f32>(h.z), vec4<f32>(h.w));
        let lo = array<vec4<f32>, 4>(vec4<f32>(l.x), vec4<f32>(l.y), vec4<f32>(l.z), vec4<f32>(l.w));
        let cs = rope_cos_sin(split_position(pos), hi, lo, p.rope_scale);
        let a = v[2u * k];
        let b = v[2u * k + 1u];
        out[2u * k] = a * cs.c.x - b * cs.s.x;
        out[2u * k + 1u] = b * cs.c.x + a * cs.s.x;
    }
    return out;
}

// The slots' outputs for row r of x of a workgroup of matrix m (rows n, first slot row0): the dot products
// `sums` plus their biases, with Q's and K's pairs (m < 2) rotated for position pos + r.
fn rope_epilogue_values(m: u32, row0: u32, n: u32, r: u32, sums: vec4<f32>) -> vec4<f32> {
    var v = sums;
    for (var s = 0u; s < ROWS; s++) {
        let row = slot_row(row0, s);
        if (row < n && (p.flags & (F_BIAS0 << m)) != 0u) {
            v[s] += bias_of(m, row);
        }
    }
    if (m < 2u) {
        v = rotate_pairs(v, p.pos + r);
    }
    return v;
}

// The 16-bit cache words of a K (m 1) or V (m 2) workgroup's slot values `v` in cache row `cache_row` of a
// matrix of n rows: their word indices, the words, and whether each is this workgroup's (ROWS 2 has one)
// and in the matrix.
struct KvWords {
    at: vec2<u32>,
    w: vec2<u32>,
    ok: vec2<bool>,
}

fn kv16_words(m: u32, row0: u32, n: u32, cache_row: u32, v: vec4<f32>) -> KvWords {
    var rows = vec2<u32>(row0, row0 + 2u);
    var a = v.xy;
    var b = v.zw;
    if (ROPE == 1u && m == 1u) {
        rows = vec2<u32>(rope_slot_row(row0, 0u), rope_slot_row(row0, 1u));
        a = v.xz;
        b = v.yw;
    }
    return KvWords((vec2<u32>(cache_row * n) + rows) / 2u, vec2<u32>(pack_pair_saturating(CACHE_DT, a), pack_pair_saturating(CACHE_DT, b)),
                   (rows < vec2<u32>(n)) & vec2<bool>(true, ROWS == 4u));
}
