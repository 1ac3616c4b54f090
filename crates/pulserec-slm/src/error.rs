//! The crate's error type: every failure names the file, byte offset or tensor involved.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum SlmError {
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A GGUF file ended before a field could be read.
    #[error(
        "{file}: truncated GGUF: needed {needed} bytes for {what} at offset {offset}, file has {len}"
    )]
    Truncated {
        /// The file (or `<memory>`).
        file: String,
        /// What was being read.
        what: String,
        /// Byte offset of the read.
        offset: u64,
        /// Bytes needed.
        needed: u64,
        /// File length.
        len: u64,
    },
    /// A GGUF file is structurally wrong (bad magic, bad type code, absurd count, ...).
    #[error("{file}: corrupt GGUF at offset {offset}: {reason}")]
    Corrupt {
        /// The file (or `<memory>`).
        file: String,
        /// Byte offset where the problem was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A GGUF version this parser does not read.
    #[error("{file}: unsupported GGUF version {version} (supported: 2, 3)")]
    UnsupportedVersion {
        /// The file.
        file: String,
        /// The version field.
        version: u32,
    },
    /// A tensor uses a quantisation this crate cannot dequantise.
    #[error("tensor `{tensor}`: unsupported tensor type {dtype}")]
    UnsupportedDType {
        /// The tensor.
        tensor: String,
        /// The type's name or code.
        dtype: String,
    },
    /// A tensor's recorded shape or byte range does not fit its data.
    #[error("tensor `{tensor}`: {reason}")]
    BadTensor {
        /// The tensor.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor the architecture needs is absent.
    #[error("{file}: missing tensor `{tensor}`")]
    MissingTensor {
        /// The model file or directory.
        file: String,
        /// The tensor name.
        tensor: String,
    },
    /// A metadata key the architecture needs is absent or has the wrong type.
    #[error("{file}: metadata `{key}`: {reason}")]
    Metadata {
        /// The model file.
        file: String,
        /// The metadata key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A model architecture this crate does not run.
    #[error("unsupported architecture `{0}` (supported: llama, qwen2, phi3)")]
    UnsupportedArchitecture(String),
    /// A safetensors file or HF `config.json` could not be read.
    #[error("{file}: {reason}")]
    HfFormat {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Building or running the tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template this crate cannot apply.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// A prompt (plus the tokens to generate) does not fit the model's context.
    #[error("request {index}: {tokens} tokens exceed the context length {context}")]
    ContextOverflow {
        /// Index of the request in its batch.
        index: usize,
        /// Tokens needed.
        tokens: usize,
        /// The model's context length.
        context: usize,
    },
    /// A request's settings are invalid (e.g. a negative temperature).
    #[error("invalid request {index}: {reason}")]
    InvalidRequest {
        /// Index of the request in its batch.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// LoRA settings that cannot build an adapter.
    #[error("invalid LoRA config: {0}")]
    InvalidLoraConfig(String),
    /// An HF safetensors file is malformed, or a tensor in it has another shape or dtype than
    /// the config implies.
    #[error(transparent)]
    Tensors(#[from] pulserec_core::tensor_file::TensorFileError),
    /// A LoRA adapter file that is malformed or does not fit the model.
    #[error("LoRA adapter {path}: {reason}")]
    Adapter {
        /// The adapter file (or directory).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A training batch whose shape, token ids or loss mask are inconsistent.
    #[error("training batch: {0}")]
    InvalidBatch(String),
    /// A tensor backend operation failed.
    #[error("backend: {0}")]
    Backend(String),
}

/// Result with [`SlmError`].
pub type Result<T, E = SlmError> = std::result::Result<T, E>;

/// A request that cannot be served as asked (too long for the context, invalid settings) is the
/// caller's mistake, [`pulserec_core::Error::InvalidInput`]; anything else is a stage failure.
impl From<SlmError> for pulserec_core::Error {
    fn from(e: SlmError) -> Self {
        match e {
            SlmError::ContextOverflow { .. } | SlmError::InvalidRequest { .. } => {
                pulserec_core::Error::InvalidInput(e.to_string())
            }
            e => pulserec_core::Error::stage("slm", e),
        }
    }
}
