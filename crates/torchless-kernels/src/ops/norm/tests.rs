use super::*;
use crate::testing::{RAGGED, Rng, Tolerance, assert_close, round_to, test_backends};

fn tensor(backend: &Backend, v: &[f32], shape: &[usize], dtype: DType) -> Tensor {
    Tensor::from_f32(backend, v, shape, dtype).unwrap()
}

/// The tolerance of a norm output of `dtype`: f32 math, one rounding to the output type.
fn tol(dtype: DType) -> Tolerance {
    Tolerance::for_dtype(dtype).scaled(4.0)
}

fn rows_for(n: usize) -> usize {
    if n > 1000 { 2 } else { 3 }
}

#[test]
fn plan_splits_rows_as_documented() {
    let p = RowPlan::for_limit(1024, 4096, DType::F32);
    assert_eq!((p.unit, p.tpr, p.cache, p.wg, p.split_parity), (4, 256, 4, 256, false));
    let p = RowPlan::for_limit(1024, 4096, DType::BF16);
    assert_eq!((p.unit, p.tpr, p.cache, p.wg), (4, 128, 4, 256));
    assert_eq!(p.launches(5), vec![(0, 1, 3)]);
    let p = RowPlan::for_limit(1024, 16384, DType::F32);
    assert_eq!((p.unit, p.tpr, p.cache, p.wg), (4, 1024, 4, 1024));
    let p = RowPlan::for_limit(1024, 32768, DType::BF16);
    assert_eq!((p.unit, p.tpr, p.cache, p.wg), (4, 1024, 4, 1024));
    let p = RowPlan::for_limit(1024, 32000, DType::F32);
    assert_eq!((p.unit, p.tpr, p.cache, p.wg), (4, 1024, 0, 1024));
    let p = RowPlan::for_limit(1024, 70000, DType::F32);
    assert_eq!((p.tpr, p.cache), (1024, 0));
    let p = RowPlan::for_limit(256, 33, DType::F16);
    assert_eq!((p.unit, p.tpr, p.cache, p.wg, p.split_parity), (1, 8, 3, 256, true));
    assert_eq!(p.launches(5), vec![(0, 2, 1), (1, 2, 1)]);
    assert_eq!(p.launches(1), vec![(0, 1, 1)]);
    let p = RowPlan::for_limit(256, 3, DType::F32);
    assert_eq!((p.unit, p.tpr, p.cache, p.wg), (1, 1, 3, 256));
    let chunks: Vec<u32> = (0..=10).map(|k| RowPlan { tpr: 1 << k, ..p }.chunk()).collect();
    assert_eq!(chunks, [1, 2, 2, 4, 4, 8, 8, 16, 16, 32, 32]);
}

#[test]
fn rmsnorm_matches_the_f64_reference_on_ragged_rows() {
    let mut rng = Rng::new(21);
    for backend in test_backends() {
        for (i, &n) in RAGGED.iter().enumerate() {
            for (j, dtype) in DType::FLOATS.into_iter().enumerate() {
                // Every (x, weight) dtype pair, spread over the sizes.
                let wdtype = DType::FLOATS[(i + j) % 3];
                let variant = if i % 2 == 0 { RmsNormVariant::Standard } else { RmsNormVariant::Gemma };
                let rows = rows_for(n);
                let x = round_to(&rng.vec(rows * n, -3.0, 3.0), dtype);
                let w = round_to(&rng.vec(n, -1.5, 1.5), wdtype);
                let eps = [1e-5, 1e-6, 0.1][i % 3];
                let got = rmsnorm(
                    &tensor(&backend, &x, &[rows, n], dtype),
                    &tensor(&backend, &w, &[n], wdtype),
                    eps,
                    variant,
                )
                .unwrap()
                .to_f32_vec()
                .unwrap();
                let want = reference::rmsnorm(&x, &w, eps, variant);
                let what = format!("rmsnorm {variant:?} x {dtype} w {wdtype} [{rows}, {n}] on {}", backend.name());
                assert_close(&what, &got, &want, tol(dtype));
            }
        }
    }
}

