//! The Thought Space: a behaviour encoder and a rationale encoder sharing one embedding space.

use std::path::Path;

use burn::tensor::Device;
use ndarray::{Array2, Axis};
use serde::{Deserialize, Serialize};

use crate::config::read_json;
use crate::encoder::{EncoderOptions, SentenceEncoder};
use crate::error::{Result, ThoughtSpaceError};
use crate::pairs::TrainingPair;
use crate::render::BehaviourRenderer;

/// File name of the checkpoint description inside a checkpoint directory.
pub const CHECKPOINT_FILE: &str = "thought_space.json";

/// What a checkpoint directory records besides the two encoder directories.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// Layout version of the checkpoint directory.
    pub format_version: u32,
    /// How behaviour text is rendered from user contexts.
    pub renderer: BehaviourRenderer,
    /// Free-form training record (config, epoch, step, seed, losses), written by the trainer.
    #[serde(default)]
    pub training: serde_json::Value,
}

/// Two sentence encoders: behaviour ("what": history + chosen item) and rationale ("why").
#[derive(Clone, Debug)]
pub struct ThoughtSpace {
    behaviour: SentenceEncoder,
    rationale: SentenceEncoder,
    renderer: BehaviourRenderer,
}

/// Retrieval accuracy of behaviour -> own rationale among a group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetrievalReport {
    /// Share of anchors whose most similar rationale in their group is their own (or a rationale
    /// with the same text: identical rationales cannot be told apart).
    pub accuracy: f64,
    /// Mean reciprocal rank of the own rationale text (ties counted pessimistically).
    pub mrr: f64,
    /// Mean cosine to the own rationale minus mean cosine to the others of the group.
    pub margin: f64,
    /// Anchors scored.
    pub n: usize,
    /// Group size (the last group may be smaller).
    pub group_size: usize,
}

impl ThoughtSpace {
    /// Both encoders initialised from the same pretrained directory (loaded twice, so the two
    /// are independent parameters).
    pub fn from_pretrained(dir: &Path, options: &EncoderOptions, device: &Device) -> Result<Self> {
        Ok(Self {
            behaviour: SentenceEncoder::from_dir_with(dir, options, device)?,
            rationale: SentenceEncoder::from_dir_with(dir, options, device)?,
            renderer: BehaviourRenderer::default(),
        })
    }

    /// Assembles a space from two encoders of the same width.
    pub fn new(
        behaviour: SentenceEncoder,
        rationale: SentenceEncoder,
        renderer: BehaviourRenderer,
    ) -> Result<Self> {
        let (b, r) = (
            behaviour.config().hidden_size,
            rationale.config().hidden_size,
        );
        if b != r {
            return Err(ThoughtSpaceError::InvalidInput(format!(
                "behaviour encoder width {b} differs from rationale encoder width {r}"
            )));
        }
        Ok(Self {
            behaviour,
            rationale,
            renderer,
        })
    }

    /// Loads a checkpoint written by [`Self::save`].
    pub fn load(dir: &Path, options: &EncoderOptions, device: &Device) -> Result<Self> {
        let info: CheckpointInfo = {
            let path = dir.join(CHECKPOINT_FILE);
            serde_json::from_value(read_json(&path)?)
                .map_err(|source| ThoughtSpaceError::Json { path, source })?
        };
        Self::new(
            SentenceEncoder::from_dir_with(&dir.join("behaviour"), options, device)?,
            SentenceEncoder::from_dir_with(&dir.join("rationale"), options, device)?,
            info.renderer,
        )
    }

    /// Writes `dir/behaviour/`, `dir/rationale/` (HF / sentence-transformers directories) and
    /// `dir/thought_space.json`.
    pub fn save(&self, dir: &Path, training: serde_json::Value) -> Result<()> {
        self.behaviour.save(&dir.join("behaviour"))?;
        self.rationale.save(&dir.join("rationale"))?;
        let info = CheckpointInfo {
            format_version: 1,
            renderer: self.renderer.clone(),
            training,
        };
        let path = dir.join(CHECKPOINT_FILE);
        let text =
            serde_json::to_string_pretty(&info).map_err(|source| ThoughtSpaceError::Json {
                path: path.clone(),
                source,
            })?;
        pulserec_core::fs::write_atomic(&path, text.as_bytes())
            .map_err(|e| ThoughtSpaceError::io(&path, e))
    }

