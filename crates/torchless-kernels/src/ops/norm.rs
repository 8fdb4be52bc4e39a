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

crate::kernel_source!(NORM, "norm", ["norm", "row_reduce_workgroup"]);
crate::kernel_source!(NORM_SUBGROUP, "norm_subgroup", ["norm", "row_reduce_subgroup"]);

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
mod tests {
    use super::*;
    use crate::testing::{RAGGED, Rng, Tolerance, assert_close, round_to, test_backends};

    fn tensor(backend: &Backend, v: &[f32], shape: &[usize], dtype: DType) -> Tensor {
        Tensor::from_f32(backend, v, shape, dtype).unwrap()
    }

    /// The tolerance of a norm output of `dtype`: f32 math, one rounding to the output type.
    fn tol(dtype: DType) -> Tolerance {
        Tolerance::for_dtype(dtype).scaled(4.0)
    }

    fn rows_for(n: usize) -> usize {
        if n > 1000 { 2 } else { 3 }
    }

    #[test]
    fn plan_splits_rows_as_documented() {
        let p = RowPlan::for_limit(1024, 4096, DType::F32);
        assert_eq!((p.unit, p.tpr, p.cache, p.wg, p.split_parity), (4, 256, 4, 256, false));
        let p = RowPlan::for_limit(1024, 4096, DType::BF16);
        assert_eq!((p.unit, p.tpr, p.cache, p.wg), (4, 128, 4, 256));
        assert_eq!(p.launches(5), vec![(0, 1, 3)]);
        let p = RowPlan::for_limit(1024, 16384, DType::F32);
        assert_eq!((p.unit, p.tpr, p.cache, p.wg), (4, 1024, 4, 1024));
        let p = RowPlan::for_limit(1024, 32768, DType::BF16);
        assert_eq!((p.unit, p.tpr, p.cache, p.wg), (4, 1024, 4, 1024));
        let p = RowPlan::for_limit(1024, 32000, DType::F32);
        assert_eq!((p.unit, p.tpr, p.cache, p.wg), (4, 1024, 0, 1024));
        let p = RowPlan::for_limit(1024, 70000, DType::F32);
        assert_eq!((p.tpr, p.cache), (1024, 0));
        let p = RowPlan::for_limit(256, 33, DType::F16);
        assert_eq!((p.unit, p.tpr, p.cache, p.wg, p.split_parity), (1, 8, 3, 256, true));
        assert_eq!(p.launches(5), vec![(0, 2, 1), (1, 2, 1)]);
        assert_eq!(p.launches(1), vec![(0, 1, 1)]);
        let p = RowPlan::for_limit(256, 3, DType::F32);
        assert_eq!((p.unit, p.tpr, p.cache, p.wg), (1, 1, 3, 256));
        let chunks: Vec<u32> = (0..=10).map(|k| RowPlan { tpr: 1 << k, ..p }.chunk()).collect();
        assert_eq!(chunks, [1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32]);
    }

    #[test]
    fn rmsnorm_matches_the_f64_reference_on_ragged_rows() {
        let mut rng = Rng::new(21);
        for backend in test_backends() {
            for (i, &n) in RAGGED.iter().enumerate() {
                for (j, dtype) in DType::FLOATS.into_iter().enumerate() {
                    // Every (x, weight) dtype pair, spread over the sizes.
                    let wdtype = DType::FLOATS[(i + j) % 3];
                    let variant = if i % 2 == 0 { RmsNormVariant::Standard } else { RmsNormVariant::Gemma };
                    let rows = rows_for(n);
                    let x = round_to(&rng.vec(rows * n, -3.0, 3.0), dtype);
                    let w = round_to(&rng.vec(n, -1.5, 1.5), wdtype);
                    let eps = [1e-5, 1e-6, 0.1][i % 3];
                    let got = rmsnorm(
                        &tensor(&backend, &x, &[rows, n], dtype),
                        &tensor(&backend, &w, &[n], wdtype),
                        eps,
                        variant,
                    )
                    .unwrap()
                    .to_f32_vec()
                    .unwrap();
                    let want = reference::rmsnorm(&x, &w, eps, variant);
                    let what = format!("rmsnorm {variant:?} x {dtype} w {wdtype} [{rows}, {n}] on {}", backend.name());
                    assert_close(&what, &got, &want, tol(dtype));
                }
            }
        }
    }

