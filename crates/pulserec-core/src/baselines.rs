//! Baseline recommenders as [`CandidateSelector`]s, usable without a language model: the rows
//! every SLM result must be read beside.
//!
//! - [`RandomSelector`]: a seeded uniform choice per user (HR@1 = 1 / candidates in expectation).
//! - [`Popularity`]: a [`SequentialRecommender`] that scores an item by its interaction count
//!   (the caller counts training interactions only).
//! - [`RankingSelector`]: any [`SequentialRecommender`] (popularity, SASRec, ...) over a
//!   prompt's history ids and candidate ids.
//! - [`ContentSelector`]: zero-shot content similarity under any [`TextEncoder`]: the cosine of
//!   the mean of the history titles' unit embeddings and each candidate title's unit embedding.
//!
//! # Ties
//! Every selector here picks the highest-scoring candidate and, among equal scores, the one
//! listed first. Prompts list candidates in a seeded shuffled order, so for a ranking with many
//! ties (popularity among rarely bought items) this is a seeded random tie-break.

use std::collections::HashMap;

use ndarray::{Array1, ArrayView1};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};
use crate::ids::ItemId;
use crate::traits::{
    CandidatePrompt, CandidateSelector, Selection, SequentialRecommender, TextEncoder,
};

/// Index of the best score, the first listed on ties; NaN never wins. `None` when empty or
/// every score is NaN.
pub fn argmax_first(scores: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &s) in scores.iter().enumerate() {
        if s.is_nan() {
            continue;
        }
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

/// A selection from per-candidate scores (argmax, first listed on ties).
pub fn select_by_scores(prompt: &CandidatePrompt, scores: Vec<f32>) -> Selection {
    Selection {
        chosen: argmax_first(&scores).map(|i| prompt.candidates[i].0),
        answer: String::new(),
        scores: Some(scores),
    }
}

/// Chooses uniformly at random, seeded per (seed, user): the same user gets the same choice
/// whatever other users are in the call.
#[derive(Clone, Debug)]
pub struct RandomSelector {
    seed: u64,
}

impl RandomSelector {
    /// A selector whose choices are fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { seed }
    }
}

impl CandidateSelector for RandomSelector {
    /// Scores are independent uniform draws per candidate; the best one is chosen.
    fn select(&mut self, prompts: &[CandidatePrompt]) -> Result<Vec<Selection>> {
        Ok(prompts
            .iter()
            .map(|p| {
                let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
                rng.set_stream(u64::from(p.user.0));
                let scores = (0..p.candidates.len())
                    .map(|_| rng.random::<f32>())
                    .collect();
                select_by_scores(p, scores)
            })
            .collect())
    }
}

/// Scores items by how often they were interacted with.
///
/// ```
/// use pulserec_core::baselines::Popularity;
/// use pulserec_core::{ItemId, SequentialRecommender};
/// // Item 1 seen 3 times, item 2 once, item 3 twice.
/// let pop = Popularity::from_items([1, 1, 2, 3, 1, 3].map(ItemId), 3);
/// let scores = pop.score_candidates(&[&[]], &[&[ItemId(2), ItemId(3), ItemId(1)]]).unwrap();
/// assert_eq!(scores, vec![vec![1.0, 2.0, 3.0]]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Popularity {
    /// `counts[i]` is the count of `ItemId(i)` (index 0, the padding id, is unused).
    counts: Vec<u32>,
}

impl Popularity {
    /// From counts indexed by [`ItemId::index`].
    pub fn new(counts: Vec<u32>) -> Self {
        Self { counts }
    }

    /// Counts of `items` over a catalogue of `n_items` items (ids `1..=n_items`); ids past the
    /// catalogue are ignored.
    pub fn from_items(items: impl IntoIterator<Item = ItemId>, n_items: usize) -> Self {
        let mut counts = vec![0u32; n_items + 1];
        for it in items {
            if let Some(c) = counts.get_mut(it.index()) {
                *c += 1;
            }
        }
        Self { counts }
    }

    /// The counts, indexed by [`ItemId::index`].
    pub fn counts(&self) -> &[u32] {
        &self.counts
    }

    /// The count of `item` (0 for an id past the catalogue).
    pub fn count(&self, item: ItemId) -> u32 {
        self.counts.get(item.index()).copied().unwrap_or(0)
    }
}

impl SequentialRecommender for Popularity {
    fn score_candidates(
        &self,
        _histories: &[&[ItemId]],
        candidates: &[&[ItemId]],
    ) -> Result<Vec<Vec<f32>>> {
        Ok(candidates
            .iter()
            .map(|c| c.iter().map(|&it| self.count(it) as f32).collect())
            .collect())
    }

