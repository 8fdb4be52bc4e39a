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
use crate::cpu::hsum256 as hsum;

/// The row dot of a format: `(quants, scales, x)`.
macro_rules! entry {
    ($($name:ident => $body:ident),* $(,)?) => {$(
        pub(super) fn $name(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
            // SAFETY: `int_row_dot` hands these out only where `has_avx2_fma_f16c()` found AVX2, FMA and F16C.
            unsafe { $body(q, s, x) }
        }
    )*};
}

/// The two-row dot of a 32-weight format: `(quants, scales)` of each row, and x; the `_vnni` form with
/// AVX-512 VNNI's byte dot products.
macro_rules! entry2 {
    ($($name:ident, $vnni:ident => $kind:ident),* $(,)?) => {$(
        pub(super) fn $name(q0: &[u8], s0: &[u8], q1: &[u8], s1: &[u8], x: &QxRow<'_>) -> [f32; 2] {
            #[target_feature(enable = "avx2,fma,f16c")]
            fn inner(q0: &[u8], s0: &[u8], q1: &[u8], s1: &[u8], x: &QxRow<'_>) -> [f32; 2] {
                dot32x2::<$kind>(q0, s0, q1, s1, x)
            }
            // SAFETY: `int_row_dot2` hands these out only where `has_avx2_fma_f16c()` found AVX2, FMA and F16C.
            unsafe { inner(q0, s0, q1, s1, x) }
        }

        pub(super) fn $vnni(q0: &[u8], s0: &[u8], q1: &[u8], s1: &[u8], x: &QxRow<'_>) -> [f32; 2] {
            #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
            fn inner(q0: &[u8], s0: &[u8], q1: &[u8], s1: &[u8], x: &QxRow<'_>) -> [f32; 2] {
                dot32x2_vnni::<$kind>(q0, s0, q1, s1, x)
            }
            // SAFETY: `int_row_dot2` hands these out only where `has_avx512_vnni()` also found AVX-512 VNNI
            // and VL.
            unsafe { inner(q0, s0, q1, s1, x) }
        }
    )*};
}

entry2!(
    dot2_q8_0, dot2_q8_0_vnni => Q8_0,
    dot2_q4_0, dot2_q4_0_vnni => Q4_0,
    dot2_q4_1, dot2_q4_1_vnni => Q4_1,
    dot2_q5_0, dot2_q5_0_vnni => Q5_0,
    dot2_q5_1, dot2_q5_1_vnni => Q5_1,
);

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

/// [`udot`] with AVX-512 VNNI: one `vpdpbusd` sums each 4 bytes' products into a lane, where AVX2 takes
/// `maddubs` and `madd` (the same lanes, exactly: neither can overflow here).
#[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
#[inline]
fn udot_vnni(u: __m256i, hi: __m256i, lo: __m256i) -> __m256i {
    let zero = _mm256_setzero_si256();
    _mm256_add_epi32(_mm256_slli_epi32::<8>(_mm256_dpbusd_epi32(zero, u, hi)), _mm256_dpbusd_epi32(zero, u, lo))
}

