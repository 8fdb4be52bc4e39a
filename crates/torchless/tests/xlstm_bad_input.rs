//! Broken xLSTM directories give clear errors naming the field or tensor, never a panic: inconsistent
//! head dimensions, a missing gate tensor, an unsupported weight_mode. Each test writes a small broken
//! copy of a parity fixture into a temporary directory.

use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use serde_json::{Value, json};
use torchless::model::{LoadedModel, Logits};
use torchless_kernels::Backend;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A copy of fixture `name` in a fresh temporary directory, with `edit` applied to its config.json and the
/// tensor `drop` (if any) left out of model.safetensors.
fn broken_copy(test: &str, name: &str, edit: impl FnOnce(&mut Value), drop: Option<&str>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("torchless-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture(name);
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, TensorView<'_>)> =
        st.tensors().into_iter().filter(|(n, _)| Some(n.as_str()) != drop).collect();
    assert_eq!(kept.len() + drop.is_some() as usize, st.len(), "the dropped tensor exists");
    std::fs::write(dir.join("model.safetensors"), safetensors::serialize(kept, None).unwrap()).unwrap();
    dir
}

/// Loading `dir` fails with an error mentioning every one of `needles`.
fn assert_load_error(dir: &Path, needles: &[&str]) {
    let err = match LoadedModel::load(dir.to_str().unwrap(), &Backend::Cpu, false) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    };
    for n in needles {
        assert!(err.contains(n), "error should mention {n:?}: {err}");
    }
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn the_fixtures_load() {
    for name in ["xlstm", "xlstm_fused"] {
        let dir = broken_copy(&format!("ok-{name}"), name, |_| {}, None);
        LoadedModel::load(dir.to_str().unwrap(), &Backend::Cpu, false).expect("an unbroken copy loads");
        std::fs::remove_dir_all(dir).ok();
    }
}

#[test]
fn qk_dim_not_divisible_by_heads() {
    // 64 × 0.3 = 19 q/k features cannot be split over 2 heads.
    let dir = broken_copy("qk-heads", "xlstm", |c| c["qk_dim_factor"] = json!(0.3), None);
    assert_load_error(&dir, &["qk_dim_factor", "19", "num_heads = 2"]);
}

#[test]
fn hidden_size_not_divisible_by_heads() {
    // hidden 64 with v_dim_factor 1: 64 v features over 3 heads (q/k: 64 × 0.75 = 48 would split).
    let dir = broken_copy(
        "hidden-heads",
        "xlstm",
        |c| {
            c["num_heads"] = json!(3);
            c["qk_dim_factor"] = json!(0.75);
            c["v_dim_factor"] = json!(1.0);
        },
        None,
    );
    assert_load_error(&dir, &["v_dim_factor", "hidden_size 64", "num_heads = 3"]);
}

#[test]
fn head_count_that_does_not_match_the_gate_tensors() {
    // 4 heads divide the widths, but the gate projections hold 2 rows (one per head).
    let dir = broken_copy("heads-gates", "xlstm", |c| c["num_heads"] = json!(4), None);
    assert_load_error(&dir, &["backbone.blocks.0.mlstm_layer.igate_preact.weight", "[4, 64]", "[2, 64]"]);
}

#[test]
fn missing_gate_tensor_is_named() {
    let name = "backbone.blocks.1.mlstm_layer.fgate_preact.weight";
    let dir = broken_copy("missing-fgate", "xlstm", |_| {}, Some(name));
    assert_load_error(&dir, &[name, "not found"]);
    let name = "backbone.blocks.0.mlstm_layer.ifgate_preact.bias";
    let dir = broken_copy("missing-ifgate-bias", "xlstm_fused", |_| {}, Some(name));
    assert_load_error(&dir, &[name, "not found"]);
}

#[test]
fn unsupported_weight_mode_is_named() {
    let dir = broken_copy("weight-mode", "xlstm", |c| c["weight_mode"] = json!("mixed"), None);
    assert_load_error(&dir, &["weight_mode", "mixed", "single, fused"]);
}

#[test]
fn weight_mode_that_does_not_match_the_file() {
    // A single-mode file read as fused: the fused tensor is missing, by name.
    let dir = broken_copy("fused-vs-single", "xlstm", |c| c["weight_mode"] = json!("fused"), None);
    assert_load_error(&dir, &["backbone.blocks.0.mlstm_layer.qkv_opreact.weight", "not found"]);
}

#[test]
fn other_bad_fields_are_named() {
    for (field, value, needle) in [
        ("use_bias", json!(true), "use_bias"),
        ("embedding_dim", json!(32), "embedding_dim"),
        ("num_blocks", json!(3), "num_blocks"),
        ("gate_soft_cap", json!(-1.0), "gate_soft_cap"),
        ("chunk_size", json!(0), "chunk_size"),
    ] {
        let dir = broken_copy(&format!("field-{field}"), "xlstm", |c| c[field] = value, None);
        assert_load_error(&dir, &[needle]);
    }
}

#[test]
fn a_state_of_another_architecture_is_an_error() {
    let load = |name: &str| LoadedModel::load(fixture(name).to_str().unwrap(), &Backend::Cpu, false).unwrap().model;
    let (xlstm, llama) = (load("xlstm"), load("llama"));
    let mut llama_state = llama.new_state(4).unwrap();
    let err = xlstm.forward(&mut llama_state, &[5, 6], 0, Logits::Last).unwrap_err().to_string();
    assert!(err.contains("state"), "{err}");
    let mut xlstm_state = xlstm.new_state(4).unwrap();
    assert!(llama.forward(&mut xlstm_state, &[5, 6], 0, Logits::Last).is_err());
    // The recurrent state has no length: a state made for 4 tokens takes 40.
    let tokens: Vec<u32> = (10..50).collect();
    let logits = xlstm.forward(&mut xlstm_state, &tokens, 0, Logits::All).unwrap();
    assert_eq!(logits.shape(), [40, 256]);
    assert!(logits.to_f32_vec().unwrap().iter().all(|v| v.is_finite()));
}
