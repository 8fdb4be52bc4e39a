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
    /// Llama family: Q and K rows (with their biases and head norms) reach the engine in rotation-pair
    /// order (see [`RopePairs`]).
    pub pairs: Option<RopePairs>,
}

pub enum SourceKind<'a> {
    Safetensors(&'a SafetensorsDir),
    /// Names are translated with [`gguf_name`]. `qk_rows_paired`: the Q and K projections' rows are in
    /// the order llama.cpp's converter permutes them to for llama-family files.
    Gguf {
        file: &'a GgufFile,
        arch: Arch,
        qk_rows_paired: bool,
    },
}

/// The engine keeps each head's Q and K rows in rotation-pair order: Hugging Face's pair (j, j + rot/2)
/// (`rotate_half`) becomes rows 2j and 2j + 1, and unrotated dims keep their place. RoPE then rotates
/// adjacent rows (`RopeLayout::Interleaved`), so that a rotation pair is one word of a 16-bit K cache and
/// the decode step's fused Q/K/V launch needs only two rows a workgroup (on an H100, Llama-3-8B q4_k: that
/// launch 24.2 → 20.1 µs, decode 321 → 327 tok/s; BENCHMARKS.md). Attention dots q with k, so the same
/// order in both changes nothing else. This is llama.cpp's order for llama-family GGUF files.
#[derive(Clone, Copy, Debug)]
pub struct RopePairs {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub rot_dim: usize,
}

impl RopePairs {
    pub fn of(config: &crate::config::Config) -> RopePairs {
        RopePairs {
            n_heads: config.n_heads,
            n_kv_heads: config.n_kv_heads,
            head_dim: config.head_dim,
            rot_dim: config.rot_dim,
        }
    }

    /// The Hugging Face row (within a head) of row `t` of the pair order.
    fn hf_row(&self, t: usize) -> usize {
        if t < self.rot_dim { t % 2 * (self.rot_dim / 2) + t / 2 } else { t }
    }

    /// The blocks of Q or K rows of the tensor Hugging Face calls `name`, as (first row, heads).
    fn blocks(&self, name: &str) -> Vec<(usize, usize)> {
        let Some((_, leaf)) = name.rsplit_once(".self_attn.") else { return Vec::new() };
        match leaf {
            "q_proj.weight" | "q_proj.bias" => vec![(0, self.n_heads)],
            "k_proj.weight" | "k_proj.bias" => vec![(0, self.n_kv_heads)],
            "q_norm.weight" | "k_norm.weight" => vec![(0, 1)],
            "qkv_proj.weight" => vec![(0, self.n_heads), (self.n_heads * self.head_dim, self.n_kv_heads)],
            _ => Vec::new(),
        }
    }

    /// `bytes` (`rows` rows, rows first) with the Q and K rows of `name` in pair order, taken from
    /// Hugging Face's order or, with `llama_cpp`, from llama.cpp's permuted one (HF row `s·d/2 + j` of a
    /// head at row `2j + s`). Borrowed where that changes nothing; where the tensor has fewer rows than its
    /// heads, the rows they need.
    fn reorder<'b>(
        &self,
        name: &str,
        bytes: Cow<'b, [u8]>,
        rows: usize,
        llama_cpp: bool,
    ) -> std::result::Result<Cow<'b, [u8]>, usize> {
        let d = self.head_dim;
        let half = d / 2;
        let src = |t: usize| {
            let hf = self.hf_row(t);
            if llama_cpp { 2 * (hf % half) + hf / half } else { hf }
        };
        let blocks = self.blocks(name);
        if blocks.is_empty() || (0..d).all(|t| src(t) == t) {
            return Ok(bytes);
        }
        let needed = blocks.iter().map(|&(r0, h)| r0 + h * d).max().unwrap_or(0);
        if rows < needed || !bytes.len().is_multiple_of(rows) {
            return Err(needed);
        }
        // The stored row that row r of the output takes.
        let from = |r: usize| match blocks.iter().find(|&&(r0, h)| (r0..r0 + h * d).contains(&r)) {
            Some(&(r0, _)) => r - (r - r0) % d + src((r - r0) % d),
            None => r,
        };
        let row_bytes = bytes.len() / rows;
        let mut out = Vec::with_capacity(bytes.len());
        for r in 0..rows {
            out.extend_from_slice(&bytes[from(r) * row_bytes..][..row_bytes]);
        }
        Ok(out.into())
    }
}

