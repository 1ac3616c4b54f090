//! The evaluation stage: every row of the results table on the same held-out users and stored
//! candidate lists, one row at a time.
//!
//! Rows: the baselines (`eval.baselines`: random, most popular, content similarity, SASRec, the
//! base SLM) and the fine-tuned SLM variants (`sft.variants`). Each row writes
//! `eval/<split>/<row>.jsonl` (one [`Prediction`] per user and list size) and then, last and
//! atomically, `eval/<split>/<row>.json` (metrics per list size), so a killed run redoes only the
//! row it was in. Every row goes through [`CandidateSelector`], so another recommender can
//! stand in.

use std::collections::BTreeMap;
use std::path::Path;

use pulserec_core::baselines::{ContentSelector, RandomSelector, RankingSelector};
use pulserec_core::{CandidateSelector, ItemId};
use pulserec_data::PreparedDataset;
use pulserec_sft::{
    Evaluation, GenerativeConfig, GenerativeSelector, LikelihoodConfig, LikelihoodSelector,
    PopularityPrior, PromptStyle, SftExample, Variant, evaluate, load_adapter,
};
use pulserec_slm::Slm;
use pulserec_tot::RemoteGenerator;
use serde_json::{Value, json};

use super::marker::{read_json, write_json};
use super::sft::{Base, TrainRecord, read_record, variant_dir};
use super::{Pipeline, PipelineError, Result, Stage, StageResult, prepare};
use crate::config::{BaselineKind, SelectorKind};
use crate::results::{Prediction, Row, write_predictions};

/// Prompts per selector call for the SLM rows: one user at a time for the likelihood selector
/// (its context is prefilled once and the candidates scored as one batch on it; several users'
/// contexts per call only add padding: 0.73-0.75 s per user alone against 0.87-0.97 s in calls
/// of 32, docs/benchmarks.md), several for the generative one (decoding rows together pays).
fn slm_batch(kind: SelectorKind) -> usize {
    match kind {
        SelectorKind::Likelihood => 1,
        SelectorKind::Generative => 8,
    }
}
/// Prompts per selector call for the baselines (cheap per prompt).
const BASELINE_BATCH: usize = 256;

/// A row of the evaluation: a baseline or an SFT variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EvalRow {
    /// A baseline.
    Baseline(BaselineKind),
    /// A fine-tuned variant.
    Variant(Variant),
}

impl EvalRow {
    /// The row's name (file name and [`Prediction::variant`]).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Baseline(b) => b.name(),
            Self::Variant(v) => v.name(),
        }
    }

    /// The row's label in tables.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Baseline(b) => b.label(),
            Self::Variant(v) => v.label(),
        }
    }

    /// The variant of an SFT row; `None` for the base SLM and the other baselines.
    fn variant(self) -> Option<Variant> {
        match self {
            Self::Variant(v) => Some(v),
            Self::Baseline(_) => None,
        }
    }

    /// Whether the row is a language model (its HR@1 by position is reported).
    pub(crate) fn is_slm(self) -> bool {
        matches!(
            self,
            Self::Baseline(BaselineKind::BaseSlm) | Self::Variant(_)
        )
    }
}

/// Every row of a run, in table order: baselines, then variants.
pub(crate) fn rows(p: &Pipeline) -> Vec<EvalRow> {
    let c = p.config();
    c.eval
        .baselines
        .iter()
        .map(|&b| EvalRow::Baseline(b))
        .chain(c.sft.variants.iter().map(|&v| EvalRow::Variant(v)))
        .collect()
}

/// The rows as the results tables name them.
pub(crate) fn table_rows(p: &Pipeline) -> Vec<Row> {
    rows(p)
        .into_iter()
        .map(|r| Row::new(r.name(), r.label()))
        .collect()
}

/// The paired comparisons the tables print: every SLM row against SFT without rationale and
/// against most popular, and SFT with reasons against its placebo (shuffled reasons).
pub(crate) fn table_pairs(p: &Pipeline) -> Vec<(String, String)> {
    let rows = rows(p);
    let has = |r: EvalRow| rows.contains(&r);
    let reference = [
        EvalRow::Variant(Variant::NoRationale),
        EvalRow::Baseline(BaselineKind::MostPopular),
    ];
    let mut pairs = Vec::new();
    for &r in rows.iter().filter(|r| r.is_slm()) {
        for b in reference {
            if r != b && has(b) {
                pairs.push((r.name().to_string(), b.name().to_string()));
            }
        }
    }
    let (reasons, placebo) = (
        EvalRow::Variant(Variant::WithReasons),
        EvalRow::Variant(Variant::ShuffledReasons),
    );
    if has(reasons) && has(placebo) {
        pairs.push((reasons.name().to_string(), placebo.name().to_string()));
    }
    pairs
}

/// The short data-set name of predictions (`games`, `ml100k`, else the folder's name).
pub(crate) fn data_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.contains("games") {
        "games".into()
    } else if name.contains("ml-100k") || name.contains("ml100k") {
        "ml100k".into()
    } else {
        name
    }
}