    #[test]
    fn every_weight_dtype_pairs_with_every_activation_dtype() {
        let mut rng = Rng::new(22);
        for backend in test_backends() {
            for dtype in DType::FLOATS {
                for wdtype in DType::FLOATS {
                    // 64: vec4 loads in every dtype; 36: vec4 loads for f32 only; 33: word loads.
                    for n in [64, 36, 33] {
                        let x = round_to(&rng.vec(4 * n, -2.0, 2.0), dtype);
                        let w = round_to(&rng.vec(n, -1.0, 1.0), wdtype);
                        let b = round_to(&rng.vec(n, -1.0, 1.0), wdtype);
                        let xt = tensor(&backend, &x, &[4, n], dtype);
                        let (wt, bt) = (tensor(&backend, &w, &[n], wdtype), tensor(&backend, &b, &[n], wdtype));
                        let what = format!("x {dtype} w {wdtype} n={n} on {}", backend.name());
                        let got = rmsnorm(&xt, &wt, 1e-5, RmsNormVariant::Gemma).unwrap().to_f32_vec().unwrap();
                        let want = reference::rmsnorm(&x, &w, 1e-5, RmsNormVariant::Gemma);
                        assert_close(&format!("rmsnorm {what}"), &got, &want, tol(dtype));
                        let got = layernorm(&xt, &wt, Some(&bt), 1e-5).unwrap().to_f32_vec().unwrap();
                        let want = reference::layernorm(&x, &w, Some(&b), 1e-5);
                        assert_close(&format!("layernorm {what}"), &got, &want, tol(dtype));
                    }
                }
            }
        }
    }

    #[test]
    fn long_rows_stream_from_memory() {
        let mut rng = Rng::new(23);
        for backend in test_backends() {
            // 70000: vec4 units, too many for registers; 70001: word units, odd (16-bit rows share words);
            // 12000: 3 vec4 units a thread in workgroups of 1024.
            for (n, rows, dtype) in [
                (70000, 1, DType::F32),
                (70000, 2, DType::BF16),
                (70001, 2, DType::F16),
                (70001, 1, DType::F32),
                (12000, 3, DType::F32),
            ] {
                let x = round_to(&rng.vec(rows * n, -2.0, 2.0), dtype);
                let r = round_to(&rng.vec(rows * n, -2.0, 2.0), dtype);
                let w = round_to(&rng.vec(n, 0.5, 1.5), DType::BF16);
                let b = round_to(&rng.vec(n, -0.5, 0.5), DType::BF16);
                let xt = tensor(&backend, &x, &[rows, n], dtype);
                let (wt, bt) = (tensor(&backend, &w, &[n], DType::BF16), tensor(&backend, &b, &[n], DType::BF16));
                let what = format!("{dtype} [{rows}, {n}] on {}", backend.name());

                let got = rmsnorm(&xt, &wt, 1e-6, RmsNormVariant::Standard).unwrap().to_f32_vec().unwrap();
                let want = reference::rmsnorm(&x, &w, 1e-6, RmsNormVariant::Standard);
                assert_close(&format!("rmsnorm {what}"), &got, &want, tol(dtype));

                let got = layernorm(&xt, &wt, Some(&bt), 1e-6).unwrap().to_f32_vec().unwrap();
                let want = reference::layernorm(&x, &w, Some(&b), 1e-6);
                assert_close(&format!("layernorm {what}"), &got, &want, tol(dtype));

                let rt = tensor(&backend, &r, &[rows, n], dtype);
                let (sum, normed) = add_rmsnorm(&xt, &rt, &wt, 1e-6, RmsNormVariant::Gemma).unwrap();
                let s: Vec<f32> = x.iter().zip(&r).map(|(a, b)| a + b).collect();
                let s = round_to(&s, dtype);
                let want = reference::rmsnorm(&s, &w, 1e-6, RmsNormVariant::Gemma);
                assert_close(&format!("add_rmsnorm sum {what}"), &sum.to_f32_vec().unwrap(), &to_f64(&s), tol(dtype));
                assert_close(&format!("add_rmsnorm {what}"), &normed.to_f32_vec().unwrap(), &want, tol(dtype));
            }
        }
    }

