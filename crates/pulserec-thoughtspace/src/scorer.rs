//! The paper's Tree-of-Thought scorer: consistency of a chain with the user's behaviour.

use std::collections::HashMap;

use ndarray::Array1;
use pulserec_core::{ThoughtScorer, UserContext};

use crate::error::{Result, ThoughtSpaceError};
use crate::space::{ThoughtSpace, normalize_rows};

/// Behaviour embeddings kept between calls (ToT scores the same user at every depth).
const CACHE_LIMIT: usize = 4096;

/// `cosine(rationale_encoder(chain), behaviour_encoder(history + choice))`.
///
/// Chains are embedded in length-sorted batches; each user's behaviour embedding is cached by
/// its text.
pub struct ConsistencyScorer {
    space: ThoughtSpace,
    cache: HashMap<String, Array1<f32>>,
}

impl ConsistencyScorer {
    /// Wraps a (trained) space; it is moved off any autodiff device.
    pub fn new(space: ThoughtSpace) -> Self {
        let device = space.behaviour().device().clone().without_autodiff();
        Self {
            space: space.to_device(&device),
            cache: HashMap::new(),
        }
    }

    /// The space in use.
    pub fn space(&self) -> &ThoughtSpace {
        &self.space
    }

    /// Scores the chains of many users at once: all behaviour texts in one encoder call, all
    /// chains in another. `out[u][c]` is the score of `items[u].1[c]`.
    pub fn score_batch(&mut self, items: &[(&UserContext, &[String])]) -> Result<Vec<Vec<f32>>> {
        let texts: Vec<String> = items
            .iter()
            .map(|(ctx, _)| self.space.renderer().render(ctx))
            .collect();
        let missing: Vec<&str> = {
            let mut seen = std::collections::HashSet::new();
            texts
                .iter()
                .filter(|t| !self.cache.contains_key(*t) && seen.insert(t.as_str()))
                .map(String::as_str)
                .collect()
        };
        if !missing.is_empty() {
            let emb = normalize_rows(self.space.behaviour().encode_all(&missing)?);
            if self.cache.len() + missing.len() > CACHE_LIMIT {
                self.cache.clear();
            }
            for (text, row) in missing.iter().zip(emb.outer_iter()) {
                self.cache.insert(text.to_string(), row.to_owned());
            }
        }
        let chains: Vec<&str> = items
            .iter()
            .flat_map(|(_, c)| c.iter().map(String::as_str))
            .collect();
        if let Some(i) = chains.iter().position(|c| c.trim().is_empty()) {
            tracing::debug!(chain = i, "empty chain scored");
        }
        let chain_emb = normalize_rows(self.space.rationale().encode_all(&chains)?);
        let mut out = Vec::with_capacity(items.len());
        let mut row = 0;
        for ((_, user_chains), text) in items.iter().zip(&texts) {
            let b = self.cache.get(text).ok_or_else(|| {
                ThoughtSpaceError::InvalidInput("behaviour embedding cache lost an entry".into())
            })?;
            let scores = (0..user_chains.len())
                .map(|c| chain_emb.row(row + c).dot(b))
                .collect();
            row += user_chains.len();
            out.push(scores);
        }
        Ok(out)
    }
}

impl ThoughtScorer for ConsistencyScorer {
    fn name(&self) -> &str {
        "consistency"
    }

    fn score(
        &mut self,
        context: &UserContext,
        chains: &[String],
    ) -> pulserec_core::Result<Vec<f32>> {
        if chains.is_empty() {
            return Ok(Vec::new());
        }
        if context.target.is_none() {
            tracing::warn!(user = %context.user, "consistency score without the chosen item");
        }
        let mut out = ConsistencyScorer::score_batch(self, &[(context, chains)])?;
        Ok(out.pop().unwrap_or_default())
    }

    fn score_batch(
        &mut self,
        items: &[(&UserContext, &[String])],
    ) -> pulserec_core::Result<Vec<Vec<f32>>> {
        // The inherent method encodes every behaviour text and every chain in one call each.
        Ok(ConsistencyScorer::score_batch(self, items)?)
    }
}
