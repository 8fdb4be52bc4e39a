//! CPU dot products of one dense weight row (f32, f16 or bf16) with 1 to [`MAX_BATCH`] rows of x: the
//! CPU GEMV of [`crate::ops::gemv`].
//!
//! The batch is a const parameter so that every row of x keeps its accumulators in registers (with the
//! batch a run-time value they lived in memory, and the baseline x86-64 build ran f32 at half its
//! speed, f16 and bf16 at a quarter to a third of it). On x86-64 with AVX2, FMA and F16C the weights are
//! widened 8 at a time in registers (`vcvtph2ps` for f16, a shift for bf16); elsewhere blocks of 256
//! are widened into a buffer and dotted by a portable loop over fixed arrays that the compiler
//! vectorizes.

use half::{bf16, f16};

use crate::cpu::Floats;
use crate::ops::gemv::MAX_BATCH;

/// `w · x_r` for each of the `b` rows of `x` (`b` rows of `w.len()` values, `1 <= b <= MAX_BATCH`);
/// entries past `b` are 0.
pub(crate) fn row_dots(w: Floats<'_>, x: &[f32], b: usize) -> [f32; MAX_BATCH] {
    let n = w.len();
    let mut out = [0f32; MAX_BATCH];
    macro_rules! batch {
        ($($b:literal),*) => {
            match b {
                $($b => out[..$b].copy_from_slice(&dots::<$b>(w, std::array::from_fn(|r| &x[r * n..][..n]))),)*
                _ => panic!("row_dots: batch {b} outside 1..={MAX_BATCH}"),
            }
        };
    }
    batch!(1, 2, 3, 4, 5, 6, 7, 8);
    out
}

fn dots<const B: usize>(w: Floats<'_>, xs: [&[f32]; B]) -> [f32; B] {
    #[cfg(target_arch = "x86_64")]
    if crate::cpu::has_avx2_fma_f16c() {
        // SAFETY: AVX2, FMA and F16C were found on this CPU.
        return unsafe { avx2::dots(w, xs) };
    }
    match w {
        Floats::F32(w) => portable::dots(w, xs),
        Floats::F16(w) => portable::dots(w, xs),
        Floats::BF16(w) => portable::dots(w, xs),
    }
}

mod portable {
    use super::{bf16, f16};

    /// Weights decoded per block.
    const BLOCK: usize = 256;

    /// A block of weights as f32: f32 weights as they are, 16-bit ones widened into `buf`.
    pub(super) trait Widen: Copy {
        fn widen<'a>(w: &'a [Self], buf: &'a mut [f32; BLOCK]) -> &'a [f32];
    }

    impl Widen for f32 {
        fn widen<'a>(w: &'a [f32], _: &'a mut [f32; BLOCK]) -> &'a [f32] {
            w
        }
    }

    impl Widen for f16 {
        fn widen<'a>(w: &'a [f16], buf: &'a mut [f32; BLOCK]) -> &'a [f32] {
            use half::slice::HalfFloatSliceExt;
            let dst = &mut buf[..w.len()];
            // F16C where the processor has it (runtime detection inside `half`).
            w.convert_to_f32_slice(dst);
            dst
        }
    }

    impl Widen for bf16 {
        fn widen<'a>(w: &'a [bf16], buf: &'a mut [f32; BLOCK]) -> &'a [f32] {
            let dst = &mut buf[..w.len()];
            // bf16 is the top half of an f32: a shift the compiler vectorizes.
            for (d, s) in dst.iter_mut().zip(w) {
                *d = f32::from_bits((s.to_bits() as u32) << 16);
            }
            dst
        }
    }

