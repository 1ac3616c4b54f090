//! HF-directory loading (config.json + safetensors) for Llama, Qwen2 (q/k/v biases, tied
//! embeddings) and Phi-3 (fused qkv / gate_up), against transformers float32 logits.
//!
//! Fixtures: tiny random checkpoints and logits from `scripts/slm/tiny_hf_models.py`
//! (transformers 5.24, torch 2.9). Tolerance 1e-4 absolute on logits of magnitude ~1.

use std::path::PathBuf;

use burn::tensor::Device;
use pulserec_slm::{Llama, LlamaConfig, WeightMode, weights::ModelWeights};

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(name)
}

fn check(arch: &str) {
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/hf/logits.json")).unwrap();
    let ids: Vec<u32> = reference["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let d = dir(arch);
    let cfg = LlamaConfig::from_hf_json(d.join("config.json")).unwrap();
    let w = ModelWeights::from_hf_dir(&d, &cfg).unwrap();
    let device = Device::flex();
    let model = Llama::new(cfg, &w, WeightMode::Auto, &device).unwrap();
    let mut cache = model.new_cache(1);
    let h = model.forward(&ids, 1, &[0], &mut cache).unwrap();
    let vocab = model.config().vocab_size;
    let [_, t, hid] = h.dims();
    let all = model.logits(h.reshape([t, hid])).unwrap();
    for (key, row) in [("first", 0), ("last", t - 1)] {
        let want = reference[arch][key].as_array().unwrap();
        for (j, v) in want.iter().enumerate() {
            let got = all[row * vocab + j];
            let v = v.as_f64().unwrap() as f32;
            assert!(
                (got - v).abs() < 1e-4,
                "{arch} {key} logit {j}: {got} vs {v}"
            );
        }
    }
}

#[test]
fn llama_dir_matches_transformers() {
    check("llama");
}

#[test]
fn qwen2_dir_with_biases_matches_transformers() {
    check("qwen2");
}

#[test]
fn phi3_dir_with_fused_projections_matches_transformers() {
    check("phi3");
}

#[test]
fn missing_and_malformed_files_are_errors() {
    let d = dir("llama");
    let cfg = LlamaConfig::from_hf_json(d.join("config.json")).unwrap();
    let e = ModelWeights::from_hf_dir(&dir("nope"), &cfg).unwrap_err();
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("model.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{bad",
    )
    .unwrap();
    let e = ModelWeights::from_hf_dir(tmp.path(), &cfg).unwrap_err();
    assert!(e.to_string().contains("model.safetensors"), "{e}");
    // A Qwen2 config with the wrong width: the tensor's shape mismatch is named.
    let mut wrong = LlamaConfig::from_hf_json(dir("qwen2").join("config.json")).unwrap();
    wrong.intermediate_size = 65;
    let e = ModelWeights::from_hf_dir(&dir("qwen2"), &wrong).unwrap_err();
    assert!(e.to_string().contains("mlp"), "{e}");
}
