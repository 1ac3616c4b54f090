//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in `pulserec-thoughtspace`.
///
/// Each variant names what was bad: the file, the line, the tensor or the field.
#[derive(Debug, thiserror::Error)]
pub enum ThoughtSpaceError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (model config, pooling config, checkpoint config) did not parse.
    #[error("{path}: invalid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error (with its line and column).
        #[source]
        source: serde_json::Error,
    },
    /// A config file parsed but says something this crate cannot work with.
    #[error("{path}: field `{field}`: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The offending field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A weights file is malformed, lacks a tensor, or has one of another shape or dtype than
    /// the config implies.
    #[error(transparent)]
    Tensors(#[from] pulserec_core::tensor_file::TensorFileError),
    /// The tokenizer does not fit the model (its vocabulary is larger than the embedding table,
    /// or it lacks a special token the model needs).
    #[error("{path}: tokenizer does not fit the model: {reason}")]
    TokenizerMismatch {
        /// The tokenizer file.
        path: PathBuf,
        /// What does not fit.
        reason: String,
    },
    /// The tokenizer library failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A rationale record is missing a field or has an empty text.
    #[error("{path}:{line}: {reason}")]
    Record {
        /// The rationale file.
        path: PathBuf,
        /// 1-based line (JSONL) or row (Parquet) number.
        line: usize,
        /// What is wrong with the record.
        reason: String,
    },
    /// A training setting is out of range.
    #[error("invalid setting `{field}`: {message}")]
    Setting {
        /// The setting, as [`crate::TrainConfig`] names it (`loss.temperature`).
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The caller passed something unusable (empty batch, mismatched shapes, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Training stopped (a NaN or infinite loss, with the last good checkpoint kept) or its
    /// checkpoint could not be written.
    #[error(transparent)]
    Train(#[from] pulserec_train::TrainError),
    /// A tensor computation or read-back failed inside burn.
    #[error("tensor backend: {0}")]
    Backend(String),
    /// Writing an image failed.
    #[error("{path}: cannot write PNG: {reason}")]
    Image {
        /// The image file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
}

impl ThoughtSpaceError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<ThoughtSpaceError> for pulserec_core::Error {
    fn from(e: ThoughtSpaceError) -> Self {
        pulserec_core::Error::stage("thoughtspace", e)
    }
}

/// Result with [`ThoughtSpaceError`].
pub type Result<T, E = ThoughtSpaceError> = std::result::Result<T, E>;
