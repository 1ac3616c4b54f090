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
    /// Prompt tokens actually run through the model (shared prompts count once; a prefix
    /// reused from the prefix store does not count).
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

/// Prompts of one prefill that share at least this many leading tokens, and this many more than
/// the prefix store gives them, run them once ([`Slm::share_prefixes`]).
pub(crate) const SHARED_PREFIX: usize = 32;

/// Prompt indices with the cache and last-token logits of their prefill.
type Prefilled = (Vec<usize>, (KvCache, Vec<f32>));

impl Slm {
    /// Runs prompts through a new cache; returns the cache (row `i`: prompt `i`), the logits at
    /// each prompt's last token (`[prompts, vocab]`) and the number of prompt tokens run.
    ///
    /// A prompt that shares at least [`crate::prefix::MIN_REUSE`] leading tokens with one kept
    /// in the prefix store starts from that prompt's keys and values and runs only the rest.
    /// Prompts that share at least [`SHARED_PREFIX`] more leading tokens with another prompt of
    /// the call than the store gives them (the chains of one user that a scorer rates, the
    /// prompts of one search level) get that prefix run once and start from it the same way
    /// ([`Slm::share_prefixes`]). The others are run whole, left-padded to the longest. Every
    /// prompt is then kept in the store. `reserve` spare slots are allocated for what will
    /// follow.
    pub(crate) fn prefill(
        &self,
        prompts: &[Vec<u32>],
        reserve: usize,
    ) -> Result<(KvCache, Vec<f32>, usize)> {
        let mut reused: Vec<Option<(KvCache, usize)>> = {
            let mut store = self.store()?;
            prompts.iter().map(|p| store.longest(p)).collect()
        };
        let mut run = self.share_prefixes(prompts, &mut reused)?;
        let (warm, cold): (Vec<usize>, Vec<usize>) =
            (0..prompts.len()).partition(|&i| reused[i].is_some());
        let mut parts = Vec::new();
        if !cold.is_empty() {
            let group: Vec<&[u32]> = cold.iter().map(|&i| prompts[i].as_slice()).collect();
            run += group.iter().map(|p| p.len()).sum::<usize>();
            parts.push((cold, self.prefill_padded(&group, reserve)?));
        }
        if !warm.is_empty() {
            let prefixes: Vec<(&KvCache, usize)> = warm
                .iter()
                .filter_map(|&i| reused[i].as_ref().map(|(kv, n)| (kv, *n)))
                .collect();
            let mut cache = KvCache::from_prefixes(&prefixes, reserve)?;
            let rests: Vec<&[u32]> = warm
                .iter()
                .zip(&prefixes)
                .map(|(&i, &(_, n))| &prompts[i][n..])
                .collect();
            run += rests.iter().map(|p| p.len()).sum::<usize>();
            let logits = self.run_padded(&rests, &mut cache)?;
            parts.push((warm, (cache, logits)));
        }
        let (cache, logits) = self.in_prompt_order(parts, prompts.len())?;
        let mut store = self.store()?;
        for (r, p) in prompts.iter().enumerate() {
            if store.would_keep(p) {
                store.insert(p.clone(), cache.compact_row(r)?);
            }
        }
        Ok((cache, logits, run))
    }

