//! Serves a small language model over an OpenAI-compatible completions API on this machine or
//! the local network, so other processes (or `pulserec_tot::RemoteGenerator`) can generate with it.
//!
//! ```text
//! cargo run --release --example serve -- --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
//!     --addr 127.0.0.1:8080
//! curl -s 127.0.0.1:8080/v1/completions -d '{"prompt": "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "max_tokens": 16, "temperature": 0}'
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use pulserec::device::DeviceSpec;
use pulserec::serve::CompletionServer;
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
    let server = CompletionServer::start(&args.addr, name, slm)?;
    eprintln!("serving on {} (Ctrl-C to stop)", server.url());
    loop {
        std::thread::park();
    }
}
