//! The error type that crosses stage boundaries.

/// An error returned through a stage trait.
///
/// Each stage crate has its own detailed `thiserror` enum; at a trait boundary it is carried as
/// the `source` of [`Error::Stage`], so callers can still downcast to it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller passed something the stage cannot work with.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A stage implementation failed.
    #[error("{stage} failed: {source}")]
    Stage {
        /// The stage or component that failed (e.g. `"slm generate"`).
        stage: &'static str,
        /// The stage's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// Wraps a stage's own error.
    pub fn stage(
        stage: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Stage {
            stage,
            source: Box::new(source),
        }
    }
}

/// Result with the shared [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
