//! Leave-one-out splits.

use pulserec_core::{ItemId, Sequences, UserId};
use serde::{Deserialize, Serialize};

/// Which held-out position a candidate set or an evaluation targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    /// The last item of the training part (the "chosen item" of stage-1 prompts and SFT
    /// training examples).
    LastTrain,
    /// The second-to-last item.
    Valid,
    /// The last item.
    Test,
}

impl Target {
    /// A short name (`last_train`, `valid`, `test`).
    pub fn name(self) -> &'static str {
        match self {
            Self::LastTrain => "last_train",
            Self::Valid => "valid",
            Self::Test => "test",
        }
    }

    /// Parses [`Target::name`].
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "last_train" => Some(Self::LastTrain),
            "valid" => Some(Self::Valid),
            "test" => Some(Self::Test),
            _ => None,
        }
    }
}

/// Leave-one-out over chronological sequences: the last item is test, the second-to-last valid,
/// the rest train. Users with fewer than 3 items are train-only (no valid/test item).
///
/// The split is a view: `train(u)` is a slice of the sequence, nothing is copied.
#[derive(Clone, Copy, Debug)]
pub struct LeaveOneOut<'a> {
    sequences: &'a Sequences,
}

/// Fewest items a user needs to have a valid and a test item.
pub const MIN_EVAL_LEN: usize = 3;

impl<'a> LeaveOneOut<'a> {
    /// The split of these sequences.
    pub fn new(sequences: &'a Sequences) -> Self {
        Self { sequences }
    }

    fn items(&self, user: UserId) -> &'a [ItemId] {
        self.sequences.items_of(user)
    }

    /// Whether the user has valid and test items.
    pub fn is_eval_user(&self, user: UserId) -> bool {
        self.items(user).len() >= MIN_EVAL_LEN
    }

    /// Training items, oldest first: all but the last two for evaluation users, everything
    /// otherwise.
    pub fn train(&self, user: UserId) -> &'a [ItemId] {
        let s = self.items(user);
        if s.len() >= MIN_EVAL_LEN {
            &s[..s.len() - 2]
        } else {
            s
        }
    }

    /// Items before the valid item (train), or before the test item (train + valid).
    pub fn history_before(&self, user: UserId, target: Target) -> &'a [ItemId] {
        let s = self.items(user);
        match target {
            Target::LastTrain => {
                let t = self.train(user);
                &t[..t.len().saturating_sub(1)]
            }
            Target::Valid => self.train(user),
            Target::Test if s.len() >= MIN_EVAL_LEN => &s[..s.len() - 1],
            Target::Test => s,
        }
    }

    /// The second-to-last item of evaluation users.
    pub fn valid(&self, user: UserId) -> Option<ItemId> {
        let s = self.items(user);
        (s.len() >= MIN_EVAL_LEN).then(|| s[s.len() - 2])
    }

    /// The last item of evaluation users.
    pub fn test(&self, user: UserId) -> Option<ItemId> {
        let s = self.items(user);
        (s.len() >= MIN_EVAL_LEN).then(|| s[s.len() - 1])
    }

    /// The item at `target`: valid/test for evaluation users, the last training item for any
    /// user with at least 2 training items.
    pub fn target(&self, user: UserId, target: Target) -> Option<ItemId> {
        match target {
            Target::Valid => self.valid(user),
            Target::Test => self.test(user),
            Target::LastTrain => {
                let t = self.train(user);
                (t.len() >= 2).then(|| t[t.len() - 1])
            }
        }
    }

    /// Users with valid and test items, in id order.
    pub fn eval_users(&self) -> impl Iterator<Item = UserId> + 'a {
        let s = self.sequences;
        (0..s.n_users() as u32)
            .map(UserId)
            .filter(move |&u| s.items_of(u).len() >= MIN_EVAL_LEN)
    }

    /// The sequences this split views.
    pub fn sequences(&self) -> &'a Sequences {
        self.sequences
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_users_are_train_only() {
        let s = Sequences::from_parts(
            vec![0, 2, 6],
            [1, 2, 3, 4, 5, 6].map(ItemId).to_vec(),
            None,
            None,
            None,
        )
        .unwrap();
        let split = LeaveOneOut::new(&s);
        assert_eq!(split.train(UserId(0)), &[ItemId(1), ItemId(2)]);
        assert_eq!(split.valid(UserId(0)), None);
        assert_eq!(split.train(UserId(1)), &[ItemId(3), ItemId(4)]);
        assert_eq!(split.valid(UserId(1)), Some(ItemId(5)));
        assert_eq!(split.test(UserId(1)), Some(ItemId(6)));
        assert_eq!(
            split.history_before(UserId(1), Target::Test),
            &[ItemId(3), ItemId(4), ItemId(5)]
        );
        assert_eq!(split.target(UserId(1), Target::LastTrain), Some(ItemId(4)));
        assert_eq!(
            split.history_before(UserId(1), Target::LastTrain),
            &[ItemId(3)]
        );
        assert_eq!(split.eval_users().collect::<Vec<_>>(), vec![UserId(1)]);
    }
}
