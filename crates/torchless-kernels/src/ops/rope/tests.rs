use super::*;
use crate::testing::{Rng, Tolerance, assert_close, round_to, test_backends};

const HEAD_DIMS: [usize; 7] = [2, 6, 64, 80, 96, 128, 256];

/// inv_freq straight from the formulas, independent of `RopeConfig::inv_freq`.
fn reference_inv_freq(rot_dim: usize, theta: f64, scaling: &RopeScaling) -> Vec<f64> {
    (0..rot_dim / 2)
        .map(|i| {
            let f = 1.0 / theta.powf((2 * i) as f64 / rot_dim as f64);
            match scaling {
                RopeScaling::None => f,
                RopeScaling::Linear { factor } => f / *factor as f64,
                RopeScaling::Factors(d) => f / d[i] as f64,
                RopeScaling::Llama3 {
                    factor,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position_embeddings: old,
                } => {
                    let (factor, low, high, old) = (*factor as f64, *low as f64, *high as f64, *old as f64);
                    let wavelen = 2.0 * PI / f;
                    let scaled = if wavelen > old / low { f / factor } else { f };
                    let smooth = (old / wavelen - low) / (high - low);
                    let smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
                    let medium = wavelen >= old / high && wavelen <= old / low; // ~(< high) * ~(> low)
                    if medium { smoothed } else { scaled }
                }
            }
        })
        .collect()
}

fn tolerance(dtype: DType) -> Tolerance {
    Tolerance::for_dtype(dtype).scaled(2.0)
}

/// Runs every path (auto, forced word path; out of place and in place) and checks each against `want`.
#[allow(clippy::too_many_arguments)]
fn check_all_paths(
    backend: &Backend,
    what: &str,
    x: &[f32],
    shape: [usize; 3],
    dtype: DType,
    table: &RopeTable,
    positions: RopePositions<'_>,
    want: &[f64],
    tol: Tolerance,
) {
    let xt = Tensor::from_f32(backend, x, &shape, dtype).unwrap();
    let paths: &[Path] = if backend.is_gpu() { &[Path::Auto, Path::Words, Path::Strided] } else { &[Path::Auto] };
    for &path in paths {
        // Poisoned, so an element the kernel skips cannot pass with a pooled buffer's old contents.
        let out = Tensor::from_f32(backend, &vec![f32::NAN; x.len()], &shape, dtype).unwrap();
        rope_impl(&xt, table, positions, &out, path).unwrap();
        assert_close(&format!("{what} {path:?} on {}", backend.name()), &out.to_f32_vec().unwrap(), want, tol);
        let io = Tensor::from_f32(backend, x, &shape, dtype).unwrap();
        rope_impl(&io, table, positions, &io, path).unwrap();
        let what = format!("{what} {path:?} in place on {}", backend.name());
        assert_close(&what, &io.to_f32_vec().unwrap(), want, tol);
    }
}

#[test]
fn both_layouts_match_the_f64_reference_on_ragged_shapes() {
    let mut rng = Rng::new(7);
    for backend in test_backends() {
        for dtype in DType::FLOATS {
            for layout in [RopeLayout::HalfSplit, RopeLayout::Interleaved] {
                for (k, &hd) in HEAD_DIMS.iter().enumerate() {
                    // Full rotation, and a partial one (odd pair counts included) where there is room.
                    let mut rots = vec![hd];
                    if hd >= 6 {
                        rots.push(((hd * 2 / 5) & !1).max(2));
                    }
                    if hd == 80 {
                        rots.extend([20, 32]); // StableLM-3B, Phi-2
                    }
                    for rot in rots {
                        let (tokens, heads) = [(1, 1), (3, 5), (7, 3), (2, 33)][k % 4];
                        let shape = [tokens, heads, hd];
                        let x = round_to(&rng.vec(tokens * heads * hd, -2.0, 2.0), dtype);
                        let config = RopeConfig::new(hd, 10_000.0).with_rot_dim(rot).with_layout(layout);
                        let table = RopeTable::new(&backend, config).unwrap();
                        let offset = 17 + 1000 * k as u32;
                        let positions: Vec<u32> = (0..tokens as u32).map(|t| offset + t).collect();
                        let inv = reference_inv_freq(rot, 10_000.0, &RopeScaling::None);
                        let want = reference(&x, heads, layout, hd, &inv, 1.0, &positions);
                        let what = format!("{layout:?} {dtype} {shape:?} rot {rot} offset {offset}");
                        let pos = RopePositions::Range { offset };
                        check_all_paths(&backend, &what, &x, shape, dtype, &table, pos, &want, tolerance(dtype));
                    }
                }
            }
        }
    }
}

