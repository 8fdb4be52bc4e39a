//! Attention over a KV cache: flash-decoding for one step (`sdpa_decode`) and tiled prefill
//! (`flash_attention`), with GQA, a soft cap (Gemma 2), a sliding window (Mistral, Gemma 2) and causal
//! masking.
//!
//! Layouts: Q `[tokens, n_heads, head_dim]` f32; K and V `[capacity, n_kv_heads, head_dim]` in f32, f16
//! or bf16, of which rows `0..kv_len` are read; the output `[tokens, n_heads, head_dim]` f32. Query head
//! `h` uses KV head `h / (n_heads / n_kv_heads)`. A query at position `pos` sees key `k` when
//! `k <= pos` (if causal) and `k > pos - window` (if a window is set); scores are
//! `cap · tanh(scale · q·k / cap)` with a soft cap, `scale · q·k` without. A query that sees no key
//! gets zeros.
//!
//! GPU: `sdpa_decode` is flash-decoding: the visible keys are cut into splits read by separate
//! workgroups (each K/V row is read once per KV head: all query heads of a group share it), each
//! writing a partial softmax, and a second pass merges the splits; a short context (one split) is one
//! pass that writes the output itself. Where the adapter has subgroups of
//! at least 8 lanes (NVIDIA, AMD, Apple, lavapipe) the main pass is `attention_subgroup.wgsl` (K/V rows
//! straight into registers, dot products reduced with subgroup shuffles); otherwise `attention.wgsl`
//! stages K/V tiles in workgroup memory. `flash_attention` tiles queries × keys in workgroup memory with
//! an online softmax and never writes the scores out; where the adapter has 16×16 f16 cooperative
//! matrices with 32-lane subgroups and head_dim is a multiple of 16 up to 128, it runs on them instead
//! (`attention_coop.wgsl`: Q, K, V and the probabilities rounded to f16, one pass whose reference max
//! moves only when the scores pass it by far; a subgroup's own rows synchronised by subgroup barriers on
//! NVIDIA, by workgroup barriers elsewhere).
//! The CPU implementation is plain Rust over rayon and serves as the CPU backend's attention.

use rayon::prelude::*;

use super::qmatmul::{GemvInput, QuantizedX};
use super::{common_backend, gpu_buffer, require_dtype, require_float, require_non_empty, to_u32};
use crate::backend::Backend;
use crate::cpu::{self, Floats, Strided};
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::gpu::{Dispatch, GpuContext, Workgroups};
use crate::quant::QuantTensor;
use crate::tensor::Tensor;

crate::kernel_source!(ATTENTION, "attention", ["xquant", "attention_kv", "attention"]);
crate::kernel_source!(ATTENTION_SUBGROUP, "attention_subgroup", ["xquant", "attention_kv", "attention_subgroup"]);
crate::kernel_source!(
    ATTENTION_COOP,
    "attention_coop",
    ["xquant", "attention_kv", "attention", "attention_coop", "attention_coop_sync_workgroup"]
);
crate::kernel_source!(
    ATTENTION_COOP_SUBGROUP_SYNC,
    "attention_coop_subgroup_sync",
    ["xquant", "attention_kv", "attention", "attention_coop", "attention_coop_sync_subgroup"]
);

/// Flash attention on cooperative matrices rounds Q (scaled), K, V and the probabilities to f16.
pub const FLASH_F16_TOLERANCE: crate::testing::Tolerance = crate::testing::Tolerance { atol: 3e-3, rtol: 1e-2 };

/// Decode: a split covers at least this many keys (fewer splits for short contexts).
const MIN_KEYS_PER_SPLIT: usize = 64;
/// Decode: up to this many keys one split per row, written out directly: one launch instead of two (a
/// launch that waits on the one before costs an H200 ~4.3 µs through Vulkan). Measured there (32 heads,
/// 8 KV heads × 128, f16, 128-thread workgroups): 256 keys 17.2 µs in one launch against 18.8 split; at
/// 512 keys splitting won (18.5 against 28.1). On the H100, in Llama-3-8B q4_k decode with one split forced
/// (256 threads; `benchmarks/results/2026-12-07i-h100/`): 512–640 keys +0.6 %, 768–896 −1.6 %, 1024–1152
/// −3.0 %; too small a gain, and only on one card, to move this.
const UNSPLIT_MAX_KEYS: usize = 256;
/// Decode with one split: the widest workgroup the subgroup kernel takes. One workgroup per KV head
/// walks all keys in steps that are chains of latencies, so more threads mean fewer steps; but the
/// kernel keeps ~150 registers a thread, and wider workgroups spill them. Measured on the H200 (f32
/// cache, 32/8 heads × 128, `benchmarks/results/2026-12-02d-h200/wide_kern.txt`): 256 keys 14.7 µs with
/// 256 threads against 18.4 with 128, 19.5 with 512 and 44.4 with 1024.
const UNSPLIT_MAX_THREADS: usize = 256;
/// Decode, subgroup kernel with several splits: lane groups (one K/V row each) a workgroup. Measured on the
/// H200 (`benchmarks/results/2026-12-04c-h200/km/`, f32, head_dim 128, 16 lanes a row): 256 threads 40.8 µs
/// at 16384 keys against 56.0 with 128; with 8 lanes 128 threads beat 256 (`2026-12-04b-h200/sweep/`).
const SPLIT_LANE_GROUPS: usize = 16;
/// Decode: the number of workgroups (splits × KV heads × row blocks) to aim for: about two a
/// multiprocessor of an H100/H200 (132), one wave at the subgroup kernel's occupancy. A sweep on the H200
/// (`benchmarks/results/2026-12-04b-h200/sweep/`, 32 heads / 8 KV heads × 128, 8 lanes a row, 128
/// threads, two rows a workgroup): 16 splits (256 workgroups) against 32 (512): 32768 keys f16 60.1
/// against 63.1 µs, 16384 keys f32 41.9 against 47.9, 4096 keys f16 13.7 against 15.6.
const TARGET_WORKGROUPS: usize = 256;
/// Decode, subgroup kernel: the most query rows a workgroup (kernels/attention_subgroup.wgsl takes one or
/// two). Two rows a workgroup and twice the workgroups beat four on the H200 (Llama-3-8B bf16 decode 196.0 and 196.3 tok/s against 194.6 and
/// 194.8, alternating; one row loses, 193.4: `benchmarks/results/2026-12-02d-h200/rb_ab.txt`).
const SUBGROUP_MAX_ROWS: usize = 2;
/// Decode: the most splits of one row (kernels/attention.wgsl `r_w`).
const MAX_SPLITS: usize = 1024;
/// The largest head dimension the kernels take.
pub const MAX_HEAD_DIM: usize = 256;

/// How scores are formed and masked.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionOptions {
    /// Multiplies q·k (usually 1/√head_dim).
    pub scale: f32,
    /// Gemma 2's soft cap: scores become cap·tanh(scores/cap) before masking and softmax.
    pub softcap: Option<f32>,
    /// Sliding window: a query at position p sees keys in (p − window, p].
    pub window: Option<usize>,
    /// A query at position p sees no key after p.
    pub causal: bool,
}

impl AttentionOptions {
    /// Causal attention with scale 1/√head_dim, no soft cap and no window.
    pub fn new(head_dim: usize) -> Self {
        AttentionOptions { scale: 1.0 / (head_dim.max(1) as f32).sqrt(), softcap: None, window: None, causal: true }
    }

    fn validate(&self, op: &'static str) -> Result<()> {
        let arg = |name: &'static str, value: String, reason: &str| {
            Err(KernelError::Argument { op, name, value, reason: reason.into() })
        };
        if !self.scale.is_finite() {
            return arg("scale", self.scale.to_string(), "must be finite");
        }
        if let Some(cap) = self.softcap
            && !(cap.is_finite() && cap > 0.0)
        {
            return arg("softcap", cap.to_string(), "must be a positive finite number");
        }
        if self.window == Some(0) {
            return arg("window", "0".into(), "must be at least 1 (None for no window)");
        }
        Ok(())
    }

    /// The visible key range [lo, hi) of a query at `pos` among keys 0..kv_len.
    fn key_range(&self, pos: i64, kv_len: usize) -> (usize, usize) {
        let hi = if self.causal { (pos + 1).clamp(0, kv_len as i64) } else { kv_len as i64 };
        let lo = self.window.map_or(0, |w| (pos - w as i64 + 1).max(0));
        (lo as usize, hi.max(lo) as usize)
    }
}

