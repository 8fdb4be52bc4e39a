//! Integer dot products of quantized weight rows with [`QuantX`] activations on x86-64 with AVX2 (see
//! [`super::int_row_dot`]).
//!
//! Per 32 weights: `_mm256_maddubs_epi16` multiplies unsigned weight bytes with the signed `hi` and `lo`
//! bytes of x (signed weights lend their sign to x with `_mm256_sign_epi8` and go in as their magnitude),
//! `_mm256_madd_epi16` widens to 8 i32 lanes, `256·hi + lo` combines them exactly, and one FMA per block
//! scales the lanes by `dw · dx/256` into a float accumulator. Offsets (a constant subtracted from every
//! quant, ggml's `m`) are applied once per block from the block sums of x.
//!
//! Ranges: unsigned quants ≤ 63 times |x bytes| ≤ 127 keep `maddubs`'s i16 pairs below 2·63·127 = 16002,
//! Q8_0's magnitudes ≤ 128 below 2·128·127 = 32512 (no saturation); `256·Σ` stays below 2³¹ (Q6_K, the
//! largest, reaches 256·2·8128·128 ≈ 5.3·10⁸).

use std::arch::x86_64::*;

use super::{QxRow, chunks, f16_to_f32, h};

/// The row dot of a format: `(quants, scales, x)`.
macro_rules! entry {
    ($($name:ident => $body:ident),* $(,)?) => {$(
        pub(super) fn $name(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
            // SAFETY: `int_row_dot` hands these out only where `has_avx2_fma()` found AVX2 and FMA.
            unsafe { $body(q, s, x) }
        }
    )*};
}

entry!(
    dot_q8_0 => q8_0,
    dot_q4_0 => q4_0,
    dot_q4_1 => q4_1,
    dot_q5_0 => q5_0,
    dot_q5_1 => q5_1,
    dot_q4_k => q4_k,
    dot_q5_k => q5_k,
    dot_q6_k => q6_k,
);

#[target_feature(enable = "avx2,fma")]
#[inline]
fn load32(b: &[u8; 32]) -> __m256i {
    // SAFETY: `b` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn load16(b: &[u8; 16]) -> __m128i {
    // SAFETY: `b` is 16 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(b.as_ptr().cast()) }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn load_lanes(l: &[i32]) -> __m256i {
    let l: &[i32; 8] = l.try_into().expect("8 lanes");
    // SAFETY: `l` is 32 readable bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(l.as_ptr().cast()) }
}

/// 16 bytes of nibble pairs (low nibble weight j, high nibble weight j + 16) as 32 bytes, one per weight.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn nibbles(b: &[u8; 16]) -> __m256i {
    let v = load16(b);
    let both = _mm256_set_m128i(_mm_srli_epi16::<4>(v), v);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

/// The 32 bits of `qh` (bit j for weight j) as 16 or 0 per byte (ggml's `bytes_from_bits_32`).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn high_bits(qh: &[u8]) -> __m256i {
    let bits = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]) as i32;
    let shuf = _mm256_set_epi64x(0x0303_0303_0303_0303, 0x0202_0202_0202_0202, 0x0101_0101_0101_0101, 0);
    let spread = _mm256_shuffle_epi8(_mm256_set1_epi32(bits), shuf);
    // Each byte keeps all bits but its own set: it becomes all ones exactly where its bit was set.
    let set =
        _mm256_cmpeq_epi8(_mm256_or_si256(spread, _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe)), _mm256_set1_epi8(-1));
    _mm256_and_si256(set, _mm256_set1_epi8(16))
}

/// `256·Σ u·hi + Σ u·lo` over the block in 8 i32 lanes, for unsigned bytes `u` (≤ 128).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn udot(u: __m256i, hi: __m256i, lo: __m256i) -> __m256i {
    let ones = _mm256_set1_epi16(1);
    let h = _mm256_madd_epi16(_mm256_maddubs_epi16(u, hi), ones);
    let l = _mm256_madd_epi16(_mm256_maddubs_epi16(u, lo), ones);
    _mm256_add_epi32(_mm256_slli_epi32::<8>(h), l)
}

/// [`udot`] for signed weight bytes (−128..=127): their magnitudes times x with their signs.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn sdot(w: __m256i, hi: __m256i, lo: __m256i) -> __m256i {
    udot(_mm256_sign_epi8(w, w), _mm256_sign_epi8(hi, w), _mm256_sign_epi8(lo, w))
}

