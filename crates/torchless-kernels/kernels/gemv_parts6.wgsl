// The per-matrix bindings of gemv.wgsl for up to 6 matrices: weights, biases and outputs from binding 4,
// and the RoPE table (19 storage buffers, 22 with the body's). See gemv.wgsl.

@group(0) @binding(4) var<storage, read> w0: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> w1: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read> w2: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read> w3: array<vec4<u32>>;
@group(0) @binding(8) var<storage, read> w4: array<vec4<u32>>;
@group(0) @binding(9) var<storage, read> w5: array<vec4<u32>>;
@group(0) @binding(10) var<storage, read> bias0: array<u32>;
@group(0) @binding(11) var<storage, read> bias1: array<u32>;
@group(0) @binding(12) var<storage, read> bias2: array<u32>;
@group(0) @binding(13) var<storage, read> bias3: array<u32>;
@group(0) @binding(14) var<storage, read> bias4: array<u32>;
@group(0) @binding(15) var<storage, read> bias5: array<u32>;
@group(0) @binding(16) var<storage, read_write> y0: array<u32>;
@group(0) @binding(17) var<storage, read_write> y1: array<u32>;
@group(0) @binding(18) var<storage, read_write> y2: array<u32>;
@group(0) @binding(19) var<storage, read_write> y3: array<u32>;
@group(0) @binding(20) var<storage, read_write> y4: array<u32>;
@group(0) @binding(21) var<storage, read_write> y5: array<u32>;

// ROPE: the RoPE coefficient table (gemv_rope.wgsl; a dummy without).
@group(0) @binding(22) var<storage, read> rope_tab: array<f32>;

// This workgroup's partial sums: accumulate_matrix with the matrix a constant in each call, so that once
// the driver inlines it each copy of the loop reads one weight binding, where `wload(mat, …)` would test
// `mat` against up to five matrices on every load. xLSTM-7B's six projections: 50.9 → 49.4 µs a launch,
// decode 170.7 → 171.5 tok/s on the H100 (12-07k).
fn accumulate() {
    if (NMAT == 1u || mat == 0u) {
        accumulate_matrix(0u);
    } else if (NMAT == 2u || mat == 1u) {
        accumulate_matrix(1u);
    } else if (NMAT == 3u || mat == 2u) {
        accumulate_matrix(2u);
    } else if (NMAT == 4u || mat == 3u) {
        accumulate_matrix(3u);
    } else if (NMAT == 5u || mat == 4u) {
        accumulate_matrix(4u);
    } else {
        accumulate_matrix(5u);
    }
}

// Chunk i of matrix m (NMAT bounds m, so the last matrix needs no test).
fn wload(m: u32, i: u32) -> vec4<u32> {
    if (NMAT == 1u || m == 0u) {
        return w0[i];
    }
    if (NMAT == 2u || m == 1u) {
        return w1[i];
    }
    if (NMAT == 3u || m == 2u) {
        return w2[i];
    }
    if (NMAT == 4u || m == 3u) {
        return w3[i];
    }
    if (NMAT == 5u || m == 4u) {
        return w4[i];
    }
    return w5[i];
}

fn bias_of(m: u32, row: u32) -> f32 {
    let wi = word_index(BIAS_DT, row);
    if (m == 0u) {
        return decode(BIAS_DT, bias0[wi], row);
    }
    if (m == 1u) {
        return decode(BIAS_DT, bias1[wi], row);
    }
    if (m == 2u) {
        return decode(BIAS_DT, bias2[wi], row);
    }
    if (m == 3u) {
        return decode(BIAS_DT, bias3[wi], row);
    }
    if (m == 4u) {
        return decode(BIAS_DT, bias4[wi], row);
    }
    return decode(BIAS_DT, bias5[wi], row);
}

fn store_word(m: u32, i: u32, w: u32) {
    if (NMAT == 1u || m == 0u) {
        y0[i] = w;
    } else if (NMAT == 2u || m == 1u) {
        y1[i] = w;
    } else if (NMAT == 3u || m == 2u) {
        y2[i] = w;
    } else if (NMAT == 4u || m == 3u) {
        y3[i] = w;
    } else if (NMAT == 5u || m == 4u) {
        y4[i] = w;
    } else {
        y5[i] = w;
    }
}

fn store(m: u32, i: u32, v: f32) {
    store_word(m, i, bitcast<u32>(v));
}
