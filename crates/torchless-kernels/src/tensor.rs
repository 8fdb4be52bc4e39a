//! Tensors: a shape, a dtype and storage on the CPU or on a GPU device.
//!
//! GPU tensors are created from host data once and read back only on request; ops on them record
//! device-to-device work (see `gpu`). Clones share storage.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::backend::Backend;
use crate::dtype::{DType, Element};
use crate::error::{KernelError, Result};
use crate::gpu::GpuBuffer;

#[derive(Clone)]
pub enum Storage {
    /// Host memory as 32-bit words, so every dtype can be viewed with bytemuck.
    Cpu(Arc<RwLock<Vec<u32>>>),
    Gpu(Arc<GpuBuffer>),
}

#[derive(Clone)]
pub struct Tensor {
    shape: Vec<usize>,
    dtype: DType,
    storage: Storage,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let place = match &self.storage {
            Storage::Cpu(_) => "cpu",
            Storage::Gpu(_) => "gpu",
        };
        write!(f, "Tensor({:?}, {}, {place})", self.shape, self.dtype)
    }
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// Bytes of `n` elements of `dtype`.
pub fn byte_len(dtype: DType, n: usize) -> usize {
    n * dtype.size_bytes()
}

impl Tensor {
    /// A tensor holding `data` (row-major) on `backend`.
    pub fn from_slice<T: Element>(backend: &Backend, data: &[T], shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != data.len() {
            return Err(KernelError::DataLength { shape: shape.to_vec(), expected: numel(shape), found: data.len() });
        }
        Self::from_bytes(backend, bytemuck::cast_slice(data), shape, T::DTYPE)
    }

    /// A tensor of `dtype` from f32 values (rounded to nearest for f16/bf16).
    pub fn from_f32(backend: &Backend, data: &[f32], shape: &[usize], dtype: DType) -> Result<Tensor> {
        match dtype {
            DType::F32 => Self::from_slice(backend, data, shape),
            DType::F16 => Self::from_slice(backend, &convert::<half::f16>(data), shape),
            DType::BF16 => Self::from_slice(backend, &convert::<half::bf16>(data), shape),
            DType::U32 => Self::from_slice(backend, &convert::<u32>(data), shape),
            DType::I32 => Self::from_slice(backend, &convert::<i32>(data), shape),
        }
    }

    /// A tensor from raw little-endian element bytes.
    pub fn from_bytes(backend: &Backend, bytes: &[u8], shape: &[usize], dtype: DType) -> Result<Tensor> {
        let expected = byte_len(dtype, numel(shape));
        if bytes.len() != expected {
            return Err(KernelError::DataLength {
                shape: shape.to_vec(),
                expected: numel(shape),
                found: bytes.len() / dtype.size_bytes(),
            });
        }
        let storage = match backend {
            Backend::Cpu => {
                let mut words = vec![0u32; bytes.len().div_ceil(4)];
                bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
                Storage::Cpu(Arc::new(RwLock::new(words)))
            }
            Backend::Gpu(ctx) => Storage::Gpu(Arc::new(ctx.upload("tensor", bytes)?)),
        };
        Ok(Tensor { shape: shape.to_vec(), dtype, storage })
    }

    pub fn zeros(backend: &Backend, shape: &[usize], dtype: DType) -> Result<Tensor> {
        Self::from_bytes(backend, &vec![0u8; byte_len(dtype, numel(shape))], shape, dtype)
    }

    /// An op output: contents undefined on the GPU (a pooled buffer), zeros on the CPU.
    pub fn uninit(backend: &Backend, op: &'static str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = byte_len(dtype, numel(shape));
        let storage = match backend {
            Backend::Cpu => Storage::Cpu(Arc::new(RwLock::new(vec![0u32; bytes.div_ceil(4)]))),
            Backend::Gpu(ctx) => Storage::Gpu(Arc::new(ctx.alloc(op, bytes as u64)?)),
        };
        Ok(Tensor { shape: shape.to_vec(), dtype, storage })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    pub fn numel(&self) -> usize {
        numel(&self.shape)
    }
    pub fn size_bytes(&self) -> usize {
        byte_len(self.dtype, self.numel())
    }
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The last dimension, and the product of the others (1 for a vector).
    pub fn rows_cols(&self) -> (usize, usize) {
        let cols = self.shape.last().copied().unwrap_or(1);
        let rows = self.numel().checked_div(cols).unwrap_or(0);
        (rows, cols)
    }

    pub fn backend(&self) -> Backend {
        match &self.storage {
            Storage::Cpu(_) => Backend::Cpu,
            Storage::Gpu(b) => Backend::Gpu(b.context().clone()),
        }
    }

    /// Whether `other` lives on the same backend (and, for the GPU, the same device), without cloning
    /// either handle.
    pub fn same_backend(&self, other: &Tensor) -> bool {
        match (&self.storage, &other.storage) {
            (Storage::Cpu(_), Storage::Cpu(_)) => true,
            (Storage::Gpu(a), Storage::Gpu(b)) => std::sync::Arc::ptr_eq(a.context(), b.context()),
            _ => false,
        }
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self.storage, Storage::Gpu(_))
    }

    /// The device buffer, for GPU tensors.
    pub fn gpu_buffer(&self) -> Option<&GpuBuffer> {
        match &self.storage {
            Storage::Gpu(b) => Some(b),
            Storage::Cpu(_) => None,
        }
    }

