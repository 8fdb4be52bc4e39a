//! CPU dot products of one quantized weight row with an f32 vector, dequantizing in registers (the CPU
//! GEMV of [`crate::ops::qmatmul`]).
//!
//! Each format's loop works on fixed-size arrays so the compiler unrolls and vectorizes it without
//! bounds checks, and folds the block scale in once per group instead of once per weight:
//! `Σ (d·q + m)·x = d·Σ q·x + m·Σ x`, with `Σ x` over each 32-group of `x` computed once per GEMV
//! (the `xs` argument) and shared by every weight row. Results differ from decode-then-dot only by f32
//! rounding.

use crate::quant::QuantType;

/// A row's dot product: `(quants, scales, x, xs)` with the row's device quants and scales parts, `x` of
/// `cols` values and `xs` its sums over 32-groups (`cols / 32` values).
pub(crate) type RowDot = fn(&[u8], &[u8], &[f32], &[f32]) -> f32;

/// The row dot product of `ty`: on x86-64 CPUs with AVX2 and FMA, the same code compiled for them (twice
/// the vector width of the baseline build), chosen once.
pub(crate) fn row_dot(ty: QuantType) -> RowDot {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::has_avx2_fma() {
        return match ty {
            QuantType::Q8_0 => avx2::dot_q8_0,
            QuantType::Q4_0 => avx2::dot_q4_0,
            QuantType::Q4_1 => avx2::dot_q4_1,
            QuantType::Q5_0 => avx2::dot_q5_0,
            QuantType::Q5_1 => avx2::dot_q5_1,
            QuantType::Q4K => avx2::dot_q4_k,
            QuantType::Q5K => avx2::dot_q5_k,
            QuantType::Q6K => avx2::dot_q6_k,
        };
    }
    baseline_row_dot(ty)
}

fn baseline_row_dot(ty: QuantType) -> RowDot {
    match ty {
        QuantType::Q8_0 => dot_q8_0,
        QuantType::Q4_0 => dot_q4_0,
        QuantType::Q4_1 => dot_q4_1_q5_1::<false>,
        QuantType::Q5_0 => dot_q5_0,
        QuantType::Q5_1 => dot_q4_1_q5_1::<true>,
        QuantType::Q4K => dot_k::<false>,
        QuantType::Q5K => dot_k::<true>,
        QuantType::Q6K => dot_q6_k,
    }
}

/// The dot products recompiled with AVX2 and FMA enabled: each wrapper calls the `#[inline(always)]`
/// generic body from a `target_feature` function, so the body is vectorized for AVX2.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    macro_rules! avx2_dots {
        ($($name:ident => $body:path),* $(,)?) => {$(
            pub(super) fn $name(q: &[u8], s: &[u8], x: &[f32], xs: &[f32]) -> f32 {
                #[target_feature(enable = "avx2,fma")]
                fn inner(q: &[u8], s: &[u8], x: &[f32], xs: &[f32]) -> f32 {
                    $body(q, s, x, xs)
                }
                // SAFETY: `row_dot` hands these out only where `has_avx2_fma()` found AVX2 and FMA.
                unsafe { inner(q, s, x, xs) }
            }
        )*};
    }

    avx2_dots!(
        dot_q8_0 => super::dot_q8_0,
        dot_q4_0 => super::dot_q4_0,
        dot_q4_1 => super::dot_q4_1_q5_1::<false>,
        dot_q5_0 => super::dot_q5_0,
        dot_q5_1 => super::dot_q4_1_q5_1::<true>,
        dot_q4_k => super::dot_k::<false>,
        dot_q5_k => super::dot_k::<true>,
        dot_q6_k => super::dot_q6_k,
    );
}

#[cfg(target_arch = "x86_64")]
mod int_avx2;

/// x (rows of `cols` values, `cols` a multiple of 32) quantized once per GEMV for the integer row dots,
/// as the GPU's kernels/qgemv_x.wgsl does: per block of 32 with `d = max|x| / 127`, `hi = round(x / d)` and
/// `lo = round((x − d·hi)·256 / d)` clamped to ±127, so that `x̃ = d/256·(256·hi + lo)` is within d/512 of x
/// (d/256 where `lo` clamps). One byte alone moves close logits of small models; two keep them.
pub(crate) struct QuantX {
    hi: Vec<i8>,
    lo: Vec<i8>,
    /// `d / 256` per block.
    scale: Vec<f32>,
    /// `Σ x` per block (exact up to f32 rounding, as [`group_sums`]).
    sum: Vec<f32>,
    /// `Σ (256·hi + lo)` over each 4 consecutive values: 8 per block, in the lanes of the integer dots.
    lanes: Vec<i32>,
}

