//! GGUF files against the Hugging Face fixtures they were converted from (scripts/make_gguf_fixture.py,
//! which applies llama.cpp's Q/K permutation): the same golden logits, on the CPU and on the GPU.

use std::path::PathBuf;

use serde_json::Value;
use torchless::model::weights::{RopePairs, Source, SourceKind};
use torchless::model::{LoadedModel, Logits};
use torchless_kernels::DType;
use torchless_kernels::testing::test_backends;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Golden {
    tokens: Vec<u32>,
    logits: Vec<f32>,
    greedy: Vec<u32>,
}

fn golden(name: &str) -> Golden {
    let path = fixtures().join(name).join("golden.json");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let ids = |v: &Value| v.as_array().unwrap().iter().map(|t| t.as_u64().unwrap() as u32).collect();
    Golden {
        tokens: ids(&j["tokens"]),
        greedy: ids(&j["greedy"]),
        logits: j["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32))
            .collect(),
    }
}

/// Loads `gguf/<file>` and compares its full-prompt logits with `<hf>`'s golden ones within `tol`, and,
/// when `greedy`, its 32-token greedy decode too.
fn check(file: &str, hf: &str, tol: f32, greedy: bool) {
    let g = golden(hf);
    let path = fixtures().join("gguf").join(file);
    for backend in test_backends() {
        let what = format!("{file} on {}", backend.name());
        let loaded =
            LoadedModel::load(path.to_str().unwrap(), &backend, false).unwrap_or_else(|e| panic!("{what}: {e}"));
        // An f32 KV cache (the default is f16): the exact path, held to transformers within `tol`.
        let mut model = loaded.model;
        model.set_kv_dtype(DType::F32).unwrap();
        let mut state = model.new_state(g.tokens.len() + g.greedy.len()).unwrap();
        let got = model.forward(&mut state, &g.tokens, 0, Logits::All).unwrap().to_f32_vec().unwrap();
        assert_eq!(got.len(), g.logits.len(), "{what}: logit count");
        let (err, at) = got
            .iter()
            .zip(&g.logits)
            .enumerate()
            .map(|(i, (a, b))| ((a - b).abs(), i))
            .fold((0.0f32, 0), |m, d| if d.0 > m.0 { d } else { m });
        assert!(got.iter().all(|v| v.is_finite()) && err <= tol, "{what}: max |error| {err:.3e} > {tol:.0e} at {at}");
        if greedy {
            let mut state = model.new_state(g.tokens.len() + g.greedy.len()).unwrap();
            let mut produced = Vec::new();
            let mut next = {
                let l = model.forward(&mut state, &g.tokens, 0, Logits::Last).unwrap();
                torchless_kernels::ops::select::argmax(&l).unwrap().to_vec::<u32>().unwrap()[0]
            };
            for i in 0..g.greedy.len() {
                produced.push(next);
                if i + 1 < g.greedy.len() {
                    let l = model.forward(&mut state, &[next], g.tokens.len() + i, Logits::Last).unwrap();
                    next = torchless_kernels::ops::select::argmax(&l).unwrap().to_vec::<u32>().unwrap()[0];
                }
            }
            assert_eq!(produced, g.greedy, "{what}: greedy decode");
        }
    }
}

#[test]
fn llama_f32_gguf_matches_hugging_face() {
    check("llama_f32.gguf", "llama", 1e-4, true);
}

#[test]
fn llama3_rope_freqs_tied_gguf_matches_hugging_face() {
    check("llama3_f32.gguf", "llama3", 1e-4, true);
}

#[test]
fn qwen2_bias_neox_gguf_matches_hugging_face() {
    check("qwen2_f32.gguf", "qwen2", 1e-4, true);
}

/// f16 weights: the rounding of the weights alone moves logits by about 1e-2.
#[test]
fn llama_f16_gguf_is_close() {
    check("llama_f16.gguf", "llama", 5e-2, false);
}

/// Gemma 2 as llama.cpp converts it: 1 added to every norm weight, the soft caps and sliding window as
/// metadata, no rope keys. A GGUF file cannot hold `query_pre_attn_scalar` (llama.cpp scales queries by
/// 1/sqrt(head_dim), Gemma 2 27B's n_embd / n_head aside) and the fixture's is 32, not its head_dim 16; so
/// the file is held to its Hugging Face directory with `query_pre_attn_scalar` = head_dim, both run by
/// torchless (whose Hugging Face Gemma 2 matches transformers' golden logits in parity.rs), over 16
/// tokens: past the sliding window of 4, soft caps active. Norms read as 1 + w again, or the directory's
/// own scalar, move the logits by 2.7 to 3.8.
#[test]
fn gemma2_gguf_matches_its_hugging_face_directory() {
    let g = golden("gemma2");
    let src = fixtures().join("gemma2");
    let dir = std::env::temp_dir().join(format!("torchless-gemma2-gguf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["query_pre_attn_scalar"] = config["head_dim"].clone();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let gguf = fixtures().join("gguf/gemma2_f32.gguf");
    let logits = |path: &std::path::Path, backend: &torchless_kernels::Backend| {
        let mut model = LoadedModel::load(path.to_str().unwrap(), backend, false).unwrap().model;
        model.set_kv_dtype(DType::F32).unwrap();
        let mut state = model.new_state(g.tokens.len()).unwrap();
        model.forward(&mut state, &g.tokens, 0, Logits::All).unwrap().to_f32_vec().unwrap()
    };
    for backend in test_backends() {
        let (want, got) = (logits(&dir, &backend), logits(&gguf, &backend));
        let err = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(
            got.iter().all(|v| v.is_finite()) && err <= 1e-4,
            "gemma2 GGUF on {}: max |error| {err:.3e}",
            backend.name()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Read as if its Q and K rows were in Hugging Face's order, a llama.cpp llama file's logits are far off:
/// the test above is sensitive to the order.
#[test]
fn misreading_the_permuted_rows_is_detected() {
    let g = golden("llama");
    let path = fixtures().join("gguf/llama_f32.gguf");
    let backend = torchless_kernels::Backend::Cpu;
    let file = torchless::model::open_gguf(&path).unwrap();
    let config = torchless::config::Config::from_gguf(&file).unwrap();
    assert!(config.qk_rows_paired);
    let kind = SourceKind::Gguf { file: &file, arch: config.arch, qk_rows_paired: false };
    let source = Source { kind, quantize: None, pairs: Some(RopePairs::of(&config)) };
    let model = torchless::model::llama::Llama::load(config, &source, &backend, false).unwrap();
    let model = torchless::model::Model::Llama(model);
    let mut state = model.new_state(g.tokens.len()).unwrap();
    let got = model.forward(&mut state, &g.tokens, 0, Logits::All).unwrap().to_f32_vec().unwrap();
    let err = got.iter().zip(&g.logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(err > 0.5, "permuted Q/K gave logits within {err} of the reference");
}

#[test]
fn bad_files_are_typed_errors() {
    let dir = std::env::temp_dir().join(format!("torchless-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = std::fs::read(fixtures().join("gguf/llama_f32.gguf")).unwrap();
    let backend = torchless_kernels::Backend::Cpu;
    let load = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        match LoadedModel::load(p.to_str().unwrap(), &backend, false) {
            Ok(_) => panic!("{name} loaded"),
            Err(e) => e.to_string(),
        }
    };
    let e = load("truncated.gguf", &good[..good.len() / 2]);
    assert!(e.contains("truncated.gguf") && e.contains("past the end"), "{e}");
    let e = load("header.gguf", &good[..100]);
    assert!(e.contains("truncated"), "{e}");
    let mut bad = good.clone();
    bad[..4].copy_from_slice(b"GGML");
    let e = load("magic.gguf", &bad);
    assert!(e.contains("magic"), "{e}");
    let e = load("missing.gguf", b"");
    assert!(e.contains("truncated"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Q8_0 weights (gguf-py's quantizer, bit-exact with llama.cpp's): within the quantization error of the
/// f32 golden logits (0.23 here: the fixture's weights are ten times the usual scale, logits reach ±7).
#[test]
fn llama_q8_0_gguf_is_close() {
    check("llama_q8_0.gguf", "llama", 0.4, false);
}

/// `--quantize q8_0` on the Hugging Face directory quantizes each row as llama.cpp does, and the Q/K
/// permutation only moves whole rows, so it gives the Q8_0 GGUF file's logits.
#[test]
fn quantize_on_load_matches_the_q8_0_gguf() {
    let g = golden("llama");
    let backend = torchless_kernels::Backend::Cpu;
    let logits = |path: PathBuf, q: Option<torchless_kernels::quant::QuantType>| {
        let m = LoadedModel::load_with(path.to_str().unwrap(), &backend, false, q).unwrap().model;
        let mut state = m.new_state(g.tokens.len()).unwrap();
        m.forward(&mut state, &g.tokens, 0, Logits::All).unwrap().to_f32_vec().unwrap()
    };
    let quantized = logits(fixtures().join("llama"), Some(torchless_kernels::quant::QuantType::Q8_0));
    let gguf = logits(fixtures().join("gguf/llama_q8_0.gguf"), None);
    let err = quantized.iter().zip(&gguf).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(err < 1e-4, "--quantize q8_0 vs the Q8_0 GGUF: {err}");
    let q8_err = quantized.iter().zip(&g.logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(q8_err > 1e-4 && q8_err < 0.4, "--quantize q8_0 vs f32: {q8_err}");
    // Q4_K on 64- and 96-wide rows falls back to Q5_0 (llama.cpp's rule) and still loads and runs.
    let q4k = logits(fixtures().join("llama"), Some(torchless_kernels::quant::QuantType::Q4K));
    let err = q4k.iter().zip(&g.logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    // Five bits instead of eight: about 8 times Q8_0's error (2.5 here, on logits of ±7).
    assert!(err > 2.0 * q8_err && err < 4.0, "--quantize q4_k (as q5_0) vs f32: {err}, q8_0: {q8_err}");
}

#[test]
fn qwen3_qk_norm_gguf_matches_hugging_face() {
    check("qwen3_f32.gguf", "qwen3", 1e-4, true);
}

#[test]
fn phi3_fused_partial_rotary_gguf_matches_hugging_face() {
    check("phi3_f32.gguf", "phi3", 1e-4, true);
}

/// Phi-3's fused attn_qkv and ffn_up split by rows in Q8_0 (whole blocks per row): the same logits as
/// quantizing the Hugging Face directory's split matrices on load.
#[test]
fn phi3_q8_0_fused_split_matches_quantize_on_load() {
    let g = golden("phi3");
    let backend = torchless_kernels::Backend::Cpu;
    let logits = |path: PathBuf, q: Option<torchless_kernels::quant::QuantType>| {
        let m = LoadedModel::load_with(path.to_str().unwrap(), &backend, false, q).unwrap().model;
        let mut state = m.new_state(g.tokens.len()).unwrap();
        m.forward(&mut state, &g.tokens, 0, Logits::All).unwrap().to_f32_vec().unwrap()
    };
    let gguf = logits(fixtures().join("gguf/phi3_q8_0.gguf"), None);
    let quantized = logits(fixtures().join("phi3"), Some(torchless_kernels::quant::QuantType::Q8_0));
    let err = quantized.iter().zip(&gguf).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(err < 1e-4, "phi3 Q8_0 GGUF vs --quantize q8_0: {err}");
    let err = gguf.iter().zip(&g.logits).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(err < 0.75, "phi3 Q8_0 GGUF vs f32 golden: {err}");
}
