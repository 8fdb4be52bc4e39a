use super::*;
use crate::ops::gemm;
use crate::ops::norm::RmsNormVariant;
use crate::ops::rope::rope_qk_store_kv;
use crate::testing::{Rng, Tolerance, assert_close, test_backends, test_gpu};

fn quantized(rng: &mut Rng, ty: QuantType, rows: usize, cols: usize) -> (QuantTensor, Vec<f32>) {
    let values = rng.vec(rows * cols, -1.0, 1.0);
    let w = QuantTensor::quantize(&Backend::Cpu, ty, &values, rows, cols).unwrap();
    let wv = w.to_f32_vec().unwrap();
    (w, wv)
}

#[test]
fn gemv_q_matches_the_f64_reference_for_every_type_and_batch() {
    let mut rng = Rng::new(21);
    for ty in QuantType::ALL {
        for (k, (rows, blocks)) in [(1, 1), (33, 3), (257, 16)].into_iter().enumerate() {
            let cols = blocks * ty.block_elems();
            let b = 1 + (k * 3 + ty.wgsl_code() as usize) % MAX_BATCH;
            let (w, wv) = quantized(&mut rng, ty, rows, cols);
            let xv = exact_activations(&mut rng, b * cols);
            let want = reference(&wv, rows, cols, &xv);
            for backend in test_backends() {
                let (wd, xd) =
                    (w.to_backend(&backend).unwrap(), Tensor::from_slice(&backend, &xv, &[b, cols]).unwrap());
                let got = gemv_q(&wd, &xd, GemvEpilogue::default()).unwrap().to_f32_vec().unwrap();
                let name = format!("gemv_q {ty} [{rows}, {cols}] b={b} on {}", backend.name());
                assert_close(&name, &got, &want, tolerance(cols));
            }
        }
    }
}

/// gemm_q's tolerance: the cooperative-matrix path rounds x and the weights to f16.
fn gemm_tolerance(backend: &Backend, cols: usize) -> Tolerance {
    match backend {
        Backend::Gpu(ctx) if gpu::uses_coop16(ctx) => gemm::f16_rounded_tolerance(cols),
        _ => tolerance(cols),
    }
}

#[test]
fn gemm_q_and_embedding_q_match_the_dequantized_weights() {
    let mut rng = Rng::new(22);
    for ty in QuantType::ALL {
        // 300 rows and m = 200: more than one 128×256 tile (m × rows) of the cooperative kernel each way.
        for (rows, ms) in [(37, &[1, 5, 70][..]), (300, &[200][..])] {
            let cols = 2 * ty.block_elems();
            let (w, wv) = quantized(&mut rng, ty, rows, cols);
            for &m in ms {
                let xv = rng.vec(m * cols, -1.0, 1.0);
                let want = reference(&wv, rows, cols, &xv);
                for backend in test_backends() {
                    let (wd, xd) =
                        (w.to_backend(&backend).unwrap(), Tensor::from_slice(&backend, &xv, &[m, cols]).unwrap());
                    let got = gemm_q(&xd, &wd).unwrap();
                    assert_eq!(got.shape(), &[m, rows]);
                    let name = format!("gemm_q {ty} [{rows}, {cols}] m={m} on {}", backend.name());
                    assert_close(&name, &got.to_f32_vec().unwrap(), &want, gemm_tolerance(&backend, cols));
                }
            }
        }
        let (rows, cols) = (37, 2 * ty.block_elems());
        let (w, wv) = quantized(&mut rng, ty, rows, cols);
        let ids: Vec<u32> = vec![0, 36, 5, 5, 17];
        let want: Vec<f64> =
            ids.iter().flat_map(|&i| wv[i as usize * cols..][..cols].iter().map(|&v| v as f64)).collect();
        for backend in test_backends() {
            let wd = w.to_backend(&backend).unwrap();
            let idt = Tensor::from_slice(&backend, &ids, &[ids.len()]).unwrap();
            let got = embedding_q(&wd, &idt).unwrap();
            assert_eq!(got.shape(), &[ids.len(), cols]);
            let name = format!("embedding_q {ty} on {}", backend.name());
            // Exact on the CPU; a GPU may fuse the decode's multiply-add.
            let tol = if backend.is_gpu() {
                Tolerance { atol: 1e-7, rtol: 1e-6 }
            } else {
                Tolerance { atol: 0.0, rtol: 0.0 }
            };
            assert_close(&name, &got.to_f32_vec().unwrap(), &want, tol);
        }
    }
}

