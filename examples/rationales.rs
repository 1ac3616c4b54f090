//! Stages 1 and 3 of PULSE on real data: SmolLM2 writes hindsight rationales for N users, then a
//! Tree-of-Thought search refines them, scored by Thought-Space consistency (`--scorer
//! consistency`, the paper's) or by the SLM's likelihood of the actual choice (`--scorer
//! likelihood`, the ablation). Both stores are Parquet parts keyed by user (`pulserec_tot::
//! RationaleStore`), resumable (rerun to continue; a `kill -9` loses at most the batch in flight)
//! and shardable; prints users/s and generated tokens/s.
//!
//! ```text
//! cargo run --release --example rationales -- --users 100 --out runs/rationales
//! cargo run --release --example rationales -- --users 100 --out runs/rationales \
//!     --sasrec runs/sasrec-games/checkpoint --similar-users 5
//! ```
//! Defaults: the Games data in ../shared/data, the SmolLM2 and MiniLM assets. `--thought-space`
//! takes a trained space (from the `thought_space` example); without it both encoders start from
//! MiniLM (an untrained space). Tree-of-Thought prompts show recent items of each user's
//! `--similar-users` nearest neighbours under a SASRec (`--sasrec`: a checkpoint of the `sasrec`
//! example; otherwise a quick one is trained on the training sequences and kept in
//! `<out>/sasrec/` for reruns). Stores: `<out>/hindsight/`, `<out>/tot-<scorer>/`.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::Device;

use anyhow::Context;
use clap::Parser;
use pulserec::device::DeviceSpec;
use pulserec::pipeline::chat_format;
use pulserec_core::{ItemId, ThoughtScorer, UserContext, UserId};
use pulserec_data::{Dataset, LeaveOneOut, Target, load};
use pulserec_seqrec::checkpoint::WEIGHTS_FILE;
use pulserec_seqrec::{
    SasRec, SasRecConfig, SasRecRecommender, TrainConfig, TrainData, load_checkpoint, top_k_of,
};
use pulserec_slm::{SharedSlm, Slm};
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
    /// Similar users whose recent training items Tree-of-Thought prompts show (0: none). They
    /// are nearest neighbours by cosine of SASRec user vectors, computed from training histories
    /// only; `--stage hindsight` needs none (its prompt shows no similar users).
    #[arg(long, default_value_t = 5)]
    similar_users: usize,
    /// SASRec checkpoint directory (`checkpoint/` of the `sasrec` example) for similar users.
    /// Without it a quick SASRec is trained here for `--sasrec-epochs` epochs and saved to
    /// `<out>/sasrec/`, which later runs reuse (shards started together should pass one, or
    /// each would train its own).
    #[arg(long)]
    sasrec: Option<PathBuf>,
    /// Epochs of the quick SASRec trained when no checkpoint is given (a few: it only has to
    /// find neighbours, not to recommend well).
    #[arg(long, default_value_t = 3)]
    sasrec_epochs: usize,
    /// Device: flex, tch, tch-cuda:N or cuda:N.
    #[arg(long, default_value = "flex")]
    device: DeviceSpec,
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

/// The SASRec behind `--similar-users`: `--sasrec`, else one saved by an earlier run under
/// `<out>/sasrec/`, else a short training run on the training sequences (saved there).
fn sasrec_model(
    args: &Args,
    dataset: &Dataset,
    split: &LeaveOneOut<'_>,
    device: &Device,
) -> anyhow::Result<SasRec> {
    let n_items = dataset.catalog.len();
    let saved = args.out.join("sasrec");
    let reuse = saved.join(WEIGHTS_FILE).exists().then(|| saved.clone());
    if let Some(dir) = args.sasrec.clone().or(reuse) {
        let (model, config) = load_checkpoint(&dir, device)
            .with_context(|| format!("loading the SASRec checkpoint {}", dir.display()))?;
        anyhow::ensure!(
            config.n_items == n_items,
            "{}: SASRec over {} items, but {} has {n_items}",
            dir.display(),
            config.n_items,
            args.data.display()
        );
        eprintln!("similar users: SASRec from {}", dir.display());
        return Ok(model);
    }
    eprintln!(
        "similar users: training SASRec for {} epochs on training sequences (a quick model; \
         pass --sasrec <dir> for a tuned one); saving it to {}",
        args.sasrec_epochs,
        saved.display()
    );
    let data = TrainData {
        train: (0..dataset.n_users() as u32)
            .map(|u| split.train(UserId(u)))
            .collect(),
        ..Default::default()
    };
    let config = TrainConfig::paper()
        .with_epochs(args.sasrec_epochs)
        .with_seed(args.seed)
        .with_progress(true);
    let outcome = pulserec_seqrec::train(
        &SasRecConfig::paper(n_items),
        &config,
        &data,
        device,
        Some(saved.as_path()),
    )?;
    Ok(outcome.model)
}

