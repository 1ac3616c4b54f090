//! SFT training examples and held-out test cases from a data set and its leave-one-out split.
//!
//! - Training (PAPER.md stage 4): the target is the user's last *training* item (the item the
//!   stage-1 rationale explains), the prompt shows the 5 items before it and 10 candidates: the
//!   target and 9 items the user never interacted with (anywhere in the sequence, so neither
//!   valid nor test items), in a seeded shuffled order, plus the variant's rationale. With
//!   [`DataConfig::train_positions`] > 1 the training items before it are targets too, each with
//!   the items before it and its own negatives (no rationale: the rationale explains the last).
//!   [`ExampleBuilder::with_popularity`] shows each candidate's training-interaction count
//!   and/or lists the candidates most bought first.
//! - Test: the target is the user's test item, the prompt shows the 3 items before it and the
//!   user's stored candidate set (positive + 4 negatives, or + 19), shuffled the same way, with
//!   no rationale.
//!
//! Train and test users never overlap: [`choose_test_users`] draws test users from the
//! evaluation users minus the training users, deterministically by seed. Every random choice
//! has its own ChaCha stream per (purpose, user), so a user's example does not depend on which
//! other users are built.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use pulserec_core::text::{normalize_whitespace, truncate_chars};
use pulserec_core::{CandidatePrompt, ItemId, UserId};
use pulserec_data::{CandidateConfig, CandidateSets, Dataset, LeaveOneOut, Target};
use rand::seq::SliceRandom;
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SftError};

/// Which rationales the training prompts carry (PAPER.md's ablations).
///
/// The rationale variants build identical examples apart from the rationale text; which store
/// the text comes from is the caller's choice. The name ([`Variant::name`], kebab-case) is the
/// one name everywhere: pipeline configs, run folders, metrics files and the `sft` example's
/// `--variant`; the snake-case spelling of earlier versions is still read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// No rationale: the answer cue follows the candidates directly.
    #[serde(alias = "no_rationale")]
    NoRationale,
    /// Stage-1 hindsight rationales ("SFT with reasons").
    #[serde(alias = "with_reasons")]
    WithReasons,
    /// Tree-of-Thought rationales selected by the SLM's likelihood (the ablation).
    #[serde(alias = "tot_likelihood")]
    TotLikelihood,
    /// Tree-of-Thought rationales selected by Thought-Space consistency (PULSE).
    Pulse,
    /// A placebo, not in the paper: the rationales of [`Variant::WithReasons`], each given to
    /// another training user ([`ExampleBuilder::training_set`] deranges them by seed), so the
    /// prompts are as long and as fluent while the rationale says nothing about this user's
    /// choice. A gain of "with reasons" over it is a gain from what the rationales say.
    #[serde(alias = "shuffled_reasons")]
    ShuffledReasons,
    /// Not in the paper: the rationales of [`Variant::WithReasons`] as a second training target
    /// instead of prompt text. A user's prompts carry no rationale (as at test time), and
    /// [`SftExample::auxiliary`] holds the rationale, which the model learns to write after the
    /// history ([`crate::encode_all`] adds it as a row of its own): answer and rationale are
    /// learned as two tasks, and the answer is given without one.
    #[serde(alias = "auxiliary_reasons")]
    AuxiliaryReasons,
}

impl Variant {
    /// Every variant: the paper's ablation order, then the two that are not in it.
    pub const ALL: [Variant; 6] = [
        Variant::NoRationale,
        Variant::WithReasons,
        Variant::TotLikelihood,
        Variant::Pulse,
        Variant::ShuffledReasons,
        Variant::AuxiliaryReasons,
    ];

    /// The paper's four variants, in the order of its tables (the placebo and the auxiliary
    /// target are opt-in).
    pub const PAPER: [Variant; 4] = [
        Variant::NoRationale,
        Variant::WithReasons,
        Variant::TotLikelihood,
        Variant::Pulse,
    ];

