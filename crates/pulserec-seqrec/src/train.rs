//! The training loop: seeded shuffles and negatives, Adam, periodic validation with early
//! stopping on valid NDCG@10, and best-model checkpoints.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use indicatif::ProgressBar;
use pulserec_core::ItemId;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::batch::{sample_outside, train_batch};
use crate::checkpoint::save_checkpoint;
use crate::config::{LossKind, SasRecConfig, TrainConfig};
use crate::error::{Result, SeqRecError};
use crate::eval::{EvalCase, EvalOptions, evaluate_full, evaluate_sampled};
use crate::loss::{SharedNegatives, batch_loss};
use crate::model::SasRec;

/// What the trainer needs: every user's training sequence and the validation cases.
#[derive(Clone, Debug, Default)]
pub struct TrainData<'a> {
    /// Training sequences, oldest first (users with fewer than 2 items carry no loss).
    pub train: Vec<&'a [ItemId]>,
    /// Validation users (history = training sequence, target = valid item).
    pub valid: Vec<EvalCase<'a>>,
    /// Stored candidate lists parallel to `valid` (positive first) for sampled validation;
    /// `None` validates with full ranking.
    pub valid_candidates: Option<Vec<&'a [ItemId]>>,
}

/// One epoch's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean training loss over batches.
    pub loss: f64,
    /// Wall seconds of the training pass (validation excluded).
    pub train_seconds: f64,
    /// Validation metrics, when validation ran after this epoch.
    pub valid: Option<BTreeMap<String, f64>>,
}

/// The result of [`train`].
#[derive(Debug)]
pub struct TrainOutcome {
    /// The best model by valid NDCG@10 (the last one when validation never ran), in inference
    /// mode on the plain (non-autodiff) device.
    pub model: SasRec,
    /// Per-epoch records.
    pub epochs: Vec<EpochLog>,
    /// The epoch of the returned model.
    pub best_epoch: usize,
    /// Its valid NDCG@10, when validated.
    pub best_valid_ndcg10: Option<f64>,
}

impl TrainOutcome {
    /// Median seconds per training epoch.
    pub fn median_epoch_seconds(&self) -> f64 {
        let mut s: Vec<f64> = self.epochs.iter().map(|e| e.train_seconds).collect();
        s.sort_by(f64::total_cmp);
        s.get(s.len() / 2).copied().unwrap_or(0.0)
    }
}

/// Trains a SASRec on `device` (autodiff is enabled internally). When `checkpoint_dir` is given,
/// the best model so far is written there after every improving validation.
pub fn train(
    model_config: &SasRecConfig,
    config: &TrainConfig,
    data: &TrainData<'_>,
    device: &Device,
    checkpoint_dir: Option<&Path>,
) -> Result<TrainOutcome> {
    model_config.validate()?;
    config.validate()?;
    let users: Vec<usize> = (0..data.train.len())
        .filter(|&u| data.train[u].len() >= 2)
        .collect();
    if users.is_empty() {
        return Err(SeqRecError::Empty("no user has 2 or more training items"));
    }
    for (u, seq) in data.train.iter().enumerate() {
        crate::batch::check_items(seq, model_config.n_items, || {
            format!("training sequence of user {u}")
        })?;
    }
    let ad = pulserec_train::training_device(device, config.seed);
    let mut model = model_config.init(&ad)?;
    let mut optim = AdamConfig::new()
        .with_beta_1(config.beta_1)
        .with_beta_2(config.beta_2)
        .with_epsilon(config.epsilon)
        .init();
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    // Dropout masks get their own stream of the same seed, so changing how many negatives are
    // drawn does not shift every mask.
    let mut dropout_rng = ChaCha8Rng::seed_from_u64(config.seed);
    dropout_rng.set_stream(1);
    let mut order = users;
    let n_batches = order.len().div_ceil(config.batch_size);
    let options = EvalOptions::default();
    let bar = if config.progress {
        pulserec_train::progress_bar((config.epochs * n_batches) as u64, "SASRec")
    } else {
        ProgressBar::hidden()
    };

    let mut epochs = Vec::new();
    let mut best: Option<(f64, usize, SasRec)> = None;
    let mut stale = 0;
    for epoch in 1..=config.epochs {
        let started = Instant::now();
        order.shuffle(&mut rng);
        let mut total: Option<Tensor<1>> = None;
        for chunk in order.chunks(config.batch_size) {
            let seqs: Vec<&[ItemId]> = chunk.iter().map(|&u| data.train[u]).collect();
            let batch = train_batch(&seqs, model_config.max_len, model_config.n_items, &mut rng);
            let shared = match config.loss {
                LossKind::SampledSoftmax { negatives } => Some(SharedNegatives(
                    (0..negatives)
                        .map(|_| {
                            sample_outside(&Default::default(), model_config.n_items, &mut rng)
                        })
                        .collect(),
                )),
                _ => None,
            };
            let loss = batch_loss(
                &model,
                &batch,
                config.loss,
                shared.as_ref(),
                Some(&mut dropout_rng),
                &ad,
            );
            let detached = loss.clone().detach();
            total = Some(match total {
                Some(t) => t + detached,
                None => detached,
            });
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(config.lr, model, grads);
            bar.inc(1);
        }
        let loss = total
            .map(|t| f64::from(t.into_scalar::<f32>()) / n_batches as f64)
            .unwrap_or(f64::NAN);
        let train_seconds = started.elapsed().as_secs_f64();
        bar.set_message(format!("epoch {epoch} loss {loss:.4}"));

        let mut valid = None;
        if config.valid_every > 0 && epoch % config.valid_every == 0 && !data.valid.is_empty() {
            let metrics = match &data.valid_candidates {
                Some(c) => evaluate_sampled(&model, &data.valid, c, &options, device)?,
                None => evaluate_full(&model, &data.valid, &options, device)?,
            };
            let ndcg = metrics.get("NDCG@10").unwrap_or(0.0);
            tracing::info!(
                epoch,
                loss,
                train_seconds,
                valid_ndcg10 = ndcg,
                "epoch done"
            );
            if best.as_ref().is_none_or(|(b, _, _)| ndcg > *b) {
                stale = 0;
                let snapshot = model.valid();
                if let Some(dir) = checkpoint_dir {
                    save_checkpoint(&snapshot, model_config, dir)?;
                }
                best = Some((ndcg, epoch, snapshot));
            } else {
                stale += 1;
            }
            valid = Some(metrics.values);
        } else {
            tracing::info!(epoch, loss, train_seconds, "epoch done");
        }
        epochs.push(EpochLog {
            epoch,
            loss,
            train_seconds,
            valid,
        });
        if config.patience > 0 && stale >= config.patience {
            tracing::info!(epoch, "early stop: valid NDCG@10 did not improve");
            break;
        }
    }
    bar.finish_and_clear();
    let last_epoch = epochs.len();
    Ok(match best {
        Some((ndcg, epoch, model)) => TrainOutcome {
            model,
            epochs,
            best_epoch: epoch,
            best_valid_ndcg10: Some(ndcg),
        },
        None => {
            let model = model.valid();
            if let Some(dir) = checkpoint_dir {
                save_checkpoint(&model, model_config, dir)?;
            }
            TrainOutcome {
                model,
                epochs,
                best_epoch: last_epoch,
                best_valid_ndcg10: None,
            }
        }
    })
}
