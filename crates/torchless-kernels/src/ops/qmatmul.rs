//! Products with quantized weights ([`QuantTensor`], ggml block formats), dequantized in registers: the
//! weights stay quantized in memory on every backend.
//!
//! - [`gemv_q`] / [`gemv_q_into`]: decode, `y [b, rows] = x [b, cols] · Wᵀ` for 1 ≤ b ≤ 8 rows of f32
//!   activations, with the dense GEMV's epilogue ([`GemvEpilogue`]: a bias `[rows]` of any float dtype
//!   and an f32 residual shaped like the output, which may be the output itself, then a soft cap).
//! - [`GemvInput`]: x prepared once (optionally RMS-normalised in the same pass) for GEMVs that share it:
//!   [`gemv_q_input`], [`gemv_q_multi`] (Q, K and V in one GPU launch) and [`gemv_q_gated`] (gate and up
//!   with the SwiGLU/GeGLU epilogue in one launch).
//! - [`gemv_q_qkv_rope`]: Q, K and V in one launch that also rotates Q and K (RoPE) and writes K and V
//!   into the KV cache (kernels/gemv_rope.wgsl).
//! - [`gemm_q`]: prefill, `x [m, cols] · Wᵀ` for any m.
//! - [`embedding_q`]: rows of a quantized table gathered by u32 ids and dequantized to f32. An id out of
//!   range is a [`KernelError::Argument`] on the CPU and a row of zeros on the GPU (which does not read
//!   the ids back), as in the dense `embedding`.
//!
//! Shapes: `x` is any f32 tensor whose last dimension is `cols`; the output has its shape with the last
//! dimension replaced by `rows`.
//!
//! GPU (kernels/qgemv*.wgsl, kernels/qmatmul.wgsl): see the kernel files. The GEMV reads x as two signed
//! bytes per value (per 32 values, x ≈ d·(256·hi + lo)/256, within d/256 of x with d = max|x|/127) and
//! multiplies with packed 8-bit integer dot products; its results differ from the CPU's f32 ones by that
//! rounding (tests use activations the byte form holds exactly, and a bound for arbitrary ones). CPU:
//! rayon over weight rows, each row's blocks dequantized in registers and dotted with f32 x (GEMV,
//! `quant_dot`); panels of 32 weight rows decoded into a scratch buffer and multiplied with the
//! `gemm` crate (GEMM).
//!
//! The GPU GEMM runs on tensor cores where the adapter offers 16×16×16 f16 cooperative matrices and
//! 32-lane subgroups (kernels/qmatmul_coop.wgsl on kernels/coop16.wgsl): x is rounded to f16 once and the
//! weights are dequantized to f16 as they are staged, with f32 accumulation, so its results carry f16
//! input rounding (as the dense cooperative GEMM's do); elsewhere an f32 tiled kernel.

use std::sync::Mutex;

use rayon::prelude::*;

use super::gemv::{GatedAct, GemvEpilogue, InputNorm, MAX_BATCH};
use super::norm::RmsNormVariant;
use super::rope::{KvWrite, RopeTable};
use super::{common_backend, require_dtype};
use crate::backend::Backend;
use crate::cpu::{self, Strided};
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::gpu::GpuContext;
use crate::quant::{BlockView, QuantTensor, QuantType};
use crate::quant_dot;
use crate::tensor::Tensor;

/// `x · Wᵀ (+ bias) (+ residual)` into a new f32 tensor shaped like `x` with last dimension `w.rows()`.
pub fn gemv_q(w: &QuantTensor, x: &Tensor, epilogue: GemvEpilogue<'_>) -> Result<Tensor> {
    gemv_q_input(w, &GemvInput::new(x, None)?, epilogue)
}

/// [`gemv_q`] into `out` (f32, last dimension `w.rows()`, `b·rows` elements). `out` may be the residual
/// (`y += x·Wᵀ`) but no other input.
pub fn gemv_q_into(w: &QuantTensor, x: &Tensor, epilogue: GemvEpilogue<'_>, out: &Tensor) -> Result<()> {
    gemv_q_into_with(w, x, epilogue, out, QGemvKernel::Auto)
}

/// [`gemv_q`] of a prepared input (see [`GemvInput`]).
pub fn gemv_q_input(w: &QuantTensor, x: &GemvInput, epilogue: GemvEpilogue<'_>) -> Result<Tensor> {
    let out = x.new_output(w.rows())?;
    gemv_q_tuned(w, x, epilogue, &out, QGemvKernel::Auto, None)?;
    Ok(out)
}

/// [`gemv_q_into`] of a prepared input.
pub fn gemv_q_input_into(w: &QuantTensor, x: &GemvInput, epilogue: GemvEpilogue<'_>, out: &Tensor) -> Result<()> {
    gemv_q_tuned(w, x, epilogue, out, QGemvKernel::Auto, None)
}

/// [`gemv_q_input_into`] whose output is then the input of another quantized GEMV (`then`): returns that
/// input. On the GPU, with one row of x, this dispatch also writes it quantized for `then.next` (and its
/// norm's sums), so the next GEMV needs no launch of its own to quantize it.
pub fn gemv_q_input_into_then(
    w: &QuantTensor,
    x: &GemvInput,
    epilogue: GemvEpilogue<'_>,
    out: &Tensor,
    then: NextInput<'_>,
) -> Result<GemvInput> {
    then.check(out, w.rows())?;
    match (check_part(w, x, epilogue, out)?, &x.data) {
        (Backend::Gpu(ctx), InputData::Gpu { .. }) => {
            x.run_gpu_then(&ctx, &[gpu::Part { w, bias: epilogue.bias, out }], epilogue, None, then)
        }
        _ => {
            gemv_q_tuned(w, x, epilogue, out, QGemvKernel::Auto, None)?;
            GemvInput::new(out, then.norm)
        }
    }
}

/// Which GPU kernel [`gemv_q_into_with`] runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QGemvKernel {
    /// Subgroup reduction where the adapter has subgroups, else the workgroup-memory tree.
    #[default]
    Auto,
    /// `subgroupAdd`; a [`KernelError::MissingFeature`] on adapters without subgroups.
    Subgroup,
    /// Workgroup-memory tree; runs everywhere.
    Workgroup,
}

/// [`gemv_q_into`] with a forced GPU kernel (ignored on the CPU).
pub fn gemv_q_into_with(
    w: &QuantTensor,
    x: &Tensor,
    epilogue: GemvEpilogue<'_>,
    out: &Tensor,
    kernel: QGemvKernel,
) -> Result<()> {
    gemv_q_tuned(w, &GemvInput::new(x, None)?, epilogue, out, kernel, None)
}

