// Elementwise ops on float tensors. One thread maps one vec4<u32> (4 f32 or 8 f16/bf16 values); buffers
// are padded to 16 bytes, so the tail words hold padding that is computed and never read.

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

fn binary_word(w: u32, z: u32) -> u32 {
    if (DTYPE == DT_F32) {
        return bitcast<u32>(binary_f(bitcast<f32>(w), bitcast<f32>(z)));
    }
    let v = unpack_pair(DTYPE, w);
    let u = unpack_pair(DTYPE, z);
    return pack_pair(DTYPE, vec2<f32>(binary_f(v.x, u.x), binary_f(v.y, u.y)));
}

@compute @workgroup_size(256)
fn unary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) li: u32) {
    let i = linear_group_id(wid, nwg) * 256u + li;
    if (i >= p.n_vec4) {
        return;
    }
    let w = x[i];
    y[i] = vec4<u32>(unary_word(w.x), unary_word(w.y), unary_word(w.z), unary_word(w.w));
}

@compute @workgroup_size(256)
fn unary_inplace(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let i = linear_group_id(wid, nwg) * 256u + li;
    if (i >= p.n_vec4) {
        return;
    }
    let w = io[i];
    io[i] = vec4<u32>(unary_word(w.x), unary_word(w.y), unary_word(w.z), unary_word(w.w));
}

@compute @workgroup_size(256)
fn binary(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let i = linear_group_id(wid, nwg) * 256u + li;
    if (i >= p.n_vec4) {
        return;
    }
    let u = a[i];
    let v = b[i];
    out[i] = vec4<u32>(binary_word(u.x, v.x), binary_word(u.y, v.y), binary_word(u.z, v.z), binary_word(u.w, v.w));
}
