use super::*;
use crate::testing::{Rng, Tolerance, assert_close, round_to, test_backends};

const TOL: Tolerance = Tolerance { atol: 2e-5, rtol: 5e-4 };

/// (tokens, n_heads, n_kv_heads, head_dim, kv_len, dtype, softcap, window, causal)
type DecodeCase = (usize, usize, usize, usize, usize, DType, Option<f32>, Option<usize>, bool);
/// (L, kv_len, q_offset, n_heads, n_kv_heads, head_dim, dtype, softcap, window, causal)
type FlashCase = (usize, usize, usize, usize, usize, usize, DType, Option<f32>, Option<usize>, bool);

/// Inputs of one case: q, and K/V of `capacity` rows whose rows past `kv_len` are NaN (never read).
struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    d: Dims,
    dtype: DType,
}

#[allow(clippy::too_many_arguments)]
fn inputs(
    rng: &mut Rng,
    tokens: usize,
    n_heads: usize,
    n_kv: usize,
    hd: usize,
    capacity: usize,
    kv_len: usize,
    dtype: DType,
) -> Inputs {
    let q = rng.vec(tokens * n_heads * hd, -2.0, 2.0);
    let row = n_kv * hd;
    let mut k = round_to(&rng.vec(capacity * row, -2.0, 2.0), dtype);
    let mut v = round_to(&rng.vec(capacity * row, -1.0, 1.0), dtype);
    k[kv_len * row..].fill(f32::NAN);
    v[kv_len * row..].fill(f32::NAN);
    Inputs { q, k, v, d: Dims { tokens, n_heads, n_kv_heads: n_kv, head_dim: hd, capacity }, dtype }
}

impl Inputs {
    fn tensors(&self, backend: &Backend) -> (Tensor, Tensor, Tensor) {
        let d = &self.d;
        let kv_shape = [d.capacity, d.n_kv_heads, d.head_dim];
        (
            Tensor::from_f32(backend, &self.q, &[d.tokens, d.n_heads, d.head_dim], DType::F32).unwrap(),
            Tensor::from_f32(backend, &self.k, &kv_shape, self.dtype).unwrap(),
            Tensor::from_f32(backend, &self.v, &kv_shape, self.dtype).unwrap(),
        )
    }
    fn reference(&self, kv_len: usize, pos0: i64, opts: &AttentionOptions) -> Vec<f64> {
        reference(&self.q, &self.k, &self.v, &self.d, kv_len, pos0, opts)
    }
}

/// Decode kernels to run: the subgroup one (where the adapter has it) and the workgroup one.
fn kernel_choices(backend: &Backend) -> Vec<bool> {
    match backend {
        Backend::Cpu => vec![true],
        Backend::Gpu(ctx) if ctx.has_subgroups() => vec![true, false],
        Backend::Gpu(_) => vec![false],
    }
}

/// `flash_attention` on `backend` once per synchronisation of the cooperative kernel that the adapter
/// can run (subgroup barriers where they serve, and workgroup barriers), labelled.
fn flash_runs(
    backend: &Backend,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    kv_len: usize,
    off: usize,
    o: AttentionOptions,
) -> Vec<(String, Vec<f32>)> {
    let subgroup_sync =
        matches!(backend, Backend::Gpu(ctx) if flash_coop_subgroup_sync(ctx)) && flash_uses_coop(backend, q.shape()[2]);
    let syncs: &[bool] = if subgroup_sync { &[false, true] } else { &[false] };
    syncs
        .iter()
        .map(|&workgroup_sync| {
            TEST_FLASH_WORKGROUP_SYNC.set(workgroup_sync);
            let got = flash_attention(q, k, v, kv_len, off, o).and_then(|t| t.to_f32_vec());
            TEST_FLASH_WORKGROUP_SYNC.set(false);
            let label = if workgroup_sync {
                format!("{} (workgroup barriers)", backend.name())
            } else {
                backend.name().to_string()
            };
            (label, got.unwrap())
        })
        .collect()
}

