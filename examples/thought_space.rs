//! Trains a Thought Space on a rationale file and reports held-out retrieval before and after.
//!
//! ```text
//! python3 scripts/thoughtspace/make_genre_pairs.py assets/ml-100k runs/genre_pairs.jsonl
//! cargo run --release --example thought_space -- --model assets/all-minilm-l6-v2 \
//!     --pairs runs/genre_pairs.jsonl --out runs/thought_space --epochs 1 --temperature 0.05
//! ```
//! The rationale file is JSONL (`{"user": ..., "behaviour": ..., "rationale": ...}` per line) or,
//! when its name ends in `.parquet`, Parquet with the same columns.
//! Held-out users (the last `--held-out` of a seeded shuffle) never train; retrieval is
//! behaviour -> own rationale among groups of `--group-size` held-out users. The run directory
//! gets checkpoints (`epoch-NNN/`), `metrics.json` and `map.svg` (PCA of held-out behaviour and
//! rationale embeddings, before | after).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use pulserec::device::DeviceSpec;
use pulserec_thoughtspace::{
    EncoderOptions, InfoNceConfig, MapPanel, ThoughtSpace, ThoughtSpaceTrainer, TrainConfig,
    read_pairs, write_map_svg,
};
use rand::SeedableRng;
use rand::seq::SliceRandom;

#[derive(Parser, Debug)]
#[command(about = "Train a PULSE Thought Space on (behaviour, rationale) pairs")]
struct Args {
    /// Pretrained encoder directory used for both encoders.
    #[arg(long)]
    model: PathBuf,
    /// Rationale file (JSONL, or Parquet by the `.parquet` extension).
    #[arg(long)]
    pairs: PathBuf,
    /// Run directory (checkpoints, metrics.json, map.svg).
    #[arg(long, default_value = "runs/thought_space")]
    out: PathBuf,
    /// flex, tch, tch-cuda:N or cuda:N.
    #[arg(long, default_value = "flex")]
    device: DeviceSpec,
    /// Users held out of training.
    #[arg(long, default_value_t = 256)]
    held_out: usize,
    /// Retrieval group size.
    #[arg(long, default_value_t = 16)]
    group_size: usize,
    /// Epochs (paper: 53).
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Pairs per step (paper: 16).
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// InfoNCE temperature (paper code: 1.0).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// In-batch negatives per anchor (paper: 10).
    #[arg(long, default_value_t = 10)]
    negatives: usize,
    /// Use the symmetric (both directions) loss.
    #[arg(long)]
    symmetric: bool,
    /// AdamW learning rate (paper: 2e-5).
    #[arg(long, default_value_t = 2e-5)]
    lr: f64,
    /// Longest input in tokens.
    #[arg(long, default_value_t = 128)]
    max_len: usize,
    /// Seed of the held-out split, shuffling, negatives and dropout.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    pulserec::init_logging("info");
    let args = Args::parse();
    let device = args.device.device()?;
    let mut pairs = read_pairs(&args.pairs)?;
    anyhow::ensure!(
        pairs.len() > args.held_out + args.batch_size,
        "{} pairs are too few for {} held-out users and batch {}",
        pairs.len(),
        args.held_out,
        args.batch_size
    );
    pairs.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(args.seed));
    let (train, held_out) = pairs.split_at(pairs.len() - args.held_out);
    std::fs::create_dir_all(&args.out).with_context(|| args.out.display().to_string())?;

    let options = EncoderOptions {
        max_len: Some(args.max_len),
        ..Default::default()
    };
    let space = ThoughtSpace::from_pretrained(&args.model, &options, &device)?;
    let before = space.retrieval(held_out, args.group_size)?;
    let n_map = held_out.len().min(200);
    let (b0, r0) = space.embed_pairs(&held_out[..n_map])?;
    println!(
        "before training: held-out retrieval@{} accuracy {:.3}, MRR {:.3}, margin {:.3} ({} users)",
        args.group_size, before.accuracy, before.mrr, before.margin, before.n
    );

    let config = TrainConfig {
        loss: InfoNceConfig {
            temperature: args.temperature,
            negatives: Some(args.negatives),
            symmetric: args.symmetric,
        },
        batch_size: args.batch_size,
        epochs: args.epochs,
        learning_rate: args.lr,
        seed: args.seed,
        ..Default::default()
    };
    let mut trainer = ThoughtSpaceTrainer::new(space, config.clone())?;
    let bar = pulserec_train::progress_bar(0, "thought space");
    let start = Instant::now();
    let report = trainer.fit(train, Some(&args.out), &bar)?;
    let secs = start.elapsed().as_secs_f64();
    let trained = trainer.into_space();
    let after = trained.retrieval(held_out, args.group_size)?;
    let (b1, r1) = trained.embed_pairs(&held_out[..n_map])?;
    println!(
        "after training:  held-out retrieval@{} accuracy {:.3}, MRR {:.3}, margin {:.3}",
        args.group_size, after.accuracy, after.mrr, after.margin
    );
    let map = args.out.join("map.svg");
    let panel = |title, b, r| MapPanel {
        title,
        behaviour: b,
        rationale: r,
    };
    write_map_svg(
        &map,
        &[
            panel("held-out pairs, before training", &b0, &r0),
            panel("held-out pairs, after training", &b1, &r1),
        ],
    )?;
    let metrics = serde_json::json!({
        "pairs": args.pairs, "train_users": train.len(), "held_out_users": held_out.len(),
        "config": config, "device": args.device.to_string(),
        "before": before, "after": after, "train": report,
    });
    std::fs::write(
        args.out.join("metrics.json"),
        serde_json::to_string_pretty(&metrics)?,
    )?;
    println!(
        "{} steps in {:.1}s ({:.2} steps/s, {:.1} pairs/s); checkpoint {}; map {}",
        report.steps,
        secs,
        report.steps as f64 / secs,
        (report.steps * args.batch_size) as f64 / secs,
        report
            .checkpoint
            .as_ref()
            .map_or("none".into(), |p| p.display().to_string()),
        map.display()
    );
    Ok(())
}
