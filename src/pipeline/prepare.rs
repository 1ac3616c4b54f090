//! Stage 0: load the data, keep the configured slice, draw the fixed candidate sets and choose
//! the training and evaluation users.

use std::path::Path;

use pulserec_core::baselines::Popularity;
use pulserec_core::{Sequences, UserId};
use pulserec_data::{
    CandidateConfig, CandidateSets, Dataset, LeaveOneOut, PreparedDataset, Target,
};
use pulserec_tot::ContextBuilder;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::marker::{read_json, write_json};
use super::{Pipeline, PipelineError, Result, Stage, StageResult, summary};

/// Who does what: the users that get rationales and train the SLM, and the held-out users every
/// recommender is evaluated on (the two never overlap).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Users {
    /// Users with rationales (stage 1 and 3) and SFT examples, in id order.
    pub training: Vec<UserId>,
    /// Held-out users, in id order; each has a test item and every candidate set.
    pub evaluation: Vec<UserId>,
}

const USERS_FILE: &str = "users.json";
const POPULARITY_FILE: &str = "popularity.json";
const DATA_DIR: &str = "data";

/// The first `n` users of `dataset` (the whole catalogue is kept, so item ids do not change).
fn first_users(dataset: &Dataset, n: usize) -> Result<Dataset> {
    if n >= dataset.n_users() {
        return Ok(dataset.clone());
    }
    let s = &dataset.sequences;
    let end = s.offsets()[n];
    let sequences = Sequences::from_parts(
        s.offsets()[..=n].to_vec(),
        s.items()[..end].to_vec(),
        s.ratings().map(|r| r[..end].to_vec()),
        s.timestamps().map(|t| t[..end].to_vec()),
        s.reviews().map(|r| r[..end].to_vec()),
    )
    .at(Stage::Prepare)?;
    Dataset::from_parts(
        dataset.catalog.clone(),
        sequences,
        dataset.user_ids[..n].to_vec(),
    )
    .at(Stage::Prepare)
}

/// Negatives per user of the SASRec protocol's sets and of each SLM candidate-list size.
fn negative_counts(p: &Pipeline) -> (Option<usize>, Vec<usize>) {
    let own = p.config().sasrec.protocol.negatives();
    let slm = p.config().eval.candidates.iter().map(|c| c - 1).collect();
    (own, slm)
}

