//! Serves a small language model over an OpenAI-compatible completions API on this machine or
//! the local network, so other processes (or `pulserec_tot::RemoteGenerator`) can generate with it.
//!
//! ```text
//! cargo run --release --example serve -- --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
//!     --addr 127.0.0.1:8080
//! curl -s 127.0.0.1:8080/v1/completions -d '{"prompt": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "max_tokens": 16, "temperature": 0}'
//! ```
//!
//! Prompts are checked against the model's context before they are queued; the limits
//! (`--max-body-bytes`, `--queue`, `--timeout-s`, ...) are those of `pulserec::serve::ServeConfig`.
//! Ctrl-C or SIGTERM stops it gracefully: requests in flight get `--grace-s` seconds to finish.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pulserec::device::DeviceSpec;
use pulserec::serve::{CompletionServer, ServeConfig};
use pulserec_slm::Slm;

#[derive(Parser, Debug)]
#[command(about = "Serve an SLM over an OpenAI-compatible completions API")]
struct Args {
    /// A `.gguf` file or an HF model directory.
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Model name reported by `/v1/models` and in responses (default: the file name).
    #[arg(long)]
    name: Option<String>,
    /// Device: flex, tch, tch-cuda:N or cuda:N.
    #[arg(long, default_value = "flex")]
    device: DeviceSpec,
    /// Largest request body in bytes (larger ones get 413).
    #[arg(long, default_value_t = 4 << 20)]
    max_body_bytes: usize,
    /// Requests waiting for the model before new ones get 429.
    #[arg(long, default_value_t = 8)]
    queue: usize,
    /// Seconds a request may take from arrival to answer before it gets 503.
    #[arg(long, default_value_t = 300.0)]
    timeout_s: f64,
    /// Most prompts in one request.
    #[arg(long, default_value_t = 64)]
    max_prompts: usize,
    /// Connections served at once.
    #[arg(long, default_value_t = 64)]
    max_connections: usize,
    /// Seconds requests in flight get to finish on Ctrl-C / SIGTERM.
    #[arg(long, default_value_t = 30.0)]
    grace_s: f64,
}

fn main() -> anyhow::Result<()> {
    pulserec::malloc::tune_malloc();
    pulserec::init_logging("info");
    let args = Args::parse();
    let device = args.device.device()?;
    let slm = Slm::load(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let name = args.name.unwrap_or_else(|| {
        args.model
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default()
    });
    let config = ServeConfig {
        max_body_bytes: args.max_body_bytes,
        queue: args.queue,
        request_timeout: Duration::try_from_secs_f64(args.timeout_s).context("--timeout-s")?,
        max_prompts: args.max_prompts,
        max_connections: args.max_connections,
        ..ServeConfig::for_slm(&slm)
    };
    let grace = Duration::try_from_secs_f64(args.grace_s).context("--grace-s")?;
    let server = CompletionServer::start(&args.addr, name, slm, config)?;
    eprintln!("serving on {} (Ctrl-C to stop)", server.url());
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    signals.block_on(stop_signal())?;
    eprintln!("stopping: requests in flight get {} s", grace.as_secs_f64());
    server.shutdown(grace);
    Ok(())
}

/// Waits for Ctrl-C (or SIGTERM on Unix).
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
