//! Stage 3: Tree-of-Thought beam search over any [`TextGenerator`] and [`ThoughtScorer`].
//!
//! The algorithm, per user:
//! 1. the beam starts as the empty chain;
//! 2. at each depth `d = 1..=depth`, every chain in the beam gets `branching` sampled next
//!    thoughts (one batched generate call per depth across *all* users of the batch; sibling
//!    requests are adjacent so a generator can reuse their common prompt prefix);
//! 3. a child whose parsed text is empty, or whose normalised text
//!    ([`normalize_for_match`]: lower-case, punctuation stripped, whitespace collapsed) equals an
//!    earlier sibling's, is dropped unscored;
//! 4. the remaining children's chains (all thoughts from the first one, joined by spaces) are
//!    scored in one scorer call per depth across all users, and the `beam_width` best become
//!    the beam (ties: the earlier generated child wins; a NaN score ranks last);
//! 5. a user whose depth yields no scorable child stops; its last beam is final.
//!
//! The refined rationale is the best chain of the final beam ([`ThoughtTree::rationale`]).
//! Child seeds are `derive_seed(seed, [user, depth, parent + 1 (0 for the root), child])`.

use pulserec_core::text::normalize_for_match;
use pulserec_core::{
    GenerationRequest, Rationale, RationaleGenerator, SamplingParams, TextGenerator, ThoughtScorer,
    UserContext,
};
use serde::{Deserialize, Serialize};

use crate::batch::generate_exact;
use crate::error::{Result, TotError};
use crate::parse::parse_thought;
use crate::prompt::{PromptConfig, PromptFormat, plain_format};
use crate::tree::{NodeStatus, ThoughtNode, ThoughtTree};
use pulserec_core::seed::derive_seed;

/// Settings of the Tree-of-Thought search.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TotConfig {
    /// Thoughts per chain.
    pub depth: usize,
    /// Children sampled per beam node.
    pub branching: usize,
    /// Chains kept per depth.
    pub beam_width: usize,
    /// Most sentences kept of one thought.
    pub max_sentences: usize,
    /// How to sample; `seed` is ignored (each child's seed is derived from [`Self::seed`]).
    pub sampling: SamplingParams,
    /// What the prompts show.
    pub prompts: PromptConfig,
    /// The run's seed.
    pub seed: u64,
    /// Users searched together (one generate call per depth for all of them).
    pub batch_size: usize,
}

impl TotConfig {
    /// The paper's settings: depth 3, branching 3, beam width 2, temperature 1.0, top-k 51,
    /// top-p 0.95, up to 61 new tokens per thought.
    pub fn paper(seed: u64) -> Self {
        Self {
            depth: 3,
            branching: 3,
            beam_width: 2,
            max_sentences: 2,
            sampling: SamplingParams {
                temperature: 1.0,
                top_k: Some(51),
                top_p: Some(0.95),
                max_new_tokens: 61,
                ..SamplingParams::default()
            },
            prompts: PromptConfig::default(),
            seed,
            batch_size: 16,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("depth", self.depth),
            ("branching", self.branching),
            ("beam_width", self.beam_width),
            ("max_sentences", self.max_sentences),
            ("batch_size", self.batch_size),
            ("sampling.max_new_tokens", self.sampling.max_new_tokens),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(TotError::config(field, "must be at least 1"));
            }
        }
        if !(self.sampling.temperature.is_finite() && self.sampling.temperature >= 0.0) {
            return Err(TotError::config(
                "sampling.temperature",
                "must be finite and >= 0 (0: greedy)",
            ));
        }
        if let Some(p) = self.sampling.top_p
            && !(p.is_finite() && p > 0.0 && p <= 1.0)
        {
            return Err(TotError::config("sampling.top_p", "must be in (0, 1]"));
        }
        Ok(())
    }

    /// The seed of child `child` of `parent` (`None`: the root) at `depth` for `user`.
    pub fn child_seed(
        &self,
        user: pulserec_core::UserId,
        depth: usize,
        parent: Option<usize>,
        child: usize,
    ) -> u64 {
        let parent = parent.map_or(0, |p| p as u64 + 1);
        derive_seed(
            self.seed,
            &[u64::from(user.0), depth as u64, parent, child as u64],
        )
    }
}

