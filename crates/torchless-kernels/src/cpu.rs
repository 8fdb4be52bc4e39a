//! Helpers for the CPU implementations: they read their inputs as f32 and write f32 results back in
//! the output's dtype. Kernels themselves live next to their GPU launch in `ops/<family>.rs`.

use crate::dtype::DType;
use crate::tensor::{Tensor, bytes_to_f32, f32_to_bytes};

/// An f32 matrix operand of [`gemm_f32`]: its first element and its column and row strides, in elements.
#[derive(Clone, Copy)]
pub(crate) struct Strided<P> {
    pub ptr: P,
    pub col_stride: isize,
    pub row_stride: isize,
}

/// `dst [m, n] = (dst if accumulate) + scale · lhs [m, k] · rhs [k, n]` through the `gemm` crate.
///
/// # Safety
/// Each operand's elements at its strides (`m × n`, `m × k`, `k × n`) are valid for the access, and `dst`
/// overlaps neither input.
pub(crate) unsafe fn gemm_f32(
    (m, n, k): (usize, usize, usize),
    dst: Strided<*mut f32>,
    accumulate: bool,
    lhs: Strided<*const f32>,
    rhs: Strided<*const f32>,
    scale: f32,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract is gemm's.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            dst.col_stride,
            dst.row_stride,
            accumulate,
            lhs.ptr,
            lhs.col_stride,
            lhs.row_stride,
            rhs.ptr,
            rhs.col_stride,
            rhs.row_stride,
            if accumulate { 1.0 } else { 0.0 },
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Whether this x86-64 CPU has AVX2 and FMA (asked once): the quantized dot products have a second build
/// for them, chosen at run time, since the crate is compiled for baseline x86-64.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Whether the CPU also has AVX-512 VNNI and VL (the integer GEMV's byte dot products in one instruction).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512_vnni() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        has_avx2_fma_f16c() && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")
    })
}

/// Whether the CPU has AVX2, FMA and F16C (the integer GEMV dots, where F16C converts block scales 8 at a
/// time, and the dense GEMV, where it widens f16 weights).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma_f16c() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| has_avx2_fma() && is_x86_feature_detected!("f16c"))
}

/// The elements of a CPU float tensor in their own type, for kernels that widen them as they read (a
/// GEMV's weight rows, an attention's K and V rows) instead of converting the whole tensor first.
#[derive(Clone, Copy)]
pub(crate) enum Floats<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
    BF16(&'a [half::bf16]),
}

impl<'a> Floats<'a> {
    /// The elements of `t`, whose host words are `words`.
    pub(crate) fn of(t: &Tensor, words: &'a [u32]) -> Floats<'a> {
        let n = t.numel();
        match t.dtype() {
            DType::F16 => Floats::F16(&bytemuck::cast_slice(words)[..n]),
            DType::BF16 => Floats::BF16(&bytemuck::cast_slice(words)[..n]),
            _ => Floats::F32(&bytemuck::cast_slice(words)[..n]),
        }
    }

    /// Elements `start..start + len`.
    pub(crate) fn slice(self, start: usize, len: usize) -> Floats<'a> {
        match self {
            Floats::F32(x) => Floats::F32(&x[start..][..len]),
            Floats::F16(x) => Floats::F16(&x[start..][..len]),
            Floats::BF16(x) => Floats::BF16(&x[start..][..len]),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Floats::F32(x) => x.len(),
            Floats::F16(x) => x.len(),
            Floats::BF16(x) => x.len(),
        }
    }

    /// Elements `start..start + len` as f32: borrowed from f32 elements, else widened into `buf`.
    pub(crate) fn widened<'b>(&'b self, start: usize, len: usize, buf: &'b mut [f32]) -> &'b [f32] {
        use half::slice::HalfFloatSliceExt;
        let buf = &mut buf[..len];
        match self {
            Floats::F32(x) => &x[start..][..len],
            Floats::F16(x) => {
                x[start..][..len].convert_to_f32_slice(buf);
                buf
            }
            Floats::BF16(x) => {
                x[start..][..len].convert_to_f32_slice(buf);
                buf
            }
        }
    }

    /// Elements `0..len` as new f32 values.
    pub(crate) fn prefix_f32(&self, len: usize) -> Vec<f32> {
        let mut out = vec![0f32; len];
        if let Floats::F32(x) = self {
            out.copy_from_slice(&x[..len]);
        } else {
            self.widened(0, len, &mut out);
        }
        out
    }