/// Shapes shared by both ops.
#[derive(Clone, Copy, Debug)]
struct Dims {
    tokens: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
    /// Rows of K and V.
    capacity: usize,
}

impl Dims {
    fn group(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }
}

fn shape_err(op: &'static str, detail: String) -> KernelError {
    KernelError::Shape { op, detail }
}

/// Checks shapes, dtypes, devices and options; returns the dimensions.
fn validate(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    opts: &AttentionOptions,
    out: &Tensor,
) -> Result<Dims> {
    opts.validate(op)?;
    require_dtype(op, q, DType::F32)?;
    require_float(op, k)?;
    if v.dtype() != k.dtype() {
        return Err(KernelError::DType { op, expected: format!("{} (the dtype of k)", k.dtype()), found: v.dtype() });
    }
    require_dtype(op, out, DType::F32)?;
    let [tokens, n_heads, head_dim] = *q.shape() else {
        return Err(shape_err(op, format!("q must be [tokens, n_heads, head_dim], got {:?}", q.shape())));
    };
    let [capacity, n_kv_heads, kv_dim] = *k.shape() else {
        return Err(shape_err(op, format!("k must be [kv rows, n_kv_heads, head_dim], got {:?}", k.shape())));
    };
    if v.shape() != k.shape() {
        return Err(shape_err(op, format!("v {:?} must have the shape of k {:?}", v.shape(), k.shape())));
    }
    require_non_empty(op, "q", q)?;
    require_non_empty(op, "k", k)?;
    if n_heads % n_kv_heads != 0 {
        return Err(shape_err(op, format!("n_heads {n_heads} is not a multiple of n_kv_heads {n_kv_heads}")));
    }
    if kv_dim != head_dim {
        return Err(shape_err(op, format!("head_dim mismatch: q has {head_dim}, k and v have {kv_dim}")));
    }
    if head_dim % 4 != 0 || head_dim > MAX_HEAD_DIM {
        return Err(KernelError::Argument {
            op,
            name: "head_dim",
            value: head_dim.to_string(),
            reason: format!("must be a multiple of 4 and at most {MAX_HEAD_DIM}"),
        });
    }
    if out.shape() != q.shape() {
        return Err(shape_err(op, format!("out {:?} must have the shape of q {:?}", out.shape(), q.shape())));
    }
    if out.same_storage(q) || out.same_storage(k) || out.same_storage(v) {
        return Err(KernelError::Argument {
            op,
            name: "out",
            value: "an input".into(),
            reason: "the output must be a separate tensor".into(),
        });
    }
    to_u32(op, "q elements", q.numel())?;
    to_u32(op, "k elements", k.numel())?;
    Ok(Dims { tokens, n_heads, n_kv_heads, head_dim, capacity })
}

fn check_kv_len(op: &'static str, kv_len: usize, capacity: usize) -> Result<()> {
    if kv_len == 0 || kv_len > capacity {
        return Err(KernelError::Argument {
            op,
            name: "kv_len",
            value: kv_len.to_string(),
            reason: format!("must be in 1..={capacity} (the rows of the k and v tensors)"),
        });
    }
    Ok(())
}

// ---- public API ---------------------------------------------------------------------------------

/// One decode step: `q` `[tokens, n_heads, head_dim]` (usually 1 token) against rows `0..kv_len` of the
/// caches `[capacity, n_kv_heads, head_dim]`; token `t` is at position `kv_len − tokens + t`.
pub fn sdpa_decode(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    kv_len: usize,
    opts: AttentionOptions,
) -> Result<Tensor> {
    let out = Tensor::uninit(&q.backend(), "sdpa_decode", q.shape(), DType::F32)?;
    sdpa_decode_into(q, k_cache, v_cache, kv_len, opts, &out)?;
    Ok(out)
}

/// [`sdpa_decode`] into a preallocated `out` (`[tokens, n_heads, head_dim]` f32).
pub fn sdpa_decode_into(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    kv_len: usize,
    opts: AttentionOptions,
    out: &Tensor,
) -> Result<()> {
    decode_impl(q, k_cache, v_cache, KvLen::Host(kv_len), opts, out, true, None).map(drop)
}

/// [`sdpa_decode`] whose output `[tokens, n_heads · head_dim]` is the input of the quantized GEMV `next`
/// (the O projection). On the GPU, with head_dim a multiple of 32, the pass that writes the output (the
/// merge pass of a split step, or the subgroup kernel of an unsplit one) also writes it quantized for
/// `next`, which saves the launch that would quantize it.
pub fn sdpa_decode_for(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    kv_len: usize,
    opts: AttentionOptions,
    next: &QuantTensor,
) -> Result<GemvInput> {
    let out = Tensor::uninit(&q.backend(), "sdpa_decode", q.shape(), DType::F32)?;
    let (rows, cols) = match q.shape() {
        &[t, h, d] => (t, h * d),
        s => return Err(shape_err("sdpa_decode", format!("q {s:?} must be [tokens, n_heads, head_dim]"))),
    };
    let x = out.reshape(&[rows, cols])?;
    GemvInput::produced_for(&x, next, |qout| {
        decode_impl(q, k_cache, v_cache, KvLen::Host(kv_len), opts, &out, true, qout)
    })
}

/// [`sdpa_decode`] with kv_len read from element 0 of the u32 tensor `kv_len` on the device, so one
/// recorded step can be replayed as the context grows. The split count is chosen for the cache
/// capacity. The kernel clamps kv_len to the capacity, and kv_len = 0 (or fewer keys than a token's
/// position needs) gives zeros; the CPU backend does the same.
pub fn sdpa_decode_device_len(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    kv_len: &Tensor,
    opts: AttentionOptions,
) -> Result<Tensor> {
    let out = Tensor::uninit(&q.backend(), "sdpa_decode", q.shape(), DType::F32)?;
    sdpa_decode_device_len_into(q, k_cache, v_cache, kv_len, opts, &out)?;
    Ok(out)
}

/// [`sdpa_decode_device_len`] into a preallocated `out`.
pub fn sdpa_decode_device_len_into(
    q: &Tensor,
    k_cache: &Tensor,
    v_cache: &Tensor,
    kv_len: &Tensor,
    opts: AttentionOptions,
    out: &Tensor,
) -> Result<()> {
    decode_impl(q, k_cache, v_cache, KvLen::Device(kv_len), opts, out, true, None).map(drop)
}

/// Both decode entry points; `subgroups` false forces the workgroup-memory kernel (tests). `qout`: where
/// the output also goes quantized for the next GEMV, if the launches allow it (returns whether it did).
#[allow(clippy::too_many_arguments)]
fn decode_impl(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kv_len: KvLen<'_>,
    opts: AttentionOptions,
    out: &Tensor,
    subgroups: bool,
    qout: Option<QuantizedX<'_>>,
) -> Result<bool> {
    const OP: &str = "sdpa_decode";
    let d = validate(OP, q, k, v, &opts, out)?;
    to_u32(OP, "capacity", d.capacity)?;
    let mut tensors = vec![q, k, v, out];
    match kv_len {
        KvLen::Host(n) => {
            check_kv_len(OP, n, d.capacity)?;
            if d.tokens > n {
                return Err(KernelError::Argument {
                    op: OP,
                    name: "tokens",
                    value: d.tokens.to_string(),
                    reason: format!("a step of {} tokens needs kv_len >= tokens, got kv_len {n}", d.tokens),
                });
            }
        }
        KvLen::Device(t) => {
            require_dtype(OP, t, DType::U32)?;
            require_non_empty(OP, "kv_len", t)?;
            tensors.push(t);
        }
    }
    match common_backend(OP, &tensors)? {
        Backend::Cpu => {
            let n = match kv_len {
                KvLen::Host(n) => n,
                KvLen::Device(t) => (cpu::read_u32(t).first().copied().unwrap_or(0) as usize).min(d.capacity),
            };
            decode_cpu(q, k, v, n, &d, &opts, out).map(|()| false)
        }
        Backend::Gpu(ctx) => decode_gpu(&ctx, q, k, v, kv_len, &d, &opts, out, subgroups, qout),
    }
}

