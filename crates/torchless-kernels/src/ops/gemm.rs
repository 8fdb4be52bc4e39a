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
//!
//! Pre-passes, where many workgroups stage the same operand: the 16×16 path rounds f32 and bf16 operands
//! to f16 once; the tiled kernel rewrites operands stored along the depth (A, or B used transposed) as
//! f32 `[depth, outer]`, the layout its depth loop runs fastest on.

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
// chunk numbers below the slice's chunk count (ACHUNKS / BCHUNKS, ECHUNKS) through `coop_chunk` and fit
// the staging arrays (largest 255·10 + 7 < 2560 vec4<f16>s; 63·20 + 19 < 1280 floats), fragment loads read
// 16 (8) rows of a tile from its first row and column, the epilogue scratch is 16 (4) fragments of its
// subgroups, and the buffers are read only through runs whose in-bounds length `operand_run` computed
// (a full 8-element run of 16-bit values reads one 16-byte word, inside the buffer's padding) and written
// only inside [M, N] (`store4`), with the host checking every operand's length against M, N, K and the
// batch strides.
crate::kernel_source!(unchecked GEMM_COOP, "gemm_coop", ["gemm_shared", "gemm_coop", "coop16"]);

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
    /// 16×16×16 f16 inputs, f32 accumulators (NVIDIA Vulkan); 16 subgroups of `subgroup` (32) lanes.
    F16x16 { subgroup: u32 },
    /// 8×8×8 f32 (Apple); 4 subgroups of `subgroup` lanes.
    F32x8 { subgroup: u32 },
}

