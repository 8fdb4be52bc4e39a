//! Helpers for the CPU implementations: they read their inputs as f32 and write f32 results back in
//! the output's dtype. Kernels themselves live next to their GPU launch in `ops/<family>.rs`.

use crate::dtype::DType;
use crate::tensor::{Tensor, bytes_to_f32, f32_to_bytes};

/// Whether this x86-64 CPU has AVX2 and FMA (asked once): the quantized dot products have a second build
/// for them, chosen at run time, since the crate is compiled for baseline x86-64.
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// Whether the CPU has AVX2, FMA and F16C (the integer GEMV dots, where F16C converts block scales 8 at a
/// time, and the dense GEMV, where it widens f16 weights).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2_fma_f16c() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| has_avx2_fma() && is_x86_feature_detected!("f16c"))
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
