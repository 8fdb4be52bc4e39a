use super::*;
use crate::testing::{RAGGED, Rng, Tolerance, assert_close, round_to, test_backends};

// ---- embedding ----

fn reference_embedding(table: &[f32], dim: usize, ids: &[u32], scale: f32) -> Vec<f64> {
    ids.iter()
        .flat_map(|&id| table[id as usize * dim..(id as usize + 1) * dim].iter().map(move |&v| v as f64 * scale as f64))
        .collect()
}

#[test]
fn embedding_matches_the_reference_for_every_dtype_pair_and_dim() {
    let mut rng = Rng::new(41);
    let vocab = 37;
    for backend in test_backends() {
        for dim in [1usize, 3, 8, 31, 33, 64, 257, 1032] {
            for n in [1usize, 3, 17] {
                let ids: Vec<u32> = (0..n).map(|_| rng.below(vocab as u32)).collect();
                let table = rng.vec(vocab * dim, -2.0, 2.0);
                for tdt in DType::FLOATS {
                    let table = round_to(&table, tdt);
                    let tt = Tensor::from_f32(&backend, &table, &[vocab, dim], tdt).unwrap();
                    let tc = tt.to_backend(&Backend::Cpu).unwrap();
                    let it = Tensor::from_slice(&backend, &ids, &[n]).unwrap();
                    let ic = it.to_backend(&Backend::Cpu).unwrap();
                    for odt in DType::FLOATS {
                        for scale in [1.0f32, (dim as f32).sqrt(), -0.5] {
                            let what = format!("{tdt}->{odt} dim={dim} n={n} scale={scale} on {}", backend.name());
                            let out = embedding_scaled(&tt, &it, scale, odt).unwrap();
                            assert_eq!(out.shape(), &[n, dim]);
                            assert_eq!(out.dtype(), odt);
                            let want = reference_embedding(&table, dim, &ids, scale);
                            let tol = if scale == 1.0 && odt == tdt {
                                Tolerance { atol: 0.0, rtol: 0.0 }
                            } else {
                                Tolerance::for_dtype(odt)
                            };
                            assert_close(&what, &out.to_f32_vec().unwrap(), &want, tol);
                            if backend.is_gpu() {
                                let cpu = embedding_scaled(&tc, &ic, scale, odt).unwrap();
                                assert_eq!(out.to_bytes().unwrap(), cpu.to_bytes().unwrap(), "{what}: vs CPU");
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn embedding_takes_batched_ids_and_preallocated_outputs() {
    for backend in test_backends() {
        let (vocab, dim) = (5, 6);
        let table: Vec<f32> = (0..vocab * dim).map(|v| v as f32).collect();
        let tt = Tensor::from_slice(&backend, &table, &[vocab, dim]).unwrap();
        let ids = Tensor::from_slice(&backend, &[4u32, 0, 4, 2, 1, 3], &[2, 3]).unwrap();
        let out = Tensor::zeros(&backend, &[2, 3, dim], DType::BF16).unwrap();
        embedding_into(&tt, &ids, &out).unwrap();
        let want = reference_embedding(&table, dim, &[4, 0, 4, 2, 1, 3], 1.0);
        assert_close("batched", &out.to_f32_vec().unwrap(), &want, Tolerance::for_dtype(DType::BF16));
        let plain = embedding(&tt, &ids).unwrap();
        assert_eq!(plain.shape(), &[2, 3, dim]);
        assert_eq!(plain.dtype(), DType::F32);
    }
}

#[test]
fn embedding_ids_out_of_range_are_an_error_on_the_cpu_and_zeros_on_the_gpu() {
    for backend in test_backends() {
        for dim in [8usize, 5] {
            let vocab = 4;
            let table: Vec<f32> = (0..vocab * dim).map(|v| v as f32 + 1.0).collect();
            let tt = Tensor::from_slice(&backend, &table, &[vocab, dim]).unwrap();
            let ids = Tensor::from_slice(&backend, &[1u32, 4, 3, u32::MAX], &[4]).unwrap();
            let r = embedding(&tt, &ids);
            if backend.is_gpu() {
                let got = r.unwrap().to_f32_vec().unwrap();
                let mut want = reference_embedding(&table, dim, &[1, 0, 3, 0], 1.0);
                want[dim..2 * dim].fill(0.0);
                want[3 * dim..].fill(0.0);
                assert_close(&format!("zeros dim={dim}"), &got, &want, Tolerance { atol: 0.0, rtol: 0.0 });
            } else {
                assert!(matches!(r, Err(KernelError::Argument { op: "embedding", name: "ids", .. })), "{r:?}");
            }
        }
    }
}

#[test]
fn embedding_bad_input_is_a_typed_error() {
    for backend in test_backends() {
        let f = |shape: &[usize], dtype| Tensor::zeros(&backend, shape, dtype).unwrap();
        let table = f(&[10, 4], DType::F32);
        let ids = f(&[3], DType::U32);
        let e = |r: Result<Tensor>| r.map(|_| ());
        assert!(matches!(e(embedding(&table, &f(&[3], DType::F32))), Err(KernelError::DType { .. })));
        assert!(matches!(e(embedding(&table, &f(&[3], DType::I32))), Err(KernelError::DType { .. })));
        assert!(matches!(e(embedding(&f(&[40], DType::F32), &ids)), Err(KernelError::Shape { .. })));
        assert!(matches!(e(embedding(&f(&[2, 5, 4], DType::F32), &ids)), Err(KernelError::Shape { .. })));
        assert!(matches!(e(embedding(&f(&[10, 4], DType::U32), &ids)), Err(KernelError::DType { .. })));
        assert!(matches!(e(embedding(&table, &f(&[0], DType::U32))), Err(KernelError::Empty { .. })));
        assert!(matches!(e(embedding(&table, &f(&[1, 2, 3], DType::U32))), Err(KernelError::Shape { .. })));
        assert!(matches!(e(embedding(&f(&[0, 4], DType::F32), &ids)), Err(KernelError::Empty { .. })));
        assert!(matches!(
            e(embedding_scaled(&table, &ids, f32::NAN, DType::F32)),
            Err(KernelError::Argument { name: "scale", .. })
        ));
        assert!(matches!(e(embedding_scaled(&table, &ids, 1.0, DType::U32)), Err(KernelError::DType { .. })));
        assert!(matches!(embedding_into(&table, &ids, &f(&[3, 5], DType::F32)), Err(KernelError::Shape { .. })));
        assert!(matches!(embedding_into(&table, &ids, &f(&[3, 4], DType::U32)), Err(KernelError::DType { .. })));
    }
}

// ---- argmax and top-k ----

/// Rows exercising ties, -inf, NaN, ±0, subnormals and constant rows.
fn edge_rows(n: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    let mut rows = Vec::new();
    // Few distinct values: many ties.
    rows.push((0..n).map(|_| rng.below(4) as f32).collect());
    // A planted maximum repeated.
    let mut r = rng.vec(n, -1.0, 1.0);
    for _ in 0..3 {
        r[rng.below(n as u32) as usize] = 5.0;
    }
    rows.push(r);
    // -inf mostly, a few finite.
    let mut r = vec![f32::NEG_INFINITY; n];
    r[n - 1] = -1e30;
    r[n / 2] = -1e30;
    rows.push(r);
    rows.push(vec![f32::NEG_INFINITY; n]);
    // Constant.
    rows.push(vec![0.25; n]);
    // NaN somewhere (twice), with +inf around.
    let mut r = rng.vec(n, -1.0, 1.0);
    r[0] = f32::INFINITY;
    r[n - 1] = f32::NAN;
    r[n / 3] = f32::NAN;
    rows.push(r);
    // NaN of both signs nearly everywhere: the threshold is a NaN, which only a NaN beats.
    rows.push(
        (0..n)
            .map(|i| {
                if i % 7 == 3 {
                    (i as f32).sin()
                } else if i % 2 == 0 {
                    f32::NAN
                } else {
                    -f32::NAN
                }
            })
            .collect(),
    );
    // ±0 and subnormals.
    rows.push((0..n).map(|i| [-0.0, 0.0, 1e-45, -1e-45, 2e-45][i % 5]).collect());
    // Sorted both ways (every element beats the running top-k when ascending).
    rows.push((0..n).map(|i| i as f32).collect());
    rows.push((0..n).map(|i| -(i as f32)).collect());
    rows
}

fn check_argmax(backend: &Backend, rows: &[Vec<f32>], dtype: DType, chunks: Option<usize>, what: &str) {
    let n = rows[0].len();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let x = Tensor::from_f32(backend, &flat, &[rows.len(), n], dtype).unwrap();
    let seen = x.to_f32_vec().unwrap(); // as rounded to dtype
    let out = Tensor::zeros(backend, &[rows.len()], DType::U32).unwrap();
    argmax_with(&x, &out, chunks).unwrap();
    let got = out.to_vec::<u32>().unwrap();
    for (r, row) in seen.chunks(n).enumerate() {
        let want = reference::argmax(row);
        assert_eq!(got[r] as usize, want, "{what} row {r} ({dtype}, n={n}, chunks {chunks:?})");
    }
}

#[test]
fn argmax_finds_the_first_maximum_on_ragged_rows() {
    let mut rng = Rng::new(51);
    for backend in test_backends() {
        for dtype in DType::FLOATS {
            for &n in RAGGED {
                let mut rows = edge_rows(n, &mut rng);
                rows.push(rng.vec(n, -100.0, 100.0));
                let what = format!("argmax on {}", backend.name());
                check_argmax(&backend, &rows, dtype, None, &what);
                if backend.is_gpu() && n > 1 {
                    // Both GPU paths on the same rows: one workgroup per row, and many per row.
                    check_argmax(&backend, &rows, dtype, Some(1), &what);
                    check_argmax(&backend, &rows, dtype, Some(n.min(7)), &what);
                }
            }
        }
    }
}

#[test]
fn argmax_of_a_single_long_row() {
    let mut rng = Rng::new(52);
    for backend in test_backends() {
        let n = 200_000;
        for dtype in [DType::F32, DType::BF16] {
            let mut row = rng.vec(n, -30.0, 30.0);
            let what = format!("argmax long row on {}", backend.name());
            check_argmax(&backend, std::slice::from_ref(&row), dtype, None, &what);
            row[n - 1] = 100.0;
            check_argmax(&backend, std::slice::from_ref(&row), dtype, None, &what);
            row[123_457] = 100.0;
            check_argmax(&backend, std::slice::from_ref(&row), dtype, None, &what);
            if backend.is_gpu() {
                check_argmax(&backend, std::slice::from_ref(&row), dtype, Some(1), &what);
            }
            let x = Tensor::from_f32(&backend, &row, &[n], dtype).unwrap();
            assert_eq!(argmax(&x).unwrap().to_vec::<u32>().unwrap(), [123_457]);
        }
    }
}

fn check_topk(backend: &Backend, rows: &[Vec<f32>], dtype: DType, k: usize, chunks: Option<usize>, what: &str) {
    let n = rows[0].len();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let x = Tensor::from_f32(backend, &flat, &[rows.len(), n], dtype).unwrap();
    let seen = x.to_f32_vec().unwrap();
    let values = Tensor::zeros(backend, &[rows.len(), k], DType::F32).unwrap();
    let indices = Tensor::zeros(backend, &[rows.len(), k], DType::U32).unwrap();
    topk_with(&x, k, &values, &indices, chunks).unwrap();
    let (vals, idx) = (values.to_vec::<f32>().unwrap(), indices.to_vec::<u32>().unwrap());
    for (r, row) in seen.chunks(n).enumerate() {
        let want = reference::topk(row, k);
        let got: Vec<usize> = idx[r * k..(r + 1) * k].iter().map(|&i| i as usize).collect();
        assert_eq!(got, want, "{what} row {r} ({dtype}, n={n}, k={k}, chunks {chunks:?}): indices");
        for (j, &i) in want.iter().enumerate() {
            let (g, w) = (vals[r * k + j], row[i]);
            assert!(
                g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()),
                "{what} row {r} ({dtype}, n={n}, k={k}): value {j} is {g}, want {w}"
            );
        }
    }
}

#[test]
fn topk_matches_the_reference_on_ragged_rows() {
    let mut rng = Rng::new(53);
    for backend in test_backends() {
        for dtype in DType::FLOATS {
            for &n in RAGGED {
                let mut rows = edge_rows(n, &mut rng);
                rows.push(rng.vec(n, -100.0, 100.0));
                for k in [1usize, 5, 64] {
                    if k > n {
                        continue;
                    }
                    let what = format!("topk on {}", backend.name());
                    check_topk(&backend, &rows, dtype, k, None, &what);
                    if backend.is_gpu() && n >= 2 * k {
                        check_topk(&backend, &rows, dtype, k, Some(1), &what);
                        check_topk(&backend, &rows, dtype, k, Some(n.min(5)), &what);
                    }
                }
                // k = n: the whole row, sorted.
                if n <= TOPK_MAX {
                    check_topk(&backend, &rows, dtype, n, None, &format!("topk k=n on {}", backend.name()));
                }
            }
        }
    }
}

#[test]
fn topk_of_a_single_long_row() {
    let mut rng = Rng::new(54);
    for backend in test_backends() {
        let n = 200_000;
        let what = format!("topk long row on {}", backend.name());
        let row = rng.vec(n, -30.0, 30.0);
        for k in [1usize, 64] {
            check_topk(&backend, std::slice::from_ref(&row), DType::F32, k, None, &what);
        }
        let ascending: Vec<f32> = (0..n).map(|i| (i / 3) as f32).collect();
        check_topk(&backend, std::slice::from_ref(&ascending), DType::BF16, 64, None, &what);
        if backend.is_gpu() {
            check_topk(&backend, std::slice::from_ref(&row), DType::F32, 64, Some(1), &what);
            // Many chunks of rising values: every merge tile is full of candidates.
            let rising: Vec<f32> = (0..n).map(|i| (i / 3) as f32).collect();
            check_topk(&backend, std::slice::from_ref(&rising), DType::F32, 64, Some(800), &what);
            // Rising values with the top 64 planted at random places: until the last of them is merged
            // every element beats the threshold, the buffer overflows round after round, and the planted
            // ones sit in tiles whose scan a full buffer cut short.
            let mut planted = rising.clone();
            for j in 0..64 {
                planted[rng.below(n as u32) as usize] = 1e6 + j as f32;
            }
            for chunks in [None, Some(1), Some(3)] {
                check_topk(&backend, std::slice::from_ref(&planted), DType::F32, 64, chunks, &what);
            }
            // An odd k: each chunk's pairs padded to whole vec4s for the merge pass.
            check_topk(&backend, std::slice::from_ref(&rising), DType::F32, 63, Some(800), &what);
            check_topk(&backend, std::slice::from_ref(&row), DType::F16, 9, Some(37), &what);
            // Many tiles of 16-bit values through the float pre-test, no chunks.
            for dtype in [DType::F16, DType::BF16] {
                check_topk(&backend, std::slice::from_ref(&row), dtype, 64, None, &what);
            }
            check_topk(&backend, std::slice::from_ref(&rising), DType::F32, 64, Some(1), &what);
        }
    }
}

/// The best values all in one GPU thread's slots: thread 0 of a workgroup of 256 reads every vec4 at a
/// multiple of 256 vec4s from its span's start, every 2048th element in any dtype. Its first tile offers
/// one element a pair of threads, and the rest of what it holds must stay pending through the rounds.
#[test]
fn topk_when_one_thread_reads_many_of_the_best() {
    let mut rng = Rng::new(56);
    for backend in test_backends() {
        let n = 40_000;
        let what = format!("topk planted in one thread's slots on {}", backend.name());
        let mut rows = Vec::new();
        for planted in [1usize, 8, 19] {
            let mut r = rng.vec(n, -1.0, 1.0);
            for j in 0..planted {
                r[2048 * j] = 10.0 + j as f32;
            }
            rows.push(r);
        }
        // The same value repeating every 2048: ties, broken by the index.
        rows.push((0..n).map(|i| if i % 2048 == 0 { 3.0 } else { (i as f32).sin() }).collect());
        for dtype in DType::FLOATS {
            for k in [5usize, 20, 64] {
                check_topk(&backend, &rows, dtype, k, None, &what);
                if backend.is_gpu() {
                    check_topk(&backend, &rows, dtype, k, Some(1), &what);
                }
            }
        }
    }
}

#[test]
fn topk_1_agrees_with_argmax() {
    let mut rng = Rng::new(55);
    for backend in test_backends() {
        let (rows, n) = (9, 1000);
        let mut v: Vec<f32> = (0..rows * n).map(|_| rng.below(50) as f32).collect();
        v[3 * n + 7] = f32::NAN;
        let x = Tensor::from_slice(&backend, &v, &[rows, n]).unwrap();
        let (_, idx) = topk(&x, 1).unwrap();
        assert_eq!(idx.to_vec::<u32>().unwrap(), argmax(&x).unwrap().to_vec::<u32>().unwrap());
    }
}

#[test]
fn repeat_penalty_scales_the_named_logits_on_every_backend() {
    let x0 = [2.0f32, -3.0, 0.0, 5.5, -0.25, 1.0];
    // Ids 4, 0, 1, 2: positive logits times 1 / penalty, others times the penalty, each rounded once.
    let want = [2.0 * (1.0 / 1.3f32), -3.0 * 1.3, 0.0, 5.5, -0.25 * 1.3, 1.0];
    for backend in test_backends() {
        let x = Tensor::from_slice(&backend, &x0, &[1, 6]).unwrap();
        let ids = Tensor::from_slice(&backend, &[4u32, 0, 1, 2], &[4]).unwrap();
        repeat_penalty(&x, &ids, 1.3).unwrap();
        let got = x.to_vec::<f32>().unwrap();
        assert_eq!(got, want, "on {}", backend.name());
        // An id listed twice counts once (the device's ring of recent tokens repeats them).
        let twice = Tensor::from_slice(&backend, &x0, &[1, 6]).unwrap();
        let ids = Tensor::from_slice(&backend, &[4u32, 0, 4, 1, 2, 0, 0], &[7]).unwrap();
        repeat_penalty(&twice, &ids, 1.3).unwrap();
        assert_eq!(twice.to_vec::<f32>().unwrap(), want, "repeated ids on {}", backend.name());
        let none = Tensor::from_slice(&backend, &[0u32; 0], &[0]).unwrap();
        repeat_penalty(&x, &none, 1.3).unwrap();
        assert_eq!(x.to_vec::<f32>().unwrap(), got, "no ids, no change on {}", backend.name());
        let past = Tensor::from_slice(&backend, &[6u32], &[1]).unwrap();
        let r = repeat_penalty(&x, &past, 1.3);
        match backend {
            Backend::Cpu => assert!(matches!(r, Err(KernelError::Argument { name: "ids", .. })), "{r:?}"),
            Backend::Gpu(_) => assert_eq!(x.to_vec::<f32>().unwrap(), got, "an id past the row is skipped"),
        }
        let two_rows = Tensor::from_slice(&backend, &[1.0f32; 4], &[2, 2]).unwrap();
        assert!(matches!(repeat_penalty(&two_rows, &past, 1.3), Err(KernelError::Shape { .. })));
        assert!(matches!(repeat_penalty(&x, &past, 0.0), Err(KernelError::Argument { name: "penalty", .. })));
    }
}

#[test]
fn rows_of_length_one() {
    for backend in test_backends() {
        let x = Tensor::from_slice(&backend, &[3.0f32, f32::NAN, f32::NEG_INFINITY], &[3, 1]).unwrap();
        assert_eq!(argmax(&x).unwrap().to_vec::<u32>().unwrap(), [0, 0, 0]);
        let (v, i) = topk(&x, 1).unwrap();
        assert_eq!(i.to_vec::<u32>().unwrap(), [0, 0, 0]);
        let v = v.to_vec::<f32>().unwrap();
        assert_eq!(v[0], 3.0);
        assert!(v[1].is_nan());
        assert_eq!(v[2], f32::NEG_INFINITY);
    }
}

#[test]
fn split_fills_the_device_and_covers_every_row() {
    assert_eq!(split(1, 128_256, ARGMAX_MIN_CHUNK).chunks, 63);
    assert_eq!(split(1, 100, ARGMAX_MIN_CHUNK), Split { chunks: 1, chunk_len: 100 });
    assert_eq!(split(4096, 128_256, ARGMAX_MIN_CHUNK).chunks, 1);
    // The bench's 256 MiB case: a workgroup a row already fills the device.
    assert_eq!(split(523, 128_256, ARGMAX_MIN_CHUNK).chunks, 1);
    assert_eq!(split(64, 128_256, TOPK_MIN_CHUNK).chunks, 8);
    for n in [1usize, 2, 3, 4095, 4096, 4097, 200_000] {
        for rows in [1usize, 3, 1000] {
            for min in [ARGMAX_MIN_CHUNK, TOPK_MIN_CHUNK] {
                let s = split(rows, n, min);
                assert!(s.chunks * s.chunk_len >= n && (s.chunks - 1) * s.chunk_len < n, "{s:?} n={n}");
            }
        }
        for c in [1usize, 5, 7, 1000] {
            let s = forced_split(n, c);
            assert!(s.chunks * s.chunk_len >= n && (s.chunks - 1) * s.chunk_len < n, "{s:?} n={n}");
        }
    }
}

#[test]
fn order_key_is_the_order_of_the_values() {
    let v = [f32::NEG_INFINITY, -1e30, -1.0, -1e-45, 0.0, 1e-45, 1.0, 1e30, f32::INFINITY, f32::NAN];
    for w in v.windows(2) {
        assert!(order_key(w[0]) < order_key(w[1]), "{} < {}", w[0], w[1]);
    }
    assert_eq!(order_key(-0.0), order_key(0.0));
    assert_eq!(order_key(-f32::NAN), order_key(f32::NAN));
    assert!(v.iter().all(|&x| order_key(x) != 0));
}

#[test]
fn argmax_and_topk_bad_input_is_a_typed_error() {
    for backend in test_backends() {
        let f = |shape: &[usize], dtype| Tensor::zeros(&backend, shape, dtype).unwrap();
        let x = f(&[3, 10], DType::F32);
        let e = |r: Result<(Tensor, Tensor)>| r.map(|_| ());
        for (k, why) in [(0usize, "k = 0"), (65, "k > 64"), (11, "k > n")] {
            assert!(matches!(e(topk(&x, k)), Err(KernelError::Argument { op: "topk", name: "k", .. })), "{why}");
        }
        assert!(matches!(e(topk(&f(&[100], DType::F32), 65)), Err(KernelError::Argument { name: "k", .. })));
        assert!(matches!(e(topk(&f(&[3, 10], DType::U32), 1)), Err(KernelError::DType { .. })));
        assert!(matches!(e(topk(&f(&[2, 3, 10], DType::F32), 1)), Err(KernelError::Shape { .. })));
        assert!(matches!(e(topk(&f(&[3, 0], DType::F32), 1)), Err(KernelError::Empty { .. })));
        let (v, i) = (f(&[3, 2], DType::F32), f(&[3, 2], DType::U32));
        assert!(matches!(topk_into(&x, 2, &i, &i), Err(KernelError::DType { .. })));
        assert!(matches!(topk_into(&x, 2, &v, &v), Err(KernelError::DType { .. })));
        assert!(matches!(topk_into(&x, 3, &v, &i), Err(KernelError::Shape { .. })));

        assert!(matches!(argmax(&f(&[3, 10], DType::I32)), Err(KernelError::DType { op: "argmax", .. })));
        assert!(matches!(argmax(&f(&[2, 3, 10], DType::F32)), Err(KernelError::Shape { .. })));
        assert!(matches!(argmax(&f(&[0], DType::F32)), Err(KernelError::Empty { .. })));
        assert!(matches!(argmax_into(&x, &f(&[3], DType::F32)), Err(KernelError::DType { .. })));
        assert!(matches!(argmax_into(&x, &f(&[4], DType::U32)), Err(KernelError::Shape { .. })));
    }
}
