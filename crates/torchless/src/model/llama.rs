//! The Llama family (Llama, Mistral, Qwen2, Qwen3, Gemma 2, Phi-3): one forward pass with per-architecture
//! switches taken from [`Config`]. Activations are f32; weights stay in their stored dtype.
//!
//! Per layer:
//!   h = norm(x);  q, k, v = h·Wq, h·Wk, h·Wv (+ bias);  [q, k = headnorm(q), headnorm(k)];  rope(q, k)
//!   cache[pos..] = k, v;  a = attention(q, cache);  o = a·Wo;  x += \[post_norm\](o)
//!   h = norm(x);  x += \[post_norm\](down(act(h·Wgate) ⊙ h·Wup))
//! then logits = norm(x)·Wlm, [soft-capped].
//!
//! Up to [`gemv::MAX_BATCH`] tokens go through the GEMV kernels (decode), more through GEMM and flash
//! attention (prefill). Nothing is read back: the caller reads the logits or samples on the device.

use indicatif::{ProgressBar, ProgressStyle};
use torchless_kernels::ops::attention::{self, AttentionOptions};
use torchless_kernels::ops::elementwise::{self, Binary, Unary};
use torchless_kernels::ops::gemv::{self, GatedAct, GemvEpilogue, GemvPart, InputNorm};
use torchless_kernels::ops::norm::{self, RmsNormVariant};
use torchless_kernels::ops::qmatmul::{self, GemvInput, NextInput};
use torchless_kernels::ops::rope::{self, RopeConfig, RopeLayout, RopeScaling, RopeTable};
use torchless_kernels::{Backend, DType, Tensor};

use super::Logits;
use super::weights::{Linear, Source};
use super::{check_ids, logit_rows};
use crate::config::{Activation, Arch, Config, RopeScalingConfig};
use crate::error::{Error, Result};

/// One decoder layer's weights (q_dim = n_heads·head_dim, kv_dim = n_kv_heads·head_dim). Q and K rows are
/// in rotation-pair order (`model::weights::RopePairs`).
struct Layer {
    /// RMSNorm before attention: [dim].
    attn_norm: Tensor,
    /// [q_dim, dim]
    wq: Linear,
    /// [kv_dim, dim]
    wk: Linear,
    /// [kv_dim, dim]
    wv: Linear,
    /// Qwen2 (and `attention_bias`): [q_dim], [kv_dim], [kv_dim].
    bq: Option<Tensor>,
    bk: Option<Tensor>,
    bv: Option<Tensor>,
    /// Qwen3: RMSNorm of each head of q and k: [head_dim].
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    /// [dim, q_dim]
    wo: Linear,
    /// Gemma 2: RMSNorm of the attention output before the residual add: [dim].
    post_attn_norm: Option<Tensor>,
    /// RMSNorm before the MLP: [dim].
    mlp_norm: Tensor,
    /// [hidden_dim, dim]
    w_gate: Linear,
    /// [hidden_dim, dim]
    w_up: Linear,
    /// [dim, hidden_dim]
    w_down: Linear,
    /// Gemma 2: RMSNorm of the MLP output before the residual add: [dim].
    post_mlp_norm: Option<Tensor>,
}

pub struct Llama {
    pub config: Config,
    backend: Backend,
    /// [vocab, dim]
    embed: Linear,
    /// [vocab, dim]; `None` when tied to the embedding.
    lm_head: Option<Linear>,
    /// [dim]
    final_norm: Tensor,
    layers: Vec<Layer>,
    /// The rotation's inverse frequencies and the kernels' coefficient table ([8, rot_dim / 2 rounded up]).
    rope: RopeTable,
    /// The dtype of the KV caches that `new_state` makes.
    kv_dtype: DType,
}

/// The KV cache dtype a model starts with, on every backend: f16, as llama.cpp does. It halves the cache's
/// memory and the bytes attention reads a token. On a GPU the decode step's fused Q/K/V GEMV writes it at
/// no cost (Llama-3-8B on an H200 decodes as fast as with f32 at context 512 and faster beyond); the CPU's
/// attention widens its rows in registers (SmolLM2 on the 2-core machine decodes within noise of f32 at
/// context 64, 5 % faster at 512 and 22 % at 1500, and prefills as fast; BENCHMARKS.md).
pub const DEFAULT_KV_DTYPE: DType = DType::F16;

