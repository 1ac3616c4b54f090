//! Item and review text as shown in prompts.

use pulserec_core::ItemId;
use pulserec_core::text::{clean_title, truncate_chars};
use serde::{Deserialize, Serialize};

use crate::dataset::Dataset;

/// Length limits for text that goes into prompts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextLimits {
    /// Longest title, in characters (longer ones are cut at a word boundary with `…`).
    pub max_title_chars: usize,
    /// Longest review snippet, in characters.
    pub max_review_chars: usize,
}

impl Default for TextLimits {
    fn default() -> Self {
        Self {
            max_title_chars: 100,
            max_review_chars: 200,
        }
    }
}

impl TextLimits {
    /// The title of `item`, cleaned and truncated; `None` for unknown ids.
    pub fn title(&self, dataset: &Dataset, item: ItemId) -> Option<String> {
        dataset
            .catalog
            .title(item)
            .map(|t| truncate_chars(t, self.max_title_chars))
    }

    /// A review cleaned (HTML-unescaped, whitespace-normalised) and truncated; `None` if empty.
    pub fn review(&self, review: &str) -> Option<String> {
        let clean = clean_title(review);
        (!clean.is_empty()).then(|| truncate_chars(&clean, self.max_review_chars))
    }
}
