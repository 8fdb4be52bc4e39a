//! The generation loop: prefill the prompt, then decode token by token, streaming text.

use std::time::{Duration, Instant};

use torchless_kernels::Tensor;
use torchless_kernels::ops::sample::{self, Draw};
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
    /// Prompt tokens per second, None where the prompt was not run (`max_tokens` 0).
    pub fn prefill_tps(&self) -> Option<f64> {
        (self.prefill_secs > 0.0).then(|| self.prompt_tokens as f64 / self.prefill_secs)
    }
    /// Tokens per second after the first generated token (which comes out of the prefill); None with
    /// fewer than two generated tokens.
    pub fn decode_tps(&self) -> Option<f64> {
        (self.generated_tokens > 1).then(|| (self.generated_tokens - 1) as f64 / self.decode_secs.max(1e-9))
    }
}

/// Picks the next token from a [1, vocab] logits tensor, reading back only what the sampler needs: on a
/// GPU the repeat penalty is applied to the logits there (in place), and greedy picking or a top-k of at
/// most 64 select there too, so only the token or k candidates come back.
pub fn pick(sampler: &mut Sampler, logits: &torchless_kernels::Tensor, history: &[u32]) -> Result<u32> {
    let p = &sampler.params;
    // On the CPU the sampler penalizes the logits it reads; on a GPU they are penalized where they are.
    if logits.is_gpu() && p.repeat_penalty != 1.0 {
        let ids = sampler.penalized_ids(history);
        let ids = torchless_kernels::Tensor::from_slice(&logits.backend(), &ids, &[ids.len()])?;
        select::repeat_penalty(logits, &ids, p.repeat_penalty)?;
    }
    // Whether `logits` are the ones to sample from, the penalty (if any) applied.
    let logits_final = logits.is_gpu() || p.repeat_penalty == 1.0;
    if !logits_final {
        return Ok(sampler.sample(&logits.to_f32_vec()?, history));
    }
    if p.temperature == 0.0 {
        return Ok(select::argmax(logits)?.to_vec::<u32>()?[0]);
    }
    if let Some(k) = p.device_top_k() {
        let k = k.min(logits.numel());
        let (values, ids) = select::topk(logits, k)?;
        // Both copies start before either is awaited: one wait for the device, not two.
        let (values, ids) = (values.to_bytes_later()?, ids.to_bytes_later()?);
        let values: Vec<f32> = bytemuck::pod_collect_to_vec(&values.wait()?);
        let ids: Vec<u32> = bytemuck::pod_collect_to_vec(&ids.wait()?);
        return Ok(sampler.sample_candidates(ids.into_iter().zip(values).collect()));
    }
    let all = logits.to_f32_vec()?;
    Ok(sampler.sample_candidates(all.into_iter().enumerate().map(|(i, l)| (i as u32, l)).collect()))
}

