//! Stages 1 and 3 of PULSE on real data: SmolLM2 writes hindsight rationales for N users, then a
//! Tree-of-Thought search refines them, scored by Thought-Space consistency (`--scorer
//! consistency`, the paper's) or by the SLM's likelihood of the actual choice (`--scorer
//! likelihood`, the ablation). Both stores are
//! resumable (rerun to continue) and shardable; prints users/s and generated tokens/s.
//!
//! ```text
//! cargo run --release --example rationales -- --users 100 --out runs/rationales
//! ```
//! Defaults: the Games data in ../shared/data, the SmolLM2 and MiniLM assets. `--thought-space`
//! takes a trained space (from the `thought_space` example); without it both encoders start from
//! MiniLM (an untrained space). Similar users' items are not shown yet (`ContextBuilder` accepts
//! them; wiring in SASRec neighbours is the pipeline's job).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pulserec::device::DeviceSpec;
use pulserec_core::{RationaleSource, ThoughtScorer, UserContext, UserId};
use pulserec_data::{LeaveOneOut, load};
use pulserec_slm::{LikelihoodThoughtScorer, Slm};
use pulserec_thoughtspace::{ConsistencyScorer, EncoderOptions, ThoughtSpace};
use pulserec_tot::{
    ContextBuilder, HindsightConfig, HindsightRationales, PROMPT_VERSION, PromptFormat,
    RationaleStore, Shard, StoredRationale, TotConfig, TreeOfThought,
};

#[derive(Parser, Debug)]
#[command(about = "Hindsight rationales and Tree-of-Thought refinement for N users")]
struct Args {
    /// Data set (file or folder).
    #[arg(long, default_value = "../shared/data/amazon-games-2018")]
    data: PathBuf,
    /// SLM (GGUF or HF directory).
    #[arg(long, default_value = "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")]
    model: PathBuf,
    /// Pretrained encoder for an untrained Thought Space.
    #[arg(long, default_value = "assets/all-minilm-l6-v2")]
    encoder: PathBuf,
    /// A trained Thought Space checkpoint (overrides `--encoder`).
    #[arg(long)]
    thought_space: Option<PathBuf>,
    /// Users to process (the first N with a chosen item, in id order).
    #[arg(long, default_value_t = 20)]
    users: usize,
    /// Users per batched generate call.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Tree-of-Thought scorer: consistency (Thought Space) or likelihood (the SLM).
    #[arg(long, default_value = "consistency", value_parser = ["consistency", "likelihood"])]
    scorer: String,
    /// Which stages: hindsight, tot or both.
    #[arg(long, default_value = "both")]
    stage: String,
    /// Output folder (stores under `hindsight/` and `tot-<scorer>/`).
    #[arg(long, default_value = "runs/rationales")]
    out: PathBuf,
    /// Run seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Shard `i/n` of the users.
    #[arg(long, default_value = "0/1")]
    shard: String,
    /// Device: flex, tch, tch-cuda:N or cuda:N.
    #[arg(long, default_value = "flex")]
    device: DeviceSpec,
}

fn bar(n: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(n as u64);
    pb.set_style(
        ProgressStyle::with_template("{msg} {bar:30} {pos}/{len} users [{elapsed}<{eta}]")
            .expect("valid template"),
    );
    pb.set_message(what.to_string());
    pb
}

fn parse_shard(s: &str) -> anyhow::Result<Shard> {
    let (i, n) = s.split_once('/').context("--shard must be i/n")?;
    let shard = Shard {
        index: i.parse()?,
        count: n.parse()?,
    };
    anyhow::ensure!(
        shard.count > 0 && shard.index < shard.count,
        "--shard {s}: need 0 <= i < n"
    );
    Ok(shard)
}

/// Prints what a stage did and returns its generated-token count.
fn report(stage: &str, records: &[StoredRationale], secs: f64) -> usize {
    let tokens: usize = records.iter().map(|r| r.tokens).sum();
    let failures = records.iter().filter(|r| !r.parsed).count();
    eprintln!(
        "{stage}: {} users in {secs:.1} s = {:.3} users/s, {tokens} tokens generated = {:.1} tok/s, parse failures {failures} ({:.1}%)",
        records.len(),
        records.len() as f64 / secs.max(1e-9),
        tokens as f64 / secs.max(1e-9),
        100.0 * failures as f64 / records.len().max(1) as f64,
    );
    tokens
}