    /// The same storage seen with another shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return Err(KernelError::Shape {
                op: "reshape",
                detail: format!("cannot view {:?} ({} elements) as {:?}", self.shape, self.numel(), shape),
            });
        }
        Ok(Tensor { shape: shape.to_vec(), dtype: self.dtype, storage: self.storage.clone() })
    }

    /// The raw element bytes, read back from the device when needed.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let n = self.size_bytes();
        match &self.storage {
            Storage::Cpu(words) => Ok(bytemuck::cast_slice::<u32, u8>(&read_lock(words))[..n].to_vec()),
            Storage::Gpu(b) => b.context().read_buffer(b.raw(), 0, n as u64),
        }
    }

    /// Starts copying the tensor to the host without waiting: ops recorded afterwards run while the copy
    /// is awaited ([`PendingBytes::wait`]). On the CPU the bytes are taken at once.
    pub fn to_bytes_later(&self) -> Result<PendingBytes> {
        let n = self.size_bytes();
        match &self.storage {
            Storage::Cpu(words) => {
                Ok(PendingBytes::Ready(bytemuck::cast_slice::<u32, u8>(&read_lock(words))[..n].to_vec()))
            }
            Storage::Gpu(b) => Ok(PendingBytes::Gpu(b.context().read_buffer_later(b.raw(), 0, n as u64)?)),
        }
    }

    /// The elements as `T`, which must be the tensor's dtype.
    pub fn to_vec<T: Element>(&self) -> Result<Vec<T>> {
        if T::DTYPE != self.dtype {
            return Err(KernelError::DType { op: "to_vec", expected: T::DTYPE.to_string(), found: self.dtype });
        }
        let bytes = self.to_bytes()?;
        Ok(bytemuck::pod_collect_to_vec(&bytes))
    }

    /// The elements converted to f32, whatever the dtype.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let bytes = self.to_bytes()?;
        Ok(bytes_to_f32(&bytes, self.dtype))
    }

    /// A copy on another backend.
    pub fn to_backend(&self, backend: &Backend) -> Result<Tensor> {
        Self::from_bytes(backend, &self.to_bytes()?, &self.shape, self.dtype)
    }

    /// Host words of a CPU tensor, for CPU kernels.
    pub fn cpu_words(&self) -> Option<RwLockReadGuard<'_, Vec<u32>>> {
        match &self.storage {
            Storage::Cpu(w) => Some(read_lock(w)),
            Storage::Gpu(_) => None,
        }
    }

    /// Mutable host words of a CPU tensor.
    pub fn cpu_words_mut(&self) -> Option<RwLockWriteGuard<'_, Vec<u32>>> {
        match &self.storage {
            Storage::Cpu(w) => Some(w.write().unwrap_or_else(|p| p.into_inner())),
            Storage::Gpu(_) => None,
        }
    }

    /// Whether two tensors share storage.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        match (&self.storage, &other.storage) {
            (Storage::Cpu(a), Storage::Cpu(b)) => Arc::ptr_eq(a, b),
            (Storage::Gpu(a), Storage::Gpu(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

fn read_lock(w: &RwLock<Vec<u32>>) -> RwLockReadGuard<'_, Vec<u32>> {
    w.read().unwrap_or_else(|p| p.into_inner())
}

fn convert<T: Element>(data: &[f32]) -> Vec<T> {
    data.iter().map(|&v| T::from_f32(v)).collect()
}

/// Decodes little-endian elements of `dtype` to f32.
pub fn bytes_to_f32(bytes: &[u8], dtype: DType) -> Vec<f32> {
    // In parallel, straight from the (possibly unaligned) bytes: loading an 8B bf16 model to quantize it
    // converts 32 GB, which on one core was most of the load time.
    fn go<T: Element>(bytes: &[u8]) -> Vec<f32> {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 16;
        let size = std::mem::size_of::<T>();
        let mut out = vec![0f32; bytes.len() / size];
        out.par_chunks_mut(CHUNK).zip(bytes.par_chunks(CHUNK * size)).for_each(|(o, b)| {
            for (v, e) in o.iter_mut().zip(b.chunks_exact(size)) {
                *v = bytemuck::pod_read_unaligned::<T>(e).to_f32();
            }
        });
        out
    }
    match dtype {
        DType::F32 => go::<f32>(bytes),
        DType::F16 => go::<half::f16>(bytes),
        DType::BF16 => go::<half::bf16>(bytes),
        DType::U32 => go::<u32>(bytes),
        DType::I32 => go::<i32>(bytes),
    }
}

/// Encodes f32 values as little-endian elements of `dtype`.
pub fn f32_to_bytes(values: &[f32], dtype: DType) -> Vec<u8> {
    fn go<T: Element>(values: &[f32]) -> Vec<u8> {
        bytemuck::cast_slice(&convert::<T>(values)).to_vec()
    }
    match dtype {
        DType::F32 => go::<f32>(values),
        DType::F16 => go::<half::f16>(values),
        DType::BF16 => go::<half::bf16>(values),
        DType::U32 => go::<u32>(values),
        DType::I32 => go::<i32>(values),
    }
}

/// A tensor's bytes on their way to the host ([`Tensor::to_bytes_later`]).
pub enum PendingBytes {
    Ready(Vec<u8>),
    Gpu(crate::gpu::PendingRead),
}

impl PendingBytes {
    pub fn wait(self) -> Result<Vec<u8>> {
        match self {
            PendingBytes::Ready(v) => Ok(v),
            PendingBytes::Gpu(p) => p.wait(),
        }
    }
}