    /// The name in configs, folders and metrics: `no-rationale`, `with-reasons`,
    /// `tot-likelihood`, `pulse`, `shuffled-reasons`, `auxiliary-reasons`.
    pub fn name(self) -> &'static str {
        match self {
            Self::NoRationale => "no-rationale",
            Self::WithReasons => "with-reasons",
            Self::TotLikelihood => "tot-likelihood",
            Self::Pulse => "pulse",
            Self::ShuffledReasons => "shuffled-reasons",
            Self::AuxiliaryReasons => "auxiliary-reasons",
        }
    }

    /// The row label in result tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::NoRationale => "SFT without rationale",
            Self::WithReasons => "SFT with reasons",
            Self::TotLikelihood => "ToT with likelihood",
            Self::Pulse => "PULSE",
            Self::ShuffledReasons => "SFT with shuffled reasons (placebo)",
            Self::AuxiliaryReasons => "SFT with reasons as an auxiliary target",
        }
    }

    /// Whether the variant needs a rationale per training user (in its prompts, or as its
    /// auxiliary target).
    pub fn uses_rationale(self) -> bool {
        self != Self::NoRationale
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Variant {
    type Err = SftError;

    /// Parses [`Variant::name`] (also accepting `_` for `-`).
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().replace('_', "-");
        Self::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                SftError::config(
                    "variant",
                    format!(
                        "unknown variant `{s}` (expected no-rationale, with-reasons, \
                         tot-likelihood, pulse, shuffled-reasons or auxiliary-reasons)"
                    ),
                )
            })
    }
}

/// What the prompts show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataConfig {
    /// History titles in training prompts (paper: 5).
    pub train_history: usize,
    /// Candidates in training prompts, positive included (paper: 10).
    pub train_candidates: usize,
    /// History titles in test prompts (paper: 3).
    pub test_history: usize,
    /// Titles longer than this many characters are cut (with `…`) wherever they are shown; the
    /// target is the title as shown, so an answer of at most 59 tokens can name it.
    pub max_title_chars: usize,
    /// Seed of negatives, candidate order and test-user choice.
    pub seed: u64,
    /// Training examples per user: the last this many training items are targets, each with the
    /// items before it as history and its own uniform negatives (paper: 1, the last training
    /// item only).
    #[serde(default = "one")]
    pub train_positions: usize,
}

fn one() -> usize {
    1
}

impl DataConfig {
    /// The paper's shapes with `seed`.
    pub fn paper(seed: u64) -> Self {
        Self {
            train_history: 5,
            train_candidates: 10,
            test_history: 3,
            max_title_chars: 160,
            seed,
            train_positions: 1,
        }
    }

    /// Rejects shapes that cannot make an example.
    pub fn validate(&self) -> Result<()> {
        if self.train_candidates < 2 {
            return Err(SftError::config(
                "train_candidates",
                format!("{} < 2: a choice needs a negative", self.train_candidates),
            ));
        }
        if self.train_positions == 0 {
            return Err(SftError::config(
                "train_positions",
                "0: every user needs at least one training example".to_string(),
            ));
        }
        if self.max_title_chars < 8 {
            return Err(SftError::config(
                "max_title_chars",
                format!("{} is too short to name an item", self.max_title_chars),
            ));
        }
        Ok(())
    }
}

/// One prompt with its correct answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SftExample {
    /// The prompt (history, shuffled candidates, rationale for training variants that use one).
    pub prompt: CandidatePrompt,
    /// The correct candidate.
    pub target: ItemId,
    /// [`Variant::AuxiliaryReasons`]: the rationale the model also learns to write after the
    /// history, as a target of its own; the prompt carries none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auxiliary: Option<String>,
    /// A prior score per candidate, in prompt order, that the ranking objective adds to the
    /// SLM's score ([`crate::PopularityPrior::attach`]); empty: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prior: Vec<f32>,
}

impl SftExample {
    /// Index of the target among the prompt's candidates.
    pub fn target_index(&self) -> usize {
        // Invariant of the builders: the target is one of the candidates.
        self.prompt
            .candidates
            .iter()
            .position(|(id, _)| *id == self.target)
            .unwrap_or(0)
    }