fn main() -> anyhow::Result<()> {
    pulserec::init_logging("warn");
    let args = Args::parse();
    let shard = parse_shard(&args.shard)?;
    let device = args.device.device()?;
    let dataset = load(&args.data).with_context(|| format!("loading {}", args.data.display()))?;
    let split = LeaveOneOut::new(&dataset.sequences);
    let builder = ContextBuilder::default();
    let contexts: Vec<UserContext> = (0..dataset.n_users() as u32)
        .filter_map(|u| builder.context(&dataset, &split, UserId(u), &[]))
        .take(args.users)
        .collect();
    let slm = Slm::load(&args.model, &device)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let chat = slm.chat_format()?;
    let format =
        || -> PromptFormat { Box::new(move |p| chat.prompt(p.system.as_deref(), &p.user)) };
    let model_name = args
        .model
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut generator = Some(slm);

    if args.stage == "hindsight" || args.stage == "both" {
        let store = RationaleStore::open(args.out.join("hindsight"))?;
        let pending = store.pending(contexts.iter().map(|c| c.user), shard)?;
        let todo: Vec<&UserContext> = contexts
            .iter()
            .filter(|c| pending.contains(&c.user))
            .collect();
        let mut stage1 = HindsightRationales::new(
            generator.take().context("generator")?,
            HindsightConfig::paper(args.seed),
        )?
        .with_format(format());
        let pb = bar(todo.len(), "hindsight");
        let start = Instant::now();
        let mut done = Vec::new();
        for batch in todo.chunks(args.batch_size) {
            let t = Instant::now();
            let users: Vec<UserContext> = batch.iter().map(|c| (*c).clone()).collect();
            let outs = stage1.generate(&users)?;
            let per_user = t.elapsed().as_secs_f64() / users.len() as f64;
            let records: Vec<StoredRationale> = outs
                .into_iter()
                .map(|o| StoredRationale {
                    user: o.rationale.user,
                    text: o.rationale.text,
                    parsed: o.rationale.parsed,
                    source: RationaleSource::Hindsight,
                    score: None,
                    scorer: None,
                    model: model_name.clone(),
                    prompt_version: o.prompt_version,
                    seed: o.seed,
                    tokens: o.tokens,
                    seconds: per_user,
                })
                .collect();
            store.append(&records, shard)?;
            done.extend(records);
            pb.inc(users.len() as u64);
        }
        pb.finish_and_clear();
        report("hindsight", &done, start.elapsed().as_secs_f64());
        generator = Some(stage1.into_generator());
    }

    if args.stage == "tot" || args.stage == "both" {
        let scorer: Box<dyn ThoughtScorer> = if args.scorer == "likelihood" {
            // The scorer owns a second copy of the SLM (see LikelihoodThoughtScorer).
            let slm = Slm::load(&args.model, &device)
                .with_context(|| format!("loading {}", args.model.display()))?;
            Box::new(LikelihoodThoughtScorer::new(slm))
        } else {
            let space = match &args.thought_space {
                Some(dir) => ThoughtSpace::load(dir, &EncoderOptions::default(), &device)?,
                None => ThoughtSpace::from_pretrained(
                    &args.encoder,
                    &EncoderOptions::default(),
                    &device,
                )?,
            };
            Box::new(ConsistencyScorer::new(space))
        };
        let config = TotConfig {
            batch_size: args.batch_size,
            ..TotConfig::paper(args.seed)
        };
        let mut tot = TreeOfThought::new(generator.take().context("generator")?, scorer, config)?
            .with_format(format());
        let store = RationaleStore::open(args.out.join(format!("tot-{}", args.scorer)))?;
        let pending = store.pending(contexts.iter().map(|c| c.user), shard)?;
        let todo: Vec<UserContext> = contexts
            .iter()
            .filter(|c| pending.contains(&c.user))
            .cloned()
            .collect();
        let pb = bar(todo.len(), "tree-of-thought");
        let start = Instant::now();
        let mut done = Vec::new();
        for batch in todo.chunks(args.batch_size) {
            let t = Instant::now();
            let trees = tot.search(batch)?;
            let per_user = t.elapsed().as_secs_f64() / batch.len() as f64;
            let records: Vec<StoredRationale> = trees
                .iter()
                .map(|tree| {
                    let r = tree.rationale();
                    StoredRationale {
                        user: r.user,
                        text: r.text,
                        parsed: r.parsed,
                        source: RationaleSource::TreeOfThought,
                        score: r.score,
                        scorer: Some(tot.scorer_name().to_string()),
                        model: model_name.clone(),
                        prompt_version: PROMPT_VERSION.to_string(),
                        seed: args.seed,
                        tokens: tree.tokens(),
                        seconds: per_user,
                    }
                })
                .collect();
            store.append(&records, shard)?;
            done.extend(records);
            pb.inc(batch.len() as u64);
        }
        pb.finish_and_clear();
        report("tree-of-thought", &done, start.elapsed().as_secs_f64());
        let mut best: Vec<&StoredRationale> = done.iter().collect();
        best.sort_by(|a, b| {
            b.score
                .unwrap_or(f32::MIN)
                .total_cmp(&a.score.unwrap_or(f32::MIN))
        });
        for r in best.iter().take(5) {
            println!(
                "{}\t{:.3}\t{}",
                dataset.user_ids[r.user.index()],
                r.score.unwrap_or(f32::NAN),
                r.text
            );
        }
    }
    Ok(())
}