#[test]
fn every_weight_dtype_pairs_with_every_activation_dtype() {
    let mut rng = Rng::new(22);
    for backend in test_backends() {
        for dtype in DType::FLOATS {
            for wdtype in DType::FLOATS {
                // 64: vec4 loads in every dtype; 36: vec4 loads for f32 only; 33: word loads.
                for n in [64, 36, 33] {
                    let x = round_to(&rng.vec(4 * n, -2.0, 2.0), dtype);
                    let w = round_to(&rng.vec(n, -1.0, 1.0), wdtype);
                    let b = round_to(&rng.vec(n, -1.0, 1.0), wdtype);
                    let xt = tensor(&backend, &x, &[4, n], dtype);
                    let (wt, bt) = (tensor(&backend, &w, &[n], wdtype), tensor(&backend, &b, &[n], wdtype));
                    let what = format!("x {dtype} w {wdtype} n={n} on {}", backend.name());
                    let got = rmsnorm(&xt, &wt, 1e-5, RmsNormVariant::Gemma).unwrap().to_f32_vec().unwrap();
                    let want = reference::rmsnorm(&x, &w, 1e-5, RmsNormVariant::Gemma);
                    assert_close(&format!("rmsnorm {what}"), &got, &want, tol(dtype));
                    let got = layernorm(&xt, &wt, Some(&bt), 1e-5).unwrap().to_f32_vec().unwrap();
                    let want = reference::layernorm(&x, &w, Some(&b), 1e-5);
                    assert_close(&format!("layernorm {what}"), &got, &want, tol(dtype));
                }
            }
        }
    }
}

#[test]
fn long_rows_stream_from_memory() {
    let mut rng = Rng::new(23);
    for backend in test_backends() {
        // 70000: vec4 units, too many for registers; 70001: word units, odd (16-bit rows share words);
        // 12000: 3 vec4 units a thread in workgroups of 1024.
        for (n, rows, dtype) in [
            (70000, 1, DType::F32),
            (70000, 2, DType::BF16),
            (70001, 2, DType::F16),
            (70001, 1, DType::F32),
            (12000, 3, DType::F32),
        ] {
            let x = round_to(&rng.vec(rows * n, -2.0, 2.0), dtype);
            let r = round_to(&rng.vec(rows * n, -2.0, 2.0), dtype);
            let w = round_to(&rng.vec(n, 0.5, 1.5), DType::BF16);
            let b = round_to(&rng.vec(n, -0.5, 0.5), DType::BF16);
            let xt = tensor(&backend, &x, &[rows, n], dtype);
            let (wt, bt) = (tensor(&backend, &w, &[n], DType::BF16), tensor(&backend, &b, &[n], DType::BF16));
            let what = format!("{dtype} [{rows}, {n}] on {}", backend.name());

            let got = rmsnorm(&xt, &wt, 1e-6, RmsNormVariant::Standard).unwrap().to_f32_vec().unwrap();
            let want = reference::rmsnorm(&x, &w, 1e-6, RmsNormVariant::Standard);
            assert_close(&format!("rmsnorm {what}"), &got, &want, tol(dtype));

            let got = layernorm(&xt, &wt, Some(&bt), 1e-6).unwrap().to_f32_vec().unwrap();
            let want = reference::layernorm(&x, &w, Some(&b), 1e-6);
            assert_close(&format!("layernorm {what}"), &got, &want, tol(dtype));

            let rt = tensor(&backend, &r, &[rows, n], dtype);
            let (sum, normed) = add_rmsnorm(&xt, &rt, &wt, 1e-6, RmsNormVariant::Gemma).unwrap();
            let s: Vec<f32> = x.iter().zip(&r).map(|(a, b)| a + b).collect();
            let s = round_to(&s, dtype);
            let want = reference::rmsnorm(&s, &w, 1e-6, RmsNormVariant::Gemma);
            assert_close(&format!("add_rmsnorm sum {what}"), &sum.to_f32_vec().unwrap(), &to_f64(&s), tol(dtype));
            assert_close(&format!("add_rmsnorm {what}"), &normed.to_f32_vec().unwrap(), &want, tol(dtype));
        }
    }
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| v as f64).collect()
}

