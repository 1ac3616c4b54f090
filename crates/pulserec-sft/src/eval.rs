//! Evaluating a candidate selector on held-out test cases: HR@1, valid answers, NDCG@k.

use std::time::Instant;

use indicatif::ProgressBar;
use pulserec_core::metrics::{TiePolicy, rank_of_positive};
use pulserec_core::{CandidatePrompt, CandidateSelector, ItemId, RankingAccumulator, UserId};
use serde::{Deserialize, Serialize};

use crate::answer::{match_answer, title_in_answer};
use crate::data::SftExample;
use crate::error::{Result, SftError, one_per_request};

/// What one selector achieved on one candidate-set size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelectorMetrics {
    /// The selector (`generative`, `likelihood`).
    pub selector: String,
    /// Candidates per prompt.
    pub candidates: usize,
    /// Users evaluated.
    pub users: usize,
    /// HR@1. With an answer text: the paper's test, the target's normalised title occurs in the
    /// normalised answer. Without one (likelihood ranking): the chosen candidate is the target.
    pub hr_at_1: f64,
    /// Share of users whose chosen candidate is the target (for a generative selector, stricter
    /// than `hr_at_1` when answers name several candidates).
    pub choice_accuracy: f64,
    /// Share of answers that name at least one real candidate (1 for likelihood ranking).
    pub valid_answer: f64,
    /// Share of answers that name more than one candidate.
    pub multiple_matches: f64,
    /// HR@1 of choosing uniformly at random, `1 / candidates`.
    pub random_baseline: f64,
    /// NDCG@k / HR@k / MRR from the selector's scores (pessimistic ties), when it scores.
    pub ranking: Option<std::collections::BTreeMap<String, f64>>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// One user's outcome, for inspection (`predictions.jsonl`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The user.
    pub user: UserId,
    /// The correct item.
    pub target: ItemId,
    /// The candidates in the order the prompt showed them.
    #[serde(default)]
    pub candidates: Vec<ItemId>,
    /// The chosen item.
    pub chosen: Option<ItemId>,
    /// Whether this counted as a hit for HR@1.
    pub hit: bool,
    /// The raw answer (empty for likelihood ranking).
    pub answer: String,
    /// The selector's score of every candidate in the shown order, when it ranks them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scores: Option<Vec<f32>>,
}

/// Metrics plus per-user outcomes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Aggregates.
    pub metrics: SelectorMetrics,
    /// One entry per test case, in order.
    pub outcomes: Vec<Outcome>,
}

impl Evaluation {
    /// Writes the outcomes as JSON lines (one [`Outcome`] per line, in order) to `path`,
    /// through a temporary file renamed into place, so a failed write leaves no partial file.
    pub fn write_predictions(&self, path: &std::path::Path) -> Result<()> {
        let mut bytes = Vec::new();
        for o in &self.outcomes {
            serde_json::to_writer(&mut bytes, o).map_err(|e| SftError::Json {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            bytes.push(b'\n');
        }
        crate::report::write_atomic(path, &bytes)
    }
}

/// Runs `selector` over `cases` in chunks of `chunk` prompts (one `select` call each),
/// advancing `progress` by the users done.
///
/// Every case must have the same number of candidates.
pub fn evaluate(
    selector: &mut dyn CandidateSelector,
    name: &str,
    cases: &[SftExample],
    chunk: usize,
    progress: &ProgressBar,
) -> Result<Evaluation> {
    let n_candidates = cases.first().map_or(0, |c| c.prompt.candidates.len());
    if let Some(bad) = cases
        .iter()
        .find(|c| c.prompt.candidates.len() != n_candidates)
    {
        return Err(SftError::Data {
            user: bad.prompt.user,
            message: format!(
                "{} candidates where the other cases have {n_candidates}",
                bad.prompt.candidates.len()
            ),
        });
    }
    let ks: Vec<usize> = [1, 3, 5, 10, 20]
        .into_iter()
        .filter(|&k| k <= n_candidates)
        .collect();
    let mut ranks = RankingAccumulator::new(&ks);
    let start = Instant::now();
    let mut outcomes = Vec::with_capacity(cases.len());
    let (mut hits, mut exact, mut valid, mut multiple) = (0usize, 0usize, 0usize, 0usize);
    for batch in cases.chunks(chunk.max(1)) {
        let prompts: Vec<CandidatePrompt> = batch.iter().map(|c| c.prompt.clone()).collect();
        let selections = one_per_request("select", batch.len(), selector.select(&prompts))?;
        for (case, sel) in batch.iter().zip(selections) {
            let target_index = case.target_index();
            let hit = if sel.answer.is_empty() {
                sel.chosen == Some(case.target)
            } else {
                title_in_answer(&sel.answer, case.target_title())
            };
            let named = if sel.answer.is_empty() {
                usize::from(sel.chosen.is_some())
            } else {
                let titles: Vec<&str> = case
                    .prompt
                    .candidates
                    .iter()
                    .map(|(_, t)| t.as_str())
                    .collect();
                match_answer(&sel.answer, &titles).matched.len()
            };
            hits += usize::from(hit);
            exact += usize::from(sel.chosen == Some(case.target));
            valid += usize::from(named > 0);
            multiple += usize::from(named > 1);
            if let Some(scores) = sel.scores.as_ref().filter(|s| s.len() == n_candidates) {
                let others: Vec<f32> = scores
                    .iter()
                    .enumerate()
                    .filter(|&(i, _)| i != target_index)
                    .map(|(_, &s)| s)
                    .collect();
                ranks.push(rank_of_positive(
                    scores[target_index],
                    &others,
                    TiePolicy::Pessimistic,
                ));
            }
            outcomes.push(Outcome {
                user: case.prompt.user,
                target: case.target,
                candidates: case.prompt.candidates.iter().map(|(id, _)| *id).collect(),
                chosen: sel.chosen,
                hit,
                answer: sel.answer,
                scores: sel.scores,
            });
        }
        progress.inc(batch.len() as u64);
        // Progress bars stay silent when stderr is not a terminal: log every 10 %.
        let done = outcomes.len();
        let step = cases.len().div_ceil(10).max(1);
        if done % step < batch.len() && done < cases.len() {
            tracing::info!(
                selector = name,
                users = done,
                of = cases.len(),
                hr_at_1 = hits as f64 / done as f64,
                seconds_per_user = start.elapsed().as_secs_f64() / done as f64,
                "evaluation progress"
            );
        }
    }
    let n = cases.len().max(1) as f64;
    let metrics = SelectorMetrics {
        selector: name.to_string(),
        candidates: n_candidates,
        users: cases.len(),
        hr_at_1: hits as f64 / n,
        choice_accuracy: exact as f64 / n,
        valid_answer: valid as f64 / n,
        multiple_matches: multiple as f64 / n,
        random_baseline: 1.0 / n_candidates.max(1) as f64,
        ranking: (ranks.count() > 0).then(|| ranks.finish().values),
        seconds: start.elapsed().as_secs_f64(),
    };
    tracing::info!(
        selector = name,
        candidates = n_candidates,
        users = cases.len(),
        hr_at_1 = metrics.hr_at_1,
        valid = metrics.valid_answer,
        "evaluated"
    );
    Ok(Evaluation { metrics, outcomes })
}
