//! Stage 1: hindsight rationales ("why did this user choose that item?").

use pulserec_core::{
    GenerationRequest, Rationale, RationaleGenerator, RationaleSource, SamplingParams,
    TextGenerator, UserContext,
};
use serde::{Deserialize, Serialize};

use crate::batch::generate_exact;
use crate::error::{Result, TotError};
use crate::parse::parse_rationale;
use crate::prompt::{PROMPT_VERSION, Prompt, PromptConfig, PromptFormat, plain_format};
use pulserec_core::seed::derive_seed;

/// Settings of stage-1 generation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HindsightConfig {
    /// How to sample; `seed` is ignored (each user gets a seed derived from [`Self::seed`]).
    pub sampling: SamplingParams,
    /// What the prompt shows.
    pub prompts: PromptConfig,
    /// The run's seed.
    pub seed: u64,
    /// Users per generate call.
    pub batch_size: usize,
}

impl HindsightConfig {
    /// The paper's settings: one sample per user, temperature 0.7, up to 150 new tokens.
    pub fn paper(seed: u64) -> Self {
        Self {
            sampling: SamplingParams {
                temperature: 0.7,
                max_new_tokens: 150,
                ..SamplingParams::default()
            },
            prompts: PromptConfig::default(),
            seed,
            batch_size: 16,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(TotError::config("batch_size", "must be at least 1"));
        }
        if self.sampling.max_new_tokens == 0 {
            return Err(TotError::config(
                "sampling.max_new_tokens",
                "must be at least 1",
            ));
        }
        if !(self.sampling.temperature.is_finite() && self.sampling.temperature >= 0.0) {
            return Err(TotError::config(
                "sampling.temperature",
                "must be finite and >= 0 (0: greedy)",
            ));
        }
        Ok(())
    }

    /// The sampling seed of a user's rationale.
    pub fn user_seed(&self, user: pulserec_core::UserId) -> u64 {
        derive_seed(self.seed, &[u64::from(user.0)])
    }
}

/// A hindsight rationale with what is needed to reproduce and audit it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HindsightOutput {
    /// The rationale.
    pub rationale: Rationale,
    /// The model's raw output.
    pub raw: String,
    /// The sampling seed used.
    pub seed: u64,
    /// Tokens generated.
    pub tokens: usize,
    /// [`PROMPT_VERSION`] of the prompt.
    pub prompt_version: String,
}

/// Counts of outputs that parsed as asked versus those that needed the fallback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseStats {
    /// Outputs seen.
    pub total: usize,
    /// Outputs that needed the fallback extraction.
    pub failures: usize,
}

impl ParseStats {
    /// Share of outputs that needed the fallback (0 when none were seen).
    pub fn failure_rate(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.failures as f64 / self.total as f64
        }
    }
}

/// Stage-1 rationales from any [`TextGenerator`]: one batched generate call per batch of users.
pub struct HindsightRationales<G> {
    generator: G,
    config: HindsightConfig,
    format: PromptFormat,
    stats: ParseStats,
}

impl<G: TextGenerator> HindsightRationales<G> {
    /// A generator with checked settings and the template-free [`plain_format`].
    pub fn new(generator: G, config: HindsightConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            generator,
            config,
            format: Box::new(plain_format),
            stats: ParseStats::default(),
        })
    }

    /// Uses `format` (normally the model's chat template) to turn prompts into model input.
    pub fn with_format(mut self, format: PromptFormat) -> Self {
        self.format = format;
        self
    }

    /// The settings.
    pub fn config(&self) -> &HindsightConfig {
        &self.config
    }

    /// Parse outcomes so far.
    pub fn stats(&self) -> ParseStats {
        self.stats
    }

    /// The generator back.
    pub fn into_generator(self) -> G {
        self.generator
    }

    /// Rationales with their raw outputs and seeds, one per user, in order.
    pub fn generate(&mut self, users: &[UserContext]) -> Result<Vec<HindsightOutput>> {
        let mut out = Vec::with_capacity(users.len());
        for batch in users.chunks(self.config.batch_size) {
            let prompts: Vec<Prompt> = batch
                .iter()
                .map(|ctx| self.config.prompts.hindsight(ctx))
                .collect();
            let requests: Vec<GenerationRequest> = batch
                .iter()
                .zip(&prompts)
                .map(|(ctx, prompt)| GenerationRequest {
                    prompt: prompt.render(&self.format),
                    params: SamplingParams {
                        seed: self.config.user_seed(ctx.user),
                        ..self.config.sampling.clone()
                    },
                })
                .collect();
            let generations = generate_exact(&mut self.generator, &requests)?;
            for (((ctx, request), prompt), generation) in
                batch.iter().zip(&requests).zip(&prompts).zip(generations)
            {
                // The reply is the answer prefix the prompt started, then what the model wrote,
                // unless the model ignored the prefix and wrote its own JSON object.
                let reply = if generation.text.trim_start().starts_with('{') {
                    generation.text.clone()
                } else {
                    format!(
                        "{}{}",
                        prompt.answer_prefix.as_deref().unwrap_or(""),
                        generation.text
                    )
                };
                let parsed = parse_rationale(&reply);
                self.stats.total += 1;
                if !parsed.parsed {
                    self.stats.failures += 1;
                    tracing::debug!(user = %ctx.user, raw = %generation.text, "rationale fallback");
                }
                out.push(HindsightOutput {
                    rationale: Rationale {
                        user: ctx.user,
                        text: parsed.text,
                        source: RationaleSource::Hindsight,
                        score: None,
                        parsed: parsed.parsed,
                    },
                    tokens: generation.token_count(),
                    raw: generation.text,
                    seed: request.params.seed,
                    prompt_version: PROMPT_VERSION.to_string(),
                });
            }
            tracing::debug!(users = batch.len(), stats = ?self.stats, "hindsight batch done");
        }
        Ok(out)
    }
}

impl<G: TextGenerator> RationaleGenerator for HindsightRationales<G> {
    fn rationales(&mut self, users: &[UserContext]) -> pulserec_core::Result<Vec<Rationale>> {
        Ok(self
            .generate(users)?
            .into_iter()
            .map(|o| o.rationale)
            .collect())
    }
}
