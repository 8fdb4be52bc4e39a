//! Where a model's weights come from (a Hugging Face safetensors directory or a GGUF file) and the
//! [`Linear`] weight type the forward pass multiplies by: dense (f32/f16/bf16) or quantized (ggml blocks).

use std::borrow::Cow;

use torchless_kernels::ops::gemm::{self, GemmKernel, GemmOptions};
use torchless_kernels::ops::gemv::{self, GemvEpilogue};
use torchless_kernels::ops::{convert, elementwise, qmatmul, select};
use torchless_kernels::quant::{QuantTensor, QuantType};
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
    /// ggml blocks, dequantized in registers by the kernels.
    Quant(QuantTensor),
}

impl Linear {
    pub fn size_bytes(&self) -> usize {
        match self {
            Linear::Dense(t) => t.size_bytes(),
            Linear::Quant(q) => q.size_bytes(),
        }
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Linear::Dense(t) => t.rows_cols(),
            Linear::Quant(q) => (q.rows(), q.cols()),
        }
    }

    pub fn as_dense(&self) -> Option<&Tensor> {
        match self {
            Linear::Dense(t) => Some(t),
            Linear::Quant(_) => None,
        }
    }

    /// "f32", "q4_1", ...
    pub fn type_name(&self) -> String {
        match self {
            Linear::Dense(t) => t.dtype().to_string(),
            Linear::Quant(q) => q.quant_type().to_string(),
        }
    }

    /// Rows `ids` of the matrix used as an embedding table, f32 `[n, cols]`, times `scale`.
    pub fn embedding(&self, ids: &Tensor, scale: f32) -> Result<Tensor> {
        match self {
            Linear::Dense(t) => Ok(select::embedding_scaled(t, ids, scale, DType::F32)?),
            Linear::Quant(q) => {
                let x = qmatmul::embedding_q(q, ids)?;
                if scale == 1.0 { Ok(x) } else { Ok(elementwise::scale(&x, scale)?) }
            }
        }
    }

    /// `x [rows, in] · wᵀ (+ bias)` → `[rows, out]` f32: GEMV for a few rows, GEMM otherwise.
    pub fn forward(&self, x: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let m = x.rows_cols().0;
        match self {
            Linear::Dense(w) => linear(x, w, bias),
            Linear::Quant(w) => {
                if m <= gemv::MAX_BATCH {
                    return Ok(qmatmul::gemv_q(w, x, GemvEpilogue::bias(bias))?);
                }
                let y = qmatmul::gemm_q(x, w)?;
                match bias {
                    None => Ok(y),
                    Some(b) => {
                        // Broadcast the bias to every row: gather row 0 of a [1, out] table m times.
                        let table = b.reshape(&[1, w.rows()])?;
                        let zeros = Tensor::zeros(&x.backend(), &[m], DType::U32)?;
                        let rows = select::embedding_scaled(&table, &zeros, 1.0, DType::F32)?;
                        Ok(elementwise::add(&y, &rows.reshape(y.shape())?)?)
                    }
                }
            }
        }
    }

    /// `acc += x · wᵀ`, in place.
    pub fn forward_add_into(&self, x: &Tensor, acc: &Tensor) -> Result<()> {
        let small = x.rows_cols().0 <= gemv::MAX_BATCH;
        match self {
            Linear::Dense(w) => linear_add_into(x, w, acc),
            Linear::Quant(w) if small => Ok(qmatmul::gemv_q_into(w, x, GemvEpilogue::residual(acc), acc)?),
            Linear::Quant(w) => {
                let sum = elementwise::add(acc, &qmatmul::gemm_q(x, w)?)?;
                Ok(convert::copy_into(&sum, acc)?)
            }
        }
    }
}

/// `x [rows, in] · wᵀ (+ bias)` → `[rows, out]` f32 for a dense weight: GEMV for a few rows, GEMM otherwise.
pub fn linear(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    if x.rows_cols().0 <= gemv::MAX_BATCH {
        return Ok(gemv::gemv(w, x, GemvEpilogue::bias(bias))?);
    }
    let mut opts = GemmOptions::a_bt().kernel(gemm_kernel(w));
    opts.bias = bias;
    Ok(gemm::gemm(x, w, opts)?)
}

/// `acc += x · wᵀ` in place, for a dense weight.
pub fn linear_add_into(x: &Tensor, w: &Tensor, acc: &Tensor) -> Result<()> {
    if x.rows_cols().0 <= gemv::MAX_BATCH {
        return Ok(gemv::gemv_into(w, x, GemvEpilogue::residual(acc), acc)?);
    }
    Ok(gemm::gemm_into(x, w, GemmOptions::a_bt().residual(acc).kernel(gemm_kernel(w)), acc)?)
}