/// One row of a [`QuantX`]: `hi`, `lo` as bytes (`cols`), the per-block values (`cols / 32`). Read by the
/// integer dots, which exist on x86-64 only.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) struct QxRow<'a> {
    hi: &'a [u8],
    lo: &'a [u8],
    scale: &'a [f32],
    sum: &'a [f32],
    lanes: &'a [i32],
}

/// The smallest block magnitude [`QuantX`] quantizes.
const TINY: f32 = 1e-36;

impl QuantX {
    pub(crate) fn new(x: &[f32]) -> QuantX {
        let n = x.len();
        let (mut hi, mut lo) = (vec![0i8; n], vec![0i8; n]);
        let mut scale = Vec::with_capacity(n / 32);
        let mut lanes = Vec::with_capacity(n / 4);
        for ((xb, hb), lb) in chunks::<_, 32>(x).zip(hi.chunks_exact_mut(32)).zip(lo.chunks_exact_mut(32)) {
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            // Blocks below `TINY` count as zero (127 / amax would overflow near the subnormals); they move
            // an output by less than 32·TINY·max|w|.
            let (d, inv) = if amax >= TINY { (amax / 127.0, 127.0 / amax) } else { (0.0, 0.0) };
            // Rounding to nearest (ties to even, as WGSL's `round`) by adding and taking off 1.5·2²³, exact
            // for magnitudes below 2²²; `f32::round` is a library call in the baseline build.
            let round = |v: f32| (v + 12_582_912.0) - 12_582_912.0;
            for ((&v, h), l) in xb.iter().zip(hb.iter_mut()).zip(lb.iter_mut()) {
                let hv = round(v * inv).clamp(-127.0, 127.0);
                let lv = round((v - hv * d) * (256.0 * inv)).clamp(-127.0, 127.0);
                (*h, *l) = (hv as i8, lv as i8);
            }
            let four = hb.chunks_exact(4).zip(lb.chunks_exact(4));
            lanes.extend(four.map(|(h4, l4)| h4.iter().zip(l4).map(|(&h, &l)| 256 * h as i32 + l as i32).sum::<i32>()));
            scale.push(d / 256.0);
        }
        QuantX { hi, lo, scale, sum: group_sums(x), lanes }
    }

    /// Row `r` of rows of `cols` values.
    pub(crate) fn row(&self, r: usize, cols: usize) -> QxRow<'_> {
        let g = cols / 32;
        QxRow {
            hi: bytemuck::cast_slice(&self.hi[r * cols..][..cols]),
            lo: bytemuck::cast_slice(&self.lo[r * cols..][..cols]),
            scale: &self.scale[r * g..][..g],
            sum: &self.sum[r * g..][..g],
            lanes: &self.lanes[8 * r * g..][..8 * g],
        }
    }
}