/// The `k` users most similar to each of `users` (best first), by cosine of SASRec user vectors.
///
/// No evaluation answer can leak: the model never saw valid or test items, a queried user's
/// vector comes from the history its prompt shows (before the target it explains), and other
/// users' vectors from their training sequences.
fn similar_users(
    model: &SasRec,
    split: &LeaveOneOut<'_>,
    n_users: usize,
    users: &[UserId],
    k: usize,
    device: &Device,
) -> anyhow::Result<Vec<Vec<UserId>>> {
    let recommender = SasRecRecommender::new(model, device);
    let dim = model.hidden();
    let unit = |mut v: Vec<f32>| {
        for row in v.chunks_exact_mut(dim) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            row.iter_mut().for_each(|x| *x /= norm);
        }
        v
    };
    let others: Vec<UserId> = (0..n_users as u32)
        .map(UserId)
        .filter(|&u| !split.train(u).is_empty())
        .collect();
    let pb = pulserec_train::progress_bar(others.len() as u64, "user vectors");
    let mut keys = Vec::with_capacity(others.len() * dim);
    for chunk in others.chunks(4096) {
        let histories: Vec<&[ItemId]> = chunk.iter().map(|&u| split.train(u)).collect();
        keys.extend(recommender.user_vectors(&histories)?);
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let keys = unit(keys);
    let histories: Vec<&[ItemId]> = users
        .iter()
        .map(|&u| split.history_before(u, Target::LastTrain))
        .collect();
    let queries = unit(recommender.user_vectors(&histories)?);
    Ok(queries
        .chunks_exact(dim)
        .zip(users)
        .map(|(query, &me)| {
            let scores = others
                .iter()
                .zip(keys.chunks_exact(dim))
                .filter(|(other, _)| **other != me)
                .map(|(other, key)| {
                    (
                        other.0,
                        query.iter().zip(key).map(|(a, b)| a * b).sum::<f32>(),
                    )
                });
            top_k_of(scores, k)
                .into_iter()
                .map(|(u, _)| UserId(u))
                .collect()
        })
        .collect())
}

fn main() -> anyhow::Result<()> {
    pulserec::malloc::tune_malloc();
    pulserec::init_logging("warn");
    let args = Args::parse();
    let shard = parse_shard(&args.shard)?;
    let device = args.device.device()?;
    let dataset = load(&args.data).with_context(|| format!("loading {}", args.data.display()))?;
    let split = LeaveOneOut::new(&dataset.sequences);
    let builder = ContextBuilder::default();
    let mut contexts: Vec<UserContext> = (0..dataset.n_users() as u32)
        .filter_map(|u| builder.context(&dataset, &split, UserId(u), &[]))
        .take(args.users)
        .collect();
    if args.similar_users > 0 && args.stage != "hindsight" {
        let sasrec = sasrec_model(&args, &dataset, &split, &device)?;
        let users: Vec<UserId> = contexts.iter().map(|c| c.user).collect();
        let started = Instant::now();
        let similar = similar_users(
            &sasrec,
            &split,
            dataset.n_users(),
            &users,
            args.similar_users,
            &device,
        )?;
        contexts = users
            .iter()
            .zip(&similar)
            .filter_map(|(&u, s)| builder.context(&dataset, &split, u, s))
            .collect();
        let shown: usize = contexts.iter().map(|c| c.similar_items.len()).sum();
        eprintln!(
            "similar users: {} per user in {:.1} s; {:.1} of their items per prompt on average",
            args.similar_users,
            started.elapsed().as_secs_f64(),
            shown as f64 / contexts.len().max(1) as f64
        );
    }
    // One model generates and (with `--scorer likelihood`) scores.
    let slm = SharedSlm::from(
        Slm::load(&args.model, &device)
            .with_context(|| format!("loading {}", args.model.display()))?,
    );
    let chat = slm.chat_format()?;
    let format = || chat_format(chat);
    let model_name = args
        .model
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let mut generator = Some(slm.clone());

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
        let pb = pulserec_train::progress_bar(todo.len() as u64, "hindsight");
        let start = Instant::now();
        let mut done = Vec::new();
        for batch in todo.chunks(args.batch_size) {
            let t = Instant::now();
            let users: Vec<UserContext> = batch.iter().map(|c| (*c).clone()).collect();
            let outs = stage1.generate(&users)?;
            let per_user = t.elapsed().as_secs_f64() / users.len() as f64;
            let records: Vec<StoredRationale> = outs
                .into_iter()
                .map(|o| StoredRationale::hindsight(o, &model_name, per_user))
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
            Box::new(LikelihoodThoughtScorer::new(
                Box::new(slm.clone()),
                format(),
            ))
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
        let pb = pulserec_train::progress_bar(todo.len() as u64, "tree-of-thought");
        let start = Instant::now();
        let mut done = Vec::new();
        for batch in todo.chunks(args.batch_size) {
            let t = Instant::now();
            let trees = tot.search(batch)?;
            let per_user = t.elapsed().as_secs_f64() / batch.len() as f64;
            let records: Vec<StoredRationale> = trees
                .iter()
                .map(|tree| {
                    StoredRationale::tree_of_thought(
                        tree,
                        tot.scorer_name(),
                        &model_name,
                        args.seed,
                        per_user,
                    )
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