/// Both GPU kernels with forced launch shapes (rows per workgroup that do not divide the rows, tiny and
/// large workgroups), every type and several batch sizes.
#[test]
fn every_gpu_kernel_and_launch_shape_matches_the_reference() {
    let Some(gpu) = test_gpu() else { return };
    let Backend::Gpu(ctx) = &gpu else { unreachable!("test_gpu gives a GPU") };
    let mut kernels = vec![QGemvKernel::Workgroup];
    if ctx.has_subgroups() {
        kernels.push(QGemvKernel::Subgroup);
    }
    let mut rng = Rng::new(25);
    for ty in QuantType::ALL {
        let (rows, cols) = (7, 3 * ty.block_elems());
        let (w, wv) = quantized(&mut rng, ty, rows, cols);
        let wd = w.to_backend(&gpu).unwrap();
        for b in [1, 5] {
            let xv = exact_activations(&mut rng, b * cols);
            let want = reference(&wv, rows, cols, &xv);
            let xd = Tensor::from_slice(&gpu, &xv, &[b, cols]).unwrap();
            // Each pipeline costs a shader compile on a software adapter: each kernel takes half the
            // shapes per type, alternating between types; one row of x is also quantized in the
            // workgroup by teams (the third number), including a last workgroup with spare teams.
            let shapes: &[(u32, u32, u32)] =
                if b == 1 { &[(32, 3, 2), (256, 4, 0), (32, 3, 0), (64, 4, 4)] } else { &[(32, 3, 0), (256, 4, 0)] };
            for (i, &kernel) in kernels.iter().enumerate() {
                for &(wg, slots, teams) in shapes.iter().skip((i + ty.wgsl_code() as usize) % 2).step_by(2) {
                    let tune = Some(gpu::Tune { wg, rows: slots, teams });
                    let out = Tensor::uninit(&gpu, "test", &[b, rows], DType::F32).unwrap();
                    gemv_q_tuned(&wd, &GemvInput::new(&xd, None).unwrap(), GemvEpilogue::default(), &out, kernel, tune)
                        .unwrap();
                    let name = format!("gemv_q {ty} [{rows}, {cols}] b={b} {kernel:?} {tune:?}");
                    assert_close(&name, &out.to_f32_vec().unwrap(), &want, tolerance(cols));
                }
            }
        }
    }
}

/// Arbitrary x on the GPU: the activations as two bytes (x ≈ d·(256·hi + lo)/256 per 32 values, d =
/// max|x| / 127) move each value by at most d/256 (d/512 except where the lo byte clamps), so each
/// output is within Σ|w|·d/256 of the exact product (plus f32 rounding).
#[test]
fn gpu_activation_quantization_error_is_within_its_bound() {
    let Some(gpu) = test_gpu() else { return };
    let mut rng = Rng::new(26);
    for ty in [QuantType::Q8_0, QuantType::Q4_0, QuantType::Q5_1, QuantType::Q4K, QuantType::Q6K] {
        let (rows, cols, b) = (13, 512, 2);
        let (w, wv) = quantized(&mut rng, ty, rows, cols);
        // Blocks of very different magnitudes, one of them all zeros.
        let mut xv = rng.vec(b * cols, -1.0, 1.0);
        for (k, blk) in xv.chunks_mut(32).enumerate() {
            blk.iter_mut().for_each(|v| *v *= [1.0, 1e-3, 30.0, 0.0][k % 4]);
        }
        let got = gemv_q(
            &w.to_backend(&gpu).unwrap(),
            &Tensor::from_slice(&gpu, &xv, &[b, cols]).unwrap(),
            GemvEpilogue::default(),
        )
        .unwrap()
        .to_f32_vec()
        .unwrap();
        assert_within_activation_bound(&format!("gemv_q {ty}"), &got, &wv, rows, &xv);
    }
}

/// The CPU GEMV on arbitrary x (integer dots with x in two bytes on x86-64 with AVX2, the f32 path
/// elsewhere): every format, ragged rows, b = 1..8, blocks of very different magnitudes (one with a huge
/// outlier, one all zeros, tiny ones), within the two-byte activations' error bound of the f64
/// reference (weights with an offset `d·n + m` see it through `d·n`: at most `|w| + max|w|` of the
/// block).
#[test]
fn cpu_gemv_on_arbitrary_x_is_within_the_activation_bound() {
    let mut rng = Rng::new(29);
    for ty in QuantType::ALL {
        for b in 1..=MAX_BATCH {
            let rows = [1, 5, 37, 131][b % 4];
            let cols = (1 + b % 3) * ty.block_elems();
            let (w, wv) = quantized(&mut rng, ty, rows, cols);
            let mut xv = rng.vec(b * cols, -1.0, 1.0);
            for (k, blk) in xv.chunks_mut(32).enumerate() {
                match k % 5 {
                    1 => blk[k % 32] = 2e4,
                    2 => blk.fill(0.0),
                    3 => blk.iter_mut().for_each(|v| *v *= 1e-25),
                    _ => {}
                }
            }
            let got = gemv_q(&w, &Tensor::from_slice(&Backend::Cpu, &xv, &[b, cols]).unwrap(), GemvEpilogue::default())
                .unwrap()
                .to_f32_vec()
                .unwrap();
            let want = reference(&wv, rows, cols, &xv);
            for (r, x) in xv.chunks(cols).enumerate() {
                for o in 0..rows {
                    let wr = &wv[o * cols..][..cols];
                    let mut bound = 0f64;
                    for (wb, xb) in wr.chunks(32).zip(x.chunks(32)) {
                        let e = xb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64 / 127.0 / 256.0;
                        let wmax = wb.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
                        let f32_err: f64 = wb.iter().zip(xb).map(|(&a, &c)| 1e-5 * (a as f64 * c as f64).abs()).sum();
                        bound += wb.iter().map(|&a| (a.abs() as f64 + wmax) * e).sum::<f64>() + f32_err;
                    }
                    let (g, e) = (got[r * rows + o] as f64, want[r * rows + o]);
                    let name = format!("gemv_q {ty} [{rows}, {cols}] b={b} row {o} of x {r}");
                    assert!((g - e).abs() <= bound + 1e-30, "{name}: got {g}, want {e}, allowed {bound}");
                }
            }
        }
    }
}

