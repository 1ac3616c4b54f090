//! `pulserec`: the PULSE pipeline from one TOML config.
//!
//! ```text
//! cargo run --release --bin pulserec -- run --config configs/quickstart.toml
//! pulserec tot --config my.toml --seed 2 --run-dir runs/seed2   # stages up to tot
//! pulserec rationales --config my.toml --shard 0/4              # this machine's quarter of users
//! pulserec verify --config my.toml                              # what is done, what is missing
//! pulserec config --preset paper > paper.toml                   # print a preset
//! pulserec summary runs/exp/games-seed1 runs/exp/games-seed2    # pooled over runs, with intervals
//! pulserec run --config configs/experiments/games-to-ml100k.toml --seed 2 \
//!     --run-dir runs/exp/games-to-ml100k-seed2 --adapters-from runs/exp/games-seed2
//! ```
//! Each stage subcommand runs the stages it needs first (finished ones are skipped: their
//! outputs are cached in the run directory), then writes `report.md` and prints the results.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use pulserec::config::EvalSplit;
use pulserec::pipeline::{PipelineError, Shard, StageStatus};
use pulserec::{Pipeline, PipelineConfig, Stage};

#[derive(Parser)]
#[command(
    name = "pulserec",
    version,
    about = "PULSE: Thought-Space recommendation with small language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// TOML config (default: the quickstart preset).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Device, overriding the config: flex, tch, tch-cuda:N or cuda:N.
    #[arg(long, global = true)]
    device: Option<String>,
    /// Seed, overriding the config.
    #[arg(long, global = true)]
    seed: Option<u64>,
    /// Run directory, overriding the config.
    #[arg(long, global = true)]
    run_dir: Option<PathBuf>,
    /// Which held-out item to evaluate (`eval.split`, overriding the config): `valid` to choose
    /// settings, `test` once per final configuration.
    #[arg(long, global = true)]
    split: Option<EvalSplit>,
    /// Cross-domain: evaluate the adapters of this finished run instead of training
    /// (`sft.adapters_from`, overriding the config).
    #[arg(long, global = true)]
    adapters_from: Option<PathBuf>,
    /// `i/n`: the `rationales` and `tot` subcommands generate for the users of shard i of n
    /// only (user id mod n = i), writing their own store parts into the run directory; the
    /// stage is done once the parts of all n shards are there (shared disk, or copied back).
    #[arg(long, global = true)]
    shard: Option<Shard>,
}

#[derive(Subcommand)]
enum Command {
    /// Stage 0: load, slice, split, candidate sets.
    Prepare,
    /// SASRec baseline and similar users.
    Sasrec,
    /// Stage 1: hindsight rationales.
    Rationales,
    /// Stage 2: train the Thought Space.
    ThoughtSpace,
    /// Stage 3: Tree-of-Thought refinement.
    Tot,
    /// Stage 4: LoRA SFT.
    Sft,
    /// Evaluate the fine-tuned SLM recommenders.
    Eval,
    /// The whole pipeline.
    Run,
    /// Report what each stage of the run directory has finished and which users the
    /// generation stores lack, by shard (exit status 1 while anything is missing).
    Verify,
    /// Print the results tables pooled over finished run directories (e.g. seeds): each row
    /// with a 95 % interval, paired differences, HR@1 by position.
    Summary {
        /// Run directories, each with its resolved `config.toml`.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
    },
    /// Print a preset config as TOML (`quickstart` or `paper`) with the overrides applied.
    Config {
        /// Preset name.
        #[arg(long, default_value = "quickstart")]
        preset: String,
    },
}

fn resolve(cli: &Cli, preset: Option<&str>) -> Result<PipelineConfig, Box<dyn std::error::Error>> {
    let mut config = match (&cli.config, preset) {
        (_, Some(name)) => PipelineConfig::preset(name)?,
        // Validated below, after the command line's overrides.
        (Some(path), None) => PipelineConfig::from_file_unvalidated(path)?,
        (None, None) => PipelineConfig::quickstart(),
    };
    if let Some(d) = &cli.device {
        config.device = d.clone();
    }
    if let Some(s) = cli.seed {
        config.seed = s;
    }
    if let Some(r) = &cli.run_dir {
        config.run_dir = r.clone();
    }
    if let Some(split) = cli.split {
        config.eval.split = split;
    }
    if let Some(from) = &cli.adapters_from {
        config.sft.adapters_from = Some(from.clone());
    }
    config.validate()?;
    Ok(config)
}

fn main() -> ExitCode {
    pulserec::malloc::tune_malloc();
    pulserec::init_logging("info");
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            // Most of our errors already end with their source's text; a cause is printed only
            // where it adds to the line above.
            let mut shown = e.to_string();
            let mut source = e.source();
            while let Some(s) = source {
                let text = s.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                }
                shown = text;
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    let last = match &cli.command {
        Command::Config { preset } => {
            print!("{}", resolve(cli, Some(preset))?.to_toml()?);
            return Ok(());
        }
        Command::Summary { runs } => {
            let mut pipelines = Vec::new();
            for dir in runs {
                let mut config = PipelineConfig::from_file(&dir.join("config.toml"))?;
                if let Some(split) = cli.split {
                    config.eval.split = split;
                }
                pipelines.push(Pipeline::new(config)?);
            }
            print!("{}", pulserec::pipeline::summarize(&pipelines)?);
            return Ok(());
        }
        Command::Verify => {
            let pipeline = Pipeline::new(resolve(cli, None)?)?;
            let verification = pipeline.verify()?;
            print!("{verification}");
            if !verification.complete() {
                return Err("the run is not complete".into());
            }
            return Ok(());
        }
        Command::Prepare => Stage::Prepare,
        Command::Sasrec => Stage::SasRec,
        Command::Rationales => Stage::Rationales,
        Command::ThoughtSpace => Stage::ThoughtSpace,
        Command::Tot => Stage::Tot,
        Command::Sft => Stage::Sft,
        Command::Eval | Command::Run => Stage::Eval,
    };
    let config = resolve(cli, None)?;
    let mut pipeline = Pipeline::new(config)?.with_progress(true);
    if let Some(shard) = cli.shard {
        if !matches!(cli.command, Command::Rationales | Command::Tot) {
            return Err("--shard applies to the `rationales` and `tot` subcommands".into());
        }
        pipeline = pipeline.with_shard(shard);
    }
    eprintln!(
        "run directory {}; data {}; device {}",
        pipeline.run_dir().display(),
        pipeline.config().data_path().display(),
        pipeline.config().device
    );
    let started = Instant::now();
    let summary = match pipeline.run_until(last) {
        Ok(summary) => summary,
        // This shard's part is written; the others are for other machines.
        Err(e @ PipelineError::Incomplete { .. }) if cli.shard.is_some() => {
            let shard = pipeline.shard();
            eprintln!("shard {}/{} done. {e}", shard.index, shard.count);
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    for (stage, status) in &summary.stages {
        let (what, m) = match status {
            StageStatus::Skipped(m) => ("cached", m),
            StageStatus::Ran(m) => ("ran", m),
        };
        eprintln!("{:>14}: {what} ({:.1} s)", stage.name(), m.seconds);
    }
    println!("{}", pipeline.results_markdown(&summary.results));
    eprintln!(
        "wall time {:.1} s; report {}",
        started.elapsed().as_secs_f64(),
        summary.report.display()
    );
    Ok(())
}