/// Prefill: `q` `[L, n_heads, head_dim]`, query `i` at position `q_offset + i`, against keys
/// `0..kv_len` of `k`, `v` `[rows >= kv_len, n_kv_heads, head_dim]` (a whole cache or just this
/// chunk's keys).
pub fn flash_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kv_len: usize,
    q_offset: usize,
    opts: AttentionOptions,
) -> Result<Tensor> {
    let out = Tensor::uninit(&q.backend(), "flash_attention", q.shape(), DType::F32)?;
    flash_attention_into(q, k, v, kv_len, q_offset, opts, &out)?;
    Ok(out)
}

/// [`flash_attention`] into a preallocated `out` (`[L, n_heads, head_dim]` f32).
pub fn flash_attention_into(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kv_len: usize,
    q_offset: usize,
    opts: AttentionOptions,
    out: &Tensor,
) -> Result<()> {
    const OP: &str = "flash_attention";
    let d = validate(OP, q, k, v, &opts, out)?;
    check_kv_len(OP, kv_len, d.capacity)?;
    to_u32(OP, "q_offset + tokens", q_offset + d.tokens)?;
    match common_backend(OP, &[q, k, v, out])? {
        Backend::Cpu => {
            let o = {
                // The caches stay locked for reading until the output is computed, not while it is written.
                let (kw, vw) = (cpu_words(k), cpu_words(v));
                let (kv, vv) = (Floats::of(k, &kw), Floats::of(v, &vw));
                attention_cpu(&cpu::read_f32(q), &kv, &vv, &d, kv_len, q_offset as i64, &opts)
            };
            cpu::write_f32(out, &o);
            Ok(())
        }
        Backend::Gpu(ctx) => flash_gpu(&ctx, q, k, v, kv_len, q_offset, &d, &opts, out),
    }
}

// ---- CPU ------------------------------------------------------------------------------------------

/// The host words of a CPU tensor, locked for reading.
fn cpu_words(t: &Tensor) -> std::sync::RwLockReadGuard<'_, Vec<u32>> {
    t.cpu_words().expect("CPU kernels get CPU tensors")
}

/// Rows `0..rows` of a CPU K or V tensor (its `words`) as f32, for the f64 reference.
fn kv_rows_f32(t: &Tensor, words: &[u32], rows: usize) -> Vec<f32> {
    let view = Floats::of(t, words);
    let row = t.shape()[1..].iter().product::<usize>();
    let (mut out, mut buf) = (Vec::with_capacity(rows * row), vec![0f32; row]);
    for j in 0..rows {
        out.extend_from_slice(view.widened(j * row, row, &mut buf));
    }
    out
}

fn decode_cpu(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kv_len: usize,
    d: &Dims,
    opts: &AttentionOptions,
    out: &Tensor,
) -> Result<()> {
    let o = {
        // The caches stay locked for reading until the output is computed, not while it is written.
        let (kw, vw) = (cpu_words(k), cpu_words(v));
        let (kv, vv) = (Floats::of(k, &kw), Floats::of(v, &vw));
        attention_cpu(&cpu::read_f32(q), &kv, &vv, d, kv_len, kv_len as i64 - d.tokens as i64, opts)
    };
    cpu::write_f32(out, &o);
    Ok(())
}

#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Attention of every query row (token `t` at position `pos0 + t`) over keys `0..kv_len` of `k`, `v`
/// (`[capacity, n_kv_heads, head_dim]`), in f32. A rayon task takes a token's whole GQA group, whose heads
/// then share each K and V row (widened once from a 16-bit cache), except in a one-token decode over an
/// f32 cache, where it takes one query head. Measured on the 2-core machine (SmolLM2, 9 heads on 3 KV
/// heads): decoding at context 512, a task per group widened 25 % faster than a task per head (51.6
/// against 41.1 tok/s), but with an f32 cache it left too few tasks for the cores (47.2 against 55.7);
/// prefill has tasks enough (tokens × KV heads), and there a task per group prefilled 512 tokens at 455–462
/// against 350–414 tok/s, 1024 at 304–347 against 297–307 (`benchmarks/results/2026-12-04e-cpu/`).
/// A 16-bit cache is widened as it is read, in registers where the CPU has AVX2 and F16C (widening the
/// whole cache each step cost SmolLM2's decode a quarter of its speed, most of it in the allocation's page
/// faults). With tasks of one head the 16-bit cache's decode measured within noise of tasks of a group
/// after that (2026-12-05, `benchmarks/results/2026-12-05c-cpu/attention_blocked.txt`).
/// With fewer tasks than two per thread (SmolLM2 decoding: three), each task's keys are cut into runs
/// ([`key_parts`]) whose softmax states are merged after: medians of 5, context 512 101.9 → 112.6 tok/s,
/// 1500 70.0–70.8 → 80.6–84.9, 64 (too short to cut) unchanged
/// (`benchmarks/results/2026-12-05e-cpu/attention_key_parts.txt`).
fn attention_cpu(
    q: &[f32],
    k: &Floats,
    v: &Floats,
    d: &Dims,
    kv_len: usize,
    pos0: i64,
    opts: &AttentionOptions,
) -> Vec<f32> {
    if d.tokens >= GEMM_ATTENTION_TOKENS {
        if let (Floats::F32(kf), Floats::F32(vf)) = (k, v) {
            return attention_cpu_gemm(q, kf, vf, d, kv_len, pos0, opts);
        }
        // A 16-bit cache's rows 0..kv_len widened once, a cost that all the query rows share.
        let n = kv_len * d.n_kv_heads * d.head_dim;
        return attention_cpu_gemm(q, &k.prefix_f32(n), &v.prefix_f32(n), d, kv_len, pos0, opts);
    }
    let (hd, n_heads, n_kv, group) = (d.head_dim, d.n_heads, d.n_kv_heads, d.group());
    let per_task = if matches!(k, Floats::F32(_)) && d.tokens == 1 { 1 } else { group };
    let tasks = d.tokens * n_heads / per_task;
    // A task's heads h0 .. h0 + per_task of token t are one run of rows of `out` (and of `q`), over its
    // keys cut into `parts` runs.
    let task = |i: usize, part: usize, parts: usize, o: &mut [f32]| -> Vec<RowState> {
        let first = i * per_task;
        let (t, kvh) = (first / n_heads, first % n_heads / group);
        let (lo, hi) = opts.key_range(pos0 + t as i64, kv_len);
        let per = (hi.saturating_sub(lo)).div_ceil(parts);
        let keys = (lo + part * per).min(hi)..(lo + (part + 1) * per).min(hi);
        if keys.is_empty() {
            return vec![RowState::EMPTY; per_task];
        }
        let qs = &q[first * hd..][..per_task * hd];
        Task { qs, k, v, kvh, n_kv, hd, keys, opts }.run(o)
    };
    let mut out = vec![0f32; d.tokens * n_heads * hd];
    let parts = key_parts(tasks, kv_len);
    if parts == 1 {
        out.par_chunks_mut(per_task * hd).enumerate().for_each(|(i, o)| {
            let states = task(i, 0, 1, o);
            normalize(o, &states);
        });
        return out;
    }
    // Each (task, part) into its own rows, then the parts' states merged.
    let mut partial = vec![0f32; parts * out.len()];
    let states: Vec<Vec<RowState>> =
        partial.par_chunks_mut(per_task * hd).enumerate().map(|(j, o)| task(j / parts, j % parts, parts, o)).collect();
    for (i, o) in out.chunks_exact_mut(per_task * hd).enumerate() {
        for (h, oh) in o.chunks_exact_mut(hd).enumerate() {
            let of_part =
                |p: usize| (states[i * parts + p][h], &partial[((i * parts + p) * per_task + h) * hd..][..hd]);
            let m = (0..parts).map(|p| of_part(p).0.m).fold(f32::NEG_INFINITY, f32::max);
            let mut l = 0f32;
            for p in 0..parts {
                let (st, op) = of_part(p);
                // A part that saw a NaN score has l = NaN, and must make the row NaN.
                if st.l != 0.0 {
                    let w = (st.m - m).exp();
                    l += st.l * w;
                    oh.iter_mut().zip(op).for_each(|(a, b)| *a += w * b);
                }
            }
            normalize(oh, &[RowState { m, l }]);
        }
    }
    out
}

