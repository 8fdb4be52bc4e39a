//! The block formats against llama.cpp's Python package (gguf-py): fixtures written by
//! scripts/make_quant_fixtures.py hold ggml blocks (random bytes, and gguf-py's own quantization of random
//! values) with gguf-py's dequantization. The Rust decoder must reproduce it bit for bit, the quantizers
//! byte for byte, and the CPU and GPU quantized GEMV must match the f64 product of the expected weights.

use std::path::PathBuf;

use torchless_kernels::ops::gemv::GemvEpilogue;
use torchless_kernels::ops::qmatmul::{QGemvKernel, gemm_q, gemv_q_into_with};
use torchless_kernels::quant::{dequantize, quantize};
use torchless_kernels::testing::{Rng, Tolerance, assert_close, test_backends};
use torchless_kernels::{Backend, DType, QuantTensor, QuantType, Tensor};

// The shape of every fixture (manifest.json says so; checked below).
const ROWS: usize = 4;
const COLS: usize = 512;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant")
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(dir().join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

fn read_f32(name: &str) -> Vec<f32> {
    read(name).chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// (fixture name, type) of every fixture: random blocks for every type, gguf-py quantizations for the
/// types it can quantize.
fn fixtures() -> Vec<(String, QuantType)> {
    let manifest = String::from_utf8(read("manifest.json")).unwrap();
    let mut v = Vec::new();
    for ty in QuantType::ALL {
        for kind in ["random", "rtn"] {
            let name = format!("{}.{kind}", ty.name());
            if manifest.contains(&format!("\"name\": \"{name}\"")) {
                v.push((name, ty));
            }
        }
    }
    let rtn = v.iter().filter(|(n, _)| n.ends_with(".rtn")).count();
    assert_eq!((v.len(), rtn), (13, 5), "fixtures listed in manifest.json: {v:?}");
    assert_eq!(manifest.matches(&format!("\"rows\": {ROWS}")).count(), 13);
    assert_eq!(manifest.matches(&format!("\"cols\": {COLS}")).count(), 13);
    v
}

#[test]
fn dequantize_matches_gguf_py_bit_for_bit() {
    for (name, ty) in fixtures() {
        let blocks = read(&format!("{name}.bin"));
        let want = read_f32(&format!("{name}.f32"));
        assert_eq!(want.len(), ROWS * COLS, "{name}");
        let mut got = vec![0f32; want.len()];
        dequantize(ty, &blocks, &mut got).unwrap();
        if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
            panic!("{name}: dequantized value {i} is {} but gguf-py gives {}", got[i], want[i]);
        }
        // The device layout decodes to the same values.
        let t = QuantTensor::from_ggml_bytes(&Backend::Cpu, ty, ROWS, COLS, &blocks).unwrap();
        assert_eq!(t.to_ggml_bytes().unwrap(), blocks, "{name}: repacking does not round-trip");
        let back = t.to_f32_vec().unwrap();
        assert!(back.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{name}: QuantTensor decode");
    }
}

#[test]
fn quantize_matches_gguf_py_byte_for_byte() {
    for (name, ty) in fixtures().into_iter().filter(|(n, _)| n.ends_with(".rtn")) {
        let input = read_f32(&format!("{name}.input.f32"));
        let want = read(&format!("{name}.bin"));
        let got = quantize(ty, &input).unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
            let b = i / ty.block_bytes();
            panic!(
                "{name}: byte {i} (block {b}, offset {}) is {:#04x} but gguf-py writes {:#04x}",
                i % ty.block_bytes(),
                got[i],
                want[i]
            );
        }
    }
}

#[test]
fn gemv_and_gemm_on_every_backend_match_the_f64_product_of_the_reference_weights() {
    let mut rng = Rng::new(77);
    for (name, ty) in fixtures() {
        let blocks = read(&format!("{name}.bin"));
        let wv = read_f32(&format!("{name}.f32"));
        let scale = wv.iter().fold(0f64, |m, v| m.max(v.abs() as f64)).max(1e-30);
        for b in [1, 3, 8] {
            let xv = rng.vec(b * COLS, -1.0, 1.0);
            let want: Vec<f64> = (0..b)
                .flat_map(|r| {
                    let (wv, xv) = (&wv, &xv);
                    (0..ROWS)
                        .map(move |o| (0..COLS).map(|i| wv[o * COLS + i] as f64 * xv[r * COLS + i] as f64).sum::<f64>())
                })
                .collect();
            // f32 sums of COLS terms of magnitude ≤ scale.
            let tol = Tolerance { atol: 4e-6 * scale * COLS as f64, rtol: 1e-5 };
            for backend in test_backends() {
                let w = QuantTensor::from_ggml_bytes(&backend, ty, ROWS, COLS, &blocks).unwrap();
                let x = Tensor::from_slice(&backend, &xv, &[b, COLS]).unwrap();
                let kernels: &[QGemvKernel] =
                    if backend.is_gpu() { &[QGemvKernel::Auto, QGemvKernel::Workgroup] } else { &[QGemvKernel::Auto] };
                for &kernel in kernels {
                    let out = Tensor::uninit(&backend, "test", &[b, ROWS], DType::F32).unwrap();
                    gemv_q_into_with(&w, &x, GemvEpilogue::default(), &out, kernel).unwrap();
                    let what = format!("gemv_q {name} b={b} on {} ({kernel:?})", backend.name());
                    assert_close(&what, &out.to_f32_vec().unwrap(), &want, tol);
                }
                let y = gemm_q(&x, &w).unwrap();
                let what = format!("gemm_q {name} m={b} on {}", backend.name());
                assert_close(&what, &y.to_f32_vec().unwrap(), &want, tol);
            }
        }
    }
}
