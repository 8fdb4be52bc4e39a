//! The generation loop: prefill the prompt, then decode token by token, streaming text.

use std::time::Instant;

use torchless_kernels::ops::select;

use crate::error::{Error, Result};
use crate::model::{Logits, Model, State};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{StreamDecoder, Tokenizer};

pub struct GenerateOptions {
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Stop when the generated text contains one of these.
    pub stop: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub prompt_tokens: usize,
    pub prefill_secs: f64,
    pub generated_tokens: usize,
    pub decode_secs: f64,
}

impl Stats {
    pub fn prefill_tps(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_secs.max(1e-9)
    }
    /// Tokens per second after the first generated token (which comes out of the prefill).
    pub fn decode_tps(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_secs.max(1e-9)
    }
}

/// Picks the next token from a [1, vocab] logits tensor, reading back only what the sampler needs.
pub fn pick(sampler: &mut Sampler, logits: &torchless_kernels::Tensor, history: &[u32]) -> Result<u32> {
    let p = &sampler.params;
    if p.is_greedy() {
        return Ok(select::argmax(logits)?.to_vec::<u32>()?[0]);
    }
    if let Some(k) = p.device_top_k() {
        let (values, ids) = select::topk(logits, k)?;
        let (values, ids) = (values.to_f32_vec()?, ids.to_vec::<u32>()?);
        return Ok(sampler.sample_candidates(ids.into_iter().zip(values).collect()));
    }
    Ok(sampler.sample(&logits.to_f32_vec()?, history))
}

/// Generates from `prompt` (token ids), calling `on_text` with each new piece of text.
pub fn generate(
    model: &Model,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    mut on_text: impl FnMut(&str),
) -> Result<Stats> {
    if prompt.is_empty() {
        return Err(Error::Argument {
            name: "prompt",
            value: "\"\"".into(),
            reason: "needs at least one token".into(),
        });
    }
    let limit = model.max_seq_len();
    let total = prompt.len() + opts.max_tokens;
    if prompt.len() >= limit {
        return Err(Error::ContextLength { what: "the prompt", needed: prompt.len(), limit });
    }
    let max_tokens = opts.max_tokens.min(limit - prompt.len());
    if total > limit {
        eprintln!("torchless: --max-tokens {} cut to {max_tokens} to fit the context of {limit}", opts.max_tokens);
    }
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    let mut state: State = model.new_state(prompt.len() + max_tokens)?;
    let mut history = prompt.to_vec();
    let mut decoder = StreamDecoder::new();
    let mut text = String::new();
    let mut stats = Stats { prompt_tokens: prompt.len(), ..Default::default() };

    let t0 = Instant::now();
    let logits = model.forward(&mut state, prompt, 0, Logits::Last)?;
    let mut next = pick(&mut sampler, &logits, &history)?;
    stats.prefill_secs = t0.elapsed().as_secs_f64();

    let t1 = Instant::now();
    for _ in 0..max_tokens {
        if tokenizer.is_eos(next) {
            break;
        }
        history.push(next);
        stats.generated_tokens += 1;
        let piece = decoder.push(tokenizer, next)?;
        if !piece.is_empty() {
            text.push_str(&piece);
            if let Some(cut) = opts.stop.iter().filter_map(|s| text.find(s.as_str())).min() {
                let keep = cut.saturating_sub(text.len() - piece.len());
                on_text(&piece[..keep.min(piece.len())]);
                break;
            }
            on_text(&piece);
        }
        if stats.generated_tokens == max_tokens {
            break;
        }
        let logits = model.forward(&mut state, &[next], history.len() - 1, Logits::Last)?;
        next = pick(&mut sampler, &logits, &history)?;
    }
    stats.decode_secs = t1.elapsed().as_secs_f64();
    Ok(stats)
}
