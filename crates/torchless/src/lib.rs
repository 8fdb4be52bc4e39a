//! torchless: language-model and xLSTM inference on the GPU (wgpu: Metal, Vulkan, DX12) or the CPU.

pub mod builtin;
pub mod config;
pub mod error;
pub mod generate;
pub mod gguf;
pub mod gguf_config;
pub mod gguf_tokenizer;
pub mod model;
pub mod safetensors_dir;
pub mod sampling;
pub mod tokenizer;

pub use error::{Error, Result};
pub use torchless_kernels::{Backend, BackendPreference, init_backend};
