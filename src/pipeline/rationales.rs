//! Stages 1 and 3: hindsight rationales and their Tree-of-Thought refinement, written to
//! resumable rationale stores (a rerun continues with the users that are missing).
//!
//! The SLM is used only through [`TextGenerator`] and the chain scorer only through
//! [`ThoughtScorer`], so either can be replaced (a remote LM server, another scorer).

use std::path::{Path, PathBuf};
use std::time::Instant;

use pulserec_core::{TextGenerator, ThoughtScorer, UserContext};
use pulserec_data::LeaveOneOut;
use pulserec_slm::{LikelihoodThoughtScorer, Slm};
use pulserec_thoughtspace::{ConsistencyScorer, EncoderOptions, ThoughtSpace};
use pulserec_tot::{
    ContextBuilder, HindsightConfig, HindsightRationales, PromptFormat, RationaleStore, Shard,
    StoredRationale, TotConfig, TreeOfThought,
};
use serde_json::{Value, json};

use super::{Pipeline, PipelineError, Result, Stage, StageResult, prepare, sasrec, summary};
use crate::config::ScorerKind;

/// The store folder of the hindsight rationales.
pub(super) fn hindsight_store(p: &Pipeline) -> PathBuf {
    p.stage_dir(Stage::Rationales).join("hindsight")
}

/// The store folder of the Tree-of-Thought rationales chosen by `scorer`.
pub(super) fn tot_store(p: &Pipeline, scorer: ScorerKind) -> PathBuf {
    p.stage_dir(Stage::Tot).join(scorer.name())
}

/// The SLM as a generator, its chat format as a prompt format, and its name for the store.
fn generator(p: &Pipeline, stage: Stage) -> Result<(Box<dyn TextGenerator>, PromptFormat, String)> {
    let path = &p.config().assets.slm;
    let slm = Slm::load(path, p.device()).at(stage)?;
    let chat = slm.chat_format().at(stage)?;
    let format: PromptFormat = Box::new(move |prompt: &pulserec_tot::Prompt| {
        chat.prompt(prompt.system.as_deref(), &prompt.user)
    });
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    Ok((Box::new(slm), format, name))
}

