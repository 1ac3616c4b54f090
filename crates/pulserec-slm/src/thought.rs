//! The "ToT with likelihood" ablation: chains scored by the SLM's own likelihood.
//!
//! # Definition
//! The score of a chain is the mean log-probability per token of the item the user actually
//! chose, given their history and the chain:
//!
//! `score = mean_t log p(title_t | prompt(history, chain), title_<t)`
//!
//! where the prompt (the model's chat format, no system turn) lists the history titles, then
//! "Reasoning: <chain>", and the assistant's reply starts with "The customer's next purchase:".
//! It is the likelihood counterpart of the Thought-Space consistency score, which also compares a
//! chain with the actual choice: both ask how well the reasoning explains what the user did.
//! Averaging over tokens keeps long and short titles comparable.

use pulserec_core::{LikelihoodRequest, LikelihoodScorer, ThoughtScorer, UserContext};

use crate::error::SlmError;
use crate::slm::Slm;

/// Scores reasoning chains by the SLM's likelihood of the actual choice (see the module docs).
///
/// It owns its model: load the same weights twice when the same SLM also generates the chains
/// (a 135M model costs ~100 MB quantised).
#[derive(Debug)]
pub struct LikelihoodThoughtScorer {
    slm: Slm,
    max_history: usize,
}

impl LikelihoodThoughtScorer {
    /// A scorer showing at most the 15 most recent history titles.
    pub fn new(slm: Slm) -> Self {
        Self {
            slm,
            max_history: 15,
        }
    }

    /// Shows at most `n` history titles.
    pub fn with_max_history(mut self, n: usize) -> Self {
        self.max_history = n.max(1);
        self
    }

    /// The context text for a chain.
    fn context(&self, user: &UserContext, chain: &str) -> Result<String, SlmError> {
        let mut text = String::from("A customer bought, oldest first:\n");
        let start = user.history.len().saturating_sub(self.max_history);
        for h in &user.history[start..] {
            text.push_str("- ");
            text.push_str(h.title.trim());
            text.push('\n');
        }
        text.push_str("\nReasoning: ");
        text.push_str(chain.trim());
        text.push_str("\n\nWhich item did they buy next?");
        let mut prompt = self.slm.chat_prompt(None, &text)?;
        prompt.push_str("The customer's next purchase:");
        Ok(prompt)
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
                    context: self.context(user, chain)?,
                    continuation: format!(" {}", target.title.trim()),
                });
            }
        }
        // One batched call for every chain of every user.
        let mut per_token = self.slm.log_likelihoods(&requests)?.into_iter();
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
