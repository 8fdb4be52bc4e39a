//! `torchless generate` and `torchless logits`, and the model-loading options they share with
//! `torchless bench-model`.

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use torchless::generate::{GenerateOptions, generate};
use torchless::model::{LoadedModel, Logits};
use torchless::sampling::SamplingParams;
use torchless::tokenizer::Message;
use torchless::tokenizer::Tokenizer;
use torchless::{Backend, BackendPreference, Error, init_backend};
use torchless_kernels::DType;
use torchless_kernels::quant::QuantType;

/// `--quantize` values.
fn parse_quant(s: &str) -> Result<QuantType, String> {
    QuantType::parse(s).ok_or_else(|| {
        let names: Vec<&str> = QuantType::ALL.iter().map(|t| t.name()).collect();
        format!("unknown quantization type {s:?} (one of {})", names.join(", "))
    })
}

/// `--kv-cache` values.
fn parse_kv_dtype(s: &str) -> Result<DType, String> {
    DType::parse(s)
        .filter(|d| d.is_float())
        .ok_or_else(|| format!("unknown KV cache dtype {s:?} (one of f32, f16, bf16)"))
}

/// How a model loads: the options `generate`, `logits` and `bench-model` share.
#[derive(Args)]
pub struct LoadOptions {
    /// Quantize the weight matrices as they load: q8_0, q4_0 or q4_k (also q4_1, q5_0, q5_1, q5_k, q6_k).
    /// Q4_K falls back to Q5_0 for rows that are not multiples of 256, as llama.cpp does.
    #[arg(long, value_parser = parse_quant)]
    pub quantize: Option<QuantType>,
    /// The KV cache's dtype: f32, f16 or bf16 (half the memory; K and V are rounded as they are written).
    /// By default f16. Llama-family models only.
    #[arg(long, value_parser = parse_kv_dtype)]
    pub kv_cache: Option<DType>,
}

impl LoadOptions {
    /// Loads `model` on `backend` with these options.
    pub fn load(&self, model: &str, backend: &Backend, progress: bool) -> Result<LoadedModel, Error> {
        let mut loaded = LoadedModel::load_with(model, backend, progress, self.quantize)?;
        if let Some(dtype) = self.kv_cache {
            loaded.model.set_kv_dtype(dtype)?;
        }
        Ok(loaded)
    }
}

#[derive(Args)]
pub struct GenerateArgs {
    /// A model directory (Hugging Face layout), a GGUF file or a built-in model name (tiny-llama, tiny-xlstm).
    #[arg(long, default_value = torchless::builtin::DEFAULT_MODEL)]
    model: String,
    /// The prompt; `-` reads it from standard input.
    #[arg(long, default_value = "Once upon a time")]
    prompt: String,
    #[arg(long, default_value_t = 128, allow_negative_numbers = true)]
    max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    temperature: f32,
    /// 0 disables it. On a GPU, 1 to 64 draw each token on the device (no wait for the host between
    /// steps); 0 or more than 64 read the logits back and sample on the host.
    #[arg(long, default_value_t = 40, allow_negative_numbers = true)]
    top_k: usize,
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    top_p: f32,
    #[arg(long, default_value_t = 0.05, allow_negative_numbers = true)]
    min_p: f32,
    #[arg(long, default_value_t = 1.1, allow_negative_numbers = true)]
    repeat_penalty: f32,
    #[arg(long, default_value_t = 0x5eed, allow_negative_numbers = true)]
    seed: u64,
    /// Stop when the output contains this text (repeatable; not empty).
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    stop: Vec<String>,
    /// auto, cpu, gpu, metal, vulkan or dx12.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Wrap the prompt in the model's chat template.
    #[arg(long)]
    chat: bool,
    /// A system message for --chat.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    #[command(flatten)]
    pub load: LoadOptions,
}

#[derive(Args)]
pub struct LogitsArgs {
    #[arg(long, default_value = torchless::builtin::DEFAULT_MODEL)]
    model: String,
    /// Comma-separated token ids.
    #[arg(long, value_delimiter = ',', required = true, allow_negative_numbers = true)]
    tokens: Vec<u32>,
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Print exactly {"logits": [[...], ...]}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    pub load: LoadOptions,
}

fn read_prompt(prompt: &str) -> Result<String, Error> {
    if prompt != "-" {
        return Ok(prompt.to_string());
    }
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).map_err(|e| Error::io(PathBuf::from("<stdin>"), e))?;
    Ok(s)
}

