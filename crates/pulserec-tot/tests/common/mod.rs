//! Scripted stand-ins for a language model and a scorer.

#![allow(dead_code)] // each test file uses a different part

use std::collections::{HashMap, VecDeque};

use pulserec_core::{
    FinishReason, Generation, GenerationRequest, TextGenerator, ThoughtScorer, UserContext,
};

/// Answers each generate call with the next scripted batch of texts, recording the requests.
#[derive(Default)]
pub struct Scripted {
    pub batches: VecDeque<Vec<String>>,
    pub calls: Vec<Vec<GenerationRequest>>,
}

impl Scripted {
    pub fn new(batches: &[&[&str]]) -> Self {
        Self {
            batches: batches
                .iter()
                .map(|b| b.iter().map(|s| s.to_string()).collect())
                .collect(),
            calls: Vec::new(),
        }
    }
}

pub fn generation(text: String) -> Generation {
    let n = text.split_whitespace().count();
    Generation {
        text,
        token_ids: vec![0; n],
        logprobs: vec![0.0; n],
        finish: FinishReason::Eos,
    }
}

impl TextGenerator for Scripted {
    fn generate(
        &mut self,
        requests: &[GenerationRequest],
    ) -> pulserec_core::Result<Vec<Generation>> {
        self.calls.push(requests.to_vec());
        let batch = self.batches.pop_front().unwrap_or_default();
        Ok(batch.into_iter().map(generation).collect())
    }
}

/// Writes a thought named after the request's seed, so texts depend only on seeds.
#[derive(Default)]
pub struct BySeed {
    pub calls: Vec<usize>,
}

impl TextGenerator for BySeed {
    fn generate(
        &mut self,
        requests: &[GenerationRequest],
    ) -> pulserec_core::Result<Vec<Generation>> {
        self.calls.push(requests.len());
        Ok(requests
            .iter()
            .map(|r| generation(format!("Thought {:x}.", r.params.seed)))
            .collect())
    }
}

/// Scores chains from a table (unknown chains score 0), or by length when the table is empty.
#[derive(Default)]
pub struct Table {
    pub scores: HashMap<String, f32>,
    pub calls: Vec<Vec<String>>,
    /// Users per `score_batch` call.
    pub batches: Vec<usize>,
}

impl Table {
    pub fn new(scores: &[(&str, f32)]) -> Self {
        Self {
            scores: scores.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            calls: Vec::new(),
            batches: Vec::new(),
        }
    }
}

impl ThoughtScorer for Table {
    fn name(&self) -> &str {
        "table"
    }

    fn score(&mut self, _: &UserContext, chains: &[String]) -> pulserec_core::Result<Vec<f32>> {
        self.calls.push(chains.to_vec());
        Ok(chains
            .iter()
            .map(|c| {
                if self.scores.is_empty() {
                    c.len() as f32
                } else {
                    self.scores.get(c).copied().unwrap_or(0.0)
                }
            })
            .collect())
    }

    fn score_batch(
        &mut self,
        items: &[(&UserContext, &[String])],
    ) -> pulserec_core::Result<Vec<Vec<f32>>> {
        self.batches.push(items.len());
        items
            .iter()
            .map(|(ctx, chains)| self.score(ctx, chains))
            .collect()
    }
}