#[test]
fn add_rmsnorm_fuses_the_residual_add_in_and_out_of_place() {
    let mut rng = Rng::new(24);
    for backend in test_backends() {
        for dtype in DType::FLOATS {
            for (rows, n) in [(1, 1), (5, 3), (3, 33), (4, 256), (2, 257), (3, 1000), (2, 4099)] {
                let x = round_to(&rng.vec(rows * n, -3.0, 3.0), dtype);
                let r = round_to(&rng.vec(rows * n, -3.0, 3.0), dtype);
                let w = round_to(&rng.vec(n, -1.0, 1.0), DType::BF16);
                let s = round_to(&x.iter().zip(&r).map(|(a, b)| a + b).collect::<Vec<_>>(), dtype);
                let want = reference::rmsnorm(&s, &w, 1e-5, RmsNormVariant::Standard);
                let what = format!("{dtype} [{rows}, {n}] on {}", backend.name());
                let xt = tensor(&backend, &x, &[rows, n], dtype);
                let rt = tensor(&backend, &r, &[rows, n], dtype);
                let wt = tensor(&backend, &w, &[n], DType::BF16);

                let (sum, normed) = add_rmsnorm(&xt, &rt, &wt, 1e-5, RmsNormVariant::Standard).unwrap();
                assert_close(&format!("sum {what}"), &sum.to_f32_vec().unwrap(), &to_f64(&s), tol(dtype));
                assert_close(&format!("normed {what}"), &normed.to_f32_vec().unwrap(), &want, tol(dtype));
                assert_eq!(rt.to_f32_vec().unwrap(), r, "out of place leaves the residual alone ({what})");

                // In place: the residual stream becomes the sum.
                let out = Tensor::zeros(&backend, &[rows, n], dtype).unwrap();
                add_rmsnorm_into(&xt, &rt, &wt, 1e-5, RmsNormVariant::Standard, &rt, &out).unwrap();
                assert_close(&format!("in-place sum {what}"), &rt.to_f32_vec().unwrap(), &to_f64(&s), tol(dtype));
                assert_close(&format!("in-place normed {what}"), &out.to_f32_vec().unwrap(), &want, tol(dtype));
                assert_eq!(xt.to_f32_vec().unwrap(), x, "x is only read ({what})");
            }
        }
    }
}

/// Every norm through both row reductions (subgroup shuffles where the adapter has them, and
/// workgroup memory), on shapes that take each path of the kernel: one chunk per thread with 1 to 4
/// units (the row in registers), many rows per workgroup, rows of at most a subgroup's threads, rows
/// spread over several subgroups, and streamed rows of 2 and more chunks (the last kept in registers).
#[test]
fn both_row_reductions_cover_every_kernel_path() {
    let mut rng = Rng::new(27);
    let shapes = [
        (37, 64, DType::F32),    // 4 threads a row, 64 rows a workgroup
        (9, 40, DType::BF16),    // 5 vec4 units: 2 threads of 3 units
        (5, 33, DType::F16),     // word units, odd 16-bit rows (two launches)
        (3, 4096, DType::F32),   // 256 threads of 4 units
        (2, 4104, DType::F16),   // 513 vec4 units: 256 threads of up to 3
        (2, 1000, DType::BF16),  // 125 vec4 units: 32 threads of 4
        (2, 16388, DType::F32),  // 4097 units: streamed, 2 chunks (the second nearly empty)
        (2, 70001, DType::BF16), // word units, odd 16-bit rows, streamed in many chunks
    ];
    for backend in test_backends() {
        let Backend::Gpu(_) = backend else { continue };
        for (rows, n, dtype) in shapes {
            let x = round_to(&rng.vec(rows * n, -3.0, 3.0), dtype);
            let r = round_to(&rng.vec(rows * n, -3.0, 3.0), dtype);
            let w = round_to(&rng.vec(n, 0.5, 1.5), DType::F32);
            let b = round_to(&rng.vec(n, -1.0, 1.0), DType::F32);
            let xt = tensor(&backend, &x, &[rows, n], dtype);
            let (wt, bt) = (tensor(&backend, &w, &[n], DType::F32), tensor(&backend, &b, &[n], DType::F32));
            let s = round_to(&x.iter().zip(&r).map(|(a, b)| a + b).collect::<Vec<_>>(), dtype);
            for reduce in [RowReduce::Auto, RowReduce::Workgroup] {
                let what = format!("{dtype} [{rows}, {n}] {reduce:?}");
                let args = |kind, bias, residual, sum, out| NormArgs {
                    op: "test",
                    kind,
                    x: &xt,
                    residual,
                    weight: &wt,
                    bias,
                    eps: 1e-5,
                    sum,
                    out,
                    reduce,
                };
                let out = Tensor::zeros(&backend, &[rows, n], dtype).unwrap();
                for variant in [RmsNormVariant::Standard, RmsNormVariant::Gemma] {
                    norm_into(args(Kind::Rms(variant), None, None, None, &out)).unwrap();
                    let want = reference::rmsnorm(&x, &w, 1e-5, variant);
                    assert_close(&format!("rmsnorm {variant:?} {what}"), &out.to_f32_vec().unwrap(), &want, tol(dtype));
                }
                for bias in [None, Some(&bt)] {
                    norm_into(args(Kind::Layer, bias, None, None, &out)).unwrap();
                    let want = reference::layernorm(&x, &w, bias.map(|_| b.as_slice()), 1e-5);
                    let got = out.to_f32_vec().unwrap();
                    assert_close(&format!("layernorm bias={} {what}", bias.is_some()), &got, &want, tol(dtype));
                }
                // add_rmsnorm in place: the residual stream becomes the sum.
                let rt = tensor(&backend, &r, &[rows, n], dtype);
                norm_into(args(Kind::Rms(RmsNormVariant::Standard), None, Some(&rt), Some(&rt), &out)).unwrap();
                let want = reference::rmsnorm(&s, &w, 1e-5, RmsNormVariant::Standard);
                assert_close(&format!("add_rmsnorm sum {what}"), &rt.to_f32_vec().unwrap(), &to_f64(&s), tol(dtype));
                assert_close(&format!("add_rmsnorm {what}"), &out.to_f32_vec().unwrap(), &want, tol(dtype));
            }
        }
    }
}

