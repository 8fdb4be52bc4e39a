/// The recurrence's inputs, in the order of the paper's notation.
fn xin<'a>(q: &'a Tensor, k: &'a Tensor, v: &'a Tensor, i_pre: &'a Tensor, f_pre: &'a Tensor) -> MlstmInputs<'a> {
    MlstmInputs { q, k, v, i_pre, f_pre }
}

fn opts(gate_soft_cap: Option<f32>, eps: f32) -> MlstmOptions {
    MlstmOptions { gate_soft_cap, eps }
}

use super::reference::State64;
use super::*;
use crate::testing::{Rng, Tolerance, assert_close, test_backends, to_f64};

/// h and state after f32 recurrences of up to a few hundred steps, against f64.
const TOL: Tolerance = Tolerance { atol: 5e-5, rtol: 5e-4 };

/// Random inputs of one call in token-major layout.
#[derive(Clone)]
struct Inputs {
    dims: (usize, usize, usize, usize, usize),
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    ig: Vec<f32>,
    fg: Vec<f32>,
}

impl Inputs {
    fn random(rng: &mut Rng, dims: (usize, usize, usize, usize, usize), gate: (f32, f32)) -> Inputs {
        let (b, s, nh, dqk, dv) = dims;
        Inputs {
            dims,
            q: rng.vec(b * s * nh * dqk, -1.0, 1.0),
            k: rng.vec(b * s * nh * dqk, -1.0, 1.0),
            v: rng.vec(b * s * nh * dv, -1.0, 1.0),
            ig: rng.vec(b * s * nh, gate.0, gate.1),
            fg: rng.vec(b * s * nh, gate.0, gate.1),
        }
    }

    /// Token t only, in the step layout.
    fn token(&self, t: usize) -> Inputs {
        let (b, s, nh, dqk, dv) = self.dims;
        let pick = |x: &[f32], d: usize| -> Vec<f32> {
            (0..b).flat_map(|bi| x[((bi * s + t) * nh) * d..][..nh * d].to_vec()).collect()
        };
        Inputs {
            dims: (b, 1, nh, dqk, dv),
            q: pick(&self.q, dqk),
            k: pick(&self.k, dqk),
            v: pick(&self.v, dv),
            ig: pick(&self.ig, 1),
            fg: pick(&self.fg, 1),
        }
    }

    fn reference(&self, state: &mut State64, cap: Option<f32>, eps: f32) -> Vec<f64> {
        reference::recurrence(self.dims, &self.q, &self.k, &self.v, &self.ig, &self.fg, state, cap, eps)
    }

    /// (q, k, v, i, f) on `backend`, shaped for a step (`step`) or for the chunkwise form.
    fn tensors(&self, backend: &Backend, step: bool) -> [Tensor; 5] {
        let (b, s, nh, dqk, dv) = self.dims;
        let t = |x: &[f32], shape: &[usize]| Tensor::from_slice(backend, x, shape).unwrap();
        if step {
            [
                t(&self.q, &[b, nh, dqk]),
                t(&self.k, &[b, nh, dqk]),
                t(&self.v, &[b, nh, dv]),
                t(&self.ig, &[b, nh]),
                t(&self.fg, &[b, nh]),
            ]
        } else {
            [
                t(&self.q, &[b, s, nh, dqk]),
                t(&self.k, &[b, s, nh, dqk]),
                t(&self.v, &[b, s, nh, dv]),
                t(&self.ig, &[b, s, nh]),
                t(&self.fg, &[b, s, nh]),
            ]
        }
    }
}

/// A zero state, or a random one as a previous sequence might have left it (m of either sign).
fn initial_state(rng: &mut Rng, (b, _, nh, dqk, dv): (usize, usize, usize, usize, usize), zero: bool) -> State64 {
    let v = |rng: &mut Rng, n: usize, lo: f32, hi: f32| -> Vec<f64> {
        if zero { vec![0.0; n] } else { rng.vec(n, lo, hi).into_iter().map(|x| x as f64).collect() }
    };
    State64 {
        c: v(rng, b * nh * dqk * dv, -0.5, 0.5),
        n: v(rng, b * nh * dqk, -0.5, 0.5),
        m: v(rng, b * nh, -3.0, 3.0),
    }
}

fn state_on(backend: &Backend, s: &State64, (b, _, nh, dqk, dv): (usize, usize, usize, usize, usize)) -> MlstmState {
    let f = |x: &[f64]| x.iter().map(|&v| v as f32).collect::<Vec<f32>>();
    MlstmState {
        c: Tensor::from_slice(backend, &f(&s.c), &[b, nh, dqk, dv]).unwrap(),
        n: Tensor::from_slice(backend, &f(&s.n), &[b, nh, dqk]).unwrap(),
        m: Tensor::from_slice(backend, &f(&s.m), &[b, nh]).unwrap(),
    }
}

fn assert_state(what: &str, got: &MlstmState, want: &State64, tol: Tolerance) {
    assert_close(&format!("{what}: C"), &got.c.to_f32_vec().unwrap(), &want.c, tol);
    assert_close(&format!("{what}: n"), &got.n.to_f32_vec().unwrap(), &want.n, tol);
    assert_close(&format!("{what}: m"), &got.m.to_f32_vec().unwrap(), &want.m, tol);
}

