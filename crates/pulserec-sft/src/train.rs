//! LoRA supervised fine-tuning: AdamW over the adapters only, warmup + decay, gradient
//! accumulation, seeded shuffling, per-epoch adapter checkpoints.
//!
//! One optimiser step covers `effective_batch` examples, run as micro-batches of
//! `micro_batch` rows. Each micro-batch's loss (mean cross-entropy over its target tokens) is
//! weighted by its share of the step's target tokens before the backward pass, so the
//! accumulated gradient is that of the mean over every target token of the step, whatever the
//! micro-batch size.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use indicatif::ProgressBar;
use pulserec_slm::weights::ModelWeights;
use pulserec_slm::{FrozenBottom, LlamaConfig, LoraConfig, LoraModel, TokenBatch};
pub use pulserec_train::Schedule;
use pulserec_train::{EpochCheckpoints, TrainError, WarmupSchedule};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use crate::data::{Stream, rng_for};
use crate::error::{Result, SftError};
use crate::report::{TrainReport, write_atomic};
use crate::tokenize::EncodedExample;

/// What a training example teaches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Objective {
    /// The correct answer's tokens (mean token cross-entropy): the paper's SFT.
    #[default]
    Generative,
    /// Which candidate is correct: each candidate's answer is scored by its mean token
    /// log-probability after the prompt (as [`crate::LikelihoodSelector`] scores it), and the
    /// loss is the cross-entropy of the softmax over the candidates at the correct one (a
    /// listwise ranking loss, as in softmax-DPO for recommendation without the reference
    /// model). Chance level is `ln(candidates)`. Examples come from
    /// [`crate::encode_ranking`].
    Ranking,
}

/// Hyper-parameters of LoRA SFT.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SftConfig {
    /// Adapter shape (paper: rank 8, alpha 16, dropout 0.05, q/k/v/o).
    pub lora: LoraConfig,
    /// Peak AdamW learning rate (paper: 2e-4).
    pub learning_rate: f64,
    /// Share of the steps spent warming up linearly from 0.
    pub warmup_ratio: f64,
    /// Decay after warmup.
    pub schedule: Schedule,
    /// Passes over the training examples (paper: 7).
    pub epochs: usize,
    /// Examples per optimiser step (paper: 64).
    pub effective_batch: usize,
    /// Rows per forward/backward pass; `effective_batch` is accumulated from these.
    pub micro_batch: usize,
    /// Most tokens per example, prompt and target (paper: 512).
    pub max_len: usize,
    /// AdamW decoupled weight decay.
    pub weight_decay: f32,
    /// Clip each adapter tensor's gradient to this L2 norm (`None`: no clipping).
    pub max_grad_norm: Option<f32>,
    /// Seed of adapter initialisation, dropout and shuffling.
    pub seed: u64,
    /// What the loss teaches (default: the answer's tokens).
    #[serde(default)]
    pub objective: Objective,
    /// How the frozen layers below the lowest adapter and the head run (default: on the
    /// autodiff graph like the others; [`FrozenBottom::Host`] and [`FrozenBottom::HostBf16`]
    /// are faster on the CPU).
    #[serde(default, skip_serializing_if = "is_autodiff")]
    pub frozen_bottom: FrozenBottom,
}

fn is_autodiff(mode: &FrozenBottom) -> bool {
    *mode == FrozenBottom::Autodiff
}

impl SftConfig {
    /// The paper's settings: LoRA r8 / a16 / d0.05 on q, k, v, o; lr 2e-4; 7 epochs; effective
    /// batch 64; max length 512. Warmup (3 %) and linear decay are our choice (the paper does not
    /// say).
    pub fn paper(seed: u64) -> Self {
        Self {
            lora: LoraConfig::paper(),
            learning_rate: 2e-4,
            warmup_ratio: 0.03,
            schedule: Schedule::Linear,
            epochs: 7,
            effective_batch: 64,
            micro_batch: 8,
            max_len: 512,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
            seed,
            objective: Objective::Generative,
            frozen_bottom: FrozenBottom::Autodiff,
        }
    }

