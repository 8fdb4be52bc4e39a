//! Row norms over the last dimension: rmsnorm (plain or Gemma's `1 + w`), the fused residual add +
//! rmsnorm, and layernorm. x, the residual and the outputs share one dtype (f32, f16 or bf16); the weight
//! and bias may have another (engine weights are bf16 while activations are f32). Statistics are kept
//! in f32 as (max |v|, sum of (v / max)^2), so rows of huge values (1e30) neither overflow nor lose
//! precision; layernorm's variance is the mean of squared deviations from the mean (per thread from its
//! values in registers, merged across threads by Chan's pairwise update), never `E[x^2] - E[x]^2`.
//!
//! The kernel (kernels/norm.wgsl, shared layout with softmax) reads a row once when it fits in registers
//! (up to 4 vec4 units a thread), issuing a thread's loads together; the row's partials merge by subgroup
//! shuffles where the adapter has subgroups (kernels/row_reduce_subgroup.wgsl, one barrier), through
//! workgroup memory otherwise (kernels/row_reduce_workgroup.wgsl).

use rayon::prelude::*;

use super::{
    common_backend, require_distinct, require_float, require_non_empty, require_same_dtype, require_same_shape,
};
use crate::backend::Backend;
use crate::cpu;
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::gpu::{Dispatch, GpuContext, Workgroups};
use crate::tensor::Tensor;

crate::kernel_source!(NORM, "norm", ["row_units", "norm", "row_reduce_workgroup"]);
crate::kernel_source!(NORM_SUBGROUP, "norm_subgroup", ["row_units", "norm", "row_reduce_subgroup"]);

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    n: u32,
    row0: u32,
    row_step: u32,
    eps: f32,
    _pad: [u32; 3],
}

/// How rmsnorm applies its weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RmsNormVariant {
    /// `x / rms(x) * w` (Llama, Mistral, Qwen).
    #[default]
    Standard,
    /// `x / rms(x) * (1 + w)` (Gemma).
    Gemma,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Rms(RmsNormVariant),
    Layer,
}

// ---- the row split shared with softmax ------------------------------------------------------------

/// How a row kernel (norm.wgsl, softmax.wgsl) splits its rows over threads: `tpr` threads per row, each
/// keeping `cache` units of `unit` words in registers (0: the row is streamed from memory in chunks of
/// [`MAX_CACHE`] units a thread), in workgroups of `wg` threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RowPlan {
    pub unit: u32,
    pub tpr: u32,
    pub cache: u32,
    pub wg: u32,
    /// f16/bf16 rows of odd length share words with their neighbours: even and odd rows are launched apart.
    pub split_parity: bool,
}

/// Units a thread keeps in registers at most (the kernels' c0..c3), and the units a thread loads at once
/// when a row is streamed. Longer rows are streamed, all but their last chunk read twice, the second read
/// mostly from L2: on an H100, softmax over [1024, 32768] f32 ran at 1.64 TB/s streamed against
/// 1.16 TB/s with 8 units a thread in registers (one workgroup of 1024 threads then fills the SM's
/// register file, so nothing overlaps its reduction).
const MAX_CACHE: u32 = 4;

/// Which row reduction a row kernel uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RowReduce {
    /// Subgroup shuffles where the adapter has subgroups, workgroup memory otherwise.
    Auto,
    /// Workgroup memory alone (tests compare it with the subgroup path on adapters that have both).
    #[cfg_attr(not(test), allow(dead_code))]
    Workgroup,
}

impl RowReduce {
    /// Whether the subgroup variant runs on `ctx`.
    pub(crate) fn subgroup(self, ctx: &GpuContext) -> bool {
        self == RowReduce::Auto && ctx.has_subgroups()
    }
}

impl RowPlan {
    pub(crate) fn new(ctx: &GpuContext, n: u32, dtype: DType) -> RowPlan {
        let l = ctx.limits();
        // The reduction array (one vec4<f32> per thread) must fit in workgroup memory.
        let max_threads = l
            .max_compute_invocations_per_workgroup
            .min(l.max_compute_workgroup_size_x)
            .min(l.max_compute_workgroup_storage_size / 16)
            .min(1024);
        Self::for_limit(super::prev_power_of_two(max_threads.max(1)), n, dtype)
    }