    fn to_f64(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&v| v as f64).collect()
    }

    #[test]
    fn add_rmsnorm_fuses_the_residual_add_in_and_out_of_place() {
        let mut rng = Rng::new(24);
        for backend in test_backends() {
            for dtype in DType::FLOATS {
                for (rows, n) in [(1, 1), (5, 3), (3, 33), (4, 256), (2, 257), (3, 1000), (2, 4099)] {
                    let x = round_to(&rng.vec(rows * n, -3.0, 3.0), dtype);
                    let r = round_to(&rng.vec(rows * n, -3.0, 3.0), dtype);
                    let w = round_to(&rng.vec(n, -1.0, 1.0), DType::BF16);
                    let s = round_to(&x.iter().zip(&r).map(|(a, b)| a + b).collect::<Vec<_>>(), dtype);
                    let want = reference::rmsnorm(&s, &w, 1e-5, RmsNormVariant::Standard);
                    let what = format!("{dtype} [{rows}, {n}] on {}", backend.name());
                    let xt = tensor(&backend, &x, &[rows, n], dtype);
                    let rt = tensor(&backend, &r, &[rows, n], dtype);
                    let wt = tensor(&backend, &w, &[n], DType::BF16);

                    let (sum, normed) = add_rmsnorm(&xt, &rt, &wt, 1e-5, RmsNormVariant::Standard).unwrap();
                    assert_close(&format!("sum {what}"), &sum.to_f32_vec().unwrap(), &to_f64(&s), tol(dtype));
                    assert_close(&format!("normed {what}"), &normed.to_f32_vec().unwrap(), &want, tol(dtype));
                    assert_eq!(rt.to_f32_vec().unwrap(), r, "out of place leaves the residual alone ({what})");

                    // In place: the residual stream becomes the sum.
                    let out = Tensor::zeros(&backend, &[rows, n], dtype).unwrap();
                    add_rmsnorm_into(&xt, &rt, &wt, 1e-5, RmsNormVariant::Standard, &rt, &out).unwrap();
                    assert_close(&format!("in-place sum {what}"), &rt.to_f32_vec().unwrap(), &to_f64(&s), tol(dtype));
                    assert_close(&format!("in-place normed {what}"), &out.to_f32_vec().unwrap(), &want, tol(dtype));
                    assert_eq!(xt.to_f32_vec().unwrap(), x, "x is only read ({what})");
                }
            }
        }
    }

    /// Every norm through both row reductions (subgroup shuffles where the adapter has them, and
    /// workgroup memory), on shapes that take each path of the kernel: one chunk per thread with 1 to 4
    /// units (the row in registers), many rows per workgroup, rows of at most a subgroup's threads, rows
    /// spread over several subgroups, and streamed rows of 2 and more chunks (the last kept in registers).
    #[test]
    fn both_row_reductions_cover_every_kernel_path() {
        let mut rng = Rng::new(27);
        let shapes = [
            (37, 64, DType::F32),    // 4 threads a row, 64 rows a workgroup
            (9, 40, DType::BF16),    // 5 vec4 units: 2 threads of 3 units
            (5, 33, DType::F16),     // word units, odd 16-bit rows (two launches)
            (3, 4096, DType::F32),   // 256 threads of 4 units
            (2, 4104, DType::F16),   // 513 vec4 units: 256 threads of up to 3
            (2, 1000, DType::BF16),  // 125 vec4 units: 32 threads of 4
            (2, 16388, DType::F32),  // 4097 units: streamed, 2 chunks (the second nearly empty)
            (2, 70001, DType::BF16), // word units, odd 16-bit rows, streamed in many chunks
        ];
        for backend in test_backends() {
            let Backend::Gpu(_) = backend else { continue };
            for (rows, n, dtype) in shapes {
                let x = round_to(&rng.vec(rows * n, -3.0, 3.0), dtype);
                let r = round_to(&rng.vec(rows * n, -3.0, 3.0), dtype);
                let w = round_to(&rng.vec(n, 0.5, 1.5), DType::F32);
                let b = round_to(&rng.vec(n, -1.0, 1.0), DType::F32);
                let xt = tensor(&backend, &x, &[rows, n], dtype);
                let (wt, bt) = (tensor(&backend, &w, &[n], DType::F32), tensor(&backend, &b, &[n], DType::F32));
                let s = round_to(&x.iter().zip(&r).map(|(a, b)| a + b).collect::<Vec<_>>(), dtype);
                for reduce in [RowReduce::Auto, RowReduce::Workgroup] {
                    let what = format!("{dtype} [{rows}, {n}] {reduce:?}");
                    let args = |kind, bias, residual, sum, out| NormArgs {
                        op: "test",
                        kind,
                        x: &xt,
                        residual,
                        weight: &wt,
                        bias,
                        eps: 1e-5,
                        sum,
                        out,
                        reduce,
                    };
                    let out = Tensor::zeros(&backend, &[rows, n], dtype).unwrap();
                    for variant in [RmsNormVariant::Standard, RmsNormVariant::Gemma] {
                        norm_into(args(Kind::Rms(variant), None, None, None, &out)).unwrap();
                        let want = reference::rmsnorm(&x, &w, 1e-5, variant);
                        assert_close(
                            &format!("rmsnorm {variant:?} {what}"),
                            &out.to_f32_vec().unwrap(),
                            &want,
                            tol(dtype),
                        );
                    }
                    for bias in [None, Some(&bt)] {
                        norm_into(args(Kind::Layer, bias, None, None, &out)).unwrap();
                        let want = reference::layernorm(&x, &w, bias.map(|_| b.as_slice()), 1e-5);
                        let got = out.to_f32_vec().unwrap();
                        assert_close(&format!("layernorm bias={} {what}", bias.is_some()), &got, &want, tol(dtype));
                    }
                    // add_rmsnorm in place: the residual stream becomes the sum.
                    let rt = tensor(&backend, &r, &[rows, n], dtype);
                    norm_into(args(Kind::Rms(RmsNormVariant::Standard), None, Some(&rt), Some(&rt), &out)).unwrap();
                    let want = reference::rmsnorm(&s, &w, 1e-5, RmsNormVariant::Standard);
                    assert_close(
                        &format!("add_rmsnorm sum {what}"),
                        &rt.to_f32_vec().unwrap(),
                        &to_f64(&s),
                        tol(dtype),
                    );
                    assert_close(&format!("add_rmsnorm {what}"), &out.to_f32_vec().unwrap(), &want, tol(dtype));
                }
            }
        }
    }

    #[test]
    fn rmsnorm_of_huge_and_tiny_rows_stays_finite() {
        let rows: Vec<Vec<f32>> = vec![
            vec![1e30, -3e30, 2.5e30, 1e30, -1e30, 7e29, 1e30],
            vec![3e38, -3e38, 1e38, 2e38, 0.0, 1.0, -1.0],
            vec![1e-30, -2e-30, 3e-30, 1e-30, 0.0, 1e-31, -5e-30],
            vec![0.0; 7],
            vec![1e30, 1e-30, 0.0, -1.0, 1.0, 1e20, -1e25],
        ];
        let n = 7;
        let x: Vec<f32> = rows.concat();
        let w: Vec<f32> = (0..n).map(|i| 0.5 + i as f32 * 0.25).collect();
        for backend in test_backends() {
            for eps in [1e-6f32, 0.0] {
                let xt = Tensor::from_slice(&backend, &x, &[rows.len(), n]).unwrap();
                let wt = Tensor::from_slice(&backend, &w, &[n]).unwrap();
                let got = rmsnorm(&xt, &wt, eps, RmsNormVariant::Standard).unwrap().to_f32_vec().unwrap();
                assert!(got.iter().all(|v| v.is_finite()), "non-finite output {got:?} on {}", backend.name());
                let mut want = reference::rmsnorm(&x, &w, eps, RmsNormVariant::Standard);
                // The reference of the zero row with eps = 0 is 0/0; the kernels define it as 0.
                want.iter_mut().for_each(|v| *v = if v.is_nan() { 0.0 } else { *v });
                let what = format!("rmsnorm extremes eps={eps} on {}", backend.name());
                assert_close(&what, &got, &want, Tolerance { atol: 1e-6, rtol: 1e-5 });
            }
        }
    }

    #[test]
    fn layernorm_is_exact_on_constant_rows_and_stable_far_from_zero() {
        let mut rng = Rng::new(25);
        let n = 300;
        let mut x = Vec::new();
        x.extend(std::iter::repeat_n(5.0f32, n)); // constant
        x.extend(std::iter::repeat_n(-1e30f32, n)); // constant, huge
        x.extend(rng.vec(n, -1.0, 1.0).iter().map(|v| 1e4 + v)); // E[x^2] - E[x]^2 would cancel
        x.extend(rng.vec(n, -1e30, 1e30)); // huge
        x.extend(rng.vec(n, -1e-3, 1e-3)); // small against eps
        x.push(1e6); // the first element (the shift) far from the rest
        x.extend(rng.vec(n - 1, -1.0, 1.0));
        // Near f32's largest, both signs: v - shift reaches 2.4e38, and a sum of two such overflows.
        x.extend(rng.vec(n, -1.0, 1.0).iter().map(|v| v.signum() * (1e38 + 2e37 * v.abs())));
        let rows = x.len() / n;
        let w = rng.vec(n, 0.5, 1.5);
        let b = rng.vec(n, -1.0, 1.0);
        for backend in test_backends() {
            let xt = Tensor::from_slice(&backend, &x, &[rows, n]).unwrap();
            let wt = Tensor::from_slice(&backend, &w, &[n]).unwrap();
            let bt = Tensor::from_slice(&backend, &b, &[n]).unwrap();
            for bias in [None, Some(&bt)] {
                let got = layernorm(&xt, &wt, bias, 1e-5).unwrap().to_f32_vec().unwrap();
                let want = reference::layernorm(&x, &w, bias.map(|_| b.as_slice()), 1e-5);
                let what = format!("layernorm bias={} on {}", bias.is_some(), backend.name());
                assert_close(&what, &got, &want, Tolerance { atol: 2e-5, rtol: 2e-5 });
                // Constant rows give exactly the bias (or 0).
                for (i, &v) in got[..2 * n].iter().enumerate() {
                    assert_eq!(v, bias.map_or(0.0, |_| b[i % n]), "{what}: constant row element {i}");
                }
            }
        }
    }

    #[test]
    fn higher_dimensional_inputs_norm_their_last_dimension() {
        let mut rng = Rng::new(26);
        for backend in test_backends() {
            let (shape, n) = ([2usize, 3, 5, 17], 17);
            let x = rng.vec(2 * 3 * 5 * 17, -2.0, 2.0);
            let w = rng.vec(n, -1.0, 1.0);
            let got = rmsnorm(
                &Tensor::from_slice(&backend, &x, &shape).unwrap(),
                &Tensor::from_slice(&backend, &w, &[n]).unwrap(),
                1e-5,
                RmsNormVariant::Standard,
            )
            .unwrap();
            assert_eq!(got.shape(), shape);
            let want = reference::rmsnorm(&x, &w, 1e-5, RmsNormVariant::Standard);
            assert_close("rmsnorm 4-d", &got.to_f32_vec().unwrap(), &want, tol(DType::F32));
        }
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        use RmsNormVariant::Standard;
        for backend in test_backends() {
            let z = |shape: &[usize], dtype| Tensor::zeros(&backend, shape, dtype).unwrap();
            let x = z(&[2, 8], DType::F32);
            let w = z(&[8], DType::F32);
            assert!(matches!(
                rmsnorm(&x, &z(&[7], DType::F32), 1e-5, Standard),
                Err(KernelError::Shape { op: "rmsnorm", .. })
            ));
            assert!(matches!(rmsnorm(&x, &z(&[2, 8], DType::F32), 1e-5, Standard), Err(KernelError::Shape { .. })));
            assert!(matches!(rmsnorm(&z(&[2, 8], DType::U32), &w, 1e-5, Standard), Err(KernelError::DType { .. })));
            assert!(matches!(rmsnorm(&x, &z(&[8], DType::I32), 1e-5, Standard), Err(KernelError::DType { .. })));
            assert!(matches!(rmsnorm(&z(&[0, 8], DType::F32), &w, 1e-5, Standard), Err(KernelError::Empty { .. })));
            for eps in [f32::NAN, -1e-5, f32::INFINITY] {
                assert!(matches!(rmsnorm(&x, &w, eps, Standard), Err(KernelError::Argument { name: "eps", .. })));
            }
            assert!(matches!(rmsnorm_into(&x, &w, 1e-5, Standard, &x), Err(KernelError::Argument { name: "out", .. })));
            assert!(matches!(
                rmsnorm_into(&x, &w, 1e-5, Standard, &z(&[2, 8], DType::F16)),
                Err(KernelError::DType { .. })
            ));
            let r = z(&[2, 8], DType::F32);
            let (s, y) = (z(&[2, 8], DType::F32), z(&[2, 8], DType::F32));
            assert!(matches!(
                add_rmsnorm(&x, &z(&[2, 7], DType::F32), &w, 1e-5, Standard),
                Err(KernelError::Shape { .. })
            ));
            assert!(matches!(
                add_rmsnorm(&x, &z(&[2, 8], DType::BF16), &w, 1e-5, Standard),
                Err(KernelError::DType { .. })
            ));
            assert!(matches!(
                add_rmsnorm(&x, &x, &w, 1e-5, Standard),
                Err(KernelError::Argument { name: "residual", .. })
            ));
            assert!(matches!(
                add_rmsnorm_into(&x, &r, &w, 1e-5, Standard, &x, &y),
                Err(KernelError::Argument { name: "sum", .. })
            ));
            assert!(matches!(
                add_rmsnorm_into(&x, &r, &w, 1e-5, Standard, &s, &r),
                Err(KernelError::Argument { name: "out", .. })
            ));
            assert!(matches!(
                add_rmsnorm_into(&x, &r, &w, 1e-5, Standard, &s, &s),
                Err(KernelError::Argument { name: "out", .. })
            ));
            assert!(matches!(layernorm(&x, &w, Some(&z(&[8], DType::BF16)), 1e-5), Err(KernelError::DType { .. })));
            assert!(matches!(layernorm(&x, &w, Some(&z(&[9], DType::F32)), 1e-5), Err(KernelError::Shape { .. })));
        }
    }
}

#[cfg(test)]
mod layout_tests {
    #[test]
    fn params_match_the_wgsl_struct() {
        let size = crate::testing::wgsl_struct_size(&super::NORM, "Params");
        assert_eq!(size as usize, std::mem::size_of::<super::Params>());
    }
}
