//! The mLSTM cell of xLSTM: the recurrent step (decode), the chunkwise-parallel form (prefill) and the
//! multi-head layer norm applied to its output (optionally times the output gate σ(o), as the layer uses it).
//!
//! Math (NX-AI's `mlstm_kernels` native step, as in Hugging Face transformers' xLSTM): with the gate
//! pre-activations ĩ, f̃ and the state (C, n, m),
//!
//! ```text
//! ĩ ← cap·tanh(ĩ/cap),  f̃ ← cap·tanh(f̃/cap)   (only with a gate soft cap: xLSTM's gate_soft_cap)
//! logσ(f̃) = −softplus(−f̃)
//! m' = max(logσ(f̃) + m, ĩ)
//! f  = exp(logσ(f̃) + m − m'),   i = exp(ĩ − m')
//! C' = f·C + i·k·vᵀ,           n' = f·n + i·k
//! q̂  = q / √DQK
//! h  = (q̂ᵀC') / (max(|q̂ᵀn'|, exp(−m')) + eps)
//! ```
//!
//! A fresh state is all zeros (m = 0 too), as transformers starts it.
//!
//! Layouts (all f32): the token-major layout the projections produce, so the model needs no transposes:
//! - step: q, k `[B, NH, DQK]`, v `[B, NH, DV]`, gates `[B, NH]`, h `[B, NH, DV]` (one token per batch row,
//!   i.e. the `[B, 1, NH, D]` of the chunkwise layout with S = 1);
//! - chunkwise: q, k `[B, S, NH, DQK]`, v `[B, S, NH, DV]`, gates `[B, S, NH]`, h `[B, S, NH, DV]`;
//! - state: C `[B, NH, DQK, DV]`, n `[B, NH, DQK]`, m `[B, NH]`, always f32.
//!
//! The chunkwise form splits the sequence into chunks of `chunk` tokens (the last may be shorter). With
//! b_t the running sum of logσ(f̃) inside the chunk and (C₀, n₀, m₀) the state at the chunk's start, the
//! step-by-step stabiliser of token t unrolls to m_t = max(b_t + m₀, max_{j≤t} (b_t − b_j + ĩ_j)), and
//! token t's output is
//!
//! ```text
//! num_t = exp(b_t + m₀ − m_t)·q̂_tᵀC₀ + Σ_{j≤t} exp(b_t − b_j + ĩ_j − m_t)·(q̂_t·k_j)·v_j
//! den_t = exp(b_t + m₀ − m_t)·q̂_tᵀn₀ + Σ_{j≤t} exp(b_t − b_j + ĩ_j − m_t)·(q̂_t·k_j)
//! h_t   = num_t / (max(|den_t|, exp(−m_t)) + eps)
//! ```
//!
//! and the state after the chunk (length L, g = b_{L−1}, a_j = g − b_j + ĩ_j) is
//! m₁ = max(g + m₀, max_j a_j), C₁ = exp(g + m₀ − m₁)·C₀ + Σ_j exp(a_j − m₁)·k_j·v_jᵀ (n₁ likewise): the same
//! values as the step-by-step recurrence, up to float rounding, for any S and any initial state.
//!
//! GPU (kernels/mlstm.wgsl):
//! - `mlstm_step` with DV a multiple of 4 (xLSTM-7B) is two dispatches: `mlstm_step4`, one workgroup per
//!   (head, 8 vec4 columns of C) (128 workgroups at xLSTM-7B batch 1, not 8), each forming the new m, gates
//!   and denominator from the old m and n, which it only reads, and updating its columns of C, every load
//!   issued before the first wait; then `mlstm_step4_state`, per head, writes n and m. So no invocation reads
//!   state another one has rewritten (the seed shader's race). Other DV: one dispatch of one workgroup per
//!   head (up to 1024 invocations), where invocation 0 alone reads and writes m and publishes the new m and
//!   gates through workgroup memory behind a barrier, and `n[a]` and `C[a][e]` are each read and written by the
//!   one invocation that owns them.
//! - `mlstm_chunkwise` is five dispatches: `chunk_prep` (per head: gate sums, the stabiliser of every
//!   token and chunk, the final m), `chunk_dn` (per head and chunk: the chunk's part of n), `chunk_nscan`
//!   (per head: n at every chunk start, the final n), `chunk_p` (per head and chunk: the intra-chunk
//!   matrix D·(Q̂Kᵀ) and every token's denominator), `chunk_out` (per head and 32 columns of C, through
//!   the chunks in order: outputs from the state at the chunk start plus the intra-chunk part, then C at
//!   the chunk end, staged through workgroup memory). Scratch is 16 bytes a token, DQK floats a chunk and
//!   L² floats a chunk per head (L = min(chunk, S)).
//! - `multihead_layernorm` and `multihead_layernorm_gated` are one workgroup per (row, head).
//! - `mlstm_step_gated_norm` (decode: the step, then σ(o) ⊙ headnorm(h)) runs the norm inside the vec4
//!   step's second launch, `mlstm_step4_state_norm` (per head, after `mlstm_step4` has written the head's
//!   h): two launches for the pair. Other DV, or adapters with fewer than 10 storage buffers per stage:
//!   the step, then `multihead_layernorm_gated`.

use rayon::prelude::*;

use super::{
    common_backend, require_distinct, require_dtype, require_float, require_non_empty, require_storage_buffers, to_u32,
};
use crate::backend::Backend;
use crate::cpu;
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::gpu::{Dispatch, GpuBuffer, GpuContext, Workgroups};
use crate::tensor::Tensor;
use std::sync::Arc;

crate::kernel_source!(MLSTM, "mlstm");

/// The chunk length of [`mlstm_chunkwise`] that xLSTM uses by default.
pub const DEFAULT_CHUNK: usize = 64;

/// The recurrent state of one mLSTM layer (f32).
#[derive(Clone, Debug)]
pub struct MlstmState {
    /// The matrix memory `[B, NH, DQK, DV]`.
    pub c: Tensor,
    /// The normaliser `[B, NH, DQK]`.
    pub n: Tensor,
    /// The stabiliser (a log scale) `[B, NH]`.
    pub m: Tensor,
}

impl MlstmState {
    /// The all-zero state (m = 0 as well), where a sequence starts.
    pub fn zeros(backend: &Backend, b: usize, nh: usize, dqk: usize, dv: usize) -> Result<MlstmState> {
        Ok(MlstmState {
            c: Tensor::zeros(backend, &[b, nh, dqk, dv], DType::F32)?,
            n: Tensor::zeros(backend, &[b, nh, dqk], DType::F32)?,
            m: Tensor::zeros(backend, &[b, nh], DType::F32)?,
        })
    }

    /// (B, NH, DQK, DV) read from C's shape.
    pub fn dims(&self) -> Option<(usize, usize, usize, usize)> {
        match *self.c.shape() {
            [b, nh, dqk, dv] => Some((b, nh, dqk, dv)),
            _ => None,
        }
    }

    /// A copy on `backend`.
    pub fn to_backend(&self, backend: &Backend) -> Result<MlstmState> {
        Ok(MlstmState {
            c: self.c.to_backend(backend)?,
            n: self.n.to_backend(backend)?,
            m: self.m.to_backend(backend)?,
        })
    }
}

/// The inputs of an mLSTM layer's recurrence for one step (`[B, NH, D]`) or a sequence (`[B, S, NH, D]`).
#[derive(Clone, Copy, Debug)]
pub struct MlstmInputs<'a> {
    /// Queries and keys, D = DQK.
    pub q: &'a Tensor,
    pub k: &'a Tensor,
    /// Values, D = DV.
    pub v: &'a Tensor,
    /// Input and forget gate pre-activations ĩ, f̃: `[B, NH]` or `[B, S, NH]`.
    pub i_pre: &'a Tensor,
    pub f_pre: &'a Tensor,
}