/// x's `hi` and `lo` bytes of group `g`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn xg(x: &QxRow<'_>, g: usize) -> (__m256i, __m256i) {
    let (hi, lo) = (&x.hi[32 * g..][..32], &x.lo[32 * g..][..32]);
    (load32(hi.try_into().expect("32 bytes")), load32(lo.try_into().expect("32 bytes")))
}

/// `acc + lanes · scale`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn fma(acc: __m256, lanes: __m256i, scale: f32) -> __m256 {
    _mm256_fmadd_ps(_mm256_cvtepi32_ps(lanes), _mm256_set1_ps(scale), acc)
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
    _mm_cvtss_f32(s)
}

#[target_feature(enable = "avx2,fma")]
fn q8_0(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    let mut acc = _mm256_setzero_ps();
    for (g, (qb, sb)) in chunks::<_, 32>(q).zip(chunks::<_, 2>(s)).enumerate() {
        let (hi, lo) = xg(x, g);
        let d = f16_to_f32(u16::from_le_bytes(*sb));
        acc = fma(acc, sdot(load32(qb), hi, lo), d * x.scale[g]);
    }
    hsum(acc)
}

/// Q4_0 and Q5_0: `d·(n − offset)` per weight, `Σ (n − offset)·x̃ = Σ n·x̃ − offset·Σ x̃` in the integer
/// lanes (exact: no cancellation in floats).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn q_0<const FIVE: bool>(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let sbytes = if FIVE { 8 } else { 2 };
    for (g, (qb, sb)) in chunks::<_, 16>(q).zip(s.chunks_exact(sbytes)).enumerate() {
        let (hi, lo) = xg(x, g);
        let d = h(sb, 0);
        let mut u = nibbles(qb);
        if FIVE {
            u = _mm256_or_si256(u, high_bits(&sb[4..8]));
        }
        let xl = load_lanes(&x.lanes[8 * g..][..8]);
        let off = if FIVE { _mm256_slli_epi32::<4>(xl) } else { _mm256_slli_epi32::<3>(xl) };
        acc = fma(acc, _mm256_sub_epi32(udot(u, hi, lo), off), d * x.scale[g]);
    }
    hsum(acc)
}

#[target_feature(enable = "avx2,fma")]
fn q4_0(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    q_0::<false>(q, s, x)
}

#[target_feature(enable = "avx2,fma")]
fn q5_0(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    q_0::<true>(q, s, x)
}

/// Q4_1 and Q5_1: `d·n + m` per weight, `d·Σ n·x̃ + m·Σ x` (the exact sum, as the f32 path and the GPU).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn q_1<const FIVE: bool>(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    let sbytes = if FIVE { 8 } else { 4 };
    for (g, (qb, sb)) in chunks::<_, 16>(q).zip(s.chunks_exact(sbytes)).enumerate() {
        let (hi, lo) = xg(x, g);
        let (d, m) = (h(sb, 0), h(sb, 2));
        let mut u = nibbles(qb);
        if FIVE {
            u = _mm256_or_si256(u, high_bits(&sb[4..8]));
        }
        acc = fma(acc, udot(u, hi, lo), d * x.scale[g]);
        mins += m * x.sum[g];
    }
    hsum(acc) + mins
}

#[target_feature(enable = "avx2,fma")]
fn q4_1(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    q_1::<false>(q, s, x)
}

#[target_feature(enable = "avx2,fma")]
fn q5_1(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    q_1::<true>(q, s, x)
}

