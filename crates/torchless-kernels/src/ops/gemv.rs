//! GEMV, the matrix-vector product of decode: `y[r, o] = Σ_i w[o, i]·x[r, i]` for a weight matrix
//! `w [out, in]` (f32, f16 or bf16, row-major) and `b` rows of activations `x [b, in]` (f32, 1 ≤ b ≤ 8),
//! giving `y [b, out]` in f32. Every weight row is read once for all `b` rows of `x`, so the op moves
//! the matrix once and runs at memory bandwidth.
//!
//! - [`gemv`] / [`gemv_into`]: one matrix, with an optional bias `[out]` (any float dtype) and an
//!   optional f32 residual `[b, out]` added in the epilogue, then an optional soft cap `cap·tanh(y/cap)`
//!   (a final logit soft cap). The residual may be the output tensor itself (`y += w·x`, the transformer's
//!   residual add).
//! - [`gemv_multi`] / [`gemv_multi_into`]: up to six matrices that share `x` (Q, K and V; xLSTM's q, k, v,
//!   o, ĩ, f̃) in one dispatch, each with its own optional bias and its own output. More than three need an
//!   adapter with 22 storage buffers per shader stage; with fewer they run as two dispatches.
//! - [`gemv_gated`] / [`gemv_gated_into`]: `y = act(w_gate·x) ⊙ (w_up·x)` with SiLU (SwiGLU) or GELU-tanh
//!   (GeGLU), the gate/up half of a gated MLP, without writing the two products out.
//!
//! - [`gemv_normed`], [`gemv_multi_normed`], [`gemv_gated_normed`]: the same with an input RMSNorm of `x` fused in
//!   (`rmsnorm(x)·W = (x ⊙ w)·W / sqrt(mean(x²) + eps)`: each workgroup sums x² on its way through `x`
//!   and scales its dot products at the end), so decode needs no separate norm launch.
//! - [`gemv_qkv_rope`]: a decode step's normed Q, K, V projections that also rotate Q and K (RoPE) and
//!   write K and V into the KV cache, so attention follows with no launch between (kernels/gemv_rope.wgsl).
//!
//! Each has a `*_with(.., GemvOptions)` twin that can force the GPU kernel ([`GemvKernel`]).
//!
//! Shapes: `x` is any tensor whose last dimension is `in` and whose other dimensions multiply to `b`
//! (`[in]` is `b = 1`); the output has the shape of `x` with the last dimension replaced by `out`. An
//! output given to an `_into` function must be f32 with last dimension `out` and `b·out` elements.
//!
//! GPU: one workgroup owns a few output rows; its threads stride along the row with `vec4<u32>` loads (4
//! f32 or 8 16-bit weights), read `x` through the cache, accumulate in f32 registers and reduce with
//! `subgroupAdd` (kernels/gemv.wgsl + reduce_subgroup.wgsl) or a workgroup-memory tree (kernels/gemv.wgsl +
//! reduce_workgroup.wgsl, for adapters without subgroups). Rows whose length is not a multiple of 8 (4 for
//! f32) take a slower element-wise path chosen per call. A matrix larger than the adapter's largest storage
//! binding is rejected with [`KernelError::BindingTooLarge`] (the dispatch layer binds whole buffers only).
//!
//! CPU: rayon over output rows, 16-bit weights converted to f32 a block at a time, f32 accumulation.

use rayon::prelude::*;

use super::{common_backend, require_dtype, require_float, to_u32};
use crate::backend::Backend;
use crate::cpu::{self, Floats};
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::gpu::{Dispatch, GpuContext, Workgroups};
use crate::ops::elementwise::{gelu_tanh, silu};
use crate::ops::norm::{self, RmsNormVariant};
use crate::ops::rope::{KvWrite, RopeTable};
use crate::tensor::Tensor;

// Up to three matrices (13 storage buffers with the RoPE table) and up to six (22).
crate::kernel_source!(GEMV, "gemv", ["rope_angle", "gemv_rope", "gemv", "gemv_parts3", "reduce_workgroup"]);
crate::kernel_source!(
    GEMV_SUBGROUP,
    "gemv_subgroup",
    ["rope_angle", "gemv_rope", "gemv", "gemv_parts3", "reduce_subgroup"]
);
crate::kernel_source!(GEMV6, "gemv6", ["rope_angle", "gemv_rope", "gemv", "gemv_parts6", "reduce_workgroup"]);
crate::kernel_source!(
    GEMV6_SUBGROUP,
    "gemv6_subgroup",
    ["rope_angle", "gemv_rope", "gemv", "gemv_parts6", "reduce_subgroup"]
);

/// The most rows of `x` one call takes.
pub const MAX_BATCH: usize = 8;
/// The most matrices [`gemv_multi`] takes, fused into one dispatch where the adapter allows
/// [`WIDE_STORAGE_BINDINGS`] storage buffers per shader stage (else in dispatches of [`NARROW_PARTS`]).
pub const MAX_PARTS: usize = 6;
/// The most matrices of one dispatch of the narrow kernel (gemv_parts3.wgsl).
pub const NARROW_PARTS: usize = 3;
/// Storage buffers of the narrow kernel: x, residual, norm weight, per matrix its weights, bias and
/// output, and the RoPE table.
const NARROW_STORAGE_BINDINGS: u32 = 4 + 3 * NARROW_PARTS as u32;
/// Storage buffers of the wide kernel (gemv_parts6.wgsl): the same for six matrices.
pub const WIDE_STORAGE_BINDINGS: u32 = 4 + 3 * MAX_PARTS as u32;

/// The epilogue flags of gemv.wgsl and qgemv.wgsl: the bias of matrix m (bit m, m < 6), a residual bound
/// of its own, the output accumulated in place (the residual is the output), the soft cap.
pub(crate) fn epilogue_flags(
    has_bias: impl IntoIterator<Item = bool>,
    residual: bool,
    accumulate: bool,
    soft_cap: bool,
) -> u32 {
    const F_BIAS0: u32 = 1;
    const F_RES: u32 = 64;
    const F_ACCUM: u32 = 128;
    const F_SOFTCAP: u32 = 256;
    let mut flags = 0;
    for (m, b) in has_bias.into_iter().enumerate() {
        if b {
            flags |= F_BIAS0 << m;
        }
    }
    if residual {
        flags |= F_RES;
    }
    if accumulate {
        flags |= F_ACCUM;
    }
    if soft_cap {
        flags |= F_SOFTCAP;
    }
    flags
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    in_len: u32,
    in_vec: u32,
    x_vec: u32,
    flags: u32,
    n: [u32; MAX_PARTS],
    /// First workgroup of matrices 1..6.
    g: [u32; MAX_PARTS - 1],
    n_groups: u32,
    eps: f32,
    cap: f32,
    pos: u32,
    head_dim: u32,
    rope_stride: u32,
    rope_scale: f32,
    _pad: [u32; 2],
}

/// Which GPU kernel runs: the subgroup one where the adapter has subgroups (`Auto`), or a forced one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GemvKernel {
    #[default]
    Auto,
    /// `subgroupAdd` reduction; a [`KernelError::MissingFeature`] on adapters without subgroups.
    Subgroup,
    /// Workgroup-memory tree reduction; runs everywhere.
    Workgroup,
}

/// What [`gemv`] does to `w·x` before writing: adds a bias `[out]` (f32, f16 or bf16) broadcast over the
/// rows of `x` and an f32 residual shaped like the output, which may be the output tensor itself; then,
/// with `soft_cap`, maps each value y to `cap·tanh(y / cap)` (Gemma 2's and xLSTM's final logit soft cap).
#[derive(Clone, Copy, Debug, Default)]
pub struct GemvEpilogue<'a> {
    pub bias: Option<&'a Tensor>,
    pub residual: Option<&'a Tensor>,
    /// A positive finite cap.
    pub soft_cap: Option<f32>,
}

impl<'a> GemvEpilogue<'a> {
    /// Only a bias (or none).
    pub fn bias(bias: Option<&'a Tensor>) -> GemvEpilogue<'a> {
        GemvEpilogue { bias, ..Default::default() }
    }

    /// Only a residual (`Some(out)` accumulates into the output).
    pub fn residual(residual: &'a Tensor) -> GemvEpilogue<'a> {
        GemvEpilogue { residual: Some(residual), ..Default::default() }
    }

    /// The soft cap must be positive and finite.
    pub(crate) fn check_soft_cap(&self, op: &'static str) -> Result<()> {
        match self.soft_cap {
            Some(cap) if !(cap.is_finite() && cap > 0.0) => Err(KernelError::Argument {
                op,
                name: "soft_cap",
                value: cap.to_string(),
                reason: "must be a positive finite number".into(),
            }),
            _ => Ok(()),
        }
    }
}

/// `cap·tanh(y / cap)`, or `y` without a cap (the CPU epilogue's last step).
pub(crate) fn soft_cap(y: f32, cap: Option<f32>) -> f32 {
    match cap {
        Some(c) => c * (y / c).tanh(),
        None => y,
    }
}

/// One matrix of [`gemv_multi`]: `w [n, in]` and an optional bias `[n]`.
#[derive(Clone, Copy, Debug)]
pub struct GemvPart<'a> {
    pub w: &'a Tensor,
    pub bias: Option<&'a Tensor>,
}

/// An RMSNorm applied to `x` before the products ([`gemv_multi_normed`], [`gemv_gated_normed`]).
#[derive(Clone, Copy, Debug)]
pub struct InputNorm<'a> {
    /// `[in]`, any float dtype.
    pub weight: &'a Tensor,
    pub eps: f32,
    pub variant: RmsNormVariant,
}

/// The activation of [`gemv_gated`]'s gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatedAct {
    /// SwiGLU: silu(gate) · up (Llama, Mistral, Qwen).
    Silu,
    /// GeGLU: gelu_tanh(gate) · up (Gemma).
    GeluTanh,
}

impl GatedAct {
    pub fn apply(self, g: f32) -> f32 {
        match self {
            GatedAct::Silu => silu(g),
            GatedAct::GeluTanh => gelu_tanh(g),
        }
    }

    pub fn reference(self, g: f64) -> f64 {
        use crate::ops::elementwise::Unary;
        match self {
            GatedAct::Silu => Unary::Silu.reference(g),
            GatedAct::GeluTanh => Unary::Gelu.reference(g),
        }
    }

    fn code(self) -> f64 {
        match self {
            GatedAct::Silu => 0.0,
            GatedAct::GeluTanh => 1.0,
        }
    }
}

/// Launch shape of the GPU kernel: threads per workgroup and output rows per workgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tune {
    pub wg: u32,
    pub rows: u32,
}

/// How a call runs on the GPU (ignored on the CPU); `Default` is what [`gemv`] and friends use.
#[derive(Clone, Copy, Debug, Default)]
pub struct GemvOptions {
    pub kernel: GemvKernel,
    /// The launch shape; `None` picks it from the call's shape (tests force others).
    pub(crate) tune: Option<Tune>,
    /// Forces the narrow kernel (at most three matrices per dispatch), as on an adapter with fewer than
    /// [`WIDE_STORAGE_BINDINGS`] storage buffers (tests).
    pub(crate) narrow: bool,
}

impl GemvOptions {
    pub fn with_kernel(kernel: GemvKernel) -> GemvOptions {
        GemvOptions { kernel, ..Default::default() }
    }
}

// ---- public API -----------------------------------------------------------------------------------

/// `w·x (+ bias) (+ residual)` into a new f32 tensor shaped like `x` with last dimension `w.shape()[0]`.
pub fn gemv(w: &Tensor, x: &Tensor, epilogue: GemvEpilogue<'_>) -> Result<Tensor> {
    let out = new_output("gemv", x, w)?;
    gemv_into(w, x, epilogue, &out)?;
    Ok(out)
}

/// `w·x (+ bias) (+ residual)` into `out` (f32, `b·out` elements, last dimension `out`). `out` may be the
/// residual (`y += w·x`) but no other input.
pub fn gemv_into(w: &Tensor, x: &Tensor, epilogue: GemvEpilogue<'_>, out: &Tensor) -> Result<()> {
    gemv_into_with(w, x, epilogue, out, GemvOptions::default())
}