/// Keys a decode task takes at the least before [`key_parts`] cuts them: below that a part's fixed costs
/// outweigh the balance it buys.
const MIN_PART_KEYS: usize = 128;

/// Into how many runs of keys each of `tasks` attention tasks is cut, so that every thread has about two
/// tasks: decoding has one task per KV head (a group sharing its widened K and V rows), and SmolLM2's
/// three left one of two cores idle for a third of the attention.
fn key_parts(tasks: usize, kv_len: usize) -> usize {
    let wanted = (2 * rayon::current_num_threads()).div_ceil(tasks.max(1));
    wanted.min(kv_len / MIN_PART_KEYS).max(1)
}

/// A query row's softmax state over some keys: the largest score `m` and the sum `l` of exp(score − m);
/// its output row holds Σ exp(score − m)·v, not yet divided by `l`.
#[derive(Clone, Copy, Debug)]
struct RowState {
    m: f32,
    l: f32,
}

impl RowState {
    /// No keys: weight 0 in a merge, a zero output row.
    const EMPTY: RowState = RowState { m: f32::NEG_INFINITY, l: 0.0 };
}

/// Output rows (one per state) divided by their sums; rows without keys stay zero.
fn normalize(o: &mut [f32], states: &[RowState]) {
    for (oh, st) in o.chunks_exact_mut(o.len() / states.len()).zip(states) {
        let inv = if st.l > 0.0 { 1.0 / st.l } else { 0.0 };
        oh.iter_mut().for_each(|e| *e *= inv);
    }
}

/// Query rows from which [`attention_cpu`] over an f32 cache runs as matrix products.
const GEMM_ATTENTION_TOKENS: usize = 16;

/// Query rows a task of [`attention_cpu_gemm`] takes: its scores are at most this many rows by the
/// context.
const GEMM_ATTENTION_BLOCK: usize = 256;

/// [`attention_cpu`] for many query rows over an f32 cache, as two matrix products (the `gemm` crate) per
/// query head and block of rows: S = scale·Q·Kᵀ over the keys any row of the block sees, each row
/// soft-capped, masked to its own keys and normalized, then O = P·V. The caches are read in place at
/// their strides. SmolLM2's prefill on the 2-core machine, against the row-by-row form: 512 tokens 1.1×,
/// 1024 1.4×, 2048 1.5× as fast (`benchmarks/results/2026-12-04e-cpu/prefill_gemm.txt`).
fn attention_cpu_gemm(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    d: &Dims,
    kv_len: usize,
    pos0: i64,
    opts: &AttentionOptions,
) -> Vec<f32> {
    let (hd, n_heads, n_kv, group, tokens) = (d.head_dim, d.n_heads, d.n_kv_heads, d.group(), d.tokens);
    let (q_row, kv_row) = (n_heads * hd, n_kv * hd);
    let blocks = tokens.div_ceil(GEMM_ATTENTION_BLOCK);
    let parts: Vec<(usize, usize, Vec<f32>)> = (0..n_heads * blocks)
        .into_par_iter()
        .map(|task| {
            let (h, t0) = (task / blocks, task % blocks * GEMM_ATTENTION_BLOCK);
            let rows = GEMM_ATTENTION_BLOCK.min(tokens - t0);
            let kvh = h / group;
            let ranges: Vec<(usize, usize)> =
                (t0..t0 + rows).map(|t| opts.key_range(pos0 + t as i64, kv_len)).collect();
            // The keys that some row sees (a row that sees none has an empty range past them).
            let seen = ranges.iter().filter(|r| r.0 < r.1);
            let lo = seen.clone().map(|r| r.0).min().unwrap_or(0);
            let hi = seen.map(|r| r.1).max().unwrap_or(0);
            let mut o = vec![0f32; rows * hd];
            if hi <= lo {
                return (h, t0, o);
            }
            let keys = hi - lo;
            let qb = &q[(t0 * n_heads + h) * hd..][..(rows - 1) * q_row + hd];
            let kb = &k[(lo * n_kv + kvh) * hd..][..(keys - 1) * kv_row + hd];
            let vb = &v[(lo * n_kv + kvh) * hd..][..(keys - 1) * kv_row + hd];
            let mut p = vec![0f32; rows * keys];
            // SAFETY: p is rows·keys elements at row stride `keys`; qb holds `rows` rows of hd at stride
            // q_row and kb `keys` rows of hd at stride kv_row (their lengths checked by the slicing above),
            // read as Kᵀ [hd, keys]; p overlaps neither.
            unsafe {
                cpu::gemm_f32(
                    (rows, keys, hd),
                    Strided { ptr: p.as_mut_ptr(), col_stride: 1, row_stride: keys as isize },
                    false,
                    Strided { ptr: qb.as_ptr(), col_stride: 1, row_stride: q_row as isize },
                    Strided { ptr: kb.as_ptr(), col_stride: kv_row as isize, row_stride: 1 },
                    opts.scale,
                    gemm::Parallelism::None,
                );
            }
            for (pr, &(rlo, rhi)) in p.chunks_exact_mut(keys).zip(&ranges) {
                if rlo >= rhi {
                    pr.fill(0.0);
                    continue;
                }
                let (a, b) = (rlo - lo, rhi - lo);
                let seen = &mut pr[a..b];
                if let Some(c) = opts.softcap {
                    seen.iter_mut().for_each(|s| *s = c * (*s / c).tanh());
                }
                let m = seen.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut l = 0f32;
                for s in seen.iter_mut() {
                    *s = (*s - m).exp();
                    l += *s;
                }
                seen.iter_mut().for_each(|s| *s /= l);
                pr[..a].fill(0.0);
                pr[b..].fill(0.0);
            }
            // SAFETY: o is rows·hd elements at row stride hd; p is rows·keys at stride keys; vb holds
            // `keys` rows of hd at stride kv_row; o overlaps neither.
            unsafe {
                cpu::gemm_f32(
                    (rows, hd, keys),
                    Strided { ptr: o.as_mut_ptr(), col_stride: 1, row_stride: hd as isize },
                    false,
                    Strided { ptr: p.as_ptr(), col_stride: 1, row_stride: keys as isize },
                    Strided { ptr: vb.as_ptr(), col_stride: 1, row_stride: kv_row as isize },
                    1.0,
                    gemm::Parallelism::None,
                );
            }
            (h, t0, o)
        })
        .collect();
    let mut out = vec![0f32; tokens * q_row];
    for (h, t0, o) in parts {
        for (r, orow) in o.chunks_exact(hd).enumerate() {
            out[((t0 + r) * n_heads + h) * hd..][..hd].copy_from_slice(orow);
        }
    }
    out
}

/// One task of [`attention_cpu`]: query heads `qs` (one after another) over keys `keys` of KV head `kvh`,
/// their outputs written to `o`.
/// K and V rows [`Task`] asks the CPU to fetch ahead of the one it reads: a head's rows are a stride of
/// n_kv_heads rows apart in the cache, which the hardware prefetcher follows late.
const ROWS_AHEAD: usize = 8;

struct Task<'a> {
    qs: &'a [f32],
    k: &'a Floats<'a>,
    v: &'a Floats<'a>,
    kvh: usize,
    n_kv: usize,
    hd: usize,
    keys: std::ops::Range<usize>,
    opts: &'a AttentionOptions,
}

