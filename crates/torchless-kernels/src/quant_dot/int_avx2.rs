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
//! Q8_0's magnitudes ≤ 128 below 2·128·127 = 32512 (no saturation); `256·Σ` stays below 2³¹ (Q8_0, the
//! largest, reaches 256·4·128·127 ≈ 1.7·10⁷).

use std::arch::x86_64::*;

use super::{QxRow, h};
use crate::cpu::{hsum256 as hsum, prefetch_bytes};

/// The row dot of a format: `(quants, scales, x)`.
macro_rules! entry {
    ($($name:ident => $body:ident),* $(,)?) => {$(
        pub(super) fn $name(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
            // SAFETY: `int_row_dot` hands these out only where `has_avx2_fma_f16c()` found AVX2, FMA and F16C.
            unsafe { $body(q, s, x) }
        }
    )*};
}

/// The two-row dot of a format: `(quants, scales)` of each row, and x; the `_vnni` form with AVX-512
/// VNNI's byte dot products. `$plain` and `$with_vnni` (with generic arguments `$g`) take the two rows'
/// parts as arrays.
macro_rules! entry2 {
    ($($name:ident, $vnni:ident => $plain:ident, $with_vnni:ident <$($g:tt),*>),* $(,)?) => {$(
        pub(super) fn $name(q0: &[u8], s0: &[u8], q1: &[u8], s1: &[u8], x: &QxRow<'_>) -> [f32; 2] {
            #[target_feature(enable = "avx2,fma,f16c")]
            fn inner(q0: &[u8], s0: &[u8], q1: &[u8], s1: &[u8], x: &QxRow<'_>) -> [f32; 2] {
                $plain::<$($g),*>([q0, q1], [s0, s1], x)
            }
            // SAFETY: `int_row_dot2` hands these out only where `has_avx2_fma_f16c()` found AVX2, FMA and F16C.
            unsafe { inner(q0, s0, q1, s1, x) }
        }

        pub(super) fn $vnni(q0: &[u8], s0: &[u8], q1: &[u8], s1: &[u8], x: &QxRow<'_>) -> [f32; 2] {
            #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
            fn inner(q0: &[u8], s0: &[u8], q1: &[u8], s1: &[u8], x: &QxRow<'_>) -> [f32; 2] {
                $with_vnni::<$($g),*>([q0, q1], [s0, s1], x)
            }
            // SAFETY: `int_row_dot2` hands these out only where `has_avx512_vnni()` also found AVX-512 VNNI
            // and VL.
            unsafe { inner(q0, s0, q1, s1, x) }
        }
    )*};
}

entry2!(
    dot2_q8_0, dot2_q8_0_vnni => dot32x2, dot32x2_vnni <Q8_0>,
    dot2_q4_0, dot2_q4_0_vnni => dot32x2, dot32x2_vnni <Q4_0>,
    dot2_q4_1, dot2_q4_1_vnni => dot32x2, dot32x2_vnni <Q4_1>,
    dot2_q5_0, dot2_q5_0_vnni => dot32x2, dot32x2_vnni <Q5_0>,
    dot2_q5_1, dot2_q5_1_vnni => dot32x2, dot32x2_vnni <Q5_1>,
    dot2_q4_k, dot2_q4_k_vnni => dot256, dot256_vnni <Q4_K, 2>,
    dot2_q5_k, dot2_q5_k_vnni => dot256, dot256_vnni <Q5_K, 2>,
    dot2_q6_k, dot2_q6_k_vnni => dot256, dot256_vnni <Q6_K, 2>,
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
/// The 256-weight formats, by `KIND` ([`dot256`]).
const Q4_K: u8 = 5;
const Q5_K: u8 = 6;
const Q6_K: u8 = 7;

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

/// Bytes of a block's quants part, for the 32-weight formats.
const fn quant_bytes(kind: u8) -> usize {
    if kind == Q8_0 { 32 } else { 16 }
}

/// The row after next of a 32-weight format's row (`q`, `s`), which the dots ask for while they run: rows
/// are consecutive in the quants and scales regions, and small matrices end their streams before the
/// hardware prefetcher ramps up.
#[derive(Clone, Copy)]
struct RowAfterNext {
    q: *const u8,
    s: *const u8,
    q_len: usize,
    s_len: usize,
}

impl RowAfterNext {
    fn of(q: &[u8], s: &[u8]) -> RowAfterNext {
        let after_next = |part: &[u8]| part.as_ptr().wrapping_add(2 * part.len());
        RowAfterNext { q: after_next(q), s: after_next(s), q_len: q.len(), s_len: s.len() }
    }

    /// The start of its 4 blocks from block `g` (64 bytes of quants, 128 for Q8_0; the scales' steps, at
    /// most 32 bytes apart, reach every line).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn step<const KIND: u8>(self, g: usize) {
        let bq = quant_bytes(KIND);
        _mm_prefetch::<_MM_HINT_T0>(self.q.wrapping_add(bq * g).cast());
        if KIND == Q8_0 {
            _mm_prefetch::<_MM_HINT_T0>(self.q.wrapping_add(bq * g + 64).cast());
        }
        _mm_prefetch::<_MM_HINT_T0>(self.s.wrapping_add(scale_bytes(KIND) * g).cast());
    }

    /// Its blocks from block `g` on.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn rest<const KIND: u8>(self, g: usize) {
        prefetch_bytes(self.q, quant_bytes(KIND) * g, self.q_len);
        prefetch_bytes(self.s, scale_bytes(KIND) * g, self.s_len);
    }
}

