//! A data set's summary statistics.

use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::split::LeaveOneOut;

/// Sizes, density and sequence-length distribution of a data set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of users.
    pub users: usize,
    /// Number of items.
    pub items: usize,
    /// Number of interactions.
    pub interactions: usize,
    /// `interactions / (users * items)`.
    pub density: f64,
    /// Users with at least 3 interactions (they get valid and test items).
    pub eval_users: usize,
    /// Sequence length: min, 25th, 50th, 75th, 90th, 99th percentile, max (nearest rank).
    pub seq_len: Quantiles,
    /// Mean sequence length.
    pub seq_len_mean: f64,
    /// Whether ratings, timestamps and reviews are present.
    pub has_ratings: bool,
    /// See `has_ratings`.
    pub has_timestamps: bool,
    /// See `has_ratings`.
    pub has_reviews: bool,
    /// Items with an empty title.
    pub untitled_items: usize,
}

/// Nearest-rank quantiles of a distribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    /// Smallest value.
    pub min: usize,
    /// 25th percentile.
    pub p25: usize,
    /// Median.
    pub p50: usize,
    /// 75th percentile.
    pub p75: usize,
    /// 90th percentile.
    pub p90: usize,
    /// 99th percentile.
    pub p99: usize,
    /// Largest value.
    pub max: usize,
}

impl Quantiles {
    /// Quantiles of `values` (all zeros when empty).
    pub fn of(mut values: Vec<usize>) -> Self {
        values.sort_unstable();
        let q = |p: f64| {
            if values.is_empty() {
                return 0;
            }
            let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
            values[rank - 1]
        };
        Self {
            min: q(0.0),
            p25: q(0.25),
            p50: q(0.5),
            p75: q(0.75),
            p90: q(0.9),
            p99: q(0.99),
            max: values.last().copied().unwrap_or(0),
        }
    }
}

impl Dataset {
    /// Computes the summary.
    pub fn summary(&self) -> Summary {
        let lens: Vec<usize> = self.sequences.iter().map(|v| v.len()).collect();
        let (u, i, n) = (self.n_users(), self.n_items(), self.n_interactions());
        Summary {
            users: u,
            items: i,
            interactions: n,
            density: if u * i == 0 {
                0.0
            } else {
                n as f64 / (u as f64 * i as f64)
            },
            eval_users: LeaveOneOut::new(&self.sequences).eval_users().count(),
            seq_len_mean: if u == 0 { 0.0 } else { n as f64 / u as f64 },
            seq_len: Quantiles::of(lens),
            has_ratings: self.sequences.ratings().is_some(),
            has_timestamps: self.sequences.timestamps().is_some(),
            has_reviews: self.sequences.reviews().is_some(),
            untitled_items: self.catalog.iter().filter(|(_, _, t)| t.is_empty()).count(),
        }
    }
}