/// `got` (GPU, `[b, rows]`) is within the two-byte activations' error bound of `x · Wᵀ`.
fn assert_within_activation_bound(name: &str, got: &[f32], wv: &[f32], rows: usize, xv: &[f32]) {
    let cols = wv.len() / rows;
    let want = reference(wv, rows, cols, xv);
    let f32_tol = tolerance(cols);
    for (r, x) in xv.chunks(cols).enumerate() {
        let max_err: Vec<f64> =
            x.chunks(32).map(|blk| blk.iter().fold(0f32, |m, v| m.max(v.abs())) as f64 / 127.0 / 256.0).collect();
        for o in 0..rows {
            let bound: f64 =
                wv[o * cols..][..cols].iter().enumerate().map(|(i, w)| w.abs() as f64 * max_err[i / 32]).sum();
            let (g, e) = (got[r * rows + o] as f64, want[r * rows + o]);
            let allowed = 1.001 * bound + f32_tol.atol + f32_tol.rtol * e.abs();
            assert!((g - e).abs() <= allowed, "{name} row {o} of x {r}: got {g}, want {e}, allowed {allowed}");
        }
    }
}

/// A prepared input with the RMSNorm fused in equals the norm then the GEMV: exactly so on the CPU
/// (that is what it runs), within the activation bound of the normalised x on the GPU; one input
/// serves several GEMVs.
#[test]
fn normed_input_matches_the_norm_then_the_gemv() {
    let mut rng = Rng::new(27);
    // 8448 values: rows longer than the quantization kernel keeps in registers (8192).
    // One row of x is normalised by the GEMV's workgroups, several by the quantization launch.
    for (cols, b) in [(512, 3), (8448, 1), (8448, 2)] {
        let eps = 1e-5f32;
        let xv = rng.vec(b * cols, -2.0, 2.0);
        let nw = rng.vec(cols, 0.5, 1.5);
        let weights = [QuantType::Q4K, QuantType::Q8_0, QuantType::Q6K].map(|ty| quantized(&mut rng, ty, 7, cols));
        for variant in [RmsNormVariant::Standard, RmsNormVariant::Gemma] {
            for backend in test_backends() {
                let x = Tensor::from_slice(&backend, &xv, &[b, cols]).unwrap();
                let weight = Tensor::from_f32(&backend, &nw, &[cols], DType::BF16).unwrap();
                // The reference normalises with the bf16-rounded weight, in f64.
                let g: Vec<f64> = weight
                    .to_f32_vec()
                    .unwrap()
                    .iter()
                    .map(|&w| if variant == RmsNormVariant::Gemma { 1.0 + w as f64 } else { w as f64 })
                    .collect();
                let xn: Vec<f32> = xv
                    .chunks(cols)
                    .flat_map(|row| {
                        let s = 1.0
                            / (row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / cols as f64 + eps as f64).sqrt();
                        row.iter().zip(&g).map(move |(&v, &g)| (v as f64 * s * g) as f32)
                    })
                    .collect();
                let input = GemvInput::new(&x, Some(InputNorm { weight: &weight, eps, variant })).unwrap();
                for (w, wv) in &weights {
                    let got = gemv_q_input(&w.to_backend(&backend).unwrap(), &input, GemvEpilogue::default())
                        .unwrap()
                        .to_f32_vec()
                        .unwrap();
                    let name = format!("normed gemv_q {} {variant:?} on {}", w.quant_type(), backend.name());
                    if backend.is_gpu() {
                        assert_within_activation_bound(&name, &got, wv, w.rows(), &xn);
                        if b == 1 {
                            // Normalised and quantized by the GEMV's workgroups (not the default for a
                            // normed input).
                            let wd = w.to_backend(&backend).unwrap();
                            let out = Tensor::uninit(&backend, "test", &[1, w.rows()], DType::F32).unwrap();
                            let tune = gpu::Tune { wg: 32, rows: 2, teams: 4 };
                            let e = GemvEpilogue::default();
                            gemv_q_tuned(&wd, &input, e, &out, QGemvKernel::Auto, Some(tune)).unwrap();
                            let fused = out.to_f32_vec().unwrap();
                            assert_within_activation_bound(&format!("{name} {tune:?}"), &fused, wv, w.rows(), &xn);
                        }
                    } else {
                        assert_close(&name, &got, &reference(wv, w.rows(), cols, &xn), tolerance(cols).scaled(4.0));
                    }
                }
            }
        }
    }
}