pub(super) fn run(p: &Pipeline, dir: &Path) -> Result<Value> {
    let c = p.config();
    let path = c.data_path();
    tracing::info!(data = %path.display(), "loading");
    let mut full = pulserec_data::load(path).at(Stage::Prepare)?;
    if let Some(feature) = &c.data.title_feature {
        let changed = full.append_feature_to_titles(feature).at(Stage::Prepare)?;
        tracing::info!(feature, changed, "item feature appended to the titles");
    }
    // The most-popular baseline counts every user's training interactions in the data files
    // (each sequence without its valid and test items), whatever slice the SLM stages use.
    let popularity = {
        let split = LeaveOneOut::new(&full.sequences);
        Popularity::from_items(
            (0..full.n_users() as u32).flat_map(|u| split.train(UserId(u)).iter().copied()),
            full.n_items(),
        )
    };
    write_json(&dir.join(POPULARITY_FILE), &popularity.counts())?;
    let dataset = match c.data.max_users {
        Some(n) => first_users(&full, n)?,
        None => full,
    };
    let split = LeaveOneOut::new(&dataset.sequences);
    let (own, slm) = negative_counts(p);
    let mut candidates = Vec::new();
    let mut draw = |target: Target, n: usize| -> Result<()> {
        let exists = candidates
            .iter()
            .any(|s: &CandidateSets| s.target == target && s.config.n_negatives == n);
        if !exists {
            let config = CandidateConfig::uniform(n, c.data.candidate_seed);
            candidates.push(
                CandidateSets::generate(&dataset, &split, target, &config).at(Stage::Prepare)?,
            );
        }
        Ok(())
    };
    if let Some(n) = own {
        draw(Target::Valid, n)?;
        draw(Target::Test, n)?;
    }
    for &n in &slm {
        draw(Target::Test, n)?;
        draw(Target::Valid, n)?;
    }

    // Evaluation users: the first with a valid and a test item in every SLM candidate set (so
    // they stay the same whatever the number of training users); training users: the next ones
    // with a chosen item and a titled history.
    let builder = ContextBuilder::default();
    let mut users = Users {
        training: Vec::new(),
        evaluation: Vec::new(),
    };
    for u in (0..dataset.n_users() as u32).map(UserId) {
        if users.evaluation.len() < c.eval.users {
            let has_all = slm.iter().all(|&n| {
                [Target::Valid, Target::Test].into_iter().all(|target| {
                    candidates.iter().any(|s| {
                        s.target == target && s.config.n_negatives == n && s.get(u).is_some()
                    })
                })
            });
            if has_all {
                users.evaluation.push(u);
            }
        } else if users.training.len() < c.rationales.users {
            if builder.context(&dataset, &split, u, &[]).is_some() {
                users.training.push(u);
            }
        } else {
            break;
        }
    }
    for (key, got, want) in [
        ("rationales.users", users.training.len(), c.rationales.users),
        ("eval.users", users.evaluation.len(), c.eval.users),
    ] {
        if got < want {
            return Err(PipelineError::Data {
                stage: Stage::Prepare.name(),
                message: format!(
                    "{} has only {got} suitable users for `{key}` = {want}; lower it or raise data.max_users",
                    path.display()
                ),
            });
        }
    }
    let prepared = PreparedDataset {
        dataset,
        candidates,
    };
    prepared.save(dir.join(DATA_DIR)).at(Stage::Prepare)?;
    write_json(&dir.join(USERS_FILE), &users)?;
    let ds = &prepared.dataset;
    Ok(summary(&[
        ("data", json!(path)),
        ("users", json!(ds.n_users())),
        ("items", json!(ds.n_items())),
        ("interactions", json!(ds.n_interactions())),
        ("training_users", json!(users.training.len())),
        ("evaluation_users", json!(users.evaluation.len())),
    ]))
}

/// The prepared data set and users of a finished `prepare` stage.
pub(super) fn load(p: &Pipeline) -> Result<(PreparedDataset, Users)> {
    let dir = p.stage_dir(Stage::Prepare);
    let prepared = PreparedDataset::load(dir.join(DATA_DIR)).at(Stage::Prepare)?;
    let users = read_json(&dir.join(USERS_FILE))?;
    Ok((prepared, users))
}

/// The stored candidate set of `target` with `size` candidates (positive first).
pub(super) fn slm_candidates(
    prepared: &PreparedDataset,
    target: Target,
    size: usize,
) -> Result<&CandidateSets> {
    prepared
        .candidates_for(target, size - 1)
        .ok_or_else(|| PipelineError::Data {
            stage: Stage::Prepare.name(),
            message: format!("no stored {} candidate set of size {size}", target.name()),
        })
}

/// The training-interaction counts of every item over the whole data files.
pub(super) fn popularity(p: &Pipeline) -> Result<Popularity> {
    let counts: Vec<u32> = read_json(&p.stage_dir(Stage::Prepare).join(POPULARITY_FILE))?;
    Ok(Popularity::new(counts))
}

/// The stored candidate sets of SASRec's own sampled protocol (valid, test), if sampled.
pub(super) fn own_candidates(
    p: &Pipeline,
    prepared: &PreparedDataset,
) -> Option<(CandidateSets, CandidateSets)> {
    let n = negative_counts(p).0?;
    Some((
        prepared.candidates_for(Target::Valid, n)?.clone(),
        prepared.candidates_for(Target::Test, n)?.clone(),
    ))
}