/// The KV cache of one sequence: per layer `[capacity, n_kv_heads, head_dim]`, f32, f16 or bf16
/// (`Llama::set_kv_dtype`).
pub struct State {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    capacity: usize,
}

impl State {
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Reads tensors by name, checking shapes, and splits fused ones (Phi-3) by rows.
pub(super) struct Loader<'a> {
    pub(super) weights: &'a Source<'a>,
    pub(super) backend: &'a Backend,
    pub(super) progress: ProgressBar,
}

impl Loader<'_> {
    pub(super) fn load(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self.weights.dense(self.backend, name, shape)?;
        self.progress.inc(t.size_bytes() as u64);
        Ok(t)
    }

    pub(super) fn optional(&self, name: &str, shape: &[usize]) -> Result<Option<Tensor>> {
        if self.weights.contains(name) { self.load(name, shape).map(Some) } else { Ok(None) }
    }

    fn linear(&self, name: &str, rows: usize, cols: usize) -> Result<Linear> {
        let w = self.weights.linear(self.backend, name, rows, cols)?;
        self.progress.inc(w.size_bytes() as u64);
        Ok(w)
    }

    fn optional_linear(&self, name: &str, rows: usize, cols: usize) -> Result<Option<Linear>> {
        if self.weights.contains(name) { self.linear(name, rows, cols).map(Some) } else { Ok(None) }
    }

    /// Splits `name` `[sum(rows), cols]` into consecutive row blocks, each uploaded on its own.
    fn split_rows(&self, name: &str, rows: &[usize], cols: usize) -> Result<Vec<Linear>> {
        let parts = self.weights.split_rows(self.backend, name, rows, cols)?;
        self.progress.inc(parts.iter().map(|p| p.size_bytes() as u64).sum());
        Ok(parts)
    }
}

pub(super) fn progress_bar(total: u64, visible: bool) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("loading {bar:40} {bytes}/{total_bytes} ({bytes_per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// The rope table for a config: partial rotation, frequency scaling, and pairs in the order the Q and K
/// rows were loaded in (`layout`).
fn rope_table(config: &Config, backend: &Backend, layout: RopeLayout) -> Result<RopeTable> {
    let scaling = match &config.rope_scaling {
        RopeScalingConfig::None => RopeScaling::None,
        RopeScalingConfig::Linear { factor } => RopeScaling::Linear { factor: *factor },
        RopeScalingConfig::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings } => {
            RopeScaling::Llama3 {
                factor: *factor,
                low_freq_factor: *low_freq_factor,
                high_freq_factor: *high_freq_factor,
                original_max_position_embeddings: u32::try_from(*original_max_position_embeddings).map_err(|_| {
                    Error::config("rope_scaling.original_max_position_embeddings", "does not fit in 32 bits")
                })?,
            }
        }
        RopeScalingConfig::Factors(f) => RopeScaling::Factors(f.clone()),
    };
    let cfg = RopeConfig::new(config.head_dim, config.rope_theta as f64)
        .with_rot_dim(config.rot_dim)
        .with_scaling(scaling)
        .with_layout(layout);
    Ok(RopeTable::new(backend, cfg)?)
}

