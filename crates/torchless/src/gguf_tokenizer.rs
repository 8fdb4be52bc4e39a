//! A Hugging Face `tokenizers` tokenizer built from GGUF metadata (`tokenizer.ggml.*`).
//!
//! `gpt2` (byte-level BPE): the vocabulary and merges as stored, and the pre-tokenizer named by
//! `tokenizer.ggml.pre`, reproducing llama.cpp's regex lists for that name. `llama` (SentencePiece): BPE
//! with byte fallback whose merges are derived from the scores the way transformers' SentencePiece
//! converter derives them (every split of a piece into two pieces of the vocabulary, ranked by the whole
//! piece's score), which is what llama.cpp's SPM tokenizer computes. Control and user-defined tokens become
//! added tokens, so they are parsed as such in text. The tokenizer.json is built as a JSON value and
//! loaded with `tokenizers`, the same path a Hugging Face directory takes.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::error::Error;
use crate::gguf::{Array, GgufError, Header};

/// `tokenizer.ggml.pre` names we know, for error messages.
pub const SUPPORTED_PRE: &str =
    "default, gpt-2, phi-2, smollm, starcoder, refact, llama-bpe, llama3, llama-v3, qwen2, deepseek-r1-qwen";

const GPT2_RE: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_RE: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Token types (`tokenizer.ggml.token_type`).
const NORMAL: i128 = 1;
const UNKNOWN: i128 = 2;
const CONTROL: i128 = 3;
const USER_DEFINED: i128 = 4;

fn split(re: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false})
}

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

/// The pre-tokenizer (and whether merges are skipped for whole-word vocabulary hits) for a `.pre` name:
/// llama.cpp's regex list for that name, each regex splitting the pieces of the one before.
pub fn pre_tokenizer(pre: &str) -> Option<(Value, bool)> {
    let seq = |v: Vec<Value>| json!({"type": "Sequence", "pretokenizers": v});
    Some(match pre {
        "gpt-2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es" | "jina-v2-de" => {
            (seq(vec![split(GPT2_RE), byte_level(false)]), false)
        }
        "smollm" | "starcoder" | "refact" => (seq(vec![split(r"\p{N}"), split(GPT2_RE), byte_level(false)]), false),
        "llama-bpe" | "llama3" | "llama-v3" | "falcon3" | "pixtral" => {
            (seq(vec![split(LLAMA3_RE), byte_level(false)]), true)
        }
        "qwen2" | "deepseek-r1-qwen" | "megrez" => (seq(vec![split(QWEN2_RE), byte_level(false)]), false),
        "default" => (
            seq(vec![
                split(r"[\p{P}\$\+<=>\^~\|]+"),
                split(GPT2_RE),
                split(r"\p{N}+"),
                split(r"[0-9][0-9][0-9]"),
                byte_level(false),
            ]),
            false,
        ),
        _ => return None,
    })
}

/// What the loader needs from the metadata besides the `tokenizers` object.
pub struct GgufTokenizer {
    pub inner: tokenizers::Tokenizer,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub add_bos: bool,
    pub chat_template: Option<String>,
    pub tokens: Vec<String>,
}

fn strings<'a>(h: &'a Header, key: &str) -> std::result::Result<&'a [String], GgufError> {
    match h.get_array(key)? {
        None => Err(GgufError::MissingKey { key: key.to_string() }),
        Some(Array::String(v)) => Ok(v),
        Some(other) => Err(GgufError::KeyType {
            key: key.to_string(),
            expected: "an array of strings",
            found: format!("an array of {} elements of another type", other.len()),
        }),
    }
}