    /// Asks the CPU to bring elements `start..start + len` into its caches (nothing past the end).
    #[inline(always)]
    pub(crate) fn prefetch(&self, start: usize, len: usize) {
        #[cfg(target_arch = "x86_64")]
        {
            let (ptr, size): (*const u8, usize) = match self {
                Floats::F32(x) => (x.as_ptr().cast(), 4),
                Floats::F16(x) => (x.as_ptr().cast(), 2),
                Floats::BF16(x) => (x.as_ptr().cast(), 2),
            };
            let (from, to) = (start * size, (start + len).min(self.len()) * size);
            if from < to {
                prefetch_bytes(ptr, from, to);
            }
        }
        // Elsewhere a hint only (stable Rust has no prefetch intrinsic outside x86).
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (start, len);
    }
}

/// Asks for the lines of bytes `from..to` at `p` (`from` may equal `to`; the line of `to - 1` is asked for
/// in any case): every 64th byte and the last. A prefetch never faults, and `wrapping_add` keeps the
/// address arithmetic defined past the end of the data.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn prefetch_bytes(p: *const u8, from: usize, to: usize) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    let line = |at: usize| {
        // SAFETY: SSE is part of x86-64; a prefetch reads nothing and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(at).cast()) }
    };
    let mut at = from;
    while at < to {
        line(at);
        at += 64;
    }
    line(to.saturating_sub(1));
}

/// The sum of the 8 lanes of an AVX register.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) fn hsum256(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
}

/// The lane sums of four AVX registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) fn hsum256x4(v: [std::arch::x86_64::__m256; 4]) -> [f32; 4] {
    use std::arch::x86_64::*;
    // Lane i of each half: that half's part of Σ v[i].
    let h = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
    let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h));
    let mut out = [0f32; 4];
    // SAFETY: `out` is 16 writable bytes; `storeu` has no alignment requirement.
    unsafe { _mm_storeu_ps(out.as_mut_ptr(), s) };
    out
}

/// Elements `at..at + 8` of `w` as f32 (16-bit ones widened in the register).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(crate) fn load8_avx2(w: Floats<'_>, at: usize) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    match w {
        Floats::F32(w) => {
            let v: &[f32; 8] = w[at..][..8].try_into().expect("8 values");
            // SAFETY: `v` is 32 readable bytes; `loadu` has no alignment requirement.
            unsafe { _mm256_loadu_ps(v.as_ptr()) }
        }
        Floats::F16(w) => {
            let v: &[half::f16; 8] = w[at..][..8].try_into().expect("8 values");
            // SAFETY: as above, 16 bytes.
            _mm256_cvtph_ps(unsafe { _mm_loadu_si128(v.as_ptr().cast()) })
        }
        Floats::BF16(w) => {
            let v: &[half::bf16; 8] = w[at..][..8].try_into().expect("8 values");
            // SAFETY: as above, 16 bytes.
            let h = unsafe { _mm_loadu_si128(v.as_ptr().cast()) };
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
        }
    }
}

/// The elements of a CPU tensor as f32 (any dtype).
pub fn read_f32(t: &Tensor) -> Vec<f32> {
    let words = t.cpu_words().expect("CPU kernels get CPU tensors");
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    bytes_to_f32(&bytes[..t.size_bytes()], t.dtype())
}

/// The elements of a CPU u32 tensor.
pub fn read_u32(t: &Tensor) -> Vec<u32> {
    let words = t.cpu_words().expect("CPU kernels get CPU tensors");
    match t.dtype() {
        DType::U32 | DType::I32 => words[..t.numel()].to_vec(),
        _ => read_f32(t).into_iter().map(|v| v as u32).collect(),
    }
}

/// Stores f32 values into a CPU tensor, converting to its dtype.
pub fn write_f32(t: &Tensor, values: &[f32]) {
    let bytes = f32_to_bytes(values, t.dtype());
    write_bytes(t, 0, &bytes);
}

/// Stores raw element bytes at a byte offset of a CPU tensor.
pub fn write_bytes(t: &Tensor, offset: usize, bytes: &[u8]) {
    let mut words = t.cpu_words_mut().expect("CPU kernels get CPU tensors");
    let dst: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    dst[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// Stores u32 values into a CPU u32 tensor.
pub fn write_u32(t: &Tensor, values: &[u32]) {
    write_bytes(t, 0, bytemuck::cast_slice(values));
}
