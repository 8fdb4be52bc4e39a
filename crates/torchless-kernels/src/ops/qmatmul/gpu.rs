use super::*;
use crate::gpu::{Dispatch, GpuContext, Workgroups};
use crate::ops::gemm::{COOP16_WORKGROUP, CoopVariant, cooperative_variant, f16_copy};
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
crate::kernel_source!(unchecked QMATMUL_COOP, "qmatmul_coop", ["qmatmul", "coop16", "qmatmul_coop"]);

/// Rows (of x) and columns (rows of W) of the output a workgroup of QMATMUL_COOP computes
/// (qmatmul_coop.wgsl's `HM`, `HN`).
pub(crate) const QCOOP16_TILE: (usize, usize) = (256, 128);

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

/// Rows per workgroup sharing each load of x ([`rows_per_workgroup`]), fewer when there would be under 512
/// workgroups; about four units per thread (32..=128 threads; Q4_K and Q5_K: [`k_quant_threads`]); x
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
    let wg = match w.quant_type() {
        QuantType::Q4K | QuantType::Q5K => k_quant_threads(w.rows(), w.cols()),
        _ => (units(w) / 4).next_power_of_two().clamp(32, 128) as u32,
    };
    let mut rows = rows_per_workgroup(w.quant_type(), w.cols());
    while rows > 1 && w.rows().div_ceil(rows as usize) < 512 {
        rows /= 2;
    }
    Tune { wg, rows, teams: 0 }
}

/// Weight rows a workgroup before [`auto_tune`] trims them: two for Q4_K and Q5_K, one for Q6_K rows under
/// 8192 values, else four sharing each load of x. Q6_K, the GEMV alone on the H100
/// (`benchmarks/results/2026-12-07i-h100/`), four rows against one: 14336 × 4096 66.4–70.8 against
/// 77.5–78.8 % of copy, 127488 × 4096 (about the LM head of a Llama-3 Q4_K_M file) 95.1–96.6 against
/// 97.1–98.8 %, 8192 × 4096 55.3–56.0 against 58.1–71.5 %; but 4096 × 14336 73.5 against 67.2 %.
pub(super) fn rows_per_workgroup(t: QuantType, cols: usize) -> u32 {
    match t {
        QuantType::Q4K | QuantType::Q5K => 2,
        QuantType::Q6K if cols < 8192 => 1,
        _ => 4,
    }
}