/// Q4_K and Q5_K (blocks of 256: d, dmin, 12 bytes of 6-bit scales and mins, [qh 32,] qs 128): per 32
/// weights `d·sc·n − dmin·m`.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn q_k<const FIVE: bool>(q: &[u8], x: &QxRow<'_>) -> f32 {
    let bytes = if FIVE { 176 } else { 144 };
    let mut acc = _mm256_setzero_ps();
    let mut mins = 0f32;
    for (blk, b) in q.chunks_exact(bytes).enumerate() {
        let (d, dmin) = (h(b, 0), h(b, 2));
        let scales: &[u8; 12] = b[4..16].try_into().expect("12 bytes");
        let qs = if FIVE { &b[48..176] } else { &b[16..144] };
        let qh = if FIVE { load32(b[16..48].try_into().expect("32 bytes")) } else { _mm256_setzero_si256() };
        for (c, qc) in chunks::<_, 32>(qs).enumerate() {
            let g = 8 * blk + 2 * c;
            let raw = load32(qc);
            let mask = _mm256_set1_epi8(0x0F);
            let mut u0 = _mm256_and_si256(raw, mask);
            let mut u1 = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), mask);
            if FIVE {
                let sixteen = _mm256_set1_epi8(16);
                let bit = |k: usize| {
                    let b = _mm256_set1_epi8((1u8 << k) as i8);
                    _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(qh, b), b), sixteen)
                };
                u0 = _mm256_or_si256(u0, bit(2 * c));
                u1 = _mm256_or_si256(u1, bit(2 * c + 1));
            }
            let (sc0, m0) = super::scale_min_k4(2 * c, scales);
            let (sc1, m1) = super::scale_min_k4(2 * c + 1, scales);
            let (h0, l0) = xg(x, g);
            let (h1, l1) = xg(x, g + 1);
            acc = fma(acc, udot(u0, h0, l0), d * sc0 as f32 * x.scale[g]);
            acc = fma(acc, udot(u1, h1, l1), d * sc1 as f32 * x.scale[g + 1]);
            mins += dmin * (m0 as f32 * x.sum[g] + m1 as f32 * x.sum[g + 1]);
        }
    }
    hsum(acc) - mins
}

#[target_feature(enable = "avx2,fma")]
fn q4_k(q: &[u8], _s: &[u8], x: &QxRow<'_>) -> f32 {
    q_k::<false>(q, x)
}

#[target_feature(enable = "avx2,fma")]
fn q5_k(q: &[u8], _s: &[u8], x: &QxRow<'_>) -> f32 {
    q_k::<true>(q, x)
}

/// Q6_K (blocks of 256: ql 128, qh 64, 16 signed 8-bit scales; d in the scales part): per 16 weights
/// `d·sc·(n − 32)`, the signed quants through [`sdot`]'s sign trick with `_mm256_madd_epi16` applying the
/// two scales of each 32 weights.
#[target_feature(enable = "avx2,fma")]
fn q6_k(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let (mask, m32) = (_mm256_set1_epi8(0x0F), _mm256_set1_epi8(32));
    for (blk, (b, sb)) in chunks::<_, 208>(q).zip(chunks::<_, 2>(s)).enumerate() {
        let d = f16_to_f32(u16::from_le_bytes(*sb));
        for half in 0..2 {
            let ql = [
                load32(b[64 * half..][..32].try_into().expect("32")),
                load32(b[64 * half + 32..][..32].try_into().expect("32")),
            ];
            let qh = load32(b[128 + 32 * half..][..32].try_into().expect("32"));
            let sc = &b[192 + 8 * half..][..8];
            for k in 0..4 {
                let g = 8 * blk + 4 * half + k;
                let src = ql[k % 2];
                let low = if k < 2 { src } else { _mm256_srli_epi16::<4>(src) };
                let low = _mm256_and_si256(low, mask);
                let high = match k {
                    0 => qh,
                    1 => _mm256_srli_epi16::<2>(qh),
                    2 => _mm256_srli_epi16::<4>(qh),
                    _ => _mm256_srli_epi16::<6>(qh),
                };
                let high = _mm256_slli_epi16::<4>(_mm256_and_si256(high, _mm256_set1_epi8(3)));
                let w = _mm256_sub_epi8(_mm256_or_si256(low, high), m32);
                let (hi, lo) = xg(x, g);
                let (a, sh, sl) = (_mm256_sign_epi8(w, w), _mm256_sign_epi8(hi, w), _mm256_sign_epi8(lo, w));
                let scv = _mm256_set_m128i(
                    _mm_set1_epi16(sc[2 * k + 1] as i8 as i16),
                    _mm_set1_epi16(sc[2 * k] as i8 as i16),
                );
                let ph = _mm256_madd_epi16(_mm256_maddubs_epi16(a, sh), scv);
                let pl = _mm256_madd_epi16(_mm256_maddubs_epi16(a, sl), scv);
                acc = fma(acc, _mm256_add_epi32(_mm256_slli_epi32::<8>(ph), pl), d * x.scale[g]);
            }
        }
    }
    hsum(acc)
}