fn assert_finite(what: &str, v: &[f32]) {
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        panic!("{what}: non-finite value {} at index {i} of {}", v[i], v.len());
    }
}

/// Runs the tokens of `inp` one mlstm_step at a time; returns h in the token-major layout.
fn run_steps(backend: &Backend, inp: &Inputs, state: &MlstmState, cap: Option<f32>, eps: f32) -> Vec<f32> {
    let (b, s, nh, _, dv) = inp.dims;
    let mut h = vec![0.0f32; b * s * nh * dv];
    for t in 0..s {
        let tok = inp.token(t);
        let [q, k, v, i, f] = tok.tensors(backend, true);
        let ht = mlstm_step(xin(&q, &k, &v, &i, &f), state, opts(cap, eps)).unwrap().to_f32_vec().unwrap();
        for bi in 0..b {
            h[((bi * s + t) * nh) * dv..][..nh * dv].copy_from_slice(&ht[bi * nh * dv..][..nh * dv]);
        }
    }
    h
}

#[test]
fn log_sigmoid_is_finite_and_accurate_everywhere() {
    for x in [-1e30f32, -100.0, -50.0, -3.0, -1e-3, 0.0, 1e-3, 3.0, 50.0, 100.0, 1e30] {
        let x64 = x as f64;
        // logσ(x) = −ln(1 + e^−x) = x − ln(1 + e^x), the form whose exponential cannot overflow.
        let want = if x64 >= 0.0 { -(-x64).exp().ln_1p() } else { x64 - x64.exp().ln_1p() };
        let got = log_sigmoid(x);
        assert!(got.is_finite() && got <= 0.0, "logσ({x}) = {got}");
        assert!((got as f64 - want).abs() <= 1e-6 * want.abs().max(1e-30), "logσ({x}) = {got}, want {want}");
    }
}

#[test]
fn step_matches_the_f64_recurrence() {
    let mut rng = Rng::new(51);
    for backend in test_backends() {
        for (i, &(b, nh, dqk, dv)) in [
            // DV not a multiple of 4: scalar columns; otherwise vec4 columns, 8 per workgroup (64, 516, 4400:
            // several workgroups a head, the last one partly empty for 516). DQK 256 fills the rows a thread
            // loads up front at 256 invocations (xLSTM-7B's), 300 runs past them.
            (1, 1, 1, 1),
            (2, 3, 5, 7),
            (1, 2, 33, 17),
            (1, 1, 64, 130),
            (2, 1, 3, 257),
            (1, 2, 33, 12),
            (2, 3, 16, 64),
            (1, 1, 7, 516),
            (1, 1, 5, 4400),
            (1, 2, 256, 64),
            (1, 1, 300, 36),
        ]
        .iter()
        .enumerate()
        {
            let dims = (b, 9, nh, dqk, dv);
            let inp = Inputs::random(&mut rng, dims, (-6.0, 6.0));
            let mut want_state = initial_state(&mut rng, dims, i % 2 == 0);
            let state = state_on(&backend, &want_state, dims);
            let eps = [1e-6, 0.0, 1e-3][i % 3];
            // No cap, xLSTM-7B's, and one that bends the (−6, 6) gates hard.
            let cap = [None, Some(15.0), Some(2.5), None][i % 4];
            let want = inp.reference(&mut want_state, cap, eps);
            let got = run_steps(&backend, &inp, &state, cap, eps);
            let what = format!("mlstm_step B{b} NH{nh} DQK{dqk} DV{dv} cap {cap:?} on {}", backend.name());
            assert_close(&format!("{what}: h"), &got, &want, TOL);
            assert_state(&what, &state, &want_state, TOL);
        }
    }
}

