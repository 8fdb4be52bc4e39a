//! The `torchless` binary: `logits --json` output, `generate` on the built-in model, and clear errors
//! (exit code 2, no panic) for bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn torchless(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_torchless")).args(args).output().expect("the binary runs")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../torchless/tests/fixtures").join(name)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails with exit code 2 and an error line containing every one of `needles`, never a panic.
fn assert_clean_error(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "error should mention {n:?}: {err}");
    }
}

#[test]
fn logits_json_is_one_row_per_position() {
    let dir = fixture("llama");
    let o = torchless(&["logits", "--model", dir.to_str().unwrap(), "--tokens", "5,6,7", "--backend", "cpu", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    let obj = v.as_object().expect("an object");
    assert_eq!(obj.keys().collect::<Vec<_>>(), ["logits"]);
    let rows = v["logits"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.as_array().unwrap().len() == 256 && r[0].is_f64()));
}

#[test]
fn generate_prints_text_and_a_stats_line() {
    let o = torchless(&["generate", "--backend", "cpu", "--temperature", "0", "--max-tokens", "8"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("Once upon a time") && out.len() > "Once upon a time".len(), "{out}");
    let err = stderr(&o);
    assert!(err.contains("prompt") && err.contains("tok/s") && err.contains("load"), "{err}");
    // With no token to generate the prompt is not run, and the stats line says so.
    let o = torchless(&["generate", "--backend", "cpu", "--max-tokens", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("prompt 5 tokens, not run | generated 0 tokens"), "{}", stderr(&o));
}

/// A reader that stops early (`torchless logits ... | head -c 16`) ends the command quietly with success,
/// as with Unix tools, not with a panic. 40 positions of 256 logits make ~200 KB of JSON, more than a
/// pipe holds, so the writes after the reader has gone fail.
#[test]
fn a_closed_stdout_ends_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    let dir = fixture("llama");
    let tokens: Vec<String> = (5..45).map(|t| t.to_string()).collect();
    let tokens = tokens.join(",");
    let args = ["logits", "--model", dir.to_str().unwrap(), "--tokens", &tokens, "--backend", "cpu", "--json"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_torchless"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut first = [0u8; 16];
    child.stdout.take().expect("piped").read_exact(&mut first).expect("some output");
    // The read end is dropped here.
    let o = child.wait_with_output().expect("it ends");
    assert!(o.status.success(), "{:?}, stderr: {}", o.status, stderr(&o));
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
}

#[test]
fn bad_input_is_a_clear_error() {
    let llama = fixture("llama");
    let llama = llama.to_str().unwrap();
    // A missing model.
    assert_clean_error(&torchless(&["generate", "--model", "/no/such/model", "--backend", "cpu"]), &["/no/such/model"]);
    // A token id past the vocabulary.
    assert_clean_error(
        &torchless(&["logits", "--model", llama, "--tokens", "1,999", "--backend", "cpu"]),
        &["999", "256"],
    );
    // A directory without a tokenizer cannot generate text.
    assert_clean_error(&torchless(&["generate", "--model", llama, "--backend", "cpu"]), &["tokenizer"]);
    // Out-of-range sampling flags.
    assert_clean_error(&torchless(&["generate", "--top-p", "1.5", "--backend", "cpu"]), &["top"]);
    // Negative values as users type them (`--flag -1`, not only `--flag=-1`) reach the range checks.
    assert_clean_error(&torchless(&["generate", "--temperature", "-1", "--backend", "cpu"]), &["temperature", "≥ 0"]);
    assert_clean_error(&torchless(&["generate", "--min-p", "-0.1", "--backend", "cpu"]), &["min-p", "[0, 1)"]);
    assert_clean_error(&torchless(&["logits", "--tokens", "3,-1", "--backend", "cpu"]), &["'-1'", "--tokens"]);
    // A system message without --chat (it would be ignored).
    assert_clean_error(&torchless(&["generate", "--system", "Be brief.", "--backend", "cpu"]), &["--chat"]);
    // An empty stop string (every text contains it), refused before the model loads.
    assert_clean_error(&torchless(&["generate", "--stop", "", "--backend", "cpu"]), &["--stop"]);
    // A prompt longer than the built-in model's context: the streamed prompt's line ends before the error.
    let long = "word ".repeat(400);
    let o = torchless(&["generate", "--prompt", &long, "--backend", "cpu"]);
    assert_clean_error(&o, &["prompt"]);
    assert!(String::from_utf8_lossy(&o.stdout).ends_with('\n'), "the streamed line ends before the error");
    // An unknown backend name.
    assert_clean_error(&torchless(&["generate", "--backend", "tpu"]), &["tpu"]);
    // A KV cache dtype that is not a float type, and a KV cache for a model that has none.
    assert_clean_error(&torchless(&["generate", "--kv-cache", "q8_0", "--backend", "cpu"]), &["q8_0", "f16"]);
    assert_clean_error(
        &torchless(&["generate", "--model", "tiny-xlstm", "--kv-cache", "f16", "--backend", "cpu"]),
        &["kv-cache", "xLSTM"],
    );

    let tmp = std::env::temp_dir().join(format!("torchless-cli-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let copy = |name: &str| std::fs::copy(Path::new(llama).join(name), tmp.join(name)).unwrap();
    let dir = tmp.to_str().unwrap();
    // A model given as a file that is not a GGUF file.
    let not_gguf = tmp.join("weights.bin");
    std::fs::write(&not_gguf, b"not a model").unwrap();
    assert_clean_error(
        &torchless(&["logits", "--model", not_gguf.to_str().unwrap(), "--tokens", "1", "--backend", "cpu"]),
        &["weights.bin", "not a GGUF file"],
    );
    // config.json missing.
    assert_clean_error(&torchless(&["logits", "--model", dir, "--tokens", "1", "--backend", "cpu"]), &["config.json"]);
    // An unsupported architecture lists the supported ones.
    let config = std::fs::read_to_string(Path::new(llama).join("config.json")).unwrap();
    std::fs::write(
        tmp.join("config.json"),
        config.replace("\"llama\"", "\"gpt2\"").replace("LlamaForCausalLM", "GPT2LMHeadModel"),
    )
    .unwrap();
    assert_clean_error(
        &torchless(&["logits", "--model", dir, "--tokens", "1", "--backend", "cpu"]),
        &["gpt2", "qwen2"],
    );
    // A truncated safetensors file.
    copy("config.json");
    let weights = std::fs::read(Path::new(llama).join("model.safetensors")).unwrap();
    std::fs::write(tmp.join("model.safetensors"), &weights[..weights.len() / 2]).unwrap();
    assert_clean_error(
        &torchless(&["logits", "--model", dir, "--tokens", "1", "--backend", "cpu"]),
        &["model.safetensors"],
    );
    // A prompt longer than the context (the fixture's context is 512 positions).
    copy("model.safetensors");
    let long: Vec<String> = (0..600).map(|i| (i % 200).to_string()).collect();
    let long = long.join(",");
    assert_clean_error(&torchless(&["logits", "--model", dir, "--tokens", &long, "--backend", "cpu"]), &["600"]);
    let _ = std::fs::remove_dir_all(&tmp);
}

#[test]
fn bench_model_times_both_xlstm_prefills() {
    let dir = fixture("xlstm");
    let o = torchless(&[
        "bench-model",
        "--model",
        dir.to_str().unwrap(),
        "--backend",
        "cpu",
        "--context",
        "70",
        "--decode-tokens",
        "4",
        "--prefill-tokens",
        "80",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    for key in ["decode_tok_s", "prefill_tok_s", "prefill_step_tok_s"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    // A Llama has no stepped prefill.
    let dir = fixture("llama");
    let o = torchless(&[
        "bench-model",
        "--model",
        dir.to_str().unwrap(),
        "--backend",
        "cpu",
        "--context",
        "8",
        "--decode-tokens",
        "2",
        "--prefill-tokens",
        "16",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    assert!(v["prefill_step_tok_s"].is_null(), "{v}");
}

#[test]
fn tokenize_prints_ids_and_gguf_models_run() {
    // The built-in model's tokenizer: plain ids, then JSON.
    let o = torchless(&["tokenize", "--text", "Hello there"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let plain: Vec<u32> = String::from_utf8_lossy(&o.stdout).split_whitespace().map(|t| t.parse().unwrap()).collect();
    assert!(!plain.is_empty());
    let o = torchless(&["tokenize", "--text", "Hello there", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    let ids: Vec<u32> = v["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
    assert_eq!(ids, plain);

    // A GGUF file runs like its Hugging Face directory; --quantize works on both.
    let gguf = fixture("gguf/llama_f32.gguf");
    let o =
        torchless(&["logits", "--model", gguf.to_str().unwrap(), "--tokens", "5,6,7", "--backend", "cpu", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let hf = torchless(&[
        "logits",
        "--model",
        fixture("llama").to_str().unwrap(),
        "--tokens",
        "5,6,7",
        "--backend",
        "cpu",
        "--json",
    ]);
    let (a, b): (serde_json::Value, serde_json::Value) =
        (serde_json::from_slice(&o.stdout).unwrap(), serde_json::from_slice(&hf.stdout).unwrap());
    let flat = |v: &serde_json::Value| -> Vec<f64> {
        v["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect()
    };
    let err = flat(&a).iter().zip(flat(&b)).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(err < 1e-4, "GGUF vs HF logits: {err}");
    let o = torchless(&[
        "logits",
        "--model",
        fixture("llama").to_str().unwrap(),
        "--tokens",
        "5",
        "--backend",
        "cpu",
        "--quantize",
        "q4_k",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Bad input: an unknown quantization type, a GGUF file without a tokenizer, a corrupt GGUF file.
    assert_clean_error(&torchless(&["logits", "--tokens", "1", "--quantize", "q3_x"]), &["q3_x", "q4_k"]);
    assert_clean_error(
        &torchless(&["tokenize", "--model", gguf.to_str().unwrap(), "--text", "x"]),
        &["tokenizer.ggml.model"],
    );
    let tmp = std::env::temp_dir().join(format!("torchless-cli-gguf-{}.gguf", std::process::id()));
    let bytes = std::fs::read(&gguf).unwrap();
    std::fs::write(&tmp, &bytes[..bytes.len() / 3]).unwrap();
    assert_clean_error(
        &torchless(&["logits", "--model", tmp.to_str().unwrap(), "--tokens", "1", "--backend", "cpu"]),
        &["past the end"],
    );
    let _ = std::fs::remove_file(&tmp);
}
