//! Stages 1 and 3: hindsight rationales and their Tree-of-Thought refinement, written to
//! resumable rationale stores (a rerun continues with the users that are missing).
//!
//! The SLM is used only through [`TextGenerator`] and the chain scorer only through
//! [`ThoughtScorer`], so either can be replaced (a remote LM server, another scorer).

use std::path::{Path, PathBuf};
use std::time::Instant;

use pulserec_core::{TextGenerator, ThoughtScorer, UserContext};
use pulserec_data::LeaveOneOut;
use pulserec_slm::{ChatFormat, SharedSlm, Slm};
use pulserec_thoughtspace::{ConsistencyScorer, EncoderOptions, ThoughtSpace};
use pulserec_tot::{
    ContextBuilder, HindsightRationales, LikelihoodThoughtScorer, PromptFormat, RationaleStore,
    RemoteConfig, RemoteGenerator, Shard, StoredRationale, TreeOfThought,
};
use serde_json::{Value, json};

use super::marker::{read_json, write_json};
use super::{Pipeline, PipelineError, Result, Stage, StageResult, prepare, sasrec, summary};
use crate::config::{GeneratorConfig, GeneratorKind, ScorerKind};

/// The store folder of the hindsight rationales.
pub(super) fn hindsight_store(p: &Pipeline) -> PathBuf {
    p.stage_dir(Stage::Rationales).join("hindsight")
}

/// The store folder of the Tree-of-Thought rationales chosen by `scorer`.
pub(super) fn tot_store(p: &Pipeline, scorer: ScorerKind) -> PathBuf {
    p.stage_dir(Stage::Tot).join(scorer.name())
}

/// The local SLM of a stage, loaded on first use and then shared (the Tree-of-Thought search
/// generates and, with the likelihood scorer, scores with one copy).
fn local_slm(p: &Pipeline, stage: Stage, slot: &mut Option<SharedSlm>) -> Result<SharedSlm> {
    if let Some(slm) = slot {
        return Ok(slm.clone());
    }
    let slm = SharedSlm::from(
        Slm::load_with(&p.config().assets.slm, p.device(), &p.slm_options()).at(stage)?,
    );
    *slot = Some(slm.clone());
    Ok(slm)
}

/// The SLM's chat template as the prompt format of the generation stages and the likelihood
/// thought scorer (system text and user turn, then the open assistant turn).
pub fn chat_format(chat: ChatFormat) -> PromptFormat {
    Box::new(move |prompt: &pulserec_tot::Prompt| {
        chat.prompt(prompt.system.as_deref(), &prompt.user)
    })
}

/// The configured generator (`[generator]`: the local SLM, shared through `slm`, or an
/// OpenAI-compatible server), the SLM's chat format as the prompt format, and the model's name
/// for the store.
fn generator(
    p: &Pipeline,
    stage: Stage,
    slm: &mut Option<SharedSlm>,
) -> Result<(Box<dyn TextGenerator>, PromptFormat, String)> {
    let c = p.config();
    let path = &c.assets.slm;
    let (generator, chat, name): (Box<dyn TextGenerator>, _, _) = match c.generator.kind {
        GeneratorKind::Local => {
            let slm = local_slm(p, stage, slm)?;
            let chat = slm.chat_format().at(stage)?;
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            (Box::new(slm), chat, name)
        }
        GeneratorKind::Remote => {
            // The prompts are rendered here with the model's own chat template (read without
            // its weights), so the server receives exactly what the local SLM would.
            let tokenizer = Slm::load_tokenizer(path).at(stage)?;
            let chat = ChatFormat::of(&tokenizer).at(stage)?;
            let remote = remote_config(&c.generator, stage)?;
            let name = remote.model.clone();
            tracing::info!(stage = stage.name(), server = %remote.base_url, model = %name, "generating on a remote server");
            (
                Box::new(RemoteGenerator::new(remote).at(stage)?),
                chat,
                name,
            )
        }
    };
    Ok((generator, chat_format(chat), name))
}

