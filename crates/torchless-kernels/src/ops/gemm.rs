//! Matrix products: `C = alpha · op(A) · op(B) (+ bias) (+ residual)`, batched, f32 output.
//!
//! - A is `[M, K]` (or `[K, M]` with `trans_a`), optionally with a leading batch dim: `[batch, M, K]`.
//! - B is `[K, N]` (or `[N, K]` with `trans_b`: a weight stored `[out, in]`), with a leading batch dim of
//!   `batch` or 1, or none (shared across the batch). A may be shared the same way.
//! - A and B are each f32, f16 or bf16 (mixed allowed); accumulation is f32, C is f32 `[M, N]`, or
//!   `[batch, M, N]` when either input has a batch dim.
//! - Epilogue: `+ bias[n]` (`[N]`, any float dtype) and `+ residual` (`[M, N]` shared across the batch or
//!   `[batch, M, N]`, any float dtype; it may be the output tensor itself for an in-place `C += A·B`).
//!
//! GPU kernels: `kernels/gemm.wgsl` (tiled, every adapter: 128×128 workgroup tiles, 8×8 register
//! micro-tiles) and `kernels/gemm_coop.wgsl` (cooperative matrices, chosen per [`GemmKernel`] when the
//! adapter offers a 16×16×16 f16→f32 or 8×8×8 f32 configuration). CPU: the `gemm` crate in f32.

use super::{common_backend, require_float, require_non_empty, to_u32};
use crate::backend::Backend;
use crate::cpu::{self, Strided};
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::gpu::{Dispatch, GpuContext, Workgroups};
use crate::tensor::Tensor;

crate::kernel_source!(GEMM, "gemm", ["gemm_shared", "gemm"]);
// Without the compiler's index clamps: on the H200 they cost the 16×16 product a third of its speed (f16
// 4096³: 79 against 109 TFLOP/s; Llama-3-8B bf16 prefill 3.3k against 3.8k tok/s; the clamps sit on every
// staging store and fragment load). Every index is in range by construction: staging offsets come from
// chunk numbers below the tile's chunk count (HCHUNKS, ECHUNKS) through `coop_chunk` and fit the
// staging arrays (largest 127·40 + 31 < 5120 halves; 63·20 + 19 < 1280 floats), fragment loads read
// 16 (8) rows of a tile from its first row and column, the epilogue scratch is 8 (4) fragments of its
// subgroups, and the buffers are read only through runs whose in-bounds length `operand_run` computed
// (a full 8-element run of 16-bit values reads one 16-byte word, inside the buffer's padding) and written
// only inside [M, N] (`store4`), with the host checking every operand's length against M, N, K and the
// batch strides.
crate::kernel_source!(unchecked GEMM_COOP, "gemm_coop", ["gemm_shared", "gemm_coop", "f16_pack", "coop16"]);

const OP: &str = "gemm";

/// Which GPU kernel runs the product.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GemmKernel {
    /// Cooperative matrices when the adapter offers them and no f32 input would be rounded to f16 (both
    /// inputs 16-bit on a 16×16 f16 configuration, anything on an 8×8 f32 one); the tiled kernel otherwise.
    #[default]
    Auto,
    /// Cooperative matrices whenever the adapter offers them, rounding f32 inputs to f16 on 16×16 f16
    /// configurations (e.g. f32 activations × bf16 weights for prefill); the tiled kernel otherwise.
    PreferCooperative,
    /// The tiled workgroup-memory kernel (exact f32 inputs, every adapter).
    Tiled,
    /// Cooperative matrices, or [`KernelError::MissingFeature`] when the adapter (or the CPU backend)
    /// offers no fitting configuration.
    Cooperative,
}

/// Options of [`gemm()`]: `C = alpha · op(A) · op(B) + bias + residual`.
#[derive(Clone, Copy, Debug)]
pub struct GemmOptions<'a> {
    /// A is stored `[.., K, M]` and used transposed.
    pub trans_a: bool,
    /// B is stored `[.., N, K]` and used transposed (a linear layer's `[out, in]` weight).
    pub trans_b: bool,
    /// Scales the product (not the bias or residual). Must be finite.
    pub alpha: f32,
    /// `[N]`, any float dtype, added to every row.
    pub bias: Option<&'a Tensor>,
    /// `[M, N]` (shared across the batch) or `[batch, M, N]`, any float dtype; may be the output itself.
    pub residual: Option<&'a Tensor>,
    pub kernel: GemmKernel,
}

impl Default for GemmOptions<'_> {
    fn default() -> Self {
        GemmOptions { trans_a: false, trans_b: false, alpha: 1.0, bias: None, residual: None, kernel: GemmKernel::Auto }
    }
}

impl<'a> GemmOptions<'a> {
    /// `A · B`.
    pub fn new() -> Self {
        Self::default()
    }
    /// `A · Bᵀ`.
    pub fn a_bt() -> Self {
        GemmOptions { trans_b: true, ..Self::default() }
    }
    /// `Aᵀ · B`.
    pub fn at_b() -> Self {
        GemmOptions { trans_a: true, ..Self::default() }
    }
    pub fn alpha(self, alpha: f32) -> Self {
        GemmOptions { alpha, ..self }
    }
    pub fn bias(self, bias: &'a Tensor) -> Self {
        GemmOptions { bias: Some(bias), ..self }
    }
    pub fn residual(self, residual: &'a Tensor) -> Self {
        GemmOptions { residual: Some(residual), ..self }
    }
    pub fn kernel(self, kernel: GemmKernel) -> Self {
        GemmOptions { kernel, ..self }
    }
}

/// The cooperative-matrix variant an adapter supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CoopVariant {
    /// 16×16×16 f16 inputs, f32 accumulators (NVIDIA Vulkan); 8 subgroups of `subgroup` lanes.
    F16x16 { subgroup: u32 },
    /// 8×8×8 f32 (Apple); 4 subgroups of `subgroup` lanes.
    F32x8 { subgroup: u32 },
}

