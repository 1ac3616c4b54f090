//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in rationale generation and Tree-of-Thought search.
///
/// Malformed model *output* is not an error: it is parsed with a fallback and flagged
/// (`parsed: false`). Errors are broken contracts (a generator or scorer returning the wrong
/// number of results), invalid settings and I/O.
#[derive(Debug, thiserror::Error)]
pub enum TotError {
    /// A setting is out of range.
    #[error("invalid setting `{field}`: {message}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The text generator failed.
    #[error("text generation failed: {0}")]
    Generate(#[source] pulserec_core::Error),
    /// The thought scorer failed.
    #[error("thought scoring failed: {0}")]
    Score(#[source] pulserec_core::Error),
    /// The generator answered a different number of generations than it was asked for.
    #[error("the generator returned {got} generations for {expected} requests")]
    GenerationCount {
        /// Requests sent.
        expected: usize,
        /// Generations received.
        got: usize,
    },
    /// The scorer answered a different number of scores than it was given chains.
    #[error("the scorer `{scorer}` returned {got} scores for {expected} chains")]
    ScoreCount {
        /// The scorer's name.
        scorer: String,
        /// Chains sent.
        expected: usize,
        /// Scores received.
        got: usize,
    },
    /// A remote completions server failed for a request, after retries where they apply.
    #[error("{url}: request {request} failed after {attempts} attempt(s): {message}")]
    Remote {
        /// The endpoint.
        url: String,
        /// Index of the request in its batch.
        request: usize,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        message: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A stored record could not be read back.
    #[error("{path}:{line}: {message}")]
    Store {
        /// The file.
        path: PathBuf,
        /// 1-based line (JSON Lines part) or row (Parquet part).
        line: usize,
        /// What is wrong with the record.
        message: String,
    },
    /// A Parquet part could not be written or read as a whole (not Parquet, a missing or
    /// mistyped column); the error names the file.
    #[error("rationale store: {0}")]
    Data(#[from] pulserec_data::DataError),
}

impl TotError {
    pub(crate) fn config(field: &'static str, message: impl Into<String>) -> Self {
        Self::Config {
            field,
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<TotError> for pulserec_core::Error {
    fn from(e: TotError) -> Self {
        pulserec_core::Error::stage("tree-of-thought", e)
    }
}

/// Result with [`TotError`].
pub type Result<T, E = TotError> = std::result::Result<T, E>;