    /// The most popular items, ties broken by the lower id.
    fn top_k(
        &self,
        histories: &[&[ItemId]],
        k: usize,
        exclude_history: bool,
    ) -> Result<Vec<Vec<(ItemId, f32)>>> {
        let mut order: Vec<ItemId> = (1..self.counts.len() as u32).map(ItemId).collect();
        order.sort_by_key(|&it| (std::cmp::Reverse(self.count(it)), it.0));
        Ok(histories
            .iter()
            .map(|h| {
                order
                    .iter()
                    .filter(|it| !(exclude_history && h.contains(it)))
                    .take(k)
                    .map(|&it| (it, self.count(it) as f32))
                    .collect()
            })
            .collect())
    }
}

/// Any [`SequentialRecommender`] as a candidate selector: it scores each prompt's candidate ids
/// given the prompt's history ids ([`CandidatePrompt::history_items`]).
#[derive(Clone, Debug)]
pub struct RankingSelector<R> {
    recommender: R,
}

impl<R: SequentialRecommender> RankingSelector<R> {
    /// A selector over `recommender`.
    pub fn new(recommender: R) -> Self {
        Self { recommender }
    }

    /// Gives the recommender back.
    pub fn into_inner(self) -> R {
        self.recommender
    }
}

impl<R: SequentialRecommender> CandidateSelector for RankingSelector<R> {
    fn select(&mut self, prompts: &[CandidatePrompt]) -> Result<Vec<Selection>> {
        let ids: Vec<Vec<ItemId>> = prompts
            .iter()
            .map(|p| p.candidates.iter().map(|(id, _)| *id).collect())
            .collect();
        let histories: Vec<&[ItemId]> =
            prompts.iter().map(|p| p.history_items.as_slice()).collect();
        let candidates: Vec<&[ItemId]> = ids.iter().map(Vec::as_slice).collect();
        let scores = self.recommender.score_candidates(&histories, &candidates)?;
        if scores.len() != prompts.len() {
            return Err(Error::InvalidInput(format!(
                "the recommender scored {} users for {} prompts",
                scores.len(),
                prompts.len()
            )));
        }
        prompts
            .iter()
            .zip(scores)
            .map(|(p, s)| {
                if s.len() != p.candidates.len() {
                    return Err(Error::InvalidInput(format!(
                        "user {}: {} scores for {} candidates",
                        p.user.0,
                        s.len(),
                        p.candidates.len()
                    )));
                }
                Ok(select_by_scores(p, s))
            })
            .collect()
    }
}

/// Zero-shot content similarity: each candidate is scored by the cosine between its title's
/// embedding and the mean of the shown history titles' unit embeddings. A prompt without history
/// scores every candidate 0 (so the first listed is chosen).
#[derive(Clone, Debug)]
pub struct ContentSelector<E> {
    encoder: E,
}

impl<E: TextEncoder> ContentSelector<E> {
    /// A selector over `encoder`.
    pub fn new(encoder: E) -> Self {
        Self { encoder }
    }

    /// Gives the encoder back.
    pub fn into_inner(self) -> E {
        self.encoder
    }
}

fn unit(v: ArrayView1<'_, f32>) -> Array1<f32> {
    let norm = v.dot(&v).sqrt();
    if norm > 0.0 {
        v.mapv(|x| x / norm)
    } else {
        v.to_owned()
    }
}