/// Builds the tokenizer; `Ok(None)` when the file has no `tokenizer.ggml.model`.
pub fn build(h: &Header) -> std::result::Result<Option<GgufTokenizer>, TokError> {
    let Some(model) = h.get_str("tokenizer.ggml.model")? else { return Ok(None) };
    let tokens = strings(h, "tokenizer.ggml.tokens")?;
    let n = tokens.len();
    if n == 0 {
        return Err(TokError::Other("tokenizer.ggml.tokens is empty".into()));
    }
    let types: Vec<i128> = match h.get_array("tokenizer.ggml.token_type")? {
        None => vec![NORMAL; n],
        Some(a) => a.as_ints().filter(|v| v.len() == n).ok_or_else(|| {
            TokError::Other(format!("tokenizer.ggml.token_type: expected {n} integers, found {} entries", a.len()))
        })?,
    };
    let id_key = |k: &str| -> std::result::Result<Option<u32>, TokError> {
        match h.get_usize(k)? {
            None => Ok(None),
            Some(id) if id < n => Ok(Some(id as u32)),
            Some(id) => Err(TokError::Other(format!("{k} = {id} is outside the vocabulary of {n} tokens"))),
        }
    };
    let bos_id = id_key("tokenizer.ggml.bos_token_id")?;
    let eos_id = id_key("tokenizer.ggml.eos_token_id")?;
    let unk_id = id_key("tokenizer.ggml.unknown_token_id")?;

    let added: Vec<Value> = (0..n)
        .filter(|&i| matches!(types[i], CONTROL | USER_DEFINED | UNKNOWN) && !tokens[i].is_empty())
        .map(|i| {
            json!({"id": i, "content": tokens[i], "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": types[i] != USER_DEFINED})
        })
        .collect();
    let vocab: serde_json::Map<String, Value> =
        tokens.iter().enumerate().rev().map(|(i, t)| (t.clone(), json!(i))).collect();

    let (tokenizer_json, default_add_bos) = match model {
        "gpt2" => {
            let pre = h.get_str("tokenizer.ggml.pre")?.unwrap_or("default");
            let (pre_tokenizer, ignore_merges) = pre_tokenizer(pre).ok_or_else(|| {
                TokError::Other(format!("tokenizer.ggml.pre {pre:?} is not supported (supported: {SUPPORTED_PRE})"))
            })?;
            let merges: Vec<Value> = strings(h, "tokenizer.ggml.merges")?
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    m.split_once(' ')
                        .map(|(a, b)| json!([a, b]))
                        .ok_or_else(|| TokError::Other(format!("tokenizer.ggml.merges[{i}] = {m:?} is not two tokens")))
                })
                .collect::<std::result::Result<_, _>>()?;
            let j = json!({
                "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
                "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": null,
                "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
                "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                          "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                          "ignore_merges": ignore_merges, "vocab": vocab, "merges": merges}
            });
            (j, false)
        }
        "llama" => {
            let scores = match h.get_array("tokenizer.ggml.scores")? {
                None => return Err(GgufError::MissingKey { key: "tokenizer.ggml.scores".into() }.into()),
                Some(a) => a.as_f32s().filter(|v| v.len() == n).ok_or_else(|| {
                    TokError::Other(format!("tokenizer.ggml.scores: expected {n} numbers, found {} entries", a.len()))
                })?,
            };
            let add_space = h.get_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
            let unk = unk_id.map(|i| tokens[i as usize].clone()).unwrap_or_else(|| "<unk>".into());
            let j = json!({
                "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
                "normalizer": null,
                "pre_tokenizer": {"type": "Metaspace", "replacement": "▁",
                                  "prepend_scheme": if add_space { "first" } else { "never" }, "split": false},
                "post_processor": null,
                "decoder": {"type": "Sequence", "decoders": [
                    {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                    {"type": "ByteFallback"}, {"type": "Fuse"},
                    {"type": "Strip", "content": " ", "start": if add_space { 1 } else { 0 }, "stop": 0}]},
                "model": {"type": "BPE", "dropout": null, "unk_token": unk, "continuing_subword_prefix": null,
                          "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true,
                          "ignore_merges": false, "vocab": vocab, "merges": spm_merges(tokens, &scores, &types)}
            });
            (j, true)
        }
        other => {
            return Err(TokError::Other(format!(
                "tokenizer.ggml.model {other:?} is not supported (gpt2: byte-level BPE, llama: SentencePiece)"
            )));
        }
    };
    let text = serde_json::to_string(&tokenizer_json).map_err(|e| TokError::Other(e.to_string()))?;
    let inner = tokenizers::Tokenizer::from_bytes(text.as_bytes()).map_err(|e| TokError::Other(e.to_string()))?;
    Ok(Some(GgufTokenizer {
        inner,
        bos_id,
        eos_id,
        add_bos: h.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(default_add_bos),
        chat_template: h.get_str("tokenizer.chat_template")?.map(str::to_string),
        tokens: tokens.to_vec(),
    }))
}

/// SentencePiece merges from scores: each normal piece that splits into two pieces of the vocabulary
/// yields those merges, ranked by the piece's score (highest first), ties by the parts' ids.
fn spm_merges(tokens: &[String], scores: &[f32], types: &[i128]) -> Vec<Value> {
    let ids: HashMap<&str, usize> = tokens.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
    let mut merges: Vec<(f32, usize, usize)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        if types[i] != NORMAL && types[i] != USER_DEFINED {
            continue;
        }
        let mut local = Vec::new();
        for (at, _) in piece.char_indices().skip(1) {
            if let (Some(&l), Some(&r)) = (ids.get(&piece[..at]), ids.get(&piece[at..])) {
                local.push((l, r));
            }
        }
        local.sort_unstable();
        merges.extend(local.into_iter().map(|(l, r)| (scores[i], l, r)));
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0));
    merges.into_iter().map(|(_, l, r)| json!([tokens[l], tokens[r]])).collect()
}

/// Why a GGUF tokenizer could not be built.
#[derive(Debug)]
pub enum TokError {
    Gguf(GgufError),
    Other(String),
}