fn opts(hd: usize, softcap: Option<f32>, window: Option<usize>, causal: bool) -> AttentionOptions {
    AttentionOptions { softcap, window, causal, ..AttentionOptions::new(hd) }
}

#[test]
fn decode_matches_the_f64_reference() {
    use DType::*;
    // (tokens, n_heads, n_kv, head_dim, kv_len, dtype, softcap, window, causal)
    #[rustfmt::skip]
    let cases: &[DecodeCase] = &[
        (1, 4, 4, 64, 1, F32, None, None, true),
        (1, 4, 4, 64, 2, F16, None, None, true),
        (1, 8, 2, 128, 31, F32, None, None, true),
        (1, 8, 2, 128, 33, F16, Some(5.0), None, true),
        (1, 8, 1, 80, 257, F32, None, Some(40), true),
        (1, 8, 1, 80, 257, F16, Some(2.0), Some(100), true),
        (1, 4, 1, 64, 3000, F16, None, None, true),
        (1, 16, 2, 128, 3000, F16, None, Some(1000), true),
        (1, 2, 1, 256, 300, F32, None, None, true),
        (1, 8, 1, 256, 70, BF16, None, None, true),
        (1, 4, 2, 20, 100, F16, None, None, true),
        (1, 6, 3, 84, 45, BF16, Some(8.0), None, true),
        (3, 8, 2, 128, 40, F16, None, None, true),
        (3, 8, 2, 128, 40, F32, None, Some(2), true),
        (2, 16, 2, 256, 65, F16, None, None, true),
        (4, 4, 4, 32, 50, F32, None, None, false),
        // Llama-3's heads at lengths around the split thresholds, ragged key steps, GQA 8.
        (1, 32, 8, 128, 1000, F32, None, None, true),
        (1, 32, 8, 128, 4100, F16, None, None, true),
        (2, 8, 2, 64, 700, BF16, Some(30.0), Some(300), true),
        (1, 8, 1, 128, 129, F32, None, None, true),
        (1, 4, 4, 96, 77, F16, None, None, true),
        (1, 4, 2, 32, 300, F32, Some(3.0), None, true),
        (1, 6, 2, 64, 2600, F32, Some(4.0), Some(2000), true),
    ];
    let mut rng = Rng::new(7);
    for &(tokens, nh, nkv, hd, kv_len, dtype, cap, window, causal) in cases {
        let x = inputs(&mut rng, tokens, nh, nkv, hd, kv_len + 5, kv_len, dtype);
        let o = opts(hd, cap, window, causal);
        let want = x.reference(kv_len, kv_len as i64 - tokens as i64, &o);
        for backend in test_backends() {
            let (q, k, v) = x.tensors(&backend);
            for subgroups in kernel_choices(&backend) {
                let out = Tensor::uninit(&backend, "test", q.shape(), DType::F32).unwrap();
                decode_impl(&q, &k, &v, KvLen::Host(kv_len), o, &out, subgroups, None).unwrap();
                let what = format!(
                    "decode T={tokens} {nh}/{nkv}x{hd} kv_len {kv_len} {dtype} {o:?} on {} (subgroups {subgroups})",
                    backend.name()
                );
                assert_close(&what, &out.to_f32_vec().unwrap(), &want, TOL);
            }
        }
    }
}