/// [`sdot`] with [`udot_vnni`].
#[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
#[inline]
fn sdot_vnni(w: __m256i, hi: __m256i, lo: __m256i) -> __m256i {
    udot_vnni(_mm256_sign_epi8(w, w), _mm256_sign_epi8(hi, w), _mm256_sign_epi8(lo, w))
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

/// The 32-weight formats, by `KIND`: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1.
const Q8_0: u8 = 0;
const Q4_0: u8 = 1;
const Q4_1: u8 = 2;
const Q5_0: u8 = 3;
const Q5_1: u8 = 4;

/// Bytes of a block's scales part.
const fn scale_bytes(kind: u8) -> usize {
    match kind {
        Q8_0 | Q4_0 => 2,
        Q4_1 => 4,
        _ => 8,
    }
}

/// Whether blocks of `kind` add `m` per weight (`d·n + m`).
const fn has_min(kind: u8) -> bool {
    matches!(kind, Q4_1 | Q5_1)
}

/// The integer lanes of block `g` of a `KIND` row: `Σ n·x̃` in units of `dx/256`, `n` the weight's quant
/// with any offset (Q4_0's 8, Q5_0's 16) taken off in the integer lanes (exact: no cancellation in floats).
/// A macro: as a `target_feature` function (which cannot be `inline(always)`) it was not inlined.
macro_rules! block_lanes {
    ($kind:expr, $q:expr, $s:expr, $x:expr, $g:expr) => {{
        let (x, g): (&QxRow<'_>, usize) = ($x, $g);
        let (hi, lo) = xg(x, g);
        block_lanes!($kind, $q, $s, x, g, hi, lo, udot, sdot)
    }};
    // With x's bytes of the block already loaded (`hi`, `lo`), for two rows that share them, and the byte
    // dot products to use.
    ($kind:expr, $q:expr, $s:expr, $x:expr, $g:expr, $hi:expr, $lo:expr, $udot:ident, $sdot:ident) => {{
        let (q, s, x, g): (&[u8], &[u8], &QxRow<'_>, usize) = ($q, $s, $x, $g);
        let (hi, lo) = ($hi, $lo);
        if $kind == Q8_0 {
            $sdot(load32(q[32 * g..][..32].try_into().expect("32 bytes")), hi, lo)
        } else {
            let mut u = nibbles(q[16 * g..][..16].try_into().expect("16 bytes"));
            if matches!($kind, Q5_0 | Q5_1) {
                u = _mm256_or_si256(u, high_bits(&s[8 * g + 4..][..4]));
            }
            let v = $udot(u, hi, lo);
            match $kind {
                Q4_0 => _mm256_sub_epi32(v, _mm256_slli_epi32::<3>(load_lanes(&x.lanes[8 * g..][..8]))),
                Q5_0 => _mm256_sub_epi32(v, _mm256_slli_epi32::<4>(load_lanes(&x.lanes[8 * g..][..8]))),
                _ => v,
            }
        }
    }};
}

/// `(d, m)` of 4 consecutive blocks from their scales parts (`4·scale_bytes` bytes), with F16C.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn scales4<const KIND: u8>(s: &[u8]) -> (__m128, __m128) {
    let load = |at: usize| {
        let b: &[u8; 16] = s[at..][..16].try_into().expect("16 bytes");
        load16(b)
    };
    if scale_bytes(KIND) == 2 {
        let b: &[u8; 8] = s[..8].try_into().expect("8 bytes");
        return (_mm_cvtph_ps(_mm_set_epi64x(0, i64::from_le_bytes(*b))), _mm_setzero_ps());
    }
    // The (d, m) f16 pairs of the 4 blocks as 4 u32 lanes.
    let pairs = if scale_bytes(KIND) == 4 {
        load(0)
    } else {
        let (a, b) = (_mm_castsi128_ps(load(0)), _mm_castsi128_ps(load(16)));
        _mm_castps_si128(_mm_shuffle_ps::<0b10_00_10_00>(a, b))
    };
    let dm = _mm256_permutevar8x32_ps(_mm256_cvtph_ps(pairs), _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
    (_mm256_castps256_ps128(dm), _mm256_extractf128_ps::<1>(dm))
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn load4(v: &[f32]) -> __m128 {
    let v: &[f32; 4] = v[..4].try_into().expect("4 values");
    // SAFETY: `v` is 4 readable f32; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_ps(v.as_ptr()) }
}

/// Lane `I` of `v`'s low half in all 8 lanes.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn bcast<const I: i32>(v: __m256) -> __m256 {
    _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(I))
}

/// A row of a 32-weight format: 4 blocks per step with their scales converted together (F16C) and two
/// accumulators, then the remaining blocks one by one.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot32<const KIND: u8>(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    let sb = scale_bytes(KIND);
    let nb = x.scale.len();
    // Rows are consecutive in the quants and scales regions: ask for the row after next while this one
    // runs (small matrices end their streams before the hardware prefetcher ramps up). A prefetch never
    // faults, and `wrapping_add` keeps the address arithmetic defined past the end of the weights.
    for at in (0..q.len()).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(q.as_ptr().wrapping_add(2 * q.len() + at).cast());
    }
    for at in (0..s.len()).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(s.as_ptr().wrapping_add(2 * s.len() + at).cast());
    }
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut mins = _mm_setzero_ps();
    let mut g = 0;
    while g + 4 <= nb {
        let (d4, m4) = scales4::<KIND>(&s[g * sb..][..4 * sb]);
        let sc = _mm256_castps128_ps256(_mm_mul_ps(d4, load4(&x.scale[g..])));
        if has_min(KIND) {
            mins = _mm_fmadd_ps(m4, load4(&x.sum[g..]), mins);
        }
        let l0 = _mm256_cvtepi32_ps(block_lanes!(KIND, q, s, x, g));
        a0 = _mm256_fmadd_ps(l0, bcast::<0>(sc), a0);
        let l1 = _mm256_cvtepi32_ps(block_lanes!(KIND, q, s, x, g + 1));
        a1 = _mm256_fmadd_ps(l1, bcast::<1>(sc), a1);
        let l2 = _mm256_cvtepi32_ps(block_lanes!(KIND, q, s, x, g + 2));
        a0 = _mm256_fmadd_ps(l2, bcast::<2>(sc), a0);
        let l3 = _mm256_cvtepi32_ps(block_lanes!(KIND, q, s, x, g + 3));
        a1 = _mm256_fmadd_ps(l3, bcast::<3>(sc), a1);
        g += 4;
    }
    let mut tail = 0f32;
    for g in g..nb {
        let sg = &s[g * sb..][..sb];
        a0 = fma(a0, block_lanes!(KIND, q, s, x, g), h(sg, 0) * x.scale[g]);
        if has_min(KIND) {
            tail += h(sg, 2) * x.sum[g];
        }
    }
    let m = _mm_add_ps(mins, _mm_movehl_ps(mins, mins));
    let m = _mm_add_ss(m, _mm_shuffle_ps::<1>(m, m));
    hsum(_mm256_add_ps(a0, a1)) + _mm_cvtss_f32(m) + tail
}