/// Up to [`MAX_PARTS`] products `w_k·x (+ bias_k)` in one pass over `x` (Q, K and V projections), each
/// into a new f32 tensor shaped like `x` with last dimension `w_k.shape()[0]`, in the order of `parts`.
pub fn gemv_multi(x: &Tensor, parts: &[GemvPart<'_>]) -> Result<Vec<Tensor>> {
    let outs = parts.iter().map(|p| new_output("gemv_multi", x, p.w)).collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Tensor> = outs.iter().collect();
    gemv_multi_into(x, parts, &refs)?;
    Ok(outs)
}

/// [`gemv_multi`] into preallocated outputs, one per part, all distinct.
pub fn gemv_multi_into(x: &Tensor, parts: &[GemvPart<'_>], outs: &[&Tensor]) -> Result<()> {
    gemv_multi_into_with(x, parts, outs, GemvOptions::default())
}

/// `act(w_gate·x) ⊙ (w_up·x)` for `w_gate, w_up [ffn, in]` into a new f32 tensor `[b, ffn]` (shaped like
/// `x` with last dimension `ffn`).
pub fn gemv_gated(w_gate: &Tensor, w_up: &Tensor, x: &Tensor, act: GatedAct) -> Result<Tensor> {
    let out = new_output("gemv_gated", x, w_gate)?;
    gemv_gated_into(w_gate, w_up, x, act, &out)?;
    Ok(out)
}

/// [`gemv_gated`] into a preallocated f32 output.
pub fn gemv_gated_into(w_gate: &Tensor, w_up: &Tensor, x: &Tensor, act: GatedAct, out: &Tensor) -> Result<()> {
    gemv_gated_into_with(w_gate, w_up, x, act, out, GemvOptions::default())
}

// ---- validation and dispatch ----------------------------------------------------------------------

/// [`gemv_into`] with options.
pub fn gemv_into_with(
    w: &Tensor,
    x: &Tensor,
    epilogue: GemvEpilogue<'_>,
    out: &Tensor,
    launch: GemvOptions,
) -> Result<()> {
    single_impl(w, x, None, epilogue, out, launch)
}

/// `rmsnorm(x)·w (+ bias) (+ residual)`, soft-capped if asked, into a new f32 tensor shaped like `x` with
/// last dimension `w.shape()[0]`: the norm fused into the product (a model's final norm and LM head).
pub fn gemv_normed(w: &Tensor, x: &Tensor, norm: InputNorm<'_>, epilogue: GemvEpilogue<'_>) -> Result<Tensor> {
    let out = new_output("gemv", x, w)?;
    single_impl(w, x, Some(norm), epilogue, &out, GemvOptions::default())?;
    Ok(out)
}

fn single_impl(
    w: &Tensor,
    x: &Tensor,
    norm: Option<InputNorm<'_>>,
    epilogue: GemvEpilogue<'_>,
    out: &Tensor,
    launch: GemvOptions,
) -> Result<()> {
    let op = "gemv";
    epilogue.check_soft_cap(op)?;
    let (batch, in_len) = check_x(op, x)?;
    let rows = check_w(op, "w", w, in_len)?;
    let mat = Mat { w, bias: epilogue.bias, rows };
    check_bias(op, &mat)?;
    check_out(op, "out", out, batch, rows)?;
    let residual = match epilogue.residual {
        Some(r) => {
            require_dtype(op, r, DType::F32)?;
            check_rows_cols(op, "residual", r, batch, rows)?;
            Some(r)
        }
        None => None,
    };
    let soft_cap = epilogue.soft_cap;
    let job = Job {
        op,
        x,
        batch,
        in_len,
        mats: vec![mat],
        outs: vec![out],
        gated: None,
        residual,
        soft_cap,
        norm,
        rope: None,
    };
    job.check_aliasing()?;
    job.run(launch)
}

/// [`gemv_multi_into`] with options.
pub fn gemv_multi_into_with(x: &Tensor, parts: &[GemvPart<'_>], outs: &[&Tensor], launch: GemvOptions) -> Result<()> {
    multi_impl(x, None, parts, outs, launch)
}

/// [`gemv_multi`] of `rmsnorm(x)`: the norm fused into the products.
pub fn gemv_multi_normed(x: &Tensor, norm: InputNorm<'_>, parts: &[GemvPart<'_>]) -> Result<Vec<Tensor>> {
    let outs = parts.iter().map(|p| new_output("gemv_multi", x, p.w)).collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Tensor> = outs.iter().collect();
    multi_impl(x, Some(norm), parts, &refs, GemvOptions::default())?;
    Ok(outs)
}

/// A decode step's Q, K and V projections of `rmsnorm(x)` (`parts`: Wq, Wk, Wv and their optional biases)
/// with RoPE and the KV-cache write fused in: returns Q rotated, f32 `[b, rows of Wq]`, and stores K
/// rotated and V into rows `pos..pos + b` of the caches. What [`gemv_multi_normed`] followed by
/// [`rope_qk_store_kv`](super::rope::rope_qk_store_kv) do, in one GPU dispatch where every dim of a head
/// rotates and the rows are whole vec4 chunks; through those two ops otherwise (and on the CPU).
pub fn gemv_qkv_rope(x: &Tensor, norm: InputNorm<'_>, parts: [GemvPart<'_>; 3], kv: KvWrite<'_>) -> Result<Tensor> {
    const OP: &str = "gemv_qkv_rope";
    let (batch, in_len) = check_x(OP, x)?;
    let mut mats = Vec::with_capacity(3);
    for (k, part) in parts.iter().enumerate() {
        let rows = check_w(OP, PART_NAMES[k], part.w, in_len)?;
        if part.w.dtype() != parts[0].w.dtype() {
            return Err(KernelError::DType { op: OP, expected: parts[0].w.dtype().to_string(), found: part.w.dtype() });
        }
        let mat = Mat { w: part.w, bias: part.bias, rows };
        check_bias(OP, &mat)?;
        mats.push(mat);
    }
    let hd = kv.check(OP, mats[0].rows, mats[1].rows, mats[2].rows, batch)?;
    let biases: Vec<DType> = mats.iter().filter_map(|m| m.bias.map(|b| b.dtype())).collect();
    let per_vec4 = if mats[0].w.dtype() == DType::F32 { 4 } else { 8 };
    let fusable =
        x.is_gpu() && kv.fusable() && in_len.is_multiple_of(per_vec4) && biases.windows(2).all(|d| d[0] == d[1]);
    if !fusable {
        let mut outs = gemv_multi_normed(x, norm, &parts)?.into_iter();
        let mut next = || outs.next().expect("one output per part");
        let (q, k, v) = (next(), next(), next());
        kv.rope_and_store(&q, &k, &v, batch, hd)?;
        return Ok(q);
    }
    let q = new_output(OP, x, parts[0].w)?;
    let job = Job {
        op: OP,
        x,
        batch,
        in_len,
        mats,
        outs: vec![&q, kv.k_cache, kv.v_cache],
        gated: None,
        residual: None,
        soft_cap: None,
        norm: Some(norm),
        rope: Some(RopeOut { table: kv.table, pos: kv.pos, cache: kv.k_cache.dtype() }),
    };
    job.check_aliasing()?;
    kv.check_distinct(OP, &job.inputs())?;
    job.run(GemvOptions::default())?;
    Ok(q)
}

/// [`gemv_gated`] of `rmsnorm(x)`: the norm fused into the products.
pub fn gemv_gated_normed(
    w_gate: &Tensor,
    w_up: &Tensor,
    x: &Tensor,
    norm: InputNorm<'_>,
    act: GatedAct,
) -> Result<Tensor> {
    let out = new_output("gemv_gated", x, w_gate)?;
    gated_impl(w_gate, w_up, x, Some(norm), act, &out, GemvOptions::default())?;
    Ok(out)
}

fn multi_impl(
    x: &Tensor,
    norm: Option<InputNorm<'_>>,
    parts: &[GemvPart<'_>],
    outs: &[&Tensor],
    launch: GemvOptions,
) -> Result<()> {
    let op = "gemv_multi";
    if parts.is_empty() || parts.len() > MAX_PARTS {
        return Err(KernelError::Argument {
            op,
            name: "parts",
            value: parts.len().to_string(),
            reason: format!("between 1 and {MAX_PARTS} matrices share x in one call"),
        });
    }
    if outs.len() != parts.len() {
        return Err(KernelError::Argument {
            op,
            name: "outs",
            value: outs.len().to_string(),
            reason: format!("one output per part: expected {}", parts.len()),
        });
    }
    let (batch, in_len) = check_x(op, x)?;
    let mut mats = Vec::with_capacity(parts.len());
    for (k, part) in parts.iter().enumerate() {
        let rows = check_w(op, PART_NAMES[k], part.w, in_len)?;
        if part.w.dtype() != parts[0].w.dtype() {
            return Err(KernelError::DType { op, expected: parts[0].w.dtype().to_string(), found: part.w.dtype() });
        }
        let mat = Mat { w: part.w, bias: part.bias, rows };
        check_bias(op, &mat)?;
        check_out(op, "outs", outs[k], batch, rows)?;
        mats.push(mat);
    }
    let bias_dtypes: Vec<DType> = mats.iter().filter_map(|m| m.bias.map(|b| b.dtype())).collect();
    if let Some(&first) = bias_dtypes.first()
        && let Some(&other) = bias_dtypes.iter().find(|&&d| d != first)
    {
        return Err(KernelError::DType { op, expected: format!("{first} (one dtype for every bias)"), found: other });
    }
    let outs = outs.to_vec();
    let job = Job { op, x, batch, in_len, mats, outs, gated: None, residual: None, soft_cap: None, norm, rope: None };
    job.check_aliasing()?;
    job.run(launch)
}

/// [`gemv_gated_into`] with options.
pub fn gemv_gated_into_with(
    w_gate: &Tensor,
    w_up: &Tensor,
    x: &Tensor,
    act: GatedAct,
    out: &Tensor,
    launch: GemvOptions,
) -> Result<()> {
    gated_impl(w_gate, w_up, x, None, act, out, launch)
}

fn gated_impl(
    w_gate: &Tensor,
    w_up: &Tensor,
    x: &Tensor,
    norm: Option<InputNorm<'_>>,
    act: GatedAct,
    out: &Tensor,
    launch: GemvOptions,
) -> Result<()> {
    let op = "gemv_gated";
    let (batch, in_len) = check_x(op, x)?;
    let rows = check_w(op, "w_gate", w_gate, in_len)?;
    let up_rows = check_w(op, "w_up", w_up, in_len)?;
    if up_rows != rows {
        return Err(KernelError::Shape {
            op,
            detail: format!("w_gate {:?} and w_up {:?} must have the same shape", w_gate.shape(), w_up.shape()),
        });
    }
    if w_up.dtype() != w_gate.dtype() {
        return Err(KernelError::DType { op, expected: w_gate.dtype().to_string(), found: w_up.dtype() });
    }
    check_out(op, "out", out, batch, rows)?;
    let mats = vec![Mat { w: w_gate, bias: None, rows }, Mat { w: w_up, bias: None, rows }];
    let (gated, outs) = (Some(act), vec![out]);
    let job = Job { op, x, batch, in_len, mats, outs, gated, residual: None, soft_cap: None, norm, rope: None };
    job.check_aliasing()?;
    job.run(launch)
}

const PART_NAMES: [&str; MAX_PARTS] =
    ["parts[0].w", "parts[1].w", "parts[2].w", "parts[3].w", "parts[4].w", "parts[5].w"];

fn new_output(op: &'static str, x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let rows = w.shape().first().copied().unwrap_or(0);
    let mut shape = x.shape().to_vec();
    match shape.last_mut() {
        Some(last) => *last = rows,
        None => shape.push(rows),
    }
    Tensor::uninit(&x.backend(), op, &shape, DType::F32)
}

/// `x` must be f32 with 1..=8 rows; returns (b, in).
fn check_x(op: &'static str, x: &Tensor) -> Result<(usize, usize)> {
    require_dtype(op, x, DType::F32)?;
    let (batch, in_len) = x.rows_cols();
    if in_len == 0 {
        return Err(KernelError::Empty { op, what: "x" });
    }
    if batch == 0 || batch > MAX_BATCH {
        return Err(KernelError::Argument {
            op,
            name: "batch",
            value: batch.to_string(),
            reason: format!("x {:?} must have between 1 and {MAX_BATCH} rows", x.shape()),
        });
    }
    Ok((batch, in_len))
}

/// `w` must be a float matrix [rows, in]; returns rows.
fn check_w(op: &'static str, name: &'static str, w: &Tensor, in_len: usize) -> Result<usize> {
    require_float(op, w)?;
    let &[rows, cols] = w.shape() else {
        return Err(KernelError::Shape {
            op,
            detail: format!("{name} must be a matrix [out, in], found shape {:?}", w.shape()),
        });
    };
    if rows == 0 || cols == 0 {
        return Err(KernelError::Empty { op, what: name });
    }
    if cols != in_len {
        return Err(KernelError::Shape {
            op,
            detail: format!(
                "inner dimensions differ: {name} {:?} has in = {cols}, x has rows of {in_len} elements",
                w.shape()
            ),
        });
    }
    Ok(rows)
}

fn check_bias(op: &'static str, m: &Mat<'_>) -> Result<()> {
    if let Some(b) = m.bias {
        require_float(op, b)?;
        if b.numel() != m.rows {
            return Err(KernelError::Shape {
                op,
                detail: format!("bias {:?} must have {} elements (the rows of w {:?})", b.shape(), m.rows, m.w.shape()),
            });
        }
    }
    Ok(())
}

fn check_rows_cols(op: &'static str, name: &str, t: &Tensor, batch: usize, rows: usize) -> Result<()> {
    if t.rows_cols() != (batch, rows) || t.numel() != batch * rows {
        return Err(KernelError::Shape {
            op,
            detail: format!("{name} {:?} must hold [{batch}, {rows}] (b rows of x by rows of w)", t.shape()),
        });
    }
    Ok(())
}

fn check_out(op: &'static str, name: &str, out: &Tensor, batch: usize, rows: usize) -> Result<()> {
    require_dtype(op, out, DType::F32)?;
    check_rows_cols(op, name, out, batch, rows)
}

#[derive(Clone, Copy)]
struct Mat<'a> {
    w: &'a Tensor,
    bias: Option<&'a Tensor>,
    rows: usize,
}

struct Job<'a> {
    op: &'static str,
    x: &'a Tensor,
    batch: usize,
    in_len: usize,
    /// 1..=6 matrices; gated: [gate, up].
    mats: Vec<Mat<'a>>,
    /// One per matrix; gated: one.
    outs: Vec<&'a Tensor>,
    gated: Option<GatedAct>,
    /// Plain gemv only; may be `outs[0]` itself.
    residual: Option<&'a Tensor>,
    /// Plain gemv only: cap·tanh(y / cap) last.
    soft_cap: Option<f32>,
    /// Multi and gated only: RMSNorm of x first.
    norm: Option<InputNorm<'a>>,
    /// [`gemv_qkv_rope`] only (GPU): outs[1] and outs[2] are the KV caches.
    rope: Option<RopeOut<'a>>,
}

