//! Completes a prompt on any OpenAI-compatible completions server (llama.cpp's server, vLLM, or
//! `--example serve`) through `pulserec_tot::RemoteGenerator`, printing the text and the speed.
//!
//! ```text
//! cargo run --release --example remote_generate -- --url http://127.0.0.1:8080 \
//!     --prompt $'<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n' \
//!     --max-tokens 16 --temperature 0
//! ```

use std::time::Instant;

use clap::Parser;
use pulserec_core::{GenerationRequest, SamplingParams, TextGenerator};
use pulserec_tot::{RemoteConfig, RemoteGenerator};

#[derive(Parser, Debug)]
#[command(about = "Complete a prompt on an OpenAI-compatible server")]
struct Args {
    /// Server root, without `/v1`.
    #[arg(long)]
    url: String,
    /// Model name to send.
    #[arg(long, default_value = "default")]
    model: String,
    /// Raw prompt text.
    #[arg(long)]
    prompt: String,
    /// Maximum new tokens.
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Copies of the prompt to send (seeds seed..seed+n), `--concurrency` at a time.
    #[arg(long, default_value_t = 1)]
    n: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = RemoteConfig {
        concurrency: args.concurrency,
        ..RemoteConfig::new(&args.url, &args.model)
    };
    let mut remote = RemoteGenerator::new(config)?;
    let requests: Vec<GenerationRequest> = (0..args.n as u64)
        .map(|i| GenerationRequest {
            prompt: args.prompt.clone(),
            params: SamplingParams {
                temperature: args.temperature,
                max_new_tokens: args.max_tokens,
                seed: args.seed + i,
                ..SamplingParams::default()
            },
        })
        .collect();
    let start = Instant::now();
    let out = remote.generate(&requests)?;
    let secs = start.elapsed().as_secs_f64();
    for g in &out {
        println!("{}", g.text);
    }
    let tokens: usize = out.iter().map(|g| g.token_count()).sum();
    eprintln!(
        "{} completions, {tokens} tokens in {secs:.2} s ({:.1} tok/s)",
        out.len(),
        tokens as f64 / secs
    );
    Ok(())
}
