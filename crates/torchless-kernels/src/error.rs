//! Errors of the kernel layer. Every message names the op or resource and the expected vs found value.

use crate::dtype::DType;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(
        "no GPU adapter found{detail}; run `torchless backends` to list adapters, or use the CPU backend (TORCHLESS_BACKEND=cpu)"
    )]
    NoAdapter { detail: String },

    #[error(
        "the best adapter, {adapter}, is a software renderer that runs on the CPU, slower than the CPU backend; `--backend gpu` (or TORCHLESS_BACKEND=gpu) uses it anyway"
    )]
    SoftwareAdapter { adapter: String },

    #[error("backend {requested} is not available on this machine: {reason}")]
    BackendUnavailable { requested: String, reason: String },

    #[error("unknown backend {0:?}: expected one of auto, cpu, gpu, metal, vulkan, dx12")]
    UnknownBackend(String),

    #[error("could not open the GPU device {adapter}: {reason}")]
    DeviceRequest { adapter: String, reason: String },

    #[error("{op}: shape mismatch: {detail}")]
    Shape { op: &'static str, detail: String },

    #[error("{op}: dtype {found} is not supported here (expected {expected})")]
    DType { op: &'static str, expected: String, found: DType },

    #[error("{op}: tensor {what} is empty; shapes must have at least one element")]
    Empty { op: &'static str, what: &'static str },

    #[error("{op}: invalid argument {name} = {value}: {reason}")]
    Argument { op: &'static str, name: &'static str, value: String, reason: String },

    #[error("{op}: tensor of {bytes} bytes exceeds the adapter's max storage binding of {limit} bytes")]
    BindingTooLarge { op: &'static str, bytes: u64, limit: u64 },

    #[error("{op}: {feature} is not supported by this adapter ({adapter})")]
    MissingFeature { op: &'static str, feature: &'static str, adapter: String },

    #[error("{op}: tensors live on different devices ({left} vs {right})")]
    DeviceMismatch { op: &'static str, left: String, right: String },

    #[error("data length {found} does not match shape {shape:?} ({expected} elements)")]
    DataLength { shape: Vec<usize>, expected: usize, found: usize },

    #[error("GPU error: {0}")]
    Gpu(String),
}

pub type Result<T, E = KernelError> = std::result::Result<T, E>;
