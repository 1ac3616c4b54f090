//! Stages 1 and 3 of PULSE on real data, as library calls: SmolLM2 writes hindsight rationales
//! for N users (`HindsightRationales`), then a Tree-of-Thought search refines them
//! (`TreeOfThought`), scored by Thought-Space consistency (`--scorer consistency`, the paper's) or
//! by the SLM's likelihood of the actual choice (`--scorer likelihood`, the ablation). Both stores
//! are Parquet parts keyed by user (`RationaleStore`): rerun to continue, `--shard i/n` to split
//! the users over machines. Prints users/s and generated tokens/s. `pulserec rationales|tot`
//! runs the same stages from a config, with their inputs (SASRec, the trained Thought Space)
//! built for you.
//!
//! ```text
//! cargo run --release --example rationales -- --users 100 --out runs/rationales
//! cargo run --release --example rationales -- --users 100 --out runs/rationales \
//!     --sasrec runs/sasrec-games/checkpoint --similar-users 5
//! ```
//! Defaults: the Games data in ../shared/data, the SmolLM2 and MiniLM assets. `--thought-space`
//! takes a trained space (the `thought_space` example's, or a pipeline run's
//! `thought_space/space`); without it both encoders start from MiniLM (an untrained space).
//! With `--sasrec` (a checkpoint of the `sasrec` example or a pipeline run's `sasrec/checkpoint`)
//! Tree-of-Thought prompts show recent items of each user's `--similar-users` nearest
//! neighbours; without it they show none. Stores: `<out>/hindsight/`, `<out>/tot-<scorer>/`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Parser;
use pulserec::device::DeviceSpec;
use pulserec::pipeline::chat_format;
use pulserec_core::{ThoughtScorer, UserContext, UserId};
use pulserec_data::{LeaveOneOut, load};
use pulserec_seqrec::{SasRecRecommender, load_checkpoint};
use pulserec_slm::{LoadOptions, SharedSlm, Slm, WeightMode};
use pulserec_thoughtspace::{ConsistencyScorer, EncoderOptions, ThoughtSpace};
use pulserec_tot::{
    ContextBuilder, HindsightConfig, HindsightRationales, LikelihoodThoughtScorer, RationaleStore,
    Shard, StoredRationale, TotConfig, TreeOfThought,
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
    /// Users per batched generate call (and per store part).
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Tree-of-Thought scorer: consistency (Thought Space) or likelihood (the SLM).
    #[arg(long, default_value = "consistency", value_parser = ["consistency", "likelihood"])]
    scorer: String,
    /// Which stages: hindsight, tot or both.
    #[arg(long, default_value = "both", value_parser = ["hindsight", "tot", "both"])]
    stage: String,
    /// Output folder (stores under `hindsight/` and `tot-<scorer>/`).
    #[arg(long, default_value = "runs/rationales")]
    out: PathBuf,
    /// Run seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Shard `i/n` of the users.
    #[arg(long, default_value = "0/1")]
    shard: Shard,
    /// Similar users whose recent training items Tree-of-Thought prompts show (needs
    /// `--sasrec`).
    #[arg(long, default_value_t = 5)]
    similar_users: usize,
    /// SASRec checkpoint directory whose user vectors find the similar users.
    #[arg(long)]
    sasrec: Option<PathBuf>,
    /// Device: flex, tch, tch-cuda:N or cuda:N.
    #[arg(long, default_value = "flex")]
    device: DeviceSpec,
    /// Prompts and steps of 32 rows or more in bfloat16 where the CPU can (AMX or
    /// AVX512-BF16; `WeightMode::Bf16`, the pipeline's `precision = "bf16"`).
    #[arg(long)]
    bf16: bool,
}

