//! Model configuration from a Hugging Face `config.json`, for the Llama family (xLSTM's is in
//! `model::xlstm`); [`Arch::detect`] tells them apart.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};

/// Architectures of the Llama family that torchless runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Gemma2,
    Phi3,
    /// xLSTM (`xLSTMForCausalLM`): configured by `model::xlstm::Config`.
    Xlstm,
}

pub const SUPPORTED: &str = "llama, mistral, qwen2, qwen3, gemma2, phi3, xlstm";

impl Arch {
    /// From `model_type`, or else the first entry of `architectures`.
    pub fn detect(json: &Value) -> Result<Arch> {
        let model_type = json.get("model_type").and_then(Value::as_str).unwrap_or("");
        let from_type = match model_type {
            "llama" => Some(Arch::Llama),
            "mistral" => Some(Arch::Mistral),
            "qwen2" => Some(Arch::Qwen2),
            "qwen3" => Some(Arch::Qwen3),
            "gemma2" => Some(Arch::Gemma2),
            "phi3" => Some(Arch::Phi3),
            "xlstm" => Some(Arch::Xlstm),
            _ => None,
        };
        if let Some(a) = from_type {
            return Ok(a);
        }
        let arch = json.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).unwrap_or("");
        match arch {
            "LlamaForCausalLM" => Ok(Arch::Llama),
            "MistralForCausalLM" => Ok(Arch::Mistral),
            "Qwen2ForCausalLM" => Ok(Arch::Qwen2),
            "Qwen3ForCausalLM" => Ok(Arch::Qwen3),
            "Gemma2ForCausalLM" => Ok(Arch::Gemma2),
            "Phi3ForCausalLM" => Ok(Arch::Phi3),
            "xLSTMForCausalLM" => Ok(Arch::Xlstm),
            _ => Err(Error::UnsupportedArchitecture {
                found: if model_type.is_empty() { arch.to_string() } else { model_type.to_string() },
                supported: SUPPORTED,
            }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    Silu,
    GeluTanh,
}

/// How rotary frequencies are rescaled (`rope_scaling` / `rope_parameters`).
#[derive(Clone, Debug, PartialEq)]
pub enum RopeScalingConfig {
    None,
    Linear {
        factor: f32,
    },
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: usize,
    },
    /// Explicit per-frequency divisors, rot_dim / 2 of them (GGUF `rope_freqs.weight`, Llama 3).
    Factors(Vec<f32>),
}

/// Everything the forward pass needs to know, resolved per architecture.
#[derive(Clone, Debug)]
pub struct Config {
    pub arch: Arch,
    pub dim: usize,
    pub hidden_dim: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    /// Context length the model was trained for.
    pub max_seq_len: usize,
    pub norm_eps: f32,
    /// Gemma: norms multiply by (1 + w).
    pub norm_plus_one: bool,
    pub rope_theta: f32,
    pub rope_scaling: RopeScalingConfig,
    /// Rotated dims per head (partial rotary), ≤ head_dim.
    pub rot_dim: usize,
    pub activation: Activation,
    /// Qwen2: biases on the q, k and v projections.
    pub qkv_bias: bool,
    /// Qwen3: RMSNorm of each head of q and k before rope.
    pub qk_norm: bool,
    /// Gemma 2: norms after attention and after the MLP, and before the MLP.
    pub sandwich_norms: bool,
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    pub attn_scale: f32,
    /// Per layer: the sliding window, if that layer uses one.
    pub layer_windows: Vec<Option<usize>>,
    /// Gemma: the embedding is multiplied by sqrt(dim).
    pub embed_scale: Option<f32>,
    pub tie_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// GGUF files of llama-family architectures store the Q and K projections with the rows of each head
    /// in rotation-pair order (llama.cpp's converter permutes them), the order the engine keeps them in
    /// (`model::weights::RopePairs`).
    pub qk_rows_paired: bool,
}

// config.json readers shared with model::xlstm: a missing or null key is `None` (or the default), a value of
// the wrong type an error that names the key.

pub(crate) fn get_usize(j: &Value, key: &str) -> Result<Option<usize>> {
    match j.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| Error::config(key, format!("expected a non-negative integer, found {v}"))),
    }
}

