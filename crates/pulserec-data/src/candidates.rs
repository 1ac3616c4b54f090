//! Fixed candidate sets: one positive and N negatives the user never interacted with.
//!
//! Sets are generated once, seeded, and stored with the prepared data set, so every stage and
//! every rerun evaluates on exactly the same candidates. Each user's draw uses its own RNG seeded
//! from `(seed, target, user)`, so a user's set does not depend on which other users are drawn.

use pulserec_core::{ItemId, Sequences, UserId};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;
use crate::error::{DataError, Result};
use crate::split::{LeaveOneOut, Target};

/// How negatives are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sampling {
    /// Every item the user never interacted with is equally likely.
    Uniform,
    /// Items are drawn in proportion to their interaction count in the whole data set.
    Popularity,
}

/// Settings of a candidate set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateConfig {
    /// Negatives per user (the paper's SFT test uses 4, its SASRec evaluation 100).
    pub n_negatives: usize,
    /// Uniform or popularity-weighted negatives.
    pub sampling: Sampling,
    /// RNG seed.
    pub seed: u64,
}

impl CandidateConfig {
    /// `n_negatives` uniform negatives with `seed`.
    pub fn uniform(n_negatives: usize, seed: u64) -> Self {
        Self {
            n_negatives,
            sampling: Sampling::Uniform,
            seed,
        }
    }
}

/// Candidate lists for every evaluation user: positive first, then the negatives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidateSets {
    /// Which position the positive is.
    pub target: Target,
    /// How the negatives were drawn.
    pub config: CandidateConfig,
    users: Vec<UserId>,
    /// `items[offsets[k]..offsets[k + 1]]` belongs to `users[k]`.
    offsets: Vec<usize>,
    items: Vec<ItemId>,
}

/// One user's seed: SplitMix64 over the three inputs. Stored candidate lists depend on these
/// exact values (`tests` pins one).
fn mix(seed: u64, target: Target, user: UserId) -> u64 {
    use pulserec_core::seed::{GOLDEN, splitmix64};
    splitmix64(seed ^ ((user.0 as u64) << 2 | target as u64).wrapping_mul(GOLDEN))
}

impl CandidateSets {
    /// Draws candidates for every user that has an item at `target`.
    pub fn generate(
        dataset: &Dataset,
        split: &LeaveOneOut<'_>,
        target: Target,
        config: &CandidateConfig,
    ) -> Result<Self> {
        if config.n_negatives == 0 {
            return Err(DataError::Config {
                field: "n_negatives",
                message: "must be at least 1".into(),
            });
        }
        let n_items = dataset.n_items();
        let counts = item_counts(&dataset.sequences, n_items);
        let cumulative: Vec<f64> = counts
            .iter()
            .scan(0.0, |acc, &c| {
                *acc += c as f64;
                Some(*acc)
            })
            .collect();
        let mut out = Self {
            target,
            config: config.clone(),
            users: Vec::new(),
            offsets: vec![0],
            items: Vec::new(),
        };
        let mut seen = vec![false; n_items + 1];
        for u in 0..dataset.n_users() as u32 {
            let user = UserId(u);
            let Some(positive) = split.target(user, target) else {
                continue;
            };
            let history = dataset.sequences.items_of(user);
            for it in history {
                seen[it.index()] = true;
            }
            let drawn = draw(
                &mut seen,
                &counts,
                &cumulative,
                config,
                mix(config.seed, target, user),
            );
            for it in history {
                seen[it.index()] = false;
            }
            let negatives = drawn.map_err(|available| DataError::NotEnoughNegatives {
                user: dataset.user_ids[user.index()].clone(),
                available,
                requested: config.n_negatives,
            })?;
            out.users.push(user);
            out.items.push(positive);
            out.items.extend(negatives);
            out.offsets.push(out.items.len());
        }
        tracing::info!(
            users = out.users.len(),
            target = target.name(),
            n = config.n_negatives,
            "candidates drawn"
        );
        Ok(out)
    }

