//! xLSTM: NX-AI's xLSTM-7B architecture as Hugging Face transformers stores it (`model_type: xlstm`,
//! `xLSTMForCausalLM`, weight names `backbone.blocks.{i}.…`). A stack of mLSTM blocks whose memory is a
//! fixed-size recurrent state per sequence (it takes the place of the KV cache: constant memory per token,
//! no context limit). Activations and state are f32; weights stay in their stored dtype.
//!
//! Per block:
//!   h = rmsnorm(x);  q, k, v, o = h·Wq, h·Wk, h·Wv, h·Wo;  ĩ, f̃ = softcap(h·Wi + bi), softcap(h·Wf + bf)
//!   y = mlstm(q, k, v, ĩ, f̃; C, n, m)      (chunkwise over a prompt, one recurrent step per decoded token;
//!                                           the mLSTM kernels apply the gates' soft cap as they read them)
//!   x += Wout·(sigmoid(o) ⊙ headnorm(y))     (headnorm: a LayerNorm per head; gate and norm in one launch)
//!   h = rmsnorm(x);  x += Wdown·(silu(h·Wgate) ⊙ h·Wup)
//! then logits = softcap(rmsnorm(x)·Wlm).
//!
//! Up to [`gemv::MAX_BATCH`] tokens go through the GEMV kernels with the input norm fused in (decode), more
//! through GEMM (prefill). Nothing is read back: the caller reads the logits or samples on the device.

use serde_json::Value;
use torchless_kernels::ops::elementwise::{self, Binary, Unary};
use torchless_kernels::ops::gemv::{self, GatedAct, GemvEpilogue, GemvPart, InputNorm};
use torchless_kernels::ops::mlstm::{self, GatedHeadNorm, MlstmInputs, MlstmOptions, MlstmState};
use torchless_kernels::ops::norm::{self, RmsNormVariant};
use torchless_kernels::ops::{convert, select};
use torchless_kernels::{Backend, DType, Tensor};

use super::Logits;
use super::llama::{Loader, progress_bar};
use super::weights::{Source, SourceKind, linear, linear_add_into};
use super::{check_ids, logit_rows};
use crate::config::{get_bool, get_f64, get_usize, token_ids};
use crate::error::{Error, Result};
use crate::safetensors_dir::SafetensorsDir;

/// The longest sequence an xLSTM takes: the recurrent state has no length, so only u32 positions bound it.
pub const MAX_SEQ_LEN: usize = u32::MAX as usize;

/// How the projections of a block are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightMode {
    /// Separate `q`, `k`, `v`, `ogate_preact`, `igate_preact`, `fgate_preact`, `proj_up_gate`, `proj_up`.
    Single,
    /// `qkv_opreact` = [q; k; v; o], `ifgate_preact` = [i; f], `proj_up_gate_z` = [gate; up] (rows).
    Fused,
}