/// The step with the output-gated head norm (fused into the state launch for DV a multiple of 4 on the
/// GPU, the two ops otherwise) against the f64 recurrence and norm, over several steps.
#[test]
fn step_gated_norm_matches_the_f64_reference() {
    let mut rng = Rng::new(58);
    for backend in test_backends() {
        for (i, &(b, nh, dqk, dv)) in [
            (1, 1, 1, 1),
            (1, 2, 33, 17),
            (2, 1, 3, 257),
            (1, 2, 33, 12),
            (2, 3, 16, 64),
            (1, 1, 7, 516),
            (1, 1, 5, 4400),
            // DQK past the fused launch's 256 invocations: several rows of n each.
            (1, 1, 1100, 8),
        ]
        .iter()
        .enumerate()
        {
            let dims = (b, 4, nh, dqk, dv);
            let width = nh * dv;
            let inp = Inputs::random(&mut rng, dims, (-6.0, 6.0));
            let mut want_state = initial_state(&mut rng, dims, i % 2 == 0);
            let state = state_on(&backend, &want_state, dims);
            let cap = [Some(15.0), None][i % 2];
            let wdtype = DType::FLOATS[i % 3];
            let w = crate::testing::round_to(&rng.vec(width, 0.5, 1.5), wdtype);
            let bias = crate::testing::round_to(&rng.vec(width, -1.0, 1.0), wdtype);
            let wt = Tensor::from_f32(&backend, &w, &[width], wdtype).unwrap();
            let bt = Tensor::from_f32(&backend, &bias, &[width], wdtype).unwrap();
            let with_b = i % 3 == 1;
            for t in 0..4 {
                let tok = inp.token(t);
                // Output-gate pre-activations with saturated ±50 among them.
                let o: Vec<f32> = rng
                    .vec(b * width, -8.0, 8.0)
                    .into_iter()
                    .enumerate()
                    .map(|(j, v)| [v, 50.0, v, -50.0][j % 4])
                    .collect();
                let h = tok.reference(&mut want_state, cap, 1e-6);
                let h32: Vec<f32> = h.iter().map(|&x| x as f32).collect();
                let want = reference::multihead_layernorm(
                    &h32,
                    width,
                    nh,
                    Some(&w),
                    with_b.then_some(bias.as_slice()),
                    Some(&o),
                    1e-5,
                );
                let [q, k, v, ig, fg] = tok.tensors(&backend, true);
                let ot = Tensor::from_slice(&backend, &o, &[b, nh, dv]).unwrap();
                let norm = GatedHeadNorm { gate: &ot, weight: Some(&wt), bias: with_b.then_some(&bt), eps: 1e-5 };
                let got = mlstm_step_gated_norm(xin(&q, &k, &v, &ig, &fg), &state, opts(cap, 1e-6), norm).unwrap();
                assert_eq!(got.shape(), [b, nh, dv]);
                let got = got.to_f32_vec().unwrap();
                let what = format!(
                    "mlstm_step_gated_norm B{b} NH{nh} DQK{dqk} DV{dv} cap {cap:?} w {wdtype} bias {with_b} step {t} \
                     on {}",
                    backend.name()
                );
                assert_finite(&what, &got);
                assert_close(&format!("{what}: y"), &got, &want, TOL);
                assert_state(&what, &state, &want_state, TOL);
            }
        }
    }
}

#[test]
fn chunkwise_equals_the_stepwise_recurrence() {
    let mut rng = Rng::new(52);
    for backend in test_backends() {
        for &s in &[1, 5, 63, 64, 65, 130] {
            // 100: chunks longer than the GPU kernel's 64-token blocks.
            for chunk in [64, 16, 100] {
                for zero in [true, false] {
                    for &(b, nh, dqk, dv) in &[(2, 2, 8, 12), (1, 1, 33, 17)] {
                        let dims = (b, s, nh, dqk, dv);
                        let inp = Inputs::random(&mut rng, dims, (-6.0, 6.0));
                        let init = initial_state(&mut rng, dims, zero);
                        let cap = match chunk {
                            16 => Some(3.0),
                            100 => Some(15.0),
                            _ => None,
                        };
                        let what = format!(
                            "mlstm_chunkwise S{s} chunk{chunk} cap {cap:?} {} B{b} NH{nh} DQK{dqk} DV{dv} on {}",
                            if zero { "zero state" } else { "non-zero state" },
                            backend.name()
                        );
                        let mut want_state = init.clone();
                        let want = inp.reference(&mut want_state, cap, 1e-6);

                        let state = state_on(&backend, &init, dims);
                        let [q, k, v, i, f] = inp.tensors(&backend, false);
                        let got = mlstm_chunkwise(xin(&q, &k, &v, &i, &f), &state, chunk, opts(cap, 1e-6)).unwrap();
                        assert_eq!(got.shape(), [b, s, nh, dv]);
                        let got = got.to_f32_vec().unwrap();
                        assert_close(&format!("{what}: h vs f64"), &got, &want, TOL);
                        assert_state(&format!("{what} vs f64"), &state, &want_state, TOL);

                        // Against mlstm_step on the same backend.
                        let step_state = state_on(&backend, &init, dims);
                        let stepped = run_steps(&backend, &inp, &step_state, cap, 1e-6);
                        assert_close(&format!("{what}: h vs steps"), &got, &to_f64(&stepped), TOL);
                        let as64 = |t: &Tensor| to_f64(&t.to_f32_vec().unwrap());
                        let step64 = State64 { c: as64(&step_state.c), n: as64(&step_state.n), m: as64(&step_state.m) };
                        assert_state(&format!("{what} vs steps"), &state, &step64, TOL);
                    }
                }
            }
        }
    }
}

#[test]
fn prefill_in_pieces_then_decode_continues_the_sequence() {
    let mut rng = Rng::new(53);
    let dims = (1, 100, 2, 16, 24);
    let inp = Inputs::random(&mut rng, dims, (-4.0, 6.0));
    let mut want_state = initial_state(&mut rng, dims, true);
    let cap = Some(4.0);
    let want = inp.reference(&mut want_state, cap, 1e-6);
    for backend in test_backends() {
        let state = MlstmState::zeros(&backend, 1, 2, 16, 24).unwrap();
        let mut got = Vec::new();
        // 37 + 40 tokens chunkwise (chunk 16), then 23 steps.
        for (t0, t1) in [(0, 37), (37, 77)] {
            let part = slice_tokens(&inp, t0, t1);
            let [q, k, v, i, f] = part.tensors(&backend, false);
            let h = mlstm_chunkwise(xin(&q, &k, &v, &i, &f), &state, 16, opts(cap, 1e-6)).unwrap();
            got.extend(h.to_f32_vec().unwrap());
        }
        got.extend(run_steps(&backend, &slice_tokens(&inp, 77, 100), &state, cap, 1e-6));
        let what = format!("prefill 37 + 40 then 23 steps on {}", backend.name());
        assert_close(&format!("{what}: h"), &got, &want, TOL);
        assert_state(&what, &state, &want_state, TOL);
    }
}

