//! The crate's error type.

use std::path::PathBuf;

use pulserec_core::UserId;

/// Everything that can go wrong while building SFT data, training an adapter or evaluating a
/// candidate selector.
///
/// A selector answer that names no candidate is not an error: it is counted (the valid-answer
/// share). Errors are invalid settings or data, broken contracts (a generator answering the
/// wrong number of requests), model failures and I/O.
#[derive(Debug, thiserror::Error)]
pub enum SftError {
    /// A setting is out of range.
    #[error("invalid setting `{field}`: {message}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The data cannot give what was asked for one user.
    #[error("user {user}: {message}")]
    Data {
        /// The (dense) user id.
        user: UserId,
        /// What is missing or wrong.
        message: String,
    },
    /// A prompt plus its target does not fit the token budget even with no history left.
    #[error(
        "user {user}: the prompt with no history plus the target is {tokens} tokens, over the \
         limit of {max_len}"
    )]
    TooLong {
        /// The (dense) user id.
        user: UserId,
        /// Tokens of the shortest possible prompt plus target.
        tokens: usize,
        /// The configured maximum length.
        max_len: usize,
    },
    /// Training stopped (a NaN or infinite loss, with the last good adapter kept) or its
    /// checkpoint could not be written.
    #[error(transparent)]
    Train(#[from] pulserec_train::TrainError),
    /// A stored adapter does not fit the model or configuration it is loaded into.
    #[error("adapter {path}: {message}")]
    AdapterMismatch {
        /// The adapter directory.
        path: PathBuf,
        /// What does not match.
        message: String,
    },
    /// The text generator, likelihood scorer or selector called failed.
    #[error("{what} failed: {source}")]
    Model {
        /// The call (`"generate"`, `"log_likelihoods"`, `"select"`).
        what: &'static str,
        /// The underlying error.
        #[source]
        source: pulserec_core::Error,
    },
    /// A model answered a different number of results than it was asked for.
    #[error("{what} returned {got} results for {expected} requests")]
    Count {
        /// The call (`"generate"`, `"log_likelihoods"`, `"select"`).
        what: &'static str,
        /// Requests sent.
        expected: usize,
        /// Results received.
        got: usize,
    },
    /// The SLM runtime failed (tokenizer, model, adapter I/O).
    #[error(transparent)]
    Slm(#[from] pulserec_slm::SlmError),
    /// The data layer failed.
    #[error(transparent)]
    DataLayer(#[from] pulserec_data::DataError),
    /// A tensor operation failed.
    #[error("backend: {0}")]
    Backend(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file could not be written or read.
    #[error("{path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The serde error.
        message: String,
    },
}

impl SftError {
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

/// The answer of a model call (`what`: `"generate"`, `"log_likelihoods"`, `"select"`), its
/// error wrapped and its length checked against the `expected` one result per request.
pub(crate) fn one_per_request<T>(
    what: &'static str,
    expected: usize,
    answer: pulserec_core::Result<Vec<T>>,
) -> Result<Vec<T>> {
    let results = answer.map_err(|source| SftError::Model { what, source })?;
    if results.len() != expected {
        return Err(SftError::Count {
            what,
            expected,
            got: results.len(),
        });
    }
    Ok(results)
}

impl From<SftError> for pulserec_core::Error {
    fn from(e: SftError) -> Self {
        pulserec_core::Error::stage("sft", e)
    }
}

/// Result with [`SftError`].
pub type Result<T, E = SftError> = std::result::Result<T, E>;