    /// Finds the prefixes of at least [`SHARED_PREFIX`] tokens that two or more prompts share
    /// and that reach at least [`SHARED_PREFIX`] tokens past what the prefix store gives them
    /// (`reused`), runs each once ([`Slm::prefill`] again, so a prefix itself starts from the
    /// store or from a shorter shared prefix), and points the prompts at them in `reused`.
    /// Returns the prompt tokens run.
    ///
    /// Each prompt's candidate is the longest prefix it shares with a neighbour in sorted
    /// order; a candidate that is itself the start of a longer one is dropped, and its prompts
    /// start from the longer one's first slots. A prompt's numbers are those of a whole prefill
    /// (see the prefix store).
    fn share_prefixes(
        &self,
        prompts: &[Vec<u32>],
        reused: &mut [Option<(KvCache, usize)>],
    ) -> Result<usize> {
        let lcp = |a: &[u32], b: &[u32]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let stored: Vec<usize> = reused
            .iter()
            .map(|r| r.as_ref().map_or(0, |(_, n)| *n))
            .collect();
        let mut order: Vec<usize> = (0..prompts.len()).collect();
        order.sort_by(|&a, &b| prompts[a].cmp(&prompts[b]));
        order.dedup_by(|a, b| prompts[*a] == prompts[*b]);
        let mut prefixes: Vec<&[u32]> = Vec::new();
        for (k, &i) in order.iter().enumerate() {
            let next = order
                .get(k + 1)
                .map_or(0, |&j| lcp(&prompts[i], &prompts[j]));
            let prev = k
                .checked_sub(1)
                .map_or(0, |j| lcp(&prompts[order[j]], &prompts[i]));
            // The last token always runs, for its logits.
            let n = next.max(prev).min(prompts[i].len() - 1);
            if n >= SHARED_PREFIX.max(stored[i] + SHARED_PREFIX) {
                prefixes.push(&prompts[i][..n]);
            }
        }
        prefixes.sort_unstable();
        prefixes.dedup();
        // Sorted, a prefix of a longer candidate comes right before the longest that extends it.
        let kept: Vec<Vec<u32>> = prefixes
            .iter()
            .enumerate()
            .filter(|&(k, p)| !prefixes[k + 1..].iter().any(|q| q.starts_with(p)))
            .map(|(_, p)| p.to_vec())
            .collect();
        if kept.is_empty() {
            return Ok(0);
        }
        // Each prefix is shorter than a prompt that extends it: the recursion ends.
        let (batch, _, run) = self.prefill(&kept, 0)?;
        let rows = (0..kept.len())
            .map(|r| batch.compact_row(r))
            .collect::<Result<Vec<_>>>()?;
        for (i, slot) in reused.iter_mut().enumerate() {
            let best = kept
                .iter()
                .enumerate()
                .map(|(r, p)| (r, lcp(p, &prompts[i]).min(prompts[i].len() - 1)))
                .max_by_key(|&(_, n)| n);
            if let Some((r, n)) = best.filter(|&(_, n)| n >= SHARED_PREFIX && n > stored[i]) {
                *slot = Some((rows[r].clone(), n));
            }
        }
        Ok(run)
    }

