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
//! subgroup shuffles (kernels/gemv.wgsl + reduce_subgroup.wgsl) or a workgroup-memory tree (kernels/gemv.wgsl +
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
    /// Subgroup-shuffle reduction; a [`KernelError::MissingFeature`] on adapters without subgroups.
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

        // Subgroup kernel: one vec4 per (subgroup, accumulator slot); tree: one per thread. The norm's
        // slots hold Σx² of four rows of x each (kernels/gemv.wgsl `norm_slots`).
        let slots = self.batch as u32 * if gated { 2 } else { 1 }
            + if self.norm.is_some() { self.batch.div_ceil(4) as u32 } else { 0 };
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
/// workgroups, against 8.5 µs with two and 8.3 µs with four, 1023 workgroups).
///
/// 16-bit weights at b = 1 take 256 threads where H100 decode profiles with every launch forced to 256
/// (`benchmarks/results/2026-12-07e-h100/next55/`, `next57/`) favoured it: the gated form (with two rows
/// of each matrix), rows of 1024 chunks or more (8192 values: the down projections), the normed form
/// over more than 8192 rows (xLSTM's six projections) and plain GEMVs of at most 4096 rows (the O and
/// out projections). Llama's Q/K/V (normed, 6144 rows) and the LM heads keep 128, where 256 was
/// slower. Decode, alternating twice: Llama-3-8B bf16 160.5 / 160.5 tok/s against 159.3 / 159.3 with
/// 128 threads and four gated rows (`next56/`; 160.1 with four rows), then 160.9 / 161.0 against 160.4 /
/// 160.5 with the last two cases too (`next58/`); xLSTM-7B 169.1 against 166.2, then 171.0 / 171.1
/// against 168.9 / 169.0. On the H200, four gated rows had beaten one (183.4
/// tok/s against 179.6) when every launch had 128 threads: every workgroup reads all of x (and the norm's
/// weight), so more rows a workgroup means less of that traffic per weight byte. The same holds
/// for the RMS-normed multi-matrix form with 16-bit weights at b = 1 (xLSTM's six projections, 12304 rows
/// at xLSTM-7B): with two rows a workgroup it reads 24 KiB of x and norm weight (in = 4096) beside 16 KiB
/// of weights, 1.5 bytes per weight byte against 1 for a plain GEMV; four rows halve that (xLSTM-7B decode
/// on the H200: 198.2–198.4 tok/s against 195.7–196.0 with two rows, three alternating rounds).
///
/// Narrower, Llama's Q/K/V launch takes 64 threads (eight chunks a thread at in = 4096, so half as many
/// warps end in reductions): Llama-3-8B bf16 decode on the H100 163.8 / 163.8 tok/s against 162.3 /
/// 162.3 with 128 (`2026-12-08-h100/a2/`; the launch alone 22.6 against 23.4–23.9 µs, `a1/`).
fn auto_tune(batch: usize, in_len: usize, dtype: DType, total_rows: usize, kind: TuneKind) -> Tune {
    let per_vec4 = if dtype == DType::F32 { 4 } else { 8 };
    let chunks = in_len.div_ceil(per_vec4);
    let wide = batch == 1
        && dtype != DType::F32
        && match kind {
            TuneKind::Gated => true,
            TuneKind::NormedMulti => chunks >= 1024 || total_rows > 8192,
            TuneKind::Plain => chunks >= 1024 || (chunks >= 512 && total_rows <= 4096),
        };
    // About four chunks a thread; eight in a narrow normed multi-matrix launch with 16-bit weights at b = 1.
    let per_thread = if batch == 1 && dtype != DType::F32 && kind == TuneKind::NormedMulti { 8 } else { 4 };
    let wg = if wide { 256 } else { (chunks / per_thread).next_power_of_two().clamp(32, 128) as u32 };
    let mut rows: u32 = match (batch, kind, dtype) {
        (1, TuneKind::Gated, DType::F32) => 4,
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
pub const BENCH_OPS: &[&str] = &["gemv_f32", "gemv_f16", "gemv_bf16", "gemv_qkv_bf16"];

/// The environment variable that sets the row length of the `gemv_*` bench cases (default 4096; 14336 with
/// `--mib 112` gives Llama-3-8B's down projection, 4096 × 14336).
pub const BENCH_COLS_VAR: &str = "TORCHLESS_BENCH_GEMV_COLS";

/// `gemv_*`: b = 1 GEMV with as many rows of the row length (see [`BENCH_COLS_VAR`]) as fill `bytes`
/// (weights + x + y): 14336 rows of 4096 (Llama-3-8B's up projection) at 112 MiB of bf16.
pub fn bench_case(op: &str, bytes: u64) -> Option<Result<crate::bench::BenchCase>> {
    use crate::bench::{BenchCase, random_tensor};
    if op == "gemv_qkv_bf16" {
        return Some(qkv_bench_case());
    }
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

/// `gemv_qkv_bf16`: one decode step's fused Q/K/V launch at Llama-3-8B's shapes whatever the size asked
/// ([`gemv_qkv_rope`]: x RMS-normed, 4096 → 4096 + 1024 + 1024 bf16 rows, Q and K rotated (half-split, head
/// dim 128), K and V written to f16 caches at position 512), so that it can be timed beside a plain GEMV
/// of the same bytes. Checked on Q against an f64 reference.
fn qkv_bench_case() -> Result<crate::bench::BenchCase> {
    use crate::bench::{BenchCase, random_tensor};
    use crate::ops::rope::{RopeConfig, RopeLayout, RopeTable, TablesPerBackend};
    const IN: usize = 4096;
    const HD: usize = 128;
    const HEADS: usize = 32;
    const KV_HEADS: usize = 8;
    const POS: usize = 512;
    const EPS: f32 = 1e-5;
    let (q_rows, kv_rows) = (HEADS * HD, KV_HEADS * HD);
    let mut inputs =
        vec![random_tensor(11, &[1, IN], DType::F32, -1.0, 1.0)?, random_tensor(12, &[IN], DType::BF16, 0.5, 1.5)?];
    for (seed, rows) in [(13, q_rows), (14, kv_rows), (15, kv_rows)] {
        inputs.push(random_tensor(seed, &[rows, IN], DType::BF16, -1.0, 1.0)?);
    }
    for seed in [16, 17] {
        inputs.push(random_tensor(seed, &[POS + 1, KV_HEADS, HD], DType::F16, -1.0, 1.0)?);
    }
    let cpu_table = RopeTable::new(&Backend::Cpu, RopeConfig::new(HD, 500_000.0))?;
    let inv_freq = cpu_table.inv_freq().to_vec();
    let tables = TablesPerBackend::new(cpu_table);
    let weight_bytes = 2 * ((q_rows + 2 * kv_rows) * IN) as u64;
    Ok(BenchCase {
        op: "gemv_qkv_bf16",
        dtype: DType::BF16,
        shape: format!("[{q_rows}+{kv_rows}+{kv_rows}, {IN}] rope, f16 cache"),
        bytes: weight_bytes + (4 + 2) * IN as u64 + 4 * q_rows as u64 + 2 * 2 * kv_rows as u64,
        flops: 2 * ((q_rows + 2 * kv_rows) * IN) as u64,
        tolerance: gemv_tolerance(IN, 4.0),
        inputs,
        run: Box::new(move |i| {
            tables.with(&i[0].backend(), |table| {
                let norm = InputNorm { weight: &i[1], eps: EPS, variant: RmsNormVariant::Standard };
                let parts = [2, 3, 4].map(|k| GemvPart { w: &i[k], bias: None });
                let kv = crate::ops::rope::KvWrite { table, pos: POS, k_cache: &i[5], v_cache: &i[6] };
                gemv_qkv_rope(&i[0], norm, parts, kv)
            })
        }),
        reference: Box::new(move |i| {
            let (x, nw) = (cpu::read_f32(&i[0]), cpu::read_f32(&i[1]));
            let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / IN as f64;
            let inv = 1.0 / (ms + EPS as f64).sqrt();
            let normed: Vec<f32> = x.iter().zip(&nw).map(|(&v, &w)| (v as f64 * inv * w as f64) as f32).collect();
            let q = reference(&i[2], &Tensor::from_f32(&Backend::Cpu, &normed, &[1, IN], DType::F32)?);
            let q: Vec<f32> = q.iter().map(|&v| v as f32).collect();
            let positions = [POS as u32];
            Ok(crate::ops::rope::reference(&q, HEADS, RopeLayout::HalfSplit, HD, &inv_freq, 1.0, &positions))
        }),
    })
}

#[cfg(test)]
mod tests;
