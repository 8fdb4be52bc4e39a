use super::*;
use crate::testing::{RAGGED, Rng, test_backends};

/// Values that exercise rounding, overflow, subnormals and specials in every format.
fn special_values() -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0x7fa0_0001), // signalling NaN
        f32::MAX,
        f32::MIN,
        f32::MIN_POSITIVE,
        1e-40, // f32 subnormal
        -1e-45,
        65504.0,   // largest f16
        65519.0,   // rounds down to 65504
        65520.0,   // halfway: to even = 65536 = inf in f16
        -70000.0,  // f16 overflow
        1e10,      // f16 overflow, bf16 fine
        6.1035e-5, // near the smallest normal f16
        5.96e-8,   // the smallest subnormal f16
        2.98e-8,   // half the smallest subnormal
        4.5e-8,    // rounds up to the smallest subnormal
        3.0e-8,
        1.0 + 1.0 / 256.0,  // bf16 tie → 1.0 (even)
        1.0 + 3.0 / 256.0,  // bf16 tie → up
        1.0 + 1.0 / 2048.0, // f16 tie → 1.0
        1.0 + 3.0 / 2048.0, // f16 tie → up
        2049.0,
        2051.0,
        0.1,
        -3.3333333,
        f32::from_bits(0x7f7f_8000), // bf16 rounds to inf
    ];
    // Every f16 subnormal boundary region and a spread of magnitudes.
    for e in -30..20 {
        let b = 2f32.powi(e);
        v.extend([b, b * 1.5, -b * 1.25, b * (1.0 + 1.0 / 1024.0), b * (1.0 + 1.0 / 4096.0)]);
    }
    v
}

fn bits_of(t: &Tensor) -> Vec<u32> {
    let bytes = t.to_bytes().unwrap();
    match t.dtype().size_bytes() {
        4 => bytemuck::pod_collect_to_vec(&bytes),
        _ => bytemuck::pod_collect_to_vec::<u8, u16>(&bytes).into_iter().map(u32::from).collect(),
    }
}

/// `x` cast to `dtype` by the `half` crate, as bits.
fn host_bits(x: &[f32], from: DType, to: DType) -> Vec<u32> {
    let t = Tensor::from_f32(&Backend::Cpu, x, &[x.len()], from).unwrap();
    let v = t.to_f32_vec().unwrap();
    let bytes = crate::tensor::f32_to_bytes(&v, to);
    match to.size_bytes() {
        4 => bytemuck::pod_collect_to_vec(&bytes),
        _ => bytemuck::pod_collect_to_vec::<u8, u16>(&bytes).into_iter().map(u32::from).collect(),
    }
}

#[test]
fn casts_match_the_f64_reference_and_the_cpu_bit_for_bit() {
    let mut rng = Rng::new(21);
    for backend in test_backends() {
        for &n in RAGGED {
            // Magnitudes from 1e-9 to 1e6, both signs.
            let x: Vec<f32> = (0..n)
                .map(|_| {
                    let m = 10f32.powf(rng.uniform(-9.0, 6.0));
                    if rng.below(2) == 0 { m } else { -m }
                })
                .collect();
            for from in DType::FLOATS {
                let xin = crate::testing::round_to(&x, from);
                let xt = Tensor::from_f32(&backend, &xin, &[n], from).unwrap();
                for to in DType::FLOATS {
                    let what = format!("cast {from}->{to} n={n} on {}", backend.name());
                    let out = cast(&xt, to).unwrap();
                    assert_eq!(out.dtype(), to);
                    assert_eq!(out.shape(), &[n]);
                    let got = out.to_f32_vec().unwrap();
                    for (i, (&g, &v)) in got.iter().zip(&xin).enumerate() {
                        let want = reference::round(v as f64, to);
                        assert!(g as f64 == want, "{what}: element {i} = {v:e}: got {g:e}, want {want:e}");
                    }
                    assert_eq!(bits_of(&out), host_bits(&xin, from, to), "{what}: bits differ from the CPU");
                }
            }
        }
    }
}

