//! Model configuration from GGUF metadata (llama.cpp's key names), mapped onto [`Config`].
//!
//! Keys are `<arch>.embedding_length`, `<arch>.attention.head_count`, ... with `<arch>` the value of
//! `general.architecture`. Integers are accepted in any integer type (llama.cpp writes u32, the spec says
//! u64), and per-layer arrays whose entries are all equal read as one value.

use crate::config::{Activation, Arch, Config, RopeScalingConfig};
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufError, GgufFile};

/// `general.architecture` values torchless runs.
pub const SUPPORTED: &str = "llama, mistral, qwen2, qwen3, gemma2, phi3";

/// llama.cpp's converter permutes Q/K rows for these (LLAMA_ROPE_TYPE_NORM: adjacent pairs rotate);
/// the others use NEOX rope, which is Hugging Face's half-split order already.
fn permuted(arch: Arch) -> bool {
    matches!(arch, Arch::Llama | Arch::Mistral)
}

pub fn arch_of(name: &str) -> Option<Arch> {
    Some(match name {
        "llama" => Arch::Llama,
        "mistral" => Arch::Mistral,
        "qwen2" => Arch::Qwen2,
        "qwen3" => Arch::Qwen3,
        "gemma2" => Arch::Gemma2,
        "phi3" => Arch::Phi3,
        _ => return None,
    })
}

/// Reads an f32 tensor (rope factors) into host memory.
fn f32_tensor(file: &GgufFile, name: &str) -> Result<Option<Vec<f32>>> {
    let Some(info) = file.header.tensor(name) else { return Ok(None) };
    if info.ty != GgmlType::F32 {
        return Err(Error::TensorDType { name: name.to_string(), found: format!("{} (expected F32)", info.ty) });
    }
    Ok(Some(file.tensor_bytes(info).chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()))
}

impl Config {
    pub fn from_gguf(file: &GgufFile) -> Result<Config> {
        let h = &file.header;
        let g = |e: GgufError| Error::Gguf { path: file.path.clone(), source: e };
        let arch_name = h.require_str("general.architecture").map_err(g)?;
        let arch = arch_of(arch_name).ok_or_else(|| Error::UnsupportedArchitecture {
            found: format!("{arch_name} (general.architecture of {})", file.path.display()),
            supported: SUPPORTED,
        })?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let positive = |k: &str| -> Result<usize> {
            let v = h.require_usize(&key(k)).map_err(g)?;
            if v == 0 {
                return Err(Error::config(key(k), "must be positive"));
            }
            Ok(v)
        };
        let dim = positive("embedding_length")?;
        let n_layers = positive("block_count")?;
        let hidden_dim = positive("feed_forward_length")?;
        let n_heads = positive("attention.head_count")?;
        let n_kv_heads = h.get_usize(&key("attention.head_count_kv")).map_err(g)?.unwrap_or(n_heads);
        if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(Error::config(
                key("attention.head_count_kv"),
                format!("{n_kv_heads} does not divide attention.head_count = {n_heads}"),
            ));
        }
        let head_dim = h.get_usize(&key("attention.key_length")).map_err(g)?.unwrap_or(dim / n_heads);
        if head_dim == 0 || head_dim % 2 != 0 {
            return Err(Error::config(key("attention.key_length"), format!("{head_dim} must be even and positive")));
        }
        // Sizes come from the file: bound them before anything is allocated from them. Every layer has
        // tensors, and no dimension of a real model comes near 2^24.
        if n_layers > h.tensors.len() {
            return Err(Error::config(
                key("block_count"),
                format!("{n_layers} layers but the file has only {} tensors", h.tensors.len()),
            ));
        }
        const LIMIT: usize = 1 << 24;
        for (k, v) in [
            ("embedding_length", dim),
            ("feed_forward_length", hidden_dim),
            ("attention.head_count", n_heads),
            ("attention.key_length", head_dim),
        ] {
            if v > LIMIT {
                return Err(Error::config(key(k), format!("{v} is larger than {LIMIT}")));
            }
        }
        if n_heads * head_dim > LIMIT {
            return Err(Error::config(
                key("attention.head_count"),
                format!("{n_heads} heads of {head_dim} are larger than {LIMIT}"),
            ));
        }
        if let Some(v) = h.get_usize(&key("attention.value_length")).map_err(g)?
            && v != head_dim
        {
            return Err(Error::config(
                key("attention.value_length"),
                format!("{v} differs from the key length {head_dim}, which is not supported"),
            ));
        }
        // The vocabulary is the embedding's row count.
        let embd =
            h.tensor("token_embd.weight").ok_or_else(|| Error::MissingTensor { name: "token_embd.weight".into() })?;
        let vocab_size = match embd.dims.as_slice() {
            [d, v] if *d as usize == dim && *v > 0 => *v as usize,
            _ => {
                return Err(Error::TensorShape {
                    name: "token_embd.weight".into(),
                    expected: vec![0, dim],
                    found: embd.shape(),
                });
            }
        };
        let max_seq_len = h.get_usize(&key("context_length")).map_err(g)?.unwrap_or(4096).max(1);
        let eps_key = key("attention.layer_norm_rms_epsilon");
        let norm_eps = crate::config::checked_norm_eps(&eps_key, h.get_f32(&eps_key).map_err(g)?.unwrap_or(1e-5))?;
        let rope_theta = h.get_f32(&key("rope.freq_base")).map_err(g)?.unwrap_or(10000.0);
        if !(rope_theta.is_finite() && rope_theta > 0.0) {
            return Err(Error::config(key("rope.freq_base"), format!("{rope_theta} must be positive")));
        }
        let rot_dim = h.get_usize(&key("rope.dimension_count")).map_err(g)?.unwrap_or(head_dim);
        if rot_dim == 0 || rot_dim % 2 != 0 || rot_dim > head_dim {
            return Err(Error::config(
                key("rope.dimension_count"),
                format!("{rot_dim} must be even, positive and at most the head dim {head_dim}"),
            ));
        }