#[test]
fn flash_matches_the_f64_reference() {
    use DType::*;
    // (L, kv_len, q_offset, n_heads, n_kv, head_dim, dtype, softcap, window, causal)
    #[rustfmt::skip]
    let cases: &[FlashCase] = &[
        (1, 1, 0, 2, 2, 64, F32, None, None, true),
        (33, 33, 0, 4, 1, 64, F32, None, None, true),
        (31, 40, 9, 8, 2, 128, F32, None, None, true),
        (65, 65, 0, 4, 1, 64, F16, None, None, true),
        (100, 100, 0, 8, 1, 80, F32, None, Some(17), true),
        (70, 90, 20, 8, 2, 128, F16, Some(4.0), None, true),
        (20, 50, 0, 4, 4, 64, F32, None, None, false),
        (40, 40, 0, 2, 1, 256, F32, None, None, true),
        (33, 60, 27, 4, 2, 256, BF16, Some(10.0), Some(30), true),
        (37, 37, 0, 4, 2, 20, F16, None, None, true),
        (19, 30, 11, 4, 1, 84, F16, None, Some(9), true),
        (257, 257, 0, 2, 1, 32, F32, None, None, true),
        (300, 340, 40, 8, 2, 128, F32, None, Some(100), true),
        (130, 130, 0, 4, 2, 128, BF16, Some(30.0), None, true),
        // Rows 15.. see no key (their window starts past the 10 keys): mixed in one block of rows.
        (20, 10, 0, 4, 2, 64, F32, None, Some(5), true),
    ];
    let mut rng = Rng::new(8);
    for &(len, kv_len, off, nh, nkv, hd, dtype, cap, window, causal) in cases {
        let x = inputs(&mut rng, len, nh, nkv, hd, kv_len + 3, kv_len, dtype);
        let o = opts(hd, cap, window, causal);
        let want = x.reference(kv_len, off as i64, &o);
        for backend in test_backends() {
            let (q, k, v) = x.tensors(&backend);
            for (on, got) in flash_runs(&backend, &q, &k, &v, kv_len, off, o) {
                let what = format!("flash L={len} S={kv_len} off {off} {nh}/{nkv}x{hd} {dtype} {o:?} on {on}");
                assert_close(&what, &got, &want, flash_tolerance(&backend, hd));
            }
        }
    }
}

/// Scores that rise by 1/2 a key (16 a tile of 32 keys), so that the cooperative kernel moves its reference
/// max and rescales the output on every tile, for rows at different places in their tiles (causal).
#[test]
fn rows_whose_max_keeps_rising_match_the_reference() {
    let mut rng = Rng::new(12);
    let (len, hd) = (300, 64);
    let mut x = inputs(&mut rng, len, 2, 1, hd, len, len, DType::F32);
    // q·k·scale = 64 · 1 · j/16 / 8 = j/2, exact in f16 and f32.
    x.q.fill(1.0);
    for (j, row) in x.k.chunks_mut(hd).enumerate() {
        row.fill(j as f32 / 16.0);
    }
    let o = opts(hd, None, None, true);
    let want = x.reference(len, 0, &o);
    for backend in test_backends() {
        let (q, k, v) = x.tensors(&backend);
        for (on, got) in flash_runs(&backend, &q, &k, &v, len, 0, o) {
            assert_close(&format!("rising scores on {on}"), &got, &want, flash_tolerance(&backend, hd));
        }
    }
}

