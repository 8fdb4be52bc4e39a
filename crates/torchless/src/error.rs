//! Errors of the engine layer: each names the file, tensor, field or value that was wrong.

use std::path::PathBuf;

use torchless_kernels::KernelError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: not valid JSON: {source}")]
    Json { path: PathBuf, source: serde_json::Error },

    #[error(
        "{path}: {what} not found; a Hugging Face model directory needs config.json, model.safetensors (or model.safetensors.index.json with its shards) and tokenizer.json"
    )]
    MissingFile { path: PathBuf, what: &'static str },

    #[error("model config: field {field}: {reason}")]
    Config { field: String, reason: String },

    #[error("unsupported architecture {found:?}; supported: {supported}")]
    UnsupportedArchitecture { found: String, supported: &'static str },

    #[error("{file}: corrupt safetensors file: {reason}")]
    Safetensors { file: PathBuf, reason: String },

    #[error("{path}: {source}")]
    Gguf { path: PathBuf, source: crate::gguf::GgufError },

    #[error("tensor {name} not found in the model's safetensors files")]
    MissingTensor { name: String },

    #[error("tensor {name}: expected shape {expected:?}, found {found:?}")]
    TensorShape { name: String, expected: Vec<usize>, found: Vec<usize> },

    #[error("tensor {name}: dtype {found} is not supported (expected f32, f16 or bf16)")]
    TensorDType { name: String, found: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("chat template: {0}")]
    Template(String),

    #[error("token id {id} is out of range for a vocabulary of {vocab}")]
    TokenOutOfRange { id: u32, vocab: usize },

    #[error("{what}: {needed} tokens do not fit in the context of {limit} tokens")]
    ContextLength { what: &'static str, needed: usize, limit: usize },

    #[error("invalid {name} = {value}: {reason}")]
    Argument { name: &'static str, value: String, reason: String },

    #[error(transparent)]
    Kernel(#[from] KernelError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io { path: path.into(), source }
    }
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Config { field: field.into(), reason: reason.into() }
    }
}
