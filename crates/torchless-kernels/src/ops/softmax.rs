//! Row-wise softmax over the last dimension, numerically stable (max-subtracted), with a scale, an
//! optional soft cap and an optional causal mask; out of place or in place (attention scores).
//!
//! Definitions: a row's scores are `s = softcap(scale · x)` with `softcap(t) = cap · tanh(t / cap)`.
//! With a causal mask, row `r`'s query position is `q = (r mod Q) + offset`, where `Q` is the
//! second-to-last dimension (the rows of one head for a `[heads, Q, keys]` tensor; all rows for a 2-D
//! tensor), and columns `c > q` are masked. Masked columns come out as 0, and a row with nothing to
//! weigh (every column masked, or every score −inf) comes out as all zeros, never NaN. −inf scores take
//! part as weight 0; +inf or NaN inputs give NaN, as in PyTorch.

use rayon::prelude::*;

use super::norm::{RowPlan, RowReduce, check_elements};
use super::{common_backend, require_float, require_non_empty, require_same_dtype, require_same_shape, to_u32};
use crate::backend::Backend;
use crate::cpu;
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::gpu::{Dispatch, GpuContext, Workgroups};
use crate::tensor::Tensor;

crate::kernel_source!(SOFTMAX, "softmax", ["row_units", "softmax", "row_reduce_workgroup"]);
crate::kernel_source!(SOFTMAX_SUBGROUP, "softmax_subgroup", ["row_units", "softmax", "row_reduce_subgroup"]);

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    row0: u32,
    row_step: u32,
    q_rows: u32,
    mask_add: u32,
    mask_sub: u32,
    _pad: u32,
    scale: f32,
    cap: f32,
    _pad1: [u32; 2],
}

/// Causal masking: row `r` (query position `(r mod Q) + offset`) sees the columns up to its position.
/// `offset` is usually `keys − queries` (the keys before the first query); a negative offset masks whole
/// rows (they come out as zeros).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CausalMask {
    pub offset: isize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoftmaxOptions {
    /// Multiplies the inputs first (1 / sqrt(head_dim) for attention). Positive and finite.
    pub scale: f32,
    /// `cap · tanh(x / cap)` after the scale (Gemma 2's attention logit soft cap). Positive and finite.
    pub softcap: Option<f32>,
    pub causal: Option<CausalMask>,
}

impl Default for SoftmaxOptions {
    fn default() -> Self {
        SoftmaxOptions { scale: 1.0, softcap: None, causal: None }
    }
}

impl SoftmaxOptions {
    fn validate(&self) -> Result<()> {
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(KernelError::Argument {
                op: "softmax",
                name: "scale",
                value: self.scale.to_string(),
                reason: "must be a positive finite number".into(),
            });
        }
        if let Some(cap) = self.softcap
            && !(cap.is_finite() && cap > 0.0)
        {
            return Err(KernelError::Argument {
                op: "softmax",
                name: "softcap",
                value: cap.to_string(),
                reason: "must be a positive finite number".into(),
            });
        }
        Ok(())
    }

    /// The score of one input, as the kernels compute it (f32).
    pub fn score(&self, v: f32) -> f32 {
        let t = v * self.scale;
        match self.softcap {
            Some(cap) => cap * (t / cap).tanh(),
            None => t,
        }
    }

    /// How many leading columns row `r` of a tensor with `q_rows` rows per query block and `n` columns sees.
    pub fn visible(&self, r: usize, q_rows: usize, n: usize) -> usize {
        match self.causal {
            None => n,
            Some(CausalMask { offset }) => ((r % q_rows) as i128 + offset as i128 + 1).clamp(0, n as i128) as usize,
        }
    }
}

