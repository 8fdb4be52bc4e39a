use super::*;
use crate::testing::{Rng, Tolerance, assert_close, round_to, test_backends};

const SIZES: [usize; 7] = [1, 3, 17, 64, 127, 257, 1000];

/// The launches a test runs: the CPU once; on the GPU both kernels (the subgroup one where the
/// adapter has subgroups), each with its automatic launch shape and a forced one with several rows per
/// workgroup (so the last workgroup of a matrix is partly empty); the subgroup kernel also with the
/// widest workgroup (256 threads), which decode picks for long rows but these small shapes never would.
fn launches(backend: &Backend) -> Vec<GemvOptions> {
    match backend {
        Backend::Cpu => vec![GemvOptions::default()],
        Backend::Gpu(ctx) => {
            let mut v = vec![
                GemvOptions { kernel: GemvKernel::Workgroup, tune: None, narrow: false },
                GemvOptions { kernel: GemvKernel::Workgroup, tune: Some(Tune { wg: 32, rows: 4 }), narrow: false },
            ];
            if ctx.has_subgroups() {
                v.push(GemvOptions { kernel: GemvKernel::Subgroup, tune: None, narrow: false });
                v.push(GemvOptions {
                    kernel: GemvKernel::Subgroup,
                    tune: Some(Tune { wg: 64, rows: 3 }),
                    narrow: false,
                });
                v.push(GemvOptions {
                    kernel: GemvKernel::Subgroup,
                    tune: Some(Tune { wg: 256, rows: 4 }),
                    narrow: false,
                });
            }
            v
        }
    }
}

fn what(backend: &Backend, launch: GemvOptions) -> String {
    match backend {
        Backend::Cpu => "cpu".into(),
        Backend::Gpu(_) => format!("gpu {:?} {:?}", launch.kernel, launch.tune),
    }
}

/// Random CPU tensors: w [rows, in] in `dtype` (values in [-1, 1)), x [b, in] f32 in [-1, 1).
fn inputs(rng: &mut Rng, rows: usize, in_len: usize, b: usize, dtype: DType) -> (Tensor, Tensor) {
    let w = round_to(&rng.vec(rows * in_len, -1.0, 1.0), dtype);
    let x = rng.vec(b * in_len, -1.0, 1.0);
    (
        Tensor::from_f32(&Backend::Cpu, &w, &[rows, in_len], dtype).unwrap(),
        Tensor::from_f32(&Backend::Cpu, &x, &[b, in_len], DType::F32).unwrap(),
    )
}

fn on(t: &Tensor, backend: &Backend) -> Tensor {
    t.to_backend(backend).unwrap()
}

#[test]
fn gemv_matches_the_f64_reference_on_ragged_shapes() {
    let mut rng = Rng::new(7);
    let mut case = 0usize;
    for dtype in DType::FLOATS {
        for rows in SIZES {
            for in_len in SIZES {
                if rows * in_len > 300_000 {
                    continue;
                }
                let b = 1 + case % MAX_BATCH;
                case += 1;
                let (w, x) = inputs(&mut rng, rows, in_len, b, dtype);
                let want = reference(&w, &x);
                for backend in test_backends() {
                    let (wd, xd) = (on(&w, &backend), on(&x, &backend));
                    for launch in launches(&backend) {
                        let out = Tensor::uninit(&backend, "test", &[b, rows], DType::F32).unwrap();
                        gemv_into_with(&wd, &xd, GemvEpilogue::default(), &out, launch).unwrap();
                        let got = out.to_f32_vec().unwrap();
                        let name = format!("gemv {dtype} [{rows}, {in_len}] b={b} on {}", what(&backend, launch));
                        assert_close(&name, &got, &want, gemv_tolerance(in_len, 1.0));
                    }
                }
            }
        }
    }
}

#[test]
fn every_batch_size_matches_on_aligned_and_odd_rows() {
    let mut rng = Rng::new(8);
    for (dtype, rows, in_len) in [(DType::BF16, 33, 264), (DType::F16, 5, 255), (DType::F32, 9, 131)] {
        for b in 1..=MAX_BATCH {
            let (w, x) = inputs(&mut rng, rows, in_len, b, dtype);
            let want = reference(&w, &x);
            for backend in test_backends() {
                let (wd, xd) = (on(&w, &backend), on(&x, &backend));
                for launch in launches(&backend) {
                    let out = Tensor::uninit(&backend, "test", &[b, rows], DType::F32).unwrap();
                    gemv_into_with(&wd, &xd, GemvEpilogue::default(), &out, launch).unwrap();
                    let name = format!("gemv {dtype} [{rows}, {in_len}] b={b} on {}", what(&backend, launch));
                    assert_close(&name, &out.to_f32_vec().unwrap(), &want, gemv_tolerance(in_len, 1.0));
                }
            }
        }
    }
}

#[test]
fn bias_and_residual_are_added_in_the_epilogue() {
    let mut rng = Rng::new(9);
    for (dtype, rows, in_len, b) in [(DType::BF16, 17, 64, 3), (DType::F16, 127, 257, 2), (DType::F32, 64, 17, 5)] {
        let (w, x) = inputs(&mut rng, rows, in_len, b, dtype);
        let product = reference(&w, &x);
        for bias_dtype in DType::FLOATS {
            let bias_v = round_to(&rng.vec(rows, -1.0, 1.0), bias_dtype);
            let res_v = rng.vec(b * rows, -1.0, 1.0);
            let bias = Tensor::from_f32(&Backend::Cpu, &bias_v, &[rows], bias_dtype).unwrap();
            let res = Tensor::from_slice(&Backend::Cpu, &res_v, &[b, rows]).unwrap();
            for mode in ["bias", "residual", "both", "in place"] {
                let use_bias = mode != "residual";
                let use_res = mode != "bias";
                let want: Vec<f64> = product
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        v + if use_bias { bias_v[i % rows] as f64 } else { 0.0 }
                            + if use_res { res_v[i] as f64 } else { 0.0 }
                    })
                    .collect();
                for backend in test_backends() {
                    let (wd, xd, bd) = (on(&w, &backend), on(&x, &backend), on(&bias, &backend));
                    for launch in launches(&backend) {
                        let rd = on(&res, &backend);
                        let out = if mode == "in place" {
                            rd.clone()
                        } else {
                            Tensor::uninit(&backend, "test", &[b, rows], DType::F32).unwrap()
                        };
                        let epilogue = GemvEpilogue {
                            bias: use_bias.then_some(&bd),
                            residual: use_res.then_some(&rd),
                            soft_cap: None,
                        };
                        gemv_into_with(&wd, &xd, epilogue, &out, launch).unwrap();
                        let name = format!(
                            "gemv {dtype} [{rows}, {in_len}] b={b} {mode} (bias {bias_dtype}) on {}",
                            what(&backend, launch)
                        );
                        assert_close(&name, &out.to_f32_vec().unwrap(), &want, gemv_tolerance(in_len, 1.0));
                    }
                }
            }
        }
    }
}