/// The settings of the recurrence.
#[derive(Clone, Copy, Debug)]
pub struct MlstmOptions {
    /// Soft cap of the gate pre-activations, applied as the kernels read them (cap·tanh(x/cap)): a finite
    /// cap above 0, or none.
    pub gate_soft_cap: Option<f32>,
    /// The normaliser's epsilon: h = q̂ᵀC / (max(|q̂ᵀn|, exp(−m)) + eps).
    pub eps: f32,
}

/// One recurrent step for every batch row and head (one or two dispatches on the GPU). Updates `state` in
/// place and returns h `[B, NH, DV]`. q, k: `[B, NH, DQK]`; v: `[B, NH, DV]`; i_pre, f_pre: `[B, NH]`. A
/// model holding `[B, 1, NH, D]` rows reshapes them (free).
pub fn mlstm_step(x: MlstmInputs<'_>, state: &MlstmState, opts: MlstmOptions) -> Result<Tensor> {
    let MlstmInputs { q, k, v, i_pre, f_pre } = x;
    let d = validate_step("mlstm_step", q, k, v, i_pre, f_pre, state, opts.gate_soft_cap, opts.eps)?;
    let out = Tensor::uninit(&q.backend(), "mlstm_step", &[d.b, d.nh, d.dv], DType::F32)?;
    mlstm_step_into(x, state, opts, &out)?;
    Ok(out)
}

/// [`mlstm_step`] writing h into `out` (`[B, NH, DV]` f32, a separate tensor).
pub fn mlstm_step_into(x: MlstmInputs<'_>, state: &MlstmState, opts: MlstmOptions, out: &Tensor) -> Result<()> {
    const OP: &str = "mlstm_step";
    let MlstmInputs { q, k, v, i_pre, f_pre } = x;
    let MlstmOptions { gate_soft_cap, eps } = opts;
    let d = validate_step(OP, q, k, v, i_pre, f_pre, state, gate_soft_cap, eps)?;
    check_out(OP, out, &[d.b, d.nh, d.dv], &[q, k, v, i_pre, f_pre, &state.c, &state.n, &state.m])?;
    match common_backend(OP, &[q, k, v, i_pre, f_pre, &state.c, &state.n, &state.m, out])? {
        Backend::Cpu => {
            cpu_step(d, q, k, v, i_pre, f_pre, state, gate_soft_cap, eps, out);
            Ok(())
        }
        Backend::Gpu(ctx) => gpu_step(&ctx, d, [q, k, v, i_pre, f_pre], state, gate_soft_cap, eps, out, None),
    }
}

/// The output-gated head norm an mLSTM layer applies to its h, as [`multihead_layernorm_gated`]
/// computes it: σ(gate) ⊙ (LayerNorm per head(h)·weight + bias).
#[derive(Clone, Copy, Debug)]
pub struct GatedHeadNorm<'a> {
    /// The output gate's pre-activation o: f32 of h's shape `[B, NH, DV]`.
    pub gate: &'a Tensor,
    /// `[NH·DV]`, any float dtype.
    pub weight: Option<&'a Tensor>,
    /// `[NH·DV]`, any float dtype.
    pub bias: Option<&'a Tensor>,
    /// The norm's epsilon (finite, >= 0).
    pub eps: f32,
}

/// [`mlstm_step`], then [`multihead_layernorm_gated`] of its h: updates `state` and returns
/// y = σ(o) ⊙ headnorm(h) `[B, NH, DV]` (h itself is not kept). On the GPU with DV a multiple of 4 and 10
/// storage buffers per shader stage, the norm runs inside the step's second launch (which already runs one
/// workgroup per head once h is complete): two launches instead of three. Elsewhere it is the two ops.
pub fn mlstm_step_gated_norm(
    x: MlstmInputs<'_>,
    state: &MlstmState,
    opts: MlstmOptions,
    norm: GatedHeadNorm<'_>,
) -> Result<Tensor> {
    const OP: &str = "mlstm_step_gated_norm";
    let MlstmInputs { q, k, v, i_pre, f_pre } = x;
    let MlstmOptions { gate_soft_cap, eps } = opts;
    let d = validate_step(OP, q, k, v, i_pre, f_pre, state, gate_soft_cap, eps)?;
    let GatedHeadNorm { gate, weight, bias, eps: norm_eps } = norm;
    let shape = [d.b, d.nh, d.dv];
    require_dtype(OP, gate, DType::F32)?;
    if gate.shape() != shape {
        return Err(shape_error(OP, "norm.gate", format!("h's shape [B, NH, DV] = {shape:?}"), gate));
    }
    // The head norm's checks, on h's rows of NH·DV (weight, bias and eps).
    let rows = [d.b, d.nh * d.dv];
    let backend = q.backend();
    let h = Tensor::uninit(&backend, "mlstm_step h", &shape, DType::F32)?;
    let gate_rows = gate.reshape(&rows)?;
    let head_norm = HeadNorm { nh: d.nh, weight, bias, gate: Some(&gate_rows), eps: norm_eps };
    validate_mhln(OP, &h.reshape(&rows)?, head_norm)?;
    // The state is written while the norm's tensors are read.
    let mut read: Vec<&Tensor> = vec![gate];
    read.extend(weight);
    read.extend(bias);
    require_distinct(OP, "state.c", &state.c, &read)?;
    require_distinct(OP, "state.n", &state.n, &read)?;
    require_distinct(OP, "state.m", &state.m, &read)?;
    let y = Tensor::uninit(&backend, OP, &shape, DType::F32)?;
    let mut all = vec![q, k, v, i_pre, f_pre, &state.c, &state.n, &state.m];
    all.extend(&read);
    match common_backend(OP, &all)? {
        Backend::Cpu => {
            cpu_step(d, q, k, v, i_pre, f_pre, state, gate_soft_cap, eps, &h);
            cpu_mhln(&h.reshape(&rows)?, head_norm, &y.reshape(&rows)?);
        }
        Backend::Gpu(ctx) => {
            gpu_step(&ctx, d, [q, k, v, i_pre, f_pre], state, gate_soft_cap, eps, &h, Some((norm, &y)))?;
        }
    }
    Ok(y)
}

/// The chunkwise-parallel form, for prefill: q, k `[B, S, NH, DQK]`, v `[B, S, NH, DV]`, i_pre, f_pre
/// `[B, S, NH]` (token-major, as the projections produce them). Starts from `state` (zero for a new sequence, or where decoding or an
/// earlier prefill chunk left it), overwrites it with the final (C, n, m), and returns h `[B, S, NH, DV]`. `chunk` is the chunk length ([`DEFAULT_CHUNK`]); S need
/// not be a multiple of it. Equals S calls of [`mlstm_step`] up to float rounding.
pub fn mlstm_chunkwise(x: MlstmInputs<'_>, state: &MlstmState, chunk: usize, opts: MlstmOptions) -> Result<Tensor> {
    let MlstmInputs { q, k, v, i_pre, f_pre } = x;
    let d = validate_chunkwise(q, k, v, i_pre, f_pre, state, chunk, opts.gate_soft_cap, opts.eps)?;
    let out = Tensor::uninit(&q.backend(), "mlstm_chunkwise", &[d.b, d.s, d.nh, d.dv], DType::F32)?;
    mlstm_chunkwise_into(x, state, chunk, opts, &out)?;
    Ok(out)
}