/// The model's shape and constants, resolved from `config.json`.
#[derive(Clone, Debug)]
pub struct Config {
    /// hidden_size (= embedding_dim).
    pub dim: usize,
    /// num_blocks (or num_hidden_layers).
    pub n_blocks: usize,
    pub n_heads: usize,
    /// q and k width over all heads: int(hidden_size · qk_dim_factor).
    pub qk_dim: usize,
    /// v width over all heads: int(hidden_size · v_dim_factor).
    pub v_dim: usize,
    /// Feed-forward width: hidden_size · ffn_proj_factor rounded up to ffn_round_up_to_multiple_of.
    pub ffn_dim: usize,
    pub vocab_size: usize,
    /// Soft cap of the input and forget gate pre-activations (`None`: no cap).
    pub gate_soft_cap: Option<f32>,
    /// Soft cap of the logits (`None`: no cap).
    pub output_logit_soft_cap: Option<f32>,
    /// Epsilon of the RMSNorms and of the per-head LayerNorm.
    pub norm_eps: f32,
    /// Epsilon of the mLSTM's denominator.
    pub eps: f32,
    pub weight_mode: WeightMode,
    pub tie_embeddings: bool,
    /// RMSNorm after the last block (required; without it, applied if the file has one, as transformers does).
    pub add_out_norm: bool,
    /// Chunk length of the chunkwise prefill.
    pub chunk_size: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

fn positive_f64(j: &Value, key: &str, default: f64) -> Result<f64> {
    let v = get_f64(j, key)?.unwrap_or(default);
    if v.is_finite() && v > 0.0 { Ok(v) } else { Err(Error::config(key, format!("{v} must be positive"))) }
}

fn positive_usize(j: &Value, key: &str, default: Option<usize>) -> Result<usize> {
    match get_usize(j, key)?.or(default) {
        None => Err(Error::config(key, "missing")),
        Some(0) => Err(Error::config(key, "must be positive")),
        Some(v) => Ok(v),
    }
}

/// A soft cap: a positive number, or null for none.
fn soft_cap(j: &Value, key: &str, default: f64) -> Result<Option<f32>> {
    match j.get(key) {
        Some(Value::Null) => Ok(None),
        None => Ok(Some(default as f32)),
        Some(_) => Ok(Some(positive_f64(j, key, default)? as f32)),
    }
}

impl Config {
    /// From a transformers `xLSTMConfig` (missing fields take transformers' defaults, those of xLSTM-7B).
    pub fn from_json(j: &Value) -> Result<Config> {
        let dim = match (get_usize(j, "hidden_size")?, get_usize(j, "embedding_dim")?) {
            (Some(h), Some(e)) if h != e => {
                return Err(Error::config("embedding_dim", format!("{e} differs from hidden_size = {h}")));
            }
            (h, e) => h.or(e).ok_or_else(|| Error::config("hidden_size", "missing"))?,
        };
        if dim == 0 {
            return Err(Error::config("hidden_size", "must be positive"));
        }
        let n_blocks = match (get_usize(j, "num_blocks")?, get_usize(j, "num_hidden_layers")?) {
            (Some(b), Some(l)) if b != l => {
                return Err(Error::config("num_blocks", format!("{b} differs from num_hidden_layers = {l}")));
            }
            (b, l) => b.or(l).ok_or_else(|| Error::config("num_blocks", "missing"))?,
        };
        if n_blocks == 0 {
            return Err(Error::config("num_blocks", "must be positive"));
        }
        let n_heads = positive_usize(j, "num_heads", Some(8))?;
        let vocab_size = positive_usize(j, "vocab_size", None)?;

        // transformers' layer: int(hidden_size * factor), split evenly over the heads.
        let head_split = |field: &str, default: f64| -> Result<usize> {
            let factor = positive_f64(j, field, default)?;
            let width = (dim as f64 * factor) as usize;
            if width == 0 || !width.is_multiple_of(n_heads) {
                return Err(Error::config(
                    field,
                    format!(
                        "hidden_size {dim} × {field} {factor} = {width}, which num_heads = {n_heads} does not divide \
                         into equal heads"
                    ),
                ));
            }
            Ok(width)
        };
        let qk_dim = head_split("qk_dim_factor", 0.5)?;
        let v_dim = head_split("v_dim_factor", 1.0)?;

        // round_up_to_next_multiple_of(hidden_size * ffn_proj_factor, ffn_round_up_to_multiple_of)
        let ffn_factor = positive_f64(j, "ffn_proj_factor", 2.667)?;
        let multiple = positive_usize(j, "ffn_round_up_to_multiple_of", Some(64))? as f64;
        let ffn_dim = (((dim as f64 * ffn_factor + multiple - 1.0) / multiple).floor() * multiple) as usize;

        let weight_mode = match j.get("weight_mode").and_then(Value::as_str).unwrap_or("single") {
            "single" => WeightMode::Single,
            "fused" => WeightMode::Fused,
            other => {
                return Err(Error::config("weight_mode", format!("{other:?} is not supported (single, fused)")));
            }
        };
        if get_bool(j, "use_bias", false)? {
            return Err(Error::config(
                "use_bias",
                "true is not supported (biases on the projections and norms; xLSTM-7B has none)",
            ));
        }
        Ok(Config {
            dim,
            n_blocks,
            n_heads,
            qk_dim,
            v_dim,
            ffn_dim,
            vocab_size,
            gate_soft_cap: soft_cap(j, "gate_soft_cap", 15.0)?,
            output_logit_soft_cap: soft_cap(j, "output_logit_soft_cap", 30.0)?,
            norm_eps: positive_f64(j, "norm_eps", 1e-6)? as f32,
            eps: positive_f64(j, "eps", 1e-6)? as f32,
            weight_mode,
            tie_embeddings: get_bool(j, "tie_word_embeddings", false)?,
            add_out_norm: get_bool(j, "add_out_norm", true)?,
            chunk_size: positive_usize(j, "chunk_size", Some(64))?,
            bos_token_id: token_ids(j.get("bos_token_id")).first().copied(),
            eos_token_ids: token_ids(j.get("eos_token_id")),
        })
    }