/// The activations of quantized GEMVs, `x [.., cols]` (f32, 1 to 8 rows, `cols` a multiple of 32),
/// optionally RMS-normalised first, in the form the backend's GEMV reads: f32 on the CPU; on the GPU two
/// signed bytes per value with per-32 scales and per-16 sums (kernels/qgemv_x.wgsl), which the GEMV
/// multiplies with integer dot products, stored in the order its threads read them for the weights' format
/// (prepared when a GEMV first needs that order, so x must not be written between `new` and the GEMVs).
/// GEMVs that share their input (Q, K and V; gate and up) prepare it once.
pub struct GemvInput {
    /// The shape of x without its last dimension.
    lead: Vec<usize>,
    b: usize,
    cols: usize,
    data: InputData,
}

enum InputData {
    /// x (normalised where asked) as f32 `[b, cols]`.
    Cpu(Tensor),
    Gpu {
        x: Tensor,
        norm: Option<(Tensor, f32, RmsNormVariant)>,
        /// x quantized, per layout prepared so far (see [`gpu::x_layout`]).
        prepared: Mutex<Vec<Prepared>>,
    },
}

/// x quantized for the GPU GEMV in one layout.
#[derive(Clone)]
struct Prepared {
    layout: u32,
    xq: Tensor,
    xs: Tensor,
    /// Written by the GEMV that produced x ([`gemv_q_input_into_then`]): x·w quantized, the norm's 1/rms
    /// left to the GEMV that reads it.
    deferred_norm: bool,
}

/// Where a kernel that produces a quantized GEMV's x ([`GemvInput::produced_for`]) writes it quantized:
/// the hi and lo bytes (`xq`, u32 words) and the per-group (d / 256, Σ) pairs (`xs`) of kernels/qgemv_x.wgsl,
/// in that GEMV's x `layout` (kernels/xquant.wgsl `position_in`) for its `units` per row.
pub struct QuantizedX<'a> {
    pub xq: &'a Tensor,
    pub xs: &'a Tensor,
    pub layout: u32,
    pub units: u32,
}

/// What a GEMV's output is for when it is the input of the next quantized GEMV (one row of x): normalised
/// by `norm` where given, then multiplied by `next` (weights of `next.cols()` = the output's length).
/// On the GPU the GEMV then also writes it quantized for `next`, which saves that GEMV the launch that
/// quantizes its x.
#[derive(Clone, Copy)]
pub struct NextInput<'a> {
    pub norm: Option<InputNorm<'a>>,
    pub next: &'a QuantTensor,
}

impl NextInput<'_> {
    /// Checks that `next` and the norm take an output `out` of `rows` values, on the same backend.
    fn check(&self, out: &Tensor, rows: usize) -> Result<()> {
        let op = "gemv_q";
        if self.next.cols() != rows {
            return Err(KernelError::Shape {
                op,
                detail: format!(
                    "the next GEMV's weights [{}, {}] do not take this GEMV's {rows} outputs",
                    self.next.rows(),
                    self.next.cols()
                ),
            });
        }
        if let Some(n) = self.norm {
            super::gemv::check_input_norm(op, n, rows)?;
            common_backend(op, &[out, n.weight, self.next.data()])?;
        }
        Ok(())
    }
}

impl GemvInput {
    /// Takes `x`, or `rmsnorm(x)` with `norm` (the norm costs no dispatch of its own on the GPU).
    pub fn new(x: &Tensor, norm: Option<InputNorm<'_>>) -> Result<GemvInput> {
        let op = "gemv_q";
        require_dtype(op, x, DType::F32)?;
        let (b, cols) = x.rows_cols();
        if b == 0 || b > MAX_BATCH {
            return Err(KernelError::Argument {
                op,
                name: "batch",
                value: b.to_string(),
                reason: format!("x {:?} must have between 1 and {MAX_BATCH} rows", x.shape()),
            });
        }
        if !cols.is_multiple_of(32) {
            return Err(KernelError::Shape {
                op,
                detail: format!("x {:?} has rows of {cols}: quantized weights need a multiple of 32", x.shape()),
            });
        }
        if let Some(n) = norm {
            super::gemv::check_input_norm(op, n, cols)?;
            common_backend(op, &[x, n.weight])?;
        }
        Self::with_prepared(x, norm, b, cols, Vec::new())
    }

    /// The input of the quantized GEMV `next` that another op produces: `produce` writes `x` (f32, 1 to 8
    /// rows of `next.cols()`) and, where it can, also writes it quantized for `next` in the same launch
    /// (on the GPU it gets where, and returns whether it did; on the CPU it gets `None`). An input not
    /// written quantized is quantized when a GEMV first needs it.
    pub fn produced_for(
        x: &Tensor,
        next: &QuantTensor,
        produce: impl FnOnce(Option<QuantizedX<'_>>) -> Result<bool>,
    ) -> Result<GemvInput> {
        let op = "gemv_q";
        let (b, cols) = x.rows_cols();
        if cols != next.cols() {
            return Err(KernelError::Shape {
                op,
                detail: format!("x {:?} does not fit weights [{}, {}]", x.shape(), next.rows(), next.cols()),
            });
        }
        let input = GemvInput::new(x, None)?;
        if !x.is_gpu() {
            produce(None)?;
            return Ok(input);
        }
        let blocks = b * cols / 32;
        let xq = Tensor::uninit(&x.backend(), op, &[blocks * 16], DType::U32)?;
        let xs = Tensor::uninit(&x.backend(), op, &[blocks * 4], DType::F32)?;
        let layout = gpu::x_layout(next.quant_type());
        let units = super::to_u32(op, "units per row", gpu::units(next))?;
        if !produce(Some(QuantizedX { xq: &xq, xs: &xs, layout, units }))? {
            return Ok(input);
        }
        Self::with_prepared(x, None, b, cols, vec![Prepared { layout, xq, xs, deferred_norm: false }])
    }

    /// A GPU input whose quantized forms `prepared` were already written (or none), or a CPU input.
    fn with_prepared(
        x: &Tensor,
        norm: Option<InputNorm<'_>>,
        b: usize,
        cols: usize,
        prepared: Vec<Prepared>,
    ) -> Result<GemvInput> {
        let mut lead = x.shape().to_vec();
        lead.pop();
        let data = match x.backend() {
            Backend::Cpu => InputData::Cpu(match norm {
                Some(n) => super::norm::rmsnorm(x, n.weight, n.eps, n.variant)?,
                None => x.clone(),
            }),
            Backend::Gpu(_) => InputData::Gpu {
                x: x.clone(),
                norm: norm.map(|n| (n.weight.clone(), n.eps, n.variant)),
                prepared: Mutex::new(prepared),
            },
        };
        Ok(GemvInput { lead, b, cols, data })
    }

    fn backend(&self) -> Backend {
        match &self.data {
            InputData::Cpu(x) | InputData::Gpu { x, .. } => x.backend(),
        }
    }

    /// The GPU form of x for weights `w` if it was already written, else `None`.
    fn prepared_for(&self, w: &QuantTensor) -> Option<Prepared> {
        let InputData::Gpu { prepared, .. } = &self.data else { unreachable!("a GPU input") };
        let layout = gpu::x_layout(w.quant_type());
        prepared.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|p| p.layout == layout).cloned()
    }

