//! Rotary position embedding (RoPE) on x [tokens, heads, head_dim], in place or out of place.
//!
//! The engine builds a [`RopeTable`] once per model from a [`RopeConfig`] (the inverse frequencies are
//! computed on the host in f64, with the model's scaling, and uploaded once) and applies it to Q and K
//! with one dispatch each:
//!
//! ```ignore
//! let table = RopeTable::new(&backend, RopeConfig::new(128, 500_000.0).with_scaling(llama3))?;
//! rope_inplace(&q, &table, RopePositions::Range { offset: pos })?;   // q: [tokens, n_heads, 128]
//! rope_inplace(&k, &table, RopePositions::Range { offset: pos })?;   // k: [tokens, n_kv_heads, 128]
//! ```
//!
//! Angles are position · inv_freq. The GPU never forms that product in f32 (at position 100000 it would be
//! off by up to 4e-3 rad): the table holds each frequency in turns, split so that the angle's fraction of a
//! turn is computed exactly from the position's bytes (see `kernels/rope.wgsl`). The CPU computes
//! the angle and its cos/sin in f64 once per (token, frequency).

use std::f64::consts::PI;
use std::sync::Mutex;

use rayon::prelude::*;

use super::{
    common_backend, require_distinct, require_dtype, require_float, require_non_empty, require_same_dtype,
    require_same_shape, to_u32,
};
use crate::backend::Backend;
use crate::cpu;
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::gpu::{Dispatch, MAX_WORKGROUPS_PER_DIM, Workgroups};
use crate::tensor::Tensor;

crate::kernel_source!(ROPE, "rope", ["rope_angle", "rope"]);

const OP: &str = "rope";
/// Threads per workgroup of every entry point.
const WORKGROUP: u32 = 256;
/// Rows of the GPU coefficient table (hi_0..3, lo_0..3; see `kernels/rope.wgsl`).
const TABLE_ROWS: usize = 8;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n_threads: u32,
    units: u32,
    head_groups: u32,
    heads_per_thread: u32,
    heads: u32,
    row_slots: u32,
    rot_slots: u32,
    rot_units: u32,
    half: u32,
    half_slots: u32,
    pass_units: u32,
    table_stride: u32,
    pos_offset: u32,
    attn_scale: f32,
    grid_threads: u32,
    _pad: u32,
}

/// Which dims of a head form the rotated pairs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Pairs (i, i + rot_dim/2): GPT-NeoX, Hugging Face Llama (`rotate_half`), llama.cpp NEOX.
    HalfSplit,
    /// Pairs (2i, 2i + 1): GPT-J, llama.cpp NORM (GGUF llama files, whose Q/K rows are permuted).
    Interleaved,
}

impl RopeLayout {
    fn code(self) -> f64 {
        match self {
            RopeLayout::HalfSplit => 0.0,
            RopeLayout::Interleaved => 1.0,
        }
    }

    /// The GEMVs' `ROPE` constant (kernels/gemv_rope.wgsl): 1 HalfSplit, 2 Interleaved.
    pub(crate) fn epilogue_code(self) -> f64 {
        self.code() + 1.0
    }

    /// Slots (rows) a workgroup of the fused Q/K/V + RoPE GEMV epilogue takes, from the launch shape's
    /// `tuned` count: whole rotation pairs, 2 or 4; with a 16-bit cache and HalfSplit pairs always 4, since
    /// a cache word's two adjacent rows then belong to two pairs (kernels/gemv_rope.wgsl CACHE_DT).
    pub(crate) fn epilogue_slots(self, cache: DType, tuned: u32) -> u32 {
        match self {
            RopeLayout::HalfSplit if cache != DType::F32 => 4,
            _ => (tuned & !1).clamp(2, 4),
        }
    }

    /// The dims (a, b) of pair `i` when `half` pairs rotate.
    pub fn pair(self, i: usize, half: usize) -> (usize, usize) {
        match self {
            RopeLayout::HalfSplit => (i, i + half),
            RopeLayout::Interleaved => (2 * i, 2 * i + 1),
        }
    }
}

/// How the base frequencies theta^(−2i/rot_dim) are rescaled for long contexts.
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScaling {
    None,
    /// Position interpolation: inv_freq / factor (transformers `rope_type: "linear"`).
    Linear {
        factor: f32,
    },
    /// Llama 3.1 (transformers `_compute_llama3_parameters`): frequencies whose wavelength exceeds
    /// old_ctx / low_freq_factor are divided by `factor`, those below old_ctx / high_freq_factor are kept,
    /// and those between are interpolated smoothly.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: u32,
    },
    /// Explicit per-frequency divisors (GGUF `rope_freqs.weight`): `inv_freq[i] / factors[i]`, rot_dim/2 of them.
    Factors(Vec<f32>),
}

