//! The built-in tiny models decode the same fixed greedy text on the CPU and the GPU.

use torchless::generate::{GenerateOptions, generate};
use torchless::model::LoadedModel;
use torchless::sampling::SamplingParams;
use torchless_kernels::testing::test_backends;

/// Recorded from this engine (CPU and GPU agree); the text is the model's own, trained on `fortunes`.
const EXPECTED: &str = ", I am taking a lot of life.\n\t\t-- Camel Brech";

#[test]
fn tiny_llama_greedy_text_is_fixed_on_every_backend() {
    for backend in test_backends() {
        let loaded = LoadedModel::load("tiny-llama", &backend, false).expect("built-in model loads");
        let tokenizer = loaded.tokenizer.as_ref().expect("built-in model has a tokenizer");
        let prompt = tokenizer.encode("Once upon a time", true).unwrap();
        let opts = GenerateOptions {
            max_tokens: 40,
            sampling: SamplingParams { temperature: 0.0, ..SamplingParams::default() },
            stop: Vec::new(),
        };
        let mut text = String::new();
        let stats = generate(&loaded.model, tokenizer, &prompt, &opts, |piece| text.push_str(piece)).unwrap();
        assert_eq!(text, EXPECTED, "greedy text on {}", backend.name());
        assert!(stats.generated_tokens > 5 && stats.generated_tokens < 40, "stops at EOS: {stats:?}");

        // A stop string cuts the text where it starts.
        let opts = GenerateOptions { stop: vec!["lot".into()], ..opts };
        let mut cut = String::new();
        generate(&loaded.model, tokenizer, &prompt, &opts, |piece| cut.push_str(piece)).unwrap();
        assert_eq!(cut, ", I am taking a ", "stop string on {}", backend.name());
    }
}

#[test]
fn sampling_is_reproducible_with_a_seed() {
    for backend in test_backends() {
        let loaded = LoadedModel::load("tiny-llama", &backend, false).unwrap();
        let tokenizer = loaded.tokenizer.as_ref().unwrap();
        let prompt = tokenizer.encode("The", true).unwrap();
        let run = |seed| {
            let opts = GenerateOptions {
                max_tokens: 24,
                sampling: SamplingParams { temperature: 0.9, seed, ..SamplingParams::default() },
                stop: Vec::new(),
            };
            let mut text = String::new();
            generate(&loaded.model, tokenizer, &prompt, &opts, |p| text.push_str(p)).unwrap();
            text
        };
        let a = run(1);
        assert!(!a.is_empty());
        assert_eq!(a, run(1), "same seed, same text on {}", backend.name());
    }
}

/// tiny-xlstm's plain greedy continuation of "A computer" (no repeat penalty, so the token stays on the
/// device): recorded from this engine on the CPU, the GPU agrees, and it is word for word the greedy text
/// transformers wrote for the same prompt in assets/tiny-xlstm/sample.txt.
const EXPECTED_XLSTM: &str = " scientists don't have to be a good day.  I'm not sure\nthat I'm not sure I'm not sure.\n\t\t-- Larry Wall in <19970902115193.LAA0868@wall.org>";

#[test]
fn tiny_xlstm_greedy_text_is_fixed_on_every_backend() {
    for backend in test_backends() {
        let loaded = LoadedModel::load("tiny-xlstm", &backend, false).expect("built-in model loads");
        let tokenizer = loaded.tokenizer.as_ref().expect("built-in model has a tokenizer");
        let prompt = tokenizer.encode("A computer", true).unwrap();
        let opts = GenerateOptions {
            max_tokens: 64,
            sampling: SamplingParams { temperature: 0.0, repeat_penalty: 1.0, ..SamplingParams::default() },
            stop: Vec::new(),
        };
        let mut text = String::new();
        let stats = generate(&loaded.model, tokenizer, &prompt, &opts, |piece| text.push_str(piece)).unwrap();
        assert_eq!(text, EXPECTED_XLSTM, "greedy text on {}", backend.name());
        assert!(stats.generated_tokens > 5 && stats.generated_tokens < 64, "stops at EOS: {stats:?}");
    }
}