#[test]
fn per_token_positions_match_the_reference() {
    let mut rng = Rng::new(8);
    for backend in test_backends() {
        for dtype in DType::FLOATS {
            for layout in [RopeLayout::HalfSplit, RopeLayout::Interleaved] {
                for (tokens, heads, hd, rot) in [(5, 4, 128, 128), (9, 3, 80, 32), (4, 2, 6, 6), (33, 2, 64, 64)] {
                    let shape = [tokens, heads, hd];
                    let x = round_to(&rng.vec(tokens * heads * hd, -3.0, 3.0), dtype);
                    // Repeats, out of order, zero and large positions (a batch of sequences decoding).
                    let positions: Vec<u32> =
                        (0..tokens).map(|t| [0, 5, 5, 131_071, 4096, 77_777, 1][t % 7] + rng.below(50)).collect();
                    let pt = Tensor::from_slice(&backend, &positions, &[tokens]).unwrap();
                    let config = RopeConfig::new(hd, 500_000.0).with_rot_dim(rot).with_layout(layout);
                    let table = RopeTable::new(&backend, config).unwrap();
                    let inv = reference_inv_freq(rot, 500_000.0, &RopeScaling::None);
                    let want = reference(&x, heads, layout, hd, &inv, 1.0, &positions);
                    let what = format!("positions tensor {layout:?} {dtype} {shape:?} rot {rot}");
                    check_all_paths(
                        &backend,
                        &what,
                        &x,
                        shape,
                        dtype,
                        &table,
                        RopePositions::Tensor(&pt),
                        &want,
                        tolerance(dtype),
                    );
                }
            }
        }
    }
}

#[test]
fn long_positions_keep_f32_accuracy() {
    // At position 100000 the f32 product position · inv_freq is off by up to ~4e-3 rad; the kernels
    // must stay within the plain f32 tolerance of the f64 reference.
    let (heads, hd) = (2, 128);
    let inv = reference_inv_freq(hd, 10_000.0, &RopeScaling::None);
    let naive_worst = inv
        .iter()
        .map(|&f| {
            let naive = (100_000f32 * f as f32) as f64;
            (naive - 100_000.0 * f).abs()
        })
        .fold(0.0, f64::max);
    assert!(naive_worst > 1e-3, "the test would not catch a plain f32 angle ({naive_worst:.2e} rad)");
    let mut rng = Rng::new(9);
    for backend in test_backends() {
        for layout in [RopeLayout::HalfSplit, RopeLayout::Interleaved] {
            let config = RopeConfig::new(hd, 10_000.0).with_layout(layout);
            let table = RopeTable::new(&backend, config).unwrap();
            for offset in [100_000u32, 131_070, 1 << 24, 3_999_999_999, u32::MAX - 2] {
                // Within a few f32 ulps of 1 (the CPU's f64 angles land at ~1e-7, the GPU's at ~1.5e-7).
                // Past 2^24 the f64 reference's own product position · inv_freq is off by up to 5e-7.
                let atol = if offset <= 1 << 24 { 3e-7 } else { 1e-6 };
                let tokens = 3;
                let x = rng.vec(tokens * heads * hd, -1.0, 1.0);
                let positions: Vec<u32> = (0..tokens as u32).map(|t| offset + t).collect();
                let want = reference(&x, heads, layout, hd, &inv, 1.0, &positions);
                let what = format!("{layout:?} at position {offset}");
                let tol = Tolerance { atol, rtol: 0.0 };
                let pos = RopePositions::Range { offset };
                check_all_paths(&backend, &what, &x, [tokens, heads, hd], DType::F32, &table, pos, &want, tol);
            }
        }
    }
}