/// The RoPE epilogue of a fused Q, K, V dispatch (kernels/gemv_rope.wgsl).
#[derive(Clone, Copy)]
struct RopeOut<'a> {
    table: &'a RopeTable,
    pos: usize,
    /// The KV caches' dtype.
    cache: DType,
}

/// A fused input norm's weight has `in_len` float elements and its eps is finite and non-negative.
pub(crate) fn check_input_norm(op: &'static str, n: InputNorm<'_>, in_len: usize) -> Result<()> {
    require_float(op, n.weight)?;
    if n.weight.numel() != in_len {
        return Err(KernelError::Shape {
            op,
            detail: format!("norm weight {:?} must have {in_len} elements (the rows of x)", n.weight.shape()),
        });
    }
    if !(n.eps.is_finite() && n.eps >= 0.0) {
        return Err(KernelError::Argument {
            op,
            name: "eps",
            value: n.eps.to_string(),
            reason: "must be finite and non-negative".into(),
        });
    }
    Ok(())
}

impl Job<'_> {
    fn check_norm(&self, n: InputNorm<'_>) -> Result<()> {
        check_input_norm(self.op, n, self.in_len)
    }

    fn inputs(&self) -> Vec<&Tensor> {
        let mut v = vec![self.x];
        v.extend(self.norm.map(|n| n.weight));
        for m in &self.mats {
            v.push(m.w);
            v.extend(m.bias);
        }
        v
    }

    fn check_aliasing(&self) -> Result<()> {
        let inputs = self.inputs();
        for (k, out) in self.outs.iter().enumerate() {
            if inputs.iter().any(|t| out.same_storage(t)) {
                return Err(KernelError::Argument {
                    op: self.op,
                    name: "out",
                    value: "an input".into(),
                    reason: "the output must not share storage with x, a weight or a bias".into(),
                });
            }
            if self.outs[..k].iter().any(|o| out.same_storage(o)) {
                return Err(KernelError::Argument {
                    op: self.op,
                    name: "outs",
                    value: format!("outs[{k}]"),
                    reason: "every output must be a separate tensor".into(),
                });
            }
        }
        Ok(())
    }

    fn run(&self, launch: GemvOptions) -> Result<()> {
        if let Some(n) = self.norm {
            self.check_norm(n)?;
            // The fused prologue reads x in whole chunks on the GPU; elsewhere the norm runs first.
            let per_vec4 = if self.mats[0].w.dtype() == DType::F32 { 4 } else { 8 };
            if !self.x.is_gpu() || !self.in_len.is_multiple_of(per_vec4) {
                let xn = norm::rmsnorm(self.x, n.weight, n.eps, n.variant)?;
                let job = Job { x: &xn, norm: None, mats: self.mats.clone(), outs: self.outs.clone(), ..*self };
                return job.run(launch);
            }
        }
        let mut all = self.inputs();
        all.extend(self.outs.iter().copied());
        all.extend(self.residual);
        match common_backend(self.op, &all)? {
            Backend::Cpu => {
                self.run_cpu();
                Ok(())
            }
            Backend::Gpu(ctx) => self.run_gpu(&ctx, launch),
        }
    }

    // ---- CPU ----

    fn run_cpu(&self) {
        let x = cpu::read_f32(self.x);
        let (b, in_len) = (self.batch, self.in_len);
        if let Some(act) = self.gated {
            let (gate, up) = (&self.mats[0], &self.mats[1]);
            let gw = gate.w.cpu_words().expect("CPU tensor");
            let uw = up.w.cpu_words().expect("CPU tensor");
            let (gv, uv) = (Floats::of(gate.w, &gw), Floats::of(up.w, &uw));
            let per_row: Vec<[f32; MAX_BATCH]> = (0..gate.rows)
                .into_par_iter()
                .with_min_len(16)
                .map(|o| {
                    let g = row_dots(gv, o, in_len, &x, b);
                    let u = row_dots(uv, o, in_len, &x, b);
                    std::array::from_fn(|r| act.apply(g[r]) * u[r])
                })
                .collect();
            drop((gw, uw));
            cpu::write_f32(self.outs[0], &scatter(&per_row, b));
            return;
        }
        let residual = self.residual.map(cpu::read_f32);
        for (k, m) in self.mats.iter().enumerate() {
            let words = m.w.cpu_words().expect("CPU tensor");
            let view = Floats::of(m.w, &words);
            let per_row: Vec<[f32; MAX_BATCH]> =
                (0..m.rows).into_par_iter().with_min_len(16).map(|o| row_dots(view, o, in_len, &x, b)).collect();
            drop(words);
            let mut y = scatter(&per_row, b);
            if let Some(bias) = m.bias.map(cpu::read_f32) {
                for row in y.chunks_exact_mut(m.rows) {
                    row.iter_mut().zip(&bias).for_each(|(v, c)| *v += c);
                }
            }
            if let Some(res) = &residual {
                y.iter_mut().zip(res).for_each(|(v, r)| *v += r);
            }
            if self.soft_cap.is_some() {
                y.iter_mut().for_each(|v| *v = soft_cap(*v, self.soft_cap));
            }
            cpu::write_f32(self.outs[k], &y);
        }
    }

    // ---- GPU ----

    fn run_gpu(&self, ctx: &GpuContext, launch: GemvOptions) -> Result<()> {
        let op = self.op;
        let subgroup = match launch.kernel {
            GemvKernel::Auto => ctx.has_subgroups(),
            GemvKernel::Workgroup => false,
            GemvKernel::Subgroup if ctx.has_subgroups() => true,
            GemvKernel::Subgroup => {
                return Err(KernelError::MissingFeature { op, feature: "subgroups", adapter: ctx.info().name.clone() });
            }
        };
        super::require_storage_buffers(ctx, op, NARROW_STORAGE_BINDINGS, "13 storage buffers per shader stage")?;
        // More than three matrices: one dispatch of the wide kernel where the adapter allows its bindings,
        // else the narrow kernel on the first three, then on the rest.
        let wide = self.mats.len() > NARROW_PARTS;
        if wide && (launch.narrow || ctx.limits().max_storage_buffers_per_shader_stage < WIDE_STORAGE_BINDINGS) {
            let (m0, m1) = self.mats.split_at(NARROW_PARTS);
            let (o0, o1) = self.outs.split_at(NARROW_PARTS);
            for (mats, outs) in [(m0, o0), (m1, o1)] {
                let job = Job { mats: mats.to_vec(), outs: outs.to_vec(), ..*self };
                job.run_gpu(ctx, launch)?;
            }
            return Ok(());
        }
        let parts = if wide { MAX_PARTS } else { NARROW_PARTS };
        let gated = self.gated.is_some();
        let dtype = self.mats[0].w.dtype();
        let per_vec4 = if dtype == DType::F32 { 4 } else { 8 };
        let vec = self.in_len.is_multiple_of(per_vec4);
        let kind = match (gated, self.norm.is_some() && self.mats.len() > 1) {
            (true, _) => TuneKind::Gated,
            (false, true) => TuneKind::NormedMulti,
            (false, false) => TuneKind::Plain,
        };
        let tune = match launch.tune {
            Some(t) => t,
            None => env_tune()?.unwrap_or_else(|| auto_tune(self.batch, self.in_len, dtype, self.total_rows(), kind)),
        };
        let mut tune = clamp_tune(tune);
        // RoPE: whole rotation pairs (and a 16-bit cache's whole words).
        if let Some(r) = self.rope {
            tune.rows = r.table.config().layout.epilogue_slots(r.cache, tune.rows);
        }

        let buf = |t: &Tensor| -> Result<wgpu::Buffer> {
            let b = t.gpu_buffer().expect("GPU tensor");
            ctx.check_binding(op, b.size())?;
            Ok(b.raw().clone())
        };
        let xb = buf(self.x)?;
        let ws = self.mats.iter().map(|m| buf(m.w)).collect::<Result<Vec<_>>>()?;
        let biases = self.mats.iter().map(|m| m.bias.map(buf).transpose()).collect::<Result<Vec<_>>>()?;
        let ys = self.outs.iter().map(|t| buf(t)).collect::<Result<Vec<_>>>()?;
        let nwb = match self.norm {
            Some(n) => buf(n.weight)?,
            None => xb.clone(),
        };
        let (res, accumulate) = match self.residual {
            Some(r) if r.same_storage(self.outs[0]) => (None, true),
            Some(r) => (Some(buf(r)?), false),
            None => (None, false),
        };

        // Workgroups per matrix: [0, g[0]) matrix 0, [g[0], g[1]) matrix 1, ..., [g[k-1], n) matrix k.
        let rows_per = tune.rows as usize;
        let groups: Vec<usize> = if gated {
            vec![self.mats[0].rows.div_ceil(rows_per)]
        } else {
            self.mats.iter().map(|m| m.rows.div_ceil(rows_per)).collect()
        };
        let n_groups = to_u32(op, "workgroups", groups.iter().sum())?;
        let mut g = [0u32; MAX_PARTS - 1];
        let mut n = [0u32; MAX_PARTS];
        let mut first = 0usize;
        for (k, &count) in groups.iter().enumerate() {
            if k > 0 {
                g[k - 1] = to_u32(op, "workgroups", first)?;
            }
            first += count;
        }
        for (k, m) in self.mats.iter().enumerate() {
            n[k] = to_u32(op, "rows", m.rows)?;
        }
        let flags =
            epilogue_flags(biases.iter().map(Option::is_some), res.is_some(), accumulate, self.soft_cap.is_some());
        // Element indices of the weights must fit a u32.
        for m in &self.mats {
            to_u32(op, "weight elements", m.w.numel())?;
        }
        to_u32(op, "x elements", self.x.numel())?;
        let params = Params {
            in_len: to_u32(op, "in", self.in_len)?,
            in_vec: to_u32(op, "in", self.in_len / per_vec4)?,
            x_vec: to_u32(op, "in", self.in_len / 4)?,
            flags,
            n,
            g,
            n_groups,
            eps: self.norm.map_or(0.0, |n| n.eps),
            cap: self.soft_cap.unwrap_or(1.0),
            pos: self.rope.map_or(Ok(0), |r| to_u32(op, "position", r.pos))?,
            head_dim: self.rope.map_or(0, |r| r.table.config().head_dim as u32),
            rope_stride: self.rope.map_or(0, |r| r.table.tensor().shape()[1] as u32),
            rope_scale: self.rope.map_or(1.0, |r| r.table.config().attention_scaling),
            _pad: [0; 2],
        };

        // Subgroup kernel: one vec4 per (subgroup, accumulator slot); tree: one per thread.
        let slots = self.batch as u32 * if gated { 2 } else { 1 } + if self.norm.is_some() { 2 } else { 0 };
        let red_len = if subgroup {
            let min_sg = ctx.info().subgroup_min_size.max(4);
            tune.wg.div_ceil(min_sg) * slots
        } else {
            tune.wg
        };
        let bias_dt = self.mats.iter().find_map(|m| m.bias).map_or(DType::F32, |b| b.dtype());
        let constants = [
            ("DTYPE", dtype.wgsl_code()),
            ("BIAS_DT", bias_dt.wgsl_code()),
            ("WG", tune.wg as f64),
            ("ROWS", tune.rows as f64),
            ("BATCH", self.batch as f64),
            ("VEC", if vec { 1.0 } else { 0.0 }),
            ("NMAT", self.mats.len() as f64),
            ("GATED", if gated { 1.0 } else { 0.0 }),
            ("ACT", self.gated.map_or(0.0, GatedAct::code)),
            ("RED_LEN", red_len as f64),
            ("NORM", self.norm.map_or(0.0, |n| if n.variant == RmsNormVariant::Gemma { 2.0 } else { 1.0 })),
            ("NW_DT", self.norm.map_or(DType::F32, |n| n.weight.dtype()).wgsl_code()),
            ("ROPE", self.rope.map_or(0.0, |r| r.table.config().layout.epilogue_code())),
            ("CACHE_DT", self.rope.map_or(DType::F32, |r| r.cache).wgsl_code()),
        ];
        let table = self.rope.map(|r| buf(r.table.tensor())).transpose()?;
        // x, residual, norm weight, then per matrix of the kernel its weights, biases and outputs.
        let mut buffers = vec![&xb, res.as_ref().unwrap_or(&xb), &nwb];
        buffers.extend((0..parts).map(|k| ws.get(k).unwrap_or(&ws[0])));
        buffers.extend((0..parts).map(|k| biases.get(k).and_then(Option::as_ref).unwrap_or(&xb)));
        buffers.extend((0..parts).map(|k| ys.get(k).unwrap_or(&ys[0])));
        buffers.push(table.as_ref().unwrap_or(&xb));
        let kernel = match (wide, subgroup) {
            (false, false) => &GEMV,
            (false, true) => &GEMV_SUBGROUP,
            (true, false) => &GEMV6,
            (true, true) => &GEMV6_SUBGROUP,
        };
        ctx.dispatch(Dispatch {
            kernel,
            entry: "main",
            constants: &constants,
            params: Some(bytemuck::bytes_of(&params)),
            buffers: &buffers,
            workgroups: Workgroups::Linear(n_groups),
        })
    }

    /// Output rows of the dispatch (gated: rows of one of its matrices).
    fn total_rows(&self) -> usize {
        if self.gated.is_some() { self.mats[0].rows } else { self.mats.iter().map(|m| m.rows).sum() }
    }
}

