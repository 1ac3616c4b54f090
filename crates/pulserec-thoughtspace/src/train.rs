//! End-to-end contrastive training of both encoders (InfoNCE + AdamW).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Gradients, Tensor};
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use pulserec_train::{EpochCheckpoints, TrainError};

use crate::bert::BertModel;
use crate::error::{Result, ThoughtSpaceError};
use crate::loss::InfoNceConfig;
use crate::pairs::TrainingPair;
use crate::space::ThoughtSpace;

/// Hyper-parameters of Thought-Space training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The contrastive objective.
    pub loss: InfoNceConfig,
    /// Pairs per step (paper: 16).
    pub batch_size: usize,
    /// Passes over the training pairs (paper: 53).
    pub epochs: usize,
    /// AdamW learning rate (paper: 2e-5).
    pub learning_rate: f64,
    /// AdamW decoupled weight decay (torch's default 0.01).
    pub weight_decay: f32,
    /// Clip each parameter's gradient to this L2 norm (`None`: no clipping).
    pub max_grad_norm: Option<f32>,
    /// Seed of shuffling, negative sampling and dropout.
    pub seed: u64,
}

impl Default for TrainConfig {
    /// The paper's step (batch 16, K = 10, temperature 1.0, lr 2e-5) with 3 epochs.
    fn default() -> Self {
        Self {
            loss: InfoNceConfig::default(),
            batch_size: 16,
            epochs: 3,
            learning_rate: 2e-5,
            weight_decay: 0.01,
            max_grad_norm: None,
            seed: 42,
        }
    }
}

impl TrainConfig {
    /// The paper's full schedule: 53 epochs.
    pub fn paper() -> Self {
        Self {
            epochs: 53,
            ..Self::default()
        }
    }

    /// Rejects settings that cannot train.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, message: String| Err(ThoughtSpaceError::Setting { field, message });
        if self.batch_size < 2 {
            return bad(
                "batch_size",
                format!("{} < 2 has no negatives", self.batch_size),
            );
        }
        if !(self.loss.temperature.is_finite() && self.loss.temperature > 0.0) {
            return bad(
                "loss.temperature",
                format!("{} must be finite and > 0", self.loss.temperature),
            );
        }
        if self.loss.negatives == Some(0) {
            return bad(
                "loss.negatives",
                "0 negatives: the loss would be constant".into(),
            );
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(
                "learning_rate",
                format!("{} must be finite and > 0", self.learning_rate),
            );
        }
        Ok(())
    }
}

/// What a training run did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Mean loss of each epoch.
    pub epoch_losses: Vec<f32>,
    /// Optimiser steps taken.
    pub steps: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The last checkpoint written, if any.
    pub checkpoint: Option<PathBuf>,
}

/// Squared gradient norms reaching each encoder after one backward pass.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradientReport {
    /// Parameter tensors of the behaviour encoder with a gradient / in total.
    pub behaviour_tensors: (usize, usize),
    /// Parameter tensors of the rationale encoder with a gradient / in total.
    pub rationale_tensors: (usize, usize),
    /// Global gradient L2 norm over the behaviour encoder.
    pub behaviour_norm: f32,
    /// Global gradient L2 norm over the rationale encoder.
    pub rationale_norm: f32,
}

/// Both transformers as one module, so one optimiser steps them together.
#[derive(Module, Debug)]
struct DualEncoder {
    behaviour: BertModel,
    rationale: BertModel,
}

/// Trains a [`ThoughtSpace`] on (behaviour, rationale) pairs.
pub struct ThoughtSpaceTrainer {
    space: ThoughtSpace,
    optim: ModuleOptimizer,
    config: TrainConfig,
    rng: ChaCha8Rng,
    steps: usize,
    epochs_done: usize,
    checkpoints: EpochCheckpoints,
}

