use super::*;
use crate::testing::{Rng, Tolerance, assert_close, round_to, test_backends, test_gpu};

/// One product to check: stored shapes follow from the dims, the layout and the batch dims.
#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    a: DType,
    b: DType,
    batch_a: Option<usize>,
    batch_b: Option<usize>,
}

impl Case {
    fn new(m: usize, n: usize, k: usize, trans_a: bool, trans_b: bool, a: DType, b: DType) -> Case {
        Case { m, n, k, trans_a, trans_b, a, b, batch_a: None, batch_b: None }
    }
    fn batched(self, batch_a: Option<usize>, batch_b: Option<usize>) -> Case {
        Case { batch_a, batch_b, ..self }
    }
    fn a_shape(&self) -> Vec<usize> {
        let rc = if self.trans_a { [self.k, self.m] } else { [self.m, self.k] };
        self.batch_a.into_iter().chain(rc).collect()
    }
    fn b_shape(&self) -> Vec<usize> {
        let rc = if self.trans_b { [self.n, self.k] } else { [self.k, self.n] };
        self.batch_b.into_iter().chain(rc).collect()
    }
}

const LAYOUTS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

fn values(rng: &mut Rng, shape: &[usize], dtype: DType) -> Vec<f32> {
    round_to(&rng.vec(shape.iter().product(), -1.0, 1.0), dtype)
}

/// Runs `case` on `backend` with `kernel` and checks it against the f64 reference.
fn check(backend: &Backend, rng: &mut Rng, case: Case, kernel: GemmKernel, tol: Tolerance) {
    let (sa, sb) = (case.a_shape(), case.b_shape());
    let (av, bv) = (values(rng, &sa, case.a), values(rng, &sb, case.b));
    let at = Tensor::from_f32(backend, &av, &sa, case.a).unwrap();
    let bt = Tensor::from_f32(backend, &bv, &sb, case.b).unwrap();
    let opts = GemmOptions { trans_a: case.trans_a, trans_b: case.trans_b, kernel, ..Default::default() };
    let got = gemm(&at, &bt, opts).unwrap();
    let dims = gemm_dims(&sa, &sb, &opts).unwrap();
    assert_eq!(got.shape(), dims.out_shape());
    let want = reference(&av, &bv, &dims, &opts, None, None);
    let what = format!("{case:?} {kernel:?} on {}", backend.name());
    assert_close(&what, &got.to_f32_vec().unwrap(), &want, tol);
}

/// Ragged (M, N, K) triples from {1, 3, 17, 64, 127, 257}, mixed.
const SHAPES: [(usize, usize, usize); 10] = [
    (1, 1, 1),
    (3, 17, 64),
    (17, 3, 127),
    (64, 257, 3),
    (127, 64, 17),
    (257, 127, 1),
    (1, 257, 257),
    (257, 1, 64),
    (127, 127, 127),
    (3, 3, 257),
];

#[test]
fn all_layouts_and_dtypes_match_the_f64_reference_on_ragged_shapes() {
    let mut rng = Rng::new(1);
    for backend in test_backends() {
        for dtype in DType::FLOATS {
            for (ta, tb) in LAYOUTS {
                for (m, n, k) in SHAPES {
                    let case = Case::new(m, n, k, ta, tb, dtype, dtype);
                    check(&backend, &mut rng, case, GemmKernel::Tiled, tolerance(k).scaled(2.0));
                }
            }
        }
    }
}

#[test]
fn mixed_dtypes_match_the_f64_reference() {
    use DType::{BF16, F16, F32};
    let mut rng = Rng::new(2);
    for backend in test_backends() {
        for (da, db) in [(F32, BF16), (F16, F32), (BF16, F16), (F32, F16), (BF16, F32)] {
            for (ta, tb) in [(false, true), (false, false), (true, false)] {
                for (m, n, k) in [(17, 64, 127), (64, 3, 257), (257, 17, 3), (1, 127, 17)] {
                    let case = Case::new(m, n, k, ta, tb, da, db);
                    check(&backend, &mut rng, case, GemmKernel::Auto, tolerance(k).scaled(2.0));
                }
            }
        }
    }
}