    /// The recurrence's settings.
    pub fn mlstm_options(&self) -> MlstmOptions {
        MlstmOptions { gate_soft_cap: self.gate_soft_cap, eps: self.eps }
    }

    pub fn qk_head_dim(&self) -> usize {
        self.qk_dim / self.n_heads
    }
    pub fn v_head_dim(&self) -> usize {
        self.v_dim / self.n_heads
    }
}

/// The weights of one block, each in its stored dtype.
struct Block {
    /// RMSNorm before the mLSTM layer: [dim].
    norm_mlstm: Tensor,
    /// [qk_dim, dim]
    wq: Tensor,
    /// [qk_dim, dim]
    wk: Tensor,
    /// [v_dim, dim]
    wv: Tensor,
    /// Output gate pre-activation: [v_dim, dim].
    wo: Tensor,
    /// Input gate pre-activation: [n_heads, dim] and bias [n_heads].
    wi: Tensor,
    bi: Tensor,
    /// Forget gate pre-activation: [n_heads, dim] and bias [n_heads].
    wf: Tensor,
    bf: Tensor,
    /// Per-head LayerNorm weight [v_dim].
    head_norm: Tensor,
    /// [dim, v_dim]
    w_out: Tensor,
    /// RMSNorm before the feed-forward: [dim].
    norm_ffn: Tensor,
    /// [ffn_dim, dim]
    w_gate: Tensor,
    /// [ffn_dim, dim]
    w_up: Tensor,
    /// [dim, ffn_dim]
    w_down: Tensor,
}

pub struct Xlstm {
    pub config: Config,
    backend: Backend,
    /// [vocab, dim]
    embed: Tensor,
    /// [vocab, dim]; `None` when tied to the embedding.
    lm_head: Option<Tensor>,
    /// [dim]; `None` without add_out_norm and without the tensor.
    out_norm: Option<Tensor>,
    blocks: Vec<Block>,
    /// Prefill runs the mLSTM one token at a time (mlstm_step) instead of chunkwise (for comparisons).
    step_prefill: bool,
}

/// The recurrent state of one sequence: per block, C [1, n_heads, qk_head_dim, v_head_dim], n [1, n_heads,
/// qk_head_dim] and m [1, n_heads], f32 on the model's backend. Its size does not depend on the length.
pub struct State {
    blocks: Vec<MlstmState>,
}

/// The row blocks `rows` (in order) of a `[sum(rows)]` or `[sum(rows), cols]` tensor (a fused projection),
/// each uploaded on its own.
fn split_rows<const N: usize>(
    ld: &Loader<'_>,
    name: &str,
    rows: [usize; N],
    cols: Option<usize>,
) -> Result<[Tensor; N]> {
    let (bytes, dtype, shape) = ld.weights.dense_bytes(name)?;
    let total: usize = rows.iter().sum();
    let expected: Vec<usize> = match cols {
        Some(c) => vec![total, c],
        None => vec![total],
    };
    if shape != expected {
        return Err(Error::TensorShape { name: name.to_string(), expected, found: shape });
    }
    let row_bytes = cols.unwrap_or(1) * dtype.size_bytes();
    let mut start = 0;
    let mut parts = Vec::with_capacity(N);
    for r in rows {
        let part = &bytes[start * row_bytes..(start + r) * row_bytes];
        let part_shape: Vec<usize> = match cols {
            Some(c) => vec![r, c],
            None => vec![r],
        };
        parts.push(Tensor::from_bytes(ld.backend, part, &part_shape, dtype)?);
        start += r;
    }
    ld.progress.inc(bytes.len() as u64);
    parts.try_into().map_err(|_| Error::Argument {
        name: "rows",
        value: name.into(),
        reason: "one part per block".into(),
    })
}

impl Xlstm {
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn load(config: Config, weights: &SafetensorsDir, backend: &Backend, progress: bool) -> Result<Xlstm> {
        let c = &config;
        let (dim, qk, v, nh, ffn) = (c.dim, c.qk_dim, c.v_dim, c.n_heads, c.ffn_dim);
        let source = Source { kind: SourceKind::Safetensors(weights), quantize: None, pairs: None };
        let ld = Loader { weights: &source, backend, progress: progress_bar(source.total_bytes(), progress) };

        let embed = ld.load("backbone.embeddings.weight", &[c.vocab_size, dim])?;
        let lm_head = if c.tie_embeddings { None } else { Some(ld.load("lm_head.weight", &[c.vocab_size, dim])?) };
        // transformers always creates and applies the out norm; NX-AI's xlstm package only with add_out_norm.
        let out_norm = if c.add_out_norm {
            Some(ld.load("backbone.out_norm.weight", &[dim])?)
        } else {
            ld.optional("backbone.out_norm.weight", &[dim])?
        };
        let mut blocks = Vec::with_capacity(c.n_blocks);
        for b in 0..c.n_blocks {
            let p = format!("backbone.blocks.{b}");
            let m = format!("{p}.mlstm_layer");
            let ([wq, wk, wv, wo], [wi, wf], [bi, bf], [w_gate, w_up]) = match c.weight_mode {
                WeightMode::Single => (
                    [
                        ld.load(&format!("{m}.q.weight"), &[qk, dim])?,
                        ld.load(&format!("{m}.k.weight"), &[qk, dim])?,
                        ld.load(&format!("{m}.v.weight"), &[v, dim])?,
                        ld.load(&format!("{m}.ogate_preact.weight"), &[v, dim])?,
                    ],
                    [
                        ld.load(&format!("{m}.igate_preact.weight"), &[nh, dim])?,
                        ld.load(&format!("{m}.fgate_preact.weight"), &[nh, dim])?,
                    ],
                    [
                        ld.load(&format!("{m}.igate_preact.bias"), &[nh])?,
                        ld.load(&format!("{m}.fgate_preact.bias"), &[nh])?,
                    ],
                    [
                        ld.load(&format!("{p}.ffn.proj_up_gate.weight"), &[ffn, dim])?,
                        ld.load(&format!("{p}.ffn.proj_up.weight"), &[ffn, dim])?,
                    ],
                ),
                WeightMode::Fused => (
                    split_rows(&ld, &format!("{m}.qkv_opreact.weight"), [qk, qk, v, v], Some(dim))?,
                    split_rows(&ld, &format!("{m}.ifgate_preact.weight"), [nh, nh], Some(dim))?,
                    split_rows(&ld, &format!("{m}.ifgate_preact.bias"), [nh, nh], None)?,
                    split_rows(&ld, &format!("{p}.ffn.proj_up_gate_z.weight"), [ffn, ffn], Some(dim))?,
                ),
            };
            blocks.push(Block {
                norm_mlstm: ld.load(&format!("{p}.norm_mlstm.weight"), &[dim])?,
                wq,
                wk,
                wv,
                wo,
                wi,
                bi,
                wf,
                bf,
                head_norm: ld.load(&format!("{m}.multihead_norm.weight"), &[v])?,
                w_out: ld.load(&format!("{m}.out_proj.weight"), &[dim, v])?,
                norm_ffn: ld.load(&format!("{p}.norm_ffn.weight"), &[dim])?,
                w_gate,
                w_up,
                w_down: ld.load(&format!("{p}.ffn.proj_down.weight"), &[dim, ffn])?,
            });
        }
        ld.progress.finish_and_clear();
        Ok(Xlstm { config, backend: backend.clone(), embed, lm_head, out_norm, blocks, step_prefill: false })
    }

