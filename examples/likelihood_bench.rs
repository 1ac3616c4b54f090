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
//! It also prints HR@1 under both reductions (mean and summed token log-probability, ties to the
//! first listed candidate), so `--adapter` (a LoRA checkpoint written by the SFT stage, with its
//! `sft_config.json`) and `--split valid` make it a quick way to compare scoring choices on
//! validation users without a pipeline run.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::Parser;
use pulserec::device::DeviceSpec;
use pulserec_core::{LikelihoodRequest, LikelihoodScorer, UserId};
use pulserec_data::{CandidateConfig, CandidateSets, Target, load};
use pulserec_sft::{
    DataConfig, ExampleBuilder, PromptStyle, SFT_CONFIG_FILE, SftConfig, load_adapter,
};
use pulserec_slm::{LoadOptions, Slm, WeightMode};
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
    /// Prompt shape: chat (the paper's), sequence or choice (lettered candidates; no counts).
    #[arg(long, default_value = "chat")]
    style: String,
    /// History titles shown.
    #[arg(long, default_value_t = 3)]
    history: usize,
    /// Prompts per scorer call (the pipeline's likelihood rows use 1).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Candidate-list seed (the pipeline's `data.candidate_seed`).
    #[arg(long, default_value_t = 2024)]
    candidate_seed: u64,
    /// Write the requests as JSON lines for the HF peer.
    #[arg(long)]
    dump: Option<PathBuf>,
    /// Write our per-token log-probabilities as JSON lines (the peer's `--out` format, plus
    /// `target`, the positive's index in the shown order).
    #[arg(long)]
    scores: Option<PathBuf>,
    /// A LoRA adapter checkpoint (`sft/<variant>/checkpoints/epoch-NNN`) merged into the model.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Held-out item asked for: test or valid.
    #[arg(long, default_value = "test")]
    split: String,
    /// Skip this many evaluation users first (to score another slice of them).
    #[arg(long, default_value_t = 0)]
    skip: usize,
    /// Device: flex, tch, tch-cuda:N or cuda:N.
    #[arg(long, default_value = "flex")]
    device: DeviceSpec,
    /// Prompts in bfloat16 where the CPU can (AMX tiles, else AVX512-BF16; `WeightMode::Bf16`).
    #[arg(long)]
    bf16: bool,
}

fn main() -> anyhow::Result<()> {
    pulserec::malloc::tune_malloc();
    pulserec::init_logging("warn");
    let args = Args::parse();
    ensure!(args.batch > 0, "--batch must be at least 1");
    ensure!(args.users > args.warmup, "--users must exceed --warmup");
    let dataset = load(&args.data).with_context(|| format!("loading {}", args.data.display()))?;
    let mut data_config = DataConfig::paper(1);
    data_config.test_history = args.history;
    let builder = ExampleBuilder::new(&dataset, data_config)?;
    let target = match args.split.as_str() {
        "test" => Target::Test,
        "valid" => Target::Valid,
        other => anyhow::bail!("--split must be test or valid, got {other}"),
    };
    let sets = CandidateSets::generate(
        &dataset,
        builder.split(),
        target,
        &CandidateConfig::uniform(args.candidates - 1, args.candidate_seed),
    )?;
    let users: Vec<UserId> = builder
        .split()
        .eval_users()
        .skip(args.skip)
        .take(args.users)
        .collect();
    let cases = builder.test_cases(&users, &sets)?;
    let device = args.device.device()?;
    let (config, weights, tokenizer) = Slm::load_parts(&args.model)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let weights = match &args.adapter {
        None => weights,
        Some(dir) => {
            let path = dir.join(SFT_CONFIG_FILE);
            let sft: SftConfig = serde_json::from_str(
                &std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
            )
            .with_context(|| format!("parsing {}", path.display()))?;
            let name = args
                .model
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            load_adapter(dir, &config, &weights, &sft.lora, &name, &device)?
                .merged_weights(&weights)?
        }
    };
    let slm = Slm::from_parts(
        config,
        &weights,
        tokenizer,
        &device,
        &LoadOptions {
            weights: if args.bf16 {
                WeightMode::Bf16
            } else {
                WeightMode::Auto
            },
            ..LoadOptions::default()
        },
    )?;
    let style = match args.style.as_str() {
        "chat" => PromptStyle::Chat(slm.chat_format()?),
        "sequence" => PromptStyle::Sequence,
        "choice" => PromptStyle::Choice,
        other => anyhow::bail!("--style must be chat, sequence or choice, got {other}"),
    };
    let per_user: Vec<(UserId, String, Vec<String>)> = cases
        .iter()
        .map(|c| {
            let conts = (0..c.prompt.candidates.len())
                .map(|i| style.target(&c.prompt, i))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "{} candidates do not fit the {} prompt",
                        c.prompt.candidates.len(),
                        args.style
                    )
                })?;
            Ok((c.prompt.user, style.render(&c.prompt), conts))
        })
        .collect::<anyhow::Result<_>>()?;
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
    // HR@1 under both reductions (the positive's index in the shown order is known per case).
    let mut hits = [0usize; 2];
    let mut rows = all.iter();
    for case in &cases {
        let lps: Vec<&Vec<f32>> = rows.by_ref().take(case.prompt.candidates.len()).collect();
        let sum: Vec<f32> = lps.iter().map(|l| l.iter().sum()).collect();
        let mean: Vec<f32> = lps
            .iter()
            .zip(&sum)
            .map(|(l, s)| s / l.len().max(1) as f32)
            .collect();
        for (k, scores) in [mean, sum].into_iter().enumerate() {
            let best = pulserec_core::baselines::argmax_first(&scores);
            hits[k] += usize::from(best == Some(case.target_index()));
        }
    }
    println!(
        "HR@1 mean {:.3} sum {:.3} (users {}, split {}, adapter {})",
        hits[0] as f64 / cases.len() as f64,
        hits[1] as f64 / cases.len() as f64,
        cases.len(),
        args.split,
        args.adapter
            .as_ref()
            .map_or("none".into(), |a| a.display().to_string())
    );
    if let Some(path) = &args.scores {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        let mut rows = all.into_iter();
        for ((user, _, conts), case) in per_user.iter().zip(&cases) {
            let lps: Vec<Vec<f32>> = rows.by_ref().take(conts.len()).collect();
            let line = json!({"user": user.0, "target": case.target_index(), "logprobs": lps});
            writeln!(f, "{line}")?;
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
