//! Models and their loading. `Model` is the one type the generation loop talks to.

pub mod llama;
pub mod weights;
pub mod xlstm;

use std::path::{Path, PathBuf};

use torchless_kernels::{Backend, Tensor};

use crate::builtin;
use crate::config::{Arch, Config};
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, OpenError};
use crate::safetensors_dir::SafetensorsDir;
use crate::tokenizer::Tokenizer;
use torchless_kernels::quant::QuantType;
use weights::{RopePairs, Source, SourceKind};

/// `Model::forward` runs longer prompts in chunks of this many tokens (see [`Model::forward_chunks`]).
pub const PREFILL_CHUNK: usize = 4096;

/// Which positions' logits `forward` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position: [1, vocab] (generation).
    Last,
    /// Every position: [tokens, vocab].
    All,
}

// A process holds one or two models: the size difference between the variants costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
pub enum Model {
    Llama(llama::Llama),
    Xlstm(xlstm::Xlstm),
}

/// The per-sequence state: a KV cache (Llama family) or a recurrent state of fixed size (xLSTM).
pub enum State {
    Llama(llama::State),
    Xlstm(xlstm::State),
}

impl Model {
    /// Where the model's weights and states live.
    pub fn backend(&self) -> &Backend {
        match self {
            Model::Llama(m) => m.backend(),
            Model::Xlstm(m) => m.backend(),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Model::Llama(m) => m.config.vocab_size,
            Model::Xlstm(m) => m.config.vocab_size,
        }
    }

    pub fn max_seq_len(&self) -> usize {
        match self {
            Model::Llama(m) => m.config.max_seq_len,
            Model::Xlstm(_) => xlstm::MAX_SEQ_LEN,
        }
    }

    /// Bytes of weights one decode step reads (for bandwidth rooflines).
    pub fn weight_bytes_per_token(&self) -> u64 {
        match self {
            Model::Llama(m) => m.weight_bytes_per_token(),
            Model::Xlstm(m) => m.weight_bytes_per_token(),
        }
    }

    /// A fresh state with room for `capacity` tokens (xLSTM: any number of tokens).
    pub fn new_state(&self, capacity: usize) -> Result<State> {
        match self {
            Model::Llama(m) => Ok(State::Llama(m.new_state(capacity)?)),
            Model::Xlstm(m) => Ok(State::Xlstm(m.new_state(capacity)?)),
        }
    }

    /// The dtype of the KV caches `new_state` makes (None for an xLSTM, which keeps none).
    pub fn kv_dtype(&self) -> Option<torchless_kernels::DType> {
        match self {
            Model::Llama(m) => Some(m.kv_dtype()),
            Model::Xlstm(_) => None,
        }
    }

    /// The dtype of the KV caches of states made from now on (f32, f16 or bf16; see
    /// [`llama::Llama::set_kv_dtype`]). An xLSTM keeps a recurrent state of fixed size instead: an error.
    pub fn set_kv_dtype(&mut self, dtype: torchless_kernels::DType) -> Result<()> {
        match self {
            Model::Llama(m) => m.set_kv_dtype(dtype),
            Model::Xlstm(_) => Err(Error::Argument {
                name: "kv-cache",
                value: dtype.to_string(),
                reason: "an xLSTM keeps a recurrent state, not a KV cache; leave the option out".into(),
            }),
        }
    }

    /// xLSTM: run the mLSTM of a prefill token by token (`mlstm_step`) instead of chunkwise, to compare
    /// the two. Returns whether the model has such a choice (false for the Llama family).
    pub fn set_step_prefill(&mut self, on: bool) -> bool {
        match self {
            Model::Llama(_) => false,
            Model::Xlstm(m) => {
                m.set_step_prefill(on);
                true
            }
        }
    }

    /// Runs `tokens` at positions `pos..` and returns logits [rows, vocab] f32 on the model's backend.
    pub fn forward(&self, state: &mut State, tokens: &[u32], pos: usize, which: Logits) -> Result<Tensor> {
        self.forward_chunks(state, tokens, pos, which, PREFILL_CHUNK)
    }