impl Task<'_> {
    /// Adds the attention of the task's query rows into `o` (zeros; one row of head_dim per query row),
    /// not yet divided by the rows' sums, and returns each row's state.
    fn run(&self, o: &mut [f32]) -> Vec<RowState> {
        #[cfg(target_arch = "x86_64")]
        if crate::cpu::has_avx2_fma_f16c() && self.hd.is_multiple_of(8) {
            // SAFETY: AVX2, FMA and F16C were found on this CPU, and head_dim is a multiple of 8.
            return unsafe { self.run_avx2(o) };
        }
        self.run_portable(o)
    }

    /// Where key j's row starts in the caches.
    fn row(&self, j: usize) -> usize {
        (j * self.n_kv + self.kvh) * self.hd
    }

    /// A query row's scaled, soft-capped score from its dot product with a key.
    fn score(&self, dot: f32) -> f32 {
        let s = self.opts.scale * dot;
        self.opts.softcap.map_or(s, |c| c * (s / c).tanh())
    }

    fn run_portable(&self, o: &mut [f32]) -> Vec<RowState> {
        let Task { qs, k, v, hd, ref keys, .. } = *self;
        let (lo, n) = (keys.start, keys.len());
        let mut buf = vec![0f32; hd];
        // Scores [query rows, keys].
        let mut p = vec![0f32; qs.len() / hd * n];
        for j in keys.clone() {
            k.prefetch(self.row(j + ROWS_AHEAD), hd);
            let kr = k.widened(self.row(j), hd, &mut buf);
            for (h, qr) in qs.chunks_exact(hd).enumerate() {
                p[h * n + j - lo] = self.score(dot(qr, kr));
            }
        }
        let states = softmax_unnormalized(&mut p, n);
        for j in keys.clone() {
            v.prefetch(self.row(j + ROWS_AHEAD), hd);
            let vr = v.widened(self.row(j), hd, &mut buf);
            for (h, oh) in o.chunks_exact_mut(hd).enumerate() {
                let pj = p[h * n + j - lo];
                for (oe, &ve) in oh.iter_mut().zip(vr) {
                    *oe += pj * ve;
                }
            }
        }
        states
    }

    /// [`Self::run_portable`] four keys at a time: each query row's dot products with four K rows as four
    /// independent FMA chains (one horizontal reduction for the four), and each output chunk loaded and
    /// stored once for four V rows; 16-bit rows are widened in registers, not through a buffer. SmolLM2's
    /// decode on the 2-core machine with an f16 cache, medians of 5 (BENCHMARKS.md): context 1500 54.8 →
    /// 64.0 tok/s, 512 89.0 → 99.1; with an f32 cache, which is read at the memory's pace, within noise.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C, and head_dim be a multiple of 8.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn run_avx2(&self, o: &mut [f32]) -> Vec<RowState> {
        use std::arch::x86_64::*;

        use crate::cpu::load8_avx2 as load8;
        let Task { qs, k, v, hd, ref keys, .. } = *self;
        let (lo, hi, n) = (keys.start, keys.end, keys.len());
        // Block j0's four rows, the last block's missing ones replaced by its last (weighted 0).
        let rows = |j0: usize| -> [usize; 4] { std::array::from_fn(|i| self.row((j0 + i).min(hi - 1))) };
        let mut p = vec![0f32; qs.len() / hd * n];
        for j0 in (lo..hi).step_by(4) {
            (0..4).for_each(|i| k.prefetch(self.row(j0 + ROWS_AHEAD + i), hd));
            let r = rows(j0);
            for (h, q) in qs.chunks_exact(hd).enumerate() {
                let mut acc = [_mm256_setzero_ps(); 4];
                for c in (0..hd).step_by(8) {
                    let qc = load8(Floats::F32(q), c);
                    for (a, &ri) in acc.iter_mut().zip(&r) {
                        *a = _mm256_fmadd_ps(qc, load8(*k, ri + c), *a);
                    }
                }
                for (i, &d) in crate::cpu::hsum256x4(acc).iter().enumerate().take(hi - j0) {
                    p[h * n + j0 - lo + i] = self.score(d);
                }
            }
        }
        let states = softmax_unnormalized(&mut p, n);
        for j0 in (lo..hi).step_by(4) {
            (0..4).for_each(|i| v.prefetch(self.row(j0 + ROWS_AHEAD + i), hd));
            let r = rows(j0);
            for (h, oh) in o.chunks_exact_mut(hd).enumerate() {
                let pj: [__m256; 4] =
                    std::array::from_fn(|i| _mm256_set1_ps(if j0 + i < hi { p[h * n + j0 - lo + i] } else { 0.0 }));
                for c in (0..hd).step_by(8) {
                    let mut acc = load8(Floats::F32(oh), c);
                    for (&w, &ri) in pj.iter().zip(&r) {
                        acc = _mm256_fmadd_ps(w, load8(*v, ri + c), acc);
                    }
                    let out: &mut [f32; 8] = (&mut oh[c..c + 8]).try_into().expect("8 values");
                    // SAFETY: `out` is 32 writable bytes; `storeu` has no alignment requirement.
                    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), acc) };
                }
            }
        }
        states
    }
}

/// Each row of `keys` scores in `p` replaced by exp(score − the row's max); returns each row's state.
fn softmax_unnormalized(p: &mut [f32], keys: usize) -> Vec<RowState> {
    p.chunks_exact_mut(keys)
        .map(|ph| {
            let m = ph.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut l = 0f32;
            for s in ph.iter_mut() {
                *s = (*s - m).exp();
                l += *s;
            }
            RowState { m, l }
        })
        .collect()
}

// ---- GPU ------------------------------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DecodeParams {
    kv_len: u32,
    capacity: u32,
    n_heads: u32,
    n_kv_heads: u32,
    group: u32,
    tokens: u32,
    rows: u32,
    n_splits: u32,
    scale: f32,
    softcap: f32,
    window: u32,
    causal: u32,
    qout_units: u32,
    _pad: [u32; 3],
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct FlashParams {
    q_len: u32,
    kv_len: u32,
    n_heads: u32,
    n_kv_heads: u32,
    group: u32,
    q_offset: u32,
    n_qblocks: u32,
    causal: u32,
    scale: f32,
    softcap: f32,
    window: u32,
    _pad: u32,
}

enum KvLen<'a> {
    Host(usize),
    Device(&'a Tensor),
}

/// Which decode kernel runs, and its shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DecodeKernel {
    /// attention_subgroup.wgsl: `lanes` lanes per K/V row, reduced with subgroup shuffles; `threads` a
    /// workgroup.
    Subgroup { lanes: usize, threads: usize },
    /// attention.wgsl: K/V tiles of `tile_keys` keys staged in workgroup memory.
    Workgroup { tile_keys: usize },
}

/// How a decode step is cut into workgroups.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DecodePlan {
    kernel: DecodeKernel,
    /// Query rows (tokens × group) per workgroup.
    rows_per_block: usize,
    row_blocks: usize,
    n_splits: usize,
}

/// Lanes per K/V row for the subgroup kernel, or None when the adapter's subgroups are too small (a lane
/// holds at most 16 elements). Where the subgroups allow, a lane holds 32 bytes of a row: 16 elements of a
/// 16-bit cache, 8 of an f32 one, so that a prefetching step's raw words fit the registers. On the H200
/// (head_dim 128, `benchmarks/results/2026-12-04b-h200/sweep/`, `2026-12-04c-h200/km/`): f16 at 32768
/// keys 60.1 µs with 8 lanes against 60.8 with 16; f32 at 16384 keys 40.8 µs with 16 lanes against 45.1
/// with 8 (both with 16 lane groups a workgroup, [`SPLIT_LANE_GROUPS`]).
fn subgroup_lanes(head_dim: usize, dtype: DType, min_subgroup: usize) -> Option<usize> {
    let fewest = head_dim.div_ceil(16).next_power_of_two().clamp(8, 32);
    let per_lane = if dtype == DType::F32 { 8 } else { 16 };
    let wanted = head_dim.div_ceil(per_lane).next_power_of_two().clamp(8, 32);
    (fewest <= min_subgroup).then(|| wanted.min(min_subgroup).max(fewest))
}

/// The subgroup kernel's widest workgroup (a power of two, 128..=`cap`) whose states fit its
/// workgroup memory (kernels/attention_subgroup.wgsl `rows_per_round`): after the shuffle merge one state
/// per max(lanes, subgroup) threads, at most 128 of them and 1024 head_dim/4 slices.
fn subgroup_threads(head_dim: usize, lanes: usize, min_subgroup: usize, cap: usize) -> usize {
    let span = lanes.max(min_subgroup);
    [1024, 512, 256].into_iter().find(|&t| t <= cap && states_fit(t, head_dim, span)).unwrap_or(128)
}

/// Whether the states a workgroup of `threads` keeps after its subgroup merge (one per `span` threads)
/// fit the subgroup kernel's workgroup memory: at most 128 of them and 1024 head_dim/4 slices.
fn states_fit(threads: usize, head_dim: usize, span: usize) -> bool {
    threads / span <= 128 && (threads / span) * (head_dim / 4) <= 1024
}

