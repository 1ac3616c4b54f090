//! Training examples as token ids with a loss mask on the target only.
//!
//! The prompt (through the answer cue) and the target (` <title>` + end of turn) are tokenised
//! separately and concatenated, so the boundary is exact: every prompt token has mask 0, every
//! target token mask 1. An example longer than the limit loses its oldest history titles one at
//! a time; the candidates, rationale and target are never cut, and an example that does not fit
//! even with no history is an error ([`SftError::TooLong`]).
//!
//! [`encode_sequence`] packs a user's whole training sequence in [`PromptStyle::Sequence`] form:
//! every title after the first `min_history` is a target, so one row teaches every position.

use std::ops::Range;

use pulserec_core::UserId;
use pulserec_slm::SlmTokenizer;
use serde::{Deserialize, Serialize};

use crate::data::SftExample;
use crate::error::{Result, SftError};
use crate::prompt::{PromptStyle, SEQUENCE_HEADER, SEQUENCE_MARKER};

/// One tokenised training example.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedExample {
    /// The user.
    pub user: UserId,
    /// Prompt tokens followed by target tokens.
    pub tokens: Vec<u32>,
    /// Target token ranges, in order (one for a prompt and its answer; one per predicted title
    /// for a packed sequence). Every other token is context.
    pub targets: Vec<Range<usize>>,
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

    /// Index of the first target token.
    pub fn target_start(&self) -> usize {
        self.targets.first().map_or(self.tokens.len(), |r| r.start)
    }

    /// Target tokens.
    pub fn target_len(&self) -> usize {
        self.targets.iter().map(|r| r.len()).sum()
    }

    /// Per-token loss weights: 1.0 where the token is part of a target, else 0.0.
    pub fn loss_mask(&self) -> Vec<f32> {
        let mut mask = vec![0.0; self.tokens.len()];
        for r in &self.targets {
            mask[r.clone()].fill(1.0);
        }
        mask
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
    let target_text = style
        .target(&example.prompt, example.target_index())
        .ok_or_else(|| SftError::Data {
            user,
            message: format!(
                "{} candidates do not fit the prompt style (at most {})",
                example.prompt.candidates.len(),
                crate::prompt::CHOICE_LETTERS.len()
            ),
        })?;
    let target = tokenizer.encode_continuation(&target_text)?;
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
            let targets = std::iter::once(prompt.len()..total).collect();
            let mut tokens = prompt;
            tokens.extend_from_slice(&target);
            return Ok(EncodedExample {
                user,
                tokens,
                targets,
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

/// Packs `titles` (a user's training sequence, oldest first) as [`PromptStyle::Sequence`] rows.
///
/// Each row is the header followed by `- <title>` lines; each title's ` <title>` + newline is a
/// target once at least `min_history` titles precede it in its row, so one row teaches the next
/// item at every position. A row ends at `max_items` titles or `max_len` tokens; the next row
/// starts with the last `min_history` titles of the previous one as context, so every title
/// after the user's first `min_history` is a target exactly once. The pieces are tokenised one
/// by one (header, then marker and title per line); at the line boundaries this matches
/// tokenising the rendered prompt whole (the `prompt_tokens` tests check it on real titles), so
/// training rows and the likelihood selector's contexts agree. A row that cannot hold one target
/// after its context within `max_len` is [`SftError::TooLong`].
pub fn encode_sequence(
    tokenizer: &SlmTokenizer,
    user: UserId,
    titles: &[String],
    min_history: usize,
    max_items: usize,
    max_len: usize,
) -> Result<Vec<EncodedExample>> {
    if max_items <= min_history {
        return Err(SftError::config(
            "max_items",
            format!("{max_items} must exceed min_history {min_history}"),
        ));
    }
    let header = tokenizer.encode(SEQUENCE_HEADER)?;
    let marker = tokenizer.encode_continuation(SEQUENCE_MARKER)?;
    let style = PromptStyle::Sequence;
    let lines: Vec<Vec<u32>> = titles
        .iter()
        .map(|t| tokenizer.encode_continuation(&style.title_target(t)))
        .collect::<std::result::Result<_, _>>()?;
    let mut rows = Vec::new();
    let mut start = 0;
    while start + min_history < lines.len() {
        let mut tokens = header.clone();
        let mut targets = Vec::new();
        let mut end = start;
        while end < lines.len() && end - start < max_items {
            let len = marker.len() + lines[end].len();
            if tokens.len() + len > max_len {
                break;
            }
            tokens.extend_from_slice(&marker);
            if end - start >= min_history {
                targets.push(tokens.len()..tokens.len() + lines[end].len());
            }
            tokens.extend_from_slice(&lines[end]);
            end += 1;
        }
        if end - start <= min_history {
            return Err(SftError::TooLong {
                user,
                tokens: tokens.len() + marker.len() + lines[end].len(),
                max_len,
            });
        }
        rows.push(EncodedExample {
            user,
            tokens,
            targets,
            history_dropped: 0,
        });
        start = end - min_history;
    }
    Ok(rows)
}