/// Tree-of-Thought search with a generator that proposes thoughts and a scorer that ranks chains.
pub struct TreeOfThought<G, S> {
    generator: G,
    scorer: S,
    config: TotConfig,
    format: PromptFormat,
}

/// Which user and parent a request of a depth's batch belongs to.
struct Slot {
    user: usize,
    parent: Option<usize>,
    child: usize,
    seed: u64,
}

impl<G: TextGenerator, S: ThoughtScorer> TreeOfThought<G, S> {
    /// A search with checked settings and the template-free [`plain_format`].
    pub fn new(generator: G, scorer: S, config: TotConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            generator,
            scorer,
            config,
            format: Box::new(plain_format),
        })
    }

    /// Uses `format` (normally the model's chat template) to turn prompts into model input.
    pub fn with_format(mut self, format: PromptFormat) -> Self {
        self.format = format;
        self
    }

    /// The settings.
    pub fn config(&self) -> &TotConfig {
        &self.config
    }

    /// The scorer's name, stored with scores.
    pub fn scorer_name(&self) -> &str {
        self.scorer.name()
    }

    /// The generator and scorer back.
    pub fn into_parts(self) -> (G, S) {
        (self.generator, self.scorer)
    }

    /// Searches every user and returns their whole trees, in order.
    pub fn search(&mut self, users: &[UserContext]) -> Result<Vec<ThoughtTree>> {
        let mut trees = Vec::with_capacity(users.len());
        for batch in users.chunks(self.config.batch_size) {
            trees.extend(self.search_batch(batch)?);
        }
        Ok(trees)
    }

    fn search_batch(&mut self, users: &[UserContext]) -> Result<Vec<ThoughtTree>> {
        let mut trees: Vec<ThoughtTree> = users.iter().map(|c| ThoughtTree::new(c.user)).collect();
        let mut beams: Vec<Vec<Option<usize>>> = vec![vec![None]; users.len()];
        for depth in 1..=self.config.depth {
            let (requests, slots) = self.level_requests(users, &trees, &beams, depth);
            if requests.is_empty() {
                break;
            }
            let generations = generate_exact(&mut self.generator, &requests)?;
            // Add every child to its tree, dropping empty and duplicate ones.
            let mut fresh: Vec<Vec<usize>> = vec![Vec::new(); users.len()];
            let mut seen: Vec<Vec<(Option<usize>, String)>> = vec![Vec::new(); users.len()];
            for (slot, generation) in slots.iter().zip(generations) {
                let parsed = parse_thought(&generation.text, self.config.max_sentences);
                let key = normalize_for_match(&parsed.text);
                let status = if key.is_empty() {
                    NodeStatus::Empty
                } else if seen[slot.user].contains(&(slot.parent, key.clone())) {
                    NodeStatus::Duplicate
                } else {
                    seen[slot.user].push((slot.parent, key));
                    fresh[slot.user].push(trees[slot.user].nodes.len());
                    NodeStatus::Pruned
                };
                let tokens = generation.token_count();
                trees[slot.user].nodes.push(ThoughtNode {
                    parent: slot.parent,
                    depth,
                    child: slot.child,
                    text: parsed.text,
                    raw: generation.text,
                    parsed: parsed.parsed,
                    score: None,
                    status,
                    seed: slot.seed,
                    tokens,
                });
            }
            let scores = self.score_level(users, &trees, &fresh)?;
            for (u, scores) in scores.into_iter().enumerate() {
                beams[u] = self.select(&mut trees[u], &fresh[u], &scores);
            }
            tracing::debug!(
                depth,
                requests = requests.len(),
                active = beams.iter().filter(|b| !b.is_empty()).count(),
                "tree-of-thought depth done"
            );
        }
        Ok(trees)
    }

    /// The requests of one depth: `branching` per beam chain of every user, siblings adjacent.
    fn level_requests(
        &self,
        users: &[UserContext],
        trees: &[ThoughtTree],
        beams: &[Vec<Option<usize>>],
        depth: usize,
    ) -> (Vec<GenerationRequest>, Vec<Slot>) {
        let mut requests = Vec::new();
        let mut slots = Vec::new();
        for (u, ctx) in users.iter().enumerate() {
            for &parent in &beams[u] {
                let chain = trees[u].chain(parent);
                let prompt = self
                    .config
                    .prompts
                    .tot_step(ctx, &chain)
                    .render(&self.format);
                for child in 0..self.config.branching {
                    let seed = self.config.child_seed(ctx.user, depth, parent, child);
                    requests.push(GenerationRequest {
                        prompt: prompt.clone(),
                        params: SamplingParams {
                            seed,
                            ..self.config.sampling.clone()
                        },
                    });
                    slots.push(Slot {
                        user: u,
                        parent,
                        child,
                        seed,
                    });
                }
            }
        }
        (requests, slots)
    }

    /// Scores the fresh nodes of every user in one scorer call; `out[u]` is parallel to
    /// `fresh[u]` (empty for users with nothing fresh).
    fn score_level(
        &mut self,
        users: &[UserContext],
        trees: &[ThoughtTree],
        fresh: &[Vec<usize>],
    ) -> Result<Vec<Vec<f32>>> {
        let chains: Vec<Vec<String>> = fresh
            .iter()
            .zip(trees)
            .map(|(f, tree)| f.iter().map(|&i| tree.chain_text(i)).collect())
            .collect();
        let asked: Vec<usize> = (0..users.len())
            .filter(|&u| !chains[u].is_empty())
            .collect();
        let items: Vec<(&UserContext, &[String])> = asked
            .iter()
            .map(|&u| (&users[u], chains[u].as_slice()))
            .collect();
        let scored = if items.is_empty() {
            Vec::new()
        } else {
            self.scorer.score_batch(&items).map_err(TotError::Score)?
        };
        if scored.len() != items.len() {
            return Err(TotError::ScoreCount {
                scorer: self.scorer.name().to_string(),
                expected: items.len(),
                got: scored.len(),
            });
        }
        let mut out = vec![Vec::new(); users.len()];
        for (&u, scores) in asked.iter().zip(scored) {
            if scores.len() != chains[u].len() {
                return Err(TotError::ScoreCount {
                    scorer: self.scorer.name().to_string(),
                    expected: chains[u].len(),
                    got: scores.len(),
                });
            }
            out[u] = scores;
        }
        Ok(out)
    }

    /// Records the scores of one user's fresh nodes and marks the best `beam_width` as kept.
    fn select(
        &self,
        tree: &mut ThoughtTree,
        fresh: &[usize],
        scores: &[f32],
    ) -> Vec<Option<usize>> {
        if fresh.is_empty() {
            return Vec::new();
        }
        for (&i, &s) in fresh.iter().zip(scores) {
            tree.nodes[i].score = Some(s);
        }
        let rank = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
        let mut order: Vec<usize> = (0..fresh.len()).collect();
        // A stable sort keeps generation order among equal scores.
        order.sort_by(|&a, &b| rank(scores[b]).total_cmp(&rank(scores[a])));
        let mut beam: Vec<usize> = order
            .into_iter()
            .take(self.config.beam_width)
            .map(|j| fresh[j])
            .collect();
        beam.sort_unstable();
        for &i in &beam {
            tree.nodes[i].status = NodeStatus::Kept;
        }
        beam.into_iter().map(Some).collect()
    }
}

impl<G: TextGenerator, S: ThoughtScorer> RationaleGenerator for TreeOfThought<G, S> {
    fn rationales(&mut self, users: &[UserContext]) -> pulserec_core::Result<Vec<Rationale>> {
        Ok(self
            .search(users)?
            .iter()
            .map(ThoughtTree::rationale)
            .collect())
    }
}