/// A row of a 32-weight format: 4 blocks per step with their scales converted together (F16C) and two
/// accumulators, then the remaining blocks one by one.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
fn dot32<const KIND: u8>(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    let sb = scale_bytes(KIND);
    let nb = x.scale.len();
    // The row after next, a step (4 blocks) at a time and the tail's blocks after the loop, as in dot32x2
    // (single rows alone, one thread, 16 MiB, against whole rows at the start: q8_0 1.68 -> 1.18 ms, q4_0
    // 3.32 -> 2.87, q4_1 2.25 -> 2.13).
    let after_next = RowAfterNext::of(q, s);
    let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut mins = _mm_setzero_ps();
    let mut g = 0;
    while g + 4 <= nb {
        after_next.step::<KIND>(g);
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
    after_next.rest::<KIND>(g);
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

/// [`dot32`] of two rows (`q`, `s`: each row's parts, each a whole row) with the same x: each block of x is
/// loaded once for both, and the two rows' chains run side by side. Made twice: with AVX2's byte dot
/// products (`dot32x2`) and with AVX-512 VNNI's (`dot32x2_vnni`).
macro_rules! dot32x2 {
    ($name:ident, $features:literal, $udot:ident, $sdot:ident) => {
        #[target_feature(enable = $features)]
        #[inline]
        fn $name<const KIND: u8>(q: [&[u8]; 2], s: [&[u8]; 2], x: &QxRow<'_>) -> [f32; 2] {
            let ([q0, q1], [s0, s1]) = (q, s);
            let sb = scale_bytes(KIND);
            let nb = x.scale.len();
            // As dot32, the rows after next (here the next pair's) are asked for while these run, a step (4
            // blocks) at a time as in dot256: two rows read side by side defeat the hardware prefetcher,
            // and whole rows asked for at the start were slower (one thread, 16 MiB: q4_1 2.24 -> 1.55 ms,
            // q8_0 1.36 -> 0.91, q4_0 2.57 -> 1.91).
            let after_next = [RowAfterNext::of(q0, s0), RowAfterNext::of(q1, s1)];
            let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let (mut b0, mut b1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
            let (mut ma, mut mb) = (_mm_setzero_ps(), _mm_setzero_ps());
            let mut g = 0;
            while g + 4 <= nb {
                for row in after_next {
                    row.step::<KIND>(g);
                }
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
            for row in after_next {
                row.rest::<KIND>(g);
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

/// Block `blk` of 256 values of x.
struct XBlock<'a> {
    hi: &'a [u8; 256],
    lo: &'a [u8; 256],
    scale: &'a [f32; 8],
    sum: &'a [f32; 8],
    lanes: &'a [i32; 64],
}

impl<'a> XBlock<'a> {
    #[inline(always)]
    fn new(x: &QxRow<'a>, blk: usize) -> XBlock<'a> {
        XBlock {
            hi: x.hi[256 * blk..][..256].try_into().expect("256 bytes"),
            lo: x.lo[256 * blk..][..256].try_into().expect("256 bytes"),
            scale: x.scale[8 * blk..][..8].try_into().expect("8 values"),
            sum: x.sum[8 * blk..][..8].try_into().expect("8 values"),
            lanes: x.lanes[64 * blk..][..64].try_into().expect("64 lanes"),
        }
    }

    /// `hi` and `lo` of group `j` (0..8), as [`xg`].
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn group(&self, j: usize) -> (__m256i, __m256i) {
        (
            load32(self.hi[32 * j..][..32].try_into().expect("32 bytes")),
            load32(self.lo[32 * j..][..32].try_into().expect("32 bytes")),
        )
    }
}

#[target_feature(enable = "avx2,fma")]
#[inline]
fn load8(v: &[f32; 8]) -> __m256 {
    // SAFETY: `v` is 8 readable f32; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(v.as_ptr()) }
}

/// The 8 scales and the 8 mins (6 bits each) of a Q4_K or Q5_K block from its 12 bytes, as f32 lanes:
/// ggml's unpacking of all 16 at once (what [`super::scale_min_k4`] does for one).
#[target_feature(enable = "avx2,fma")]
#[inline]
fn scales_mins_k(b: &[u8; 12]) -> (__m256, __m256) {
    let w = |i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    let (w0, w1, w2) = (w(0), w(1), w(2));
    let (low6, low4, two) = (0x3f3f_3f3f, 0x0f0f_0f0f, 0x0303_0303);
    // Scales and mins 0..3: the low 6 bits of bytes 0..3 and 4..7. 4..7: the nibbles of bytes 8..11 with
    // the top 2 bits of bytes 0..3 (scales) or 4..7 (mins) above them.
    let sc = (w0 & low6) as u64 | (((w2 & low4) | (((w0 >> 6) & two) << 4)) as u64) << 32;
    let m = (w1 & low6) as u64 | ((((w2 >> 4) & low4) | (((w1 >> 6) & two) << 4)) as u64) << 32;
    let widen = |v: u64| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(v as i64)));
    (widen(sc), widen(m))
}

/// Bit `k` of each byte of `qh` as 16 or 0 (Q5_K's fifth bits). Shifting 16-bit lanes moves no bit that
/// the mask keeps across bytes.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn bit_k(qh: __m256i, k: usize) -> __m256i {
    let at4 = match k {
        0 => _mm256_slli_epi16::<4>(qh),
        1 => _mm256_slli_epi16::<3>(qh),
        2 => _mm256_slli_epi16::<2>(qh),
        3 => _mm256_slli_epi16::<1>(qh),
        4 => qh,
        5 => _mm256_srli_epi16::<1>(qh),
        6 => _mm256_srli_epi16::<2>(qh),
        _ => _mm256_srli_epi16::<3>(qh),
    };
    _mm256_and_si256(at4, _mm256_set1_epi8(16))
}

/// Bits `2k, 2k + 1` of each byte of `qh` as bits 4 and 5 (Q6_K's high bits), as [`bit_k`].
#[target_feature(enable = "avx2,fma")]
#[inline]
fn two_bits_k(qh: __m256i, k: usize) -> __m256i {
    let at4 = match k {
        0 => _mm256_slli_epi16::<4>(qh),
        1 => _mm256_slli_epi16::<2>(qh),
        2 => qh,
        _ => _mm256_srli_epi16::<2>(qh),
    };
    _mm256_and_si256(at4, _mm256_set1_epi8(0x30))
}

/// Rows of a 256-weight format (`KIND`): `R` of them (1 or 2) with the same x, each group of x loaded
/// once for all and the rows' chains side by side. The single-row dots are `R = 1` of the AVX2 form, so
/// the two-row ones (AVX2's `dot256`, AVX-512 VNNI's `dot256_vnni`: the same integer lanes) equal them to
/// the bit. Per block, the scales of all its groups are made at once (times x's, in 8 lanes); each row
/// has two accumulators (even and odd groups: one FMA chain is the bound otherwise).
///
/// Q4_K and Q5_K (blocks of 256: d, dmin, 12 bytes of 6-bit scales and mins, [qh 32,] qs 128): per 32
/// weights `d·sc·n − dmin·m`, the mins from x's block sums. Q6_K (blocks of 256: ql 128, qh 64, 16 signed
/// 8-bit scales; d in the scales part): per 16 weights `d·sc·(n − 32)`, with `n` unsigned through the
/// byte dots and `32·Σ x̃` (x's lanes) taken off in the integer lanes; the scale, which changes every 4
/// lanes, goes in with the float one (the lanes, below 2²³, convert exactly).
macro_rules! dot256 {
    ($name:ident, $features:literal, $udot:ident) => {
        #[target_feature(enable = $features)]
        #[inline]
        fn $name<const KIND: u8, const R: usize>(q: [&[u8]; R], s: [&[u8]; R], x: &QxRow<'_>) -> [f32; R] {
            let bytes = match KIND {
                Q4_K => 144,
                Q5_K => 176,
                _ => 208,
            };
            let mask = _mm256_set1_epi8(0x0F);
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            // Q4_K, Q5_K: `Σ dmin·m·Σx` per lane.
            let mut mins = [_mm256_setzero_ps(); R];
            // As dot32, the rows after next (here after these R) are asked for while these run, but a block
            // at a time: two rows read side by side defeat the hardware prefetcher, and asking for whole
            // rows at the start was slower (Q4_K two-row dots, one thread: about 1.7 ms against 1.3–1.4 ms).
            for part in &s {
                prefetch_bytes(part.as_ptr().wrapping_add(2 * part.len()), 0, part.len());
            }
            for blk in 0..x.scale.len() / 8 {
                for q in &q {
                    // Every line the block touches (it need not start on one).
                    prefetch_bytes(q.as_ptr().wrapping_add(2 * q.len() + bytes * blk), 0, bytes);
                }
                // The block of x and of each row as arrays and slices of known length: the loads below
                // need no bounds checks.
                let xb = XBlock::new(x, blk);
                let mut block = [&[][..]; R];
                for (b, q) in block.iter_mut().zip(q) {
                    *b = &q[bytes * blk..][..bytes];
                }
                // (Loops over the rows rather than `array::from_fn`, whose closures were not inlined.)
                if KIND == Q6_K {
                    let mut d = [_mm256_setzero_ps(); R];
                    for (d, s) in d.iter_mut().zip(s) {
                        let bits = u16::from_le_bytes([s[2 * blk], s[2 * blk + 1]]);
                        *d = _mm256_broadcastss_ps(_mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32)));
                    }
                    for half in 0..2 {
                        // x's scales of the half's 4 groups, each twice (one per 16 weights).
                        let xs = _mm256_castps128_ps256(load4(&xb.scale[4 * half..]));
                        let xs = _mm256_permutevar8x32_ps(xs, _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3));
                        let mut sc = [_mm256_setzero_ps(); R];
                        for ((sc, b), d) in sc.iter_mut().zip(block).zip(d) {
                            let s8: &[u8; 8] = b[192 + 8 * half..][..8].try_into().expect("8 bytes");
                            let s8 = _mm256_cvtepi8_epi32(_mm_cvtsi64_si128(i64::from_le_bytes(*s8)));
                            *sc = _mm256_mul_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(s8)), xs);
                        }
                        macro_rules! group {
                            ($k:literal) => {{
                                let j = 4 * half + $k;
                                let (hi, lo) = xb.group(j);
                                let x32 = _mm256_slli_epi32::<5>(load_lanes(&xb.lanes[8 * j..][..8]));
                                let (k0, k1) = (2 * $k, 2 * $k + 1);
                                let at = _mm256_setr_epi32(k0, k0, k0, k0, k1, k1, k1, k1);
                                for ((acc, b), sc) in acc.iter_mut().zip(block).zip(sc) {
                                    let ql = load32(b[64 * half + 32 * ($k % 2)..][..32].try_into().expect("32 bytes"));
                                    let low = if $k < 2 { ql } else { _mm256_srli_epi16::<4>(ql) };
                                    let qh = load32(b[128 + 32 * half..][..32].try_into().expect("32 bytes"));
                                    let n = _mm256_or_si256(_mm256_and_si256(low, mask), two_bits_k(qh, $k));
                                    let lanes = _mm256_cvtepi32_ps(_mm256_sub_epi32($udot(n, hi, lo), x32));
                                    let scale = _mm256_permutevar8x32_ps(sc, at);
                                    acc[$k % 2] = _mm256_fmadd_ps(lanes, scale, acc[$k % 2]);
                                }
                            }};
                        }
                        group!(0);
                        group!(1);
                        group!(2);
                        group!(3);
                    }
                } else {
                    let (xs, xsum) = (load8(xb.scale), load8(xb.sum));
                    // Per row, `d·sc` times x's scale for each group.
                    let mut sc = [_mm256_setzero_ps(); R];
                    for ((sc, mins), b) in sc.iter_mut().zip(&mut mins).zip(block) {
                        let dm = i32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
                        let dm = _mm256_castps128_ps256(_mm_cvtph_ps(_mm_cvtsi32_si128(dm)));
                        let (s8, m8) = scales_mins_k(b[4..16].try_into().expect("12 bytes"));
                        *mins = _mm256_fmadd_ps(_mm256_mul_ps(bcast::<1>(dm), m8), xsum, *mins);
                        *sc = _mm256_mul_ps(_mm256_mul_ps(bcast::<0>(dm), s8), xs);
                    }
                    macro_rules! chunk {
                        ($c:literal) => {{
                            let ((h0, l0), (h1, l1)) = (xb.group(2 * $c), xb.group(2 * $c + 1));
                            for ((acc, b), sc) in acc.iter_mut().zip(block).zip(sc) {
                                let qs = if KIND == Q5_K { &b[48..] } else { &b[16..] };
                                let raw = load32(qs[32 * $c..][..32].try_into().expect("32 bytes"));
                                let mut u0 = _mm256_and_si256(raw, mask);
                                let mut u1 = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), mask);
                                if KIND == Q5_K {
                                    let qh = load32(b[16..48].try_into().expect("32 bytes"));
                                    u0 = _mm256_or_si256(u0, bit_k(qh, 2 * $c));
                                    u1 = _mm256_or_si256(u1, bit_k(qh, 2 * $c + 1));
                                }
                                let v0 = _mm256_cvtepi32_ps($udot(u0, h0, l0));
                                acc[0] = _mm256_fmadd_ps(v0, bcast::<{ 2 * $c }>(sc), acc[0]);
                                let v1 = _mm256_cvtepi32_ps($udot(u1, h1, l1));
                                acc[1] = _mm256_fmadd_ps(v1, bcast::<{ 2 * $c + 1 }>(sc), acc[1]);
                            }
                        }};
                    }
                    chunk!(0);
                    chunk!(1);
                    chunk!(2);
                    chunk!(3);
                }
            }
            let mut out = [0f32; R];
            for ((o, [a0, a1]), m) in out.iter_mut().zip(acc).zip(mins) {
                *o = hsum(_mm256_add_ps(a0, a1)) - hsum(m);
            }
            out
        }
    };
}

dot256!(dot256, "avx2,fma,f16c", udot);
dot256!(dot256_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", udot_vnni);

#[target_feature(enable = "avx2,fma,f16c")]
fn q4_k(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    dot256::<Q4_K, 1>([q], [s], x)[0]
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q5_k(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    dot256::<Q5_K, 1>([q], [s], x)[0]
}

#[target_feature(enable = "avx2,fma,f16c")]
fn q6_k(q: &[u8], s: &[u8], x: &QxRow<'_>) -> f32 {
    dot256::<Q6_K, 1>([q], [s], x)[0]
}
