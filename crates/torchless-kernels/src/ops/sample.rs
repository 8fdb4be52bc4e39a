//! Drawing the next token on the device, so that a sampled decode runs ahead of the host as a greedy one
//! does: [`sample_top_k`] takes the candidates of [`super::select::topk`] (after
//! [`super::select::repeat_penalty`]) and a uniform draw made by the host's seeded generator, and writes
//! the token where the next decode step reads it, and into a ring of recent tokens for the penalty of
//! the steps after.
//!
//! The rules are those of the host's sampler (`torchless::sampling`): temperature, min-p, top-p, then
//! the candidate the draw lands on. The device computes in f32 where the host uses f64, so the two pick
//! the same token except where the draw falls within rounding of a boundary between two candidates.

use super::{common_backend, gpu_buffer, require_distinct, to_u32};
use crate::backend::Backend;
use crate::cpu;
use crate::dtype::DType;
use crate::error::{KernelError, Result};
use crate::gpu::{Dispatch, Workgroups};
use crate::tensor::Tensor;

crate::kernel_source!(SAMPLE, "sample");

#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    k: u32,
    slot: u32,
    window_len: u32,
    temperature: f32,
    top_p: f32,
    min_p: f32,
    u: f32,
    _pad: u32,
}

/// How [`sample_top_k`] draws.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Draw {
    /// 0 takes the best candidate.
    pub temperature: f32,
    /// In (0, 1]: the shortest best-first prefix whose probability reaches it is kept.
    pub top_p: f32,
    /// In [0, 1): candidates less likely than this times the best one are dropped.
    pub min_p: f32,
    /// The uniform draw, in [0, 1).
    pub u: f32,
}

/// Writes to `token` (u32 `[1]`) the token drawn from `k` candidates, `values` (f32 `[k]` or `[1, k]`, best
/// first as `topk` returns them) and their `ids` (u32, the same shape). With a `window` (u32 `[w]`, the
/// recent tokens that the repeat penalty reads) and a `slot < w`, the token is also written there.
/// NaN candidates are skipped; if every one is NaN the token is 0.
pub fn sample_top_k(
    values: &Tensor,
    ids: &Tensor,
    draw: Draw,
    token: &Tensor,
    window: Option<(&Tensor, usize)>,
) -> Result<()> {
    let op = "sample_top_k";
    let k = values.numel();
    let row = values.shape().len() == 1 || (values.shape().len() == 2 && values.shape()[0] == 1);
    if values.dtype() != DType::F32 || !row || k == 0 || k > super::select::TOPK_MAX {
        return Err(KernelError::Shape {
            op,
            detail: format!(
                "values must be f32 [k] with 1 <= k <= {}, found {} {:?}",
                super::select::TOPK_MAX,
                values.dtype(),
                values.shape()
            ),
        });
    }
    if ids.dtype() != DType::U32 || ids.shape() != values.shape() {
        return Err(KernelError::Shape {
            op,
            detail: format!(
                "ids must be u32 {:?} like values, found {} {:?}",
                values.shape(),
                ids.dtype(),
                ids.shape()
            ),
        });
    }
    if token.dtype() != DType::U32 || token.numel() != 1 {
        return Err(KernelError::Shape {
            op,
            detail: format!("token must be u32 [1], found {} {:?}", token.dtype(), token.shape()),
        });
    }
    check_draw(op, draw)?;
    require_distinct(op, "token", token, &[values, ids])?;
    if let Some((w, _)) = window {
        require_distinct(op, "window", w, &[values, ids])?;
    }
    let (window_len, slot) = match window {
        Some((w, slot)) => {
            if w.dtype() != DType::U32 || w.shape().len() != 1 || slot >= w.numel() {
                return Err(KernelError::Argument {
                    op,
                    name: "window slot",
                    value: slot.to_string(),
                    reason: format!("needs a u32 [w] window with slot < w, found {} {:?}", w.dtype(), w.shape()),
                });
            }
            (w.numel(), slot)
        }
        None => (0, 0),
    };
    let mut tensors = vec![values, ids, token];
    tensors.extend(window.map(|(w, _)| w));
    match common_backend(op, &tensors)? {
        Backend::Cpu => {
            let picked = draw_top_k(&cpu::read_f32(values), &cpu::read_u32(ids), draw);
            cpu::write_u32(token, &[picked]);
            if let Some((w, slot)) = window {
                let mut ring = cpu::read_u32(w);
                ring[slot] = picked;
                cpu::write_u32(w, &ring);
            }
            Ok(())
        }
        Backend::Gpu(ctx) => {
            let params = Params {
                k: k as u32,
                slot: to_u32(op, "slot", slot)?,
                window_len: to_u32(op, "window", window_len)?,
                temperature: draw.temperature,
                top_p: draw.top_p,
                min_p: draw.min_p,
                u: draw.u,
                _pad: 0,
            };
            // Without a window the token buffer stands in for it (window_len 0: never written).
            let ring = window.map_or(gpu_buffer(token), |(w, _)| gpu_buffer(w));
            ctx.dispatch(Dispatch {
                kernel: &SAMPLE,
                entry: "sample_top_k",
                constants: &[],
                params: Some(bytemuck::bytes_of(&params)),
                buffers: &[gpu_buffer(values), gpu_buffer(ids), gpu_buffer(token), ring],
                workgroups: Workgroups::Linear(1),
            })
        }
    }
}