/// `sdpa_decode_for`: the attention output is `sdpa_decode`'s, and the next quantized GEMV of the input
/// it returns equals that GEMV of the output (on the GPU the pass that wrote the output also wrote it
/// quantized, the same blocks qgemv_x.wgsl makes, so the GEMV needs no launch to quantize it), for
/// every x layout, several tokens, split and unsplit steps, and head_dim 48 (no emission).
#[test]
fn decode_for_a_quantized_gemv_matches_the_plain_path() {
    use crate::ops::gemv::GemvEpilogue;
    use crate::ops::qmatmul::{gemv_q, gemv_q_input, tolerance};
    use crate::quant::QuantType;
    let mut rng = Rng::new(43);
    // (tokens, n_heads, n_kv, head_dim, kv_len): past UNSPLIT_MAX_KEYS the step is split.
    let cases = [(1, 4, 2, 64, 600), (2, 2, 1, 128, 300), (1, 8, 8, 32, 100), (3, 4, 1, 64, 40), (1, 16, 4, 48, 400)];
    for (tokens, nh, nkv, hd, kv_len) in cases {
        let inp = inputs(&mut rng, tokens, nh, nkv, hd, kv_len + 3, kv_len, DType::F32);
        let o = opts(hd, None, None, true);
        let cols = nh * hd;
        for ty in [QuantType::Q8_0, QuantType::Q4K, QuantType::Q6K].into_iter().filter(|t| cols % t.block_elems() == 0)
        {
            let w = QuantTensor::quantize(&Backend::Cpu, ty, &rng.vec(5 * cols, -1.0, 1.0), 5, cols).unwrap();
            for backend in test_backends() {
                let name = format!("{tokens}x{nh}/{nkv}x{hd}, {kv_len} keys, {ty} on {}", backend.name());
                let (q, k, v) = inp.tensors(&backend);
                let wd = w.to_backend(&backend).unwrap();
                let plain = sdpa_decode(&q, &k, &v, kv_len, o).unwrap().reshape(&[tokens, cols]).unwrap();
                let want = gemv_q(&wd, &plain, GemvEpilogue::default()).unwrap().to_f32_vec().unwrap();
                let input = sdpa_decode_for(&q, &k, &v, kv_len, o, &wd).unwrap();
                if let Backend::Gpu(ctx) = &backend {
                    // The merge pass emits, or with one split the subgroup kernel, where it runs.
                    let min_sg = if ctx.has_subgroups() { ctx.info().subgroup_min_size as usize } else { 0 };
                    let threads = ctx.limits().max_compute_invocations_per_workgroup as usize;
                    let plan = decode_plan(&inp.d, k.dtype(), kv_len, &o, min_sg, threads);
                    let by_kernel = matches!(plan.kernel, DecodeKernel::Subgroup { .. });
                    let emits = (plan.n_splits > 1 || by_kernel) && hd % 32 == 0;
                    assert_eq!(input.is_quantized_for(&wd), emits, "written quantized, {name} ({plan:?})");
                }
                let got = gemv_q_input(&wd, &input, GemvEpilogue::default()).unwrap().to_f32_vec().unwrap();
                let plain: Vec<f64> = plain.to_f32_vec().unwrap().iter().map(|&v| v as f64).collect();
                assert_close(&name, &input.tensor().to_f32_vec().unwrap(), &plain, TOL);
                // |x| <= 1 here (a weighted mean of V rows), for which tolerance() holds.
                let want: Vec<f64> = want.iter().map(|&v| v as f64).collect();
                assert_close(&format!("next GEMV, {name}"), &got, &want, tolerance(cols));
            }
        }
    }
}

#[test]
fn decode_reads_kv_len_from_the_device_and_replays() {
    let mut rng = Rng::new(9);
    let capacity = 3000;
    let x = inputs(&mut rng, 1, 8, 2, 64, capacity, capacity, DType::F16);
    let o = opts(64, None, None, true);
    for backend in test_backends() {
        let (q, k, v) = x.tensors(&backend);
        let len = Tensor::from_slice(&backend, &[1u32], &[1]).unwrap();
        let out = Tensor::zeros(&backend, &[1, 8, 64], DType::F32).unwrap();
        for subgroups in kernel_choices(&backend) {
            for kv_len in [1u32, 33, 257, 2999, 3000, 5000, 0] {
                match &backend {
                    Backend::Cpu => cpu::write_u32(&len, &[kv_len]),
                    Backend::Gpu(ctx) => ctx.write_buffer(gpu_buffer(&len), 0, bytemuck::bytes_of(&kv_len)).unwrap(),
                }
                decode_impl(&q, &k, &v, KvLen::Device(&len), o, &out, subgroups, None).unwrap();
                let n = (kv_len as usize).min(capacity);
                let want = if n == 0 { vec![0.0; 8 * 64] } else { x.reference(n, n as i64 - 1, &o) };
                let what = format!("device kv_len {kv_len} on {} (subgroups {subgroups})", backend.name());
                assert_close(&what, &out.to_f32_vec().unwrap(), &want, TOL);
            }
        }
    }
}