    fn for_limit(max_tpr: u32, n: u32, dtype: DType) -> RowPlan {
        let per_word = if dtype == DType::F32 { 1 } else { 2 };
        let unit = if n.is_multiple_of(4 * per_word) { 4 } else { 1 };
        let units = n.div_ceil(unit * per_word);
        let mut tpr = units.div_ceil(MAX_CACHE).next_power_of_two().clamp(1, max_tpr);
        let mut cache = units.div_ceil(tpr);
        if cache > MAX_CACHE {
            tpr = max_tpr;
            cache = 0;
        }
        RowPlan { unit, tpr, cache, wg: tpr.max(256.min(max_tpr)), split_parity: per_word == 2 && n % 2 == 1 }
    }

    /// Partials one thread combines in the first level of the workgroup-memory reduction: about sqrt(tpr).
    pub(crate) fn chunk(&self) -> u32 {
        1 << self.tpr.trailing_zeros().div_ceil(2)
    }

    /// The override constants of the plan; `subgroup`: those of the subgroup variant on `ctx`.
    pub(crate) fn constants(&self, ctx: &GpuContext, subgroup: bool) -> Vec<(&'static str, f64)> {
        let upt = if self.cache == 0 { MAX_CACHE } else { self.cache };
        let mut c = vec![
            ("UNIT", self.unit as f64),
            ("TPR", self.tpr as f64),
            ("UPT", upt as f64),
            ("WG", self.wg as f64),
            ("CHUNK", self.chunk() as f64),
        ];
        if subgroup {
            c.push(("SG_MIN", ctx.info().subgroup_min_size.max(1) as f64));
        }
        c
    }

    /// (first row, row step, workgroups) of each launch.
    pub(crate) fn launches(&self, rows: u32) -> Vec<(u32, u32, u32)> {
        let rows_per_group = self.wg / self.tpr;
        let starts: &[u32] = if self.split_parity && rows > 1 { &[0, 1] } else { &[0] };
        let step = starts.len() as u32;
        starts.iter().map(|&r0| (r0, step, (rows - r0).div_ceil(step).div_ceil(rows_per_group))).collect()
    }
}

/// Rejects tensors whose element offsets would not fit the kernels' u32 arithmetic.
pub(crate) fn check_elements(op: &'static str, t: &Tensor) -> Result<u32> {
    let n = t.numel();
    if n > (u32::MAX - 64) as usize {
        return Err(KernelError::Argument {
            op,
            name: "elements",
            value: n.to_string(),
            reason: format!("larger than a row kernel can index ({})", u32::MAX - 64),
        });
    }
    Ok(n as u32)
}

