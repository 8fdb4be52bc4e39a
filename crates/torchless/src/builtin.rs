//! Built-in models: tiny models trained by `scripts/train_tiny.py` and committed under `assets/`, found
//! by name so that `torchless generate` works on a fresh machine with no download.

use std::path::PathBuf;

pub const DEFAULT_MODEL: &str = "tiny-llama";

/// Names of the built-in models.
pub const NAMES: &[&str] = &["tiny-llama", "tiny-xlstm"];

/// The directory of a built-in model, when `name` is one.
pub fn resolve(name: &str) -> Option<PathBuf> {
    NAMES.contains(&name).then(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets").join(name))
}