/// A row's integer dot product: `(quants, scales, x)` with the row's device quants and scales parts.
pub(crate) type IntRowDot = fn(&[u8], &[u8], &QxRow<'_>) -> f32;

/// The integer row dot of `ty` where the CPU has one (x86-64 with AVX2, FMA and F16C), else `None` (then
/// the f32 [`row_dot`]).
pub(crate) fn int_row_dot(ty: QuantType) -> Option<IntRowDot> {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::has_avx2_fma_f16c() {
        return Some(match ty {
            QuantType::Q8_0 => int_avx2::dot_q8_0,
            QuantType::Q4_0 => int_avx2::dot_q4_0,
            QuantType::Q4_1 => int_avx2::dot_q4_1,
            QuantType::Q5_0 => int_avx2::dot_q5_0,
            QuantType::Q5_1 => int_avx2::dot_q5_1,
            QuantType::Q4K => int_avx2::dot_q4_k,
            QuantType::Q5K => int_avx2::dot_q5_k,
            QuantType::Q6K => int_avx2::dot_q6_k,
        });
    }
    let _ = ty;
    None
}

/// Two rows' integer dot products with one x: `(quants, scales)` of each row, then x.
pub(crate) type IntRowDot2 = fn(&[u8], &[u8], &[u8], &[u8], &QxRow<'_>) -> [f32; 2];

/// The two-row integer dot of `ty` where the CPU has [`int_row_dot`] (every format): x is loaded once for
/// both rows.
pub(crate) fn int_row_dot2(ty: QuantType) -> Option<IntRowDot2> {
    #[cfg(target_arch = "x86_64")]
    return int_row_dot2_with(ty, crate::cpu::has_avx512_vnni());
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = ty;
        None
    }
}

/// [`int_row_dot2`] with AVX-512 VNNI's byte dot products or without (where the CPU has AVX2, FMA and
/// F16C; `vnni` only where it also has VNNI and VL).
#[cfg(target_arch = "x86_64")]
fn int_row_dot2_with(ty: QuantType, vnni: bool) -> Option<IntRowDot2> {
    if !crate::cpu::has_avx2_fma_f16c() {
        return None;
    }
    let (plain, with_vnni): (IntRowDot2, IntRowDot2) = match ty {
        QuantType::Q8_0 => (int_avx2::dot2_q8_0, int_avx2::dot2_q8_0_vnni),
        QuantType::Q4_0 => (int_avx2::dot2_q4_0, int_avx2::dot2_q4_0_vnni),
        QuantType::Q4_1 => (int_avx2::dot2_q4_1, int_avx2::dot2_q4_1_vnni),
        QuantType::Q5_0 => (int_avx2::dot2_q5_0, int_avx2::dot2_q5_0_vnni),
        QuantType::Q5_1 => (int_avx2::dot2_q5_1, int_avx2::dot2_q5_1_vnni),
        QuantType::Q4K => (int_avx2::dot2_q4_k, int_avx2::dot2_q4_k_vnni),
        QuantType::Q5K => (int_avx2::dot2_q5_k, int_avx2::dot2_q5_k_vnni),
        QuantType::Q6K => (int_avx2::dot2_q6_k, int_avx2::dot2_q6_k_vnni),
    };
    Some(if vnni { with_vnni } else { plain })
}

/// Sums of `x` over consecutive groups of 32 (`x.len()` a multiple of 32).
pub(crate) fn group_sums(x: &[f32]) -> Vec<f32> {
    chunks::<_, 32>(x)
        .map(|g| {
            let mut s = [0f32; 8];
            for c in chunks::<_, 8>(g) {
                s.iter_mut().zip(c).for_each(|(a, v)| *a += v);
            }
            s.iter().sum()
        })
        .collect()
}

/// f16 bits to f32, exactly (normals, subnormals, infinities, NaNs). `half`'s conversion is a software
/// routine on x86-64 without F16C, and scales are converted once per 32 weights.
#[inline(always)]
pub(crate) fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h & 0x8000) as u32) << 16;
    let em = (h & 0x7fff) as u32;
    if em >= 0x7c00 {
        return f32::from_bits(sign | 0x7f80_0000 | ((em & 0x3ff) << 13));
    }
    // `em << 13` is an f32 with the f16's exponent field and mantissa; multiplying by 2^112 moves the
    // exponent bias from 127 to 15, exactly (subnormal f16s become normal f32s).
    f32::from_bits(sign | (f32::from_bits(em << 13) * f32::from_bits(0x7780_0000)).to_bits())
}

#[inline(always)]
fn h(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// `s` in arrays of `N` (`as_chunks` is newer than the MSRV).
#[inline(always)]
fn chunks<T, const N: usize>(s: &[T]) -> impl Iterator<Item = &[T; N]> {
    s.chunks_exact(N).map(|c| c.try_into().expect("N elements"))
}

/// `N` elements of `s` from `at` as an array reference.
#[inline(always)]
fn arr<T, const N: usize>(s: &[T], at: usize) -> &[T; N] {
    s[at..at + N].try_into().expect("in range")
}

#[inline(always)]
fn dot_q8_0(q: &[u8], s: &[u8], x: &[f32], _xs: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for ((qb, sb), xb) in chunks::<_, 32>(q).zip(chunks::<_, 2>(s)).zip(chunks::<_, 32>(x)) {
        let d = f16_to_f32(u16::from_le_bytes(*sb));
        for j in 0..16 {
            acc[j] += d * ((qb[j] as i8) as f32 * xb[j] + (qb[j + 16] as i8) as f32 * xb[j + 16]);
        }
    }
    acc.iter().sum()
}

#[inline(always)]
fn dot_q4_0(q: &[u8], s: &[u8], x: &[f32], _xs: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for ((qb, sb), xb) in chunks::<_, 16>(q).zip(chunks::<_, 2>(s)).zip(chunks::<_, 32>(x)) {
        let d = f16_to_f32(u16::from_le_bytes(*sb));
        for j in 0..16 {
            let lo = ((qb[j] & 0xF) as i32 - 8) as f32;
            let hi = ((qb[j] >> 4) as i32 - 8) as f32;
            acc[j] += d * (lo * xb[j] + hi * xb[j + 16]);
        }
    }
    acc.iter().sum()
}

/// Byte `k` of entry `i` is 16 where bit `k` of `i` is set: expands Q5 high bits to a 16 per weight.
const HIGH_BITS: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut k = 0;
        while k < 8 {
            if (i >> k) & 1 == 1 {
                t[i] |= 16 << (8 * k);
            }
            k += 1;
        }
        i += 1;
    }
    t
};