/// The launch shape for a call: threads per workgroup and output rows per workgroup. Chosen from a sweep on
/// an H100 (Vulkan) at Llama-3-8B shapes: 128 threads for long rows (fewer for short ones, so each thread has
/// about four chunks), two rows per workgroup for 16-bit b = 1 (one for f32), four once several rows of x
/// share each weight load; fewer rows when the dispatch would otherwise have under 1024 workgroups to
/// spread over the GPU (on an H200, 4092 rows of 4096 bf16 took 11.7 µs with one row a workgroup, 4092
/// workgroups, against 8.5 µs with two and 8.3 µs with four, 1023 workgroups). The gated form at b = 1
/// takes four rows of each matrix: every workgroup reads all of x (and the norm's weight), so more rows a
/// workgroup means less of that traffic per weight byte
/// (Llama-3-8B bf16 decode on an H200: 183.4 tok/s against 179.6 with one row, two rounds). The same holds
/// for the RMS-normed multi-matrix form with 16-bit weights at b = 1 (xLSTM's six projections, 12304 rows
/// at xLSTM-7B): with two rows a workgroup it reads 24 KiB of x and norm weight (in = 4096) beside 16 KiB
/// of weights, 1.5 bytes per weight byte against 1 for a plain GEMV; four rows halve that (xLSTM-7B decode
/// on the H200: 198.2–198.4 tok/s against 195.7–196.0 with two rows, three alternating rounds).
fn auto_tune(batch: usize, in_len: usize, dtype: DType, total_rows: usize, kind: TuneKind) -> Tune {
    let per_vec4 = if dtype == DType::F32 { 4 } else { 8 };
    let chunks = in_len.div_ceil(per_vec4);
    let wg = (chunks / 4).next_power_of_two().clamp(32, 128) as u32;
    let mut rows: u32 = match (batch, kind, dtype) {
        (1, TuneKind::Gated, _) => 4,
        (1, _, DType::F32) => 1,
        (1, TuneKind::NormedMulti, _) => 4,
        (1, ..) | (_, TuneKind::Gated, _) => 2,
        _ => 4,
    };
    while rows > 1 && total_rows.div_ceil(rows as usize) < 1024 {
        rows /= 2;
    }
    Tune { wg, rows }
}

/// What a dispatch's workgroups read besides their weight rows, for [`auto_tune`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TuneKind {
    /// x (and maybe a norm's weight) for the rows of one matrix, or of several without a norm.
    Plain,
    /// x (and maybe a norm's weight) for the same rows of the gate and up matrices.
    Gated,
    /// x and the RMSNorm's weight for rows of one of several matrices.
    NormedMulti,
}

/// The environment variable that forces every GPU GEMV's launch shape, `WG,ROWS` (threads per workgroup,
/// a power of two from 32 to 256; output rows per workgroup, 1..=4), instead of the automatic choice: for
/// benchmark sweeps. Dispatches whose layout needs other rows (RoPE pairs, 16-bit cache words) adjust it.
pub const TUNE_VAR: &str = "TORCHLESS_GEMV_TUNE";

/// The launch shape forced by [`TUNE_VAR`]: `None` when it is unset, an error naming it when malformed.
fn env_tune() -> Result<Option<Tune>> {
    static TUNE: std::sync::OnceLock<std::result::Result<Option<Tune>, String>> = std::sync::OnceLock::new();
    let parsed = super::env_override(&TUNE, TUNE_VAR, |v| {
        let (wg, rows) = v.split_once(',')?;
        let t = Tune { wg: wg.trim().parse().ok()?, rows: rows.trim().parse().ok()? };
        (t.wg.is_power_of_two() && (32..=256).contains(&t.wg) && (1..=4).contains(&t.rows)).then_some(t)
    });
    parsed.map_err(|value| KernelError::Argument {
        op: "gemv",
        name: TUNE_VAR,
        value,
        reason: "must be WG,ROWS: WG a power of two from 32 to 256, ROWS from 1 to 4 (or unset)".into(),
    })
}

/// Keeps a tune inside the kernel's limits: a power-of-two workgroup of 32..=256 threads, 1..=4 rows.
fn clamp_tune(t: Tune) -> Tune {
    Tune { wg: t.wg.clamp(32, 256).next_power_of_two().min(256), rows: t.rows.clamp(1, 4) }
}

/// Row `o` of the weights dotted with each of the `b` rows of `x`.
fn row_dots(w: Floats<'_>, o: usize, in_len: usize, x: &[f32], b: usize) -> [f32; MAX_BATCH] {
    crate::dense_dot::row_dots(w.slice(o * in_len, in_len), &x[..b * in_len], b)
}

/// Per-row results [rows][b] to the output layout [b, rows].
fn scatter(per_row: &[[f32; MAX_BATCH]], b: usize) -> Vec<f32> {
    let rows = per_row.len();
    let mut y = vec![0f32; b * rows];
    for (o, v) in per_row.iter().enumerate() {
        for r in 0..b {
            y[r * rows + o] = v[r];
        }
    }
    y
}

/// Tolerance of an f32 dot product of length `in_len` whose terms are at most `term` in magnitude: the
/// natural scale of the sum is `term·sqrt(in)`, and rounding adds about `eps·sqrt(in)` of it.
pub fn gemv_tolerance(in_len: usize, term: f64) -> crate::testing::Tolerance {
    let root = (in_len as f64).sqrt();
    crate::testing::Tolerance { atol: 2e-6 * root * (term * root).max(1.0) + 1e-6, rtol: 1e-5 }
}

/// f64 reference of `w·x` for CPU tensors: [b, rows] row-major.
pub fn reference(w: &Tensor, x: &Tensor) -> Vec<f64> {
    let (wv, xv) = (cpu::read_f32(w), cpu::read_f32(x));
    let (rows, in_len) = (w.shape()[0], w.shape()[1]);
    let b = xv.len() / in_len;
    let mut y = vec![0f64; b * rows];
    for r in 0..b {
        for o in 0..rows {
            let (wr, xr) = (&wv[o * in_len..][..in_len], &xv[r * in_len..][..in_len]);
            y[r * rows + o] = wr.iter().zip(xr).map(|(&a, &c)| a as f64 * c as f64).sum();
        }
    }
    y
}

// ---- bench ----------------------------------------------------------------------------------------

/// Bench op names of this family.
pub const BENCH_OPS: &[&str] = &["gemv_f32", "gemv_f16", "gemv_bf16"];

/// The environment variable that sets the row length of the `gemv_*` bench cases (default 4096; 14336 with
/// `--mib 112` gives Llama-3-8B's down projection, 4096 × 14336).
pub const BENCH_COLS_VAR: &str = "TORCHLESS_BENCH_GEMV_COLS";