/// A GEMV (with a residual, or the gated form) that hands its output to the next GEMV as its input,
/// with that GEMV's norm (both variants) or none: on the GPU with one row of x the first dispatch writes
/// the next one's x quantized (each x layout: Q4_K, Q6_K, 32-weight blocks) and the norm's 1/rms is
/// applied by the next GEMV; with two rows of x it falls back to quantizing x in a launch. The first
/// output and the next GEMV's are checked against references on the output read back.
#[test]
fn emitted_inputs_match_the_reference() {
    let mut rng = Rng::new(30);
    let cols = 256;
    // (rows of the first GEMVs, rows of x, the next GEMV's types and norms): 256 rows are eight
    // workgroups of 32.
    use RmsNormVariant::{Gemma, Standard};
    let every = vec![None, Some(Standard), Some(Gemma)];
    let cases = [
        (256, 1, vec![(QuantType::Q4K, every.clone()), (QuantType::Q6K, vec![Some(Standard)])]),
        (96, 1, vec![(QuantType::Q8_0, every), (QuantType::Q5_1, vec![None])]),
        (256, 2, vec![(QuantType::Q4K, vec![Some(Standard)])]),
    ];
    for (rows, b, next_types) in cases {
        let xv = exact_activations(&mut rng, b * cols);
        let (w1, w1v) = quantized(&mut rng, QuantType::Q4_0, rows, cols);
        let (gate, gv) = quantized(&mut rng, QuantType::Q8_0, rows, cols);
        let (up, uv) = quantized(&mut rng, QuantType::Q8_0, rows, cols);
        let res = rng.vec(b * rows, -1.0, 1.0);
        let nw = rng.vec(rows, 0.5, 1.5);
        let nexts: Vec<(QuantTensor, Vec<f32>, Vec<Option<RmsNormVariant>>)> = next_types
            .into_iter()
            .map(|(ty, variants)| {
                let (w, wv) = quantized(&mut rng, ty, 7, rows);
                (w, wv, variants)
            })
            .collect();
        let r1: Vec<f64> = reference(&w1v, rows, cols, &xv).iter().zip(&res).map(|(v, &r)| v + r as f64).collect();
        let (rg, ru) = (reference(&gv, rows, cols, &xv), reference(&uv, rows, cols, &xv));
        let r_gated: Vec<f64> = rg.iter().zip(&ru).map(|(&g, &u)| GatedAct::Silu.apply(g as f32) as f64 * u).collect();
        for backend in test_backends() {
            let on = |w: &QuantTensor| w.to_backend(&backend).unwrap();
            let (w1d, gd, ud) = (on(&w1), on(&gate), on(&up));
            let x = GemvInput::new(&Tensor::from_slice(&backend, &xv, &[b, cols]).unwrap(), None).unwrap();
            let weight = Tensor::from_f32(&backend, &nw, &[rows], DType::BF16).unwrap();
            let g: Vec<f64> = weight.to_f32_vec().unwrap().iter().map(|&w| w as f64).collect();
            for (next, nv, variants) in &nexts {
                let nd = on(next);
                for &variant in variants {
                    let norm = variant.map(|variant| InputNorm { weight: &weight, eps: 1e-5, variant });
                    let then = NextInput { norm, next: &nd };
                    // The next GEMV's x as the reference sees it: the output read back, normalised in f64.
                    let normed = |y: &[f32]| -> Vec<f32> {
                        let Some(v) = variant else { return y.to_vec() };
                        y.chunks(rows)
                            .flat_map(|row| {
                                let ms = row.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / rows as f64;
                                let s = 1.0 / (ms + 1e-5).sqrt();
                                let plus = if v == RmsNormVariant::Gemma { 1.0 } else { 0.0 };
                                row.iter().zip(&g).map(move |(&v, &w)| (v as f64 * s * (w + plus)) as f32)
                            })
                            .collect()
                    };
                    let name =
                        format!("{} rows, b={b}, next {} {variant:?} on {}", rows, next.quant_type(), backend.name());
                    let check_next = |what: &str, input: &GemvInput, y: &[f32]| {
                        let got = gemv_q_input(&nd, input, GemvEpilogue::default()).unwrap().to_f32_vec().unwrap();
                        let xn = normed(y);
                        if backend.is_gpu() {
                            assert_within_activation_bound(what, &got, nv, 7, &xn);
                        } else {
                            // tolerance() is for |x| <= 1.
                            let amax = xn.iter().fold(1f32, |m, v| m.max(v.abs())) as f64;
                            let tol = tolerance(rows).scaled(4.0 * amax);
                            assert_close(what, &got, &reference(nv, 7, rows, &xn), tol);
                        }
                    };
                    // Every emitting shape (one, two or four rows a team; the gated form at most two) with
                    // the standard norm; the format's default otherwise.
                    let shapes: &[u32] = if variant == Some(Standard) { &[1, 2, 4] } else { &[1] };
                    for &team_rows in shapes {
                        super::gpu::TEST_EMIT_ROWS.with(|c| c.set(Some(team_rows)));
                        let name = format!("{name}, {team_rows} rows a team");
                        let h = Tensor::from_slice(&backend, &res, &[b, rows]).unwrap();
                        let input = gemv_q_input_into_then(&w1d, &x, GemvEpilogue::residual(&h), &h, then).unwrap();
                        let hv = h.to_f32_vec().unwrap();
                        assert_close(&format!("residual GEMV, {name}"), &hv, &r1, tolerance(cols));
                        check_next(&format!("after the residual GEMV, {name}"), &input, &hv);
                        let input = gemv_q_gated_then(&x, &gd, &ud, GatedAct::Silu, then).unwrap();
                        let yv = input.tensor().to_f32_vec().unwrap();
                        if variant.is_none() || backend.is_gpu() {
                            assert_close(&format!("gated GEMV, {name}"), &yv, &r_gated, tolerance(cols).scaled(4.0));
                            check_next(&format!("after the gated GEMV, {name}"), &input, &yv);
                        }
                    }
                    super::gpu::TEST_EMIT_ROWS.with(|c| c.set(None));
                }
            }
        }
    }
    // Bad input: next weights that do not take the output.
    let cpu = Backend::Cpu;
    let (w, _) = quantized(&mut rng, QuantType::Q8_0, 64, cols);
    let (next, _) = quantized(&mut rng, QuantType::Q8_0, 4, 96);
    let x = GemvInput::new(&Tensor::from_slice(&cpu, &vec![0.5; cols], &[1, cols]).unwrap(), None).unwrap();
    let out = Tensor::zeros(&cpu, &[1, 64], DType::F32).unwrap();
    let then = NextInput { norm: None, next: &next };
    let err = gemv_q_input_into_then(&w, &x, GemvEpilogue::default(), &out, then);
    assert!(matches!(err, Err(KernelError::Shape { .. })), "{:?}", err.err());
}