#[test]
fn special_values_cast_exactly() {
    let x = special_values();
    for backend in test_backends() {
        for from in DType::FLOATS {
            let xt = Tensor::from_f32(&backend, &x, &[x.len()], from).unwrap();
            let xin = xt.to_f32_vec().unwrap();
            for to in DType::FLOATS {
                let what = format!("special cast {from}->{to} on {}", backend.name());
                let out = cast(&xt, to).unwrap();
                let got = out.to_f32_vec().unwrap();
                for (i, (&g, &v)) in got.iter().zip(&xin).enumerate() {
                    let want = reference::round(v as f64, to);
                    let same = (g.is_nan() && want.is_nan()) || g as f64 == want;
                    let sign_ok = g.is_nan() || g.is_sign_negative() == v.is_sign_negative();
                    assert!(same && sign_ok, "{what}: element {i} = {v:e}: got {g:e}, want {want:e}");
                }
                assert_eq!(bits_of(&out), host_bits(&xin, from, to), "{what}: bits differ from the CPU");
            }
        }
        // A few by hand.
        let f = |v: f32, to: DType| cast(&Tensor::from_slice(&backend, &[v], &[1]).unwrap(), to).unwrap();
        assert_eq!(f(65520.0, DType::F16).to_f32_vec().unwrap()[0], f32::INFINITY);
        assert_eq!(f(65519.0, DType::F16).to_f32_vec().unwrap()[0], 65504.0);
        assert_eq!(f(-1e6, DType::F16).to_f32_vec().unwrap()[0], f32::NEG_INFINITY);
        assert_eq!(f(1.0 + 1.0 / 256.0, DType::BF16).to_f32_vec().unwrap()[0], 1.0);
        assert_eq!(f(1.0 + 3.0 / 256.0, DType::BF16).to_f32_vec().unwrap()[0], 1.0 + 4.0 / 256.0);
        assert_eq!(bits_of(&f(2f32.powi(-25), DType::F16)), [0x0000]);
        assert_eq!(bits_of(&f(1.5 * 2f32.powi(-25), DType::F16)), [0x0001]);
        assert!(f(f32::NAN, DType::F16).to_f32_vec().unwrap()[0].is_nan());
        assert!(f(f32::NAN, DType::BF16).to_f32_vec().unwrap()[0].is_nan());
        assert_eq!(bits_of(&f(-0.0, DType::BF16)), [0x8000]);
    }
}

#[test]
fn cast_keeps_shape_and_same_dtype_is_a_copy() {
    for backend in test_backends() {
        let x: Vec<f32> = (0..35).map(|i| i as f32 * 0.25 - 3.0).collect();
        let xt = Tensor::from_slice(&backend, &x, &[5, 7]).unwrap();
        let y = cast(&xt, DType::F32).unwrap();
        assert!(!y.same_storage(&xt));
        assert_eq!(y.shape(), &[5, 7]);
        assert_eq!(y.to_vec::<f32>().unwrap(), x);
        let h = cast(&xt, DType::F16).unwrap();
        let out = Tensor::zeros(&backend, &[5, 7], DType::BF16).unwrap();
        cast_into(&h, &out).unwrap();
        assert_eq!(out.to_f32_vec().unwrap(), x); // these values are exact in every format
    }
}

#[test]
fn copy_is_exact_for_every_dtype() {
    let mut rng = Rng::new(22);
    for backend in test_backends() {
        for dtype in DType::ALL {
            for &n in RAGGED {
                let bytes: Vec<u8> = (0..n * dtype.size_bytes()).map(|_| rng.below(256) as u8).collect();
                let xt = Tensor::from_bytes(&backend, &bytes, &[n], dtype).unwrap();
                let y = copy(&xt).unwrap();
                assert_eq!(y.to_bytes().unwrap(), bytes, "copy {dtype} n={n} on {}", backend.name());
                let z = Tensor::zeros(&backend, &[n], dtype).unwrap();
                copy_into(&xt, &z).unwrap();
                assert_eq!(z.to_bytes().unwrap(), bytes, "copy_into {dtype} n={n} on {}", backend.name());
            }
        }
        // Onto itself: nothing to do.
        let x = Tensor::from_slice(&backend, &[1.0f32, 2.0], &[2]).unwrap();
        copy_into(&x, &x).unwrap();
        assert_eq!(x.to_vec::<f32>().unwrap(), [1.0, 2.0]);
    }
}

