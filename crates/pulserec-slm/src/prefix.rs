//! The keys and values of recent prompts, so that a prompt which starts like an earlier one
//! skips the prefill of the part they share.
//!
//! Tree-of-Thought asks for the next thought of a chain with a prompt that repeats the user's
//! whole context and adds the chain so far: at depths 2 and 3 nearly all of a prompt was
//! already run at depth 1. The store keeps each prefilled prompt's cache (one row, no padding)
//! and hands out the longest stored prefix of a new prompt; least recently used entries go
//! first when the slot budget is full.

use crate::cache::KvCache;

/// Shorter shared prefixes are prefilled again: copying their slots would save little.
pub(crate) const MIN_REUSE: usize = 16;

struct Entry {
    tokens: Vec<u32>,
    kv: KvCache,
    last_use: u64,
}

/// Prompt caches by their tokens, within a budget of cache slots.
pub(crate) struct PrefixStore {
    entries: Vec<Entry>,
    budget: usize,
    used: usize,
    clock: u64,
}

impl PrefixStore {
    /// A store holding at most `budget` slots (0: stores nothing).
    pub(crate) fn new(budget: usize) -> Self {
        Self {
            entries: Vec::new(),
            budget,
            used: 0,
            clock: 0,
        }
    }

    /// The stored cache sharing the longest prefix with `prompt` and that prefix's length,
    /// capped at `prompt.len() - 1` (the last token is always run, for its logits), if it is
    /// at least [`MIN_REUSE`] tokens. Marks the entry as used.
    pub(crate) fn longest(&mut self, prompt: &[u32]) -> Option<(KvCache, usize)> {
        let (best, n) = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let lcp = e
                    .tokens
                    .iter()
                    .zip(prompt)
                    .take_while(|(a, b)| a == b)
                    .count();
                (i, lcp.min(prompt.len().saturating_sub(1)))
            })
            .max_by_key(|&(i, n)| (n, std::cmp::Reverse(i)))?;
        if n < MIN_REUSE {
            return None;
        }
        self.clock += 1;
        self.entries[best].last_use = self.clock;
        Some((self.entries[best].kv.clone(), n))
    }

    /// Whether [`PrefixStore::insert`] would keep `tokens` (callers skip building the cache of
    /// a prompt that would be refused).
    pub(crate) fn would_keep(&self, tokens: &[u32]) -> bool {
        !tokens.is_empty()
            && tokens.len() <= self.budget
            && !self.entries.iter().any(|e| e.tokens.starts_with(tokens))
    }

    /// Keeps `kv`, the one-row cache of `tokens` without hidden slots. An entry whose tokens
    /// are a prefix of `tokens` is replaced; nothing is stored if `tokens` is a prefix of an
    /// entry or larger than the whole budget.
    pub(crate) fn insert(&mut self, tokens: Vec<u32>, kv: KvCache) {
        let n = tokens.len();
        if !self.would_keep(&tokens) || kv.len() != n || kv.batch() != 1 {
            return;
        }
        self.entries.retain(|e| !tokens.starts_with(&e.tokens));
        self.used = self.entries.iter().map(|e| e.tokens.len()).sum();
        while self.used + n > self.budget {
            let Some(oldest) = (0..self.entries.len()).min_by_key(|&i| self.entries[i].last_use)
            else {
                break;
            };
            self.used -= self.entries.swap_remove(oldest).tokens.len();
        }
        self.clock += 1;
        self.used += n;
        self.entries.push(Entry {
            tokens,
            kv,
            last_use: self.clock,
        });
    }

    /// Stored slots.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(first: u32, n: usize) -> Vec<u32> {
        (first..first + n as u32).collect()
    }

    fn put(store: &mut PrefixStore, t: Vec<u32>) {
        let n = t.len();
        store.insert(t, KvCache::placeholder(n));
    }

    #[test]
    fn the_longest_shared_prefix_is_found_and_short_ones_are_not_reused() {
        let mut store = PrefixStore::new(1000);
        put(&mut store, tokens(0, 40));
        put(
            &mut store,
            tokens(0, 20).into_iter().chain(tokens(500, 20)).collect(),
        );
        let prompt: Vec<u32> = tokens(0, 30).into_iter().chain(tokens(900, 5)).collect();
        assert_eq!(store.longest(&prompt).map(|(_, n)| n), Some(30));
        // The whole prompt stored: all but its last token are reused.
        assert_eq!(store.longest(&tokens(0, 40)).map(|(_, n)| n), Some(39));
        assert!(store.longest(&tokens(0, MIN_REUSE)).is_none());
        assert!(store.longest(&tokens(7, 40)).is_none());
    }

    #[test]
    fn prefixes_are_replaced_and_the_least_recently_used_entry_goes_first() {
        let mut store = PrefixStore::new(100);
        put(&mut store, tokens(0, 20));
        put(&mut store, tokens(0, 30));
        assert_eq!(
            store.used(),
            30,
            "an entry that is a prefix of a new one is replaced"
        );
        put(&mut store, tokens(0, 25));
        assert_eq!(store.used(), 30, "a prefix of an entry adds nothing");
        put(&mut store, tokens(100, 30));
        put(&mut store, tokens(200, 30));
        assert!(store.longest(&tokens(0, 31)).is_some());
        put(&mut store, tokens(300, 30));
        assert_eq!(store.used(), 90);
        assert!(
            store.longest(&tokens(100, 31)).is_none(),
            "the oldest unused entry went"
        );
        assert!(store.longest(&tokens(0, 31)).is_some());
        put(&mut store, tokens(400, 101));
        assert_eq!(store.used(), 90, "larger than the budget: not kept");
        let mut none = PrefixStore::new(0);
        put(&mut none, tokens(0, 30));
        assert!(none.longest(&tokens(0, 31)).is_none());
    }
}
