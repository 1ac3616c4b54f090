//! Count filters: the paper code's single pass and the iterative k-core.

use crate::dataset::Dataset;

/// Which interactions survive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// One pass, as in the PULSE code: counts are taken once on the input, then interactions of
    /// users with fewer than `min_user` or items with fewer than `min_item` interactions are
    /// dropped. Survivors may fall below the thresholds afterwards.
    MinCount {
        /// Fewest interactions a user needs.
        min_user: usize,
        /// Fewest interactions an item needs.
        min_item: usize,
    },
    /// Iterative k-core: repeat the pass until every remaining user and item meets its
    /// threshold.
    KCore {
        /// Fewest interactions a user needs.
        min_user: usize,
        /// Fewest interactions an item needs.
        min_item: usize,
    },
    /// Drops interactions with items whose title is empty.
    Titled,
}

impl Dataset {
    /// Applies a filter and renumbers users and items compactly (order preserved).
    pub fn filter(&self, filter: Filter) -> Dataset {
        let items = self.sequences.items();
        let mut keep = vec![true; items.len()];
        match filter {
            Filter::MinCount { min_user, min_item } => {
                one_pass(self, &mut keep, min_user, min_item);
            }
            Filter::KCore { min_user, min_item } => {
                let mut rounds = 0;
                while one_pass(self, &mut keep, min_user, min_item) {
                    rounds += 1;
                }
                tracing::debug!(rounds, "k-core converged");
            }
            Filter::Titled => {
                for (k, it) in keep.iter_mut().zip(items) {
                    *k = self.catalog.title(*it).is_some_and(|t| !t.is_empty());
                }
            }
        }
        let out = self.retain(&keep);
        tracing::info!(
            ?filter,
            users = out.n_users(),
            items = out.n_items(),
            interactions = out.n_interactions(),
            "filtered"
        );
        out
    }
}

/// One counting pass over the kept interactions; returns whether anything was dropped.
fn one_pass(ds: &Dataset, keep: &mut [bool], min_user: usize, min_item: usize) -> bool {
    let items = ds.sequences.items();
    let offsets = ds.sequences.offsets();
    let mut item_count = vec![0usize; ds.n_items() + 1];
    let mut user_count = vec![0usize; ds.n_users()];
    for u in 0..ds.n_users() {
        for p in offsets[u]..offsets[u + 1] {
            if keep[p] {
                user_count[u] += 1;
                item_count[items[p].index()] += 1;
            }
        }
    }
    let mut dropped = false;
    for u in 0..ds.n_users() {
        for p in offsets[u]..offsets[u + 1] {
            if keep[p] && (user_count[u] < min_user || item_count[items[p].index()] < min_item) {
                keep[p] = false;
                dropped = true;
            }
        }
    }
    dropped
}
