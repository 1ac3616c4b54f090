//! Trains SASRec on a data set with the leave-one-out split, evaluates on the test items and
//! writes `metrics.json` (plus the checkpoint and the exact sequences/candidates used, so a
//! reference implementation can be run on the very same inputs).
//!
//! ```text
//! cargo run --release --example sasrec -- --data ../shared/data/amazon-games-2018 \
//!     --epochs 20 --protocol sampled100 --device flex --out runs/sasrec-games
//! cargo run --release --example sasrec -- --data assets/ml-100k --epochs 200 --protocol full \
//!     --device flex --out runs/sasrec-ml100k
//! ```
//!
//! On glibc CPUs, training is ~30 % faster with
//! `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=268435456:glibc.malloc.trim_threshold=536870912:glibc.malloc.top_pad=67108864`
//! (burn's short-lived multi-megabyte buffers otherwise go back to the kernel and fault back in on
//! every op; see `docs/benchmarks.md`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use pulserec::config::SasRecProtocol;
use pulserec::device::DeviceSpec;
use pulserec_core::{ItemId, UserId};
use pulserec_data::{CandidateConfig, CandidateSets, Dataset, LeaveOneOut, Target};
use pulserec_seqrec::eval::{Protocol, report};
use pulserec_seqrec::{
    EvalCase, EvalOptions, LossKind, NormPlacement, SasRecConfig, TrainConfig, TrainData,
    evaluate_full, evaluate_sampled,
};

#[derive(Parser)]
#[command(about = "Train and evaluate SASRec (leave-one-out split)")]
struct Args {
    /// Data set file or folder (format detected).
    #[arg(long)]
    data: PathBuf,
    /// Training epochs.
    #[arg(long, default_value_t = 200)]
    epochs: usize,
    /// `sampledN` (1 positive + N uniform stored negatives) or `full` (all items, history masked).
    #[arg(long, default_value = "sampled100")]
    protocol: SasRecProtocol,
    /// flex, tch, tch-cuda:N or cuda:N.
    #[arg(long, default_value = "flex")]
    device: DeviceSpec,
    /// Output folder (metrics.json, checkpoint/, sequences.tsv, candidates_*.tsv).
    #[arg(long)]
    out: PathBuf,
    /// `paper` or `recbole` architecture preset.
    #[arg(long, default_value = "paper")]
    preset: String,
    /// `bce`, `ce` or `sampled:N`.
    #[arg(long, default_value = "bce")]
    loss: String,
    /// `post` or `pre` layer norm (overrides the preset).
    #[arg(long)]
    norm: Option<String>,
    /// Users per batch.
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Training seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Seed of the stored candidate sets (fixed across training seeds).
    #[arg(long, default_value_t = 2024)]
    candidate_seed: u64,
    /// Validate every k epochs and keep the best model by valid NDCG@10 (0: keep the last).
    #[arg(long, default_value_t = 0)]
    valid_every: usize,
    /// Early-stopping patience in validations (0: never stop early).
    #[arg(long, default_value_t = 0)]
    patience: usize,
    /// Evaluate only the first N users (off by default).
    #[arg(long)]
    max_users: Option<usize>,
}

fn parse_loss(s: &str) -> Result<LossKind> {
    Ok(match s {
        "bce" => LossKind::Bce,
        "ce" => LossKind::Ce,
        _ => match s.strip_prefix("sampled:").map(str::parse::<usize>) {
            Some(Ok(negatives)) => LossKind::SampledSoftmax { negatives },
            _ => bail!("--loss must be bce, ce or sampled:N, got `{s}`"),
        },
    })
}

fn candidate_lists<'c>(
    sets: &'c CandidateSets,
    cases: &[EvalCase<'_>],
) -> Result<Vec<&'c [ItemId]>> {
    cases
        .iter()
        .map(|c| {
            sets.get(c.user)
                .with_context(|| format!("no candidates for user {}", c.user))
        })
        .collect()
}

/// Writes `user<TAB>items...` lines (dense ids), for the reference implementation.
fn write_lists<'a>(path: &Path, rows: impl Iterator<Item = (UserId, &'a [ItemId])>) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (u, items) in rows {
        let items: Vec<String> = items.iter().map(|i| i.0.to_string()).collect();
        writeln!(f, "{}\t{}", u.0, items.join(" "))?;
    }
    Ok(f.flush()?)
}

