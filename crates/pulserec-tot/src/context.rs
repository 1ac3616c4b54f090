//! User contexts from a data set: what the prompts and scorers know about a user.

use pulserec_core::{HistoryEntry, ItemId, UserContext, UserId};
use pulserec_data::{Dataset, LeaveOneOut, Target, TextLimits};
use serde::{Deserialize, Serialize};

/// Builds [`UserContext`]s for rationale generation from a leave-one-out split.
///
/// The history is the training part before the last training item, and the target is the last
/// training item ([`Target::LastTrain`]): the valid and test items are never shown, so rationales
/// cannot leak the evaluation answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContextBuilder {
    /// Title and review lengths.
    pub limits: TextLimits,
    /// Keep only the most recent `max_history` history items.
    pub max_history: usize,
    /// Items taken from the end of each similar user's training history.
    pub items_per_similar_user: usize,
}

impl Default for ContextBuilder {
    fn default() -> Self {
        Self {
            limits: TextLimits::default(),
            max_history: 15,
            items_per_similar_user: 2,
        }
    }
}

impl ContextBuilder {
    /// The context of `user`, with items of `similar_users` (most similar first) for
    /// Tree-of-Thought prompts; `None` when the user has no target (fewer than two training
    /// items) or is unknown.
    pub fn context(
        &self,
        dataset: &Dataset,
        split: &LeaveOneOut<'_>,
        user: UserId,
        similar_users: &[UserId],
    ) -> Option<UserContext> {
        let target = split.target(user, Target::LastTrain)?;
        let history = split.history_before(user, Target::LastTrain);
        let start = history.len().saturating_sub(self.max_history);
        let history: Vec<HistoryEntry> = (start..history.len())
            .filter_map(|pos| self.entry(dataset, user, pos))
            .collect();
        let target_pos = split.train(user).len() - 1;
        let target = self
            .entry(dataset, user, target_pos)
            .filter(|e| e.item == target)?;
        let mut similar_items: Vec<HistoryEntry> = Vec::new();
        for &other in similar_users.iter().filter(|&&o| o != user) {
            let train = split.train(other);
            let from = train.len().saturating_sub(self.items_per_similar_user);
            for &item in train[from..].iter().rev() {
                let already = similar_items.iter().any(|e| e.item == item)
                    || history.iter().any(|e| e.item == item);
                if already {
                    continue;
                }
                if let Some(title) = self.limits.title(dataset, item) {
                    similar_items.push(HistoryEntry {
                        item,
                        title,
                        rating: None,
                        review: None,
                    });
                }
            }
        }
        Some(UserContext {
            user,
            history,
            target: Some(target),
            similar_items,
        })
    }

    /// The event at `pos` of `user`'s sequence as a history entry (title, rating, review).
    fn entry(&self, dataset: &Dataset, user: UserId, pos: usize) -> Option<HistoryEntry> {
        let view = dataset.sequences.get(user)?;
        let item: ItemId = *view.items.get(pos)?;
        Some(HistoryEntry {
            item,
            title: self.limits.title(dataset, item)?,
            rating: view.ratings.and_then(|r| r.get(pos).copied()),
            review: view
                .reviews
                .and_then(|r| r.get(pos))
                .and_then(|r| self.limits.review(r)),
        })
    }
}
