//! Shared test fixtures: a toy data set and the real SmolLM2 tokenizer.
#![allow(dead_code)]

use pulserec_core::Interaction;
use pulserec_data::Dataset;
use pulserec_slm::{GgufFile, SlmTokenizer};

/// 12 users over 40 titled items; user `u` has `6 + u % 5` items, walking the catalogue with a
/// user-specific stride so histories differ.
pub fn toy_dataset() -> Dataset {
    let mut interactions = Vec::new();
    for u in 0..12u32 {
        let len = 6 + u % 5;
        for k in 0..len {
            let item = (u * 7 + k * (u % 3 + 1)) % 40;
            interactions.push(Interaction::new(format!("user{u}"), format!("item{item}")));
        }
    }
    let items = (0..40).map(|i| {
        (
            format!("item{i}"),
            format!("Game number {i} &amp; friends"),
            String::new(),
        )
    });
    Dataset::from_interactions(interactions, items).expect("toy data set")
}

/// The SmolLM2 GGUF, when the assets are there.
pub fn smollm2_path() -> Option<std::path::PathBuf> {
    pulserec_data::locate::asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// SmolLM2's tokenizer from its GGUF.
pub fn smollm2_tokenizer() -> Option<SlmTokenizer> {
    let path = smollm2_path()?;
    let gguf = GgufFile::open(&path).expect("open gguf");
    Some(SlmTokenizer::from_gguf(&gguf).expect("tokenizer"))
}
