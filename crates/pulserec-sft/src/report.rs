//! What an SFT run leaves behind: [`SftMetrics`] (written as `metrics.json`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, SftError};
use crate::eval::SelectorMetrics;

/// What a training run did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Mean loss of each epoch.
    pub epoch_losses: Vec<f32>,
    /// Loss of every optimiser step (mean over its micro-batches).
    pub step_losses: Vec<f32>,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Tokens run through the model (prompt and target, padding excluded).
    pub tokens: usize,
    /// Target tokens the loss covered.
    pub target_tokens: usize,
    /// Wall-clock seconds of training (data encoding excluded).
    pub seconds: f64,
    /// Training throughput, `tokens / seconds`.
    pub tokens_per_s: f64,
    /// Examples whose oldest history titles were dropped to fit the length limit.
    pub truncated_examples: usize,
    /// The last adapter checkpoint written.
    pub adapter: Option<PathBuf>,
}

/// Metrics of one SFT run: the variant, its data, its training and both models' evaluations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SftMetrics {
    /// The variant's stored name.
    pub variant: String,
    /// `PROMPT_VERSION` of the prompts.
    pub prompt_version: String,
    /// The base model.
    pub model: String,
    /// The run seed.
    pub seed: u64,
    /// Users asked for in training.
    pub train_users_requested: usize,
    /// Training examples built.
    pub train_examples: usize,
    /// Users skipped for lack of a rationale.
    pub skipped_no_rationale: usize,
    /// Users skipped for lack of a last training item.
    pub skipped_no_target: usize,
    /// Examples skipped because they exceed the length limit even without history.
    pub skipped_too_long: usize,
    /// Held-out users evaluated.
    pub test_users: usize,
    /// The training settings.
    pub config: Option<crate::train::SftConfig>,
    /// The training run, when one happened.
    pub training: Option<TrainReport>,
    /// Evaluations of the base model.
    pub base: Vec<SelectorMetrics>,
    /// Evaluations of the fine-tuned model.
    pub tuned: Vec<SelectorMetrics>,
}

impl SftMetrics {
    /// Writes the metrics as pretty JSON, atomically (temporary file, then rename).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let text = serde_json::to_string_pretty(self).map_err(|e| SftError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        write_atomic(path, text.as_bytes())
    }

    /// Reads metrics written by [`SftMetrics::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| SftError::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| SftError::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// [`pulserec_core::fs::write_atomic`] with the error naming `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    pulserec_core::fs::write_atomic(path, bytes).map_err(|e| SftError::io(path, e))
}
