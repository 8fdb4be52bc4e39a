// The activation side of the quantized GEMV (qgemv.wgsl): x [.., cols] (cols a multiple of 32) as two signed
// bytes per value, per block of 32 with d = max|x| / 127: hi = round(x / d) and lo = round((x − d·hi)·256 / d),
// so that x ≈ d·(256·hi + lo) / 256 to within d/512 (d/256 where lo clamps): 1/32000 of the block's largest
// value, as precise as bf16 activations (one byte alone, as llama.cpp uses, flips SmolLM2's close logits).
// The sums of the float values of each half block go with it, for the weight formats' offsets (b·Σx),
// which are exact.
// One thread per block of 32.

struct Params {
    // Blocks of 32 values in x.
    blocks: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
// Per group of 16 values: the hi bytes, then the lo bytes (a vec4 each).
@group(0) @binding(2) var<storage, read_write> xq: array<vec4<u32>>;
// (d / 256, Σ values 0..15, Σ values 16..31, 0) per block.
@group(0) @binding(3) var<storage, read_write> xs: array<vec4<f32>>;

fn hsum(v: vec4<f32>) -> f32 {
    return v.x + v.y + v.z + v.w;
}

fn amax4(v: vec4<f32>) -> f32 {
    let a = abs(v);
    return max(max(a.x, a.y), max(a.z, a.w));
}

var<private> inv_: f32;
var<private> d_: f32;

// Four values as (hi, lo) bytes.
fn split(v: vec4<f32>) -> vec2<u32> {
    let hi = round(v * inv_);
    let lo = clamp(round((v - hi * d_) * (256.0 * inv_)), vec4<f32>(-127.0), vec4<f32>(127.0));
    return vec2<u32>(pack4xI8(vec4<i32>(hi)), pack4xI8(vec4<i32>(lo)));
}

// Sixteen values as the hi and lo vectors of their group.
fn store_group(g: u32, v0: vec4<f32>, v1: vec4<f32>, v2: vec4<f32>, v3: vec4<f32>) {
    let s0 = split(v0);
    let s1 = split(v1);
    let s2 = split(v2);
    let s3 = split(v3);
    xq[2u * g] = vec4<u32>(s0.x, s1.x, s2.x, s3.x);
    xq[2u * g + 1u] = vec4<u32>(s0.y, s1.y, s2.y, s3.y);
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let blk = linear_group_id(wid, nwg) * 64u + li;
    if (blk >= p.blocks) {
        return;
    }
    let v0 = x[8u * blk];
    let v1 = x[8u * blk + 1u];
    let v2 = x[8u * blk + 2u];
    let v3 = x[8u * blk + 3u];
    let v4 = x[8u * blk + 4u];
    let v5 = x[8u * blk + 5u];
    let v6 = x[8u * blk + 6u];
    let v7 = x[8u * blk + 7u];
    let amax = max(max(max(amax4(v0), amax4(v1)), max(amax4(v2), amax4(v3))),
                   max(max(amax4(v4), amax4(v5)), max(amax4(v6), amax4(v7))));
    inv_ = select(0.0, 127.0 / amax, amax > 0.0);
    d_ = amax / 127.0;
    store_group(2u * blk, v0, v1, v2, v3);
    store_group(2u * blk + 1u, v4, v5, v6, v7);
    xs[blk] = vec4<f32>(d_ / 256.0, hsum(v0 + v1 + v2 + v3), hsum(v4 + v5 + v6 + v7), 0.0);
}