#[test]
fn scalings_and_attention_scaling_match_the_reference() {
    let llama3 = RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    };
    let factors: Vec<f32> = (0..40).map(|i| 1.0 + 0.25 * i as f32).collect();
    let cases = [
        (128, 128, RopeScaling::Linear { factor: 4.0 }, 1.0),
        (128, 128, llama3.clone(), 1.0),
        (96, 80, RopeScaling::Factors(factors), 1.0),
        (64, 64, RopeScaling::None, 1.2),
        (64, 48, llama3, 0.7),
    ];
    let mut rng = Rng::new(10);
    for backend in test_backends() {
        for dtype in [DType::F32, DType::BF16] {
            for layout in [RopeLayout::HalfSplit, RopeLayout::Interleaved] {
                for (hd, rot, scaling, attn) in cases.iter().cloned() {
                    let (tokens, heads) = (4, 3);
                    let x = round_to(&rng.vec(tokens * heads * hd, -2.0, 2.0), dtype);
                    let config = RopeConfig::new(hd, 500_000.0)
                        .with_rot_dim(rot)
                        .with_layout(layout)
                        .with_scaling(scaling.clone())
                        .with_attention_scaling(attn);
                    let table = RopeTable::new(&backend, config).unwrap();
                    let inv = reference_inv_freq(rot, 500_000.0, &scaling);
                    for (got, want) in table.inv_freq().iter().zip(&inv) {
                        assert!((got - want).abs() <= 1e-15 * want, "{scaling:?}: inv_freq {got} vs {want}");
                    }
                    let offset = 50_000;
                    let positions: Vec<u32> = (0..tokens as u32).map(|t| offset + 7 * t).collect();
                    let pt = Tensor::from_slice(&backend, &positions, &[tokens]).unwrap();
                    let want = reference(&x, heads, layout, hd, &inv, attn as f64, &positions);
                    let what = format!("{scaling:?} attn {attn} {layout:?} {dtype} rot {rot}");
                    let tol = tolerance(dtype).scaled(attn.max(1.0) as f64);
                    let pos = RopePositions::Tensor(&pt);
                    check_all_paths(&backend, &what, &x, [tokens, heads, hd], dtype, &table, pos, &want, tol);
                }
            }
        }
    }
}

