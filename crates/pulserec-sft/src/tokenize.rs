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
use crate::train::Objective;

/// One tokenised training example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Empty for a plain causal row; for a ranking example ([`encode_ranking`]) one segment id
    /// per token: 0 for the prompt, `k + 1` for the `k`-th target, so each candidate's answer
    /// follows the prompt alone ([`pulserec_slm::TokenBatch::segments`]).
    #[serde(default)]
    pub segments: Vec<u16>,
    /// Whether this row is an auxiliary rationale target ([`encode_auxiliary`]): one target,
    /// learned by its token likelihood under either objective.
    #[serde(default)]
    pub auxiliary: bool,
    /// Ranking examples with a prior ([`SftExample::prior`]): the prior score of each target's
    /// candidate, in the order of [`EncodedExample::targets`], added to the SLM's score in the
    /// ranking loss. Empty: no prior.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offsets: Vec<f32>,
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
    let target = answer_tokens(tokenizer, style, example, example.target_index())?;
    fit_prompt(tokenizer, style, example, vec![target], max_len)
}

/// Tokenises `rationale` as a target of its own for `example`'s user
/// ([`crate::Variant::AuxiliaryReasons`]): the prompt with the rationale, up to its cue, then
/// ` <rationale>` and a newline ([`PromptStyle::rationale_target`]), within `max_len` tokens.
pub fn encode_auxiliary(
    tokenizer: &SlmTokenizer,
    style: PromptStyle,
    example: &SftExample,
    rationale: &str,
    max_len: usize,
) -> Result<EncodedExample> {
    let user = example.prompt.user;
    let mut prompt = example.prompt.clone();
    prompt.rationale = Some(rationale.to_string());
    let (_, target) = style
        .rationale_target(&prompt, 0)
        .ok_or_else(|| SftError::Data {
            user,
            message: "the auxiliary rationale is blank".into(),
        })?;
    let target = tokenizer.encode_continuation(&target)?;
    let render = |dropped| {
        style
            .rationale_target(&prompt, dropped)
            .map_or_else(String::new, |(text, _)| text)
    };
    let mut encoded = fit(
        tokenizer,
        user,
        prompt.history.len(),
        render,
        vec![target],
        max_len,
    )?;
    encoded.auxiliary = true;
    Ok(encoded)
}

/// Tokenises `example` for the ranking objective: the prompt once, then every candidate's
/// answer as its own branch of it (the correct one first), within `max_len` tokens in all.
///
/// [`EncodedExample::targets`] holds one range per candidate (`targets[0]` is the correct
/// answer) and [`EncodedExample::segments`] the branch of every token, so one row scores each
/// candidate exactly as the likelihood selector does: the answer's tokens after the prompt.
/// An example with a prior ([`SftExample::prior`]) carries it in the same order
/// ([`EncodedExample::offsets`]); a prior whose length is not the candidates' is
/// [`SftError::Data`].
pub fn encode_ranking(
    tokenizer: &SlmTokenizer,
    style: PromptStyle,
    example: &SftExample,
    max_len: usize,
) -> Result<EncodedExample> {
    let correct = example.target_index();
    let order: Vec<usize> = std::iter::once(correct)
        .chain((0..example.prompt.candidates.len()).filter(|&i| i != correct))
        .collect();
    if !example.prior.is_empty() && example.prior.len() != order.len() {
        return Err(SftError::Data {
            user: example.prompt.user,
            message: format!(
                "{} prior scores for {} candidates",
                example.prior.len(),
                order.len()
            ),
        });
    }
    let answers = order
        .iter()
        .map(|&i| answer_tokens(tokenizer, style, example, i))
        .collect::<Result<Vec<_>>>()?;
    let mut encoded = fit_prompt(tokenizer, style, example, answers, max_len)?;
    if !example.prior.is_empty() {
        encoded.offsets = order.iter().map(|&i| example.prior[i]).collect();
    }
    let prompt = encoded.target_start();
    let mut segments = vec![0u16; encoded.tokens.len()];
    for (k, r) in encoded.targets.iter().enumerate() {
        segments[r.clone()].fill(k as u16 + 1);
    }
    debug_assert!(segments[..prompt].iter().all(|&s| s == 0));
    encoded.segments = segments;
    Ok(encoded)
}

