//! Test helpers: asset location and one shared encoder per test binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use pulserec_thoughtspace::SentenceEncoder;

/// `PULSEREC_ASSETS`, or `<workspace root>/assets`.
pub fn assets_dir() -> PathBuf {
    std::env::var_os("PULSEREC_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../assets"))
}

/// The asset at `rel`, or `None` (with a note) when it is missing; under `CI` a missing asset
/// fails the test instead of skipping it.
pub fn asset(rel: &str) -> Option<PathBuf> {
    let path = assets_dir().join(rel);
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "asset {} is missing (run `cargo xtask assets`)",
            path.display()
        );
    }
    eprintln!(
        "skipping: asset {} is missing (run `cargo xtask assets`)",
        path.display()
    );
    None
}

/// all-MiniLM-L6-v2 on the flex device, loaded once per test binary.
pub fn minilm() -> Option<&'static SentenceEncoder> {
    static ENCODER: OnceLock<Option<SentenceEncoder>> = OnceLock::new();
    ENCODER
        .get_or_init(|| {
            let dir = asset("all-minilm-l6-v2")?;
            Some(
                SentenceEncoder::from_dir(&dir, &burn::tensor::Device::flex())
                    .expect("MiniLM loads"),
            )
        })
        .as_ref()
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}