/// Q, K and V in one dispatch (rows that do not divide the workgroups' rows, biases on two of them), a
/// mixed-type set that falls back to one GEMV each, and the gated MLP half for both activations.
/// Runs `f` with the automatic launch shapes and, for one row of x on a GPU, again with x quantized by
/// the GEMV's workgroups in teams (FUSED, which the automatic shapes never pick); `f` gets a label.
fn with_and_without_teams(backend: &Backend, b: usize, mut f: impl FnMut(&str)) {
    f("");
    if backend.is_gpu() && b == 1 {
        gpu::TEST_TUNE.with(|t| t.set(Some(gpu::Tune { wg: 32, rows: 4, teams: 2 })));
        f(" with teams");
        gpu::TEST_TUNE.with(|t| t.set(None));
    }
}

#[test]
fn multi_and_gated_gemvs_match_the_reference() {
    let mut rng = Rng::new(28);
    let cols = 256;
    for b in [1, 3] {
        let xv = exact_activations(&mut rng, b * cols);
        let mats: Vec<(QuantTensor, Vec<f32>)> = [(QuantType::Q4K, 37), (QuantType::Q4K, 9), (QuantType::Q4K, 13)]
            .into_iter()
            .map(|(ty, rows)| quantized(&mut rng, ty, rows, cols))
            .collect();
        let (q6, q6v) = quantized(&mut rng, QuantType::Q6K, 9, cols);
        let biases = [Some(rng.vec(37, -1.0, 1.0)), None, Some(rng.vec(13, -1.0, 1.0))];
        let gate_up: Vec<(QuantTensor, Vec<f32>)> =
            (0..2).map(|_| quantized(&mut rng, QuantType::Q8_0, 11, cols)).collect();
        // Odd row counts: the CPU pairs rows for its two-row dot, across the matrices' boundaries too,
        // and the last row has no partner.
        let odd: Vec<(QuantTensor, Vec<f32>)> = [(QuantType::Q4_1, 7), (QuantType::Q8_0, 11), (QuantType::Q4_0, 5)]
            .into_iter()
            .map(|(ty, rows)| quantized(&mut rng, ty, rows, cols))
            .collect();
        for backend in test_backends() {
            with_and_without_teams(&backend, b, |teams| {
                let x = GemvInput::new(&Tensor::from_slice(&backend, &xv, &[b, cols]).unwrap(), None).unwrap();
                let on = |w: &QuantTensor| w.to_backend(&backend).unwrap();
                let ws: Vec<QuantTensor> = mats.iter().map(|(w, _)| on(w)).collect();
                let bs: Vec<Option<Tensor>> = biases
                    .iter()
                    .map(|b| b.as_ref().map(|v| Tensor::from_f32(&backend, v, &[v.len()], DType::F16).unwrap()))
                    .collect();
                let want = |wv: &[f32], rows: usize, bias: Option<&Tensor>| -> Vec<f64> {
                    let bias = bias.map(|t| t.to_f32_vec().unwrap());
                    reference(wv, rows, cols, &xv)
                        .iter()
                        .enumerate()
                        .map(|(i, v)| v + bias.as_ref().map_or(0.0, |bv| bv[i % rows] as f64))
                        .collect()
                };
                let parts: Vec<(&QuantTensor, Option<&Tensor>)> =
                    ws.iter().zip(&bs).map(|(w, b)| (w, b.as_ref())).collect();
                let outs = gemv_q_multi(&x, &parts).unwrap();
                for (k, out) in outs.iter().enumerate() {
                    assert_eq!(out.shape(), &[b, mats[k].0.rows()]);
                    let name = format!("gemv_q_multi part {k} b={b} on {}{teams}", backend.name());
                    assert_close(
                        &name,
                        &out.to_f32_vec().unwrap(),
                        &want(&mats[k].1, mats[k].0.rows(), bs[k].as_ref()),
                        tolerance(cols),
                    );
                }
                let q6d = on(&q6);
                let mixed = gemv_q_multi(&x, &[(&ws[0], None), (&q6d, None)]).unwrap();
                let name = format!("gemv_q_multi mixed b={b} on {}{teams}", backend.name());
                assert_close(&name, &mixed[1].to_f32_vec().unwrap(), &want(&q6v, 9, None), tolerance(cols));
                let odd_ws: Vec<QuantTensor> = odd.iter().map(|(w, _)| on(w)).collect();
                let odd_parts: Vec<(&QuantTensor, Option<&Tensor>)> = odd_ws.iter().map(|w| (w, None)).collect();
                for (k, out) in gemv_q_multi(&x, &odd_parts).unwrap().iter().enumerate() {
                    let (w, wv) = (&odd[k].0, &odd[k].1);
                    let name = format!("gemv_q_multi odd rows part {k} b={b} on {}{teams}", backend.name());
                    assert_close(&name, &out.to_f32_vec().unwrap(), &want(wv, w.rows(), None), tolerance(cols));
                }
                let (g, u) = (on(&gate_up[0].0), on(&gate_up[1].0));
                let (gr, ur) = (reference(&gate_up[0].1, 11, cols, &xv), reference(&gate_up[1].1, 11, cols, &xv));
                for act in [GatedAct::Silu, GatedAct::GeluTanh] {
                    let got = gemv_q_gated(&x, &g, &u, act).unwrap();
                    assert_eq!(got.shape(), &[b, 11]);
                    let want: Vec<f64> = gr.iter().zip(&ur).map(|(&g, &u)| act.apply(g as f32) as f64 * u).collect();
                    let name = format!("gemv_q_gated {act:?} b={b} on {}{teams}", backend.name());
                    assert_close(&name, &got.to_f32_vec().unwrap(), &want, tolerance(cols).scaled(4.0));
                }
            });
        }
    }
}