    /// The GPU form of x for weights `w`, quantized on first use.
    fn prepared(&self, ctx: &GpuContext, w: &QuantTensor) -> Result<Prepared> {
        if let Some(p) = self.prepared_for(w) {
            return Ok(p);
        }
        let InputData::Gpu { x, norm, prepared } = &self.data else { unreachable!("a GPU input") };
        let layout = gpu::x_layout(w.quant_type());
        let norm = norm.as_ref().map(|(weight, eps, variant)| InputNorm { weight, eps: *eps, variant: *variant });
        let (xq, xs) = gpu::quantize_x(ctx, x, self.b, self.cols, norm, layout, gpu::units(w))?;
        let p = Prepared { layout, xq, xs, deferred_norm: false };
        prepared.lock().unwrap_or_else(|p| p.into_inner()).push(p.clone());
        Ok(p)
    }

    /// Whether x is already written quantized for weights `w` (a GEMV of `w` then needs no launch to
    /// quantize it).
    pub fn is_quantized_for(&self, w: &QuantTensor) -> bool {
        matches!(self.data, InputData::Gpu { .. }) && self.prepared_for(w).is_some()
    }

    /// The tensor this input was made from (on the CPU, x after its norm).
    pub fn tensor(&self) -> &Tensor {
        match &self.data {
            InputData::Cpu(x) | InputData::Gpu { x, .. } => x,
        }
    }

