//! torchless-kernels: tensors on the CPU or a GPU (WGSL through wgpu: Metal, Vulkan, DX12), and the
//! kernels of transformer and xLSTM inference, each with a CPU implementation it is tested against.
//! It knows nothing about models.

pub mod backend;
pub mod bench;
pub mod cpu;
pub(crate) mod dense_dot;
pub mod dtype;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod ops;
pub mod quant;
pub(crate) mod quant_dot;
pub mod tensor;
pub mod testing;

pub use backend::{Backend, BackendPreference, init_backend};
pub use dtype::{DType, Element};
pub use error::{KernelError, Result};
pub use quant::{QuantTensor, QuantType};
pub use tensor::Tensor;