/// Everything that fixes a model's rotary embedding.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    /// Dims per head (even).
    pub head_dim: usize,
    /// Leading dims of each head that rotate (even, 2 ..= head_dim); the rest pass through unchanged.
    pub rot_dim: usize,
    /// The frequency base (`rope_theta`), > 0.
    pub theta: f64,
    pub layout: RopeLayout,
    pub scaling: RopeScaling,
    /// Multiplies cos and sin (YaRN-style `attention_factor`); 1 for most models.
    pub attention_scaling: f32,
}

impl RopeConfig {
    /// Full-width HalfSplit rotation with no scaling.
    pub fn new(head_dim: usize, theta: f64) -> RopeConfig {
        RopeConfig {
            head_dim,
            rot_dim: head_dim,
            theta,
            layout: RopeLayout::HalfSplit,
            scaling: RopeScaling::None,
            attention_scaling: 1.0,
        }
    }
    pub fn with_rot_dim(mut self, rot_dim: usize) -> Self {
        self.rot_dim = rot_dim;
        self
    }
    pub fn with_layout(mut self, layout: RopeLayout) -> Self {
        self.layout = layout;
        self
    }
    pub fn with_scaling(mut self, scaling: RopeScaling) -> Self {
        self.scaling = scaling;
        self
    }
    pub fn with_attention_scaling(mut self, attention_scaling: f32) -> Self {
        self.attention_scaling = attention_scaling;
        self
    }

    /// Pairs per head: rot_dim / 2.
    pub fn half(&self) -> usize {
        self.rot_dim / 2
    }

    pub fn validate(&self) -> Result<()> {
        let arg = |name: &'static str, value: String, reason: &str| {
            Err(KernelError::Argument { op: OP, name, value, reason: reason.into() })
        };
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return arg("head_dim", self.head_dim.to_string(), "must be even and positive");
        }
        if self.rot_dim == 0 || !self.rot_dim.is_multiple_of(2) || self.rot_dim > self.head_dim {
            return arg(
                "rot_dim",
                self.rot_dim.to_string(),
                &format!("must be even, positive and at most head_dim = {}", self.head_dim),
            );
        }
        if !(self.theta.is_finite() && self.theta > 0.0) {
            return arg("theta", self.theta.to_string(), "must be a positive finite number");
        }
        if !self.attention_scaling.is_finite() {
            return arg("attention_scaling", self.attention_scaling.to_string(), "must be finite");
        }
        let positive = |name: &'static str, v: f32| {
            if v.is_finite() && v > 0.0 { Ok(()) } else { arg(name, v.to_string(), "must be a positive finite number") }
        };
        match &self.scaling {
            RopeScaling::None => Ok(()),
            RopeScaling::Linear { factor } => positive("factor", *factor),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                positive("factor", *factor)?;
                positive("low_freq_factor", *low_freq_factor)?;
                positive("high_freq_factor", *high_freq_factor)?;
                if high_freq_factor <= low_freq_factor {
                    return arg(
                        "high_freq_factor",
                        high_freq_factor.to_string(),
                        &format!("must exceed low_freq_factor = {low_freq_factor}"),
                    );
                }
                if *original_max_position_embeddings == 0 {
                    return arg("original_max_position_embeddings", "0".into(), "must be positive");
                }
                Ok(())
            }
            RopeScaling::Factors(factors) => {
                if factors.len() != self.half() {
                    return arg(
                        "factors",
                        format!("{} values", factors.len()),
                        &format!("must hold rot_dim / 2 = {} values", self.half()),
                    );
                }
                factors.iter().try_for_each(|&f| positive("factors", f))
            }
        }
    }

    /// `inv_freq[i]` for i < rot_dim/2, after scaling, in f64.
    pub fn inv_freq(&self) -> Result<Vec<f64>> {
        self.validate()?;
        let rot = self.rot_dim as f64;
        let base = (0..self.half()).map(|i| self.theta.powf(-((2 * i) as f64) / rot));
        Ok(match &self.scaling {
            RopeScaling::None => base.collect(),
            RopeScaling::Linear { factor } => base.map(|f| f / *factor as f64).collect(),
            RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
                let (factor, low, high) = (*factor as f64, *low_freq_factor as f64, *high_freq_factor as f64);
                let old = *original_max_position_embeddings as f64;
                let (low_freq_wavelen, high_freq_wavelen) = (old / low, old / high);
                base.map(|f| {
                    let wavelen = 2.0 * PI / f;
                    if wavelen < high_freq_wavelen {
                        f
                    } else if wavelen > low_freq_wavelen {
                        f / factor
                    } else {
                        let smooth = (old / wavelen - low) / (high - low);
                        (1.0 - smooth) * f / factor + smooth * f
                    }
                })
                .collect()
            }
            RopeScaling::Factors(factors) => base.zip(factors).map(|(f, &d)| f / d as f64).collect(),
        })
    }
}