/// The bytes of `dst` after writing `src` at row `offset` (host model).
fn expected_rows(dst: &[u8], src: &[u8], offset: usize, row_bytes: usize) -> Vec<u8> {
    let mut e = dst.to_vec();
    e[offset * row_bytes..offset * row_bytes + src.len()].copy_from_slice(src);
    e
}

#[test]
fn copy_rows_writes_at_any_offset_for_every_dtype() {
    let mut rng = Rng::new(23);
    for backend in test_backends() {
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::U32] {
            for n in [1usize, 3, 31, 32, 33, 257] {
                let dst_rows = 7;
                for rows in [1usize, 2, 3] {
                    for offset in [0, 1, 2, dst_rows - rows] {
                        let es = dtype.size_bytes();
                        let init: Vec<u8> = (0..dst_rows * n * es).map(|_| rng.below(256) as u8).collect();
                        let src: Vec<u8> = (0..rows * n * es).map(|_| rng.below(256) as u8).collect();
                        let want = expected_rows(&init, &src, offset, n * es);
                        let st = Tensor::from_bytes(&backend, &src, &[rows, n], dtype).unwrap();
                        let what = format!("{dtype} n={n} rows={rows} offset={offset} on {}", backend.name());

                        let dt = Tensor::from_bytes(&backend, &init, &[dst_rows, n], dtype).unwrap();
                        copy_rows_into(&st, &dt, offset).unwrap();
                        assert_eq!(dt.to_bytes().unwrap(), want, "copy_rows_into {what}");

                        let dt = Tensor::from_bytes(&backend, &init, &[dst_rows, n], dtype).unwrap();
                        let pos = Tensor::from_slice(&backend, &[offset as u32], &[1]).unwrap();
                        copy_rows_into_at(&st, &dt, &pos).unwrap();
                        assert_eq!(dt.to_bytes().unwrap(), want, "copy_rows_into_at {what}");
                    }
                }
            }
        }
    }
}

#[test]
fn appending_rows_one_by_one_fills_a_cache() {
    // A KV cache of 5 rows of 3 bf16 values (rows split words), appended a row at a time, with the
    // position on the device, recorded without reading anything back in between.
    for backend in test_backends() {
        let (rows, n) = (5usize, 3usize);
        let cache = Tensor::zeros(&backend, &[rows, n], DType::BF16).unwrap();
        let cache2 = Tensor::zeros(&backend, &[rows, n], DType::BF16).unwrap();
        let mut want = Vec::new();
        for r in 0..rows {
            let row: Vec<f32> = (0..n).map(|c| (r * 10 + c) as f32).collect();
            want.extend(&row);
            let t = Tensor::from_f32(&backend, &row, &[1, n], DType::BF16).unwrap();
            copy_rows_into(&t, &cache, r).unwrap();
            let pos = Tensor::from_slice(&backend, &[r as u32], &[1]).unwrap();
            copy_rows_into_at(&t, &cache2, &pos).unwrap();
        }
        assert_eq!(cache.to_f32_vec().unwrap(), want, "host offsets on {}", backend.name());
        assert_eq!(cache2.to_f32_vec().unwrap(), want, "device offsets on {}", backend.name());
    }
}

#[test]
fn copy_rows_handles_higher_rank_rows() {
    for backend in test_backends() {
        let dst = Tensor::zeros(&backend, &[4, 2, 3], DType::F16).unwrap();
        let src: Vec<f32> = (1..=12).map(|v| v as f32).collect();
        let st = Tensor::from_f32(&backend, &src, &[2, 2, 3], DType::F16).unwrap();
        copy_rows_into(&st, &dst, 1).unwrap();
        let got = dst.to_f32_vec().unwrap();
        assert_eq!(&got[..6], &[0.0; 6]);
        assert_eq!(&got[6..18], &src[..]);
        assert_eq!(&got[18..], &[0.0; 6]);
    }
}