/// [`dot32`] of two rows (`q0, s0` and `q1, s1`, each a whole row) with the same x: each block of x is
/// loaded once for both, and the two rows' chains run side by side. Made twice: with AVX2's byte dot
/// products (`dot32x2`) and with AVX-512 VNNI's (`dot32x2_vnni`).
macro_rules! dot32x2 {
    ($name:ident, $features:literal, $udot:ident, $sdot:ident) => {
        #[target_feature(enable = $features)]
        #[inline]
        fn $name<const KIND: u8>(q0: &[u8], s0: &[u8], q1: &[u8], s1: &[u8], x: &QxRow<'_>) -> [f32; 2] {
            let sb = scale_bytes(KIND);
            let nb = x.scale.len();
            // As dot32: the rows after next, asked for while these run (here the next pair's).
            for part in [q0, s0, q1, s1] {
                for at in (0..part.len()).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T0>(part.as_ptr().wrapping_add(2 * part.len() + at).cast());
                }
            }
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let (mut b0, mut b1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let (mut ma, mut mb) = (_mm_setzero_ps(), _mm_setzero_ps());
            let mut g = 0;
            while g + 4 <= nb {
                let xs = load4(&x.scale[g..]);
                let (da, mda) = scales4::<KIND>(&s0[g * sb..][..4 * sb]);
                let (db, mdb) = scales4::<KIND>(&s1[g * sb..][..4 * sb]);
                let (sa, sc_b) =
                    (_mm256_castps128_ps256(_mm_mul_ps(da, xs)), _mm256_castps128_ps256(_mm_mul_ps(db, xs)));
                if has_min(KIND) {
                    let sums = load4(&x.sum[g..]);
                    ma = _mm_fmadd_ps(mda, sums, ma);
                    mb = _mm_fmadd_ps(mdb, sums, mb);
                }
                macro_rules! step {
                    ($i:literal, $acc_a:ident, $acc_b:ident) => {{
                        let (hi, lo) = xg(x, g + $i);
                        let la = _mm256_cvtepi32_ps(block_lanes!(KIND, q0, s0, x, g + $i, hi, lo, $udot, $sdot));
                        $acc_a = _mm256_fmadd_ps(la, bcast::<$i>(sa), $acc_a);
                        let lb = _mm256_cvtepi32_ps(block_lanes!(KIND, q1, s1, x, g + $i, hi, lo, $udot, $sdot));
                        $acc_b = _mm256_fmadd_ps(lb, bcast::<$i>(sc_b), $acc_b);
                    }};
                }
                step!(0, a0, b0);
                step!(1, a1, b1);
                step!(2, a0, b0);
                step!(3, a1, b1);
                g += 4;
            }
            let mut tails = [0f32; 2];
            for g in g..nb {
                let (hi, lo) = xg(x, g);
                for (r, (q, s, acc)) in [(q0, s0, &mut a0), (q1, s1, &mut b0)].into_iter().enumerate() {
                    let sg = &s[g * sb..][..sb];
                    *acc = fma(*acc, block_lanes!(KIND, q, s, x, g, hi, lo, $udot, $sdot), h(sg, 0) * x.scale[g]);
                    if has_min(KIND) {
                        tails[r] += h(sg, 2) * x.sum[g];
                    }
                }
            }
            let fold = |m: __m128| {
                let m = _mm_add_ps(m, _mm_movehl_ps(m, m));
                _mm_cvtss_f32(_mm_add_ss(m, _mm_shuffle_ps::<1>(m, m)))
            };
            [hsum(_mm256_add_ps(a0, a1)) + fold(ma) + tails[0], hsum(_mm256_add_ps(b0, b1)) + fold(mb) + tails[1]]
        }
    };
}

dot32x2!(dot32x2, "avx2,fma,f16c", udot, sdot);
dot32x2!(dot32x2_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", udot_vnni, sdot_vnni);

#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    dot32::<Q8_0>(q, s, x)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    dot32::<Q4_0>(q, s, x)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_1(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    dot32::<Q4_1>(q, s, x)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    dot32::<Q5_0>(q, s, x)
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_1(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    dot32::<Q5_1>(q, s, x)
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