    fn store(&self) -> Result<std::sync::MutexGuard<'_, crate::prefix::PrefixStore>> {
        self.prefixes
            .lock()
            .map_err(|_| SlmError::Backend("the prefix store's lock is poisoned".into()))
    }

    /// Runs prompts, left-padded to the longest, through an empty cache.
    fn prefill_padded(&self, prompts: &[&[u32]], reserve: usize) -> Result<(KvCache, Vec<f32>)> {
        let mut cache = self.model.new_cache(prompts.len()).with_reserve(reserve);
        let logits = self.run_padded(prompts, &mut cache)?;
        Ok((cache, logits))
    }

    /// Appends one token sequence per cache row, each left-padded to the longest (the padding
    /// hidden); returns the logits at each row's last token.
    fn run_padded(&self, rows: &[&[u32]], cache: &mut KvCache) -> Result<Vec<f32>> {
        // At least two positions, so a prompt never runs on the decode kernels: a row's
        // numbers must not depend on the lengths of the other rows in its batch.
        let longest = rows.iter().map(|p| p.len()).max().unwrap_or(0).max(2);
        let mut tokens = Vec::with_capacity(rows.len() * longest);
        let mut pads = Vec::with_capacity(rows.len());
        for p in rows {
            pads.push(longest - p.len());
            tokens.extend(std::iter::repeat_n(0, longest - p.len()));
            tokens.extend_from_slice(p);
        }
        let hidden = self.model.forward(&tokens, rows.len(), &pads, cache)?;
        self.model.last_logits(hidden)
    }

    /// Joins the caches and logits of groups of prompts (`(prompt indices, (cache, logits))`)
    /// into one batch in prompt order; a shorter cache is left-padded with hidden slots.
    fn in_prompt_order(&self, mut parts: Vec<Prefilled>, n: usize) -> Result<(KvCache, Vec<f32>)> {
        if parts.len() == 1 {
            let (order, (cache, logits)) = parts.remove(0);
            if order.iter().enumerate().all(|(i, &p)| i == p) {
                return Ok((cache, logits));
            }
            parts.push((order, (cache, logits)));
        }
        let vocab = self.model.config().vocab_size;
        let mut row_of = vec![0; n];
        let mut logits = vec![0.0; n * vocab];
        let mut offset = 0;
        for (order, (_, part_logits)) in &parts {
            for (r, &p) in order.iter().enumerate() {
                row_of[p] = offset + r;
                logits[p * vocab..(p + 1) * vocab]
                    .copy_from_slice(&part_logits[r * vocab..(r + 1) * vocab]);
            }
            offset += order.len();
        }
        let joined = KvCache::cat_rows(parts.into_iter().map(|(_, (c, _))| c).collect())?;
        Ok((joined.select_rows(&row_of)?, logits))
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
            let (gens, s) =
                pulserec_core::on_pool(|| self.generate_chunk(&uniques, &rows, requests))?;
            stats.add(&s);
            for (g, &(req, _)) in gens.into_iter().zip(&rows) {
                out[req] = Some(g);
            }
        }
        let gens = out
            .into_iter()
            .map(|g| g.ok_or_else(|| SlmError::Backend("a request produced no generation".into())))
            .collect::<Result<_>>()?;
        tracing::debug!(
            requests = requests.len(),
            prefill_tokens = stats.prefill_tokens,
            prefill_secs = stats.prefill_secs,
            decode_tokens = stats.decode_tokens,
            decode_secs = stats.decode_secs,
            "generate call done"
        );
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
        let reserve = rows
            .iter()
            .map(|&(req, _)| requests[req].params.max_new_tokens)
            .max()
            .unwrap_or(0);
        let (cache, first_logits, prefilled) = self.prefill(uniques, reserve)?;
        let mut stats = GenerationStats {
            prefill_tokens: prefilled,
            prefill_secs: t0.elapsed().as_secs_f64(),
            ..Default::default()
        };
        let t1 = Instant::now();
        let row_unique: Vec<usize> = rows.iter().map(|r| r.1).collect();
        // On the host the rows read their prompt's slots in place, once per prompt per step;
        // elsewhere each row gets a copy.
        let mut cache = if self.model.decodes_on_host() {
            cache.fork(&row_unique, reserve)?
        } else {
            cache.select_rows(&row_unique)?
        };
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
        // `slots[s]` is the state row in cache row `s`. A finished row stays in the batch (fed
        // its last token, its outputs ignored) until a quarter of the batch is finished: then
        // the cache is compacted. Copying the cache costs about as much as a few steps of the
        // rows it holds, so compacting at every finish cost more than it saved.
        let mut slots: Vec<usize> = (0..state.len()).collect();
        let mut next: Vec<u32> = vec![0; slots.len()];
        loop {
            for (slot, &i) in slots.iter().enumerate() {
                let row = &mut state[i];
                if row.finish.is_some() {
                    continue;
                }
                let l = &logits[slot * vocab..(slot + 1) * vocab];
                let tok = row.sampler.sample(l);
                row.ids.push(tok);
                row.logprobs.push(log_prob(l, tok));
                stats.decode_tokens += 1;
                next[slot] = tok;
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
            let keep: Vec<usize> = (0..slots.len())
                .filter(|&s| state[slots[s]].finish.is_none())
                .collect();
            if keep.is_empty() {
                break;
            }
            if (slots.len() - keep.len()) * 4 >= slots.len() {
                cache = cache.select_rows(&keep)?;
                next = keep.iter().map(|&s| next[s]).collect();
                slots = keep.iter().map(|&s| slots[s]).collect();
            }
            let hidden = self.model.forward(&next, slots.len(), &[], &mut cache)?;
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

/// One model shared by several users (generation and likelihood scoring in one run): its
/// methods take `&self`.
impl pulserec_core::TextGenerator for crate::SharedSlm {
    fn generate(
        &mut self,
        requests: &[GenerationRequest],
    ) -> pulserec_core::Result<Vec<Generation>> {
        Ok(self.generate_with_stats(requests)?.0)
    }
}