/// Fills `store` with `make`'s records for the users it lacks, one part per batch; prints what
/// the stage did and returns the records written.
fn fill(
    stage: &str,
    store: &RationaleStore,
    contexts: &[UserContext],
    args: &Args,
    mut make: impl FnMut(&[UserContext]) -> anyhow::Result<Vec<StoredRationale>>,
) -> anyhow::Result<Vec<StoredRationale>> {
    let todo = store.pending_contexts(contexts, args.shard)?;
    let bar = pulserec_train::progress_bar(todo.len() as u64, stage);
    let start = Instant::now();
    let mut done = Vec::new();
    for batch in todo.chunks(args.batch_size) {
        let records = make(batch)?;
        store.append(&records, args.shard)?;
        done.extend(records);
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let tokens: usize = done.iter().map(|r| r.tokens).sum();
    let failures = done.iter().filter(|r| !r.parsed).count();
    eprintln!(
        "{stage}: {} users in {secs:.1} s = {:.3} users/s, {tokens} tokens generated = {:.1} tok/s, parse failures {failures} ({:.1}%)",
        done.len(),
        done.len() as f64 / secs,
        tokens as f64 / secs,
        100.0 * failures as f64 / done.len().max(1) as f64,
    );
    Ok(done)
}

fn main() -> anyhow::Result<()> {
    pulserec::malloc::tune_malloc();
    pulserec::init_logging("warn");
    let args = Args::parse();
    let device = args.device.device()?;
    let dataset = load(&args.data).with_context(|| format!("loading {}", args.data.display()))?;
    let split = LeaveOneOut::new(&dataset.sequences);
    let builder = ContextBuilder::default();
    let users: Vec<UserId> = (0..dataset.n_users() as u32)
        .map(UserId)
        .filter(|&u| builder.context(&dataset, &split, u, &[]).is_some())
        .take(args.users)
        .collect();
    // Neighbours by SASRec user vectors, from the histories before each user's choice.
    let similar: Vec<Vec<UserId>> = match &args.sasrec {
        Some(dir) if args.stage != "hindsight" && args.similar_users > 0 => {
            let (model, _) = load_checkpoint(dir, &device)
                .with_context(|| format!("loading the SASRec checkpoint {}", dir.display()))?;
            SasRecRecommender::new(&model, &device)
                .similar_users(&split, &users, args.similar_users)?
                .into_iter()
                .map(|near| near.into_iter().map(|(u, _)| u).collect())
                .collect()
        }
        _ => vec![Vec::new(); users.len()],
    };
    let contexts: Vec<UserContext> = users
        .iter()
        .zip(&similar)
        .filter_map(|(&u, near)| builder.context(&dataset, &split, u, near))
        .collect();

    // One model generates and (with `--scorer likelihood`) scores.
    let options = LoadOptions {
        weights: if args.bf16 {
            WeightMode::Bf16
        } else {
            WeightMode::Auto
        },
        ..LoadOptions::default()
    };
    let slm = SharedSlm::from(
        Slm::load_with(&args.model, &device, &options)
            .with_context(|| format!("loading {}", args.model.display()))?,
    );
    let chat = slm.chat_format()?;
    let model_name = args
        .model
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();

    if args.stage != "tot" {
        let mut stage1 = HindsightRationales::new(slm.clone(), HindsightConfig::paper(args.seed))?
            .with_format(chat_format(chat));
        let store = RationaleStore::open(args.out.join("hindsight"))?;
        fill("hindsight", &store, &contexts, &args, |batch| {
            let t = Instant::now();
            let outs = stage1.generate(batch)?;
            let per_user = t.elapsed().as_secs_f64() / batch.len() as f64;
            Ok(outs
                .into_iter()
                .map(|o| StoredRationale::hindsight(o, &model_name, per_user))
                .collect())
        })?;
    }

    if args.stage != "hindsight" {
        let scorer: Box<dyn ThoughtScorer> = if args.scorer == "likelihood" {
            Box::new(LikelihoodThoughtScorer::new(
                Box::new(slm.clone()),
                chat_format(chat),
            ))
        } else {
            let options = EncoderOptions::default();
            Box::new(ConsistencyScorer::new(match &args.thought_space {
                Some(dir) => ThoughtSpace::load(dir, &options, &device)?,
                None => ThoughtSpace::from_pretrained(&args.encoder, &options, &device)?,
            }))
        };
        let config = TotConfig {
            batch_size: args.batch_size,
            ..TotConfig::paper(args.seed)
        };
        let mut tot = TreeOfThought::new(slm, scorer, config)?.with_format(chat_format(chat));
        let store = RationaleStore::open(args.out.join(format!("tot-{}", args.scorer)))?;
        let mut best = fill("tree-of-thought", &store, &contexts, &args, |batch| {
            let t = Instant::now();
            let trees = tot.search(batch)?;
            let per_user = t.elapsed().as_secs_f64() / batch.len() as f64;
            Ok(trees
                .iter()
                .map(|tree| {
                    let scorer = tot.scorer_name();
                    StoredRationale::tree_of_thought(tree, scorer, &model_name, args.seed, per_user)
                })
                .collect())
        })?;
        best.sort_by(|a, b| {
            let score = |r: &StoredRationale| r.score.unwrap_or(f32::MIN);
            score(b).total_cmp(&score(a))
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
