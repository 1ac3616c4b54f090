//! The candidate-selection prompt, in training and at test time.
//!
//! One wording serves both (PAPER.md stage 4) in [`PromptStyle::Chat`] and
//! [`PromptStyle::Plain`]: a short system text, then a user turn with the customer, their recent
//! purchases (oldest first) and the candidate titles, then the assistant turn. In training the
//! assistant turn starts with `Let me think: <rationale>` when the variant has one; every such
//! prompt ends with the answer cue `Answer:`. The target the model learns (and the text the
//! likelihood selector scores) is ` <title>` followed by the end-of-turn marker.
//!
//! [`PromptStyle::Sequence`] is the other shape: no instructions and no candidate list, only the
//! customer's titles one per line (`- <title>`), the rationale when the variant has one, and an
//! open line `-`; the model continues the list with ` <title>` and a newline. It is a next-item
//! language model over titles: the likelihood selector ranks candidates by how likely the model
//! finds each as the next line, so their listed order cannot matter, and one training row (a
//! user's whole training sequence, [`crate::tokenize::encode_sequence`]) teaches every position
//! of it in one pass.
//!
//! [`PromptStyle::Choice`] is a multiple choice: the titles one per line as in the sequence
//! shape, then the candidates lettered `A.`, `B.`, ... (each with its training-interaction count
//! when the prompt carries [`CandidatePrompt::popularity`]), and the cue `Answer:`; the model
//! answers with the letter (` B` and a newline). Training on it is a classification over the
//! shown candidates, LlamaRec's verbalizer idea; scoring reads one token per candidate on one
//! shared context.
//!
//! The wording is ours; any change to it bumps [`PROMPT_VERSION`], which is stored with every
//! metrics file.

use pulserec_core::CandidatePrompt;
use pulserec_core::text::normalize_whitespace;
use pulserec_slm::ChatFormat;

/// Version of the prompt wording, stored in every metrics file.
pub const PROMPT_VERSION: &str = "pulserec-sft/1";

/// The cue after which the model names its choice.
pub const ANSWER_CUE: &str = "Answer:";

/// What opens a rationale in the assistant turn.
pub const RATIONALE_CUE: &str = "Let me think:";

/// The first line of a [`PromptStyle::Sequence`] prompt.
pub const SEQUENCE_HEADER: &str = "A customer's purchases, oldest first:\n";

/// What opens each title's line in a [`PromptStyle::Sequence`] prompt; the title follows after
/// a space.
pub const SEQUENCE_MARKER: &str = "-";

/// What opens a rationale's line in a [`PromptStyle::Sequence`] prompt.
pub const SEQUENCE_RATIONALE_CUE: &str = "Why the next one:";

/// The line before the lettered candidates of a [`PromptStyle::Choice`] prompt.
pub const CHOICE_HEADER: &str = "Which one do they buy next?\n";

/// The letters that name [`PromptStyle::Choice`] candidates, in the order shown: at most this
/// many candidates fit one prompt.
pub const CHOICE_LETTERS: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";

const SYSTEM: &str = "You recommend products. From what a customer bought recently, pick the \
                      one candidate they are most likely to buy next.";

/// How a prompt becomes the text a model reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptStyle {
    /// The model's chat template (system and user turns, then the assistant turn opened).
    Chat(ChatFormat),
    /// No template: the system text, a blank line, the user text, a newline; the end of turn is
    /// a newline. For raw completion models and scripted test generators.
    Plain,
    /// The history as a list, one `- <title>` line each, and an open `-` line to continue: no
    /// instructions, no candidates (see the module docs). The end of turn is a newline.
    Sequence,
    /// The history as in [`PromptStyle::Sequence`], then lettered candidates and `Answer:`; the
    /// answer is the letter (see the module docs). The end of turn is a newline.
    Choice,
}

