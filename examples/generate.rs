//! Generates text with a small language model (GGUF file or HF directory).
//!
//! ```text
//! cargo run --release --example generate -- --model assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
//!     --prompt $'<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n' \
//!     --temperature 0 --max-tokens 32
//! ```
//! The prompt is raw text (special tokens such as `<|im_start|>` are recognised); `--chat` wraps
//! it in the model's chat format, `--system` sets the system turn (empty or absent: none).
//! Prints the answer and prefill / decode tokens per second, or one JSON object with `--json`.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use pulserec::device::DeviceSpec;
use pulserec_core::{GenerationRequest, SamplingParams};
use pulserec_slm::{LoadOptions, Slm, WeightMode};

#[derive(Parser, Debug)]
#[command(about = "Generate text with a small language model")]
struct Args {
    /// A `.gguf` file or an HF model directory.
    #[arg(long)]
    model: PathBuf,
    /// The prompt (raw text; special tokens recognised).
    #[arg(long)]
    prompt: String,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Keep the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling mass.
    #[arg(long)]
    top_p: Option<f32>,
    /// Maximum new tokens.
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop strings (repeatable).
    #[arg(long)]
    stop: Vec<String>,
    /// Wrap the prompt in the model's chat format.
    #[arg(long)]
    chat: bool,
    /// System turn for `--chat` (empty: none).
    #[arg(long)]
    system: Option<String>,
    /// How many copies of the prompt to generate together (batch size; seeds seed..seed+n).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Keep weights dequantised to f32 (no quantised kernels).
    #[arg(long, conflicts_with_all = ["bf16", "int8"])]
    dense: bool,
    /// Prompts and steps of 32 rows or more in bfloat16 where the CPU can (AMX tiles, else
    /// AVX512-BF16; `WeightMode::Bf16`).
    #[arg(long)]
    bf16: bool,
    /// `--bf16`, and decode steps on 8-bit inputs with the CPU's AVX512-VNNI integer dot
    /// products where it has them, as llama.cpp decodes (`WeightMode::Int8`).
    #[arg(long, conflicts_with = "bf16")]
    int8: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// flex | tch | tch-cuda:N | cuda:N
    #[arg(long, default_value = "flex")]
    device: DeviceSpec,
}

fn main() -> anyhow::Result<()> {
    pulserec::malloc::tune_malloc();
    pulserec::init_logging("warn");
    let args = Args::parse();
    let device = args.device.device()?;
    let opts = LoadOptions {
        weights: if args.dense {
            WeightMode::Dense
        } else if args.bf16 {
            WeightMode::Bf16
        } else if args.int8 {
            WeightMode::Int8
        } else {
            WeightMode::Auto
        },
        max_batch: args.batch.max(1),
        ..LoadOptions::default()
    };
    let t = std::time::Instant::now();
    let slm = Slm::load_with(&args.model, &device, &opts)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let load_secs = t.elapsed().as_secs_f64();
    let prompt = if args.chat {
        slm.chat_prompt(args.system.as_deref(), &args.prompt)?
    } else {
        args.prompt.clone()
    };
    let requests: Vec<GenerationRequest> = (0..args.batch.max(1))
        .map(|i| GenerationRequest {
            prompt: prompt.clone(),
            params: SamplingParams {
                temperature: args.temperature,
                top_k: args.top_k,
                top_p: args.top_p,
                max_new_tokens: args.max_tokens,
                stop: args.stop.clone(),
                seed: args.seed + i as u64,
            },
        })
        .collect();
    let prompt_ids = slm.tokenizer().encode(&prompt)?;
    let (gens, stats) = slm.generate_with_stats(&requests)?;
    if args.json {
        let out = serde_json::json!({
            "text": gens[0].text,
            "prompt_ids": prompt_ids,
            "generated_ids": gens[0].token_ids,
            "finish": format!("{:?}", gens[0].finish),
            "batch": gens.len(),
            "prefill_tokens": stats.prefill_tokens,
            "prefill_tok_s": stats.prefill_tok_s(),
            "decode_tokens": stats.decode_tokens,
            "decode_tok_s": stats.decode_tok_s(),
            "load_s": load_secs,
            "device": args.device.to_string(),
            "seed": args.seed,
        });
        println!("{out}");
    } else {
        for (i, g) in gens.iter().enumerate() {
            if gens.len() > 1 {
                println!("--- {i} ({:?})", g.finish);
            }
            println!("{}", g.text);
        }
        eprintln!(
            "device {} | load {load_secs:.2}s | prefill {} tok at {:.1} tok/s | decode {} tok at {:.1} tok/s (batch {})",
            args.device,
            stats.prefill_tokens,
            stats.prefill_tok_s(),
            stats.decode_tokens,
            stats.decode_tok_s(),
            gens.len()
        );
    }
    Ok(())
}