/// [`mlstm_chunkwise`] writing h into `out` (`[B, S, NH, DV]` f32, a separate tensor).
pub fn mlstm_chunkwise_into(
    x: MlstmInputs<'_>,
    state: &MlstmState,
    chunk: usize,
    opts: MlstmOptions,
    out: &Tensor,
) -> Result<()> {
    const OP: &str = "mlstm_chunkwise";
    let MlstmInputs { q, k, v, i_pre, f_pre } = x;
    let MlstmOptions { gate_soft_cap, eps } = opts;
    let d = validate_chunkwise(q, k, v, i_pre, f_pre, state, chunk, gate_soft_cap, eps)?;
    check_out(OP, out, &[d.b, d.s, d.nh, d.dv], &[q, k, v, i_pre, f_pre, &state.c, &state.n, &state.m])?;
    match common_backend(OP, &[q, k, v, i_pre, f_pre, &state.c, &state.n, &state.m, out])? {
        Backend::Cpu => {
            cpu_chunkwise(d, q, k, v, i_pre, f_pre, state, chunk, gate_soft_cap, eps, out);
            Ok(())
        }
        Backend::Gpu(ctx) => gpu_chunkwise(&ctx, d, [q, k, v, i_pre, f_pre], state, chunk, gate_soft_cap, eps, out),
    }
}

/// Layer norm of each head: x `[.., NH·DH]` seen as `[.., NH, DH]` is normalised over DH
/// (`(x − mean) / sqrt(var + eps)`, biased variance), then scaled by `weight` and shifted by `bias`
/// (both `[NH·DH]`, optional, any float dtype). x is f32; the output has x's shape.
pub fn multihead_layernorm(
    x: &Tensor,
    nh: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<Tensor> {
    mhln(MHLN, x, HeadNorm { nh, weight, bias, gate: None, eps })
}

/// [`multihead_layernorm`] into `out` (x's shape, f32, a separate tensor).
pub fn multihead_layernorm_into(
    x: &Tensor,
    nh: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
    out: &Tensor,
) -> Result<()> {
    mhln_into(MHLN, x, HeadNorm { nh, weight, bias, gate: None, eps }, out)
}

/// The output-gated multi-head layer norm of an mLSTM layer: `sigmoid(gate) ⊙ multihead_layernorm(x)`,
/// with `gate` (the output gate's pre-activation o) f32 of x's shape; one launch instead of the norm and
/// the gate's elementwise ops. Finite for any finite gate (σ is formed from exp(−|o|)).
pub fn multihead_layernorm_gated(
    x: &Tensor,
    gate: &Tensor,
    nh: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
) -> Result<Tensor> {
    mhln(MHLN_GATED, x, HeadNorm { nh, weight, bias, gate: Some(gate), eps })
}

/// [`multihead_layernorm_gated`] into `out` (x's shape, f32, a separate tensor).
#[allow(clippy::too_many_arguments)]
pub fn multihead_layernorm_gated_into(
    x: &Tensor,
    gate: &Tensor,
    nh: usize,
    weight: Option<&Tensor>,
    bias: Option<&Tensor>,
    eps: f32,
    out: &Tensor,
) -> Result<()> {
    mhln_into(MHLN_GATED, x, HeadNorm { nh, weight, bias, gate: Some(gate), eps }, out)
}

const MHLN: &str = "multihead_layernorm";
const MHLN_GATED: &str = "multihead_layernorm_gated";

/// A multi-head layer norm's arguments beside x: its heads, optional weight, bias and output gate, eps.
#[derive(Clone, Copy)]
struct HeadNorm<'a> {
    nh: usize,
    weight: Option<&'a Tensor>,
    bias: Option<&'a Tensor>,
    gate: Option<&'a Tensor>,
    eps: f32,
}

fn mhln(op: &'static str, x: &Tensor, norm: HeadNorm<'_>) -> Result<Tensor> {
    validate_mhln(op, x, norm)?;
    let out = Tensor::uninit(&x.backend(), op, x.shape(), DType::F32)?;
    mhln_into(op, x, norm, &out)?;
    Ok(out)
}

fn mhln_into(op: &'static str, x: &Tensor, norm: HeadNorm<'_>, out: &Tensor) -> Result<()> {
    validate_mhln(op, x, norm)?;
    let mut inputs: Vec<&Tensor> = vec![x];
    inputs.extend(norm.weight);
    inputs.extend(norm.bias);
    inputs.extend(norm.gate);
    check_out(op, out, x.shape(), &inputs)?;
    inputs.push(out);
    match common_backend(op, &inputs)? {
        Backend::Cpu => {
            cpu_mhln(x, norm, out);
            Ok(())
        }
        Backend::Gpu(ctx) => gpu_mhln(&ctx, op, x, norm, out),
    }
}

// ---- validation -----------------------------------------------------------------------------------

/// The sizes of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Dims {
    b: usize,
    /// Tokens (1 for a step).
    s: usize,
    nh: usize,
    dqk: usize,
    dv: usize,
}

fn shape_error(op: &'static str, what: &str, expected: String, t: &Tensor) -> KernelError {
    KernelError::Shape { op, detail: format!("{what} must be {expected}, found {:?}", t.shape()) }
}

fn check_eps(op: &'static str, eps: f32) -> Result<()> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(KernelError::Argument {
            op,
            name: "eps",
            value: eps.to_string(),
            reason: "must be a finite number >= 0".into(),
        })
    }
}

fn check_gate_cap(op: &'static str, cap: Option<f32>) -> Result<()> {
    match cap {
        Some(c) if !(c.is_finite() && c > 0.0) => Err(KernelError::Argument {
            op,
            name: "gate_soft_cap",
            value: c.to_string(),
            reason: "must be a finite number > 0 (or None for no cap)".into(),
        }),
        _ => Ok(()),
    }
}

fn check_f32(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    for t in tensors {
        require_dtype(op, t, DType::F32)?;
    }
    Ok(())
}

/// Checks the state against (B, NH, DQK, DV) and that its tensors are separate from each other and from
/// the inputs (they are written).
fn check_state(op: &'static str, state: &MlstmState, d: Dims, inputs: &[&Tensor]) -> Result<()> {
    let (b, nh, dqk, dv) = (d.b, d.nh, d.dqk, d.dv);
    check_f32(op, &[&state.c, &state.n, &state.m])?;
    if state.c.shape() != [b, nh, dqk, dv] {
        return Err(shape_error(op, "state C", format!("[B, NH, DQK, DV] = [{b}, {nh}, {dqk}, {dv}]"), &state.c));
    }
    if state.n.shape() != [b, nh, dqk] {
        return Err(shape_error(op, "state n", format!("[B, NH, DQK] = [{b}, {nh}, {dqk}]"), &state.n));
    }
    if state.m.shape() != [b, nh] {
        return Err(shape_error(op, "state m", format!("[B, NH] = [{b}, {nh}]"), &state.m));
    }
    require_distinct(op, "state.c", &state.c, &[inputs, &[&state.n, &state.m]].concat())?;
    require_distinct(op, "state.n", &state.n, &[inputs, &[&state.m]].concat())?;
    require_distinct(op, "state.m", &state.m, inputs)?;
    Ok(())
}

/// `out` must have `shape`, be f32 and share storage with none of `others`.
fn check_out(op: &'static str, out: &Tensor, shape: &[usize], others: &[&Tensor]) -> Result<()> {
    require_dtype(op, out, DType::F32)?;
    if out.shape() != shape {
        return Err(shape_error(op, "out", format!("{shape:?}"), out));
    }
    require_distinct(op, "out", out, others)
}