/// The SLM selector the config asks for.
fn slm_selector(
    p: &Pipeline,
    slm: Slm,
    style: PromptStyle,
    prior: Option<PopularityPrior>,
) -> Box<dyn CandidateSelector> {
    match p.config().eval.selector {
        SelectorKind::Likelihood => {
            let selector = LikelihoodSelector::new(
                slm,
                style,
                LikelihoodConfig {
                    reduction: p.config().eval.reduction,
                    ..LikelihoodConfig::default()
                },
            );
            match prior {
                Some(prior) => Box::new(selector.with_prior(prior)),
                None => Box::new(selector),
            }
        }
        SelectorKind::Generative => Box::new(GenerativeSelector::new(
            slm,
            style,
            GenerativeConfig::paper(p.config().seed),
        )),
    }
}

fn selector_name(kind: SelectorKind) -> &'static str {
    match kind {
        SelectorKind::Likelihood => "likelihood",
        SelectorKind::Generative => "generative",
    }
}

/// The model a remote server answers `row`'s prompts with, where the generative selector runs
/// on a remote generator that serves this row's model (`generator.served_model`).
fn served_model(p: &Pipeline, row: EvalRow) -> Option<&str> {
    let c = p.config();
    if c.eval.selector != SelectorKind::Generative || !row.is_slm() {
        return None;
    }
    c.generator.served_model(row.variant())
}

/// The SLM with `variant`'s adapter merged in.
fn tuned_slm(p: &Pipeline, base: &Base, variant: Variant, record: &TrainRecord) -> Result<Slm> {
    let adapter_dir = variant_dir(p, variant).join(&record.adapter);
    let model = load_adapter(
        &adapter_dir,
        &base.config,
        &base.weights,
        &record.config.lora,
        &base.name,
        p.device(),
    )
    .at(Stage::Eval)?;
    let merged = model.merged_weights(&base.weights).at(Stage::Eval)?;
    drop(model);
    Slm::from_parts(
        base.config.clone(),
        &merged,
        base.tokenizer.clone(),
        p.device(),
        &p.slm_options(),
    )
    .at(Stage::Eval)
}

/// The selector of `row` and its prompts per call.
fn row_selector(
    p: &Pipeline,
    row: EvalRow,
    base: &mut Option<Base>,
) -> Result<(Box<dyn CandidateSelector>, usize, &'static str)> {
    if row.is_slm() && base.is_none() {
        *base = Some(super::sft::base(p, Stage::Eval)?);
    }
    let slm_base = || -> Result<&Base> {
        base.as_ref().ok_or_else(|| PipelineError::Data {
            stage: Stage::Eval.name(),
            message: "the base SLM is not loaded".into(),
        })
    };
    let kind = selector_name(p.config().eval.selector);
    if let Some(model) = served_model(p, row) {
        let mut remote = super::rationales::remote_config(&p.config().generator, Stage::Eval)?;
        remote.model = model.to_string();
        let style = slm_base()?.style;
        tracing::info!(row = row.name(), server = %remote.base_url, model = %remote.model, "answers from a remote server");
        let selector = GenerativeSelector::new(
            RemoteGenerator::new(remote).at(Stage::Eval)?,
            style,
            GenerativeConfig::paper(p.config().seed),
        );
        // Enough prompts per call to keep the configured requests in flight.
        let chunk = slm_batch(p.config().eval.selector).max(p.config().generator.concurrency);
        return Ok((Box::new(selector), chunk, kind));
    }
    Ok(match row {
        EvalRow::Baseline(BaselineKind::Random) => (
            Box::new(RandomSelector::new(p.config().seed)),
            BASELINE_BATCH,
            "random",
        ),
        EvalRow::Baseline(BaselineKind::MostPopular) => (
            Box::new(RankingSelector::new(prepare::popularity(p)?)),
            BASELINE_BATCH,
            "popularity",
        ),
        EvalRow::Baseline(BaselineKind::Content) => {
            let encoder = pulserec_thoughtspace::SentenceEncoder::from_dir(
                &p.config().assets.encoder,
                p.device(),
            )
            .at(Stage::Eval)?;
            (
                Box::new(ContentSelector::new(encoder)),
                BASELINE_BATCH,
                "cosine",
            )
        }
        EvalRow::Baseline(BaselineKind::Sasrec) => {
            let dir = p.stage_dir(Stage::SasRec).join("checkpoint");
            let (model, _) = pulserec_seqrec::load_checkpoint(&dir, p.device()).at(Stage::Eval)?;
            (
                Box::new(RankingSelector::new(
                    pulserec_seqrec::SasRecRecommender::new(&model, p.device()),
                )),
                BASELINE_BATCH,
                "sasrec",
            )
        }
        EvalRow::Baseline(BaselineKind::BaseSlm) => {
            let b = slm_base()?;
            let slm = Slm::from_parts(
                b.config.clone(),
                &b.weights,
                b.tokenizer.clone(),
                p.device(),
                &p.slm_options(),
            )
            .at(Stage::Eval)?;
            let style = b.style;
            (
                slm_selector(p, slm, style, None),
                slm_batch(p.config().eval.selector),
                kind,
            )
        }
        EvalRow::Variant(v) => {
            let b = slm_base()?;
            let record = read_record(p, v)?;
            let slm = tuned_slm(p, b, v, &record)?;
            let style = b.style;
            // An adapter trained over a popularity prior is scored with it (this run's counts).
            let prior = match record.prior_weight {
                Some(w) => Some(PopularityPrior::new(prepare::popularity(p)?, w).at(Stage::Eval)?),
                None => None,
            };
            (
                slm_selector(p, slm, style, prior),
                slm_batch(p.config().eval.selector),
                kind,
            )
        }
    })
}

