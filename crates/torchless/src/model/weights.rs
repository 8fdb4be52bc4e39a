//! Where a model's weights come from (a Hugging Face safetensors directory or a GGUF file) and the
//! [`Linear`] weight type the forward pass multiplies by.

use torchless_kernels::ops::gemm::{self, GemmKernel, GemmOptions};
use torchless_kernels::ops::gemv::{self, GemvEpilogue};
use torchless_kernels::{Backend, DType, Tensor};

use crate::config::Arch;
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufFile, TensorInfo};
use crate::gguf_config::gguf_name;
use crate::safetensors_dir::SafetensorsDir;

/// A weight matrix `[out, in]` (rows are output features).
pub enum Linear {
    /// f32, f16 or bf16, in its stored dtype.
    Dense(Tensor),
}

impl Linear {
    pub fn size_bytes(&self) -> usize {
        match self {
            Linear::Dense(t) => t.size_bytes(),
        }
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Linear::Dense(t) => t.rows_cols(),
        }
    }

    pub fn as_dense(&self) -> Option<&Tensor> {
        match self {
            Linear::Dense(t) => Some(t),
        }
    }

    /// `x [rows, in] · wᵀ (+ bias)` → `[rows, out]` f32: GEMV for a few rows, GEMM otherwise.
    pub fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        match self {
            Linear::Dense(w) => {
                if x.rows_cols().0 <= gemv::MAX_BATCH {
                    return Ok(gemv::gemv(w, x, GemvEpilogue { bias, residual: None })?);
                }
                let mut opts = GemmOptions::a_bt().kernel(gemm_kernel(w));
                opts.bias = bias;
                Ok(gemm::gemm(x, w, opts)?)
            }
        }
    }

    /// `acc += x · wᵀ`, in place.
    pub fn forward_add_into(&self, x: &Tensor, acc: &Tensor) -> Result<()> {
        match self {
            Linear::Dense(w) => {
                if x.rows_cols().0 <= gemv::MAX_BATCH {
                    return Ok(gemv::gemv_into(w, x, GemvEpilogue { bias: None, residual: Some(acc) }, acc)?);
                }
                Ok(gemm::gemm_into(x, w, GemmOptions::a_bt().residual(acc).kernel(gemm_kernel(w)), acc)?)
            }
        }
    }
}

/// The GEMM kernel for `x · wᵀ`: cooperative matrices for 16-bit weights (f32 activations rounded to
/// f16 on NVIDIA, as PyTorch's bf16 path rounds them to bf16), exact tiles for f32 weights.
fn gemm_kernel(w: &Tensor) -> GemmKernel {
    if w.dtype() == DType::F32 { GemmKernel::Auto } else { GemmKernel::PreferCooperative }
}

/// The tensors of a model, by Hugging Face name.
pub enum Source<'a> {
    Safetensors(&'a SafetensorsDir),
    /// Names are translated with [`gguf_name`]; Q and K rows are un-permuted when `unpermute_qk`.
    Gguf {
        file: &'a GgufFile,
        arch: Arch,
        unpermute_qk: bool,
        n_heads: usize,
        n_kv_heads: usize,
    },
}

/// Raw bytes of one tensor with what they hold.
enum Raw<'a> {
    Dense { bytes: std::borrow::Cow<'a, [u8]>, dtype: DType, shape: Vec<usize> },
}

fn dense_dtype(ty: GgmlType) -> Option<DType> {
    match ty {
        GgmlType::F32 => Some(DType::F32),
        GgmlType::F16 => Some(DType::F16),
        GgmlType::BF16 => Some(DType::BF16),
        _ => None,
    }
}

/// Reorders the rows of each head of Q or K from llama.cpp's interleaved pairs back to Hugging Face's
/// half-split order: HF row `h·d + s·d/2 + j` is GGUF row `h·d + 2j + s`. Rows are opaque byte runs (whole
/// quantization blocks), so this works for every type.
pub fn unpermute_rows(bytes: &[u8], rows: usize, n_heads: usize) -> Option<Vec<u8>> {
    if rows == 0 || n_heads == 0 || rows % (2 * n_heads) != 0 || bytes.len() % rows != 0 {
        return None;
    }
    let (d, row_bytes) = (rows / n_heads, bytes.len() / rows);
    let half = d / 2;
    let mut out = Vec::with_capacity(bytes.len());
    for h in 0..n_heads {
        for s in 0..2 {
            for j in 0..half {
                let src = (h * d + 2 * j + s) * row_bytes;
                out.extend_from_slice(&bytes[src..src + row_bytes]);
            }
        }
    }
    Some(out)
}