/// Every index the kernels form must fit in u32.
fn check_indexable(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    for t in tensors {
        to_u32(op, "elements", t.numel())?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn validate_step(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    i_pre: &Tensor,
    f_pre: &Tensor,
    state: &MlstmState,
    gate_soft_cap: Option<f32>,
    eps: f32,
) -> Result<Dims> {
    check_f32(op, &[q, k, v, i_pre, f_pre])?;
    let [b, nh, dqk] = *q.shape() else {
        return Err(shape_error(op, "q", "[B, NH, DQK]".into(), q));
    };
    require_non_empty(op, "q", q)?;
    if k.shape() != q.shape() {
        return Err(shape_error(op, "k", format!("q's shape [B, NH, DQK] = [{b}, {nh}, {dqk}]"), k));
    }
    let dv = match *v.shape() {
        [vb, vnh, dv] if vb == b && vnh == nh => dv,
        _ => return Err(shape_error(op, "v", format!("[B, NH, DV] = [{b}, {nh}, DV]"), v)),
    };
    require_non_empty(op, "v", v)?;
    for (name, g) in [("i_pre", i_pre), ("f_pre", f_pre)] {
        if g.shape() != [b, nh] {
            return Err(shape_error(op, name, format!("[B, NH] = [{b}, {nh}]"), g));
        }
    }
    check_gate_cap(op, gate_soft_cap)?;
    check_eps(op, eps)?;
    let d = Dims { b, s: 1, nh, dqk, dv };
    check_state(op, state, d, &[q, k, v, i_pre, f_pre])?;
    check_indexable(op, &[&state.c])?;
    Ok(d)
}

#[allow(clippy::too_many_arguments)]
fn validate_chunkwise(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    i_pre: &Tensor,
    f_pre: &Tensor,
    state: &MlstmState,
    chunk: usize,
    gate_soft_cap: Option<f32>,
    eps: f32,
) -> Result<Dims> {
    const OP: &str = "mlstm_chunkwise";
    check_f32(OP, &[q, k, v, i_pre, f_pre])?;
    let [b, s, nh, dqk] = *q.shape() else {
        return Err(shape_error(OP, "q", "[B, S, NH, DQK]".into(), q));
    };
    require_non_empty(OP, "q", q)?;
    if k.shape() != q.shape() {
        return Err(shape_error(OP, "k", format!("q's shape [B, S, NH, DQK] = [{b}, {s}, {nh}, {dqk}]"), k));
    }
    let dv = match *v.shape() {
        [vb, vs, vnh, dv] if vb == b && vs == s && vnh == nh => dv,
        _ => return Err(shape_error(OP, "v", format!("[B, S, NH, DV] = [{b}, {s}, {nh}, DV]"), v)),
    };
    require_non_empty(OP, "v", v)?;
    for (name, g) in [("i_pre", i_pre), ("f_pre", f_pre)] {
        if g.shape() != [b, s, nh] {
            return Err(shape_error(OP, name, format!("[B, S, NH] = [{b}, {s}, {nh}]"), g));
        }
    }
    if chunk == 0 {
        return Err(KernelError::Argument {
            op: OP,
            name: "chunk",
            value: "0".into(),
            reason: "must be at least 1".into(),
        });
    }
    check_gate_cap(OP, gate_soft_cap)?;
    check_eps(OP, eps)?;
    let d = Dims { b, s, nh, dqk, dv };
    check_state(OP, state, d, &[q, k, v, i_pre, f_pre])?;
    check_indexable(OP, &[q, v, &state.c])?;
    Ok(d)
}

fn validate_mhln(op: &'static str, x: &Tensor, norm: HeadNorm<'_>) -> Result<()> {
    let HeadNorm { nh, weight, bias, gate, eps } = norm;
    require_dtype(op, x, DType::F32)?;
    require_non_empty(op, "x", x)?;
    let (_, width) = x.rows_cols();
    if nh == 0 || !width.is_multiple_of(nh) {
        return Err(KernelError::Argument {
            op,
            name: "nh",
            value: nh.to_string(),
            reason: format!("must divide the last dimension of x {:?} ({width}) into heads", x.shape()),
        });
    }
    for (name, t) in [("weight", weight), ("bias", bias)] {
        if let Some(t) = t {
            require_float(op, t)?;
            if t.shape() != [width] {
                return Err(shape_error(op, name, format!("[NH·DH] = [{width}]"), t));
            }
        }
    }
    if let Some(g) = gate {
        require_dtype(op, g, DType::F32)?;
        if g.shape() != x.shape() {
            return Err(shape_error(op, "gate", format!("x's shape {:?}", x.shape()), g));
        }
    }
    check_eps(op, eps)?;
    check_indexable(op, &[x])?;
    Ok(())
}

// ---- GPU ------------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    heads: u32,
    nh: u32,
    s: u32,
    dqk: u32,
    dv: u32,
    chunk: u32,
    nch: u32,
    tiles: u32,
    eps: f32,
    scale: f32,
    /// 0: no cap (validation keeps a given cap > 0).
    gate_cap: f32,
    /// mlstm_step4_state_norm: the head norm's epsilon (`eps` is the mLSTM's).
    norm_eps: f32,
}

/// Threads per workgroup: `want` (a power of two) or the adapter's largest power of two below it.
fn workgroup_size(ctx: &GpuContext, want: u32) -> u32 {
    let l = ctx.limits();
    let max = want
        .min(l.max_compute_invocations_per_workgroup)
        .min(l.max_compute_workgroup_size_x)
        .min(l.max_compute_workgroup_storage_size / 8)
        .max(1);
    1 << (31 - max.leading_zeros())
}

fn raw(ctx: &GpuContext, op: &'static str, t: &Tensor) -> Result<wgpu::Buffer> {
    let b = t.gpu_buffer().ok_or_else(|| KernelError::Gpu(format!("{op}: tensor is not on the GPU")))?;
    ctx.check_binding(op, b.size())?;
    Ok(b.raw().clone())
}

fn scratch(ctx: &Arc<GpuContext>, op: &'static str, bytes: usize) -> Result<GpuBuffer> {
    ctx.check_binding(op, bytes as u64)?;
    ctx.alloc(op, bytes as u64)
}

fn params(d: Dims, chunk: usize, nch: usize, tiles: usize, gate_cap: Option<f32>, eps: f32) -> Params {
    Params {
        heads: (d.b * d.nh) as u32,
        nh: d.nh as u32,
        s: d.s as u32,
        dqk: d.dqk as u32,
        dv: d.dv as u32,
        chunk: chunk as u32,
        nch: nch as u32,
        tiles: tiles as u32,
        eps,
        scale: 1.0 / (d.dqk as f32).sqrt(),
        gate_cap: gate_cap.unwrap_or(0.0),
        norm_eps: 0.0,
    }
}

/// The step into `out` (h); with `norm`, also the gated head norm of h into its tensor.
#[allow(clippy::too_many_arguments)]
fn gpu_step(
    ctx: &GpuContext,
    d: Dims,
    [q, k, v, i, f]: [&Tensor; 5],
    state: &MlstmState,
    gate_cap: Option<f32>,
    eps: f32,
    out: &Tensor,
    norm: Option<(GatedHeadNorm<'_>, &Tensor)>,
) -> Result<()> {
    const OP: &str = "mlstm_step";
    require_storage_buffers(ctx, OP, 9, "9 storage buffers per shader stage")?;
    let bufs = [q, k, v, i, f, &state.c, &state.n, &state.m, out].map(|t| raw(ctx, OP, t));
    let bufs: Vec<wgpu::Buffer> = bufs.into_iter().collect::<Result<_>>()?;
    let refs: Vec<&wgpu::Buffer> = bufs.iter().collect();
    let p = params(d, 1, 1, 1, gate_cap, eps);
    // The norm as its own launch after the step: the fused kernel needs vec4 columns and 10 bindings.
    let separate_norm = |norm: Option<(GatedHeadNorm<'_>, &Tensor)>| -> Result<()> {
        let Some((n, y)) = norm else { return Ok(()) };
        let rows = [d.b, d.nh * d.dv];
        let (h, g, y) = (out.reshape(&rows)?, n.gate.reshape(&rows)?, y.reshape(&rows)?);
        gpu_mhln(
            ctx,
            MHLN_GATED,
            &h,
            HeadNorm { nh: d.nh, weight: n.weight, bias: n.bias, gate: Some(&g), eps: n.eps },
            &y,
        )
    };
    if !d.dv.is_multiple_of(4) {
        // One workgroup per head (the whole step, state included).
        let wg = workgroup_size(ctx, 1024);
        let tc = (d.dv.next_power_of_two() as u32).min(wg);
        ctx.dispatch(Dispatch {
            kernel: &MLSTM,
            entry: "mlstm_step",
            constants: &[("WG", wg as f64), ("TC", tc as f64)],
            params: Some(bytemuck::bytes_of(&p)),
            buffers: &refs,
            workgroups: Workgroups::Linear(p.heads),
        })?;
        return separate_norm(norm);
    }
    // vec4 columns: a workgroup per (head, STEP_COLS vec4 columns), then the n and m update per head.
    let wg = workgroup_size(ctx, 256);
    let cols = d.dv / 4;
    let tc = (cols.next_power_of_two() as u32).min(STEP_COLS).min(wg);
    let slices = cols.div_ceil(tc as usize);
    let constants = [("WG", wg as f64), ("TC", tc as f64)];
    ctx.dispatch(Dispatch {
        kernel: &MLSTM,
        entry: "mlstm_step4",
        constants: &constants,
        params: Some(bytemuck::bytes_of(&p)),
        buffers: &refs,
        workgroups: Workgroups::Linear(to_u32(OP, "workgroups", d.b * d.nh * slices)?),
    })?;
    // k, i, f, n, m of [q, k, v, i, f, c, n, m, out].
    let state_bufs = [refs[1], refs[3], refs[4], refs[6], refs[7]];
    match norm {
        Some((n, y)) if ctx.limits().max_storage_buffers_per_shader_stage >= 10 => {
            // The state update and the head norm in one launch: h, w, b, y, o, then k, i, f, n, m.
            let h = refs[8];
            let w = n.weight.map(|t| raw(ctx, OP, t)).transpose()?;
            let b = n.bias.map(|t| raw(ctx, OP, t)).transpose()?;
            let (g, y) = (raw(ctx, OP, n.gate)?, raw(ctx, OP, y)?);
            let mut buffers = vec![h, w.as_ref().unwrap_or(h), b.as_ref().unwrap_or(h), &y, &g];
            buffers.extend(state_bufs);
            let p = Params { norm_eps: n.eps, ..p };
            ctx.dispatch(Dispatch {
                kernel: &MLSTM,
                entry: "mlstm_step4_state_norm",
                constants: &[
                    ("WG", wg as f64),
                    ("HAS_W", if w.is_some() { 1.0 } else { 0.0 }),
                    ("HAS_B", if b.is_some() { 1.0 } else { 0.0 }),
                    ("HAS_G", 1.0),
                    ("WDTYPE", n.weight.map_or(0.0, |t| t.dtype().wgsl_code())),
                    ("BDTYPE", n.bias.map_or(0.0, |t| t.dtype().wgsl_code())),
                ],
                params: Some(bytemuck::bytes_of(&p)),
                buffers: &buffers,
                workgroups: Workgroups::Linear(p.heads),
            })
        }
        norm => {
            ctx.dispatch(Dispatch {
                kernel: &MLSTM,
                entry: "mlstm_step4_state",
                constants: &constants,
                params: Some(bytemuck::bytes_of(&p)),
                buffers: &state_bufs,
                workgroups: Workgroups::Linear(p.heads),
            })?;
            separate_norm(norm)
        }
    }
}

/// vec4 columns of C per workgroup of the vec4 step (xLSTM-7B: DV 512 → 16 workgroups a head).
const STEP_COLS: u32 = 8;

#[allow(clippy::too_many_arguments)]
fn gpu_chunkwise(
    ctx: &Arc<GpuContext>,
    d: Dims,
    [q, k, v, i, f]: [&Tensor; 5],
    state: &MlstmState,
    chunk: usize,
    gate_cap: Option<f32>,
    eps: f32,
    out: &Tensor,
) -> Result<()> {
    const OP: &str = "mlstm_chunkwise";
    require_storage_buffers(ctx, OP, 8, "8 storage buffers per shader stage")?;
    let heads = d.b * d.nh;
    let l = chunk.min(d.s);
    let nch = d.s.div_ceil(l);
    let wg = workgroup_size(ctx, 256);
    // chunk_out: 8 row groups × TC columns (kernels/mlstm.wgsl).
    let tc = (d.dv.next_power_of_two() as u32).min(32).min(wg / 8).max(1);
    let tiles = d.dv.div_ceil(tc as usize);
    for (name, n) in [("chunks", heads * nch * l * l), ("tiles", heads * tiles), ("tokens", heads * d.s * 4)] {
        to_u32(OP, name, n)?;
    }
    let tok = scratch(ctx, OP, heads * d.s * 16)?;
    let chk = scratch(ctx, OP, heads * (nch + 1) * 16)?;
    let dn = scratch(ctx, OP, heads * nch * d.dqk * 4)?;
    let pm = scratch(ctx, OP, heads * nch * l * l * 4)?;
    let [q, k, v, i, f, c, n, m, h] = [q, k, v, i, f, &state.c, &state.n, &state.m, out].map(|t| raw(ctx, OP, t));
    let (q, k, v, i, f, c, n, m, h) = (q?, k?, v?, i?, f?, c?, n?, m?, h?);
    let (tok, chk, dn, pm) = (tok.raw(), chk.raw(), dn.raw(), pm.raw());
    let p = params(d, l, nch, tiles, gate_cap, eps);
    let base = [("WG", wg as f64)];
    let launch = |entry: &'static str, buffers: &[&wgpu::Buffer], groups: usize, constants: &[(&'static str, f64)]| {
        ctx.dispatch(Dispatch {
            kernel: &MLSTM,
            entry,
            constants,
            params: Some(bytemuck::bytes_of(&p)),
            buffers,
            workgroups: Workgroups::Linear(groups as u32),
        })
    };
    launch("chunk_prep", &[&i, &f, &m, tok, chk], heads, &base)?;
    launch("chunk_dn", &[&k, tok, dn], heads * nch, &base)?;
    launch("chunk_nscan", &[chk, &n, dn], heads, &base)?;
    launch("chunk_p", &[&q, &k, dn, chk, tok, pm], heads * nch, &base)?;
    launch(
        "chunk_out",
        &[&q, &k, &v, tok, chk, pm, &c, &h],
        heads * tiles,
        &[("WG", 8.0 * tc as f64), ("TC", tc as f64)],
    )
}

