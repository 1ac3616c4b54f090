//! Token sampling: greedy, temperature, top-k and top-p (nucleus), seeded per request.

use pulserec_core::SamplingParams;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Draws next tokens from logits under one request's settings.
#[derive(Clone, Debug)]
pub struct Sampler {
    temperature: f32,
    top_k: Option<usize>,
    top_p: Option<f32>,
    rng: ChaCha8Rng,
}

impl Sampler {
    /// A sampler for `params`, or why the settings are invalid.
    pub fn new(params: &SamplingParams) -> Result<Self, String> {
        if !(params.temperature >= 0.0 && params.temperature.is_finite()) {
            return Err(format!(
                "temperature {} must be finite and >= 0",
                params.temperature
            ));
        }
        if params.top_k == Some(0) {
            return Err("top_k must be at least 1".into());
        }
        if let Some(p) = params.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(format!("top_p {p} must be in (0, 1]"));
        }
        Ok(Self {
            temperature: params.temperature,
            top_k: params.top_k,
            top_p: params.top_p,
            rng: ChaCha8Rng::seed_from_u64(params.seed),
        })
    }

    /// Picks a token id from `logits`.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.temperature == 0.0 || self.top_k == Some(1) {
            return argmax(logits);
        }
        // Candidates sorted by logit, best first (ties by id for determinism).
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = self.top_k.unwrap_or(logits.len()).min(logits.len());
        let by_logit = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        if k < idx.len() {
            idx.select_nth_unstable_by(k - 1, by_logit);
            idx.truncate(k);
        }
        idx.sort_unstable_by(by_logit);
        let max = logits[idx[0] as usize];
        let mut probs: Vec<f32> = idx
            .iter()
            .map(|&i| ((logits[i as usize] - max) / self.temperature).exp())
            .collect();
        let total: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if let Some(top_p) = self.top_p {
            let mut mass = 0.0;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                mass += p;
                if mass >= top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep);
        }
        let total: f32 = probs.iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, p) in probs.iter().enumerate() {
            r -= p;
            if r <= 0.0 {
                return idx[i];
            }
        }
        idx[probs.len() - 1]
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// `log softmax(logits)[id]`, computed stably.
pub fn log_prob(logits: &[f32], id: u32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = logits.iter().map(|x| (x - max).exp()).sum::<f32>().ln() + max;
    logits[id as usize] - lse
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
        seed: u64,
    ) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            seed,
            ..SamplingParams::default()
        }
    }

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(&params(0.0, None, None, 1)).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 2.9, -1.0]), 1);
    }

    #[test]
    fn same_seed_same_tokens_and_frequencies_follow_softmax() {
        let logits = [0.0f32, 1.0, 2.0];
        let draw = |seed| {
            let mut s = Sampler::new(&params(1.0, None, None, seed)).unwrap();
            (0..20_000).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        let d = draw(7);
        let z: f32 = logits.iter().map(|x| x.exp()).sum();
        for t in 0..3 {
            let freq = d.iter().filter(|&&x| x == t).count() as f32 / d.len() as f32;
            let want = logits[t as usize].exp() / z;
            assert!((freq - want).abs() < 0.015, "token {t}: {freq} vs {want}");
        }
    }

    #[test]
    fn top_k_and_top_p_restrict_support() {
        let logits = [5.0f32, 4.0, 3.0, 0.0, -1.0];
        let mut s = Sampler::new(&params(2.0, Some(2), None, 3)).unwrap();
        assert!((0..2000).all(|_| s.sample(&logits) < 2));
        // Probabilities at T=1: ~0.66, 0.24, 0.09, ...; top_p 0.8 keeps the first two.
        let mut s = Sampler::new(&params(1.0, None, Some(0.8), 3)).unwrap();
        assert!((0..2000).all(|_| s.sample(&logits) < 2));
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(Sampler::new(&params(-1.0, None, None, 0)).is_err());
        assert!(Sampler::new(&params(f32::NAN, None, None, 0)).is_err());
        assert!(Sampler::new(&params(1.0, Some(0), None, 0)).is_err());
        assert!(Sampler::new(&params(1.0, None, Some(0.0), 0)).is_err());
    }

    #[test]
    fn log_prob_is_normalised() {
        let logits = [1.0f32, 2.0, 3.0];
        let total: f32 = (0..3).map(|i| log_prob(&logits, i).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
