//! Prompt builders for hindsight rationales, Tree-of-Thought steps and the likelihood scorer of
//! Tree-of-Thought chains.
//!
//! A builder produces a [`Prompt`]: an optional system text and the user message. Turning that
//! into the model's input (its chat template, special tokens) is the generator's business, passed
//! in as a [`PromptFormat`]; nothing here knows any model's template. The wording is ours; every
//! change to it bumps [`PROMPT_VERSION`], which is stored with every output.

use pulserec_core::{HistoryEntry, UserContext};
use serde::{Deserialize, Serialize};

/// Version of the prompt wording, stored with every generated rationale. Bump it whenever a
/// builder's text changes, so stored outputs always say which prompt made them.
pub const PROMPT_VERSION: &str = "pulserec-tot/2";

/// One prompt: what the model is told, before chat templating.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    /// The system message, for models that take one.
    pub system: Option<String>,
    /// The user message.
    pub user: String,
    /// Text that opens the model's reply, appended after the chat template (see
    /// [`Prompt::render`]); the reply is read as this prefix followed by the generation. Small
    /// models follow a started JSON object far more reliably than an instruction to write one.
    #[serde(default)]
    pub answer_prefix: Option<String>,
}

impl Prompt {
    /// The text a generator completes: `format` applied to the prompt, then the answer prefix.
    pub fn render(&self, format: &PromptFormat) -> String {
        let mut text = format(self);
        if let Some(prefix) = &self.answer_prefix {
            text.push_str(prefix);
        }
        text
    }
}

/// Turns a [`Prompt`] into the text a generator completes (usually the model's chat template).
pub type PromptFormat = Box<dyn Fn(&Prompt) -> String + Send + Sync>;

/// A template-free rendering: the system text, a blank line, the user text and a newline.
///
/// Useful for tests and for raw completion models; instruction-tuned models should get their own
/// chat template instead.
pub fn plain_format(prompt: &Prompt) -> String {
    match &prompt.system {
        Some(system) => format!("{system}\n\n{}\n", prompt.user),
        None => format!("{}\n", prompt.user),
    }
}

/// What the prompts show of a user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptConfig {
    /// Show only the most recent `max_history` history items (the freshest matter most, and
    /// small models have short contexts).
    pub max_history: usize,
    /// Show at most this many items of similar users (Tree-of-Thought steps).
    pub max_similar: usize,
    /// Show ratings when the data has them.
    pub include_ratings: bool,
    /// Show review snippets when the data has them.
    pub include_reviews: bool,
    /// Word budget asked for in hindsight rationales (the paper: about 110).
    pub rationale_words: usize,
}

impl Default for PromptConfig {
    fn default() -> Self {
        Self {
            max_history: 15,
            max_similar: 10,
            include_ratings: true,
            include_reviews: true,
            rationale_words: 110,
        }
    }
}

/// How a hindsight answer starts: inside the JSON string the prompt asks for.
pub const RATIONALE_PREFIX: &str = "{\"rationale\": \"";

const SYSTEM: &str = "You are a careful assistant who explains people's choices of products \
                      from what they bought and reviewed before.";

impl PromptConfig {
    /// The stage-1 prompt: the history and the item actually chosen next, asking why that choice
    /// fits, as JSON `{"rationale": "..."}`.
    ///
    /// A context without a target gets a prompt that says the choice is unknown; callers should
    /// give hindsight contexts a target.
    pub fn hindsight(&self, context: &UserContext) -> Prompt {
        let mut user = String::from("Here is what a customer bought, oldest first:\n");
        self.push_history(&mut user, &context.history);
        match &context.target {
            Some(target) => {
                user.push_str("\nThe item they chose next: ");
                user.push_str(target.title.trim());
                user.push('\n');
            }
            None => user.push_str("\nThe item they chose next is unknown.\n"),
        }
        user.push_str(&format!(
            "\nIn fewer than {} words, explain why this choice fits the customer's taste, \
             pointing to what they liked before. Reply with JSON only, in the form \
             {{\"rationale\": \"...\"}}.",
            self.rationale_words
        ));
        Prompt {
            system: Some(SYSTEM.to_string()),
            user,
            answer_prefix: Some(RATIONALE_PREFIX.to_string()),
        }
    }

    /// A Tree-of-Thought step: the history and similar users' items (never the answer), the
    /// chain of thoughts so far, asking for exactly one next thought of one or two sentences.
    pub fn tot_step(&self, context: &UserContext, chain: &[String]) -> Prompt {
        let mut user = String::from("Here is what a customer bought, oldest first:\n");
        self.push_history(&mut user, &context.history);
        let similar: Vec<&str> = context
            .similar_items
            .iter()
            .map(|e| e.title.trim())
            .filter(|t| !t.is_empty())
            .take(self.max_similar)
            .collect();
        if !similar.is_empty() {
            user.push_str("\nCustomers with similar taste also bought: ");
            user.push_str(&similar.join("; "));
            user.push('\n');
        }
        user.push_str(
            "\nWe are reasoning step by step about what this customer values and what they \
             are likely to want next.\n",
        );
        if chain.is_empty() {
            user.push_str("\nWrite the first step of that reasoning");
        } else {
            user.push_str("\nReasoning so far:\n");
            for (i, thought) in chain.iter().enumerate() {
                user.push_str(&format!("Step {}: {}\n", i + 1, thought.trim()));
            }
            user.push_str(&format!(
                "\nWrite step {} of that reasoning",
                chain.len() + 1
            ));
        }
        user.push_str(
            ": one or two sentences that add something new. Do not name a single product as \
             the answer. Reply with the sentences only.",
        );
        Prompt {
            system: Some(SYSTEM.to_string()),
            user,
            answer_prefix: None,
        }
    }