#[test]
fn batches_and_shared_operands_match_the_f64_reference() {
    use DType::{BF16, F32};
    let mut rng = Rng::new(3);
    for backend in test_backends() {
        for (ta, tb) in LAYOUTS {
            for (ba, bb) in
                [(Some(3), None), (Some(3), Some(1)), (Some(3), Some(3)), (None, Some(2)), (Some(1), Some(2))]
            {
                for (m, n, k, da, db) in [(17, 33, 127, F32, F32), (64, 3, 17, F32, BF16), (3, 130, 65, BF16, BF16)] {
                    let case = Case::new(m, n, k, ta, tb, da, db).batched(ba, bb);
                    check(&backend, &mut rng, case, GemmKernel::Auto, tolerance(k).scaled(2.0));
                }
            }
        }
    }
}

#[test]
fn large_tiled_products_with_operands_packed_depth_major_match_the_reference() {
    use DType::{BF16, F16, F32};
    // Past PACK_MIN_STAGINGS tiles of M and N, the tiled kernel first rewrites A (and Bᵀ) depth-major.
    let (m, n) = (PACK_MIN_STAGINGS * 128 + 3, PACK_MIN_STAGINGS * 128 + 1);
    let mut rng = Rng::new(9);
    if let Some(backend) = test_gpu() {
        for (ta, tb) in LAYOUTS {
            for (k, da, db) in [(19, F32, F32), (66, BF16, F16)] {
                let case = Case::new(m, n, k, ta, tb, da, db);
                check(&backend, &mut rng, case, GemmKernel::Tiled, tolerance(k).scaled(2.0));
            }
        }
        for (ta, tb) in [(false, false), (false, true)] {
            for (ba, bb) in [(Some(2), None), (None, Some(2)), (Some(2), Some(2))] {
                let case = Case::new(m, n, 5, ta, tb, F32, BF16).batched(ba, bb);
                check(&backend, &mut rng, case, GemmKernel::Tiled, tolerance(5).scaled(2.0));
            }
        }
    }
}

#[test]
fn epilogue_adds_bias_and_residual_and_scales_by_alpha() {
    use DType::{BF16, F16, F32};
    let mut rng = Rng::new(4);
    for backend in test_backends() {
        for (batch, m, n, k, bias_dt, res_dt, shared_res) in [
            (None, 17, 33, 64, Some(F32), Some(F32), false),
            (Some(2), 127, 65, 17, Some(BF16), None, false),
            (Some(3), 3, 130, 127, None, Some(F16), true),
            (Some(2), 64, 64, 3, Some(F16), Some(BF16), false),
        ] {
            let a_shape: Vec<usize> = batch.into_iter().chain([m, k]).collect();
            let (av, bv) = (values(&mut rng, &a_shape, F32), values(&mut rng, &[n, k], BF16));
            let at = Tensor::from_f32(&backend, &av, &a_shape, F32).unwrap();
            let bt = Tensor::from_f32(&backend, &bv, &[n, k], BF16).unwrap();
            let biasv = bias_dt.map(|d| values(&mut rng, &[n], d));
            let bias = bias_dt.map(|d| Tensor::from_f32(&backend, biasv.as_ref().unwrap(), &[n], d).unwrap());
            let res_shape: Vec<usize> = if shared_res { vec![m, n] } else { batch.into_iter().chain([m, n]).collect() };
            let resv = res_dt.map(|d| values(&mut rng, &res_shape, d));
            let res = res_dt.map(|d| Tensor::from_f32(&backend, resv.as_ref().unwrap(), &res_shape, d).unwrap());
            let opts = GemmOptions {
                trans_b: true,
                alpha: -0.75,
                bias: bias.as_ref(),
                residual: res.as_ref(),
                ..Default::default()
            };
            let got = gemm(&at, &bt, opts).unwrap().to_f32_vec().unwrap();
            let dims = gemm_dims(&a_shape, &[n, k], &opts).unwrap();
            let want = reference(&av, &bv, &dims, &opts, biasv.as_deref(), resv.as_deref());
            let what = format!("epilogue {batch:?} {m}x{n}x{k} bias {bias_dt:?} res {res_dt:?} on {}", backend.name());
            assert_close(&what, &got, &want, tolerance(k).scaled(2.0));
        }
    }
}