#[test]
fn llama3_inv_freq_matches_values_computed_by_hand() {
    // Llama 3.1 8B: theta 500000, head_dim 128, factor 8, low 1, high 4, original context 8192.
    // Wavelength bounds: high_freq_wavelen = 8192/4 = 2048, low_freq_wavelen = 8192/1 = 8192.
    // Base inv_freq[i] = 500000^(−i/64) = exp(−13.1223634 · i/64), wavelen = 2π / inv_freq:
    //   i = 0:  1              wavelen 6.283 < 2048            → kept: 1
    //   i = 20: 0.0165604401   wavelen 379.41 < 2048           → kept: 0.0165604401
    //   i = 30: 0.00213111954  wavelen 2948.30, medium        → smooth = (8192/2948.30 − 1)/3 = 0.592849,
    //           (1 − 0.592849) · 0.00213111954 / 8 + 0.592849 · 0.00213111954 = 0.00137189357
    //   i = 34: 0.000938473870 wavelen 6695.11, medium        → smooth = (8192/6695.11 − 1)/3 = 0.0745266,
    //           (1 − 0.0745266) · 0.000938473870 / 8 + 0.0745266 · 0.000938473870 = 0.000178507813
    //   i = 35: 0.000764496988 wavelen 8218.72 > 8192          → / 8: 0.0000955621235
    //   i = 63: 2.45514079e-6  wavelen 2.56e6 > 8192           → / 8: 3.06892599e-7
    let config = RopeConfig::new(128, 500_000.0).with_scaling(RopeScaling::Llama3 {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position_embeddings: 8192,
    });
    let inv = config.inv_freq().unwrap();
    assert_eq!(inv.len(), 64);
    for (i, want) in [
        (0, 1.0),
        (20, 0.016_560_440_1),
        (30, 0.001_371_893_57),
        (34, 0.000_178_507_813),
        (35, 0.000_095_562_123_5),
        (63, 3.068_925_99e-7),
    ] {
        let rel = (inv[i] - want).abs() / want;
        assert!(rel < 1e-8, "inv_freq[{i}] = {} want {want} (rel err {rel:.1e})", inv[i]);
    }
    // The scaled table is monotone, and every frequency lies between the unscaled one and it / factor.
    let base = RopeConfig::new(128, 500_000.0).inv_freq().unwrap();
    for i in 0..64 {
        assert!(inv[i] <= base[i] && inv[i] >= base[i] / 8.0 * (1.0 - 1e-15), "i = {i}");
        if i > 0 {
            assert!(inv[i] < inv[i - 1], "not monotone at {i}");
        }
    }
}