fn main() -> Result<()> {
    pulserec::malloc::tune_malloc();
    pulserec::init_logging("info");
    let args = Args::parse();
    let negatives = args.protocol.negatives();
    let device = args.device.device()?;
    std::fs::create_dir_all(&args.out)?;

    let dataset: Dataset = pulserec_data::load(&args.data)
        .with_context(|| format!("loading {}", args.data.display()))?;
    let split = LeaveOneOut::new(&dataset.sequences);
    let n_items = dataset.catalog.len();
    write_lists(
        &args.out.join("sequences.tsv"),
        dataset.sequences.iter().map(|v| (v.user, v.items)),
    )?;

    let valid = EvalCase::from_split(&split, Target::Valid);
    let test = EvalCase::from_split(&split, Target::Test);
    let mut sets = None;
    if let Some(n) = negatives {
        let config = CandidateConfig::uniform(n, args.candidate_seed);
        let v = CandidateSets::generate(&dataset, &split, Target::Valid, &config)?;
        let t = CandidateSets::generate(&dataset, &split, Target::Test, &config)?;
        write_lists(&args.out.join("candidates_test.tsv"), t.iter())?;
        sets = Some((v, t));
    }
    let mut model_config = match args.preset.as_str() {
        "paper" => SasRecConfig::paper(n_items),
        "recbole" => SasRecConfig::recbole(n_items),
        other => bail!("--preset must be paper or recbole, got `{other}`"),
    };
    match args.norm.as_deref() {
        None => {}
        Some("post") => model_config.norm = NormPlacement::Post,
        Some("pre") => model_config.norm = NormPlacement::Pre,
        Some(other) => bail!("--norm must be post or pre, got `{other}`"),
    }
    let train_config = TrainConfig::paper()
        .with_epochs(args.epochs)
        .with_batch_size(args.batch_size)
        .with_loss(parse_loss(&args.loss)?)
        .with_seed(args.seed)
        .with_valid_every(args.valid_every)
        .with_patience(args.patience)
        .with_progress(true);
    let data = TrainData {
        train: (0..dataset.sequences.n_users() as u32)
            .map(|u| split.train(UserId(u)))
            .collect(),
        valid_candidates: match &sets {
            Some((v, _)) => Some(candidate_lists(v, &valid)?),
            None => None,
        },
        valid,
    };
    eprintln!(
        "{} users, {} items, {} interactions; {} test users; device {}",
        dataset.sequences.n_users(),
        n_items,
        dataset.sequences.n_interactions(),
        test.len(),
        args.device
    );

    let started = Instant::now();
    let outcome = pulserec_seqrec::train(
        &model_config,
        &train_config,
        &data,
        &device,
        Some(&args.out.join("checkpoint")),
    )?;
    let train_s = started.elapsed().as_secs_f64();

    let options = EvalOptions {
        max_users: args.max_users,
        ..EvalOptions::default()
    };
    let eval_started = Instant::now();
    let (metrics, protocol) = match &sets {
        Some((_, t)) => (
            evaluate_sampled(
                &outcome.model,
                &test,
                &candidate_lists(t, &test)?,
                &options,
                &device,
            )?,
            Protocol::Sampled {
                negatives: negatives.unwrap_or(0),
                sampling: "uniform".into(),
            },
        ),
        None => (
            evaluate_full(&outcome.model, &test, &options, &device)?,
            Protocol::Full,
        ),
    };
    let eval_s = eval_started.elapsed().as_secs_f64();
    let users_per_s = metrics.users as f64 / eval_s.max(1e-9);
    let test_report = report(
        metrics,
        protocol,
        "test",
        &train_config.loss.name(),
        args.seed,
        &options,
    );
    // The sampled protocol is also reported under full ranking: the two differ ~10x, and a
    // reader comparing with another paper needs to know which one they are looking at.
    let full_report = match &sets {
        Some(_) => Some(report(
            evaluate_full(&outcome.model, &test, &options, &device)?,
            Protocol::Full,
            "test",
            &train_config.loss.name(),
            args.seed,
            &options,
        )),
        None => None,
    };
    let s_per_epoch = outcome.median_epoch_seconds();
    let json = serde_json::json!({
        "data": args.data,
        "device": args.device.to_string(),
        "users": dataset.sequences.n_users(),
        "items": n_items,
        "formulation": "one sequence per user, loss at every position",
        "test": test_report,
        "test_full_ranking": full_report,
        "best_epoch": outcome.best_epoch,
        "best_valid_ndcg10": outcome.best_valid_ndcg10,
        "epochs_run": outcome.epochs.len(),
        "median_seconds_per_epoch": s_per_epoch,
        "train_seconds": train_s,
        "eval_seconds": eval_s,
        "eval_users_per_second": users_per_s,
        "candidate_seed": args.candidate_seed,
        "model_config": serde_json::to_value(&model_config)?,
        "train_config": serde_json::to_value(&train_config)?,
        "epochs": outcome.epochs,
    });
    std::fs::write(
        args.out.join("metrics.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    println!(
        "{} test users, {}: HR@10 {:.4} NDCG@10 {:.4} MRR {:.4}",
        test_report.users,
        test_report.protocol.name(),
        test_report
            .metrics
            .get("HR@10")
            .copied()
            .unwrap_or(f64::NAN),
        test_report
            .metrics
            .get("NDCG@10")
            .copied()
            .unwrap_or(f64::NAN),
        test_report.metrics.get("MRR").copied().unwrap_or(f64::NAN),
    );
    println!(
        "{:.3} s/epoch (median of {} epochs, device {}), eval {:.0} users/s; wrote {}",
        s_per_epoch,
        outcome.epochs.len(),
        args.device,
        users_per_s,
        args.out.join("metrics.json").display()
    );
    Ok(())
}
