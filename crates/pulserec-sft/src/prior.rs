//! A popularity prior under the SLM's ranking scores: the SLM as a residual reranker.
//!
//! With a prior, a candidate's score is `slm(candidate) + weight * ln(1 + count(candidate))`,
//! where `count` is the most-popular baseline's training-interaction count. The ranking
//! objective trains the SLM through that sum ([`EncodedExample::offsets`] carries the prior
//! term of every candidate), so the adapter learns what the count does not say, as LlamaRec's
//! LLM reranks a retriever's list; [`crate::LikelihoodSelector::with_prior`] adds the same term
//! at evaluation. `weight` is fitted once, before training, by maximum likelihood of the prior
//! alone on the training examples ([`PopularityPrior::fit`]): the softmax over `weight *
//! ln(1 + count)` that best predicts the training positives.
//!
//! [`EncodedExample::offsets`]: crate::EncodedExample::offsets

use pulserec_core::ItemId;
use pulserec_core::baselines::Popularity;

use crate::data::SftExample;
use crate::error::{Result, SftError};

/// The largest weight [`PopularityPrior::fit`] returns (a prior that alone separates every
/// training positive would otherwise grow without bound).
pub const MAX_PRIOR_WEIGHT: f32 = 20.0;

/// `weight * ln(1 + count)` per item; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct PopularityPrior {
    counts: Popularity,
    weight: f32,
}

impl PopularityPrior {
    /// A prior of `weight` over `counts`; refused unless `weight` is finite and >= 0.
    pub fn new(counts: Popularity, weight: f32) -> Result<Self> {
        if !weight.is_finite() || weight < 0.0 {
            return Err(SftError::config(
                "prior_weight",
                format!("{weight} must be finite and >= 0"),
            ));
        }
        Ok(Self { counts, weight })
    }