#[test]
fn rmsnorm_of_huge_and_tiny_rows_stays_finite() {
    let rows: Vec<Vec<f32>> = vec![
        vec![1e30, -3e30, 2.5e30, 1e30, -1e30, 7e29, 1e30, 2e30],
        vec![3e38, -3e38, 1e38, 2e38, 0.0, 1.0, -1.0, 3e38],
        vec![1e-30, -2e-30, 3e-30, 1e-30, 0.0, 1e-31, -5e-30, 2e-30],
        vec![0.0; 8],
        vec![1e30, 1e-30, 0.0, -1.0, 1.0, 1e20, -1e25, 0.5],
    ];
    // 7 columns: rows read a word at a time, statistics merged as partials; 8: rows held in registers
    // (the max-then-sum statistics).
    for n in [7, 8] {
        let x: Vec<f32> = rows.iter().flat_map(|r| &r[..n]).copied().collect();
        rmsnorm_extremes(&x, rows.len(), n);
    }
}

#[test]
fn rmsnorm_propagates_nan_and_infinity_as_pytorch_does() {
    // Row 0 holds a NaN: every output is NaN. Row 1 holds +inf and row 2 −inf: mean(x²) is inf, so that
    // element is inf / inf = NaN and the others x / inf = 0. 7 columns: word units; 8: held rows; 20000:
    // rows streamed in chunks.
    for n in [7, 8, 20000] {
        let mut x: Vec<f32> = (0..3 * n).map(|i| ((i % 13) as f32 - 6.0) * 0.5).collect();
        x[n / 2] = f32::NAN;
        x[n + 3] = f32::INFINITY;
        x[2 * n + n - 1] = f32::NEG_INFINITY;
        let w = vec![1.5f32; n];
        for backend in test_backends() {
            let xt = Tensor::from_slice(&backend, &x, &[3, n]).unwrap();
            let wt = Tensor::from_slice(&backend, &w, &[n]).unwrap();
            let got = rmsnorm(&xt, &wt, 1e-6, RmsNormVariant::Standard).unwrap().to_f32_vec().unwrap();
            let what = format!("rmsnorm n={n} on {}", backend.name());
            assert!(got[..n].iter().all(|v| v.is_nan()), "{what}: the NaN row gave {:?}", &got[..8.min(n)]);
            for (row, bad) in [(1, 3), (2, n - 1)] {
                for (j, &v) in got[row * n..(row + 1) * n].iter().enumerate() {
                    let ok = if j == bad { v.is_nan() } else { v == 0.0 };
                    assert!(ok, "{what}: row {row} column {j} gave {v}");
                }
            }
        }
    }
}

