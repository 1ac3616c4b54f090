//! Log-likelihood of continuations given contexts, batched, with shared contexts run once.

use burn::tensor::{Int, Tensor, TensorData};
use pulserec_core::LikelihoodRequest;

use crate::error::{Result, SlmError};
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
        pulserec_core::on_pool(|| self.score_ids_on_pool(contexts, continuations))
    }

    fn score_ids_on_pool(
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
        // Requests grouped by context: each distinct context is prefilled exactly once, up to
        // `max_batch` contexts at a time, shortest first, so contexts padded together have
        // similar lengths (every request's result goes to its own slot; the order is free).
        let mut groups: Vec<(&[u32], Vec<usize>)> = Vec::new();
        let mut index: std::collections::HashMap<&[u32], usize> = Default::default();
        for (req, c) in contexts.iter().enumerate() {
            let g = *index.entry(c.as_slice()).or_insert_with(|| {
                groups.push((c.as_slice(), Vec::new()));
                groups.len() - 1
            });
            groups[g].1.push(req);
        }
        groups.sort_by_key(|(c, _)| c.len());
        for chunk in groups.chunks(self.max_batch) {
            let uniques: Vec<Vec<u32>> = chunk.iter().map(|(c, _)| c.to_vec()).collect();
            // Room for the longest continuation scored on these contexts.
            let reserve = chunk
                .iter()
                .flat_map(|(_, requests)| requests.iter().map(|&r| continuations[r].len()))
                .max()
                .unwrap_or(0);
            let (cache, first, _) = self.prefill(&uniques, reserve)?;
            let mut rows: Vec<(usize, usize)> = Vec::new();
            for (u, (_, requests)) in chunk.iter().enumerate() {
                for &req in requests {
                    if let Some(&t) = continuations[req].first() {
                        out[req].push(log_prob(&first[u * vocab..(u + 1) * vocab], t));
                    }
                    if continuations[req].len() >= 2 {
                        rows.push((req, u));
                    }
                }
            }
            // The rest of every continuation, shortest first, `max_batch` rows per pass, so
            // rows padded together have similar lengths.
            rows.sort_by_key(|&(req, _)| continuations[req].len());
            for batch in rows.chunks(self.max_batch) {
                self.score_rest(&cache, batch, continuations, &mut out)?;
            }
        }
        Ok(out)
    }
}

impl Slm {
    /// Log-probabilities of tokens 2.. of each row's continuation, given the prefilled context
    /// `cache` row `u` of each `(request, u)` row; appended to `out[request]`.
    fn score_rest(
        &self,
        cache: &crate::cache::KvCache,
        rows: &[(usize, usize)],
        continuations: &[Vec<u32>],
        out: &mut [Vec<f32>],
    ) -> Result<()> {
        let vocab = self.model.config().vocab_size;
        // Continuations minus their last token, right-padded: causal attention keeps the
        // padding from affecting the real positions, which are the only ones read.
        let t = rows
            .iter()
            .map(|&(r, _)| continuations[r].len() - 1)
            .max()
            .unwrap_or(0);
        if t == 0 {
            return Ok(());
        }
        // At least two positions: one new token per row would take the decode kernels, and a
        // continuation's scores must not depend on the lengths of the others in its batch.
        let t = t.max(2);
        let mut tokens = Vec::with_capacity(rows.len() * t);
        for &(r, _) in rows {
            let c = &continuations[r];
            let n = c.len() - 1;
            tokens.extend_from_slice(&c[..n]);
            tokens.extend(std::iter::repeat_n(0, t - n));
        }
        let mut cache = cache.select_rows(&rows.iter().map(|r| r.1).collect::<Vec<_>>())?;
        let hidden = self.model.forward(&tokens, rows.len(), &[], &mut cache)?;
        let d = self.model.config().hidden_size;
        let mut pick = Vec::new();
        for (slot, &(r, _)) in rows.iter().enumerate() {
            for j in 0..continuations[r].len() - 1 {
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
        for &(r, _) in rows {
            for &next in continuations[r].iter().skip(1) {
                out[r].push(log_prob(&logits[k * vocab..(k + 1) * vocab], next));
                k += 1;
            }
        }
        Ok(())
    }
}

impl Slm {
    /// Per-token log-probabilities of each request's continuation given its context (texts;
    /// the continuation is tokenised as text following the context, [`SlmTokenizer::encode_continuation`]).
    ///
    /// [`SlmTokenizer::encode_continuation`]: crate::SlmTokenizer::encode_continuation
    pub fn score_texts(&self, requests: &[LikelihoodRequest]) -> Result<Vec<Vec<f32>>> {
        let ctx = requests
            .iter()
            .map(|r| self.tokenizer.encode(&r.context))
            .collect::<Result<Vec<_>>>()?;
        let cont = requests
            .iter()
            .map(|r| self.tokenizer.encode_continuation(&r.continuation))
            .collect::<Result<Vec<_>>>()?;
        self.score_ids(&ctx, &cont)
    }
}

impl pulserec_core::LikelihoodScorer for Slm {
    fn log_likelihoods(
        &mut self,
        requests: &[LikelihoodRequest],
    ) -> pulserec_core::Result<Vec<Vec<f32>>> {
        Ok(self.score_texts(requests)?)
    }
}

/// One model shared by several users (a Tree-of-Thought search that generates with it and
/// scores with it): its methods take `&self`.
impl pulserec_core::LikelihoodScorer for crate::SharedSlm {
    fn log_likelihoods(
        &mut self,
        requests: &[LikelihoodRequest],
    ) -> pulserec_core::Result<Vec<Vec<f32>>> {
        Ok(self.score_texts(requests)?)
    }
}