    /// The norm of x, if any.
    fn norm(&self) -> Option<InputNorm<'_>> {
        match &self.data {
            InputData::Gpu { norm: Some((weight, eps, variant)), .. } => {
                Some(InputNorm { weight, eps: *eps, variant: *variant })
            }
            _ => None,
        }
    }

    /// A new f32 output shaped like x with last dimension `rows`.
    fn new_output(&self, rows: usize) -> Result<Tensor> {
        let mut shape = self.lead.clone();
        shape.push(rows);
        Tensor::uninit(&self.backend(), "gemv_q", &shape, DType::F32)
    }

    /// One GPU dispatch of checked parts (see [`gpu::gemv`]).
    fn run_gpu(&self, parts: &[gpu::Part<'_>], gated: Option<GatedAct>, rope: Option<gpu::RopeOut<'_>>) -> Result<()> {
        let Backend::Gpu(ctx) = self.backend() else { unreachable!("run_gpu takes a GPU input") };
        self.dispatch(&ctx, parts, GemvEpilogue::default(), gated, rope, QGemvKernel::Auto, None, None)
    }

    /// One GPU dispatch of checked parts (one matrix, or gate and up; `then` checked) whose output
    /// `parts[0].out` is then the input of `then.next`: written quantized for it by the same dispatch where
    /// the launch shape allows ([`gpu::emit_shape`]), else quantized when that GEMV first needs it.
    fn run_gpu_then(
        &self,
        ctx: &GpuContext,
        parts: &[gpu::Part<'_>],
        epilogue: GemvEpilogue<'_>,
        gated: Option<GatedAct>,
        then: NextInput<'_>,
    ) -> Result<GemvInput> {
        let (w, out) = (parts[0].w, parts[0].out);
        let tune = gpu::choose_tune(ctx, w, self.b, None)?;
        let up_bias = parts.get(1).is_some_and(|p| p.bias.is_some());
        let emits =
            gpu::emit_shape(ctx, tune, self.b, w, gated.is_some()).is_some() && !(then.norm.is_some() && up_bias);
        // The shape chosen here is the dispatch's (choose_tune keeps a chosen shape as it is).
        if !emits {
            self.dispatch(ctx, parts, epilogue, gated, None, QGemvKernel::Auto, Some(tune), None)?;
            return GemvInput::new(out, then.norm);
        }
        let (xq, xs) = gpu::emit_tensors(out, w.rows())?;
        let (layout, units) = (gpu::x_layout(then.next.quant_type()), gpu::units(then.next));
        let emit =
            gpu::Emit { xq: &xq, xs: &xs, norm: then.norm, layout, units: super::to_u32("gemv_q", "units", units)? };
        self.dispatch(ctx, parts, epilogue, gated, None, QGemvKernel::Auto, Some(tune), Some(emit))?;
        let prepared = Prepared { layout, xq, xs, deferred_norm: then.norm.is_some() };
        GemvInput::with_prepared(out, then.norm, 1, w.rows(), vec![prepared])
    }

    /// One GPU dispatch of checked parts with the launch shape of [`gpu::choose_tune`] (`forced` or
    /// automatic): one row of x is quantized by the GEMV's workgroups where the shape has teams, else
    /// first in a launch of its own (once per layout, [`Self::prepared`]).
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &self,
        ctx: &GpuContext,
        parts: &[gpu::Part<'_>],
        epilogue: GemvEpilogue<'_>,
        gated: Option<GatedAct>,
        rope: Option<gpu::RopeOut<'_>>,
        kernel: QGemvKernel,
        forced: Option<gpu::Tune>,
        emit: Option<gpu::Emit<'_>>,
    ) -> Result<()> {
        let InputData::Gpu { x, .. } = &self.data else { unreachable!("dispatch takes a GPU input") };
        let w = parts[0].w;
        let tune = gpu::choose_tune(ctx, w, self.b, forced)?;
        let prepared = match self.prepared_for(w) {
            None if tune.teams > 0 && emit.is_none() => None,
            Some(p) => Some(p),
            None => Some(self.prepared(ctx, w)?),
        };
        let operand = match &prepared {
            None => gpu::XOperand::Raw(x, self.norm()),
            Some(p) => gpu::XOperand::Quantized {
                xq: &p.xq,
                xs: &p.xs,
                deferred_norm_eps: self.norm().filter(|_| p.deferred_norm).map(|n| n.eps),
            },
        };
        let (residual, soft_cap) = (epilogue.residual, epilogue.soft_cap);
        gpu::gemv(ctx, parts, operand, self.b, residual, soft_cap, gated, rope, kernel, tune, emit)
    }

    /// The tensors an output must not alias.
    fn tensors(&self) -> Vec<&Tensor> {
        match &self.data {
            InputData::Cpu(x) => vec![x],
            InputData::Gpu { x, norm, .. } => std::iter::once(x).chain(norm.as_ref().map(|n| &n.0)).collect(),
        }
    }
}

/// `x · Wₖᵀ (+ biasₖ)` for weights that share x (Q, K and V), each into a new tensor: one GPU dispatch for up
/// to three matrices of one quantized type and row length (biases, where present, of one dtype), else one
/// GEMV each.
pub fn gemv_q_multi(x: &GemvInput, parts: &[(&QuantTensor, Option<&Tensor>)]) -> Result<Vec<Tensor>> {
    let outs: Vec<Tensor> = parts.iter().map(|(w, _)| x.new_output(w.rows())).collect::<Result<_>>()?;
    let (w0, _) = parts.first().ok_or(KernelError::Empty { op: "gemv_q_multi", what: "parts" })?;
    if let InputData::Cpu(xt) = &x.data {
        // One pass over every matrix's rows.
        for ((w, bias), out) in parts.iter().zip(&outs) {
            check_part(w, x, GemvEpilogue::bias(*bias), out)?;
        }
        let ws: Vec<&QuantTensor> = parts.iter().map(|(w, _)| *w).collect();
        for ((t, (w, bias)), out) in cpu_products(&ws, &cpu::read_f32(xt), x.b).into_iter().zip(parts).zip(&outs) {
            let mut y = by_x_row(t, w.rows(), x.b);
            add_bias(&mut y, *bias, w.rows());
            cpu::write_f32(out, &y);
        }
        return Ok(outs);
    }
    let bias_dts: Vec<DType> = parts.iter().filter_map(|(_, b)| b.map(Tensor::dtype)).collect();
    let fusable = matches!(x.data, InputData::Gpu { .. })
        && parts.len() <= 3
        && parts.iter().all(|(w, _)| w.quant_type() == w0.quant_type() && w.cols() == w0.cols())
        && bias_dts.windows(2).all(|d| d[0] == d[1]);
    if !fusable {
        for ((w, bias), out) in parts.iter().zip(&outs) {
            gemv_q_tuned(w, x, GemvEpilogue::bias(*bias), out, QGemvKernel::Auto, None)?;
        }
        return Ok(outs);
    }
    for ((w, bias), out) in parts.iter().zip(&outs) {
        check_part(w, x, GemvEpilogue::bias(*bias), out)?;
    }
    let gparts: Vec<gpu::Part<'_>> =
        parts.iter().zip(&outs).map(|((w, bias), out)| gpu::Part { w, bias: *bias, out }).collect();
    x.run_gpu(&gparts, None, None)?;
    Ok(outs)
}

/// A decode step's Q, K and V projections (`parts`: the three matrices and their optional biases) with
/// RoPE and the KV-cache write fused in: returns Q rotated, f32 `[b, rows of Wq]`, and stores K rotated
/// and V into rows `pos..pos + b` of the caches. What [`gemv_q_multi`] followed by
/// [`rope_qk_store_kv`](super::rope::rope_qk_store_kv) do, in one GPU dispatch where the three matrices share a type and row length and
/// every dim of a head rotates; through those two ops otherwise.
pub fn gemv_q_qkv_rope(x: &GemvInput, parts: [(&QuantTensor, Option<&Tensor>); 3], kv: KvWrite<'_>) -> Result<Tensor> {
    const OP: &str = "gemv_q_qkv_rope";
    let [(wq, _), (wk, _), (wv, _)] = parts;
    let hd = kv.check(OP, wq.rows(), wk.rows(), wv.rows(), x.b)?;
    let bias_dts: Vec<DType> = parts.iter().filter_map(|(_, b)| b.map(Tensor::dtype)).collect();
    let fusable = matches!(x.data, InputData::Gpu { .. })
        && parts.iter().all(|(w, _)| w.quant_type() == wq.quant_type() && w.cols() == wq.cols())
        && bias_dts.windows(2).all(|d| d[0] == d[1])
        && kv.fusable();
    if !fusable {
        let mut outs = gemv_q_multi(x, &parts)?.into_iter();
        let mut next = || outs.next().expect("one output per part");
        let (q, k, v) = (next(), next(), next());
        kv.rope_and_store(&q, &k, &v, x.b, hd)?;
        return Ok(q);
    }
    let q = x.new_output(wq.rows())?;
    check_part(wq, x, GemvEpilogue { bias: parts[0].1, ..GemvEpilogue::default() }, &q)?;
    for (w, bias) in &parts[1..] {
        check_operands(w, x, GemvEpilogue { bias: *bias, ..GemvEpilogue::default() })?;
    }
    let mut inputs = x.tensors();
    inputs.extend([&q, wq.data(), wk.data(), wv.data()]);
    inputs.extend(parts.iter().filter_map(|(_, b)| *b));
    kv.check_distinct(OP, &inputs)?;
    let gparts = [
        gpu::Part { w: wq, bias: parts[0].1, out: &q },
        gpu::Part { w: wk, bias: parts[1].1, out: kv.k_cache },
        gpu::Part { w: wv, bias: parts[2].1, out: kv.v_cache },
    ];
    x.run_gpu(&gparts, None, Some(gpu::RopeOut { table: kv.table, pos: kv.pos, cache: kv.k_cache.dtype() }))?;
    Ok(q)
}

/// `act(x·Wgateᵀ) ⊙ (x·Wupᵀ)` (the first half of a SwiGLU or GeGLU MLP) into a new tensor: on the GPU one
/// dispatch that reads both matrices when they share a type and shape, else two GEMVs and the gated product.
pub fn gemv_q_gated(x: &GemvInput, gate: &QuantTensor, up: &QuantTensor, act: GatedAct) -> Result<Tensor> {
    if let InputData::Cpu(xt) = &x.data
        && gate.rows() == up.rows()
    {
        // Both matrices in one pass, the activation applied as the products are written.
        let out = x.new_output(gate.rows())?;
        check_part(gate, x, GemvEpilogue::default(), &out)?;
        check_part(up, x, GemvEpilogue::default(), &out)?;
        let mut t = cpu_products(&[gate, up], &cpu::read_f32(xt), x.b).into_iter();
        let mut next = || by_x_row(t.next().expect("two matrices"), gate.rows(), x.b);
        let (g, u) = (next(), next());
        let y: Vec<f32> = g.iter().zip(&u).map(|(&g, &u)| act.apply(g) * u).collect();
        cpu::write_f32(&out, &y);
        return Ok(out);
    }
    let fusable = matches!(x.data, InputData::Gpu { .. })
        && gate.quant_type() == up.quant_type()
        && (gate.rows(), gate.cols()) == (up.rows(), up.cols());
    if !fusable {
        let (g, u) = (gemv_q_input(gate, x, GemvEpilogue::default())?, gemv_q_input(up, x, GemvEpilogue::default())?);
        let op = match act {
            GatedAct::Silu => super::elementwise::Binary::SwiGlu,
            GatedAct::GeluTanh => super::elementwise::Binary::GeGlu,
        };
        return super::elementwise::binary(&g, &u, op);
    }
    let out = x.new_output(gate.rows())?;
    check_part(gate, x, GemvEpilogue::default(), &out)?;
    check_part(up, x, GemvEpilogue::default(), &out)?;
    x.run_gpu(
        &[gpu::Part { w: gate, bias: None, out: &out }, gpu::Part { w: up, bias: None, out: &out }],
        Some(act),
        None,
    )?;
    Ok(out)
}

/// [`gemv_q_gated`] whose output is then the input of another quantized GEMV (`then`, usually the down
/// projection): returns that input (its tensor: [`GemvInput::tensor`]), on the GPU written quantized for
/// `then.next` by the same dispatch where it can (see [`gemv_q_input_into_then`]).
pub fn gemv_q_gated_then(
    x: &GemvInput,
    gate: &QuantTensor,
    up: &QuantTensor,
    act: GatedAct,
    then: NextInput<'_>,
) -> Result<GemvInput> {
    let fusable = matches!(x.data, InputData::Gpu { .. })
        && gate.quant_type() == up.quant_type()
        && (gate.rows(), gate.cols()) == (up.rows(), up.cols());
    let ctx = match x.backend() {
        Backend::Gpu(ctx) if fusable => ctx,
        _ => {
            let out = gemv_q_gated(x, gate, up, act)?;
            then.check(&out, gate.rows())?;
            return GemvInput::new(&out, then.norm);
        }
    };
    let out = x.new_output(gate.rows())?;
    then.check(&out, gate.rows())?;
    check_part(gate, x, GemvEpilogue::default(), &out)?;
    check_part(up, x, GemvEpilogue::default(), &out)?;
    let parts = [gpu::Part { w: gate, bias: None, out: &out }, gpu::Part { w: up, bias: None, out: &out }];
    x.run_gpu_then(&ctx, &parts, GemvEpilogue::default(), Some(act), then)
}

/// [`gemv_q_into_with`] of a prepared input with a forced launch shape (tests).
fn gemv_q_tuned(
    w: &QuantTensor,
    x: &GemvInput,
    epilogue: GemvEpilogue<'_>,
    out: &Tensor,
    kernel: QGemvKernel,
    tune: Option<gpu::Tune>,
) -> Result<()> {
    match (check_part(w, x, epilogue, out)?, &x.data) {
        (Backend::Cpu, InputData::Cpu(xv)) => {
            cpu_gemv(w, xv, x.b, epilogue, out);
            Ok(())
        }
        (Backend::Gpu(ctx), InputData::Gpu { .. }) => {
            x.dispatch(&ctx, &[gpu::Part { w, bias: epilogue.bias, out }], epilogue, None, None, kernel, tune, None)
        }
        _ => unreachable!("check_part checked that x and the weights share a backend"),
    }
}

/// Checks one weight matrix of a GEMV against its input, epilogue and output; returns their backend.
fn check_part(w: &QuantTensor, x: &GemvInput, epilogue: GemvEpilogue<'_>, out: &Tensor) -> Result<Backend> {
    let op = "gemv_q";
    epilogue.check_soft_cap(op)?;
    check_operands(w, x, epilogue)?;
    check_out(op, "out", out, x.b, w.rows())?;
    let mut inputs = x.tensors();
    inputs.push(w.data());
    inputs.extend(epilogue.bias);
    if inputs.iter().any(|t| out.same_storage(t)) {
        return Err(KernelError::Argument {
            op,
            name: "out",
            value: "an input".into(),
            reason: "the output must not share storage with x, the weights or the bias".into(),
        });
    }
    let mut all = inputs.clone();
    all.push(out);
    all.extend(epilogue.residual);
    common_backend(op, &all)
}

/// The shapes of w, x, the bias and the residual of one GEMV part.
fn check_operands(w: &QuantTensor, x: &GemvInput, epilogue: GemvEpilogue<'_>) -> Result<()> {
    let op = "gemv_q";
    let b = x.b;
    if x.cols != w.cols() {
        return Err(KernelError::Shape {
            op,
            detail: format!(
                "inner dimensions differ: w [{}, {}] ({}) has {} columns, x has rows of {}",
                w.rows(),
                w.cols(),
                w.quant_type(),
                w.cols(),
                x.cols
            ),
        });
    }
    if let Some(bias) = epilogue.bias {
        super::require_float(op, bias)?;
        if bias.numel() != w.rows() {
            return Err(KernelError::Shape {
                op,
                detail: format!("bias {:?} must have {} elements (the rows of w)", bias.shape(), w.rows()),
            });
        }
    }
    if let Some(r) = epilogue.residual {
        check_out(op, "residual", r, b, w.rows())?;
    }
    Ok(())
}

/// `x · Wᵀ` for `x [.., cols]` (any number of rows) into a new f32 tensor `[.., rows]`.
pub fn gemm_q(x: &Tensor, w: &QuantTensor) -> Result<Tensor> {
    let op = "gemm_q";
    require_dtype(op, x, DType::F32)?;
    let (m, cols) = x.rows_cols();
    check_cols(op, w, cols, x)?;
    if m == 0 {
        return Err(KernelError::Empty { op, what: "x" });
    }
    let out = Tensor::uninit(&x.backend(), op, &out_shape(x, w.rows()), DType::F32)?;
    match common_backend(op, &[x, w.data()])? {
        Backend::Cpu => cpu_gemm(x, w, m, &out),
        Backend::Gpu(ctx) => gpu::gemm(&ctx, x, w, m, &out)?,
    }
    Ok(out)
}

/// Rows `ids` (u32, any shape) of the quantized table `[vocab, dim]`, dequantized: `[ids.shape.., dim]` f32.
pub fn embedding_q(table: &QuantTensor, ids: &Tensor) -> Result<Tensor> {
    let op = "embedding_q";
    require_dtype(op, ids, DType::U32)?;
    if ids.numel() == 0 {
        return Err(KernelError::Empty { op, what: "ids" });
    }
    let mut shape = ids.shape().to_vec();
    shape.push(table.cols());
    let out = Tensor::uninit(&ids.backend(), op, &shape, DType::F32)?;
    match common_backend(op, &[ids, table.data()])? {
        Backend::Cpu => {
            let idv = cpu::read_u32(ids);
            if let Some((i, &id)) = idv.iter().enumerate().find(|(_, id)| **id as usize >= table.rows()) {
                return Err(KernelError::Argument {
                    op,
                    name: "ids",
                    value: format!("{id} at index {i}"),
                    reason: format!("the table has {} rows", table.rows()),
                });
            }
            // The table in place (a copy of it per lookup cost a decode step of SmolLM2 a third of its time).
            let words = table.data().cpu_words().expect("CPU tensor");
            let view = BlockView::new(table, &bytemuck::cast_slice::<u32, u8>(&words)[..table.size_bytes()]);
            let mut y = vec![0f32; idv.len() * table.cols()];
            y.par_chunks_mut(table.cols()).zip(&idv).for_each(|(row, &id)| view.decode_row(id as usize, row));
            drop(words);
            cpu::write_f32(&out, &y);
        }
        Backend::Gpu(ctx) => gpu::embedding(&ctx, table, ids, &out)?,
    }
    Ok(out)
}

fn out_shape(x: &Tensor, rows: usize) -> Vec<usize> {
    let mut shape = x.shape().to_vec();
    match shape.last_mut() {
        Some(last) => *last = rows,
        None => shape.push(rows),
    }
    shape
}

fn check_cols(op: &'static str, w: &QuantTensor, cols: usize, x: &Tensor) -> Result<()> {
    if cols != w.cols() {
        return Err(KernelError::Shape {
            op,
            detail: format!(
                "inner dimensions differ: w [{}, {}] ({}) has {} columns, x {:?} has rows of {cols}",
                w.rows(),
                w.cols(),
                w.quant_type(),
                w.cols(),
                x.shape()
            ),
        });
    }
    Ok(())
}

fn check_out(op: &'static str, name: &str, t: &Tensor, b: usize, rows: usize) -> Result<()> {
    require_dtype(op, t, DType::F32)?;
    if t.rows_cols() != (b, rows) || t.numel() != b * rows {
        return Err(KernelError::Shape {
            op,
            detail: format!("{name} {:?} must hold [{b}, {rows}] (rows of x by rows of w)", t.shape()),
        });
    }
    Ok(())
}

// ---- CPU ----------------------------------------------------------------------------------------------

/// Weights per rayon task of the CPU GEMV (at least): enough to amortise the task.
const GEMV_TASK_WEIGHTS: usize = 1 << 16;

/// `x · Wₖᵀ` for every matrix of `ws` (all of `cols = x.len() / b` columns), as `[rows, b]` per matrix
/// (each weight row read once for all b rows of x), in one parallel pass over all their rows: one set of
/// tasks instead of one per matrix (on a 2-core machine a pass costs as much again in thread wake-ups as
/// a small GEMV's work), and x quantized once. With one row of x, rows go in pairs through the two-row
/// integer dot (x loaded once for both: SmolLM2 Q4_1 decode 4–8 % faster on the 2-core machine).
fn cpu_products(ws: &[&QuantTensor], xv: &[f32], b: usize) -> Vec<Vec<f32>> {
    let cols = xv.len() / b;
    let words: Vec<_> = ws.iter().map(|w| w.data().cpu_words().expect("CPU tensor")).collect();
    let views: Vec<BlockView<'_>> = ws
        .iter()
        .zip(&words)
        .map(|(w, words)| BlockView::new(w, &bytemuck::cast_slice::<u32, u8>(words)[..w.size_bytes()]))
        .collect();
    // Every format's blocks are whole 32-groups, so the group sums line up with each x row.
    let groups = cols / 32;
    // Integer dots with x quantized once (two bytes per value, as on the GPU) where the CPU has them.
    let int_dots: Option<Vec<_>> = ws.iter().map(|w| quant_dot::int_row_dot(w.quant_type())).collect();
    let xq = int_dots.as_ref().map(|_| quant_dot::QuantX::new(xv));
    let xr: Vec<_> = xq.iter().flat_map(|xq| (0..b).map(|r| xq.row(r, cols))).collect();
    // Otherwise the f32 dots, with x's group sums.
    let (xs, dots): (Vec<f32>, Vec<_>) = match int_dots {
        Some(_) => (Vec::new(), Vec::new()),
        None => (quant_dot::group_sums(xv), ws.iter().map(|w| quant_dot::row_dot(w.quant_type())).collect()),
    };
    // Row o of the flat list is row o - start[k] of matrix k.
    let start: Vec<usize> = ws.iter().scan(0, |acc, w| Some(std::mem::replace(acc, *acc + w.rows()))).collect();
    let total: usize = ws.iter().map(|w| w.rows()).sum();
    let mut t = vec![0f32; total * b];
    let min_rows = (GEMV_TASK_WEIGHTS / cols).max(1);
    let matrix_of = |o: usize| start.partition_point(|&s| s <= o) - 1;
    // One row of x: weight rows in pairs where the format has a two-row dot (x loaded once for both).
    let pairs: Option<Vec<_>> = match (&int_dots, b) {
        (Some(_), 1) => ws.iter().map(|w| quant_dot::int_row_dot2(w.quant_type())).collect(),
        _ => None,
    };
    if let (Some(int), Some(int2)) = (&int_dots, &pairs) {
        let x = &xr[0];
        let one = |o: usize| {
            let k = matrix_of(o);
            let (q, s) = views[k].row(o - start[k]);
            int[k](q, s, x)
        };
        t.par_chunks_mut(2).with_min_len(min_rows.div_ceil(2)).enumerate().for_each(|(p, dst)| {
            let o = 2 * p;
            let k = matrix_of(o);
            if dst.len() == 2 && matrix_of(o + 1) == k {
                let ((q0, s0), (q1, s1)) = (views[k].row(o - start[k]), views[k].row(o + 1 - start[k]));
                dst.copy_from_slice(&int2[k](q0, s0, q1, s1, x));
            } else {
                // The last row, or a pair split between two matrices.
                dst.iter_mut().enumerate().for_each(|(i, d)| *d = one(o + i));
            }
        });
        return split_products(t, ws, b);
    }
    t.par_chunks_mut(b).with_min_len(min_rows).enumerate().for_each(|(o, dst)| {
        let k = matrix_of(o);
        let (q, s) = views[k].row(o - start[k]);
        match &int_dots {
            Some(int) => dst.iter_mut().zip(&xr).for_each(|(d, x)| *d = int[k](q, s, x)),
            None => {
                for (r, d) in dst.iter_mut().enumerate() {
                    *d = dots[k](q, s, &xv[r * cols..][..cols], &xs[r * groups..][..groups]);
                }
            }
        }
    });
    split_products(t, ws, b)
}

/// The products of [`cpu_products`], one list of rows after another, cut into one list per matrix.
fn split_products(t: Vec<f32>, ws: &[&QuantTensor], b: usize) -> Vec<Vec<f32>> {
    if ws.len() == 1 {
        return vec![t];
    }
    let mut out = Vec::with_capacity(ws.len());
    let mut rest = t.as_slice();
    for w in ws {
        let (mine, tail) = rest.split_at(w.rows() * b);
        out.push(mine.to_vec());
        rest = tail;
    }
    out
}

/// Products `[rows, b]` (as [`cpu_products`] makes them) as `[b, rows]`.
fn by_x_row(t: Vec<f32>, rows: usize, b: usize) -> Vec<f32> {
    if b == 1 {
        return t;
    }
    let mut y = vec![0f32; b * rows];
    for (o, v) in t.chunks_exact(b).enumerate() {
        for (r, &val) in v.iter().enumerate() {
            y[r * rows + o] = val;
        }
    }
    y
}

/// `y[r, o] += bias[o]` for every row r of x.
fn add_bias(y: &mut [f32], bias: Option<&Tensor>, rows: usize) {
    if let Some(bias) = bias.map(cpu::read_f32) {
        for row in y.chunks_exact_mut(rows) {
            row.iter_mut().zip(&bias).for_each(|(v, c)| *v += c);
        }
    }
}

fn cpu_gemv(w: &QuantTensor, x: &Tensor, b: usize, epilogue: GemvEpilogue<'_>, out: &Tensor) {
    let xv = cpu::read_f32(x);
    let t = cpu_products(&[w], &xv, b).pop().expect("one matrix");
    let rows = w.rows();
    let mut y = by_x_row(t, rows, b);
    add_bias(&mut y, epilogue.bias, rows);
    if let Some(res) = epilogue.residual.map(cpu::read_f32) {
        y.iter_mut().zip(&res).for_each(|(v, r)| *v += r);
    }
    if epilogue.soft_cap.is_some() {
        y.iter_mut().for_each(|v| *v = super::gemv::soft_cap(*v, epilogue.soft_cap));
    }
    cpu::write_f32(out, &y);
}

/// Weight rows decoded per panel of the CPU GEMM.
const PANEL: usize = 32;

struct SendPtr(*mut f32);
// SAFETY: each task writes a disjoint set of output columns through the pointer (see `cpu_gemm`).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

fn cpu_gemm(x: &Tensor, w: &QuantTensor, m: usize, out: &Tensor) {
    let xv = cpu::read_f32(x);
    let words = w.data().cpu_words().expect("CPU tensor");
    let view = BlockView::new(w, &bytemuck::cast_slice::<u32, u8>(&words)[..w.size_bytes()]);
    let (rows, cols) = (w.rows(), w.cols());
    let mut y = vec![0f32; m * rows];
    let dst = SendPtr(y.as_mut_ptr());
    let dst = &dst;
    (0..rows.div_ceil(PANEL)).into_par_iter().for_each_init(
        || vec![0f32; PANEL * cols],
        |panel, p| {
            let r0 = p * PANEL;
            let n = PANEL.min(rows - r0);
            for (i, row) in panel.chunks_exact_mut(cols).take(n).enumerate() {
                view.decode_row(r0 + i, row);
            }
            // SAFETY: y [m, rows] (row stride `rows`) gets columns r0..r0+n written by this task only; the
            // panel holds n rows of `cols` weights and x holds m rows of `cols`; nothing overlaps.
            unsafe {
                cpu::gemm_f32(
                    (m, n, cols),
                    Strided { ptr: dst.0.add(r0), col_stride: 1, row_stride: rows as isize },
                    false,
                    Strided { ptr: xv.as_ptr(), col_stride: 1, row_stride: cols as isize },
                    Strided { ptr: panel.as_ptr(), col_stride: cols as isize, row_stride: 1 },
                    1.0,
                    gemm::Parallelism::None,
                );
            }
        },
    );
    drop(words);
    cpu::write_f32(out, &y);
}

/// f64 reference of `x · Wᵀ` from dequantized weights `wv [rows, cols]` and `x [b, cols]`: `[b, rows]`.
pub fn reference(wv: &[f32], rows: usize, cols: usize, x: &[f32]) -> Vec<f64> {
    let b = x.len() / cols;
    let mut y = vec![0f64; b * rows];
    for r in 0..b {
        for o in 0..rows {
            let (wr, xr) = (&wv[o * cols..][..cols], &x[r * cols..][..cols]);
            y[r * rows + o] = wr.iter().zip(xr).map(|(&a, &c)| a as f64 * c as f64).sum();
        }
    }
    y
}

/// `n` (a multiple of 32) random activations in [-1, 1) that the GPU GEMV's 8-bit activation quantization
/// represents exactly: multiples of 1/128 with a magnitude of 127/128 in every block of 32. With them every
/// backend's GEMV is checked against the f64 reference at f32 tolerance.
pub fn exact_activations(rng: &mut crate::testing::Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let q = rng.below(255) as i32 - 127;
            let q = match i % 32 {
                0 if q < 0 => -127,
                0 => 127,
                _ => q,
            };
            q as f32 / 128.0
        })
        .collect()
}

