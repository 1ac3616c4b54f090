//! Stage 4 of PULSE on real data: LoRA SFT of SmolLM2 for candidate selection, then the base
//! and the tuned model evaluated on the same held-out users' stored candidates.
//!
//! ```text
//! cargo run --release --example sft -- --variant pulse --rationales runs/r/tot \
//!     --train-users 48 --test-users 200 --epochs 2 --out runs/sft-pulse
//! ```
//! Training users are the first `--train-users` users (in id order) of the rationale store
//! (`--rationales`, required for the rationale variants). The no-rationale variant takes its
//! users from `--users-from <store>` (so all four variants train on the same users), else the
//! first users with a last training item. Test users are drawn (seeded) from the evaluation
//! users that are not training users. Writes `metrics.json`, `predictions-*.jsonl` and the
//! adapter checkpoints under `--out`; prints HR@1 and training tokens/s.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use pulserec::device::DeviceSpec;
use pulserec_core::{CandidateSelector, UserId};
use pulserec_data::{Target, load};
use pulserec_sft::{
    DataConfig, EncodedSet, Evaluation, ExampleBuilder, GenerativeConfig, GenerativeSelector,
    LikelihoodConfig, LikelihoodSelector, PROMPT_VERSION, PromptStyle, SelectorMetrics, SftConfig,
    SftExample, SftMetrics, SftTrainer, Variant, choose_test_users, encode_all, evaluate,
};
use pulserec_slm::{LoadOptions, SharedSlm, Slm};
use pulserec_tot::RationaleStore;

#[derive(Parser, Debug)]
#[command(about = "LoRA SFT of the SLM for candidate selection, with base vs tuned HR@1")]
struct Args {
    /// Data set (file or folder).
    #[arg(long, default_value = "../shared/data/amazon-games-2018")]
    data: PathBuf,
    /// Base SLM (GGUF or HF directory).
    #[arg(long, default_value = "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    /// no-rationale, with-reasons, tot-likelihood, pulse, shuffled-reasons or auxiliary-reasons.
    #[arg(long, default_value = "pulse")]
    variant: Variant,
    /// Rationale store directory (required for the rationale variants).
    #[arg(long)]
    rationales: Option<PathBuf>,
    /// For no-rationale: train on the users of this store.
    #[arg(long)]
    users_from: Option<PathBuf>,
    /// Training users (the first N of the store, in id order).
    #[arg(long, default_value_t = 48)]
    train_users: usize,
    /// Held-out test users.
    #[arg(long, default_value_t = 200)]
    test_users: usize,
    /// Settings preset: cpu or paper.
    #[arg(long, default_value = "cpu")]
    preset: String,
    /// Epochs (overrides the preset).
    #[arg(long)]
    epochs: Option<usize>,
    /// Peak learning rate (overrides the preset).
    #[arg(long)]
    lr: Option<f64>,
    /// Examples per optimiser step (overrides the preset).
    #[arg(long)]
    effective_batch: Option<usize>,
    /// Rows per forward/backward pass (overrides the preset).
    #[arg(long)]
    micro_batch: Option<usize>,
    /// Which selectors to evaluate: generative, likelihood or both.
    #[arg(long, default_value = "both", value_parser = ["generative", "likelihood", "both"])]
    selector: String,
    /// Candidate-set sizes to evaluate, comma-separated.
    #[arg(long, default_value = "5,20", value_delimiter = ',')]
    candidates: Vec<usize>,
    /// Prompts per selector call.
    #[arg(long, default_value_t = 16)]
    eval_batch: usize,
    /// Skip evaluating the base model.
    #[arg(long)]
    skip_base: bool,
    /// Output folder.
    #[arg(long, default_value = "runs/sft")]
    out: PathBuf,
    /// Run seed (data, adapters, sampling).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Device: flex, tch, tch-cuda:N or cuda:N.
    #[arg(long, default_value = "flex")]
    device: DeviceSpec,
}

/// The store's records, which must exist (opening a store creates a missing directory).
fn read_store(dir: &Path) -> anyhow::Result<Vec<pulserec_tot::StoredRationale>> {
    ensure!(
        dir.is_dir(),
        "rationale store {} does not exist",
        dir.display()
    );
    let records = RationaleStore::open(dir)?.load()?;
    ensure!(
        !records.is_empty(),
        "rationale store {} is empty",
        dir.display()
    );
    Ok(records)
}