/// The value `v` after a round trip through `dtype`.
pub(crate) fn round_value(v: f32, dtype: DType) -> f32 {
    match dtype {
        DType::F16 => half::f16::from_f32(v).to_f32(),
        DType::BF16 => half::bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

// ---- public API -----------------------------------------------------------------------------------

/// `x / sqrt(mean(x^2) + eps) * w` (or `* (1 + w)`) over the last dimension of `x`; `weight` is `[n]`.
pub fn rmsnorm(x: &Tensor, weight: &Tensor, eps: f32, variant: RmsNormVariant) -> Result<Tensor> {
    let out = Tensor::uninit(&x.backend(), "rmsnorm", x.shape(), x.dtype())?;
    rmsnorm_into(x, weight, eps, variant, &out)?;
    Ok(out)
}

/// [`rmsnorm`] into `out` (x's shape and dtype, a separate tensor).
pub fn rmsnorm_into(x: &Tensor, weight: &Tensor, eps: f32, variant: RmsNormVariant, out: &Tensor) -> Result<()> {
    norm_into(NormArgs {
        op: "rmsnorm",
        kind: Kind::Rms(variant),
        x,
        residual: None,
        weight,
        bias: None,
        eps,
        sum: None,
        out,
        reduce: RowReduce::Auto,
    })
}

/// `sum = x + residual` (rounded to x's dtype) and `rmsnorm(sum)`, in one pass: returns `(sum, normed)`.
pub fn add_rmsnorm(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f32,
    variant: RmsNormVariant,
) -> Result<(Tensor, Tensor)> {
    let backend = x.backend();
    let sum = Tensor::uninit(&backend, "add_rmsnorm sum", x.shape(), x.dtype())?;
    let normed = Tensor::uninit(&backend, "add_rmsnorm", x.shape(), x.dtype())?;
    add_rmsnorm_into(x, residual, weight, eps, variant, &sum, &normed)?;
    Ok((sum, normed))
}

/// [`add_rmsnorm`] into preallocated outputs. `sum` may be `residual` itself (the residual stream updated
/// in place: `residual += x`); otherwise every tensor must be separate (`x` and `residual` too).
pub fn add_rmsnorm_into(
    x: &Tensor,
    residual: &Tensor,
    weight: &Tensor,
    eps: f32,
    variant: RmsNormVariant,
    sum: &Tensor,
    normed: &Tensor,
) -> Result<()> {
    norm_into(NormArgs {
        op: "add_rmsnorm",
        kind: Kind::Rms(variant),
        x,
        residual: Some(residual),
        weight,
        bias: None,
        eps,
        sum: Some(sum),
        out: normed,
        reduce: RowReduce::Auto,
    })
}

/// `(x - mean) / sqrt(var + eps) * w (+ b)` over the last dimension (biased variance, as PyTorch).
pub fn layernorm(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    let out = Tensor::uninit(&x.backend(), "layernorm", x.shape(), x.dtype())?;
    layernorm_into(x, weight, bias, eps, &out)?;
    Ok(out)
}

/// [`layernorm`] into `out` (x's shape and dtype, a separate tensor). `bias` has the weight's shape and dtype.
pub fn layernorm_into(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, eps: f32, out: &Tensor) -> Result<()> {
    norm_into(NormArgs {
        op: "layernorm",
        kind: Kind::Layer,
        x,
        residual: None,
        weight,
        bias,
        eps,
        sum: None,
        out,
        reduce: RowReduce::Auto,
    })
}

// ---- validation and dispatch ----------------------------------------------------------------------

struct NormArgs<'a> {
    op: &'static str,
    kind: Kind,
    x: &'a Tensor,
    residual: Option<&'a Tensor>,
    weight: &'a Tensor,
    bias: Option<&'a Tensor>,
    eps: f32,
    sum: Option<&'a Tensor>,
    out: &'a Tensor,
    reduce: RowReduce,
}

fn validate(a: &NormArgs) -> Result<(u32, u32)> {
    let op = a.op;
    require_float(op, a.x)?;
    require_non_empty(op, "x", a.x)?;
    let (rows, n) = a.x.rows_cols();
    check_elements(op, a.x)?;
    require_float(op, a.weight)?;
    if a.weight.shape() != [n] {
        return Err(KernelError::Shape {
            op,
            detail: format!(
                "weight must be [{n}] (the last dimension of x {:?}), found {:?}",
                a.x.shape(),
                a.weight.shape()
            ),
        });
    }
    if let Some(b) = a.bias {
        require_same_shape(op, a.weight, b)?;
        require_same_dtype(op, a.weight, b)?;
    }
    if !(a.eps.is_finite() && a.eps >= 0.0) {
        return Err(KernelError::Argument {
            op,
            name: "eps",
            value: a.eps.to_string(),
            reason: "must be a finite number >= 0".into(),
        });
    }
    let mut same_as_x: Vec<&Tensor> = vec![a.out];
    same_as_x.extend(a.residual);
    same_as_x.extend(a.sum);
    for t in same_as_x {
        require_same_shape(op, a.x, t)?;
        require_same_dtype(op, a.x, t)?;
    }
    let mut inputs: Vec<&Tensor> = vec![a.x, a.weight];
    inputs.extend(a.residual);
    inputs.extend(a.bias);
    inputs.extend(a.sum);
    require_distinct(op, "out", a.out, &inputs)?;
    if let Some(sum) = a.sum {
        let mut others: Vec<&Tensor> = vec![a.x, a.weight];
        others.extend(a.bias);
        require_distinct(op, "sum", sum, &others)?;
    }
    if let Some(r) = a.residual {
        require_distinct(op, "residual", r, &[a.x])?;
    }
    Ok((rows as u32, n as u32))
}

fn norm_into(a: NormArgs) -> Result<()> {
    let (rows, n) = validate(&a)?;
    let mut all: Vec<&Tensor> = vec![a.x, a.weight, a.out];
    all.extend(a.residual);
    all.extend(a.bias);
    all.extend(a.sum);
    match common_backend(a.op, &all)? {
        Backend::Cpu => {
            cpu_norm(&a, n as usize);
            Ok(())
        }
        Backend::Gpu(ctx) => gpu_norm(&ctx, &a, rows, n),
    }
}

fn gpu_norm(ctx: &GpuContext, a: &NormArgs, rows: u32, n: u32) -> Result<()> {
    let buf = |t: &Tensor| -> Result<wgpu::Buffer> {
        let b = t.gpu_buffer().ok_or_else(|| KernelError::Gpu(format!("{}: tensor is not on the GPU", a.op)))?;
        ctx.check_binding(a.op, b.size())?;
        Ok(b.raw().clone())
    };
    let (w, x, y) = (buf(a.weight)?, buf(a.x)?, buf(a.out)?);
    let b = match a.bias {
        Some(t) => buf(t)?,
        None => w.clone(),
    };
    // Unused slots get the output again (see norm.wgsl).
    let res = match a.residual {
        Some(t) => buf(t)?,
        None => y.clone(),
    };
    let sum = match a.sum {
        Some(t) => buf(t)?,
        None => y.clone(),
    };
    let plan = RowPlan::new(ctx, n, a.x.dtype());
    let (mode, gemma) = match a.kind {
        Kind::Rms(v) => (0.0, v == RmsNormVariant::Gemma),
        Kind::Layer => (1.0, false),
    };
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    let subgroup = a.reduce.subgroup(ctx);
    let mut constants = vec![
        ("DTYPE", a.x.dtype().wgsl_code()),
        ("WDTYPE", a.weight.dtype().wgsl_code()),
        ("MODE", mode),
        ("GEMMA", flag(gemma)),
        ("HAS_BIAS", flag(a.bias.is_some())),
        ("ADD", flag(a.residual.is_some())),
        ("HELD", flag(plan.unit == 4 && plan.cache != 0)),
    ];
    constants.extend(plan.constants(ctx, subgroup));
    for (row0, row_step, groups) in plan.launches(rows) {
        let params = Params { rows, n, row0, row_step, eps: a.eps, _pad: [0; 3] };
        ctx.dispatch(Dispatch {
            kernel: if subgroup { &NORM_SUBGROUP } else { &NORM },
            entry: "main",
            constants: &constants,
            params: Some(bytemuck::bytes_of(&params)),
            buffers: &[&w, &b, &x, &res, &y, &sum],
            workgroups: Workgroups::Linear(groups),
        })?;
    }
    Ok(())
}

// ---- CPU ------------------------------------------------------------------------------------------

fn cpu_norm(a: &NormArgs, n: usize) {
    let dtype = a.x.dtype();
    let mut v = cpu::read_f32(a.x);
    if let Some(r) = a.residual {
        let r = cpu::read_f32(r);
        v.par_iter_mut().zip(&r).for_each(|(s, &r)| *s = round_value(*s + r, dtype));
    }
    let w = cpu::read_f32(a.weight);
    let b = a.bias.map(cpu::read_f32);
    let mut y = vec![0.0f32; v.len()];
    y.par_chunks_mut(n).zip(v.par_chunks(n)).for_each(|(yr, xr)| match a.kind {
        Kind::Rms(variant) => rms_row(xr, &w, a.eps, variant, yr),
        Kind::Layer => layer_row(xr, &w, b.as_deref(), a.eps, yr),
    });
    if let Some(sum) = a.sum {
        cpu::write_f32(sum, &v);
    }
    cpu::write_f32(a.out, &y);
}

/// 1 / sqrt(ms + eps), 0 for a zero row with eps = 0 (whose output is 0 either way), as the kernel.
fn inv_root(ms: f64, eps: f32) -> f64 {
    let d = ms + eps as f64;
    if d == 0.0 { 0.0 } else { 1.0 / d.sqrt() }
}

fn rms_row(x: &[f32], w: &[f32], eps: f32, variant: RmsNormVariant, y: &mut [f32]) {
    let ms = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64;
    let inv = inv_root(ms, eps);
    for ((o, &v), &w) in y.iter_mut().zip(x).zip(w) {
        let w = match variant {
            RmsNormVariant::Standard => w as f64,
            RmsNormVariant::Gemma => 1.0 + w as f64,
        };
        *o = (v as f64 * inv * w) as f32;
    }
}

fn layer_row(x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32, y: &mut [f32]) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let inv = inv_root(var, eps);
    for (i, (o, &v)) in y.iter_mut().zip(x).enumerate() {
        let bias = b.map_or(0.0, |b| b[i] as f64);
        *o = ((v as f64 - mean) * inv * w[i] as f64 + bias) as f32;
    }
}

