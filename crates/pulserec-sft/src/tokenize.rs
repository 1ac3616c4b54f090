//! Training examples as token ids with a loss mask on the target only.
//!
//! The prompt (through the answer cue) and the target (` <title>` + end of turn) are tokenised
//! separately and concatenated, so the boundary is exact: every prompt token has mask 0, every
//! target token mask 1. An example longer than the limit loses its oldest history titles one at
//! a time; the candidates, rationale and target are never cut, and an example that does not fit
//! even with no history is an error ([`SftError::TooLong`]).

use pulserec_core::UserId;
use pulserec_slm::SlmTokenizer;
use serde::{Deserialize, Serialize};

use crate::data::SftExample;
use crate::error::{Result, SftError};
use crate::prompt::PromptStyle;

/// One tokenised training example.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedExample {
    /// The user.
    pub user: UserId,
    /// Prompt tokens followed by target tokens.
    pub tokens: Vec<u32>,
    /// Index of the first target token (`tokens[target_start..]` is the target).
    pub target_start: usize,
    /// Oldest history titles left out to fit the limit.
    pub history_dropped: usize,
}

impl EncodedExample {
    /// Total tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there are no tokens (never true for an encoded example).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Target tokens.
    pub fn target_len(&self) -> usize {
        self.tokens.len() - self.target_start
    }

    /// Per-token loss weights: 1.0 where the token is part of the target, else 0.0.
    pub fn loss_mask(&self) -> Vec<f32> {
        (0..self.tokens.len())
            .map(|t| if t >= self.target_start { 1.0 } else { 0.0 })
            .collect()
    }
}

/// Tokenises `example` (prompt with its rationale, then the target) within `max_len` tokens.
pub fn encode_example(
    tokenizer: &SlmTokenizer,
    style: PromptStyle,
    example: &SftExample,
    max_len: usize,
) -> Result<EncodedExample> {
    let user = example.prompt.user;
    let target = tokenizer.encode_continuation(&style.target(example.target_title()))?;
    if target.is_empty() {
        return Err(SftError::Data {
            user,
            message: "the target title tokenises to nothing".into(),
        });
    }
    let history = example.prompt.history.len();
    let mut dropped = 0;
    loop {
        let prompt = tokenizer.encode(&style.render_with_history(&example.prompt, dropped))?;
        let total = prompt.len() + target.len();
        if total <= max_len {
            if dropped > 0 {
                tracing::debug!(%user, dropped, "history shortened to fit the length limit");
            }
            let target_start = prompt.len();
            let mut tokens = prompt;
            tokens.extend_from_slice(&target);
            return Ok(EncodedExample {
                user,
                tokens,
                target_start,
                history_dropped: dropped,
            });
        }
        if dropped == history {
            return Err(SftError::TooLong {
                user,
                tokens: total,
                max_len,
            });
        }
        dropped += 1;
    }
}

/// Examples tokenised by [`encode_all`]: those that fit, and the users whose example did not
/// fit even with no history (skipped, not an error).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EncodedSet {
    /// The examples that fit, in input order.
    pub examples: Vec<EncodedExample>,
    /// Users whose example was over the limit with no history left.
    pub too_long: Vec<UserId>,
}

/// Tokenises every example with [`encode_example`]; one that does not fit even with no history
/// is skipped with a warning and its user listed in [`EncodedSet::too_long`]. Any other error
/// stops the run.
pub fn encode_all(
    tokenizer: &SlmTokenizer,
    style: PromptStyle,
    examples: &[SftExample],
    max_len: usize,
) -> Result<EncodedSet> {
    let mut set = EncodedSet::default();
    for example in examples {
        match encode_example(tokenizer, style, example, max_len) {
            Ok(e) => set.examples.push(e),
            Err(e @ SftError::TooLong { .. }) => {
                tracing::warn!("{e}; skipped");
                set.too_long.push(example.prompt.user);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(set)
}