    /// The prior whose weight maximises the likelihood of `examples`' targets under
    /// `softmax_j(weight * ln(1 + count_j))` over each example's candidates (the negative
    /// log-likelihood is convex in the weight, so bisection on its derivative finds the
    /// optimum), clamped to `[0, MAX_PRIOR_WEIGHT]`. No example (or positives no more popular
    /// than their negatives on average): weight 0.
    pub fn fit(counts: Popularity, examples: &[SftExample]) -> Self {
        let features: Vec<(Vec<f64>, usize)> = examples
            .iter()
            .map(|e| {
                let x = e
                    .prompt
                    .candidates
                    .iter()
                    .map(|(id, _)| log_count(&counts, *id))
                    .collect();
                (x, e.target_index())
            })
            .collect();
        // d/dw of the mean NLL: mean over examples of E_softmax(w x)[x] - x_target.
        let slope = |w: f64| -> f64 {
            let total: f64 = features
                .iter()
                .map(|(x, target)| {
                    let top = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(w * v));
                    let (mut z, mut zx) = (0.0, 0.0);
                    for &v in x {
                        let p = (w * v - top).exp();
                        z += p;
                        zx += p * v;
                    }
                    zx / z - x[*target]
                })
                .sum();
            total / features.len().max(1) as f64
        };
        let (mut lo, mut hi) = (0.0f64, MAX_PRIOR_WEIGHT as f64);
        let weight = if features.is_empty() || slope(lo) >= 0.0 {
            0.0
        } else if slope(hi) <= 0.0 {
            hi
        } else {
            for _ in 0..60 {
                let mid = 0.5 * (lo + hi);
                if slope(mid) < 0.0 {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            0.5 * (lo + hi)
        };
        Self {
            counts,
            weight: weight as f32,
        }
    }

    /// The weight of `ln(1 + count)`.
    pub fn weight(&self) -> f32 {
        self.weight
    }

    /// The prior term of `item`: `weight * ln(1 + count)` (an unknown item counts 0).
    pub fn offset(&self, item: ItemId) -> f32 {
        (self.weight as f64 * log_count(&self.counts, item)) as f32
    }

    /// Sets every example's [`SftExample::prior`]: the offset of each candidate, in prompt
    /// order.
    pub fn attach(&self, examples: &mut [SftExample]) {
        for e in examples {
            e.prior = e
                .prompt
                .candidates
                .iter()
                .map(|(id, _)| self.offset(*id))
                .collect();
        }
    }
}

fn log_count(counts: &Popularity, item: ItemId) -> f64 {
    (counts.count(item) as f64).ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulserec_core::{CandidatePrompt, UserId};

    fn example(candidates: &[u32], target: u32) -> SftExample {
        SftExample {
            prompt: CandidatePrompt {
                user: UserId(1),
                history: Vec::new(),
                history_items: Vec::new(),
                candidates: candidates
                    .iter()
                    .map(|&i| (ItemId(i), format!("item {i}")))
                    .collect(),
                rationale: None,
                popularity: None,
            },
            target: ItemId(target),
            auxiliary: None,
            prior: Vec::new(),
        }
    }

    /// The fitted weight zeroes the derivative, checked against the closed form of one
    /// two-candidate example: with features a (positive) and b, and n such examples where the
    /// positive is the popular item a share q of the time, the optimum has
    /// sigmoid(w (a - b)) = q.
    #[test]
    fn the_fitted_weight_is_the_closed_form_optimum() {
        // Item 1 counted e^2 - 1 times (ln(1 + c) = 2), item 2 never (0).
        let c = (2.0f64.exp() - 1.0).round() as u32;
        let counts = Popularity::new(vec![0, c, 0]);
        let a = (c as f64).ln_1p();
        // Three of four positives are the popular item: sigmoid(w a) = 3/4.
        let examples = [
            example(&[1, 2], 1),
            example(&[2, 1], 1),
            example(&[1, 2], 1),
            example(&[1, 2], 2),
        ];
        let prior = PopularityPrior::fit(counts, &examples);
        let expected = (3.0f64).ln() / a;
        assert!(
            (prior.weight() as f64 - expected).abs() < 1e-5,
            "{} vs {expected}",
            prior.weight()
        );
        assert!((prior.offset(ItemId(1)) as f64 - expected * a).abs() < 1e-4);
        assert_eq!(prior.offset(ItemId(2)), 0.0);
        // Unknown items count 0.
        assert_eq!(prior.offset(ItemId(99)), 0.0);
    }

    #[test]
    fn the_weight_is_zero_or_capped_at_the_ends() {
        let counts = Popularity::new(vec![0, 5, 0]);
        // Positives never more popular: weight 0.
        let against = [example(&[1, 2], 2), example(&[2, 1], 2)];
        assert_eq!(PopularityPrior::fit(counts.clone(), &against).weight(), 0.0);
        assert_eq!(PopularityPrior::fit(counts.clone(), &[]).weight(), 0.0);
        // Always the popular one: separable, capped.
        let separable = [example(&[1, 2], 1), example(&[2, 1], 1)];
        assert_eq!(
            PopularityPrior::fit(counts.clone(), &separable).weight(),
            MAX_PRIOR_WEIGHT
        );
        assert!(PopularityPrior::new(counts.clone(), -1.0).is_err());
        assert!(PopularityPrior::new(counts, f32::NAN).is_err());
    }

    #[test]
    fn attach_gives_each_candidate_its_offset_in_prompt_order() {
        let counts = Popularity::new(vec![0, 3, 0, 7]);
        let prior = PopularityPrior::new(counts, 0.5).unwrap();
        let mut examples = [example(&[3, 2, 1], 1)];
        prior.attach(&mut examples);
        let expected: Vec<f32> = [7.0f32, 0.0, 3.0].iter().map(|c| 0.5 * c.ln_1p()).collect();
        for (got, want) in examples[0].prior.iter().zip(&expected) {
            assert!((got - want).abs() < 1e-6);
        }
    }
}