/// Gates soft-capped in f32 as the elementwise softcap does it.
fn gates_f32(g: &[f32], cap: Option<f32>) -> Vec<f32> {
    let op = cap.map(|cap| crate::ops::elementwise::Unary::Softcap { cap });
    g.iter().map(|&x| op.map_or(x, |op| op.apply(x))).collect()
}

/// Tokens t0..t1 of a B = 1 input.
fn slice_tokens(inp: &Inputs, t0: usize, t1: usize) -> Inputs {
    let (b, _, nh, dqk, dv) = inp.dims;
    assert_eq!(b, 1);
    let cut = |x: &[f32], d: usize| x[t0 * nh * d..t1 * nh * d].to_vec();
    Inputs {
        dims: (1, t1 - t0, nh, dqk, dv),
        q: cut(&inp.q, dqk),
        k: cut(&inp.k, dqk),
        v: cut(&inp.v, dv),
        ig: cut(&inp.ig, 1),
        fg: cut(&inp.fg, 1),
    }
}

#[test]
fn extreme_gates_over_long_sequences_stay_finite_and_exact() {
    let mut rng = Rng::new(54);
    let dims = (1, 300, 2, 16, 8);
    let n = 300 * 2;
    // Random ±50, all +50, all −50, and input −50 with forget +50 (the state is kept, nothing enters).
    let patterns: Vec<(&str, Vec<f32>, Vec<f32>)> = vec![
        (
            "random ±50",
            (0..n).map(|_| if rng.below(2) == 0 { 50.0 } else { -50.0 }).collect(),
            (0..n).map(|_| if rng.below(2) == 0 { 50.0 } else { -50.0 }).collect(),
        ),
        ("all +50", vec![50.0; n], vec![50.0; n]),
        ("all −50", vec![-50.0; n], vec![-50.0; n]),
        ("i −50, f +50", vec![-50.0; n], vec![50.0; n]),
        ("i +50, f −50", vec![50.0; n], vec![-50.0; n]),
    ];
    for backend in test_backends() {
        for (name, ig, fg) in &patterns {
            let mut inp = Inputs::random(&mut rng, dims, (0.0, 1.0));
            inp.ig = ig.clone();
            inp.fg = fg.clone();
            let run = |inp: &Inputs, chunk: Option<usize>, cap: Option<f32>| {
                let state = MlstmState::zeros(&backend, 1, 2, 16, 8).unwrap();
                let h = match chunk {
                    None => run_steps(&backend, inp, &state, cap, 1e-6),
                    Some(c) => {
                        let [q, k, v, i, f] = inp.tensors(&backend, false);
                        let h = mlstm_chunkwise(xin(&q, &k, &v, &i, &f), &state, c, opts(cap, 1e-6)).unwrap();
                        h.to_f32_vec().unwrap()
                    }
                };
                (h, state)
            };
            let mut want_state = initial_state(&mut rng, dims, true);
            let want = inp.reference(&mut want_state, None, 1e-6);
            // xLSTM-7B's cap turns ±50 into ±14.94, where f = σ(f̃) is no longer exactly 0 or 1 and
            // some of these draws leave h ill-conditioned in f32 (a 5e-4 relative error against f64,
            // whoever applies the cap). So the capped run is held to the uncapped op given gates the
            // elementwise softcap capped: the path before the cap moved into the mLSTM.
            let capped = Inputs { ig: gates_f32(ig, Some(15.0)), fg: gates_f32(fg, Some(15.0)), ..inp.clone() };
            for chunk in [None, Some(64), Some(7)] {
                let what = format!("gates {name}, S 300, chunk {chunk:?} on {}", backend.name());
                let (got, state) = run(&inp, chunk, None);
                assert_finite(&format!("{what}: h"), &got);
                for (t, s) in [("C", &state.c), ("n", &state.n), ("m", &state.m)] {
                    assert_finite(&format!("{what}: {t}"), &s.to_f32_vec().unwrap());
                }
                assert_close(&format!("{what}: h"), &got, &want, TOL);
                assert_state(&what, &state, &want_state, TOL);

                let what = format!("{what}, cap 15");
                let (got, state) = run(&inp, chunk, Some(15.0));
                let (before, before_state) = run(&capped, chunk, None);
                assert_finite(&format!("{what}: h"), &got);
                for (t, s) in [("C", &state.c), ("n", &state.n), ("m", &state.m)] {
                    assert_finite(&format!("{what}: {t}"), &s.to_f32_vec().unwrap());
                }
                assert_close(&format!("{what}: h vs softcap first"), &got, &to_f64(&before), TOL);
                let as64 = |t: &Tensor| to_f64(&t.to_f32_vec().unwrap());
                let before64 = State64 { c: as64(&before_state.c), n: as64(&before_state.n), m: as64(&before_state.m) };
                assert_state(&format!("{what} vs softcap first"), &state, &before64, TOL);
            }
        }
    }
}