/// Every selected selector's evaluation of `slm` at every list size.
fn evaluate_model(
    slm: &SharedSlm,
    style: PromptStyle,
    args: &Args,
    cases: &[(usize, Vec<SftExample>)],
    label: &str,
) -> anyhow::Result<Vec<Evaluation>> {
    let mut out = Vec::new();
    for (n, cases) in cases {
        for how in ["generative", "likelihood"] {
            if args.selector != how && args.selector != "both" {
                continue;
            }
            let mut selector: Box<dyn CandidateSelector> = if how == "generative" {
                let config = GenerativeConfig::paper(args.seed);
                Box::new(GenerativeSelector::new(slm.clone(), style, config))
            } else {
                let config = LikelihoodConfig::default();
                Box::new(LikelihoodSelector::new(slm.clone(), style, config))
            };
            let pb =
                pulserec_train::progress_bar(cases.len() as u64, &format!("{label} {how}@{n}"));
            out.push(evaluate(
                selector.as_mut(),
                how,
                cases,
                args.eval_batch,
                &pb,
            )?);
            pb.finish_and_clear();
        }
    }
    Ok(out)
}

fn write_predictions(dir: &Path, label: &str, evals: &[Evaluation]) -> anyhow::Result<()> {
    for e in evals {
        e.write_predictions(&dir.join(format!(
            "predictions-{label}-{}-{}.jsonl",
            e.metrics.selector, e.metrics.candidates
        )))?;
    }
    Ok(())
}

fn print_table(label: &str, metrics: &[SelectorMetrics]) {
    for m in metrics {
        let ndcg = m
            .ranking
            .as_ref()
            .and_then(|r| r.get(&format!("NDCG@{}", m.candidates.min(5))))
            .map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
        println!(
            "{label:<6} {:<10} {:>3} cand  HR@1 {:.3}  (random {:.3})  valid {:.3}  NDCG@{} {ndcg}  users {}  {:.1}s",
            m.selector,
            m.candidates,
            m.hr_at_1,
            m.random_baseline,
            m.valid_answer,
            m.candidates.min(5),
            m.users,
            m.seconds
        );
    }
}

