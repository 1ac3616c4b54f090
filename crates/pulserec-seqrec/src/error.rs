//! The crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong in `pulserec-seqrec`, naming what and where.
#[derive(Debug, thiserror::Error)]
pub enum SeqRecError {
    /// A configuration value is out of range.
    #[error("invalid config field `{field}`: {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// An item id is outside the model's catalogue.
    #[error("{what}: item id {item} is outside the catalogue (1..={n_items})")]
    ItemOutOfRange {
        /// Where the id was seen (e.g. `"candidates of user 3"`).
        what: String,
        /// The offending id.
        item: u32,
        /// The number of real items the model knows.
        n_items: usize,
    },
    /// Inputs that must be parallel have different lengths.
    #[error("{what}: expected {expected} entries, got {got}")]
    LengthMismatch {
        /// What was compared.
        what: &'static str,
        /// The expected count.
        expected: usize,
        /// The count received.
        got: usize,
    },
    /// A user id is outside the users whose vectors were given.
    #[error("user {user} is outside the {n_users} users with vectors")]
    UserOutOfRange {
        /// The offending id.
        user: u32,
        /// The number of user vectors.
        n_users: usize,
    },
    /// Nothing to train or evaluate on.
    #[error("{0}")]
    Empty(&'static str),
    /// Reading or writing a file failed.
    #[error("{action} `{path}`: {source}")]
    Io {
        /// What was being done (`"writing config"`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A config or report file is not valid JSON for its type.
    #[error("parsing `{path}`: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A checkpoint could not be written or applied.
    #[error("checkpoint `{path}`: {message}")]
    Checkpoint {
        /// The weights file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A tensor could not be read back from the device.
    #[error("reading a tensor back from the device: {0}")]
    Tensor(String),
}

/// Result with [`SeqRecError`].
pub type Result<T, E = SeqRecError> = std::result::Result<T, E>;

impl From<SeqRecError> for pulserec_core::Error {
    fn from(e: SeqRecError) -> Self {
        pulserec_core::Error::stage("sasrec", e)
    }
}
