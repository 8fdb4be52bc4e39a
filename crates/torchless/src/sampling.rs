//! Choosing the next token: greedy, or temperature with top-k, top-p and min-p, a repetition penalty,
//! and a seeded generator for reproducible output.

use crate::error::{Error, Result};

/// The largest top-k the GPU selects (and draws from) on the device; larger k (or none) reads back all
/// logits.
pub const DEVICE_TOP_K_MAX: usize = 64;

#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 means no top-k limit.
    pub top_k: usize,
    pub top_p: f32,
    pub min_p: f32,
    /// 1 means none; >1 discourages tokens already in the context.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.1,
            repeat_last_n: 64,
            seed: 0x5eed,
        }
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, repeat_penalty: 1.0, ..Default::default() }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, value: f32, reason: &str| Error::Argument {
            name,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(bad("temperature", self.temperature, "must be a finite number ≥ 0 (0 is greedy)"));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(bad("top-p", self.top_p, "must be in (0, 1]"));
        }
        if !(self.min_p >= 0.0 && self.min_p < 1.0) {
            return Err(bad("min-p", self.min_p, "must be in [0, 1)"));
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return Err(bad("repeat-penalty", self.repeat_penalty, "must be a positive number (1 disables it)"));
        }
        Ok(())
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0 && self.repeat_penalty == 1.0
    }

    /// The top-k the device can select the candidates with (once any repeat penalty is applied to the
    /// logits there), instead of reading all logits back.
    pub fn device_top_k(&self) -> Option<usize> {
        (self.top_k > 0 && self.top_k <= DEVICE_TOP_K_MAX).then_some(self.top_k)
    }
}