/// Softmax of the rows of `x` (the last dimension) into a new tensor. As in PyTorch, −inf scores weigh 0
/// and a row with a NaN or +inf score comes out as NaN; a row with nothing to weigh (all −inf or masked)
/// comes out as zeros (PyTorch gives NaN there; zeros suit attention rows that see no key).
pub fn softmax(x: &Tensor, options: SoftmaxOptions) -> Result<Tensor> {
    let out = Tensor::uninit(&x.backend(), "softmax", x.shape(), x.dtype())?;
    softmax_into(x, options, &out)?;
    Ok(out)
}

/// Softmax of the rows of `x` in place.
pub fn softmax_inplace(x: &Tensor, options: SoftmaxOptions) -> Result<()> {
    softmax_into(x, options, x)
}

/// Softmax into `out` (x's shape and dtype); `out` may be `x` itself.
pub fn softmax_into(x: &Tensor, options: SoftmaxOptions, out: &Tensor) -> Result<()> {
    softmax_with(x, options, out, RowReduce::Auto)
}

fn softmax_with(x: &Tensor, options: SoftmaxOptions, out: &Tensor, reduce: RowReduce) -> Result<()> {
    const OP: &str = "softmax";
    options.validate()?;
    require_float(OP, x)?;
    require_non_empty(OP, "x", x)?;
    require_same_shape(OP, x, out)?;
    require_same_dtype(OP, x, out)?;
    check_elements(OP, x)?;
    let (rows, n) = x.rows_cols();
    let q_rows = if x.shape().len() >= 2 { x.shape()[x.shape().len() - 2] } else { 1 };
    match common_backend(OP, &[x, out])? {
        Backend::Cpu => {
            let v = cpu::read_f32(x);
            let mut y = vec![0.0f32; v.len()];
            y.par_chunks_mut(n).zip(v.par_chunks(n)).enumerate().for_each(|(r, (yr, xr))| {
                softmax_row(xr, &options, options.visible(r, q_rows, n), yr);
            });
            cpu::write_f32(out, &y);
            Ok(())
        }
        Backend::Gpu(ctx) => gpu_softmax(&ctx, x, &options, out, [rows as u32, n as u32, q_rows as u32], reduce),
    }
}

fn gpu_softmax(
    ctx: &GpuContext,
    x: &Tensor,
    options: &SoftmaxOptions,
    out: &Tensor,
    [rows, n, q_rows]: [u32; 3],
    reduce: RowReduce,
) -> Result<()> {
    const OP: &str = "softmax";
    let buf = |t: &Tensor| -> Result<wgpu::Buffer> {
        let b = t.gpu_buffer().ok_or_else(|| KernelError::Gpu(format!("{OP}: tensor is not on the GPU")))?;
        ctx.check_binding(OP, b.size())?;
        Ok(b.raw().clone())
    };
    let (xb, yb) = (buf(x)?, buf(out)?);
    // Row r sees columns below (r mod Q) + offset + 1, clamped to [0, n]: split into u32 parts.
    let reach = options.causal.map_or(0i128, |c| c.offset as i128 + 1).clamp(-(q_rows as i128), n as i128);
    let mask_add = to_u32(OP, "offset", reach.max(0) as usize)?;
    let mask_sub = to_u32(OP, "offset", (-reach).max(0) as usize)?;
    let plan = RowPlan::new(ctx, n, x.dtype());
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let subgroup = reduce.subgroup(ctx);
    let mut constants = vec![
        ("DTYPE", x.dtype().wgsl_code()),
        ("SOFTCAP", flag(options.softcap.is_some())),
        ("CAUSAL", flag(options.causal.is_some())),
    ];
    constants.extend(plan.constants(ctx, subgroup));
    for (row0, row_step, groups) in plan.launches(rows) {
        let params = Params {
            rows,
            n,
            row0,
            row_step,
            q_rows: q_rows.max(1),
            mask_add,
            mask_sub,
            _pad: 0,
            scale: options.scale,
            cap: options.softcap.unwrap_or(1.0),
            _pad1: [0; 2],
        };
        ctx.dispatch(Dispatch {
            kernel: if subgroup { &SOFTMAX_SUBGROUP } else { &SOFTMAX },
            entry: "main",
            constants: &constants,
            params: Some(bytemuck::bytes_of(&params)),
            buffers: &[&xb, &yb],
            workgroups: Workgroups::Linear(groups),
        })?;
    }
    Ok(())
}

