use super::*;
use crate::testing::{RAGGED, Rng, Tolerance, assert_close, round_to, test_backends};

/// Probabilities: relative error matters down to small values.
fn tol(dtype: DType) -> Tolerance {
    match dtype {
        DType::F16 => Tolerance { atol: 1e-6, rtol: 2e-3 },
        DType::BF16 => Tolerance { atol: 1e-7, rtol: 1e-2 },
        _ => Tolerance { atol: 1e-8, rtol: 5e-5 },
    }
}

fn run(backend: &Backend, x: &[f32], shape: &[usize], dtype: DType, o: SoftmaxOptions) -> Vec<f32> {
    let t = Tensor::from_f32(backend, x, shape, dtype).unwrap();
    softmax(&t, o).unwrap().to_f32_vec().unwrap()
}

const OPTIONS: [SoftmaxOptions; 4] = [
    SoftmaxOptions { scale: 1.0, softcap: None, causal: None },
    SoftmaxOptions { scale: 0.3, softcap: None, causal: Some(CausalMask { offset: 2 }) },
    SoftmaxOptions { scale: 1.7, softcap: Some(5.0), causal: None },
    SoftmaxOptions { scale: 0.125, softcap: Some(30.0), causal: Some(CausalMask { offset: 0 }) },
];

#[test]
fn softmax_matches_the_f64_reference_on_ragged_rows() {
    let mut rng = Rng::new(41);
    for backend in test_backends() {
        for (i, &n) in RAGGED.iter().enumerate() {
            for dtype in DType::FLOATS {
                let rows = if n > 1000 { 2 } else { 3 };
                let x = round_to(&rng.vec(rows * n, -6.0, 6.0), dtype);
                for (j, o) in OPTIONS.into_iter().enumerate() {
                    if (i + j) % 2 == 1 && n > 255 {
                        continue; // keep the suite fast: half the options on long rows
                    }
                    let got = run(&backend, &x, &[rows, n], dtype, o);
                    let want = reference(&x, n, rows, &o);
                    let what = format!("softmax {o:?} {dtype} [{rows}, {n}] on {}", backend.name());
                    assert_close(&what, &got, &want, tol(dtype));
                }
            }
        }
    }
}

#[test]
fn long_rows_are_correct() {
    let mut rng = Rng::new(42);
    let o = SoftmaxOptions { scale: 0.5, softcap: None, causal: Some(CausalMask { offset: 50000 }) };
    for backend in test_backends() {
        // 70000: streamed vec4 units; 70001: streamed words, odd 16-bit rows; 32000: full registers.
        for (n, rows, dtype) in
            [(70000, 1, DType::F32), (70001, 2, DType::BF16), (70001, 2, DType::F32), (32000, 2, DType::F16)]
        {
            let x = round_to(&rng.vec(rows * n, -10.0, 10.0), dtype);
            for o in [SoftmaxOptions::default(), o] {
                let got = run(&backend, &x, &[rows, n], dtype, o);
                let want = reference(&x, n, rows, &o);
                let what = format!("softmax {o:?} {dtype} [{rows}, {n}] on {}", backend.name());
                assert_close(&what, &got, &want, tol(dtype));
            }
        }
    }
}

