//! Tokenisation into dynamically padded batches.

use std::path::{Path, PathBuf};

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use tokenizers::{Tokenizer, TruncationParams};

use crate::config::BertConfig;
use crate::error::{Result, ThoughtSpaceError};

/// A WordPiece (or any HF) tokenizer checked against the model it feeds.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    max_len: usize,
    pad_id: u32,
}

/// Token ids of a batch, padded to its longest member.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    /// Row-major `[batch, seq]` token ids.
    pub ids: Vec<i64>,
    /// Row-major `[batch, seq]`, `true` for real tokens.
    pub keep: Vec<bool>,
    /// Number of texts.
    pub batch: usize,
    /// Padded length.
    pub seq: usize,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`, drops its fixed padding, truncates to `max_len` tokens and checks
    /// that every id it can produce has a row in the model's embedding table.
    pub fn from_file(path: &Path, max_len: usize, config: &BertConfig) -> Result<Self> {
        let mut inner = Tokenizer::from_file(path).map_err(|e| {
            let reason = e.to_string();
            if path.exists() {
                ThoughtSpaceError::TokenizerMismatch {
                    path: path.to_path_buf(),
                    reason: format!("cannot parse: {reason}"),
                }
            } else {
                ThoughtSpaceError::io(
                    path,
                    std::io::Error::new(std::io::ErrorKind::NotFound, reason),
                )
            }
        })?;
        let mismatch = |reason: String| ThoughtSpaceError::TokenizerMismatch {
            path: path.to_path_buf(),
            reason,
        };
        let vocab = inner.get_vocab_size(true);
        if vocab > config.vocab_size {
            return Err(mismatch(format!(
                "it has {vocab} tokens but the model's embedding table has {} rows",
                config.vocab_size
            )));
        }
        if max_len < 2 || max_len > config.max_position_embeddings {
            return Err(mismatch(format!(
                "max length {max_len} must lie in 2..={} (the model's position table)",
                config.max_position_embeddings
            )));
        }
        let pad_id = inner
            .get_padding()
            .map(|p| p.pad_id)
            .or_else(|| inner.token_to_id("[PAD]"))
            .unwrap_or(0);
        // The shipped MiniLM tokenizer pads every input to 128: batches pad themselves instead.
        inner.with_padding(None);
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                ..Default::default()
            }))
            .map_err(|e| mismatch(e.to_string()))?;
        Ok(Self {
            inner,
            path: path.to_path_buf(),
            max_len,
            pad_id,
        })
    }

    /// The file this tokenizer was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Longest input in tokens (special tokens included); longer texts are truncated.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Token ids of each text, special tokens included, truncated to [`Self::max_len`].
    pub fn encode_ids(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let encodings = self
            .inner
            .encode_batch_fast(texts.to_vec(), true)
            .map_err(|e| ThoughtSpaceError::Tokenizer(e.to_string()))?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }

    /// Pads already tokenised texts to the longest of them.
    pub fn pad(&self, ids: &[Vec<u32>]) -> TokenBatch {
        let seq = ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let batch = ids.len();
        let mut flat = vec![self.pad_id as i64; batch * seq];
        let mut keep = vec![false; batch * seq];
        for (row, tokens) in ids.iter().enumerate() {
            for (col, &t) in tokens.iter().enumerate() {
                flat[row * seq + col] = t as i64;
                keep[row * seq + col] = true;
            }
        }
        TokenBatch {
            ids: flat,
            keep,
            batch,
            seq,
        }
    }

    /// Tokenises and pads a batch of texts.
    pub fn batch(&self, texts: &[&str]) -> Result<TokenBatch> {
        Ok(self.pad(&self.encode_ids(texts)?))
    }
}

impl TokenBatch {
    /// The batch as tensors: ids `[batch, seq]`, padding mask `[batch, seq]` (`true` at
    /// padding) and the keep mask as floats `[batch, seq]` (1 for real tokens).
    pub fn tensors(&self, device: &Device) -> (Tensor<2, Int>, Tensor<2, Bool>, Tensor<2>) {
        let shape = [self.batch, self.seq];
        let ids = Tensor::from_data(TensorData::new(self.ids.clone(), shape), device);
        let pad: Vec<bool> = self.keep.iter().map(|k| !k).collect();
        let pad = Tensor::from_data(TensorData::new(pad, shape), device);
        let keep: Vec<f32> = self.keep.iter().map(|&k| k as u8 as f32).collect();
        let keep = Tensor::from_data(TensorData::new(keep, shape), device);
        (ids, pad, keep)
    }
}
