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

fn load(mode: WeightMode) -> Option<Slm> {
    let path = smollm2_path()?;
    let opts = LoadOptions {
        weights: mode,
        max_batch: 32,
    };
    Some(Slm::load_with(&path, &burn::tensor::Device::flex(), &opts).expect("load SmolLM2"))
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