/// Threads a workgroup for a plain Q4_K or Q5_K GEMV: 32, or 64 for long rows (8192 values or more) in
/// too few rows (under 8192) to keep the GPU busy with one-warp workgroups. On the H100 (the GEMV alone,
/// 32 MiB, `benchmarks/results/2026-12-06i-h100/run28/`): 4096 × 14336 ran at 80.8–81.4 % of copy against
/// 75.6–75.7 % with 32; 14336 × 4096 gained nothing (12-06h), and 4096-long rows in the Q/K/V launch of
/// Llama-3-8B q4_k decode lost (326 against 334 tok/s).
pub(super) fn k_quant_threads(rows: usize, cols: usize) -> u32 {
    if rows < 8192 && cols >= 8192 { 64 } else { 32 }
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

#[cfg(test)]
thread_local! {
    /// Tests: the fewest rows a team of an emitting dispatch of this thread takes, whatever the format.
    pub(super) static TEST_EMIT_ROWS: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
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
/// (kernels/qgemv.wgsl PREFETCH): forced by [`PREFETCH_VAR`], else only for a plain Q6_K GEMV (no RoPE,
/// gated or emitting epilogue: in decode, the LM head of a Q4_K_M file). The GEMV alone on the H200
/// (`benchmarks/results/2026-12-05b-h200/pf/`): Q6_K 64.5 → 69.5 % of copy at 14336 × 4096 and 67.7 →
/// 82.8 % at 4096 × 14336, while the formats with shorter unit arithmetic lost to its registers (q8_0
/// 93.8 → 76.7 %, q4_0 79.4 → 75.8 %, Llama-3-8B q4_k decode 355.2 → 346.4 tok/s). On the H100 at the LM
/// head's shape (128000 × 4096) 85.3–87.6 → 94.1–95.3 % (`2026-12-05c-h100/`). But in the fused Q/K/V +
/// RoPE launch it cost the H200 33.3 against 21.9 µs (Llama-3-8B with every matrix Q6_K: decode 208.7
/// tok/s with it everywhere, 234.9 with it nowhere, 234.7 with it in the LM head only; `2026-12-05c-h200/`).
fn prefetch(t: QuantType, plain: bool) -> Result<bool> {
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
    Ok(forced.unwrap_or(t == QuantType::Q6K && plain))
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

/// The launch shape of an emitting dispatch of weights `w` ([`Emit`]: each workgroup owns 32 output rows,
/// in teams), in [`gemv`]'s convention (`rows` per matrix with `gated`), from `tune` of [`choose_tune`];
/// `None` where it cannot emit: more than one row of x, outputs not a multiple of 32, or a workgroup the
/// adapter cannot run. Q4_K and Q5_K teams are one warp each, one row a team (32 teams), whatever the
/// tune's width. Measured on the H100 (Llama-3-8B `--quantize q4_k` decode,
/// `benchmarks/results/2026-12-05d-h100/`): down 30.14 → 30.01 µs profiled, O 16.04 → 15.49,
/// gate/up 44.14 → 42.85 against two rows a team, decode 326.4 and 327.8 → 333.1 tok/s (one run each);
/// four rows a team, or 64-thread teams, lost. The other formats, not measured so, keep the tune's rows.
/// Spreading each block over several smaller workgroups, the last to finish quantizing it from outputs
/// handed over through atomics (44d02bf, reverted), lost as well: 316.9 / 308.5 / 323.9 tok/s with 4 / 16
/// / 32 workgroups a block against 335.9 with one (`benchmarks/results/2026-12-07g-h100/g2/`).
pub fn emit_shape(ctx: &GpuContext, tune: Tune, b: usize, w: &QuantTensor, gated: bool) -> Option<Tune> {
    if b != 1 || !w.rows().is_multiple_of(32) {
        return None;
    }
    let k_quant = matches!(w.quant_type(), QuantType::Q4K | QuantType::Q5K);
    // Q4_K and Q5_K teams are one warp whatever the plain GEMV's width ([`auto_tune`]).
    let tune = if k_quant { Tune { wg: 32, ..tune } } else { tune };
    let l = ctx.limits();
    let max_threads = l.max_compute_invocations_per_workgroup.min(l.max_compute_workgroup_size_x);
    // Teams need subgroups that never span two of them.
    let sub = if ctx.has_subgroups() { ctx.info().subgroup_max_size } else { 1 };
    // `rows_per_matrix` rows a team at the tune's width, narrowed where `narrow` allows and it must be.
    let shape = |rows_per_matrix: u32, narrow: bool| {
        let teams = 32 / rows_per_matrix;
        let mut wg = tune.wg.max(sub);
        while narrow && wg * teams > max_threads && wg > 32 {
            wg /= 2;
        }
        let fits = wg * teams <= max_threads && wg.is_multiple_of(sub);
        fits.then_some(Tune { wg, rows: rows_per_matrix, teams })
    };
    // GATED: at most two rows of each matrix (four slots).
    let most_rows = if gated { 2 } else { 4 };
    // The fewest rows from `fewest` on that fit at the tune's width, else the most, narrowed.
    let fewest_fitting = |fewest: u32| {
        [1, 2, 4]
            .into_iter()
            .filter(|&r| (fewest.min(most_rows)..=most_rows).contains(&r))
            .find_map(|r| shape(r, false))
            .or_else(|| shape(most_rows, true))
    };
    #[cfg(test)]
    if let Some(fewest) = TEST_EMIT_ROWS.with(std::cell::Cell::get) {
        return fewest_fitting(fewest);
    }
    if k_quant {
        return fewest_fitting(1);
    }
    let tune_rows = if gated { (2 * tune.rows).clamp(2, 4) / 2 } else { prev_power_of_two(tune.rows.clamp(1, 4)) };
    shape(tune_rows, true)
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
        tune = emit_shape(ctx, tune, b, parts[0].w, gated.is_some()).ok_or_else(|| KernelError::Argument {
            op,
            name: "emit",
            value: format!("{} rows, {b} rows of x", parts[0].w.rows()),
            reason: "writing the output as the next GEMV's x takes one row of x and a multiple of 32 rows".into(),
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
    let biases: Vec<Option<wgpu::Buffer>> = parts.iter().map(|p| p.bias.map(buf).transpose()).collect::<Result<_>>()?;
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
        (
            "PREFETCH",
            if prefetch(w.quant_type(), rope.is_none() && gated.is_none() && emit.is_none())? { 1.0 } else { 0.0 },
        ),
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

/// Whether gemm runs on coop16.wgsl: 16×16 f16 cooperative matrices and 32-lane subgroups (the
/// workgroup of 256 threads the dispatch below sets).
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
        let (tile_m, tile_n) = QCOOP16_TILE;
        let grid = [to_u32(op, "tiles", w.rows().div_ceil(tile_n))?, to_u32(op, "tiles", m.div_ceil(tile_m))?, 1];
        return ctx.dispatch(Dispatch {
            kernel: &QMATMUL_COOP,
            entry: "gemm_coop16",
            constants: &[("QTYPE", w.quant_type().wgsl_code()), ("WG16", f64::from(COOP16_WORKGROUP))],
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