fn gpu_mhln(ctx: &GpuContext, op: &'static str, x: &Tensor, norm: HeadNorm<'_>, out: &Tensor) -> Result<()> {
    let HeadNorm { nh, weight, bias, gate, eps } = norm;
    let (rows, width) = x.rows_cols();
    let dh = width / nh;
    let xb = raw(ctx, op, x)?;
    // An absent weight, bias or gate binds x in its place (never read).
    let wb = weight.map(|t| raw(ctx, op, t)).transpose()?.unwrap_or_else(|| xb.clone());
    let bb = bias.map(|t| raw(ctx, op, t)).transpose()?.unwrap_or_else(|| xb.clone());
    let gb = gate.map(|t| raw(ctx, op, t)).transpose()?.unwrap_or_else(|| xb.clone());
    let yb = raw(ctx, op, out)?;
    // About 8 elements an invocation: fewer barrier rounds per head (on lavapipe, [128, 8x512] took
    // 37 ms with 64 invocations against 62 ms with 256).
    let wg = workgroup_size(ctx, (dh.next_power_of_two() as u32 / 8).clamp(32, 256));
    let segs = to_u32(op, "segments", rows * nh)?;
    let p = Params {
        heads: segs,
        nh: nh as u32,
        s: 1,
        dqk: 1,
        dv: dh as u32,
        chunk: 1,
        nch: 1,
        tiles: 1,
        eps,
        scale: 1.0,
        gate_cap: 0.0,
        norm_eps: 0.0,
    };
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    ctx.dispatch(Dispatch {
        kernel: &MLSTM,
        entry: "multihead_layernorm",
        constants: &[
            ("WG", wg as f64),
            ("HAS_W", flag(weight.is_some())),
            ("HAS_B", flag(bias.is_some())),
            ("HAS_G", flag(gate.is_some())),
            ("WDTYPE", weight.map_or(0.0, |t| t.dtype().wgsl_code())),
            ("BDTYPE", bias.map_or(0.0, |t| t.dtype().wgsl_code())),
        ],
        params: Some(bytemuck::bytes_of(&p)),
        buffers: &[&xb, &wb, &bb, &yb, &gb],
        workgroups: Workgroups::Linear(segs),
    })
}

