//! Per-user chronological sequences stored as offsets into one item array.

use serde::{Deserialize, Serialize};

use crate::ids::{ItemId, UserId};

/// Every user's interactions, oldest first, in one flat array.
///
/// User `u`'s events are `items[offsets[u]..offsets[u + 1]]`; ratings, timestamps and reviews,
/// when the source had them, are parallel arrays of the same length as `items`. Prefixes are
/// slices of these arrays, never copies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sequences {
    offsets: Vec<usize>,
    items: Vec<ItemId>,
    ratings: Option<Vec<f32>>,
    timestamps: Option<Vec<i64>>,
    reviews: Option<Vec<String>>,
}

/// One user's events, borrowed from [`Sequences`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SequenceView<'a> {
    /// The user.
    pub user: UserId,
    /// Items, oldest first.
    pub items: &'a [ItemId],
    /// Ratings parallel to `items`, when the source had them.
    pub ratings: Option<&'a [f32]>,
    /// Unix timestamps in seconds parallel to `items`, when the source had them.
    pub timestamps: Option<&'a [i64]>,
    /// Review texts parallel to `items` (empty where a review was absent).
    pub reviews: Option<&'a [String]>,
}

impl SequenceView<'_> {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the user has no events.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Why a set of parallel arrays does not form valid [`Sequences`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SequencesError {
    /// Offsets must start at 0, never decrease and end at the item count.
    #[error("offsets are not a monotone partition of {items} items")]
    BadOffsets {
        /// Number of items.
        items: usize,
    },
    /// A parallel array has another length than the item array.
    #[error("`{field}` has {len} entries but there are {items} items")]
    LengthMismatch {
        /// Which array.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The item count.
        items: usize,
    },
}

impl Sequences {
    /// Builds sequences from parts, checking that they are consistent.
    pub fn from_parts(
        offsets: Vec<usize>,
        items: Vec<ItemId>,
        ratings: Option<Vec<f32>>,
        timestamps: Option<Vec<i64>>,
        reviews: Option<Vec<String>>,
    ) -> Result<Self, SequencesError> {
        let n = items.len();
        let monotone = offsets.windows(2).all(|w| w[0] <= w[1]);
        if offsets.first() != Some(&0) || offsets.last() != Some(&n) || !monotone {
            return Err(SequencesError::BadOffsets { items: n });
        }
        let check = |field, len: Option<usize>| match len {
            Some(len) if len != n => Err(SequencesError::LengthMismatch {
                field,
                len,
                items: n,
            }),
            _ => Ok(()),
        };
        check("ratings", ratings.as_ref().map(Vec::len))?;
        check("timestamps", timestamps.as_ref().map(Vec::len))?;
        check("reviews", reviews.as_ref().map(Vec::len))?;
        Ok(Self {
            offsets,
            items,
            ratings,
            timestamps,
            reviews,
        })
    }

    /// Number of users.
    pub fn n_users(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Total number of interactions.
    pub fn n_interactions(&self) -> usize {
        self.items.len()
    }

    /// One user's events, or `None` when the id is out of range.
    pub fn get(&self, user: UserId) -> Option<SequenceView<'_>> {
        let u = user.index();
        let (start, end) = (*self.offsets.get(u)?, *self.offsets.get(u + 1)?);
        Some(SequenceView {
            user,
            items: &self.items[start..end],
            ratings: self.ratings.as_ref().map(|r| &r[start..end]),
            timestamps: self.timestamps.as_ref().map(|t| &t[start..end]),
            reviews: self.reviews.as_ref().map(|r| &r[start..end]),
        })
    }

    /// One user's items, oldest first (empty for an unknown user).
    pub fn items_of(&self, user: UserId) -> &[ItemId] {
        self.get(user).map(|v| v.items).unwrap_or(&[])
    }

    /// Iterates over all users in id order.
    pub fn iter(&self) -> impl Iterator<Item = SequenceView<'_>> {
        (0..self.n_users()).filter_map(|u| self.get(UserId(u as u32)))
    }

    /// The offsets array (`n_users + 1` entries).
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// The flat item array.
    pub fn items(&self) -> &[ItemId] {
        &self.items
    }

    /// The flat ratings array, when present.
    pub fn ratings(&self) -> Option<&[f32]> {
        self.ratings.as_deref()
    }

    /// The flat timestamps array, when present.
    pub fn timestamps(&self) -> Option<&[i64]> {
        self.timestamps.as_deref()
    }

    /// The flat reviews array, when present.
    pub fn reviews(&self) -> Option<&[String]> {
        self.reviews.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_are_slices_of_the_flat_arrays() {
        let s = Sequences::from_parts(
            vec![0, 2, 5],
            [3, 1, 2, 4, 5].map(ItemId).to_vec(),
            Some(vec![1.0, 2.0, 3.0, 4.0, 5.0]),
            None,
            None,
        )
        .unwrap();
        assert_eq!(s.n_users(), 2);
        let v = s.get(UserId(1)).unwrap();
        assert_eq!(v.items, &[ItemId(2), ItemId(4), ItemId(5)]);
        assert_eq!(v.ratings.unwrap(), &[3.0, 4.0, 5.0]);
        assert!(s.get(UserId(2)).is_none());
    }

    #[test]
    fn inconsistent_parts_are_refused() {
        let items = vec![ItemId(1); 3];
        assert!(Sequences::from_parts(vec![0, 2], items.clone(), None, None, None).is_err());
        assert!(Sequences::from_parts(vec![0, 3], items, Some(vec![1.0]), None, None).is_err());
    }
}
