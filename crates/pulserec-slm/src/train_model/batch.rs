//! [`TokenBatch`]: right-padded token rows with their loss masks and branch layout.

use crate::error::{Result, SlmError};

/// A batch of right-padded token rows for training.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    /// `batch * seq` token ids, row-major; positions past a row's length hold any valid id.
    pub tokens: Vec<u32>,
    /// Rows.
    pub batch: usize,
    /// Padded row length.
    pub seq: usize,
    /// Real tokens per row (`1..=seq`).
    pub lengths: Vec<usize>,
    /// `batch * seq` weights; `1.0` where token `t` is a target predicted from tokens `< t`, `0.0`
    /// elsewhere (never at position 0 or past the row's length). Other non-negative values
    /// weight the position.
    pub loss_mask: Vec<f32>,
    /// Branches of a shared prefix: empty for plain causal rows, else `batch * seq` segment ids.
    /// Segment 0 is the prefix; a token of segment `k > 0` attends to the prefix and to the
    /// earlier tokens of segment `k` only, and its RoPE position counts just those tokens, so
    /// several continuations of one prefix are trained in one row exactly as if each followed
    /// the prefix alone (see [`TokenBatch::with_segments`]).
    pub segments: Vec<u16>,
}

impl TokenBatch {
    /// Right-pads `rows` (token ids with their per-token loss masks) with `pad` to the longest.
    pub fn from_rows(rows: &[(Vec<u32>, Vec<f32>)], pad: u32) -> Result<Self> {
        let seq = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let mut batch = Self {
            tokens: Vec::with_capacity(rows.len() * seq),
            batch: rows.len(),
            seq,
            lengths: Vec::with_capacity(rows.len()),
            loss_mask: Vec::with_capacity(rows.len() * seq),
            segments: Vec::new(),
        };
        for (i, (tokens, mask)) in rows.iter().enumerate() {
            if tokens.len() != mask.len() {
                return Err(SlmError::InvalidBatch(format!(
                    "row {i}: {} tokens but {} mask values",
                    tokens.len(),
                    mask.len()
                )));
            }
            batch.lengths.push(tokens.len());
            batch.tokens.extend_from_slice(tokens);
            batch.tokens.resize((i + 1) * seq, pad);
            batch.loss_mask.extend_from_slice(mask);
            batch.loss_mask.resize((i + 1) * seq, 0.0);
        }
        Ok(batch)
    }

    /// Gives every row its segment ids (one per real token, padded with the row's last id):
    /// segment 0 is the shared prefix, each `k > 0` one continuation of it (see
    /// [`TokenBatch::segments`]).
    pub fn with_segments(mut self, rows: &[Vec<u16>]) -> Result<Self> {
        if rows.len() != self.batch {
            return Err(SlmError::InvalidBatch(format!(
                "{} segment rows for {} rows",
                rows.len(),
                self.batch
            )));
        }
        let mut segments = Vec::with_capacity(self.batch * self.seq);
        for (r, ids) in rows.iter().enumerate() {
            if ids.len() != self.lengths[r] {
                return Err(SlmError::InvalidBatch(format!(
                    "row {r}: {} segment ids for {} tokens",
                    ids.len(),
                    self.lengths[r]
                )));
            }
            segments.extend_from_slice(ids);
            let last = ids.last().copied().unwrap_or(0);
            segments.resize((r + 1) * self.seq, last);
        }
        self.segments = segments;
        Ok(self)
    }

    /// Whether token `j` is visible from token `i` (`j <= i`) of row `r`.
    pub(super) fn sees(&self, r: usize, i: usize, j: usize) -> bool {
        if self.segments.is_empty() {
            return true;
        }
        let seg = &self.segments[r * self.seq..(r + 1) * self.seq];
        seg[j] == 0 || seg[j] == seg[i]
    }

    /// Checks shapes, lengths, token ids (`< vocab`), context length and the mask.
    pub fn validate(&self, vocab: usize, context: usize) -> Result<()> {
        let bad = |m: String| Err(SlmError::InvalidBatch(m));
        let n = self.batch * self.seq;
        if self.batch == 0 || self.seq == 0 {
            return bad(format!("empty batch ({} x {})", self.batch, self.seq));
        }
        if self.tokens.len() != n || self.loss_mask.len() != n || self.lengths.len() != self.batch {
            return bad(format!(
                "{} tokens, {} mask values and {} lengths for {} rows of {}",
                self.tokens.len(),
                self.loss_mask.len(),
                self.lengths.len(),
                self.batch,
                self.seq
            ));
        }
        if !self.segments.is_empty() && self.segments.len() != n {
            return bad(format!(
                "{} segment ids for {} rows of {}",
                self.segments.len(),
                self.batch,
                self.seq
            ));
        }
        if self.seq > context {
            return bad(format!(
                "rows of {} tokens exceed the context length {context}",
                self.seq
            ));
        }
        for (r, &len) in self.lengths.iter().enumerate() {
            if len == 0 || len > self.seq {
                return bad(format!("row {r}: length {len} outside 1..={}", self.seq));
            }
            let row = r * self.seq..(r + 1) * self.seq;
            if let Some(t) = self.tokens[row.clone()]
                .iter()
                .find(|&&t| t as usize >= vocab)
            {
                return bad(format!(
                    "row {r}: token id {t} outside the vocabulary ({vocab})"
                ));
            }
            for (p, &w) in self.loss_mask[row].iter().enumerate() {
                if !(w.is_finite() && w >= 0.0) {
                    return bad(format!("row {r} position {p}: loss mask {w}"));
                }
                if w > 0.0 && (p == 0 || p >= len) {
                    return bad(format!(
                        "row {r} position {p}: a target must follow a token and lie within the row's {len} tokens"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Positions with a positive loss mask.
    pub fn target_count(&self) -> usize {
        self.loss_mask.iter().filter(|&&w| w > 0.0).count()
    }
}