/// A config with its inverse frequencies, computed once, and the GPU coefficient table built from them.
#[derive(Clone, Debug)]
pub struct RopeTable {
    config: RopeConfig,
    /// [rot_dim / 2]
    inv_freq: Vec<f64>,
    /// [8, stride] f32 on the table's backend; see `kernels/rope.wgsl`.
    coefficients: Tensor,
    /// f32 per coefficient row: rot_dim / 2 rounded up to a multiple of 4.
    stride: usize,
}

/// `c` in [0, 1) = hi + lo with hi a multiple of 2^-16 and 0 ≤ lo < 2^-16.
fn split16(c: f64) -> (f32, f32) {
    let hi = (c * 65536.0).floor() / 65536.0;
    (hi as f32, (c - hi) as f32)
}

impl RopeTable {
    /// Validates `config`, computes its inverse frequencies and uploads the coefficient table to `backend`.
    pub fn new(backend: &Backend, config: RopeConfig) -> Result<RopeTable> {
        let inv_freq = config.inv_freq()?;
        let stride = inv_freq.len().next_multiple_of(4);
        let mut rows = vec![0f32; TABLE_ROWS * stride];
        for (i, &f) in inv_freq.iter().enumerate() {
            let t = f / (2.0 * PI); // turns per position
            for k in 0..4 {
                // Turns per 256^k positions, mod 1 (scaling by a power of two is exact).
                let (hi, lo) = split16((t * 256f64.powi(k as i32)).fract());
                rows[k * stride + i] = hi;
                rows[(4 + k) * stride + i] = lo;
            }
        }
        let coefficients = Tensor::from_slice(backend, &rows, &[TABLE_ROWS, stride])?;
        Ok(RopeTable { config, inv_freq, coefficients, stride })
    }

    /// The same table on another backend.
    pub fn to_backend(&self, backend: &Backend) -> Result<RopeTable> {
        RopeTable::new(backend, self.config.clone())
    }

    pub fn config(&self) -> &RopeConfig {
        &self.config
    }
    /// `inv_freq[i]`, i < rot_dim / 2, in f64.
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }
    /// The uploaded coefficient table [8, stride].
    pub fn tensor(&self) -> &Tensor {
        &self.coefficients
    }
    pub fn backend(&self) -> Backend {
        self.coefficients.backend()
    }
}

/// The positions of the tokens of x.
#[derive(Clone, Copy, Debug)]
pub enum RopePositions<'a> {
    /// Token t has position offset + t (prefill, or one sequence's decode step).
    Range { offset: u32 },
    /// A u32 tensor of one position per token (batched decode).
    Tensor(&'a Tensor),
}

/// Rotates x [tokens, heads, head_dim] into a new tensor.
pub fn rope(x: &Tensor, table: &RopeTable, positions: RopePositions<'_>) -> Result<Tensor> {
    let out = Tensor::uninit(&x.backend(), OP, x.shape(), x.dtype())?;
    rope_into(x, table, positions, &out)?;
    Ok(out)
}

/// Rotates x in place.
pub fn rope_inplace(x: &Tensor, table: &RopeTable, positions: RopePositions<'_>) -> Result<()> {
    rope_into(x, table, positions, x)
}

/// Rotates x into `out` (same shape and dtype; `out` may be `x` itself).
pub fn rope_into(x: &Tensor, table: &RopeTable, positions: RopePositions<'_>, out: &Tensor) -> Result<()> {
    rope_impl(x, table, positions, out, Path::Auto)
}

/// Where a decode step's K and V go when a fused GEMV ([`crate::ops::gemv::gemv_qkv_rope`],
/// [`crate::ops::qmatmul::gemv_q_qkv_rope`]) rotates Q and K and stores K and V itself.
#[derive(Clone, Copy)]
pub struct KvWrite<'a> {
    /// The model's rotation (the fused dispatch needs every dim of a head to rotate).
    pub table: &'a RopeTable,
    /// The position of the step's first token.
    pub pos: usize,
    /// `[capacity, n_kv_heads, head_dim]`, both f32, both f16 or both bf16.
    pub k_cache: &'a Tensor,
    pub v_cache: &'a Tensor,
}

