#![doc = include_str!("../README.md")]

mod checkpoint;
mod error;
mod schedule;

pub use checkpoint::EpochCheckpoints;
pub use error::{NonFiniteLoss, Result, TrainError};
pub use schedule::{Schedule, WarmupSchedule};

use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::tensor::Device;
use indicatif::{ProgressBar, ProgressStyle};

/// The autodiff version of `device` (itself when it already is one), seeded with `seed` so
/// dropout masks and initialisations drawn on it repeat.
pub fn training_device(device: &Device, seed: u64) -> Device {
    let train = if device.is_autodiff() {
        device.clone()
    } else {
        device.clone().autodiff()
    };
    train.seed(seed);
    train
}

/// AdamW with decoupled `weight_decay`, clipping each parameter's gradient to the L2 norm
/// `max_grad_norm` when given.
pub fn adamw(weight_decay: f32, max_grad_norm: Option<f32>) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_weight_decay(weight_decay)
        .with_grad_clipping(max_grad_norm.map(burn::grad_clipping::GradientClippingConfig::Norm))
        .init()
}

/// Stops training on a NaN or infinite `loss`: the error names the 1-based `epoch`, the
/// optimiser steps taken and the last good checkpoint.
pub fn check_finite(
    loss: f32,
    epoch: usize,
    step: usize,
    last_good: Option<&std::path::Path>,
) -> std::result::Result<(), NonFiniteLoss> {
    if loss.is_finite() {
        return Ok(());
    }
    Err(NonFiniteLoss {
        loss,
        epoch,
        step,
        last_good: last_good.map(Into::into),
    })
}

/// The workspace's progress bar over `len` units: `prefix` names the work (a stage, a model),
/// the message is the trainer's or the stage's latest news (loss, rate).
pub fn progress_bar(len: u64, prefix: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>14} [{bar:30}] {pos}/{len} [{elapsed_precise}<{eta}] {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(prefix.to_string());
    bar
}