impl CoopVariant {
    fn workgroup_size(self) -> u32 {
        match self {
            CoopVariant::F16x16 { subgroup } => 8 * subgroup,
            CoopVariant::F32x8 { subgroup } => 4 * subgroup,
        }
    }
    fn tile(self) -> usize {
        match self {
            CoopVariant::F16x16 { .. } => 128,
            CoopVariant::F32x8 { .. } => 64,
        }
    }
    /// Whether inputs of `dtype` reach the matrices unrounded.
    fn exact_for(self, dtype: DType) -> bool {
        match self {
            CoopVariant::F16x16 { .. } => dtype != DType::F32,
            CoopVariant::F32x8 { .. } => true,
        }
    }
}

/// The cooperative-matrix variant `ctx` can run, if any: the adapter must offer the configuration, f16
/// and subgroups, and a fixed subgroup size (each subgroup owns a fixed block of the output tile).
pub fn cooperative_variant(ctx: &GpuContext) -> Option<CoopVariant> {
    use wgpu::CooperativeScalarType as S;
    if !ctx.has_f16() || !ctx.has_subgroups() {
        return None;
    }
    let info = ctx.info();
    let subgroup = info.subgroup_min_size;
    if subgroup != info.subgroup_max_size {
        return None;
    }
    let offers = |size: u32, ab: S| {
        ctx.cooperative_matrices()
            .iter()
            .any(|c| c.m_size == size && c.n_size == size && c.k_size == size && c.ab_type == ab && c.cr_type == S::F32)
    };
    let limits = ctx.limits();
    let fits =
        |wg: u32| wg <= limits.max_compute_invocations_per_workgroup && wg <= limits.max_compute_workgroup_size_x;
    // The 16×16 kernel holds at most 4 staged chunks per thread: 512 / (8 · subgroup) <= 4.
    if (16..=128).contains(&subgroup) && offers(16, S::F16) && fits(8 * subgroup) {
        return Some(CoopVariant::F16x16 { subgroup });
    }
    if (4..=128).contains(&subgroup) && offers(8, S::F32) && fits(4 * subgroup) {
        return Some(CoopVariant::F32x8 { subgroup });
    }
    None
}

/// Which kernel a product with these inputs runs on `backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmPath {
    Cpu,
    Tiled,
    Cooperative(CoopVariant),
}

/// The kernel [`gemm()`] picks for inputs of `a` and `b` dtypes under `kernel` (or MissingFeature).
pub fn gemm_path(backend: &Backend, a: DType, b: DType, kernel: GemmKernel) -> Result<GemmPath> {
    let missing = |adapter: String| KernelError::MissingFeature {
        op: OP,
        feature: "cooperative matrices (16x16x16 f16->f32 or 8x8x8 f32 with f16, subgroups and a fixed subgroup size)",
        adapter,
    };
    match backend {
        Backend::Cpu if kernel == GemmKernel::Cooperative => Err(missing("the CPU backend".into())),
        Backend::Cpu => Ok(GemmPath::Cpu),
        Backend::Gpu(ctx) => {
            let coop = cooperative_variant(ctx);
            Ok(match kernel {
                GemmKernel::Tiled => GemmPath::Tiled,
                GemmKernel::Cooperative => GemmPath::Cooperative(coop.ok_or_else(|| missing(ctx.info().name.clone()))?),
                GemmKernel::PreferCooperative => coop.map_or(GemmPath::Tiled, GemmPath::Cooperative),
                GemmKernel::Auto => match coop {
                    Some(v) if v.exact_for(a) && v.exact_for(b) => GemmPath::Cooperative(v),
                    _ => GemmPath::Tiled,
                },
            })
        }
    }
}

/// Shapes of one product, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmDims {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Elements between batch entries of A, B and the residual (0 when shared).
    pub a_bstride: usize,
    pub b_bstride: usize,
    pub res_bstride: usize,
    /// Whether C has a batch dim.
    pub batched: bool,
}

impl GemmDims {
    pub fn out_shape(&self) -> Vec<usize> {
        if self.batched { vec![self.batch, self.m, self.n] } else { vec![self.m, self.n] }
    }
}

fn shape_err(detail: String) -> KernelError {
    KernelError::Shape { op: OP, detail }
}

/// Splits a rank-2 or rank-3 shape into (batch or None, rows, cols).
fn split(what: &str, shape: &[usize]) -> Result<(Option<usize>, usize, usize)> {
    match *shape {
        [r, c] => Ok((None, r, c)),
        [b, r, c] => Ok((Some(b), r, c)),
        _ => Err(shape_err(format!("{what} must be [rows, cols] or [batch, rows, cols], found {shape:?}"))),
    }
}

/// Validates the shapes of A, B (and the epilogue operands) and returns the product's dimensions.
pub fn gemm_dims(a: &[usize], b: &[usize], opts: &GemmOptions<'_>) -> Result<GemmDims> {
    let (ba, ar, ac) = split("A", a)?;
    let (bb, br, bc) = split("B", b)?;
    let (m, ka) = if opts.trans_a { (ac, ar) } else { (ar, ac) };
    let (kb, n) = if opts.trans_b { (bc, br) } else { (br, bc) };
    if ka != kb {
        return Err(shape_err(format!(
            "inner dims differ: op(A) {a:?} (trans_a {}) has K = {ka}, op(B) {b:?} (trans_b {}) has K = {kb}",
            opts.trans_a, opts.trans_b
        )));
    }
    let (na, nb) = (ba.unwrap_or(1), bb.unwrap_or(1));
    let batch = na.max(nb);
    if (na != batch && na != 1) || (nb != batch && nb != 1) {
        return Err(shape_err(format!("batch dims differ: A {a:?} and B {b:?} (each must be the batch size or 1)")));
    }
    let dims = GemmDims {
        batch,
        m,
        n,
        k: ka,
        a_bstride: if na == 1 { 0 } else { m * ka },
        b_bstride: if nb == 1 { 0 } else { ka * n },
        res_bstride: 0,
        batched: ba.is_some() || bb.is_some(),
    };
    if let Some(bias) = opts.bias
        && bias.shape() != [n]
    {
        return Err(shape_err(format!("bias must be [{n}], found {:?}", bias.shape())));
    }
    let mut dims = dims;
    if let Some(res) = opts.residual {
        dims.res_bstride = match *res.shape() {
            [r, c] if r == m && c == n => 0,
            [z, r, c] if r == m && c == n && z == 1 => 0,
            [z, r, c] if r == m && c == n && z == batch => m * n,
            _ => {
                return Err(shape_err(format!(
                    "residual must be [{m}, {n}] or [{batch}, {m}, {n}], found {:?}",
                    res.shape()
                )));
            }
        };
    }
    Ok(dims)
}