/// Tolerance of a quantized product of length `cols` with weights and x of magnitude ≤ 1: f32 rounding of
/// the sum (as the dense GEMV's) with room for the kernels' different summation orders.
pub fn tolerance(cols: usize) -> crate::testing::Tolerance {
    super::gemv::gemv_tolerance(cols, 1.0).scaled(2.0)
}

// ---- bench ----------------------------------------------------------------------------------------------

/// Bench op names of this family.
pub const BENCH_OPS: &[&str] = &[
    "gemv_q8_0",
    "gemv_q4_0",
    "gemv_q4_1",
    "gemv_q5_0",
    "gemv_q5_1",
    "gemv_q4_k",
    "gemv_q5_k",
    "gemv_q6_k",
    "gemm_q4_k",
    "gemm_q8_0",
    "gemv_q8_0_xq",
    "gemv_q4_0_xq",
    "gemv_q4_1_xq",
    "gemv_q5_0_xq",
    "gemv_q5_1_xq",
    "gemv_q4_k_xq",
    "gemv_q5_k_xq",
    "gemv_q6_k_xq",
];

/// The suffix of the `gemv_q*` bench ops that time the GEMV alone: x quantized once, before the timed
/// runs, as in decode, where the op before the GEMV writes it quantized (`NextInput`).
const PREQUANTIZED_SUFFIX: &str = "_xq";

