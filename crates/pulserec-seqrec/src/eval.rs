//! Ranking evaluation under the two protocols of the SASRec literature.
//!
//! - **Full ranking**: the held-out item is ranked against every catalogue item. Items in the
//!   user's input history are *removed from the competitors* (they cannot be the next new item);
//!   the target itself is always ranked, even if it also occurs in the history. Scores are
//!   computed for one batch of users at a time (`[batch, n_items + 1]`), so memory never grows
//!   with the number of users.
//! - **Sampled**: the held-out item is ranked against stored negatives (1 positive + N, the
//!   candidate list's first entry being the positive).
//!
//! Ranks use [`TiePolicy::Pessimistic`] by default: every competitor scoring *equal* to the
//! target counts as above it, so a constant model gets the worst rank, never the best.

use std::collections::BTreeMap;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor, TensorData};
use pulserec_core::metrics::{rank_among, rank_of_positive};
use pulserec_core::{ItemId, RankingAccumulator, RankingMetrics, TiePolicy, UserId};
use serde::{Deserialize, Serialize};

use crate::batch::{check_items, history_tensor};
use crate::error::{Result, SeqRecError};
use crate::model::SasRec;

/// One user to evaluate: the input history (oldest first) and the held-out next item.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EvalCase<'a> {
    /// The user.
    pub user: UserId,
    /// What the model sees (for test: train + valid items).
    pub history: &'a [ItemId],
    /// The held-out item.
    pub target: ItemId,
}

impl<'a> EvalCase<'a> {
    /// One case per evaluation user of `split` that has a `target` item: the history before it
    /// and the item itself.
    pub fn from_split(
        split: &pulserec_data::LeaveOneOut<'a>,
        target: pulserec_data::Target,
    ) -> Vec<Self> {
        split
            .eval_users()
            .filter_map(|user| {
                Some(EvalCase {
                    user,
                    history: split.history_before(user, target),
                    target: split.target(user, target)?,
                })
            })
            .collect()
    }
}

/// Which protocol produced a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Protocol {
    /// All items, history masked.
    Full,
    /// 1 positive + `negatives` stored negatives.
    Sampled {
        /// Negatives per user.
        negatives: usize,
        /// How they were drawn (`"uniform"`, `"popularity"`).
        sampling: String,
    },
}

impl Protocol {
    /// A short name: `"full"`, `"sampled100-uniform"`.
    pub fn name(&self) -> String {
        match self {
            Self::Full => "full".into(),
            Self::Sampled {
                negatives,
                sampling,
            } => format!("sampled{negatives}-{sampling}"),
        }
    }
}

/// Settings shared by both protocols.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalOptions {
    /// Cut-offs for HR@k and NDCG@k.
    pub ks: Vec<usize>,
    /// Users scored per batch.
    pub batch_size: usize,
    /// Tie handling.
    pub tie_policy: TiePolicy,
    /// Evaluate only the first this many users (off by default).
    pub max_users: Option<usize>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            ks: vec![1, 5, 10, 20],
            batch_size: 256,
            tie_policy: TiePolicy::Pessimistic,
            max_users: None,
        }
    }
}

/// What an evaluation found, with what is needed to interpret it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// The protocol.
    pub protocol: Protocol,
    /// Which held-out item (`"valid"` or `"test"`).
    pub split: String,
    /// The training objective of the model (`"bce"`, ...).
    pub loss: String,
    /// The training seed.
    pub seed: u64,
    /// Number of users averaged over.
    pub users: usize,
    /// Tie policy used for ranks.
    pub tie_policy: TiePolicy,
    /// Whether history items were removed from the competitors (full ranking).
    pub history_masked: bool,
    /// User cap, when one was applied.
    pub max_users: Option<usize>,
    /// `"HR@10"`, `"NDCG@10"`, `"MRR"`, ...
    pub metrics: BTreeMap<String, f64>,
}

fn capped<'c, T>(items: &'c [T], options: &EvalOptions) -> &'c [T] {
    &items[..options.max_users.unwrap_or(usize::MAX).min(items.len())]
}

/// Host copy of a float tensor.
pub(crate) fn to_vec(t: Tensor<2>) -> Result<Vec<f32>> {
    t.into_data()
        .try_into_vec::<f32>()
        .map_err(|e| SeqRecError::Tensor(format!("{e:?}")))
}

