// sdpa_decode_rope: attention_subgroup.wgsl with RoPE and the KV-cache write of the step folded in (f32
// caches). Its entry point first writes the new tokens' rows that fall in its split, K rotated and V as
// given, into the caches, then attends as sdpa_decode does, rotating each query quad as it loads it.
//
// Race freedom: cache rows pos.. are written only by the workgroups whose split covers them, and read only
// by those, after the storage barrier. Workgroups of other row blocks with the same split write the same
// rows with the same bits (the same code on the same inputs).
//
// Rotation works on whole quads (vec4 of f32): HalfSplit needs rot_dim / 2 to be a multiple of 4 (a quad
// of the first half pairs with the quad rot_dim / 8 further on), Interleaved rot_dim a multiple of 4 (a
// quad holds two pairs); the host checks both. Quads past rot_dim pass through.

// 0 HalfSplit, 1 Interleaved (ops::rope::RopeLayout).
override ROPE_LAYOUT: u32 = 0u;

@group(0) @binding(2) var<storage, read_write> kc: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> vc: array<vec4<u32>>;
@group(0) @binding(5) var<storage, read> k_new: array<vec4<u32>>;
@group(0) @binding(6) var<storage, read> v_new: array<vec4<u32>>;
// The RoPE coefficient table: 8 rows of rope_stride f32 (rope.wgsl).
@group(0) @binding(7) var<storage, read> rope_tab: array<vec4<f32>>;

// How quad d4 of a row rotates: kind 0 passes through, 1 is a first-half quad (a' = a·cos − b·sin with b
// its partner), 2 a second-half one (b' = b·cos + a·sin), 3 holds two interleaved pairs. i0: the first
// frequency it uses.
struct QuadRot {
    kind: u32,
    partner: u32,
    i0: u32,
}

fn quad_rot(d4: u32) -> QuadRot {
    if (d4 >= p.rope_half / 2u) {
        return QuadRot(0u, d4, 0u);
    }
    if (ROPE_LAYOUT == 1u) {
        return QuadRot(3u, d4, 2u * d4);
    }
    let h4 = p.rope_half / 4u;
    if (d4 < h4) {
        return QuadRot(1u, d4 + h4, 4u * d4);
    }
    return QuadRot(2u, d4 - h4, 4u * (d4 - h4));
}

// cos and sin of frequencies i0 .. i0 + 3 (i0 a multiple of 4) at `pos`.
fn tab_cos_sin4(pos: u32, i0: u32) -> CosSin {
    let s4 = p.rope_stride / 4u;
    let v = i0 / 4u;
    let hi = array<vec4<f32>, 4>(rope_tab[v], rope_tab[s4 + v], rope_tab[2u * s4 + v], rope_tab[3u * s4 + v]);
    let lo = array<vec4<f32>, 4>(rope_tab[4u * s4 + v], rope_tab[5u * s4 + v], rope_tab[6u * s4 + v],
                                 rope_tab[7u * s4 + v]);
    return rope_cos_sin(split_position(pos), hi, lo, p.rope_scale);
}

// Quad x rotated for position `pos`; `other` is its partner quad (kinds 1 and 2).
fn rotate_quad(x: vec4<f32>, other: vec4<f32>, r: QuadRot, pos: u32) -> vec4<f32> {
    if (r.kind == 0u) {
        return x;
    }
    if (r.kind == 3u) {
        // Pairs (x, y) and (z, w) use frequencies i0 and i0 + 1: lanes xy or zw of their aligned four.
        let cs = tab_cos_sin4(pos, r.i0 & ~3u);
        let odd = (r.i0 & 2u) != 0u;
        let c = select(cs.c.xy, cs.c.zw, odd);
        let s = select(cs.s.xy, cs.s.zw, odd);
        return vec4<f32>(x.x * c.x - x.y * s.x, x.y * c.x + x.x * s.x, x.z * c.y - x.w * s.y, x.w * c.y + x.z * s.y);
    }
    let cs = tab_cos_sin4(pos, r.i0);
    if (r.kind == 1u) {
        return x * cs.c - other * cs.s;
    }
    return x * cs.c + other * cs.s;
}

fn q_quad(base: u32, d4: u32, pos: u32) -> vec4<f32> {
    let x = bitcast<vec4<f32>>(q_in[base + d4]);
    let r = quad_rot(d4);
    var other = x;
    if (r.kind == 1u || r.kind == 2u) {
        other = bitcast<vec4<f32>>(q_in[base + r.partner]);
    }
    return rotate_quad(x, other, r, pos);
}

// Writes the new tokens' K (rotated) and V rows of KV head wid.z that split wid.y covers into the caches.
fn store_new_rows(wid: vec3<u32>, li: u32) {
    let kv_len = min(p.kv_len, p.capacity);
    let first = kv_len - p.tokens;
    let keys = split_keys(kv_len, wid.y);
    let a = max(keys.x, first);
    let hd4 = HD / 4u;
    let n = select(0u, (keys.y - a) * hd4, keys.y > a);
    for (var o = li; o < n; o += WG) {
        let key = a + o / hd4;
        let d4 = o % hd4;
        let src = ((key - first) * p.n_kv_heads + wid.z) * hd4;
        let dst = (key * p.n_kv_heads + wid.z) * hd4;
        let x = bitcast<vec4<f32>>(k_new[src + d4]);
        let r = quad_rot(d4);
        var other = x;
        if (r.kind == 1u || r.kind == 2u) {
            other = bitcast<vec4<f32>>(k_new[src + r.partner]);
        }
        kc[dst + d4] = bitcast<vec4<u32>>(rotate_quad(x, other, r, key));
        vc[dst + d4] = v_new[src + d4];
    }
}

@compute @workgroup_size(128)
fn sdpa_decode_rope_sg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) li: u32) {
    store_new_rows(wid, li);
    // Makes the rows just written visible to every invocation of the workgroup.
    storageBarrier();
    decode_body(p.kv_len, wid, li);
}