/// Both row reductions (subgroup shuffles where the adapter has them, and workgroup memory) on
/// shapes that take each path of the kernel: rows in registers with 1 to 4 units a thread, many rows
/// per workgroup, rows over several subgroups, and streamed rows of 2 and more chunks, with causal masks
/// whose limit falls in the first chunk, in a middle chunk and in the last one.
#[test]
fn both_row_reductions_cover_every_kernel_path() {
    let mut rng = Rng::new(45);
    let shapes = [
        (37, 64, DType::F32),
        (9, 40, DType::BF16),
        (6, 33, DType::F16),
        (3, 4096, DType::F32),
        (2, 4104, DType::F16),
        (2, 16388, DType::F32),
        (2, 70001, DType::BF16),
    ];
    for backend in test_backends() {
        let Backend::Gpu(_) = backend else { continue };
        for (rows, n, dtype) in shapes {
            let x = round_to(&rng.vec(rows * n, -6.0, 6.0), dtype);
            let options = [
                SoftmaxOptions { scale: 0.5, softcap: Some(4.0), causal: None },
                SoftmaxOptions { causal: Some(CausalMask { offset: (n / 3) as isize }), ..Default::default() },
                SoftmaxOptions { causal: Some(CausalMask { offset: n as isize - 2 }), ..Default::default() },
                SoftmaxOptions { causal: Some(CausalMask { offset: -1 }), ..Default::default() },
            ];
            for o in options {
                for reduce in [RowReduce::Auto, RowReduce::Workgroup] {
                    let t = Tensor::from_f32(&backend, &x, &[rows, n], dtype).unwrap();
                    let out = Tensor::zeros(&backend, &[rows, n], dtype).unwrap();
                    softmax_with(&t, o, &out, reduce).unwrap();
                    let what = format!("softmax {o:?} {dtype} [{rows}, {n}] {reduce:?}");
                    assert_close(&what, &out.to_f32_vec().unwrap(), &reference(&x, n, rows, &o), tol(dtype));
                    // In place.
                    softmax_with(&t, o, &t, reduce).unwrap();
                    let what = format!("in place {what}");
                    assert_close(&what, &t.to_f32_vec().unwrap(), &reference(&x, n, rows, &o), tol(dtype));
                }
            }
        }
    }
}

#[test]
fn causal_masks_zero_the_future_and_whole_rows_before_the_keys() {
    let mut rng = Rng::new(43);
    let (heads, q, n) = (3, 5, 7);
    for backend in test_backends() {
        for dtype in DType::FLOATS {
            let x = round_to(&rng.vec(heads * q * n, -4.0, 4.0), dtype);
            for offset in [-3isize, -1, 0, 2, 6, 100] {
                let o = SoftmaxOptions { causal: Some(CausalMask { offset }), ..Default::default() };
                let got = run(&backend, &x, &[heads, q, n], dtype, o);
                let want = reference(&x, n, q, &o);
                let what = format!("causal offset {offset} {dtype} on {}", backend.name());
                assert!(got.iter().all(|v| v.is_finite()), "{what}: {got:?}");
                assert_close(&what, &got, &want, tol(dtype));
                for (i, &v) in got.iter().enumerate() {
                    let (r, c) = (i / n, i % n);
                    if c as isize > (r % q) as isize + offset {
                        assert_eq!(v, 0.0, "{what}: masked element row {r} col {c}");
                    }
                }
            }
        }
    }
}

#[test]
fn minus_infinity_inputs_and_extremes() {
    let inf = f32::INFINITY;
    let n = 5;
    let rows: Vec<[f32; 5]> = vec![
        [-inf, 1.0, -inf, 2.0, 0.5],
        [-inf; 5],
        [1e30, -1e30, 0.0, 1e30, -inf],
        [-1e30, -1e30, -1e30, -1e30, -1e30],
        [3e38, -3e38, 1e-30, 0.0, 88.0],
    ];
    let x: Vec<f32> = rows.concat();
    for backend in test_backends() {
        for dtype in [DType::F32, DType::BF16] {
            let x = round_to(&x, dtype);
            for o in [
                SoftmaxOptions::default(),
                SoftmaxOptions { scale: 0.5, softcap: Some(20.0), causal: None },
                SoftmaxOptions { scale: 0.9, softcap: None, causal: Some(CausalMask { offset: 1 }) },
            ] {
                let got = run(&backend, &x, &[rows.len(), n], dtype, o);
                let what = format!("extremes {o:?} {dtype} on {}", backend.name());
                assert!(got.iter().all(|v| v.is_finite()), "{what}: {got:?}");
                assert_close(&what, &got, &reference(&x, n, rows.len(), &o), tol(dtype));
            }
        }
    }
}

