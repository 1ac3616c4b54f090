//! Reading small models' outputs: JSON when it is there, a documented fallback when not.
//!
//! Small models wrap JSON in prose or code fences, stop mid-string at the token limit, add
//! "Step 2:" labels or run on into the next step. None of that is an error: the parsers below
//! always return some text (possibly empty) and say with `parsed` whether the output was what
//! the prompt asked for. They never panic.
//!
//! **Rationales** (`{"rationale": "..."}` asked for):
//! 1. the first JSON object anywhere in the output (prose and code fences around it are
//!    ignored) with a string field `rationale` (or `reason`, `explanation`, `reasoning`,
//!    any case) gives the text, `parsed = true`;
//! 2. otherwise, if such a key appears, the text after it (a JSON string cut off by the token
//!    limit), unescaped;
//! 3. otherwise the whole output with code fences, a leading label (`Rationale:`) and
//!    surrounding quotes removed;
//!
//! and in cases 2 and 3 an unfinished last sentence is dropped when a complete one precedes it,
//! and the text is cut to [`FALLBACK_MAX_WORDS`] words; `parsed = false`.
//!
//! **Thoughts** (one or two plain sentences asked for): JSON with a `thought`/`step`/... field
//! is accepted; otherwise the first non-empty line, without a leading label (`Step 3:`,
//! `Thought:`, `- `), quotes or fences, cut to `max_sentences` sentences. `parsed` is false when
//! anything beyond that had to go: further lines, extra sentences, an unfinished sentence.

use pulserec_core::text::normalize_whitespace;
use serde::{Deserialize, Serialize};

/// The longest fallback rationale kept, in words.
pub const FALLBACK_MAX_WORDS: usize = 150;

/// Keys accepted for a rationale's text in JSON output.
const RATIONALE_KEYS: &[&str] = &["rationale", "reason", "explanation", "reasoning"];
/// Keys accepted for a thought's text in JSON output.
const THOUGHT_KEYS: &[&str] = &["thought", "step", "next_step", "reasoning", "rationale"];
/// How many `{` positions are tried as JSON starts (outputs are short; this bounds the work).
const MAX_JSON_STARTS: usize = 32;

/// Text extracted from a model's output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedText {
    /// The extracted text, whitespace-normalised (empty if nothing usable was there).
    pub text: String,
    /// Whether the output was in the asked-for form (false: a fallback extraction was used).
    pub parsed: bool,
}

/// Extracts a rationale from a hindsight generation (see the module docs for the rules).
pub fn parse_rationale(raw: &str) -> ParsedText {
    if let Some(text) = json_field(raw, RATIONALE_KEYS) {
        return ParsedText { text, parsed: true };
    }
    let body = truncated_json_field(raw, RATIONALE_KEYS).unwrap_or_else(|| strip_wrapping(raw));
    let text = limit_words(&drop_unfinished_sentence(&body), FALLBACK_MAX_WORDS);
    ParsedText {
        text,
        parsed: false,
    }
}

/// Extracts one thought of at most `max_sentences` sentences from a Tree-of-Thought generation
/// (see the module docs for the rules).
pub fn parse_thought(raw: &str, max_sentences: usize) -> ParsedText {
    let max_sentences = max_sentences.max(1);
    if let Some(text) = json_field(raw, THOUGHT_KEYS) {
        let sentences = split_sentences(&text);
        let clean = sentences.len() <= max_sentences;
        return ParsedText {
            text: join_first(&sentences, max_sentences),
            parsed: clean,
        };
    }
    let unfenced = strip_fences(raw);
    let mut lines = unfenced.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("");
    let more_lines = lines.next().is_some();
    let line = strip_quotes(strip_label(first));
    let sentences = split_sentences(&normalize_whitespace(line));
    let finished = sentences.last().is_some_and(|s| ends_sentence(s));
    let kept: Vec<String> = if finished || sentences.len() <= 1 {
        sentences.iter().take(max_sentences).cloned().collect()
    } else {
        // Drop the unfinished tail, keep what is complete.
        let complete = &sentences[..sentences.len() - 1];
        complete.iter().take(max_sentences).cloned().collect()
    };
    let parsed = !kept.is_empty() && !more_lines && finished && sentences.len() <= max_sentences;
    ParsedText {
        text: kept.join(" "),
        parsed,
    }
}