/// With more than three parts, also the narrow kernel in two dispatches (as on an adapter with fewer
/// than 22 storage buffers per stage).
fn multi_launches(backend: &Backend, parts: usize) -> Vec<GemvOptions> {
    let mut v = launches(backend);
    if parts > NARROW_PARTS && matches!(backend, Backend::Gpu(_)) {
        let narrow: Vec<GemvOptions> = v.iter().map(|&l| GemvOptions { narrow: true, ..l }).collect();
        v.extend(narrow);
    }
    v
}

/// The soft cap comes last, after the bias and the residual (also accumulated in place), and after a
/// fused input norm ([`gemv_normed`], a model's final norm and LM head).
#[test]
fn soft_cap_is_applied_after_bias_and_residual() {
    let mut rng = Rng::new(12);
    let cap_f64 = |v: f64, cap: f32| cap as f64 * (v / cap as f64).tanh();
    for (dtype, rows, in_len, b, cap) in
        [(DType::BF16, 33, 264, 1, 2.0f32), (DType::F16, 17, 255, 3, 30.0), (DType::F32, 64, 128, 8, 1.5)]
    {
        let (w, x) = inputs(&mut rng, rows, in_len, b, dtype);
        let product = reference(&w, &x);
        let bias_v = round_to(&rng.vec(rows, -3.0, 3.0), DType::BF16);
        let res_v = rng.vec(b * rows, -3.0, 3.0);
        let bias = Tensor::from_f32(&Backend::Cpu, &bias_v, &[rows], DType::BF16).unwrap();
        let res = Tensor::from_slice(&Backend::Cpu, &res_v, &[b, rows]).unwrap();
        for mode in ["cap", "bias", "residual", "in place"] {
            let use_bias = mode == "bias" || mode == "in place";
            let use_res = mode == "residual" || mode == "in place";
            let want: Vec<f64> = product
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let v = v
                        + if use_bias { bias_v[i % rows] as f64 } else { 0.0 }
                        + if use_res { res_v[i] as f64 } else { 0.0 };
                    cap_f64(v, cap)
                })
                .collect();
            for backend in test_backends() {
                let (wd, xd, bd) = (on(&w, &backend), on(&x, &backend), on(&bias, &backend));
                for launch in launches(&backend) {
                    let rd = on(&res, &backend);
                    let out = if mode == "in place" {
                        rd.clone()
                    } else {
                        Tensor::uninit(&backend, "test", &[b, rows], DType::F32).unwrap()
                    };
                    let epilogue = GemvEpilogue {
                        bias: use_bias.then_some(&bd),
                        residual: use_res.then_some(&rd),
                        soft_cap: Some(cap),
                    };
                    gemv_into_with(&wd, &xd, epilogue, &out, launch).unwrap();
                    let name = format!(
                        "gemv {dtype} [{rows}, {in_len}] b={b} soft cap {cap} {mode} on {}",
                        what(&backend, launch)
                    );
                    assert_close(&name, &out.to_f32_vec().unwrap(), &want, gemv_tolerance(in_len, 1.0));
                }
            }
        }
        // Fused input norm, then the capped product (f64 reference of the normed x), with norm weights
        // of every dtype (GGUF files keep them in f32).
        for (variant, nw_dtype) in [
            (RmsNormVariant::Standard, DType::BF16),
            (RmsNormVariant::Gemma, DType::BF16),
            (RmsNormVariant::Standard, DType::F32),
            (RmsNormVariant::Gemma, DType::F16),
        ] {
            let nw_v = round_to(&rng.vec(in_len, 0.5, 1.5), nw_dtype);
            let nw = Tensor::from_f32(&Backend::Cpu, &nw_v, &[in_len], nw_dtype).unwrap();
            let eps = 1e-6;
            let xv = x.to_f32_vec().unwrap();
            let plus = if variant == RmsNormVariant::Gemma { 1.0 } else { 0.0 };
            let xn: Vec<f32> = xv
                .chunks(in_len)
                .flat_map(|row| {
                    let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / in_len as f64;
                    let sc = 1.0 / (ms + eps as f64).sqrt();
                    row.iter().zip(&nw_v).map(move |(&v, &g)| (v as f64 * sc * (g as f64 + plus)) as f32)
                })
                .collect();
            let xn = Tensor::from_f32(&Backend::Cpu, &xn, &[b, in_len], DType::F32).unwrap();
            let want: Vec<f64> = reference(&w, &xn).iter().map(|&v| cap_f64(v, cap)).collect();
            for backend in test_backends() {
                let (wd, xd, nd) = (on(&w, &backend), on(&x, &backend), on(&nw, &backend));
                let norm = InputNorm { weight: &nd, eps, variant };
                let e = GemvEpilogue { soft_cap: Some(cap), ..Default::default() };
                for launch in launches(&backend) {
                    let out = Tensor::uninit(&backend, "test", &[b, rows], DType::F32).unwrap();
                    single_impl(&wd, &xd, Some(norm), e, &out, launch).unwrap();
                    let name = format!(
                        "gemv_normed {dtype} [{rows}, {in_len}] b={b} {variant:?} {nw_dtype} norm soft cap {cap} on {}",
                        what(&backend, launch)
                    );
                    assert_close(&name, &out.to_f32_vec().unwrap(), &want, gemv_tolerance(in_len, 4.0));
                }
                let y = gemv_normed(&wd, &xd, norm, e).unwrap();
                assert_eq!(y.shape(), &[b, rows]);
            }
        }
    }
}

