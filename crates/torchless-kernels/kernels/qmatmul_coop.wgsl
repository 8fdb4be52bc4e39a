// Quantized GEMM on cooperative matrices (prefill, where the adapter offers 16×16×16 f16): out [m, n] =
// x [m, k] · Wᵀ with W [n, k] in a ggml block format, composed with qmatmul.wgsl (Params, W, dequant8) and
// coop16.wgsl (the product). x arrives in f16 from gemm_coop.wgsl's pre-pass, rounded as the dense
// product rounds its inputs; each chunk of B is 8 weights of one row, dequantized in registers and staged
// as f16: the weights stay quantized in device memory.

// x in f16, 8 halves (4 packed pairs) an element (binding 1, as qmatmul's `src`, which this entry point
// does not use).
@group(0) @binding(1) var<storage, read> x_h: array<vec4<u32>>;

fn a_k_contig() -> bool {
    return true;
}

fn b_k_contig() -> bool {
    return true;
}

// x's row m, depth k..k+7 (k is a multiple of 32, so a chunk is in or out whole).
fn fetch_a16(z: u32, row: u32, e: u32) -> vec4<u32> {
    if (row >= p.m || e >= p.k) {
        return vec4<u32>(0u);
    }
    return x_h[(row * p.k + e) >> 3u];
}

// Wᵀ's column (row of W) `row`, depth e..e+7.
fn fetch_b16(z: u32, row: u32, e: u32) -> vec4<u32> {
    if (row >= p.n || e >= p.k) {
        return vec4<u32>(0u);
    }
    let v = dequant8(row, e);
    return f16_chunk(v[0], v[1]);
}

fn store_c4(z: u32, m: u32, n: u32, v: vec4<f32>) {
    if (m >= p.m) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        if (n + j < p.n) {
            out[m * p.n + n + j] = bitcast<u32>(v[j]);
        }
    }
}

// coop16.wgsl's tile (ops::qmatmul::gpu::QCOOP16_TILE): 256 rows of x, so that each weight chunk is
// dequantized once for 256 rows instead of 128. H100, 4096³ (`benchmarks/results/2026-12-07e-h100/next53/`):
// q4_k 121.8 / 121.5 TFLOP/s against 88.3 with gemm_coop.wgsl's 128×256, q8_0 120.6 / 119.8 against 91.4.
const HM: u32 = 256u;
const HN: u32 = 128u;

@compute @workgroup_size(WG16)
fn gemm_coop16(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
               @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) sl: u32,
               @builtin(subgroup_size) ss: u32) {
    coop16_product(0u, wid.y * HM, wid.x * HN, p.k, lid, sg, sl, ss);
}