#[test]
fn qkv_rope_matches_multi_then_rope() {
    use crate::ops::rope::{RopeConfig, RopeLayout::*, RopeTable};
    let mut rng = Rng::new(29);
    let cols = 256;
    // (type, layout, head_dim, rot_dim, q heads, kv heads, b, pos, biases): 64 heads of 64 rows give Wq
    // 4096 rows; a HalfSplit workgroup with a 16-bit cache has four slots, an Interleaved one two (Q4_K's
    // automatic shape) or four (teams); rot_dim < head_dim takes the two-op path.
    #[rustfmt::skip]
    let cases = [
        (QuantType::Q4K, HalfSplit, 64, 64, 8, 2, 1, 5, false),
        (QuantType::Q4K, Interleaved, 64, 64, 8, 2, 1, 12, true),
        (QuantType::Q4K, HalfSplit, 64, 64, 64, 8, 1, 300, true),
        (QuantType::Q8_0, Interleaved, 32, 32, 6, 3, 3, 17, true),
        (QuantType::Q6K, HalfSplit, 16, 16, 4, 4, 2, 0, false),
        (QuantType::Q4_0, Interleaved, 128, 128, 4, 1, 1, 70000, false),
        (QuantType::Q4K, HalfSplit, 32, 16, 4, 2, 1, 9, false),
    ];
    for (ty, layout, hd, rot, nh, nkv, b, pos, with_bias) in cases {
        let xv = exact_activations(&mut rng, b * cols);
        let (q_rows, kv_rows) = (nh * hd, nkv * hd);
        let mats: Vec<QuantTensor> =
            [q_rows, kv_rows, kv_rows].into_iter().map(|rows| quantized(&mut rng, ty, rows, cols).0).collect();
        let biases: Vec<Option<Vec<f32>>> =
            [q_rows, kv_rows, kv_rows].into_iter().map(|n| with_bias.then(|| rng.vec(n, -1.0, 1.0))).collect();
        let cap = pos + b + 2;
        let cache0 = rng.vec(cap * kv_rows, -1.0, 1.0);
        let cfg = RopeConfig::new(hd, 10000.0).with_rot_dim(rot).with_layout(layout);
        for (backend, cache_dt) in
            test_backends().into_iter().flat_map(|b| crate::ops::rope::CACHE_DTYPES.map(|d| (b.clone(), d)))
        {
            with_and_without_teams(&backend, b, |teams| {
                let x = GemvInput::new(&Tensor::from_slice(&backend, &xv, &[b, cols]).unwrap(), None).unwrap();
                let ws: Vec<QuantTensor> = mats.iter().map(|w| w.to_backend(&backend).unwrap()).collect();
                let bs: Vec<Option<Tensor>> = biases
                    .iter()
                    .map(|v| v.as_ref().map(|v| Tensor::from_slice(&backend, v, &[v.len()]).unwrap()))
                    .collect();
                let parts: Vec<(&QuantTensor, Option<&Tensor>)> =
                    ws.iter().zip(&bs).map(|(w, b)| (w, b.as_ref())).collect();
                let table = RopeTable::new(&backend, cfg.clone()).unwrap();
                let cache = || Tensor::from_f32(&backend, &cache0, &[cap, nkv, hd], cache_dt).unwrap();
                // The two ops, each tested on its own.
                let [q, k, v]: [Tensor; 3] = gemv_q_multi(&x, &parts).unwrap().try_into().unwrap();
                let (kc_want, vc_want) = (cache(), cache());
                let q3 = q.reshape(&[b, nh, hd]).unwrap();
                rope_qk_store_kv(
                    &q3,
                    &k.reshape(&[b, nkv, hd]).unwrap(),
                    &v.reshape(&[b, nkv, hd]).unwrap(),
                    &table,
                    pos,
                    &kc_want,
                    &vc_want,
                )
                .unwrap();
                let (kc, vc) = (cache(), cache());
                let kv = KvWrite { table: &table, pos, k_cache: &kc, v_cache: &vc };
                let got = gemv_q_qkv_rope(&x, [parts[0], parts[1], parts[2]], kv).unwrap();
                assert_eq!(got.shape(), &[b, q_rows]);
                let what = format!(
                    "gemv_q_qkv_rope {ty} {layout:?} hd {hd} rot {rot} {nh}/{nkv} b={b} pos {pos}, {cache_dt} cache, on {}{teams}",
                    backend.name()
                );
                let tol = match cache_dt {
                    DType::F32 => Tolerance { atol: 1e-5, rtol: 1e-5 },
                    dt => crate::ops::rope::cache_rounding_tolerance(dt),
                };
                crate::ops::rope::assert_epilogue_matches(&what, [&got, &kc, &vc], [&q, &kc_want, &vc_want], tol);
            });
        }
    }
    // Bad input: a step past the end of the cache.
    let cpu = Backend::Cpu;
    let w = quantized(&mut rng, QuantType::Q8_0, 4, cols).0;
    let x = GemvInput::new(&Tensor::from_slice(&cpu, &vec![0.5; cols], &[1, cols]).unwrap(), None).unwrap();
    let table = RopeTable::new(&cpu, RopeConfig::new(4, 10000.0)).unwrap();
    let c = Tensor::zeros(&cpu, &[2, 1, 4], DType::F32).unwrap();
    let c2 = Tensor::zeros(&cpu, &[2, 1, 4], DType::F32).unwrap();
    let kv = KvWrite { table: &table, pos: 2, k_cache: &c, v_cache: &c2 };
    let err = gemv_q_qkv_rope(&x, [(&w, None), (&w, None), (&w, None)], kv);
    assert!(matches!(err, Err(KernelError::Argument { name: "pos", .. })), "{err:?}");
}

