//! Per-layer key/value cache for a batch of sequences sharing slot positions.

use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{Result, SlmError};

/// Keys and values of every layer for a batch of sequences.
///
/// Slots are shared by all rows; row `r`'s first `pad(r)` slots are left padding and hidden
/// from attention. Cloning is cheap-ish (tensors are reference counted), and
/// [`KvCache::select_rows`] builds a new batch from chosen rows, repeating rows as needed: that
/// is how many continuations of one prompt reuse its prefill.
#[derive(Clone, Debug)]
pub struct KvCache {
    /// `[batch, kv_heads, slots, head_dim]` per layer.
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    pads: Vec<usize>,
    len: usize,
}

impl KvCache {
    /// An empty cache.
    pub fn new(num_layers: usize, batch: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            pads: vec![0; batch],
            len: 0,
        }
    }

    /// Rows.
    pub fn batch(&self) -> usize {
        self.pads.len()
    }

    /// Filled slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no slot is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Left-padding slots of row `r`.
    pub fn pad(&self, r: usize) -> usize {
        self.pads[r]
    }

    pub(crate) fn push_pads(&mut self, new_pads: &[usize]) -> Result<()> {
        if new_pads.iter().all(|&p| p == 0) {
            return Ok(());
        }
        if self.len != 0 || new_pads.len() != self.pads.len() {
            return Err(SlmError::Backend(
                "left padding is only allowed on an empty cache".into(),
            ));
        }
        self.pads.copy_from_slice(new_pads);
        Ok(())
    }

    /// Appends new keys/values of layer `l` and returns the full ones.
    ///
    /// # Shapes
    /// - `k`, `v`: `[batch, kv_heads, new, head_dim]`; returns `[batch, kv_heads, slots, head_dim]`
    pub(crate) fn append(
        &mut self,
        l: usize,
        k: Tensor<4>,
        v: Tensor<4>,
    ) -> (Tensor<4>, Tensor<4>) {
        let new = k.dims()[2];
        let (k, v) = match self.layers[l].take() {
            None => (k, v),
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 2), Tensor::cat(vec![pv, v], 2)),
        };
        self.layers[l] = Some((k.clone(), v.clone()));
        if l + 1 == self.layers.len() {
            self.len += new;
        }
        (k, v)
    }

    /// A cache made of the given rows (repeats allowed), e.g. `[0, 0, 0]` for three
    /// continuations of row 0's prompt.
    pub fn select_rows(&self, rows: &[usize]) -> Result<KvCache> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.batch()) {
            return Err(SlmError::Backend(format!(
                "cache row {bad} of {}",
                self.batch()
            )));
        }
        let layers = self
            .layers
            .iter()
            .map(|kv| {
                kv.as_ref().map(|(k, v)| {
                    let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
                    let idx = Tensor::<1, Int>::from_data(
                        TensorData::new(idx, [rows.len()]),
                        &k.device(),
                    );
                    (k.clone().select(0, idx.clone()), v.clone().select(0, idx))
                })
            })
            .collect();
        Ok(KvCache {
            layers,
            pads: rows.iter().map(|&r| self.pads[r]).collect(),
            len: self.len,
        })
    }
}