    /// Blocks of 256 weights as f32, then 16 independent f32 lanes per row of x.
    pub(super) fn dots<T: Widen, const B: usize>(w: &[T], xs: [&[f32]; B]) -> [f32; B] {
        let mut acc = [[0f32; 16]; B];
        let mut tail = [0f32; B];
        let mut buf = [0f32; BLOCK];
        for (block, wb) in w.chunks(BLOCK).enumerate() {
            let wf = T::widen(wb, &mut buf);
            let full = wf.len() / 16 * 16;
            for ((a, t), x) in acc.iter_mut().zip(&mut tail).zip(&xs) {
                let x = &x[block * BLOCK..][..wf.len()];
                for (wc, xc) in wf[..full].chunks_exact(16).zip(x.chunks_exact(16)) {
                    for l in 0..16 {
                        a[l] += wc[l] * xc[l];
                    }
                }
                *t += wf[full..].iter().zip(&x[full..]).map(|(w, x)| w * x).sum::<f32>();
            }
        }
        std::array::from_fn(|r| acc[r].iter().sum::<f32>() + tail[r])
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Floats;
    use crate::cpu::{hsum256 as hsum, load8_avx2 as load8};

    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn load_x(x: &[f32], at: usize) -> __m256 {
        let v: &[f32; 8] = x[at..][..8].try_into().expect("8 values");
        // SAFETY: `v` is 32 readable bytes.
        unsafe { _mm256_loadu_ps(v.as_ptr()) }
    }

    /// `U` accumulator chains per row of x, 8·U weights a step: one row of x needs several chains to
    /// hide the FMA's latency, several rows have enough between them (and 16 registers in all).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    fn dots_u<const B: usize, const U: usize>(w: Floats<'_>, xs: [&[f32]; B]) -> [f32; B] {
        let n = w.len();
        let step = 8 * U;
        let full = n / step * step;
        let mut acc = [[_mm256_setzero_ps(); U]; B];
        let mut at = 0;
        while at < full {
            for u in 0..U {
                let wv = load8(w, at + 8 * u);
                for (a, x) in acc.iter_mut().zip(&xs) {
                    a[u] = _mm256_fmadd_ps(wv, load_x(x, at + 8 * u), a[u]);
                }
            }
            at += step;
        }
        std::array::from_fn(|r| {
            let mut v = acc[r][0];
            for a in &acc[r][1..] {
                v = _mm256_add_ps(v, *a);
            }
            let tail: f32 = (full..n)
                .map(|i| {
                    let wi = match w {
                        Floats::F32(w) => w[i],
                        Floats::F16(w) => w[i].to_f32(),
                        Floats::BF16(w) => w[i].to_f32(),
                    };
                    wi * xs[r][i]
                })
                .sum();
            hsum(v) + tail
        })
    }

    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dots<const B: usize>(w: Floats<'_>, xs: [&[f32]; B]) -> [f32; B] {
        match B {
            1 => dots_u::<B, 4>(w, xs),
            2 | 3 => dots_u::<B, 2>(w, xs),
            _ => dots_u::<B, 1>(w, xs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    /// Every batch, every dtype, lengths around the vector steps: the same sums as an f64 reference
    /// within f32 rounding, on whichever path this CPU takes and on the portable one.
    #[test]
    fn dots_match_an_f64_reference() {
        let mut rng = Rng::new(5);
        for n in [1, 7, 8, 15, 16, 17, 31, 33, 64, 100, 257] {
            let w = rng.vec(n, -1.0, 1.0);
            let (w16, wb): (Vec<f16>, Vec<bf16>) =
                (w.iter().map(|&v| f16::from_f32(v)).collect(), w.iter().map(|&v| bf16::from_f32(v)).collect());
            let x = rng.vec(n * MAX_BATCH, -1.0, 1.0);
            let rows: [(Floats, Vec<f32>); 3] = [
                (Floats::F32(&w), w.clone()),
                (Floats::F16(&w16), w16.iter().map(|v| v.to_f32()).collect()),
                (Floats::BF16(&wb), wb.iter().map(|v| v.to_f32()).collect()),
            ];
            for (row, wf) in rows {
                for b in 1..=MAX_BATCH {
                    let got = row_dots(row, &x[..b * n], b);
                    let portable: [f32; 3] = match row {
                        Floats::F32(w) => portable::dots(w, std::array::from_fn(|r| &x[r * n..][..n])),
                        Floats::F16(w) => portable::dots(w, std::array::from_fn(|r| &x[r * n..][..n])),
                        Floats::BF16(w) => portable::dots(w, std::array::from_fn(|r| &x[r * n..][..n])),
                    };
                    for r in 0..MAX_BATCH {
                        let dot: f64 = wf.iter().zip(&x[r * n..][..n]).map(|(&a, &c)| a as f64 * c as f64).sum();
                        let want = if r < b { dot } else { 0.0 };
                        let tol = 1e-6 * (n as f64).sqrt() + 1e-7;
                        assert!((got[r] as f64 - want).abs() <= tol, "n {n} b {b} row {r}: {} vs {want}", got[r]);
                        if r < 3 {
                            let p = portable[r] as f64;
                            assert!((p - dot).abs() <= tol, "portable, n {n} row {r}: {p} vs {dot}");
                        }
                    }
                }
            }
        }
    }
}