    /// A preset for small CPU runs (tens of users): the paper's adapter and length, 2 epochs,
    /// effective batch 8 in micro-batches of 2, and a higher learning rate (1e-3) so a few dozen
    /// steps move the model.
    pub fn cpu(seed: u64) -> Self {
        Self {
            learning_rate: 1e-3,
            warmup_ratio: 0.1,
            epochs: 2,
            effective_batch: 8,
            micro_batch: 2,
            ..Self::paper(seed)
        }
    }

    /// Rejects settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, message: String| Err(SftError::config(field, message));
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(
                "learning_rate",
                format!("{} must be > 0", self.learning_rate),
            );
        }
        if !(0.0..1.0).contains(&self.warmup_ratio) {
            return bad(
                "warmup_ratio",
                format!("{} must be in [0, 1)", self.warmup_ratio),
            );
        }
        if self.epochs == 0 {
            return bad("epochs", "must be at least 1".into());
        }
        if self.micro_batch == 0 || self.effective_batch < self.micro_batch {
            return bad(
                "effective_batch",
                format!(
                    "{} must be >= micro_batch {} >= 1",
                    self.effective_batch, self.micro_batch
                ),
            );
        }
        if self.max_len < 8 {
            return bad(
                "max_len",
                format!("{} is too short for a prompt", self.max_len),
            );
        }
        Ok(())
    }
}

/// Fine-tunes LoRA adapters on encoded examples.
pub struct SftTrainer {
    model: LoraModel,
    optim: ModuleOptimizer,
    config: SftConfig,
    base_name: String,
    steps: usize,
    checkpoints: EpochCheckpoints,
}

impl std::fmt::Debug for SftTrainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SftTrainer")
            .field("config", &self.config)
            .field("base_name", &self.base_name)
            .field("steps", &self.steps)
            .finish()
    }
}

/// Name of the training settings file written next to each adapter checkpoint.
pub const SFT_CONFIG_FILE: &str = "sft_config.json";

