//! Intervals for per-user outcomes: a percentile bootstrap over users for a mean and for a
//! paired difference, and McNemar's exact test for two paired hit vectors.
//!
//! Evaluation rows are compared on the *same* users and candidate lists, so the right comparison
//! is paired: resampling users keeps each user's two outcomes together, which removes the
//! between-user variance that an unpaired comparison would carry. With several seeds, average
//! each user's outcome over the seeds first (one value per user), then bootstrap over users.
//!
//! ```
//! use pulserec_core::stats::{bootstrap_mean, paired_difference};
//! let a = [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0];
//! let b = [0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
//! let m = bootstrap_mean(&a, 2000, 1);
//! assert!((m.estimate - 0.625).abs() < 1e-12 && m.low < 0.625 && m.high > 0.625);
//! let d = paired_difference(&a, &b, 2000, 1).unwrap();
//! assert!((d.estimate - 0.375).abs() < 1e-12);
//! ```

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Bootstrap resamples used by the reports (enough for stable 2.5 / 97.5 % percentiles).
pub const DEFAULT_RESAMPLES: usize = 10_000;

/// A point estimate with a 95 % interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Interval {
    /// The estimate on the full sample (the mean, or the mean difference).
    pub estimate: f64,
    /// 2.5th percentile of the bootstrap distribution.
    pub low: f64,
    /// 97.5th percentile of the bootstrap distribution.
    pub high: f64,
}

impl Interval {
    /// Whether the interval excludes `value`.
    pub fn excludes(&self, value: f64) -> bool {
        value < self.low || value > self.high
    }
}

impl std::fmt::Display for Interval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.3} [{:.3}, {:.3}]",
            self.estimate, self.low, self.high
        )
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// Linear-interpolated quantile `q` (in `[0, 1]`) of sorted `v`; NaN when `v` is empty.
///
/// ```
/// let v = [1.0, 2.0, 3.0, 4.0, 5.0];
/// assert_eq!(pulserec_core::stats::quantile(&v, 0.5), 3.0);
/// assert_eq!(pulserec_core::stats::quantile(&v, 0.875), 4.5);
/// assert!(pulserec_core::stats::quantile(&[], 0.5).is_nan());
/// ```
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let pos = q * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// 95 % percentile-bootstrap interval of the mean of `values` (one value per user), with
/// `resamples` resamples seeded by `seed`. An empty sample gives NaNs.
pub fn bootstrap_mean(values: &[f64], resamples: usize, seed: u64) -> Interval {
    let estimate = mean(values);
    if values.is_empty() || resamples == 0 {
        return Interval {
            estimate,
            low: estimate,
            high: estimate,
        };
    }
    let n = values.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let mut s = 0.0;
            for _ in 0..n {
                s += values[rng.random_range(0..n)];
            }
            s / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    Interval {
        estimate,
        low: quantile(&means, 0.025),
        high: quantile(&means, 0.975),
    }
}

/// 95 % paired-bootstrap interval of `mean(a - b)`, where `a[i]` and `b[i]` belong to the same
/// user. Fails when the lengths differ.
pub fn paired_difference(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> Result<Interval> {
    if a.len() != b.len() {
        return Err(Error::InvalidInput(format!(
            "paired samples differ in length: {} and {}",
            a.len(),
            b.len()
        )));
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    Ok(bootstrap_mean(&d, resamples, seed))
}

/// Two-sided exact McNemar p-value from the discordant pairs: `only_a` users hit by the first
/// row only, `only_b` by the second only (a binomial test of `only_a` in `only_a + only_b` at
/// 1/2). 1 when there is no discordant pair.
pub fn mcnemar_exact(only_a: usize, only_b: usize) -> f64 {
    let n = only_a + only_b;
    if n == 0 {
        return 1.0;
    }
    let k = only_a.min(only_b);
    // P(X <= k) for X ~ Binomial(n, 1/2), summed in log space so large n does not underflow.
    let ln_half_n = -(n as f64) * std::f64::consts::LN_2;
    let mut ln_choose = 0.0; // ln C(n, 0)
    let mut tail = 0.0;
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
        }
        tail += (ln_choose + ln_half_n).exp();
    }
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_samples_have_degenerate_intervals() {
        let i = bootstrap_mean(&[1.0; 50], 500, 3);
        assert_eq!((i.estimate, i.low, i.high), (1.0, 1.0, 1.0));
        let d = paired_difference(&[0.0, 1.0], &[0.0, 1.0], 500, 3).unwrap();
        assert_eq!((d.estimate, d.low, d.high), (0.0, 0.0, 0.0));
        assert!(paired_difference(&[1.0], &[], 10, 1).is_err());
    }

    #[test]
    fn bootstrap_interval_matches_the_normal_approximation_on_a_large_sample() {
        // 1,000 users, 300 hits: sd of the mean = sqrt(0.3 * 0.7 / 1000) = 0.01449, so the
        // normal 95 % interval is 0.3 -/+ 0.0284.
        let v: Vec<f64> = (0..1000).map(|i| f64::from(u8::from(i % 10 < 3))).collect();
        let i = bootstrap_mean(&v, DEFAULT_RESAMPLES, 11);
        assert!((i.estimate - 0.3).abs() < 1e-12);
        assert!((i.low - (0.3 - 0.0284)).abs() < 0.003, "{i}");
        assert!((i.high - (0.3 + 0.0284)).abs() < 0.003, "{i}");
        assert!(i.excludes(0.2) && !i.excludes(0.31));
    }

    #[test]
    fn paired_interval_is_narrower_than_the_unpaired_one_for_correlated_rows() {
        // b hits wherever a does, plus 50 more users out of 1,000.
        let a: Vec<f64> = (0..1000).map(|i| f64::from(u8::from(i % 2 == 0))).collect();
        let b: Vec<f64> = (0..1000)
            .map(|i| f64::from(u8::from(i % 2 == 0 || i % 20 == 1)))
            .collect();
        let d = paired_difference(&b, &a, DEFAULT_RESAMPLES, 5).unwrap();
        assert!((d.estimate - 0.05).abs() < 1e-12);
        // sd of the paired mean = sqrt(0.05 * 0.95 / 1000) = 0.0069: the interval is ~+-0.0135,
        // where an unpaired one would be ~+-0.044.
        assert!(d.low > 0.03 && d.high < 0.07, "{d}");
    }

    #[test]
    fn mcnemar_known_values() {
        // 0 vs 10 discordant: 2 * 0.5^10.
        assert!((mcnemar_exact(0, 10) - 2.0 * 0.5f64.powi(10)).abs() < 1e-15);
        // 3 vs 7: 2 * (1 + 10 + 45 + 120) / 1024 = 0.34375.
        assert!((mcnemar_exact(7, 3) - 0.34375).abs() < 1e-12);
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // Large n stays finite: 400 vs 600 is far from 1/2.
        let p = mcnemar_exact(400, 600);
        assert!(p > 0.0 && p < 1e-9, "{p}");
    }
}
