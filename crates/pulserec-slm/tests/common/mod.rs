//! Shared test helpers: locating the SmolLM2 asset and loading it once per test binary.

use std::path::PathBuf;
use std::sync::OnceLock;

use pulserec_slm::{LoadOptions, Slm, WeightMode};

/// `$PULSEREC_ASSETS/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` (default `<workspace>/assets`).
///
/// Missing: `None` (the test is skipped with a message), unless `CI` is set, where a missing
/// asset fails the test.
pub fn smollm2_path() -> Option<PathBuf> {
    let root = std::env::var_os("PULSEREC_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets"));
    let path = root.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: run `cargo xtask assets` (or set PULSEREC_ASSETS)",
        path.display()
    );
    eprintln!(
        "skipping: {} is missing (run `cargo xtask assets`)",
        path.display()
    );
    None
}

/// SmolLM2 loaded on `device` with weights in `mode` (`None` when the asset is missing).
pub fn load_on(mode: WeightMode, device: &burn::tensor::Device) -> Option<Slm> {
    let path = smollm2_path()?;
    let opts = LoadOptions {
        weights: mode,
        max_batch: 32,
        ..LoadOptions::default()
    };
    Some(Slm::load_with(&path, device, &opts).expect("load SmolLM2"))
}

fn load(mode: WeightMode) -> Option<Slm> {
    load_on(mode, &burn::tensor::Device::flex())
}

/// The model with f32 weights (the exact counterpart of the HF float32 reference).
#[allow(dead_code)] // not every test binary uses both models
pub fn dense() -> Option<&'static Slm> {
    static M: OnceLock<Option<Slm>> = OnceLock::new();
    M.get_or_init(|| load(WeightMode::Dense)).as_ref()
}

/// The model with quantised weights and this crate's CPU kernels.
#[allow(dead_code)]
pub fn quantised() -> Option<&'static Slm> {
    static M: OnceLock<Option<Slm>> = OnceLock::new();
    M.get_or_init(|| load(WeightMode::Auto)).as_ref()
}

/// A tensor's values as a flat `Vec<f32>`.
#[allow(dead_code)]
pub fn tensor_values<const D: usize>(t: burn::tensor::Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Largest absolute difference between two equally long slices.
#[allow(dead_code)]
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Logits of every position of one row of `tokens` from the inference model, `[seq * vocab]`.
#[allow(dead_code)]
pub fn all_logits(m: &pulserec_slm::Llama, tokens: &[u32]) -> Vec<f32> {
    let mut cache = m.new_cache(1);
    let h = m.forward(tokens, 1, &[0], &mut cache).unwrap();
    let [_, t, d] = h.dims();
    m.logits(h.reshape([t, d])).unwrap()
}

/// Greedy decoding of `n` tokens through the low-level API, not stopping at EOS (the
/// references do not stop either). Returns the tokens and the logits of the first generated
/// position (the prompt's last position).
#[allow(dead_code)]
pub fn greedy_no_stop(slm: &Slm, prompt: &[u32], n: usize) -> (Vec<u32>, Vec<f32>) {
    let m = slm.model();
    let mut cache = m.new_cache(1);
    let h = m.forward(prompt, 1, &[0], &mut cache).unwrap();
    let first = m.last_logits(h).unwrap();
    let mut logits = first.clone();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = pulserec_slm::sampler::argmax(&logits);
        out.push(t);
        let h = m.forward(&[t], 1, &[], &mut cache).unwrap();
        logits = m.last_logits(h).unwrap();
    }
    (out, first)
}

/// `tests/fixtures/smollm2_reference.json` (written by `scripts/slm/reference.py`).
#[allow(dead_code)]
pub fn fixture() -> serde_json::Value {
    serde_json::from_str(include_str!("../fixtures/smollm2_reference.json")).unwrap()
}

/// A JSON array of token ids.
#[allow(dead_code)]
pub fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}