/// The client settings of `[generator]` with `kind = "remote"`; the API key is read from the
/// environment variable the config names (an unset variable is an error naming it).
pub(super) fn remote_config(g: &GeneratorConfig, stage: Stage) -> Result<RemoteConfig> {
    let missing = |key: &str| PipelineError::Data {
        stage: stage.name(),
        message: format!("generator.{key} is required with generator.kind = \"remote\""),
    };
    let base_url = g.base_url.clone().ok_or_else(|| missing("base_url"))?;
    let model = g.model.clone().ok_or_else(|| missing("model"))?;
    let mut remote = RemoteConfig::new(base_url, model);
    remote.api_key = match &g.api_key_env {
        None => None,
        Some(var) => Some(std::env::var(var).map_err(|_| PipelineError::Data {
            stage: stage.name(),
            message: format!(
                "generator.api_key_env names `{var}`, which is not set (or not UTF-8) in the environment"
            ),
        })?),
    };
    remote.timeout = std::time::Duration::from_secs_f64(g.timeout_s);
    remote.max_retries = g.retries;
    remote.concurrency = g.concurrency;
    Ok(remote)
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
    let shard = p.shard();
    if shard == Shard::ALL
        && let Some(count) = shard_count(p, stage)?
    {
        // A store written in shards is completed by its shards (or their parts copied in),
        // never silently by an unsharded run on one machine.
        require_complete(stage, store, contexts, count)?;
    }
    let todo = store.pending_contexts(contexts, shard).at(stage)?;
    let bar = p.bar(todo.len(), what);
    for batch in todo.chunks(batch_size) {
        let records = make(batch)?;
        store.append(&records, shard).at(stage)?;
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    store.load().at(stage)
}

/// The file in a generation stage's folder that says its stores are written in shards.
pub(super) const SHARDS_FILE: &str = "shards.json";

/// How many shards `stage`'s stores are written in (`None`: not sharded).
pub(super) fn shard_count(p: &Pipeline, stage: Stage) -> Result<Option<u32>> {
    let path = p.stage_dir(stage).join(SHARDS_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let value: Value = read_json(&path)?;
    match value.get("count").and_then(Value::as_u64) {
        Some(n) if n >= 1 && n <= u32::MAX as u64 => Ok(Some(n as u32)),
        _ => Err(PipelineError::Json {
            path,
            message: "expected {\"count\": N} with N >= 1".into(),
        }),
    }
}

/// Records that `stage` is written in the pipeline's shard count (a run with another count is
/// refused: its users would be split differently).
fn record_shards(p: &Pipeline, stage: Stage) -> Result<()> {
    let shard = p.shard();
    if shard == Shard::ALL {
        return Ok(());
    }
    match shard_count(p, stage)? {
        Some(n) if n == shard.count => Ok(()),
        Some(n) => Err(PipelineError::Data {
            stage: stage.name(),
            message: format!(
                "{} is written in {n} shards, not {} (--shard i/{n})",
                p.stage_dir(stage).display(),
                shard.count
            ),
        }),
        None => write_json(
            &p.stage_dir(stage).join(SHARDS_FILE),
            &json!({"count": shard.count}),
        ),
    }
}

/// [`PipelineError::Incomplete`] unless `store` holds every user of `contexts`.
fn require_complete(
    stage: Stage,
    store: &RationaleStore,
    contexts: &[UserContext],
    shards: u32,
) -> Result<()> {
    let missing = store
        .pending(contexts.iter().map(|c| c.user), Shard::ALL)
        .at(stage)?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(PipelineError::Incomplete {
        stage: stage.name(),
        store: store.dir().to_path_buf(),
        shards,
        missing,
    })
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
    let (generator, format, model) = generator(p, Stage::Rationales, &mut None)?;
    let mut stage1 = HindsightRationales::new(generator, c.rationales.hindsight(c.seed))
        .at(Stage::Rationales)?
        .with_format(format);
    record_shards(p, Stage::Rationales)?;
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
    require_complete(Stage::Rationales, &store, &contexts, p.shard().count)?;
    Ok(summary(&store_summary(
        &records,
        started.elapsed().as_secs_f64(),
    )))
}

fn scorer(
    p: &Pipeline,
    kind: ScorerKind,
    slm: &mut Option<SharedSlm>,
) -> Result<Box<dyn ThoughtScorer>> {
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
            // The local SLM scores, whether or not it also generates (a remote generator's
            // server does not give prompt log-probabilities on every engine).
            let slm = local_slm(p, Stage::Tot, slm)?;
            let format = chat_format(slm.chat_format().at(Stage::Tot)?);
            Box::new(LikelihoodThoughtScorer::new(Box::new(slm), format))
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
    let config = c.tot.search(c.seed);
    record_shards(p, Stage::Tot)?;
    let mut per_scorer = serde_json::Map::new();
    let mut slm = None;
    for &kind in &c.tot.scorers {
        let (generator, format, model) = generator(p, Stage::Tot, &mut slm)?;
        let mut tot = TreeOfThought::new(generator, scorer(p, kind, &mut slm)?, config.clone())
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
    }
    // Every scorer's store holds this shard's users now; the stage is done when they hold
    // every shard's.
    for &kind in &c.tot.scorers {
        let store = RationaleStore::open(tot_store(p, kind)).at(Stage::Tot)?;
        require_complete(Stage::Tot, &store, &contexts, p.shard().count)?;
    }
    Ok(Value::Object(per_scorer))
}