#[test]
fn fused_multi_matches_separate_products() {
    let mut rng = Rng::new(10);
    let cases: [(DType, &[usize], usize, usize); 10] = [
        (DType::BF16, &[64, 17, 17], 64, 1),
        (DType::F16, &[3, 127, 1], 257, 5),
        (DType::F32, &[33, 7], 100, 2),
        (DType::BF16, &[257], 127, 8),
        (DType::BF16, &[32, 8, 8], 1000, 3),
        // Four to six parts (xLSTM: q, k, v, o, ĩ, f̃), ragged, aligned and odd rows.
        (DType::BF16, &[31, 1, 64, 3], 256, 1),
        (DType::F16, &[5, 33, 2, 17, 9], 255, 4),
        (DType::BF16, &[16, 16, 32, 32, 1, 1], 264, 1),
        (DType::F32, &[7, 1, 13, 33, 3, 2], 131, 8),
        (DType::BF16, &[3, 255, 1, 8, 127, 2], 100, 2),
    ];
    for (dtype, rows, in_len, b) in cases {
        let x_v = rng.vec(b * in_len, -1.0, 1.0);
        let x = Tensor::from_slice(&Backend::Cpu, &x_v, &[b, in_len]).unwrap();
        let mut ws = Vec::new();
        let mut biases = Vec::new();
        let mut wants = Vec::new();
        for (k, &n) in rows.iter().enumerate() {
            let w_v = round_to(&rng.vec(n * in_len, -1.0, 1.0), dtype);
            let w = Tensor::from_f32(&Backend::Cpu, &w_v, &[n, in_len], dtype).unwrap();
            let mut want = reference(&w, &x);
            // Every part but the second and the fifth has a bias.
            let bias = (k != 1 && k != 4).then(|| {
                let v = round_to(&rng.vec(n, -1.0, 1.0), DType::BF16);
                want.iter_mut().enumerate().for_each(|(i, y)| *y += v[i % n] as f64);
                Tensor::from_f32(&Backend::Cpu, &v, &[n], DType::BF16).unwrap()
            });
            ws.push(w);
            biases.push(bias);
            wants.push(want);
        }
        for backend in test_backends() {
            let xd = on(&x, &backend);
            let wd: Vec<Tensor> = ws.iter().map(|w| on(w, &backend)).collect();
            let bd: Vec<Option<Tensor>> = biases.iter().map(|b| b.as_ref().map(|b| on(b, &backend))).collect();
            let parts: Vec<GemvPart<'_>> =
                wd.iter().zip(&bd).map(|(w, bias)| GemvPart { w, bias: bias.as_ref() }).collect();
            for launch in multi_launches(&backend, rows.len()) {
                let outs: Vec<Tensor> =
                    rows.iter().map(|&n| Tensor::uninit(&backend, "test", &[b, n], DType::F32).unwrap()).collect();
                let refs: Vec<&Tensor> = outs.iter().collect();
                gemv_multi_into_with(&xd, &parts, &refs, launch).unwrap();
                for (k, (out, want)) in outs.iter().zip(&wants).enumerate() {
                    let name = format!(
                        "gemv_multi {dtype} {rows:?} in={in_len} b={b} part {k} on {}{}",
                        what(&backend, launch),
                        if launch.narrow { " narrow" } else { "" }
                    );
                    assert_close(&name, &out.to_f32_vec().unwrap(), want, gemv_tolerance(in_len, 1.0));
                }
            }
        }
    }
}

#[test]
fn gated_matches_the_reference_for_silu_and_gelu() {
    let mut rng = Rng::new(11);
    let cases =
        [(DType::BF16, 17, 64, 1), (DType::F16, 127, 257, 4), (DType::F32, 64, 127, 8), (DType::BF16, 3, 1000, 2)];
    for (dtype, rows, in_len, b) in cases {
        let (wg, x) = inputs(&mut rng, rows, in_len, b, dtype);
        let (wu, _) = inputs(&mut rng, rows, in_len, b, dtype);
        let (g, u) = (reference(&wg, &x), reference(&wu, &x));
        let scale = g.iter().chain(&u).fold(1.0f64, |m, v| m.max(v.abs()));
        let base = gemv_tolerance(in_len, 1.0);
        let tol = Tolerance { atol: base.atol * (2.5 * scale + 1.0), rtol: 1e-5 };
        for act in [GatedAct::Silu, GatedAct::GeluTanh] {
            let want: Vec<f64> = g.iter().zip(&u).map(|(&g, &u)| act.reference(g) * u).collect();
            for backend in test_backends() {
                let (gd, ud, xd) = (on(&wg, &backend), on(&wu, &backend), on(&x, &backend));
                for launch in launches(&backend) {
                    let out = Tensor::uninit(&backend, "test", &[b, rows], DType::F32).unwrap();
                    gemv_gated_into_with(&gd, &ud, &xd, act, &out, launch).unwrap();
                    let name =
                        format!("gemv_gated {act:?} {dtype} [{rows}, {in_len}] b={b} on {}", what(&backend, launch));
                    assert_close(&name, &out.to_f32_vec().unwrap(), &want, tol);
                }
            }
        }
    }
}