#[test]
fn rows_with_nan_or_plus_infinity_are_nan_as_in_pytorch() {
    // max is NaN or +inf, and x − max is NaN for that element: the row's sum, so every output, is NaN.
    for n in [5, 64, 4099, 70001] {
        let bad = [(0, f32::NAN), (n / 2, f32::INFINITY), (n - 1, f32::NAN)];
        let mut x: Vec<f32> = (0..bad.len() * n).map(|i| ((i % 13) as f32 - 6.0) * 0.5).collect();
        for (row, &(col, v)) in bad.iter().enumerate() {
            x[row * n + col] = v;
        }
        for backend in test_backends() {
            for dtype in DType::FLOATS {
                let got = run(&backend, &x, &[bad.len(), n], dtype, SoftmaxOptions::default());
                for (row, out) in got.chunks(n).enumerate() {
                    let what = format!("softmax {dtype} n={n} row {row} on {}", backend.name());
                    assert!(out.iter().all(|v| v.is_nan()), "{what}: {:?}", &out[..5]);
                }
            }
            // With a soft cap a NaN stays NaN, while +inf is capped (cap · tanh(inf) = cap): that row is
            // finite and sums to 1.
            let capped = SoftmaxOptions { softcap: Some(5.0), ..SoftmaxOptions::default() };
            let got = run(&backend, &x, &[bad.len(), n], DType::F32, capped);
            for (row, out) in got.chunks(n).enumerate() {
                let what = format!("capped softmax n={n} row {row} on {}", backend.name());
                if row == 1 {
                    let sum: f32 = out.iter().sum();
                    assert!(out.iter().all(|v| v.is_finite()) && (sum - 1.0).abs() < 1e-3, "{what}: sum {sum}");
                } else {
                    assert!(out.iter().all(|v| v.is_nan()), "{what}: {:?}", &out[..5]);
                }
            }
        }
    }
}

#[test]
fn in_place_matches_out_of_place() {
    let mut rng = Rng::new(44);
    for backend in test_backends() {
        for dtype in DType::FLOATS {
            for (rows, n) in [(4, 3), (3, 33), (5, 64), (2, 4099), (1, 70001)] {
                let x = round_to(&rng.vec(rows * n, -5.0, 5.0), dtype);
                let o = SoftmaxOptions { scale: 0.7, softcap: None, causal: Some(CausalMask { offset: 1 }) };
                let t = Tensor::from_f32(&backend, &x, &[rows, n], dtype).unwrap();
                softmax_inplace(&t, o).unwrap();
                let what = format!("in-place {dtype} [{rows}, {n}] on {}", backend.name());
                assert_close(&what, &t.to_f32_vec().unwrap(), &reference(&x, n, rows, &o), tol(dtype));
            }
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    for backend in test_backends() {
        let x = Tensor::zeros(&backend, &[2, 4], DType::F32).unwrap();
        let bad = |o: SoftmaxOptions| softmax(&x, o);
        for scale in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let o = SoftmaxOptions { scale, ..Default::default() };
            assert!(matches!(bad(o), Err(KernelError::Argument { name: "scale", .. })));
        }
        for cap in [0.0, -2.0, f32::NAN] {
            let o = SoftmaxOptions { softcap: Some(cap), ..Default::default() };
            assert!(matches!(bad(o), Err(KernelError::Argument { name: "softcap", .. })));
        }
        let ids = Tensor::zeros(&backend, &[2, 4], DType::U32).unwrap();
        assert!(matches!(softmax(&ids, SoftmaxOptions::default()), Err(KernelError::DType { .. })));
        let empty = Tensor::zeros(&backend, &[2, 0], DType::F32).unwrap();
        assert!(matches!(softmax(&empty, SoftmaxOptions::default()), Err(KernelError::Empty { .. })));
        let other = Tensor::zeros(&backend, &[4, 2], DType::F32).unwrap();
        let o = SoftmaxOptions::default();
        assert!(matches!(softmax_into(&x, o, &other), Err(KernelError::Shape { op: "softmax", .. })));
        let half = Tensor::zeros(&backend, &[2, 4], DType::F16).unwrap();
        assert!(matches!(softmax_into(&x, o, &half), Err(KernelError::DType { .. })));
    }
}
