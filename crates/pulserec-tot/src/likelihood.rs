//! The "ToT with likelihood" ablation: chains scored by a language model's likelihood of the
//! item the user actually chose.
//!
//! # Definition
//! The score of a chain is the mean log-probability per token of the chosen item's title, given
//! the history and the chain:
//!
//! `score = mean_t log p(title_t | prompt(history, chain), title_<t)`
//!
//! where the prompt ([`PromptConfig::likelihood`], rendered with the model's own format) lists
//! the history titles, then `Reasoning: <chain>`, and the reply starts with "The customer's next
//! purchase:". It is the likelihood counterpart of the Thought-Space consistency score, which
//! also compares a chain with the actual choice: both ask how well the reasoning explains what
//! the user did. Averaging over tokens keeps long and short titles comparable.

use pulserec_core::{LikelihoodRequest, LikelihoodScorer, ThoughtScorer, UserContext};

use crate::prompt::{PromptConfig, PromptFormat};

/// Scores reasoning chains by a model's likelihood of the actual choice (see the module docs).
///
/// The model is any [`LikelihoodScorer`]; with `pulserec-slm`, pass a `SharedSlm` that also
/// generates the chains, so one copy of the model serves both.
pub struct LikelihoodThoughtScorer {
    model: Box<dyn LikelihoodScorer>,
    format: PromptFormat,
    prompts: PromptConfig,
}

impl std::fmt::Debug for LikelihoodThoughtScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LikelihoodThoughtScorer")
            .field("max_history", &self.prompts.max_history)
            .finish_non_exhaustive()
    }
}

impl LikelihoodThoughtScorer {
    /// A scorer over `model`, its prompts rendered with `format` (the model's chat template),
    /// showing at most the 15 most recent history titles.
    pub fn new(model: Box<dyn LikelihoodScorer>, format: PromptFormat) -> Self {
        Self {
            model,
            format,
            prompts: PromptConfig::default(),
        }
    }

    /// Shows at most `n` history titles (at least one).
    pub fn with_max_history(mut self, n: usize) -> Self {
        self.prompts.max_history = n.max(1);
        self
    }
}

impl ThoughtScorer for LikelihoodThoughtScorer {
    fn name(&self) -> &str {
        "likelihood"
    }

    fn score(
        &mut self,
        context: &UserContext,
        chains: &[String],
    ) -> pulserec_core::Result<Vec<f32>> {
        let mut out = self.score_batch(&[(context, chains)])?;
        Ok(out.pop().unwrap_or_default())
    }

    fn score_batch(
        &mut self,
        items: &[(&UserContext, &[String])],
    ) -> pulserec_core::Result<Vec<Vec<f32>>> {
        let mut requests = Vec::new();
        for (user, chains) in items {
            let target = user.target.as_ref().ok_or_else(|| {
                pulserec_core::Error::InvalidInput(format!(
                    "likelihood scoring needs the chosen item, and user {} has none",
                    user.user
                ))
            })?;
            for chain in chains.iter() {
                requests.push(LikelihoodRequest {
                    context: self.prompts.likelihood(user, chain).render(&self.format),
                    continuation: format!(" {}", target.title.trim()),
                });
            }
        }
        // One batched call for every chain of every user.
        let mut per_token = self.model.log_likelihoods(&requests)?.into_iter();
        Ok(items
            .iter()
            .map(|(_, chains)| {
                chains
                    .iter()
                    .map(|_| {
                        let lp = per_token.next().unwrap_or_default();
                        if lp.is_empty() {
                            f32::NEG_INFINITY
                        } else {
                            lp.iter().sum::<f32>() / lp.len() as f32
                        }
                    })
                    .collect()
            })
            .collect())
    }
}