/// The fused input norm equals rmsnorm then the product (f64 reference of the normed x), for multi and
/// gated, both norm variants, every batch size class, aligned rows (fused) and odd rows (the fallback).
#[test]
fn qkv_rope_matches_normed_gemv_then_rope() {
    use crate::ops::rope::{RopeConfig, RopeLayout::*, RopeTable, rope_qk_store_kv};
    let mut rng = Rng::new(61);
    // (dtype, layout, head_dim, rot_dim, q heads, kv heads, cols, b, pos, biases, Gemma norm): 128 heads
    // of 64 take four slots a workgroup, fewer rows two (Interleaved with a 16-bit cache: one word);
    // rot_dim < head_dim and odd cols the two-op path.
    #[rustfmt::skip]
    let cases = [
        (DType::BF16, HalfSplit, 64, 64, 8, 2, 256, 1, 5, false, false),
        (DType::F16, HalfSplit, 64, 64, 128, 16, 64, 2, 300, true, false),
        (DType::F16, Interleaved, 64, 64, 128, 16, 64, 1, 33, true, false),
        (DType::F32, Interleaved, 32, 32, 6, 3, 128, 3, 17, true, true),
        (DType::BF16, Interleaved, 128, 128, 4, 1, 512, 1, 70000, false, false),
        (DType::BF16, HalfSplit, 32, 16, 4, 2, 256, 1, 9, false, false),
        (DType::F16, HalfSplit, 16, 16, 4, 4, 100, 2, 0, true, false),
    ];
    for (dtype, layout, hd, rot, nh, nkv, cols, b, pos, with_bias, gemma) in cases {
        let (q_rows, kv_rows) = (nh * hd, nkv * hd);
        let xv = rng.vec(b * cols, -2.0, 2.0);
        let nwv = rng.vec(cols, 0.5, 1.5);
        let wvs: Vec<Vec<f32>> = [q_rows, kv_rows, kv_rows].iter().map(|&r| rng.vec(r * cols, -0.2, 0.2)).collect();
        let bvs: Vec<Option<Vec<f32>>> =
            [q_rows, kv_rows, kv_rows].iter().map(|&n| with_bias.then(|| rng.vec(n, -1.0, 1.0))).collect();
        let cap = pos + b + 2;
        let cache0 = rng.vec(cap * kv_rows, -1.0, 1.0);
        let cfg = RopeConfig::new(hd, 10000.0).with_rot_dim(rot).with_layout(layout);
        let variant = if gemma { RmsNormVariant::Gemma } else { RmsNormVariant::Standard };
        for (backend, cache_dt) in
            test_backends().into_iter().flat_map(|b| crate::ops::rope::CACHE_DTYPES.map(|d| (b.clone(), d)))
        {
            let t = |v: &[f32], shape: &[usize], dt: DType| Tensor::from_f32(&backend, v, shape, dt).unwrap();
            let x = t(&xv, &[b, cols], DType::F32);
            let nw = t(&nwv, &[cols], DType::BF16);
            let norm = InputNorm { weight: &nw, eps: 1e-5, variant };
            let ws: Vec<Tensor> =
                wvs.iter().zip([q_rows, kv_rows, kv_rows]).map(|(v, r)| t(v, &[r, cols], dtype)).collect();
            let bs: Vec<Option<Tensor>> =
                bvs.iter().map(|v| v.as_ref().map(|v| t(v, &[v.len()], DType::F32))).collect();
            let parts: Vec<GemvPart<'_>> = ws.iter().zip(&bs).map(|(w, b)| GemvPart { w, bias: b.as_ref() }).collect();
            let table = RopeTable::new(&backend, cfg.clone()).unwrap();
            let cache = || t(&cache0, &[cap, nkv, hd], cache_dt);
            // The two ops, each tested on its own.
            let [q, k, v]: [Tensor; 3] = gemv_multi_normed(&x, norm, &parts).unwrap().try_into().unwrap();
            let (kc_want, vc_want) = (cache(), cache());
            let heads = |t: &Tensor, h: usize| t.reshape(&[b, h, hd]).unwrap();
            rope_qk_store_kv(&heads(&q, nh), &heads(&k, nkv), &heads(&v, nkv), &table, pos, &kc_want, &vc_want)
                .unwrap();
            let (kc, vc) = (cache(), cache());
            let kv = KvWrite { table: &table, pos, k_cache: &kc, v_cache: &vc };
            let got = gemv_qkv_rope(&x, norm, [parts[0], parts[1], parts[2]], kv).unwrap();
            assert_eq!(got.shape(), &[b, q_rows]);
            let what = format!(
                "gemv_qkv_rope {dtype} {layout:?} hd {hd} rot {rot} {nh}/{nkv} b={b} pos {pos}, {cache_dt} cache, on {}",
                backend.name()
            );
            let tol = match cache_dt {
                DType::F32 => Tolerance { atol: 2e-5, rtol: 2e-5 },
                dt => crate::ops::rope::cache_rounding_tolerance(dt),
            };
            crate::ops::rope::assert_epilogue_matches(&what, [&got, &kc, &vc], [&q, &kc_want, &vc_want], tol);
        }
    }
    // Bad input: a step past the end of the cache, caches of the wrong shape.
    let cpu = Backend::Cpu;
    let z = |shape: &[usize]| Tensor::zeros(&cpu, shape, DType::F32).unwrap();
    let (x, w, nw) = (z(&[1, 8]), z(&[4, 8]), z(&[8]));
    let norm = InputNorm { weight: &nw, eps: 1e-5, variant: RmsNormVariant::Standard };
    let table = RopeTable::new(&cpu, RopeConfig::new(4, 10000.0)).unwrap();
    let part = GemvPart { w: &w, bias: None };
    let (c, c2) = (z(&[2, 1, 4]), z(&[2, 1, 4]));
    let err = gemv_qkv_rope(&x, norm, [part, part, part], KvWrite { table: &table, pos: 2, k_cache: &c, v_cache: &c2 });
    assert!(matches!(err, Err(KernelError::Argument { name: "pos", .. })), "{err:?}");
    let c3 = z(&[2, 2, 4]);
    let err =
        gemv_qkv_rope(&x, norm, [part, part, part], KvWrite { table: &table, pos: 0, k_cache: &c3, v_cache: &c3 });
    assert!(matches!(err, Err(KernelError::Shape { .. })), "{err:?}");
}

/// An f16 KV cache saturates at ±65504 where K or V leave f16's range, on every backend and through
/// both writers (the fused GEMV of a decode step, and `rope_qk_store_kv` of a prefill), instead of
/// storing infinities (or, from the GPU's pack2x16float, anything), which would make every score they
/// meet NaN.
#[test]
fn an_f16_kv_cache_saturates_out_of_range_values() {
    use crate::ops::rope::{RopeConfig, RopeTable, cache_rounding_tolerance, rope_qk_store_kv};
    let mut rng = Rng::new(31);
    let (hd, heads, cols) = (16, 2, 64);
    let rows = heads * hd;
    let xv = rng.vec(cols, -1.0, 1.0);
    let wv = rng.vec(rows * cols, -0.1, 0.1);
    // Biases far beyond f16's range in both signs, and ordinary ones.
    let bias: Vec<f32> = (0..rows).map(|i| [3.0e5, -1.0e6, 0.5, -2.0][i % 4]).collect();
    for backend in test_backends() {
        let t = |v: &[f32], shape: &[usize], dt: DType| Tensor::from_f32(&backend, v, shape, dt).unwrap();
        let (x, w, b, nw) = (
            t(&xv, &[1, cols], DType::F32),
            t(&wv, &[rows, cols], DType::F32),
            t(&bias, &[rows], DType::F32),
            t(&vec![1.0; cols], &[cols], DType::F32),
        );
        let norm = InputNorm { weight: &nw, eps: 1e-5, variant: RmsNormVariant::Standard };
        let part = GemvPart { w: &w, bias: Some(&b) };
        // Position 0 does not rotate, so the cache holds the projections themselves.
        let table = RopeTable::new(&backend, RopeConfig::new(hd, 10000.0)).unwrap();
        let [_, k, v]: [Tensor; 3] = gemv_multi_normed(&x, norm, &[part, part, part]).unwrap().try_into().unwrap();
        let want: Vec<f32> =
            k.to_f32_vec().unwrap().iter().map(|&y| half::f16::from_f32(y.clamp(-65504.0, 65504.0)).to_f32()).collect();
        assert!(want.iter().filter(|y| y.abs() == 65504.0).count() >= rows / 2, "the case overflows f16");
        let cache = || Tensor::zeros(&backend, &[2, heads, hd], DType::F16).unwrap();
        let (kc, vc) = (cache(), cache());
        gemv_qkv_rope(&x, norm, [part, part, part], KvWrite { table: &table, pos: 0, k_cache: &kc, v_cache: &vc })
            .unwrap();
        let (kc2, vc2) = (cache(), cache());
        let heads3 = |t: &Tensor| t.reshape(&[1, heads, hd]).unwrap();
        let q = Tensor::zeros(&backend, &[1, heads, hd], DType::F32).unwrap();
        rope_qk_store_kv(&q, &heads3(&k), &heads3(&v), &table, 0, &kc2, &vc2).unwrap();
        for (what, c, row) in [
            ("fused GEMV", &kc, 0),
            ("fused GEMV, V", &vc, 0),
            ("rope_qk_store_kv", &kc2, 0),
            ("rope_qk_store_kv, V", &vc2, 0),
        ] {
            let got = c.to_f32_vec().unwrap()[row * rows..(row + 1) * rows].to_vec();
            let tol = cache_rounding_tolerance(DType::F16);
            let want64: Vec<f64> = want.iter().map(|&y| y as f64).collect();
            assert!(got.iter().all(|y| y.is_finite()), "{what} on {}: {got:?}", backend.name());
            assert_close(&format!("{what} on {}", backend.name()), &got, &want64, tol);
        }
    }
}