#[test]
fn layernorm_rows_with_nan_or_infinity_are_nan_as_in_pytorch() {
    // A NaN, +inf or −inf anywhere makes the row's mean or variance NaN: every output is NaN (+inf first
    // too, where it is the shift).
    for n in [7, 8, 20000] {
        let bad = [(0, f32::NAN), (n / 2, f32::INFINITY), (n - 1, f32::NEG_INFINITY), (0, f32::INFINITY)];
        let mut x: Vec<f32> = (0..bad.len() * n).map(|i| ((i % 13) as f32 - 6.0) * 0.5).collect();
        for (row, &(col, v)) in bad.iter().enumerate() {
            x[row * n + col] = v;
        }
        let w = vec![1.5f32; n];
        let b = vec![0.25f32; n];
        for backend in test_backends() {
            let xt = Tensor::from_slice(&backend, &x, &[bad.len(), n]).unwrap();
            let wt = Tensor::from_slice(&backend, &w, &[n]).unwrap();
            let bt = Tensor::from_slice(&backend, &b, &[n]).unwrap();
            let got = layernorm(&xt, &wt, Some(&bt), 1e-5).unwrap().to_f32_vec().unwrap();
            for (row, out) in got.chunks(n).enumerate() {
                let what = format!("layernorm n={n} row {row} on {}", backend.name());
                assert!(out.iter().all(|v| v.is_nan()), "{what}: {:?}", &out[..8.min(n)]);
            }
        }
    }
}

fn rmsnorm_extremes(x: &[f32], rows: usize, n: usize) {
    let w: Vec<f32> = (0..n).map(|i| 0.5 + i as f32 * 0.25).collect();
    for backend in test_backends() {
        for eps in [1e-6f32, 0.0] {
            let xt = Tensor::from_slice(&backend, x, &[rows, n]).unwrap();
            let wt = Tensor::from_slice(&backend, &w, &[n]).unwrap();
            let got = rmsnorm(&xt, &wt, eps, RmsNormVariant::Standard).unwrap().to_f32_vec().unwrap();
            let what = format!("rmsnorm extremes n={n} eps={eps} on {}", backend.name());
            assert!(got.iter().all(|v| v.is_finite()), "{what}: non-finite output {got:?}");
            let mut want = reference::rmsnorm(x, &w, eps, RmsNormVariant::Standard);
            // The reference of the zero row with eps = 0 is 0/0; the kernels define it as 0.
            want.iter_mut().for_each(|v| *v = if v.is_nan() { 0.0 } else { *v });
            assert_close(&what, &got, &want, Tolerance { atol: 1e-6, rtol: 1e-5 });
        }
    }
}

#[test]
fn layernorm_is_exact_on_constant_rows_and_stable_far_from_zero() {
    let mut rng = Rng::new(25);
    let n = 300;
    let mut x = Vec::new();
    x.extend(std::iter::repeat_n(5.0f32, n)); // constant
    x.extend(std::iter::repeat_n(-1e30f32, n)); // constant, huge
    x.extend(rng.vec(n, -1.0, 1.0).iter().map(|v| 1e4 + v)); // E[x^2] - E[x]^2 would cancel
    x.extend(rng.vec(n, -1e30, 1e30)); // huge
    x.extend(rng.vec(n, -1e-3, 1e-3)); // small against eps
    x.push(1e6); // the first element (the shift) far from the rest
    x.extend(rng.vec(n - 1, -1.0, 1.0));
    // Near f32's largest, both signs: v - shift reaches 2.4e38, and a sum of two such overflows.
    x.extend(rng.vec(n, -1.0, 1.0).iter().map(|v| v.signum() * (1e38 + 2e37 * v.abs())));
    let rows = x.len() / n;
    let w = rng.vec(n, 0.5, 1.5);
    let b = rng.vec(n, -1.0, 1.0);
    for backend in test_backends() {
        let xt = Tensor::from_slice(&backend, &x, &[rows, n]).unwrap();
        let wt = Tensor::from_slice(&backend, &w, &[n]).unwrap();
        let bt = Tensor::from_slice(&backend, &b, &[n]).unwrap();
        for bias in [None, Some(&bt)] {
            let got = layernorm(&xt, &wt, bias, 1e-5).unwrap().to_f32_vec().unwrap();
            let want = reference::layernorm(&x, &w, bias.map(|_| b.as_slice()), 1e-5);
            let what = format!("layernorm bias={} on {}", bias.is_some(), backend.name());
            assert_close(&what, &got, &want, Tolerance { atol: 2e-5, rtol: 2e-5 });
            // Constant rows give exactly the bias (or 0).
            for (i, &v) in got[..2 * n].iter().enumerate() {
                assert_eq!(v, bias.map_or(0.0, |_| b[i % n]), "{what}: constant row element {i}");
            }
        }
    }
}