impl Llama {
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn load(config: Config, weights: &Source<'_>, backend: &Backend, progress: bool) -> Result<Llama> {
        let c = &config;
        let (dim, hd, ffn) = (c.dim, c.head_dim, c.hidden_dim);
        let (q_dim, kv_dim) = (c.n_heads * hd, c.n_kv_heads * hd);
        let ld = Loader { weights, backend, progress: progress_bar(weights.total_bytes(), progress) };

        let embed = ld.linear("model.embed_tokens.weight", c.vocab_size, dim)?;
        let lm_head = if c.tie_embeddings { None } else { ld.optional_linear("lm_head.weight", c.vocab_size, dim)? };
        let final_norm = ld.load("model.norm.weight", &[dim])?;
        let mut layers = Vec::with_capacity(c.n_layers);
        for i in 0..c.n_layers {
            let p = format!("model.layers.{i}");
            let (wq, wk, wv) = if c.arch == Arch::Phi3 {
                let mut qkv =
                    ld.split_rows(&format!("{p}.self_attn.qkv_proj.weight"), &[q_dim, kv_dim, kv_dim], dim)?;
                let wv = qkv.pop().expect("three parts");
                let wk = qkv.pop().expect("three parts");
                (qkv.pop().expect("three parts"), wk, wv)
            } else {
                (
                    ld.linear(&format!("{p}.self_attn.q_proj.weight"), q_dim, dim)?,
                    ld.linear(&format!("{p}.self_attn.k_proj.weight"), kv_dim, dim)?,
                    ld.linear(&format!("{p}.self_attn.v_proj.weight"), kv_dim, dim)?,
                )
            };
            let (w_gate, w_up) = if c.arch == Arch::Phi3 {
                let mut gu = ld.split_rows(&format!("{p}.mlp.gate_up_proj.weight"), &[ffn, ffn], dim)?;
                let up = gu.pop().expect("two parts");
                (gu.pop().expect("two parts"), up)
            } else {
                (
                    ld.linear(&format!("{p}.mlp.gate_proj.weight"), ffn, dim)?,
                    ld.linear(&format!("{p}.mlp.up_proj.weight"), ffn, dim)?,
                )
            };
            let bias = |name: &str, n: usize| -> Result<Option<Tensor>> {
                if c.qkv_bias { ld.load(&format!("{p}.self_attn.{name}.bias"), &[n]).map(Some) } else { Ok(None) }
            };
            let head_norm = |name: &str| -> Result<Option<Tensor>> {
                if c.qk_norm { ld.load(&format!("{p}.self_attn.{name}.weight"), &[hd]).map(Some) } else { Ok(None) }
            };
            let sandwich = |name: &str| -> Result<Option<Tensor>> {
                if c.sandwich_norms { ld.load(&format!("{p}.{name}.weight"), &[dim]).map(Some) } else { Ok(None) }
            };
            // Gemma 2 calls its pre-MLP norm pre_feedforward_layernorm and uses post_attention_layernorm
            // after attention; the others use post_attention_layernorm before the MLP.
            let (post_attn_norm, mlp_norm) = if c.sandwich_norms {
                (
                    sandwich("post_attention_layernorm")?,
                    ld.load(&format!("{p}.pre_feedforward_layernorm.weight"), &[dim])?,
                )
            } else {
                (None, ld.load(&format!("{p}.post_attention_layernorm.weight"), &[dim])?)
            };
            layers.push(Layer {
                attn_norm: ld.load(&format!("{p}.input_layernorm.weight"), &[dim])?,
                wq,
                wk,
                wv,
                bq: bias("q_proj", q_dim)?,
                bk: bias("k_proj", kv_dim)?,
                bv: bias("v_proj", kv_dim)?,
                q_norm: head_norm("q_norm")?,
                k_norm: head_norm("k_norm")?,
                wo: ld.linear(&format!("{p}.self_attn.o_proj.weight"), dim, q_dim)?,
                post_attn_norm,
                mlp_norm,
                w_gate,
                w_up,
                w_down: ld.linear(&format!("{p}.mlp.down_proj.weight"), dim, ffn)?,
                post_mlp_norm: sandwich("post_feedforward_layernorm")?,
            });
        }
        ld.progress.finish_and_clear();
        // Q and K rows in rotation-pair order (`weights::RopePairs`) rotate adjacent pairs; in Hugging
        // Face's order, half-split ones.
        let layout = if weights.pairs.is_some() { RopeLayout::Interleaved } else { RopeLayout::HalfSplit };
        let rope = rope_table(c, backend, layout)?;
        let kv_dtype = DEFAULT_KV_DTYPE;
        Ok(Llama { config, backend: backend.clone(), embed, lm_head, final_norm, layers, rope, kv_dtype })
    }