        let mut rope_scaling = match h.get_str(&key("rope.scaling.type")).map_err(g)? {
            None | Some("none") => RopeScalingConfig::None,
            Some("linear") => {
                let factor = h.get_f32(&key("rope.scaling.factor")).map_err(g)?.unwrap_or(1.0);
                if !(factor.is_finite() && factor > 0.0) {
                    return Err(Error::config(key("rope.scaling.factor"), format!("{factor} must be positive")));
                }
                if factor == 1.0 { RopeScalingConfig::None } else { RopeScalingConfig::Linear { factor } }
            }
            Some(other) => {
                return Err(Error::config(
                    key("rope.scaling.type"),
                    format!("{other:?} is not supported (none, linear, or Llama-3 rope_freqs.weight)"),
                ));
            }
        };
        if let Some(f) = h.get_f32(&key("rope.scale_linear")).map_err(g)?
            && f != 1.0
        {
            if !(f.is_finite() && f > 0.0) {
                return Err(Error::config(key("rope.scale_linear"), format!("{f} must be positive")));
            }
            rope_scaling = RopeScalingConfig::Linear { factor: f };
        }
        if let Some(factors) = f32_tensor(file, "rope_freqs.weight")? {
            if factors.len() != rot_dim / 2 || factors.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
                return Err(Error::TensorShape {
                    name: "rope_freqs.weight".into(),
                    expected: vec![rot_dim / 2],
                    found: vec![factors.len()],
                });
            }
            rope_scaling = RopeScalingConfig::Factors(factors);
        }
        for unsupported in ["rope_factors_long.weight", "rope_factors_short.weight"] {
            if h.tensor(unsupported).is_some() {
                return Err(Error::config(unsupported, "LongRoPE scaling is not supported"));
            }
        }

        let gemma = arch == Arch::Gemma2;
        let window = h.get_usize(&key("attention.sliding_window")).map_err(g)?.filter(|&w| w > 0);
        let layer_windows = match arch {
            Arch::Mistral | Arch::Phi3 => vec![window; n_layers],
            // llama.cpp's Gemma 2: even layers use the sliding window.
            Arch::Gemma2 => (0..n_layers).map(|l| if l % 2 == 0 { window } else { None }).collect(),
            _ => vec![None; n_layers],
        };
        // llama.cpp's Gemma 2 scales queries by 1/sqrt(head_dim), except the 27B model (46 layers), whose
        // query_pre_attn_scalar is n_embd / n_head.
        let attn_scale = if gemma && n_layers == 46 {
            1.0 / ((dim / n_heads) as f32).sqrt()
        } else {
            1.0 / (head_dim as f32).sqrt()
        };
        let softcap = |k: &str| -> Result<Option<f32>> {
            Ok(if gemma { h.get_f32(&key(k)).map_err(g)?.filter(|c| *c > 0.0) } else { None })
        };
        let token =
            |k: &str| -> Result<Option<u32>> { Ok(h.get_usize(k).map_err(g)?.and_then(|v| u32::try_from(v).ok())) };
        let bos_token_id = token("tokenizer.ggml.bos_token_id")?;
        let mut eos_token_ids = Vec::new();
        for k in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            if let Some(id) = token(k)?
                && !eos_token_ids.contains(&id)
            {
                eos_token_ids.push(id);
            }
        }

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
            // llama.cpp's converter stores Gemma's norm weights as 1 + w already.
            norm_plus_one: false,
            rope_theta,
            rope_scaling,
            rot_dim,
            activation: if gemma { Activation::GeluTanh } else { Activation::Silu },
            qkv_bias: h.tensor("blk.0.attn_q.bias").is_some(),
            qk_norm: h.tensor("blk.0.attn_q_norm.weight").is_some(),
            sandwich_norms: gemma,
            attn_softcap: softcap("attn_logit_softcapping")?,
            final_softcap: softcap("final_logit_softcapping")?,
            attn_scale,
            layer_windows,
            embed_scale: gemma.then(|| (dim as f32).sqrt()),
            tie_embeddings: h.tensor("output.weight").is_none(),
            bos_token_id,
            eos_token_ids,
            qk_rows_paired: permuted(arch),
        })
    }
}