#[test]
fn higher_dimensional_inputs_norm_their_last_dimension() {
    let mut rng = Rng::new(26);
    for backend in test_backends() {
        let (shape, n) = ([2usize, 3, 5, 17], 17);
        let x = rng.vec(2 * 3 * 5 * 17, -2.0, 2.0);
        let w = rng.vec(n, -1.0, 1.0);
        let got = rmsnorm(
            &Tensor::from_slice(&backend, &x, &shape).unwrap(),
            &Tensor::from_slice(&backend, &w, &[n]).unwrap(),
            1e-5,
            RmsNormVariant::Standard,
        )
        .unwrap();
        assert_eq!(got.shape(), shape);
        let want = reference::rmsnorm(&x, &w, 1e-5, RmsNormVariant::Standard);
        assert_close("rmsnorm 4-d", &got.to_f32_vec().unwrap(), &want, tol(DType::F32));
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    use RmsNormVariant::Standard;
    for backend in test_backends() {
        let z = |shape: &[usize], dtype| Tensor::zeros(&backend, shape, dtype).unwrap();
        let x = z(&[2, 8], DType::F32);
        let w = z(&[8], DType::F32);
        assert!(matches!(
            rmsnorm(&x, &z(&[7], DType::F32), 1e-5, Standard),
            Err(KernelError::Shape { op: "rmsnorm", .. })
        ));
        assert!(matches!(rmsnorm(&x, &z(&[2, 8], DType::F32), 1e-5, Standard), Err(KernelError::Shape { .. })));
        assert!(matches!(rmsnorm(&z(&[2, 8], DType::U32), &w, 1e-5, Standard), Err(KernelError::DType { .. })));
        assert!(matches!(rmsnorm(&x, &z(&[8], DType::I32), 1e-5, Standard), Err(KernelError::DType { .. })));
        assert!(matches!(rmsnorm(&z(&[0, 8], DType::F32), &w, 1e-5, Standard), Err(KernelError::Empty { .. })));
        for eps in [f32::NAN, -1e-5, f32::INFINITY] {
            assert!(matches!(rmsnorm(&x, &w, eps, Standard), Err(KernelError::Argument { name: "eps", .. })));
        }
        assert!(matches!(rmsnorm_into(&x, &w, 1e-5, Standard, &x), Err(KernelError::Argument { name: "out", .. })));
        assert!(matches!(
            rmsnorm_into(&x, &w, 1e-5, Standard, &z(&[2, 8], DType::F16)),
            Err(KernelError::DType { .. })
        ));
        let r = z(&[2, 8], DType::F32);
        let (s, y) = (z(&[2, 8], DType::F32), z(&[2, 8], DType::F32));
        assert!(matches!(add_rmsnorm(&x, &z(&[2, 7], DType::F32), &w, 1e-5, Standard), Err(KernelError::Shape { .. })));
        assert!(matches!(
            add_rmsnorm(&x, &z(&[2, 8], DType::BF16), &w, 1e-5, Standard),
            Err(KernelError::DType { .. })
        ));
        assert!(matches!(add_rmsnorm(&x, &x, &w, 1e-5, Standard), Err(KernelError::Argument { name: "residual", .. })));
        assert!(matches!(
            add_rmsnorm_into(&x, &r, &w, 1e-5, Standard, &x, &y),
            Err(KernelError::Argument { name: "sum", .. })
        ));
        assert!(matches!(
            add_rmsnorm_into(&x, &r, &w, 1e-5, Standard, &s, &r),
            Err(KernelError::Argument { name: "out", .. })
        ));
        assert!(matches!(
            add_rmsnorm_into(&x, &r, &w, 1e-5, Standard, &s, &s),
            Err(KernelError::Argument { name: "out", .. })
        ));
        assert!(matches!(layernorm(&x, &w, Some(&z(&[8], DType::BF16)), 1e-5), Err(KernelError::DType { .. })));
        assert!(matches!(layernorm(&x, &w, Some(&z(&[9], DType::F32)), 1e-5), Err(KernelError::Shape { .. })));
    }
}