    /// Rebuilds stored sets (used when reading them back).
    pub(crate) fn from_parts(
        target: Target,
        config: CandidateConfig,
        users: Vec<UserId>,
        offsets: Vec<usize>,
        items: Vec<ItemId>,
    ) -> Self {
        Self {
            target,
            config,
            users,
            offsets,
            items,
        }
    }

    /// The user's candidates, positive first.
    pub fn get(&self, user: UserId) -> Option<&[ItemId]> {
        let k = self.users.binary_search(&user).ok()?;
        Some(&self.items[self.offsets[k]..self.offsets[k + 1]])
    }

    /// Users with a candidate set, in id order.
    pub fn users(&self) -> &[UserId] {
        &self.users
    }

    /// Iterates over `(user, candidates)`.
    pub fn iter(&self) -> impl Iterator<Item = (UserId, &[ItemId])> {
        self.users
            .iter()
            .enumerate()
            .map(|(k, &u)| (u, &self.items[self.offsets[k]..self.offsets[k + 1]]))
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether no user has a set.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Flat offsets (`len() + 1` entries).
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// Flat candidate items.
    pub fn items(&self) -> &[ItemId] {
        &self.items
    }
}

/// Interaction count per item id (index 0, padding, stays 0).
pub fn item_counts(sequences: &Sequences, n_items: usize) -> Vec<u64> {
    let mut counts = vec![0u64; n_items + 1];
    for it in sequences.items() {
        counts[it.index()] += 1;
    }
    counts
}

/// Draws `n_negatives` distinct items with `seen[item] == false`; on failure returns how many
/// items were available. `seen` is restored before returning.
fn draw(
    seen: &mut [bool],
    counts: &[u64],
    cumulative: &[f64],
    config: &CandidateConfig,
    seed: u64,
) -> Result<Vec<ItemId>, usize> {
    let n_items = seen.len() - 1;
    let eligible = |i: usize, seen: &[bool]| {
        !seen[i] && (config.sampling == Sampling::Uniform || counts[i] > 0)
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut drawn = Vec::with_capacity(config.n_negatives);
    // Rejection sampling is fast while most items are eligible; give up after a bounded number
    // of tries and fall back to an exact method over the eligible items.
    let mut tries = 0;
    let total = cumulative.last().copied().unwrap_or(0.0);
    while drawn.len() < config.n_negatives && tries < 50 * config.n_negatives + 100 {
        tries += 1;
        let i = match config.sampling {
            Sampling::Uniform => rng.random_range(1..=n_items),
            Sampling::Popularity => {
                let x = rng.random::<f64>() * total;
                cumulative.partition_point(|&c| c <= x).min(n_items)
            }
        };
        if i >= 1 && eligible(i, seen) {
            seen[i] = true;
            drawn.push(ItemId(i as u32));
        }
    }
    if drawn.len() < config.n_negatives {
        let pool: Vec<usize> = (1..=n_items).filter(|&i| eligible(i, seen)).collect();
        if drawn.len() + pool.len() < config.n_negatives {
            for it in &drawn {
                seen[it.index()] = false;
            }
            return Err(drawn.len() + pool.len());
        }
        // Weighted sampling without replacement by exponential keys (Efraimidis-Spirakis); with
        // equal weights this is a uniform draw.
        let mut keyed: Vec<(f64, usize)> = pool
            .into_iter()
            .map(|i| {
                let w = if config.sampling == Sampling::Uniform {
                    1.0
                } else {
                    counts[i] as f64
                };
                let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
                (u.ln() / w, i)
            })
            .collect();
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
        for &(_, i) in keyed.iter().take(config.n_negatives - drawn.len()) {
            seen[i] = true;
            drawn.push(ItemId(i as u32));
        }
    }
    for it in &drawn {
        seen[it.index()] = false;
    }
    Ok(drawn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-user seeds behind every stored candidate list (values of the formula before it
    /// moved to `pulserec_core::seed`, computed independently in Python).
    #[test]
    fn user_seeds_are_pinned() {
        assert_eq!(mix(2024, Target::Test, UserId(7)), 0x5144_1f49_be43_6ecc);
        assert_eq!(mix(2024, Target::Valid, UserId(7)), 0xfde2_1c30_524d_e8c0);
    }
}