/// Whether the subgroup decode kernel loads a step's K/V words before folding the step before (its
/// PREFETCH): twice the registers for raw words, which a 16-bit cache can spare. On the H200 (32 heads /
/// 8 KV heads × 128, `benchmarks/results/2026-12-04c-h200/km/`) it made f16 at 32768 keys 50.7 µs
/// against 58.5 (68 % of copy against 60 %), and f32 at 16384 keys 102.8 against 45.1 (as if its registers
/// spilled).
fn decode_prefetch(dtype: DType) -> bool {
    dtype != DType::F32
}

/// `max_keys`: the most keys a step may read (kv_len, or the capacity when kv_len lives on the
/// device). `min_subgroup`: the adapter's smallest subgroup size (0 for none); `max_threads` its
/// largest workgroup.
fn decode_plan(
    d: &Dims,
    dtype: DType,
    max_keys: usize,
    opts: &AttentionOptions,
    min_subgroup: usize,
    max_threads: usize,
) -> DecodePlan {
    let hd = d.head_dim;
    let rows = d.tokens * d.group();
    // With a window only the last window + tokens − 1 keys can be visible.
    let span = opts.window.map_or(max_keys, |w| max_keys.min(w + d.tokens - 1));
    let (kernel, rows_per_block) = match subgroup_lanes(hd, dtype, min_subgroup) {
        Some(lanes) => {
            let cap =
                if span <= UNSPLIT_MAX_KEYS { max_threads.min(UNSPLIT_MAX_THREADS) } else { SPLIT_LANE_GROUPS * lanes };
            let threads = subgroup_threads(hd, lanes, min_subgroup, cap);
            (DecodeKernel::Subgroup { lanes, threads }, rows.min(SUBGROUP_MAX_ROWS))
        }
        None => {
            let tile_keys = (2048 / hd).min(64);
            (DecodeKernel::Workgroup { tile_keys }, rows.min(2048 / hd).min(1024 / tile_keys))
        }
    };
    let rows_per_block = rows_per_block.max(1);
    let row_blocks = rows.div_ceil(rows_per_block);
    let by_length = if span <= UNSPLIT_MAX_KEYS { 1 } else { span.div_ceil(MIN_KEYS_PER_SPLIT) };
    let by_occupancy = (TARGET_WORKGROUPS / (d.n_kv_heads * row_blocks)).max(1);
    DecodePlan { kernel, rows_per_block, row_blocks, n_splits: by_length.min(by_occupancy).clamp(1, MAX_SPLITS) }
}

/// The environment variable that forces the subgroup decode kernel's shape, `LANES,THREADS,ROWS,SPLITS`
/// (each 0 for the automatic choice), instead of the one planned from the shape: for benchmark sweeps.
pub const DECODE_TUNE_VAR: &str = "TORCHLESS_DECODE_TUNE";

/// A decode shape forced by [`DECODE_TUNE_VAR`]; 0 keeps the plan's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DecodeTune {
    lanes: usize,
    threads: usize,
    rows: usize,
    splits: usize,
}

impl DecodeTune {
    fn parse(v: &str) -> Option<DecodeTune> {
        let f: Vec<usize> = v.split(',').map(|x| x.trim().parse().ok()).collect::<Option<_>>()?;
        match f[..] {
            [lanes, threads, rows, splits] => Some(DecodeTune { lanes, threads, rows, splits }),
            _ => None,
        }
    }

    /// `plan` with the forced fields, or an error naming the field the adapter or the kernel cannot take.
    fn apply(self, plan: DecodePlan, d: &Dims, min_subgroup: usize, max_threads: usize) -> Result<DecodePlan> {
        let bad = |reason: String| KernelError::Argument {
            op: "sdpa_decode",
            name: DECODE_TUNE_VAR,
            value: format!("{},{},{},{}", self.lanes, self.threads, self.rows, self.splits),
            reason,
        };
        let DecodeKernel::Subgroup { lanes, threads } = plan.kernel else {
            return Err(bad("only the subgroup kernel takes a forced shape, and this adapter has none".into()));
        };
        let pick = |forced: usize, auto: usize| if forced == 0 { auto } else { forced };
        let (lanes, threads) = (pick(self.lanes, lanes), pick(self.threads, threads));
        let hd = d.head_dim;
        if ![8, 16, 32].contains(&lanes) || lanes > min_subgroup || hd > 16 * lanes {
            return Err(bad(format!(
                "LANES {lanes} must be 8, 16 or 32, at most the subgroup size {min_subgroup}, with head_dim {hd} \
                 at most 16 · LANES"
            )));
        }
        let span = lanes.max(min_subgroup);
        if !threads.is_power_of_two() || threads < span || threads > max_threads || !states_fit(threads, hd, span) {
            return Err(bad(format!(
                "THREADS {threads} must be a power of two from {span} to {max_threads} whose states fit the \
                 kernel's workgroup memory"
            )));
        }
        let all_rows = d.tokens * d.group();
        let rows = pick(self.rows, plan.rows_per_block);
        if rows > all_rows.min(SUBGROUP_MAX_ROWS) {
            return Err(bad(format!("ROWS {rows} must be at most {}", all_rows.min(SUBGROUP_MAX_ROWS))));
        }
        let n_splits = pick(self.splits, plan.n_splits);
        if n_splits > MAX_SPLITS {
            return Err(bad(format!("SPLITS {n_splits} must be at most {MAX_SPLITS}")));
        }
        Ok(DecodePlan {
            kernel: DecodeKernel::Subgroup { lanes, threads },
            rows_per_block: rows,
            row_blocks: all_rows.div_ceil(rows),
            n_splits,
        })
    }
}

fn env_decode_tune() -> Result<Option<DecodeTune>> {
    static TUNE: std::sync::OnceLock<std::result::Result<Option<DecodeTune>, String>> = std::sync::OnceLock::new();
    super::env_override(&TUNE, DECODE_TUNE_VAR, DecodeTune::parse).map_err(|value| KernelError::Argument {
        op: "sdpa_decode",
        name: DECODE_TUNE_VAR,
        value,
        reason: "must be LANES,THREADS,ROWS,SPLITS (integers, 0 for the automatic choice) or unset".into(),
    })
}