// ---- bench ----------------------------------------------------------------------------------------

/// Bench op names of this family.
pub const BENCH_OPS: &[&str] = &["rmsnorm", "add_rmsnorm", "layernorm"];

/// f32 rows of 4096 (a 7B-8B model's hidden size) with an f32 weight, about `bytes` moved.
pub fn bench_case(op: &str, bytes: u64) -> Option<Result<crate::bench::BenchCase>> {
    use crate::bench::{BenchCase, random_tensor, rows_for};
    use crate::testing::Tolerance;

    if !BENCH_OPS.contains(&op) {
        return None;
    }
    const N: usize = 4096;
    let dtype = DType::F32;
    let tolerance = Tolerance::for_dtype(dtype).scaled(4.0);
    let build = || -> Result<BenchCase> {
        let w = random_tensor(11, &[N], dtype, 0.5, 1.5)?;
        Ok(match op {
            "rmsnorm" => {
                let rows = rows_for(bytes, N, 8);
                let x = random_tensor(12, &[rows, N], dtype, -4.0, 4.0)?;
                BenchCase {
                    op: "rmsnorm",
                    dtype,
                    shape: format!("[{rows}, {N}]"),
                    bytes: (8 * rows * N + 4 * N) as u64,
                    flops: 0,
                    tolerance,
                    inputs: vec![x, w],
                    run: Box::new(|i| rmsnorm(&i[0], &i[1], 1e-5, RmsNormVariant::Standard)),
                    reference: Box::new(|i| {
                        let (x, w) = (cpu::read_f32(&i[0]), cpu::read_f32(&i[1]));
                        Ok(reference::rmsnorm(&x, &w, 1e-5, RmsNormVariant::Standard))
                    }),
                }
            }
            "add_rmsnorm" => {
                let rows = rows_for(bytes, N, 16);
                let x = random_tensor(13, &[rows, N], dtype, -4.0, 4.0)?;
                let r = random_tensor(14, &[rows, N], dtype, -4.0, 4.0)?;
                BenchCase {
                    op: "add_rmsnorm",
                    dtype,
                    shape: format!("[{rows}, {N}]"),
                    bytes: (16 * rows * N + 4 * N) as u64,
                    flops: 0,
                    tolerance,
                    inputs: vec![x, r, w],
                    run: Box::new(|i| add_rmsnorm(&i[0], &i[1], &i[2], 1e-5, RmsNormVariant::Standard).map(|(_, y)| y)),
                    reference: Box::new(|i| {
                        let (x, r, w) = (cpu::read_f32(&i[0]), cpu::read_f32(&i[1]), cpu::read_f32(&i[2]));
                        let s: Vec<f32> = x.iter().zip(&r).map(|(a, b)| a + b).collect();
                        Ok(reference::rmsnorm(&s, &w, 1e-5, RmsNormVariant::Standard))
                    }),
                }
            }
            _ => {
                let rows = rows_for(bytes, N, 8);
                let x = random_tensor(15, &[rows, N], dtype, -4.0, 4.0)?;
                let b = random_tensor(16, &[N], dtype, -1.0, 1.0)?;
                BenchCase {
                    op: "layernorm",
                    dtype,
                    shape: format!("[{rows}, {N}]"),
                    bytes: (8 * rows * N + 8 * N) as u64,
                    flops: 0,
                    tolerance,
                    inputs: vec![x, w, b],
                    run: Box::new(|i| layernorm(&i[0], &i[1], Some(&i[2]), 1e-5)),
                    reference: Box::new(|i| {
                        let (x, w, b) = (cpu::read_f32(&i[0]), cpu::read_f32(&i[1]), cpu::read_f32(&i[2]));
                        Ok(reference::layernorm(&x, &w, Some(&b), 1e-5))
                    }),
                }
            }
        })
    };
    Some(build())
}

/// f64 references (rows of `w.len()` elements).
pub mod reference {
    use super::RmsNormVariant;

    pub fn rmsnorm(x: &[f32], w: &[f32], eps: f32, variant: RmsNormVariant) -> Vec<f64> {
        let n = w.len();
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(n) {
            let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (ms + eps as f64).sqrt();
            for (&v, &w) in row.iter().zip(w) {
                let w = if variant == RmsNormVariant::Gemma { 1.0 + w as f64 } else { w as f64 };
                out.push(v as f64 * inv * w);
            }
        }
        out
    }

    pub fn layernorm(x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32) -> Vec<f64> {
        let n = w.len();
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(n) {
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
            let inv = 1.0 / (var + eps as f64).sqrt();
            for (i, &v) in row.iter().enumerate() {
                out.push((v as f64 - mean) * inv * w[i] as f64 + b.map_or(0.0, |b| b[i] as f64));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod layout_tests {
    #[test]
    fn params_match_the_wgsl_struct() {
        let size = crate::testing::wgsl_struct_size(&super::NORM, "Params");
        assert_eq!(size as usize, std::mem::size_of::<super::Params>());
    }
}
