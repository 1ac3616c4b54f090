//! Batched generation with shared-prefix reuse and stop conditions.

use std::collections::HashMap;
use std::time::Instant;

use pulserec_core::{FinishReason, Generation, GenerationRequest};

use crate::cache::KvCache;
use crate::error::{Result, SlmError};
use crate::sampler::{Sampler, log_prob};
use crate::slm::Slm;

/// Token counts and wall time of a call, for throughput reports.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GenerationStats {
    /// Prompt tokens actually run through the model (shared prompts count once).
    pub prefill_tokens: usize,
    /// Seconds spent in prefill.
    pub prefill_secs: f64,
    /// Tokens generated (all rows).
    pub decode_tokens: usize,
    /// Seconds spent generating.
    pub decode_secs: f64,
}

impl GenerationStats {
    /// Prefill tokens per second.
    pub fn prefill_tok_s(&self) -> f64 {
        self.prefill_tokens as f64 / self.prefill_secs.max(1e-9)
    }

    /// Generated tokens per second (aggregate over rows).
    pub fn decode_tok_s(&self) -> f64 {
        self.decode_tokens as f64 / self.decode_secs.max(1e-9)
    }

    fn add(&mut self, o: &GenerationStats) {
        self.prefill_tokens += o.prefill_tokens;
        self.prefill_secs += o.prefill_secs;
        self.decode_tokens += o.decode_tokens;
        self.decode_secs += o.decode_secs;
    }
}

struct Row {
    req: usize,
    sampler: Sampler,
    ids: Vec<u32>,
    logprobs: Vec<f32>,
    text: String,
    finish: Option<FinishReason>,
}

/// One batch of work: distinct prompts, and `(request, prompt index)` per row.
pub(crate) type PromptChunk = (Vec<Vec<u32>>, Vec<(usize, usize)>);

/// Groups request indices by identical prompt (first-seen order), in chunks of at most `max`.
pub(crate) fn chunk_by_prompt(prompts: &[Vec<u32>], max: usize) -> Vec<PromptChunk> {
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    let mut first: HashMap<&[u32], usize> = HashMap::new();
    for (i, p) in prompts.iter().enumerate() {
        first.entry(p.as_slice()).or_insert(i);
    }
    order.sort_by_key(|&i| (first[prompts[i].as_slice()], i));
    order
        .chunks(max)
        .map(|chunk| {
            let mut uniques: Vec<Vec<u32>> = Vec::new();
            let mut rows = Vec::with_capacity(chunk.len());
            for &i in chunk {
                let u = match uniques.iter().position(|p| *p == prompts[i]) {
                    Some(u) => u,
                    None => {
                        uniques.push(prompts[i].clone());
                        uniques.len() - 1
                    }
                };
                rows.push((i, u));
            }
            (uniques, rows)
        })
        .collect()
}

impl Slm {
    /// Runs left-padded prompts through an empty cache; returns the cache and the logits at
    /// each prompt's last token (`[prompts, vocab]`).
    pub(crate) fn prefill(&self, prompts: &[Vec<u32>]) -> Result<(KvCache, Vec<f32>)> {
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let mut tokens = Vec::with_capacity(prompts.len() * longest);
        let mut pads = Vec::with_capacity(prompts.len());
        for p in prompts {
            pads.push(longest - p.len());
            tokens.extend(std::iter::repeat_n(0, longest - p.len()));
            tokens.extend_from_slice(p);
        }
        let mut cache = self.model.new_cache(prompts.len());
        let hidden = self
            .model
            .forward(&tokens, prompts.len(), &pads, &mut cache)?;
        Ok((cache, self.model.last_logits(hidden)?))
    }

    /// Completes token-id prompts; returns one generation per request plus timing.
    pub fn generate_ids(
        &self,
        prompts: &[Vec<u32>],
        requests: &[GenerationRequest],
    ) -> Result<(Vec<Generation>, GenerationStats)> {
        let ctx = self.model.config().max_position;
        for (i, (p, r)) in prompts.iter().zip(requests).enumerate() {
            if p.is_empty() {
                return Err(SlmError::InvalidRequest {
                    index: i,
                    reason: "empty prompt".into(),
                });
            }
            if p.len() + r.params.max_new_tokens > ctx {
                return Err(SlmError::ContextOverflow {
                    index: i,
                    tokens: p.len() + r.params.max_new_tokens,
                    context: ctx,
                });
            }
            Sampler::new(&r.params)
                .map_err(|reason| SlmError::InvalidRequest { index: i, reason })?;
        }
        let mut out: Vec<Option<Generation>> = vec![None; requests.len()];
        let mut stats = GenerationStats::default();
        for (uniques, rows) in chunk_by_prompt(prompts, self.max_batch) {
            let (gens, s) = self.generate_chunk(&uniques, &rows, requests)?;
            stats.add(&s);
            for (g, &(req, _)) in gens.into_iter().zip(&rows) {
                out[req] = Some(g);
            }
        }
        let gens = out
            .into_iter()
            .map(|g| g.ok_or_else(|| SlmError::Backend("a request produced no generation".into())))
            .collect::<Result<_>>()?;
        Ok((gens, stats))
    }

