//! InfoNCE on cosine similarity with in-batch negatives.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use rand::Rng;
use rand::seq::index::sample;
use serde::{Deserialize, Serialize};

use crate::encoder::l2_normalize;

/// The contrastive objective.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InfoNceConfig {
    /// Softmax temperature over cosine similarities (paper code: 1.0; 0.05-0.1 is usual).
    pub temperature: f32,
    /// In-batch negatives per anchor (paper: 10); `None` or `>= batch - 1` uses every other
    /// example of the batch.
    pub negatives: Option<usize>,
    /// Also score each rationale against the behaviours (the CLIP-style symmetric loss) and
    /// average both directions.
    pub symmetric: bool,
}

impl Default for InfoNceConfig {
    /// The paper's setting: temperature 1.0, 10 negatives, one direction.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            negatives: Some(10),
            symmetric: false,
        }
    }
}

impl InfoNceConfig {
    /// For each anchor `i` of a batch of `batch`, the columns its logits row reads: `i` first
    /// (the positive), then the negatives (all others, or `negatives` of them sampled without
    /// replacement).
    pub fn candidate_columns(&self, batch: usize, rng: &mut impl Rng) -> Vec<Vec<usize>> {
        let others = batch.saturating_sub(1);
        let k = self.negatives.map_or(others, |k| k.min(others));
        (0..batch)
            .map(|i| {
                let mut row = Vec::with_capacity(k + 1);
                row.push(i);
                if k == others {
                    row.extend((0..batch).filter(|&j| j != i));
                } else {
                    // Sample among the others: positions 0..others map around `i`.
                    row.extend(
                        sample(rng, others, k)
                            .into_iter()
                            .map(|j| if j >= i { j + 1 } else { j }),
                    );
                }
                row
            })
            .collect()
    }

    /// The loss of one batch.
    ///
    /// `columns` comes from [`Self::candidate_columns`]; every row has the same length.
    ///
    /// # Shapes
    /// - `behaviour`, `rationale`: `[batch, dim]` (row `i` of each belongs to user `i`)
    /// - output: `[1]`
    pub fn loss(
        &self,
        behaviour: Tensor<2>,
        rationale: Tensor<2>,
        columns: &[Vec<usize>],
    ) -> Tensor<1> {
        let sims = cosine_matrix(behaviour, rationale).div_scalar(self.temperature);
        let forward = Self::direction(sims.clone(), columns);
        if self.symmetric {
            let backward = Self::direction(sims.transpose(), columns);
            (forward + backward).div_scalar(2.0)
        } else {
            forward
        }
    }

    /// Mean over anchors of `-log softmax(logits)[positive]`, the positive being column 0.
    fn direction(sims: Tensor<2>, columns: &[Vec<usize>]) -> Tensor<1> {
        let batch = columns.len();
        let width = columns.first().map_or(1, Vec::len);
        let flat: Vec<i64> = columns.iter().flatten().map(|&c| c as i64).collect();
        let index: Tensor<2, Int> =
            Tensor::from_data(TensorData::new(flat, [batch, width]), &sims.device());
        let logits = sims.gather(1, index);
        let log_probs = log_softmax(logits, 1);
        log_probs
            .slice([0..batch, 0..1])
            .reshape([batch])
            .mean()
            .neg()
    }
}

/// Cosine similarity of every row of `a` with every row of `b`.
///
/// # Shapes
/// - `a`: `[n, dim]`, `b`: `[m, dim]`, output: `[n, m]`
pub fn cosine_matrix(a: Tensor<2>, b: Tensor<2>) -> Tensor<2> {
    l2_normalize(a).matmul(l2_normalize(b).transpose())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use rand::SeedableRng;

    fn t(rows: &[[f32; 2]]) -> Tensor<2> {
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Tensor::from_data(TensorData::new(flat, [rows.len(), 2]), &Device::flex())
    }

    fn scalar(x: Tensor<1>) -> f64 {
        x.into_scalar::<f32>() as f64
    }

    /// Hand computation: behaviour rows b0 = (1, 0), b1 = (0, 1); rationale rows r0 = (1, 0),
    /// r1 = (1, 1)/sqrt(2) after normalisation. Cosines: b0.r0 = 1, b0.r1 = 1/sqrt2,
    /// b1.r0 = 0, b1.r1 = 1/sqrt2.
    #[test]
    fn matches_hand_computed_values() {
        let b = t(&[[1.0, 0.0], [0.0, 2.0]]);
        let r = t(&[[3.0, 0.0], [1.0, 1.0]]);
        let s = std::f64::consts::FRAC_1_SQRT_2;
        let cols = vec![vec![0, 1], vec![1, 0]];
        let nll = |pos: f64, neg: f64, tau: f64| -> f64 {
            -((pos / tau) - ((pos / tau).exp() + (neg / tau).exp()).ln())
        };
        for tau in [1.0, 0.1] {
            let cfg = InfoNceConfig {
                temperature: tau as f32,
                negatives: None,
                symmetric: false,
            };
            let want = (nll(1.0, s, tau) + nll(s, 0.0, tau)) / 2.0;
            let got = scalar(cfg.loss(b.clone(), r.clone(), &cols));
            assert!((got - want).abs() < 1e-5, "tau {tau}: {got} vs {want}");

            // Symmetric: rationale anchors. r0: pos b0.r0 = 1, neg b1.r0 = 0;
            // r1: pos b1.r1 = s, neg b0.r1 = s.
            let sym = InfoNceConfig {
                symmetric: true,
                ..cfg
            };
            let back = (nll(1.0, 0.0, tau) + nll(s, s, tau)) / 2.0;
            let got = scalar(sym.loss(b.clone(), r.clone(), &cols));
            assert!(
                (got - (want + back) / 2.0).abs() < 1e-5,
                "symmetric tau {tau}: {got}"
            );
        }
    }

    #[test]
    fn three_way_batch_with_one_sampled_negative() {
        // b = r = identity-like rows: cosine 1 with itself, 0 with others.
        let b = t(&[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]]);
        let cfg = InfoNceConfig {
            temperature: 0.5,
            negatives: Some(1),
            symmetric: false,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let cols = cfg.candidate_columns(3, &mut rng);
        let mut expected = 0.0;
        for (i, row) in cols.iter().enumerate() {
            assert_eq!(row.len(), 2);
            assert_eq!(row[0], i);
            assert_ne!(row[1], i);
            // cos(b_i, b_j): 0 for orthogonal pairs, -1 for rows 0 and 2.
            let neg = if (i, row[1]) == (0, 2) || (i, row[1]) == (2, 0) {
                -1.0
            } else {
                0.0
            };
            let (p, n) = (1.0 / 0.5f64, neg / 0.5f64);
            expected += -(p - (p.exp() + n.exp()).ln());
        }
        expected /= 3.0;
        let got = scalar(cfg.loss(b.clone(), b, &cols));
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
    }

    #[test]
    fn all_negatives_when_k_exceeds_batch() {
        let cfg = InfoNceConfig::default();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let cols = cfg.candidate_columns(4, &mut rng);
        assert_eq!(cols[2], vec![2, 0, 1, 3]);
    }
}