/// A race on the state (an invocation reading what another has rewritten) shows up as results that
/// change from run to run: every run from the same state must give the same bits.
#[test]
fn repeated_runs_from_one_state_agree_bit_for_bit() {
    let mut rng = Rng::new(57);
    for backend in test_backends() {
        for &(b, s, nh, dqk, dv) in &[(2, 1, 3, 64, 516), (1, 1, 2, 33, 17), (2, 70, 2, 40, 36)] {
            let dims = (b, s, nh, dqk, dv);
            let inp = Inputs::random(&mut rng, dims, (-6.0, 6.0));
            let init = initial_state(&mut rng, dims, false);
            let run = || {
                let state = state_on(&backend, &init, dims);
                let [q, k, v, i, f] = inp.tensors(&backend, s == 1);
                let h = if s == 1 {
                    mlstm_step(xin(&q, &k, &v, &i, &f), &state, opts(Some(5.0), 1e-6))
                } else {
                    mlstm_chunkwise(xin(&q, &k, &v, &i, &f), &state, 16, opts(Some(5.0), 1e-6))
                };
                let bits = |t: &Tensor| t.to_f32_vec().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
                [bits(&h.unwrap()), bits(&state.c), bits(&state.n), bits(&state.m)]
            };
            let first = run();
            for _ in 0..3 {
                assert!(run() == first, "{dims:?} on {}: a repeated run differs", backend.name());
            }
            if s > 1 {
                continue;
            }
            // The step with the head norm in its state launch.
            let o = Tensor::from_slice(&backend, &rng.vec(b * nh * dv, -4.0, 4.0), &[b, nh, dv]).unwrap();
            let w = Tensor::from_slice(&backend, &rng.vec(nh * dv, 0.5, 1.5), &[nh * dv]).unwrap();
            let run = || {
                let state = state_on(&backend, &init, dims);
                let [q, k, v, i, f] = inp.tensors(&backend, true);
                let norm = GatedHeadNorm { gate: &o, weight: Some(&w), bias: None, eps: 1e-6 };
                let y = mlstm_step_gated_norm(xin(&q, &k, &v, &i, &f), &state, opts(Some(5.0), 1e-6), norm);
                let bits = |t: &Tensor| t.to_f32_vec().unwrap().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
                [bits(&y.unwrap()), bits(&state.c), bits(&state.n), bits(&state.m)]
            };
            let first = run();
            for _ in 0..3 {
                assert!(run() == first, "{dims:?} gated norm on {}: a repeated run differs", backend.name());
            }
        }
    }
}

#[test]
fn multihead_layernorm_matches_the_f64_reference() {
    let mut rng = Rng::new(55);
    for backend in test_backends() {
        for (i, &(rows, nh, dh)) in
            [(1, 1, 1), (3, 2, 3), (2, 4, 31), (5, 3, 33), (2, 2, 257), (1, 8, 512), (7, 1, 1000)].iter().enumerate()
        {
            let width = nh * dh;
            let x = rng.vec(rows * width, -3.0, 3.0).into_iter().map(|v| v + 2.0).collect::<Vec<f32>>();
            let wdtype = DType::FLOATS[i % 3];
            let w = crate::testing::round_to(&rng.vec(width, 0.5, 1.5), wdtype);
            let bv = crate::testing::round_to(&rng.vec(width, -1.0, 1.0), wdtype);
            // Output-gate pre-activations: moderate, with saturated ±50 and far-out ±1e4 among them.
            let o: Vec<f32> = rng
                .vec(rows * width, -8.0, 8.0)
                .into_iter()
                .enumerate()
                .map(|(j, v)| match j % 11 {
                    3 => 50.0,
                    5 => -50.0,
                    7 => 1e4,
                    9 => -1e4,
                    _ => v,
                })
                .collect();
            let xt = Tensor::from_slice(&backend, &x, &[rows, width]).unwrap();
            let ot = Tensor::from_slice(&backend, &o, &[rows, width]).unwrap();
            let wt = Tensor::from_f32(&backend, &w, &[width], wdtype).unwrap();
            let bt = Tensor::from_f32(&backend, &bv, &[width], wdtype).unwrap();
            for (with_w, with_b) in [(true, false), (true, true), (false, false), (false, true)] {
                let (wo, bo) = (with_w.then_some(&wt), with_b.then_some(&bt));
                for gated in [false, true] {
                    let got = if gated {
                        multihead_layernorm_gated(&xt, &ot, nh, wo, bo, 1e-5).unwrap()
                    } else {
                        multihead_layernorm(&xt, nh, wo, bo, 1e-5).unwrap()
                    };
                    assert_eq!(got.shape(), [rows, width]);
                    let want = reference::multihead_layernorm(
                        &x,
                        width,
                        nh,
                        with_w.then_some(w.as_slice()),
                        with_b.then_some(bv.as_slice()),
                        gated.then_some(o.as_slice()),
                        1e-5,
                    );
                    let what = format!(
                        "multihead_layernorm [{rows}, {nh}x{dh}] w {with_w} ({wdtype}) b {with_b} gated {gated} on {}",
                        backend.name()
                    );
                    let got = got.to_f32_vec().unwrap();
                    assert_finite(&what, &got);
                    assert_close(&what, &got, &want, Tolerance { atol: 2e-5, rtol: 2e-5 });
                }
            }
        }
    }
}