    /// Bytes of weights one decode step reads: every block, the out norm and the LM head (the embedding
    /// table only through one row, unless it is the LM head).
    pub fn weight_bytes_per_token(&self) -> u64 {
        let blocks: usize = self
            .blocks
            .iter()
            .map(|b| {
                [
                    &b.norm_mlstm,
                    &b.wq,
                    &b.wk,
                    &b.wv,
                    &b.wo,
                    &b.wi,
                    &b.bi,
                    &b.wf,
                    &b.bf,
                    &b.head_norm,
                    &b.w_out,
                    &b.norm_ffn,
                    &b.w_gate,
                    &b.w_up,
                    &b.w_down,
                ]
                .iter()
                .map(|t| t.size_bytes())
                .sum::<usize>()
            })
            .sum();
        let head = self.lm_head.as_ref().unwrap_or(&self.embed).size_bytes();
        (blocks + head + self.out_norm.as_ref().map_or(0, Tensor::size_bytes)) as u64
    }

    /// A zero state. `capacity` is ignored: the state does not grow with the sequence.
    pub fn new_state(&self, _capacity: usize) -> Result<State> {
        let c = &self.config;
        let blocks = (0..c.n_blocks)
            .map(|_| MlstmState::zeros(&self.backend, 1, c.n_heads, c.qk_head_dim(), c.v_head_dim()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(State { blocks })
    }

    /// Whether a prefill of several tokens runs the mLSTM token by token (`mlstm_step`) rather than
    /// chunkwise; the results agree, the chunkwise form is faster. For comparisons (`bench-model`).
    pub fn set_step_prefill(&mut self, on: bool) {
        self.step_prefill = on;
    }

    fn norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        Ok(norm::rmsnorm(x, w, self.config.norm_eps, RmsNormVariant::Standard)?)
    }

    /// Runs the token ids `[tokens]` (u32, on the model's backend: for example the previous step's `argmax`,
    /// which never leaves the device), updating the state (positions are not needed by the recurrence), and
    /// returns f32 logits `[1, vocab]` (`Logits::Last`) or `[tokens, vocab]` (`Logits::All`).
    pub fn forward_ids(&self, state: &mut State, ids: &Tensor, _pos: usize, which: Logits) -> Result<Tensor> {
        let c = &self.config;
        let n = check_ids(ids)?;
        if state.blocks.len() != self.blocks.len() {
            return Err(Error::Argument {
                name: "state",
                value: format!("{} blocks", state.blocks.len()),
                reason: format!("this model has {} blocks", self.blocks.len()),
            });
        }
        let (nh, dqk, dv) = (c.n_heads, c.qk_head_dim(), c.v_head_dim());
        let x = select::embedding(&self.embed, ids)?; // [n, dim] f32
        // A stepped prefill gathers each token's rows by index: the indices, uploaded once for all blocks.
        let rows = if n > 1 && self.step_prefill {
            (0..n as u32).map(|t| Tensor::from_slice(&self.backend, &[t], &[1])).collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };

        for (block, s) in self.blocks.iter().zip(&state.blocks) {
            // mLSTM layer: projections of norm(x), the gate pre-activations uncapped (the mLSTM caps them).
            let [q, k, v, o, i, f] = self.normed_projections(&x, block)?;
            // The recurrence (batch of one sequence) and y = sigmoid(o) ⊙ headnorm(h): decoding, one step
            // with the gated norm fused in; over a prompt, chunkwise (or stepped) h, then the gated norm.
            let y = if n == 1 {
                let (q, k, v) = (q.reshape(&[1, nh, dqk])?, k.reshape(&[1, nh, dqk])?, v.reshape(&[1, nh, dv])?);
                let o = o.reshape(&[1, nh, dv])?;
                let norm = GatedHeadNorm { gate: &o, weight: Some(&block.head_norm), bias: None, eps: c.norm_eps };
                let x = MlstmInputs { q: &q, k: &k, v: &v, i_pre: &i, f_pre: &f };
                mlstm::mlstm_step_gated_norm(x, s, c.mlstm_options(), norm)?
            } else {
                let h = if self.step_prefill {
                    self.mlstm_steps(&q, &k, &v, &i, &f, s, &rows)?
                } else {
                    let (q, k, v) =
                        (q.reshape(&[1, n, nh, dqk])?, k.reshape(&[1, n, nh, dqk])?, v.reshape(&[1, n, nh, dv])?);
                    let (i, f) = (i.reshape(&[1, n, nh])?, f.reshape(&[1, n, nh])?);
                    let x = MlstmInputs { q: &q, k: &k, v: &v, i_pre: &i, f_pre: &f };
                    mlstm::mlstm_chunkwise(x, s, c.chunk_size, c.mlstm_options())?
                };
                let h = h.reshape(&[n, c.v_dim])?;
                mlstm::multihead_layernorm_gated(&h, &o, nh, Some(&block.head_norm), None, c.norm_eps)?
            };
            // Projected back and added to the residual.
            linear_add_into(&y.reshape(&[n, c.v_dim])?, &block.w_out, &x)?;

            // Feed-forward: x += Wdown·(silu(h·Wgate) ⊙ h·Wup), h = norm(x).
            let g = self.normed_swiglu(&x, block)?;
            linear_add_into(&g, &block.w_down, &x)?;
            // Submit blocks as they are recorded (a few at a time), so the device runs them while the host
            // records the next ones.
            self.backend.flush_some()?;
        }

        let x = logit_rows(x, n, which)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        if x.rows_cols().0 <= gemv::MAX_BATCH {
            // Decoding: the out norm and the soft cap fused into the head's GEMV.
            let e = GemvEpilogue { soft_cap: c.output_logit_soft_cap, ..Default::default() };
            return Ok(match &self.out_norm {
                Some(w) => gemv::gemv_normed(head, &x, self.input_norm(w), e)?,
                None => gemv::gemv(head, &x, e)?,
            });
        }
        let x = match &self.out_norm {
            Some(w) => self.norm(&x, w)?,
            None => x,
        };
        let logits = linear(&x, head, None)?;
        if let Some(cap) = c.output_logit_soft_cap {
            elementwise::unary_into(&logits, Unary::Softcap { cap }, &logits)?;
        }
        Ok(logits)
    }

    /// The RMSNorm of a block input or of the out norm, for fusing into a GEMV.
    fn input_norm<'a>(&self, weight: &'a Tensor) -> InputNorm<'a> {
        InputNorm { weight, eps: self.config.norm_eps, variant: RmsNormVariant::Standard }
    }

