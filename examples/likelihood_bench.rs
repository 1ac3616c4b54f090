//! Throughput of the likelihood selector on real evaluation prompts: users per second of the
//! SLM scoring every candidate title of a stored list after its user's prompt.
//!
//! ```text
//! cargo build --release --bin pulserec --examples
//! target/release/examples/likelihood_bench --users 200 --style sequence --history 10 \
//!     --dump /tmp/requests.jsonl
//! ```
//! Test cases are the first `--users` evaluation users (in id order) of `--data` with the
//! 5-candidate test lists (`--candidates`) drawn as the pipeline draws them; the prompts are
//! rendered in `--style` (`chat` or `sequence`) with `--history` titles. The first
//! `--warmup` users are scored untimed, then the rest in calls of `--batch` prompts. Prints
//! `ours likelihood users/s ... s/user ...`. `--dump` writes one JSON line per user
//! (`user`, `context`, `continuations`) for the HF peer (`scripts/sft/likelihood_bench.py`), and
//! `--scores` our per-token log-probabilities in the peer's output format for a parity check.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::Parser;
use pulserec::device::DeviceSpec;
use pulserec_core::{LikelihoodRequest, LikelihoodScorer, UserId};
use pulserec_data::{CandidateConfig, CandidateSets, Target, load};
use pulserec_sft::{DataConfig, ExampleBuilder, PromptStyle};
use pulserec_slm::{LoadOptions, Slm};
use serde_json::json;

#[derive(Parser, Debug)]
#[command(about = "Users per second of the likelihood selector on real evaluation prompts")]
struct Args {
    /// Data set (file or folder).
    #[arg(long, default_value = "../shared/data/amazon-games-2018")]
    data: PathBuf,
    /// Base SLM (GGUF or HF directory).
    #[arg(long, default_value = "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    /// Evaluation users scored (warm-up included).
    #[arg(long, default_value_t = 200)]
    users: usize,
    /// Users scored before the clock starts.
    #[arg(long, default_value_t = 8)]
    warmup: usize,
    /// Candidates per list, the positive included.
    #[arg(long, default_value_t = 5)]
    candidates: usize,
    /// Prompt shape: chat (the paper's) or sequence.
    #[arg(long, default_value = "chat")]
    style: String,
    /// History titles shown.
    #[arg(long, default_value_t = 3)]
    history: usize,
    /// Prompts per scorer call.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Candidate-list seed (the pipeline's `data.candidate_seed`).
    #[arg(long, default_value_t = 2024)]
    candidate_seed: u64,
    /// Write the requests as JSON lines for the HF peer.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Write our per-token log-probabilities as JSON lines (the peer's `--out` format).
    #[arg(long)]
    scores: Option<PathBuf>,
    /// Device: flex, tch, tch-cuda:N or cuda:N.
    #[arg(long, default_value = "flex")]
    device: DeviceSpec,
}

fn main() -> anyhow::Result<()> {
    pulserec::init_logging("warn");
    let args = Args::parse();
    ensure!(args.batch > 0, "--batch must be at least 1");
    ensure!(args.users > args.warmup, "--users must exceed --warmup");
    let dataset = load(&args.data).with_context(|| format!("loading {}", args.data.display()))?;
    let mut data_config = DataConfig::paper(1);
    data_config.test_history = args.history;
    let builder = ExampleBuilder::new(&dataset, data_config)?;
    let sets = CandidateSets::generate(
        &dataset,
        builder.split(),
        Target::Test,
        &CandidateConfig::uniform(args.candidates - 1, args.candidate_seed),
    )?;
    let users: Vec<UserId> = builder.split().eval_users().take(args.users).collect();
    let cases = builder.test_cases(&users, &sets)?;
    let slm = Slm::load_with(&args.model, &args.device.device()?, &LoadOptions::default())
        .with_context(|| format!("loading {}", args.model.display()))?;
    let style = match args.style.as_str() {
        "chat" => PromptStyle::Chat(slm.chat_format()?),
        "sequence" => PromptStyle::Sequence,
        other => anyhow::bail!("--style must be chat or sequence, got {other}"),
    };
    let per_user: Vec<(UserId, String, Vec<String>)> = cases
        .iter()
        .map(|c| {
            let conts = c
                .prompt
                .candidates
                .iter()
                .map(|(_, t)| style.target(t))
                .collect();
            (c.prompt.user, style.render(&c.prompt), conts)
        })
        .collect();
    if let Some(path) = &args.dump {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for (user, context, continuations) in &per_user {
            let line = json!({"user": user.0, "context": context, "continuations": continuations});
            writeln!(f, "{line}")?;
        }
    }
    let mut slm = slm;
    let mut score = |chunk: &[(UserId, String, Vec<String>)]| -> anyhow::Result<Vec<Vec<f32>>> {
        let requests: Vec<LikelihoodRequest> = chunk
            .iter()
            .flat_map(|(_, context, conts)| {
                conts.iter().map(|c| LikelihoodRequest {
                    context: context.clone(),
                    continuation: c.clone(),
                })
            })
            .collect();
        Ok(slm.log_likelihoods(&requests)?)
    };
    let (warm, timed) = per_user.split_at(args.warmup);
    let mut all = Vec::new();
    for chunk in warm.chunks(args.batch) {
        all.extend(score(chunk)?);
    }
    let start = Instant::now();
    for chunk in timed.chunks(args.batch) {
        all.extend(score(chunk)?);
    }
    let secs = start.elapsed().as_secs_f64();
    if let Some(path) = &args.scores {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut rows = all.into_iter();
        for (user, _, conts) in &per_user {
            let lps: Vec<Vec<f32>> = rows.by_ref().take(conts.len()).collect();
            writeln!(f, "{}", json!({"user": user.0, "logprobs": lps}))?;
        }
    }
    println!(
        "ours likelihood users/s {:.3} s/user {:.3} (users {}, candidates per user {}, style {}, batch {})",
        timed.len() as f64 / secs,
        secs / timed.len() as f64,
        timed.len(),
        args.candidates,
        args.style,
        args.batch
    );
    Ok(())
}