fn main() -> anyhow::Result<()> {
    pulserec::init_logging("warn");
    let args = Args::parse();
    ensure!(
        !args.candidates.is_empty(),
        "--candidates needs at least one size"
    );
    let mut config = match args.preset.as_str() {
        "cpu" => SftConfig::cpu(args.seed),
        "paper" => SftConfig::paper(args.seed),
        other => bail!("--preset must be cpu or paper, got {other}"),
    };
    config.epochs = args.epochs.unwrap_or(config.epochs);
    config.learning_rate = args.lr.unwrap_or(config.learning_rate);
    config.micro_batch = args.micro_batch.unwrap_or(config.micro_batch);
    config.effective_batch = args
        .effective_batch
        .unwrap_or(config.effective_batch)
        .max(config.micro_batch);
    config.validate()?;
    std::fs::create_dir_all(&args.out)?;
    let device = args.device.device()?;

    // Data, training users and their rationales.
    let dataset = load(&args.data).with_context(|| format!("loading {}", args.data.display()))?;
    let builder = ExampleBuilder::new(&dataset, DataConfig::paper(args.seed))?;
    let (users, rationales): (Vec<UserId>, Option<HashMap<UserId, String>>) =
        if args.variant.uses_rationale() {
            let dir = args
                .rationales
                .as_ref()
                .with_context(|| format!("--rationales is required for {}", args.variant))?;
            let records = read_store(dir)?;
            let chosen: Vec<_> = records.into_iter().take(args.train_users).collect();
            let users = chosen.iter().map(|r| r.user).collect();
            (
                users,
                Some(chosen.into_iter().map(|r| (r.user, r.text)).collect()),
            )
        } else if let Some(dir) = args.users_from.as_ref().or(args.rationales.as_ref()) {
            let records = read_store(dir)?;
            (
                records
                    .iter()
                    .take(args.train_users)
                    .map(|r| r.user)
                    .collect(),
                None,
            )
        } else {
            let split = builder.split();
            let users = (0..dataset.n_users() as u32)
                .map(UserId)
                .filter(|&u| split.target(u, Target::LastTrain).is_some())
                .take(args.train_users)
                .collect();
            (users, None)
        };
    let training = builder.training_set(args.variant, &users, rationales.as_ref())?;

    // Held-out users and their stored candidates.
    let exclude: HashSet<UserId> = users.iter().copied().collect();
    let test_users = choose_test_users(builder.split(), &exclude, args.test_users, args.seed);
    let mut cases = Vec::new();
    for &n in &args.candidates {
        let sets = builder.test_candidates(n)?;
        cases.push((n, builder.test_cases(&test_users, &sets)?));
    }

    // Model parts: the base weights stay in memory for merging.
    let (model_cfg, weights, tokenizer) = Slm::load_parts(&args.model)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let model_name = args
        .model
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let base = SharedSlm::from(Slm::from_parts(
        model_cfg.clone(),
        &weights,
        tokenizer.clone(),
        &device,
        &LoadOptions::default(),
    )?);
    let style = PromptStyle::Chat(base.chat_format()?);

    // Tokenised training examples; one that does not fit even without history is skipped.
    let EncodedSet {
        examples: encoded,
        too_long,
    } = encode_all(
        &tokenizer,
        style,
        &training.examples,
        config.max_len,
        config.objective,
    )?;
    let too_long = too_long.len();
    eprintln!(
        "{}: {} training examples ({} users without a rationale, {} without a target, {} too long), {} test users",
        args.variant,
        encoded.len(),
        training.skipped_no_rationale.len(),
        training.skipped_no_target.len(),
        too_long,
        test_users.len()
    );

    let base_evals = if args.skip_base {
        Vec::new()
    } else {
        let evals = evaluate_model(&base, style, &args, &cases, "base")?;
        write_predictions(&args.out, "base", &evals)?;
        print_table(
            "base",
            &evals.iter().map(|e| e.metrics.clone()).collect::<Vec<_>>(),
        );
        evals
    };
    drop(base);

    let mut trainer = SftTrainer::new(&model_cfg, &weights, config.clone(), &model_name, &device)?;
    let pb = pulserec_train::progress_bar(0, "train");
    let report = trainer.fit(&encoded, Some(&args.out.join("checkpoints")), &pb)?;
    pb.finish_and_clear();
    let merged = trainer.merged_weights(&weights)?;
    drop(trainer);
    let tuned = SharedSlm::from(Slm::from_parts(
        model_cfg,
        &merged,
        tokenizer,
        &device,
        &LoadOptions::default(),
    )?);
    let tuned_evals = evaluate_model(&tuned, style, &args, &cases, "tuned")?;
    write_predictions(&args.out, "tuned", &tuned_evals)?;

    let metrics = SftMetrics {
        variant: args.variant.name().to_string(),
        prompt_version: PROMPT_VERSION.to_string(),
        model: model_name,
        seed: args.seed,
        train_users_requested: users.len(),
        train_examples: encoded.len(),
        skipped_no_rationale: training.skipped_no_rationale.len(),
        skipped_no_target: training.skipped_no_target.len(),
        skipped_too_long: too_long,
        test_users: test_users.len(),
        config: Some(config),
        training: Some(report.clone()),
        base: base_evals.iter().map(|e| e.metrics.clone()).collect(),
        tuned: tuned_evals.iter().map(|e| e.metrics.clone()).collect(),
    };
    metrics.save(args.out.join("metrics.json"))?;
    let tuned_metrics: Vec<SelectorMetrics> =
        tuned_evals.iter().map(|e| e.metrics.clone()).collect();
    print_table("tuned", &tuned_metrics);
    println!(
        "training: {} examples, {} steps, epoch losses {:?}, {} tokens in {:.1}s = {:.1} tokens/s",
        encoded.len(),
        report.steps,
        report.epoch_losses,
        report.tokens,
        report.seconds,
        report.tokens_per_s
    );
    println!("metrics: {}", args.out.join("metrics.json").display());
    Ok(())
}