pub fn generate_cmd(args: &GenerateArgs) -> Result<(), Error> {
    let sampling = SamplingParams {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repeat_penalty: args.repeat_penalty,
        repeat_last_n: 64,
        seed: args.seed,
    };
    sampling.validate()?;
    let backend = init_backend(args.backend.parse::<BackendPreference>()?)?;
    let t0 = Instant::now();
    let loaded = args.load.load(&args.model, &backend, true)?;
    let load_secs = t0.elapsed().as_secs_f64();
    let tokenizer = loaded.tokenizer.as_ref().ok_or_else(|| {
        Error::Tokenizer(format!("{}: no tokenizer (tokenizer.json or GGUF tokenizer metadata), so `generate` cannot read text; use `logits`", args.model))
    })?;
    let user_text = read_prompt(&args.prompt)?;
    let mut text = user_text.clone();
    if args.chat {
        let mut messages = Vec::new();
        if let Some(s) = &args.system {
            messages.push(Message { role: "system".into(), content: s.clone() });
        }
        messages.push(Message { role: "user".into(), content: user_text.clone() });
        text = tokenizer.apply_chat_template(&messages)?;
    }
    let prompt = tokenizer.encode(&text, !args.chat)?;
    let opts = GenerateOptions { max_tokens: args.max_tokens, sampling, stop: args.stop.clone() };
    if !args.chat {
        out!("{user_text}");
    }
    let stats = generate(&loaded.model, tokenizer, &prompt, &opts, |piece| out!("{piece}"));
    // End the streamed line before the stats line or an error.
    outln!();
    let stats = stats?;
    let prefill = stats.prefill_tps().map_or_else(|| "not run".to_string(), |tps| format!("{tps:.1} tok/s"));
    let decode = stats.decode_tps().map_or_else(String::new, |tps| format!(", {tps:.1} tok/s"));
    eprintln!(
        "[{} on {}] load {:.2} s | prompt {}, {prefill} | generated {}{decode}",
        loaded.name,
        backend.device_name(),
        load_secs,
        tokens(stats.prompt_tokens),
        tokens(stats.generated_tokens),
    );
    Ok(())
}

/// "1 token", "5 tokens".
fn tokens(n: usize) -> String {
    if n == 1 { "1 token".into() } else { format!("{n} tokens") }
}

pub fn logits_cmd(args: &LogitsArgs) -> Result<(), Error> {
    let backend = init_backend(args.backend.parse::<BackendPreference>()?)?;
    let loaded = args.load.load(&args.model, &backend, false)?;
    let vocab = loaded.model.vocab_size();
    if let Some(&id) = args.tokens.iter().find(|&&t| t as usize >= vocab) {
        return Err(Error::TokenOutOfRange { id, vocab });
    }
    let mut state = loaded.model.new_state(args.tokens.len())?;
    let logits = loaded.model.forward(&mut state, &args.tokens, 0, Logits::All)?;
    let values = logits.to_f32_vec()?;
    let rows: Vec<&[f32]> = values.chunks(vocab).collect();
    if args.json {
        outln!("{}", serde_json::json!({ "logits": rows }));
    } else {
        for (i, row) in rows.iter().enumerate() {
            let best = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(j, _)| j);
            let head: Vec<String> = row.iter().take(8).map(|v| format!("{v:.4}")).collect();
            outln!("position {i} (token {}): argmax {best}; logits [{} ...]", args.tokens[i], head.join(", "));
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct TokenizeArgs {
    /// A model directory (Hugging Face layout with tokenizer.json), a GGUF file or a built-in model name.
    #[arg(long, default_value = torchless::builtin::DEFAULT_MODEL)]
    model: String,
    /// The text; `-` reads it from standard input.
    #[arg(long)]
    text: String,
    /// Print exactly {"ids": [...]}.
    #[arg(long)]
    json: bool,
}

/// Loads only the tokenizer of a model (no weights are read).
fn load_tokenizer(model: &str) -> Result<Tokenizer, Error> {
    let path = std::path::Path::new(model);
    if torchless::model::is_gguf(path) {
        let file = torchless::model::open_gguf(path)?;
        let config = torchless::config::Config::from_gguf(&file)?;
        return Tokenizer::from_gguf(&file, &config)?
            .ok_or_else(|| Error::Tokenizer(format!("{model}: no tokenizer.ggml.model in the GGUF metadata")));
    }
    let dir = if path.exists() {
        path.to_path_buf()
    } else {
        torchless::builtin::resolve(model).ok_or_else(|| Error::MissingFile {
            path: path.to_path_buf(),
            what: "the model directory or GGUF file (or a built-in name: tiny-llama, tiny-xlstm)",
        })?
    };
    let config = torchless::config::Config::from_file(&dir.join("config.json")).ok();
    let (bos, eos) = config.map_or((None, Vec::new()), |c| (c.bos_token_id, c.eos_token_ids));
    Tokenizer::from_dir(&dir, bos, &eos)
}

pub fn tokenize_cmd(args: &TokenizeArgs) -> Result<(), Error> {
    let tokenizer = load_tokenizer(&args.model)?;
    let text = read_prompt(&args.text)?;
    let ids = tokenizer.encode(&text, false)?;
    if args.json {
        outln!("{}", serde_json::json!({ "ids": ids }));
    } else {
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        outln!("{}", ids.join(" "));
    }
    Ok(())
}