#[test]
fn fully_masked_rows_are_zeros_and_extremes_stay_finite() {
    let mut rng = Rng::new(10);
    // Queries at 20..23 with a window of 5 see keys (15, 23]: none of the 10 keys.
    let x = inputs(&mut rng, 4, 4, 2, 64, 10, 10, DType::F32);
    let o = opts(64, None, Some(5), true);
    // Huge logits: one key dominates each row; constant keys: every score ties.
    let mut big = inputs(&mut rng, 3, 4, 2, 64, 50, 50, DType::F32);
    big.q.iter_mut().for_each(|e| *e *= 500.0);
    let mut flat = inputs(&mut rng, 2, 4, 2, 64, 40, 40, DType::F32);
    let first = flat.k[..128].to_vec();
    flat.k.chunks_mut(128).for_each(|c| c.copy_from_slice(&first));
    let plain = opts(64, None, None, true);
    for backend in test_backends() {
        let (q, k, v) = x.tensors(&backend);
        for (on, got) in flash_runs(&backend, &q, &k, &v, 10, 20, o) {
            assert!(got.iter().all(|&e| e == 0.0), "fully masked flash rows on {on}: {got:?}");
        }
        for (name, c) in [("huge logits", &big), ("constant keys", &flat)] {
            let n = c.d.capacity;
            let (q, k, v) = c.tensors(&backend);
            let what = format!("{name} on {}", backend.name());
            let want = c.reference(n, (n - c.d.tokens) as i64, &plain);
            for (on, got) in flash_runs(&backend, &q, &k, &v, n, n - c.d.tokens, plain) {
                if flash_uses_coop(&backend, 64) && name == "huge logits" {
                    // Rounded to f16, logits of ~1000 carry errors of ~0.5, which move the softmax
                    // weights of near-ties (as in any f16 attention): the outputs must still be finite
                    // convex combinations of V's rows (values in [-1, 1]).
                    let bad = got.iter().position(|e| !e.is_finite() || e.abs() > 1.0 + 1e-3);
                    assert!(bad.is_none(), "flash {name} on {on}: {:?} at {bad:?}", bad.map(|i| got[i]));
                } else {
                    let tol = if flash_uses_coop(&backend, 64) {
                        FLASH_F16_TOLERANCE
                    } else {
                        Tolerance { atol: 1e-3, rtol: 1e-3 }
                    };
                    assert_close(&format!("flash {name} on {on}"), &got, &want, tol);
                }
            }
            for subgroups in kernel_choices(&backend) {
                let out = Tensor::uninit(&backend, "test", q.shape(), DType::F32).unwrap();
                decode_impl(&q, &k, &v, KvLen::Host(n), plain, &out, subgroups, None).unwrap();
                let what = format!("decode {what} (subgroups {subgroups})");
                assert_close(&what, &out.to_f32_vec().unwrap(), &want, Tolerance { atol: 1e-3, rtol: 1e-3 });
            }
        }
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    for backend in test_backends() {
        let t = |shape: &[usize], dtype: DType| Tensor::zeros(&backend, shape, dtype).unwrap();
        let q = t(&[1, 8, 64], DType::F32);
        let k = t(&[16, 2, 64], DType::F16);
        let o = AttentionOptions::new(64);
        let arg = |r: Result<Tensor>, name: &str| match r {
            Err(KernelError::Argument { name: n, .. }) if n == name => {}
            other => panic!("expected an Argument error for {name}, got {other:?}"),
        };
        let shape = |r: Result<Tensor>, needle: &str| match r {
            Err(e @ KernelError::Shape { .. }) => assert!(e.to_string().contains(needle), "{e}"),
            other => panic!("expected a Shape error naming {needle}, got {other:?}"),
        };
        shape(
            sdpa_decode(&t(&[1, 6, 64], DType::F32), &t(&[16, 4, 64], DType::F16), &t(&[16, 4, 64], DType::F16), 4, o),
            "n_heads 6 is not a multiple of n_kv_heads 4",
        );
        shape(sdpa_decode(&t(&[1, 8, 128], DType::F32), &k, &k, 4, o), "q has 128, k and v have 64");
        shape(flash_attention(&q, &k, &t(&[16, 2, 32], DType::F16), 4, 0, o), "must have the shape of k");
        arg(sdpa_decode(&q, &k, &k, 17, o), "kv_len");
        arg(sdpa_decode(&q, &k, &k, 0, o), "kv_len");
        arg(flash_attention(&q, &k, &k, 17, 0, o), "kv_len");
        arg(
            sdpa_decode(&t(&[1, 2, 6], DType::F32), &t(&[4, 2, 6], DType::F32), &t(&[4, 2, 6], DType::F32), 4, o),
            "head_dim",
        );
        arg(
            sdpa_decode(&t(&[1, 2, 260], DType::F32), &t(&[4, 2, 260], DType::F32), &t(&[4, 2, 260], DType::F32), 4, o),
            "head_dim",
        );
        arg(sdpa_decode(&t(&[5, 8, 64], DType::F32), &k, &k, 4, o), "tokens");
        arg(sdpa_decode(&q, &k, &k, 4, AttentionOptions { softcap: Some(0.0), ..o }), "softcap");
        arg(sdpa_decode(&q, &k, &k, 4, AttentionOptions { window: Some(0), ..o }), "window");
        arg(sdpa_decode(&q, &k, &k, 4, AttentionOptions { scale: f32::NAN, ..o }), "scale");
        assert!(matches!(sdpa_decode(&t(&[1, 8, 64], DType::F16), &k, &k, 4, o), Err(KernelError::DType { .. })));
        assert!(matches!(sdpa_decode(&q, &k, &t(&[16, 2, 64], DType::F32), 4, o), Err(KernelError::DType { .. })));
        assert!(matches!(
            sdpa_decode(&q, &t(&[16, 2, 64], DType::U32), &t(&[16, 2, 64], DType::U32), 4, o),
            Err(KernelError::DType { .. })
        ));
        assert!(matches!(
            sdpa_decode(&q, &t(&[0, 2, 64], DType::F16), &t(&[0, 2, 64], DType::F16), 4, o),
            Err(KernelError::Empty { .. })
        ));
        shape(sdpa_decode(&t(&[8, 64], DType::F32), &k, &k, 4, o), "q must be");
        let bad_len = t(&[1], DType::F32);
        assert!(matches!(sdpa_decode_device_len(&q, &k, &k, &bad_len, o), Err(KernelError::DType { .. })));
        let out = t(&[1, 8, 32], DType::F32);
        assert!(matches!(sdpa_decode_into(&q, &k, &k, 4, o, &out), Err(KernelError::Shape { .. })));
    }
}

#[test]
fn a_forced_decode_shape_is_applied_or_refused_by_name() {
    let d = Dims { tokens: 1, n_heads: 32, n_kv_heads: 8, head_dim: 128, capacity: 32768 };
    let o = AttentionOptions::new(128);
    let auto = decode_plan(&d, DType::F16, 32768, &o, 32, 1024);
    let tune = |v: &str| DecodeTune::parse(v).unwrap().apply(auto, &d, 32, 1024);
    assert_eq!(tune("0,0,0,0").unwrap(), auto);
    let p = tune("8,256,1,48").unwrap();
    assert_eq!(p.kernel, DecodeKernel::Subgroup { lanes: 8, threads: 256 });
    assert_eq!((p.rows_per_block, p.row_blocks, p.n_splits), (1, 4, 48));
    assert_eq!(tune("16,0,2,0").unwrap().row_blocks, 2);
    for (v, field) in [
        ("8,0,4,0", "ROWS"),
        ("0,0,3,0", "ROWS"),
        ("64,0,0,0", "LANES"),
        ("0,96,0,0", "THREADS"),
        ("0,0,0,5000", "SPLITS"),
    ] {
        let e = tune(v).unwrap_err().to_string();
        assert!(e.contains(DECODE_TUNE_VAR) && e.contains(v) && e.contains(field), "{v}: {e}");
    }
    for v in ["", "1,2,3", "a,b,c,d", "1,2,3,4,5", "-1,0,0,0"] {
        assert_eq!(DecodeTune::parse(v), None, "{v:?}");
    }
    let wg = decode_plan(&d, DType::F16, 32768, &o, 0, 1024);
    assert!(DecodeTune::parse("0,0,0,8").unwrap().apply(wg, &d, 0, 1024).is_err());
}

#[test]
fn decode_plan_fills_the_device_and_fits_its_kernel() {
    let d = Dims { tokens: 1, n_heads: 32, n_kv_heads: 8, head_dim: 128, capacity: 32768 };
    let o = AttentionOptions::new(128);
    let plan = |d: &Dims, keys, o: &AttentionOptions, sg| decode_plan(d, DType::F16, keys, o, sg, 1024);
    let p = plan(&d, 32768, &o, 32);
    let sg = DecodeKernel::Subgroup { lanes: 8, threads: 128 };
    assert_eq!(p, DecodePlan { kernel: sg, rows_per_block: 2, row_blocks: 2, n_splits: 16 });
    let gqa8 = Dims { n_heads: 64, ..d };
    assert_eq!(plan(&gqa8, 32768, &o, 32).row_blocks, 4);
    assert_eq!(plan(&d, 2048, &o, 32).n_splits, 16);
    assert_eq!(plan(&d, 512, &o, 32).n_splits, 8);
    // Short contexts in one launch of 256-thread workgroups (where the adapter allows), longer ones split.
    let short = plan(&d, 10, &o, 32);
    assert_eq!((short.n_splits, short.kernel), (1, DecodeKernel::Subgroup { lanes: 8, threads: 256 }));
    assert_eq!(plan(&d, UNSPLIT_MAX_KEYS, &o, 32).n_splits, 1);
    assert!(plan(&d, UNSPLIT_MAX_KEYS + 1, &o, 32).n_splits > 1);
    assert_eq!(decode_plan(&d, DType::F16, 10, &o, 32, 128).kernel, DecodeKernel::Subgroup { lanes: 8, threads: 128 });
    let windowed = AttentionOptions { window: Some(1024), ..o };
    assert_eq!(plan(&d, 32768, &windowed, 32).n_splits, 16);
    // An f32 cache: 16 lanes a row (8 elements each) and 16 lane groups, where the subgroups allow.
    let f32_plan = decode_plan(&d, DType::F32, 32768, &o, 32, 1024);
    assert_eq!(f32_plan.kernel, DecodeKernel::Subgroup { lanes: 16, threads: 256 });
    assert_eq!(decode_plan(&d, DType::F32, 32768, &o, 8, 1024).kernel, sg);
    let wg = plan(&d, 32768, &o, 0);
    assert_eq!(wg.kernel, DecodeKernel::Workgroup { tile_keys: 16 });
    // Head dim 256: 16-lane subgroups leave one state per 16 threads, 64 slices each: 256 threads fill
    // the 1024 slices; 8-lane subgroups are too narrow for the subgroup kernel.
    let hd256 = Dims { head_dim: 256, ..d };
    assert_eq!(plan(&hd256, 10, &o, 16).kernel, DecodeKernel::Subgroup { lanes: 16, threads: 256 });
    assert_eq!(plan(&hd256, 10, &o, 8).kernel, DecodeKernel::Workgroup { tile_keys: 8 });
    for hd in (4..=256).step_by(4) {
        for (tokens, group) in [(1, 1), (1, 8), (3, 4), (8, 8)] {
            let d = Dims { tokens, n_heads: 2 * group, n_kv_heads: 2, head_dim: hd, capacity: 1 };
            for (dtype, min_subgroup) in
                [DType::F32, DType::F16].into_iter().flat_map(|t| [0, 8, 16, 32, 64].map(|m| (t, m)))
            {
                for keys in [10, 100_000] {
                    let p = decode_plan(&d, dtype, keys, &o, min_subgroup, 1024);
                    assert!(p.n_splits >= 1 && p.n_splits <= MAX_SPLITS);
                    match p.kernel {
                        DecodeKernel::Subgroup { lanes, threads } => {
                            assert!(lanes <= min_subgroup && hd <= 16 * lanes, "lanes {lanes} for hd {hd}");
                            assert!(p.rows_per_block <= SUBGROUP_MAX_ROWS);
                            let states = threads / lanes.max(min_subgroup);
                            assert!(threads % min_subgroup == 0 && states <= 128 && states * hd / 4 <= 1024);
                        }
                        DecodeKernel::Workgroup { tile_keys } => {
                            let stride = (hd / 4) | 1;
                            assert!(tile_keys * stride <= 576, "K tile of hd {hd}");
                            assert!(p.rows_per_block * hd / 4 <= 512 && p.rows_per_block * tile_keys <= 1024);
                            assert!(tile_keys * hd / 4 <= 4 * 128, "prefetch registers of hd {hd}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_nan_in_a_query_or_a_visible_key_makes_those_outputs_nan() {
    // 3000 keys: the decode is split, and its partials merged by sdpa_decode_reduce. 16 threads: the CPU
    // cuts the keys into parts as on a 16-core machine (key_parts), whose states are merged too.
    let pool = rayon::ThreadPoolBuilder::new().num_threads(16).build().unwrap();
    for kv_len in [30, 3000] {
        for softcap in [None, Some(20.0)] {
            pool.install(|| nan_case(kv_len, softcap));
        }
    }
}

fn nan_case(kv_len: usize, softcap: Option<f32>) {
    let mut rng = Rng::new(12);
    let (tokens, nh, nkv, hd) = (2, 4, 2, 64);
    let mut x = inputs(&mut rng, tokens, nh, nkv, hd, kv_len + 2, kv_len, DType::F32);
    // Query head 0 of token 0; key 7 of KV head 1 (query heads 2 and 3 of both tokens see it).
    x.q[5] = f32::NAN;
    x.k[(7 * nkv + 1) * hd + 3] = f32::NAN;
    let o = opts(hd, softcap, None, true);
    let pos0 = kv_len - tokens;
    let nan_row = |t: usize, h: usize| (t == 0 && h == 0) || h >= 2;
    for backend in test_backends() {
        let (q, k, v) = x.tensors(&backend);
        let mut runs: Vec<(String, Vec<f32>)> = flash_runs(&backend, &q, &k, &v, kv_len, pos0, o)
            .into_iter()
            .map(|(on, got)| (format!("flash on {on}"), got))
            .collect();
        for subgroups in kernel_choices(&backend) {
            let out = Tensor::uninit(&backend, "test", q.shape(), DType::F32).unwrap();
            decode_impl(&q, &k, &v, KvLen::Host(kv_len), o, &out, subgroups, None).unwrap();
            runs.push((format!("decode (subgroups {subgroups}) on {}", backend.name()), out.to_f32_vec().unwrap()));
        }
        for (name, got) in runs {
            for (i, row) in got.chunks(hd).enumerate() {
                let (t, h) = (i / nh, i % nh);
                let what = format!("{name} kv_len {kv_len} {softcap:?} token {t} head {h}");
                if nan_row(t, h) {
                    assert!(row.iter().all(|e| e.is_nan()), "{what}: {:?}", &row[..4]);
                } else {
                    assert!(row.iter().all(|e| e.is_finite()), "{what}: {:?}", &row[..4]);
                }
            }
        }
    }
}
