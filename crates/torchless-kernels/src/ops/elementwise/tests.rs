use super::*;
use crate::dtype::DType;
use crate::testing::{RAGGED, Rng, Tolerance, assert_close, round_to, test_backends};

const UNARY: [Unary; 6] = [
    Unary::Silu,
    Unary::Gelu,
    Unary::GeluErf,
    Unary::Softcap { cap: 30.0 },
    Unary::Softcap { cap: 1.5 },
    Unary::Scale { factor: -0.37 },
];
const BINARY: [Binary; 5] = [Binary::Add, Binary::Mul, Binary::SwiGlu, Binary::GeGlu, Binary::GeGluErf];

#[test]
fn unary_ops_match_the_f64_reference_on_ragged_sizes() {
    let mut rng = Rng::new(1);
    for backend in test_backends() {
        for dtype in DType::FLOATS {
            for &n in RAGGED {
                let x = round_to(&rng.vec(n, -8.0, 8.0), dtype);
                let xt = Tensor::from_f32(&backend, &x, &[n], dtype).unwrap();
                for op in UNARY {
                    let got = unary(&xt, op).unwrap().to_f32_vec().unwrap();
                    let want: Vec<f64> = x.iter().map(|&v| op.reference(v as f64)).collect();
                    let what = format!("{op:?} {dtype} n={n} on {}", backend.name());
                    assert_close(&what, &got, &want, Tolerance::for_dtype(dtype).scaled(2.0));
                }
            }
        }
    }
}

#[test]
fn binary_ops_match_the_f64_reference_on_ragged_shapes() {
    let mut rng = Rng::new(2);
    for backend in test_backends() {
        for dtype in DType::FLOATS {
            for shape in [[1usize, 1], [3, 5], [2, 33], [7, 257]] {
                let n = shape[0] * shape[1];
                let a = round_to(&rng.vec(n, -6.0, 6.0), dtype);
                let b = round_to(&rng.vec(n, -6.0, 6.0), dtype);
                let at = Tensor::from_f32(&backend, &a, &shape, dtype).unwrap();
                let bt = Tensor::from_f32(&backend, &b, &shape, dtype).unwrap();
                for op in BINARY {
                    let got = binary(&at, &bt, op).unwrap().to_f32_vec().unwrap();
                    let want: Vec<f64> = a.iter().zip(&b).map(|(&x, &y)| op.reference(x as f64, y as f64)).collect();
                    let what = format!("{op:?} {dtype} {shape:?} on {}", backend.name());
                    assert_close(&what, &got, &want, Tolerance::for_dtype(dtype).scaled(2.0));
                }
            }
        }
    }
}

#[test]
fn extreme_magnitudes_stay_finite_and_saturate() {
    let x = [-1e30f32, -1e4, -100.0, -1e-30, 0.0, 1e-30, 100.0, 1e4, 1e30, f32::MIN_POSITIVE];
    for backend in test_backends() {
        let xt = Tensor::from_slice(&backend, &x, &[x.len()]).unwrap();
        for op in [Unary::Silu, Unary::Gelu, Unary::GeluErf, Unary::Softcap { cap: 50.0 }] {
            let got = unary(&xt, op).unwrap().to_f32_vec().unwrap();
            let want: Vec<f64> = x.iter().map(|&v| op.reference(v as f64)).collect();
            assert_close(
                &format!("{op:?} extremes on {}", backend.name()),
                &got,
                &want,
                Tolerance { atol: 1e-6, rtol: 1e-5 },
            );
        }
    }
}

#[test]
fn in_place_unary_matches_out_of_place() {
    for backend in test_backends() {
        let x: Vec<f32> = (0..100).map(|i| i as f32 * 0.7 - 30.0).collect();
        let t = Tensor::from_slice(&backend, &x, &[10, 10]).unwrap();
        unary_into(&t, Unary::Softcap { cap: 5.0 }, &t).unwrap();
        let want: Vec<f64> = x.iter().map(|&v| 5.0 * (v as f64 / 5.0).tanh()).collect();
        assert_close("in-place softcap", &t.to_f32_vec().unwrap(), &want, Tolerance::for_dtype(DType::F32));
    }
}

/// A workgroup maps 1024 vec4s, 256 threads of 4: sizes that end in each of a thread's four vec4s, on
/// a workgroup boundary and past one, out of place, in place and with two inputs.
#[test]
fn every_vec4_of_a_thread_handles_the_tail() {
    let mut rng = Rng::new(3);
    for backend in test_backends() {
        for vec4s in [1usize, 256, 300, 513, 769, 1023, 1024, 1025, 2047, 3 * 1024 + 700] {
            for dtype in [DType::F32, DType::BF16] {
                let n = vec4s * 16 / dtype.size_bytes() - 1; // the last vec4 partly padding
                let x = round_to(&rng.vec(n, -6.0, 6.0), dtype);
                let y = round_to(&rng.vec(n, -6.0, 6.0), dtype);
                let what = format!("{dtype} n={n} on {}", backend.name());
                let tol = Tolerance::for_dtype(dtype).scaled(2.0);
                let xt = Tensor::from_f32(&backend, &x, &[n], dtype).unwrap();
                let yt = Tensor::from_f32(&backend, &y, &[n], dtype).unwrap();
                let op = Unary::Softcap { cap: 3.0 };
                let want: Vec<f64> = x.iter().map(|&v| op.reference(v as f64)).collect();
                assert_close(&format!("softcap {what}"), &unary(&xt, op).unwrap().to_f32_vec().unwrap(), &want, tol);
                let got = binary(&xt, &yt, Binary::SwiGlu).unwrap().to_f32_vec().unwrap();
                let want2: Vec<f64> =
                    x.iter().zip(&y).map(|(&a, &b)| Binary::SwiGlu.reference(a as f64, b as f64)).collect();
                assert_close(&format!("swiglu {what}"), &got, &want2, tol);
                unary_into(&xt, op, &xt).unwrap();
                assert_close(&format!("in-place softcap {what}"), &xt.to_f32_vec().unwrap(), &want, tol);
            }
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    for backend in test_backends() {
        let a = Tensor::zeros(&backend, &[4], DType::F32).unwrap();
        let b = Tensor::zeros(&backend, &[5], DType::F32).unwrap();
        let h = Tensor::zeros(&backend, &[4], DType::F16).unwrap();
        let ids = Tensor::zeros(&backend, &[4], DType::U32).unwrap();
        let empty = Tensor::zeros(&backend, &[0], DType::F32).unwrap();
        assert!(matches!(add(&a, &b), Err(KernelError::Shape { op: "add", .. })));
        assert!(matches!(mul(&a, &h), Err(KernelError::DType { op: "mul", .. })));
        assert!(matches!(silu_op(&ids), Err(KernelError::DType { .. })));
        assert!(matches!(silu_op(&empty), Err(KernelError::Empty { .. })));
        assert!(matches!(softcap(&a, 0.0), Err(KernelError::Argument { name: "cap", .. })));
        assert!(matches!(softcap(&a, f32::NAN), Err(KernelError::Argument { .. })));
    }
}

#[test]
fn erf_reference_is_accurate() {
    // Values from a high-precision table.
    for (x, want) in [
        (0.1, 0.1124629160182849),
        (0.5, 0.5204998778130465),
        (1.0, 0.8427007929497149),
        (2.5, 0.999_593_047_982_555),
        (-3.0, -0.9999779095030014),
        (4.0, 0.9999999845827421),
    ] {
        assert!((erf_f64(x) - want).abs() < 1e-13, "erf({x}) = {} want {want}", erf_f64(x));
    }
}