impl KvWrite<'_> {
    /// Checks the caches against projections of `q_rows`, `k_rows` and `v_rows` outputs for `tokens`
    /// tokens; returns the head dim.
    pub(crate) fn check(
        &self,
        op: &'static str,
        q_rows: usize,
        k_rows: usize,
        v_rows: usize,
        tokens: usize,
    ) -> Result<usize> {
        require_float(op, self.k_cache)?;
        require_dtype(op, self.v_cache, self.k_cache.dtype())?;
        let hd = self.table.config.head_dim;
        let capacity = match self.k_cache.shape() {
            &[c, h, d]
                if h * d == k_rows && d == hd && v_rows == k_rows && self.v_cache.shape() == self.k_cache.shape() =>
            {
                c
            }
            _ => {
                return Err(KernelError::Shape {
                    op,
                    detail: format!(
                        "caches {:?} and {:?} must both be [capacity, n_kv_heads, {hd}] with n_kv_heads · {hd} the \
                         rows of Wk and Wv ({k_rows}, {v_rows})",
                        self.k_cache.shape(),
                        self.v_cache.shape(),
                    ),
                });
            }
        };
        if !q_rows.is_multiple_of(hd) {
            return Err(KernelError::Shape { op, detail: format!("Wq has {q_rows} rows, not whole heads of {hd}") });
        }
        if self.pos + tokens > capacity {
            return Err(KernelError::Argument {
                op,
                name: "pos",
                value: self.pos.to_string(),
                reason: format!("{tokens} tokens from here overrun the cache of {capacity} rows"),
            });
        }
        Ok(hd)
    }

    /// Whether the fused epilogue (kernels/gemv_rope.wgsl) can write these caches: every dim of a head
    /// rotates, and a 16-bit cache's words pair rows that one thread of four slots holds (head_dim a
    /// multiple of 4, so that a HalfSplit pair j, j + 1 stays within its half).
    pub(crate) fn fusable(&self) -> bool {
        let cfg = &self.table.config;
        cfg.rot_dim == cfg.head_dim && (self.k_cache.dtype() == DType::F32 || cfg.head_dim.is_multiple_of(4))
    }

    /// The caches may not share storage with the GEMV's operands `inputs` or with each other, and live
    /// on their backend.
    pub(crate) fn check_distinct(&self, op: &'static str, inputs: &[&Tensor]) -> Result<()> {
        require_distinct(op, "k_cache", self.k_cache, inputs)?;
        require_distinct(op, "v_cache", self.v_cache, inputs)?;
        require_distinct(op, "k_cache", self.k_cache, &[self.v_cache])?;
        let mut all = inputs.to_vec();
        all.extend([self.k_cache, self.v_cache, self.table.tensor()]);
        common_backend(op, &all).map(|_| ())
    }

    /// The unfused path: q `[tokens, q_rows]` rotated in place, k and v rotated and stored.
    pub(crate) fn rope_and_store(&self, q: &Tensor, k: &Tensor, v: &Tensor, tokens: usize, hd: usize) -> Result<()> {
        let heads = |t: &Tensor| t.reshape(&[tokens, t.numel() / (tokens * hd), hd]);
        rope_qk_store_kv(&heads(q)?, &heads(k)?, &heads(v)?, self.table, self.pos, self.k_cache, self.v_cache)
    }
}

/// f16's largest finite value: an f16 KV cache saturates there (kernels/common.wgsl `pack_pair_saturating`).
const F16_MAX: f32 = 65504.0;