#[test]
fn input_norm_matches_rmsnorm_then_gemv() {
    let mut rng = Rng::new(23);
    let cases =
        [(DType::BF16, 17, 64, 1), (DType::F16, 33, 256, 3), (DType::F32, 64, 128, 8), (DType::BF16, 5, 100, 2)];
    for (k, (dtype, rows, in_len, b)) in cases.into_iter().enumerate() {
        let variant = if k % 2 == 0 { RmsNormVariant::Standard } else { RmsNormVariant::Gemma };
        let (wq, x) = inputs(&mut rng, rows, in_len, b, dtype);
        let (wk, _) = inputs(&mut rng, rows + 3, in_len, b, dtype);
        let nw_vals = round_to(&rng.vec(in_len, 0.5, 1.5), DType::BF16);
        let nw = Tensor::from_f32(&Backend::Cpu, &nw_vals, &[in_len], DType::BF16).unwrap();
        let eps = 1e-5;
        // f64 normed x, then the exact products.
        let xv = x.to_f32_vec().unwrap();
        let xn: Vec<f32> = xv
            .chunks(in_len)
            .flat_map(|row| {
                let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / in_len as f64;
                let s = 1.0 / (ms + eps as f64).sqrt();
                let g = |i: usize| nw_vals[i] as f64 + if variant == RmsNormVariant::Gemma { 1.0 } else { 0.0 };
                row.iter().enumerate().map(move |(i, &v)| (v as f64 * s * g(i)) as f32).collect::<Vec<_>>()
            })
            .collect();
        let xn = Tensor::from_f32(&Backend::Cpu, &xn, &[b, in_len], DType::F32).unwrap();
        let (q_ref, k_ref) = (reference(&wq, &xn), reference(&wk, &xn));
        let tol = gemv_tolerance(in_len, 4.0);
        for backend in test_backends() {
            let (qd, kd, xd, nd) = (on(&wq, &backend), on(&wk, &backend), on(&x, &backend), on(&nw, &backend));
            let norm = InputNorm { weight: &nd, eps, variant };
            for launch in launches(&backend) {
                let name = format!("normed {dtype} [{rows}, {in_len}] b={b} {variant:?} on {}", what(&backend, launch));
                let outs = [
                    Tensor::uninit(&backend, "test", &[b, rows], DType::F32).unwrap(),
                    Tensor::uninit(&backend, "test", &[b, rows + 3], DType::F32).unwrap(),
                ];
                let parts = [GemvPart { w: &qd, bias: None }, GemvPart { w: &kd, bias: None }];
                multi_impl(&xd, Some(norm), &parts, &[&outs[0], &outs[1]], launch).unwrap();
                assert_close(&format!("{name}: multi q"), &outs[0].to_f32_vec().unwrap(), &q_ref, tol);
                assert_close(&format!("{name}: multi k"), &outs[1].to_f32_vec().unwrap(), &k_ref, tol);
                // Six parts (xLSTM's projections), q and k alternating; also the narrow kernel's two
                // dispatches on the GPU.
                let six: Vec<Tensor> = (0..6)
                    .map(|j| Tensor::uninit(&backend, "test", &[b, rows + 3 * (j % 2)], DType::F32).unwrap())
                    .collect();
                let parts6: Vec<GemvPart<'_>> = (0..6).map(|j| parts[j % 2]).collect();
                let refs: Vec<&Tensor> = six.iter().collect();
                let gpu = matches!(backend, Backend::Gpu(_));
                for l in [launch, GemvOptions { narrow: true, ..launch }].into_iter().take(1 + gpu as usize) {
                    multi_impl(&xd, Some(norm), &parts6, &refs, l).unwrap();
                    for (j, out) in six.iter().enumerate() {
                        let want = if j % 2 == 0 { &q_ref } else { &k_ref };
                        let n = format!("{name}: multi of six, part {j}{}", if l.narrow { " narrow" } else { "" });
                        assert_close(&n, &out.to_f32_vec().unwrap(), want, tol);
                    }
                }

                let (wu, _) = inputs(&mut rng, rows, in_len, b, dtype);
                let ud = on(&wu, &backend);
                let u_ref = reference(&wu, &xn);
                let want: Vec<f64> = q_ref.iter().zip(&u_ref).map(|(&g, &u)| GatedAct::Silu.reference(g) * u).collect();
                let scale = q_ref.iter().chain(&u_ref).fold(1.0f64, |m, v| m.max(v.abs()));
                let gtol = Tolerance { atol: tol.atol * (2.5 * scale + 1.0), rtol: 1e-5 };
                let out = Tensor::uninit(&backend, "test", &[b, rows], DType::F32).unwrap();
                gated_impl(&qd, &ud, &xd, Some(norm), GatedAct::Silu, &out, launch).unwrap();
                assert_close(&format!("{name}: gated"), &out.to_f32_vec().unwrap(), &want, gtol);
            }
        }
    }
    // A norm weight of the wrong length is a typed error.
    let cpu = Backend::Cpu;
    let (w, x) = inputs(&mut rng, 4, 16, 1, DType::F32);
    let bad = Tensor::zeros(&cpu, &[15], DType::F32).unwrap();
    let norm = InputNorm { weight: &bad, eps: 1e-6, variant: RmsNormVariant::Standard };
    let err = gemv_multi_normed(&x, norm, &[GemvPart { w: &w, bias: None }]);
    assert!(matches!(err, Err(KernelError::Shape { .. })), "{err:?}");
}

#[test]
fn public_functions_allocate_outputs_shaped_like_x() {
    for backend in test_backends() {
        let w = Tensor::from_f32(&backend, &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[3, 2], DType::BF16).unwrap();
        let x = Tensor::from_slice(&backend, &[1.0f32, -1.0], &[2]).unwrap();
        let y = gemv(&w, &x, GemvEpilogue::default()).unwrap();
        assert_eq!(y.shape(), &[3]);
        assert_eq!(y.to_f32_vec().unwrap(), vec![-1.0, -1.0, -1.0]);
        let x2 = Tensor::from_slice(&backend, &[1.0f32, 0.0, 0.0, 2.0], &[2, 1, 2]).unwrap();
        let y2 = gemv(&w, &x2, GemvEpilogue::default()).unwrap();
        assert_eq!(y2.shape(), &[2, 1, 3]);
        assert_eq!(y2.to_f32_vec().unwrap(), vec![1.0, 3.0, 5.0, 4.0, 8.0, 12.0]);
        let outs = gemv_multi(&x, &[GemvPart { w: &w, bias: None }, GemvPart { w: &w, bias: None }]).unwrap();
        assert_eq!(outs.len(), 2);
        assert_eq!(outs[1].to_f32_vec().unwrap(), vec![-1.0, -1.0, -1.0]);
        let gated = gemv_gated(&w, &w, &x, GatedAct::Silu).unwrap();
        assert_eq!(gated.shape(), &[3]);
        let s = -silu(-1.0);
        for v in gated.to_f32_vec().unwrap() {
            assert!((v - s).abs() < 1e-6, "{v} vs {s}");
        }
    }
}

