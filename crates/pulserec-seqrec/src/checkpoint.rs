//! Checkpoints: `model.safetensors` (weights) next to `config.json` (the architecture).

use std::path::{Path, PathBuf};

use burn::config::Config;
use burn::tensor::Device;
use burn_store::{ModuleSnapshot, SafetensorsStore};

use crate::config::SasRecConfig;
use crate::error::{Result, SeqRecError};
use crate::model::SasRec;

/// File name of the weights inside a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// File name of the model config inside a checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| SeqRecError::Io {
        action: "creating checkpoint directory",
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `model` and its `config` into `dir` (created if missing).
pub fn save_checkpoint(model: &SasRec, config: &SasRecConfig, dir: &Path) -> Result<()> {
    create_dir(dir)?;
    let config_path = dir.join(CONFIG_FILE);
    config
        .save(&config_path)
        .map_err(|source| SeqRecError::Io {
            action: "writing model config",
            path: config_path,
            source,
        })?;
    let weights: PathBuf = dir.join(WEIGHTS_FILE);
    // Tensors on an autodiff device are saved by value; the store writes atomically.
    let mut store = SafetensorsStore::from_file(&weights).overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| SeqRecError::Checkpoint {
            path: weights,
            message: e.to_string(),
        })
}

/// Reads a checkpoint written by [`save_checkpoint`] onto `device`.
pub fn load_checkpoint(dir: &Path, device: &Device) -> Result<(SasRec, SasRecConfig)> {
    let config_path = dir.join(CONFIG_FILE);
    if !config_path.exists() {
        return Err(SeqRecError::Io {
            action: "reading model config",
            path: config_path,
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let config = SasRecConfig::load(&config_path).map_err(|e| SeqRecError::Parse {
        path: config_path.clone(),
        message: e.to_string(),
    })?;
    let weights = dir.join(WEIGHTS_FILE);
    let mut model = config.init(device)?;
    let mut store = SafetensorsStore::from_file(&weights);
    let applied = model
        .load_from(&mut store)
        .map_err(|e| SeqRecError::Checkpoint {
            path: weights.clone(),
            message: e.to_string(),
        })?;
    if !applied.errors.is_empty() || !applied.missing.is_empty() {
        return Err(SeqRecError::Checkpoint {
            path: weights,
            message: format!(
                "{} tensors missing, errors: {:?}",
                applied.missing.len(),
                applied.errors
            ),
        });
    }
    Ok((model, config))
}
