//! Behaviour text: how "what the user did" becomes the behaviour encoder's input.

use pulserec_core::{HistoryEntry, UserContext};
use serde::{Deserialize, Serialize};

/// A configurable rendering of a user's history and chosen item.
///
/// The default gives e.g.
/// `History: Halo 3 (rated 5); Portal 2 (rated 4: "clever puzzles"). Chosen: Portal`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BehaviourRenderer {
    /// Keep only the most recent `max_history` items (the encoder truncates long inputs anyway,
    /// so the freshest items must come through).
    pub max_history: usize,
    /// Show ratings when the data has them.
    pub include_ratings: bool,
    /// Show reviews when the data has them.
    pub include_reviews: bool,
    /// Cut each review after this many characters.
    pub max_review_chars: usize,
    /// Text before the history.
    pub history_prefix: String,
    /// Text before the chosen item.
    pub target_prefix: String,
}

impl Default for BehaviourRenderer {
    fn default() -> Self {
        Self {
            max_history: 10,
            include_ratings: true,
            include_reviews: true,
            max_review_chars: 100,
            history_prefix: "History: ".into(),
            target_prefix: "Chosen: ".into(),
        }
    }
}

impl BehaviourRenderer {
    /// The behaviour text of a user: history (+ ratings/reviews) and, when known, the chosen item.
    pub fn render(&self, context: &UserContext) -> String {
        let start = context.history.len().saturating_sub(self.max_history);
        let items: Vec<String> = context.history[start..]
            .iter()
            .map(|e| self.entry(e))
            .collect();
        let mut out = format!("{}{}", self.history_prefix, items.join("; "));
        if let Some(target) = &context.target {
            out.push_str(". ");
            out.push_str(&self.target_prefix);
            out.push_str(target.title.trim());
        }
        out
    }

    fn entry(&self, e: &HistoryEntry) -> String {
        let mut s = e.title.trim().to_string();
        let rating = e.rating.filter(|_| self.include_ratings);
        let review = e
            .review
            .as_deref()
            .map(str::trim)
            .filter(|r| self.include_reviews && !r.is_empty())
            .map(|r| truncate_chars(r, self.max_review_chars));
        match (rating, review) {
            (Some(r), Some(text)) => s.push_str(&format!(" (rated {r}: \"{text}\")")),
            (Some(r), None) => s.push_str(&format!(" (rated {r})")),
            (None, Some(text)) => s.push_str(&format!(" (\"{text}\")")),
            (None, None) => {}
        }
        s
    }
}

fn truncate_chars(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulserec_core::{ItemId, UserId};

    fn entry(title: &str, rating: Option<f32>, review: Option<&str>) -> HistoryEntry {
        HistoryEntry {
            item: ItemId(1),
            title: title.into(),
            rating,
            review: review.map(Into::into),
        }
    }

    #[test]
    fn renders_history_ratings_reviews_and_choice() {
        let ctx = UserContext {
            user: UserId(3),
            history: vec![
                entry("Old", None, None),
                entry("Halo 3", Some(5.0), None),
                entry("Portal 2", Some(4.0), Some("clever puzzles and very funny")),
            ],
            target: Some(entry("Portal", None, None)),
            similar_items: vec![],
        };
        let r = BehaviourRenderer {
            max_history: 2,
            max_review_chars: 14,
            ..Default::default()
        };
        assert_eq!(
            r.render(&ctx),
            "History: Halo 3 (rated 5); Portal 2 (rated 4: \"clever puzzles...\"). Chosen: Portal"
        );
        let plain = BehaviourRenderer {
            include_ratings: false,
            include_reviews: false,
            ..Default::default()
        };
        assert_eq!(
            plain.render(&ctx),
            "History: Old; Halo 3; Portal 2. Chosen: Portal"
        );
    }
}