#[test]
fn params_match_the_wgsl_structs() {
    for k in [&gpu::QGEMV, &gpu::QGEMV_SUBGROUP] {
        assert_eq!(crate::testing::wgsl_struct_size(k, "Params") as usize, std::mem::size_of::<gpu::GemvParams>());
    }
    assert_eq!(
        crate::testing::wgsl_struct_size(&gpu::QGEMV_X, "Params") as usize,
        std::mem::size_of::<gpu::QuantizeXParams>()
    );
    assert_eq!(
        crate::testing::wgsl_struct_size(&gpu::QMATMUL, "Params") as usize,
        std::mem::size_of::<gpu::MatmulParams>()
    );
}

#[test]
fn bench_cases_validate_on_every_backend() {
    // Small sizes: a few rows of 4096 (gemv), 256³ (gemm).
    crate::testing::assert_bench_cases_validate(BENCH_OPS, 1 << 20);
    assert_eq!(bench_rows(QuantType::Q4K, 4096, 32 << 20), 14336);
    assert_eq!(bench_rows(QuantType::Q4K, 14336, 32 << 20), 4096);
    assert_eq!(bench_rows(QuantType::Q4_0, 4096, 32 << 20), 14336);
    assert_eq!(bench_rows(QuantType::Q8_0, 4096, 60 << 20), 14336);
    assert_eq!(bench_rows(QuantType::Q8_0, 14336, 60 << 20), 4096);
    assert_eq!(bench_rows(QuantType::Q6K, 4096, 46 << 20), 14336);
    assert_eq!(bench_rows(QuantType::Q6K, 14336, 46 << 20), 4096);
}