/// The GEMM kernel for `x · wᵀ`: cooperative matrices for 16-bit weights (f32 activations rounded to
/// f16 on NVIDIA, as PyTorch's bf16 path rounds them to bf16), exact tiles for f32 weights.
fn gemm_kernel(w: &Tensor) -> GemmKernel {
    if w.dtype() == DType::F32 { GemmKernel::Auto } else { GemmKernel::PreferCooperative }
}

/// The tensors of a model, by Hugging Face name.
pub struct Source<'a> {
    pub kind: SourceKind<'a>,
    /// Quantize dense weight matrices (projections, embedding, LM head) to this type as they load.
    pub quantize: Option<QuantType>,
}

pub enum SourceKind<'a> {
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

/// Raw bytes of one tensor with what they hold (`shape` in Hugging Face order, rows first).
enum Raw<'a> {
    Dense { bytes: Cow<'a, [u8]>, dtype: DType, shape: Vec<usize> },
    Quant { bytes: Cow<'a, [u8]>, ty: QuantType, shape: Vec<usize> },
}

impl Raw<'_> {
    fn shape(&self) -> &[usize] {
        match self {
            Raw::Dense { shape, .. } | Raw::Quant { shape, .. } => shape,
        }
    }
}

fn dense_dtype(ty: GgmlType) -> Option<DType> {
    match ty {
        GgmlType::F32 => Some(DType::F32),
        GgmlType::F16 => Some(DType::F16),
        GgmlType::BF16 => Some(DType::BF16),
        _ => None,
    }
}

/// The type a `[_, cols]` matrix is quantized to when `ty` is asked for, following llama.cpp's
/// llama-quantize fallback: K-quants need rows of whole 256-blocks, so Q4_K becomes Q5_0 (Q5_K → Q5_1,
/// Q6_K → Q8_0) when cols % 256 ≠ 0; when even 32 does not divide cols the matrix stays dense (llama.cpp
/// keeps F16 there).
pub fn quant_type_for(ty: QuantType, cols: usize) -> Option<QuantType> {
    let ty = if cols.is_multiple_of(ty.block_elems()) {
        ty
    } else {
        match ty {
            QuantType::Q4K => QuantType::Q5_0,
            QuantType::Q5K => QuantType::Q5_1,
            QuantType::Q6K => QuantType::Q8_0,
            other => other,
        }
    };
    cols.is_multiple_of(ty.block_elems()).then_some(ty)
}

/// A weight matrix from raw bytes, quantized to `quantize` when it is dense and a type is asked for.
fn make_linear(backend: &Backend, raw: Raw<'_>, quantize: Option<QuantType>) -> Result<Linear> {
    match raw {
        Raw::Dense { bytes, dtype, shape } => {
            let (rows, cols) = (shape[0], shape[1]);
            match quantize.and_then(|q| quant_type_for(q, cols)) {
                Some(ty) => {
                    let values = torchless_kernels::tensor::bytes_to_f32(&bytes, dtype);
                    Ok(Linear::Quant(QuantTensor::quantize(backend, ty, &values, rows, cols)?))
                }
                None => Ok(Linear::Dense(Tensor::from_bytes(backend, &bytes, &shape, dtype)?)),
            }
        }
        Raw::Quant { bytes, ty, shape } => {
            Ok(Linear::Quant(QuantTensor::from_ggml_bytes(backend, ty, shape[0], shape[1], &bytes)?))
        }
    }
}