#[test]
fn bad_input_is_a_typed_error_naming_the_values() {
    for backend in test_backends() {
        let t = |shape: &[usize], dtype: DType| Tensor::zeros(&backend, shape, dtype).unwrap();
        let (w, x) = (t(&[4, 8], DType::BF16), t(&[2, 8], DType::F32));
        let none = GemvEpilogue::default();
        let err = gemv(&w, &t(&[2, 7], DType::F32), none).unwrap_err();
        assert!(
            matches!(&err, KernelError::Shape { op: "gemv", detail } if detail.contains("in = 8") && detail.contains("7")),
            "{err}"
        );
        let err = gemv(&w, &t(&[9, 8], DType::F32), none).unwrap_err();
        assert!(matches!(&err, KernelError::Argument { name: "batch", value, .. } if value == "9"), "{err}");
        let err = gemv(&w, &t(&[0, 8], DType::F32), none).unwrap_err();
        assert!(matches!(&err, KernelError::Argument { name: "batch", value, .. } if value == "0"), "{err}");
        let err = gemv(&w, &t(&[2, 8], DType::F16), none).unwrap_err();
        assert!(matches!(&err, KernelError::DType { op: "gemv", found: DType::F16, .. }), "{err}");
        assert!(matches!(gemv(&t(&[4, 8], DType::U32), &x, none), Err(KernelError::DType { .. })));
        assert!(matches!(gemv(&t(&[32], DType::F32), &x, none), Err(KernelError::Shape { .. })));
        assert!(matches!(gemv(&t(&[0, 8], DType::F32), &x, none), Err(KernelError::Empty { .. })));
        assert!(matches!(gemv(&w, &t(&[2, 0], DType::F32), none), Err(KernelError::Empty { .. })));
        let five = t(&[5], DType::F32);
        let bad_bias = GemvEpilogue::bias(Some(&five));
        assert!(matches!(gemv(&w, &x, bad_bias), Err(KernelError::Shape { .. })));
        let bad_res = GemvEpilogue { bias: None, residual: Some(&t(&[2, 4], DType::BF16)), soft_cap: None };
        assert!(matches!(gemv(&w, &x, bad_res), Err(KernelError::DType { .. })));
        let bad_res = GemvEpilogue { bias: None, residual: Some(&t(&[3, 4], DType::F32)), soft_cap: None };
        assert!(matches!(gemv(&w, &x, bad_res), Err(KernelError::Shape { .. })));
        assert!(matches!(gemv_into(&w, &x, none, &t(&[2, 5], DType::F32)), Err(KernelError::Shape { .. })));
        assert!(matches!(gemv_into(&w, &x, none, &t(&[2, 4], DType::F16)), Err(KernelError::DType { .. })));
        let xs = t(&[1, 4], DType::F32);
        let sq = t(&[4, 4], DType::F32);
        assert!(matches!(gemv_into(&sq, &xs, none, &xs), Err(KernelError::Argument { name: "out", .. })));
        let part = GemvPart { w: &w, bias: None };
        let err = gemv_multi(&x, &[]).unwrap_err();
        assert!(matches!(&err, KernelError::Argument { name: "parts", value, .. } if value == "0"), "{err}");
        assert!(matches!(gemv_multi(&x, &[part; 7]), Err(KernelError::Argument { name: "parts", .. })));
        for cap in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let e = GemvEpilogue { soft_cap: Some(cap), ..none };
            let err = gemv(&w, &x, e).unwrap_err();
            assert!(matches!(&err, KernelError::Argument { name: "soft_cap", .. }), "{err}");
        }
        let o = t(&[2, 4], DType::F32);
        assert!(matches!(gemv_multi_into(&x, &[part, part], &[&o]), Err(KernelError::Argument { name: "outs", .. })));
        assert!(matches!(
            gemv_multi_into(&x, &[part, part], &[&o, &o]),
            Err(KernelError::Argument { name: "outs", .. })
        ));
        let mixed = GemvPart { w: &t(&[4, 8], DType::F16), bias: None };
        assert!(matches!(gemv_multi(&x, &[part, mixed]), Err(KernelError::DType { .. })));
        let err = gemv_gated(&w, &t(&[5, 8], DType::BF16), &x, GatedAct::Silu).unwrap_err();
        assert!(matches!(&err, KernelError::Shape { op: "gemv_gated", .. }), "{err}");
        assert!(matches!(
            gemv_gated(&w, &w, &t(&[2, 9], DType::F32), GatedAct::GeluTanh),
            Err(KernelError::Shape { .. })
        ));
    }
}

#[test]
fn forcing_the_subgroup_kernel_without_subgroups_is_an_error() {
    if let Some(Backend::Gpu(ctx)) = crate::testing::test_gpu()
        && !ctx.has_subgroups()
    {
        let backend = Backend::Gpu(ctx);
        let w = Tensor::zeros(&backend, &[4, 8], DType::F32).unwrap();
        let x = Tensor::zeros(&backend, &[1, 8], DType::F32).unwrap();
        let out = Tensor::zeros(&backend, &[1, 4], DType::F32).unwrap();
        let launch = GemvOptions { kernel: GemvKernel::Subgroup, tune: None, narrow: false };
        let err = gemv_into_with(&w, &x, GemvEpilogue::default(), &out, launch).unwrap_err();
        assert!(matches!(err, KernelError::MissingFeature { op: "gemv", .. }));
    }
}

#[test]
fn a_matrix_larger_than_one_binding_is_a_typed_error() {
    // Only where the limit is small (lavapipe: 128 MiB), so the test allocates little.
    let Some(Backend::Gpu(ctx)) = crate::testing::test_gpu() else { return };
    let limit = ctx.max_binding_bytes();
    if limit > 256 << 20 {
        return;
    }
    let backend = Backend::Gpu(ctx);
    let in_len = 4096;
    let rows = (limit as usize / (2 * in_len)) + 1;
    let w = Tensor::zeros(&backend, &[rows, in_len], DType::BF16).unwrap();
    let x = Tensor::zeros(&backend, &[1, in_len], DType::F32).unwrap();
    let err = gemv(&w, &x, GemvEpilogue::default()).unwrap_err();
    assert!(matches!(err, KernelError::BindingTooLarge { op: "gemv", bytes, .. } if bytes > limit), "{err}");
}

#[test]
fn params_match_the_wgsl_struct() {
    for kernel in [&GEMV, &GEMV_SUBGROUP, &GEMV6, &GEMV6_SUBGROUP] {
        let size = crate::testing::wgsl_struct_size(kernel, "Params");
        assert_eq!(size as usize, std::mem::size_of::<Params>(), "{}", kernel.name);
    }
}

