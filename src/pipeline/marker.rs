//! What makes a stage resumable: its settings recorded when it starts, and a done marker written
//! atomically when it ends.
//!
//! `<stage dir>/settings.json` is written before a stage does any work. A rerun with other
//! settings is refused (a half-finished store must not be continued with other settings), naming
//! the keys that differ. `<stage dir>/done.json` is written last, through a temporary file and a
//! rename, so it exists only when every output of the stage is complete; a rerun skips a stage
//! with a marker.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{PipelineError, Result};

/// A finished stage's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DoneMarker {
    /// The stage's name.
    pub stage: String,
    /// The settings it ran with.
    pub settings: Value,
    /// Wall seconds of the run that finished it (0 when it was skipped entirely).
    pub seconds: f64,
    /// Seconds since the Unix epoch when it finished.
    pub finished_unix: u64,
    /// A short summary of its outputs (counts, files).
    pub summary: Value,
}

pub(crate) const SETTINGS_FILE: &str = "settings.json";
pub(crate) const DONE_FILE: &str = "done.json";
/// A stage's training-loss plot (SASRec, Thought Space, each SFT variant).
pub(crate) const LOSS_PLOT: &str = "loss.svg";
/// The Thought-Space map.
pub(crate) const MAP_PLOT: &str = "map.svg";

/// [`pulserec_core::fs::write_atomic`] with the error naming `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    pulserec_core::fs::write_atomic(path, bytes).map_err(|e| PipelineError::io(path, e))
}

/// Writes pretty JSON atomically.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| PipelineError::json(path, e))?;
    write_atomic(path, text.as_bytes())
}

/// Reads JSON.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| PipelineError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| PipelineError::json(path, e))
}

/// Dotted keys whose values differ between two JSON objects.
pub(crate) fn differing_keys(old: &Value, new: &Value) -> Vec<String> {
    fn walk(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(
                        &key,
                        x.get(k).unwrap_or(&Value::Null),
                        y.get(k).unwrap_or(&Value::Null),
                        out,
                    );
                }
            }
            _ if a != b => out.push(prefix.to_string()),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk("", old, new, &mut out);
    out
}

/// One stage's folder and settings.
pub(crate) struct StageDir {
    pub(crate) stage: &'static str,
    pub(crate) dir: PathBuf,
    pub(crate) settings: Value,
}

impl StageDir {
    /// The marker, when the stage finished with these settings; an error when it ran (or
    /// started) with other settings.
    pub(crate) fn done(&self) -> Result<Option<DoneMarker>> {
        let started = self.dir.join(SETTINGS_FILE);
        if started.exists() {
            let old: Value = read_json(&started)?;
            let keys = differing_keys(&old, &self.settings);
            if !keys.is_empty() {
                return Err(PipelineError::SettingsChanged {
                    stage: self.stage,
                    dir: self.dir.clone(),
                    keys,
                });
            }
        }
        let path = self.dir.join(DONE_FILE);
        if path.exists() {
            Ok(Some(read_json(&path)?))
        } else {
            Ok(None)
        }
    }

    /// Records the settings before any work (kept when already there).
    pub(crate) fn start(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|e| PipelineError::io(&self.dir, e))?;
        let path = self.dir.join(SETTINGS_FILE);
        if !path.exists() {
            write_json(&path, &self.settings)?;
        }
        Ok(())
    }

    /// Writes the done marker (last).
    pub(crate) fn finish(&self, seconds: f64, summary: Value) -> Result<DoneMarker> {
        let marker = DoneMarker {
            stage: self.stage.to_string(),
            settings: self.settings.clone(),
            seconds,
            finished_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            summary,
        };
        write_json(&self.dir.join(DONE_FILE), &marker)?;
        Ok(marker)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn differing_keys_are_dotted_and_sorted() {
        let a = json!({"seed": 1, "tot": {"depth": 3, "beam": 2}, "x": [1]});
        let b = json!({"seed": 1, "tot": {"depth": 1, "beam": 2}, "x": [2], "y": true});
        assert_eq!(differing_keys(&a, &b), vec!["tot.depth", "x", "y"]);
        assert!(differing_keys(&a, &a).is_empty());
    }

    #[test]
    fn changed_settings_are_refused_and_done_is_read_back() {
        let tmp = tempfile::tempdir().unwrap();
        let stage = |settings| StageDir {
            stage: "tot",
            dir: tmp.path().join("tot"),
            settings,
        };
        let s = stage(json!({"depth": 1}));
        assert!(s.done().unwrap().is_none());
        s.start().unwrap();
        let m = s.finish(1.5, json!({"users": 3})).unwrap();
        assert_eq!(s.done().unwrap(), Some(m));
        let e = stage(json!({"depth": 2})).done().unwrap_err().to_string();
        assert!(e.contains("depth") && e.contains("tot"), "{e}");
    }
}