/// `gemv_*`: b = 1 GEMV with as many rows of the row length (see [`BENCH_COLS_VAR`]) as fill `bytes`
/// (weights + x + y): 14336 rows of 4096 (Llama-3-8B's up projection) at 112 MiB of bf16.
pub fn bench_case(op: &str, bytes: u64) -> Option<Result<crate::bench::BenchCase>> {
    use crate::bench::{BenchCase, random_tensor};
    let dtype = match op {
        "gemv_f32" => DType::F32,
        "gemv_f16" => DType::F16,
        "gemv_bf16" => DType::BF16,
        _ => return None,
    };
    let build = move || -> Result<BenchCase> {
        let name = BENCH_OPS[match dtype {
            DType::F32 => 0,
            DType::F16 => 1,
            _ => 2,
        }];
        let in_len = crate::bench::cols_from_env(name, BENCH_COLS_VAR, 4096, 8)?;
        let es = dtype.size_bytes() as u64;
        let rows = (bytes.saturating_sub(4 * in_len as u64) / (in_len as u64 * es + 4)).max(1) as usize;
        let w = random_tensor(11, &[rows, in_len], dtype, -1.0, 1.0)?;
        let x = random_tensor(12, &[1, in_len], DType::F32, -1.0, 1.0)?;
        Ok(BenchCase {
            op: name,
            dtype,
            shape: format!("[{rows}, {in_len}]·[1, {in_len}]"),
            bytes: rows as u64 * in_len as u64 * es + 4 * in_len as u64 + 4 * rows as u64,
            flops: 2 * rows as u64 * in_len as u64,
            tolerance: gemv_tolerance(in_len, 1.0),
            inputs: vec![w, x],
            run: Box::new(|i| gemv(&i[0], &i[1], GemvEpilogue::default())),
            reference: Box::new(|i| Ok(reference(&i[0], &i[1]))),
        })
    };
    Some(build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Rng, Tolerance, assert_close, round_to, test_backends};

    const SIZES: [usize; 7] = [1, 3, 17, 64, 127, 257, 1000];

    /// The launches a test runs: the CPU once; on the GPU both kernels (the subgroup one where the
    /// adapter has subgroups), each with its automatic launch shape and a forced one with several rows per
    /// workgroup (so the last workgroup of a matrix is partly empty).
    fn launches(backend: &Backend) -> Vec<GemvOptions> {
        match backend {
            Backend::Cpu => vec![GemvOptions::default()],
            Backend::Gpu(ctx) => {
                let mut v = vec![
                    GemvOptions { kernel: GemvKernel::Workgroup, tune: None, narrow: false },
                    GemvOptions { kernel: GemvKernel::Workgroup, tune: Some(Tune { wg: 32, rows: 4 }), narrow: false },
                ];
                if ctx.has_subgroups() {
                    v.push(GemvOptions { kernel: GemvKernel::Subgroup, tune: None, narrow: false });
                    v.push(GemvOptions {
                        kernel: GemvKernel::Subgroup,
                        tune: Some(Tune { wg: 64, rows: 3 }),
                        narrow: false,
                    });
                }
                v
            }
        }
    }

    fn what(backend: &Backend, launch: GemvOptions) -> String {
        match backend {
            Backend::Cpu => "cpu".into(),
            Backend::Gpu(_) => format!("gpu {:?} {:?}", launch.kernel, launch.tune),
        }
    }

    /// Random CPU tensors: w [rows, in] in `dtype` (values in [-1, 1)), x [b, in] f32 in [-1, 1).
    fn inputs(rng: &mut Rng, rows: usize, in_len: usize, b: usize, dtype: DType) -> (Tensor, Tensor) {
        let w = round_to(&rng.vec(rows * in_len, -1.0, 1.0), dtype);
        let x = rng.vec(b * in_len, -1.0, 1.0);
        (
            Tensor::from_f32(&Backend::Cpu, &w, &[rows, in_len], dtype).unwrap(),
            Tensor::from_f32(&Backend::Cpu, &x, &[b, in_len], DType::F32).unwrap(),
        )
    }

    fn on(t: &Tensor, backend: &Backend) -> Tensor {
        t.to_backend(backend).unwrap()
    }

    #[test]
    fn gemv_matches_the_f64_reference_on_ragged_shapes() {
        let mut rng = Rng::new(7);
        let mut case = 0usize;
        for dtype in DType::FLOATS {
            for rows in SIZES {
                for in_len in SIZES {
                    if rows * in_len > 300_000 {
                        continue;
                    }
                    let b = 1 + case % MAX_BATCH;
                    case += 1;
                    let (w, x) = inputs(&mut rng, rows, in_len, b, dtype);
                    let want = reference(&w, &x);
                    for backend in test_backends() {
                        let (wd, xd) = (on(&w, &backend), on(&x, &backend));
                        for launch in launches(&backend) {
                            let out = Tensor::uninit(&backend, "test", &[b, rows], DType::F32).unwrap();
                            gemv_into_with(&wd, &xd, GemvEpilogue::default(), &out, launch).unwrap();
                            let got = out.to_f32_vec().unwrap();
                            let name = format!("gemv {dtype} [{rows}, {in_len}] b={b} on {}", what(&backend, launch));
                            assert_close(&name, &got, &want, gemv_tolerance(in_len, 1.0));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_batch_size_matches_on_aligned_and_odd_rows() {
        let mut rng = Rng::new(8);
        for (dtype, rows, in_len) in [(DType::BF16, 33, 264), (DType::F16, 5, 255), (DType::F32, 9, 131)] {
            for b in 1..=MAX_BATCH {
                let (w, x) = inputs(&mut rng, rows, in_len, b, dtype);
                let want = reference(&w, &x);
                for backend in test_backends() {
                    let (wd, xd) = (on(&w, &backend), on(&x, &backend));
                    for launch in launches(&backend) {
                        let out = Tensor::uninit(&backend, "test", &[b, rows], DType::F32).unwrap();
                        gemv_into_with(&wd, &xd, GemvEpilogue::default(), &out, launch).unwrap();
                        let name = format!("gemv {dtype} [{rows}, {in_len}] b={b} on {}", what(&backend, launch));
                        assert_close(&name, &out.to_f32_vec().unwrap(), &want, gemv_tolerance(in_len, 1.0));
                    }
                }
            }
        }
    }

    #[test]
    fn bias_and_residual_are_added_in_the_epilogue() {
        let mut rng = Rng::new(9);
        for (dtype, rows, in_len, b) in [(DType::BF16, 17, 64, 3), (DType::F16, 127, 257, 2), (DType::F32, 64, 17, 5)] {
            let (w, x) = inputs(&mut rng, rows, in_len, b, dtype);
            let product = reference(&w, &x);
            for bias_dtype in DType::FLOATS {
                let bias_v = round_to(&rng.vec(rows, -1.0, 1.0), bias_dtype);
                let res_v = rng.vec(b * rows, -1.0, 1.0);
                let bias = Tensor::from_f32(&Backend::Cpu, &bias_v, &[rows], bias_dtype).unwrap();
                let res = Tensor::from_slice(&Backend::Cpu, &res_v, &[b, rows]).unwrap();
                for mode in ["bias", "residual", "both", "in place"] {
                    let use_bias = mode != "residual";
                    let use_res = mode != "bias";
                    let want: Vec<f64> = product
                        .iter()
                        .enumerate()
                        .map(|(i, &v)| {
                            v + if use_bias { bias_v[i % rows] as f64 } else { 0.0 }
                                + if use_res { res_v[i] as f64 } else { 0.0 }
                        })
                        .collect();
                    for backend in test_backends() {
                        let (wd, xd, bd) = (on(&w, &backend), on(&x, &backend), on(&bias, &backend));
                        for launch in launches(&backend) {
                            let rd = on(&res, &backend);
                            let out = if mode == "in place" {
                                rd.clone()
                            } else {
                                Tensor::uninit(&backend, "test", &[b, rows], DType::F32).unwrap()
                            };
                            let epilogue = GemvEpilogue {
                                bias: use_bias.then_some(&bd),
                                residual: use_res.then_some(&rd),
                                soft_cap: None,
                            };
                            gemv_into_with(&wd, &xd, epilogue, &out, launch).unwrap();
                            let name = format!(
                                "gemv {dtype} [{rows}, {in_len}] b={b} {mode} (bias {bias_dtype}) on {}",
                                what(&backend, launch)
                            );
                            assert_close(&name, &out.to_f32_vec().unwrap(), &want, gemv_tolerance(in_len, 1.0));
                        }
                    }
                }
            }
        }
    }

    /// With more than three parts, also the narrow kernel in two dispatches (as on an adapter with fewer
    /// than 22 storage buffers per stage).
    fn multi_launches(backend: &Backend, parts: usize) -> Vec<GemvOptions> {
        let mut v = launches(backend);
        if parts > NARROW_PARTS && matches!(backend, Backend::Gpu(_)) {
            let narrow: Vec<GemvOptions> = v.iter().map(|&l| GemvOptions { narrow: true, ..l }).collect();
            v.extend(narrow);
        }
        v
    }

    /// The soft cap comes last, after the bias and the residual (also accumulated in place), and after a
    /// fused input norm ([`gemv_normed`], a model's final norm and LM head).
    #[test]
    fn soft_cap_is_applied_after_bias_and_residual() {
        let mut rng = Rng::new(12);
        let cap_f64 = |v: f64, cap: f32| cap as f64 * (v / cap as f64).tanh();
        for (dtype, rows, in_len, b, cap) in
            [(DType::BF16, 33, 264, 1, 2.0f32), (DType::F16, 17, 255, 3, 30.0), (DType::F32, 64, 128, 8, 1.5)]
        {
            let (w, x) = inputs(&mut rng, rows, in_len, b, dtype);
            let product = reference(&w, &x);
            let bias_v = round_to(&rng.vec(rows, -3.0, 3.0), DType::BF16);
            let res_v = rng.vec(b * rows, -3.0, 3.0);
            let bias = Tensor::from_f32(&Backend::Cpu, &bias_v, &[rows], DType::BF16).unwrap();
            let res = Tensor::from_slice(&Backend::Cpu, &res_v, &[b, rows]).unwrap();
            for mode in ["cap", "bias", "residual", "in place"] {
                let use_bias = mode == "bias" || mode == "in place";
                let use_res = mode == "residual" || mode == "in place";
                let want: Vec<f64> = product
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let v = v
                            + if use_bias { bias_v[i % rows] as f64 } else { 0.0 }
                            + if use_res { res_v[i] as f64 } else { 0.0 };
                        cap_f64(v, cap)
                    })
                    .collect();
                for backend in test_backends() {
                    let (wd, xd, bd) = (on(&w, &backend), on(&x, &backend), on(&bias, &backend));
                    for launch in launches(&backend) {
                        let rd = on(&res, &backend);
                        let out = if mode == "in place" {
                            rd.clone()
                        } else {
                            Tensor::uninit(&backend, "test", &[b, rows], DType::F32).unwrap()
                        };
                        let epilogue = GemvEpilogue {
                            bias: use_bias.then_some(&bd),
                            residual: use_res.then_some(&rd),
                            soft_cap: Some(cap),
                        };
                        gemv_into_with(&wd, &xd, epilogue, &out, launch).unwrap();
                        let name = format!(
                            "gemv {dtype} [{rows}, {in_len}] b={b} soft cap {cap} {mode} on {}",
                            what(&backend, launch)
                        );
                        assert_close(&name, &out.to_f32_vec().unwrap(), &want, gemv_tolerance(in_len, 1.0));
                    }
                }
            }
            // Fused input norm, then the capped product (f64 reference of the normed x).
            for variant in [RmsNormVariant::Standard, RmsNormVariant::Gemma] {
                let nw_v = round_to(&rng.vec(in_len, 0.5, 1.5), DType::BF16);
                let nw = Tensor::from_f32(&Backend::Cpu, &nw_v, &[in_len], DType::BF16).unwrap();
                let eps = 1e-6;
                let xv = x.to_f32_vec().unwrap();
                let plus = if variant == RmsNormVariant::Gemma { 1.0 } else { 0.0 };
                let xn: Vec<f32> = xv
                    .chunks(in_len)
                    .flat_map(|row| {
                        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / in_len as f64;
                        let sc = 1.0 / (ms + eps as f64).sqrt();
                        row.iter().zip(&nw_v).map(move |(&v, &g)| (v as f64 * sc * (g as f64 + plus)) as f32)
                    })
                    .collect();
                let xn = Tensor::from_f32(&Backend::Cpu, &xn, &[b, in_len], DType::F32).unwrap();
                let want: Vec<f64> = reference(&w, &xn).iter().map(|&v| cap_f64(v, cap)).collect();
                for backend in test_backends() {
                    let (wd, xd, nd) = (on(&w, &backend), on(&x, &backend), on(&nw, &backend));
                    let norm = InputNorm { weight: &nd, eps, variant };
                    let e = GemvEpilogue { soft_cap: Some(cap), ..Default::default() };
                    for launch in launches(&backend) {
                        let out = Tensor::uninit(&backend, "test", &[b, rows], DType::F32).unwrap();
                        single_impl(&wd, &xd, Some(norm), e, &out, launch).unwrap();
                        let name = format!(
                            "gemv_normed {dtype} [{rows}, {in_len}] b={b} {variant:?} soft cap {cap} on {}",
                            what(&backend, launch)
                        );
                        assert_close(&name, &out.to_f32_vec().unwrap(), &want, gemv_tolerance(in_len, 4.0));
                    }
                    let y = gemv_normed(&wd, &xd, norm, e).unwrap();
                    assert_eq!(y.shape(), &[b, rows]);
                }
            }
        }
    }

    #[test]
    fn fused_multi_matches_separate_products() {
        let mut rng = Rng::new(10);
        let cases: [(DType, &[usize], usize, usize); 10] = [
            (DType::BF16, &[64, 17, 17], 64, 1),
            (DType::F16, &[3, 127, 1], 257, 5),
            (DType::F32, &[33, 7], 100, 2),
            (DType::BF16, &[257], 127, 8),
            (DType::BF16, &[32, 8, 8], 1000, 3),
            // Four to six parts (xLSTM: q, k, v, o, ĩ, f̃), ragged, aligned and odd rows.
            (DType::BF16, &[31, 1, 64, 3], 256, 1),
            (DType::F16, &[5, 33, 2, 17, 9], 255, 4),
            (DType::BF16, &[16, 16, 32, 32, 1, 1], 264, 1),
            (DType::F32, &[7, 1, 13, 33, 3, 2], 131, 8),
            (DType::BF16, &[3, 255, 1, 8, 127, 2], 100, 2),
        ];
        for (dtype, rows, in_len, b) in cases {
            let x_v = rng.vec(b * in_len, -1.0, 1.0);
            let x = Tensor::from_slice(&Backend::Cpu, &x_v, &[b, in_len]).unwrap();
            let mut ws = Vec::new();
            let mut biases = Vec::new();
            let mut wants = Vec::new();
            for (k, &n) in rows.iter().enumerate() {
                let w_v = round_to(&rng.vec(n * in_len, -1.0, 1.0), dtype);
                let w = Tensor::from_f32(&Backend::Cpu, &w_v, &[n, in_len], dtype).unwrap();
                let mut want = reference(&w, &x);
                // Every part but the second and the fifth has a bias.
                let bias = (k != 1 && k != 4).then(|| {
                    let v = round_to(&rng.vec(n, -1.0, 1.0), DType::BF16);
                    want.iter_mut().enumerate().for_each(|(i, y)| *y += v[i % n] as f64);
                    Tensor::from_f32(&Backend::Cpu, &v, &[n], DType::BF16).unwrap()
                });
                ws.push(w);
                biases.push(bias);
                wants.push(want);
            }
            for backend in test_backends() {
                let xd = on(&x, &backend);
                let wd: Vec<Tensor> = ws.iter().map(|w| on(w, &backend)).collect();
                let bd: Vec<Option<Tensor>> = biases.iter().map(|b| b.as_ref().map(|b| on(b, &backend))).collect();
                let parts: Vec<GemvPart<'_>> =
                    wd.iter().zip(&bd).map(|(w, bias)| GemvPart { w, bias: bias.as_ref() }).collect();
                for launch in multi_launches(&backend, rows.len()) {
                    let outs: Vec<Tensor> =
                        rows.iter().map(|&n| Tensor::uninit(&backend, "test", &[b, n], DType::F32).unwrap()).collect();
                    let refs: Vec<&Tensor> = outs.iter().collect();
                    gemv_multi_into_with(&xd, &parts, &refs, launch).unwrap();
                    for (k, (out, want)) in outs.iter().zip(&wants).enumerate() {
                        let name = format!(
                            "gemv_multi {dtype} {rows:?} in={in_len} b={b} part {k} on {}{}",
                            what(&backend, launch),
                            if launch.narrow { " narrow" } else { "" }
                        );
                        assert_close(&name, &out.to_f32_vec().unwrap(), want, gemv_tolerance(in_len, 1.0));
                    }
                }
            }
        }
    }

    #[test]
    fn gated_matches_the_reference_for_silu_and_gelu() {
        let mut rng = Rng::new(11);
        let cases =
            [(DType::BF16, 17, 64, 1), (DType::F16, 127, 257, 4), (DType::F32, 64, 127, 8), (DType::BF16, 3, 1000, 2)];
        for (dtype, rows, in_len, b) in cases {
            let (wg, x) = inputs(&mut rng, rows, in_len, b, dtype);
            let (wu, _) = inputs(&mut rng, rows, in_len, b, dtype);
            let (g, u) = (reference(&wg, &x), reference(&wu, &x));
            let scale = g.iter().chain(&u).fold(1.0f64, |m, v| m.max(v.abs()));
            let base = gemv_tolerance(in_len, 1.0);
            let tol = Tolerance { atol: base.atol * (2.5 * scale + 1.0), rtol: 1e-5 };
            for act in [GatedAct::Silu, GatedAct::GeluTanh] {
                let want: Vec<f64> = g.iter().zip(&u).map(|(&g, &u)| act.reference(g) * u).collect();
                for backend in test_backends() {
                    let (gd, ud, xd) = (on(&wg, &backend), on(&wu, &backend), on(&x, &backend));
                    for launch in launches(&backend) {
                        let out = Tensor::uninit(&backend, "test", &[b, rows], DType::F32).unwrap();
                        gemv_gated_into_with(&gd, &ud, &xd, act, &out, launch).unwrap();
                        let name = format!(
                            "gemv_gated {act:?} {dtype} [{rows}, {in_len}] b={b} on {}",
                            what(&backend, launch)
                        );
                        assert_close(&name, &out.to_f32_vec().unwrap(), &want, tol);
                    }
                }
            }
        }
    }

    /// The fused input norm equals rmsnorm then the product (f64 reference of the normed x), for multi and
    /// gated, both norm variants, every batch size class, aligned rows (fused) and odd rows (the fallback).
    #[test]
    fn qkv_rope_matches_normed_gemv_then_rope() {
        use crate::ops::rope::{RopeConfig, RopeLayout::*, RopeTable, rope_qk_store_kv};
        let mut rng = Rng::new(61);
        // (dtype, layout, head_dim, rot_dim, q heads, kv heads, cols, b, pos, biases, Gemma norm): 128 heads
        // of 64 take four slots a workgroup, fewer rows two (Interleaved with a 16-bit cache: one word);
        // rot_dim < head_dim and odd cols the two-op path.
        #[rustfmt::skip]
        let cases = [
            (DType::BF16, HalfSplit, 64, 64, 8, 2, 256, 1, 5, false, false),
            (DType::F16, HalfSplit, 64, 64, 128, 16, 64, 2, 300, true, false),
            (DType::F16, Interleaved, 64, 64, 128, 16, 64, 1, 33, true, false),
            (DType::F32, Interleaved, 32, 32, 6, 3, 128, 3, 17, true, true),
            (DType::BF16, Interleaved, 128, 128, 4, 1, 512, 1, 70000, false, false),
            (DType::BF16, HalfSplit, 32, 16, 4, 2, 256, 1, 9, false, false),
            (DType::F16, HalfSplit, 16, 16, 4, 4, 100, 2, 0, true, false),
        ];
        for (dtype, layout, hd, rot, nh, nkv, cols, b, pos, with_bias, gemma) in cases {
            let (q_rows, kv_rows) = (nh * hd, nkv * hd);
            let xv = rng.vec(b * cols, -2.0, 2.0);
            let nwv = rng.vec(cols, 0.5, 1.5);
            let wvs: Vec<Vec<f32>> = [q_rows, kv_rows, kv_rows].iter().map(|&r| rng.vec(r * cols, -0.2, 0.2)).collect();
            let bvs: Vec<Option<Vec<f32>>> =
                [q_rows, kv_rows, kv_rows].iter().map(|&n| with_bias.then(|| rng.vec(n, -1.0, 1.0))).collect();
            let cap = pos + b + 2;
            let cache0 = rng.vec(cap * kv_rows, -1.0, 1.0);
            let cfg = RopeConfig::new(hd, 10000.0).with_rot_dim(rot).with_layout(layout);
            let variant = if gemma { RmsNormVariant::Gemma } else { RmsNormVariant::Standard };
            for (backend, cache_dt) in
                test_backends().into_iter().flat_map(|b| crate::ops::rope::CACHE_DTYPES.map(|d| (b.clone(), d)))
            {
                let t = |v: &[f32], shape: &[usize], dt: DType| Tensor::from_f32(&backend, v, shape, dt).unwrap();
                let x = t(&xv, &[b, cols], DType::F32);
                let nw = t(&nwv, &[cols], DType::BF16);
                let norm = InputNorm { weight: &nw, eps: 1e-5, variant };
                let ws: Vec<Tensor> =
                    wvs.iter().zip([q_rows, kv_rows, kv_rows]).map(|(v, r)| t(v, &[r, cols], dtype)).collect();
                let bs: Vec<Option<Tensor>> =
                    bvs.iter().map(|v| v.as_ref().map(|v| t(v, &[v.len()], DType::F32))).collect();
                let parts: Vec<GemvPart<'_>> =
                    ws.iter().zip(&bs).map(|(w, b)| GemvPart { w, bias: b.as_ref() }).collect();
                let table = RopeTable::new(&backend, cfg.clone()).unwrap();
                let cache = || t(&cache0, &[cap, nkv, hd], cache_dt);
                // The two ops, each tested on its own.
                let [q, k, v]: [Tensor; 3] = gemv_multi_normed(&x, norm, &parts).unwrap().try_into().unwrap();
                let (kc_want, vc_want) = (cache(), cache());
                let heads = |t: &Tensor, h: usize| t.reshape(&[b, h, hd]).unwrap();
                rope_qk_store_kv(&heads(&q, nh), &heads(&k, nkv), &heads(&v, nkv), &table, pos, &kc_want, &vc_want)
                    .unwrap();
                let (kc, vc) = (cache(), cache());
                let kv = KvWrite { table: &table, pos, k_cache: &kc, v_cache: &vc };
                let got = gemv_qkv_rope(&x, norm, [parts[0], parts[1], parts[2]], kv).unwrap();
                assert_eq!(got.shape(), &[b, q_rows]);
                let what = format!(
                    "gemv_qkv_rope {dtype} {layout:?} hd {hd} rot {rot} {nh}/{nkv} b={b} pos {pos}, {cache_dt} cache, on {}",
                    backend.name()
                );
                let tol = match cache_dt {
                    DType::F32 => Tolerance { atol: 2e-5, rtol: 2e-5 },
                    dt => crate::ops::rope::cache_rounding_tolerance(dt),
                };
                crate::ops::rope::assert_epilogue_matches(&what, [&got, &kc, &vc], [&q, &kc_want, &vc_want], tol);
            }
        }
        // Bad input: a step past the end of the cache, caches of the wrong shape.
        let cpu = Backend::Cpu;
        let z = |shape: &[usize]| Tensor::zeros(&cpu, shape, DType::F32).unwrap();
        let (x, w, nw) = (z(&[1, 8]), z(&[4, 8]), z(&[8]));
        let norm = InputNorm { weight: &nw, eps: 1e-5, variant: RmsNormVariant::Standard };
        let table = RopeTable::new(&cpu, RopeConfig::new(4, 10000.0)).unwrap();
        let part = GemvPart { w: &w, bias: None };
        let (c, c2) = (z(&[2, 1, 4]), z(&[2, 1, 4]));
        let err =
            gemv_qkv_rope(&x, norm, [part, part, part], KvWrite { table: &table, pos: 2, k_cache: &c, v_cache: &c2 });
        assert!(matches!(err, Err(KernelError::Argument { name: "pos", .. })), "{err:?}");
        let c3 = z(&[2, 2, 4]);
        let err =
            gemv_qkv_rope(&x, norm, [part, part, part], KvWrite { table: &table, pos: 0, k_cache: &c3, v_cache: &c3 });
        assert!(matches!(err, Err(KernelError::Shape { .. })), "{err:?}");
    }

    /// An f16 KV cache saturates at ±65504 where K or V leave f16's range, on every backend and through
    /// both writers (the fused GEMV of a decode step, and `rope_qk_store_kv` of a prefill), instead of
    /// storing infinities (or, from the GPU's pack2x16float, anything), which would make every score they
    /// meet NaN.
    #[test]
    fn an_f16_kv_cache_saturates_out_of_range_values() {
        use crate::ops::rope::{RopeConfig, RopeTable, cache_rounding_tolerance, rope_qk_store_kv};
        let mut rng = Rng::new(31);
        let (hd, heads, cols) = (16, 2, 64);
        let rows = heads * hd;
        let xv = rng.vec(cols, -1.0, 1.0);
        let wv = rng.vec(rows * cols, -0.1, 0.1);
        // Biases far beyond f16's range in both signs, and ordinary ones.
        let bias: Vec<f32> = (0..rows).map(|i| [3.0e5, -1.0e6, 0.5, -2.0][i % 4]).collect();
        for backend in test_backends() {
            let t = |v: &[f32], shape: &[usize], dt: DType| Tensor::from_f32(&backend, v, shape, dt).unwrap();
            let (x, w, b, nw) = (
                t(&xv, &[1, cols], DType::F32),
                t(&wv, &[rows, cols], DType::F32),
                t(&bias, &[rows], DType::F32),
                t(&vec![1.0; cols], &[cols], DType::F32),
            );
            let norm = InputNorm { weight: &nw, eps: 1e-5, variant: RmsNormVariant::Standard };
            let part = GemvPart { w: &w, bias: Some(&b) };
            // Position 0 does not rotate, so the cache holds the projections themselves.
            let table = RopeTable::new(&backend, RopeConfig::new(hd, 10000.0)).unwrap();
            let [_, k, v]: [Tensor; 3] = gemv_multi_normed(&x, norm, &[part, part, part]).unwrap().try_into().unwrap();
            let want: Vec<f32> = k
                .to_f32_vec()
                .unwrap()
                .iter()
                .map(|&y| half::f16::from_f32(y.clamp(-65504.0, 65504.0)).to_f32())
                .collect();
            assert!(want.iter().filter(|y| y.abs() == 65504.0).count() >= rows / 2, "the case overflows f16");
            let cache = || Tensor::zeros(&backend, &[2, heads, hd], DType::F16).unwrap();
            let (kc, vc) = (cache(), cache());
            gemv_qkv_rope(&x, norm, [part, part, part], KvWrite { table: &table, pos: 0, k_cache: &kc, v_cache: &vc })
                .unwrap();
            let (kc2, vc2) = (cache(), cache());
            let heads3 = |t: &Tensor| t.reshape(&[1, heads, hd]).unwrap();
            let q = Tensor::zeros(&backend, &[1, heads, hd], DType::F32).unwrap();
            rope_qk_store_kv(&q, &heads3(&k), &heads3(&v), &table, 0, &kc2, &vc2).unwrap();
            for (what, c, row) in [
                ("fused GEMV", &kc, 0),
                ("fused GEMV, V", &vc, 0),
                ("rope_qk_store_kv", &kc2, 0),
                ("rope_qk_store_kv, V", &vc2, 0),
            ] {
                let got = c.to_f32_vec().unwrap()[row * rows..(row + 1) * rows].to_vec();
                let tol = cache_rounding_tolerance(DType::F16);
                let want64: Vec<f64> = want.iter().map(|&y| y as f64).collect();
                assert!(got.iter().all(|y| y.is_finite()), "{what} on {}: {got:?}", backend.name());
                assert_close(&format!("{what} on {}", backend.name()), &got, &want64, tol);
            }
        }
    }

    #[test]
    fn input_norm_matches_rmsnorm_then_gemv() {
        let mut rng = Rng::new(23);
        let cases =
            [(DType::BF16, 17, 64, 1), (DType::F16, 33, 256, 3), (DType::F32, 64, 128, 8), (DType::BF16, 5, 100, 2)];
        for (k, (dtype, rows, in_len, b)) in cases.into_iter().enumerate() {
            let variant = if k % 2 == 0 { RmsNormVariant::Standard } else { RmsNormVariant::Gemma };
            let (wq, x) = inputs(&mut rng, rows, in_len, b, dtype);
            let (wk, _) = inputs(&mut rng, rows + 3, in_len, b, dtype);
            let nw_vals = round_to(&rng.vec(in_len, 0.5, 1.5), DType::BF16);
            let nw = Tensor::from_f32(&Backend::Cpu, &nw_vals, &[in_len], DType::BF16).unwrap();
            let eps = 1e-5;
            // f64 normed x, then the exact products.
            let xv = x.to_f32_vec().unwrap();
            let xn: Vec<f32> = xv
                .chunks(in_len)
                .flat_map(|row| {
                    let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / in_len as f64;
                    let s = 1.0 / (ms + eps as f64).sqrt();
                    let g = |i: usize| nw_vals[i] as f64 + if variant == RmsNormVariant::Gemma { 1.0 } else { 0.0 };
                    row.iter().enumerate().map(move |(i, &v)| (v as f64 * s * g(i)) as f32).collect::<Vec<_>>()
                })
                .collect();
            let xn = Tensor::from_f32(&Backend::Cpu, &xn, &[b, in_len], DType::F32).unwrap();
            let (q_ref, k_ref) = (reference(&wq, &xn), reference(&wk, &xn));
            let tol = gemv_tolerance(in_len, 4.0);
            for backend in test_backends() {
                let (qd, kd, xd, nd) = (on(&wq, &backend), on(&wk, &backend), on(&x, &backend), on(&nw, &backend));
                let norm = InputNorm { weight: &nd, eps, variant };
                for launch in launches(&backend) {
                    let name =
                        format!("normed {dtype} [{rows}, {in_len}] b={b} {variant:?} on {}", what(&backend, launch));
                    let outs = [
                        Tensor::uninit(&backend, "test", &[b, rows], DType::F32).unwrap(),
                        Tensor::uninit(&backend, "test", &[b, rows + 3], DType::F32).unwrap(),
                    ];
                    let parts = [GemvPart { w: &qd, bias: None }, GemvPart { w: &kd, bias: None }];
                    multi_impl(&xd, Some(norm), &parts, &[&outs[0], &outs[1]], launch).unwrap();
                    assert_close(&format!("{name}: multi q"), &outs[0].to_f32_vec().unwrap(), &q_ref, tol);
                    assert_close(&format!("{name}: multi k"), &outs[1].to_f32_vec().unwrap(), &k_ref, tol);
                    // Six parts (xLSTM's projections), q and k alternating; also the narrow kernel's two
                    // dispatches on the GPU.
                    let six: Vec<Tensor> = (0..6)
                        .map(|j| Tensor::uninit(&backend, "test", &[b, rows + 3 * (j % 2)], DType::F32).unwrap())
                        .collect();
                    let parts6: Vec<GemvPart<'_>> = (0..6).map(|j| parts[j % 2]).collect();
                    let refs: Vec<&Tensor> = six.iter().collect();
                    let gpu = matches!(backend, Backend::Gpu(_));
                    for l in [launch, GemvOptions { narrow: true, ..launch }].into_iter().take(1 + gpu as usize) {
                        multi_impl(&xd, Some(norm), &parts6, &refs, l).unwrap();
                        for (j, out) in six.iter().enumerate() {
                            let want = if j % 2 == 0 { &q_ref } else { &k_ref };
                            let n = format!("{name}: multi of six, part {j}{}", if l.narrow { " narrow" } else { "" });
                            assert_close(&n, &out.to_f32_vec().unwrap(), want, tol);
                        }
                    }

                    let (wu, _) = inputs(&mut rng, rows, in_len, b, dtype);
                    let ud = on(&wu, &backend);
                    let u_ref = reference(&wu, &xn);
                    let want: Vec<f64> =
                        q_ref.iter().zip(&u_ref).map(|(&g, &u)| GatedAct::Silu.reference(g) * u).collect();
                    let scale = q_ref.iter().chain(&u_ref).fold(1.0f64, |m, v| m.max(v.abs()));
                    let gtol = Tolerance { atol: tol.atol * (2.5 * scale + 1.0), rtol: 1e-5 };
                    let out = Tensor::uninit(&backend, "test", &[b, rows], DType::F32).unwrap();
                    gated_impl(&qd, &ud, &xd, Some(norm), GatedAct::Silu, &out, launch).unwrap();
                    assert_close(&format!("{name}: gated"), &out.to_f32_vec().unwrap(), &want, gtol);
                }
            }
        }
        // A norm weight of the wrong length is a typed error.
        let cpu = Backend::Cpu;
        let (w, x) = inputs(&mut rng, 4, 16, 1, DType::F32);
        let bad = Tensor::zeros(&cpu, &[15], DType::F32).unwrap();
        let norm = InputNorm { weight: &bad, eps: 1e-6, variant: RmsNormVariant::Standard };
        let err = gemv_multi_normed(&x, norm, &[GemvPart { w: &w, bias: None }]);
        assert!(matches!(err, Err(KernelError::Shape { .. })), "{err:?}");
    }

    #[test]
    fn public_functions_allocate_outputs_shaped_like_x() {
        for backend in test_backends() {
            let w = Tensor::from_f32(&backend, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2], DType::BF16).unwrap();
            let x = Tensor::from_slice(&backend, &[1.0f32, -1.0], &[2]).unwrap();
            let y = gemv(&w, &x, GemvEpilogue::default()).unwrap();
            assert_eq!(y.shape(), &[3]);
            assert_eq!(y.to_f32_vec().unwrap(), vec![-1.0, -1.0, -1.0]);
            let x2 = Tensor::from_slice(&backend, &[1.0f32, 0.0, 0.0, 2.0], &[2, 1, 2]).unwrap();
            let y2 = gemv(&w, &x2, GemvEpilogue::default()).unwrap();
            assert_eq!(y2.shape(), &[2, 1, 3]);
            assert_eq!(y2.to_f32_vec().unwrap(), vec![1.0, 3.0, 5.0, 4.0, 8.0, 12.0]);
            let outs = gemv_multi(&x, &[GemvPart { w: &w, bias: None }, GemvPart { w: &w, bias: None }]).unwrap();
            assert_eq!(outs.len(), 2);
            assert_eq!(outs[1].to_f32_vec().unwrap(), vec![-1.0, -1.0, -1.0]);
            let gated = gemv_gated(&w, &w, &x, GatedAct::Silu).unwrap();
            assert_eq!(gated.shape(), &[3]);
            let s = -silu(-1.0);
            for v in gated.to_f32_vec().unwrap() {
                assert!((v - s).abs() < 1e-6, "{v} vs {s}");
            }
        }
    }

    #[test]
    fn bad_input_is_a_typed_error_naming_the_values() {
        for backend in test_backends() {
            let t = |shape: &[usize], dtype: DType| Tensor::zeros(&backend, shape, dtype).unwrap();
            let (w, x) = (t(&[4, 8], DType::BF16), t(&[2, 8], DType::F32));
            let none = GemvEpilogue::default();
            let err = gemv(&w, &t(&[2, 7], DType::F32), none).unwrap_err();
            assert!(
                matches!(&err, KernelError::Shape { op: "gemv", detail } if detail.contains("in = 8") && detail.contains("7")),
                "{err}"
            );
            let err = gemv(&w, &t(&[9, 8], DType::F32), none).unwrap_err();
            assert!(matches!(&err, KernelError::Argument { name: "batch", value, .. } if value == "9"), "{err}");
            let err = gemv(&w, &t(&[0, 8], DType::F32), none).unwrap_err();
            assert!(matches!(&err, KernelError::Argument { name: "batch", value, .. } if value == "0"), "{err}");
            let err = gemv(&w, &t(&[2, 8], DType::F16), none).unwrap_err();
            assert!(matches!(&err, KernelError::DType { op: "gemv", found: DType::F16, .. }), "{err}");
            assert!(matches!(gemv(&t(&[4, 8], DType::U32), &x, none), Err(KernelError::DType { .. })));
            assert!(matches!(gemv(&t(&[32], DType::F32), &x, none), Err(KernelError::Shape { .. })));
            assert!(matches!(gemv(&t(&[0, 8], DType::F32), &x, none), Err(KernelError::Empty { .. })));
            assert!(matches!(gemv(&w, &t(&[2, 0], DType::F32), none), Err(KernelError::Empty { .. })));
            let five = t(&[5], DType::F32);
            let bad_bias = GemvEpilogue::bias(Some(&five));
            assert!(matches!(gemv(&w, &x, bad_bias), Err(KernelError::Shape { .. })));
            let bad_res = GemvEpilogue { bias: None, residual: Some(&t(&[2, 4], DType::BF16)), soft_cap: None };
            assert!(matches!(gemv(&w, &x, bad_res), Err(KernelError::DType { .. })));
            let bad_res = GemvEpilogue { bias: None, residual: Some(&t(&[3, 4], DType::F32)), soft_cap: None };
            assert!(matches!(gemv(&w, &x, bad_res), Err(KernelError::Shape { .. })));
            assert!(matches!(gemv_into(&w, &x, none, &t(&[2, 5], DType::F32)), Err(KernelError::Shape { .. })));
            assert!(matches!(gemv_into(&w, &x, none, &t(&[2, 4], DType::F16)), Err(KernelError::DType { .. })));
            let xs = t(&[1, 4], DType::F32);
            let sq = t(&[4, 4], DType::F32);
            assert!(matches!(gemv_into(&sq, &xs, none, &xs), Err(KernelError::Argument { name: "out", .. })));
            let part = GemvPart { w: &w, bias: None };
            let err = gemv_multi(&x, &[]).unwrap_err();
            assert!(matches!(&err, KernelError::Argument { name: "parts", value, .. } if value == "0"), "{err}");
            assert!(matches!(gemv_multi(&x, &[part; 7]), Err(KernelError::Argument { name: "parts", .. })));
            for cap in [0.0, -1.0, f32::NAN, f32::INFINITY] {
                let e = GemvEpilogue { soft_cap: Some(cap), ..none };
                let err = gemv(&w, &x, e).unwrap_err();
                assert!(matches!(&err, KernelError::Argument { name: "soft_cap", .. }), "{err}");
            }
            let o = t(&[2, 4], DType::F32);
            assert!(matches!(
                gemv_multi_into(&x, &[part, part], &[&o]),
                Err(KernelError::Argument { name: "outs", .. })
            ));
            assert!(matches!(
                gemv_multi_into(&x, &[part, part], &[&o, &o]),
                Err(KernelError::Argument { name: "outs", .. })
            ));
            let mixed = GemvPart { w: &t(&[4, 8], DType::F16), bias: None };
            assert!(matches!(gemv_multi(&x, &[part, mixed]), Err(KernelError::DType { .. })));
            let err = gemv_gated(&w, &t(&[5, 8], DType::BF16), &x, GatedAct::Silu).unwrap_err();
            assert!(matches!(&err, KernelError::Shape { op: "gemv_gated", .. }), "{err}");
            assert!(matches!(
                gemv_gated(&w, &w, &t(&[2, 9], DType::F32), GatedAct::GeluTanh),
                Err(KernelError::Shape { .. })
            ));
        }
    }

    #[test]
    fn forcing_the_subgroup_kernel_without_subgroups_is_an_error() {
        if let Some(Backend::Gpu(ctx)) = crate::testing::test_gpu()
            && !ctx.has_subgroups()
        {
            let backend = Backend::Gpu(ctx);
            let w = Tensor::zeros(&backend, &[4, 8], DType::F32).unwrap();
            let x = Tensor::zeros(&backend, &[1, 8], DType::F32).unwrap();
            let out = Tensor::zeros(&backend, &[1, 4], DType::F32).unwrap();
            let launch = GemvOptions { kernel: GemvKernel::Subgroup, tune: None, narrow: false };
            let err = gemv_into_with(&w, &x, GemvEpilogue::default(), &out, launch).unwrap_err();
            assert!(matches!(err, KernelError::MissingFeature { op: "gemv", .. }));
        }
    }

    #[test]
    fn a_matrix_larger_than_one_binding_is_a_typed_error() {
        // Only where the limit is small (lavapipe: 128 MiB), so the test allocates little.
        let Some(Backend::Gpu(ctx)) = crate::testing::test_gpu() else { return };
        let limit = ctx.max_binding_bytes();
        if limit > 256 << 20 {
            return;
        }
        let backend = Backend::Gpu(ctx);
        let in_len = 4096;
        let rows = (limit as usize / (2 * in_len)) + 1;
        let w = Tensor::zeros(&backend, &[rows, in_len], DType::BF16).unwrap();
        let x = Tensor::zeros(&backend, &[1, in_len], DType::F32).unwrap();
        let err = gemv(&w, &x, GemvEpilogue::default()).unwrap_err();
        assert!(matches!(err, KernelError::BindingTooLarge { op: "gemv", bytes, .. } if bytes > limit), "{err}");
    }

    #[test]
    fn params_match_the_wgsl_struct() {
        for kernel in [&GEMV, &GEMV_SUBGROUP, &GEMV6, &GEMV6_SUBGROUP] {
            let size = crate::testing::wgsl_struct_size(kernel, "Params");
            assert_eq!(size as usize, std::mem::size_of::<Params>(), "{}", kernel.name);
        }
    }

    /// Weights of `dtype` [rows, in] with small values, built fast (no f32 copy) for large sweeps.
    fn pattern_tensor(backend: &Backend, rows: usize, in_len: usize, dtype: DType, seed: u64) -> Tensor {
        let n = rows * in_len;
        let es = dtype.size_bytes();
        let mut bytes = vec![0u8; n * es];
        bytes.par_chunks_mut(1 << 16).enumerate().for_each(|(c, chunk)| {
            let mut rng = Rng::new(seed ^ (c as u64).wrapping_mul(0x9e37_79b9));
            for e in chunk.chunks_exact_mut(es) {
                let r = rng.next_u64();
                let v = ((r >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
                match dtype {
                    DType::F32 => e.copy_from_slice(&v.to_le_bytes()),
                    DType::F16 => e.copy_from_slice(&half::f16::from_f32(v).to_le_bytes()),
                    _ => e.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
                }
            }
        });
        Tensor::from_bytes(backend, &bytes, &[rows, in_len], dtype).unwrap()
    }

    /// GPU seconds between an empty pass submitted just before the open batch and one submitted just after
    /// it (timestamp queries), so host-side recording does not count.
    fn gpu_span(ctx: &GpuContext) -> f64 {
        let device = ctx.device();
        let qs = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("gemv sweep"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let stamp = |index: u32| {
            let mut e = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            let writes = wgpu::ComputePassTimestampWrites {
                query_set: &qs,
                beginning_of_pass_write_index: (index == 0).then_some(0),
                end_of_pass_write_index: (index == 1).then_some(1),
            };
            drop(e.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: Some(writes) }));
            e
        };
        let buf = |usage| {
            device.create_buffer(&wgpu::BufferDescriptor { label: None, size: 16, usage, mapped_at_creation: false })
        };
        let resolve = buf(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
        let read = buf(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        ctx.drain_submissions().unwrap();
        ctx.queue().submit([stamp(0).finish()]);
        ctx.flush_to_queue().unwrap();
        let mut end = stamp(1);
        end.resolve_query_set(&qs, 0..2, &resolve, 0);
        end.copy_buffer_to_buffer(&resolve, 0, &read, 0, 16);
        ctx.queue().submit([end.finish()]);
        read.slice(..).map_async(wgpu::MapMode::Read, |r| r.unwrap());
        device.poll(wgpu::PollType::Wait { submission_index: None, timeout: None }).unwrap();
        let v: Vec<u64> = bytemuck::pod_collect_to_vec(&read.slice(..).get_mapped_range().unwrap());
        (v[1].wrapping_sub(v[0])) as f64 * ctx.queue().get_timestamp_period() as f64 * 1e-9
    }

    /// (GPU seconds, host seconds) of one call: after about 30 ms of warm-up (clocks ramp up after idle
    /// host-side work), the best of two runs of about 30 ms of GPU work, each recorded whole and then
    /// submitted at once between two timestamps.
    fn time_calls(backend: &Backend, mut f: impl FnMut(usize)) -> (f64, f64) {
        let Backend::Gpu(ctx) = backend else { panic!("GPU only") };
        backend.synchronize().unwrap();
        let mut run = |n: usize| {
            let t = std::time::Instant::now();
            for i in 0..n {
                f(i);
            }
            let host = t.elapsed().as_secs_f64() / n as f64;
            (gpu_span(ctx) / n as f64, host)
        };
        let (mut n, mut warm, mut per_call) = (16, 0.0, 1.0);
        while warm < 0.03 {
            per_call = run(n).0;
            warm += per_call * n as f64;
            n = (n * 2).min(512);
        }
        // At most ~900 calls: the batch's parameter arena (256 KiB) would submit part of a longer one early.
        let n = ((0.03 / per_call) as usize).clamp(16, 900);
        let (a, b) = (run(n), run(n));
        (a.0.min(b.0), a.1.min(b.1))
    }

    /// Launch-shape sweep on a real GPU (bf16/f16/f32 at Llama-3-8B shapes), printing GB/s of weights +
    /// x + y. Weights rotate through copies of at least 256 MiB in all so the L2 cache does not serve them.
    /// `TORCHLESS_SWEEP=quick` times the automatic launch shape only.
    #[test]
    #[ignore = "timing sweep for a real GPU: cargo test --release -p torchless-kernels --lib gemv_sweep -- --ignored --nocapture"]
    fn gemv_sweep() {
        let Some(backend) = crate::testing::test_gpu() else { return };
        let Backend::Gpu(ctx) = &backend else { return };
        let quick = std::env::var("TORCHLESS_SWEEP").is_ok_and(|v| v == "quick");
        println!(
            "adapter {} subgroups {}..{}",
            ctx.info().name,
            ctx.info().subgroup_min_size,
            ctx.info().subgroup_max_size
        );
        {
            let n = 256usize << 20;
            let (a, c) = (
                Tensor::zeros(&backend, &[n / 4], DType::F32).unwrap(),
                Tensor::zeros(&backend, &[n / 4], DType::F32).unwrap(),
            );
            let (ab, cb) = (a.gpu_buffer().unwrap().raw(), c.gpu_buffer().unwrap().raw());
            let (t, _) = time_calls(&backend, |_| ctx.copy_buffer(ab, 0, cb, 0, n as u64).unwrap());
            println!("copy 256 MiB: {:.0} GB/s (read + write)", 2.0 * n as f64 / t / 1e9);
        }
        let shapes: [(usize, usize, &[DType]); 4] = [
            (4096, 4096, &[DType::BF16, DType::F16, DType::F32]),
            (14336, 4096, &[DType::BF16, DType::F16, DType::F32]),
            (4096, 14336, &[DType::BF16, DType::F16, DType::F32]),
            (128256, 4096, &[DType::BF16, DType::F16]),
        ];
        let mut tunes = vec![None];
        if !quick {
            for wg in [32u32, 64, 128, 256] {
                for rows in [1u32, 2, 4] {
                    tunes.push(Some(Tune { wg, rows }));
                }
            }
        }
        let kernels: &[GemvKernel] = if std::env::var("TORCHLESS_SWEEP_WORKGROUP").is_ok() {
            &[GemvKernel::Workgroup]
        } else {
            &[GemvKernel::Subgroup]
        };
        for (rows, in_len, dtypes) in shapes {
            for &dtype in dtypes {
                for b in [1usize, 4] {
                    if b == 4 && (rows > 20000 || dtype != DType::BF16) {
                        continue;
                    }
                    let wbytes = rows * in_len * dtype.size_bytes();
                    let copies = (256usize << 20).div_ceil(wbytes).max(1);
                    let ws: Vec<Tensor> =
                        (0..copies).map(|c| pattern_tensor(&backend, rows, in_len, dtype, c as u64)).collect();
                    let x = pattern_tensor(&backend, b, in_len, DType::F32, 99);
                    let out = Tensor::zeros(&backend, &[b, rows], DType::F32).unwrap();
                    let bytes = (wbytes + 4 * b * (in_len + rows)) as f64;
                    let mut first: Option<Vec<f32>> = None;
                    for &kernel in kernels {
                        for &tune in &tunes {
                            let launch = GemvOptions { kernel, tune, narrow: false };
                            let (t, host) = time_calls(&backend, |i| {
                                gemv_into_with(&ws[i % copies], &x, GemvEpilogue::default(), &out, launch).unwrap()
                            });
                            // Check against the first configuration (same weights: copy 0).
                            gemv_into_with(&ws[0], &x, GemvEpilogue::default(), &out, launch).unwrap();
                            let got = out.to_f32_vec().unwrap();
                            let diff = match &first {
                                None => {
                                    first = Some(got);
                                    0.0
                                }
                                Some(f) => f.iter().zip(&got).map(|(a, c)| (a - c).abs()).fold(0.0f32, f32::max),
                            };
                            let used =
                                tune.unwrap_or_else(|| clamp_tune(auto_tune(b, in_len, dtype, rows, TuneKind::Plain)));
                            println!(
                                "gemv {dtype:<4} [{rows:>6}, {in_len:>5}] b={b} {kernel:<9?} wg={:<3} rows={} {}: {:>8.1} us {:>6.0} GB/s  host {:>5.1} us  diff {diff:.1e}",
                                used.wg,
                                used.rows,
                                if tune.is_none() { "auto" } else { "    " },
                                t * 1e6,
                                bytes / t / 1e9,
                                host * 1e6
                            );
                        }
                    }
                }
            }
        }
        // Fused forms at Llama-3-8B decode shapes, bf16, b = 1, automatic launch shape.
        let in_len = 4096;
        let x = pattern_tensor(&backend, 1, in_len, DType::F32, 98);
        // xLSTM-7B's six projections (q, k, v, o, ĩ, f̃) of one block.
        let fused = [
            ("qkv", vec![4096usize, 1024, 1024]),
            ("gate_up", vec![14336, 14336]),
            ("qkvoif", vec![2048, 2048, 4096, 4096, 8, 8]),
        ];
        for (name, parts) in fused {
            let copies = 3;
            let sets: Vec<Vec<Tensor>> = (0..copies)
                .map(|c| {
                    parts
                        .iter()
                        .enumerate()
                        .map(|(k, &r)| pattern_tensor(&backend, r, in_len, DType::BF16, (10 * c + k) as u64))
                        .collect()
                })
                .collect();
            let outs: Vec<Tensor> =
                parts.iter().map(|&r| Tensor::zeros(&backend, &[1, r], DType::F32).unwrap()).collect();
            let wbytes: usize = parts.iter().map(|r| r * in_len * 2).sum();
            for &kernel in kernels {
                for &tune in &tunes {
                    let launch = GemvOptions { kernel, tune, narrow: false };
                    let (t, host) = time_calls(&backend, |i| {
                        let set = &sets[i % copies];
                        if name != "gate_up" {
                            let ps: Vec<GemvPart<'_>> = set.iter().map(|w| GemvPart { w, bias: None }).collect();
                            let refs: Vec<&Tensor> = outs.iter().collect();
                            gemv_multi_into_with(&x, &ps, &refs, launch).unwrap();
                        } else {
                            gemv_gated_into_with(&set[0], &set[1], &x, GatedAct::Silu, &outs[0], launch).unwrap();
                        }
                    });
                    println!(
                        "{name:<7} bf16 {parts:?} {kernel:?} {tune:?}: {:>8.1} us {:>6.0} GB/s  host {:>5.1} us",
                        t * 1e6,
                        wbytes as f64 / t / 1e9,
                        host * 1e6
                    );
                }
            }
        }
    }

    #[test]
    fn tunes_stay_inside_the_kernel_limits() {
        for rows in 0..8 {
            for wg in [1, 31, 32, 100, 256, 1024] {
                let t = clamp_tune(Tune { wg, rows });
                assert!(t.wg.is_power_of_two() && (32..=256).contains(&t.wg), "{t:?}");
                assert!((1..=4).contains(&t.rows), "{t:?}");
            }
        }
        for b in 1..=MAX_BATCH {
            for in_len in [1, 7, 64, 4096, 14336] {
                for dtype in DType::FLOATS {
                    for kind in [TuneKind::Plain, TuneKind::Gated, TuneKind::NormedMulti] {
                        let t = auto_tune(b, in_len, dtype, 4096, kind);
                        assert_eq!(clamp_tune(t), t, "auto tune {t:?} is outside the limits");
                    }
                }
            }
        }
        // xLSTM-7B's six normed projections at b = 1 (bf16): four rows a workgroup, 3076 workgroups; plain and
        // f32 stay as swept.
        let six = 2 * 2048 + 2 * 4096 + 2 * 8;
        assert_eq!(auto_tune(1, 4096, DType::BF16, six, TuneKind::NormedMulti), Tune { wg: 128, rows: 4 });
        assert_eq!(auto_tune(1, 4096, DType::BF16, six, TuneKind::Plain), Tune { wg: 128, rows: 2 });
        assert_eq!(auto_tune(1, 4096, DType::F32, six, TuneKind::NormedMulti), Tune { wg: 128, rows: 1 });
        for b in 2..=MAX_BATCH {
            for kind in [TuneKind::Plain, TuneKind::NormedMulti] {
                assert_eq!(auto_tune(b, 4096, DType::BF16, six, kind), Tune { wg: 128, rows: 4 });
            }
        }
    }
}
