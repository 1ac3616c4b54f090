//! One raw interaction, as a user's own code would hand it over.

use serde::{Deserialize, Serialize};

/// A user-item event with the source's own (string) ids and whatever the source recorded.
///
/// The data layer turns a stream of these into dense ids and chronological sequences
/// (`pulserec_data::Dataset::from_interactions`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Interaction {
    /// The user's id in the source.
    pub user: String,
    /// The item's id in the source.
    pub item: String,
    /// Rating, when the source has one (finite, non-negative).
    pub rating: Option<f32>,
    /// Unix time in seconds, when the source has one.
    pub timestamp: Option<i64>,
    /// Review text, when the source has one.
    pub review: Option<String>,
}

impl Interaction {
    /// An event with ids only.
    pub fn new(user: impl Into<String>, item: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            item: item.into(),
            ..Self::default()
        }
    }
}