/// Greedy decoding with each token kept on the device: the host records step t + 1 before it reads
/// token t. `first` holds the token at position `pos` (`[1]` u32 on the model's backend, e.g. the
/// prefill's argmax). `on_token` gets each token in order, from `first` on, and returns whether to go
/// on; at most `steps` forward passes run (so `steps + 1` tokens come out).
pub fn greedy_decode(
    model: &Model,
    state: &mut State,
    first: Tensor,
    pos: usize,
    steps: usize,
    on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<HostTimes> {
    pipelined_decode(model, state, first, pos, steps, |logits, _| Ok(select::argmax(logits)?), on_token)
}

/// The decode loop whose tokens never wait for the host: `next_token(logits, step)` chooses each token
/// on the model's backend (`[1]` u32), which is the next step's input as it is, so step t + 1 is recorded
/// (and its layers submitted) before token t is read back, and the device does not sit idle while the
/// host reads a token and records the next step.
fn pipelined_decode(
    model: &Model,
    state: &mut State,
    first: Tensor,
    pos: usize,
    steps: usize,
    mut next_token: impl FnMut(&Tensor, usize) -> Result<Tensor>,
    mut on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<HostTimes> {
    let mut times = HostTimes::default();
    let mut ids = first;
    let mut pending = ids.to_bytes_later()?;
    for i in 0..steps {
        let t = Instant::now();
        let logits = model.forward_ids(state, &ids, pos + i, Logits::Last)?;
        let next = next_token(&logits, i)?;
        times.record += t.elapsed();
        let t = Instant::now();
        let bytes = pending.wait()?;
        times.wait += t.elapsed();
        let token: u32 = bytemuck::pod_read_unaligned(&bytes[..4]);
        if !on_token(token)? {
            return Ok(times);
        }
        pending = next.to_bytes_later()?;
        ids = next;
    }
    let token: u32 = bytemuck::pod_read_unaligned(&pending.wait()?[..4]);
    on_token(token)?;
    Ok(times)
}

/// Sampled decoding. `first` is the token at position `pos`, `history` the context before it (the repeat
/// penalty's window; each token is appended as it comes). `on_token` gets each token in order, from
/// `first` on, and returns whether to go on; at most `steps` forward passes run.
///
/// On a GPU with a device top-k (`--top-k` 1 to 64, as by default) the token is drawn on the device and
/// fed straight to the next step, so the host records step t + 1 before it reads token t, as greedy
/// decoding does. Otherwise each token is read back (the k candidates, or
/// the logits) and drawn on the host before the next step is recorded.
#[allow(clippy::too_many_arguments)]
pub fn sampled_decode(
    model: &Model,
    state: &mut State,
    sampler: &mut Sampler,
    history: &mut Vec<u32>,
    first: u32,
    pos: usize,
    steps: usize,
    on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<HostTimes> {
    let p = &sampler.params;
    if model.backend().is_gpu()
        && p.temperature > 0.0
        && let Some(k) = p.device_top_k()
    {
        let k = k.min(model.vocab_size());
        return device_sampled_decode(model, state, sampler, history, first, pos, steps, k, on_token);
    }
    host_sampled_decode(model, state, sampler, history, first, pos, steps, on_token)
}

/// [`sampled_decode`] with every token read back and drawn on the host (`pick`).
#[allow(clippy::too_many_arguments)]
fn host_sampled_decode(
    model: &Model,
    state: &mut State,
    sampler: &mut Sampler,
    history: &mut Vec<u32>,
    first: u32,
    pos: usize,
    steps: usize,
    mut on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<HostTimes> {
    let mut times = HostTimes::default();
    let mut next = first;
    for i in 0..=steps {
        history.push(next);
        if !on_token(next)? || i == steps {
            break;
        }
        let t = Instant::now();
        let logits = model.forward(state, &[next], pos + i, Logits::Last)?;
        times.record += t.elapsed();
        let t = Instant::now();
        next = pick(sampler, &logits, history)?;
        times.wait += t.elapsed();
    }
    Ok(times)
}

/// [`sampled_decode`] with every draw on the device, in [`pipelined_decode`]: per step the repeat
/// penalty (over a ring of the last `repeat_last_n` tokens that the device itself keeps), the top-`k` and
/// `ops::sample::sample_top_k` with the host generator's next uniform draw, which does not depend on the
/// token.
#[allow(clippy::too_many_arguments)]
fn device_sampled_decode(
    model: &Model,
    state: &mut State,
    sampler: &mut Sampler,
    history: &mut Vec<u32>,
    first: u32,
    pos: usize,
    steps: usize,
    k: usize,
    mut on_token: impl FnMut(u32) -> Result<bool>,
) -> Result<HostTimes> {
    let backend = model.backend();
    let p = sampler.params.clone();
    // History index j (the first token is index `base`) lives in slot j % n; empty slots hold an id past
    // every vocabulary, which the penalty skips.
    let n = p.repeat_last_n.max(1);
    let penalty = p.repeat_penalty != 1.0 && p.repeat_last_n > 0;
    let base = history.len();
    let mut ring = vec![u32::MAX; n];
    for (j, &token) in history.iter().chain([&first]).enumerate().skip((base + 1).saturating_sub(n)) {
        ring[j % n] = token;
    }
    let window = Tensor::from_slice(backend, &ring, &[n])?;
    let next_token = |logits: &Tensor, step: usize| -> Result<Tensor> {
        if penalty {
            select::repeat_penalty(logits, &window, p.repeat_penalty)?;
        }
        let (values, candidates) = select::topk(logits, k)?;
        let next = Tensor::uninit(backend, "sampled token", &[1], torchless_kernels::DType::U32)?;
        // The largest f32 below 1 at most: an f64 draw just under 1 would round up to it.
        let u = (sampler.next_draw() as f32).min(1.0 - f32::EPSILON / 2.0);
        let draw = Draw { temperature: p.temperature, top_p: p.top_p, min_p: p.min_p, u };
        let slot = penalty.then_some((&window, (base + 1 + step) % n));
        sample::sample_top_k(&values, &candidates, draw, &next, slot)?;
        Ok(next)
    };
    let first = Tensor::from_slice(backend, &[first], &[1])?;
    pipelined_decode(model, state, first, pos, steps, next_token, |token| {
        history.push(token);
        on_token(token)
    })
}

/// Where the host's time went in [`greedy_decode`] and [`sampled_decode`]: a wait near zero means the
/// device finished each token before the host had recorded the next one (bound by the host, not the
/// device).
#[derive(Clone, Copy, Debug, Default)]
pub struct HostTimes {
    /// Recording the forward passes and submitting them.
    pub record: Duration,
    /// Waiting for the device to finish the previous token.
    pub wait: Duration,
}

/// Turns tokens into streamed text: EOS, stop strings and the token budget end it.
struct Emitter<'a, F: FnMut(&str)> {
    tokenizer: &'a Tokenizer,
    stop: &'a [String],
    max_tokens: usize,
    decoder: StreamDecoder,
    text: String,
    generated: usize,
    on_text: F,
}

impl<F: FnMut(&str)> Emitter<'_, F> {
    /// Takes one sampled token; returns whether generation goes on.
    fn push(&mut self, token: u32) -> Result<bool> {
        if self.tokenizer.is_eos(token) {
            return Ok(false);
        }
        self.generated += 1;
        let piece = self.decoder.push(self.tokenizer, token)?;
        if !piece.is_empty() {
            self.text.push_str(&piece);
            if let Some(cut) = self.stop.iter().filter_map(|s| self.text.find(s.as_str())).min() {
                let keep = cut.saturating_sub(self.text.len() - piece.len());
                (self.on_text)(&piece[..keep.min(piece.len())]);
                return Ok(false);
            }
            (self.on_text)(&piece);
        }
        Ok(self.generated < self.max_tokens)
    }
}

/// Generates from `prompt` (token ids), calling `on_text` with each new piece of text. Greedy decoding
/// keeps each token on the device ([`greedy_decode`]); so does sampling on a GPU with a top-k of at most
/// 64, which draws there ([`sampled_decode`]); otherwise each step's logits come back to the host.
pub fn generate(
    model: &Model,
    tokenizer: &Tokenizer,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_text: impl FnMut(&str),
) -> Result<Stats> {
    if prompt.is_empty() {
        return Err(Error::Argument {
            name: "prompt",
            value: "\"\"".into(),
            reason: "needs at least one token".into(),
        });
    }
    if opts.stop.iter().any(String::is_empty) {
        // Every text contains the empty string: it would stop after the first token.
        return Err(Error::Argument { name: "stop", value: "\"\"".into(), reason: "must not be empty".into() });
    }
    let limit = model.max_seq_len();
    if prompt.len() >= limit {
        return Err(Error::ContextLength { what: "the prompt", needed: prompt.len(), limit });
    }
    let max_tokens = opts.max_tokens.min(limit - prompt.len());
    if max_tokens < opts.max_tokens {
        eprintln!("torchless: --max-tokens {} cut to {max_tokens} to fit the context of {limit}", opts.max_tokens);
    }
    let mut stats = Stats { prompt_tokens: prompt.len(), ..Default::default() };
    if max_tokens == 0 {
        return Ok(stats);
    }
    let mut sampler = Sampler::new(opts.sampling.clone())?;
    let mut state: State = model.new_state(prompt.len() + max_tokens)?;
    let mut out = Emitter {
        tokenizer,
        stop: &opts.stop,
        max_tokens,
        decoder: StreamDecoder::new(),
        text: String::new(),
        generated: 0,
        on_text,
    };

    let t0 = Instant::now();
    let logits = model.forward(&mut state, prompt, 0, Logits::Last)?;
    let mut t1 = None;
    if sampler.params.is_greedy() {
        let first = select::argmax(&logits)?;
        greedy_decode(model, &mut state, first, prompt.len(), max_tokens - 1, |token| {
            if t1.is_none() {
                stats.prefill_secs = t0.elapsed().as_secs_f64();
                t1 = Some(Instant::now());
            }
            out.push(token)
        })?;
    } else {
        let mut history = prompt.to_vec();
        let first = pick(&mut sampler, &logits, &history)?;
        stats.prefill_secs = t0.elapsed().as_secs_f64();
        t1 = Some(Instant::now());
        let pos = prompt.len();
        sampled_decode(model, &mut state, &mut sampler, &mut history, first, pos, max_tokens - 1, |token| {
            out.push(token)
        })?;
    }
    stats.decode_secs = t1.map_or(0.0, |t| t.elapsed().as_secs_f64());
    stats.generated_tokens = out.generated;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use torchless_kernels::Tensor;
    use torchless_kernels::testing::test_backends;

    /// Sampled decoding with the draw on the device (the GPU's path) yields the tokens that reading each
    /// step's candidates back and drawing on the host does, with the repeat penalty's ring of recent
    /// tokens wrapping several times.
    #[test]
    fn device_draws_decode_as_host_draws() {
        let Some(backend) = test_backends().into_iter().find(|b| b.is_gpu()) else {
            return; // test_backends has reported the GPU missing (and fails where one is required)
        };
        let loaded = crate::model::LoadedModel::load("tiny-llama", &backend, false).unwrap();
        let model = &loaded.model;
        let prompt = loaded.tokenizer.as_ref().unwrap().encode("The", true).unwrap();
        let steps = 200;
        let short_window = SamplingParams { repeat_penalty: 4.0, repeat_last_n: 5, ..Default::default() };
        let hot = SamplingParams { top_k: 64, temperature: 1.3, ..Default::default() };
        for params in [SamplingParams::default(), short_window, hot] {
            let mut runs = Vec::new();
            for device in [true, false] {
                let mut state = model.new_state(prompt.len() + steps + 1).unwrap();
                let mut sampler = Sampler::new(params.clone()).unwrap();
                let mut history = prompt.clone();
                let logits = model.forward(&mut state, &prompt, 0, Logits::Last).unwrap();
                let first = pick(&mut sampler, &logits, &history).unwrap();
                let mut tokens = Vec::new();
                let on_token = |t| {
                    tokens.push(t);
                    Ok(true)
                };
                let (s, h, pos) = (&mut state, &mut history, prompt.len());
                if device {
                    let k = params.top_k;
                    device_sampled_decode(model, s, &mut sampler, h, first, pos, steps, k, on_token).unwrap();
                } else {
                    host_sampled_decode(model, s, &mut sampler, h, first, pos, steps, on_token).unwrap();
                }
                assert_eq!(tokens.len(), steps + 1);
                assert_eq!(history[prompt.len()..], tokens[..]);
                runs.push(tokens);
            }
            assert_eq!(runs[0], runs[1], "{params:?}: device draws against host draws");
        }
    }

    /// `pick` draws the same tokens on every backend: on a GPU the repeat penalty is applied to the
    /// logits there and the device selects, on the CPU the sampler does both on the host.
    #[test]
    fn pick_draws_the_same_tokens_on_every_backend() {
        let vocab = 5000;
        let logits: Vec<f32> = (0..vocab as u64).map(|i| ((i * 2654435761) % 211) as f32 / 20.0 - 4.0).collect();
        let history: Vec<u32> = (0..300).map(|i| (i * 7919) % vocab as u32).collect();
        let cases = [
            SamplingParams::default(),
            SamplingParams { temperature: 0.0, ..Default::default() },
            SamplingParams { top_k: 0, ..Default::default() },
            SamplingParams { repeat_penalty: 1.0, ..Default::default() },
            SamplingParams { repeat_penalty: 0.7, top_k: 64, ..Default::default() },
        ];
        for params in cases {
            let mut drawn: Vec<(String, Vec<u32>)> = Vec::new();
            for backend in test_backends() {
                let mut sampler = Sampler::new(params.clone()).unwrap();
                let tokens: Vec<u32> = (0..40)
                    .map(|t| {
                        let x = Tensor::from_slice(&backend, &logits, &[1, vocab]).unwrap();
                        pick(&mut sampler, &x, &history[..200 + t]).unwrap()
                    })
                    .collect();
                drawn.push((backend.name().to_string(), tokens));
            }
            for (name, tokens) in &drawn[1..] {
                assert_eq!(tokens, &drawn[0].1, "{params:?}: {name} against {}", drawn[0].0);
            }
        }
    }
}