/// Weights of `dtype` [rows, in] with small values, built fast (no f32 copy) for large sweeps.
fn pattern_tensor(backend: &Backend, rows: usize, in_len: usize, dtype: DType, seed: u64) -> Tensor {
    let n = rows * in_len;
    let es = dtype.size_bytes();
    let mut bytes = vec![0u8; n * es];
    bytes.par_chunks_mut(1 << 16).enumerate().for_each(|(c, chunk)| {
        let mut rng = Rng::new(seed ^ (c as u64).wrapping_mul(0x9e37_79b9));
        for e in chunk.chunks_exact_mut(es) {
            let r = rng.next_u64();
            let v = ((r >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0;
            match dtype {
                DType::F32 => e.copy_from_slice(&v.to_le_bytes()),
                DType::F16 => e.copy_from_slice(&half::f16::from_f32(v).to_le_bytes()),
                _ => e.copy_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
            }
        }
    });
    Tensor::from_bytes(backend, &bytes, &[rows, in_len], dtype).unwrap()
}

/// GPU seconds between an empty pass submitted just before the open batch and one submitted just after
/// it (timestamp queries), so host-side recording does not count.
fn gpu_span(ctx: &GpuContext) -> f64 {
    let device = ctx.device();
    let qs = device.create_query_set(&wgpu::QuerySetDescriptor {
        label: Some("gemv sweep"),
        ty: wgpu::QueryType::Timestamp,
        count: 2,
    });
    let stamp = |index: u32| {
        let mut e = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        let writes = wgpu::ComputePassTimestampWrites {
            query_set: &qs,
            beginning_of_pass_write_index: (index == 0).then_some(0),
            end_of_pass_write_index: (index == 1).then_some(1),
        };
        drop(e.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: Some(writes) }));
        e
    };
    let buf = |usage| {
        device.create_buffer(&wgpu::BufferDescriptor { label: None, size: 16, usage, mapped_at_creation: false })
    };
    let resolve = buf(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
    let read = buf(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
    ctx.drain_submissions().unwrap();
    ctx.queue().submit([stamp(0).finish()]);
    ctx.flush_to_queue().unwrap();
    let mut end = stamp(1);
    end.resolve_query_set(&qs, 0..2, &resolve, 0);
    end.copy_buffer_to_buffer(&resolve, 0, &read, 0, 16);
    ctx.queue().submit([end.finish()]);
    read.slice(..).map_async(wgpu::MapMode::Read, |r| r.unwrap());
    device.poll(wgpu::PollType::Wait { submission_index: None, timeout: None }).unwrap();
    let v: Vec<u64> = bytemuck::pod_collect_to_vec(&read.slice(..).get_mapped_range().unwrap());
    (v[1].wrapping_sub(v[0])) as f64 * ctx.queue().get_timestamp_period() as f64 * 1e-9
}

/// (GPU seconds, host seconds) of one call: after about 30 ms of warm-up (clocks ramp up after idle
/// host-side work), the best of two runs of about 30 ms of GPU work, each recorded whole and then
/// submitted at once between two timestamps.
fn time_calls(backend: &Backend, mut f: impl FnMut(usize)) -> (f64, f64) {
    let Backend::Gpu(ctx) = backend else { panic!("GPU only") };
    backend.synchronize().unwrap();
    let mut run = |n: usize| {
        let t = std::time::Instant::now();
        for i in 0..n {
            f(i);
        }
        let host = t.elapsed().as_secs_f64() / n as f64;
        (gpu_span(ctx) / n as f64, host)
    };
    let (mut n, mut warm, mut per_call) = (16, 0.0, 1.0);
    while warm < 0.03 {
        per_call = run(n).0;
        warm += per_call * n as f64;
        n = (n * 2).min(512);
    }
    // At most ~900 calls: the batch's parameter arena (256 KiB) would submit part of a longer one early.
    let n = ((0.03 / per_call) as usize).clamp(16, 900);
    let (a, b) = (run(n), run(n));
    (a.0.min(b.0), a.1.min(b.1))
}

/// Launch-shape sweep on a real GPU (bf16/f16/f32 at Llama-3-8B shapes), printing GB/s of weights +
/// x + y. Weights rotate through copies of at least 256 MiB in all so the L2 cache does not serve them.
/// `TORCHLESS_SWEEP=quick` times the automatic launch shape only.
#[test]
#[ignore = "timing sweep for a real GPU: cargo test --release -p torchless-kernels --lib gemv_sweep -- --ignored --nocapture"]
fn gemv_sweep() {
    let Some(backend) = crate::testing::test_gpu() else { return };
    let Backend::Gpu(ctx) = &backend else { return };
    let quick = std::env::var("TORCHLESS_SWEEP").is_ok_and(|v| v == "quick");
    println!(
        "adapter {} subgroups {}..{}",
        ctx.info().name,
        ctx.info().subgroup_min_size,
        ctx.info().subgroup_max_size
    );
    {
        let n = 256usize << 20;
        let (a, c) = (
            Tensor::zeros(&backend, &[n / 4], DType::F32).unwrap(),
            Tensor::zeros(&backend, &[n / 4], DType::F32).unwrap(),
        );
        let (ab, cb) = (a.gpu_buffer().unwrap().raw(), c.gpu_buffer().unwrap().raw());
        let (t, _) = time_calls(&backend, |_| ctx.copy_buffer(ab, 0, cb, 0, n as u64).unwrap());
        println!("copy 256 MiB: {:.0} GB/s (read + write)", 2.0 * n as f64 / t / 1e9);
    }
    let shapes: [(usize, usize, &[DType]); 4] = [
        (4096, 4096, &[DType::BF16, DType::F16, DType::F32]),
        (14336, 4096, &[DType::BF16, DType::F16, DType::F32]),
        (4096, 14336, &[DType::BF16, DType::F16, DType::F32]),
        (128256, 4096, &[DType::BF16, DType::F16]),
    ];
    let mut tunes = vec![None];
    if !quick {
        for wg in [32u32, 64, 128, 256] {
            for rows in [1u32, 2, 4] {
                tunes.push(Some(Tune { wg, rows }));
            }
        }
    }
    let kernels: &[GemvKernel] = if std::env::var("TORCHLESS_SWEEP_WORKGROUP").is_ok() {
        &[GemvKernel::Workgroup]
    } else {
        &[GemvKernel::Subgroup]
    };
    for (rows, in_len, dtypes) in shapes {
        for &dtype in dtypes {
            for b in [1usize, 4] {
                if b == 4 && (rows > 20000 || dtype != DType::BF16) {
                    continue;
                }
                let wbytes = rows * in_len * dtype.size_bytes();
                let copies = (256usize << 20).div_ceil(wbytes).max(1);
                let ws: Vec<Tensor> =
                    (0..copies).map(|c| pattern_tensor(&backend, rows, in_len, dtype, c as u64)).collect();
                let x = pattern_tensor(&backend, b, in_len, DType::F32, 99);
                let out = Tensor::zeros(&backend, &[b, rows], DType::F32).unwrap();
                let bytes = (wbytes + 4 * b * (in_len + rows)) as f64;
                let mut first: Option<Vec<f32>> = None;
                for &kernel in kernels {
                    for &tune in &tunes {
                        let launch = GemvOptions { kernel, tune, narrow: false };
                        let (t, host) = time_calls(&backend, |i| {
                            gemv_into_with(&ws[i % copies], &x, GemvEpilogue::default(), &out, launch).unwrap()
                        });
                        // Check against the first configuration (same weights: copy 0).
                        gemv_into_with(&ws[0], &x, GemvEpilogue::default(), &out, launch).unwrap();
                        let got = out.to_f32_vec().unwrap();
                        let diff = match &first {
                            None => {
                                first = Some(got);
                                0.0
                            }
                            Some(f) => f.iter().zip(&got).map(|(a, c)| (a - c).abs()).fold(0.0f32, f32::max),
                        };
                        let used =
                            tune.unwrap_or_else(|| clamp_tune(auto_tune(b, in_len, dtype, rows, TuneKind::Plain)));
                        println!(
                            "gemv {dtype:<4} [{rows:>6}, {in_len:>5}] b={b} {kernel:<9?} wg={:<3} rows={} {}: {:>8.1} us {:>6.0} GB/s  host {:>5.1} us  diff {diff:.1e}",
                            used.wg,
                            used.rows,
                            if tune.is_none() { "auto" } else { "    " },
                            t * 1e6,
                            bytes / t / 1e9,
                            host * 1e6
                        );
                    }
                }
            }
        }
    }
    // Fused forms at Llama-3-8B decode shapes, bf16, b = 1, automatic launch shape.
    let in_len = 4096;
    let x = pattern_tensor(&backend, 1, in_len, DType::F32, 98);
    // xLSTM-7B's six projections (q, k, v, o, ĩ, f̃) of one block.
    let fused = [
        ("qkv", vec![4096usize, 1024, 1024]),
        ("gate_up", vec![14336, 14336]),
        ("qkvoif", vec![2048, 2048, 4096, 4096, 8, 8]),
    ];
    for (name, parts) in fused {
        let copies = 3;
        let sets: Vec<Vec<Tensor>> = (0..copies)
            .map(|c| {
                parts
                    .iter()
                    .enumerate()
                    .map(|(k, &r)| pattern_tensor(&backend, r, in_len, DType::BF16, (10 * c + k) as u64))
                    .collect()
            })
            .collect();
        let outs: Vec<Tensor> = parts.iter().map(|&r| Tensor::zeros(&backend, &[1, r], DType::F32).unwrap()).collect();
        let wbytes: usize = parts.iter().map(|r| r * in_len * 2).sum();
        for &kernel in kernels {
            for &tune in &tunes {
                let launch = GemvOptions { kernel, tune, narrow: false };
                let (t, host) = time_calls(&backend, |i| {
                    let set = &sets[i % copies];
                    if name != "gate_up" {
                        let ps: Vec<GemvPart<'_>> = set.iter().map(|w| GemvPart { w, bias: None }).collect();
                        let refs: Vec<&Tensor> = outs.iter().collect();
                        gemv_multi_into_with(&x, &ps, &refs, launch).unwrap();
                    } else {
                        gemv_gated_into_with(&set[0], &set[1], &x, GatedAct::Silu, &outs[0], launch).unwrap();
                    }
                });
                println!(
                    "{name:<7} bf16 {parts:?} {kernel:?} {tune:?}: {:>8.1} us {:>6.0} GB/s  host {:>5.1} us",
                    t * 1e6,
                    wbytes as f64 / t / 1e9,
                    host * 1e6
                );
            }
        }
    }
}

#[test]
fn tunes_stay_inside_the_kernel_limits() {
    for rows in 0..8 {
        for wg in [1, 31, 32, 100, 256, 1024] {
            let t = clamp_tune(Tune { wg, rows });
            assert!(t.wg.is_power_of_two() && (32..=256).contains(&t.wg), "{t:?}");
            assert!((1..=4).contains(&t.rows), "{t:?}");
        }
    }
    for b in 1..=MAX_BATCH {
        for in_len in [1, 7, 64, 4096, 14336] {
            for dtype in DType::FLOATS {
                for kind in [TuneKind::Plain, TuneKind::Gated, TuneKind::NormedMulti] {
                    let t = auto_tune(b, in_len, dtype, 4096, kind);
                    assert_eq!(clamp_tune(t), t, "auto tune {t:?} is outside the limits");
                }
            }
        }
    }
    // xLSTM-7B's six normed projections at b = 1 (bf16): 256 threads, four rows a workgroup, 3076
    // workgroups; f32 stays as swept.
    let six = 2 * 2048 + 2 * 4096 + 2 * 8;
    assert_eq!(auto_tune(1, 4096, DType::BF16, six, TuneKind::NormedMulti), Tune { wg: 256, rows: 4 });
    assert_eq!(auto_tune(1, 4096, DType::BF16, six, TuneKind::Plain), Tune { wg: 128, rows: 2 });
    assert_eq!(auto_tune(1, 4096, DType::F32, six, TuneKind::NormedMulti), Tune { wg: 128, rows: 1 });
    // Llama-3-8B at b = 1 (bf16): Q/K/V 64 threads, the LM head 128; gate/up, down and O 256, two rows
    // (of each matrix).
    assert_eq!(auto_tune(1, 4096, DType::BF16, 6144, TuneKind::NormedMulti), Tune { wg: 64, rows: 4 });
    assert_eq!(auto_tune(1, 4096, DType::BF16, 128256, TuneKind::Plain), Tune { wg: 128, rows: 2 });
    assert_eq!(auto_tune(1, 4096, DType::BF16, 14336, TuneKind::Gated), Tune { wg: 256, rows: 2 });
    assert_eq!(auto_tune(1, 14336, DType::BF16, 4096, TuneKind::Plain), Tune { wg: 256, rows: 2 });
    assert_eq!(auto_tune(1, 4096, DType::BF16, 4096, TuneKind::Plain), Tune { wg: 256, rows: 2 });
    for b in 2..=MAX_BATCH {
        for kind in [TuneKind::Plain, TuneKind::NormedMulti] {
            assert_eq!(auto_tune(b, 4096, DType::BF16, six, kind), Tune { wg: 128, rows: 4 });
        }
    }
}

#[test]
fn bench_cases_validate_on_every_backend() {
    // A few rows of 4096 (gemv_qkv_bf16 keeps Llama-3-8B's shapes whatever the size).
    crate::testing::assert_bench_cases_validate(BENCH_OPS, 1 << 20);
}