impl PromptStyle {
    /// The text that closes the assistant's turn: the last part of every training target.
    pub fn end_of_turn(self) -> &'static str {
        match self {
            Self::Chat(ChatFormat::ChatMl) => "<|im_end|>",
            Self::Chat(ChatFormat::Phi3) => "<|end|>",
            Self::Chat(ChatFormat::Llama3) => "<|eot_id|>",
            Self::Plain | Self::Sequence | Self::Choice => "\n",
        }
    }

    /// The full prompt text up to and including the answer cue.
    pub fn render(self, prompt: &CandidatePrompt) -> String {
        self.render_with_history(prompt, 0)
    }

    /// [`PromptStyle::render`] with the `drop_oldest` oldest history titles left out (used to
    /// fit a token budget).
    pub fn render_with_history(self, prompt: &CandidatePrompt, drop_oldest: usize) -> String {
        match self {
            Self::Sequence => return sequence_prompt(prompt, drop_oldest),
            Self::Choice => return choice_prompt(prompt, drop_oldest),
            Self::Chat(_) | Self::Plain => {}
        }
        let user = user_message(prompt, drop_oldest);
        let mut text = match self {
            Self::Chat(format) => format.prompt(Some(SYSTEM), &user),
            // `Sequence` and `Choice` returned above.
            Self::Plain | Self::Sequence | Self::Choice => format!("{SYSTEM}\n\n{user}\n"),
        };
        push_rationale(&mut text, RATIONALE_CUE, prompt);
        text.push_str(ANSWER_CUE);
        text
    }

    /// The cue that opens a rationale in this style's prompts ([`RATIONALE_CUE`] in the
    /// assistant turn, or [`SEQUENCE_RATIONALE_CUE`] on its own line).
    pub fn rationale_cue(self) -> &'static str {
        match self {
            Self::Chat(_) | Self::Plain => RATIONALE_CUE,
            Self::Sequence | Self::Choice => SEQUENCE_RATIONALE_CUE,
        }
    }

    /// The rationale as a target of its own (the auxiliary variant): the prompt text up to and
    /// including [`PromptStyle::rationale_cue`], with the `drop_oldest` oldest history titles
    /// left out, and the target ` <rationale>` and a newline, exactly as the rationale stands in
    /// [`PromptStyle::render_with_history`]. `None` when `prompt` has no non-blank rationale.
    pub fn rationale_target(
        self,
        prompt: &CandidatePrompt,
        drop_oldest: usize,
    ) -> Option<(String, String)> {
        let rationale = normalize_whitespace(prompt.rationale.as_deref().unwrap_or(""));
        if rationale.is_empty() {
            return None;
        }
        let text = self.render_with_history(prompt, drop_oldest);
        let line = format!("{} {rationale}\n", self.rationale_cue());
        let start = text.rfind(&line)? + self.rationale_cue().len();
        Some((text[..start].to_string(), format!(" {rationale}\n")))
    }

    /// The answer for a title as the title styles write it after the cue: a space and the title.
    pub fn title_answer(title: &str) -> String {
        format!(" {}", title.trim())
    }

    /// [`PromptStyle::title_answer`] followed by [`PromptStyle::end_of_turn`]: a title style's
    /// training target, as [`crate::tokenize::encode_sequence`] packs it.
    pub fn title_target(self, title: &str) -> String {
        let mut t = Self::title_answer(title);
        t.push_str(self.end_of_turn());
        t
    }

    /// The answer naming candidate `index` of `prompt` as the model should write it after the
    /// cue: a space and the title, or for [`PromptStyle::Choice`] a space and the candidate's
    /// letter. `None` when `index` is not a candidate (or has no letter).
    pub fn answer(self, prompt: &CandidatePrompt, index: usize) -> Option<String> {
        let (_, title) = prompt.candidates.get(index)?;
        Some(match self {
            Self::Choice => format!(" {}", choice_letter(index)?),
            Self::Chat(_) | Self::Plain | Self::Sequence => Self::title_answer(title),
        })
    }

    /// The training target: [`PromptStyle::answer`] followed by [`PromptStyle::end_of_turn`].
    pub fn target(self, prompt: &CandidatePrompt, index: usize) -> Option<String> {
        let mut t = self.answer(prompt, index)?;
        t.push_str(self.end_of_turn());
        Some(t)
    }

    /// The candidate a generated answer names: for [`PromptStyle::Choice`] the first letter of
    /// the answer (`" B"`, `"B."`, `"b)"`); for the other styles the paper's title match
    /// ([`crate::answer::match_answer`]).
    pub fn chosen_index(self, prompt: &CandidatePrompt, answer: &str) -> Option<usize> {
        match self {
            Self::Choice => {
                let first = answer.trim_start().chars().next()?.to_ascii_uppercase();
                let index = CHOICE_LETTERS.find(first)?;
                (index < prompt.candidates.len()).then_some(index)
            }
            Self::Chat(_) | Self::Plain | Self::Sequence => {
                let titles: Vec<&str> = prompt.candidates.iter().map(|(_, t)| t.as_str()).collect();
                crate::answer::match_answer(answer, &titles).chosen
            }
        }
    }
}

