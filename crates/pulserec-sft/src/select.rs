//! SLM recommenders: [`CandidateSelector`]s over any text generator or likelihood scorer.
//!
//! - [`GenerativeSelector`]: the model writes an answer after the cue (paper: temperature 0.3,
//!   top-p 0.9, at most 59 new tokens, seeded per user), mapped to a candidate by
//!   [`PromptStyle::chosen_index`] (the paper's title match, or the letter of a choice prompt).
//! - [`LikelihoodSelector`]: every candidate's answer text is scored after the cue; the best
//!   mean (or summed) token log-probability is chosen, and the scores rank all candidates (for
//!   NDCG@k); with a [`PopularityPrior`] each score also gets the candidate's prior term.

use pulserec_core::baselines::select_by_scores;
use pulserec_core::{
    CandidatePrompt, CandidateSelector, GenerationRequest, LikelihoodRequest, LikelihoodScorer,
    SamplingParams, Selection, TextGenerator,
};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::data::{Stream, rng_for};
use crate::error::one_per_request;
use crate::prior::PopularityPrior;
use crate::prompt::PromptStyle;

/// Sampling settings of the generative selector.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerativeConfig {
    /// Softmax temperature (paper: 0.3; 0 is greedy).
    pub temperature: f32,
    /// Nucleus mass (paper: 0.9).
    pub top_p: Option<f32>,
    /// Most new tokens (paper: 59).
    pub max_new_tokens: usize,
    /// Extra stop strings (the model's end of turn ends generation anyway).
    pub stop: Vec<String>,
    /// Run seed; each user's request gets its own seed derived from it.
    pub seed: u64,
}

impl GenerativeConfig {
    /// The paper's test-time sampling with `seed`.
    pub fn paper(seed: u64) -> Self {
        Self {
            temperature: 0.3,
            top_p: Some(0.9),
            max_new_tokens: 59,
            stop: Vec::new(),
            seed,
        }
    }
}

/// Asks a [`TextGenerator`] for an answer and maps it to a candidate.
#[derive(Debug)]
pub struct GenerativeSelector<G> {
    generator: G,
    style: PromptStyle,
    config: GenerativeConfig,
}

impl<G: TextGenerator> GenerativeSelector<G> {
    /// A selector rendering prompts with `style`.
    pub fn new(generator: G, style: PromptStyle, config: GenerativeConfig) -> Self {
        Self {
            generator,
            style,
            config,
        }
    }

    /// Gives the generator back.
    pub fn into_inner(self) -> G {
        self.generator
    }
}

impl<G: TextGenerator> CandidateSelector for GenerativeSelector<G> {
    fn select(&mut self, prompts: &[CandidatePrompt]) -> pulserec_core::Result<Vec<Selection>> {
        let requests: Vec<GenerationRequest> = prompts
            .iter()
            .map(|p| GenerationRequest {
                prompt: self.style.render(p),
                params: SamplingParams {
                    temperature: self.config.temperature,
                    top_k: None,
                    top_p: self.config.top_p,
                    max_new_tokens: self.config.max_new_tokens,
                    stop: self.config.stop.clone(),
                    seed: rng_for(self.config.seed, Stream::Generation, p.user.0).next_u64(),
                },
            })
            .collect();
        let generations = one_per_request(
            "generate",
            prompts.len(),
            self.generator.generate(&requests),
        )?;
        Ok(prompts
            .iter()
            .zip(generations)
            .map(|(p, g)| {
                let chosen = self.style.chosen_index(p, &g.text);
                Selection {
                    chosen: chosen.map(|i| p.candidates[i].0),
                    answer: g.text,
                    scores: None,
                }
            })
            .collect())
    }
}

/// How token log-probabilities of a candidate's answer become one score.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduction {
    /// Mean log-probability per token (does not favour short titles).
    #[default]
    Mean,
    /// Total log-probability (the answer's probability).
    Sum,
}

/// Settings of the likelihood selector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LikelihoodConfig {
    /// Mean or sum.
    pub reduction: Reduction,
    /// Score the end-of-turn marker after the title too, so a title that is only the start of
    /// what the model would write scores lower.
    pub include_end_of_turn: bool,
}

impl Default for LikelihoodConfig {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            include_end_of_turn: true,
        }
    }
}

/// Ranks candidates by their answers' likelihood under a [`LikelihoodScorer`].
#[derive(Debug)]
pub struct LikelihoodSelector<S> {
    scorer: S,
    style: PromptStyle,
    config: LikelihoodConfig,
    prior: Option<PopularityPrior>,
}

impl<S: LikelihoodScorer> LikelihoodSelector<S> {
    /// A selector rendering prompts with `style`.
    pub fn new(scorer: S, style: PromptStyle, config: LikelihoodConfig) -> Self {
        Self {
            scorer,
            style,
            config,
            prior: None,
        }
    }

    /// Adds `prior`'s score of each candidate to its likelihood score, as the ranking objective
    /// did in training ([`crate::prior`]).
    pub fn with_prior(mut self, prior: PopularityPrior) -> Self {
        self.prior = Some(prior);
        self
    }

    /// Gives the scorer back.
    pub fn into_inner(self) -> S {
        self.scorer
    }
}

impl<S: LikelihoodScorer> CandidateSelector for LikelihoodSelector<S> {
    /// The best-scoring candidate is chosen (the first listed on a tie); `answer` is empty.
    fn select(&mut self, prompts: &[CandidatePrompt]) -> pulserec_core::Result<Vec<Selection>> {
        let mut requests = Vec::new();
        for p in prompts {
            let context = self.style.render(p);
            for index in 0..p.candidates.len() {
                let continuation = if self.config.include_end_of_turn {
                    self.style.target(p, index)
                } else {
                    self.style.answer(p, index)
                };
                let continuation = continuation.ok_or_else(|| {
                    pulserec_core::Error::InvalidInput(format!(
                        "user {}: {} candidates do not fit the prompt style",
                        p.user,
                        p.candidates.len()
                    ))
                })?;
                requests.push(LikelihoodRequest {
                    context: context.clone(),
                    continuation,
                });
            }
        }
        let logprobs = one_per_request(
            "log_likelihoods",
            requests.len(),
            self.scorer.log_likelihoods(&requests),
        )?;
        let mut rows = logprobs.into_iter();
        Ok(prompts
            .iter()
            .map(|p| {
                let scores: Vec<f32> = rows
                    .by_ref()
                    .take(p.candidates.len())
                    .zip(&p.candidates)
                    .map(|(lp, (item, _))| {
                        let prior = self.prior.as_ref().map_or(0.0, |q| q.offset(*item));
                        reduce(&lp, self.config.reduction) + prior
                    })
                    .collect();
                select_by_scores(p, scores)
            })
            .collect())
    }
}

/// One score from token log-probabilities; an empty continuation scores `-inf`.
fn reduce(logprobs: &[f32], reduction: Reduction) -> f32 {
    if logprobs.is_empty() {
        return f32::NEG_INFINITY;
    }
    let sum: f32 = logprobs.iter().sum();
    match reduction {
        Reduction::Sum => sum,
        Reduction::Mean => sum / logprobs.len() as f32,
    }
}