    /// The target's title as shown in the prompt.
    pub fn target_title(&self) -> &str {
        &self.prompt.candidates[self.target_index()].1
    }
}

/// Training examples of one variant, with the users that could not get one.
///
/// A user contributes up to [`DataConfig::train_positions`] examples (fewer when their training
/// sequence is shorter); only the last carries a rationale, so the rationale variants use one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingSet {
    /// The variant.
    pub variant: Variant,
    /// The usable users' examples, in the order the users were given (a user's latest target
    /// first).
    pub examples: Vec<SftExample>,
    /// Users skipped because the variant needs a rationale and theirs is missing or empty.
    pub skipped_no_rationale: Vec<UserId>,
    /// Users skipped because they have no last training item (fewer than 2 training items).
    pub skipped_no_target: Vec<UserId>,
}

/// Builds SFT examples from a data set.
#[derive(Clone, Debug)]
pub struct ExampleBuilder<'a> {
    dataset: &'a Dataset,
    split: LeaveOneOut<'a>,
    config: DataConfig,
    /// Training-interaction counts by item index, and what prompts do with them.
    popularity: Option<(Vec<u32>, PopularityUse)>,
}

/// What prompts do with the counts given to [`ExampleBuilder::with_popularity`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PopularityUse {
    /// Each candidate carries its count ([`CandidatePrompt::popularity`]).
    pub show: bool,
    /// The candidates are listed by count, most bought first; equal counts keep the seeded
    /// shuffled order. The list is then a first-stage ranking the model can read position by
    /// position (LlamaRec lists its retriever's candidates in rank order).
    pub order: bool,
}

/// Independent random streams of the crate.
#[derive(Clone, Copy)]
pub(crate) enum Stream {
    TrainOrder = 1,
    TestOrder = 2,
    TestUsers = 3,
    Generation = 4,
    Epochs = 5,
    EarlierNegatives = 6,
    Placebo = 7,
}

/// A ChaCha stream for (`purpose`, `index`: a user id or an epoch number) under `seed`.
pub(crate) fn rng_for(seed: u64, purpose: Stream, index: u32) -> ChaCha8Rng {
    pulserec_core::seed::stream_rng(seed, purpose as u32, index)
}

