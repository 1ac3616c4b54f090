//! Embeds texts with a BERT-family sentence encoder and prints one JSON array of embeddings.
//!
//! ```text
//! cargo run --release --example encode -- --model assets/all-minilm-l6-v2 "text one" "text two"
//! ```
//! Pooling and normalisation follow the model directory (`1_Pooling/config.json`,
//! `modules.json`) unless overridden. The JSON goes to stdout; timing goes to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use pulserec::device::DeviceSpec;
use pulserec_core::TextEncoder;
use pulserec_thoughtspace::{EncoderOptions, Pooling, SentenceEncoder};

#[derive(Parser, Debug)]
#[command(about = "Embed texts with a BERT-family encoder; prints a JSON array of embeddings")]
struct Args {
    /// Model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// flex, tch, tch-cuda:N or cuda:N.
    #[arg(long, default_value = "flex")]
    device: DeviceSpec,
    /// Override the pooling: cls or mean.
    #[arg(long, value_parser = parse_pooling)]
    pooling: Option<Pooling>,
    /// Force L2 normalisation on (true) or off (false).
    #[arg(long)]
    normalize: Option<bool>,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Also read texts from this file: one per line, or the second TAB column of a RecBole
    /// `.item` file (header skipped) when `--item-file` is set.
    #[arg(long)]
    texts_file: Option<PathBuf>,
    /// Treat `--texts-file` as a RecBole `.item` file and embed its titles.
    #[arg(long)]
    item_file: bool,
    /// Encode this many times and report the median rate (for benchmarks).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Texts to embed.
    texts: Vec<String>,
}

fn parse_pooling(s: &str) -> Result<Pooling, String> {
    match s {
        "cls" => Ok(Pooling::Cls),
        "mean" => Ok(Pooling::Mean),
        other => Err(format!("unknown pooling `{other}` (cls or mean)")),
    }
}

fn main() -> anyhow::Result<()> {
    pulserec::malloc::tune_malloc();
    pulserec::init_logging("warn");
    let args = Args::parse();
    let device = args.device.device()?;
    let options = EncoderOptions {
        pooling: args.pooling,
        normalize: args.normalize,
        batch_size: Some(args.batch_size),
        ..Default::default()
    };
    let encoder = SentenceEncoder::from_dir_with(&args.model, &options, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let mut owned = args.texts.clone();
    if let Some(path) = &args.texts_file {
        let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
        if args.item_file {
            owned.extend(
                text.lines()
                    .skip(1)
                    .filter_map(|l| l.split('\t').nth(1).map(str::to_string)),
            );
        } else {
            owned.extend(text.lines().map(str::to_string));
        }
    }
    anyhow::ensure!(!owned.is_empty(), "no texts given");
    let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
    // A first untimed pass warms up allocations; the median timed pass is reported.
    let mut embeddings = encoder.encode(&texts)?;
    let mut timed = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let start = Instant::now();
        embeddings = encoder.encode(&texts)?;
        timed.push(start.elapsed().as_secs_f64());
    }
    timed.sort_by(f64::total_cmp);
    let secs = timed[timed.len() / 2];
    let rows: Vec<Vec<f32>> = embeddings.outer_iter().map(|r| r.to_vec()).collect();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string(&rows)?)?;
    eprintln!(
        "encoded {} texts ({} dims, {:?} pooling, normalised: {}) on {} in {:.3}s ({:.1} texts/s, median of {})",
        texts.len(),
        encoder.dim(),
        encoder.pooling(),
        encoder.normalizes(),
        args.device,
        secs,
        texts.len() as f64 / secs,
        args.repeat.max(1)
    );
    Ok(())
}