    /// [`Model::forward`] in chunks of at most `chunk` tokens. A long prompt goes through in chunks so
    /// that its activations (about 300 KB a token for Llama-3-8B) stay bounded and the buffer pool
    /// recycles them; each chunk attends to the cache the ones before filled. Every position's logits are
    /// gathered on the host (a caller asking for them reads them).
    pub fn forward_chunks(
        &self,
        state: &mut State,
        tokens: &[u32],
        pos: usize,
        which: Logits,
        chunk: usize,
    ) -> Result<Tensor> {
        let vocab = self.vocab_size();
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::TokenOutOfRange { id, vocab });
        }
        if tokens.is_empty() {
            return Err(Error::Argument {
                name: "tokens",
                value: "[]".into(),
                reason: "needs at least one token".into(),
            });
        }
        let chunk = chunk.max(1);
        let mut rows = Vec::new();
        let mut start = 0;
        loop {
            let end = (start + chunk).min(tokens.len());
            let ids = Tensor::from_slice(self.backend(), &tokens[start..end], &[end - start])?;
            let logits = self.forward_ids(state, &ids, pos + start, which)?;
            let last = end == tokens.len();
            match which {
                Logits::All if !(last && start == 0) => {
                    rows.extend(logits.to_f32_vec()?);
                    if last {
                        return Ok(Tensor::from_slice(self.backend(), &rows, &[tokens.len(), vocab])?);
                    }
                }
                _ if last => return Ok(logits),
                _ => {}
            }
            start = end;
        }
    }
}

impl Model {
    /// [`Model::forward`] with the ids in a u32 tensor on the model's backend, which may be the previous
    /// step's `argmax` still on the device: the host can record step t + 1 before it reads token t.
    pub fn forward_ids(&self, state: &mut State, ids: &Tensor, pos: usize, which: Logits) -> Result<Tensor> {
        if !self.backend().is_gpu() {
            // The whole step on a worker of rayon's pool, so that each op's parallel loop forks from inside
            // the pool (work the other workers may steal) instead of handing a job in from outside and
            // blocking until a worker has run it: a decode step has a few hundred such loops.
            return rayon::scope(|_| self.forward_ids_here(state, ids, pos, which));
        }
        self.forward_ids_here(state, ids, pos, which)
    }

    fn forward_ids_here(&self, state: &mut State, ids: &Tensor, pos: usize, which: Logits) -> Result<Tensor> {
        match (self, state) {
            (Model::Llama(m), State::Llama(s)) => m.forward_ids(s, ids, pos, which),
            (Model::Xlstm(m), State::Xlstm(s)) => m.forward_ids(s, ids, pos, which),
            _ => Err(state_mismatch()),
        }
    }
}

fn state_mismatch() -> Error {
    Error::Argument {
        name: "state",
        value: "another architecture's state".into(),
        reason: "use a state made by this model's new_state".into(),
    }
}

/// A model with its tokenizer (absent for bare weight directories such as test fixtures).
pub struct LoadedModel {
    pub name: String,
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
}

impl LoadedModel {
    /// Loads a model directory (Hugging Face layout), a GGUF file (`.gguf`) or a built-in model by name.
    pub fn load(name_or_path: &str, backend: &Backend, progress: bool) -> Result<LoadedModel> {
        Self::load_with(name_or_path, backend, progress, None)
    }

