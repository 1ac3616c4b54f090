//! What training can fail with.

use std::path::PathBuf;

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, TrainError>;

/// The training loss became NaN or infinite; the parameters were not updated with it and the
/// last good checkpoint (if any) is in place.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error(
    "non-finite training loss {loss} at epoch {epoch}, step {step}; last good checkpoint: {}",
    .last_good.as_ref().map_or_else(|| "none".to_string(), |p| p.display().to_string())
)]
pub struct NonFiniteLoss {
    /// The loss value.
    pub loss: f32,
    /// 1-based epoch.
    pub epoch: usize,
    /// Optimiser steps taken before the failure.
    pub step: usize,
    /// The last checkpoint written, if any.
    pub last_good: Option<PathBuf>,
}

/// Errors of the shared training scaffolding.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss became NaN or infinite.
    #[error(transparent)]
    NonFiniteLoss(#[from] NonFiniteLoss),
    /// Writing or removing a checkpoint failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A learning-rate schedule burn's schedulers refuse (the field named).
    #[error("learning-rate schedule: {field}: {message}")]
    Schedule {
        /// The offending setting.
        field: &'static str,
        /// Why.
        message: String,
    },
}

impl TrainError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