/// Predictions of `evaluation` with the data files' ids.
fn predictions(
    p: &Pipeline,
    prepared: &PreparedDataset,
    row: EvalRow,
    evaluation: &Evaluation,
) -> Vec<Prediction> {
    let ds = &prepared.dataset;
    let item = |it: ItemId| ds.catalog.raw_id(it).unwrap_or_default().to_string();
    let data = data_name(p.config().data_path());
    evaluation
        .outcomes
        .iter()
        .map(|o| Prediction {
            data: data.clone(),
            split: p.config().eval.split.name().into(),
            variant: row.name().into(),
            seed: p.config().seed,
            user: ds.raw_user_id(o.user).unwrap_or_default().to_string(),
            target: item(o.target),
            candidates: o.candidates.iter().map(|&c| item(c)).collect(),
            chosen: o.chosen.map(item),
            hit: o.hit,
            answer: o.answer.clone(),
            scores: o.scores.clone(),
        })
        .collect()
}

fn eval_row(
    p: &Pipeline,
    prepared: &PreparedDataset,
    cases: &[(usize, Vec<SftExample>)],
    row: EvalRow,
    base: &mut Option<Base>,
    dir: &Path,
) -> Result<Value> {
    let (mut selector, chunk, how) = row_selector(p, row, base)?;
    let mut per_size = BTreeMap::new();
    let mut all = Vec::new();
    let sizes = p.config().eval.slm_sizes();
    for (size, cases) in cases
        .iter()
        .filter(|(n, _)| !row.is_slm() || sizes.contains(n))
    {
        let bar = p.bar(cases.len(), &format!("{}@{size}", row.name()));
        let evaluation = evaluate(selector.as_mut(), how, cases, chunk, &bar).at(Stage::Eval)?;
        bar.finish_and_clear();
        all.extend(predictions(p, prepared, row, &evaluation));
        let m = &evaluation.metrics;
        let mut values = json!({
            "HR@1": m.hr_at_1,
            "valid_answer": m.valid_answer,
            "choice_accuracy": m.choice_accuracy,
            "seconds": m.seconds,
            "seconds_per_user": m.seconds / m.users.max(1) as f64,
        });
        if let Some(ranking) = &m.ranking {
            for (k, v) in ranking {
                values[k] = json!(v);
            }
        }
        per_size.insert(size.to_string(), values);
        tracing::info!(
            row = row.name(),
            size,
            hr_at_1 = m.hr_at_1,
            seconds = m.seconds,
            "row evaluated"
        );
    }
    write_predictions(&dir.join(format!("{}.jsonl", row.name())), &all).at(Stage::Eval)?;
    let mut result = json!({
        "row": row.name(),
        "label": row.label(),
        "selector": how,
        "split": p.config().eval.split.name(),
        "users": cases.first().map_or(0, |(_, c)| c.len()),
        "candidates": per_size,
    });
    if let Some(model) = served_model(p, row) {
        result["generator"] = json!({"base_url": p.config().generator.base_url, "model": model});
    }
    write_json(&dir.join(format!("{}.json", row.name())), &result)?;
    Ok(result)
}

pub(super) fn run(p: &Pipeline, dir: &Path) -> Result<Value> {
    let (prepared, users) = prepare::load(p)?;
    let builder = super::sft::example_builder(p, &prepared.dataset, Stage::Eval)?;
    let target = p.config().eval.split.target();
    let mut cases = Vec::new();
    for &size in &p.config().eval.candidates {
        let sets = prepare::slm_candidates(&prepared, target, size)?;
        cases.push((
            size,
            builder
                .test_cases(&users.evaluation, sets)
                .at(Stage::Eval)?,
        ));
    }
    if users.evaluation.is_empty() {
        return Err(PipelineError::Data {
            stage: Stage::Eval.name(),
            message: "no evaluation users".into(),
        });
    }
    let mut base = None;
    let mut out = serde_json::Map::new();
    for row in rows(p) {
        let path = dir.join(format!("{}.json", row.name()));
        let result: Value = if path.exists() {
            tracing::info!(row = row.name(), "already evaluated, skipped");
            read_json(&path)?
        } else {
            eval_row(p, &prepared, &cases, row, &mut base, dir)?
        };
        out.insert(row.name().into(), result["candidates"].clone());
    }
    Ok(Value::Object(out))
}
