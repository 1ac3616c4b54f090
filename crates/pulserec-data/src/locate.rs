//! Where the assets and the shared data live, for tests, examples and benches.
//!
//! Library code takes paths; this module only answers the question "where did `cargo xtask
//! assets` put things" in one place, so every test agrees.
//!
//! - Assets: `$PULSEREC_ASSETS`, else `<workspace root>/assets`.
//! - Shared data: `$PULSEREC_SHARED_DATA`, else `<workspace root>/../shared/data`.
//!
//! A missing asset is an error under CI (`CI` set) and a skip elsewhere; missing shared data is an
//! error when `PULSEREC_REQUIRE_SHARED=1` and a skip elsewhere. Skips are announced on stderr.

use std::path::{Path, PathBuf};

/// The workspace root: the nearest ancestor of `$CARGO_MANIFEST_DIR` (or the current folder)
/// that holds a `Cargo.lock`.
pub fn workspace_root() -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_default();
    start
        .ancestors()
        .find(|p| p.join("Cargo.lock").is_file())
        .map(Path::to_path_buf)
        .unwrap_or(start)
}

/// The assets folder.
pub fn assets_dir() -> PathBuf {
    std::env::var_os("PULSEREC_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("assets"))
}

/// The shared data folder (beside the project).
pub fn shared_data_dir() -> PathBuf {
    std::env::var_os("PULSEREC_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("..").join("shared").join("data"))
}

/// `assets/<rel>` if it exists. Missing: panics under CI (a test must not pass silently without
/// its asset), otherwise prints a skip notice and returns `None`.
pub fn asset(rel: &str) -> Option<PathBuf> {
    found_or_skip(
        assets_dir().join(rel),
        std::env::var_os("CI").is_some(),
        "run `cargo xtask assets`",
    )
}

/// `<shared data>/<rel>` if it exists. Missing: panics when `PULSEREC_REQUIRE_SHARED=1`,
/// otherwise prints a skip notice and returns `None`.
pub fn shared(rel: &str) -> Option<PathBuf> {
    let required = std::env::var("PULSEREC_REQUIRE_SHARED").is_ok_and(|v| v == "1");
    found_or_skip(
        shared_data_dir().join(rel),
        required,
        "it lives in ../shared/data beside the project",
    )
}

fn found_or_skip(path: PathBuf, required: bool, hint: &str) -> Option<PathBuf> {
    if path.exists() {
        return Some(path);
    }
    // Panicking is the point here: this is test support, and a required input is missing.
    assert!(
        !required,
        "required test input {} is missing ({hint})",
        path.display()
    );
    eprintln!("skipping: {} is missing ({hint})", path.display());
    None
}