// ---- CPU ------------------------------------------------------------------------------------------

/// σ(x) from exp(−|x|), which cannot overflow.
fn sigmoid(x: f64) -> f64 {
    let e = (-x.abs()).exp();
    if x >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) }
}

/// logσ(x) = −softplus(−x), without overflow for any x.
pub(crate) fn log_sigmoid(x: f32) -> f32 {
    x.min(0.0) - (-x.abs()).exp().ln_1p()
}

/// The gate pre-activations of `t` as the recurrence uses them: soft-capped when `cap` is set, with the
/// elementwise softcap's formula.
fn gates(t: &Tensor, cap: Option<f32>) -> Vec<f32> {
    let mut g = cpu::read_f32(t);
    if let Some(cap) = cap {
        let op = super::elementwise::Unary::Softcap { cap };
        g.iter_mut().for_each(|x| *x = op.apply(*x));
    }
    g
}

/// Runs `f(head, c, n, m)` for every (batch row, head) in parallel over the state; head = b·NH + h.
fn for_each_head<F>(d: Dims, state: &MlstmState, f: F)
where
    F: Fn(usize, &mut [f32], &mut [f32], &mut f32) + Sync,
{
    let mut c = cpu::read_f32(&state.c);
    let mut n = cpu::read_f32(&state.n);
    let mut m = cpu::read_f32(&state.m);
    c.par_chunks_mut(d.dqk * d.dv)
        .zip(n.par_chunks_mut(d.dqk))
        .zip(m.par_iter_mut())
        .enumerate()
        .for_each(|(head, ((c, n), m))| f(head, c, n, m));
    cpu::write_f32(&state.c, &c);
    cpu::write_f32(&state.n, &n);
    cpu::write_f32(&state.m, &m);
}

#[allow(clippy::too_many_arguments)]
fn cpu_step(
    d: Dims,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    i_pre: &Tensor,
    f_pre: &Tensor,
    state: &MlstmState,
    gate_cap: Option<f32>,
    eps: f32,
    out: &Tensor,
) {
    let (q, k, v) = (cpu::read_f32(q), cpu::read_f32(k), cpu::read_f32(v));
    let (ig, fg) = (gates(i_pre, gate_cap), gates(f_pre, gate_cap));
    let (dqk, dv) = (d.dqk, d.dv);
    let scale = 1.0 / (dqk as f32).sqrt();
    let h = std::sync::Mutex::new(vec![0.0f32; d.b * d.nh * dv]);
    for_each_head(d, state, |head, c, n, m| {
        let (qh, kh, vh) = (&q[head * dqk..][..dqk], &k[head * dqk..][..dqk], &v[head * dv..][..dv]);
        let lf = log_sigmoid(fg[head]);
        let m_new = (lf + *m).max(ig[head]);
        let fa = (lf + *m - m_new).exp();
        let ia = (ig[head] - m_new).exp();
        *m = m_new;
        let mut num = vec![0.0f32; dv];
        let mut den = 0.0f32;
        for a in 0..dqk {
            let row = &mut c[a * dv..][..dv];
            let ka = ia * kh[a];
            let qa = qh[a] * scale;
            for ((cv, &vv), nv) in row.iter_mut().zip(vh).zip(num.iter_mut()) {
                *cv = fa * *cv + ka * vv;
                *nv += qa * *cv;
            }
            n[a] = fa * n[a] + ia * kh[a];
            den += qa * n[a];
        }
        let denom = den.abs().max((-m_new).exp()) + eps;
        let mut h = h.lock().unwrap_or_else(|p| p.into_inner());
        for (o, &x) in h[head * dv..][..dv].iter_mut().zip(&num) {
            *o = x / denom;
        }
    });
    cpu::write_f32(out, &h.into_inner().unwrap_or_else(|p| p.into_inner()));
}

#[allow(clippy::too_many_arguments)]
fn cpu_chunkwise(
    d: Dims,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    i_pre: &Tensor,
    f_pre: &Tensor,
    state: &MlstmState,
    chunk: usize,
    gate_cap: Option<f32>,
    eps: f32,
    out: &Tensor,
) {
    let (q, k, v) = (cpu::read_f32(q), cpu::read_f32(k), cpu::read_f32(v));
    let (ig, fg) = (gates(i_pre, gate_cap), gates(f_pre, gate_cap));
    let Dims { b: _, s, nh, dqk, dv } = d;
    let scale = 1.0 / (dqk as f32).sqrt();
    // Token t of head (b, h): row (b·S + t)·NH + h of q, k, v, the gates and h.
    let row = |head: usize, t: usize| ((head / nh) * s + t) * nh + head % nh;
    let h_all = std::sync::Mutex::new(vec![0.0f32; d.b * s * nh * dv]);
    for_each_head(d, state, |head, c, n, m| {
        let mut h_head = vec![0.0f32; s * dv];
        let mut b = vec![0.0f32; chunk];
        let mut qs = vec![0.0f32; dqk];
        for t0 in (0..s).step_by(chunk) {
            let len = chunk.min(s - t0);
            // b_t: the running sum of logσ(f̃) over the chunk.
            let mut acc = 0.0f32;
            for j in 0..len {
                acc += log_sigmoid(fg[row(head, t0 + j)]);
                b[j] = acc;
            }
            let m0 = *m;
            // Outputs, from the state at the chunk's start and the chunk's own tokens.
            for t in 0..len {
                let rt = row(head, t0 + t);
                for (o, &x) in qs.iter_mut().zip(&q[rt * dqk..][..dqk]) {
                    *o = x * scale;
                }
                let m_inter = b[t] + m0;
                let mut m_t = m_inter;
                for j in 0..=t {
                    m_t = m_t.max(b[t] - b[j] + ig[row(head, t0 + j)]);
                }
                let w_inter = (m_inter - m_t).exp();
                let num = &mut h_head[(t0 + t) * dv..][..dv];
                let mut den = 0.0f32;
                for a in 0..dqk {
                    let qa = qs[a] * w_inter;
                    den += qa * n[a];
                    for (o, &cv) in num.iter_mut().zip(&c[a * dv..][..dv]) {
                        *o += qa * cv;
                    }
                }
                for j in 0..=t {
                    let rj = row(head, t0 + j);
                    let dj = (b[t] - b[j] + ig[rj] - m_t).exp();
                    let sj = dj * qs.iter().zip(&k[rj * dqk..][..dqk]).map(|(x, y)| x * y).sum::<f32>();
                    den += sj;
                    for (o, &vv) in num.iter_mut().zip(&v[rj * dv..][..dv]) {
                        *o += sj * vv;
                    }
                }
                let denom = den.abs().max((-m_t).exp()) + eps;
                num.iter_mut().for_each(|o| *o /= denom);
            }
            // The state at the chunk's end.
            let g = b[len - 1];
            let mut m1 = g + m0;
            for j in 0..len {
                m1 = m1.max(g - b[j] + ig[row(head, t0 + j)]);
            }
            let decay = (g + m0 - m1).exp();
            c.iter_mut().for_each(|x| *x *= decay);
            n.iter_mut().for_each(|x| *x *= decay);
            for (j, &bj) in b[..len].iter().enumerate() {
                let rj = row(head, t0 + j);
                let wj = (g - bj + ig[rj] - m1).exp();
                let (kj, vj) = (&k[rj * dqk..][..dqk], &v[rj * dv..][..dv]);
                for (a, (&kv, nv)) in kj.iter().zip(n.iter_mut()).enumerate() {
                    let ka = wj * kv;
                    *nv += ka;
                    for (cv, &vv) in c[a * dv..][..dv].iter_mut().zip(vj) {
                        *cv += ka * vv;
                    }
                }
            }
            *m = m1;
        }
        let mut h_all = h_all.lock().unwrap_or_else(|p| p.into_inner());
        for t in 0..s {
            h_all[row(head, t) * dv..][..dv].copy_from_slice(&h_head[t * dv..][..dv]);
        }
    });
    cpu::write_f32(out, &h_all.into_inner().unwrap_or_else(|p| p.into_inner()));
}