/// SplitMix64: small, seedable, the same on every platform.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub struct Sampler {
    pub params: SamplingParams,
    rng: Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Sampler> {
        params.validate()?;
        let rng = Rng(params.seed);
        Ok(Sampler { params, rng })
    }

    /// Picks a token from the full logits of one position; `history` is the context so far.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> u32 {
        let mut logits = logits.to_vec();
        self.apply_repeat_penalty(&mut logits, history);
        let candidates: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
        self.sample_candidates(candidates)
    }

    /// The distinct tokens of the last `repeat_last_n` of `history`, whose logits the repeat penalty
    /// scales (none without a penalty).
    pub fn penalized_ids(&self, history: &[u32]) -> Vec<u32> {
        if self.params.repeat_penalty == 1.0 {
            return Vec::new();
        }
        let start = history.len().saturating_sub(self.params.repeat_last_n);
        let mut seen = std::collections::HashSet::new();
        history[start..].iter().copied().filter(|&id| seen.insert(id)).collect()
    }

    /// Positive logits times 1 / penalty, others times the penalty: the same products as the device's
    /// `select::repeat_penalty`, so both pick the same tokens.
    fn apply_repeat_penalty(&self, logits: &mut [f32], history: &[u32]) {
        let p = self.params.repeat_penalty;
        for id in self.penalized_ids(history) {
            if let Some(l) = logits.get_mut(id as usize) {
                *l *= if *l > 0.0 { 1.0 / p } else { p };
            }
        }
    }

    /// The uniform draw in [0, 1) of the next sampled token: one a token whenever the temperature is
    /// above 0 (whatever the candidates), none for greedy picking, so that a draw made on the device
    /// (`torchless_kernels::ops::sample`) takes the generator's values in the same order.
    pub fn next_draw(&mut self) -> f64 {
        if self.params.temperature == 0.0 { 0.0 } else { self.rng.next_f64() }
    }

    /// Picks a token from (id, logit) candidates: all logits, or the device's top-k. Work is linear in
    /// the candidates: only those that top-k and min-p leave can be drawn, and only they are sorted (a
    /// sort of Llama-3's 128k logits cost 4.4 ms a token on the 2-core machine).
    pub fn sample_candidates(&mut self, mut c: Vec<(u32, f32)>) -> u32 {
        let u = self.next_draw();
        c.retain(|(_, l)| !l.is_nan());
        // Larger logits first; ties go to the lower id.
        let order = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let Some(&best) = c.iter().min_by(|a, b| order(a, b)) else {
            return 0;
        };
        if self.params.temperature == 0.0 || !best.1.is_finite() {
            return best.0;
        }
        let k = self.params.top_k;
        if k > 0 && k < c.len() {
            c.select_nth_unstable_by(k - 1, order);
            c.truncate(k);
        }
        let t = self.params.temperature as f64;
        let max = best.1 as f64;
        // Each candidate with its unnormalized probability, computed once.
        let mut c: Vec<((u32, f32), f64)> = c.into_iter().map(|x| (x, ((x.1 as f64 - max) / t).exp())).collect();
        let total: f64 = c.iter().map(|&(_, w)| w).sum();
        // min-p: tokens below min_p times the most likely one's probability (1 / total) are never drawn.
        let floor = self.params.min_p as f64 / total;
        c.retain(|&(_, w)| w / total >= floor);
        c.sort_unstable_by(|a, b| order(&a.0, &b.0));
        let probs: Vec<f64> = c.iter().map(|&(_, w)| w / total).collect();
        // top-p: the smallest prefix whose mass reaches p.
        let mut keep = probs.len();
        let mut cum = 0.0;
        for (i, p) in probs.iter().enumerate() {
            cum += p;
            if cum >= self.params.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        let mass: f64 = probs[..keep].iter().sum();
        let mut r = u * mass;
        for (i, p) in probs[..keep].iter().enumerate() {
            r -= p;
            if r <= 0.0 {
                return c[i].0.0;
            }
        }
        c[keep - 1].0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_largest_logit_and_ties_go_to_the_lower_id() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0], &[]), 1);
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let run = |seed| {
            let mut s = Sampler::new(SamplingParams { seed, ..Default::default() }).unwrap();
            (0..20).map(|_| s.sample(&logits, &[])).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_k_one_and_tiny_top_p_are_greedy() {
        let logits = [0.0f32, 1.0, 5.0, 2.0];
        for p in [
            SamplingParams { top_k: 1, ..Default::default() },
            SamplingParams { top_k: 0, top_p: 1e-6, min_p: 0.0, ..Default::default() },
            SamplingParams { top_k: 0, min_p: 0.9, ..Default::default() },
        ] {
            let mut s = Sampler::new(p).unwrap();
            for _ in 0..50 {
                assert_eq!(s.sample(&logits, &[]), 2);
            }
        }
    }

    #[test]
    fn sampling_follows_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln()]; // p = 1/4, 3/4 at temperature 1
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            ..Default::default()
        };
        let mut s = Sampler::new(params).unwrap();
        let ones = (0..20000).filter(|_| s.sample(&logits, &[]) == 1).count();
        assert!((ones as f64 / 20000.0 - 0.75).abs() < 0.02, "{ones}");
    }

    #[test]
    fn repeat_penalty_lowers_seen_tokens() {
        let mut s =
            Sampler::new(SamplingParams { temperature: 0.0, repeat_penalty: 10.0, ..Default::default() }).unwrap();
        assert_eq!(s.sample(&[1.0, 2.0, 1.5], &[1]), 2);
    }

    /// The linear-time selection draws what sorting every candidate first drew (the sampler before it),
    /// for each combination of top-k, top-p and min-p, on logits with ties.
    #[test]
    fn selecting_before_sorting_draws_the_same_tokens() {
        fn reference(params: &SamplingParams, rng: &mut Rng, mut c: Vec<(u32, f32)>) -> u32 {
            c.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            if params.temperature == 0.0 {
                return c[0].0;
            }
            if params.top_k > 0 {
                c.truncate(params.top_k);
            }
            let (t, max) = (params.temperature as f64, c[0].1 as f64);
            let probs: Vec<f64> = c.iter().map(|&(_, l)| ((l as f64 - max) / t).exp()).collect();
            let total: f64 = probs.iter().sum();
            let probs: Vec<f64> = probs.iter().map(|p| p / total).collect();
            let mut keep = probs.len();
            let mut cum = 0.0;
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= params.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            let floor = params.min_p as f64 * probs[0];
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
            let mass: f64 = probs[..keep].iter().sum();
            let mut r = rng.next_f64() * mass;
            for (i, p) in probs[..keep].iter().enumerate() {
                r -= p;
                if r <= 0.0 {
                    return c[i].0;
                }
            }
            c[keep - 1].0
        }
        // Few distinct values (ties), spread over a range where min-p and top-p both cut.
        let logits: Vec<f32> = (0..3000u64).map(|i| ((i * 2654435761) % 97) as f32 / 12.0).collect();
        let candidates: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, l)).collect();
        for top_k in [0, 1, 40, 5000] {
            for (top_p, min_p) in [(1.0, 0.0), (0.95, 0.05), (0.5, 0.0), (1.0, 0.3)] {
                for temperature in [0.0, 0.7, 1.5] {
                    let params = SamplingParams { temperature, top_k, top_p, min_p, ..Default::default() };
                    let mut s = Sampler::new(params.clone()).unwrap();
                    let mut rng = Rng(params.seed);
                    for draw in 0..30 {
                        let want = reference(&params, &mut rng, candidates.clone());
                        assert_eq!(s.sample_candidates(candidates.clone()), want, "{params:?}, draw {draw}");
                    }
                }
            }
        }
    }

    #[test]
    fn bad_parameters_are_errors() {
        for p in [
            SamplingParams { temperature: -1.0, ..Default::default() },
            SamplingParams { top_p: 0.0, ..Default::default() },
            SamplingParams { min_p: 1.0, ..Default::default() },
            SamplingParams { repeat_penalty: 0.0, ..Default::default() },
        ] {
            assert!(Sampler::new(p).is_err());
        }
    }
}
