//! Dense user and item identifiers.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A dense user index, `0..n_users`, assigned by the data layer in order of first appearance.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct UserId(pub u32);

/// A dense item index. `ItemId::PAD` (0) is reserved for padding; real items are `1..=n_items`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct ItemId(pub u32);

impl ItemId {
    /// The padding id; never a real item.
    pub const PAD: ItemId = ItemId(0);

    /// Whether this is the padding id.
    pub fn is_pad(self) -> bool {
        self.0 == 0
    }

    /// The id as a `usize` index (into embedding tables and catalog arrays).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl UserId {
    /// The id as a `usize` index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "u{}", self.0)
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}