impl CoopVariant {
    fn workgroup_size(self) -> u32 {
        match self {
            CoopVariant::F16x16 { .. } => COOP16_WORKGROUP,
            CoopVariant::F32x8 { subgroup } => 4 * subgroup,
        }
    }
    /// Rows and columns of C a workgroup computes.
    fn tile(self) -> (usize, usize) {
        match self {
            CoopVariant::F16x16 { .. } => COOP16_TILE,
            CoopVariant::F32x8 { .. } => (64, 64),
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

/// Rows and columns of C a workgroup of the dense GEMM's kernels/coop16.wgsl product computes
/// (gemm_coop.wgsl's `HM`, `HN`; the quantized GEMM has its own, `qmatmul::gpu::QCOOP16_TILE`).
pub(crate) const COOP16_TILE: (usize, usize) = (128, 256);

/// Threads of a kernels/coop16.wgsl workgroup (its WG16): 16 subgroups of 32 lanes.
pub(crate) const COOP16_WORKGROUP: u32 = 512;

/// Workgroup memory of kernels/coop16.wgsl: staged f16 slices of HM × 40 and HN × 40 halves (HM + HN is
/// 384 in either tile it runs) and the epilogue's 16 × 16×16 f32.
pub(crate) const COOP16_WORKGROUP_BYTES: u32 = 384 * 40 * 2 + 4096 * 4;

/// The cooperative-matrix variant `ctx` can run, if any: the adapter must offer the configuration, f16
/// and subgroups, and a fixed subgroup size (each subgroup owns a fixed block of the output tile); the
/// 16×16 kernel also needs subgroups of 32 lanes and 46 KiB of workgroup memory.
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
    // The 16×16 kernel's 16 subgroups own fixed blocks of a 128×256 tile, and its 512 threads stage a
    // slice's 512 chunks of A and 1024 of B, so its subgroups must be 32 lanes wide.
    let coop16_memory = limits.max_compute_workgroup_storage_size >= COOP16_WORKGROUP_BYTES;
    if subgroup == 32 && offers(16, S::F16) && fits(COOP16_WORKGROUP) && coop16_memory {
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

/// How many workgroups of the tiled kernel must stage an operand stored along the depth (A, or B used
/// transposed) before it is rewritten depth-major by a pre-pass: the copy costs about 6 bytes an element
/// against a product ~10 % faster, so it pays once the other dimension spans a thousand or so.
const PACK_MIN_STAGINGS: usize = 8;

/// The tolerance of a product whose inputs the 16×16 cooperative path rounds to f16 (depth k).
pub fn f16_rounded_tolerance(k: usize) -> crate::testing::Tolerance {
    crate::testing::Tolerance { atol: 2e-3 * (k as f64).sqrt(), rtol: 1e-2 }
}

/// `t`'s elements rounded to f16 (clamped to ±65504, a NaN kept) by `gemm_coop.wgsl`'s pre-pass, in `t`'s
/// layout, padded to a multiple of 8 elements: the input of a cooperative product that would otherwise
/// convert `t` in every workgroup that stages it. Needs an adapter with a [`CoopVariant::F16x16`]
/// configuration.
pub(crate) fn f16_copy(ctx: &GpuContext, t: &Tensor) -> Result<Tensor> {
    f16_copy_prefix(ctx, t, t.numel())
}

/// [`f16_copy`] of `t`'s first `n` elements (at least one).
pub(crate) fn f16_copy_prefix(ctx: &GpuContext, t: &Tensor, n: usize) -> Result<Tensor> {
    let out = Tensor::uninit(&t.backend(), OP, &[n.next_multiple_of(8)], DType::F16)?;
    let params = Params { k: to_u32(OP, "elements", n)?, ..bytemuck::Zeroable::zeroed() };
    ctx.dispatch(Dispatch {
        kernel: &GEMM_COOP,
        entry: "to_f16",
        constants: &[("DT_A", t.dtype().wgsl_code())],
        params: Some(bytemuck::bytes_of(&params)),
        buffers: &[&raw(t), &raw(&out)],
        workgroups: Workgroups::Linear(to_u32(OP, "elements", n.div_ceil(8 * 256))?),
    })?;
    Ok(out)
}

/// The device buffer of a tensor on the GPU backend.
fn raw(t: &Tensor) -> wgpu::Buffer {
    t.gpu_buffer().expect("GPU tensors on a GPU backend").raw().clone()
}

/// The f32 copy of operand `t` (`[.., outer, depth]`, `bstride` elements between its `batch` entries, 0
/// when shared) stored depth-major, `[.., depth, outer]`, with its batch stride; `None` where a binding
/// could not hold it (the product then stages `t` as it lies).
fn depth_major_copy(
    ctx: &GpuContext,
    t: &Tensor,
    outer: usize,
    depth: usize,
    bstride: usize,
    batch: usize,
) -> Result<Option<(Tensor, usize)>> {
    let entries = if bstride == 0 { 1 } else { batch };
    let n = entries * outer * depth;
    if 4 * n as u64 > ctx.max_binding_bytes() || u32::try_from(n).is_err() {
        return Ok(None);
    }
    let out = Tensor::uninit(&t.backend(), OP, &[n], DType::F32)?;
    let params = Params {
        m: to_u32(OP, "M", outer)?,
        k: to_u32(OP, "K", depth)?,
        a_bstride: to_u32(OP, "batch stride", bstride)?,
        ..bytemuck::Zeroable::zeroed()
    };
    ctx.dispatch(Dispatch {
        kernel: &GEMM,
        entry: "pack_depth_major",
        constants: &[("DT_A", t.dtype().wgsl_code())],
        params: Some(bytemuck::bytes_of(&params)),
        buffers: &[&raw(t), &raw(&out)],
        workgroups: Workgroups::Grid([
            to_u32(OP, "M tiles", outer.div_ceil(64))?,
            to_u32(OP, "K tiles", depth.div_ceil(64))?,
            to_u32(OP, "batch", entries)?,
        ]),
    })?;
    Ok(Some((out, if bstride == 0 { 0 } else { outer * depth })))
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
            let (tile_m, tile_n) = v.tile();
            (prepass(a, d.n.div_ceil(tile_n))?, prepass(b, d.m.div_ceil(tile_m))?)
        }
        _ => (None, None),
    };
    let (a, b) = (a16.as_ref().unwrap_or(a), b16.as_ref().unwrap_or(b));
    // The tiled kernel's depth loop runs fastest with both operands stored depth-major (Aᵀ·B: 37.1 against
    // 33.6 TFLOP/s for A·B on the H100, whose A it transposes into workgroup memory as it stages it).
    let (mut trans_a, mut trans_b, mut a_bstride, mut b_bstride) =
        (opts.trans_a, opts.trans_b, d.a_bstride, d.b_bstride);
    let (mut a_packed, mut b_packed) = (None, None);
    // Both operands must end depth-major: each already is, or is staged often enough to pay for its copy.
    let settles = |depth_major: bool, stagings: usize| depth_major || stagings >= PACK_MIN_STAGINGS;
    if path == GemmPath::Tiled
        && (!trans_a || trans_b)
        && settles(trans_a, d.n.div_ceil(128))
        && settles(!trans_b, d.m.div_ceil(128))
    {
        if !trans_a {
            a_packed = depth_major_copy(ctx, a, d.m, d.k, d.a_bstride, d.batch)?;
        }
        if trans_b && (trans_a || a_packed.is_some()) {
            b_packed = depth_major_copy(ctx, b, d.n, d.k, d.b_bstride, d.batch)?;
        }
        if let Some((_, s)) = &a_packed {
            (trans_a, a_bstride) = (true, *s);
        }
        if let Some((_, s)) = &b_packed {
            (trans_b, b_bstride) = (false, *s);
        }
    }
    let a = a_packed.as_ref().map_or(a, |(t, _)| t);
    let b = b_packed.as_ref().map_or(b, |(t, _)| t);
    let (ab, bb, ob) = (raw(a), raw(b), raw(out));
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
        a_bstride: to_u32(OP, "batch stride", a_bstride)?,
        b_bstride: to_u32(OP, "batch stride", b_bstride)?,
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
    let bias_b = opts.bias.map_or_else(|| ab.clone(), raw);
    let res_b = match opts.residual {
        Some(r) if !in_place => raw(r),
        _ => ab.clone(),
    };
    let code = |t: Option<&Tensor>| t.map_or(0.0, |t| t.dtype().wgsl_code());
    let mut constants = vec![
        ("DT_A", a.dtype().wgsl_code()),
        ("DT_B", b.dtype().wgsl_code()),
        ("TRANS_A", if trans_a { 1.0 } else { 0.0 }),
        ("TRANS_B", if trans_b { 1.0 } else { 0.0 }),
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
        GemmPath::Tiled | GemmPath::Cpu => (&GEMM, "gemm_tiled", (128, 128)),
    };
    let (tile_m, tile_n) = tile;
    let grid =
        [to_u32(OP, "N tiles", d.n.div_ceil(tile_n))?, to_u32(OP, "M tiles", d.m.div_ceil(tile_m))?, params.batch];
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
mod tests;
