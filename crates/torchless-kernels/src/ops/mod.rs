//! Op families. Each module validates its inputs, picks the variant, launches the WGSL kernel on the
//! GPU or runs the CPU implementation, and carries its tests.

pub mod attention;
pub mod convert;
pub mod elementwise;
pub mod gemm;
pub mod gemv;
pub mod mlstm;
pub mod norm;
pub mod qmatmul;
pub mod rope;
pub mod sample;
pub mod select;
pub mod softmax;

use crate::backend::Backend;
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::tensor::Tensor;

/// A launch-shape override from environment variable `var` (for benchmark sweeps), read and parsed once
/// a process: `None` when unset, the variable's text as the error when `parse` rejects it.
pub(crate) fn env_override<T: Clone>(
    cell: &'static std::sync::OnceLock<std::result::Result<Option<T>, String>>,
    var: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> std::result::Result<Option<T>, String> {
    cell.get_or_init(|| match std::env::var(var) {
        Err(_) => Ok(None),
        Ok(v) => parse(&v).map(Some).ok_or(v),
    })
    .clone()
}

/// The largest power of two at most `v` (0 for 0).
pub(crate) fn prev_power_of_two(v: u32) -> u32 {
    if v == 0 { 0 } else { 1 << (31 - v.leading_zeros()) }
}

/// The backend shared by every tensor of an op, or a typed error.
pub fn common_backend(op: &'static str, tensors: &[&Tensor]) -> Result<Backend> {
    let first = tensors[0];
    if let Some(t) = tensors[1..].iter().find(|t| !first.same_backend(t)) {
        let (left, right) = (first.backend().device_name(), t.backend().device_name());
        return Err(KernelError::DeviceMismatch { op, left, right });
    }
    Ok(first.backend())
}

pub fn require_float(op: &'static str, t: &Tensor) -> Result<()> {
    if t.dtype().is_float() {
        Ok(())
    } else {
        Err(KernelError::DType { op, expected: "f32, f16 or bf16".into(), found: t.dtype() })
    }
}

pub fn require_dtype(op: &'static str, t: &Tensor, expected: DType) -> Result<()> {
    if t.dtype() == expected {
        Ok(())
    } else {
        Err(KernelError::DType { op, expected: expected.to_string(), found: t.dtype() })
    }
}

pub fn require_non_empty(op: &'static str, what: &'static str, t: &Tensor) -> Result<()> {
    if t.numel() == 0 { Err(KernelError::Empty { op, what }) } else { Ok(()) }
}

pub fn require_same_shape(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.shape() == b.shape() {
        Ok(())
    } else {
        Err(KernelError::Shape { op, detail: format!("{:?} vs {:?}", a.shape(), b.shape()) })
    }
}

pub fn require_same_dtype(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.dtype() == b.dtype() {
        Ok(())
    } else {
        Err(KernelError::DType { op, expected: a.dtype().to_string(), found: b.dtype() })
    }
}

/// Rejects a value that does not fit in a u32 kernel parameter.
pub fn to_u32(op: &'static str, name: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| KernelError::Argument {
        op,
        name,
        value: v.to_string(),
        reason: "larger than a kernel can index (2^32 - 1)".into(),
    })
}

/// `a` must not share storage with any of `others` (a GPU buffer cannot be bound for reading and
/// writing in one dispatch).
pub fn require_distinct(op: &'static str, name: &'static str, a: &Tensor, others: &[&Tensor]) -> Result<()> {
    if others.iter().any(|o| a.same_storage(o)) {
        return Err(KernelError::Argument {
            op,
            name,
            value: "a tensor sharing storage with another argument".into(),
            reason: "must be a separate tensor here".into(),
        });
    }
    Ok(())
}

/// The wgpu buffer of a tensor that a GPU op was handed (`common_backend` found every tensor on the GPU).
pub(crate) fn gpu_buffer(t: &Tensor) -> &wgpu::Buffer {
    t.gpu_buffer().expect("GPU tensor on the GPU backend").raw()
}

/// A kernel binding `n` storage buffers needs an adapter that allows that many per shader stage; `feature`
/// names the need in the error ("12 storage buffers per shader stage").
pub(crate) fn require_storage_buffers(
    ctx: &crate::gpu::GpuContext,
    op: &'static str,
    n: u32,
    feature: &'static str,
) -> Result<()> {
    let have = ctx.limits().max_storage_buffers_per_shader_stage;
    if have < n {
        return Err(KernelError::MissingFeature { op, feature, adapter: format!("{} (has {have})", ctx.info().name) });
    }
    Ok(())
}