    /// [`LoadedModel::load`], quantizing the dense weight matrices (projections, embedding, LM head) to
    /// `quantize` as they load; norms and biases stay dense.
    pub fn load_with(
        name_or_path: &str,
        backend: &Backend,
        progress: bool,
        quantize: Option<QuantType>,
    ) -> Result<LoadedModel> {
        if is_gguf(Path::new(name_or_path)) {
            return Self::load_gguf(Path::new(name_or_path), backend, progress, quantize);
        }
        let dir = resolve(name_or_path)?;
        let config_path = dir.join("config.json");
        if !config_path.exists() {
            return Err(Error::MissingFile { path: config_path, what: "config.json" });
        }
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::Json { path: config_path.clone(), source: e })?;
        let (model, bos, eos) = if Arch::detect(&json)? == Arch::Xlstm {
            if let Some(q) = quantize {
                return Err(Error::Argument {
                    name: "--quantize",
                    value: q.name().to_string(),
                    reason: "quantized weights are supported for the Llama family only, not for xLSTM".into(),
                });
            }
            let config = xlstm::Config::from_json(&json)?;
            let weights = SafetensorsDir::open(&dir)?;
            let (bos, eos) = (config.bos_token_id, config.eos_token_ids.clone());
            (Model::Xlstm(xlstm::Xlstm::load(config, &weights, backend, progress)?), bos, eos)
        } else {
            let config = Config::from_json(&json)?;
            let weights = SafetensorsDir::open(&dir)?;
            let (bos, eos) = (config.bos_token_id, config.eos_token_ids.clone());
            let pairs = Some(RopePairs::of(&config));
            let source = Source { kind: SourceKind::Safetensors(&weights), quantize, pairs };
            (Model::Llama(llama::Llama::load(config, &source, backend, progress)?), bos, eos)
        };
        let tokenizer =
            if dir.join("tokenizer.json").exists() { Some(Tokenizer::from_dir(&dir, bos, &eos)?) } else { None };
        Ok(LoadedModel { name: display_name(name_or_path, &dir), model, tokenizer })
    }

    /// Loads a llama.cpp GGUF file: config, weights and (when the file has one) tokenizer.
    pub fn load_gguf(
        path: &Path,
        backend: &Backend,
        progress: bool,
        quantize: Option<QuantType>,
    ) -> Result<LoadedModel> {
        let file = open_gguf(path)?;
        let config = Config::from_gguf(&file)?;
        let kind = SourceKind::Gguf { file: &file, arch: config.arch, qk_rows_paired: config.qk_rows_paired };
        let source = Source { kind, quantize, pairs: Some(RopePairs::of(&config)) };
        let model = Model::Llama(llama::Llama::load(config.clone(), &source, backend, progress)?);
        let tokenizer = Tokenizer::from_gguf(&file, &config)?;
        let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
        Ok(LoadedModel { name, model, tokenizer })
    }
}

/// Whether `path` names a GGUF file: a `.gguf` extension, or a file starting with the GGUF magic.
pub fn is_gguf(path: &Path) -> bool {
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) {
        return true;
    }
    if !path.is_file() {
        return false;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic)).is_ok()
        && &magic == b"GGUF"
}

/// Maps and parses a GGUF file, errors naming the path.
pub fn open_gguf(path: &Path) -> Result<GgufFile> {
    GgufFile::open(path).map_err(|e| match e {
        OpenError::Io(source) => Error::io(path, source),
        OpenError::Format(source) => Error::Gguf { path: path.to_path_buf(), source },
    })
}

fn resolve(name_or_path: &str) -> Result<PathBuf> {
    let path = Path::new(name_or_path);
    if path.is_file() {
        // GGUF files were taken before (`is_gguf`): a model given as a file must be one.
        return Err(Error::Argument {
            name: "model",
            value: name_or_path.to_string(),
            reason: "a file that is not a GGUF file (neither a .gguf name nor the GGUF magic); pass a Hugging Face \
                     model directory, a .gguf file or a built-in name (tiny-llama, tiny-xlstm)"
                .into(),
        });
    }
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    match builtin::resolve(name_or_path) {
        Some(dir) if dir.exists() => Ok(dir),
        _ => Err(Error::MissingFile {
            path: path.to_path_buf(),
            what: "the model directory (or a built-in name: tiny-llama, tiny-xlstm)",
        }),
    }
}

fn display_name(name_or_path: &str, dir: &Path) -> String {
    if builtin::NAMES.contains(&name_or_path) {
        name_or_path.to_string()
    } else {
        dir.file_name().map_or_else(|| name_or_path.to_string(), |n| n.to_string_lossy().into_owned())
    }
}

/// The length of a token-id tensor, which must be a non-empty u32 vector.
pub(crate) fn check_ids(ids: &Tensor) -> Result<usize> {
    if ids.dtype() != torchless_kernels::DType::U32 || ids.shape().len() != 1 || ids.numel() == 0 {
        return Err(Error::Argument {
            name: "ids",
            value: format!("{} {:?}", ids.dtype(), ids.shape()),
            reason: "token ids must be a non-empty u32 vector".into(),
        });
    }
    Ok(ids.numel())
}

/// The rows of the final hidden states `x [n, dim]` whose logits `which` asks for.
pub(crate) fn logit_rows(x: Tensor, n: usize, which: Logits) -> Result<Tensor> {
    match which {
        Logits::All => Ok(x),
        Logits::Last if n == 1 => Ok(x),
        Logits::Last => {
            let last = Tensor::from_slice(&x.backend(), &[n as u32 - 1], &[1])?;
            Ok(torchless_kernels::ops::select::embedding(&x, &last)?)
        }
    }
}