    fn generate_chunk(
        &self,
        uniques: &[Vec<u32>],
        rows: &[(usize, usize)],
        requests: &[GenerationRequest],
    ) -> Result<(Vec<Generation>, GenerationStats)> {
        let vocab = self.model.config().vocab_size;
        let t0 = Instant::now();
        let (cache, first_logits) = self.prefill(uniques)?;
        let mut stats = GenerationStats {
            prefill_tokens: uniques.iter().map(Vec::len).sum(),
            prefill_secs: t0.elapsed().as_secs_f64(),
            ..Default::default()
        };
        let t1 = Instant::now();
        let row_unique: Vec<usize> = rows.iter().map(|r| r.1).collect();
        let mut cache = cache.select_rows(&row_unique)?;
        let mut logits: Vec<f32> = row_unique
            .iter()
            .flat_map(|&u| first_logits[u * vocab..(u + 1) * vocab].iter().copied())
            .collect();
        let mut state: Vec<Row> = rows
            .iter()
            .map(|&(req, _)| Row {
                req,
                // Validated in `generate_ids`.
                sampler: Sampler::new(&requests[req].params).unwrap_or_else(|_| unreachable!()),
                ids: Vec::new(),
                logprobs: Vec::new(),
                text: String::new(),
                finish: (requests[req].params.max_new_tokens == 0).then_some(FinishReason::Length),
            })
            .collect();
        let mut active: Vec<usize> = (0..state.len())
            .filter(|&i| state[i].finish.is_none())
            .collect();
        if active.len() != state.len() {
            cache = cache.select_rows(&active)?;
            logits = active
                .iter()
                .flat_map(|&i| logits[i * vocab..(i + 1) * vocab].to_vec())
                .collect();
        }
        while !active.is_empty() {
            let mut next = Vec::with_capacity(active.len());
            for (slot, &i) in active.iter().enumerate() {
                let row = &mut state[i];
                let l = &logits[slot * vocab..(slot + 1) * vocab];
                let tok = row.sampler.sample(l);
                row.ids.push(tok);
                row.logprobs.push(log_prob(l, tok));
                stats.decode_tokens += 1;
                next.push(tok);
                let params = &requests[row.req].params;
                if self.tokenizer.eos_ids().contains(&tok) {
                    row.finish = Some(FinishReason::Eos);
                    continue;
                }
                row.text = self.tokenizer.decode(&row.ids, true)?;
                if let Some(cut) = params
                    .stop
                    .iter()
                    .filter(|s| !s.is_empty())
                    .filter_map(|s| row.text.find(s.as_str()))
                    .min()
                {
                    row.text.truncate(cut);
                    row.finish = Some(FinishReason::Stop);
                } else if row.ids.len() >= params.max_new_tokens {
                    row.finish = Some(FinishReason::Length);
                }
            }
            let keep: Vec<usize> = (0..active.len())
                .filter(|&s| state[active[s]].finish.is_none())
                .collect();
            if keep.is_empty() {
                break;
            }
            if keep.len() != active.len() {
                cache = cache.select_rows(&keep)?;
                next = keep.iter().map(|&s| next[s]).collect();
                active = keep.iter().map(|&s| active[s]).collect();
            }
            let hidden = self.model.forward(&next, active.len(), &[], &mut cache)?;
            logits = self.model.last_logits(hidden)?;
        }
        stats.decode_secs = t1.elapsed().as_secs_f64();
        let gens = state
            .into_iter()
            .map(|r| Generation {
                text: r.text,
                token_ids: r.ids,
                logprobs: r.logprobs,
                finish: r.finish.unwrap_or(FinishReason::Length),
            })
            .collect();
        Ok((gens, stats))
    }

    /// Completes text prompts (special tokens in the text are recognised).
    pub fn generate_with_stats(
        &self,
        requests: &[GenerationRequest],
    ) -> Result<(Vec<Generation>, GenerationStats)> {
        let prompts = requests
            .iter()
            .map(|r| self.tokenizer.encode(&r.prompt))
            .collect::<Result<Vec<_>>>()?;
        self.generate_ids(&prompts, requests)
    }
}

impl pulserec_core::TextGenerator for Slm {
    fn generate(
        &mut self,
        requests: &[GenerationRequest],
    ) -> pulserec_core::Result<Vec<Generation>> {
        Ok(self.generate_with_stats(requests)?.0)
    }
}