impl<'a> ExampleBuilder<'a> {
    /// A builder over `dataset`'s leave-one-out split.
    pub fn new(dataset: &'a Dataset, config: DataConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            dataset,
            split: LeaveOneOut::new(&dataset.sequences),
            config,
            popularity: None,
        })
    }

    /// Prompts show and/or are ordered by each candidate's count in `counts` (indexed by
    /// [`ItemId::index`], the training interactions of the data files, as the most-popular
    /// baseline counts them), as `usage` says. A training example's own target interaction is
    /// in those counts, so its target counts one lower: what the count would be had the example
    /// been held out, as evaluation targets are.
    pub fn with_popularity(mut self, counts: Vec<u32>, usage: PopularityUse) -> Self {
        self.popularity = Some((counts, usage));
        self
    }

    /// The configuration.
    pub fn config(&self) -> &DataConfig {
        &self.config
    }

    /// The split examples are built from.
    pub fn split(&self) -> &LeaveOneOut<'a> {
        &self.split
    }

    /// A title as prompts show it: whitespace-normalised, cut to `max_title_chars`.
    fn title(&self, user: UserId, item: ItemId) -> Result<String> {
        let raw = self
            .dataset
            .catalog
            .title(item)
            .ok_or_else(|| SftError::Data {
                user,
                message: format!("item {item} is not in the catalogue"),
            })?;
        Ok(truncate_chars(
            &normalize_whitespace(raw),
            self.config.max_title_chars,
        ))
    }

    /// A prompt for `user` whose target follows `history`: a training example of `target`
    /// (`Some`: [`DataConfig::train_history`] titles, the target's own interaction taken out of
    /// its count) or a test case (`None`: [`DataConfig::test_history`] titles).
    fn prompt(
        &self,
        user: UserId,
        history: &[ItemId],
        target: Option<ItemId>,
        mut candidates: Vec<ItemId>,
        mut rng: ChaCha8Rng,
        rationale: Option<String>,
    ) -> Result<CandidatePrompt> {
        let n_history = match target {
            Some(_) => self.config.train_history,
            None => self.config.test_history,
        };
        let recent = &history[history.len().saturating_sub(n_history)..];
        candidates.shuffle(&mut rng);
        let mut popularity = None;
        if let Some((counts, usage)) = &self.popularity {
            let count = |it: ItemId| {
                let n = counts.get(it.index()).copied().unwrap_or(0);
                if Some(it) == target {
                    n.saturating_sub(1)
                } else {
                    n
                }
            };
            if usage.order {
                // Stable: equal counts keep the shuffled order.
                candidates.sort_by_key(|&it| std::cmp::Reverse(count(it)));
            }
            if usage.show {
                popularity = Some(candidates.iter().map(|&it| count(it)).collect());
            }
        }
        Ok(CandidatePrompt {
            user,
            history: recent
                .iter()
                .map(|&it| self.title(user, it))
                .collect::<Result<_>>()?,
            history_items: history.to_vec(),
            candidates: candidates
                .into_iter()
                .map(|it| Ok((it, self.title(user, it)?)))
                .collect::<Result<_>>()?,
            rationale,
            popularity,
        })
    }

    /// `n` distinct items drawn uniformly from the items `user` never interacted with (`seen`).
    fn uniform_negatives(
        &self,
        user: UserId,
        seen: &HashSet<ItemId>,
        n: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<ItemId>> {
        let n_items = self.dataset.n_items();
        if n_items < seen.len() + n {
            return Err(SftError::Data {
                user,
                message: format!(
                    "{n} negatives requested but only {} items were never bought",
                    n_items.saturating_sub(seen.len())
                ),
            });
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let item = ItemId(rng.random_range(1..=n_items as u32));
            if !seen.contains(&item) && !out.contains(&item) {
                out.push(item);
            }
        }
        Ok(out)
    }

    /// The placebo's rationales: the users of `users` that would train with a rationale (a last
    /// training item and a non-blank text in `rationales`), each given the text of another of
    /// them. The users are shuffled by the seed and each takes the next one's text around the
    /// cycle, so no user keeps their own and every text is used once.
    ///
    /// # Errors
    /// [`SftError::Config`] when fewer than two users have a rationale to swap.
    pub fn placebo_rationales(
        &self,
        users: &[UserId],
        rationales: &HashMap<UserId, String>,
    ) -> Result<HashMap<UserId, String>> {
        let mut donors: Vec<(UserId, &str)> = users
            .iter()
            .filter(|u| u.index() < self.dataset.n_users())
            .filter(|&&u| self.split.target(u, Target::LastTrain).is_some())
            .filter_map(|&u| {
                let text = rationales
                    .get(&u)
                    .map(|r| r.trim())
                    .filter(|r| !r.is_empty())?;
                Some((u, text))
            })
            .collect();
        donors.sort_unstable_by_key(|(u, _)| *u);
        donors.dedup_by_key(|(u, _)| *u);
        if donors.len() < 2 {
            return Err(SftError::config(
                "rationales",
                format!(
                    "the placebo needs at least two users with a rationale to swap, found {}",
                    donors.len()
                ),
            ));
        }
        donors.shuffle(&mut rng_for(self.config.seed, Stream::Placebo, 0));
        Ok((0..donors.len())
            .map(|i| (donors[i].0, donors[(i + 1) % donors.len()].1.to_string()))
            .collect())
    }

    /// Training examples for `users` (in that order).
    ///
    /// `rationales` must be given for the rationale variants (and is ignored for
    /// [`Variant::NoRationale`]); a user without a non-empty rationale is skipped and listed in
    /// [`TrainingSet::skipped_no_rationale`], never given another user's text or none. For
    /// [`Variant::ShuffledReasons`] the same users train, each with the rationale of another of
    /// them ([`ExampleBuilder::placebo_rationales`]).
    pub fn training_set(
        &self,
        variant: Variant,
        users: &[UserId],
        rationales: Option<&HashMap<UserId, String>>,
    ) -> Result<TrainingSet> {
        let placebo;
        let rationales = match (variant.uses_rationale(), rationales) {
            (true, None) => {
                return Err(SftError::config(
                    "rationales",
                    format!("variant {variant} needs a rationale per user"),
                ));
            }
            (true, Some(map)) if variant == Variant::ShuffledReasons => {
                placebo = self.placebo_rationales(users, map)?;
                Some(&placebo)
            }
            (true, r) => r,
            (false, _) => None,
        };
        let negatives = CandidateSets::generate(
            self.dataset,
            &self.split,
            Target::LastTrain,
            &CandidateConfig::uniform(self.config.train_candidates - 1, self.config.seed),
        )?;
        let mut set = TrainingSet {
            variant,
            examples: Vec::new(),
            skipped_no_rationale: Vec::new(),
            skipped_no_target: Vec::new(),
        };
        for &user in users {
            if user.index() >= self.dataset.n_users() {
                return Err(SftError::Data {
                    user,
                    message: format!("not in the data set ({} users)", self.dataset.n_users()),
                });
            }
            let Some(target) = self.split.target(user, Target::LastTrain) else {
                set.skipped_no_target.push(user);
                continue;
            };
            let rationale = match rationales {
                Some(map) => match map.get(&user).map(|r| r.trim()).filter(|r| !r.is_empty()) {
                    Some(r) => Some(r.to_string()),
                    None => {
                        set.skipped_no_rationale.push(user);
                        continue;
                    }
                },
                None => None,
            };
            // `generate` drew a set for every user with a last training item, positive first.
            let candidates = negatives.get(user).ok_or_else(|| SftError::Data {
                user,
                message: "no training candidates were drawn".into(),
            })?;
            // The auxiliary variant learns the rationale beside the prompt, not from it.
            let (rationale, auxiliary) = match variant {
                Variant::AuxiliaryReasons => (None, rationale),
                _ => (rationale, None),
            };
            let prompt = self.prompt(
                user,
                self.split.history_before(user, Target::LastTrain),
                Some(target),
                candidates.to_vec(),
                rng_for(self.config.seed, Stream::TrainOrder, user.0),
                rationale,
            )?;
            set.examples.push(SftExample {
                prompt,
                target,
                auxiliary,
                prior: Vec::new(),
            });
            // Earlier positions: the k-th training item from the end, with the items before it
            // and fresh negatives from one stream per user (drawn in order of k).
            let train = self.split.train(user);
            let mut rng = rng_for(self.config.seed, Stream::EarlierNegatives, user.0);
            let seen: HashSet<ItemId> = match self.config.train_positions {
                1 => HashSet::new(),
                _ => self
                    .dataset
                    .sequences
                    .items_of(user)
                    .iter()
                    .copied()
                    .collect(),
            };
            for k in 1..self.config.train_positions {
                let Some(end) = train.len().checked_sub(1 + k).filter(|&e| e >= 1) else {
                    break;
                };
                let target = train[end];
                let mut candidates = vec![target];
                candidates.extend(self.uniform_negatives(
                    user,
                    &seen,
                    self.config.train_candidates - 1,
                    &mut rng,
                )?);
                let order = ChaCha8Rng::seed_from_u64(rng.next_u64());
                let prompt =
                    self.prompt(user, &train[..end], Some(target), candidates, order, None)?;
                set.examples.push(SftExample {
                    prompt,
                    target,
                    auxiliary: None,
                    prior: Vec::new(),
                });
            }
        }
        if !set.skipped_no_rationale.is_empty() {
            tracing::warn!(
                variant = variant.name(),
                skipped = set.skipped_no_rationale.len(),
                "users without a rationale were skipped"
            );
        }
        tracing::info!(
            variant = variant.name(),
            examples = set.examples.len(),
            "training examples built"
        );
        Ok(set)
    }

    /// The titles of `user`'s training items (everything before the valid item, or the whole
    /// sequence for a user without one), oldest first, as prompts show them: the input of
    /// [`crate::tokenize::encode_sequence`].
    pub fn training_titles(&self, user: UserId) -> Result<Vec<String>> {
        if user.index() >= self.dataset.n_users() {
            return Err(SftError::Data {
                user,
                message: format!("not in the data set ({} users)", self.dataset.n_users()),
            });
        }
        self.split
            .train(user)
            .iter()
            .map(|&item| self.title(user, item))
            .collect()
    }

    /// Draws the stored-style candidate sets for the test item: `n_candidates - 1` uniform
    /// negatives per evaluation user, seeded by the builder's seed (the same sets
    /// `pulserec_data::PreparedDataset` stores for these settings).
    pub fn test_candidates(&self, n_candidates: usize) -> Result<CandidateSets> {
        if n_candidates < 2 {
            return Err(SftError::config(
                "candidates",
                format!("{n_candidates} < 2: a choice needs a negative"),
            ));
        }
        Ok(CandidateSets::generate(
            self.dataset,
            &self.split,
            Target::Test,
            &CandidateConfig::uniform(n_candidates - 1, self.config.seed),
        )?)
    }

    /// Test cases for `users` from stored candidate sets (positive first, as
    /// `pulserec_data` stores them); the history is everything before the sets' target, of which
    /// the prompt shows the last `test_history` titles. No rationale.
    pub fn test_cases(&self, users: &[UserId], sets: &CandidateSets) -> Result<Vec<SftExample>> {
        users
            .iter()
            .map(|&user| {
                let candidates = sets.get(user).ok_or_else(|| SftError::Data {
                    user,
                    message: format!("no stored {} candidate set", sets.target.name()),
                })?;
                let prompt = self.prompt(
                    user,
                    self.split.history_before(user, sets.target),
                    None,
                    candidates.to_vec(),
                    rng_for(self.config.seed, Stream::TestOrder, user.0),
                    None,
                )?;
                Ok(SftExample {
                    prompt,
                    target: candidates[0],
                    auxiliary: None,
                    prior: Vec::new(),
                })
            })
            .collect()
    }
}