fn cpu_mhln(x: &Tensor, norm: HeadNorm<'_>, out: &Tensor) {
    let HeadNorm { nh, weight, bias, gate, eps } = norm;
    let xs = cpu::read_f32(x);
    let (_, width) = x.rows_cols();
    let dh = width / nh;
    let w = weight.map(cpu::read_f32);
    let b = bias.map(cpu::read_f32);
    let g = gate.map(cpu::read_f32);
    let mut y = vec![0.0f32; xs.len()];
    y.par_chunks_mut(dh).zip(xs.par_chunks(dh)).enumerate().for_each(|(seg, (yh, xh))| {
        let col0 = (seg % nh) * dh;
        let mean = xh.iter().map(|&v| v as f64).sum::<f64>() / dh as f64;
        let var = xh.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dh as f64;
        // A constant head with eps = 0 gives 0 (not 0/0), as rmsnorm and layernorm do.
        let inv = if var + eps as f64 == 0.0 { 0.0 } else { 1.0 / (var + eps as f64).sqrt() };
        for (e, (o, &v)) in yh.iter_mut().zip(xh).enumerate() {
            let mut r = (v as f64 - mean) * inv;
            if let Some(w) = &w {
                r *= w[col0 + e] as f64;
            }
            if let Some(b) = &b {
                r += b[col0 + e] as f64;
            }
            if let Some(g) = &g {
                r *= sigmoid(g[seg * dh + e] as f64);
            }
            *o = r as f32;
        }
    });
    cpu::write_f32(out, &y);
}

// ---- bench ----------------------------------------------------------------------------------------

/// Bench op names of this family.
pub const BENCH_OPS: &[&str] = &["mlstm_step", "mlstm_chunkwise", "multihead_layernorm", "multihead_layernorm_gated"];

/// xLSTM-7B shapes and gate soft cap: B 1, NH 8, DQK 256, DV 512 (hidden 4096, qk_dim_factor 0.5), cap 15.
/// `mlstm_step` moves the state once each way (its size is fixed); `mlstm_chunkwise` takes S tokens from
/// `bytes` (q, k, v and h, 16 to 2048 tokens, 2048 being xLSTM-7B's prefill target);
/// `multihead_layernorm` normalises rows of 8 heads × 512 with an f32 weight, and
/// `multihead_layernorm_gated` gates them with an output-gate pre-activation as well.
pub fn bench_case(op: &str, bytes: u64) -> Option<Result<crate::bench::BenchCase>> {
    use crate::bench::{BenchCase, random_tensor, rows_for};
    use crate::testing::Tolerance;

    if !BENCH_OPS.contains(&op) {
        return None;
    }
    const B: usize = 1;
    const NH: usize = 8;
    const DQK: usize = 256;
    const DV: usize = 512;
    const EPS: f32 = 1e-6;
    const CAP: Option<f32> = Some(15.0);
    let dims = (B, 1, NH, DQK, DV);
    let state_bytes = (4 * B * NH * (DQK * DV + DQK + 1)) as u64;
    let tolerance = Tolerance { atol: 1e-4, rtol: 1e-3 };
    let build = || -> Result<BenchCase> {
        let state = |seed: u64| -> Result<Vec<Tensor>> {
            Ok(vec![
                random_tensor(seed, &[B, NH, DQK, DV], DType::F32, -0.5, 0.5)?,
                random_tensor(seed + 1, &[B, NH, DQK], DType::F32, -0.5, 0.5)?,
                random_tensor(seed + 2, &[B, NH], DType::F32, -2.0, 2.0)?,
            ])
        };
        let state_of = |i: &[Tensor]| MlstmState { c: i[5].clone(), n: i[6].clone(), m: i[7].clone() };
        let reference_of = move |i: &[Tensor], (b, s, nh, dqk, dv): (usize, usize, usize, usize, usize)| {
            let r = |t: &Tensor| cpu::read_f32(t);
            let to64 = |t: &Tensor| r(t).into_iter().map(f64::from).collect::<Vec<f64>>();
            let mut st = reference::State64 { c: to64(&i[5]), n: to64(&i[6]), m: to64(&i[7]) };
            reference::recurrence(
                (b, s, nh, dqk, dv),
                &r(&i[0]),
                &r(&i[1]),
                &r(&i[2]),
                &r(&i[3]),
                &r(&i[4]),
                &mut st,
                CAP,
                EPS,
            )
        };
        Ok(match op {
            "mlstm_step" => {
                let mut inputs = vec![
                    random_tensor(61, &[B, NH, DQK], DType::F32, -1.0, 1.0)?,
                    random_tensor(62, &[B, NH, DQK], DType::F32, -1.0, 1.0)?,
                    random_tensor(63, &[B, NH, DV], DType::F32, -1.0, 1.0)?,
                    random_tensor(64, &[B, NH], DType::F32, -5.0, 5.0)?,
                    random_tensor(65, &[B, NH], DType::F32, -5.0, 5.0)?,
                ];
                inputs.extend(state(66)?);
                BenchCase {
                    op: "mlstm_step",
                    dtype: DType::F32,
                    shape: format!("B{B} NH{NH} DQK{DQK} DV{DV}"),
                    bytes: 2 * state_bytes,
                    flops: (B * NH * 4 * DQK * DV) as u64,
                    tolerance,
                    inputs,
                    run: Box::new(move |i| {
                        mlstm_step(
                            MlstmInputs { q: &i[0], k: &i[1], v: &i[2], i_pre: &i[3], f_pre: &i[4] },
                            &state_of(i),
                            MlstmOptions { gate_soft_cap: CAP, eps: EPS },
                        )
                    }),
                    reference: Box::new(move |i| Ok(reference_of(i, dims))),
                }
            }
            "mlstm_chunkwise" => {
                let per_token = 4 * B * NH * (2 * DQK + 2 * DV);
                let s = ((bytes as usize) / per_token).clamp(16, 2048);
                let mut inputs = vec![
                    random_tensor(71, &[B, s, NH, DQK], DType::F32, -1.0, 1.0)?,
                    random_tensor(72, &[B, s, NH, DQK], DType::F32, -1.0, 1.0)?,
                    random_tensor(73, &[B, s, NH, DV], DType::F32, -1.0, 1.0)?,
                    random_tensor(74, &[B, s, NH], DType::F32, -5.0, 5.0)?,
                    random_tensor(75, &[B, s, NH], DType::F32, -2.0, 8.0)?,
                ];
                inputs.extend(state(76)?);
                let chunk = DEFAULT_CHUNK;
                BenchCase {
                    op: "mlstm_chunkwise",
                    dtype: DType::F32,
                    shape: format!("B{B} S{s} NH{NH} DQK{DQK} DV{DV} chunk {chunk}"),
                    bytes: (s * per_token) as u64 + 2 * state_bytes,
                    flops: (B * NH * s * (8 * DQK * DV + 2 * chunk.min(s) * (DQK + DV))) as u64,
                    tolerance,
                    inputs,
                    run: Box::new(move |i| {
                        mlstm_chunkwise(
                            MlstmInputs { q: &i[0], k: &i[1], v: &i[2], i_pre: &i[3], f_pre: &i[4] },
                            &state_of(i),
                            chunk,
                            MlstmOptions { gate_soft_cap: CAP, eps: EPS },
                        )
                    }),
                    reference: Box::new(move |i| Ok(reference_of(i, (B, s, NH, DQK, DV)))),
                }
            }
            "multihead_layernorm" => {
                let width = NH * DV;
                let rows = rows_for(bytes, width, 8);
                let x = random_tensor(81, &[rows, width], DType::F32, -3.0, 3.0)?;
                let w = random_tensor(82, &[width], DType::F32, 0.5, 1.5)?;
                BenchCase {
                    op: "multihead_layernorm",
                    dtype: DType::F32,
                    shape: format!("[{rows}, {NH}x{DV}]"),
                    bytes: (rows * width * 8 + width * 4) as u64,
                    flops: 0,
                    tolerance: Tolerance { atol: 2e-5, rtol: 2e-5 },
                    inputs: vec![x, w],
                    run: Box::new(|i| multihead_layernorm(&i[0], NH, Some(&i[1]), None, 1e-6)),
                    reference: Box::new(move |i| {
                        let w = cpu::read_f32(&i[1]);
                        let x = cpu::read_f32(&i[0]);
                        Ok(reference::multihead_layernorm(&x, width, NH, Some(&w), None, None, 1e-6))
                    }),
                }
            }
            _ => {
                let width = NH * DV;
                let rows = rows_for(bytes, width, 12);
                let x = random_tensor(83, &[rows, width], DType::F32, -3.0, 3.0)?;
                let o = random_tensor(84, &[rows, width], DType::F32, -6.0, 6.0)?;
                let w = random_tensor(85, &[width], DType::F32, 0.5, 1.5)?;
                BenchCase {
                    op: "multihead_layernorm_gated",
                    dtype: DType::F32,
                    shape: format!("[{rows}, {NH}x{DV}]"),
                    bytes: (rows * width * 12 + width * 4) as u64,
                    flops: 0,
                    tolerance: Tolerance { atol: 2e-5, rtol: 2e-5 },
                    inputs: vec![x, o, w],
                    run: Box::new(|i| multihead_layernorm_gated(&i[0], &i[1], NH, Some(&i[2]), None, 1e-6)),
                    reference: Box::new(move |i| {
                        let (x, o, w) = (cpu::read_f32(&i[0]), cpu::read_f32(&i[1]), cpu::read_f32(&i[2]));
                        Ok(reference::multihead_layernorm(&x, width, NH, Some(&w), None, Some(&o), 1e-6))
                    }),
                }
            }
        })
    };
    Some(build())
}