fn require_usize(j: &Value, key: &str) -> Result<usize> {
    let v = get_usize(j, key)?.ok_or_else(|| Error::config(key, "missing"))?;
    if v == 0 {
        return Err(Error::config(key, "must be positive"));
    }
    Ok(v)
}

pub(crate) fn get_f64(j: &Value, key: &str) -> Result<Option<f64>> {
    match j.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_f64().map(Some).ok_or_else(|| Error::config(key, format!("expected a number, found {v}"))),
    }
}

fn get_f32(j: &Value, key: &str) -> Result<Option<f32>> {
    Ok(get_f64(j, key)?.map(|v| v as f32))
}

pub(crate) fn get_bool(j: &Value, key: &str, default: bool) -> Result<bool> {
    match j.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v.as_bool().ok_or_else(|| Error::config(key, format!("expected true or false, found {v}"))),
    }
}

/// Token ids given as an integer or a list of integers.
pub fn token_ids(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).map(|n| n as u32).collect(),
        _ => Vec::new(),
    }
}

/// A norm's epsilon as the kernels accept it (finite, not negative), else an error naming `field`.
pub(crate) fn checked_norm_eps(field: impl Into<String>, eps: f32) -> Result<f32> {
    if eps.is_finite() && eps >= 0.0 {
        return Ok(eps);
    }
    Err(Error::config(field, format!("{eps} must be finite and not negative")))
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| Error::Json { path: path.to_path_buf(), source: e })?;
        Config::from_json(&json)
    }

    pub fn from_json(j: &Value) -> Result<Config> {
        let arch = Arch::detect(j)?;
        if arch == Arch::Xlstm {
            return Err(Error::config("model_type", "xlstm is not of the Llama family (see model::xlstm::Config)"));
        }
        let dim = require_usize(j, "hidden_size")?;
        let n_heads = require_usize(j, "num_attention_heads")?;
        let n_kv_heads = get_usize(j, "num_key_value_heads")?.unwrap_or(n_heads);
        if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(Error::config(
                "num_key_value_heads",
                format!("{n_kv_heads} does not divide num_attention_heads = {n_heads}"),
            ));
        }
        let head_dim = get_usize(j, "head_dim")?.unwrap_or(dim / n_heads);
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(Error::config("head_dim", format!("{head_dim} must be even and positive")));
        }
        let n_layers = require_usize(j, "num_hidden_layers")?;
        let vocab_size = require_usize(j, "vocab_size")?;
        let hidden_dim = require_usize(j, "intermediate_size")?;
        let max_seq_len = get_usize(j, "max_position_embeddings")?.unwrap_or(4096);
        if max_seq_len == 0 {
            return Err(Error::config("max_position_embeddings", "must be positive"));
        }
        let norm_eps = checked_norm_eps("rms_norm_eps", get_f32(j, "rms_norm_eps")?.unwrap_or(1e-6))?;

        // transformers 5 nests rope settings in `rope_parameters`; older configs use rope_theta/rope_scaling.
        let rope_params = j.get("rope_parameters").filter(|v| v.is_object());
        let rope_theta = get_f32(j, "rope_theta")?
            .or(rope_params.map(|p| get_f32(p, "rope_theta")).transpose()?.flatten())
            .unwrap_or(10000.0);
        if !(rope_theta.is_finite() && rope_theta > 0.0) {
            return Err(Error::config("rope_theta", format!("{rope_theta} must be positive")));
        }
        let scaling = j.get("rope_scaling").filter(|v| v.is_object()).or(rope_params);
        let rope_scaling = parse_rope_scaling(scaling)?;
        let partial = get_f32(j, "partial_rotary_factor")?
            .or(rope_params.map(|p| get_f32(p, "partial_rotary_factor")).transpose()?.flatten())
            .unwrap_or(1.0);
        let rot_dim = ((head_dim as f32 * partial) as usize) & !1;
        if rot_dim == 0 || rot_dim > head_dim {
            return Err(Error::config("partial_rotary_factor", format!("{partial} gives {rot_dim} rotated dims")));
        }

        let act_name = j
            .get("hidden_activation")
            .and_then(Value::as_str)
            .or(j.get("hidden_act").and_then(Value::as_str))
            .unwrap_or("silu");
        let activation = match act_name {
            "silu" | "swish" => Activation::Silu,
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" | "gelu" => Activation::GeluTanh,
            other => {
                return Err(Error::config(
                    "hidden_act",
                    format!("{other:?} is not supported (silu, gelu_pytorch_tanh)"),
                ));
            }
        };

        let gemma = arch == Arch::Gemma2;
        let attn_scale = match (gemma, get_f32(j, "query_pre_attn_scalar")?) {
            (true, Some(s)) if s > 0.0 => 1.0 / s.sqrt(),
            _ => 1.0 / (head_dim as f32).sqrt(),
        };
        let window = get_usize(j, "sliding_window")?;
        let qwen_window = get_bool(j, "use_sliding_window", false)?;
        let layer_windows = match arch {
            Arch::Mistral | Arch::Phi3 => vec![window; n_layers],
            Arch::Qwen2 | Arch::Qwen3 if qwen_window => {
                let max_window_layers = get_usize(j, "max_window_layers")?.unwrap_or(n_layers);
                (0..n_layers).map(|l| if l >= max_window_layers { window } else { None }).collect()
            }
            Arch::Gemma2 => match j.get("layer_types").and_then(Value::as_array) {
                Some(types) => {
                    if types.len() != n_layers {
                        return Err(Error::config(
                            "layer_types",
                            format!("{} entries for {n_layers} layers", types.len()),
                        ));
                    }
                    types.iter().map(|t| if t.as_str() == Some("sliding_attention") { window } else { None }).collect()
                }
                // Gemma 2 alternates: even layers use the sliding window.
                None => (0..n_layers).map(|l| if l % 2 == 0 { window } else { None }).collect(),
            },
            _ => vec![None; n_layers],
        };

        Ok(Config {
            arch,
            dim,
            hidden_dim,
            n_layers,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab_size,
            max_seq_len,
            norm_eps,
            norm_plus_one: gemma,
            rope_theta,
            rope_scaling,
            rot_dim,
            activation,
            qkv_bias: arch == Arch::Qwen2 || get_bool(j, "attention_bias", false)?,
            qk_norm: arch == Arch::Qwen3,
            sandwich_norms: gemma,
            attn_softcap: if gemma { get_f32(j, "attn_logit_softcapping")? } else { None },
            final_softcap: if gemma { get_f32(j, "final_logit_softcapping")? } else { None },
            attn_scale,
            layer_windows,
            embed_scale: gemma.then(|| (dim as f32).sqrt()),
            tie_embeddings: get_bool(j, "tie_word_embeddings", gemma)?,
            bos_token_id: token_ids(j.get("bos_token_id")).first().copied(),
            eos_token_ids: token_ids(j.get("eos_token_id")),
            qk_rows_paired: false,
        })
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}