/// Raw bytes of one tensor with what they hold (`shape` in Hugging Face order, rows first).
enum Raw<'a> {
    Dense { bytes: Cow<'a, [u8]>, dtype: DType, shape: Vec<usize> },
    Quant { bytes: Cow<'a, [u8]>, ty: QuantType, shape: Vec<usize> },
}

impl<'a> Raw<'a> {
    fn shape(&self) -> &[usize] {
        match self {
            Raw::Dense { shape, .. } | Raw::Quant { shape, .. } => shape,
        }
    }

    /// The same tensor with its bytes passed through `f`.
    fn map_bytes<E>(
        self,
        f: impl FnOnce(Cow<'a, [u8]>) -> std::result::Result<Cow<'a, [u8]>, E>,
    ) -> std::result::Result<Raw<'a>, E> {
        Ok(match self {
            Raw::Dense { bytes, dtype, shape } => Raw::Dense { bytes: f(bytes)?, dtype, shape },
            Raw::Quant { bytes, ty, shape } => Raw::Quant { bytes: f(bytes)?, ty, shape },
        })
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

    /// The tensor's bytes (Q and K rows in pair order where [`Source::pairs`] asks for it), its type and
    /// Hugging Face shape.
    fn raw(&self, name: &str) -> Result<(String, Raw<'_>)> {
        let (gname, raw) = self.raw_stored(name)?;
        let (Some(pairs), Some(&rows)) = (&self.pairs, raw.shape().first()) else { return Ok((gname, raw)) };
        // llama.cpp's converter permutes the projections' weights, not their biases.
        let llama_cpp =
            matches!(self.kind, SourceKind::Gguf { qk_rows_paired: true, .. }) && name.ends_with("_proj.weight");
        let shape = raw.shape().to_vec();
        let raw = raw.map_bytes(|b| pairs.reorder(name, b, rows, llama_cpp)).map_err(|needed| Error::TensorShape {
            name: gname.clone(),
            expected: [&[needed], &shape[1..]].concat(),
            found: shape,
        })?;
        Ok((gname, raw))
    }

    /// The tensor's bytes as stored, its type and Hugging Face shape.
    fn raw_stored(&self, name: &str) -> Result<(String, Raw<'_>)> {
        match &self.kind {
            SourceKind::Safetensors(d) => {
                let (bytes, dtype, shape) = d.raw(name)?;
                Ok((name.to_string(), Raw::Dense { bytes: bytes.into(), dtype, shape: shape.to_vec() }))
            }
            SourceKind::Gguf { file, arch, .. } => {
                let (gname, info) = Self::gguf_info(file, *arch, name)?;
                let bytes: Cow<[u8]> = file.tensor_bytes(info).into();
                let shape = info.shape();
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

    fn pairs(n_heads: usize, n_kv_heads: usize, head_dim: usize, rot_dim: usize) -> RopePairs {
        RopePairs { n_heads, n_kv_heads, head_dim, rot_dim }
    }

    /// Rows of two bytes, each its own index: what a reorder moved where is read off its output.
    fn numbered(rows: usize) -> Vec<u8> {
        (0..rows).flat_map(|r| [r as u8, 0xAA]).collect()
    }

    fn row_ids(bytes: &[u8]) -> Vec<usize> {
        bytes.chunks_exact(2).map(|r| r[0] as usize).collect()
    }

    /// From Hugging Face's order the pair order is convert_hf_to_gguf.py's permute
    /// (`W.reshape(n_h, 2, d/2).swapaxes(1, 2)`: row h·d + 2j + s holds HF row h·d + s·d/2 + j); from that
    /// permuted order it is the order itself, borrowed.
    #[test]
    fn pair_order_is_llama_cpp_permute() {
        for (n_heads, d) in [(1, 2), (2, 4), (3, 8), (4, 16)] {
            let rows = n_heads * d;
            let p = pairs(n_heads, n_heads, d, d);
            let name = "model.layers.0.self_attn.q_proj.weight";
            let got = p.reorder(name, numbered(rows).into(), rows, false).unwrap();
            let want: Vec<usize> = (0..rows).map(|r| r / d * d + r % 2 * d / 2 + r % d / 2).collect();
            assert_eq!(row_ids(&got), want, "{n_heads} heads of {d}");
            let permuted = p.reorder(name, Cow::Borrowed(&got[..]), rows, true).unwrap();
            assert!(matches!(permuted, Cow::Borrowed(_)) && permuted[..] == got[..]);
        }
    }

    /// Partial rotation pairs the rotated dims only; Phi-3's fused Q/K/V reorders its Q and K blocks and
    /// leaves V; a head norm is one head; other tensors are left alone; rows that are not whole heads are
    /// refused.
    #[test]
    fn pair_order_of_partial_rotation_fused_qkv_and_norms() {
        let p = pairs(2, 1, 6, 4);
        let got = p.reorder("model.layers.1.self_attn.k_proj.bias", numbered(6).into(), 6, false).unwrap();
        assert_eq!(row_ids(&got), [0, 2, 1, 3, 4, 5]);
        let got = p.reorder("model.layers.1.self_attn.qkv_proj.weight", numbered(24).into(), 24, false).unwrap();
        let head = |h: usize| [0, 2, 1, 3, 4, 5].map(|t| h * 6 + t);
        let want: Vec<usize> = [head(0), head(1), head(2)].concat().into_iter().chain(18..24).collect();
        assert_eq!(row_ids(&got), want);
        let got = p.reorder("model.layers.1.self_attn.q_norm.weight", numbered(6).into(), 6, false).unwrap();
        assert_eq!(row_ids(&got), [0, 2, 1, 3, 4, 5]);
        for name in ["model.layers.1.self_attn.v_proj.weight", "model.layers.1.self_attn.o_proj.weight"] {
            let rows = numbered(12);
            assert!(matches!(p.reorder(name, Cow::Borrowed(&rows[..]), 12, false), Ok(Cow::Borrowed(_))));
        }
        assert_eq!(p.reorder("model.layers.1.self_attn.q_proj.weight", numbered(6).into(), 6, false), Err(12));
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