fn check_draw(op: &'static str, d: Draw) -> Result<()> {
    let bad = |name, value: f32, reason: &str| {
        Err(KernelError::Argument { op, name, value: value.to_string(), reason: reason.into() })
    };
    if !(d.temperature.is_finite() && d.temperature >= 0.0) {
        return bad("temperature", d.temperature, "must be a finite number >= 0");
    }
    if !(d.top_p > 0.0 && d.top_p <= 1.0) {
        return bad("top_p", d.top_p, "must be in (0, 1]");
    }
    if !(d.min_p >= 0.0 && d.min_p < 1.0) {
        return bad("min_p", d.min_p, "must be in [0, 1)");
    }
    if !(d.u >= 0.0 && d.u < 1.0) {
        return bad("u", d.u, "must be in [0, 1)");
    }
    Ok(())
}

/// The CPU's draw, step for step the kernel's (kernels/sample.wgsl), in f32.
fn draw_top_k(values: &[f32], ids: &[u32], d: Draw) -> u32 {
    let Some(first) = values.iter().position(|v| !v.is_nan()) else {
        return 0;
    };
    let best = values[first];
    if d.temperature == 0.0 || !best.is_finite() {
        return ids[first];
    }
    let weight = |v: f32| if v.is_finite() { ((v - best) / d.temperature).max(-200.0).exp() } else { 0.0 };
    let mut prob: Vec<f32> = values[first..].iter().map(|&v| weight(v)).collect();
    let total: f32 = prob.iter().sum();
    let floor = d.min_p / total;
    let mut end = 0;
    for (i, p) in prob.iter_mut().enumerate() {
        *p /= total;
        if *p >= floor {
            end = i + 1;
        }
    }
    let mut keep = end;
    let mut cum = 0.0f32;
    for (i, p) in prob[..end].iter().enumerate() {
        cum += p;
        if cum >= d.top_p {
            keep = i + 1;
            break;
        }
    }
    let mass: f32 = prob[..keep].iter().sum();
    let mut r = d.u * mass;
    for (i, p) in prob[..keep].iter().enumerate() {
        r -= p;
        if r <= 0.0 {
            return ids[first + i];
        }
    }
    ids[first + keep - 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::select::topk;
    use crate::testing::{Rng, test_backends};

    /// The draw in f64 from the sorted candidates, written from the rules rather than from the kernel,
    /// with the distance of the draw from the nearest boundary between two candidates (relative to the
    /// kept mass): where that is tiny, f32 rounding may pick the neighbour.
    fn reference(values: &[f32], ids: &[u32], d: Draw) -> (u32, f64) {
        let c: Vec<(u32, f64)> =
            ids.iter().zip(values).filter(|(_, v)| !v.is_nan()).map(|(&i, &v)| (i, v as f64)).collect();
        if c.is_empty() {
            return (0, 1.0);
        }
        if d.temperature == 0.0 || !c[0].1.is_finite() {
            return (c[0].0, 1.0);
        }
        let w: Vec<f64> = c.iter().map(|&(_, v)| ((v - c[0].1) / d.temperature as f64).exp()).collect();
        let total: f64 = w.iter().sum();
        let floor = d.min_p as f64 / total;
        // How close a cut comes to flipping: a probability near min-p's floor, a running sum near top-p.
        let mut cut = 1.0f64;
        if d.min_p > 0.0 {
            cut = w.iter().map(|w| (w / total - floor).abs()).fold(cut, f64::min);
        }
        let probs: Vec<f64> = w.iter().map(|w| w / total).filter(|&p| p >= floor).collect();
        let mut keep = probs.len();
        let mut cum = 0.0;
        for (i, p) in probs.iter().enumerate() {
            cum += p;
            if d.top_p < 1.0 {
                cut = cut.min((cum - d.top_p as f64).abs());
            }
            if cum >= d.top_p as f64 && keep == probs.len() {
                keep = i + 1;
            }
        }
        let mass: f64 = probs[..keep].iter().sum();
        let r = d.u as f64 * mass;
        let mut edge = 0.0;
        let mut margin = cut;
        let mut at = keep - 1;
        for (i, p) in probs[..keep].iter().enumerate() {
            edge += p;
            margin = margin.min((r - edge).abs() / mass);
            if r <= edge && at == keep - 1 {
                at = i;
            }
        }
        (c[at].0, margin)
    }

    #[test]
    fn draws_as_the_f64_rules_on_every_backend() {
        let mut rng = Rng::new(11);
        let mut checked = 0;
        for backend in test_backends() {
            for case in 0..120 {
                let n = [64usize, 300, 5000][case % 3];
                // Few distinct values (ties), -inf, and a NaN now and then.
                let mut logits: Vec<f32> = (0..n).map(|_| (rng.below(40) as f32) / 6.0).collect();
                logits[rng.below(n as u32) as usize] = f32::NEG_INFINITY;
                if case % 10 == 3 {
                    logits[rng.below(n as u32) as usize] = f32::NAN;
                }
                let k = [1usize, 5, 40, 64][case % 4];
                let d = Draw {
                    temperature: [0.0, 0.3, 0.8, 1.7][(case / 4) % 4],
                    top_p: [1.0, 0.95, 0.5][case % 3],
                    min_p: [0.0, 0.05, 0.3][(case / 3) % 3],
                    u: rng.uniform(0.0, 1.0).min(0.99999994),
                };
                let x = Tensor::from_slice(&backend, &logits, &[1, n]).unwrap();
                let (values, ids) = topk(&x, k).unwrap();
                let token = Tensor::from_slice(&backend, &[7u32], &[1]).unwrap();
                sample_top_k(&values, &ids, d, &token, None).unwrap();
                let got = token.to_vec::<u32>().unwrap()[0];
                let (want, margin) = reference(&values.to_vec().unwrap(), &ids.to_vec().unwrap(), d);
                if margin > 1e-5 {
                    assert_eq!(got, want, "{d:?}, k {k}, n {n} on {}", backend.name());
                    checked += 1;
                }
            }
        }
        eprintln!("{checked} draws checked");
        assert!(checked > 100, "only {checked} draws away from a boundary");
    }

    #[test]
    fn nan_candidates_are_skipped_and_the_window_gets_the_token() {
        for backend in test_backends() {
            let values = Tensor::from_slice(&backend, &[f32::NAN, 2.0, 1.0, f32::NEG_INFINITY], &[4]).unwrap();
            let ids = Tensor::from_slice(&backend, &[9u32, 4, 6, 1], &[4]).unwrap();
            let window = Tensor::from_slice(&backend, &[u32::MAX; 3], &[3]).unwrap();
            let token = Tensor::from_slice(&backend, &[0u32], &[1]).unwrap();
            let greedy = Draw { temperature: 0.0, top_p: 1.0, min_p: 0.0, u: 0.99 };
            sample_top_k(&values, &ids, greedy, &token, Some((&window, 2))).unwrap();
            assert_eq!(token.to_vec::<u32>().unwrap(), [4], "on {}", backend.name());
            assert_eq!(window.to_vec::<u32>().unwrap(), [u32::MAX, u32::MAX, 4]);
            // p(4) = 1 / (1 + e^-1) = 0.731: a draw above that takes 6; -inf is never drawn.
            let hot = Draw { temperature: 1.0, top_p: 1.0, min_p: 0.0, u: 0.74 };
            sample_top_k(&values, &ids, hot, &token, Some((&window, 0))).unwrap();
            assert_eq!(token.to_vec::<u32>().unwrap(), [6], "on {}", backend.name());
            assert_eq!(window.to_vec::<u32>().unwrap(), [6, u32::MAX, 4]);
            sample_top_k(&values, &ids, Draw { u: 0.999_999_9, ..hot }, &token, None).unwrap();
            assert_eq!(token.to_vec::<u32>().unwrap(), [6], "on {}", backend.name());
            let nan = Tensor::from_slice(&backend, &[f32::NAN; 2], &[2]).unwrap();
            let two = Tensor::from_slice(&backend, &[3u32, 5], &[2]).unwrap();
            sample_top_k(&nan, &two, hot, &token, None).unwrap();
            assert_eq!(token.to_vec::<u32>().unwrap(), [0], "all NaN on {}", backend.name());
        }
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        for backend in test_backends() {
            let values = Tensor::from_slice(&backend, &[1.0f32, 0.5], &[2]).unwrap();
            let ids = Tensor::from_slice(&backend, &[0u32, 1], &[2]).unwrap();
            let token = Tensor::from_slice(&backend, &[0u32], &[1]).unwrap();
            let ok = Draw { temperature: 1.0, top_p: 1.0, min_p: 0.0, u: 0.5 };
            let err = |r: Result<()>| r.expect_err("bad input accepted").to_string();
            for (d, name) in [
                (Draw { temperature: -1.0, ..ok }, "temperature"),
                (Draw { top_p: 0.0, ..ok }, "top_p"),
                (Draw { min_p: 1.0, ..ok }, "min_p"),
                (Draw { u: 1.0, ..ok }, "u"),
            ] {
                assert!(err(sample_top_k(&values, &ids, d, &token, None)).contains(name), "{name}");
            }
            let short = Tensor::from_slice(&backend, &[0u32], &[1]).unwrap();
            assert!(err(sample_top_k(&values, &short, ok, &token, None)).contains("ids"));
            assert!(err(sample_top_k(&values, &ids, ok, &ids, None)).contains("token"));
            assert!(err(sample_top_k(&values, &ids, ok, &token, Some((&short, 1)))).contains("slot"));
            let one = Tensor::from_slice(&backend, &[1.0f32], &[1]).unwrap();
            let one_id = Tensor::from_slice(&backend, &[0u32], &[1]).unwrap();
            assert!(err(sample_top_k(&one, &one_id, ok, &one_id, None)).contains("token"));
            assert!(err(sample_top_k(&one, &one_id, ok, &token, Some((&one_id, 0)))).contains("window"));
            let many = Tensor::from_slice(&backend, &[0.0f32; 65], &[65]).unwrap();
            assert!(err(sample_top_k(&many, &ids, ok, &token, None)).contains("k <= 64"));
        }
    }
}

#[cfg(test)]
mod layout_tests {
    #[test]
    fn params_match_the_wgsl_struct() {
        let size = crate::testing::wgsl_struct_size(&super::SAMPLE, "Params");
        assert_eq!(size as usize, std::mem::size_of::<super::Params>());
    }
}