/// The 32 high bits `qh` (bit `j` for weight `j`) as 0 or 16 per weight.
#[inline(always)]
fn high_bits(qh: &[u8; 4]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (o, &b) in out.chunks_exact_mut(8).zip(qh) {
        o.copy_from_slice(&HIGH_BITS[b as usize].to_le_bytes());
    }
    out
}

#[inline(always)]
fn dot_q5_0(q: &[u8], s: &[u8], x: &[f32], _xs: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for ((qb, sb), xb) in chunks::<_, 16>(q).zip(chunks::<_, 8>(s)).zip(chunks::<_, 32>(x)) {
        let d = h(sb, 0);
        let hb = high_bits(arr(sb, 4));
        for j in 0..16 {
            let lo = (((qb[j] & 0xF) | hb[j]) as i32 - 16) as f32;
            let hi = (((qb[j] >> 4) | hb[j + 16]) as i32 - 16) as f32;
            acc[j] += d * (lo * xb[j] + hi * xb[j + 16]);
        }
    }
    acc.iter().sum()
}

/// Q4_1 (`FIVE = false`: d, m, 16 bytes of nibbles) and Q5_1 rows (d, m, qh, nibbles): `d·q + m` per weight.
/// One body for both: with AVX2, a Q4_1 loop of its own vectorized about 1.7× slower than this one.
#[inline(always)]
fn dot_q4_1_q5_1<const FIVE: bool>(q: &[u8], s: &[u8], x: &[f32], xs: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut mins = 0f32;
    let scale_bytes = if FIVE { 8 } else { 4 };
    let blocks = chunks::<_, 16>(q).zip(s.chunks_exact(scale_bytes)).zip(chunks::<_, 32>(x)).zip(xs);
    for (((qb, sb), xb), &xsum) in blocks {
        let (d, m) = (h(sb, 0), h(sb, 2));
        mins += m * xsum;
        let hb = if FIVE { high_bits(arr(sb, 4)) } else { [0; 32] };
        for j in 0..16 {
            let lo = ((qb[j] & 0xF) | hb[j]) as f32;
            let hi = ((qb[j] >> 4) | hb[j + 16]) as f32;
            acc[j] += d * (lo * xb[j] + hi * xb[j + 16]);
        }
    }
    acc.iter().sum::<f32>() + mins
}