/// The first JSON object in `raw` that has a string field named one of `keys` (any case).
fn json_field(raw: &str, keys: &[&str]) -> Option<String> {
    for (start, _) in raw.match_indices('{').take(MAX_JSON_STARTS) {
        let mut stream =
            serde_json::Deserializer::from_str(&raw[start..]).into_iter::<serde_json::Value>();
        let Some(Ok(serde_json::Value::Object(map))) = stream.next() else {
            continue;
        };
        for key in keys {
            let found = map
                .iter()
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
                .and_then(|(_, v)| v.as_str());
            if let Some(text) = found {
                return Some(normalize_whitespace(text));
            }
        }
    }
    None
}

/// The text after `"key":` when the JSON string was never closed (the token limit hit).
fn truncated_json_field(raw: &str, keys: &[&str]) -> Option<String> {
    let lower = raw.to_ascii_lowercase();
    let (pos, key) = keys
        .iter()
        .filter_map(|k| lower.find(&format!("\"{k}\"")).map(|p| (p, *k)))
        .min_by_key(|&(p, _)| p)?;
    // `lower` is ASCII-lowercased, so its byte offsets match `raw`'s.
    let after = raw[pos + key.len() + 2..].trim_start();
    let after = after.strip_prefix(':')?.trim_start();
    let after = after.strip_prefix('"').unwrap_or(after);
    let mut text = String::with_capacity(after.len());
    let mut chars = after.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('n') | Some('t') | Some('r') => text.push(' '),
                Some(other) => text.push(other),
                None => {}
            },
            '"' => break, // a closed string inside invalid JSON: the field ends here
            _ => text.push(c),
        }
    }
    let text = strip_fences(&text);
    let text = text.trim_end().trim_end_matches(['}', '`']).trim_end();
    Some(normalize_whitespace(text))
}

/// The output with code fences, a leading label and surrounding quotes removed.
fn strip_wrapping(raw: &str) -> String {
    let unfenced = strip_fences(raw);
    let text = normalize_whitespace(&unfenced);
    strip_quotes(strip_label(&text)).to_string()
}

/// Removes Markdown code fence lines (```` ``` ```` and ```` ```json ````).
fn strip_fences(raw: &str) -> String {
    raw.lines()
        .filter(|l| !l.trim_start().starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Removes a leading label such as `Step 2:`, `Thought:`, `Rationale -`, `2.` or `- `.
fn strip_label(s: &str) -> &str {
    let s = s
        .trim_start()
        .trim_start_matches(['-', '*', '•'])
        .trim_start();
    // A numbered item: `2.` or `2)`.
    let digits = s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits > 0 {
        let rest = &s[digits..];
        if let Some(r) = rest.strip_prefix(['.', ')', ':']) {
            return r.trim_start();
        }
    }
    // A short label ending in ':' made of a few words and digits (`Next step 3:`).
    if let Some(colon) = s.find(':') {
        let label = &s[..colon];
        let labelish = label.split_whitespace().count() <= 3
            && label
                .chars()
                .all(|c| c.is_alphanumeric() || c == ' ' || c == '_')
            && !label.is_empty();
        let known = label.to_ascii_lowercase();
        let known = [
            "step",
            "thought",
            "rationale",
            "reason",
            "answer",
            "explanation",
        ]
        .iter()
        .any(|k| known.contains(k));
        if labelish && known {
            return s[colon + 1..].trim_start();
        }
    }
    s
}

/// Removes one pair of surrounding quotes (straight or curly), or a lone leading quote.
fn strip_quotes(s: &str) -> &str {
    let s = s.trim();
    let inner = s
        .strip_prefix(['"', '\'', '“'])
        .map(|r| r.strip_suffix(['"', '\'', '”']).unwrap_or(r));
    inner.unwrap_or(s).trim()
}

/// Whether a sentence ends with terminal punctuation (optionally followed by a closing quote or
/// bracket).
fn ends_sentence(s: &str) -> bool {
    let s = s.trim_end().trim_end_matches(['"', '\'', '”', ')', ']']);
    s.ends_with(['.', '!', '?', '…'])
}

/// Splits after `.`, `!` or `?` followed by whitespace; the last piece may be unfinished.
fn split_sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        current.push(c);
        let boundary = matches!(c, '.' | '!' | '?' | '…')
            && chars.peek().is_none_or(|next| next.is_whitespace());
        if boundary {
            let s = current.trim();
            if !s.is_empty() {
                out.push(s.to_string());
            }
            current.clear();
        }
    }
    let s = current.trim();
    if !s.is_empty() {
        out.push(s.to_string());
    }
    out
}

fn join_first(sentences: &[String], n: usize) -> String {
    sentences[..sentences.len().min(n)].join(" ")
}