fn parse_rope_scaling(v: Option<&Value>) -> Result<RopeScalingConfig> {
    let Some(s) = v else { return Ok(RopeScalingConfig::None) };
    let kind = s.get("rope_type").or(s.get("type")).and_then(Value::as_str).unwrap_or("default");
    let factor = || -> Result<f32> {
        let f = get_f32(s, "factor")?.ok_or_else(|| Error::config("rope_scaling.factor", "missing"))?;
        if f > 0.0 { Ok(f) } else { Err(Error::config("rope_scaling.factor", format!("{f} must be positive"))) }
    };
    match kind {
        "default" => Ok(RopeScalingConfig::None),
        "linear" => Ok(RopeScalingConfig::Linear { factor: factor()? }),
        "llama3" => Ok(RopeScalingConfig::Llama3 {
            factor: factor()?,
            low_freq_factor: get_f32(s, "low_freq_factor")?.unwrap_or(1.0),
            high_freq_factor: get_f32(s, "high_freq_factor")?.unwrap_or(4.0),
            original_max_position_embeddings: get_usize(s, "original_max_position_embeddings")?.unwrap_or(8192),
        }),
        other => Err(Error::config(
            "rope_scaling.rope_type",
            format!("{other:?} is not supported (default, linear, llama3)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model_type": "llama", "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
               "num_hidden_layers": 2, "vocab_size": 100, "intermediate_size": 128, "rms_norm_eps": 1e-5,
               "rope_theta": 500000.0, "eos_token_id": [1, 2], "bos_token_id": 0})
    }

    #[test]
    fn reads_a_llama_config() {
        let c = Config::from_json(&base()).unwrap();
        assert_eq!((c.arch, c.head_dim, c.n_kv_heads, c.rot_dim), (Arch::Llama, 16, 2, 16));
        assert_eq!(c.eos_token_ids, vec![1, 2]);
        assert_eq!(c.rope_theta, 500000.0);
    }

    #[test]
    fn accepts_both_rope_spellings() {
        let mut old = base();
        old["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let mut new = base();
        new.as_object_mut().unwrap().remove("rope_theta");
        new["rope_parameters"] = json!({"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
        let (a, b) = (Config::from_json(&old).unwrap(), Config::from_json(&new).unwrap());
        assert_eq!(a.rope_scaling, b.rope_scaling);
        assert_eq!(a.rope_theta, b.rope_theta);
        assert!(matches!(a.rope_scaling, RopeScalingConfig::Llama3 { .. }));
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        let mut j = base();
        j["model_type"] = json!("bert");
        j["architectures"] = json!(["BertModel"]);
        let e = Config::from_json(&j).unwrap_err().to_string();
        assert!(e.contains("bert") && e.contains("llama"), "{e}");
        let mut j = base();
        j["num_key_value_heads"] = json!(3);
        assert!(Config::from_json(&j).unwrap_err().to_string().contains("num_key_value_heads"));
        let mut j = base();
        j.as_object_mut().unwrap().remove("hidden_size");
        assert!(Config::from_json(&j).unwrap_err().to_string().contains("hidden_size"));
        let mut j = base();
        j["rope_scaling"] = json!({"rope_type": "yarn", "factor": 4.0});
        assert!(Config::from_json(&j).unwrap_err().to_string().contains("yarn"));
        for (field, value) in [
            ("rms_norm_eps", json!(-1.0)),
            ("max_position_embeddings", json!(0)),
            ("tie_word_embeddings", json!("yes")),
            ("attention_bias", json!(1)),
        ] {
            let mut j = base();
            j[field] = value;
            assert!(Config::from_json(&j).unwrap_err().to_string().contains(field), "{field}");
        }
    }

    #[test]
    fn flags_take_their_default_when_missing_or_null() {
        let mut j = base();
        j["tie_word_embeddings"] = Value::Null;
        assert!(!Config::from_json(&j).unwrap().tie_embeddings);
        j["tie_word_embeddings"] = json!(true);
        j["attention_bias"] = json!(true);
        let c = Config::from_json(&j).unwrap();
        assert!(c.tie_embeddings && c.qkv_bias);
    }

    #[test]
    fn xlstm_is_detected_and_left_to_its_own_config() {
        let by_type = json!({"model_type": "xlstm", "hidden_size": 64});
        let by_class = json!({"architectures": ["xLSTMForCausalLM"], "hidden_size": 64});
        assert_eq!(Arch::detect(&by_type).unwrap(), Arch::Xlstm);
        assert_eq!(Arch::detect(&by_class).unwrap(), Arch::Xlstm);
        assert!(Config::from_json(&by_type).unwrap_err().to_string().contains("xlstm"));
    }

    #[test]
    fn gemma2_alternates_windows_and_uses_its_scalar() {
        let mut j = base();
        j["model_type"] = json!("gemma2");
        j["sliding_window"] = json!(4);
        j["query_pre_attn_scalar"] = json!(256);
        j["attn_logit_softcapping"] = json!(50.0);
        let c = Config::from_json(&j).unwrap();
        assert_eq!(c.layer_windows, vec![Some(4), None]);
        assert_eq!(c.attn_scale, 1.0 / 16.0);
        assert!(c.norm_plus_one && c.sandwich_norms && c.tie_embeddings);
        assert_eq!(c.attn_softcap, Some(50.0));
    }
}