/// `n` evaluation users (with valid and test items) not in `exclude`: the first `n` of a seeded
/// shuffle of all evaluation users that are not excluded, returned in id order. Fewer are returned when fewer exist.
pub fn choose_test_users(
    split: &LeaveOneOut<'_>,
    exclude: &HashSet<UserId>,
    n: usize,
    seed: u64,
) -> Vec<UserId> {
    // Shuffle first, exclude after: two calls whose exclusions differ by a few users then
    // share almost all their test users.
    let mut pool: Vec<UserId> = split.eval_users().collect();
    pool.shuffle(&mut rng_for(seed, Stream::TestUsers, 0));
    let mut chosen: Vec<UserId> = pool
        .into_iter()
        .filter(|u| !exclude.contains(u))
        .take(n)
        .collect();
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variant_has_one_name_and_the_old_spelling_still_reads() {
        for v in Variant::ALL {
            assert_eq!(v.name().parse::<Variant>().unwrap(), v);
            assert_eq!(v.name().replace('-', "_").parse::<Variant>().unwrap(), v);
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(json, format!("\"{}\"", v.name()));
            let old = format!("\"{}\"", v.name().replace('-', "_"));
            assert_eq!(serde_json::from_str::<Variant>(&old).unwrap(), v);
        }
        let err = "pulse-ish".parse::<Variant>().unwrap_err().to_string();
        assert!(
            err.contains("variant") && err.contains("pulse-ish"),
            "{err}"
        );
    }
}
