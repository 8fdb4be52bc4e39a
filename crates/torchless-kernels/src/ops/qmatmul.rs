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
        let emits = gpu::emit_shape(ctx, tune, self.b, w.rows(), gated.is_some()).is_some()
            && !(then.norm.is_some() && up_bias);
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

pub(crate) mod gpu {
    use super::*;
    use crate::gpu::{Dispatch, GpuContext, Workgroups};
    use crate::ops::gemm::{CoopVariant, cooperative_variant, f16_copy};
    use crate::ops::norm::RmsNormVariant;
    use crate::ops::{prev_power_of_two, to_u32};

    crate::kernel_source!(QGEMV_X, "qgemv_x", ["xquant", "qgemv_xcore", "qgemv_x"]);
    crate::kernel_source!(
        QGEMV,
        "qgemv",
        ["rope_angle", "gemv_rope", "xquant", "qgemv_xcore", "qgemv", "reduce_workgroup"]
    );
    crate::kernel_source!(
        QGEMV_SUBGROUP,
        "qgemv_subgroup",
        ["rope_angle", "gemv_rope", "xquant", "qgemv_xcore", "qgemv", "reduce_subgroup"]
    );
    crate::kernel_source!(QMATMUL, "qmatmul");
    // Without the compiler's index clamps, as gemm's GEMM_COOP (the same product, coop16.wgsl, argued
    // there): gemm_q4_k 53 against 62 TFLOP/s at 4096³ on the H200, Llama-3-8B q4_k prefill 3.06k against
    // 3.45k tok/s. Only `gemm_coop16` runs from this module (QMATMUL runs qmatmul.wgsl's own entry
    // points, checked). Its weight reads stay in range: `dequant8` is called for a row below n and a
    // depth below k only (k a whole number of blocks), so the block index is below n · row_blocks, all of
    // whose words a quantized tensor of that shape holds; in-block offsets and the 8-value loops are
    // bounded by the format's constants. x is read for rows below m and depths below k.
    crate::kernel_source!(unchecked QMATMUL_COOP, "qmatmul_coop", ["qmatmul", "f16_pack", "coop16", "qmatmul_coop"]);

    /// Storage buffers the GEMV binds (x as bytes and sums, three weights twice, three biases, residual,
    /// three outputs, the RoPE table).
    const STORAGE_BINDINGS: u32 = 16;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
    pub(super) struct GemvParams {
        rows: [u32; 4],
        scale_base: [u32; 4],
        row_blocks: u32,
        units: u32,
        x_groups: u32,
        flags: u32,
        groups0: u32,
        groups01: u32,
        n_groups: u32,
        cap: f32,
        pos: u32,
        head_dim: u32,
        rope_stride: u32,
        rope_scale: f32,
        eps: f32,
        qout_units: u32,
        _pad: [u32; 2],
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
    pub(super) struct QuantizeXParams {
        blocks: u32,
        eps: f32,
        total_blocks: u32,
        units: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
    pub(super) struct MatmulParams {
        m: u32,
        n: u32,
        k: u32,
        row_blocks: u32,
        scale_base: u32,
        _pad: [u32; 3],
    }

    /// The GEMV's launch shape: `wg` threads and `rows` weight rows per team, and `teams` teams per
    /// workgroup that share one quantization of x in workgroup memory (kernels/qgemv.wgsl FUSED; one row
    /// of x only). `teams` 0: x is quantized in a launch of its own and a workgroup is one team.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Tune {
        pub wg: u32,
        pub rows: u32,
        pub teams: u32,
    }

    /// Units (groups of 16-byte quant vectors a thread takes at once) per weight row.
    pub fn units(w: &QuantTensor) -> usize {
        match w.quant_type() {
            QuantType::Q4K | QuantType::Q5K | QuantType::Q6K => 4 * w.row_blocks(),
            _ => w.row_blocks(),
        }
    }

    /// Four rows per workgroup sharing each load of x (two for Q4_K and Q5_K), fewer when there would be
    /// under 512 workgroups; about four units per thread (32..=128 threads; 32 for Q4_K and Q5_K); x
    /// quantized in a launch of its own (or by the GEMV before, [`Emit`]). The H200 sweep of
    /// `benchmarks/device_qgemv_sweep.sh` (BENCHMARKS.md) put the general rule at or within noise of the
    /// best shape of the kernel benches for q4_0, q4_k, q6_k and q8_0 at 14336 × 4096 and 4096 × 14336; in
    /// Llama-3-8B q4_k decode, where the weights come cold from memory, 32 threads and two rows did better:
    /// 340.6–341.2 against 322.7–323.1 tok/s (`benchmarks/results/2026-12-03d-h200/`, Q4_K and Q5_K share
    /// that code path; the other formats were not measured that way).
    ///
    /// Teams (one row of x quantized by each workgroup, FUSED) are never chosen here, only forced
    /// ([`TUNE_VAR`]): on the H200 (`benchmarks/results/2026-12-03c-h200/`) the best team shapes made the
    /// `gemv_q*` benches 5–18 % faster (one launch instead of two) but Llama-3-8B q4_k decode 17 % slower
    /// (296 → 246 tok/s with the O and down projections fused, 232 with every GEMV). Teams that read x
    /// already quantized were not slower (304 against 297 tok/s, `2026-12-03d-h200/teams/`): each
    /// workgroup's quantization of x, before its weight loads, is what cost.
    pub fn auto_tune(w: &QuantTensor) -> Tune {
        let (wg, mut rows) = match w.quant_type() {
            QuantType::Q4K | QuantType::Q5K => (32, 2),
            _ => ((units(w) / 4).next_power_of_two().clamp(32, 128) as u32, 4),
        };
        while rows > 1 && w.rows().div_ceil(rows as usize) < 512 {
            rows /= 2;
        }
        Tune { wg, rows, teams: 0 }
    }

    /// The most teams of `wg` threads (a power of two) whose workgroup can quantize a row of `cols` values
    /// into its memory (0: none can; the activations are then quantized in a launch of their own).
    fn fused_teams(ctx: &GpuContext, cols: usize, wg: u32) -> u32 {
        let l = ctx.limits();
        let threads = l.max_compute_invocations_per_workgroup.min(l.max_compute_workgroup_size_x);
        let fits = |t: u32| fused_storage(cols, wg, t) <= l.max_compute_workgroup_storage_size as usize;
        let mut t = prev_power_of_two((threads / wg).max(1));
        while t > 0 && !fits(t) {
            t /= 2;
        }
        t
    }

    /// Workgroup memory of a FUSED launch (kernels/qgemv.wgsl and its reduction), bytes: x as two bytes
    /// per value and 8 bytes per 16 values, the norm's scratch, and the reduction's (the larger, the
    /// workgroup-memory tree's).
    fn fused_storage(cols: usize, wg: u32, teams: u32) -> usize {
        let threads = (wg * teams) as usize;
        cols / 16 * 40 + 4 * threads + 16 * threads + 16 * 8 * teams as usize
    }

    /// The launch shape forced by [`TUNE_VAR`] (`WG,ROWS[,TEAMS]`), for benchmark sweeps: `None` when it
    /// is unset, an error naming the variable when it is malformed or out of range.
    fn env_tune() -> Result<Option<Tune>> {
        static TUNE: std::sync::OnceLock<std::result::Result<Option<Tune>, String>> = std::sync::OnceLock::new();
        let parsed = crate::ops::env_override(&TUNE, TUNE_VAR, |v| {
            let fields: Vec<Option<u32>> = v.split(',').map(|f| f.trim().parse().ok()).collect();
            let tune = match fields[..] {
                [Some(wg), Some(rows)] => Tune { wg, rows, teams: 0 },
                [Some(wg), Some(rows), Some(teams)] => Tune { wg, rows, teams },
                _ => return None,
            };
            (tune.wg.is_power_of_two()
                && (32..=256).contains(&tune.wg)
                && (1..=4).contains(&tune.rows)
                && (tune.teams == 0 || tune.teams.is_power_of_two())
                && tune.teams * tune.wg <= 1024)
                .then_some(tune)
        });
        parsed.map_err(|value| KernelError::Argument {
            op: "gemv_q",
            name: TUNE_VAR,
            value,
            reason: "must be WG,ROWS[,TEAMS]: WG a power of two from 32 to 256, ROWS from 1 to 4, TEAMS a power \
                     of two with TEAMS · WG at most 1024 (TEAMS 0 or absent: x quantized in a launch of its own) \
                     (or unset)"
                .into(),
        })
    }

    #[cfg(test)]
    thread_local! {
        /// Tests: the launch shape of every GEMV dispatch of this thread that does not force its own.
        pub(super) static TEST_TUNE: std::cell::Cell<Option<Tune>> = const { std::cell::Cell::new(None) };
    }