/// The environment variable that forces the GPU GEMV's launch shape, `WG,ROWS` (threads per workgroup,
/// 32..=256; weight rows per workgroup, 1..=4), instead of the automatic choice: for benchmark sweeps.
pub const TUNE_VAR: &str = "TORCHLESS_QGEMV_TUNE";
/// The environment variable that forces the quantized GEMV's weight prefetch on (`1`) or off (`0`) for every
/// format, instead of the automatic choice: for benchmark sweeps.
pub const PREFETCH_VAR: &str = "TORCHLESS_QGEMV_PREFETCH";

/// The environment variable that sets the row length (`cols`) of the `gemv_q*` bench cases (default 4096).
pub const BENCH_COLS_VAR: &str = "TORCHLESS_BENCH_QGEMV_COLS";

/// The weight rows of a `gemv_q*` case: as many rows of `cols` weights as fill `bytes` of quantized weights,
/// rounded down to a multiple of 512 (so `--mib 32` gives Llama-3-8B's 14336 × 4096 for q4_0 and q4_k, and
/// 4096 × 14336 with `TORCHLESS_BENCH_QGEMV_COLS=14336`; q8_0 takes `--mib 60`, q6_k `--mib 46`).
pub fn bench_rows(ty: QuantType, cols: usize, bytes: u64) -> usize {
    let row_bytes = (cols / ty.block_elems() * ty.block_bytes()) as u64;
    let rows = (bytes / row_bytes).max(1) as usize;
    if rows >= 512 { rows / 512 * 512 } else { rows }
}