    /// Bytes of weights one decode step reads: every layer, the final norm and the LM head (the
    /// embedding table only through one row, unless it is the LM head).
    pub fn weight_bytes_per_token(&self) -> u64 {
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                let matrices = [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down];
                let optional = [&l.bq, &l.bk, &l.bv, &l.q_norm, &l.k_norm, &l.post_attn_norm, &l.post_mlp_norm];
                matrices.iter().map(|w| w.size_bytes()).sum::<usize>()
                    + l.attn_norm.size_bytes()
                    + l.mlp_norm.size_bytes()
                    + optional.iter().filter_map(|t| t.as_ref()).map(Tensor::size_bytes).sum::<usize>()
            })
            .sum();
        let head = self.lm_head.as_ref().unwrap_or(&self.embed).size_bytes();
        (layers + head + self.final_norm.size_bytes()) as u64
    }

    /// The dtype of the KV caches of states made from now on: f32, or f16 or bf16, which halve the
    /// cache's memory and the bytes attention reads a token; K and V are rounded to it as they are written
    /// (attention still computes in f32). The default is [`DEFAULT_KV_DTYPE`].
    pub fn set_kv_dtype(&mut self, dtype: DType) -> Result<()> {
        if !dtype.is_float() {
            return Err(Error::Argument {
                name: "kv-cache",
                value: dtype.to_string(),
                reason: "a KV cache is f32, f16 or bf16".into(),
            });
        }
        self.kv_dtype = dtype;
        Ok(())
    }

    /// The dtype of the KV caches `new_state` makes.
    pub fn kv_dtype(&self) -> DType {
        self.kv_dtype
    }

    /// A KV cache for `capacity` positions.
    pub fn new_state(&self, capacity: usize) -> Result<State> {
        let c = &self.config;
        if capacity > c.max_seq_len {
            return Err(Error::ContextLength { what: "the KV cache", needed: capacity, limit: c.max_seq_len });
        }
        let shape = [capacity.max(1), c.n_kv_heads, c.head_dim];
        let zeros = || Tensor::zeros(&self.backend, &shape, self.kv_dtype);
        let k = (0..c.n_layers).map(|_| zeros()).collect::<std::result::Result<Vec<_>, _>>()?;
        let v = (0..c.n_layers).map(|_| zeros()).collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(State { k, v, capacity })
    }

    fn variant(&self) -> RmsNormVariant {
        if self.config.norm_plus_one { RmsNormVariant::Gemma } else { RmsNormVariant::Standard }
    }

    fn norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        Ok(norm::rmsnorm(x, w, self.config.norm_eps, self.variant())?)
    }

    /// Runs the token ids `[tokens]` (u32, on the model's backend: for example the previous step's `argmax`,
    /// which never leaves the device) at positions `pos..`, filling the cache, and returns f32 logits
    /// `[1, vocab]` (`Logits::Last`) or `[tokens, vocab]` (`Logits::All`). Ids must be below the vocab.
    pub fn forward_ids(&self, state: &mut State, ids: &Tensor, pos: usize, which: Logits) -> Result<Tensor> {
        let c = &self.config;
        let n = check_ids(ids)?;
        if pos + n > state.capacity {
            return Err(Error::ContextLength { what: "the KV cache", needed: pos + n, limit: state.capacity });
        }
        let (hd, q_dim) = (c.head_dim, c.n_heads * c.head_dim);
        let mut x = self.embed(ids)?;
        to_u32("position", pos + n)?;
        // Decoding with quantized weights, the input of the next GEMV as the one before wrote it (see
        // `add_into_then`).
        let mut next_in: Option<GemvInput> = None;

        for (i, layer) in self.layers.iter().enumerate() {
            // Attention: q rotated, the rotated k and v in the cache.
            let q = match self.fused_qkv_rope(&x, &mut next_in, layer, pos, &state.k[i], &state.v[i])? {
                Some(q) => q.reshape(&[n, c.n_heads, hd])?,
                None => {
                    let [q, k, v] = self.normed_qkv(&x, &mut next_in, layer)?;
                    let q = q.reshape(&[n, c.n_heads, hd])?;
                    let k = k.reshape(&[n, c.n_kv_heads, hd])?;
                    let v = v.reshape(&[n, c.n_kv_heads, hd])?;
                    let q = match &layer.q_norm {
                        Some(w) => self.norm(&q, w)?,
                        None => q,
                    };
                    let k = match &layer.k_norm {
                        Some(w) => self.norm(&k, w)?,
                        None => k,
                    };
                    rope::rope_qk_store_kv(&q, &k, &v, &self.rope, pos, &state.k[i], &state.v[i])?;
                    q
                }
            };
            let opts = AttentionOptions {
                scale: c.attn_scale,
                softcap: c.attn_softcap,
                window: c.layer_windows[i],
                causal: true,
            };
            // Decoding into a quantized O projection, the attention also writes its output quantized for it.
            let (a, a_in) = match &layer.wo {
                Linear::Quant(wo) if n <= gemv::MAX_BATCH && layer.post_attn_norm.is_none() => {
                    let input = attention::sdpa_decode_for(&q, &state.k[i], &state.v[i], pos + n, opts, wo)?;
                    (input.tensor().clone(), Some(input))
                }
                _ if n <= gemv::MAX_BATCH => {
                    (attention::sdpa_decode(&q, &state.k[i], &state.v[i], pos + n, opts)?, None)
                }
                _ => (attention::flash_attention(&q, &state.k[i], &state.v[i], pos + n, pos, opts)?, None),
            };
            let a = a.reshape(&[n, q_dim])?;
            x = match &layer.post_attn_norm {
                Some(post) => elementwise::add(&x, &self.norm(&layer.wo.forward(&a, None)?, post)?)?,
                None => {
                    next_in = self.add_into_then(&layer.wo, &a, a_in, &x, Some(&layer.mlp_norm), &layer.w_gate)?;
                    x
                }
            };

            // Feed-forward.
            let (g, g_in) = self.normed_gated_mlp(&x, &mut next_in, layer)?;
            x = match &layer.post_mlp_norm {
                Some(post) => elementwise::add(&x, &self.norm(&layer.w_down.forward(&g, None)?, post)?)?,
                None => {
                    let (norm, next) = match self.layers.get(i + 1) {
                        Some(l) => (&l.attn_norm, &l.wq),
                        None => (&self.final_norm, self.lm_head.as_ref().unwrap_or(&self.embed)),
                    };
                    next_in = self.add_into_then(&layer.w_down, &g, g_in, &x, Some(norm), next)?;
                    x
                }
            };
            // Submit layers as they are recorded (without waiting, a few at a time), so the device runs
            // them while the host records the next ones.
            self.backend.flush_some()?;
        }

        let x = logit_rows(x, n, which)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        // Decoding: the final norm fused into the head's GEMV (for a quantized head, into the activations'
        // quantization) and the final soft cap into its epilogue.
        let decode = x.rows_cols().0 <= gemv::MAX_BATCH;
        let e = GemvEpilogue { soft_cap: c.final_softcap, ..Default::default() };
        match head {
            Linear::Dense(w) if decode => return Ok(gemv::gemv_normed(w, &x, self.input_norm(&self.final_norm), e)?),
            Linear::Quant(w) if decode => {
                // The last layer's input for the head holds every row of x; logit_rows kept only the last.
                let input = match next_in.filter(|_| n == 1) {
                    Some(input) => input,
                    None => GemvInput::new(&x, Some(self.input_norm(&self.final_norm)))?,
                };
                return Ok(qmatmul::gemv_q_input(w, &input, e)?);
            }
            _ => {}
        }
        let logits = head.forward(&self.norm(&x, &self.final_norm)?, None)?;
        if let Some(cap) = c.final_softcap {
            elementwise::unary_into(&logits, Unary::Softcap { cap }, &logits)?;
        }
        Ok(logits)
    }
}

