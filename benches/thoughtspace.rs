//! Thought-Space benches on the flex CPU device: MiniLM encoding of 32 Games titles, and one
//! InfoNCE + AdamW step of both encoders (batch 16, K = 10, temperature 1.0: the paper's step).
//!
//! `cargo bench --bench thoughtspace`. Needs `assets/all-minilm-l6-v2` (`cargo xtask assets`;
//! `PULSEREC_ASSETS` overrides the folder) and the Games catalogue in
//! `../shared/data/amazon-games-2018` (`PULSEREC_GAMES` overrides the file); skipped without.

use std::path::PathBuf;

use burn::tensor::Device;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use pulserec_core::TextEncoder;
use pulserec_thoughtspace::{
    EncoderOptions, SentenceEncoder, ThoughtSpace, ThoughtSpaceTrainer, TrainConfig, TrainingPair,
};

fn model_dir() -> PathBuf {
    std::env::var_os("PULSEREC_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets"))
        .join("all-minilm-l6-v2")
}

fn games_titles(n: usize) -> Option<Vec<String>> {
    let path = std::env::var_os("PULSEREC_GAMES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../shared/data/amazon-games-2018/Games-6k.item")
        });
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .skip(1)
            .filter_map(|l| l.split('\t').nth(1).map(str::to_string))
            .take(n)
            .collect(),
    )
}

fn benches(c: &mut Criterion) {
    let dir = model_dir();
    let Some(titles) = games_titles(512) else {
        eprintln!("skipping: Games catalogue not found");
        return;
    };
    if !dir.exists() {
        eprintln!("skipping: {} not found", dir.display());
        return;
    }
    let device = Device::flex();
    let encoder = SentenceEncoder::from_dir(&dir, &device).expect("MiniLM loads");
    let mut group = c.benchmark_group("thoughtspace/flex");
    // Steps take seconds on two cores: flat sampling runs exactly `sample_size` iterations.
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    let batch: Vec<&str> = titles[..32].iter().map(String::as_str).collect();
    group.throughput(Throughput::Elements(32));
    group.bench_function("encode_minilm_games_titles_b32", |b| {
        b.iter(|| encoder.encode(&batch).expect("encodes"))
    });

    let options = EncoderOptions {
        max_len: Some(128),
        ..Default::default()
    };
    let space = ThoughtSpace::from_pretrained(&dir, &options, &device).expect("space loads");
    let pairs: Vec<TrainingPair> = (0..16)
        .map(|i| TrainingPair {
            user: i.to_string(),
            behaviour: format!(
                "History: {}. Chosen: {}",
                titles[i * 8..i * 8 + 8].join("; "),
                titles[300 + i]
            ),
            rationale: format!(
                "They keep buying games like {} and {}, so {} fits their taste.",
                titles[i * 8],
                titles[i * 8 + 1],
                titles[300 + i]
            ),
        })
        .collect();
    let refs: Vec<&TrainingPair> = pairs.iter().collect();
    let mut trainer = ThoughtSpaceTrainer::new(space, TrainConfig::default()).expect("trainer");
    group.throughput(Throughput::Elements(16));
    group.bench_function("infonce_step_minilm_b16_k10", |b| {
        b.iter(|| trainer.step(&refs, 0).expect("step"))
    });
    group.finish();
}

criterion_group!(thoughtspace, benches);
criterion_main!(thoughtspace);