/// The letter of candidate `index` in a [`PromptStyle::Choice`] prompt.
pub fn choice_letter(index: usize) -> Option<char> {
    CHOICE_LETTERS.chars().nth(index)
}

/// A [`PromptStyle::Choice`] prompt: the sequence header and history lines, the rationale line,
/// the lettered candidates (with `(bought N times)` when the prompt carries popularity) and the
/// answer cue. Candidates past [`CHOICE_LETTERS`] are not shown; the caller checks the count.
fn choice_prompt(prompt: &CandidatePrompt, drop_oldest: usize) -> String {
    let mut s = history_list(prompt, drop_oldest);
    s.push_str(CHOICE_HEADER);
    for (i, ((_, title), letter)) in prompt
        .candidates
        .iter()
        .zip(CHOICE_LETTERS.chars())
        .enumerate()
    {
        s.push_str(&format!("{letter}. {}", title.trim()));
        if let Some(n) = prompt.popularity.as_ref().and_then(|p| p.get(i)) {
            s.push_str(&format!(" (bought {n} times)"));
        }
        s.push('\n');
    }
    s.push_str(ANSWER_CUE);
    s
}

/// A [`PromptStyle::Sequence`] prompt: header, history lines, rationale line, open marker.
fn sequence_prompt(prompt: &CandidatePrompt, drop_oldest: usize) -> String {
    let mut s = history_list(prompt, drop_oldest);
    s.push_str(SEQUENCE_MARKER);
    s
}

/// The header, one `- <title>` line per history title (the `drop_oldest` oldest left out) and
/// the rationale line: the start of the sequence and choice prompts.
fn history_list(prompt: &CandidatePrompt, drop_oldest: usize) -> String {
    let mut s = String::from(SEQUENCE_HEADER);
    for title in &prompt.history[drop_oldest.min(prompt.history.len())..] {
        s.push_str(&sequence_line(title));
    }
    push_rationale(&mut s, SEQUENCE_RATIONALE_CUE, prompt);
    s
}

/// Appends `<cue> <rationale>` and a newline when the prompt has a non-blank rationale
/// (whitespace collapsed to single spaces).
fn push_rationale(text: &mut String, cue: &str, prompt: &CandidatePrompt) {
    let rationale = normalize_whitespace(prompt.rationale.as_deref().unwrap_or(""));
    if !rationale.is_empty() {
        text.push_str(cue);
        text.push(' ');
        text.push_str(&rationale);
        text.push('\n');
    }
}

/// One history line of a [`PromptStyle::Sequence`] prompt: marker, space, title, newline.
pub(crate) fn sequence_line(title: &str) -> String {
    format!("{SEQUENCE_MARKER} {}\n", title.trim())
}

/// The user turn: customer, recent purchases, candidates and the question.
fn user_message(prompt: &CandidatePrompt, drop_oldest: usize) -> String {
    let mut s = format!("Customer {}.\n", prompt.user.0);
    let history = &prompt.history[drop_oldest.min(prompt.history.len())..];
    if history.is_empty() {
        s.push_str("No recent purchases are known.\n");
    } else {
        s.push_str("Recent purchases, oldest first:\n");
        for (i, title) in history.iter().enumerate() {
            s.push_str(&format!("{}. {}\n", i + 1, title.trim()));
        }
    }
    s.push_str("\nCandidates:\n");
    for (_, title) in &prompt.candidates {
        s.push_str(&format!("- {}\n", title.trim()));
    }
    s.push_str(
        "\nWhich candidate will the customer buy next? Reply with its title exactly as listed.",
    );
    s
}
