//! The data layer's error type: every variant says which file, and where it can, which line and
//! field.

use std::path::PathBuf;

/// Everything that can go wrong while loading, preparing or storing a data set.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// A file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A gzip stream is corrupt or truncated.
    #[error("{path}: corrupt or truncated gzip stream: {source}")]
    Gzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no data rows.
    #[error("{path}: file is empty (no data rows)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The header line is missing a column or is malformed.
    #[error("{path}:{line}: bad header: {message}")]
    Header {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A field could not be parsed.
    #[error("{path}:{line}: field `{field}`: {message}")]
    Field {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The column or JSON key.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A line has the wrong number of fields or is otherwise malformed.
    #[error("{path}:{line}: malformed line: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Text that must be UTF-8 is not.
    #[error("{path}:{line}: invalid UTF-8 in field `{field}`")]
    Utf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The column.
        field: String,
    },
    /// An id that must be unique appears twice.
    #[error("{path}:{line}: duplicate id `{id}` (first seen on line {first_line})")]
    DuplicateId {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the repeat.
        line: usize,
        /// The id.
        id: String,
        /// Where it was first seen.
        first_line: usize,
    },
    /// A record passed in from code (not a file) is invalid.
    #[error("record {index}: field `{field}`: {message}")]
    Record {
        /// 0-based position of the record in the input.
        index: usize,
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The format of a path could not be determined.
    #[error("{path}: cannot tell the data format: {message}")]
    UnknownFormat {
        /// The file or folder.
        path: PathBuf,
        /// What was looked for.
        message: String,
    },
    /// A setting is out of range.
    #[error("invalid setting `{field}`: {message}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Not enough items to draw the requested negatives for a user.
    #[error(
        "user {user}: only {available} items never interacted with, {requested} negatives requested"
    )]
    NotEnoughNegatives {
        /// The raw user id.
        user: String,
        /// Items available as negatives.
        available: usize,
        /// Negatives requested.
        requested: usize,
    },
    /// A Parquet or Arrow error while storing or reading a prepared data set.
    #[error("{path}: {message}")]
    Storage {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// Result with [`DataError`].
pub type Result<T, E = DataError> = std::result::Result<T, E>;

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<DataError> for pulserec_core::Error {
    fn from(e: DataError) -> Self {
        pulserec_core::Error::stage("data", e)
    }
}
