//! Reading and writing safetensors files by HF tensor name.
//!
//! burn's own safetensors support lives in `burn-store`, which the workspace does not enable; the
//! BERT layout is small and fixed, so a direct name -> tensor reader keeps loading explicit and
//! lets every error name the tensor that was wrong.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, Metadata, TensorInfo};

use crate::error::{Result, ThoughtSpaceError};

/// A safetensors file held in memory, indexed by tensor name.
pub struct WeightFile {
    path: PathBuf,
    bytes: Vec<u8>,
    data_start: usize,
    metadata: Metadata,
}

impl WeightFile {
    /// Reads and indexes a safetensors file.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| ThoughtSpaceError::io(path, e))?;
        let (header_len, metadata) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
                ThoughtSpaceError::Safetensors {
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
            .ok_or_else(|| ThoughtSpaceError::MissingTensor {
                path: self.path.clone(),
                tensor: names.first().copied().unwrap_or_default().to_string(),
            })
    }

    /// A tensor as `f32` values (F32, F16 and BF16 are read), checked against `expected` shape.
    pub fn f32(&self, name: &str, expected: &[usize]) -> Result<Vec<f32>> {
        let info = self.info(name)?;
        if info.shape != expected {
            return Err(ThoughtSpaceError::TensorShape {
                path: self.path.clone(),
                tensor: name.to_string(),
                expected: expected.to_vec(),
                found: info.shape.clone(),
            });
        }
        let (start, end) = info.data_offsets;
        let raw = self
            .bytes
            .get(self.data_start + start..self.data_start + end)
            .ok_or_else(|| ThoughtSpaceError::Safetensors {
                path: self.path.clone(),
                reason: format!("tensor `{name}` points past the end of the file"),
            })?;
        let numel: usize = expected.iter().product();
        let width = match info.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(ThoughtSpaceError::TensorDtype {
                    path: self.path.clone(),
                    tensor: name.to_string(),
                    dtype: format!("{other:?}"),
                });
            }
        };
        if raw.len() != numel * width {
            return Err(ThoughtSpaceError::Safetensors {
                path: self.path.clone(),
                reason: format!(
                    "tensor `{name}` holds {} bytes, its shape needs {}",
                    raw.len(),
                    numel * width
                ),
            });
        }
        let values = match info.dtype {
            Dtype::F32 => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            // Only F32/F16/BF16 reach this point (checked above).
            _ => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
        };
        Ok(values)
    }

    fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.metadata
            .info(name)
            .ok_or_else(|| ThoughtSpaceError::MissingTensor {
                path: self.path.clone(),
                tensor: name.to_string(),
            })
    }
}

/// An `f32` tensor to be written to a safetensors file.
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
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes named `f32` tensors as one safetensors file (atomically: temp file, then rename).
pub fn write_safetensors(path: &Path, tensors: &HashMap<String, OwnedTensor>) -> Result<()> {
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    let bytes = safetensors::serialize(tensors.iter(), Some(metadata)).map_err(|e| {
        ThoughtSpaceError::Safetensors {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    })?;
    pulserec_core::fs::write_atomic(path, &bytes).map_err(|e| ThoughtSpaceError::io(path, e))
}