#[test]
fn residual_may_be_the_output_for_in_place_accumulation() {
    let mut rng = Rng::new(5);
    for backend in test_backends() {
        let (m, n, k) = (33, 70, 19);
        let (av, bv, cv) = (rng.vec(m * k, -1.0, 1.0), rng.vec(k * n, -1.0, 1.0), rng.vec(m * n, -1.0, 1.0));
        let at = Tensor::from_slice(&backend, &av, &[m, k]).unwrap();
        let bt = Tensor::from_slice(&backend, &bv, &[k, n]).unwrap();
        let ct = Tensor::from_slice(&backend, &cv, &[m, n]).unwrap();
        let opts = GemmOptions::new().alpha(0.5).residual(&ct);
        gemm_into(&at, &bt, opts, &ct).unwrap();
        let dims = gemm_dims(&[m, k], &[k, n], &opts).unwrap();
        let want = reference(&av, &bv, &dims, &opts, None, Some(&cv));
        assert_close(&format!("in place on {}", backend.name()), &ct.to_f32_vec().unwrap(), &want, tolerance(k));
    }
}

#[test]
fn extreme_magnitudes_keep_their_relative_accuracy() {
    for backend in test_backends() {
        let (m, n, k) = (5, 9, 37);
        let av: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin() * 1e18).collect();
        let bv: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos() * 1e-20).collect();
        let at = Tensor::from_slice(&backend, &av, &[m, k]).unwrap();
        let bt = Tensor::from_slice(&backend, &bv, &[k, n]).unwrap();
        let got = gemm(&at, &bt, GemmOptions::new()).unwrap().to_f32_vec().unwrap();
        let dims = gemm_dims(&[m, k], &[k, n], &GemmOptions::new()).unwrap();
        let want = reference(&av, &bv, &dims, &GemmOptions::new(), None, None);
        let tol = Tolerance { atol: 1e-2 * 1e-5 * 37f64.sqrt(), rtol: 1e-5 * 37f64.sqrt() };
        assert_close(&format!("1e18 x 1e-20 on {}", backend.name()), &got, &want, tol);
    }
}

