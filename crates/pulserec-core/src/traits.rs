//! The stage traits: how PULSE's stages meet.
//!
//! They speak domain types and plain arrays only, so an implementation needs no burn: a remote
//! LM server, an encoder trained elsewhere or a classic recommender can stand in for any stage.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::ids::{ItemId, UserId};

/// Sampling settings for one generation request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Softmax temperature; `0.0` means greedy (argmax).
    pub temperature: f32,
    /// Keep only the `k` most likely tokens (`None`: no limit).
    pub top_k: Option<usize>,
    /// Nucleus sampling mass (`None` or `1.0`: no limit).
    pub top_p: Option<f32>,
    /// Maximum number of new tokens.
    pub max_new_tokens: usize,
    /// Generation stops when the text ends with one of these (the stop string is removed).
    pub stop: Vec<String>,
    /// Seed of this request's sampler; the same seed gives the same text.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            max_new_tokens: 64,
            stop: Vec::new(),
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding of up to `max_new_tokens` tokens.
    pub fn greedy(max_new_tokens: usize) -> Self {
        Self {
            max_new_tokens,
            ..Self::default()
        }
    }
}

/// One prompt to complete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationRequest {
    /// The full prompt text, already chat-templated where the model needs it.
    pub prompt: String,
    /// How to sample.
    pub params: SamplingParams,
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinishReason {
    /// The model produced its end-of-sequence token.
    Eos,
    /// A stop string was produced.
    Stop,
    /// `max_new_tokens` was reached.
    Length,
}

/// A completed generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The generated text (without the prompt or stop string).
    pub text: String,
    /// Generated token ids.
    pub token_ids: Vec<u32>,
    /// Log-probability of each generated token under the sampling distribution's model logits
    /// (NaN where a remote server did not give it).
    pub logprobs: Vec<f32>,
    /// Why generation stopped.
    pub finish: FinishReason,
}

impl Generation {
    /// Generated tokens: the ids where the generator knows them, else the log-probabilities (a
    /// remote server gives neither ids nor, unless asked, log-probabilities; its generator fills
    /// the latter with NaN from the response's token count).
    pub fn token_count(&self) -> usize {
        self.token_ids.len().max(self.logprobs.len())
    }
}

/// Completes prompts (an SLM in-process, or a remote LM server).
pub trait TextGenerator {
    /// Completes every request; the output has one entry per request, in order.
    fn generate(&mut self, requests: &[GenerationRequest]) -> Result<Vec<Generation>>;
}

/// A (context, continuation) pair whose likelihood is wanted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LikelihoodRequest {
    /// Conditioning text.
    pub context: String,
    /// Text whose tokens are scored.
    pub continuation: String,
}

/// Scores continuations under a language model.
pub trait LikelihoodScorer {
    /// Per-token log-probabilities of each continuation given its context.
    fn log_likelihoods(&mut self, requests: &[LikelihoodRequest]) -> Result<Vec<Vec<f32>>>;
}

/// Embeds texts.
pub trait TextEncoder {
    /// Embedding width.
    fn dim(&self) -> usize;
    /// One row per text, `[texts.len(), dim]`.
    fn encode(&self, texts: &[&str]) -> Result<Array2<f32>>;
}

/// One past interaction as shown to a language model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The item.
    pub item: ItemId,
    /// Its (cleaned) title.
    pub title: String,
    /// The user's rating, when the data has one.
    pub rating: Option<f32>,
    /// The user's review text, when the data has one.
    pub review: Option<String>,
}

/// What the stages know about one user when they reason about them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UserContext {
    /// The user.
    pub user: UserId,
    /// Training history, oldest first (never the valid/test items).
    pub history: Vec<HistoryEntry>,
    /// The item the user chose next, shown in hindsight prompts and behaviour text only.
    pub target: Option<HistoryEntry>,
    /// Items of the most similar users (Tree-of-Thought prompts).
    pub similar_items: Vec<HistoryEntry>,
}

/// Scores candidate reasoning chains for a user (higher is better).
pub trait ThoughtScorer {
    /// A short name stored with every score (e.g. `"consistency"`, `"likelihood"`).
    fn name(&self) -> &str;
    /// One score per chain.
    fn score(&mut self, context: &UserContext, chains: &[String]) -> Result<Vec<f32>>;

    /// Scores the chains of many users in one call: `out[u][c]` is the score of `items[u].1[c]`.
    /// Scorers backed by a model override this to batch the model calls; the default asks
    /// [`ThoughtScorer::score`] once per user.
    fn score_batch(&mut self, items: &[(&UserContext, &[String])]) -> Result<Vec<Vec<f32>>> {
        items
            .iter()
            .map(|(ctx, chains)| self.score(ctx, chains))
            .collect()
    }
}