fn to_u32(name: &'static str, v: usize) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Argument { name, value: v.to_string(), reason: "exceeds 2^32 - 1".into() })
}

fn round_to(v: f32, dtype: DType) -> f32 {
    match dtype {
        DType::BF16 => half::bf16::from_f32(v).to_f32(),
        DType::F16 => half::f16::from_f32(v).to_f32(),
        _ => v,
    }
}

impl Llama {
    fn gated_act(&self) -> GatedAct {
        match self.config.activation {
            Activation::Silu => GatedAct::Silu,
            Activation::GeluTanh => GatedAct::GeluTanh,
        }
    }

    fn input_norm<'a>(&self, weight: &'a Tensor) -> InputNorm<'a> {
        InputNorm { weight, eps: self.config.norm_eps, variant: self.variant() }
    }

    /// Q, K and V of `norm(x)`: decoding, one GEMV pass over `x` with the norm fused in; otherwise the
    /// norm, then three GEMMs.
    fn normed_qkv(&self, x: &Tensor, prepared: &mut Option<GemvInput>, l: &Layer) -> Result<[Tensor; 3]> {
        if x.rows_cols().0 <= gemv::MAX_BATCH
            && let (Some(wq), Some(wk), Some(wv)) = (l.wq.as_dense(), l.wk.as_dense(), l.wv.as_dense())
        {
            let parts = [
                GemvPart { w: wq, bias: l.bq.as_ref() },
                GemvPart { w: wk, bias: l.bk.as_ref() },
                GemvPart { w: wv, bias: l.bv.as_ref() },
            ];
            let mut out = gemv::gemv_multi_normed(x, self.input_norm(&l.attn_norm), &parts)?.into_iter();
            let mut next = || out.next().expect("one output per part");
            return Ok([next(), next(), next()]);
        }
        if x.rows_cols().0 <= gemv::MAX_BATCH
            && let (Linear::Quant(wq), Linear::Quant(wk), Linear::Quant(wv)) = (&l.wq, &l.wk, &l.wv)
        {
            // Quantized: the norm and the activations' quantization in one pass, then one GEMV dispatch.
            let input = self.quant_input(x, prepared, &l.attn_norm)?;
            let parts = [(wq, l.bq.as_ref()), (wk, l.bk.as_ref()), (wv, l.bv.as_ref())];
            let mut out = qmatmul::gemv_q_multi(&input, &parts)?.into_iter();
            let mut next = || out.next().expect("one output per part");
            return Ok([next(), next(), next()]);
        }
        let h = self.norm(x, &l.attn_norm)?;
        Ok([l.wq.forward(&h, l.bq.as_ref())?, l.wk.forward(&h, l.bk.as_ref())?, l.wv.forward(&h, l.bv.as_ref())?])
    }

    /// Decoding without head norms: the norm, the Q, K, V projections, RoPE and the cache write in one GEMV
    /// launch (quantized weights: after the activations' quantization); returns q rotated `[n, q_dim]`.
    /// `None` where that does not apply.
    fn fused_qkv_rope(
        &self,
        x: &Tensor,
        prepared: &mut Option<GemvInput>,
        l: &Layer,
        pos: usize,
        k_cache: &Tensor,
        v_cache: &Tensor,
    ) -> Result<Option<Tensor>> {
        if x.rows_cols().0 > gemv::MAX_BATCH || l.q_norm.is_some() || l.k_norm.is_some() {
            return Ok(None);
        }
        let kv = rope::KvWrite { table: &self.rope, pos, k_cache, v_cache };
        if let (Some(wq), Some(wk), Some(wv)) = (l.wq.as_dense(), l.wk.as_dense(), l.wv.as_dense()) {
            let parts = [
                GemvPart { w: wq, bias: l.bq.as_ref() },
                GemvPart { w: wk, bias: l.bk.as_ref() },
                GemvPart { w: wv, bias: l.bv.as_ref() },
            ];
            return Ok(Some(gemv::gemv_qkv_rope(x, self.input_norm(&l.attn_norm), parts, kv)?));
        }
        if let (Linear::Quant(wq), Linear::Quant(wk), Linear::Quant(wv)) = (&l.wq, &l.wk, &l.wv) {
            let input = self.quant_input(x, prepared, &l.attn_norm)?;
            let parts = [(wq, l.bq.as_ref()), (wk, l.bk.as_ref()), (wv, l.bv.as_ref())];
            return Ok(Some(qmatmul::gemv_q_qkv_rope(&input, parts, kv)?));
        }
        Ok(None)
    }

    /// `act(h·Wgateᵀ) ⊙ (h·Wupᵀ)` with `h = norm(x)`: one fused GEMV when decoding, else the norm, two
    /// GEMMs and a gated multiply. Decoding with quantized weights, `x`'s input may come `prepared`, and
    /// the down projection's input comes back too (written by the same dispatch where it can be).
    fn normed_gated_mlp(
        &self,
        x: &Tensor,
        prepared: &mut Option<GemvInput>,
        l: &Layer,
    ) -> Result<(Tensor, Option<GemvInput>)> {
        if x.rows_cols().0 <= gemv::MAX_BATCH
            && let (Some(w_gate), Some(w_up)) = (l.w_gate.as_dense(), l.w_up.as_dense())
        {
            let g = gemv::gemv_gated_normed(w_gate, w_up, x, self.input_norm(&l.mlp_norm), self.gated_act())?;
            return Ok((g, None));
        }
        if x.rows_cols().0 <= gemv::MAX_BATCH
            && let (Linear::Quant(w_gate), Linear::Quant(w_up)) = (&l.w_gate, &l.w_up)
        {
            let input = self.quant_input(x, prepared, &l.mlp_norm)?;
            if let Linear::Quant(w_down) = &l.w_down {
                let then = NextInput { norm: None, next: w_down };
                let g = qmatmul::gemv_q_gated_then(&input, w_gate, w_up, self.gated_act(), then)?;
                return Ok((g.tensor().clone(), Some(g)));
            }
            return Ok((qmatmul::gemv_q_gated(&input, w_gate, w_up, self.gated_act())?, None));
        }
        let h = self.norm(x, &l.mlp_norm)?;
        let (g, u) = (l.w_gate.forward(&h, None)?, l.w_up.forward(&h, None)?);
        let op = match self.config.activation {
            Activation::Silu => Binary::SwiGlu,
            Activation::GeluTanh => Binary::GeGlu,
        };
        Ok((elementwise::binary(&g, &u, op)?, None))
    }

    /// The quantized GEMVs' input `norm(x)`: as the GEMV before wrote it (`prepared`, taken), else new.
    fn quant_input(&self, x: &Tensor, prepared: &mut Option<GemvInput>, norm: &Tensor) -> Result<GemvInput> {
        match prepared.take() {
            Some(input) => Ok(input),
            None => Ok(GemvInput::new(x, Some(self.input_norm(norm)))?),
        }
    }

    /// `acc += input · wᵀ` (the residual stream), in place. Decoding with quantized weights where the next
    /// GEMV (`next`, after `norm`) is quantized too, the dispatch also writes that GEMV's input, returned
    /// (`input` itself may come `prepared` by the GEMV before); otherwise `None`.
    fn add_into_then(
        &self,
        w: &Linear,
        input: &Tensor,
        prepared: Option<GemvInput>,
        acc: &Tensor,
        norm: Option<&Tensor>,
        next: &Linear,
    ) -> Result<Option<GemvInput>> {
        let wq = match w {
            Linear::Quant(wq) if input.rows_cols().0 <= gemv::MAX_BATCH => wq,
            _ => {
                w.forward_add_into(input, acc)?;
                return Ok(None);
            }
        };
        let x = match prepared {
            Some(x) => x,
            None => GemvInput::new(input, None)?,
        };
        let e = GemvEpilogue::residual(acc);
        match next {
            Linear::Quant(next) => {
                let then = NextInput { norm: norm.map(|w| self.input_norm(w)), next };
                Ok(Some(qmatmul::gemv_q_input_into_then(wq, &x, e, acc, then)?))
            }
            Linear::Dense(_) => {
                qmatmul::gemv_q_input_into(wq, &x, e, acc)?;
                Ok(None)
            }
        }
    }

    /// The embedding rows of `ids` as f32 `[n, dim]`, times Gemma's normaliser.
    fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        // Hugging Face multiplies by the normaliser in the weights' dtype.
        let dtype = self.embed.as_dense().map_or(DType::F32, Tensor::dtype);
        let scale = self.config.embed_scale.map_or(1.0, |s| round_to(s, dtype));
        self.embed.embedding(ids, scale)
    }
}