#[test]
fn linear_is_x_times_w_transposed_plus_bias() {
    let mut rng = Rng::new(6);
    for backend in test_backends() {
        let (t, i, o) = (7, 33, 19);
        let (xv, wv, bv) = (rng.vec(t * i, -1.0, 1.0), values(&mut rng, &[o, i], DType::BF16), rng.vec(o, -1.0, 1.0));
        let x = Tensor::from_slice(&backend, &xv, &[t, i]).unwrap();
        let w = Tensor::from_f32(&backend, &wv, &[o, i], DType::BF16).unwrap();
        let b = Tensor::from_slice(&backend, &bv, &[o]).unwrap();
        let got = linear(&x, &w, Some(&b)).unwrap();
        assert_eq!(got.shape(), [t, o]);
        let opts = GemmOptions::a_bt().bias(&b);
        let want = reference(&xv, &wv, &gemm_dims(&[t, i], &[o, i], &opts).unwrap(), &opts, Some(&bv), None);
        assert_close("linear", &got.to_f32_vec().unwrap(), &want, tolerance(i));
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    for backend in test_backends() {
        let t = |shape: &[usize], d: DType| Tensor::zeros(&backend, shape, d).unwrap();
        let (a, b) = (t(&[4, 5], DType::F32), t(&[5, 6], DType::F32));
        let shape_err = |r: Result<Tensor>| matches!(r, Err(KernelError::Shape { op: "gemm", .. }));
        // Inner dims, batch dims, ranks.
        assert!(shape_err(gemm(&a, &t(&[6, 6], DType::F32), GemmOptions::new())));
        assert!(shape_err(gemm(&a, &b, GemmOptions::a_bt())));
        assert!(shape_err(gemm(&t(&[2, 4, 5], DType::F32), &t(&[3, 5, 6], DType::F32), GemmOptions::new())));
        assert!(shape_err(gemm(&t(&[20], DType::F32), &b, GemmOptions::new())));
        assert!(shape_err(gemm(&t(&[1, 1, 4, 5], DType::F32), &b, GemmOptions::new())));
        // Epilogue shapes.
        assert!(shape_err(gemm(&a, &b, GemmOptions::new().bias(&t(&[5], DType::F32)))));
        assert!(shape_err(gemm(&a, &b, GemmOptions::new().residual(&t(&[6, 4], DType::F32)))));
        // Dtypes, empty, alpha.
        assert!(matches!(gemm(&t(&[4, 5], DType::U32), &b, GemmOptions::new()), Err(KernelError::DType { .. })));
        assert!(matches!(
            gemm(&t(&[0, 5], DType::F32), &b, GemmOptions::new()),
            Err(KernelError::Empty { op: "gemm", .. })
        ));
        assert!(matches!(
            gemm(&a, &b, GemmOptions::new().alpha(f32::NAN)),
            Err(KernelError::Argument { name: "alpha", .. })
        ));
        // Outputs: dtype, shape, aliasing.
        let out16 = t(&[4, 6], DType::F16);
        assert!(matches!(gemm_into(&a, &b, GemmOptions::new(), &out16), Err(KernelError::DType { .. })));
        assert!(shape_err(gemm_into(&a, &b, GemmOptions::new(), &t(&[4, 7], DType::F32)).map(|_| a.clone())));
        let sq = t(&[5, 5], DType::F32);
        assert!(matches!(
            gemm_into(&sq, &t(&[5, 5], DType::F32), GemmOptions::new(), &sq),
            Err(KernelError::Argument { name: "out", .. })
        ));
        // The cooperative path, asked for where it is not offered.
        if gemm_path(&backend, DType::F16, DType::F16, GemmKernel::Auto).unwrap() == GemmPath::Tiled
            || !backend.is_gpu()
        {
            let r = gemm(&a, &b, GemmOptions::new().kernel(GemmKernel::Cooperative));
            assert!(matches!(r, Err(KernelError::MissingFeature { op: "gemm", .. })), "{r:?}");
        }
    }
}

#[test]
fn cooperative_matrices_match_the_reference_where_offered() {
    let Some(backend) = test_gpu() else { return };
    let Backend::Gpu(ctx) = &backend else { unreachable!() };
    let Some(variant) = cooperative_variant(ctx) else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "torchless: gemm cooperative-matrix test SKIPPED: {} offers no fitting configuration ({:?})",
            ctx.info().name,
            ctx.cooperative_matrices()
        );
        return;
    };
    use DType::{BF16, F16, F32};
    let mut rng = Rng::new(7);
    for (da, db) in [(F16, F16), (BF16, BF16), (F16, BF16), (F32, BF16), (F32, F32)] {
        // f32 inputs are rounded to f16 by the 16×16 f16 configuration.
        let lossy = !(variant.exact_for(da) && variant.exact_for(db));
        for (ta, tb) in LAYOUTS {
            for (m, n, k) in SHAPES {
                let tol = if lossy { f16_rounded_tolerance(k) } else { tolerance(k).scaled(2.0) };
                let case = Case::new(m, n, k, ta, tb, da, db);
                check(&backend, &mut rng, case, GemmKernel::Cooperative, tol);
            }
        }
        let case = Case::new(130, 300, 77, false, true, da, db).batched(Some(3), Some(1));
        check(&backend, &mut rng, case, GemmKernel::Cooperative, tolerance(77).scaled(if lossy { 500.0 } else { 2.0 }));
        // Both operands staged by more than PREPASS_MIN_STAGINGS workgroups: the 16×16 configuration
        // rounds the non-f16 ones by the pre-pass (the batched A and the shared B alike).
        for (ta, tb) in LAYOUTS {
            let tol = if lossy { f16_rounded_tolerance(40) } else { tolerance(40).scaled(2.0) };
            let case = Case::new(520, 515, 40, ta, tb, da, db).batched(Some(2), Some(1));
            check(&backend, &mut rng, case, GemmKernel::Cooperative, tol);
        }
    }
    // bf16 beyond f16's range is clamped to ±65504 on the f16 configuration.
    if let CoopVariant::F16x16 { .. } = variant {
        let a = Tensor::from_f32(&backend, &[1e6, 1.0], &[1, 2], BF16).unwrap();
        let b = Tensor::from_f32(&backend, &[1.0, 0.0], &[2, 1], BF16).unwrap();
        let got = gemm(&a, &b, GemmOptions::new().kernel(GemmKernel::Cooperative)).unwrap().to_f32_vec().unwrap();
        assert_eq!(got, [65504.0]);
        // The f16 pre-pass rounds to nearest and clamps the same way; 13 elements, not a multiple of 8.
        let v = [1e6, -1e6, 1.5, 0.0, 1.0 / 3.0, 65519.0, -7.0, 2e-8, 0.1, 100.0, -0.5, 3.0, 1e-3];
        for dtype in [F32, BF16] {
            let t = Tensor::from_f32(&backend, &v, &[13], dtype).unwrap();
            let got = f16_copy(ctx, &t).unwrap().to_f32_vec().unwrap();
            let want: Vec<f32> = t
                .to_f32_vec()
                .unwrap()
                .iter()
                .map(|&x| half::f16::from_f32(x.clamp(-65504.0, 65504.0)).to_f32())
                .chain([0.0; 3])
                .collect();
            assert_eq!(got, want, "{dtype}");
            // A NaN stays NaN (the clamp alone could make it ±65504: GPUs' min and max may drop a NaN).
            let t = Tensor::from_f32(&backend, &[1.0, f32::NAN, 2.0], &[1, 3], dtype).unwrap();
            let got = f16_copy(ctx, &t).unwrap().to_f32_vec().unwrap();
            assert!(got[1].is_nan() && got[0] == 1.0 && got[2] == 2.0, "{dtype}: {got:?}");
            let b = Tensor::from_f32(&backend, &[1.0, 1.0, 1.0], &[3, 1], dtype).unwrap();
            let got = gemm(&t, &b, GemmOptions::new().kernel(GemmKernel::Cooperative)).unwrap().to_f32_vec().unwrap();
            assert!(got[0].is_nan(), "{dtype}: the product of a NaN row gave {got:?}");
        }
    }
}

