//! Stage 0b: the SASRec baseline (trained on every user of the prepared data) with its own
//! protocol, and each training user's most similar users for Tree-of-Thought prompts. The
//! `eval` stage scores the SLM's candidate lists with its checkpoint.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use pulserec_core::{ItemId, UserId};
use pulserec_data::{CandidateSets, LeaveOneOut, Target};
use pulserec_seqrec::eval::report;
use pulserec_seqrec::{
    EvalCase, EvalOptions, Protocol, SasRecConfig, SasRecRecommender, TrainData, evaluate_full,
    evaluate_sampled, save_checkpoint,
};
use serde_json::{Value, json};

use super::marker::{LOSS_PLOT, write_json};
use super::prepare::{self, Users};
use super::{Pipeline, PipelineError, Result, Stage, StageResult, summary};

pub(super) const SIMILAR_FILE: &str = "similar_users.tsv";
pub(super) const METRICS_FILE: &str = "metrics.json";

/// The stored candidate list of every case (positive first).
fn lists<'c>(sets: &'c CandidateSets, cases: &[EvalCase<'_>]) -> Result<Vec<&'c [ItemId]>> {
    cases
        .iter()
        .map(|c| {
            sets.get(c.user).ok_or_else(|| PipelineError::Data {
                stage: Stage::SasRec.name(),
                message: format!("user {} has no stored candidates", c.user.0),
            })
        })
        .collect()
}

pub(super) fn run(p: &Pipeline, dir: &Path) -> Result<Value> {
    let c = p.config();
    let (prepared, users) = prepare::load(p)?;
    let dataset = &prepared.dataset;
    let split = LeaveOneOut::new(&dataset.sequences);
    let own = prepare::own_candidates(p, &prepared);
    let valid = EvalCase::from_split(&split, Target::Valid);
    let test = EvalCase::from_split(&split, Target::Test);
    let model_config = SasRecConfig::paper(dataset.n_items());
    let train_config = c.sasrec.training(c.seed).with_progress(p.progress);
    let data = TrainData {
        train: (0..dataset.n_users() as u32)
            .map(|u| split.train(UserId(u)))
            .collect(),
        valid_candidates: match &own {
            Some((v, _)) => Some(lists(v, &valid)?),
            None => None,
        },
        valid,
    };
    let outcome = pulserec_seqrec::train(&model_config, &train_config, &data, p.device(), None)
        .at(Stage::SasRec)?;
    save_checkpoint(&outcome.model, &model_config, &dir.join("checkpoint")).at(Stage::SasRec)?;

    // Its own protocol, on every test user.
    let options = EvalOptions::default();
    let loss = train_config.loss.name();
    let own_report = match &own {
        Some((_, t)) => report(
            evaluate_sampled(
                &outcome.model,
                &test,
                &lists(t, &test)?,
                &options,
                p.device(),
            )
            .at(Stage::SasRec)?,
            Protocol::Sampled {
                negatives: t.config.n_negatives,
                sampling: "uniform".into(),
            },
            "test",
            &loss,
            c.seed,
            &options,
        ),
        None => report(
            evaluate_full(&outcome.model, &test, &options, p.device()).at(Stage::SasRec)?,
            Protocol::Full,
            "test",
            &loss,
            c.seed,
            &options,
        ),
    };

    let recommender = SasRecRecommender::new(&outcome.model, p.device());
    write_similar_users(p, &recommender, &split, &users, dir)?;
    let losses: Vec<f64> = outcome.epochs.iter().map(|e| e.loss).collect();
    let labels = crate::plot::CurveLabels {
        title: "SASRec training loss",
        x: "epoch",
        y: "loss (mean over the epoch)",
        series: "SASRec",
    };
    crate::plot::write_curve_svg(&dir.join(LOSS_PLOT), &losses, &labels).at(Stage::SasRec)?;
    let metrics = json!({
        "device": p.device_name(),
        "users": dataset.n_users(),
        "items": dataset.n_items(),
        "formulation": "one sequence per user, loss at every position",
        "test": own_report,
        "epochs_run": outcome.epochs.len(),
        "median_seconds_per_epoch": outcome.median_epoch_seconds(),
        "model_config": serde_json::to_value(&model_config).map_err(|e| PipelineError::json(dir, e))?,
        "epochs": outcome.epochs,
    });
    write_json(&dir.join(METRICS_FILE), &metrics)?;
    Ok(summary(&[
        ("epochs", json!(outcome.epochs.len())),
        ("test", json!(own_report.metrics)),
    ]))
}

/// `user<TAB>similar users, most similar first`, for the training users
/// ([`SasRecRecommender::similar_users`]: on the history before each user's chosen item, so
/// the choice itself cannot leak through the neighbours).
fn write_similar_users(
    p: &Pipeline,
    recommender: &SasRecRecommender,
    split: &LeaveOneOut<'_>,
    users: &Users,
    dir: &Path,
) -> Result<()> {
    let similar = recommender
        .similar_users(split, &users.training, p.config().sasrec.similar_users)
        .at(Stage::SasRec)?;
    let path = dir.join(SIMILAR_FILE);
    let mut out = Vec::new();
    for (u, near) in users.training.iter().zip(&similar) {
        let ids: Vec<String> = near.iter().map(|(v, _)| v.0.to_string()).collect();
        writeln!(out, "{}\t{}", u.0, ids.join(" ")).map_err(|e| PipelineError::io(&path, e))?;
    }
    super::marker::write_atomic(&path, &out)
}

/// Reads `similar_users.tsv` back: training user -> similar users.
pub(super) fn read_similar_users(p: &Pipeline) -> Result<BTreeMap<UserId, Vec<UserId>>> {
    let path = p.stage_dir(Stage::SasRec).join(SIMILAR_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| PipelineError::io(&path, e))?;
    let bad = |line: usize| PipelineError::Json {
        path: path.clone(),
        message: format!("line {line}: expected `user<TAB>ids`"),
    };
    let mut out = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let (u, rest) = line.split_once('\t').ok_or_else(|| bad(i + 1))?;
        let u: u32 = u.parse().map_err(|_| bad(i + 1))?;
        let ids = rest
            .split_whitespace()
            .map(|s| s.parse().map(UserId).map_err(|_| bad(i + 1)))
            .collect::<Result<Vec<_>>>()?;
        out.insert(UserId(u), ids);
    }
    Ok(out)
}
