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
