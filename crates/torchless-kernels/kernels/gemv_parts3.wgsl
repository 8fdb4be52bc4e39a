// The per-matrix bindings of gemv.wgsl for up to 3 matrices: weights, biases and outputs from binding 4,
// and the RoPE table (10 storage buffers, 13 with the body's). See gemv.wgsl.

@group(0) @binding(4) var<storage, read> w0: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> w1: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read> w2: array<vec4<u32>>;
@group(0) @binding(7) var<storage, read> bias0: array<u32>;
@group(0) @binding(8) var<storage, read> bias1: array<u32>;
@group(0) @binding(9) var<storage, read> bias2: array<u32>;
@group(0) @binding(10) var<storage, read_write> y0: array<u32>;
@group(0) @binding(11) var<storage, read_write> y1: array<u32>;
@group(0) @binding(12) var<storage, read_write> y2: array<u32>;

// ROPE: the RoPE coefficient table (gemv_rope.wgsl; a dummy without).
@group(0) @binding(13) var<storage, read> rope_tab: array<f32>;

// This workgroup's partial sums, with its matrix chosen at every load (`wload`): on the H100 that beats a
// loop of its own for each matrix, as gemv_parts6.wgsl has (Q/K/V launch 23.6–23.7 against 24.3–24.7 µs,
// 12-07k).
fn accumulate() {
    accumulate_matrix(mat);
}

// Chunk i of matrix m (NMAT bounds m, so the last matrix needs no test).
fn wload(m: u32, i: u32) -> vec4<u32> {
    if (NMAT == 1u || m == 0u) {
        return w0[i];
    }
    if (NMAT == 2u || m == 1u) {
        return w1[i];
    }
    return w2[i];
}

fn bias_of(m: u32, row: u32) -> f32 {
    let wi = word_index(BIAS_DT, row);
    if (m == 0u) {
        return decode(BIAS_DT, bias0[wi], row);
    }
    if (m == 1u) {
        return decode(BIAS_DT, bias1[wi], row);
    }
    return decode(BIAS_DT, bias2[wi], row);
}

fn store_word(m: u32, i: u32, w: u32) {
    if (NMAT == 1u || m == 0u) {
        y0[i] = w;
    } else if (NMAT == 2u || m == 1u) {
        y1[i] = w;
    } else {
        y2[i] = w;
    }
}

fn store(m: u32, i: u32, v: f32) {
    store_word(m, i, bitcast<u32>(v));
}
