//! Named tensors in safetensors files: the one reader and writer of every crate's weights (the
//! SLM's HF checkpoints and LoRA adapters, the Thought Space's encoders). Tensors are read as
//! `f32` (F32, F16 and BF16 are decoded exactly) against the shape the caller expects, and every
//! error names the file and the tensor.
//!
//! ```
//! use pulserec_core::tensor_file::{OwnedTensor, TensorFile, write_f32};
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("model.safetensors");
//! write_f32(&path, [("w".to_string(), OwnedTensor::new(&[1.0, 2.0, 3.0, 4.0], vec![2, 2]))])?;
//! let file = TensorFile::open(&path)?;
//! assert_eq!(file.f32("w", &[2, 2])?, vec![1.0, 2.0, 3.0, 4.0]);
//! assert!(file.f32("w", &[4]).is_err()); // the shape is checked
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, Metadata, TensorInfo};

use crate::fs::FileBytes;

/// What can go wrong reading or writing a safetensors file; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TensorFileError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid safetensors (its header, or a tensor's byte range).
    #[error("{}: not a valid safetensors file: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No tensor of that name.
    #[error("{}: missing tensor `{tensor}`", path.display())]
    Missing {
        /// The file.
        path: PathBuf,
        /// The name looked up (the first spelling, when several were tried).
        tensor: String,
    },
    /// The tensor's shape is not the one expected.
    #[error("{}: tensor `{tensor}` has shape {found:?}, expected {expected:?}", path.display())]
    Shape {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The shape the caller needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// The tensor's dtype is not F32, F16 or BF16.
    #[error("{}: tensor `{tensor}` has dtype {dtype}; F32, F16 and BF16 are read", path.display())]
    Dtype {
        /// The file.
        path: PathBuf,
        /// The tensor.
        tensor: String,
        /// The dtype found.
        dtype: String,
    },
}

/// The result type of this module.
pub type Result<T> = std::result::Result<T, TensorFileError>;

/// A safetensors file indexed by tensor name.
pub struct TensorFile {
    path: PathBuf,
    bytes: FileBytes,
    data_start: usize,
    metadata: Metadata,
}

impl std::fmt::Debug for TensorFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorFile")
            .field("path", &self.path)
            .field("tensors", &self.metadata.tensors().len())
            .finish()
    }
}

impl TensorFile {
    /// Reads `path` into memory and indexes it.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map(FileBytes::Owned);
        Self::index(path, bytes)
    }

    /// Maps `path` read-only and indexes it (for checkpoints too large to copy).
    pub fn map(path: &Path) -> Result<Self> {
        Self::index(path, FileBytes::map(path))
    }

    fn index(path: &Path, bytes: std::io::Result<FileBytes>) -> Result<Self> {
        let bytes = bytes.map_err(|source| TensorFileError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (header_len, metadata) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
                TensorFileError::Format {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            bytes,
            data_start: 8 + header_len,
            metadata,
        })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a tensor of that name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.metadata.info(name).is_some()
    }

    /// All tensor names in the file.
    pub fn names(&self) -> Vec<String> {
        self.metadata.tensors().into_keys().collect()
    }

    /// The first of `names` that exists in the file (for checkpoints that spell a tensor in
    /// more than one way), or a missing-tensor error naming the first spelling.
    pub fn resolve<'a>(&self, names: &[&'a str]) -> Result<&'a str> {
        names
            .iter()
            .copied()
            .find(|n| self.contains(n))
            .ok_or_else(|| TensorFileError::Missing {
                path: self.path.clone(),
                tensor: names.first().copied().unwrap_or_default().to_string(),
            })
    }

    /// Tensor `name` as row-major `f32` values, which must have shape `expected`.
    pub fn f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        if info.shape != expected {
            return Err(TensorFileError::Shape {
                path: self.path.clone(),
                tensor: name.to_string(),
                expected: expected.to_vec(),
                found: info.shape.clone(),
            });
        }
        let width = match info.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(TensorFileError::Dtype {
                    path: self.path.clone(),
                    tensor: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        let (start, end) = info.data_offsets;
        let numel: usize = expected.iter().product();
        let raw = self
            .bytes
            .get(self.data_start + start..self.data_start + end)
            .filter(|raw| raw.len() == numel * width)
            .ok_or_else(|| TensorFileError::Format {
                path: self.path.clone(),
                reason: format!(
                    "tensor `{name}`: bytes {start}..{end} of the data do not hold {numel} values of {width} bytes"
                ),
            })?;
        Ok(match info.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            // Only BF16 is left (checked above).
            _ => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        })
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.metadata
            .info(name)
            .ok_or_else(|| TensorFileError::Missing {
                path: self.path.clone(),
                tensor: name.to_string(),
            })
    }
}

/// An `f32` tensor to be written to a safetensors file.
#[derive(Clone, Debug)]
pub struct OwnedTensor {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl OwnedTensor {
    /// Wraps row-major `f32` values of the given shape.
    pub fn new(values: &[f32], shape: Vec<usize>) -> Self {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Self { shape, bytes }
    }
}

impl safetensors::View for &OwnedTensor {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes named `f32` tensors as one safetensors file with PyTorch's `format: pt` metadata
/// (what HF and PEFT write), atomically ([`crate::fs::write_atomic`]). The file's layout does
/// not depend on the order of `tensors`.
pub fn write_f32(
    path: &Path,
    tensors: impl IntoIterator<Item = (String, OwnedTensor)>,
) -> Result<()> {
    let tensors: Vec<(String, OwnedTensor)> = tensors.into_iter().collect();
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let views = tensors.iter().map(|(name, t)| (name.as_str(), t));
    let bytes =
        safetensors::serialize(views, Some(metadata)).map_err(|e| TensorFileError::Format {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    crate::fs::write_atomic(path, &bytes).map_err(|source| TensorFileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_file_and_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let t = OwnedTensor::new(&[1.0, 2.0], vec![2]);
        write_f32(&path, [("a".to_string(), t)]).unwrap();
        for file in [
            TensorFile::open(&path).unwrap(),
            TensorFile::map(&path).unwrap(),
        ] {
            assert_eq!(file.f32("a", &[2]).unwrap(), [1.0, 2.0]);
            assert_eq!(file.resolve(&["b", "a"]).unwrap(), "a");
            let missing = file.f32("b", &[2]).unwrap_err().to_string();
            assert!(
                missing.contains("w.safetensors") && missing.contains("`b`"),
                "{missing}"
            );
            let shape = file.f32("a", &[1, 2]).unwrap_err();
            assert!(matches!(shape, TensorFileError::Shape { .. }), "{shape}");
        }
        std::fs::write(&path, b"not a safetensors file").unwrap();
        let bad = TensorFile::open(&path).unwrap_err();
        assert!(matches!(bad, TensorFileError::Format { .. }), "{bad}");
        let gone = TensorFile::map(&dir.path().join("gone")).unwrap_err();
        assert!(matches!(gone, TensorFileError::Io { .. }), "{gone}");
    }
}