/// `gemv_q*`: b = 1 GEMV `[rows, cols]` (see [`bench_rows`]); `bytes` counts the quantized weights only.
/// Each run quantizes x, then multiplies; with the suffix `_xq` x is quantized once, outside the timed
/// runs. `gemm_q*`: `x [n, n] · Wᵀ` with n = sqrt(bytes / 12) rounded to a multiple of 256 (at most 4096),
/// as the dense GEMM bench.
pub fn bench_case(op: &str, bytes: u64) -> Option<Result<crate::bench::BenchCase>> {
    use crate::bench::BenchCase;
    let name: &'static str = BENCH_OPS.iter().find(|&&n| n == op)?;
    let (base, prequantized) = match name.strip_suffix(PREQUANTIZED_SUFFIX) {
        Some(base) => (base, true),
        None => (name, false),
    };
    let (gemm, ty) = match base.split_once('_') {
        Some(("gemm", t)) => (true, QuantType::parse(t)?),
        Some((_, t)) => (false, QuantType::parse(t)?),
        None => return None,
    };
    let build = move || -> Result<BenchCase> {
        let (rows, cols, m) = if gemm {
            let n = ((((bytes as f64) / 12.0).sqrt() as usize) / 256 * 256).clamp(256, 4096);
            (n, n, n)
        } else {
            let cols = crate::bench::cols_from_env(name, BENCH_COLS_VAR, 4096, 256)?;
            (bench_rows(ty, cols, bytes), cols, 1)
        };
        let mut rng = crate::testing::Rng::new(31);
        let values: Vec<f32> = {
            // Random weights, generated in parallel chunks (a 14336 × 4096 matrix is 59M values).
            let seeds: Vec<u64> = (0..rows).map(|_| rng.next_u64()).collect();
            let mut v = vec![0f32; rows * cols];
            v.par_chunks_mut(cols).zip(&seeds).for_each(|(row, &s)| {
                let mut r = crate::testing::Rng::new(s);
                row.iter_mut().for_each(|e| *e = r.uniform(-1.0, 1.0));
            });
            v
        };
        let w = QuantTensor::quantize(&Backend::Cpu, ty, &values, rows, cols)?;
        drop(values);
        // GEMV: x that the GPU's activation quantization keeps exact, so both backends meet the f32 tolerance.
        let xv = if gemm { rng.vec(m * cols, -1.0, 1.0) } else { exact_activations(&mut rng, m * cols) };
        let x = Tensor::from_slice(&Backend::Cpu, &xv, &[m, cols])?;
        let wbytes = w.size_bytes() as u64;
        let make = move |data: &Tensor| QuantTensor::from_device_data(ty, rows, cols, data.clone());
        // `_xq`: x's quantized form, kept for the x it was made from (the CPU's and the GPU's x alternate).
        let held: Mutex<Option<GemvInput>> = Mutex::new(None);
        Ok(BenchCase {
            op: name,
            dtype: DType::U32,
            shape: if gemm {
                format!("[{m}, {cols}]·{ty}[{rows}, {cols}]ᵀ")
            } else {
                format!("{ty}[{rows}, {cols}]·[1, {cols}]")
            },
            bytes: if gemm { wbytes + 4 * (m * cols + m * rows) as u64 } else { wbytes },
            flops: 2 * (m * rows * cols) as u64,
            // GEMM: adapters with 16×16 cooperative matrices round x and the weights to f16.
            tolerance: if gemm { super::gemm::f16_rounded_tolerance(cols) } else { tolerance(cols) },
            inputs: vec![w.data().clone(), x],
            run: Box::new(move |i| {
                let w = make(&i[0])?;
                if gemm {
                    return gemm_q(&i[1], &w);
                }
                if !prequantized {
                    return gemv_q(&w, &i[1], GemvEpilogue::default());
                }
                let mut held = held.lock().unwrap_or_else(|p| p.into_inner());
                if !held.as_ref().is_some_and(|x| x.tensor().same_storage(&i[1])) {
                    *held = Some(GemvInput::new(&i[1], None)?);
                }
                // The GPU's x is quantized by its first run (the check's, then the untimed warm-up's).
                gemv_q_input(&w, held.as_ref().expect("set above"), GemvEpilogue::default())
            }),
            reference: Box::new(move |i| {
                let w = QuantTensor::from_device_data(ty, rows, cols, i[0].clone())?;
                let wv = w.to_f32_vec()?;
                let xv = cpu::read_f32(&i[1]);
                Ok(reference_par(&wv, rows, cols, &xv))
            }),
        })
    };
    Some(build())
}

/// [`reference`] with rayon over weight rows (bench sizes).
fn reference_par(wv: &[f32], rows: usize, cols: usize, x: &[f32]) -> Vec<f64> {
    let b = x.len() / cols;
    let per_row: Vec<Vec<f64>> = (0..rows)
        .into_par_iter()
        .map(|o| {
            let wr = &wv[o * cols..][..cols];
            (0..b).map(|r| wr.iter().zip(&x[r * cols..][..cols]).map(|(&a, &c)| a as f64 * c as f64).sum()).collect()
        })
        .collect();
    let mut y = vec![0f64; b * rows];
    for (o, v) in per_row.iter().enumerate() {
        for r in 0..b {
            y[r * rows + o] = v[r];
        }
    }
    y
}

// ---- GPU ----------------------------------------------------------------------------------------------

pub(crate) mod gpu;

#[cfg(test)]
mod tests;