// ---- reference ------------------------------------------------------------------------------------

/// f64 references of the tests and the bench.
pub mod reference {
    /// A state in f64: C `[B, NH, DQK, DV]`, n `[B, NH, DQK]`, m `[B, NH]`.
    #[derive(Clone, Debug)]
    pub struct State64 {
        pub c: Vec<f64>,
        pub n: Vec<f64>,
        pub m: Vec<f64>,
    }

    fn log_sigmoid(x: f64) -> f64 {
        x.min(0.0) - (-x.abs()).exp().ln_1p()
    }

    /// The step-by-step recurrence over token-major inputs (q, k `[B, S, NH, DQK]`, v `[B, S, NH, DV]`,
    /// gates `[B, S, NH]`, soft-capped first when `gate_cap` is set) from `state`, which it leaves at the
    /// final state; returns h `[B, S, NH, DV]`.
    #[allow(clippy::too_many_arguments)]
    pub fn recurrence(
        (b, s, nh, dqk, dv): (usize, usize, usize, usize, usize),
        q: &[f32],
        k: &[f32],
        v: &[f32],
        ig: &[f32],
        fg: &[f32],
        state: &mut State64,
        gate_cap: Option<f32>,
        eps: f32,
    ) -> Vec<f64> {
        let scale = 1.0 / (dqk as f64).sqrt();
        let cap = |x: f32| gate_cap.map_or(x as f64, |c| c as f64 * (x as f64 / c as f64).tanh());
        let mut h = vec![0.0f64; b * s * nh * dv];
        for bi in 0..b {
            for hi in 0..nh {
                let head = bi * nh + hi;
                let c = &mut state.c[head * dqk * dv..][..dqk * dv];
                let n = &mut state.n[head * dqk..][..dqk];
                let m = &mut state.m[head];
                for t in 0..s {
                    let r = (bi * s + t) * nh + hi;
                    let (qt, kt, vt) = (&q[r * dqk..][..dqk], &k[r * dqk..][..dqk], &v[r * dv..][..dv]);
                    let (i, lf) = (cap(ig[r]), log_sigmoid(cap(fg[r])));
                    let m_new = (lf + *m).max(i);
                    let fa = (lf + *m - m_new).exp();
                    let ia = (i - m_new).exp();
                    *m = m_new;
                    let mut num = vec![0.0f64; dv];
                    let mut den = 0.0f64;
                    for a in 0..dqk {
                        let qa = qt[a] as f64 * scale;
                        n[a] = fa * n[a] + ia * kt[a] as f64;
                        den += qa * n[a];
                        for e in 0..dv {
                            let cv = &mut c[a * dv + e];
                            *cv = fa * *cv + ia * kt[a] as f64 * vt[e] as f64;
                            num[e] += qa * *cv;
                        }
                    }
                    let denom = den.abs().max((-m_new).exp()) + eps as f64;
                    for e in 0..dv {
                        h[r * dv + e] = num[e] / denom;
                    }
                }
            }
        }
        h
    }

    /// The multi-head layer norm of `x` (rows of `nh` heads), times σ(gate) elementwise when a gate (x's
    /// layout) is given.
    pub fn multihead_layernorm(
        x: &[f32],
        width: usize,
        nh: usize,
        w: Option<&[f32]>,
        b: Option<&[f32]>,
        gate: Option<&[f32]>,
        eps: f32,
    ) -> Vec<f64> {
        let dh = width / nh;
        let mut out = Vec::with_capacity(x.len());
        for (seg, xh) in x.chunks(dh).enumerate() {
            let col0 = (seg % nh) * dh;
            let mean = xh.iter().map(|&v| v as f64).sum::<f64>() / dh as f64;
            let var = xh.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / dh as f64;
            for (e, &v) in xh.iter().enumerate() {
                let mut r = (v as f64 - mean) / (var + eps as f64).sqrt();
                r *= w.map_or(1.0, |w| w[col0 + e] as f64);
                r += b.map_or(0.0, |b| b[col0 + e] as f64);
                // σ(o) = 1 / (1 + e^−o), 0 (not NaN) where e^−o overflows.
                r *= gate.map_or(1.0, |g| 1.0 / (1.0 + (-(g[seg * dh + e] as f64)).exp()));
                out.push(r);
            }
        }
        out
    }
}

// ---- tests ----------------------------------------------------------------------------------------

#[cfg(test)]
mod layout_tests {
    #[test]
    fn params_match_the_wgsl_struct() {
        let size = crate::testing::wgsl_struct_size(&super::MLSTM, "Params");
        assert_eq!(size as usize, std::mem::size_of::<super::Params>());
    }
}

#[cfg(test)]
mod tests;