/// One row on the CPU: the first `visible` columns take part, the rest are 0.
fn softmax_row(x: &[f32], o: &SoftmaxOptions, visible: usize, y: &mut [f32]) {
    let scores: Vec<f32> = x[..visible].iter().map(|&v| o.score(v)).collect();
    let m = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    y.fill(0.0);
    if m == f32::NEG_INFINITY {
        return;
    }
    let mut total = 0.0f64;
    for (yv, &s) in y.iter_mut().zip(&scores) {
        let e = ((s - m) as f64).exp();
        *yv = e as f32;
        total += e;
    }
    let inv = 1.0 / total;
    y[..visible].iter_mut().for_each(|v| *v = (*v as f64 * inv) as f32);
}

/// The f64 reference of a `[rows, n]` matrix whose rows belong to query blocks of `q_rows` rows.
pub fn reference(x: &[f32], n: usize, q_rows: usize, o: &SoftmaxOptions) -> Vec<f64> {
    let mut out = Vec::with_capacity(x.len());
    for (r, row) in x.chunks(n).enumerate() {
        let visible = o.visible(r, q_rows, n);
        let s: Vec<f64> = row[..visible]
            .iter()
            .map(|&v| {
                let t = v as f64 * o.scale as f64;
                o.softcap.map_or(t, |cap| cap as f64 * (t / cap as f64).tanh())
            })
            .collect();
        let m = s.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        if m == f64::NEG_INFINITY {
            out.extend(std::iter::repeat_n(0.0, n));
            continue;
        }
        let total: f64 = s.iter().map(|v| (v - m).exp()).sum();
        out.extend(s.iter().map(|v| (v - m).exp() / total));
        out.extend(std::iter::repeat_n(0.0, n - visible));
    }
    out
}

/// Bench op names of this family.
pub const BENCH_OPS: &[&str] = &["softmax"];

/// f32 rows of 32768, about `bytes` moved: attention scores at a 32k context ([heads x queries, keys]) and
/// about a Llama-2/Mistral vocabulary (32000); the row length of `benchmarks/torch_reference.py`'s softmax,
/// so the PyTorch anchor is measured on the same shape.
pub fn bench_case(op: &str, bytes: u64) -> Option<Result<crate::bench::BenchCase>> {
    use crate::bench::{BenchCase, random_tensor, rows_for};
    use crate::testing::Tolerance;

    if op != "softmax" {
        return None;
    }
    const N: usize = 32768;
    let dtype = DType::F32;
    let build = || -> Result<BenchCase> {
        let rows = rows_for(bytes, N, 8);
        let x = random_tensor(31, &[rows, N], dtype, -8.0, 8.0)?;
        let o = SoftmaxOptions { scale: 0.125, ..Default::default() };
        Ok(BenchCase {
            op: "softmax",
            dtype,
            shape: format!("[{rows}, {N}]"),
            bytes: (8 * rows * N) as u64,
            flops: 0,
            tolerance: Tolerance { atol: 1e-7, rtol: 1e-4 },
            inputs: vec![x],
            run: Box::new(move |i| softmax(&i[0], o)),
            reference: Box::new(move |i| Ok(reference(&cpu::read_f32(&i[0]), N, rows, &o))),
        })
    };
    Some(build())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod layout_tests {
    #[test]
    fn params_match_the_wgsl_struct() {
        let size = crate::testing::wgsl_struct_size(&super::SOFTMAX, "Params");
        assert_eq!(size as usize, std::mem::size_of::<super::Params>());
    }
}