impl Source<'_> {
    pub fn contains(&self, name: &str) -> bool {
        match self {
            Source::Safetensors(d) => d.contains(name),
            Source::Gguf { file, arch, .. } => gguf_name(*arch, name).is_some_and(|n| file.header.tensor(&n).is_some()),
        }
    }

    pub fn total_bytes(&self) -> u64 {
        match self {
            Source::Safetensors(d) => d.total_bytes(),
            Source::Gguf { file, .. } => file.total_tensor_bytes(),
        }
    }

    fn gguf_info<'f>(file: &'f GgufFile, arch: Arch, name: &str) -> Result<(String, &'f TensorInfo)> {
        let gname = gguf_name(arch, name).ok_or_else(|| Error::MissingTensor { name: name.to_string() })?;
        let info = file.header.tensor(&gname).ok_or_else(|| Error::MissingTensor { name: gname.clone() })?;
        Ok((gname, info))
    }

    /// The tensor's bytes in HF row order, its type and HF shape.
    fn raw(&self, name: &str) -> Result<(String, Raw<'_>)> {
        match self {
            Source::Safetensors(d) => {
                let (bytes, dtype, shape) = d.raw(name)?;
                Ok((name.to_string(), Raw::Dense { bytes: bytes.into(), dtype, shape: shape.to_vec() }))
            }
            Source::Gguf { file, arch, unpermute_qk, n_heads, n_kv_heads } => {
                let (gname, info) = Self::gguf_info(file, *arch, name)?;
                let mut bytes: std::borrow::Cow<[u8]> = file.tensor_bytes(info).into();
                let shape = info.shape();
                let heads = if gname.contains(".attn_q.") {
                    Some(*n_heads)
                } else if gname.contains(".attn_k.") {
                    Some(*n_kv_heads)
                } else {
                    None
                };
                if let (true, Some(heads)) = (*unpermute_qk, heads) {
                    let rows = shape.first().copied().unwrap_or(1);
                    bytes = unpermute_rows(&bytes, rows, heads)
                        .ok_or_else(|| Error::TensorShape {
                            name: gname.clone(),
                            expected: vec![heads * 2, 0],
                            found: shape.clone(),
                        })?
                        .into();
                }
                match dense_dtype(info.ty) {
                    Some(dtype) => Ok((gname, Raw::Dense { bytes, dtype, shape })),
                    None => Err(Error::TensorDType { name: gname, found: info.ty.to_string() }),
                }
            }
        }
    }

    /// Uploads a dense tensor (norms, biases), checking its shape.
    pub fn dense(&self, backend: &Backend, name: &str, expected: &[usize]) -> Result<Tensor> {
        let (gname, raw) = self.raw(name)?;
        match raw {
            Raw::Dense { bytes, dtype, shape } => {
                if shape != expected {
                    return Err(Error::TensorShape { name: gname, expected: expected.to_vec(), found: shape });
                }
                Ok(Tensor::from_bytes(backend, &bytes, &shape, dtype)?)
            }
        }
    }

    /// Uploads a weight matrix `[rows, cols]`.
    pub fn linear(&self, backend: &Backend, name: &str, rows: usize, cols: usize) -> Result<Linear> {
        self.dense(backend, name, &[rows, cols]).map(Linear::Dense)
    }

    /// Splits `name` `[sum(rows), cols]` into consecutive row blocks, each uploaded on its own (Phi-3's
    /// fused projections).
    pub fn split_rows(&self, backend: &Backend, name: &str, rows: &[usize], cols: usize) -> Result<Vec<Linear>> {
        let (gname, raw) = self.raw(name)?;
        let total: usize = rows.iter().sum();
        match raw {
            Raw::Dense { bytes, dtype, shape } => {
                if shape != [total, cols] {
                    return Err(Error::TensorShape { name: gname, expected: vec![total, cols], found: shape });
                }
                let row_bytes = cols * dtype.size_bytes();
                let mut start = 0;
                let mut parts = Vec::with_capacity(rows.len());
                for &r in rows {
                    let part = &bytes[start * row_bytes..(start + r) * row_bytes];
                    parts.push(Linear::Dense(Tensor::from_bytes(backend, part, &[r, cols], dtype)?));
                    start += r;
                }
                Ok(parts)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applies convert_hf_to_gguf.py's permute to row indices and checks the inverse restores them.
    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        for (n_heads, d) in [(1, 2), (2, 4), (3, 8), (4, 16)] {
            let rows = n_heads * d;
            // permute: W.reshape(n_h, 2, d/2).swapaxes(1, 2): GGUF row h*d + 2j + s holds HF row h*d + s*d/2 + j.
            let mut gguf = vec![0u8; rows * 3];
            for h in 0..n_heads {
                for j in 0..d / 2 {
                    for s in 0..2 {
                        let g = h * d + 2 * j + s;
                        let hf = h * d + s * d / 2 + j;
                        gguf[g * 3..g * 3 + 3].copy_from_slice(&[hf as u8, 0xAA, hf as u8]);
                    }
                }
            }
            let out = unpermute_rows(&gguf, rows, n_heads).unwrap();
            for r in 0..rows {
                assert_eq!(&out[r * 3..r * 3 + 3], &[r as u8, 0xAA, r as u8], "{n_heads} heads of {d}");
            }
        }
        assert!(unpermute_rows(&[0; 12], 3, 1).is_none());
        assert!(unpermute_rows(&[0; 10], 4, 1).is_none());
    }
}