/// Where a rationale came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RationaleSource {
    /// Stage 1: the SLM explained a choice it was shown.
    Hindsight,
    /// Stage 3: the best Tree-of-Thought chain under some scorer.
    TreeOfThought,
}

/// A rationale for one user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rationale {
    /// The user.
    pub user: UserId,
    /// The rationale text.
    pub text: String,
    /// How it was made.
    pub source: RationaleSource,
    /// The scorer's score, for Tree-of-Thought rationales.
    pub score: Option<f32>,
    /// Whether the model's output parsed as asked (false: a fallback extraction was used).
    pub parsed: bool,
}

/// Writes rationales for users.
pub trait RationaleGenerator {
    /// One rationale per context, in order.
    fn rationales(&mut self, users: &[UserContext]) -> Result<Vec<Rationale>>;
}

/// An ID- or text-based next-item recommender.
pub trait SequentialRecommender {
    /// Scores of each user's candidates: `out[u][j]` is the score of `candidates[u][j]`.
    fn score_candidates(
        &self,
        histories: &[&[ItemId]],
        candidates: &[&[ItemId]],
    ) -> Result<Vec<Vec<f32>>>;
    /// The `k` best items of the whole catalogue per user, best first; items in the user's
    /// history are excluded when `exclude_history` is set.
    fn top_k(
        &self,
        histories: &[&[ItemId]],
        k: usize,
        exclude_history: bool,
    ) -> Result<Vec<Vec<(ItemId, f32)>>>;
}

/// A candidate-selection prompt for an SLM recommender.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CandidatePrompt {
    /// The user.
    pub user: UserId,
    /// Recent history titles, oldest first (what a language model is shown).
    pub history: Vec<String>,
    /// The whole history before the target as item ids, oldest first (what an ID recommender
    /// such as SASRec or popularity reads); empty when the caller has no ids.
    #[serde(default)]
    pub history_items: Vec<ItemId>,
    /// Candidate items with titles, in the order shown.
    pub candidates: Vec<(ItemId, String)>,
    /// A rationale to include ("let me think: ..."), if the variant uses one.
    pub rationale: Option<String>,
    /// How many training interactions each candidate has, in the order shown, when the prompt
    /// should show them (a prompt style may print them beside the titles); `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub popularity: Option<Vec<u32>>,
}

/// What a candidate selector chose.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Selection {
    /// The chosen candidate, when the answer could be mapped to one.
    pub chosen: Option<ItemId>,
    /// The raw answer text (empty for pure likelihood ranking).
    pub answer: String,
    /// Per-candidate scores, when the selector ranks (same order as the prompt's candidates).
    pub scores: Option<Vec<f32>>,
}

/// Picks the next item from a candidate list.
pub trait CandidateSelector {
    /// One selection per prompt, in order.
    fn select(&mut self, prompts: &[CandidatePrompt]) -> Result<Vec<Selection>>;
}

// Boxed stages are stages too, so a pipeline can choose implementations at run time
// (`Box<dyn ThoughtScorer>` from a config value) and still hand them to generic code.

impl<T: TextGenerator + ?Sized> TextGenerator for Box<T> {
    fn generate(&mut self, requests: &[GenerationRequest]) -> Result<Vec<Generation>> {
        (**self).generate(requests)
    }
}

impl<T: LikelihoodScorer + ?Sized> LikelihoodScorer for Box<T> {
    fn log_likelihoods(&mut self, requests: &[LikelihoodRequest]) -> Result<Vec<Vec<f32>>> {
        (**self).log_likelihoods(requests)
    }
}

impl<T: ThoughtScorer + ?Sized> ThoughtScorer for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn score(&mut self, context: &UserContext, chains: &[String]) -> Result<Vec<f32>> {
        (**self).score(context, chains)
    }
    fn score_batch(&mut self, items: &[(&UserContext, &[String])]) -> Result<Vec<Vec<f32>>> {
        (**self).score_batch(items)
    }
}

impl<T: RationaleGenerator + ?Sized> RationaleGenerator for Box<T> {
    fn rationales(&mut self, users: &[UserContext]) -> Result<Vec<Rationale>> {
        (**self).rationales(users)
    }
}

impl<T: CandidateSelector + ?Sized> CandidateSelector for Box<T> {
    fn select(&mut self, prompts: &[CandidatePrompt]) -> Result<Vec<Selection>> {
        (**self).select(prompts)
    }
}