/// Runs `make` over the pending contexts in batches, appending each batch to the store as one
/// part (the unit a killed run can lose); returns every stored record.
fn fill_store(
    p: &Pipeline,
    stage: Stage,
    store: &RationaleStore,
    contexts: &[UserContext],
    batch_size: usize,
    what: &str,
    mut make: impl FnMut(&[UserContext]) -> Result<Vec<StoredRationale>>,
) -> Result<Vec<StoredRationale>> {
    let pending = store
        .pending(contexts.iter().map(|c| c.user), Shard::ALL)
        .at(stage)?;
    let todo: Vec<UserContext> = contexts
        .iter()
        .filter(|c| pending.contains(&c.user))
        .cloned()
        .collect();
    if todo.len() < contexts.len() {
        tracing::info!(
            stage = stage.name(),
            done = contexts.len() - todo.len(),
            pending = todo.len(),
            "resuming the store"
        );
    }
    let bar = p.bar(todo.len(), what);
    for batch in todo.chunks(batch_size) {
        let records = make(batch)?;
        store.append(&records, Shard::ALL).at(stage)?;
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    store.load().at(stage)
}

fn store_summary(records: &[StoredRationale], seconds: f64) -> Vec<(&'static str, Value)> {
    let tokens: usize = records.iter().map(|r| r.tokens).sum();
    vec![
        ("users", json!(records.len())),
        (
            "parse_failures",
            json!(records.iter().filter(|r| !r.parsed).count()),
        ),
        (
            "empty",
            json!(records.iter().filter(|r| r.text.trim().is_empty()).count()),
        ),
        ("tokens", json!(tokens)),
        (
            "tokens_per_second",
            json!(tokens as f64 / seconds.max(1e-9)),
        ),
    ]
}

pub(super) fn run_hindsight(p: &Pipeline, _dir: &Path) -> Result<Value> {
    let c = p.config();
    let (prepared, users) = prepare::load(p)?;
    let split = LeaveOneOut::new(&prepared.dataset.sequences);
    let builder = ContextBuilder::default();
    let contexts: Vec<UserContext> = users
        .training
        .iter()
        .filter_map(|&u| builder.context(&prepared.dataset, &split, u, &[]))
        .collect();
    let (generator, format, model) = generator(p, Stage::Rationales)?;
    let mut config = HindsightConfig::paper(c.seed);
    config.batch_size = c.rationales.batch_size;
    config.sampling.temperature = c.rationales.temperature;
    config.sampling.max_new_tokens = c.rationales.max_new_tokens;
    let mut stage1 = HindsightRationales::new(generator, config)
        .at(Stage::Rationales)?
        .with_format(format);
    let store = RationaleStore::open(hindsight_store(p)).at(Stage::Rationales)?;
    let started = Instant::now();
    let records = fill_store(
        p,
        Stage::Rationales,
        &store,
        &contexts,
        c.rationales.batch_size,
        "hindsight",
        |batch| {
            let t = Instant::now();
            let outs = stage1.generate(batch).at(Stage::Rationales)?;
            let per_user = t.elapsed().as_secs_f64() / batch.len() as f64;
            Ok(outs
                .into_iter()
                .map(|o| StoredRationale::hindsight(o, &model, per_user))
                .collect())
        },
    )?;
    Ok(summary(&store_summary(
        &records,
        started.elapsed().as_secs_f64(),
    )))
}

fn scorer(p: &Pipeline, kind: ScorerKind) -> Result<Box<dyn ThoughtScorer>> {
    Ok(match kind {
        ScorerKind::Consistency => {
            let options = EncoderOptions {
                max_len: Some(p.config().thought_space.max_len),
                ..EncoderOptions::default()
            };
            let space =
                ThoughtSpace::load(&super::thought_space::space_dir(p), &options, p.device())
                    .at(Stage::Tot)?;
            Box::new(ConsistencyScorer::new(space))
        }
        ScorerKind::Likelihood => {
            let slm = Slm::load(&p.config().assets.slm, p.device()).at(Stage::Tot)?;
            Box::new(LikelihoodThoughtScorer::new(slm))
        }
    })
}

pub(super) fn run_tot(p: &Pipeline, _dir: &Path) -> Result<Value> {
    let c = p.config();
    let (prepared, users) = prepare::load(p)?;
    let split = LeaveOneOut::new(&prepared.dataset.sequences);
    let similar = sasrec::read_similar_users(p)?;
    let builder = ContextBuilder::default();
    let contexts: Vec<UserContext> = users
        .training
        .iter()
        .filter_map(|&u| {
            let neighbours = similar.get(&u).map_or(&[][..], Vec::as_slice);
            builder.context(&prepared.dataset, &split, u, neighbours)
        })
        .collect();
    let mut config = TotConfig::paper(c.seed);
    config.depth = c.tot.depth;
    config.branching = c.tot.branching;
    config.beam_width = c.tot.beam_width;
    config.batch_size = c.tot.batch_size;
    config.sampling.temperature = c.tot.temperature;
    config.sampling.max_new_tokens = c.tot.max_new_tokens;
    let mut per_scorer = serde_json::Map::new();
    for &kind in &c.tot.scorers {
        let (generator, format, model) = generator(p, Stage::Tot)?;
        let mut tot = TreeOfThought::new(generator, scorer(p, kind)?, config.clone())
            .at(Stage::Tot)?
            .with_format(format);
        let store = RationaleStore::open(tot_store(p, kind)).at(Stage::Tot)?;
        let started = Instant::now();
        let records = fill_store(
            p,
            Stage::Tot,
            &store,
            &contexts,
            c.tot.batch_size,
            kind.name(),
            |batch| {
                let t = Instant::now();
                let trees = tot.search(batch).at(Stage::Tot)?;
                let per_user = t.elapsed().as_secs_f64() / batch.len() as f64;
                Ok(trees
                    .iter()
                    .map(|tree| {
                        StoredRationale::tree_of_thought(
                            tree,
                            kind.name(),
                            &model,
                            c.seed,
                            per_user,
                        )
                    })
                    .collect())
            },
        )?;
        per_scorer.insert(
            kind.name().to_string(),
            summary(&store_summary(&records, started.elapsed().as_secs_f64())),
        );
        if records.len() != contexts.len() {
            return Err(PipelineError::Data {
                stage: Stage::Tot.name(),
                message: format!(
                    "the {} store holds {} users, expected {}",
                    kind.name(),
                    records.len(),
                    contexts.len()
                ),
            });
        }
    }
    Ok(Value::Object(per_scorer))
}
