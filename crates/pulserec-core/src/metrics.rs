//! Ranking metrics for one held-out positive per user: HR@k, NDCG@k and MRR.
//!
//! # Ties
//! A positive that ties with other candidates is ranked with [`TiePolicy::Pessimistic`] by default:
//! every tied candidate counts as ranked above it. A model that scores everything equally thus
//! gets the worst rank, not the best, so ties can never inflate a metric. NaN scores count as
//! lower than any number.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a positive that ties with other candidates is ranked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TiePolicy {
    /// Tied candidates rank above the positive (the honest default).
    #[default]
    Pessimistic,
    /// Tied candidates rank below the positive (an upper bound, for comparison only).
    Optimistic,
}

/// 1-based rank of `positive_score` among `positive_score` and `negative_scores`.
pub fn rank_of_positive(positive_score: f32, negative_scores: &[f32], policy: TiePolicy) -> usize {
    rank_among(positive_score, negative_scores.iter().copied(), policy)
}

/// 1-based rank of `positive_score` among itself and the streamed `competitor_scores`, under
/// the same tie and NaN rules as [`rank_of_positive`]; nothing is collected, so a whole
/// catalogue row can be ranked without copying it.
pub fn rank_among(
    positive_score: f32,
    competitor_scores: impl IntoIterator<Item = f32>,
    policy: TiePolicy,
) -> usize {
    let pos = if positive_score.is_nan() {
        f32::NEG_INFINITY
    } else {
        positive_score
    };
    let mut above = 0;
    for s in competitor_scores {
        let s = if s.is_nan() { f32::NEG_INFINITY } else { s };
        let counts = match policy {
            TiePolicy::Pessimistic => s >= pos,
            TiePolicy::Optimistic => s > pos,
        };
        above += usize::from(counts);
    }
    above + 1
}

/// Hit ratio at `k` for a 1-based rank: 1 if the positive is in the top `k`.
pub fn hit_at_k(rank: usize, k: usize) -> f64 {
    if rank <= k { 1.0 } else { 0.0 }
}

/// NDCG at `k` for a single relevant item at 1-based `rank`: `1 / log2(rank + 1)` within `k`.
pub fn ndcg_at_k(rank: usize, k: usize) -> f64 {
    if rank <= k {
        1.0 / ((rank + 1) as f64).log2()
    } else {
        0.0
    }
}

/// Reciprocal rank.
pub fn reciprocal_rank(rank: usize) -> f64 {
    1.0 / rank as f64
}

/// Streams ranks and averages HR@k, NDCG@k (for every k asked) and MRR.
#[derive(Clone, Debug, PartialEq)]
pub struct RankingAccumulator {
    ks: Vec<usize>,
    hits: Vec<f64>,
    ndcg: Vec<f64>,
    rr: f64,
    count: usize,
}

/// Averaged metrics, keyed `"HR@10"`, `"NDCG@10"`, `"MRR"`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RankingMetrics {
    /// Metric name to value.
    pub values: BTreeMap<String, f64>,
    /// Number of users averaged over.
    pub users: usize,
}

impl RankingMetrics {
    /// A metric by name (`"HR@10"`, `"NDCG@5"`, `"MRR"`).
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }
}

impl RankingAccumulator {
    /// An accumulator for the given cut-offs.
    pub fn new(ks: &[usize]) -> Self {
        Self {
            ks: ks.to_vec(),
            hits: vec![0.0; ks.len()],
            ndcg: vec![0.0; ks.len()],
            rr: 0.0,
            count: 0,
        }
    }

    /// Adds one user's 1-based rank.
    pub fn push(&mut self, rank: usize) {
        for (i, &k) in self.ks.iter().enumerate() {
            self.hits[i] += hit_at_k(rank, k);
            self.ndcg[i] += ndcg_at_k(rank, k);
        }
        self.rr += reciprocal_rank(rank);
        self.count += 1;
    }

    /// Merges another accumulator with the same cut-offs (for parallel evaluation).
    pub fn merge(&mut self, other: &Self) {
        debug_assert_eq!(self.ks, other.ks);
        for i in 0..self.ks.len() {
            self.hits[i] += other.hits[i];
            self.ndcg[i] += other.ndcg[i];
        }
        self.rr += other.rr;
        self.count += other.count;
    }

    /// Number of ranks pushed.
    pub fn count(&self) -> usize {
        self.count
    }

    /// The averages so far (zeros when nothing was pushed).
    pub fn finish(&self) -> RankingMetrics {
        let n = self.count.max(1) as f64;
        let mut values = BTreeMap::new();
        for (i, &k) in self.ks.iter().enumerate() {
            values.insert(format!("HR@{k}"), self.hits[i] / n);
            values.insert(format!("NDCG@{k}"), self.ndcg[i] / n);
        }
        values.insert("MRR".to_string(), self.rr / n);
        RankingMetrics {
            values,
            users: self.count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_with_ties_follow_the_policy() {
        assert_eq!(
            rank_of_positive(0.5, &[0.1, 0.9, 0.5], TiePolicy::Pessimistic),
            3
        );
        assert_eq!(
            rank_of_positive(0.5, &[0.1, 0.9, 0.5], TiePolicy::Optimistic),
            2
        );
        // A constant model gets the worst rank under the default policy.
        assert_eq!(rank_of_positive(0.0, &[0.0; 99], TiePolicy::default()), 100);
        assert_eq!(
            rank_of_positive(f32::NAN, &[0.0, -1.0], TiePolicy::Pessimistic),
            3
        );
        assert_eq!(
            rank_of_positive(1.0, &[f32::NAN], TiePolicy::Pessimistic),
            1
        );
    }

    #[test]
    fn streamed_ranks_equal_slice_ranks() {
        let others = [0.1, 0.9, 0.5, f32::NAN, 0.5];
        for policy in [TiePolicy::Pessimistic, TiePolicy::Optimistic] {
            assert_eq!(
                rank_among(0.5, others.iter().copied().filter(|s| *s > 0.2), policy),
                rank_of_positive(0.5, &[0.9, 0.5, 0.5], policy)
            );
        }
        assert_eq!(rank_among(0.5, [], TiePolicy::Pessimistic), 1);
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let mut acc = RankingAccumulator::new(&[1, 10]);
        acc.push(1);
        acc.push(3);
        acc.push(20);
        let m = acc.finish();
        assert_eq!(m.users, 3);
        assert!((m.get("HR@1").unwrap() - 1.0 / 3.0).abs() < 1e-12);
        assert!((m.get("HR@10").unwrap() - 2.0 / 3.0).abs() < 1e-12);
        // (1 + 1/log2(4) + 0) / 3 = (1 + 0.5) / 3
        assert!((m.get("NDCG@10").unwrap() - 0.5).abs() < 1e-12);
        assert!((m.get("MRR").unwrap() - (1.0 + 1.0 / 3.0 + 0.05) / 3.0).abs() < 1e-12);
    }
}