    /// The behaviour encoder.
    pub fn behaviour(&self) -> &SentenceEncoder {
        &self.behaviour
    }

    /// The rationale encoder.
    pub fn rationale(&self) -> &SentenceEncoder {
        &self.rationale
    }

    /// The behaviour-text rendering.
    pub fn renderer(&self) -> &BehaviourRenderer {
        &self.renderer
    }

    /// Replaces the behaviour-text rendering.
    pub fn with_renderer(mut self, renderer: BehaviourRenderer) -> Self {
        self.renderer = renderer;
        self
    }

    /// Replaces both encoders (used by the trainer).
    pub(crate) fn with_encoders(
        mut self,
        behaviour: SentenceEncoder,
        rationale: SentenceEncoder,
    ) -> Self {
        self.behaviour = behaviour;
        self.rationale = rationale;
        self
    }

    /// Both encoders moved to `device`.
    pub fn to_device(&self, device: &Device) -> Self {
        Self {
            behaviour: self.behaviour.to_device(device),
            rationale: self.rationale.to_device(device),
            renderer: self.renderer.clone(),
        }
    }

    /// Behaviour and rationale embeddings of `pairs`, L2-normalised (`[n, dim]` each).
    pub fn embed_pairs(&self, pairs: &[TrainingPair]) -> Result<(Array2<f32>, Array2<f32>)> {
        let b: Vec<&str> = pairs.iter().map(|p| p.behaviour.as_str()).collect();
        let r: Vec<&str> = pairs.iter().map(|p| p.rationale.as_str()).collect();
        Ok((
            normalize_rows(self.behaviour.encode_all(&b)?),
            normalize_rows(self.rationale.encode_all(&r)?),
        ))
    }

    /// Behaviour -> own-rationale retrieval among consecutive groups of `group_size` pairs.
    pub fn retrieval(&self, pairs: &[TrainingPair], group_size: usize) -> Result<RetrievalReport> {
        if group_size < 2 || pairs.len() < 2 {
            return Err(ThoughtSpaceError::InvalidInput(format!(
                "retrieval needs groups of >= 2 and >= 2 pairs (group {group_size}, {} pairs)",
                pairs.len()
            )));
        }
        let (b, r) = self.embed_pairs(pairs)?;
        Ok(retrieval_report(&b, &r, pairs, group_size))
    }
}

/// Scores precomputed, normalised embeddings (see [`ThoughtSpace::retrieval`]).
pub fn retrieval_report(
    b: &Array2<f32>,
    r: &Array2<f32>,
    pairs: &[TrainingPair],
    group_size: usize,
) -> RetrievalReport {
    let (mut hits, mut rr, mut margin, mut n) = (0usize, 0f64, 0f64, 0usize);
    let mut start = 0;
    while start < pairs.len() {
        let end = (start + group_size).min(pairs.len());
        if end - start < 2 {
            break;
        }
        for i in start..end {
            let sims: Vec<f32> = (start..end).map(|j| b.row(i).dot(&r.row(j))).collect();
            let own = sims[i - start];
            let best = (0..sims.len())
                .max_by(|&x, &y| sims[x].total_cmp(&sims[y]))
                .unwrap_or(0);
            if pairs[start + best].rationale == pairs[i].rationale {
                hits += 1;
            }
            // Rank of the best rationale with the own text, counting only different texts
            // above it (pessimistic ties).
            let same = |j: usize| pairs[start + j].rationale == pairs[i].rationale;
            let own_best = (0..sims.len())
                .filter(|&j| same(j))
                .map(|j| sims[j])
                .fold(f32::NEG_INFINITY, f32::max);
            let above = (0..sims.len())
                .filter(|&j| !same(j) && sims[j] >= own_best)
                .count();
            rr += 1.0 / (above + 1) as f64;
            let others: f32 = sims.iter().sum::<f32>() - own;
            margin += own as f64 - others as f64 / (sims.len() - 1) as f64;
            n += 1;
        }
        start = end;
    }
    let n_f = n.max(1) as f64;
    RetrievalReport {
        accuracy: hits as f64 / n_f,
        mrr: rr / n_f,
        margin: margin / n_f,
        n,
        group_size,
    }
}

pub(crate) fn normalize_rows(mut m: Array2<f32>) -> Array2<f32> {
    for mut row in m.axis_iter_mut(Axis(0)) {
        let norm = row.dot(&row).sqrt().max(1e-12);
        row.mapv_inplace(|v| v / norm);
    }
    m
}
