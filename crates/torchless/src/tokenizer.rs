//! Text ↔ token ids through Hugging Face `tokenizer.json`, plus BOS/EOS and the chat template from
//! `tokenizer_config.json` and `generation_config.json`.

use std::path::Path;

use serde_json::Value;

use crate::config::token_ids;
use crate::error::{Error, Result};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    pub bos_id: Option<u32>,
    pub eos_ids: Vec<u32>,
    pub add_bos: bool,
    pub chat_template: Option<String>,
    bos_token: Option<String>,
    eos_token: Option<String>,
}

/// One message of a chat.
pub struct Message {
    pub role: String,
    pub content: String,
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map(Some).map_err(|e| Error::Json { path: path.to_path_buf(), source: e })
}

/// A special-token entry is either a string or {"content": "..."}.
fn token_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

impl Tokenizer {
    /// Loads a model directory's tokenizer; `config_eos` and `config_bos` come from config.json.
    pub fn from_dir(dir: &Path, config_bos: Option<u32>, config_eos: &[u32]) -> Result<Tokenizer> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(Error::MissingFile { path, what: "tokenizer.json" });
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))?;
        let tc = read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let gc = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);

        let bos_token = token_text(tc.get("bos_token"));
        let eos_token = token_text(tc.get("eos_token"));
        let bos_id = token_ids(gc.get("bos_token_id"))
            .first()
            .copied()
            .or(config_bos)
            .or_else(|| bos_token.as_deref().and_then(|t| inner.token_to_id(t)));
        let mut eos_ids = token_ids(gc.get("eos_token_id"));
        for id in config_eos.iter().copied().chain(eos_token.as_deref().and_then(|t| inner.token_to_id(t))) {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        let add_bos =
            tc.get("add_bos_token").and_then(Value::as_bool).unwrap_or(bos_id.is_some() && bos_token.is_some());
        let chat_template = match tc.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default".
            Some(Value::Array(a)) => a
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template").and_then(Value::as_str))
                .map(str::to_string),
            _ => None,
        }
        .or_else(|| std::fs::read_to_string(dir.join("chat_template.jinja")).ok());
        Ok(Tokenizer { inner, bos_id, eos_ids, add_bos, chat_template, bos_token, eos_token })
    }

    /// The tokenizer stored in a GGUF file's metadata; `None` when the file has none
    /// (no `tokenizer.ggml.model`).
    pub fn from_gguf(file: &crate::gguf::GgufFile, config: &crate::config::Config) -> Result<Option<Tokenizer>> {
        let Some(t) = crate::gguf_tokenizer::build(&file.header).map_err(|e| e.into_error(&file.path))? else {
            return Ok(None);
        };
        let bos_id = t.bos_id.or(config.bos_token_id);
        let mut eos_ids = config.eos_token_ids.clone();
        if let Some(e) = t.eos_id
            && !eos_ids.contains(&e)
        {
            eos_ids.push(e);
        }
        let text = |id: Option<u32>| id.and_then(|i| t.tokens.get(i as usize).cloned());
        Ok(Some(Tokenizer {
            bos_token: text(bos_id),
            eos_token: text(t.eos_id.or(eos_ids.first().copied())),
            inner: t.inner,
            bos_id,
            eos_ids,
            add_bos: t.add_bos,
            chat_template: t.chat_template,
        }))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Token ids of `text`; special tokens written in the text are parsed as such. Adds BOS when the
    /// tokenizer asks for it and `add_bos` is set, unless the text already starts with it.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(e.to_string()))?;
        let mut ids = enc.get_ids().to_vec();
        if add_bos
            && self.add_bos
            && let Some(b) = self.bos_id
            && ids.first() != Some(&b)
        {
            ids.insert(0, b);
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::Tokenizer(e.to_string()))
    }

    pub fn is_eos(&self, id: u32) -> bool {
        self.eos_ids.contains(&id)
    }

    /// Renders the chat template with `add_generation_prompt`.
    pub fn apply_chat_template(&self, messages: &[Message]) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| {
            Error::Template("this model has no chat template (tokenizer_config.json chat_template or GGUF tokenizer.chat_template); run without --chat".into())
        })?;
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template("chat", template).map_err(|e| Error::Template(e.to_string()))?;
        let msgs: Vec<Value> =
            messages.iter().map(|m| serde_json::json!({"role": m.role, "content": m.content})).collect();
        let ctx = minijinja::context! {
            messages => msgs,
            add_generation_prompt => true,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        };
        env.get_template("chat").and_then(|t| t.render(ctx)).map_err(|e| Error::Template(e.to_string()))
    }
}

/// Turns a growing list of token ids into text pieces, holding back incomplete UTF-8 sequences.
pub struct StreamDecoder {
    ids: Vec<u32>,
    emitted: usize,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamDecoder {
    pub fn new() -> Self {
        StreamDecoder { ids: Vec::new(), emitted: 0 }
    }

    /// The new text after appending `id` (empty while a character is incomplete).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        if text.ends_with('\u{FFFD}') || text.len() < self.emitted || !text.is_char_boundary(self.emitted) {
            return Ok(String::new());
        }
        let piece = text[self.emitted..].to_string();
        self.emitted = text.len();
        Ok(piece)
    }
}