impl From<GgufError> for TokError {
    fn from(e: GgufError) -> Self {
        TokError::Gguf(e)
    }
}

impl TokError {
    pub fn into_error(self, path: &std::path::Path) -> Error {
        match self {
            TokError::Gguf(source) => Error::Gguf { path: path.to_path_buf(), source },
            TokError::Other(msg) => Error::Tokenizer(format!("{}: {msg}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::Value as V;
    use crate::gguf::writer::Writer;

    fn strs(v: &[&str]) -> V {
        V::Array(Array::String(v.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn gpt2_bpe_with_special_tokens() {
        // Byte-level: "Ġ" is the space byte.
        let toks = ["<|end|>", "a", "b", "Ġ", "ab", "Ġab", "1", "2", "<|u|>"];
        let w = Writer::default()
            .kv("tokenizer.ggml.model", V::String("gpt2".into()))
            .kv("tokenizer.ggml.pre", V::String("smollm".into()))
            .kv("tokenizer.ggml.tokens", strs(&toks))
            .kv("tokenizer.ggml.token_type", V::Array(Array::I32(vec![3, 1, 1, 1, 1, 1, 1, 1, 4])))
            .kv("tokenizer.ggml.merges", strs(&["a b", "Ġ ab"]))
            .kv("tokenizer.ggml.eos_token_id", V::U32(0));
        let h = Header::parse(&w.to_bytes()).unwrap();
        let t = build(&h).unwrap().unwrap();
        let enc = |s: &str| t.inner.encode(s, false).unwrap().get_ids().to_vec();
        assert_eq!(enc("ab ab<|end|>12"), vec![4, 5, 0, 6, 7]);
        assert_eq!(enc("<|u|>ab"), vec![8, 4]);
        assert_eq!(t.inner.decode(&[4, 5, 0], true).unwrap(), "ab ab");
        assert!(!t.add_bos);
        assert_eq!(t.eos_id, Some(0));
    }

    #[test]
    fn spm_with_byte_fallback() {
        let toks = ["<unk>", "<s>", "</s>", "<0x41>", "<0x0A>", "▁", "h", "i", "hi", "▁hi"];
        let scores = [0.0, 0.0, 0.0, 0.0, 0.0, -1.0, -2.0, -3.0, -1.5, -0.5];
        let w = Writer::default()
            .kv("tokenizer.ggml.model", V::String("llama".into()))
            .kv("tokenizer.ggml.tokens", strs(&toks))
            .kv("tokenizer.ggml.scores", V::Array(Array::F32(scores.to_vec())))
            .kv("tokenizer.ggml.token_type", V::Array(Array::I32(vec![2, 3, 3, 6, 6, 1, 1, 1, 1, 1])))
            .kv("tokenizer.ggml.bos_token_id", V::U32(1))
            .kv("tokenizer.ggml.unknown_token_id", V::U32(0));
        let h = Header::parse(&w.to_bytes()).unwrap();
        let t = build(&h).unwrap().unwrap();
        let enc = |s: &str| t.inner.encode(s, false).unwrap().get_ids().to_vec();
        assert_eq!(enc("hi hi"), vec![9, 9]);
        assert_eq!(enc("hiA\n"), vec![9, 3, 4]);
        assert_eq!(t.inner.decode(&[9, 9, 3, 4], true).unwrap(), "hi hiA\n");
        assert!(t.add_bos);
    }

    #[test]
    fn missing_or_unknown_metadata_is_named() {
        let w = Writer::default().kv("tokenizer.ggml.model", V::String("gpt2".into()));
        let h = Header::parse(&w.to_bytes()).unwrap();
        assert!(
            matches!(build(&h), Err(TokError::Gguf(GgufError::MissingKey { ref key })) if key == "tokenizer.ggml.tokens")
        );
        let w = Writer::default()
            .kv("tokenizer.ggml.model", V::String("gpt2".into()))
            .kv("tokenizer.ggml.pre", V::String("martian".into()))
            .kv("tokenizer.ggml.tokens", strs(&["a"]))
            .kv("tokenizer.ggml.merges", strs(&[]));
        let h = Header::parse(&w.to_bytes()).unwrap();
        assert!(matches!(build(&h), Err(TokError::Other(ref m)) if m.contains("martian") && m.contains("smollm")));
        let w = Writer::default()
            .kv("tokenizer.ggml.model", V::String("t5".into()))
            .kv("tokenizer.ggml.tokens", strs(&["a"]));
        let h = Header::parse(&w.to_bytes()).unwrap();
        assert!(matches!(build(&h), Err(TokError::Other(ref m)) if m.contains("t5")));
        assert!(build(&Header::parse(&Writer::default().to_bytes()).unwrap()).unwrap().is_none());
    }
}
