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
    /// Texts to embed.
    #[arg(required = true)]
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
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
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
    let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
    let start = Instant::now();
    let embeddings = encoder.encode(&texts)?;
    let secs = start.elapsed().as_secs_f64();
    let rows: Vec<Vec<f32>> = embeddings.outer_iter().map(|r| r.to_vec()).collect();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", serde_json::to_string(&rows)?)?;
    eprintln!(
        "encoded {} texts ({} dims, {:?} pooling, normalised: {}) on {} in {:.3}s ({:.1} texts/s)",
        texts.len(),
        encoder.dim(),
        encoder.pooling(),
        encoder.normalizes(),
        args.device,
        secs,
        texts.len() as f64 / secs
    );
    Ok(())
}