/// One attention step's rotary embedding and cache writes in one launch: rotates `q` `[tokens, heads,
/// head_dim]` in place, rotates `k` `[tokens, kv_heads, head_dim]` into rows `pos..pos + tokens` of
/// `k_cache` `[capacity, kv_heads, head_dim]` and copies `v` into the same rows of `v_cache`. Token `t`
/// has position `pos + t`. `q`, `k` and `v` are f32 (`k` and `v` are left as they are); the caches are
/// both f32, both f16 or both bf16 (rounded to nearest as they are written; f16 saturates at ±65504, so
/// that an outlier key stays finite).
pub fn rope_qk_store_kv(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    table: &RopeTable,
    pos: usize,
    k_cache: &Tensor,
    v_cache: &Tensor,
) -> Result<()> {
    const OP: &str = "rope_qk_kv";
    for t in [q, k, v] {
        require_dtype(OP, t, DType::F32)?;
    }
    let cache_dt = k_cache.dtype();
    require_float(OP, k_cache)?;
    require_dtype(OP, v_cache, cache_dt)?;
    let cfg = &table.config;
    let shape_err = |detail: String| KernelError::Shape { op: OP, detail };
    let (&[tokens, heads, hd], &[kt, kv_heads, khd]) = (q.shape(), k.shape()) else {
        return Err(shape_err(format!("q and k must be 3-D, found {:?} and {:?}", q.shape(), k.shape())));
    };
    if hd != cfg.head_dim || (kt, khd) != (tokens, hd) || v.shape() != k.shape() || tokens == 0 {
        return Err(shape_err(format!(
            "q {:?}, k {:?}, v {:?} must be [tokens >= 1, heads, {}] with one token count",
            q.shape(),
            k.shape(),
            v.shape(),
            cfg.head_dim
        )));
    }
    let capacity = match k_cache.shape() {
        &[c, h, d] if h == kv_heads && d == hd && v_cache.shape() == k_cache.shape() => c,
        _ => {
            return Err(shape_err(format!(
                "caches {:?} and {:?} must both be [capacity, {kv_heads}, {hd}]",
                k_cache.shape(),
                v_cache.shape()
            )));
        }
    };
    if pos + tokens > capacity {
        return Err(KernelError::Argument {
            op: OP,
            name: "pos",
            value: pos.to_string(),
            reason: format!("{tokens} tokens from here overrun the cache of {capacity} rows"),
        });
    }
    require_distinct(OP, "q", q, &[k, v, k_cache, v_cache])?;
    require_distinct(OP, "k_cache", k_cache, &[k, v, v_cache])?;
    require_distinct(OP, "v_cache", v_cache, &[k, v])?;
    let pos_offset = to_u32(OP, "pos + tokens", pos + tokens)? - tokens as u32;
    let positions = RopePositions::Range { offset: pos_offset };
    match common_backend(OP, &[q, k, v, k_cache, v_cache, table.tensor()])? {
        Backend::Cpu => {
            rope_inplace(q, table, positions)?;
            let k_rot = rope(k, table, positions)?;
            let in_cache_dtype = |t: Tensor| match cache_dt {
                DType::F32 => Ok(t),
                // Saturating at f16's largest finite value, as the GPU's cache writes do.
                DType::F16 => {
                    let v: Vec<f32> = cpu::read_f32(&t).iter().map(|x| x.clamp(-F16_MAX, F16_MAX)).collect();
                    Tensor::from_f32(&Backend::Cpu, &v, t.shape(), DType::F16)
                }
                _ => super::convert::cast(&t, cache_dt),
            };
            super::convert::copy_rows_into(&in_cache_dtype(k_rot)?, k_cache, pos)?;
            super::convert::copy_rows_into(&in_cache_dtype(v.clone())?, v_cache, pos)
        }
        Backend::Gpu(ctx) => {
            let raw = |t: &Tensor| -> Result<wgpu::Buffer> {
                let b = t.gpu_buffer().expect("gpu tensor");
                ctx.check_binding(OP, b.size())?;
                Ok(b.raw().clone())
            };
            let threads = to_u32(OP, "elements", tokens * (heads + 2 * kv_heads) * hd / 2)?;
            let params = Params {
                n_threads: threads,
                heads: to_u32(OP, "heads", heads)?,
                head_groups: to_u32(OP, "kv_heads", kv_heads)?,
                row_slots: to_u32(OP, "head_dim", hd)?,
                half: to_u32(OP, "rot_dim", cfg.half())?,
                table_stride: to_u32(OP, "rot_dim", table.stride)?,
                pos_offset,
                attn_scale: cfg.attention_scaling,
                ..Params::default()
            };
            let tab = raw(table.tensor())?;
            let entry = if cache_dt == DType::F32 { "rope_qk_kv" } else { "rope_qk_kv16" };
            ctx.dispatch(Dispatch {
                kernel: &ROPE,
                entry,
                constants: &[
                    ("DTYPE", DType::F32.wgsl_code()),
                    ("LAYOUT", cfg.layout.code()),
                    ("POSITIONS", 0.0),
                    ("CACHE_DT", cache_dt.wgsl_code()),
                ],
                params: Some(bytemuck::bytes_of(&params)),
                buffers: &[&raw(q)?, &tab, &tab, &raw(k)?, &raw(v)?, &raw(k_cache)?, &raw(v_cache)?],
                workgroups: Workgroups::Linear(threads.div_ceil(WORKGROUP)),
            })
        }
    }
}

/// Which GPU kernel runs; tests force the word path on shapes the vec4 path would take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
enum Path {
    Auto,
    Words,
    /// The vec4 path on at most two workgroups, so every thread loops over several units.
    Strided,
}

