//! Mapping a generated answer to a candidate, by the paper's normalised substring match.
//!
//! Both the answer and each candidate title are normalised with
//! [`pulserec_core::text::normalize_for_match`] (HTML-unescaped, lower-cased, punctuation
//! replaced by spaces, whitespace collapsed); a candidate *matches* when its normalised title
//! occurs in the normalised answer. That is PAPER.md's HR@1 test, used unchanged.
//!
//! # Several matches
//! An answer can match more than one candidate: a model that lists titles, a title contained in
//! another (`halo 3` in `halo 3 odst`), or two items with the same title (the Games data has 434
//! repeated titles). The *chosen* candidate is then the one whose title starts earliest in the
//! answer; at the same start, the longest title (so `halo 3 odst` wins over `halo 3`); titles
//! that are identical after normalisation go to the one listed first. The paper's HR@1 does not
//! depend on this rule (it only asks whether the target's title occurs); the share of answers
//! with several matches is reported next to it.

use pulserec_core::text::normalize_for_match;

/// How an answer relates to the candidates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerMatch {
    /// Indices of the candidates whose normalised title occurs in the normalised answer, in
    /// candidate order.
    pub matched: Vec<usize>,
    /// The chosen candidate (see the module's tie rule), `None` when nothing matched.
    pub chosen: Option<usize>,
}

impl AnswerMatch {
    /// Whether the answer names at least one real candidate.
    pub fn is_valid(&self) -> bool {
        self.chosen.is_some()
    }
}

/// Whether the normalised `title` occurs in the normalised `answer` (the paper's HR@1 test).
/// An empty normalised title (only punctuation) never matches.
pub fn title_in_answer(answer: &str, title: &str) -> bool {
    let title = normalize_for_match(title);
    !title.is_empty() && normalize_for_match(answer).contains(&title)
}

/// Matches `answer` against candidate `titles`.
pub fn match_answer<S: AsRef<str>>(answer: &str, titles: &[S]) -> AnswerMatch {
    let answer = normalize_for_match(answer);
    let mut matched = Vec::new();
    // (start in the answer, -title length, candidate index): the smallest wins.
    let mut best: Option<(usize, isize, usize)> = None;
    for (i, title) in titles.iter().enumerate() {
        let title = normalize_for_match(title.as_ref());
        if title.is_empty() {
            continue;
        }
        if let Some(start) = answer.find(&title) {
            matched.push(i);
            let key = (start, -(title.len() as isize), i);
            if best.is_none_or(|b| key < b) {
                best = Some(key);
            }
        }
    }
    AnswerMatch {
        matched,
        chosen: best.map(|(_, _, i)| i),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_then_longest_then_first_listed() {
        let titles = ["Halo 3", "Halo 3: ODST", "Portal", "portal"];
        let m = match_answer(" Halo 3: ODST, then Portal", &titles);
        assert_eq!(m.matched, vec![0, 1, 2, 3]);
        assert_eq!(m.chosen, Some(1));
        assert_eq!(match_answer("PORTAL!", &titles).chosen, Some(2));
        assert_eq!(match_answer("nothing here", &titles).chosen, None);
        assert!(!title_in_answer("anything", "?!"));
    }
}