/// ggml's `get_scale_min_k4` (as in [`crate::quant`]).
#[inline(always)]
fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Q4_K (`FIVE = false`) and Q5_K rows (blocks of 256: d, dmin, 12 bytes of 6-bit scales and mins,
/// [qh 32,] qs 128).
// Index loops over parallel fixed-size arrays: the form the compiler vectorizes.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn dot_k<const FIVE: bool>(q: &[u8], _s: &[u8], x: &[f32], xs: &[f32]) -> f32 {
    const QB_4: usize = 144;
    const QB_5: usize = 176;
    let mut acc = [0f32; 32];
    let mut mins = 0f32;
    let blocks = if FIVE { q.len() / QB_5 } else { q.len() / QB_4 };
    for ((blk, xb), xsb) in (0..blocks).zip(chunks::<_, 256>(x)).zip(chunks::<_, 8>(xs)) {
        let b = if FIVE { &q[blk * QB_5..][..QB_5] } else { &q[blk * QB_4..][..QB_4] };
        let (d, dmin) = (h(b, 0), h(b, 2));
        let scales: &[u8; 12] = arr(b, 4);
        let (qh, qs): (&[u8; 32], &[u8; 128]) = if FIVE { (arr(b, 16), arr(b, 48)) } else { (&[0; 32], arr(b, 16)) };
        for c in 0..4 {
            let (sc0, m0) = scale_min_k4(2 * c, scales);
            let (sc1, m1) = scale_min_k4(2 * c + 1, scales);
            mins += dmin * (m0 as f32 * xsb[2 * c] + m1 as f32 * xsb[2 * c + 1]);
            let (d0, d1) = (d * sc0 as f32, d * sc1 as f32);
            let qc: &[u8; 32] = arr(qs, 32 * c);
            let (xl, xh): (&[f32; 32], &[f32; 32]) = (arr(xb, 64 * c), arr(xb, 64 * c + 32));
            for l in 0..32 {
                let (mut a, mut bb) = (qc[l] & 0xF, qc[l] >> 4);
                if FIVE {
                    a |= ((qh[l] >> (2 * c)) & 1) << 4;
                    bb |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
                }
                acc[l] += d0 * (a as f32 * xl[l]) + d1 * (bb as f32 * xh[l]);
            }
        }
    }
    acc.iter().sum::<f32>() - mins
}

