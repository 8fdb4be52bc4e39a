// A row body's units (norm.wgsl, softmax.wgsl, which this file precedes): the thread's place in its row,
// and loads, stores and values by unit. A unit is UNIT words (4: a vec4, the row 16-byte aligned; 1: a
// word, any row). The body provides the overrides DTYPE and UNIT, Params `p` with the row length `n`,
// and the bindings x (read) and y (written), both array<vec4<u32>>.

// The thread's row: its first element, its first unit, its unit count (0 for a thread past the last row),
// and the last unit a load may touch.
var<private> es_: u32;
var<private> fu_: u32;
var<private> nu_: u32;
var<private> last_: u32;

// Elements per unit.
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

// Column of the first element of unit u (wraps below 0 for a row starting mid-word).
fn col_of(u: u32) -> u32 {
    return (fu_ + u) * epu() - es_;
}