    /// q, k, v, o, ĩ, f̃ of `norm(x)`: decoding, one GEMV pass over `x` with the norm fused in (two on
    /// adapters with fewer than 22 storage buffers per stage); otherwise the norm, then six GEMMs.
    fn normed_projections(&self, x: &Tensor, b: &Block) -> Result<[Tensor; 6]> {
        if x.rows_cols().0 <= gemv::MAX_BATCH {
            let parts = [
                GemvPart { w: &b.wq, bias: None },
                GemvPart { w: &b.wk, bias: None },
                GemvPart { w: &b.wv, bias: None },
                GemvPart { w: &b.wo, bias: None },
                GemvPart { w: &b.wi, bias: Some(&b.bi) },
                GemvPart { w: &b.wf, bias: Some(&b.bf) },
            ];
            let mut all = gemv::gemv_multi_normed(x, self.input_norm(&b.norm_mlstm), &parts)?.into_iter();
            let mut next = || all.next().expect("six outputs");
            return Ok([next(), next(), next(), next(), next(), next()]);
        }
        let h = self.norm(x, &b.norm_mlstm)?;
        Ok([
            linear(&h, &b.wq, None)?,
            linear(&h, &b.wk, None)?,
            linear(&h, &b.wv, None)?,
            linear(&h, &b.wo, None)?,
            linear(&h, &b.wi, Some(&b.bi))?,
            linear(&h, &b.wf, Some(&b.bf))?,
        ])
    }