/// The tokens of candidate `index`'s answer (` <title>` or ` <letter>` and the end of turn).
fn answer_tokens(
    tokenizer: &SlmTokenizer,
    style: PromptStyle,
    example: &SftExample,
    index: usize,
) -> Result<Vec<u32>> {
    let user = example.prompt.user;
    let text = style
        .target(&example.prompt, index)
        .ok_or_else(|| SftError::Data {
            user,
            message: format!(
                "{} candidates do not fit the prompt style (at most {})",
                example.prompt.candidates.len(),
                crate::prompt::CHOICE_LETTERS.len()
            ),
        })?;
    let tokens = tokenizer.encode_continuation(&text)?;
    if tokens.is_empty() {
        return Err(SftError::Data {
            user,
            message: "the target title tokenises to nothing".into(),
        });
    }
    Ok(tokens)
}

/// The prompt followed by `answers` (each one a target range), dropping the oldest history
/// titles one at a time until everything fits in `max_len` tokens.
fn fit_prompt(
    tokenizer: &SlmTokenizer,
    style: PromptStyle,
    example: &SftExample,
    answers: Vec<Vec<u32>>,
    max_len: usize,
) -> Result<EncodedExample> {
    let render = |dropped| style.render_with_history(&example.prompt, dropped);
    let history = example.prompt.history.len();
    fit(
        tokenizer,
        example.prompt.user,
        history,
        render,
        answers,
        max_len,
    )
}

/// `render(dropped)` (the prompt without its `dropped` oldest of `history` titles) followed by
/// `answers`, with the fewest titles dropped that fit `max_len` tokens.
fn fit(
    tokenizer: &SlmTokenizer,
    user: UserId,
    history: usize,
    render: impl Fn(usize) -> String,
    answers: Vec<Vec<u32>>,
    max_len: usize,
) -> Result<EncodedExample> {
    let answer_len: usize = answers.iter().map(Vec::len).sum();
    let mut dropped = 0;
    loop {
        let prompt = tokenizer.encode(&render(dropped))?;
        let total = prompt.len() + answer_len;
        if total <= max_len {
            if dropped > 0 {
                tracing::debug!(%user, dropped, "history shortened to fit the length limit");
            }
            let mut tokens = prompt;
            let mut targets = Vec::with_capacity(answers.len());
            for answer in &answers {
                targets.push(tokens.len()..tokens.len() + answer.len());
                tokens.extend_from_slice(answer);
            }
            return Ok(EncodedExample {
                user,
                tokens,
                targets,
                history_dropped: dropped,
                segments: Vec::new(),
                auxiliary: false,
                offsets: Vec::new(),
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
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EncodedSet {
    /// The examples that fit, in input order.
    pub examples: Vec<EncodedExample>,
    /// Users whose example was over the limit with no history left.
    pub too_long: Vec<UserId>,
}

/// Tokenises every example for `objective` ([`encode_example`] or [`encode_ranking`]), each
/// followed by its auxiliary rationale row when it has one ([`encode_auxiliary`]); a row that
/// does not fit even with no history is skipped with a warning and its user listed in
/// [`EncodedSet::too_long`]. Any other error stops the run.
pub fn encode_all(
    tokenizer: &SlmTokenizer,
    style: PromptStyle,
    examples: &[SftExample],
    max_len: usize,
    objective: Objective,
) -> Result<EncodedSet> {
    let encode = match objective {
        Objective::Generative => encode_example,
        Objective::Ranking => encode_ranking,
    };
    let mut set = EncodedSet::default();
    for example in examples {
        let auxiliary = example
            .auxiliary
            .as_deref()
            .map(|rationale| encode_auxiliary(tokenizer, style, example, rationale, max_len));
        for encoded in std::iter::once(encode(tokenizer, style, example, max_len)).chain(auxiliary)
        {
            match encoded {
                Ok(e) => set.examples.push(e),
                Err(e @ SftError::TooLong { .. }) => {
                    tracing::warn!("{e}; skipped");
                    set.too_long.push(example.prompt.user);
                }
                Err(e) => return Err(e),
            }
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
            segments: Vec::new(),
            auxiliary: false,
            offsets: Vec::new(),
        });
        start = end - min_history;
    }
    Ok(rows)
}
