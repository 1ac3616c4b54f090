//! Atomic file writes: whoever reads the file (another process, a resumed run) sees either the
//! old contents or the complete new ones, never a half-written file, even after a crash or a
//! `kill -9` mid-write. And [`FileBytes`], a weight file's bytes read or mapped.

use std::io::{self, Write};
use std::path::Path;

/// A file's bytes: read into memory, or mapped read-only (model weights too large to copy).
pub enum FileBytes {
    /// Bytes held in memory.
    Owned(Vec<u8>),
    /// A read-only map of the file.
    Mapped(memmap2::Mmap),
}

impl FileBytes {
    /// Maps `path` read-only.
    pub fn map(path: &Path) -> io::Result<Self> {
        let file = std::fs::File::open(path)?;
        // SAFETY: a read-only map. Like every mmap-based model loader, this relies on no other
        // process truncating the file while it is mapped; readers bound-check every access
        // against the length seen at map time.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::Mmap::map(&file) }?;
        Ok(Self::Mapped(map))
    }
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Mapped(m) => m,
        }
    }
}

/// Writes `bytes` to `path` atomically, creating its folder if needed.
///
/// The bytes go to a temporary file in the same folder (a hidden `.tmp*` name from `tempfile`,
/// removed if anything fails; created with the permissions `File::create` gives), are synced to
/// disk, and the file is renamed over `path`; on Unix
/// the folder is then synced too, so the rename itself survives a power loss. A crash can leave
/// at worst a stray `.tmp*` file, never a partial `path`.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("run/settings.json");
/// pulserec_core::fs::write_atomic(&path, b"{}")?;
/// pulserec_core::fs::write_atomic(&path, b"{\"seed\": 1}")?;
/// assert_eq!(std::fs::read_to_string(&path)?, "{\"seed\": 1}");
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp");
    // As `File::create` would: 0o666 less the umask (tempfile's own default is owner-only).
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Syncs the directory `dir` to disk, so that a rename or a new entry in it survives a power
/// loss (a no-op off Unix).
#[cfg(unix)]
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Syncs the directory `dir` to disk, so that a rename or a new entry in it survives a power
/// loss (a no-op off Unix).
#[cfg(not(unix))]
pub fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["b.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn files_get_the_usual_permissions_not_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let atomic = dir.path().join("atomic");
        let plain = dir.path().join("plain");
        write_atomic(&atomic, b"x").unwrap();
        std::fs::write(&plain, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&atomic), mode(&plain));
    }

    #[test]
    fn a_failed_rename_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(&dir.path().join("x"), b"old").unwrap();
        // A folder where the file should go: the rename fails, the temporary is removed.
        std::fs::create_dir(dir.path().join("d")).unwrap();
        assert!(write_atomic(&dir.path().join("d"), b"new").is_err());
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["d", "x"]);
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"old");
    }
}