/// Q6_K rows (blocks of 256: ql 128, qh 64, 16 signed 8-bit scales; d in the scales part).
// Index loops over parallel fixed-size arrays: the form the compiler vectorizes.
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn dot_q6_k(q: &[u8], s: &[u8], x: &[f32], _xs: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for ((b, sb), xb) in chunks::<_, 208>(q).zip(chunks::<_, 2>(s)).zip(chunks::<_, 256>(x)) {
        let d = f16_to_f32(u16::from_le_bytes(*sb));
        for half in 0..2 {
            let ql: &[u8; 64] = arr(b, 64 * half);
            let qh: &[u8; 32] = arr(b, 128 + 32 * half);
            let sc: &[u8; 8] = arr(b, 192 + 8 * half);
            let xh: &[f32; 128] = arr(xb, 128 * half);
            for k in 0..4 {
                // Weights 32k..32k+32 of this half: low nibbles of ql[0..32] (k = 0), of ql[32..64]
                // (k = 1), high nibbles of the same (k = 2, 3); bits 2k, 2k+1 of qh on top.
                let src: &[u8; 32] = arr(ql, 32 * (k % 2));
                let shift = 4 * (k / 2) as u32;
                for part in 0..2 {
                    let sd = d * sc[2 * k + part] as i8 as f32;
                    let lq: &[u8; 16] = arr(src, 16 * part);
                    let hq: &[u8; 16] = arr(qh, 16 * part);
                    let xv: &[f32; 16] = arr(xh, 32 * k + 16 * part);
                    for l in 0..16 {
                        let v = (((lq[l] >> shift) & 0xF) | ((hq[l] >> (2 * k)) & 3) << 4) as i32 - 32;
                        acc[l] += sd * (v as f32 * xv[l]);
                    }
                }
            }
        }
    }
    acc.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{QuantTensor, dequantize};
    use crate::testing::Rng;

    #[test]
    fn f16_conversion_is_exact() {
        for bits in 0..=u16::MAX {
            let want = half::f16::from_bits(bits).to_f32();
            let got = f16_to_f32(bits);
            assert!(got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()), "{bits:#06x}: {got} vs {want}");
        }
    }

    /// Each format's fused dot product (both builds) against decode-then-dot in f64, on random blocks (f16
    /// fields kept finite) and random x.
    #[test]
    fn row_dots_match_the_decoded_weights() {
        let mut rng = Rng::new(11);
        for ty in QuantType::ALL {
            let cols = 4 * 256;
            let x = rng.vec(cols, -1.0, 1.0);
            let xs = group_sums(&x);
            let values = rng.vec(cols, -1.0, 1.0);
            let bytes = crate::quant::quantize(ty, &values).unwrap();
            let t = QuantTensor::from_ggml_bytes(&crate::backend::Backend::Cpu, ty, 1, cols, &bytes).unwrap();
            let dev = t.data().to_bytes().unwrap();
            let (qs, ss) = dev.split_at(t.scales_offset());
            let nb = t.row_blocks();
            let mut w = vec![0f32; cols];
            dequantize(ty, &bytes, &mut w).unwrap();
            let want: f64 = w.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
            let scale: f64 = w.iter().zip(&x).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
            // The baseline build and the one chosen at run time (AVX2 where the CPU has it).
            for (which, dot) in [("baseline", baseline_row_dot(ty)), ("chosen", row_dot(ty))] {
                let got = dot(&qs[..nb * ty.quant_bytes()], &ss[..nb * ty.scale_bytes()], &x, &xs);
                assert!((got as f64 - want).abs() <= 1e-5 * scale, "{ty} {which}: {got} vs {want}");
            }
        }
    }

    /// x for the integer dots: random blocks scaled by 1, a huge outlier in a block, all zeros, tiny
    /// magnitudes, below [`TINY`], and large ones, by block.
    fn awkward_x(rng: &mut Rng, n: usize) -> Vec<f32> {
        let mut x = rng.vec(n, -1.0, 1.0);
        for (k, blk) in x.chunks_mut(32).enumerate() {
            match k % 6 {
                0 => {}
                1 => blk[(7 * k) % 32] = 3e4,
                2 => blk.fill(0.0),
                3 => blk.iter_mut().for_each(|v| *v *= 1e-20),
                4 => blk.iter_mut().for_each(|v| *v *= 1e-38),
                _ => blk.iter_mut().for_each(|v| *v *= 1e3),
            }
        }
        x
    }

    /// Each row's device quants and scales parts.
    type RowParts = Vec<(Vec<u8>, Vec<u8>)>;

    /// Random rows of `ty`: (device quants and scales per row, decoded weights).
    fn rows_of(rng: &mut Rng, ty: QuantType, rows: usize, cols: usize) -> (RowParts, Vec<f32>) {
        let values = rng.vec(rows * cols, -1.0, 1.0);
        let t = QuantTensor::quantize(&crate::backend::Backend::Cpu, ty, &values, rows, cols).unwrap();
        let w = t.to_f32_vec().unwrap();
        let dev = t.data().to_bytes().unwrap();
        let (qs, ss) = dev.split_at(t.scales_offset());
        let (qb, sb) = (t.row_blocks() * ty.quant_bytes(), t.row_blocks() * ty.scale_bytes());
        let parts = (0..rows).map(|r| (qs[r * qb..][..qb].to_vec(), ss[r * sb..][..sb].to_vec())).collect();
        (parts, w)
    }

    /// Error allowed to an integer dot of weights `w` with x: x̃ moves each value by at most d/256 of its
    /// block (d = max|x|/127); weights with an offset (`d·n + m`) see it through `d·n`, whose magnitude is
    /// at most `|w| + max|w|` of the block; plus f32 rounding of the sums.
    fn int_bound(w: &[f32], x: &[f32]) -> f64 {
        let mut bound = 0f64;
        for (wb, xb) in w.chunks(32).zip(x.chunks(32)) {
            let e = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64 / 127.0 / 256.0;
            let e = e.max(TINY as f64);
            let wmax = wb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
            bound += wb
                .iter()
                .zip(xb)
                .map(|(&a, &c)| (a.abs() as f64 + wmax) * e + 1e-5 * (a as f64 * c as f64).abs())
                .sum::<f64>();
        }
        bound
    }

    /// The integer row dots against decode-then-dot in f64 and against the f32 row dots, every format, on
    /// ragged row counts and awkward x; and, where the whole weight multiplies x̃ (no offset in the float
    /// domain), against `Σ w·x̃` in f64, which checks the integer arithmetic to f32 rounding.
    #[test]
    fn int_row_dots_match_the_reference_and_the_f32_path() {
        let Some(_) = int_row_dot(QuantType::Q8_0) else {
            println!("note: no integer row dots on this CPU (x86-64 with AVX2 and FMA); skipped");
            return;
        };
        let mut rng = Rng::new(12);
        for ty in QuantType::ALL {
            let idot = int_row_dot(ty).unwrap();
            let fdot = baseline_row_dot(ty);
            for (rows, blocks) in [(1, 1), (7, 3), (13, 2), (3, 9), (2, 18)] {
                let cols = blocks * ty.block_elems();
                let (parts, w) = rows_of(&mut rng, ty, rows, cols);
                for x in [awkward_x(&mut rng, cols), rng.vec(cols, -1.0, 1.0)] {
                    let xq = QuantX::new(&x);
                    let xr = xq.row(0, cols);
                    let xs = group_sums(&x);
                    let xt: Vec<f64> = (0..cols)
                        .map(|i| xr.scale[i / 32] as f64 * (256.0 * (xr.hi[i] as i8) as f64 + (xr.lo[i] as i8) as f64))
                        .collect();
                    for (o, (q, s)) in parts.iter().enumerate() {
                        let wr = &w[o * cols..][..cols];
                        let want: f64 = wr.iter().zip(&x).map(|(&a, &b)| a as f64 * b as f64).sum();
                        let bound = int_bound(wr, &x);
                        let got = idot(q, s, &xr) as f64;
                        let name = format!("{ty} [{rows}, {cols}] row {o}");
                        assert!((got - want).abs() <= bound, "{name}: int {got} vs f64 {want}, allowed {bound}");
                        let f = fdot(q, s, &x, &xs) as f64;
                        assert!((got - f).abs() <= bound, "{name}: int {got} vs f32 path {f}, allowed {bound}");
                        if matches!(ty, QuantType::Q8_0 | QuantType::Q4_0 | QuantType::Q5_0 | QuantType::Q6K) {
                            let exact: f64 = wr.iter().zip(&xt).map(|(&a, &b)| a as f64 * b).sum();
                            let mag: f64 = wr.iter().zip(&xt).map(|(&a, &b)| (a as f64 * b).abs()).sum();
                            assert!((got - exact).abs() <= 1e-5 * mag, "{name}: int {got} vs Σ w·x̃ {exact}");
                        }
                    }
                }
            }
        }
    }

    /// The two-row dot gives each row's single-row dot to the bit (the same sums in the same order), every
    /// format, with block counts that end in the 32-weight formats' 4-block steps and in their tail. The
    /// integer dots exist on x86-64 only.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn two_row_dots_equal_single_row_dots() {
        let Some(_) = int_row_dot2(QuantType::Q8_0) else {
            println!("note: no integer row dots on this CPU (x86-64 with AVX2 and FMA); skipped");
            return;
        };
        let mut rng = Rng::new(13);
        // AVX2's byte dot products, and AVX-512 VNNI's where the CPU has them (the same integer lanes).
        let mut paths = vec![false];
        if crate::cpu::has_avx512_vnni() {
            paths.push(true);
        } else {
            println!("note: no AVX-512 VNNI on this CPU; its two-row dots are not tested here");
        }
        for vnni in paths {
            for ty in QuantType::ALL {
                let dot2 = int_row_dot2_with(ty, vnni).unwrap_or_else(|| panic!("{ty}: no two-row dot"));
                let dot = int_row_dot(ty).unwrap();
                for blocks in [1, 3, 4, 5, 9, 18] {
                    let cols = blocks * ty.block_elems();
                    let (parts, _) = rows_of(&mut rng, ty, 2, cols);
                    for x in [awkward_x(&mut rng, cols), rng.vec(cols, -1.0, 1.0)] {
                        let xq = QuantX::new(&x);
                        let xr = xq.row(0, cols);
                        let ((q0, s0), (q1, s1)) = (&parts[0], &parts[1]);
                        let want = [dot(q0, s0, &xr), dot(q1, s1, &xr)];
                        assert_eq!(dot2(q0, s0, q1, s1, &xr), want, "{ty}, {blocks} blocks, vnni {vnni}");
                    }
                }
            }
        }
    }

    /// x̃ is within d/256 of x, blocks of zeros stay zero, and the sums are those of the blocks.
    #[test]
    fn quantized_x_is_within_its_bound() {
        let mut rng = Rng::new(13);
        let x = awkward_x(&mut rng, 64 * 32);
        let xq = QuantX::new(&x);
        let xr = xq.row(0, x.len());
        for (i, &v) in x.iter().enumerate() {
            let g = i / 32;
            let xt = xr.scale[g] * (256.0 * (xr.hi[i] as i8) as f32 + (xr.lo[i] as i8) as f32);
            let d = x[32 * g..][..32].iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            let allowed = if d * 127.0 < TINY { TINY } else { d / 256.0 * 1.001 };
            assert!((xt - v).abs() <= allowed, "x[{i}] = {v}: {xt}");
        }
        for (g, blk) in x.chunks(32).enumerate() {
            let s: f32 = blk.iter().sum();
            assert!((xr.sum[g] - s).abs() <= 1e-5 * blk.iter().map(|v| v.abs()).sum::<f32>(), "block {g}");
        }
    }
}