#[allow(clippy::too_many_arguments)]
fn decode_gpu(
    ctx: &std::sync::Arc<GpuContext>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kv_len: KvLen<'_>,
    d: &Dims,
    opts: &AttentionOptions,
    out: &Tensor,
    subgroups: bool,
    qout: Option<QuantizedX<'_>>,
) -> Result<bool> {
    const OP: &str = "sdpa_decode";
    let max_keys = match kv_len {
        KvLen::Host(n) => n,
        KvLen::Device(_) => d.capacity,
    };
    let min_subgroup = if subgroups && ctx.has_subgroups() { ctx.info().subgroup_min_size as usize } else { 0 };
    let max_threads = ctx.limits().max_compute_invocations_per_workgroup as usize;
    let plan = decode_plan(d, k.dtype(), max_keys, opts, min_subgroup, max_threads);
    let plan = match env_decode_tune()? {
        Some(t) => t.apply(plan, d, min_subgroup, max_threads)?,
        None => plan,
    };
    let hd4 = d.head_dim / 4;
    // One split: the main pass writes `out` itself.
    let direct = plan.n_splits == 1;
    let part = if direct {
        out.clone()
    } else {
        let part_vec4 = d.tokens * d.n_heads * plan.n_splits * (hd4 + 1);
        Tensor::uninit(&q.backend(), "sdpa_decode partials", &[part_vec4 * 4], DType::F32)?
    };
    for t in [q, k, v, out, &part] {
        ctx.check_binding(OP, t.size_bytes() as u64)?;
    }
    // The pass that writes the output (the main one with one split, else the merge) also writes it
    // quantized where asked: whole blocks of 32 of one head, and for the main pass the subgroup kernel.
    let qout = qout.filter(|_| d.head_dim.is_multiple_of(32));
    let main_emits = direct && qout.is_some() && matches!(plan.kernel, DecodeKernel::Subgroup { .. });
    let (layout, units) = qout.as_ref().map_or((0, 0), |x| (x.layout, x.units));
    let params = DecodeParams {
        kv_len: match kv_len {
            KvLen::Host(n) => to_u32(OP, "kv_len", n)?,
            KvLen::Device(_) => 0,
        },
        capacity: to_u32(OP, "capacity", d.capacity)?,
        n_heads: d.n_heads as u32,
        n_kv_heads: d.n_kv_heads as u32,
        group: d.group() as u32,
        tokens: d.tokens as u32,
        rows: (d.tokens * d.group()) as u32,
        n_splits: plan.n_splits as u32,
        scale: opts.scale,
        softcap: opts.softcap.unwrap_or(0.0),
        // A window wider than every position is no window (and keeps the kernel's sums in range).
        window: opts.window.filter(|&w| w <= d.capacity).unwrap_or(0) as u32,
        causal: opts.causal as u32,
        qout_units: units,
        _pad: [0; 3],
    };
    // Without QOUT its bindings (declared either way) get the output, never written through them.
    let (qxb, qsb) = match &qout {
        Some(x) => (gpu_buffer(x.xq), gpu_buffer(x.xs)),
        None => (gpu_buffer(out), gpu_buffer(out)),
    };
    // The kernels take different overrides; each arm fills its own array.
    let (subgroup_constants, workgroup_constants);
    let (kernel, entry, constants, grid): (_, _, &[(&str, f64)], _) = match plan.kernel {
        DecodeKernel::Subgroup { lanes, threads } => {
            subgroup_constants = [
                ("DTYPE", k.dtype().wgsl_code()),
                ("HD", d.head_dim as f64),
                ("LPR", lanes as f64),
                ("RB", plan.rows_per_block as f64),
                ("DIRECT", f64::from(u8::from(direct))),
                ("WG", threads as f64),
                ("SG", min_subgroup as f64),
                ("QOUT", f64::from(u8::from(main_emits))),
                ("QOUT_LAYOUT", f64::from(layout)),
                ("QCAP", if main_emits { 1024.0 } else { 1.0 }),
                ("PREFETCH", f64::from(u8::from(decode_prefetch(k.dtype())))),
            ];
            (
                &ATTENTION_SUBGROUP,
                if matches!(kv_len, KvLen::Host(_)) { "sdpa_decode_sg" } else { "sdpa_decode_dev_sg" },
                &subgroup_constants,
                [plan.row_blocks as u32, plan.n_splits as u32, d.n_kv_heads as u32],
            )
        }
        DecodeKernel::Workgroup { tile_keys } => {
            workgroup_constants = [
                ("DTYPE", k.dtype().wgsl_code()),
                ("HD", d.head_dim as f64),
                ("TK", tile_keys as f64),
                ("RB", plan.rows_per_block as f64),
                ("DIRECT", f64::from(u8::from(direct))),
            ];
            (
                &ATTENTION,
                if matches!(kv_len, KvLen::Host(_)) { "sdpa_decode" } else { "sdpa_decode_dev" },
                &workgroup_constants,
                [plan.n_splits as u32, d.n_kv_heads as u32, plan.row_blocks as u32],
            )
        }
    };
    let (qb, kb, vb, pb) = (gpu_buffer(q), gpu_buffer(k), gpu_buffer(v), gpu_buffer(&part));
    let mut buffers = vec![qb, kb, vb, pb];
    if kernel.name == ATTENTION_SUBGROUP.name {
        buffers.extend([qxb, qsb]);
    }
    if let KvLen::Device(t) = kv_len {
        buffers.push(gpu_buffer(t));
    }
    ctx.dispatch(Dispatch {
        kernel,
        entry,
        constants,
        params: Some(bytemuck::bytes_of(&params)),
        buffers: &buffers,
        workgroups: Workgroups::Grid(grid),
    })?;
    if direct {
        return Ok(main_emits);
    }
    ctx.dispatch(Dispatch {
        kernel: &ATTENTION,
        entry: "sdpa_decode_reduce",
        constants: &[
            ("HD", d.head_dim as f64),
            ("QOUT", f64::from(u8::from(qout.is_some()))),
            ("QOUT_LAYOUT", f64::from(layout)),
        ],
        params: Some(bytemuck::bytes_of(&params)),
        buffers: &[pb, gpu_buffer(out), qxb, qsb],
        workgroups: Workgroups::Linear((d.tokens * d.n_heads) as u32),
    })?;
    Ok(qout.is_some())
}

/// Query rows per flash workgroup: kernels/attention.wgsl's `f_bq` (64, 32 past head_dim 128) or
/// attention_coop.wgsl's `CQ` (128).
fn flash_block_rows(head_dim: usize, coop: bool) -> usize {
    match (coop, head_dim <= 128) {
        (true, _) => 128,
        (false, true) => 64,
        (false, false) => 32,
    }
}

/// Whether flash attention runs on cooperative matrices (attention_coop.wgsl): 16×16 f16 matrices with
/// 32-lane subgroups (8 of them a workgroup, one lane pair a query row), head_dim a multiple of 16 up to
/// 128, and room for its 46 KiB of workgroup memory.
pub fn flash_uses_coop(backend: &Backend, head_dim: usize) -> bool {
    matches!(backend, Backend::Gpu(ctx) if flash_coop_fits(ctx, head_dim))
}

/// PCI vendor id of NVIDIA.
const NVIDIA: u32 = 0x10de;