    /// The launch shape of a GEMV of `b` rows of x: forced by [`TUNE_VAR`] or `forced`, else
    /// [`auto_tune`]; teams only where they fit (one row of x, the workgroup's memory).
    pub(super) fn choose_tune(ctx: &GpuContext, w: &QuantTensor, b: usize, forced: Option<Tune>) -> Result<Tune> {
        #[cfg(test)]
        let forced = forced.or(TEST_TUNE.with(std::cell::Cell::get));
        let mut t = match forced {
            Some(t) => t,
            None => env_tune()?.unwrap_or_else(|| auto_tune(w)),
        };
        t.wg = t.wg.clamp(32, 256).next_power_of_two().min(256);
        if b > 1 {
            t.teams = 0;
        }
        if t.teams > 0 {
            t.teams = prev_power_of_two(t.teams.min(fused_teams(ctx, w.cols(), t.wg)));
        }
        Ok(t)
    }

    /// Whether the GEMV of weights of type `t` loads each unit's weights one iteration ahead
    /// (kernels/qgemv.wgsl PREFETCH): forced by [`PREFETCH_VAR`], else only for Q6_K. On the H200
    /// (`benchmarks/results/2026-12-05b-h200/pf/`, the GEMV alone) it took Q6_K from 64.5 to 69.5 % of copy
    /// at 14336 × 4096 and from 67.7 to 82.8 % at 4096 × 14336, and cost the formats with shorter unit
    /// arithmetic their registers: q8_0 93.8 → 76.7 %, q4_0 79.4 → 75.8 %, Llama-3-8B q4_k decode 355.2 →
    /// 346.4 tok/s. The formats not measured keep it off.
    fn prefetch(t: QuantType) -> Result<bool> {
        static FORCED: std::sync::OnceLock<std::result::Result<Option<bool>, String>> = std::sync::OnceLock::new();
        let forced = crate::ops::env_override(&FORCED, PREFETCH_VAR, |v| match v.trim() {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        })
        .map_err(|value| KernelError::Argument {
            op: "gemv_q",
            name: PREFETCH_VAR,
            value,
            reason: "must be 0 or 1 (or unset)".into(),
        })?;
        Ok(forced.unwrap_or(t == QuantType::Q6K))
    }

    fn scale_base(op: &'static str, w: &QuantTensor) -> Result<u32> {
        to_u32(op, "weight words", w.scales_offset() / 4)
    }

    /// The RoPE epilogue of a Q, K, V dispatch (kernels/qgemv.wgsl `ROPE`): parts 1 and 2 write into the KV
    /// caches at row `pos + r` for row r of x.
    #[derive(Clone, Copy)]
    pub struct RopeOut<'a> {
        pub table: &'a RopeTable,
        pub pos: usize,
        /// The KV caches' dtype.
        pub cache: DType,
    }