impl ThoughtSpaceTrainer {
    /// Moves `space` to the autodiff version of its device and prepares AdamW.
    pub fn new(space: ThoughtSpace, config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let train_device = pulserec_train::training_device(space.behaviour().device(), config.seed);
        Ok(Self {
            space: space.to_device(&train_device),
            optim: pulserec_train::adamw(config.weight_decay, config.max_grad_norm),
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            steps: 0,
            epochs_done: 0,
            checkpoints: EpochCheckpoints::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// Replaces the objective (e.g. a temperature schedule between [`Self::fit`] calls).
    pub fn set_loss(&mut self, loss: InfoNceConfig) -> Result<()> {
        let config = TrainConfig {
            loss,
            ..self.config.clone()
        };
        config.validate()?;
        self.config = config;
        Ok(())
    }

    /// The space being trained (on the autodiff device).
    pub fn space(&self) -> &ThoughtSpace {
        &self.space
    }

    /// The trained space, moved off the autodiff device for inference.
    pub fn into_space(self) -> ThoughtSpace {
        let device = self.space.behaviour().device().clone().without_autodiff();
        let b = self.space.behaviour().to_inference();
        let r = self.space.rationale().to_inference();
        self.space.with_encoders(b, r).to_device(&device)
    }

    fn loss(&mut self, batch: &[&TrainingPair]) -> Result<Tensor<1>> {
        if batch.len() < 2 {
            return Err(ThoughtSpaceError::InvalidInput(format!(
                "a contrastive batch needs >= 2 pairs, got {}",
                batch.len()
            )));
        }
        let b_texts: Vec<&str> = batch.iter().map(|p| p.behaviour.as_str()).collect();
        let r_texts: Vec<&str> = batch.iter().map(|p| p.rationale.as_str()).collect();
        let b = self.space.behaviour().embed(&b_texts)?;
        let r = self.space.rationale().embed(&r_texts)?;
        let columns = self
            .config
            .loss
            .candidate_columns(batch.len(), &mut self.rng);
        Ok(self.config.loss.loss(b, r, &columns))
    }

    fn dual(&self) -> DualEncoder {
        DualEncoder {
            behaviour: self.space.behaviour().model().clone(),
            rationale: self.space.rationale().model().clone(),
        }
    }

    /// One InfoNCE + AdamW step on `batch` of 1-based `epoch`; returns the loss before the
    /// update.
    ///
    /// A non-finite loss leaves the parameters untouched and returns
    /// [`pulserec_train::NonFiniteLoss`] (as [`ThoughtSpaceError::Train`]).
    pub fn step(&mut self, batch: &[&TrainingPair], epoch: usize) -> Result<f32> {
        let loss = self.loss(batch)?;
        let value = loss
            .clone()
            .try_into_scalar::<f32>()
            .map_err(|e| ThoughtSpaceError::Backend(format!("{e:?}")))?;
        pulserec_train::check_finite(value, epoch, self.steps, self.checkpoints.last_good())
            .map_err(TrainError::from)?;
        let grads = GradientsParams::from_grads(loss.backward(), &self.dual());
        let dual = self
            .optim
            .step(self.config.learning_rate, self.dual(), grads);
        let b = self.space.behaviour().clone().with_model(dual.behaviour);
        let r = self.space.rationale().clone().with_model(dual.rationale);
        self.space = self.space.clone().with_encoders(b, r);
        self.steps += 1;
        Ok(value)
    }

    /// Runs one backward pass on `batch` without updating anything and reports how much
    /// gradient reached each encoder.
    pub fn gradient_report(&mut self, batch: &[&TrainingPair]) -> Result<GradientReport> {
        let mut grads = self.loss(batch)?.backward();
        let dual = self.dual();
        let mut b = GradNorms::new(&mut grads);
        dual.behaviour.visit(&mut b);
        let (bt, bn) = (b.tensors, b.squared);
        let mut r = GradNorms::new(&mut grads);
        dual.rationale.visit(&mut r);
        Ok(GradientReport {
            behaviour_tensors: bt,
            rationale_tensors: r.tensors,
            behaviour_norm: bn.sqrt(),
            rationale_norm: r.squared.sqrt(),
        })
    }

    /// Trains for the configured epochs. After every epoch, when `checkpoint_dir` is given, the
    /// space is saved to `checkpoint_dir/epoch-NNN` and the previous epoch's directory removed,
    /// so a failure (e.g. a NaN loss) leaves the last good checkpoint in place.
    pub fn fit(
        &mut self,
        pairs: &[TrainingPair],
        checkpoint_dir: Option<&Path>,
        progress: &ProgressBar,
    ) -> Result<TrainReport> {
        if pairs.len() < 2 {
            return Err(ThoughtSpaceError::InvalidInput(format!(
                "need >= 2 training pairs, got {}",
                pairs.len()
            )));
        }
        let start = Instant::now();
        let bs = self.config.batch_size.min(pairs.len());
        let per_epoch = pairs.len() / bs;
        progress.set_length((per_epoch * self.config.epochs) as u64);
        let mut order: Vec<usize> = (0..pairs.len()).collect();
        let mut epoch_losses = Vec::with_capacity(self.config.epochs);
        for _ in 0..self.config.epochs {
            let epoch = self.epochs_done + 1;
            order.shuffle(&mut self.rng);
            let mut sum = 0.0f64;
            // A trailing partial batch is dropped: fewer negatives would change the loss scale.
            for chunk in order.chunks_exact(bs) {
                let batch: Vec<&TrainingPair> = chunk.iter().map(|&i| &pairs[i]).collect();
                let loss = self.step(&batch, epoch)?;
                sum += loss as f64;
                progress.inc(1);
                progress.set_message(format!("epoch {epoch} loss {loss:.4}"));
            }
            let mean = (sum / per_epoch.max(1) as f64) as f32;
            epoch_losses.push(mean);
            tracing::info!(epoch, loss = mean, steps = self.steps, "epoch done");
            self.epochs_done += 1;
            if let Some(dir) = checkpoint_dir {
                self.checkpoint(dir, epoch, &epoch_losses)?;
            }
        }
        progress.finish();
        Ok(TrainReport {
            epoch_losses,
            steps: self.steps,
            seconds: start.elapsed().as_secs_f64(),
            checkpoint: self.checkpoints.last_good().map(Path::to_path_buf),
        })
    }

    fn checkpoint(&mut self, dir: &Path, epoch: usize, losses: &[f32]) -> Result<()> {
        let training = json!({
            "config": self.config,
            "epoch": epoch,
            "steps": self.steps,
            "epoch_losses": losses,
        });
        let space = &self.space;
        self.checkpoints
            .save(dir, epoch, |tmp| space.save(tmp, training))?;
        Ok(())
    }
}

/// Counts parameter tensors with a gradient and sums squared gradient entries.
struct GradNorms<'a> {
    grads: &'a mut Gradients,
    tensors: (usize, usize),
    squared: f32,
}

impl<'a> GradNorms<'a> {
    fn new(grads: &'a mut Gradients) -> Self {
        Self {
            grads,
            tensors: (0, 0),
            squared: 0.0,
        }
    }
}

impl ModuleVisitor for GradNorms<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.tensors.1 += 1;
        if let Some(g) = param.val().grad(&*self.grads) {
            self.tensors.0 += 1;
            self.squared += g.powi_scalar(2).sum().into_scalar::<f32>();
        }
    }
}