#[test]
fn auto_picks_the_cpu_and_coop_requests_fail_on_the_cpu() {
    assert_eq!(gemm_path(&Backend::Cpu, DType::F32, DType::F32, GemmKernel::Auto).unwrap(), GemmPath::Cpu);
    assert!(matches!(
        gemm_path(&Backend::Cpu, DType::F16, DType::F16, GemmKernel::Cooperative),
        Err(KernelError::MissingFeature { .. })
    ));
    if let Some(gpu) = test_gpu() {
        assert_eq!(gemm_path(&gpu, DType::F32, DType::F32, GemmKernel::Tiled).unwrap(), GemmPath::Tiled);
        // f32 inputs never go to an f16 configuration unless asked.
        let auto = gemm_path(&gpu, DType::F32, DType::BF16, GemmKernel::Auto).unwrap();
        assert!(!matches!(auto, GemmPath::Cooperative(CoopVariant::F16x16 { .. })));
    }
}

/// A kernel to time: label, module, entry point, override constants, workgroup tile (rows, columns of C).
type Variant = (String, &'static crate::kernels::KernelSource, &'static str, Vec<(&'static str, f64)>, (usize, usize));

/// Tuning aid, not a check: times the raw kernels at 4096³ on the test GPU (no allocation, no
/// readback). Run on a GPU machine with `cargo test --release -p torchless-kernels profile_variants
/// -- --ignored --nocapture`.
#[test]
#[ignore]
fn profile_variants() {
    let Some(backend) = test_gpu() else { return };
    let Backend::Gpu(ctx) = &backend else { unreachable!() };
    let n = 4096usize;
    let mut rng = Rng::new(9);
    for dtype in [DType::F16, DType::F32] {
        let av = rng.vec(n * n, -1.0, 1.0);
        let a = Tensor::from_f32(&backend, &av, &[n, n], dtype).unwrap();
        let b = Tensor::from_f32(&backend, &av, &[n, n], dtype).unwrap();
        let out = Tensor::zeros(&backend, &[n, n], DType::F32).unwrap();
        let buf = |t: &Tensor| t.gpu_buffer().unwrap().raw().clone();
        let (ab, bb, ob) = (buf(&a), buf(&b), buf(&out));
        let p = Params {
            m: n as u32,
            n: n as u32,
            k: n as u32,
            alpha: 1.0,
            a_bstride: 0,
            b_bstride: 0,
            res_bstride: 0,
            batch: 1,
        };
        let mut variants: Vec<Variant> = vec![];
        for (ta, tb) in [(0.0, 0.0), (0.0, 1.0)] {
            let base = vec![
                ("DT_A", dtype.wgsl_code()),
                ("DT_B", dtype.wgsl_code()),
                ("TRANS_A", ta),
                ("TRANS_B", tb),
                ("BIAS", 0.0),
                ("DT_BIAS", 0.0),
                ("RES", 0.0),
                ("DT_RES", 0.0),
            ];
            variants.push((format!("tiled {dtype} tb={tb}"), &GEMM, "gemm_tiled", base.clone(), (128, 128)));
            if dtype == DType::F16 && cooperative_variant(ctx).is_some() {
                let mut c = base.clone();
                c.push(("WG16", f64::from(COOP16_WORKGROUP)));
                variants.push((format!("coop16 tb={tb}"), &GEMM_COOP, "gemm_coop16", c, COOP16_TILE));
            }
        }
        for (label, kernel, entry, constants, (tile_m, tile_n)) in variants {
            let grid = [(n / tile_n) as u32, (n / tile_m) as u32, 1];
            let run = || {
                ctx.dispatch(Dispatch {
                    kernel,
                    entry,
                    constants: &constants,
                    params: Some(bytemuck::bytes_of(&p)),
                    buffers: &[&ab, &bb, &ob, &ab, &ab],
                    workgroups: Workgroups::Grid(grid),
                })
                .unwrap()
            };
            run();
            ctx.synchronize().unwrap();
            let iters = 20;
            let t0 = std::time::Instant::now();
            for _ in 0..iters {
                run();
            }
            ctx.synchronize().unwrap();
            let s = t0.elapsed().as_secs_f64() / iters as f64;
            println!("gemm profile {label}: {:.3} ms, {:.1} TFLOP/s", s * 1e3, 2.0 * (n as f64).powi(3) / s / 1e12);
        }
    }
}

#[test]
fn params_match_the_wgsl_struct() {
    for kernel in [&GEMM, &GEMM_COOP] {
        let size = crate::testing::wgsl_struct_size(kernel, "Params");
        assert_eq!(size as usize, std::mem::size_of::<Params>(), "{}", kernel.name);
    }
}

#[test]
fn coop16_workgroup_memory_matches_the_variant_check() {
    use crate::ops::qmatmul::gpu::QMATMUL_COOP;
    for kernel in [&GEMM_COOP, &QMATMUL_COOP] {
        assert_eq!(
            crate::testing::wgsl_workgroup_bytes(kernel, "gemm_coop16"),
            COOP16_WORKGROUP_BYTES,
            "{}",
            kernel.name
        );
    }
}

#[test]
fn coop16_tiles_match_the_wgsl() {
    use crate::ops::qmatmul::gpu::{QCOOP16_TILE, QMATMUL_COOP};
    use crate::testing::wgsl_const_u32;
    for (kernel, (m, n)) in [(&GEMM_COOP, COOP16_TILE), (&QMATMUL_COOP, QCOOP16_TILE)] {
        let wgsl = (wgsl_const_u32(kernel, "HM") as usize, wgsl_const_u32(kernel, "HN") as usize);
        assert_eq!(wgsl, (m, n), "{}", kernel.name);
        // 16 subgroups of 64×32.
        assert!(m % 64 == 0 && n % 32 == 0 && m * n == 16 * 64 * 32, "{}: {m}×{n}", kernel.name);
    }
}

#[test]
fn bench_cases_are_square_and_capped() {
    let case = bench_case("gemm_a_bt", 256 << 20).unwrap().unwrap();
    assert_eq!(case.shape, "4096x4096x4096");
    assert_eq!(case.flops, 2 * 4096u64.pow(3));
    let small = bench_case("gemm_bf16", 12 * 100 * 100).unwrap().unwrap();
    assert_eq!(small.shape, "100x100x100");
    assert!(bench_case("add", 1024).is_none());
}
