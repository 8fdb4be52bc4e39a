// Exact conversions between f32 and the 16-bit float types on bit patterns, with integer arithmetic, so
// that rounding (to nearest even), NaN, infinities and subnormals are the same on every driver
// (pack2x16float is undefined on overflow and may flush subnormals) and match the CPU's `half` crate bit
// for bit. Composed before convert.wgsl and select.wgsl (ops/convert.rs, ops/select.rs).

// f32 bits → f16 bits, rounding to nearest even; overflow → ±inf; NaN stays a (quiet) NaN.
fn f16_from_f32_bits(x: u32) -> u32 {
    let sign = (x >> 16u) & 0x8000u;
    let e = x & 0x7f800000u;
    let man = x & 0x007fffffu;
    if (e == 0x7f800000u) {
        return sign | 0x7c00u | select(0u, 0x0200u, man != 0u) | (man >> 13u);
    }
    let half_exp = i32(e >> 23u) - 112;
    if (half_exp >= 31) {
        return sign | 0x7c00u;
    }
    if (half_exp <= 0) {
        // Subnormal (or zero) in f16.
        if (14 - half_exp > 24) {
            return sign;
        }
        let mm = man | 0x00800000u;
        let shift = u32(14 - half_exp);
        let round_bit = 1u << (shift - 1u);
        var hm = mm >> shift;
        if ((mm & round_bit) != 0u && (mm & (3u * round_bit - 1u)) != 0u) {
            hm += 1u;
        }
        return sign | hm;
    }
    let h = sign | (u32(half_exp) << 10u) | (man >> 13u);
    if ((man & 0x1000u) != 0u && (man & 0x2fffu) != 0u) {
        return h + 1u; // a carry into the exponent is right, up to infinity
    }
    return h;
}

// f16 bits → f32 bits, exact (NaN gets the quiet bit, as the CPU's conversion does).
fn f32_bits_from_f16(h: u32) -> u32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0x1fu) {
        if (m == 0u) {
            return sign | 0x7f800000u;
        }
        return sign | 0x7fc00000u | (m << 13u);
    }
    if (e == 0u) {
        if (m == 0u) {
            return sign;
        }
        let top = firstLeadingBit(m); // 0..9: value = m · 2^-24
        return sign | ((top + 103u) << 23u) | ((m << (23u - top)) & 0x7fffffu);
    }
    return sign | ((e + 112u) << 23u) | (m << 13u);
}

// f32 bits → bf16 bits, rounding to nearest even; NaN stays a (quiet) NaN.
fn bf16_from_f32_bits(x: u32) -> u32 {
    if ((x & 0x7fffffffu) > 0x7f800000u) {
        return (x >> 16u) | 0x40u;
    }
    if ((x & 0x8000u) != 0u && (x & 0x17fffu) != 0u) {
        return (x >> 16u) + 1u;
    }
    return x >> 16u;
}

// The f32 bits of a 16-bit value of dtype dt.
fn widen_bits(dt: u32, h: u32) -> u32 {
    if (dt == DT_BF16) {
        return h << 16u;
    }
    return f32_bits_from_f16(h);
}

// The 16-bit value of dtype dt nearest to the f32 with bits x.
fn narrow_bits(dt: u32, x: u32) -> u32 {
    if (dt == DT_BF16) {
        return bf16_from_f32_bits(x);
    }
    return f16_from_f32_bits(x);
}