impl SftTrainer {
    /// Fresh adapters on the base model `weights`, on the autodiff version of `device`.
    /// `base_name` is stored with every adapter so it is never applied to another model.
    pub fn new(
        model_config: &LlamaConfig,
        weights: &ModelWeights,
        config: SftConfig,
        base_name: &str,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        let train_device = pulserec_train::training_device(device, config.seed);
        let mut model = LoraModel::new(
            model_config,
            weights,
            &config.lora,
            config.seed,
            &train_device,
        )?;
        let frozen_bottom = model.set_frozen_bottom(config.frozen_bottom)?;
        if frozen_bottom != config.frozen_bottom {
            tracing::warn!(
                asked = ?config.frozen_bottom,
                running = ?frozen_bottom,
                "the frozen layers cannot run as asked on this device or CPU"
            );
        }
        Ok(Self {
            model,
            optim: pulserec_train::adamw(config.weight_decay, config.max_grad_norm),
            config,
            base_name: base_name.to_string(),
            steps: 0,
            checkpoints: EpochCheckpoints::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SftConfig {
        &self.config
    }

    /// The model being trained (on the autodiff device).
    pub fn model(&self) -> &LoraModel {
        &self.model
    }

    /// Base weights with the trained adapters merged in, for plain inference.
    pub fn merged_weights(&self, base: &ModelWeights) -> Result<ModelWeights> {
        Ok(self.model.valid().merged_weights(base)?)
    }

    /// Mean loss of `examples` under the current adapters, without training (for
    /// before/after comparisons).
    pub fn eval_loss(&self, examples: &[EncodedExample]) -> Result<f32> {
        let model = self.model.valid();
        let mut sum = 0.0f64;
        let mut weight = 0.0f64;
        for chunk in examples.chunks(self.config.micro_batch) {
            let refs: Vec<&EncodedExample> = chunk.iter().collect();
            let w = self.weight(&refs);
            sum += scalar(objective_loss(&model, self.config.objective, &refs)?)? as f64 * w;
            weight += w;
        }
        Ok((sum / weight.max(1.0)) as f32)
    }

    /// How much `examples` count in a mean loss: their target tokens for the generative
    /// objective, their number for the ranking one.
    fn weight(&self, examples: &[&EncodedExample]) -> f64 {
        match self.config.objective {
            Objective::Generative => examples.iter().map(|e| e.target_len()).sum::<usize>() as f64,
            Objective::Ranking => examples.len() as f64,
        }
    }

    /// One optimiser step over `examples` (accumulated in micro-batches); returns the step's
    /// mean loss (per target token, or per example for [`Objective::Ranking`]).
    ///
    /// A non-finite loss leaves the adapters untouched and returns
    /// [`pulserec_train::NonFiniteLoss`] (as [`SftError::Train`]).
    pub fn step(&mut self, examples: &[&EncodedExample], lr: f64, epoch: usize) -> Result<f32> {
        let step_weight = self.weight(examples);
        let mut accumulator = GradientsAccumulator::<LoraModel>::new();
        let mut step_loss = 0.0f64;
        for micro in examples.chunks(self.config.micro_batch) {
            let share = self.weight(micro) / step_weight.max(1e-12);
            let loss = objective_loss(&self.model, self.config.objective, micro)?;
            let value = scalar(loss.clone())?;
            pulserec_train::check_finite(value, epoch, self.steps, self.checkpoints.last_good())
                .map_err(TrainError::from)?;
            step_loss += value as f64 * share;
            let grads = GradientsParams::from_grads((loss * share).backward(), &self.model);
            accumulator.accumulate(&self.model, grads);
        }
        let model = self.model.clone();
        self.model = self.optim.step(lr, model, accumulator.grads());
        self.steps += 1;
        Ok(step_loss as f32)
    }

    /// Trains for the configured epochs. With `checkpoint_dir`, the adapters are saved after
    /// every epoch to `checkpoint_dir/epoch-NNN` (written under a temporary name, then renamed;
    /// the previous epoch's directory is removed afterwards), so a failure keeps the last good
    /// adapter. The learning-rate schedule (warmup, then decay) spans this call's steps: a second
    /// `fit` on the same trainer warms up again.
    pub fn fit(
        &mut self,
        examples: &[EncodedExample],
        checkpoint_dir: Option<&Path>,
        progress: &ProgressBar,
    ) -> Result<TrainReport> {
        pulserec_core::on_pool(|| self.fit_on_pool(examples, checkpoint_dir, progress))
    }

    fn fit_on_pool(
        &mut self,
        examples: &[EncodedExample],
        checkpoint_dir: Option<&Path>,
        progress: &ProgressBar,
    ) -> Result<TrainReport> {
        if examples.is_empty() {
            return Err(SftError::config("examples", "nothing to train on"));
        }
        let per_epoch = examples.len().div_ceil(self.config.effective_batch);
        let total = per_epoch * self.config.epochs;
        progress.set_length(total as u64);
        let mut report = TrainReport {
            truncated_examples: examples.iter().filter(|e| e.history_dropped > 0).count(),
            ..TrainReport::default()
        };
        let mut order: Vec<usize> = (0..examples.len()).collect();
        let mut schedule = WarmupSchedule::new(
            self.config.learning_rate,
            self.config.warmup_ratio,
            self.config.schedule,
            total,
        )?;
        let start = Instant::now();
        for epoch in 1..=self.config.epochs {
            let mut rng = rng_for(self.config.seed, Stream::Epochs, epoch as u32);
            order.shuffle(&mut rng);
            let mut epoch_sum = 0.0f64;
            let mut epoch_weight = 0.0f64;
            for chunk in order.chunks(self.config.effective_batch) {
                let batch: Vec<&EncodedExample> = chunk.iter().map(|&i| &examples[i]).collect();
                let lr = schedule.next_lr();
                let loss = self.step(&batch, lr, epoch)?;
                let weight = self.weight(&batch);
                report.tokens += batch.iter().map(|e| e.len()).sum::<usize>();
                report.target_tokens += batch.iter().map(|e| e.target_len()).sum::<usize>();
                report.step_losses.push(loss);
                epoch_sum += loss as f64 * weight;
                epoch_weight += weight;
                let secs = start.elapsed().as_secs_f64();
                progress.inc(1);
                progress.set_message(format!(
                    "epoch {epoch} loss {loss:.4} lr {lr:.2e} {:.0} tok/s",
                    report.tokens as f64 / secs.max(1e-9)
                ));
                // Progress bars stay silent when stderr is not a terminal: log every 5 %.
                if self.steps.is_multiple_of(total.div_ceil(20)) {
                    tracing::info!(
                        epoch,
                        step = self.steps,
                        of = total,
                        loss,
                        lr,
                        tokens_per_s = report.tokens as f64 / secs.max(1e-9),
                        "sft progress"
                    );
                } else {
                    tracing::debug!(epoch, step = self.steps, loss, lr, "sft step");
                }
            }
            let mean = (epoch_sum / epoch_weight.max(1e-12)) as f32;
            report.epoch_losses.push(mean);
            tracing::info!(epoch, loss = mean, steps = self.steps, "sft epoch done");
            if let Some(dir) = checkpoint_dir {
                self.checkpoint(dir, epoch)?;
            }
        }
        report.steps = self.steps;
        report.seconds = start.elapsed().as_secs_f64();
        report.tokens_per_s = report.tokens as f64 / report.seconds.max(1e-9);
        report.adapter = self.checkpoints.last_good().map(Path::to_path_buf);
        Ok(report)
    }

    /// Saves the adapters and the settings to `dir/epoch-NNN` atomically and removes the
    /// previous checkpoint.
    fn checkpoint(&mut self, dir: &Path, epoch: usize) -> Result<PathBuf> {
        let model = self.model.valid();
        let config = serde_json::to_string_pretty(&self.config);
        self.checkpoints.save(dir, epoch, |tmp| {
            model.save_adapter(tmp, &self.base_name)?;
            let config = config.map_err(|e| SftError::Json {
                path: tmp.join(SFT_CONFIG_FILE),
                message: e.to_string(),
            })?;
            write_atomic(&tmp.join(SFT_CONFIG_FILE), config.as_bytes())
        })
    }
}

/// Encoded examples as the model's right-padded batch, with their target-only loss masks (and
/// their branch layout when they are ranking examples).
pub fn token_batch(examples: &[&EncodedExample]) -> Result<TokenBatch> {
    let rows: Vec<(Vec<u32>, Vec<f32>)> = examples
        .iter()
        .map(|e| (e.tokens.clone(), e.loss_mask()))
        .collect();
    let batch = TokenBatch::from_rows(&rows, 0)?;
    if examples.iter().all(|e| e.segments.is_empty()) {
        return Ok(batch);
    }
    let segments: Vec<Vec<u16>> = examples
        .iter()
        .map(|e| {
            if e.segments.is_empty() {
                vec![0; e.len()]
            } else {
                e.segments.clone()
            }
        })
        .collect();
    Ok(batch.with_segments(&segments)?)
}

/// The loss of one micro-batch under `objective`.
///
/// # Shapes
/// - returns `[1]`
fn objective_loss(
    model: &LoraModel,
    objective: Objective,
    examples: &[&EncodedExample],
) -> Result<burn::tensor::Tensor<1>> {
    let batch = token_batch(examples)?;
    match objective {
        Objective::Generative => Ok(model.loss(&batch)?),
        Objective::Ranking => ranking_loss(model, &batch, examples),
    }
}

/// Listwise ranking loss of [`Objective::Ranking`]: each candidate's score is the mean
/// log-probability of its answer tokens, and an example's loss is `-log softmax(scores)[correct]`
/// (the correct answer is each example's first target); with a prior
/// ([`EncodedExample::offsets`]) each score is the SLM's plus the candidate's prior, so the
/// adapter learns the residual. An auxiliary rationale row
/// ([`EncodedExample::auxiliary`]) adds the negative mean log-probability of its tokens instead.
/// The result is the mean over the rows.
///
/// # Shapes
/// - returns `[1]`
fn ranking_loss(
    model: &LoraModel,
    batch: &TokenBatch,
    examples: &[&EncodedExample],
) -> Result<burn::tensor::Tensor<1>> {
    use burn::tensor::{Tensor, TensorData, activation::log_softmax};
    let ranked = examples.iter().filter(|e| !e.auxiliary).count();
    let k = examples
        .iter()
        .find(|e| !e.auxiliary)
        .map_or(0, |e| e.targets.len());
    if let Some(e) = examples
        .iter()
        .find(|e| !e.auxiliary && (e.targets.len() != k || k < 2))
    {
        return Err(SftError::Data {
            user: e.user,
            message: format!(
                "a ranking batch needs the same number (>= 2) of candidates in every example: {} and {k}",
                e.targets.len()
            ),
        });
    }
    let logp = model.target_log_probs(batch)?;
    let n = logp.dims()[0];
    // Row r of `mean` averages one target's tokens (they are consecutive in `logp`): first the
    // candidates of the ranked examples, k per example, then the auxiliary rows.
    let auxiliary = examples.len() - ranked;
    let rows = ranked * k + auxiliary;
    let mut mean = vec![0.0f32; rows * n];
    let (mut offset, mut candidate, mut extra) = (0, 0, ranked * k);
    for e in examples {
        for range in &e.targets {
            let next = if e.auxiliary {
                &mut extra
            } else {
                &mut candidate
            };
            let (row, len) = (*next, range.len());
            *next += 1;
            mean[row * n + offset..row * n + offset + len].fill(1.0 / len as f32);
            offset += len;
        }
    }
    let device = model.device();
    let mean = Tensor::<2>::from_data(TensorData::new(mean, [rows, n]), &device);
    let scores = mean.matmul(logp.reshape([n, 1])).reshape([rows]);
    let mut total = Tensor::<1>::zeros([1], &device);
    if ranked > 0 {
        let mut ranked_scores = scores.clone().narrow(0, 0, ranked * k).reshape([ranked, k]);
        if let Some(offsets) = prior_offsets(examples, k)? {
            let offsets = Tensor::<2>::from_data(TensorData::new(offsets, [ranked, k]), &device);
            ranked_scores = ranked_scores + offsets;
        }
        total = total
            - log_softmax(ranked_scores, 1)
                .narrow(1, 0, 1)
                .sum()
                .reshape([1]);
    }
    if auxiliary > 0 {
        total = total - scores.narrow(0, ranked * k, auxiliary).sum();
    }
    Ok(total / examples.len() as f32)
}

/// The prior scores of the ranked (non-auxiliary) examples, `k` per example in target order,
/// or `None` when no example has one. A batch mixing examples with and without a prior is
/// refused: the scores would not be comparable across the batch's training signal.
fn prior_offsets(examples: &[&EncodedExample], k: usize) -> Result<Option<Vec<f32>>> {
    let ranked = || examples.iter().filter(|e| !e.auxiliary);
    if ranked().all(|e| e.offsets.is_empty()) {
        return Ok(None);
    }
    let mut offsets = Vec::with_capacity(ranked().count() * k);
    for e in ranked() {
        if e.offsets.len() != k {
            return Err(SftError::Data {
                user: e.user,
                message: format!(
                    "a ranking example with {} prior scores for {k} candidates (every example of a batch needs one per candidate, or none has any)",
                    e.offsets.len()
                ),
            });
        }
        offsets.extend_from_slice(&e.offsets);
    }
    Ok(Some(offsets))
}

fn scalar(t: burn::tensor::Tensor<1>) -> Result<f32> {
    t.try_into_scalar::<f32>()
        .map_err(|e| SftError::Backend(format!("{e:?}")))
}

/// Loads an adapter checkpoint written by [`SftTrainer`] onto the base weights.
///
/// Refused with [`SftError::AdapterMismatch`]: an adapter made for another base model
/// (`base_model_name_or_path` in `adapter_config.json` differs from `base_name`), or one whose
/// rank, alpha, targets, layers or shapes differ from `lora` and the model.
pub fn load_adapter(
    dir: &Path,
    model_config: &LlamaConfig,
    weights: &ModelWeights,
    lora: &LoraConfig,
    base_name: &str,
    device: &Device,
) -> Result<LoraModel> {
    let config_path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| SftError::io(&config_path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| SftError::Json {
        path: config_path.clone(),
        message: e.to_string(),
    })?;
    let stored = json
        .get("base_model_name_or_path")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    if stored != base_name {
        return Err(SftError::AdapterMismatch {
            path: dir.to_path_buf(),
            message: format!("made for base model `{stored}`, not `{base_name}`"),
        });
    }
    let mut model = LoraModel::new(model_config, weights, lora, 0, device)?;
    model.load_adapter(dir).map_err(|e| match e {
        pulserec_slm::SlmError::Adapter { path, reason } => SftError::AdapterMismatch {
            path,
            message: reason,
        },
        other => other.into(),
    })?;
    Ok(model)
}