fn rope_impl(x: &Tensor, table: &RopeTable, positions: RopePositions<'_>, out: &Tensor, path: Path) -> Result<()> {
    let cfg = &table.config;
    require_float(OP, x)?;
    require_non_empty(OP, "x", x)?;
    let &[tokens, heads, head_dim] = x.shape() else {
        return Err(KernelError::Shape {
            op: OP,
            detail: format!("x must be [tokens, heads, head_dim], found {:?}", x.shape()),
        });
    };
    if head_dim != cfg.head_dim {
        return Err(KernelError::Shape {
            op: OP,
            detail: format!("x has head_dim {head_dim} but the table was built for head_dim {}", cfg.head_dim),
        });
    }
    require_same_shape(OP, x, out)?;
    require_same_dtype(OP, x, out)?;
    let mut tensors = vec![x, out, table.tensor()];
    match positions {
        RopePositions::Range { offset } => {
            if offset as u64 + tokens as u64 - 1 > u32::MAX as u64 {
                return Err(KernelError::Argument {
                    op: OP,
                    name: "offset",
                    value: offset.to_string(),
                    reason: format!("offset + {tokens} tokens exceeds the u32 position range"),
                });
            }
        }
        RopePositions::Tensor(p) => {
            require_dtype(OP, p, DType::U32)?;
            if p.numel() != tokens || p.shape().len() > 1 {
                return Err(KernelError::Shape {
                    op: OP,
                    detail: format!("positions must be [{tokens}] (one per token), found {:?}", p.shape()),
                });
            }
            tensors.push(p);
        }
    }
    match common_backend(OP, &tensors)? {
        Backend::Cpu => {
            let pos: Vec<u32> = match positions {
                RopePositions::Range { offset } => (0..tokens as u32).map(|t| offset + t).collect(),
                RopePositions::Tensor(p) => cpu::read_u32(p),
            };
            let mut v = cpu::read_f32(x);
            rope_cpu(&mut v, heads, table, &pos);
            cpu::write_f32(out, &v);
            Ok(())
        }
        Backend::Gpu(ctx) => {
            let xb = x.gpu_buffer().expect("gpu tensor");
            ctx.check_binding(OP, xb.size())?;
            let in_place = x.same_storage(out);
            let vec = if path == Path::Words { None } else { vec_plan(x.dtype(), cfg) };
            let (pos_buf, pos_mode, pos_offset) = match positions {
                RopePositions::Range { offset } => (table.tensor(), 0.0, offset),
                RopePositions::Tensor(p) => (p, 1.0, 0),
            };
            let constants = [("DTYPE", x.dtype().wgsl_code()), ("LAYOUT", cfg.layout.code()), ("POSITIONS", pos_mode)];
            let raw = |t: &Tensor| t.gpu_buffer().expect("gpu tensor").raw().clone();
            let (xr, tr, pr) = (raw(x), raw(table.tensor()), raw(pos_buf));
            let mut params = Params {
                heads: to_u32(OP, "heads", heads)?,
                half: to_u32(OP, "rot_dim", cfg.half())?,
                table_stride: to_u32(OP, "rot_dim", table.stride)?,
                pos_offset,
                attn_scale: cfg.attention_scaling,
                ..Params::default()
            };
            let per_word = if x.dtype() == DType::F32 { 1 } else { 2 };
            let rows = tokens * heads;
            if let Some(plan) = vec {
                let row_slots = head_dim / per_word / 4;
                let rot_slots = cfg.rot_dim / per_word / 4;
                let pass_units = if in_place { 0 } else { row_slots - rot_slots };
                let units = plan.rot_units.max(pass_units);
                let hpt = heads_per_thread(rows * units, heads);
                let head_groups = heads.div_ceil(hpt);
                params.n_threads = to_u32(OP, "elements", tokens * head_groups * units)?;
                params.units = to_u32(OP, "head_dim", units)?;
                params.head_groups = to_u32(OP, "heads", head_groups)?;
                params.heads_per_thread = hpt as u32;
                params.row_slots = to_u32(OP, "head_dim", row_slots)?;
                params.rot_slots = to_u32(OP, "rot_dim", rot_slots)?;
                params.rot_units = to_u32(OP, "rot_dim", plan.rot_units)?;
                params.half_slots = to_u32(OP, "rot_dim", plan.half_slots)?;
                params.pass_units = to_u32(OP, "head_dim", pass_units)?;
                // Past one grid row of workgroups, threads loop over units (no 2-D grid needed).
                let cap = if path == Path::Strided { 2 } else { MAX_WORKGROUPS_PER_DIM };
                let groups = params.n_threads.div_ceil(WORKGROUP).min(cap);
                params.grid_threads = groups * WORKGROUP;
                let workgroups = Workgroups::Linear(groups);
                if in_place {
                    ctx.dispatch(Dispatch {
                        kernel: &ROPE,
                        entry: "rope_vec_inplace",
                        constants: &constants,
                        params: Some(bytemuck::bytes_of(&params)),
                        buffers: &[&xr, &tr, &pr],
                        workgroups,
                    })
                } else {
                    ctx.dispatch(Dispatch {
                        kernel: &ROPE,
                        entry: "rope_vec",
                        constants: &constants,
                        params: Some(bytemuck::bytes_of(&params)),
                        buffers: &[&xr, &tr, &pr, &raw(out)],
                        workgroups,
                    })
                }
            } else {
                let row_words = head_dim / per_word;
                params.n_threads = to_u32(OP, "elements", rows * row_words)?;
                params.units = params.n_threads; // unused by rope_words
                params.head_groups = params.heads;
                params.heads_per_thread = 1;
                params.row_slots = to_u32(OP, "head_dim", row_words)?;
                params.rot_slots = to_u32(OP, "rot_dim", cfg.rot_dim / per_word)?;
                // The word path reads partners across the row, so in place it writes a scratch copy first.
                let scratch =
                    if in_place { Some(Tensor::uninit(&x.backend(), OP, x.shape(), x.dtype())?) } else { None };
                let dst = raw(scratch.as_ref().unwrap_or(out));
                ctx.dispatch(Dispatch {
                    kernel: &ROPE,
                    entry: "rope_words",
                    constants: &constants,
                    params: Some(bytemuck::bytes_of(&params)),
                    buffers: &[&xr, &tr, &pr, &dst],
                    workgroups: Workgroups::Linear(params.n_threads.div_ceil(WORKGROUP)),
                })?;
                if scratch.is_some() {
                    ctx.copy_buffer(&dst, 0, &xr, 0, x.size_bytes() as u64)?;
                }
                Ok(())
            }
        }
    }
}

