// Casts between f32, f16 and bf16, and copies: whole buffers, or rows written at a row offset of a
// larger tensor (appending K/V rows to a cache). Conversions work on bit patterns (bits16.wgsl), so
// they are exact on every driver and match the CPU's `half` crate bit for bit.

// cast: the input dtype; copy_rows: the element dtype.
override DTYPE: u32 = 0u;
// cast: the output dtype.
override OUT_DTYPE: u32 = 0u;

struct Params {
    // Threads to run (cast, copy: output vec4s; copy_rows: destination words).
    threads: u32,
    // cast_narrow: input vec4s.
    n_in: u32,
    // copy_rows: the first destination element.
    e0: u32,
    // copy_rows: elements to copy (rows · row_len).
    m: u32,
    // copy_rows_at: elements per row, rows of the source, rows of the destination.
    row_len: u32,
    rows: u32,
    dst_rows: u32,
    _pad: u32,
}

// Bindings per entry point: cast_* and copy (src, dst); copy_rows (src_w, dst_w);
// copy_rows_at (src_w, dst_w, pos).
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> src_w: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst_w: array<u32>;
@group(0) @binding(3) var<storage, read> pos: array<u32>;

fn narrow_pair(a: u32, b: u32) -> u32 {
    return narrow_bits(OUT_DTYPE, a) | (narrow_bits(OUT_DTYPE, b) << 16u);
}

// One word of two 16-bit values converted from DTYPE to OUT_DTYPE.
fn recode_word(w: u32) -> u32 {
    let lo = narrow_bits(OUT_DTYPE, widen_bits(DTYPE, w & 0xffffu));
    let hi = narrow_bits(OUT_DTYPE, widen_bits(DTYPE, w >> 16u));
    return lo | (hi << 16u);
}

// f32 → f16/bf16: output vec4 i (8 values) from input vec4s 2i and 2i + 1.
@compute @workgroup_size(256)
fn cast_narrow(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let i = linear_group_id(wid, nwg) * 256u + li;
    if (i >= p.threads) {
        return;
    }
    let a = src[2u * i];
    var b = vec4<u32>(0u);
    if (2u * i + 1u < p.n_in) {
        b = src[2u * i + 1u];
    }
    dst[i] = vec4<u32>(narrow_pair(a.x, a.y), narrow_pair(a.z, a.w), narrow_pair(b.x, b.y), narrow_pair(b.z, b.w));
}

// f16/bf16 → f32: input vec4 i (8 values) to output vec4s 2i and 2i + 1 (p.threads = input vec4s,
// p.n_in = output vec4s).
@compute @workgroup_size(256)
fn cast_widen(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let i = linear_group_id(wid, nwg) * 256u + li;
    if (i >= p.threads) {
        return;
    }
    let w = src[i];
    dst[2u * i] = vec4<u32>(widen_bits(DTYPE, w.x & 0xffffu), widen_bits(DTYPE, w.x >> 16u),
                            widen_bits(DTYPE, w.y & 0xffffu), widen_bits(DTYPE, w.y >> 16u));
    if (2u * i + 1u < p.n_in) {
        dst[2u * i + 1u] = vec4<u32>(widen_bits(DTYPE, w.z & 0xffffu), widen_bits(DTYPE, w.z >> 16u),
                                     widen_bits(DTYPE, w.w & 0xffffu), widen_bits(DTYPE, w.w >> 16u));
    }
}

// f16 ↔ bf16, word for word.
@compute @workgroup_size(256)
fn cast_half(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let i = linear_group_id(wid, nwg) * 256u + li;
    if (i >= p.threads) {
        return;
    }
    let w = src[i];
    dst[i] = vec4<u32>(recode_word(w.x), recode_word(w.y), recode_word(w.z), recode_word(w.w));
}

// A copy of whole vec4s (tensors are padded to 16 bytes); p.threads counts vec4s.
@compute @workgroup_size(256)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let i = linear_group_id(wid, nwg) * 256u + li;
    if (i >= p.threads) {
        return;
    }
    dst[i] = src[i];
}

// The 16-bit element j of src_w.
fn src_half(j: u32) -> u32 {
    return (src_w[j >> 1u] >> ((j & 1u) * 16u)) & 0xffffu;
}

// Thread t of a row copy to destination element e0: one destination word. For 16-bit types the
// first and last words may be shared with elements outside the copy, which are kept.
fn copy_rows_word(t: u32, e0: u32) {
    if (per_word(DTYPE) == 1u) {
        if (t < p.m) {
            dst_w[e0 + t] = src_w[t];
        }
        return;
    }
    let w = (e0 >> 1u) + t;
    let lo = 2u * w;
    let end = e0 + p.m;
    if (lo >= end) {
        return;
    }
    let lo_in = lo >= e0;
    let hi_in = lo + 1u < end;
    var lo_v = 0u;
    var hi_v = 0u;
    if (!lo_in || !hi_in) {
        let old = dst_w[w];
        lo_v = old & 0xffffu;
        hi_v = old >> 16u;
    }
    if (lo_in) {
        lo_v = src_half(lo - e0);
    }
    if (hi_in) {
        hi_v = src_half(lo + 1u - e0);
    }
    dst_w[w] = lo_v | (hi_v << 16u);
}

@compute @workgroup_size(256)
fn copy_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let t = linear_group_id(wid, nwg) * 256u + li;
    if (t >= p.threads) {
        return;
    }
    copy_rows_word(t, p.e0);
}

// The destination row is pos[0], read on the device. A position whose rows would not fit writes
// nothing (the host cannot report it without reading the position back).
@compute @workgroup_size(256)
fn copy_rows_at(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let t = linear_group_id(wid, nwg) * 256u + li;
    if (t >= p.threads) {
        return;
    }
    let row = pos[0];
    if (row > p.dst_rows - p.rows) {
        return;
    }
    copy_rows_word(t, row * p.row_len);
}