#[test]
fn bad_input_is_a_typed_error() {
    let mut rng = Rng::new(23);
    let (w, _) = quantized(&mut rng, QuantType::Q4_0, 4, 64);
    let cpu = Backend::Cpu;
    let x = Tensor::from_slice(&cpu, &rng.vec(64, -1.0, 1.0), &[1, 64]).unwrap();
    let bad_x = Tensor::from_slice(&cpu, &rng.vec(32, -1.0, 1.0), &[1, 32]).unwrap();
    assert!(matches!(gemv_q(&w, &bad_x, GemvEpilogue::default()), Err(KernelError::Shape { .. })));
    assert!(matches!(gemm_q(&bad_x, &w), Err(KernelError::Shape { .. })));
    let x9 = Tensor::from_slice(&cpu, &rng.vec(9 * 64, -1.0, 1.0), &[9, 64]).unwrap();
    assert!(matches!(gemv_q(&w, &x9, GemvEpilogue::default()), Err(KernelError::Argument { .. })));
    let x16 = Tensor::from_f32(&cpu, &rng.vec(64, -1.0, 1.0), &[1, 64], DType::F16).unwrap();
    assert!(matches!(gemv_q(&w, &x16, GemvEpilogue::default()), Err(KernelError::DType { .. })));
    let bias = Tensor::from_slice(&cpu, &[0f32; 3], &[3]).unwrap();
    let e = GemvEpilogue::bias(Some(&bias));
    assert!(matches!(gemv_q(&w, &x, e), Err(KernelError::Shape { .. })));
    let ids = Tensor::from_slice(&cpu, &[4u32], &[1]).unwrap();
    assert!(matches!(embedding_q(&w, &ids), Err(KernelError::Argument { .. })));
    let fids = Tensor::from_slice(&cpu, &[1f32], &[1]).unwrap();
    assert!(matches!(embedding_q(&w, &fids), Err(KernelError::DType { .. })));
}

#[test]
fn bias_and_residual_are_added_in_the_epilogue() {
    let mut rng = Rng::new(24);
    let (rows, cols, b) = (19, 256, 3);
    for ty in [QuantType::Q4_1, QuantType::Q6K] {
        let (w, wv) = quantized(&mut rng, ty, rows, cols);
        let xv = exact_activations(&mut rng, b * cols);
        let bias_v = rng.vec(rows, -1.0, 1.0);
        let res_v = rng.vec(b * rows, -1.0, 1.0);
        let product = reference(&wv, rows, cols, &xv);
        // Then the soft cap, last (a final logit soft cap).
        for soft_cap in [None, Some(2.0f32)] {
            let want: Vec<f64> = product
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    let y = v + bias_v[i % rows] as f64 + res_v[i] as f64;
                    soft_cap.map_or(y, |c| c as f64 * (y / c as f64).tanh())
                })
                .collect();
            for backend in test_backends() {
                let wd = w.to_backend(&backend).unwrap();
                let xd = Tensor::from_slice(&backend, &xv, &[b, cols]).unwrap();
                let bias = Tensor::from_f32(&backend, &bias_v, &[rows], DType::F32).unwrap();
                for in_place in [false, true] {
                    let res = Tensor::from_slice(&backend, &res_v, &[b, rows]).unwrap();
                    let out = if in_place {
                        res.clone()
                    } else {
                        Tensor::uninit(&backend, "t", &[b, rows], DType::F32).unwrap()
                    };
                    let e = GemvEpilogue { bias: Some(&bias), residual: Some(&res), soft_cap };
                    gemv_q_into(&wd, &xd, e, &out).unwrap();
                    let name =
                        format!("gemv_q {ty} epilogue in_place={in_place} soft cap {soft_cap:?} on {}", backend.name());
                    assert_close(&name, &out.to_f32_vec().unwrap(), &want, tolerance(cols));
                }
            }
        }
        let x = Tensor::from_slice(&Backend::Cpu, &xv, &[b, cols]).unwrap();
        let e = GemvEpilogue { soft_cap: Some(-1.0), ..Default::default() };
        assert!(matches!(gemv_q(&w, &x, e), Err(KernelError::Argument { name: "soft_cap", .. })));
    }
}

#[test]
fn k_quant_gemvs_widen_only_for_long_rows_in_few_workgroups() {
    use super::gpu::k_quant_threads;
    // Llama-3-8B's down projection: 64 threads; its Q/K/V, gate/up and LM head: one warp.
    assert_eq!(k_quant_threads(4096, 14336), 64);
    for (rows, cols) in [(4096, 4096), (1024, 4096), (14336, 4096), (128256, 4096), (8192, 8192)] {
        assert_eq!(k_quant_threads(rows, cols), 32, "{rows} x {cols}");
    }
}

#[test]
fn only_short_q6_k_rows_take_one_row_a_workgroup() {
    use super::gpu::rows_per_workgroup;
    assert_eq!(rows_per_workgroup(QuantType::Q6K, 4096), 1);
    assert_eq!(rows_per_workgroup(QuantType::Q6K, 14336), 4);
    for t in [QuantType::Q8_0, QuantType::Q4_0] {
        assert_eq!(rows_per_workgroup(t, 4096), 4, "{t:?}");
    }
}