/// The vec4 path's unit geometry, when the shape allows it: rows start on a vec4, and a unit's pairs
/// fill whole vec4s (see `kernels/rope.wgsl`).
struct VecPlan {
    rot_units: usize,
    half_slots: usize,
}

fn vec_plan(dtype: DType, cfg: &RopeConfig) -> Option<VecPlan> {
    let f32 = dtype == DType::F32;
    let elems_per_vec = if f32 { 4 } else { 8 };
    let half = cfg.half();
    if !cfg.head_dim.is_multiple_of(elems_per_vec) {
        return None;
    }
    match (f32, cfg.layout) {
        // A unit: one vec4 (4 or 8 pairs) from each half.
        (_, RopeLayout::HalfSplit) if half.is_multiple_of(elems_per_vec) => {
            Some(VecPlan { rot_units: half / elems_per_vec, half_slots: half / elems_per_vec })
        }
        // A unit: 8 consecutive f32 (two vec4s) or 8 consecutive 16-bit values (one vec4), 4 pairs.
        (_, RopeLayout::Interleaved) if cfg.rot_dim.is_multiple_of(8) => {
            Some(VecPlan { rot_units: cfg.rot_dim / 8, half_slots: 0 })
        }
        _ => None,
    }
}

/// Heads one thread of the vec4 path rotates with the same cos/sin. Measured on an H100 (Vulkan,
/// [tokens, 32, 128] f32): at 256 MiB (2^22 units) 1, 2 and 4 heads run within 2 % of each other; at 1 GiB
/// (2^24 units) one head per thread took 1.07–1.29 ms, two 0.74–0.86 ms, four 0.66–0.72 ms.
fn heads_per_thread(units: usize, heads: usize) -> usize {
    let hpt = if units >= 1 << 23 {
        4
    } else if units >= 1 << 20 {
        2
    } else {
        1
    };
    hpt.min(heads)
}

/// Rotates v [tokens, heads, head_dim] (f32) in place; cos/sin in f64 once per (token, frequency).
fn rope_cpu(v: &mut [f32], heads: usize, table: &RopeTable, positions: &[u32]) {
    let cfg = &table.config;
    let (hd, half, scale) = (cfg.head_dim, cfg.half(), cfg.attention_scaling as f64);
    v.par_chunks_mut(heads * hd).zip(positions.par_iter()).for_each(|(token, &pos)| {
        let (cos, sin): (Vec<f32>, Vec<f32>) = table
            .inv_freq
            .iter()
            .map(|&f| {
                let (s, c) = (pos as f64 * f).sin_cos();
                ((c * scale) as f32, (s * scale) as f32)
            })
            .unzip();
        for row in token.chunks_mut(hd) {
            for i in 0..half {
                let (a, b) = cfg.layout.pair(i, half);
                let (xa, xb) = (row[a], row[b]);
                row[a] = xa * cos[i] - xb * sin[i];
                row[b] = xb * cos[i] + xa * sin[i];
            }
        }
    });
}

/// The f64 reference: x [tokens, heads, head_dim] rotated with `inv_freq` at `positions`.
pub fn reference(
    x: &[f32],
    heads: usize,
    layout: RopeLayout,
    head_dim: usize,
    inv_freq: &[f64],
    attention_scaling: f64,
    positions: &[u32],
) -> Vec<f64> {
    let half = inv_freq.len();
    let mut out: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for (t, &pos) in positions.iter().enumerate() {
        for h in 0..heads {
            let row = &mut out[(t * heads + h) * head_dim..][..head_dim];
            for (i, &f) in inv_freq.iter().enumerate() {
                let (s, c) = (pos as f64 * f).sin_cos();
                let (a, b) = layout.pair(i, half);
                let (xa, xb) = (row[a], row[b]);
                row[a] = attention_scaling * (xa * c - xb * s);
                row[b] = attention_scaling * (xb * c + xa * s);
            }
        }
    }
    out
}