#[test]
fn multihead_layernorm_takes_any_leading_dimensions() {
    let mut rng = Rng::new(56);
    for backend in test_backends() {
        let x = rng.vec(2 * 3 * 4 * 6, -2.0, 2.0);
        let got =
            multihead_layernorm(&Tensor::from_slice(&backend, &x, &[2, 3, 24]).unwrap(), 4, None, None, 1e-6).unwrap();
        assert_eq!(got.shape(), [2, 3, 24]);
        let want = reference::multihead_layernorm(&x, 24, 4, None, None, None, 1e-6);
        assert_close(
            "multihead_layernorm 3-d",
            &got.to_f32_vec().unwrap(),
            &want,
            Tolerance { atol: 2e-5, rtol: 2e-5 },
        );
    }
}

#[test]
fn zero_state_has_the_documented_shapes() {
    for backend in test_backends() {
        let s = MlstmState::zeros(&backend, 2, 3, 4, 5).unwrap();
        assert_eq!((s.c.shape(), s.n.shape(), s.m.shape()), (&[2, 3, 4, 5][..], &[2, 3, 4][..], &[2, 3][..]));
        assert_eq!(s.dims(), Some((2, 3, 4, 5)));
        assert!(s.c.to_f32_vec().unwrap().iter().chain(&s.m.to_f32_vec().unwrap()).all(|&v| v == 0.0));
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    for backend in test_backends() {
        let z = |shape: &[usize]| Tensor::zeros(&backend, shape, DType::F32).unwrap();
        let (b, nh, dqk, dv) = (2, 3, 4, 5);
        let st = MlstmState::zeros(&backend, b, nh, dqk, dv).unwrap();
        let (q, k, v, g) = (z(&[b, nh, dqk]), z(&[b, nh, dqk]), z(&[b, nh, dv]), z(&[b, nh]));
        let shape_err = |r: Result<Tensor>, needle: &str| match r {
            Err(e @ KernelError::Shape { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(needle), "message {msg:?} should name {needle:?}");
            }
            other => panic!("expected a shape error naming {needle}, got {other:?}"),
        };
        // Inputs may share storage (they are only read).
        mlstm_step(xin(&q, &k, &v, &g, &g), &st, opts(None, 1e-6)).unwrap();
        // Inconsistent head dimensions.
        shape_err(mlstm_step(xin(&q, &z(&[b, nh, dqk + 1]), &v, &g, &z(&[b, nh])), &st, opts(None, 1e-6)), "k must be");
        shape_err(mlstm_step(xin(&q, &k, &z(&[b, nh + 1, dv]), &g, &z(&[b, nh])), &st, opts(None, 1e-6)), "v must be");
        shape_err(mlstm_step(xin(&z(&[b, nh, dqk, 1]), &k, &v, &g, &z(&[b, nh])), &st, opts(None, 1e-6)), "q must be");
        // Wrong gate shapes.
        shape_err(
            mlstm_step(xin(&q, &k, &v, &z(&[b, nh, 1]), &z(&[b, nh])), &st, opts(None, 1e-6)),
            "i_pre must be [B, NH] = [2, 3]",
        );
        shape_err(mlstm_step(xin(&q, &k, &v, &g, &z(&[b * nh])), &st, opts(None, 1e-6)), "f_pre");
        // Wrong state shapes.
        let bad = MlstmState { c: z(&[b, nh, dqk, dv + 1]), ..MlstmState::zeros(&backend, b, nh, dqk, dv).unwrap() };
        shape_err(
            mlstm_step(xin(&q, &k, &v, &g, &z(&[b, nh])), &bad, opts(None, 1e-6)),
            "state C must be [B, NH, DQK, DV] = [2, 3, 4, 5]",
        );
        let bad = MlstmState { n: z(&[b, nh, dqk + 1]), ..MlstmState::zeros(&backend, b, nh, dqk, dv).unwrap() };
        shape_err(mlstm_step(xin(&q, &k, &v, &g, &z(&[b, nh])), &bad, opts(None, 1e-6)), "state n");
        let bad = MlstmState { m: z(&[b, nh, 1]), ..MlstmState::zeros(&backend, b, nh, dqk, dv).unwrap() };
        shape_err(mlstm_step(xin(&q, &k, &v, &g, &z(&[b, nh])), &bad, opts(None, 1e-6)), "state m");
        // Dtypes, eps, aliasing.
        let half = Tensor::zeros(&backend, &[b, nh, dqk], DType::BF16).unwrap();
        assert!(matches!(
            mlstm_step(xin(&half, &k, &v, &g, &z(&[b, nh])), &st, opts(None, 1e-6)),
            Err(KernelError::DType { op: "mlstm_step", .. })
        ));
        assert!(matches!(
            mlstm_step(xin(&q, &k, &v, &g, &z(&[b, nh])), &st, opts(None, f32::NAN)),
            Err(KernelError::Argument { op: "mlstm_step", name: "eps", .. })
        ));
        for cap in [0.0, -15.0, f32::NAN, f32::INFINITY] {
            assert!(matches!(
                mlstm_step(xin(&q, &k, &v, &g, &z(&[b, nh])), &st, opts(Some(cap), 1e-6)),
                Err(KernelError::Argument { op: "mlstm_step", name: "gate_soft_cap", .. })
            ));
        }
        let alias = MlstmState { m: g.clone(), ..MlstmState::zeros(&backend, b, nh, dqk, dv).unwrap() };
        assert!(matches!(
            mlstm_step(xin(&q, &k, &v, &g, &z(&[b, nh])), &alias, opts(None, 1e-6)),
            Err(KernelError::Argument { op: "mlstm_step", name: "state.m", .. })
        ));
        let out = z(&[b, nh, dv]);
        assert!(matches!(
            mlstm_step_into(xin(&q, &k, &v, &g, &z(&[b, nh])), &st, opts(None, 1e-6), &z(&[b, nh, dv + 1])),
            Err(KernelError::Shape { op: "mlstm_step", .. })
        ));
        assert!(matches!(
            mlstm_step_into(xin(&q, &k, &v, &g, &z(&[b, nh])), &st, opts(None, 1e-6), &v),
            Err(KernelError::Argument { name: "out", .. })
        ));
        mlstm_step_into(xin(&q, &k, &v, &g, &z(&[b, nh])), &st, opts(None, 1e-6), &out).unwrap();

        // The step with the gated head norm.
        let (o, w) = (z(&[b, nh, dv]), z(&[nh * dv]));
        let norm = GatedHeadNorm { gate: &o, weight: Some(&w), bias: None, eps: 1e-6 };
        let f = z(&[b, nh]);
        let gated = |norm: GatedHeadNorm<'_>, st: &MlstmState| {
            mlstm_step_gated_norm(xin(&q, &k, &v, &g, &f), st, opts(None, 1e-6), norm)
        };
        assert_eq!(gated(norm, &st).unwrap().shape(), [b, nh, dv]);
        shape_err(gated(GatedHeadNorm { gate: &z(&[b, nh * dv]), ..norm }, &st), "norm.gate must be h's shape");
        assert!(matches!(
            gated(GatedHeadNorm { weight: Some(&z(&[dv])), ..norm }, &st),
            Err(KernelError::Shape { op: "mlstm_step_gated_norm", .. })
        ));
        assert!(matches!(
            gated(GatedHeadNorm { bias: Some(&z(&[nh * dv + 1])), ..norm }, &st),
            Err(KernelError::Shape { op: "mlstm_step_gated_norm", .. })
        ));
        assert!(matches!(
            gated(GatedHeadNorm { eps: -1.0, ..norm }, &st),
            Err(KernelError::Argument { op: "mlstm_step_gated_norm", name: "eps", .. })
        ));
        assert!(matches!(
            gated(GatedHeadNorm { gate: &Tensor::zeros(&backend, &[b, nh, dv], DType::F16).unwrap(), ..norm }, &st),
            Err(KernelError::DType { op: "mlstm_step_gated_norm", .. })
        ));
        // The gate may not share storage with the state the step writes (here n, with DQK = DV).
        let st5 = MlstmState::zeros(&backend, b, nh, dv, dv).unwrap();
        let (q5, k5) = (z(&[b, nh, dv]), z(&[b, nh, dv]));
        assert!(matches!(
            mlstm_step_gated_norm(
                xin(&q5, &k5, &v, &g, &f),
                &st5,
                opts(None, 1e-6),
                GatedHeadNorm { gate: &st5.n, ..norm }
            ),
            Err(KernelError::Argument { op: "mlstm_step_gated_norm", name: "state.n", .. })
        ));
        assert!(matches!(
            mlstm_step_gated_norm(xin(&q, &k, &v, &g, &f), &st, opts(Some(f32::NAN), 1e-6), norm),
            Err(KernelError::Argument { op: "mlstm_step_gated_norm", name: "gate_soft_cap", .. })
        ));

        // Chunkwise.
        let s = 7;
        let (q4, k4, v4, g3) = (z(&[b, s, nh, dqk]), z(&[b, s, nh, dqk]), z(&[b, s, nh, dv]), z(&[b, s, nh]));
        let f3 = z(&[b, s, nh]);
        assert!(matches!(
            mlstm_chunkwise(xin(&q4, &k4, &v4, &g3, &f3), &st, 0, opts(None, 1e-6)),
            Err(KernelError::Argument { op: "mlstm_chunkwise", name: "chunk", .. })
        ));
        shape_err(
            mlstm_chunkwise(xin(&q4, &k4, &z(&[b, s + 1, nh, dv]), &g3, &f3), &st, 64, opts(None, 1e-6)),
            "v must be [B, S, NH, DV]",
        );
        shape_err(
            mlstm_chunkwise(xin(&q4, &z(&[b, s, nh, dqk + 2]), &v4, &g3, &f3), &st, 64, opts(None, 1e-6)),
            "k must be",
        );
        shape_err(
            mlstm_chunkwise(xin(&q4, &k4, &v4, &z(&[b, nh, s]), &f3), &st, 64, opts(None, 1e-6)),
            "i_pre must be [B, S, NH] = [2, 7, 3]",
        );
        shape_err(mlstm_chunkwise(xin(&q4, &k4, &v4, &g3, &z(&[b, s, nh, 1])), &st, 64, opts(None, 1e-6)), "f_pre");
        let wrong = MlstmState::zeros(&backend, b, nh, dqk + 1, dv).unwrap();
        shape_err(mlstm_chunkwise(xin(&q4, &k4, &v4, &g3, &f3), &wrong, 64, opts(None, 1e-6)), "state C");
        shape_err(
            mlstm_chunkwise(xin(&q, &k, &v, &g, &z(&[b, nh])), &st, 64, opts(None, 1e-6)),
            "q must be [B, S, NH, DQK]",
        );
        assert!(matches!(
            mlstm_chunkwise(xin(&q4, &k4, &v4, &g3, &f3), &st, 64, opts(None, -1.0)),
            Err(KernelError::Argument { name: "eps", .. })
        ));
        assert!(matches!(
            mlstm_chunkwise(xin(&q4, &k4, &v4, &g3, &f3), &st, 64, opts(Some(0.0), 1e-6)),
            Err(KernelError::Argument { op: "mlstm_chunkwise", name: "gate_soft_cap", .. })
        ));
        assert!(matches!(
            mlstm_chunkwise(
                xin(&z(&[b, 0, nh, dqk]), &z(&[b, 0, nh, dqk]), &z(&[b, 0, nh, dv]), &z(&[b, 0, nh]), &z(&[b, 0, nh])),
                &st,
                64,
                opts(None, 1e-6)
            ),
            Err(KernelError::Empty { op: "mlstm_chunkwise", .. })
        ));

        // Multi-head layer norm.
        let x = z(&[4, 12]);
        assert!(matches!(
            multihead_layernorm(&x, 5, None, None, 1e-6),
            Err(KernelError::Argument { op: "multihead_layernorm", name: "nh", .. })
        ));
        assert!(matches!(multihead_layernorm(&x, 0, None, None, 1e-6), Err(KernelError::Argument { name: "nh", .. })));
        assert!(matches!(
            multihead_layernorm(&x, 3, Some(&z(&[4])), None, 1e-6),
            Err(KernelError::Shape { op: "multihead_layernorm", .. })
        ));
        assert!(matches!(multihead_layernorm(&x, 3, None, Some(&z(&[13])), 1e-6), Err(KernelError::Shape { .. })));
        assert!(matches!(
            multihead_layernorm(&x, 3, None, None, f32::INFINITY),
            Err(KernelError::Argument { name: "eps", .. })
        ));
        assert!(matches!(
            multihead_layernorm(&Tensor::zeros(&backend, &[4, 12], DType::F16).unwrap(), 3, None, None, 1e-6),
            Err(KernelError::DType { .. })
        ));
        assert!(matches!(
            multihead_layernorm_into(&x, 3, None, None, 1e-6, &x),
            Err(KernelError::Argument { name: "out", .. })
        ));
        // The gated form: the gate must be f32 of x's shape, and not the output.
        multihead_layernorm_gated(&x, &x, 3, None, None, 1e-6).unwrap();
        assert!(matches!(
            multihead_layernorm_gated(&x, &z(&[4, 13]), 3, None, None, 1e-6),
            Err(KernelError::Shape { op: "multihead_layernorm_gated", .. })
        ));
        assert!(matches!(
            multihead_layernorm_gated(&x, &z(&[48]), 3, None, None, 1e-6),
            Err(KernelError::Shape { op: "multihead_layernorm_gated", .. })
        ));
        assert!(matches!(
            multihead_layernorm_gated(
                &x,
                &Tensor::zeros(&backend, &[4, 12], DType::BF16).unwrap(),
                3,
                None,
                None,
                1e-6
            ),
            Err(KernelError::DType { op: "multihead_layernorm_gated", .. })
        ));
        assert!(matches!(
            multihead_layernorm_gated(&x, &x, 5, None, None, 1e-6),
            Err(KernelError::Argument { op: "multihead_layernorm_gated", name: "nh", .. })
        ));
        let (o, out) = (z(&[4, 12]), z(&[4, 12]));
        assert!(matches!(
            multihead_layernorm_gated_into(&x, &o, 3, None, None, 1e-6, &o),
            Err(KernelError::Argument { op: "multihead_layernorm_gated", name: "out", .. })
        ));
        multihead_layernorm_gated_into(&x, &o, 3, None, None, 1e-6, &out).unwrap();
    }
}