    /// One weight matrix of a GPU GEMV dispatch, with its bias and output.
    pub struct Part<'a> {
        pub w: &'a QuantTensor,
        pub bias: Option<&'a Tensor>,
        pub out: &'a Tensor,
    }

    /// x as a GEMV dispatch reads it.
    pub enum XOperand<'a> {
        /// Quantized by [`quantize_x`] or by the GEMV that produced x ([`Emit`]): (xq, xs), and the epsilon
        /// of x's RMS norm where the GEMV applies it (x·w was quantized, the blocks' Σx² follow in xs).
        Quantized { xq: &'a Tensor, xs: &'a Tensor, deferred_norm_eps: Option<f32> },
        /// One row of x in f32, and the RMS norm to apply to it: each workgroup quantizes it (FUSED).
        Raw(&'a Tensor, Option<InputNorm<'a>>),
    }

    /// Where a dispatch of one row of x also writes its output as the x of a next GEMV (kernels/qgemv.wgsl
    /// `QOUT`): quantized in that GEMV's `layout` for its `units` per row, times `norm`'s weight (that GEMV
    /// then applies 1/rms, [`XOperand::Quantized`]'s `deferred_norm_eps`). `xq`: `rows / 2` u32 words, `xs`:
    /// `rows · 3 / 16` f32 ([`emit_tensors`]).
    pub struct Emit<'a> {
        pub xq: &'a Tensor,
        pub xs: &'a Tensor,
        pub norm: Option<InputNorm<'a>>,
        pub layout: u32,
        pub units: u32,
    }

    /// Tensors for an [`Emit`] of `rows` outputs, on the backend of `like`.
    pub fn emit_tensors(like: &Tensor, rows: usize) -> Result<(Tensor, Tensor)> {
        let blocks = rows / 32;
        Ok((
            Tensor::uninit(&like.backend(), "gemv_q", &[blocks * 16], DType::U32)?,
            Tensor::uninit(&like.backend(), "gemv_q", &[blocks * 6], DType::F32)?,
        ))
    }

    /// The launch shape of an emitting dispatch ([`Emit`]: each workgroup owns 32 output rows, in teams), in
    /// [`gemv`]'s convention (`rows` per matrix with `gated`), from `tune` of [`choose_tune`]; `None` where it
    /// cannot emit: more than one row of x, outputs not a multiple of 32, or a workgroup the adapter
    /// cannot run.
    pub fn emit_shape(ctx: &GpuContext, tune: Tune, b: usize, out_rows: usize, gated: bool) -> Option<Tune> {
        if b != 1 || !out_rows.is_multiple_of(32) {
            return None;
        }
        let rows_per_matrix =
            if gated { (2 * tune.rows).clamp(2, 4) / 2 } else { prev_power_of_two(tune.rows.clamp(1, 4)) };
        let teams = 32 / rows_per_matrix;
        let l = ctx.limits();
        let max_threads = l.max_compute_invocations_per_workgroup.min(l.max_compute_workgroup_size_x);
        // Teams need subgroups that never span two of them.
        let mut wg = tune.wg.max(if ctx.has_subgroups() { ctx.info().subgroup_max_size } else { 1 });
        while wg * teams > max_threads && wg > 32 {
            wg /= 2;
        }
        let fits =
            wg * teams <= max_threads && (!ctx.has_subgroups() || wg.is_multiple_of(ctx.info().subgroup_max_size));
        fits.then_some(Tune { wg, rows: rows_per_matrix, teams })
    }

    /// One dispatch over 1 to 3 matrices of one type and row length that share x (their biases of one
    /// dtype), or with `gated` two (gate, up) of one shape into `parts[0].out`; `residual` only with one
    /// matrix; `soft_cap` (cap·tanh(y / cap), last) applies to every output; `emit` (one matrix or `gated`,
    /// no RoPE) also writes the output as the next GEMV's x. `tune` from [`choose_tune`], with teams when x
    /// is [`XOperand::Raw`]; an emitting dispatch takes its shape from [`emit_shape`] (which the caller
    /// checked). The callers check shapes.
    #[allow(clippy::too_many_arguments)]
    pub fn gemv(
        ctx: &GpuContext,
        parts: &[Part<'_>],
        x: XOperand<'_>,
        b: usize,
        residual: Option<&Tensor>,
        soft_cap: Option<f32>,
        gated: Option<GatedAct>,
        rope: Option<RopeOut<'_>>,
        kernel: QGemvKernel,
        mut tune: Tune,
        emit: Option<Emit<'_>>,
    ) -> Result<()> {
        let op = "gemv_q";
        debug_assert!((1..=3).contains(&parts.len()) && (gated.is_none() || parts.len() == 2));
        debug_assert!(rope.is_none() || (parts.len() == 3 && gated.is_none() && residual.is_none()));
        debug_assert!(emit.is_none() || (rope.is_none() && (parts.len() == 1 || gated.is_some())));
        let fused = matches!(x, XOperand::Raw(..));
        debug_assert!(!fused || tune.teams > 0);
        crate::ops::require_storage_buffers(ctx, op, STORAGE_BINDINGS, "16 storage buffers per shader stage")?;
        if emit.is_some() {
            tune =
                emit_shape(ctx, tune, b, parts[0].w.rows(), gated.is_some()).ok_or_else(|| KernelError::Argument {
                    op,
                    name: "emit",
                    value: format!("{} rows, {b} rows of x", parts[0].w.rows()),
                    reason: "writing the output as the next GEMV's x takes one row of x and a multiple of 32 rows"
                        .into(),
                })?;
        }
        let subgroup = match kernel {
            QGemvKernel::Auto => {
                ctx.has_subgroups() && (tune.teams <= 1 || tune.wg.is_multiple_of(ctx.info().subgroup_max_size))
            }
            QGemvKernel::Workgroup => false,
            QGemvKernel::Subgroup if ctx.has_subgroups() => true,
            QGemvKernel::Subgroup => {
                return Err(KernelError::MissingFeature { op, feature: "subgroups", adapter: ctx.info().name.clone() });
            }
        };
        // Teams need subgroups that never span two of them.
        if subgroup && tune.teams > 1 && !tune.wg.is_multiple_of(ctx.info().subgroup_max_size) {
            tune.teams = 1;
        }
        let w = parts[0].w;
        let teams = tune.teams.max(1);
        // GATED: an even number of slots, half gate rows and half up rows.
        // RoPE: whole rotation pairs (and a 16-bit cache's whole words).
        tune.rows = match (gated, rope) {
            (Some(_), _) => (2 * tune.rows).clamp(2, 4),
            (None, Some(r)) => r.table.config().layout.epilogue_slots(r.cache, tune.rows),
            (None, None) => tune.rows.clamp(1, 4),
        };
        let rows_per_matrix = if gated.is_some() { tune.rows / 2 } else { tune.rows } as usize;
        let buf = |t: &Tensor| -> Result<wgpu::Buffer> {
            let g = t.gpu_buffer().expect("GPU tensor");
            ctx.check_binding(op, g.size())?;
            Ok(g.raw().clone())
        };
        let (xqb, xsb, norm, deferred_eps) = match x {
            XOperand::Quantized { xq, xs, deferred_norm_eps } => (buf(xq)?, buf(xs)?, None, deferred_norm_eps),
            XOperand::Raw(x, norm) => {
                let xb = buf(x)?;
                let nb = norm.map(|n| buf(n.weight)).transpose()?.unwrap_or_else(|| xb.clone());
                (xb, nb, norm, None)
            }
        };
        let ws: Vec<wgpu::Buffer> = parts.iter().map(|p| buf(p.w.data())).collect::<Result<_>>()?;
        let ys: Vec<wgpu::Buffer> = parts.iter().map(|p| buf(p.out)).collect::<Result<_>>()?;
        let biases: Vec<Option<wgpu::Buffer>> =
            parts.iter().map(|p| p.bias.map(buf).transpose()).collect::<Result<_>>()?;
        let (res, accumulate) = match residual {
            Some(r) if r.same_storage(parts[0].out) => (None, true),
            Some(r) => (Some(buf(r)?), false),
            None => (None, false),
        };
        let has_bias = biases.iter().map(Option::is_some);
        let flags = crate::ops::gemv::epilogue_flags(has_bias, res.is_some(), accumulate, soft_cap.is_some());
        let mut rows = [0u32; 4];
        let mut scale_base = [0u32; 4];
        // Workgroups per matrix: [0, groups0) matrix 0, [groups0, groups01) matrix 1, the rest matrix 2;
        // with GATED every workgroup reads both.
        let mut groups = [0usize; 3];
        for (k, p) in parts.iter().enumerate() {
            to_u32(op, "output elements", p.out.numel())?;
            rows[k] = to_u32(op, "rows", p.w.rows())?;
            scale_base[k] = self::scale_base(op, p.w)?;
            groups[k] = p.w.rows().div_ceil(rows_per_matrix);
        }
        // Teams, whole workgroups of them; the last workgroup's spare teams write nothing.
        if gated.is_some() {
            groups[1] = 0;
        }
        let n_groups = to_u32(op, "workgroups", groups.iter().sum())?;
        let params = GemvParams {
            rows,
            scale_base,
            row_blocks: to_u32(op, "blocks per row", w.row_blocks())?,
            units: to_u32(op, "units per row", units(w))?,
            x_groups: to_u32(op, "cols", w.cols() / 16)?,
            flags,
            groups0: groups[0] as u32,
            groups01: (groups[0] + groups[1]) as u32,
            n_groups,
            cap: soft_cap.unwrap_or(1.0),
            pos: rope.map_or(Ok(0), |r| to_u32(op, "position", r.pos))?,
            head_dim: rope.map_or(0, |r| r.table.config().head_dim as u32),
            rope_stride: rope.map_or(0, |r| r.table.tensor().shape()[1] as u32),
            rope_scale: rope.map_or(1.0, |r| r.table.config().attention_scaling),
            eps: norm.map(|n| n.eps).or(deferred_eps).unwrap_or(0.0),
            qout_units: emit.as_ref().map_or(0, |e| e.units),
            _pad: [0; 2],
        };
        let threads = tune.wg * teams;
        let red_len = if subgroup {
            let min_sg = ctx.info().subgroup_min_size.max(4);
            // FUSED with a norm, or a deferred norm: one more slot, the row's sum of squares (qgemv.wgsl
            // `norm_slot`).
            let slots = b as u32 + u32::from(norm.is_some() || deferred_eps.is_some());
            threads.div_ceil(min_sg) * slots
        } else {
            threads
        };
        let bias_dt = parts.iter().find_map(|p| p.bias).map_or(DType::F32, |t| t.dtype());
        let constants = [
            ("QTYPE", w.quant_type().wgsl_code()),
            ("WG", tune.wg as f64),
            ("ROWS", tune.rows as f64),
            ("BATCH", b as f64),
            ("RED_LEN", red_len as f64),
            ("BIAS_DT", bias_dt.wgsl_code()),
            ("PARTS", parts.len() as f64),
            ("GATED", if gated.is_some() { 1.0 } else { 0.0 }),
            ("ACT", if gated == Some(GatedAct::GeluTanh) { 1.0 } else { 0.0 }),
            ("ROPE", rope.map_or(0.0, |r| r.table.config().layout.epilogue_code())),
            ("CACHE_DT", rope.map_or(DType::F32, |r| r.cache).wgsl_code()),
            ("TEAMS", f64::from(teams)),
            ("FUSED", if fused { 1.0 } else { 0.0 }),
            ("XCAP", if fused { (w.cols() / 16) as f64 } else { 1.0 }),
            ("NSS", if deferred_eps.is_some() { 1.0 } else { 0.0 }),
            ("QOUT", emit.as_ref().map_or(0.0, |e| 1.0 + norm_mode(e.norm))),
            ("QOUT_LAYOUT", emit.as_ref().map_or(0.0, |e| f64::from(e.layout))),
            ("QOUT_NW_DT", emit.as_ref().and_then(|e| e.norm).map_or(DType::F32, |n| n.weight.dtype()).wgsl_code()),
            ("NORM", norm_mode(norm)),
            ("NW_DT", norm.map_or(DType::F32, |n| n.weight.dtype()).wgsl_code()),
            ("LAYOUT", f64::from(x_layout(w.quant_type()))),
            ("PREFETCH", if prefetch(w.quant_type())? { 1.0 } else { 0.0 }),
        ];
        let table = rope.map(|r| buf(r.table.tensor())).transpose()?;
        // An emitting dispatch (one matrix, or gate and up into one output) writes the next GEMV's x
        // through y1 and y2 and reads the next norm's weight through bias1.
        let emit_bufs = match &emit {
            Some(e) => {
                if e.norm.is_some() && biases.get(1).is_some_and(Option::is_some) {
                    return Err(KernelError::Argument {
                        op,
                        name: "emit",
                        value: "a norm".into(),
                        reason: "a gated GEMV whose up projection has a bias cannot also apply the next norm".into(),
                    });
                }
                Some((buf(e.xq)?, buf(e.xs)?, e.norm.map(|n| buf(n.weight)).transpose()?))
            }
            None => None,
        };
        let w_at = |k: usize| ws.get(k).unwrap_or(&ws[0]);
        let bias_at = |k: usize| match (k, &emit_bufs) {
            (1, Some((_, _, Some(nw)))) => nw,
            _ => biases.get(k).and_then(Option::as_ref).unwrap_or(&xsb),
        };
        let y_at = |k: usize| match (k, &emit_bufs) {
            (1, Some((xq, _, _))) => xq,
            (2, Some((_, xs, _))) => xs,
            _ => ys.get(k).unwrap_or(&ys[0]),
        };
        let buffers = [
            &xqb,
            &xsb,
            w_at(0),
            w_at(0),
            w_at(1),
            w_at(1),
            w_at(2),
            w_at(2),
            bias_at(0),
            bias_at(1),
            bias_at(2),
            res.as_ref().unwrap_or(&xsb),
            y_at(0),
            y_at(1),
            y_at(2),
            table.as_ref().unwrap_or(&xsb),
        ];
        ctx.dispatch(Dispatch {
            kernel: if subgroup { &QGEMV_SUBGROUP } else { &QGEMV },
            entry: "main",
            constants: &constants,
            params: Some(bytemuck::bytes_of(&params)),
            buffers: &buffers,
            workgroups: Workgroups::Linear(n_groups.div_ceil(teams)),
        })
    }

    /// qgemv_xcore.wgsl's NORM of an input norm.
    fn norm_mode(norm: Option<InputNorm<'_>>) -> f64 {
        match norm.map(|n| n.variant) {
            None => 0.0,
            Some(RmsNormVariant::Standard) => 1.0,
            Some(RmsNormVariant::Gemma) => 2.0,
        }
    }

    /// x [b, cols] (or rmsnorm(x)) as integers for the GEMV (kernels/qgemv_x.wgsl): two signed bytes per
    /// value (`xq`, u32 words) and (d/256, Σ first 16, Σ last 16, 0) per 32 values (`xs`).
    /// The order in which the GEMV's threads read x for weights of type `t` (kernels/qgemv_x.wgsl
    /// `LAYOUT`): units of two groups of 16 (32-weight blocks), of four (Q4_K, Q5_K), or Q6_K's four.
    pub fn x_layout(t: QuantType) -> u32 {
        match t {
            QuantType::Q4K | QuantType::Q5K => 1,
            QuantType::Q6K => 2,
            _ => 0,
        }
    }

    /// x as the GEMV's integers (see [`GemvInput`]) in `layout`, for weights of `units` units per row.
    pub(super) fn quantize_x(
        ctx: &GpuContext,
        x: &Tensor,
        b: usize,
        cols: usize,
        norm: Option<InputNorm<'_>>,
        layout: u32,
        units: usize,
    ) -> Result<(Tensor, Tensor)> {
        let op = "gemv_q";
        let blocks = b * cols / 32;
        let xq = Tensor::uninit(&x.backend(), op, &[blocks * 16], DType::U32)?;
        let xs = Tensor::uninit(&x.backend(), op, &[blocks * 4], DType::F32)?;
        let params = QuantizeXParams {
            blocks: to_u32(op, "x blocks", cols / 32)?,
            eps: norm.map_or(0.0, |n| n.eps),
            total_blocks: to_u32(op, "x blocks", blocks)?,
            units: to_u32(op, "units per row", units)?,
        };
        // A workgroup per row with the norm (it sums the row's squares first), else a thread per block.
        let workgroups = if norm.is_some() { b as u32 } else { params.total_blocks.div_ceil(256) };
        let raw = |t: &Tensor| t.gpu_buffer().expect("GPU tensor").raw().clone();
        let mode = norm_mode(norm);
        let nw_dt = norm.map_or(DType::F32, |n| n.weight.dtype());
        let xb = raw(x);
        let nwb = norm.map_or_else(|| xb.clone(), |n| raw(n.weight));
        ctx.dispatch(Dispatch {
            kernel: &QGEMV_X,
            entry: "main",
            constants: &[("NORM", mode), ("NW_DT", nw_dt.wgsl_code()), ("LAYOUT", f64::from(layout))],
            params: Some(bytemuck::bytes_of(&params)),
            buffers: &[&xb, &nwb, &raw(&xq), &raw(&xs)],
            workgroups: Workgroups::Linear(workgroups),
        })?;
        Ok((xq, xs))
    }

    fn matmul_params(op: &'static str, w: &QuantTensor, m: usize) -> Result<MatmulParams> {
        Ok(MatmulParams {
            m: to_u32(op, "rows of x", m)?,
            n: to_u32(op, "rows", w.rows())?,
            k: to_u32(op, "cols", w.cols())?,
            row_blocks: to_u32(op, "blocks per row", w.row_blocks())?,
            scale_base: scale_base(op, w)?,
            _pad: [0; 3],
        })
    }

    /// Whether gemm runs on coop16.wgsl: 16×16 f16 cooperative matrices and 32-lane subgroups (its
    /// workgroup of 8 subgroups stages exactly two chunks a thread).
    pub(crate) fn uses_coop16(ctx: &GpuContext) -> bool {
        matches!(cooperative_variant(ctx), Some(CoopVariant::F16x16 { subgroup: 32 }))
    }

    pub fn gemm(ctx: &GpuContext, x: &Tensor, w: &QuantTensor, m: usize, out: &Tensor) -> Result<()> {
        let op = "gemm_q";
        let params = matmul_params(op, w, m)?;
        to_u32(op, "output elements", out.numel())?;
        let bufs = [x, w.data(), out].map(|t| t.gpu_buffer().expect("GPU tensor"));
        for g in &bufs {
            ctx.check_binding(op, g.size())?;
        }
        // Tensor cores where the adapter has them: x rounded to f16 once, the weights dequantized to f16
        // as they are staged.
        if uses_coop16(ctx) {
            let x16 = f16_copy(ctx, x)?;
            let grid = [to_u32(op, "tiles", w.rows().div_ceil(128))?, to_u32(op, "tiles", m.div_ceil(128))?, 1];
            return ctx.dispatch(Dispatch {
                kernel: &QMATMUL_COOP,
                entry: "gemm_coop16",
                constants: &[("QTYPE", w.quant_type().wgsl_code()), ("WG16", 256.0)],
                params: Some(bytemuck::bytes_of(&params)),
                buffers: &[x16.gpu_buffer().expect("GPU tensor").raw(), bufs[1].raw(), bufs[2].raw()],
                workgroups: Workgroups::Grid(grid),
            });
        }
        let grid = [to_u32(op, "tiles", w.rows().div_ceil(64))?, to_u32(op, "tiles", m.div_ceil(64))?, 1];
        ctx.dispatch(Dispatch {
            kernel: &QMATMUL,
            entry: "gemm",
            constants: &[("QTYPE", w.quant_type().wgsl_code())],
            params: Some(bytemuck::bytes_of(&params)),
            buffers: &[bufs[0].raw(), bufs[1].raw(), bufs[2].raw()],
            workgroups: Workgroups::Grid(grid),
        })
    }

    pub fn embedding(ctx: &GpuContext, table: &QuantTensor, ids: &Tensor, out: &Tensor) -> Result<()> {
        let op = "embedding_q";
        let params = matmul_params(op, table, ids.numel())?;
        to_u32(op, "output elements", out.numel())?;
        let bufs = [ids, table.data(), out].map(|t| t.gpu_buffer().expect("GPU tensor"));
        for g in &bufs {
            ctx.check_binding(op, g.size())?;
        }
        let threads = ids.numel() * table.cols() / 8;
        ctx.dispatch(Dispatch {
            kernel: &QMATMUL,
            entry: "embedding",
            constants: &[("QTYPE", table.quant_type().wgsl_code())],
            params: Some(bytemuck::bytes_of(&params)),
            buffers: &[bufs[0].raw(), bufs[1].raw(), bufs[2].raw()],
            workgroups: Workgroups::Linear(to_u32(op, "workgroups", threads.div_ceil(64))?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::gemm;
    use crate::ops::norm::RmsNormVariant;
    use crate::ops::rope::rope_qk_store_kv;
    use crate::testing::{Rng, Tolerance, assert_close, test_backends, test_gpu};

    fn quantized(rng: &mut Rng, ty: QuantType, rows: usize, cols: usize) -> (QuantTensor, Vec<f32>) {
        let values = rng.vec(rows * cols, -1.0, 1.0);
        let w = QuantTensor::quantize(&Backend::Cpu, ty, &values, rows, cols).unwrap();
        let wv = w.to_f32_vec().unwrap();
        (w, wv)
    }

    #[test]
    fn gemv_q_matches_the_f64_reference_for_every_type_and_batch() {
        let mut rng = Rng::new(21);
        for ty in QuantType::ALL {
            for (k, (rows, blocks)) in [(1, 1), (33, 3), (257, 16)].into_iter().enumerate() {
                let cols = blocks * ty.block_elems();
                let b = 1 + (k * 3 + ty.wgsl_code() as usize) % MAX_BATCH;
                let (w, wv) = quantized(&mut rng, ty, rows, cols);
                let xv = exact_activations(&mut rng, b * cols);
                let want = reference(&wv, rows, cols, &xv);
                for backend in test_backends() {
                    let (wd, xd) =
                        (w.to_backend(&backend).unwrap(), Tensor::from_slice(&backend, &xv, &[b, cols]).unwrap());
                    let got = gemv_q(&wd, &xd, GemvEpilogue::default()).unwrap().to_f32_vec().unwrap();
                    let name = format!("gemv_q {ty} [{rows}, {cols}] b={b} on {}", backend.name());
                    assert_close(&name, &got, &want, tolerance(cols));
                }
            }
        }
    }

    /// gemm_q's tolerance: the cooperative-matrix path rounds x and the weights to f16.
    fn gemm_tolerance(backend: &Backend, cols: usize) -> Tolerance {
        match backend {
            Backend::Gpu(ctx) if gpu::uses_coop16(ctx) => gemm::f16_rounded_tolerance(cols),
            _ => tolerance(cols),
        }
    }

    #[test]
    fn gemm_q_and_embedding_q_match_the_dequantized_weights() {
        let mut rng = Rng::new(22);
        for ty in QuantType::ALL {
            // 300 rows and m = 200: more than one 128×128 tile of the cooperative kernel each way.
            for (rows, ms) in [(37, &[1, 5, 70][..]), (300, &[200][..])] {
                let cols = 2 * ty.block_elems();
                let (w, wv) = quantized(&mut rng, ty, rows, cols);
                for &m in ms {
                    let xv = rng.vec(m * cols, -1.0, 1.0);
                    let want = reference(&wv, rows, cols, &xv);
                    for backend in test_backends() {
                        let (wd, xd) =
                            (w.to_backend(&backend).unwrap(), Tensor::from_slice(&backend, &xv, &[m, cols]).unwrap());
                        let got = gemm_q(&xd, &wd).unwrap();
                        assert_eq!(got.shape(), &[m, rows]);
                        let name = format!("gemm_q {ty} [{rows}, {cols}] m={m} on {}", backend.name());
                        assert_close(&name, &got.to_f32_vec().unwrap(), &want, gemm_tolerance(&backend, cols));
                    }
                }
            }
            let (rows, cols) = (37, 2 * ty.block_elems());
            let (w, wv) = quantized(&mut rng, ty, rows, cols);
            let ids: Vec<u32> = vec![0, 36, 5, 5, 17];
            let want: Vec<f64> =
                ids.iter().flat_map(|&i| wv[i as usize * cols..][..cols].iter().map(|&v| v as f64)).collect();
            for backend in test_backends() {
                let wd = w.to_backend(&backend).unwrap();
                let idt = Tensor::from_slice(&backend, &ids, &[ids.len()]).unwrap();
                let got = embedding_q(&wd, &idt).unwrap();
                assert_eq!(got.shape(), &[ids.len(), cols]);
                let name = format!("embedding_q {ty} on {}", backend.name());
                // Exact on the CPU; a GPU may fuse the decode's multiply-add.
                let tol = if backend.is_gpu() {
                    Tolerance { atol: 1e-7, rtol: 1e-6 }
                } else {
                    Tolerance { atol: 0.0, rtol: 0.0 }
                };
                assert_close(&name, &got.to_f32_vec().unwrap(), &want, tol);
            }
        }
    }

    /// Both GPU kernels with forced launch shapes (rows per workgroup that do not divide the rows, tiny and
    /// large workgroups), every type and several batch sizes.
    #[test]
    fn every_gpu_kernel_and_launch_shape_matches_the_reference() {
        let Some(gpu) = test_gpu() else { return };
        let Backend::Gpu(ctx) = &gpu else { unreachable!("test_gpu gives a GPU") };
        let mut kernels = vec![QGemvKernel::Workgroup];
        if ctx.has_subgroups() {
            kernels.push(QGemvKernel::Subgroup);
        }
        let mut rng = Rng::new(25);
        for ty in QuantType::ALL {
            let (rows, cols) = (7, 3 * ty.block_elems());
            let (w, wv) = quantized(&mut rng, ty, rows, cols);
            let wd = w.to_backend(&gpu).unwrap();
            for b in [1, 5] {
                let xv = exact_activations(&mut rng, b * cols);
                let want = reference(&wv, rows, cols, &xv);
                let xd = Tensor::from_slice(&gpu, &xv, &[b, cols]).unwrap();
                // Each pipeline costs a shader compile on a software adapter: each kernel takes half the
                // shapes per type, alternating between types; one row of x is also quantized in the
                // workgroup by teams (the third number), including a last workgroup with spare teams.
                let shapes: &[(u32, u32, u32)] = if b == 1 {
                    &[(32, 3, 2), (256, 4, 0), (32, 3, 0), (64, 4, 4)]
                } else {
                    &[(32, 3, 0), (256, 4, 0)]
                };
                for (i, &kernel) in kernels.iter().enumerate() {
                    for &(wg, slots, teams) in shapes.iter().skip((i + ty.wgsl_code() as usize) % 2).step_by(2) {
                        let tune = Some(gpu::Tune { wg, rows: slots, teams });
                        let out = Tensor::uninit(&gpu, "test", &[b, rows], DType::F32).unwrap();
                        gemv_q_tuned(
                            &wd,
                            &GemvInput::new(&xd, None).unwrap(),
                            GemvEpilogue::default(),
                            &out,
                            kernel,
                            tune,
                        )
                        .unwrap();
                        let name = format!("gemv_q {ty} [{rows}, {cols}] b={b} {kernel:?} {tune:?}");
                        assert_close(&name, &out.to_f32_vec().unwrap(), &want, tolerance(cols));
                    }
                }
            }
        }
    }

    /// Arbitrary x on the GPU: the activations as two bytes (x ≈ d·(256·hi + lo)/256 per 32 values, d =
    /// max|x| / 127) move each value by at most d/256 (d/512 except where the lo byte clamps), so each
    /// output is within Σ|w|·d/256 of the exact product (plus f32 rounding).
    #[test]
    fn gpu_activation_quantization_error_is_within_its_bound() {
        let Some(gpu) = test_gpu() else { return };
        let mut rng = Rng::new(26);
        for ty in [QuantType::Q8_0, QuantType::Q4_0, QuantType::Q5_1, QuantType::Q4K, QuantType::Q6K] {
            let (rows, cols, b) = (13, 512, 2);
            let (w, wv) = quantized(&mut rng, ty, rows, cols);
            // Blocks of very different magnitudes, one of them all zeros.
            let mut xv = rng.vec(b * cols, -1.0, 1.0);
            for (k, blk) in xv.chunks_mut(32).enumerate() {
                blk.iter_mut().for_each(|v| *v *= [1.0, 1e-3, 30.0, 0.0][k % 4]);
            }
            let got = gemv_q(
                &w.to_backend(&gpu).unwrap(),
                &Tensor::from_slice(&gpu, &xv, &[b, cols]).unwrap(),
                GemvEpilogue::default(),
            )
            .unwrap()
            .to_f32_vec()
            .unwrap();
            assert_within_activation_bound(&format!("gemv_q {ty}"), &got, &wv, rows, &xv);
        }
    }

    /// The CPU GEMV on arbitrary x (integer dots with x in two bytes on x86-64 with AVX2, the f32 path
    /// elsewhere): every format, ragged rows, b = 1..8, blocks of very different magnitudes (one with a huge
    /// outlier, one all zeros, tiny ones), within the two-byte activations' error bound of the f64
    /// reference (weights with an offset `d·n + m` see it through `d·n`: at most `|w| + max|w|` of the
    /// block).
    #[test]
    fn cpu_gemv_on_arbitrary_x_is_within_the_activation_bound() {
        let mut rng = Rng::new(29);
        for ty in QuantType::ALL {
            for b in 1..=MAX_BATCH {
                let rows = [1, 5, 37, 131][b % 4];
                let cols = (1 + b % 3) * ty.block_elems();
                let (w, wv) = quantized(&mut rng, ty, rows, cols);
                let mut xv = rng.vec(b * cols, -1.0, 1.0);
                for (k, blk) in xv.chunks_mut(32).enumerate() {
                    match k % 5 {
                        1 => blk[k % 32] = 2e4,
                        2 => blk.fill(0.0),
                        3 => blk.iter_mut().for_each(|v| *v *= 1e-25),
                        _ => {}
                    }
                }
                let got =
                    gemv_q(&w, &Tensor::from_slice(&Backend::Cpu, &xv, &[b, cols]).unwrap(), GemvEpilogue::default())
                        .unwrap()
                        .to_f32_vec()
                        .unwrap();
                let want = reference(&wv, rows, cols, &xv);
                for (r, x) in xv.chunks(cols).enumerate() {
                    for o in 0..rows {
                        let wr = &wv[o * cols..][..cols];
                        let mut bound = 0f64;
                        for (wb, xb) in wr.chunks(32).zip(x.chunks(32)) {
                            let e = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64 / 127.0 / 256.0;
                            let wmax = wb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
                            let f32_err: f64 =
                                wb.iter().zip(xb).map(|(&a, &c)| 1e-5 * (a as f64 * c as f64).abs()).sum();
                            bound += wb.iter().map(|&a| (a.abs() as f64 + wmax) * e).sum::<f64>() + f32_err;
                        }
                        let (g, e) = (got[r * rows + o] as f64, want[r * rows + o]);
                        let name = format!("gemv_q {ty} [{rows}, {cols}] b={b} row {o} of x {r}");
                        assert!((g - e).abs() <= bound + 1e-30, "{name}: got {g}, want {e}, allowed {bound}");
                    }
                }
            }
        }
    }

    /// `got` (GPU, `[b, rows]`) is within the two-byte activations' error bound of `x · Wᵀ`.
    fn assert_within_activation_bound(name: &str, got: &[f32], wv: &[f32], rows: usize, xv: &[f32]) {
        let cols = wv.len() / rows;
        let want = reference(wv, rows, cols, xv);
        let f32_tol = tolerance(cols);
        for (r, x) in xv.chunks(cols).enumerate() {
            let max_err: Vec<f64> =
                x.chunks(32).map(|blk| blk.iter().fold(0f32, |m, v| m.max(v.abs())) as f64 / 127.0 / 256.0).collect();
            for o in 0..rows {
                let bound: f64 =
                    wv[o * cols..][..cols].iter().enumerate().map(|(i, w)| w.abs() as f64 * max_err[i / 32]).sum();
                let (g, e) = (got[r * rows + o] as f64, want[r * rows + o]);
                let allowed = 1.001 * bound + f32_tol.atol + f32_tol.rtol * e.abs();
                assert!((g - e).abs() <= allowed, "{name} row {o} of x {r}: got {g}, want {e}, allowed {allowed}");
            }
        }
    }

    /// A prepared input with the RMSNorm fused in equals the norm then the GEMV: exactly so on the CPU
    /// (that is what it runs), within the activation bound of the normalised x on the GPU; one input
    /// serves several GEMVs.
    #[test]
    fn normed_input_matches_the_norm_then_the_gemv() {
        let mut rng = Rng::new(27);
        // 8448 values: rows longer than the quantization kernel keeps in registers (8192).
        // One row of x is normalised by the GEMV's workgroups, several by the quantization launch.
        for (cols, b) in [(512, 3), (8448, 1), (8448, 2)] {
            let eps = 1e-5f32;
            let xv = rng.vec(b * cols, -2.0, 2.0);
            let nw = rng.vec(cols, 0.5, 1.5);
            let weights = [QuantType::Q4K, QuantType::Q8_0, QuantType::Q6K].map(|ty| quantized(&mut rng, ty, 7, cols));
            for variant in [RmsNormVariant::Standard, RmsNormVariant::Gemma] {
                for backend in test_backends() {
                    let x = Tensor::from_slice(&backend, &xv, &[b, cols]).unwrap();
                    let weight = Tensor::from_f32(&backend, &nw, &[cols], DType::BF16).unwrap();
                    // The reference normalises with the bf16-rounded weight, in f64.
                    let g: Vec<f64> = weight
                        .to_f32_vec()
                        .unwrap()
                        .iter()
                        .map(|&w| if variant == RmsNormVariant::Gemma { 1.0 + w as f64 } else { w as f64 })
                        .collect();
                    let xn: Vec<f32> = xv
                        .chunks(cols)
                        .flat_map(|row| {
                            let s = 1.0
                                / (row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / cols as f64 + eps as f64)
                                    .sqrt();
                            row.iter().zip(&g).map(move |(&v, &g)| (v as f64 * s * g) as f32)
                        })
                        .collect();
                    let input = GemvInput::new(&x, Some(InputNorm { weight: &weight, eps, variant })).unwrap();
                    for (w, wv) in &weights {
                        let got = gemv_q_input(&w.to_backend(&backend).unwrap(), &input, GemvEpilogue::default())
                            .unwrap()
                            .to_f32_vec()
                            .unwrap();
                        let name = format!("normed gemv_q {} {variant:?} on {}", w.quant_type(), backend.name());
                        if backend.is_gpu() {
                            assert_within_activation_bound(&name, &got, wv, w.rows(), &xn);
                            if b == 1 {
                                // Normalised and quantized by the GEMV's workgroups (not the default for a
                                // normed input).
                                let wd = w.to_backend(&backend).unwrap();
                                let out = Tensor::uninit(&backend, "test", &[1, w.rows()], DType::F32).unwrap();
                                let tune = gpu::Tune { wg: 32, rows: 2, teams: 4 };
                                let e = GemvEpilogue::default();
                                gemv_q_tuned(&wd, &input, e, &out, QGemvKernel::Auto, Some(tune)).unwrap();
                                let fused = out.to_f32_vec().unwrap();
                                assert_within_activation_bound(&format!("{name} {tune:?}"), &fused, wv, w.rows(), &xn);
                            }
                        } else {
                            assert_close(&name, &got, &reference(wv, w.rows(), cols, &xn), tolerance(cols).scaled(4.0));
                        }
                    }
                }
            }
        }
    }

    /// A GEMV (with a residual, or the gated form) that hands its output to the next GEMV as its input,
    /// with that GEMV's norm (both variants) or none: on the GPU with one row of x the first dispatch writes
    /// the next one's x quantized (each x layout: Q4_K, Q6_K, 32-weight blocks) and the norm's 1/rms is
    /// applied by the next GEMV; with two rows of x it falls back to quantizing x in a launch. The first
    /// output and the next GEMV's are checked against references on the output read back.
    #[test]
    fn emitted_inputs_match_the_reference() {
        let mut rng = Rng::new(30);
        let cols = 256;
        // (rows of the first GEMVs, rows of x, the next GEMV's types and norms): 256 rows are eight
        // workgroups of 32.
        use RmsNormVariant::{Gemma, Standard};
        let every = vec![None, Some(Standard), Some(Gemma)];
        let cases = [
            (256, 1, vec![(QuantType::Q4K, every.clone()), (QuantType::Q6K, vec![Some(Standard)])]),
            (96, 1, vec![(QuantType::Q8_0, every), (QuantType::Q5_1, vec![None])]),
            (256, 2, vec![(QuantType::Q4K, vec![Some(Standard)])]),
        ];
        for (rows, b, next_types) in cases {
            let xv = exact_activations(&mut rng, b * cols);
            let (w1, w1v) = quantized(&mut rng, QuantType::Q4_0, rows, cols);
            let (gate, gv) = quantized(&mut rng, QuantType::Q8_0, rows, cols);
            let (up, uv) = quantized(&mut rng, QuantType::Q8_0, rows, cols);
            let res = rng.vec(b * rows, -1.0, 1.0);
            let nw = rng.vec(rows, 0.5, 1.5);
            let nexts: Vec<(QuantTensor, Vec<f32>, Vec<Option<RmsNormVariant>>)> = next_types
                .into_iter()
                .map(|(ty, variants)| {
                    let (w, wv) = quantized(&mut rng, ty, 7, rows);
                    (w, wv, variants)
                })
                .collect();
            let r1: Vec<f64> = reference(&w1v, rows, cols, &xv).iter().zip(&res).map(|(v, &r)| v + r as f64).collect();
            let (rg, ru) = (reference(&gv, rows, cols, &xv), reference(&uv, rows, cols, &xv));
            let r_gated: Vec<f64> =
                rg.iter().zip(&ru).map(|(&g, &u)| GatedAct::Silu.apply(g as f32) as f64 * u).collect();
            for backend in test_backends() {
                let on = |w: &QuantTensor| w.to_backend(&backend).unwrap();
                let (w1d, gd, ud) = (on(&w1), on(&gate), on(&up));
                let x = GemvInput::new(&Tensor::from_slice(&backend, &xv, &[b, cols]).unwrap(), None).unwrap();
                let weight = Tensor::from_f32(&backend, &nw, &[rows], DType::BF16).unwrap();
                let g: Vec<f64> = weight.to_f32_vec().unwrap().iter().map(|&w| w as f64).collect();
                for (next, nv, variants) in &nexts {
                    let nd = on(next);
                    for &variant in variants {
                        let norm = variant.map(|variant| InputNorm { weight: &weight, eps: 1e-5, variant });
                        let then = NextInput { norm, next: &nd };
                        // The next GEMV's x as the reference sees it: the output read back, normalised in f64.
                        let normed = |y: &[f32]| -> Vec<f32> {
                            let Some(v) = variant else { return y.to_vec() };
                            y.chunks(rows)
                                .flat_map(|row| {
                                    let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / rows as f64;
                                    let s = 1.0 / (ms + 1e-5).sqrt();
                                    let plus = if v == RmsNormVariant::Gemma { 1.0 } else { 0.0 };
                                    row.iter().zip(&g).map(move |(&v, &w)| (v as f64 * s * (w + plus)) as f32)
                                })
                                .collect()
                        };
                        let name = format!(
                            "{} rows, b={b}, next {} {variant:?} on {}",
                            rows,
                            next.quant_type(),
                            backend.name()
                        );
                        let check_next = |what: &str, input: &GemvInput, y: &[f32]| {
                            let got = gemv_q_input(&nd, input, GemvEpilogue::default()).unwrap().to_f32_vec().unwrap();
                            let xn = normed(y);
                            if backend.is_gpu() {
                                assert_within_activation_bound(what, &got, nv, 7, &xn);
                            } else {
                                // tolerance() is for |x| <= 1.
                                let amax = xn.iter().fold(1f32, |m, v| m.max(v.abs())) as f64;
                                let tol = tolerance(rows).scaled(4.0 * amax);
                                assert_close(what, &got, &reference(nv, 7, rows, &xn), tol);
                            }
                        };
                        let h = Tensor::from_slice(&backend, &res, &[b, rows]).unwrap();
                        let input = gemv_q_input_into_then(&w1d, &x, GemvEpilogue::residual(&h), &h, then).unwrap();
                        let hv = h.to_f32_vec().unwrap();
                        assert_close(&format!("residual GEMV, {name}"), &hv, &r1, tolerance(cols));
                        check_next(&format!("after the residual GEMV, {name}"), &input, &hv);
                        let input = gemv_q_gated_then(&x, &gd, &ud, GatedAct::Silu, then).unwrap();
                        let yv = input.tensor().to_f32_vec().unwrap();
                        if variant.is_none() || backend.is_gpu() {
                            assert_close(&format!("gated GEMV, {name}"), &yv, &r_gated, tolerance(cols).scaled(4.0));
                            check_next(&format!("after the gated GEMV, {name}"), &input, &yv);
                        }
                    }
                }
            }
        }
        // Bad input: next weights that do not take the output.
        let cpu = Backend::Cpu;
        let (w, _) = quantized(&mut rng, QuantType::Q8_0, 64, cols);
        let (next, _) = quantized(&mut rng, QuantType::Q8_0, 4, 96);
        let x = GemvInput::new(&Tensor::from_slice(&cpu, &vec![0.5; cols], &[1, cols]).unwrap(), None).unwrap();
        let out = Tensor::zeros(&cpu, &[1, 64], DType::F32).unwrap();
        let then = NextInput { norm: None, next: &next };
        let err = gemv_q_input_into_then(&w, &x, GemvEpilogue::default(), &out, then);
        assert!(matches!(err, Err(KernelError::Shape { .. })), "{:?}", err.err());
    }

    /// Q, K and V in one dispatch (rows that do not divide the workgroups' rows, biases on two of them), a
    /// mixed-type set that falls back to one GEMV each, and the gated MLP half for both activations.
    /// Runs `f` with the automatic launch shapes and, for one row of x on a GPU, again with x quantized by
    /// the GEMV's workgroups in teams (FUSED, which the automatic shapes never pick); `f` gets a label.
    fn with_and_without_teams(backend: &Backend, b: usize, mut f: impl FnMut(&str)) {
        f("");
        if backend.is_gpu() && b == 1 {
            gpu::TEST_TUNE.with(|t| t.set(Some(gpu::Tune { wg: 32, rows: 4, teams: 2 })));
            f(" with teams");
            gpu::TEST_TUNE.with(|t| t.set(None));
        }
    }

    #[test]
    fn multi_and_gated_gemvs_match_the_reference() {
        let mut rng = Rng::new(28);
        let cols = 256;
        for b in [1, 3] {
            let xv = exact_activations(&mut rng, b * cols);
            let mats: Vec<(QuantTensor, Vec<f32>)> = [(QuantType::Q4K, 37), (QuantType::Q4K, 9), (QuantType::Q4K, 13)]
                .into_iter()
                .map(|(ty, rows)| quantized(&mut rng, ty, rows, cols))
                .collect();
            let (q6, q6v) = quantized(&mut rng, QuantType::Q6K, 9, cols);
            let biases = [Some(rng.vec(37, -1.0, 1.0)), None, Some(rng.vec(13, -1.0, 1.0))];
            let gate_up: Vec<(QuantTensor, Vec<f32>)> =
                (0..2).map(|_| quantized(&mut rng, QuantType::Q8_0, 11, cols)).collect();
            // Odd row counts: the CPU pairs rows for its two-row dot, across the matrices' boundaries too,
            // and the last row has no partner.
            let odd: Vec<(QuantTensor, Vec<f32>)> = [(QuantType::Q4_1, 7), (QuantType::Q8_0, 11), (QuantType::Q4_0, 5)]
                .into_iter()
                .map(|(ty, rows)| quantized(&mut rng, ty, rows, cols))
                .collect();
            for backend in test_backends() {
                with_and_without_teams(&backend, b, |teams| {
                    let x = GemvInput::new(&Tensor::from_slice(&backend, &xv, &[b, cols]).unwrap(), None).unwrap();
                    let on = |w: &QuantTensor| w.to_backend(&backend).unwrap();
                    let ws: Vec<QuantTensor> = mats.iter().map(|(w, _)| on(w)).collect();
                    let bs: Vec<Option<Tensor>> = biases
                        .iter()
                        .map(|b| b.as_ref().map(|v| Tensor::from_f32(&backend, v, &[v.len()], DType::F16).unwrap()))
                        .collect();
                    let want = |wv: &[f32], rows: usize, bias: Option<&Tensor>| -> Vec<f64> {
                        let bias = bias.map(|t| t.to_f32_vec().unwrap());
                        reference(wv, rows, cols, &xv)
                            .iter()
                            .enumerate()
                            .map(|(i, v)| v + bias.as_ref().map_or(0.0, |bv| bv[i % rows] as f64))
                            .collect()
                    };
                    let parts: Vec<(&QuantTensor, Option<&Tensor>)> =
                        ws.iter().zip(&bs).map(|(w, b)| (w, b.as_ref())).collect();
                    let outs = gemv_q_multi(&x, &parts).unwrap();
                    for (k, out) in outs.iter().enumerate() {
                        assert_eq!(out.shape(), &[b, mats[k].0.rows()]);
                        let name = format!("gemv_q_multi part {k} b={b} on {}{teams}", backend.name());
                        assert_close(
                            &name,
                            &out.to_f32_vec().unwrap(),
                            &want(&mats[k].1, mats[k].0.rows(), bs[k].as_ref()),
                            tolerance(cols),
                        );
                    }
                    let q6d = on(&q6);
                    let mixed = gemv_q_multi(&x, &[(&ws[0], None), (&q6d, None)]).unwrap();
                    let name = format!("gemv_q_multi mixed b={b} on {}{teams}", backend.name());
                    assert_close(&name, &mixed[1].to_f32_vec().unwrap(), &want(&q6v, 9, None), tolerance(cols));
                    let odd_ws: Vec<QuantTensor> = odd.iter().map(|(w, _)| on(w)).collect();
                    let odd_parts: Vec<(&QuantTensor, Option<&Tensor>)> = odd_ws.iter().map(|w| (w, None)).collect();
                    for (k, out) in gemv_q_multi(&x, &odd_parts).unwrap().iter().enumerate() {
                        let (w, wv) = (&odd[k].0, &odd[k].1);
                        let name = format!("gemv_q_multi odd rows part {k} b={b} on {}{teams}", backend.name());
                        assert_close(&name, &out.to_f32_vec().unwrap(), &want(wv, w.rows(), None), tolerance(cols));
                    }
                    let (g, u) = (on(&gate_up[0].0), on(&gate_up[1].0));
                    let (gr, ur) = (reference(&gate_up[0].1, 11, cols, &xv), reference(&gate_up[1].1, 11, cols, &xv));
                    for act in [GatedAct::Silu, GatedAct::GeluTanh] {
                        let got = gemv_q_gated(&x, &g, &u, act).unwrap();
                        assert_eq!(got.shape(), &[b, 11]);
                        let want: Vec<f64> =
                            gr.iter().zip(&ur).map(|(&g, &u)| act.apply(g as f32) as f64 * u).collect();
                        let name = format!("gemv_q_gated {act:?} b={b} on {}{teams}", backend.name());
                        assert_close(&name, &got.to_f32_vec().unwrap(), &want, tolerance(cols).scaled(4.0));
                    }
                });
            }
        }
    }

    #[test]
    fn qkv_rope_matches_multi_then_rope() {
        use crate::ops::rope::{RopeConfig, RopeLayout::*, RopeTable};
        let mut rng = Rng::new(29);
        let cols = 256;
        // (type, layout, head_dim, rot_dim, q heads, kv heads, b, pos, biases): 64 heads of 64 rows give Wq
        // 4096 rows; a HalfSplit workgroup with a 16-bit cache has four slots, an Interleaved one two (Q4_K's
        // automatic shape) or four (teams); rot_dim < head_dim takes the two-op path.
        #[rustfmt::skip]
        let cases = [
            (QuantType::Q4K, HalfSplit, 64, 64, 8, 2, 1, 5, false),
            (QuantType::Q4K, Interleaved, 64, 64, 8, 2, 1, 12, true),
            (QuantType::Q4K, HalfSplit, 64, 64, 64, 8, 1, 300, true),
            (QuantType::Q8_0, Interleaved, 32, 32, 6, 3, 3, 17, true),
            (QuantType::Q6K, HalfSplit, 16, 16, 4, 4, 2, 0, false),
            (QuantType::Q4_0, Interleaved, 128, 128, 4, 1, 1, 70000, false),
            (QuantType::Q4K, HalfSplit, 32, 16, 4, 2, 1, 9, false),
        ];
        for (ty, layout, hd, rot, nh, nkv, b, pos, with_bias) in cases {
            let xv = exact_activations(&mut rng, b * cols);
            let (q_rows, kv_rows) = (nh * hd, nkv * hd);
            let mats: Vec<QuantTensor> =
                [q_rows, kv_rows, kv_rows].into_iter().map(|rows| quantized(&mut rng, ty, rows, cols).0).collect();
            let biases: Vec<Option<Vec<f32>>> =
                [q_rows, kv_rows, kv_rows].into_iter().map(|n| with_bias.then(|| rng.vec(n, -1.0, 1.0))).collect();
            let cap = pos + b + 2;
            let cache0 = rng.vec(cap * kv_rows, -1.0, 1.0);
            let cfg = RopeConfig::new(hd, 10000.0).with_rot_dim(rot).with_layout(layout);
            for (backend, cache_dt) in
                test_backends().into_iter().flat_map(|b| crate::ops::rope::CACHE_DTYPES.map(|d| (b.clone(), d)))
            {
                with_and_without_teams(&backend, b, |teams| {
                    let x = GemvInput::new(&Tensor::from_slice(&backend, &xv, &[b, cols]).unwrap(), None).unwrap();
                    let ws: Vec<QuantTensor> = mats.iter().map(|w| w.to_backend(&backend).unwrap()).collect();
                    let bs: Vec<Option<Tensor>> = biases
                        .iter()
                        .map(|v| v.as_ref().map(|v| Tensor::from_slice(&backend, v, &[v.len()]).unwrap()))
                        .collect();
                    let parts: Vec<(&QuantTensor, Option<&Tensor>)> =
                        ws.iter().zip(&bs).map(|(w, b)| (w, b.as_ref())).collect();
                    let table = RopeTable::new(&backend, cfg.clone()).unwrap();
                    let cache = || Tensor::from_f32(&backend, &cache0, &[cap, nkv, hd], cache_dt).unwrap();
                    // The two ops, each tested on its own.
                    let [q, k, v]: [Tensor; 3] = gemv_q_multi(&x, &parts).unwrap().try_into().unwrap();
                    let (kc_want, vc_want) = (cache(), cache());
                    let q3 = q.reshape(&[b, nh, hd]).unwrap();
                    rope_qk_store_kv(
                        &q3,
                        &k.reshape(&[b, nkv, hd]).unwrap(),
                        &v.reshape(&[b, nkv, hd]).unwrap(),
                        &table,
                        pos,
                        &kc_want,
                        &vc_want,
                    )
                    .unwrap();
                    let (kc, vc) = (cache(), cache());
                    let kv = KvWrite { table: &table, pos, k_cache: &kc, v_cache: &vc };
                    let got = gemv_q_qkv_rope(&x, [parts[0], parts[1], parts[2]], kv).unwrap();
                    assert_eq!(got.shape(), &[b, q_rows]);
                    let what = format!(
                        "gemv_q_qkv_rope {ty} {layout:?} hd {hd} rot {rot} {nh}/{nkv} b={b} pos {pos}, {cache_dt} cache, on {}{teams}",
                        backend.name()
                    );
                    let tol = match cache_dt {
                        DType::F32 => Tolerance { atol: 1e-5, rtol: 1e-5 },
                        dt => crate::ops::rope::cache_rounding_tolerance(dt),
                    };
                    crate::ops::rope::assert_epilogue_matches(&what, [&got, &kc, &vc], [&q, &kc_want, &vc_want], tol);
                });
            }
        }
        // Bad input: a step past the end of the cache.
        let cpu = Backend::Cpu;
        let w = quantized(&mut rng, QuantType::Q8_0, 4, cols).0;
        let x = GemvInput::new(&Tensor::from_slice(&cpu, &vec![0.5; cols], &[1, cols]).unwrap(), None).unwrap();
        let table = RopeTable::new(&cpu, RopeConfig::new(4, 10000.0)).unwrap();
        let c = Tensor::zeros(&cpu, &[2, 1, 4], DType::F32).unwrap();
        let c2 = Tensor::zeros(&cpu, &[2, 1, 4], DType::F32).unwrap();
        let kv = KvWrite { table: &table, pos: 2, k_cache: &c, v_cache: &c2 };
        let err = gemv_q_qkv_rope(&x, [(&w, None), (&w, None), (&w, None)], kv);
        assert!(matches!(err, Err(KernelError::Argument { name: "pos", .. })), "{err:?}");
    }

    #[test]
    fn params_match_the_wgsl_structs() {
        for k in [&gpu::QGEMV, &gpu::QGEMV_SUBGROUP] {
            assert_eq!(crate::testing::wgsl_struct_size(k, "Params") as usize, std::mem::size_of::<gpu::GemvParams>());
        }
        assert_eq!(
            crate::testing::wgsl_struct_size(&gpu::QGEMV_X, "Params") as usize,
            std::mem::size_of::<gpu::QuantizeXParams>()
        );
        assert_eq!(
            crate::testing::wgsl_struct_size(&gpu::QMATMUL, "Params") as usize,
            std::mem::size_of::<gpu::MatmulParams>()
        );
    }

    #[test]
    fn bench_cases_validate_on_every_backend() {
        for op in BENCH_OPS {
            // Small sizes: a few rows of 4096 (gemv), 256³ (gemm).
            let case = crate::bench::case(op, 1 << 20).unwrap();
            for backend in test_backends() {
                let inputs = case.inputs_on(&backend).unwrap();
                let r = case.check(&backend, &inputs).unwrap();
                assert!(r.ok, "bench {op} on {}: {r:?}", backend.name());
            }
        }
        assert_eq!(bench_rows(QuantType::Q4K, 4096, 32 << 20), 14336);
        assert_eq!(bench_rows(QuantType::Q4K, 14336, 32 << 20), 4096);
        assert_eq!(bench_rows(QuantType::Q4_0, 4096, 32 << 20), 14336);
        assert_eq!(bench_rows(QuantType::Q8_0, 4096, 60 << 20), 14336);
        assert_eq!(bench_rows(QuantType::Q8_0, 14336, 60 << 20), 4096);
        assert_eq!(bench_rows(QuantType::Q6K, 4096, 46 << 20), 14336);
        assert_eq!(bench_rows(QuantType::Q6K, 14336, 46 << 20), 4096);
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        let mut rng = Rng::new(23);
        let (w, _) = quantized(&mut rng, QuantType::Q4_0, 4, 64);
        let cpu = Backend::Cpu;
        let x = Tensor::from_slice(&cpu, &rng.vec(64, -1.0, 1.0), &[1, 64]).unwrap();
        let bad_x = Tensor::from_slice(&cpu, &rng.vec(32, -1.0, 1.0), &[1, 32]).unwrap();
        assert!(matches!(gemv_q(&w, &bad_x, GemvEpilogue::default()), Err(KernelError::Shape { .. })));
        assert!(matches!(gemm_q(&bad_x, &w), Err(KernelError::Shape { .. })));
        let x9 = Tensor::from_slice(&cpu, &rng.vec(9 * 64, -1.0, 1.0), &[9, 64]).unwrap();
        assert!(matches!(gemv_q(&w, &x9, GemvEpilogue::default()), Err(KernelError::Argument { .. })));
        let x16 = Tensor::from_f32(&cpu, &rng.vec(64, -1.0, 1.0), &[1, 64], DType::F16).unwrap();
        assert!(matches!(gemv_q(&w, &x16, GemvEpilogue::default()), Err(KernelError::DType { .. })));
        let bias = Tensor::from_slice(&cpu, &[0f32; 3], &[3]).unwrap();
        let e = GemvEpilogue::bias(Some(&bias));
        assert!(matches!(gemv_q(&w, &x, e), Err(KernelError::Shape { .. })));
        let ids = Tensor::from_slice(&cpu, &[4u32], &[1]).unwrap();
        assert!(matches!(embedding_q(&w, &ids), Err(KernelError::Argument { .. })));
        let fids = Tensor::from_slice(&cpu, &[1f32], &[1]).unwrap();
        assert!(matches!(embedding_q(&w, &fids), Err(KernelError::DType { .. })));
    }

    #[test]
    fn bias_and_residual_are_added_in_the_epilogue() {
        let mut rng = Rng::new(24);
        let (rows, cols, b) = (19, 256, 3);
        for ty in [QuantType::Q4_1, QuantType::Q6K] {
            let (w, wv) = quantized(&mut rng, ty, rows, cols);
            let xv = exact_activations(&mut rng, b * cols);
            let bias_v = rng.vec(rows, -1.0, 1.0);
            let res_v = rng.vec(b * rows, -1.0, 1.0);
            let product = reference(&wv, rows, cols, &xv);
            // Then the soft cap, last (a final logit soft cap).
            for soft_cap in [None, Some(2.0f32)] {
                let want: Vec<f64> = product
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let y = v + bias_v[i % rows] as f64 + res_v[i] as f64;
                        soft_cap.map_or(y, |c| c as f64 * (y / c as f64).tanh())
                    })
                    .collect();
                for backend in test_backends() {
                    let wd = w.to_backend(&backend).unwrap();
                    let xd = Tensor::from_slice(&backend, &xv, &[b, cols]).unwrap();
                    let bias = Tensor::from_f32(&backend, &bias_v, &[rows], DType::F32).unwrap();
                    for in_place in [false, true] {
                        let res = Tensor::from_slice(&backend, &res_v, &[b, rows]).unwrap();
                        let out = if in_place {
                            res.clone()
                        } else {
                            Tensor::uninit(&backend, "t", &[b, rows], DType::F32).unwrap()
                        };
                        let e = GemvEpilogue { bias: Some(&bias), residual: Some(&res), soft_cap };
                        gemv_q_into(&wd, &xd, e, &out).unwrap();
                        let name = format!(
                            "gemv_q {ty} epilogue in_place={in_place} soft cap {soft_cap:?} on {}",
                            backend.name()
                        );
                        assert_close(&name, &out.to_f32_vec().unwrap(), &want, tolerance(cols));
                    }
                }
            }
            let x = Tensor::from_slice(&Backend::Cpu, &xv, &[b, cols]).unwrap();
            let e = GemvEpilogue { soft_cap: Some(-1.0), ..Default::default() };
            assert!(matches!(gemv_q(&w, &x, e), Err(KernelError::Argument { name: "soft_cap", .. })));
        }
    }
}