impl<E: TextEncoder> CandidateSelector for ContentSelector<E> {
    fn select(&mut self, prompts: &[CandidatePrompt]) -> Result<Vec<Selection>> {
        // Every distinct title of the call is embedded once.
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut texts: Vec<&str> = Vec::new();
        for p in prompts {
            for t in p.history.iter().chain(p.candidates.iter().map(|(_, t)| t)) {
                index.entry(t.as_str()).or_insert_with(|| {
                    texts.push(t.as_str());
                    texts.len() - 1
                });
            }
        }
        let embeddings = if texts.is_empty() {
            ndarray::Array2::zeros((0, self.encoder.dim()))
        } else {
            self.encoder.encode(&texts)?
        };
        if embeddings.nrows() != texts.len() {
            return Err(Error::InvalidInput(format!(
                "the encoder returned {} rows for {} texts",
                embeddings.nrows(),
                texts.len()
            )));
        }
        let row = |t: &str| unit(embeddings.row(index[t]));
        Ok(prompts
            .iter()
            .map(|p| {
                let scores = if p.history.is_empty() {
                    vec![0.0; p.candidates.len()]
                } else {
                    let mut profile = Array1::<f32>::zeros(embeddings.ncols());
                    for h in &p.history {
                        profile += &row(h);
                    }
                    let profile = unit(profile.view());
                    p.candidates
                        .iter()
                        .map(|(_, t)| profile.dot(&row(t)))
                        .collect()
                };
                select_by_scores(p, scores)
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;

    use super::*;
    use crate::ids::UserId;

    fn prompt(user: u32, history: &[&str], candidates: &[(u32, &str)]) -> CandidatePrompt {
        CandidatePrompt {
            user: UserId(user),
            history: history.iter().map(|s| s.to_string()).collect(),
            history_items: Vec::new(),
            candidates: candidates
                .iter()
                .map(|&(id, t)| (ItemId(id), t.to_string()))
                .collect(),
            rationale: None,
            popularity: None,
        }
    }

    #[test]
    fn argmax_takes_the_first_of_equal_scores_and_skips_nan() {
        assert_eq!(argmax_first(&[1.0, 3.0, 3.0]), Some(1));
        assert_eq!(argmax_first(&[f32::NAN, 0.5]), Some(1));
        assert_eq!(argmax_first(&[f32::NAN]), None);
        assert_eq!(argmax_first(&[]), None);
    }

    #[test]
    fn popularity_picks_the_most_counted_candidate_first_listed_on_ties() {
        let pop = Popularity::from_items([1, 1, 2, 3, 3, 4].map(ItemId), 4);
        let mut sel = RankingSelector::new(pop.clone());
        let out = sel
            .select(&[
                prompt(1, &[], &[(2, "b"), (1, "a"), (4, "d")]),
                prompt(2, &[], &[(3, "c"), (1, "a")]),
                prompt(3, &[], &[(1, "a"), (3, "c")]),
            ])
            .unwrap();
        assert_eq!(out[0].chosen, Some(ItemId(1)));
        assert_eq!(
            out[1].chosen,
            Some(ItemId(3)),
            "a tie goes to the first listed"
        );
        assert_eq!(out[2].chosen, Some(ItemId(1)));
        let top = pop.top_k(&[&[ItemId(1)]], 2, true).unwrap();
        assert_eq!(top[0][0].0, ItemId(3), "1 excluded, 3 beats 2 and 4");
    }

    #[test]
    fn random_choices_are_uniform_and_fixed_per_user() {
        let prompts: Vec<CandidatePrompt> = (0..4000)
            .map(|u| prompt(u, &[], &[(1, "a"), (2, "b"), (3, "c"), (4, "d"), (5, "e")]))
            .collect();
        let a = RandomSelector::new(7).select(&prompts).unwrap();
        let b = RandomSelector::new(7).select(&prompts[10..20]).unwrap();
        assert_eq!(&a[10..20], &b[..]);
        let firsts = a.iter().filter(|s| s.chosen == Some(ItemId(1))).count();
        // 4000 draws at p = 0.2: 800 expected, sd 25.
        assert!((700..900).contains(&firsts), "{firsts}");
    }

    /// An encoder over fixed vectors, one per known text.
    struct Fixed(HashMap<&'static str, [f32; 2]>);

    impl TextEncoder for Fixed {
        fn dim(&self) -> usize {
            2
        }
        fn encode(&self, texts: &[&str]) -> Result<Array2<f32>> {
            let mut out = Array2::zeros((texts.len(), 2));
            for (i, t) in texts.iter().enumerate() {
                let v = self.0[t];
                out[[i, 0]] = v[0];
                out[[i, 1]] = v[1];
            }
            Ok(out)
        }
    }

    #[test]
    fn content_scores_are_cosines_to_the_mean_history_direction() {
        let enc = Fixed(HashMap::from([
            ("h1", [1.0, 0.0]),
            ("h2", [0.0, 10.0]),
            ("x", [1.0, 1.0]),
            ("y", [1.0, -1.0]),
            ("z", [0.0, 1.0]),
        ]));
        let mut sel = ContentSelector::new(enc);
        let out = sel
            .select(&[prompt(1, &["h1", "h2"], &[(1, "y"), (2, "x"), (3, "z")])])
            .unwrap();
        // Unit history vectors (1,0) and (0,1): their mean points at (1,1).
        let s = out[0].scores.as_ref().unwrap();
        assert!((s[0] - 0.0).abs() < 1e-6);
        assert!((s[1] - 1.0).abs() < 1e-6);
        assert!((s[2] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert_eq!(out[0].chosen, Some(ItemId(2)));
    }
}