    /// `silu(h·Wgateᵀ) ⊙ (h·Wupᵀ)` with `h = norm(x)`: one fused GEMV when decoding, else the norm, two
    /// GEMMs and a gated multiply.
    fn normed_swiglu(&self, x: &Tensor, b: &Block) -> Result<Tensor> {
        if x.rows_cols().0 <= gemv::MAX_BATCH {
            let norm = self.input_norm(&b.norm_ffn);
            return Ok(gemv::gemv_gated_normed(&b.w_gate, &b.w_up, x, norm, GatedAct::Silu)?);
        }
        let h = self.norm(x, &b.norm_ffn)?;
        let (g, u) = (linear(&h, &b.w_gate, None)?, linear(&h, &b.w_up, None)?);
        Ok(elementwise::binary(&g, &u, Binary::SwiGlu)?)
    }

    /// The mLSTM over `n` tokens one `mlstm_step` at a time (the recurrent form of a prefill): each
    /// token's rows of q, k, v `[n, width]` and i, f `[n, n_heads]` (uncapped) are gathered (`rows[t]` holds t) and
    /// stepped, and its output written into row t of h `[n, v_dim]`.
    #[allow(clippy::too_many_arguments)]
    fn mlstm_steps(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        i: &Tensor,
        f: &Tensor,
        state: &MlstmState,
        rows: &[Tensor],
    ) -> Result<Tensor> {
        let c = &self.config;
        let (n, nh, dqk, dv) = (q.rows_cols().0, c.n_heads, c.qk_head_dim(), c.v_head_dim());
        let h = Tensor::zeros(&self.backend, &[n, c.v_dim], DType::F32)?;
        for (t, row) in rows.iter().enumerate().take(n) {
            let (q_t, k_t) = (
                select::embedding(q, row)?.reshape(&[1, nh, dqk])?,
                select::embedding(k, row)?.reshape(&[1, nh, dqk])?,
            );
            let v_t = select::embedding(v, row)?.reshape(&[1, nh, dv])?;
            let (i_t, f_t) = (select::embedding(i, row)?, select::embedding(f, row)?);
            let x = MlstmInputs { q: &q_t, k: &k_t, v: &v_t, i_pre: &i_t, f_pre: &f_t };
            let h_t = mlstm::mlstm_step(x, state, c.mlstm_options())?;
            convert::copy_rows_into(&h_t.reshape(&[1, c.v_dim])?, &h, t)?;
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xlstm_7b_shapes_follow_transformers() {
        // NX-AI/xLSTM-7b's config.json fields that set the shapes (the rest take transformers' defaults).
        let j = json!({"model_type": "xlstm", "hidden_size": 4096, "num_blocks": 32, "num_heads": 8,
                       "vocab_size": 50304, "qk_dim_factor": 0.5, "v_dim_factor": 1.0, "ffn_proj_factor": 2.667,
                       "ffn_round_up_to_multiple_of": 64, "weight_mode": "single"});
        let c = Config::from_json(&j).unwrap();
        assert_eq!((c.qk_dim, c.v_dim, c.qk_head_dim(), c.v_head_dim()), (2048, 4096, 256, 512));
        assert_eq!(c.ffn_dim, 10944, "4096 * 2.667 = 10924.03, rounded up to a multiple of 64");
        assert_eq!((c.gate_soft_cap, c.output_logit_soft_cap, c.chunk_size), (Some(15.0), Some(30.0), 64));
        assert!(c.add_out_norm && !c.tie_embeddings && c.weight_mode == WeightMode::Single);
        // tiny-xlstm: 256 * 2.667 = 682.75 -> 704; null caps mean no cap.
        let j = json!({"hidden_size": 256, "num_hidden_layers": 6, "num_heads": 4, "vocab_size": 4096,
                       "gate_soft_cap": null, "weight_mode": "fused"});
        let c = Config::from_json(&j).unwrap();
        assert_eq!((c.n_blocks, c.ffn_dim, c.qk_head_dim(), c.v_head_dim()), (6, 704, 32, 64));
        assert_eq!((c.gate_soft_cap, c.weight_mode), (None, WeightMode::Fused));
    }
}