/// Full-ranking metrics of `cases`. `model` is put in inference mode (no dropout).
pub fn evaluate_full(
    model: &SasRec,
    cases: &[EvalCase<'_>],
    options: &EvalOptions,
    device: &Device,
) -> Result<RankingMetrics> {
    let model = model.valid();
    let n_items = model.n_items();
    let cases = capped(cases, options);
    let mut acc = RankingAccumulator::new(&options.ks);
    let mut masked = vec![false; n_items + 1];
    for chunk in cases.chunks(options.batch_size.max(1)) {
        for c in chunk {
            check_items(c.history, n_items, || format!("history of user {}", c.user))?;
            check_items(&[c.target], n_items, || {
                format!("target of user {}", c.user)
            })?;
        }
        let histories: Vec<&[ItemId]> = chunk.iter().map(|c| c.history).collect();
        let users = model.user_vectors(history_tensor(&histories, model.max_len(), device));
        let scores = to_vec(model.score_all(users))?;
        for (c, row) in chunk.iter().zip(scores.chunks_exact(n_items + 1)) {
            masked[0] = true;
            for h in c.history {
                masked[h.index()] = true;
            }
            let t = c.target.index();
            masked[t] = true;
            let competitors = row
                .iter()
                .zip(&masked)
                .filter(|(_, m)| !**m)
                .map(|(s, _)| *s);
            acc.push(rank_among(row[t], competitors, options.tie_policy));
            for h in c.history {
                masked[h.index()] = false;
            }
            masked[t] = false;
        }
    }
    Ok(acc.finish())
}

/// Sampled-protocol metrics: `candidates[u]` is user u's list, positive first.
pub fn evaluate_sampled(
    model: &SasRec,
    cases: &[EvalCase<'_>],
    candidates: &[&[ItemId]],
    options: &EvalOptions,
    device: &Device,
) -> Result<RankingMetrics> {
    if candidates.len() != cases.len() {
        return Err(SeqRecError::LengthMismatch {
            what: "candidate lists vs evaluation users",
            expected: cases.len(),
            got: candidates.len(),
        });
    }
    let cases = capped(cases, options);
    let histories: Vec<&[ItemId]> = cases.iter().map(|c| c.history).collect();
    let scores = score_candidates(
        model,
        &histories,
        &candidates[..cases.len()],
        options.batch_size,
        device,
    )?;
    let mut acc = RankingAccumulator::new(&options.ks);
    for (i, (row, c)) in scores.iter().zip(cases).enumerate() {
        let (Some((pos, negs)), Some(first)) = (row.split_first(), candidates[i].first()) else {
            return Err(SeqRecError::Empty("a user has an empty candidate list"));
        };
        if *first != c.target {
            return Err(SeqRecError::InvalidConfig {
                field: "candidates",
                reason: format!("the first candidate of user {} is not its target", c.user),
            });
        }
        acc.push(rank_of_positive(*pos, negs, options.tie_policy));
    }
    Ok(acc.finish())
}

/// Scores of each user's candidates, in candidate order.
pub fn score_candidates(
    model: &SasRec,
    histories: &[&[ItemId]],
    candidates: &[&[ItemId]],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    if candidates.len() != histories.len() {
        return Err(SeqRecError::LengthMismatch {
            what: "candidate lists vs histories",
            expected: histories.len(),
            got: candidates.len(),
        });
    }
    let model = model.valid();
    let n_items = model.n_items();
    let d = model.hidden();
    let mut out = Vec::with_capacity(histories.len());
    let start_of = |i: usize| i * batch_size.max(1);
    for (b, hist) in histories.chunks(batch_size.max(1)).enumerate() {
        let cands = &candidates[start_of(b)..start_of(b) + hist.len()];
        for (i, (h, c)) in hist.iter().zip(cands).enumerate() {
            let u = start_of(b) + i;
            check_items(h, n_items, || format!("history {u}"))?;
            check_items(c, n_items, || format!("candidates {u}"))?;
        }
        // Pad candidate lists to a rectangle; padded slots are dropped below.
        let width = cands.iter().map(|c| c.len()).max().unwrap_or(0).max(1);
        let mut ids = vec![0i64; hist.len() * width];
        for (r, c) in cands.iter().enumerate() {
            for (j, item) in c.iter().enumerate() {
                ids[r * width + j] = i64::from(item.0);
            }
        }
        let users = model.user_vectors(history_tensor(hist, model.max_len(), device)); // [b, d]
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [hist.len() * width]), device);
        let emb = model
            .item_embeddings()
            .select(0, ids)
            .reshape([hist.len(), width, d]); // [b, w, d]
        let scores = emb
            .matmul(users.unsqueeze_dim::<3>(2))
            .reshape([hist.len(), width]);
        let scores = to_vec(scores)?;
        for (r, c) in cands.iter().enumerate() {
            out.push(scores[r * width..r * width + c.len()].to_vec());
        }
    }
    Ok(out)
}

/// Wraps metrics into a report.
pub fn report(
    metrics: RankingMetrics,
    protocol: Protocol,
    split: &str,
    loss: &str,
    seed: u64,
    options: &EvalOptions,
) -> EvalReport {
    EvalReport {
        history_masked: protocol == Protocol::Full,
        protocol,
        split: split.into(),
        loss: loss.into(),
        seed,
        users: metrics.users,
        tie_policy: options.tie_policy,
        max_users: options.max_users,
        metrics: metrics.values,
    }
}