    /// The "ToT with likelihood" scorer's prompt ([`crate::LikelihoodThoughtScorer`]): the
    /// history titles (at most `max_history`, without ratings or reviews) and the chain, asking
    /// which item came next; the reply opens with "The customer's next purchase:", after which
    /// the chosen item's title is scored. No system turn.
    pub fn likelihood(&self, context: &UserContext, chain: &str) -> Prompt {
        let mut user = String::from("A customer bought, oldest first:\n");
        let start = context.history.len().saturating_sub(self.max_history);
        for entry in &context.history[start..] {
            user.push_str("- ");
            user.push_str(entry.title.trim());
            user.push('\n');
        }
        user.push_str("\nReasoning: ");
        user.push_str(chain.trim());
        user.push_str("\n\nWhich item did they buy next?");
        Prompt {
            system: None,
            user,
            answer_prefix: Some("The customer's next purchase:".to_string()),
        }
    }

    fn push_history(&self, out: &mut String, history: &[HistoryEntry]) {
        let start = history.len().saturating_sub(self.max_history);
        if history.is_empty() {
            out.push_str("(no earlier purchases)\n");
        }
        for (i, entry) in history[start..].iter().enumerate() {
            out.push_str(&format!("{}. {}", i + 1, entry.title.trim()));
            if let Some(rating) = entry.rating.filter(|_| self.include_ratings) {
                out.push_str(&format!(" (rated {})", format_rating(rating)));
            }
            let review = entry
                .review
                .as_deref()
                .map(str::trim)
                .filter(|r| self.include_reviews && !r.is_empty());
            if let Some(review) = review {
                out.push_str(&format!(" - review: \"{review}\""));
            }
            out.push('\n');
        }
    }
}

/// `5` rather than `5.0`; fractional ratings keep one decimal.
fn format_rating(rating: f32) -> String {
    if rating.fract() == 0.0 {
        format!("{rating:.0}")
    } else {
        format!("{rating:.1}")
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
            review: review.map(String::from),
        }
    }

    fn context() -> UserContext {
        UserContext {
            user: UserId(3),
            history: vec![
                entry("Old Game", Some(2.0), None),
                entry("Halo 3", Some(5.0), Some("great campaign")),
                entry("Portal 2", Some(4.5), None),
            ],
            target: Some(entry("Halo: Reach", None, None)),
            similar_items: vec![entry("Gears of War", None, None), entry("  ", None, None)],
        }
    }

    #[test]
    fn hindsight_shows_history_ratings_reviews_and_the_choice() {
        let config = PromptConfig {
            max_history: 2,
            ..PromptConfig::default()
        };
        let p = config.hindsight(&context());
        assert!(p.system.is_some());
        assert!(!p.user.contains("Old Game"), "only the 2 latest items");
        assert!(
            p.user
                .contains("1. Halo 3 (rated 5) - review: \"great campaign\"\n")
        );
        assert!(p.user.contains("2. Portal 2 (rated 4.5)\n"));
        assert!(p.user.contains("chose next: Halo: Reach"));
        assert!(p.user.contains("{\"rationale\": \"...\"}"));
        assert!(p.user.contains("fewer than 110 words"));
    }

    #[test]
    fn tot_step_hides_the_answer_and_numbers_the_chain() {
        let config = PromptConfig::default();
        let first = config.tot_step(&context(), &[]);
        assert!(
            !first.user.contains("Halo: Reach"),
            "the answer must not leak"
        );
        assert!(first.user.contains("also bought: Gears of War\n"));
        assert!(first.user.contains("Write the first step"));
        let chain = vec!["They like shooters.".to_string(), "Story matters.".into()];
        let third = config.tot_step(&context(), &chain);
        assert!(
            third
                .user
                .contains("Step 1: They like shooters.\nStep 2: Story matters.\n")
        );
        assert!(third.user.contains("Write step 3"));
    }

    #[test]
    fn ratings_and_reviews_can_be_hidden() {
        let config = PromptConfig {
            include_ratings: false,
            include_reviews: false,
            ..PromptConfig::default()
        };
        let p = config.hindsight(&context());
        assert!(!p.user.contains("rated") && !p.user.contains("review:"));
    }

    #[test]
    fn plain_format_joins_system_and_user() {
        let p = Prompt {
            system: Some("S".into()),
            user: "U".into(),
            answer_prefix: None,
        };
        assert_eq!(plain_format(&p), "S\n\nU\n");
    }
}
