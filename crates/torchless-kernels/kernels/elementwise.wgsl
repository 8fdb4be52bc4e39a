// Elementwise ops on float tensors. A thread maps PER vec4<u32> (4 f32 or 8 f16/bf16 values each), those
// at i0 + k * 256 in its workgroup's block of 256 * PER (each k a coalesced sweep of the workgroup), and
// issues all its loads before any arithmetic: PER loads in flight per thread instead of one, for the
// memory latency of large tensors, and a quarter of the workgroups. A vec4 past the end is loaded from the
// last vec4 (no branch before the loads) and not stored. Buffers are padded to 16 bytes, so the tail
// words hold padding that is computed and never read.

override DTYPE: u32 = 0u;
// Unary: 0 silu, 1 gelu (tanh), 2 gelu (erf), 3 softcap, 4 scale.
// Binary: 0 add, 1 mul, 2 swiglu silu(a)*b, 3 geglu gelu_tanh(a)*b, 4 geglu gelu_erf(a)*b.
override OP: u32 = 0u;

struct Params {
    n_vec4: u32,
    scalar: f32,
    _pad0: u32,
    _pad1: u32,
}

// Bindings are numbered per entry point: unary (x, y), unary_inplace (io), binary (a, b, out).
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> y: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read_write> io: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> a: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> b: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> out: array<vec4<u32>>;

fn unary_f(v: f32) -> f32 {
    switch OP {
        case 0u: { return silu(v); }
        case 1u: { return gelu_tanh(v); }
        case 2u: { return gelu_erf(v); }
        case 3u: { return p.scalar * safe_tanh(v / p.scalar); }
        default: { return p.scalar * v; }
    }
}

fn binary_f(u: f32, v: f32) -> f32 {
    switch OP {
        case 0u: { return u + v; }
        case 1u: { return u * v; }
        case 2u: { return silu(u) * v; }
        case 3u: { return gelu_tanh(u) * v; }
        default: { return gelu_erf(u) * v; }
    }
}

fn unary_word(w: u32) -> u32 {
    if (DTYPE == DT_F32) {
        return bitcast<u32>(unary_f(bitcast<f32>(w)));
    }
    let v = unpack_pair(DTYPE, w);
    return pack_pair(DTYPE, vec2<f32>(unary_f(v.x), unary_f(v.y)));
}

fn unary_vec(w: vec4<u32>) -> vec4<u32> {
    return vec4<u32>(unary_word(w.x), unary_word(w.y), unary_word(w.z), unary_word(w.w));
}

fn binary_word(w: u32, z: u32) -> u32 {
    if (DTYPE == DT_F32) {
        return bitcast<u32>(binary_f(bitcast<f32>(w), bitcast<f32>(z)));
    }
    let v = unpack_pair(DTYPE, w);
    let u = unpack_pair(DTYPE, z);
    return pack_pair(DTYPE, vec2<f32>(binary_f(v.x, u.x), binary_f(v.y, u.y)));
}

fn binary_vec(u: vec4<u32>, v: vec4<u32>) -> vec4<u32> {
    return vec4<u32>(binary_word(u.x, v.x), binary_word(u.y, v.y), binary_word(u.z, v.z), binary_word(u.w, v.w));
}

// vec4s per thread (a workgroup covers 256 * PER; the host launches n_vec4 / (256 * PER) workgroups).
const PER: u32 = 4u;

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let i0 = linear_group_id(wid, nwg) * (256u * PER) + li;
    let last = p.n_vec4 - 1u;
    let w0 = x[min(i0, last)];
    let w1 = x[min(i0 + 256u, last)];
    let w2 = x[min(i0 + 512u, last)];
    let w3 = x[min(i0 + 768u, last)];
    if (i0 < p.n_vec4) {
        y[i0] = unary_vec(w0);
    }
    if (i0 + 256u < p.n_vec4) {
        y[i0 + 256u] = unary_vec(w1);
    }
    if (i0 + 512u < p.n_vec4) {
        y[i0 + 512u] = unary_vec(w2);
    }
    if (i0 + 768u < p.n_vec4) {
        y[i0 + 768u] = unary_vec(w3);
    }
}

// In place, a loaded past-the-end vec4 may already be overwritten by its owner: it is never stored.
@compute @workgroup_size(256)
fn unary_inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let i0 = linear_group_id(wid, nwg) * (256u * PER) + li;
    let last = p.n_vec4 - 1u;
    let w0 = io[min(i0, last)];
    let w1 = io[min(i0 + 256u, last)];
    let w2 = io[min(i0 + 512u, last)];
    let w3 = io[min(i0 + 768u, last)];
    if (i0 < p.n_vec4) {
        io[i0] = unary_vec(w0);
    }
    if (i0 + 256u < p.n_vec4) {
        io[i0 + 256u] = unary_vec(w1);
    }
    if (i0 + 512u < p.n_vec4) {
        io[i0 + 512u] = unary_vec(w2);
    }
    if (i0 + 768u < p.n_vec4) {
        io[i0 + 768u] = unary_vec(w3);
    }
}

@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let i0 = linear_group_id(wid, nwg) * (256u * PER) + li;
    let last = p.n_vec4 - 1u;
    let a0 = a[min(i0, last)];
    let a1 = a[min(i0 + 256u, last)];
    let a2 = a[min(i0 + 512u, last)];
    let a3 = a[min(i0 + 768u, last)];
    let b0 = b[min(i0, last)];
    let b1 = b[min(i0 + 256u, last)];
    let b2 = b[min(i0 + 512u, last)];
    let b3 = b[min(i0 + 768u, last)];
    if (i0 < p.n_vec4) {
        out[i0] = binary_vec(a0, b0);
    }
    if (i0 + 256u < p.n_vec4) {
        out[i0 + 256u] = binary_vec(a1, b1);
    }
    if (i0 + 512u < p.n_vec4) {
        out[i0 + 512u] = binary_vec(a2, b2);
    }
    if (i0 + 768u < p.n_vec4) {
        out[i0 + 768u] = binary_vec(a3, b3);
    }
}