/// The GGUF tensor name of a Hugging Face weight name (`model.layers.3.self_attn.q_proj.weight` →
/// `blk.3.attn_q.weight`), or `None` when there is no counterpart.
pub fn gguf_name(arch: Arch, hf: &str) -> Option<String> {
    match hf {
        "model.embed_tokens.weight" => return Some("token_embd.weight".into()),
        "model.norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, suffix) = rest.rsplit_once('.')?;
    let gemma = arch == Arch::Gemma2;
    let name = match module {
        "input_layernorm" => "attn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "self_attn.qkv_proj" => "attn_qkv",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        "post_attention_layernorm" if gemma => "post_attention_norm",
        "post_attention_layernorm" => "ffn_norm",
        "pre_feedforward_layernorm" => "ffn_norm",
        "post_feedforward_layernorm" => "post_ffw_norm",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.gate_up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{name}.{suffix}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::Value;
    use crate::gguf::writer::Writer;

    fn file(w: Writer) -> GgufFile {
        GgufFile::from_bytes("test.gguf", w.to_bytes()).unwrap()
    }

    fn base() -> Writer {
        Writer::default()
            .kv("general.architecture", Value::String("llama".into()))
            .kv("llama.embedding_length", Value::U64(64))
            .kv("llama.block_count", Value::U16(2))
            .kv("llama.feed_forward_length", Value::I32(96))
            .kv("llama.attention.head_count", Value::U32(4))
            .kv("llama.attention.head_count_kv", Value::Array(crate::gguf::Array::U8(vec![2, 2])))
            .kv("llama.rope.freq_base", Value::F32(500000.0))
            .kv("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-6))
            .kv("tokenizer.ggml.eos_token_id", Value::U32(2))
            .kv("tokenizer.ggml.eot_token_id", Value::I64(7))
            .f32_tensor("token_embd.weight", &[64, 10], &[0.0; 640])
            .f32_tensor("output_norm.weight", &[64], &[1.0; 64])
    }

    #[test]
    fn reads_llama_metadata_in_any_integer_type() {
        let c = Config::from_gguf(&file(base())).unwrap();
        assert_eq!((c.dim, c.n_layers, c.hidden_dim, c.n_heads, c.n_kv_heads), (64, 2, 96, 4, 2));
        assert_eq!((c.head_dim, c.rot_dim, c.vocab_size, c.max_seq_len), (16, 16, 10, 4096));
        assert_eq!((c.rope_theta, c.norm_eps), (500000.0, 1e-6));
        assert_eq!(c.eos_token_ids, vec![2, 7]);
        assert!(c.tie_embeddings && c.qk_rows_paired && !c.qkv_bias);
        assert_eq!(c.rope_scaling, RopeScalingConfig::None);
    }

    #[test]
    fn rope_factors_and_scaling_keys() {
        let c = Config::from_gguf(&file(base().f32_tensor(
            "rope_freqs.weight",
            &[8],
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        )))
        .unwrap();
        assert!(matches!(c.rope_scaling, RopeScalingConfig::Factors(ref f) if f.len() == 8 && f[7] == 8.0));
        let e = Config::from_gguf(&file(base().f32_tensor("rope_freqs.weight", &[3], &[1.0; 3]))).unwrap_err();
        assert!(e.to_string().contains("rope_freqs.weight"), "{e}");
        let w = base()
            .kv("llama.rope.scaling.type", Value::String("linear".into()))
            .kv("llama.rope.scaling.factor", Value::F32(4.0));
        assert_eq!(Config::from_gguf(&file(w)).unwrap().rope_scaling, RopeScalingConfig::Linear { factor: 4.0 });
        let w = base().kv("llama.rope.scaling.type", Value::String("yarn".into()));
        let e = Config::from_gguf(&file(w)).unwrap_err().to_string();
        assert!(e.contains("llama.rope.scaling.type") && e.contains("yarn"), "{e}");
    }

    #[test]
    fn bad_metadata_names_the_key() {
        let w = Writer {
            metadata: base().metadata.into_iter().filter(|(k, _)| k != "llama.block_count").collect(),
            ..base()
        };
        let e = Config::from_gguf(&file(w)).unwrap_err().to_string();
        assert!(e.contains("llama.block_count") && e.contains("missing"), "{e}");
        let mut w = base();
        w.metadata.retain(|(k, _)| k != "llama.block_count");
        let w = w.kv("llama.block_count", Value::U64(1 << 60));
        let e = Config::from_gguf(&file(w)).unwrap_err().to_string();
        assert!(e.contains("llama.block_count") && e.contains("tensors"), "{e}");
        let mut w = base();
        w.metadata.retain(|(k, _)| k != "llama.attention.head_count");
        let w = w.kv("llama.attention.head_count", Value::U64(1 << 40)).kv("llama.attention.key_length", Value::U8(16));
        let e = Config::from_gguf(&file(w)).unwrap_err().to_string();
        assert!(e.contains("llama.attention.head_count"), "{e}");
        let w = base().kv("llama.attention.key_length", Value::F32(16.0));
        let e = Config::from_gguf(&file(w)).unwrap_err().to_string();
        assert!(e.contains("llama.attention.key_length"), "{e}");
        let mut w = base();
        w.metadata[0].1 = Value::String("bert".into());
        let e = Config::from_gguf(&file(w)).unwrap_err().to_string();
        assert!(e.contains("bert") && e.contains("qwen2") && e.contains("gemma2"), "{e}");
        let mut w = base();
        w.tensors[0].0 = "renamed.weight".into();
        assert!(Config::from_gguf(&file(w)).unwrap_err().to_string().contains("token_embd.weight"));
    }

    #[test]
    fn names_map_to_llama_cpp() {
        let n = |a, s| gguf_name(a, s).unwrap();
        assert_eq!(n(Arch::Llama, "model.layers.3.self_attn.q_proj.weight"), "blk.3.attn_q.weight");
        assert_eq!(n(Arch::Qwen2, "model.layers.0.self_attn.k_proj.bias"), "blk.0.attn_k.bias");
        assert_eq!(n(Arch::Llama, "model.layers.1.post_attention_layernorm.weight"), "blk.1.ffn_norm.weight");
        assert_eq!(
            n(Arch::Gemma2, "model.layers.1.post_attention_layernorm.weight"),
            "blk.1.post_attention_norm.weight"
        );
        assert_eq!(n(Arch::Gemma2, "model.layers.1.post_feedforward_layernorm.weight"), "blk.1.post_ffw_norm.weight");
        assert_eq!(n(Arch::Phi3, "model.layers.0.mlp.gate_up_proj.weight"), "blk.0.ffn_up.weight");
        assert_eq!(n(Arch::Llama, "lm_head.weight"), "output.weight");
        assert!(gguf_name(Arch::Llama, "model.layers.0.weird.weight").is_none());
    }
}