/// `alpha · op(A) · op(B) (+ bias) (+ residual)` into a new f32 tensor (see the module docs for shapes).
pub fn gemm(a: &Tensor, b: &Tensor, opts: GemmOptions<'_>) -> Result<Tensor> {
    let dims = gemm_dims(a.shape(), b.shape(), &opts)?;
    let out = Tensor::uninit(&a.backend(), OP, &dims.out_shape(), DType::F32)?;
    gemm_into(a, b, opts, &out)?;
    Ok(out)
}

/// A linear layer: `x · weightᵀ (+ bias)`, x `[tokens, in]` or `[batch, tokens, in]`, weight `[out, in]`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    gemm(x, weight, GemmOptions { bias, ..GemmOptions::a_bt() })
}

/// Like [`gemm()`], into `out` (f32, the output shape). `out` must not share storage with A, B or the bias;
/// it may be the residual (in-place `out += alpha · op(A)·op(B)`).
pub fn gemm_into(a: &Tensor, b: &Tensor, opts: GemmOptions<'_>, out: &Tensor) -> Result<()> {
    require_float(OP, a)?;
    require_float(OP, b)?;
    require_non_empty(OP, "a", a)?;
    require_non_empty(OP, "b", b)?;
    if !opts.alpha.is_finite() {
        return Err(KernelError::Argument {
            op: OP,
            name: "alpha",
            value: opts.alpha.to_string(),
            reason: "must be finite".into(),
        });
    }
    let dims = gemm_dims(a.shape(), b.shape(), &opts)?;
    if out.dtype() != DType::F32 {
        return Err(KernelError::DType { op: OP, expected: "f32 (the output)".into(), found: out.dtype() });
    }
    if out.shape() != dims.out_shape() {
        return Err(shape_err(format!("out must be {:?}, found {:?}", dims.out_shape(), out.shape())));
    }
    let aliases = [Some(a), Some(b), opts.bias];
    if aliases.into_iter().flatten().any(|t| t.same_storage(out)) {
        return Err(KernelError::Argument {
            op: OP,
            name: "out",
            value: "an input".into(),
            reason: "the output must not share storage with A, B or the bias (only with the residual)".into(),
        });
    }
    if let Some(res) = opts.residual
        && (res.same_storage(a) || res.same_storage(b))
    {
        return Err(KernelError::Argument {
            op: OP,
            name: "residual",
            value: "A or B".into(),
            reason: "the residual must not share storage with A or B".into(),
        });
    }
    let mut tensors = vec![a, b, out];
    for t in [opts.bias, opts.residual].into_iter().flatten() {
        require_float(OP, t)?;
        tensors.push(t);
    }
    let backend = common_backend(OP, &tensors)?;
    let path = gemm_path(&backend, a.dtype(), b.dtype(), opts.kernel)?;
    match backend {
        Backend::Cpu => {
            gemm_cpu(a, b, &opts, &dims, out);
            Ok(())
        }
        Backend::Gpu(ctx) => gemm_gpu(&ctx, a, b, &opts, &dims, out, path),
    }
}

// ---- CPU ------------------------------------------------------------------------------------------------