/// Bench op names of this family.
pub const BENCH_OPS: &[&str] = &["rope"];

/// A bench case's RoPE table on each backend it runs on, each copied from the CPU's on first use.
pub(crate) struct TablesPerBackend(Mutex<Vec<RopeTable>>);

impl TablesPerBackend {
    pub(crate) fn new(cpu_table: RopeTable) -> TablesPerBackend {
        TablesPerBackend(Mutex::new(vec![cpu_table]))
    }

    /// `f` of the table on `backend`.
    pub(crate) fn with<R>(&self, backend: &Backend, f: impl FnOnce(&RopeTable) -> Result<R>) -> Result<R> {
        let mut tables = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let k = match tables.iter().position(|t| t.backend() == *backend) {
            Some(k) => k,
            None => {
                let t = tables[0].to_backend(backend)?;
                tables.push(t);
                tables.len() - 1
            }
        };
        f(&tables[k])
    }
}

/// [tokens, 32, 128] f32, HalfSplit, theta 500000, about `bytes` bytes moved (read + write).
pub fn bench_case(op: &str, bytes: u64) -> Option<Result<crate::bench::BenchCase>> {
    use crate::bench::{BenchCase, random_tensor};
    use crate::testing::Tolerance;

    if op != "rope" {
        return None;
    }
    let build = || -> Result<BenchCase> {
        let (heads, head_dim, dtype) = (32usize, 128usize, DType::F32);
        let tokens = (bytes as usize / (heads * head_dim * 8)).max(1);
        let offset = 1000u32;
        let x = random_tensor(11, &[tokens, heads, head_dim], dtype, -4.0, 4.0)?;
        let config = RopeConfig::new(head_dim, 500_000.0);
        let cpu_table = RopeTable::new(&Backend::Cpu, config)?;
        let inv_freq = cpu_table.inv_freq().to_vec();
        let tables = TablesPerBackend::new(cpu_table);
        Ok(BenchCase {
            op: "rope",
            dtype,
            shape: format!("[{tokens}, {heads}, {head_dim}]"),
            bytes: 8 * (tokens * heads * head_dim) as u64,
            flops: 0,
            tolerance: Tolerance::for_dtype(dtype).scaled(2.0),
            inputs: vec![x],
            run: Box::new(move |i| {
                tables.with(&i[0].backend(), |table| rope(&i[0], table, RopePositions::Range { offset }))
            }),
            reference: Box::new(move |i| {
                let positions: Vec<u32> = (0..tokens as u32).map(|t| offset + t).collect();
                let x = cpu::read_f32(&i[0]);
                Ok(reference(&x, heads, RopeLayout::HalfSplit, head_dim, &inv_freq, 1.0, &positions))
            }),
        })
    };
    Some(build())
}

/// The fused Q/K/V epilogues' 16-bit caches against the two ops': the same values to f32 rounding, which
/// may round one unit apart (f16 2^-11, bf16 2^-8 relative).
#[cfg(test)]
pub(crate) fn cache_rounding_tolerance(cache: DType) -> crate::testing::Tolerance {
    let rel = if cache == DType::BF16 { 8e-3 } else { 1e-3 };
    crate::testing::Tolerance { atol: 2.0 * rel, rtol: rel }
}

/// The KV cache dtypes the fused Q/K/V epilogues write, for tests.
#[cfg(test)]
pub(crate) const CACHE_DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

/// Test helper for the fused Q/K/V GEMV epilogues (ops/gemv.rs, ops/qmatmul.rs): the fused op's Q output
/// and caches against those of the two ops it replaces.
#[cfg(test)]
pub(crate) fn assert_epilogue_matches(
    what: &str,
    got: [&Tensor; 3],
    want: [&Tensor; 3],
    tol: crate::testing::Tolerance,
) {
    let f64s = |t: &Tensor| t.to_f32_vec().unwrap().into_iter().map(f64::from).collect::<Vec<_>>();
    for ((name, g), w) in ["q", "k cache", "v cache"].into_iter().zip(got).zip(want) {
        crate::testing::assert_close(&format!("{what}: {name}"), &g.to_f32_vec().unwrap(), &f64s(w), tol);
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod layout_tests {
    #[test]
    fn params_match_the_wgsl_struct() {
        let size = crate::testing::wgsl_struct_size(&super::ROPE, "Params");
        assert_eq!(size as usize, std::mem::size_of::<super::Params>());
    }
}