#[test]
fn device_offset_out_of_range_is_an_error_on_the_cpu_and_writes_nothing_on_the_gpu() {
    for backend in test_backends() {
        let init: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let dst = Tensor::from_slice(&backend, &init, &[4, 3]).unwrap();
        let src = Tensor::from_slice(&backend, &[-1.0f32; 6], &[2, 3]).unwrap();
        for bad in [3u32, 4, 1000, u32::MAX] {
            let pos = Tensor::from_slice(&backend, &[bad], &[1]).unwrap();
            let r = copy_rows_into_at(&src, &dst, &pos);
            if backend.is_gpu() {
                r.unwrap();
            } else {
                assert!(matches!(r, Err(KernelError::Argument { name: "dst_row_offset", .. })), "{r:?}");
            }
            assert_eq!(dst.to_vec::<f32>().unwrap(), init, "offset {bad} on {}", backend.name());
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    for backend in test_backends() {
        let f = |shape: &[usize], dtype| Tensor::zeros(&backend, shape, dtype).unwrap();
        let x = f(&[4, 3], DType::F32);
        let ids = f(&[4], DType::U32);
        assert!(matches!(cast(&x, DType::U32), Err(KernelError::DType { op: "cast", .. })));
        assert!(matches!(cast(&ids, DType::F32), Err(KernelError::DType { op: "cast", .. })));
        assert!(matches!(cast_into(&x, &f(&[3, 4], DType::F16)), Err(KernelError::Shape { op: "cast", .. })));
        assert!(matches!(cast(&f(&[0], DType::F32), DType::F16), Err(KernelError::Empty { .. })));
        assert!(matches!(copy_into(&x, &f(&[4, 3], DType::F16)), Err(KernelError::DType { op: "copy", .. })));
        assert!(matches!(copy_into(&x, &f(&[12], DType::F32)), Err(KernelError::Shape { op: "copy", .. })));
        assert!(matches!(copy(&f(&[0, 3], DType::F32)), Err(KernelError::Empty { .. })));

        let cache = f(&[8, 3], DType::F32);
        assert!(matches!(
            copy_rows_into(&x, &cache, 5),
            Err(KernelError::Argument { op: "copy_rows", name: "dst_row_offset", .. })
        ));
        assert!(matches!(copy_rows_into(&f(&[2, 4], DType::F32), &cache, 0), Err(KernelError::Shape { .. })));
        assert!(matches!(copy_rows_into(&f(&[9, 3], DType::F32), &cache, 0), Err(KernelError::Shape { .. })));
        assert!(matches!(copy_rows_into(&f(&[3], DType::F32), &cache, 0), Err(KernelError::Shape { .. })));
        assert!(matches!(copy_rows_into(&f(&[1, 3], DType::F16), &cache, 0), Err(KernelError::DType { .. })));
        assert!(matches!(copy_rows_into(&cache, &cache, 0), Err(KernelError::Argument { name: "dst", .. })));
        let pos_f = f(&[1], DType::F32);
        let pos_2 = f(&[2], DType::U32);
        assert!(matches!(copy_rows_into_at(&x, &cache, &pos_f), Err(KernelError::DType { .. })));
        assert!(matches!(copy_rows_into_at(&x, &cache, &pos_2), Err(KernelError::Shape { .. })));
    }
}

#[test]
fn the_f64_reference_rounds_correctly() {
    use reference::round;
    assert_eq!(round(65520.0, DType::F16), f64::INFINITY);
    assert_eq!(round(65519.0, DType::F16), 65504.0);
    assert_eq!(round(2f64.powi(-25), DType::F16), 0.0);
    assert_eq!(round(1.5 * 2f64.powi(-25), DType::F16), 2f64.powi(-24));
    assert_eq!(round(1.0 + 1.0 / 256.0, DType::BF16), 1.0);
    assert_eq!(round(1.0 + 3.0 / 256.0, DType::BF16), 1.0 + 4.0 / 256.0);
    assert_eq!(round(0.1, DType::F32), 0.1f32 as f64);
    for v in [1.0f64, 2.0, 0.5, 1024.0, 2f64.powi(-14), 2f64.powi(-24)] {
        assert_eq!(round(v, DType::F16), v);
    }
}
