//! Log-likelihood of continuations given contexts, batched, with shared contexts run once.

use burn::tensor::{Int, Tensor, TensorData};
use pulserec_core::LikelihoodRequest;

use crate::error::{Result, SlmError};
use crate::generate::chunk_by_prompt;
use crate::sampler::log_prob;
use crate::slm::Slm;

impl Slm {
    /// Per-token log-probabilities of each continuation given its context (token ids).
    ///
    /// Contexts shared by several requests are prefilled once. An empty context is replaced by
    /// the BOS (or else EOS) token so the first continuation token has a prediction.
    pub fn score_ids(
        &self,
        contexts: &[Vec<u32>],
        continuations: &[Vec<u32>],
    ) -> Result<Vec<Vec<f32>>> {
        let ctx_len = self.model.config().max_position;
        let start = self
            .tokenizer
            .bos_id()
            .or(self.tokenizer.eos_ids().first().copied())
            .unwrap_or(0);
        let contexts: Vec<Vec<u32>> = contexts
            .iter()
            .map(|c| if c.is_empty() { vec![start] } else { c.clone() })
            .collect();
        for (i, (c, k)) in contexts.iter().zip(continuations).enumerate() {
            if c.len() + k.len() > ctx_len {
                return Err(SlmError::ContextOverflow {
                    index: i,
                    tokens: c.len() + k.len(),
                    context: ctx_len,
                });
            }
        }
        let vocab = self.model.config().vocab_size;
        let mut out = vec![Vec::new(); contexts.len()];
        for (uniques, rows) in chunk_by_prompt(&contexts, self.max_batch) {
            let (cache, first) = self.prefill(&uniques)?;
            for &(req, u) in &rows {
                if let Some(&t) = continuations[req].first() {
                    out[req].push(log_prob(&first[u * vocab..(u + 1) * vocab], t));
                }
            }
            // Continuations minus their last token, right-padded: causal attention keeps the
            // padding from affecting the real positions, which are the only ones read.
            let longest = rows
                .iter()
                .map(|&(r, _)| continuations[r].len())
                .max()
                .unwrap_or(0);
            if longest < 2 {
                continue;
            }
            let t = longest - 1;
            let mut tokens = Vec::with_capacity(rows.len() * t);
            for &(r, _) in &rows {
                let c = &continuations[r];
                let n = c.len().saturating_sub(1);
                tokens.extend_from_slice(&c[..n]);
                tokens.extend(std::iter::repeat_n(0, t - n));
            }
            let mut cache = cache.select_rows(&rows.iter().map(|r| r.1).collect::<Vec<_>>())?;
            let hidden = self.model.forward(&tokens, rows.len(), &[], &mut cache)?;
            let d = self.model.config().hidden_size;
            let mut pick = Vec::new();
            for (slot, &(r, _)) in rows.iter().enumerate() {
                for j in 0..continuations[r].len().saturating_sub(1) {
                    pick.push((slot * t + j) as i64);
                }
            }
            let idx = Tensor::<1, Int>::from_data(
                TensorData::new(pick.clone(), [pick.len()]),
                self.model.device(),
            );
            let rows_h = hidden.reshape([rows.len() * t, d]).select(0, idx);
            let logits = self.model.logits(rows_h)?;
            let mut k = 0;
            for &(r, _) in &rows {
                let c = &continuations[r];
                for &next in c.iter().skip(1) {
                    out[r].push(log_prob(&logits[k * vocab..(k + 1) * vocab], next));
                    k += 1;
                }
            }
        }
        Ok(out)
    }
}

impl pulserec_core::LikelihoodScorer for Slm {
    fn log_likelihoods(
        &mut self,
        requests: &[LikelihoodRequest],
    ) -> pulserec_core::Result<Vec<Vec<f32>>> {
        let ctx = requests
            .iter()
            .map(|r| self.tokenizer.encode(&r.context))
            .collect::<Result<Vec<_>>>()?;
        let cont = requests
            .iter()
            .map(|r| self.tokenizer.encode_continuation(&r.continuation))
            .collect::<Result<Vec<_>>>()?;
        Ok(self.score_ids(&ctx, &cont)?)
    }
}
