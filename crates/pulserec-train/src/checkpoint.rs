//! One directory per finished epoch, written atomically, the previous one removed.

use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError};

/// Epoch checkpoints `dir/epoch-NNN` (1-based): each is written into a temporary sibling
/// directory and renamed into place once complete, after which the previous checkpoint this
/// value wrote is removed. A crash or a non-finite loss mid-epoch therefore leaves the last
/// complete checkpoint, never a partial one.
///
/// ```
/// use pulserec_train::EpochCheckpoints;
/// let dir = tempfile::tempdir()?;
/// let mut checkpoints = EpochCheckpoints::default();
/// for epoch in 1..=2 {
///     checkpoints.save(dir.path(), epoch, |tmp| {
///         std::fs::write(tmp.join("weights.bin"), [epoch as u8])
///             .map_err(|e| pulserec_train::TrainError::Io { path: tmp.into(), source: e })
///     })?;
/// }
/// let last = checkpoints.last_good().unwrap();
/// assert!(last.ends_with("epoch-002") && !dir.path().join("epoch-001").exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct EpochCheckpoints {
    last: Option<PathBuf>,
}

impl EpochCheckpoints {
    /// The last checkpoint this value wrote, if any.
    pub fn last_good(&self) -> Option<&Path> {
        self.last.as_deref()
    }

    /// Writes epoch `epoch`'s checkpoint: `write` fills a fresh temporary directory in `dir`
    /// (created if needed), which then replaces `dir/epoch-NNN`; the previous checkpoint is
    /// removed afterwards. When `write` fails, the temporary directory is removed and the
    /// previous checkpoint kept.
    pub fn save<E: From<TrainError>>(
        &mut self,
        dir: &Path,
        epoch: usize,
        write: impl FnOnce(&Path) -> std::result::Result<(), E>,
    ) -> std::result::Result<PathBuf, E> {
        let path = dir.join(format!("epoch-{epoch:03}"));
        std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
        let tmp = tempfile::Builder::new()
            .prefix(".epoch-")
            .tempdir_in(dir)
            .map_err(|e| TrainError::io(dir, e))?;
        write(tmp.path())?;
        replace(tmp, dir, &path)?;
        if let Some(previous) = self.last.replace(path.clone())
            && previous != path
        {
            std::fs::remove_dir_all(&previous).map_err(|e| TrainError::io(&previous, e))?;
        }
        tracing::info!(checkpoint = %path.display(), "checkpoint written");
        Ok(path)
    }
}

/// Moves the complete temporary directory `tmp` (in `dir`) to `path`.
fn replace(tmp: tempfile::TempDir, dir: &Path, path: &Path) -> Result<()> {
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(|e| TrainError::io(path, e))?;
    }
    let kept = tmp.keep();
    std::fs::rename(&kept, path).map_err(|e| TrainError::io(path, e))?;
    // The rename itself survives a power loss once the parent directory is synced.
    pulserec_core::fs::sync_dir(dir).map_err(|e| TrainError::io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_keeps_the_previous_checkpoint_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = dir.path().join("ckpt");
        let mut checkpoints = EpochCheckpoints::default();
        let one = checkpoints
            .save(&ckpt, 1, |tmp| {
                std::fs::write(tmp.join("w"), b"1").map_err(|e| TrainError::io(tmp, e))
            })
            .unwrap();
        let err = checkpoints
            .save(&ckpt, 2, |tmp| {
                Err(TrainError::io(tmp, std::io::ErrorKind::Other.into()))
            })
            .unwrap_err();
        assert!(matches!(err, TrainError::Io { .. }));
        assert_eq!(checkpoints.last_good(), Some(one.as_path()));
        let names: Vec<_> = std::fs::read_dir(&ckpt)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["epoch-001"]);
        assert_eq!(std::fs::read(one.join("w")).unwrap(), b"1");
    }
}