fn gemm_cpu(a: &Tensor, b: &Tensor, opts: &GemmOptions<'_>, d: &GemmDims, out: &Tensor) {
    let (av, bv) = (cpu::read_f32(a), cpu::read_f32(b));
    let (m, n, k) = (d.m, d.n, d.k);
    let mut cv = vec![0f32; d.batch * m * n];
    if let Some(res) = opts.residual {
        let rv = cpu::read_f32(res);
        for (z, c) in cv.chunks_mut(m * n).enumerate() {
            c.copy_from_slice(&rv[z * d.res_bstride..z * d.res_bstride + m * n]);
        }
    }
    // Strides in elements (rows, columns) of op(A) [m, k] and op(B) [k, n].
    let (a_rs, a_cs) = if opts.trans_a { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if opts.trans_b { (1, k as isize) } else { (n as isize, 1) };
    let parallelism = if m * n * k >= 1 << 18 { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    for (z, c) in cv.chunks_mut(m * n).enumerate() {
        let (ab, bb) = (&av[z * d.a_bstride..z * d.a_bstride + m * k], &bv[z * d.b_bstride..z * d.b_bstride + k * n]);
        // SAFETY: `c` holds m·n elements written with row stride n; `ab` holds the m·k elements of op(A)
        // and `bb` the k·n elements of op(B) at the strides given (validated shapes); none overlap.
        unsafe {
            cpu::gemm_f32(
                (m, n, k),
                Strided { ptr: c.as_mut_ptr(), col_stride: 1, row_stride: n as isize },
                opts.residual.is_some(),
                Strided { ptr: ab.as_ptr(), col_stride: a_cs, row_stride: a_rs },
                Strided { ptr: bb.as_ptr(), col_stride: b_cs, row_stride: b_rs },
                opts.alpha,
                parallelism,
            );
        }
    }
    if let Some(bias) = opts.bias {
        let bv = cpu::read_f32(bias);
        for row in cv.chunks_mut(n) {
            row.iter_mut().zip(&bv).for_each(|(c, b)| *c += b);
        }
    }
    cpu::write_f32(out, &cv);
}

// ---- GPU ------------------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    alpha: f32,
    a_bstride: u32,
    b_bstride: u32,
    res_bstride: u32,
    batch: u32,
}

/// How many workgroups must stage a tile of a non-f16 operand (the other dimension's tiles) before it is
/// rounded to f16 by a pre-pass rather than in each of them.
const PREPASS_MIN_STAGINGS: usize = 4;

/// The tolerance of a product whose inputs the 16×16 cooperative path rounds to f16 (depth k).
pub fn f16_rounded_tolerance(k: usize) -> crate::testing::Tolerance {
    crate::testing::Tolerance { atol: 2e-3 * (k as f64).sqrt(), rtol: 1e-2 }
}

/// `t`'s elements rounded to f16 (clamped to ±65504) by `gemm_coop.wgsl`'s pre-pass, in `t`'s layout,
/// padded to a multiple of 8 elements: the input of a cooperative product that would otherwise convert
/// `t` in every workgroup that stages it. Needs an adapter with a [`CoopVariant::F16x16`] configuration.
pub(crate) fn f16_copy(ctx: &GpuContext, t: &Tensor) -> Result<Tensor> {
    let n = t.numel();
    let out = Tensor::uninit(&t.backend(), OP, &[n.next_multiple_of(8)], DType::F16)?;
    let buf = |t: &Tensor| t.gpu_buffer().expect("GPU tensors on a GPU backend").raw().clone();
    let params = Params { k: to_u32(OP, "elements", n)?, ..bytemuck::Zeroable::zeroed() };
    ctx.dispatch(Dispatch {
        kernel: &GEMM_COOP,
        entry: "to_f16",
        constants: &[("DT_A", t.dtype().wgsl_code())],
        params: Some(bytemuck::bytes_of(&params)),
        buffers: &[&buf(t), &buf(&out)],
        workgroups: Workgroups::Linear(to_u32(OP, "elements", n.div_ceil(8 * 256))?),
    })?;
    Ok(out)
}

fn gemm_gpu(
    ctx: &GpuContext,
    a: &Tensor,
    b: &Tensor,
    opts: &GemmOptions<'_>,
    d: &GemmDims,
    out: &Tensor,
    path: GemmPath,
) -> Result<()> {
    // The 16×16 path rounds its inputs to f16 as it stages them, in every workgroup that stages a tile:
    // an operand that many workgroups stage is rounded once beforehand instead (same values).
    let (a16, b16) = match path {
        GemmPath::Cooperative(v @ CoopVariant::F16x16 { .. }) => {
            let prepass = |t: &Tensor, stagings: usize| {
                (t.dtype() != DType::F16 && stagings >= PREPASS_MIN_STAGINGS).then(|| f16_copy(ctx, t)).transpose()
            };
            (prepass(a, d.n.div_ceil(v.tile()))?, prepass(b, d.m.div_ceil(v.tile()))?)
        }
        _ => (None, None),
    };
    let (a, b) = (a16.as_ref().unwrap_or(a), b16.as_ref().unwrap_or(b));
    let buf = |t: &Tensor| t.gpu_buffer().expect("GPU tensors on a GPU backend").raw().clone();
    let (ab, bb, ob) = (buf(a), buf(b), buf(out));
    for t in [Some(a), Some(b), Some(out), opts.bias, opts.residual].into_iter().flatten() {
        ctx.check_binding(OP, t.size_bytes() as u64)?;
    }
    // Every element index a kernel computes must fit in a u32.
    for t in [a, b, out] {
        to_u32(OP, "elements", t.numel())?;
    }
    let params = Params {
        m: to_u32(OP, "M", d.m)?,
        n: to_u32(OP, "N", d.n)?,
        k: to_u32(OP, "K", d.k)?,
        alpha: opts.alpha,
        a_bstride: to_u32(OP, "batch stride", d.a_bstride)?,
        b_bstride: to_u32(OP, "batch stride", d.b_bstride)?,
        res_bstride: to_u32(OP, "batch stride", d.res_bstride)?,
        batch: to_u32(OP, "batch", d.batch)?,
    };
    let in_place = opts.residual.is_some_and(|r| r.same_storage(out));
    let res_mode = match opts.residual {
        None => 0.0,
        Some(_) if in_place => 2.0,
        Some(_) => 1.0,
    };
    // Absent epilogue operands are bound to A (read-only, never read).
    let bias_b = opts.bias.map_or_else(|| ab.clone(), buf);
    let res_b = match opts.residual {
        Some(r) if !in_place => buf(r),
        _ => ab.clone(),
    };
    let code = |t: Option<&Tensor>| t.map_or(0.0, |t| t.dtype().wgsl_code());
    let mut constants = vec![
        ("DT_A", a.dtype().wgsl_code()),
        ("DT_B", b.dtype().wgsl_code()),
        ("TRANS_A", if opts.trans_a { 1.0 } else { 0.0 }),
        ("TRANS_B", if opts.trans_b { 1.0 } else { 0.0 }),
        ("BIAS", if opts.bias.is_some() { 1.0 } else { 0.0 }),
        ("DT_BIAS", code(opts.bias)),
        ("RES", res_mode),
        ("DT_RES", if in_place { 0.0 } else { code(opts.residual) }),
    ];
    let (kernel, entry, tile) = match path {
        GemmPath::Cooperative(v) => {
            constants.push((
                match v {
                    CoopVariant::F16x16 { .. } => "WG16",
                    CoopVariant::F32x8 { .. } => "WG8",
                },
                v.workgroup_size() as f64,
            ));
            let entry = match v {
                CoopVariant::F16x16 { .. } => "gemm_coop16",
                CoopVariant::F32x8 { .. } => "gemm_coop8",
            };
            (&GEMM_COOP, entry, v.tile())
        }
        GemmPath::Tiled | GemmPath::Cpu => (&GEMM, "gemm_tiled", 128),
    };
    let grid = [to_u32(OP, "N tiles", d.n.div_ceil(tile))?, to_u32(OP, "M tiles", d.m.div_ceil(tile))?, params.batch];
    ctx.dispatch(Dispatch {
        kernel,
        entry,
        constants: &constants,
        params: Some(bytemuck::bytes_of(&params)),
        buffers: &[&ab, &bb, &ob, &bias_b, &res_b],
        workgroups: Workgroups::Grid(grid),
    })
}

// ---- reference ------------------------------------------------------------------------------------------

/// The f64 reference of [`gemm()`] on host values (`a`, `b` row-major in their stored layouts).
pub fn reference(
    a: &[f32],
    b: &[f32],
    d: &GemmDims,
    opts: &GemmOptions<'_>,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> Vec<f64> {
    use rayon::prelude::*;
    let (m, n, k) = (d.m, d.n, d.k);
    let mut out = vec![0f64; d.batch * m * n];
    out.par_chunks_mut(n).enumerate().for_each(|(row, o)| {
        let (z, i) = (row / m, row % m);
        // op(A) row i and op(B) columns, both contiguous along K.
        let arow: Vec<f64> = (0..k)
            .map(|kk| {
                let idx = if opts.trans_a { kk * m + i } else { i * k + kk };
                a[z * d.a_bstride + idx] as f64
            })
            .collect();
        for (j, o) in o.iter_mut().enumerate() {
            let mut acc = [0f64; 4];
            for (kk, av) in arow.iter().enumerate() {
                let idx = if opts.trans_b { j * k + kk } else { kk * n + j };
                acc[kk & 3] += av * b[z * d.b_bstride + idx] as f64;
            }
            let mut v = opts.alpha as f64 * (acc[0] + acc[1] + acc[2] + acc[3]);
            if let Some(bias) = bias {
                v += bias[j] as f64;
            }
            if let Some(r) = residual {
                v += r[z * d.res_bstride + i * n + j] as f64;
            }
            *o = v;
        }
    });
    out
}

/// Tolerance for a product over `k` terms of magnitude about 1 (f32 accumulation, inputs exact).
pub fn tolerance(k: usize) -> crate::testing::Tolerance {
    let s = (k as f64).sqrt().max(1.0);
    crate::testing::Tolerance { atol: 2e-6 * s, rtol: 1e-5 * s }
}

// ---- bench ----------------------------------------------------------------------------------------------

/// Bench op names of this family.
pub const BENCH_OPS: &[&str] = &["gemm_f32", "gemm_f16", "gemm_bf16", "gemm_at_b", "gemm_a_bt"];

/// Square products of n = sqrt(bytes / 12) (capped at 4096), so `--mib 256` gives 4096³.
pub fn bench_case(op: &str, bytes: u64) -> Option<Result<crate::bench::BenchCase>> {
    use crate::bench::{BenchCase, random_tensor};

    let (name, dtype, opts): (&'static str, DType, GemmOptions<'static>) = match op {
        "gemm_f32" => ("gemm_f32", DType::F32, GemmOptions::new()),
        "gemm_f16" => ("gemm_f16", DType::F16, GemmOptions::new()),
        "gemm_bf16" => ("gemm_bf16", DType::BF16, GemmOptions::new()),
        "gemm_at_b" => ("gemm_at_b", DType::F32, GemmOptions::at_b()),
        "gemm_a_bt" => ("gemm_a_bt", DType::F32, GemmOptions::a_bt()),
        _ => return None,
    };
    let build = move || -> Result<BenchCase> {
        let n = (((bytes as f64) / 12.0).sqrt().round() as usize).clamp(1, 4096);
        let a = random_tensor(11, &[n, n], dtype, -1.0, 1.0)?;
        let b = random_tensor(12, &[n, n], dtype, -1.0, 1.0)?;
        let in_bytes = 2 * (n * n * dtype.size_bytes()) as u64;
        Ok(BenchCase {
            op: name,
            dtype,
            shape: format!("{n}x{n}x{n}"),
            bytes: in_bytes + 4 * (n * n) as u64,
            flops: 2 * (n as u64).pow(3),
            tolerance: tolerance(n).scaled(4.0),
            inputs: vec![a, b],
            run: Box::new(move |i| gemm(&i[0], &i[1], opts)),
            reference: Box::new(move |i| {
                let d = gemm_dims(i[0].shape(), i[1].shape(), &opts)?;
                Ok(reference(&cpu::read_f32(&i[0]), &cpu::read_f32(&i[1]), &d, &opts, None, None))
            }),
        })
    };
    Some(build())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Rng, Tolerance, assert_close, round_to, test_backends, test_gpu};

    /// One product to check: stored shapes follow from the dims, the layout and the batch dims.
    #[derive(Clone, Copy, Debug)]
    struct Case {
        m: usize,
        n: usize,
        k: usize,
        trans_a: bool,
        trans_b: bool,
        a: DType,
        b: DType,
        batch_a: Option<usize>,
        batch_b: Option<usize>,
    }

    impl Case {
        fn new(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool, a: DType, b: DType) -> Case {
            Case { m, n, k, trans_a, trans_b, a, b, batch_a: None, batch_b: None }
        }
        fn batched(self, batch_a: Option<usize>, batch_b: Option<usize>) -> Case {
            Case { batch_a, batch_b, ..self }
        }
        fn a_shape(&self) -> Vec<usize> {
            let rc = if self.trans_a { [self.k, self.m] } else { [self.m, self.k] };
            self.batch_a.into_iter().chain(rc).collect()
        }
        fn b_shape(&self) -> Vec<usize> {
            let rc = if self.trans_b { [self.n, self.k] } else { [self.k, self.n] };
            self.batch_b.into_iter().chain(rc).collect()
        }
    }

    const LAYOUTS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

    fn values(rng: &mut Rng, shape: &[usize], dtype: DType) -> Vec<f32> {
        round_to(&rng.vec(shape.iter().product(), -1.0, 1.0), dtype)
    }

    /// Runs `case` on `backend` with `kernel` and checks it against the f64 reference.
    fn check(backend: &Backend, rng: &mut Rng, case: Case, kernel: GemmKernel, tol: Tolerance) {
        let (sa, sb) = (case.a_shape(), case.b_shape());
        let (av, bv) = (values(rng, &sa, case.a), values(rng, &sb, case.b));
        let at = Tensor::from_f32(backend, &av, &sa, case.a).unwrap();
        let bt = Tensor::from_f32(backend, &bv, &sb, case.b).unwrap();
        let opts = GemmOptions { trans_a: case.trans_a, trans_b: case.trans_b, kernel, ..Default::default() };
        let got = gemm(&at, &bt, opts).unwrap();
        let dims = gemm_dims(&sa, &sb, &opts).unwrap();
        assert_eq!(got.shape(), dims.out_shape());
        let want = reference(&av, &bv, &dims, &opts, None, None);
        let what = format!("{case:?} {kernel:?} on {}", backend.name());
        assert_close(&what, &got.to_f32_vec().unwrap(), &want, tol);
    }

    /// Ragged (M, N, K) triples from {1, 3, 17, 64, 127, 257}, mixed.
    const SHAPES: [(usize, usize, usize); 10] = [
        (1, 1, 1),
        (3, 17, 64),
        (17, 3, 127),
        (64, 257, 3),
        (127, 64, 17),
        (257, 127, 1),
        (1, 257, 257),
        (257, 1, 64),
        (127, 127, 127),
        (3, 3, 257),
    ];

    #[test]
    fn all_layouts_and_dtypes_match_the_f64_reference_on_ragged_shapes() {
        let mut rng = Rng::new(1);
        for backend in test_backends() {
            for dtype in DType::FLOATS {
                for (ta, tb) in LAYOUTS {
                    for (m, n, k) in SHAPES {
                        let case = Case::new(m, n, k, ta, tb, dtype, dtype);
                        check(&backend, &mut rng, case, GemmKernel::Tiled, tolerance(k).scaled(2.0));
                    }
                }
            }
        }
    }

    #[test]
    fn mixed_dtypes_match_the_f64_reference() {
        use DType::{BF16, F16, F32};
        let mut rng = Rng::new(2);
        for backend in test_backends() {
            for (da, db) in [(F32, BF16), (F16, F32), (BF16, F16), (F32, F16), (BF16, F32)] {
                for (ta, tb) in [(false, true), (false, false), (true, false)] {
                    for (m, n, k) in [(17, 64, 127), (64, 3, 257), (257, 17, 3), (1, 127, 17)] {
                        let case = Case::new(m, n, k, ta, tb, da, db);
                        check(&backend, &mut rng, case, GemmKernel::Auto, tolerance(k).scaled(2.0));
                    }
                }
            }
        }
    }

    #[test]
    fn batches_and_shared_operands_match_the_f64_reference() {
        use DType::{BF16, F32};
        let mut rng = Rng::new(3);
        for backend in test_backends() {
            for (ta, tb) in LAYOUTS {
                for (ba, bb) in
                    [(Some(3), None), (Some(3), Some(1)), (Some(3), Some(3)), (None, Some(2)), (Some(1), Some(2))]
                {
                    for (m, n, k, da, db) in [(17, 33, 127, F32, F32), (64, 3, 17, F32, BF16), (3, 130, 65, BF16, BF16)]
                    {
                        let case = Case::new(m, n, k, ta, tb, da, db).batched(ba, bb);
                        check(&backend, &mut rng, case, GemmKernel::Auto, tolerance(k).scaled(2.0));
                    }
                }
            }
        }
    }

    #[test]
    fn epilogue_adds_bias_and_residual_and_scales_by_alpha() {
        use DType::{BF16, F16, F32};
        let mut rng = Rng::new(4);
        for backend in test_backends() {
            for (batch, m, n, k, bias_dt, res_dt, shared_res) in [
                (None, 17, 33, 64, Some(F32), Some(F32), false),
                (Some(2), 127, 65, 17, Some(BF16), None, false),
                (Some(3), 3, 130, 127, None, Some(F16), true),
                (Some(2), 64, 64, 3, Some(F16), Some(BF16), false),
            ] {
                let a_shape: Vec<usize> = batch.into_iter().chain([m, k]).collect();
                let (av, bv) = (values(&mut rng, &a_shape, F32), values(&mut rng, &[n, k], BF16));
                let at = Tensor::from_f32(&backend, &av, &a_shape, F32).unwrap();
                let bt = Tensor::from_f32(&backend, &bv, &[n, k], BF16).unwrap();
                let biasv = bias_dt.map(|d| values(&mut rng, &[n], d));
                let bias = bias_dt.map(|d| Tensor::from_f32(&backend, biasv.as_ref().unwrap(), &[n], d).unwrap());
                let res_shape: Vec<usize> =
                    if shared_res { vec![m, n] } else { batch.into_iter().chain([m, n]).collect() };
                let resv = res_dt.map(|d| values(&mut rng, &res_shape, d));
                let res = res_dt.map(|d| Tensor::from_f32(&backend, resv.as_ref().unwrap(), &res_shape, d).unwrap());
                let opts = GemmOptions {
                    trans_b: true,
                    alpha: -0.75,
                    bias: bias.as_ref(),
                    residual: res.as_ref(),
                    ..Default::default()
                };
                let got = gemm(&at, &bt, opts).unwrap().to_f32_vec().unwrap();
                let dims = gemm_dims(&a_shape, &[n, k], &opts).unwrap();
                let want = reference(&av, &bv, &dims, &opts, biasv.as_deref(), resv.as_deref());
                let what =
                    format!("epilogue {batch:?} {m}x{n}x{k} bias {bias_dt:?} res {res_dt:?} on {}", backend.name());
                assert_close(&what, &got, &want, tolerance(k).scaled(2.0));
            }
        }
    }

    #[test]
    fn residual_may_be_the_output_for_in_place_accumulation() {
        let mut rng = Rng::new(5);
        for backend in test_backends() {
            let (m, n, k) = (33, 70, 19);
            let (av, bv, cv) = (rng.vec(m * k, -1.0, 1.0), rng.vec(k * n, -1.0, 1.0), rng.vec(m * n, -1.0, 1.0));
            let at = Tensor::from_slice(&backend, &av, &[m, k]).unwrap();
            let bt = Tensor::from_slice(&backend, &bv, &[k, n]).unwrap();
            let ct = Tensor::from_slice(&backend, &cv, &[m, n]).unwrap();
            let opts = GemmOptions::new().alpha(0.5).residual(&ct);
            gemm_into(&at, &bt, opts, &ct).unwrap();
            let dims = gemm_dims(&[m, k], &[k, n], &opts).unwrap();
            let want = reference(&av, &bv, &dims, &opts, None, Some(&cv));
            assert_close(&format!("in place on {}", backend.name()), &ct.to_f32_vec().unwrap(), &want, tolerance(k));
        }
    }

    #[test]
    fn extreme_magnitudes_keep_their_relative_accuracy() {
        for backend in test_backends() {
            let (m, n, k) = (5, 9, 37);
            let av: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin() * 1e18).collect();
            let bv: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos() * 1e-20).collect();
            let at = Tensor::from_slice(&backend, &av, &[m, k]).unwrap();
            let bt = Tensor::from_slice(&backend, &bv, &[k, n]).unwrap();
            let got = gemm(&at, &bt, GemmOptions::new()).unwrap().to_f32_vec().unwrap();
            let dims = gemm_dims(&[m, k], &[k, n], &GemmOptions::new()).unwrap();
            let want = reference(&av, &bv, &dims, &GemmOptions::new(), None, None);
            let tol = Tolerance { atol: 1e-2 * 1e-5 * 37f64.sqrt(), rtol: 1e-5 * 37f64.sqrt() };
            assert_close(&format!("1e18 x 1e-20 on {}", backend.name()), &got, &want, tol);
        }
    }

    #[test]
    fn linear_is_x_times_w_transposed_plus_bias() {
        let mut rng = Rng::new(6);
        for backend in test_backends() {
            let (t, i, o) = (7, 33, 19);
            let (xv, wv, bv) =
                (rng.vec(t * i, -1.0, 1.0), values(&mut rng, &[o, i], DType::BF16), rng.vec(o, -1.0, 1.0));
            let x = Tensor::from_slice(&backend, &xv, &[t, i]).unwrap();
            let w = Tensor::from_f32(&backend, &wv, &[o, i], DType::BF16).unwrap();
            let b = Tensor::from_slice(&backend, &bv, &[o]).unwrap();
            let got = linear(&x, &w, Some(&b)).unwrap();
            assert_eq!(got.shape(), [t, o]);
            let opts = GemmOptions::a_bt().bias(&b);
            let want = reference(&xv, &wv, &gemm_dims(&[t, i], &[o, i], &opts).unwrap(), &opts, Some(&bv), None);
            assert_close("linear", &got.to_f32_vec().unwrap(), &want, tolerance(i));
        }
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        for backend in test_backends() {
            let t = |shape: &[usize], d: DType| Tensor::zeros(&backend, shape, d).unwrap();
            let (a, b) = (t(&[4, 5], DType::F32), t(&[5, 6], DType::F32));
            let shape_err = |r: Result<Tensor>| matches!(r, Err(KernelError::Shape { op: "gemm", .. }));
            // Inner dims, batch dims, ranks.
            assert!(shape_err(gemm(&a, &t(&[6, 6], DType::F32), GemmOptions::new())));
            assert!(shape_err(gemm(&a, &b, GemmOptions::a_bt())));
            assert!(shape_err(gemm(&t(&[2, 4, 5], DType::F32), &t(&[3, 5, 6], DType::F32), GemmOptions::new())));
            assert!(shape_err(gemm(&t(&[20], DType::F32), &b, GemmOptions::new())));
            assert!(shape_err(gemm(&t(&[1, 1, 4, 5], DType::F32), &b, GemmOptions::new())));
            // Epilogue shapes.
            assert!(shape_err(gemm(&a, &b, GemmOptions::new().bias(&t(&[5], DType::F32)))));
            assert!(shape_err(gemm(&a, &b, GemmOptions::new().residual(&t(&[6, 4], DType::F32)))));
            // Dtypes, empty, alpha.
            assert!(matches!(gemm(&t(&[4, 5], DType::U32), &b, GemmOptions::new()), Err(KernelError::DType { .. })));
            assert!(matches!(
                gemm(&t(&[0, 5], DType::F32), &b, GemmOptions::new()),
                Err(KernelError::Empty { op: "gemm", .. })
            ));
            assert!(matches!(
                gemm(&a, &b, GemmOptions::new().alpha(f32::NAN)),
                Err(KernelError::Argument { name: "alpha", .. })
            ));
            // Outputs: dtype, shape, aliasing.
            let out16 = t(&[4, 6], DType::F16);
            assert!(matches!(gemm_into(&a, &b, GemmOptions::new(), &out16), Err(KernelError::DType { .. })));
            assert!(shape_err(gemm_into(&a, &b, GemmOptions::new(), &t(&[4, 7], DType::F32)).map(|_| a.clone())));
            let sq = t(&[5, 5], DType::F32);
            assert!(matches!(
                gemm_into(&sq, &t(&[5, 5], DType::F32), GemmOptions::new(), &sq),
                Err(KernelError::Argument { name: "out", .. })
            ));
            // The cooperative path, asked for where it is not offered.
            if gemm_path(&backend, DType::F16, DType::F16, GemmKernel::Auto).unwrap() == GemmPath::Tiled
                || !backend.is_gpu()
            {
                let r = gemm(&a, &b, GemmOptions::new().kernel(GemmKernel::Cooperative));
                assert!(matches!(r, Err(KernelError::MissingFeature { op: "gemm", .. })), "{r:?}");
            }
        }
    }

    #[test]
    fn cooperative_matrices_match_the_reference_where_offered() {
        let Some(backend) = test_gpu() else { return };
        let Backend::Gpu(ctx) = &backend else { unreachable!() };
        let Some(variant) = cooperative_variant(ctx) else {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "torchless: gemm cooperative-matrix test SKIPPED: {} offers no fitting configuration ({:?})",
                ctx.info().name,
                ctx.cooperative_matrices()
            );
            return;
        };
        use DType::{BF16, F16, F32};
        let mut rng = Rng::new(7);
        for (da, db) in [(F16, F16), (BF16, BF16), (F16, BF16), (F32, BF16), (F32, F32)] {
            // f32 inputs are rounded to f16 by the 16×16 f16 configuration.
            let lossy = !(variant.exact_for(da) && variant.exact_for(db));
            for (ta, tb) in LAYOUTS {
                for (m, n, k) in SHAPES {
                    let tol = if lossy { f16_rounded_tolerance(k) } else { tolerance(k).scaled(2.0) };
                    let case = Case::new(m, n, k, ta, tb, da, db);
                    check(&backend, &mut rng, case, GemmKernel::Cooperative, tol);
                }
            }
            let case = Case::new(130, 300, 77, false, true, da, db).batched(Some(3), Some(1));
            check(
                &backend,
                &mut rng,
                case,
                GemmKernel::Cooperative,
                tolerance(77).scaled(if lossy { 500.0 } else { 2.0 }),
            );
            // Both operands staged by more than PREPASS_MIN_STAGINGS workgroups: the 16×16 configuration
            // rounds the non-f16 ones by the pre-pass (the batched A and the shared B alike).
            for (ta, tb) in LAYOUTS {
                let tol = if lossy { f16_rounded_tolerance(40) } else { tolerance(40).scaled(2.0) };
                let case = Case::new(520, 515, 40, ta, tb, da, db).batched(Some(2), Some(1));
                check(&backend, &mut rng, case, GemmKernel::Cooperative, tol);
            }
        }
        // bf16 beyond f16's range is clamped to ±65504 on the f16 configuration.
        if let CoopVariant::F16x16 { .. } = variant {
            let a = Tensor::from_f32(&backend, &[1e6, 1.0], &[1, 2], BF16).unwrap();
            let b = Tensor::from_f32(&backend, &[1.0, 0.0], &[2, 1], BF16).unwrap();
            let got = gemm(&a, &b, GemmOptions::new().kernel(GemmKernel::Cooperative)).unwrap().to_f32_vec().unwrap();
            assert_eq!(got, [65504.0]);
            // The f16 pre-pass rounds to nearest and clamps the same way; 13 elements, not a multiple of 8.
            let v = [1e6, -1e6, 1.5, 0.0, 1.0 / 3.0, 65519.0, -7.0, 2e-8, 0.1, 100.0, -0.5, 3.0, 1e-3];
            for dtype in [F32, BF16] {
                let t = Tensor::from_f32(&backend, &v, &[13], dtype).unwrap();
                let got = f16_copy(ctx, &t).unwrap().to_f32_vec().unwrap();
                let want: Vec<f32> = t
                    .to_f32_vec()
                    .unwrap()
                    .iter()
                    .map(|&x| half::f16::from_f32(x.clamp(-65504.0, 65504.0)).to_f32())
                    .chain([0.0; 3])
                    .collect();
                assert_eq!(got, want, "{dtype}");
            }
        }
    }

    #[test]
    fn auto_picks_the_cpu_and_coop_requests_fail_on_the_cpu() {
        assert_eq!(gemm_path(&Backend::Cpu, DType::F32, DType::F32, GemmKernel::Auto).unwrap(), GemmPath::Cpu);
        assert!(matches!(
            gemm_path(&Backend::Cpu, DType::F16, DType::F16, GemmKernel::Cooperative),
            Err(KernelError::MissingFeature { .. })
        ));
        if let Some(gpu) = test_gpu() {
            assert_eq!(gemm_path(&gpu, DType::F32, DType::F32, GemmKernel::Tiled).unwrap(), GemmPath::Tiled);
            // f32 inputs never go to an f16 configuration unless asked.
            let auto = gemm_path(&gpu, DType::F32, DType::BF16, GemmKernel::Auto).unwrap();
            assert!(!matches!(auto, GemmPath::Cooperative(CoopVariant::F16x16 { .. })));
        }
    }

    type Variant = (String, &'static crate::kernels::KernelSource, &'static str, Vec<(&'static str, f64)>);

    /// Tuning aid, not a check: times the raw kernels at 4096³ on the test GPU (no allocation, no
    /// readback). Run on a GPU machine with `cargo test --release -p torchless-kernels profile_variants
    /// -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn profile_variants() {
        let Some(backend) = test_gpu() else { return };
        let Backend::Gpu(ctx) = &backend else { unreachable!() };
        let n = 4096usize;
        let mut rng = Rng::new(9);
        for dtype in [DType::F16, DType::F32] {
            let av = rng.vec(n * n, -1.0, 1.0);
            let a = Tensor::from_f32(&backend, &av, &[n, n], dtype).unwrap();
            let b = Tensor::from_f32(&backend, &av, &[n, n], dtype).unwrap();
            let out = Tensor::zeros(&backend, &[n, n], DType::F32).unwrap();
            let buf = |t: &Tensor| t.gpu_buffer().unwrap().raw().clone();
            let (ab, bb, ob) = (buf(&a), buf(&b), buf(&out));
            let p = Params {
                m: n as u32,
                n: n as u32,
                k: n as u32,
                alpha: 1.0,
                a_bstride: 0,
                b_bstride: 0,
                res_bstride: 0,
                batch: 1,
            };
            let mut variants: Vec<Variant> = vec![];
            for (ta, tb) in [(0.0, 0.0), (0.0, 1.0)] {
                let base = vec![
                    ("DT_A", dtype.wgsl_code()),
                    ("DT_B", dtype.wgsl_code()),
                    ("TRANS_A", ta),
                    ("TRANS_B", tb),
                    ("BIAS", 0.0),
                    ("DT_BIAS", 0.0),
                    ("RES", 0.0),
                    ("DT_RES", 0.0),
                ];
                variants.push((format!("tiled {dtype} tb={tb}"), &GEMM, "gemm_tiled", base.clone()));
                if dtype == DType::F16 && cooperative_variant(ctx).is_some() {
                    let mut c = base.clone();
                    c.push(("WG16", 256.0));
                    variants.push((format!("coop16 tb={tb}"), &GEMM_COOP, "gemm_coop16", c));
                }
            }
            for (label, kernel, entry, constants) in variants {
                let run = || {
                    ctx.dispatch(Dispatch {
                        kernel,
                        entry,
                        constants: &constants,
                        params: Some(bytemuck::bytes_of(&p)),
                        buffers: &[&ab, &bb, &ob, &ab, &ab],
                        workgroups: Workgroups::Grid([32, 32, 1]),
                    })
                    .unwrap()
                };
                run();
                ctx.synchronize().unwrap();
                let iters = 20;
                let t0 = std::time::Instant::now();
                for _ in 0..iters {
                    run();
                }
                ctx.synchronize().unwrap();
                let s = t0.elapsed().as_secs_f64() / iters as f64;
                println!("gemm profile {label}: {:.3} ms, {:.1} TFLOP/s", s * 1e3, 2.0 * (n as f64).powi(3) / s / 1e12);
            }
        }
    }

    #[test]
    fn params_match_the_wgsl_struct() {
        for kernel in [&GEMM, &GEMM_COOP] {
            let size = crate::testing::wgsl_struct_size(kernel, "Params");
            assert_eq!(size as usize, std::mem::size_of::<Params>(), "{}", kernel.name);
        }
    }

    #[test]
    fn bench_cases_are_square_and_capped() {
        let case = bench_case("gemm_a_bt", 256 << 20).unwrap().unwrap();
        assert_eq!(case.shape, "4096x4096x4096");
        assert_eq!(case.flops, 2 * 4096u64.pow(3));
        let small = bench_case("gemm_bf16", 12 * 100 * 100).unwrap().unwrap();
        assert_eq!(small.shape, "100x100x100");
        assert!(bench_case("add", 1024).is_none());
    }
}