#[cfg(test)]
thread_local! {
    /// Tests: run the cooperative flash kernel with workgroup barriers even where subgroup ones serve.
    static TEST_FLASH_WORKGROUP_SYNC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the cooperative flash kernel orders each subgroup's own rows with subgroup barriers
/// (attention_coop_sync_subgroup.wgsl) rather than workgroup ones: only on NVIDIA, whose warp sync orders
/// shared memory (the SPIR-V naga emits does not promise it; that file says why). H100, 4k tokens: 117.7
/// against 108.3 TFLOP/s.
fn flash_coop_subgroup_sync(ctx: &GpuContext) -> bool {
    #[cfg(test)]
    if TEST_FLASH_WORKGROUP_SYNC.get() {
        return false;
    }
    ctx.features().contains(wgpu::Features::SUBGROUP_BARRIER) && ctx.info().vendor == NVIDIA
}

fn flash_coop_fits(ctx: &GpuContext, head_dim: usize) -> bool {
    matches!(super::gemm::cooperative_variant(ctx), Some(super::gemm::CoopVariant::F16x16 { subgroup: 32 }))
        && head_dim.is_multiple_of(16)
        && head_dim <= 128
        && ctx.limits().max_compute_workgroup_storage_size >= 46 * 1024
}

/// The tolerance of [`flash_attention`] on `backend` against the f64 reference: f32's, or f16's where it
/// runs on cooperative matrices.
pub fn flash_tolerance(backend: &Backend, head_dim: usize) -> crate::testing::Tolerance {
    if flash_uses_coop(backend, head_dim) {
        FLASH_F16_TOLERANCE
    } else {
        crate::testing::Tolerance { atol: 2e-5, rtol: 5e-4 }
    }
}

#[allow(clippy::too_many_arguments)]
fn flash_gpu(
    ctx: &std::sync::Arc<GpuContext>,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kv_len: usize,
    q_offset: usize,
    d: &Dims,
    opts: &AttentionOptions,
    out: &Tensor,
) -> Result<()> {
    const OP: &str = "flash_attention";
    for t in [q, k, v, out] {
        ctx.check_binding(OP, t.size_bytes() as u64)?;
    }
    let coop = flash_coop_fits(ctx, d.head_dim);
    let n_qblocks = d.tokens.div_ceil(flash_block_rows(d.head_dim, coop));
    let max_grid = ctx.limits().max_compute_workgroups_per_dimension as usize;
    if n_qblocks > max_grid || d.n_heads > max_grid {
        return Err(KernelError::Argument {
            op: OP,
            name: "tokens",
            value: d.tokens.to_string(),
            reason: format!("{n_qblocks} query blocks × {} heads exceed the grid limit {max_grid}", d.n_heads),
        });
    }
    let params = FlashParams {
        q_len: d.tokens as u32,
        kv_len: kv_len as u32,
        n_heads: d.n_heads as u32,
        n_kv_heads: d.n_kv_heads as u32,
        group: d.group() as u32,
        q_offset: q_offset as u32,
        n_qblocks: n_qblocks as u32,
        causal: opts.causal as u32,
        scale: opts.scale,
        softcap: opts.softcap.unwrap_or(0.0),
        window: opts.window.filter(|&w| w <= q_offset + d.tokens).unwrap_or(0) as u32,
        _pad: 0,
    };
    // The cooperative kernel stages K and V as f16: other dtypes are rounded once, here, rather than in
    // every workgroup that stages a tile (each K and V tile is staged by every query block of its heads).
    let rounded;
    let (k, v) = if coop && k.dtype() != DType::F16 && kv_len > 0 {
        let n = kv_len * d.n_kv_heads * d.head_dim;
        rounded = (super::gemm::f16_copy_prefix(ctx, k, n)?, super::gemm::f16_copy_prefix(ctx, v, n)?);
        (&rounded.0, &rounded.1)
    } else {
        (k, v)
    };
    let constants = [("DTYPE", k.dtype().wgsl_code()), ("HD", d.head_dim as f64)];
    let (kernel, entry) = if !coop {
        (&ATTENTION, "flash")
    } else if flash_coop_subgroup_sync(ctx) {
        (&ATTENTION_COOP_SUBGROUP_SYNC, "flash_coop")
    } else {
        (&ATTENTION_COOP, "flash_coop")
    };
    ctx.dispatch(Dispatch {
        kernel,
        entry,
        constants: &constants,
        params: Some(bytemuck::bytes_of(&params)),
        buffers: &[gpu_buffer(q), gpu_buffer(k), gpu_buffer(v), gpu_buffer(out)],
        workgroups: Workgroups::Grid([n_qblocks as u32, d.n_heads as u32, 1]),
    })
}

// ---- bench ----------------------------------------------------------------------------------------

/// Bench op names of this family.
/// `sdpa_decode` reads an f16 cache (the reference shape of BENCHMARKS.md); `sdpa_decode_f32` the f32
/// cache the engine keeps.
pub const BENCH_OPS: &[&str] = &["sdpa_decode", "sdpa_decode_f32", "flash_attention"];

/// `sdpa_decode`: 32 heads, 8 KV heads, head_dim 128, one token, an f16 cache whose K + V bytes are
/// about `bytes` (kv_len = bytes / 4096: 16 MiB → 4k, 128 MiB → 32k); `sdpa_decode_f32` the same with an
/// f32 cache (kv_len = bytes / 8192: 32 MiB → 4k, 256 MiB → 32k). `flash_attention`: the same
/// heads, f32 Q/K/V, causal, L = S from `bytes` (inputs + output), at most 4096.
pub fn bench_case(op: &str, bytes: u64) -> Option<Result<crate::bench::BenchCase>> {
    use crate::bench::{BenchCase, random_tensor};
    use crate::testing::Tolerance;

    const H: usize = 32;
    const HKV: usize = 8;
    const HD: usize = 128;
    let opts = AttentionOptions::new(HD);
    let tolerance = Tolerance { atol: 2e-5, rtol: 5e-4 };
    let build = |op: &str| -> Result<BenchCase> {
        if op.starts_with("sdpa_decode") {
            let dtype = if op == "sdpa_decode_f32" { DType::F32 } else { DType::F16 };
            let kv_len = ((bytes / (2 * HKV * HD * dtype.size_bytes()) as u64) as usize).max(1);
            let q = random_tensor(11, &[1, H, HD], DType::F32, -2.0, 2.0)?;
            let k = random_tensor(12, &[kv_len, HKV, HD], dtype, -2.0, 2.0)?;
            let v = random_tensor(13, &[kv_len, HKV, HD], dtype, -1.0, 1.0)?;
            let kv_bytes = 2 * (kv_len * HKV * HD * dtype.size_bytes()) as u64;
            Ok(BenchCase {
                op: if dtype == DType::F32 { "sdpa_decode_f32" } else { "sdpa_decode" },
                dtype,
                shape: format!("kv {kv_len}x{HKV}x{HD} q {H}"),
                bytes: kv_bytes + 2 * (H * HD * 4) as u64,
                flops: (4 * H * kv_len * HD) as u64,
                tolerance,
                inputs: vec![q, k, v],
                run: Box::new(move |i| sdpa_decode(&i[0], &i[1], &i[2], kv_len, opts)),
                reference: Box::new(move |i| Ok(reference_of(&i[0], &i[1], &i[2], kv_len, kv_len as i64 - 1, &opts))),
            })
        } else {
            let dtype = DType::F32;
            let per_token = (2 * H * HD + 2 * HKV * HD) * 4;
            let n = ((bytes as usize) / per_token).clamp(1, 4096);
            let q = random_tensor(21, &[n, H, HD], dtype, -2.0, 2.0)?;
            let k = random_tensor(22, &[n, HKV, HD], dtype, -2.0, 2.0)?;
            let v = random_tensor(23, &[n, HKV, HD], dtype, -1.0, 1.0)?;
            Ok(BenchCase {
                op: "flash_attention",
                dtype,
                shape: format!("L=S={n} {H}/{HKV}x{HD} causal"),
                bytes: (n * per_token) as u64,
                flops: (2 * n * n * HD * H) as u64,
                // Valid on every path: the cooperative one rounds its inputs to f16.
                tolerance: FLASH_F16_TOLERANCE,
                inputs: vec![q, k, v],
                run: Box::new(move |i| flash_attention(&i[0], &i[1], &i[2], n, 0, opts)),
                reference: Box::new(move |i| Ok(reference_of(&i[0], &i[1], &i[2], n, 0, &opts))),
            })
        }
    };
    BENCH_OPS.contains(&op).then(|| build(op))
}

/// The f64 reference of CPU tensors: token t of `q` at position `pos0 + t` over keys `0..kv_len`.
fn reference_of(q: &Tensor, k: &Tensor, v: &Tensor, kv_len: usize, pos0: i64, opts: &AttentionOptions) -> Vec<f64> {
    let [tokens, n_heads, head_dim] = *q.shape() else { return Vec::new() };
    let n_kv_heads = k.shape()[1];
    let d = Dims { tokens, n_heads, n_kv_heads, head_dim, capacity: k.shape()[0] };
    let (kw, vw) = (cpu_words(k), cpu_words(v));
    reference(&cpu::read_f32(q), &kv_rows_f32(k, &kw, kv_len), &kv_rows_f32(v, &vw, kv_len), &d, kv_len, pos0, opts)
}

/// Attention in f64, two passes per row.
fn reference(q: &[f32], k: &[f32], v: &[f32], d: &Dims, kv_len: usize, pos0: i64, opts: &AttentionOptions) -> Vec<f64> {
    let (hd, n_heads, n_kv, group) = (d.head_dim, d.n_heads, d.n_kv_heads, d.group());
    let mut out = vec![0f64; d.tokens * n_heads * hd];
    out.par_chunks_mut(hd).enumerate().for_each(|(row, o)| {
        let (t, h) = (row / n_heads, row % n_heads);
        let kvh = h / group;
        let (lo, hi) = opts.key_range(pos0 + t as i64, kv_len);
        if lo >= hi {
            return;
        }
        let qr = &q[row * hd..(row + 1) * hd];
        let scores: Vec<f64> = (lo..hi)
            .map(|j| {
                let kr = &k[(j * n_kv + kvh) * hd..][..hd];
                let s = opts.scale as f64 * qr.iter().zip(kr).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>();
                opts.softcap.map_or(s, |c| c as f64 * (s / c as f64).tanh())
            })
            .collect();
        let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
        let l: f64 = w.iter().sum();
        for (j, &wj) in (lo..hi).zip(&w) {
            for (oe, &ve) in o.iter_mut().zip(&v[(j * n_kv + kvh) * hd..][..hd]) {
                *oe += wj * ve as f64;
            }
        }
        o.iter_mut().for_each(|e| *e /= l);
    });
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod layout_tests {
    #[test]
    fn params_match_the_wgsl_struct() {
        let size = crate::testing::wgsl_struct_size(&super::ATTENTION, "DecodeParams");
        assert_eq!(size as usize, std::mem::size_of::<super::DecodeParams>());
        let size = crate::testing::wgsl_struct_size(&super::ATTENTION, "FlashParams");
        assert_eq!(size as usize, std::mem::size_of::<super::FlashParams>());
    }

    /// Lavapipe cannot run the cooperative flash kernel; naga at least validates it here.
    #[test]
    fn the_cooperative_flash_kernel_validates() {
        for kernel in [&super::ATTENTION_COOP, &super::ATTENTION_COOP_SUBGROUP_SYNC] {
            assert!(crate::testing::wgsl_workgroup_bytes(kernel, "flash_coop") > 0, "{}", kernel.name);
        }
    }
}