/// Drops an unfinished last sentence when at least one complete sentence precedes it.
fn drop_unfinished_sentence(text: &str) -> String {
    let sentences = split_sentences(text);
    match sentences.last() {
        Some(last) if sentences.len() > 1 && !ends_sentence(last) => {
            sentences[..sentences.len() - 1].join(" ")
        }
        _ => sentences.join(" "),
    }
}

fn limit_words(text: &str, max_words: usize) -> String {
    text.split_whitespace()
        .take(max_words)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> ParsedText {
        ParsedText {
            text: text.into(),
            parsed: true,
        }
    }

    fn fallback(text: &str) -> ParsedText {
        ParsedText {
            text: text.into(),
            parsed: false,
        }
    }

    #[test]
    fn rationale_plain_json() {
        assert_eq!(
            parse_rationale(r#"{"rationale": "They love  open worlds."}"#),
            ok("They love open worlds.")
        );
    }

    #[test]
    fn rationale_json_in_prose_and_fences() {
        let raw = "Sure! Here is the JSON:\n```json\n{\n  \"Rationale\": \"Fans of Halo want more \
                   Halo.\"\n}\n```\nHope this helps.";
        assert_eq!(parse_rationale(raw), ok("Fans of Halo want more Halo."));
        // A first brace that is not JSON is skipped.
        let raw = "{thinking} then {\"reason\": \"Same series.\"}";
        assert_eq!(parse_rationale(raw), ok("Same series."));
    }

    #[test]
    fn rationale_cut_by_the_token_limit() {
        let raw = "```json\n{\"rationale\": \"The user rated shooters highly. They also liked \\\"co-op\\\" play. \
                   Halo: Reach continues the series they";
        assert_eq!(
            parse_rationale(raw),
            fallback("The user rated shooters highly. They also liked \"co-op\" play.")
        );
    }

    #[test]
    fn rationale_without_json() {
        assert_eq!(
            parse_rationale("Rationale: \"The customer enjoys racing games.\""),
            fallback("The customer enjoys racing games.")
        );
        assert_eq!(parse_rationale(""), fallback(""));
        assert_eq!(parse_rationale("```\n```"), fallback(""));
        // JSON without the asked-for key falls back to the raw text.
        let raw = r#"{"answer": 3}"#;
        assert_eq!(parse_rationale(raw), fallback(raw));
    }

    #[test]
    fn rationale_fallback_is_word_limited() {
        let long = "word ".repeat(400);
        let p = parse_rationale(&long);
        assert!(!p.parsed);
        assert_eq!(p.text.split_whitespace().count(), FALLBACK_MAX_WORDS);
    }

    #[test]
    fn odd_input_never_panics() {
        for raw in [
            "{",
            "}",
            "\"rationale\"",
            "\"rationale\":",
            "{\"rationale\": \"é",
            "\\",
            "…",
            "1.",
            "Step",
        ] {
            let _ = parse_rationale(raw);
            let _ = parse_thought(raw, 2);
        }
    }

    #[test]
    fn thought_clean_and_labelled() {
        assert_eq!(
            parse_thought("They enjoy story-driven games.", 2),
            ok("They enjoy story-driven games.")
        );
        assert_eq!(
            parse_thought("Step 2: They rated RPGs 5. Length is no issue!", 2),
            ok("They rated RPGs 5. Length is no issue!")
        );
        assert_eq!(
            parse_thought("  - \"Co-op matters.\"\n", 2),
            ok("Co-op matters.")
        );
        assert_eq!(
            parse_thought("{\"thought\": \"Likes Nintendo.\"}", 2),
            ok("Likes Nintendo.")
        );
    }

    #[test]
    fn thought_run_on_output_is_cut_and_flagged() {
        let raw = "Step 1: They like racing.\nStep 2: They like cars.\nAnswer: Forza";
        assert_eq!(parse_thought(raw, 2), fallback("They like racing."));
        let raw = "A. B. C.";
        assert_eq!(parse_thought(raw, 2), fallback("A. B."));
        // Cut by the token limit mid-sentence: keep the complete sentence.
        let raw = "They bought three Zelda games. The next one is probably a";
        assert_eq!(
            parse_thought(raw, 2),
            fallback("They bought three Zelda games.")
        );
        // Nothing complete at all: keep what is there, flagged.
        assert_eq!(
            parse_thought("They bought three", 2),
            fallback("They bought three")
        );
        assert_eq!(parse_thought("", 2), fallback(""));
    }

    #[test]
    fn decimals_do_not_split_sentences() {
        assert_eq!(
            split_sentences("Rated 4.5 often. Yes"),
            vec!["Rated 4.5 often.", "Yes"]
        );
    }
}
