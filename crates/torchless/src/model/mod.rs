//! Models and their loading. `Model` is the one type the generation loop talks to.

pub mod llama;
pub mod xlstm;

use std::path::{Path, PathBuf};

use torchless_kernels::{Backend, Tensor};

use crate::builtin;
use crate::config::{Arch, Config};
use crate::error::{Error, Result};
use crate::safetensors_dir::SafetensorsDir;
use crate::tokenizer::Tokenizer;

/// Which positions' logits `forward` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position: [1, vocab] (generation).
    Last,
    /// Every position: [tokens, vocab].
    All,
}

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
        let vocab = self.vocab_size();
        if let Some(&id) = tokens.iter().find(|&&t| t as usize >= vocab) {
            return Err(Error::TokenOutOfRange { id, vocab });
        }
        match (self, state) {
            (Model::Llama(m), State::Llama(s)) => m.forward(s, tokens, pos, which),
            (Model::Xlstm(m), State::Xlstm(s)) => m.forward(s, tokens, pos, which),
            _ => Err(state_mismatch()),
        }
    }
}

impl Model {
    /// [`Model::forward`] with the ids in a u32 tensor on the model's backend, which may be the previous
    /// step's `argmax` still on the device: the host can record step t + 1 before it reads token t.
    pub fn forward_ids(&self, state: &mut State, ids: &Tensor, pos: usize, which: Logits) -> Result<Tensor> {
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
    /// Loads a model directory or a built-in model by name.
    pub fn load(name_or_path: &str, backend: &Backend, progress: bool) -> Result<LoadedModel> {
        let dir = resolve(name_or_path)?;
        let config_path = dir.join("config.json");
        if !config_path.exists() {
            return Err(Error::MissingFile { path: config_path, what: "config.json" });
        }
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::Json { path: config_path.clone(), source: e })?;
        let (model, bos, eos) = if Arch::detect(&json)? == Arch::Xlstm {
            let config = xlstm::Config::from_json(&json)?;
            let weights = SafetensorsDir::open(&dir)?;
            let (bos, eos) = (config.bos_token_id, config.eos_token_ids.clone());
            (Model::Xlstm(xlstm::Xlstm::load(config, &weights, backend, progress)?), bos, eos)
        } else {
            let config = Config::from_json(&json)?;
            let weights = SafetensorsDir::open(&dir)?;
            let (bos, eos) = (config.bos_token_id, config.eos_token_ids.clone());
            (Model::Llama(llama::Llama::load(config, &weights, backend, progress)?), bos, eos)
        };
        let tokenizer =
            if dir.join("tokenizer.json").exists() { Some(Tokenizer::from_dir(&dir, bos, &eos)?) } else { None };
        Ok(LoadedModel { name: display_name(name_or_path, &dir), model, tokenizer })
    }
}

fn resolve(name_or_path: &str) -> Result<PathBuf> {
    let path = Path::new(name_or_path);
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