/// Reorders the rows of each head of Q or K from llama.cpp's interleaved pairs back to Hugging Face's
/// half-split order: HF row `h·d + s·d/2 + j` is GGUF row `h·d + 2j + s`. Rows are opaque byte runs (whole
/// quantization blocks), so this works for every type.
pub fn unpermute_rows(bytes: &[u8], rows: usize, n_heads: usize) -> Option<Vec<u8>> {
    if rows == 0 || n_heads == 0 || !rows.is_multiple_of(2 * n_heads) || !bytes.len().is_multiple_of(rows) {
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
        match &self.kind {
            SourceKind::Safetensors(d) => d.contains(name),
            SourceKind::Gguf { file, arch, .. } => {
                gguf_name(*arch, name).is_some_and(|n| file.header.tensor(&n).is_some())
            }
        }
    }

    pub fn total_bytes(&self) -> u64 {
        match &self.kind {
            SourceKind::Safetensors(d) => d.total_bytes(),
            SourceKind::Gguf { file, .. } => file.total_tensor_bytes(),
        }
    }

    fn gguf_info<'f>(file: &'f GgufFile, arch: Arch, name: &str) -> Result<(String, &'f TensorInfo)> {
        let gname = gguf_name(arch, name).ok_or_else(|| Error::MissingTensor { name: name.to_string() })?;
        let info = file.header.tensor(&gname).ok_or_else(|| Error::MissingTensor { name: gname.clone() })?;
        Ok((gname, info))
    }

    /// The bytes, dtype and shape of a dense tensor, for callers that split fused tensors themselves.
    pub fn dense_bytes(&self, name: &str) -> Result<(Cow<'_, [u8]>, DType, Vec<usize>)> {
        match self.raw(name)? {
            (_, Raw::Dense { bytes, dtype, shape }) => Ok((bytes, dtype, shape)),
            (gname, Raw::Quant { ty, .. }) => {
                Err(Error::TensorDType { name: gname, found: format!("{ty} (this tensor must be f32, f16 or bf16)") })
            }
        }
    }

    /// The tensor's bytes in HF row order, its type and HF shape.
    fn raw(&self, name: &str) -> Result<(String, Raw<'_>)> {
        match &self.kind {
            SourceKind::Safetensors(d) => {
                let (bytes, dtype, shape) = d.raw(name)?;
                Ok((name.to_string(), Raw::Dense { bytes: bytes.into(), dtype, shape: shape.to_vec() }))
            }
            SourceKind::Gguf { file, arch, unpermute_qk, n_heads, n_kv_heads } => {
                let (gname, info) = Self::gguf_info(file, *arch, name)?;
                let mut bytes: Cow<[u8]> = file.tensor_bytes(info).into();
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
                if let Some(dtype) = dense_dtype(info.ty) {
                    return Ok((gname, Raw::Dense { bytes, dtype, shape }));
                }
                match QuantType::from_ggml_type_id(info.ty.id()) {
                    Some(ty) if shape.len() == 2 => Ok((gname, Raw::Quant { bytes, ty, shape })),
                    _ => Err(Error::TensorDType {
                        name: gname,
                        found: format!(
                            "{} (supported: F32, F16, BF16, and Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K matrices)",
                            info.ty
                        ),
                    }),
                }
            }
        }
    }

    /// Uploads a dense tensor (norms, biases), checking its shape.
    pub fn dense(&self, backend: &Backend, name: &str, expected: &[usize]) -> Result<Tensor> {
        let (gname, raw) = self.raw(name)?;
        if raw.shape() != expected {
            return Err(Error::TensorShape { name: gname, expected: expected.to_vec(), found: raw.shape().to_vec() });
        }
        match raw {
            Raw::Dense { bytes, dtype, shape } => Ok(Tensor::from_bytes(backend, &bytes, &shape, dtype)?),
            Raw::Quant { ty, .. } => {
                Err(Error::TensorDType { name: gname, found: format!("{ty} (this tensor must be F32, F16 or BF16)") })
            }
        }
    }

    /// Uploads a weight matrix `[rows, cols]` (quantizing it if asked to).
    pub fn linear(&self, backend: &Backend, name: &str, rows: usize, cols: usize) -> Result<Linear> {
        let (gname, raw) = self.raw(name)?;
        if raw.shape() != [rows, cols] {
            return Err(Error::TensorShape { name: gname, expected: vec![rows, cols], found: raw.shape().to_vec() });
        }
        make_linear(backend, raw, self.quantize)
    }

    /// Splits `name` `[sum(rows), cols]` into consecutive row blocks, each uploaded on its own (Phi-3's
    /// fused projections); quantized rows are whole blocks, so they split the same way.
    pub fn split_rows(&self, backend: &Backend, name: &str, rows: &[usize], cols: usize) -> Result<Vec<Linear>> {
        let (gname, raw) = self.raw(name)?;
        let total: usize = rows.iter().sum();
        if raw.shape() != [total, cols] {
            return Err(Error::TensorShape { name: gname, expected: vec![total, cols], found: raw.shape().to_vec() });
        }
        let (bytes, row_bytes) = match &raw {
            Raw::Dense { bytes, dtype, .. } => (bytes, cols * dtype.size_bytes()),
            Raw::Quant { bytes, ty, .. } => (bytes, cols / ty.block_elems() * ty.block_bytes()),
        };
        let mut start = 0;
        let mut parts = Vec::with_capacity(rows.len());
        for &r in rows {
            let part: Cow<[u8]> = Cow::Borrowed(&bytes[start * row_bytes..(start + r) * row_bytes]);
            let raw_part = match &raw {
                Raw::Dense { dtype, .. } => Raw::Dense { bytes: part, dtype: *dtype, shape: vec![r, cols] },
                Raw::Quant { ty, .. } => Raw::Quant { bytes: part, ty: *ty, shape: vec![r, cols] },
            };
            parts.push(make_linear(backend, raw_part, self.quantize)?);
            start += r;
        }
        Ok(parts)
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

    #[test]
    fn quantize_fallback_follows_llama_cpp() {
        assert_eq!(quant_type_for(QuantType::Q4K, 512), Some(QuantType::Q4K));
        assert_eq!(quant_type_for(QuantType::Q4K, 576), Some(QuantType::Q5_0));
        assert_eq!(quant_type_for(QuantType::Q8_0, 576), Some(QuantType::Q8_0));
        assert_eq!(quant_type_for(QuantType::Q4_0, 100), None);
        assert_eq!(quant_type_for(QuantType::Q4K, 100), None);
    }
}