#[test]
fn table_coefficients_split_exactly() {
    for c in [1.0 / (2.0 * PI), 0.123_456_789_012_345_67, 3.3e-7, 0.999_999_999, 1e-35, 0.0] {
        let (hi, lo) = split16(c);
        assert_eq!((hi as f64 * 65536.0).fract(), 0.0, "hi of {c} is not a multiple of 2^-16");
        assert!((0.0..1.0 / 65536.0).contains(&lo), "lo of {c} is {lo}");
        assert!(((hi as f64 + lo as f64) - c).abs() <= 1e-12, "{c}");
        // k · hi and its fraction are exact in f32 for every byte k.
        for k in [1u32, 3, 127, 255] {
            let prod = k as f32 * hi;
            assert_eq!(prod as f64, k as f64 * hi as f64);
            assert_eq!((prod - prod.floor()) as f64, (k as f64 * hi as f64).fract());
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let arg = |r: Result<RopeTable>, want: &str| match r {
        Err(KernelError::Argument { op: "rope", name, .. }) => assert_eq!(name, want),
        other => panic!("expected an argument error for {want}, got {other:?}"),
    };
    for backend in test_backends() {
        let b = &backend;
        arg(RopeTable::new(b, RopeConfig::new(7, 1e4)), "head_dim");
        arg(RopeTable::new(b, RopeConfig::new(0, 1e4)), "head_dim");
        arg(RopeTable::new(b, RopeConfig::new(64, 1e4).with_rot_dim(66)), "rot_dim");
        arg(RopeTable::new(b, RopeConfig::new(64, 1e4).with_rot_dim(31)), "rot_dim");
        arg(RopeTable::new(b, RopeConfig::new(64, 1e4).with_rot_dim(0)), "rot_dim");
        arg(RopeTable::new(b, RopeConfig::new(64, 0.0)), "theta");
        arg(RopeTable::new(b, RopeConfig::new(64, -1.0)), "theta");
        arg(RopeTable::new(b, RopeConfig::new(64, f64::NAN)), "theta");
        arg(RopeTable::new(b, RopeConfig::new(64, 1e4).with_attention_scaling(f32::INFINITY)), "attention_scaling");
        let scaled = |s: RopeScaling| RopeTable::new(b, RopeConfig::new(64, 1e4).with_scaling(s));
        arg(scaled(RopeScaling::Linear { factor: 0.0 }), "factor");
        arg(scaled(RopeScaling::Factors(vec![1.0; 31])), "factors");
        arg(scaled(RopeScaling::Factors(vec![-1.0; 32])), "factors");
        let llama3 = |low, high, old| RopeScaling::Llama3 {
            factor: 8.0,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: old,
        };
        arg(scaled(llama3(4.0, 4.0, 8192)), "high_freq_factor");
        arg(scaled(llama3(0.0, 4.0, 8192)), "low_freq_factor");
        arg(scaled(llama3(1.0, 4.0, 0)), "original_max_position_embeddings");

        let table = RopeTable::new(b, RopeConfig::new(8, 1e4)).unwrap();
        let x = Tensor::zeros(b, &[3, 2, 8], DType::F32).unwrap();
        let range = RopePositions::Range { offset: 0 };
        let shape_err = |r: Result<Tensor>| assert!(matches!(r, Err(KernelError::Shape { op: "rope", .. })), "{r:?}");
        shape_err(rope(&Tensor::zeros(b, &[3, 2, 6], DType::F32).unwrap(), &table, range));
        shape_err(rope(&Tensor::zeros(b, &[6, 8], DType::F32).unwrap(), &table, range));
        let short = Tensor::from_slice(b, &[1u32, 2], &[2]).unwrap();
        shape_err(rope(&x, &table, RopePositions::Tensor(&short)));
        let long = Tensor::from_slice(b, &[1u32, 2, 3, 4], &[4]).unwrap();
        shape_err(rope(&x, &table, RopePositions::Tensor(&long)));
        let float_pos = Tensor::zeros(b, &[3], DType::F32).unwrap();
        assert!(matches!(rope(&x, &table, RopePositions::Tensor(&float_pos)), Err(KernelError::DType { .. })));
        let ids = Tensor::zeros(b, &[3, 2, 8], DType::U32).unwrap();
        assert!(matches!(rope(&ids, &table, range), Err(KernelError::DType { .. })));
        let empty = Tensor::zeros(b, &[0, 2, 8], DType::F32).unwrap();
        assert!(matches!(rope(&empty, &table, range), Err(KernelError::Empty { .. })));
        let out16 = Tensor::zeros(b, &[3, 2, 8], DType::F16).unwrap();
        assert!(matches!(rope_into(&x, &table, range, &out16), Err(KernelError::DType { .. })));
        let out_shape = Tensor::zeros(b, &[3, 2, 10], DType::F32).unwrap();
        assert!(matches!(rope_into(&x, &table, range, &out_shape), Err(KernelError::Shape { .. })));
        let overflow = rope(&x, &table, RopePositions::Range { offset: u32::MAX - 1 });
        assert!(matches!(overflow, Err(KernelError::Argument { name: "offset", .. })), "{overflow:?}");
    }
    // Tensors on different backends.
    if let Some(gpu) = crate::testing::test_gpu() {
        let table = RopeTable::new(&Backend::Cpu, RopeConfig::new(8, 1e4)).unwrap();
        let x = Tensor::zeros(&gpu, &[1, 1, 8], DType::F32).unwrap();
        let r = rope(&x, &table, RopePositions::Range { offset: 0 });
        assert!(matches!(r, Err(KernelError::DeviceMismatch { .. })));
    }
}

#[test]
fn the_vec_path_covers_the_common_shapes() {
    let half = |hd, rot, layout| RopeConfig::new(hd, 1e4).with_rot_dim(rot).with_layout(layout);
    for layout in [RopeLayout::HalfSplit, RopeLayout::Interleaved] {
        for hd in [64, 80, 96, 128, 256] {
            for dtype in DType::FLOATS {
                assert!(vec_plan(dtype, &half(hd, hd, layout)).is_some(), "{layout:?} {dtype} {hd}");
            }
        }
        assert!(vec_plan(DType::F16, &half(80, 32, layout)).is_some());
        assert!(vec_plan(DType::F32, &half(6, 6, layout)).is_none());
    }
}

/// The fused step equals rope on q and k plus row copies, on every backend, both layouts, partial
/// rotation (an odd number of pairs too), GQA, several tokens at an offset, into f32, f16 and bf16
/// caches; cache rows outside the step keep their contents.
#[test]
fn an_f16_cache_saturates_and_keeps_a_nan() {
    // Position 0 rotates by nothing (a NaN still spoils its pair: NaN · sin 0 is NaN, as in PyTorch).
    let x = [f32::NAN, 1e6, -1e6, 1.5];
    for b in test_backends() {
        let table = RopeTable::new(&b, RopeConfig::new(4, 10000.0)).unwrap();
        let t = |v: &[f32]| Tensor::from_slice(&b, v, &[1, 1, 4]).unwrap();
        let cache = || Tensor::zeros(&b, &[2, 1, 4], DType::F16).unwrap();
        let (kc, vc) = (cache(), cache());
        rope_qk_store_kv(&t(&[0.0; 4]), &t(&x), &t(&x), &table, 0, &kc, &vc).unwrap();
        let (k, v) = (kc.to_f32_vec().unwrap(), vc.to_f32_vec().unwrap());
        let what = format!("f16 cache on {}", b.name());
        assert!(v[0].is_nan() && v[1..] == [65504.0, -65504.0, 1.5, 0.0, 0.0, 0.0, 0.0], "{what}: v {v:?}");
        assert!(k[0].is_nan() && k[2].is_nan() && (k[1], k[3]) == (65504.0, 1.5), "{what}: k {k:?}");
    }
}

#[test]
fn rope_qk_store_kv_matches_rope_and_copies() {
    let mut rng = Rng::new(41);
    for (layout, hd, rot, heads, kv, tokens, pos) in [
        (RopeLayout::HalfSplit, 64, 64, 4, 2, 1, 0),
        (RopeLayout::HalfSplit, 16, 8, 4, 4, 5, 7),
        (RopeLayout::Interleaved, 128, 128, 8, 1, 3, 300),
        (RopeLayout::Interleaved, 6, 4, 2, 2, 9, 1),
        (RopeLayout::HalfSplit, 10, 6, 2, 1, 2, 3),
    ] {
        let cap = pos + tokens + 2;
        let cfg = RopeConfig::new(hd, 10000.0).with_rot_dim(rot).with_layout(layout);
        let qv = rng.vec(tokens * heads * hd, -2.0, 2.0);
        let kv_ = rng.vec(tokens * kv * hd, -2.0, 2.0);
        let vv = rng.vec(tokens * kv * hd, -2.0, 2.0);
        let cache0 = rng.vec(cap * kv * hd, -1.0, 1.0);
        let cpu = Backend::Cpu;
        let cpu_table = RopeTable::new(&cpu, cfg.clone()).unwrap();
        let t = |b: &Backend, v: &[f32], shape: &[usize]| Tensor::from_slice(b, v, shape).unwrap();
        let want_q = rope(&t(&cpu, &qv, &[tokens, heads, hd]), &cpu_table, RopePositions::Range { offset: pos as u32 })
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let want_k = rope(&t(&cpu, &kv_, &[tokens, kv, hd]), &cpu_table, RopePositions::Range { offset: pos as u32 })
            .unwrap()
            .to_f32_vec()
            .unwrap();
        let row = kv * hd;
        let mut want_kc = cache0.clone();
        want_kc[pos * row..(pos + tokens) * row].copy_from_slice(&want_k);
        let mut want_vc = cache0.clone();
        want_vc[pos * row..(pos + tokens) * row].copy_from_slice(&vv);
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
        for b in test_backends() {
            for cache_dt in DType::FLOATS {
                // A 16-bit cache holds the values rounded to nearest; the rotation (f32 on the GPU)
                // may round the other way where it lands near a midpoint: one unit in the last place.
                let (rounded, cache_tol): (fn(f32) -> f32, Tolerance) = match cache_dt {
                    DType::F16 => (|x| half::f16::from_f32(x).to_f32(), Tolerance { atol: 1e-3, rtol: 1e-3 }),
                    DType::BF16 => (|x| half::bf16::from_f32(x).to_f32(), Tolerance { atol: 8e-3, rtol: 8e-3 }),
                    _ => (|x| x, Tolerance { atol: 2e-6, rtol: 2e-6 }),
                };
                let table = RopeTable::new(&b, cfg.clone()).unwrap();
                let q = t(&b, &qv, &[tokens, heads, hd]);
                let (k, v) = (t(&b, &kv_, &[tokens, kv, hd]), t(&b, &vv, &[tokens, kv, hd]));
                let cache = || Tensor::from_f32(&b, &cache0, &[cap, kv, hd], cache_dt).unwrap();
                let (kc, vc) = (cache(), cache());
                rope_qk_store_kv(&q, &k, &v, &table, pos, &kc, &vc).unwrap();
                let what = format!("rope_qk_kv {layout:?} hd {hd} rot {rot}, {cache_dt} cache on {}", b.name());
                let tol = Tolerance { atol: 2e-6, rtol: 2e-6 };
                let want = |c: &[f32]| c.iter().map(|&x| rounded(x) as f64).collect::<Vec<_>>();
                assert_close(&format!("{what}: q"), &q.to_f32_vec().unwrap(), &f64s(&want_q), tol);
                assert_close(&format!("{what}: k cache"), &kc.to_f32_vec().unwrap(), &want(&want_kc), cache_tol);
                assert_close(&format!("{what}: v cache"), &vc.to_f32_vec().unwrap(), &want(&want_vc), cache_tol);
                assert_eq!(k.to_f32_vec().unwrap(), kv_, "{what}: k is an input");
            }
        }
    }
    // A step past the end of the cache is a typed error.
    let cpu = Backend::Cpu;
    let table = RopeTable::new(&cpu, RopeConfig::new(4, 10000.0)).unwrap();
    let z = |shape: &[usize]| Tensor::zeros(&cpu, shape, DType::F32).unwrap();
    let err =
        rope_qk_store_kv(&z(&[2, 1, 4]), &z(&[2, 1, 4]), &z(&[2, 1, 4]), &table, 3, &z(&[4, 1, 4]), &z(&[4, 1, 4]));
    assert!(matches!(err, Err(KernelError::Argument { name: "pos", .. })), "{err:?}");
    // Caches of two dtypes, or of an integer one, are typed errors.
    let c16 = Tensor::zeros(&cpu, &[4, 1, 4], DType::F16).unwrap();
    let err = rope_qk_store_kv(&z(&[1, 1, 4]), &z(&[1, 1, 4]), &z(&[1, 1, 4]), &table, 0, &c16, &z(&[4, 1, 4]));
    assert!(matches!(err, Err(KernelError::DType { .. })), "{err:?}");
    let cu = Tensor::zeros(&cpu, &[4, 1, 4], DType::U32).unwrap();
    let err = rope_qk_store_kv(&z(&[1, 1, 4]), &z(&[1, 1, 4]), &z(&[1, 1, 4]), &table, 0, &cu, &cu);
    assert!(matches!(err, Err(KernelError::DType { .. })), "{err:?}");
}

#[test]
fn bench_case_checks_on_the_cpu() {
    let case = bench_case("rope", 1 << 20).unwrap().unwrap();
    let inputs = case.inputs_on(&Backend::Cpu).unwrap();
    assert!(case.check(&Backend::Cpu, &inputs).unwrap().ok);
    assert!(bench_case("softmax", 1 << 20).is_none());
}
