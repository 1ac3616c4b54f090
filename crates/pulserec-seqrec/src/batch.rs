//! Turning item sequences into padded id tensors and training targets.
//!
//! One row per user, left-padded to `max_len` (the most recent item in the last slot). For
//! training, the input is the sequence without its last item and the target at each slot is the
//! item that followed it, so every position carries a loss (the paper's formulation, not
//! RecBole's one-row-per-prefix expansion).

use std::collections::HashSet;

use burn::tensor::{Device, Int, Tensor, TensorData};
use pulserec_core::ItemId;
use rand::RngExt;

use crate::error::{Result, SeqRecError};

/// Slots needed for `lens` under a `max_len` cap: the longest row, at least 1. Trimming the
/// left padding changes nothing for the model (positions count from the last slot, padding keys
/// are masked) and saves the work on slots no row uses.
pub fn batch_width(lens: impl IntoIterator<Item = usize>, max_len: usize) -> usize {
    lens.into_iter().max().unwrap_or(0).clamp(1, max_len)
}

/// Left-pads (or truncates to the most recent `max_len`) each history into a `[rows, width]`
/// id matrix, row-major, where `width` is [`batch_width`] of the history lengths.
pub fn pad_histories(histories: &[&[ItemId]], max_len: usize) -> (Vec<i64>, usize) {
    let width = batch_width(histories.iter().map(|h| h.len()), max_len);
    let mut ids = vec![0i64; histories.len() * width];
    for (row, h) in histories.iter().enumerate() {
        let tail = &h[h.len().saturating_sub(width)..];
        let start = row * width + width - tail.len();
        for (slot, item) in ids[start..start + tail.len()].iter_mut().zip(tail) {
            *slot = i64::from(item.0);
        }
    }
    (ids, width)
}

/// Checks that every id of `items` is a real item of an `n_items` catalogue.
pub fn check_items(items: &[ItemId], n_items: usize, what: impl Fn() -> String) -> Result<()> {
    match items.iter().find(|i| i.is_pad() || i.index() > n_items) {
        Some(bad) => Err(SeqRecError::ItemOutOfRange {
            what: what(),
            item: bad.0,
            n_items,
        }),
        None => Ok(()),
    }
}

/// The padded input ids as an Int tensor.
///
/// # Shapes
/// - output: `[histories.len(), width]`, `width` = the longest history capped at `max_len`
pub fn history_tensor(histories: &[&[ItemId]], max_len: usize, device: &Device) -> Tensor<2, Int> {
    let (ids, width) = pad_histories(histories, max_len);
    Tensor::from_data(TensorData::new(ids, [histories.len(), width]), device)
}

/// One training batch on the host: inputs, and for each real slot its target and a negative.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainBatch {
    /// Rows in the batch.
    pub rows: usize,
    /// Slots per row: the longest row's number of (input, target) pairs, capped at the model's
    /// `max_len` (see [`batch_width`]).
    pub width: usize,
    /// Input ids `[rows * width]`, left-padded.
    pub inputs: Vec<i64>,
    /// Flat indices (`row * width + slot`) of the slots that carry a loss.
    pub positions: Vec<i64>,
    /// The next item at each loss slot, parallel to `positions`.
    pub targets: Vec<i64>,
    /// One sampled negative per loss slot (never an item of that user's training sequence).
    pub negatives: Vec<i64>,
}

/// Builds a training batch from whole training sequences (input = all but the last item,
/// targets = all but the first). Sequences shorter than 2 carry no loss and must be filtered out
/// by the caller. Negatives are drawn uniformly from `1..=n_items` outside the user's sequence.
pub fn train_batch(
    sequences: &[&[ItemId]],
    max_len: usize,
    n_items: usize,
    rng: &mut impl rand::Rng,
) -> TrainBatch {
    let rows = sequences.len();
    let width = batch_width(sequences.iter().map(|s| s.len().saturating_sub(1)), max_len);
    let mut inputs = vec![0i64; rows * width];
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    let mut negatives = Vec::new();
    let mut seen = HashSet::new();
    for (row, seq) in sequences.iter().enumerate() {
        seen.clear();
        seen.extend(seq.iter().map(|i| i.0));
        // The last `max_len` (input, target) pairs.
        let pairs = seq.len().saturating_sub(1);
        let take = pairs.min(width);
        let first = pairs - take;
        for p in 0..take {
            let slot = row * width + width - take + p;
            inputs[slot] = i64::from(seq[first + p].0);
            positions.push(slot as i64);
            targets.push(i64::from(seq[first + p + 1].0));
            negatives.push(sample_outside(&seen, n_items, rng));
        }
    }
    TrainBatch {
        rows,
        width,
        inputs,
        positions,
        targets,
        negatives,
    }
}

/// A uniform item from `1..=n_items` not in `seen` (falls back to any item when the user has
/// seen nearly everything, so a tiny catalogue can never loop forever).
pub fn sample_outside(seen: &HashSet<u32>, n_items: usize, rng: &mut impl rand::Rng) -> i64 {
    let n = n_items as u32;
    for _ in 0..1000 {
        let item = rng.random_range(1..=n);
        if !seen.contains(&item) {
            return i64::from(item);
        }
    }
    i64::from(rng.random_range(1..=n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn histories_are_left_padded_and_truncated_to_the_most_recent() {
        let a = [1, 2, 3].map(ItemId);
        let b = [4].map(ItemId);
        assert_eq!(pad_histories(&[&a, &b], 2), (vec![2, 3, 0, 4], 2));
        assert_eq!(pad_histories(&[&b, &b], 5), (vec![4, 4], 1));
    }

    #[test]
    fn every_slot_predicts_the_next_item() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let s = [1, 2, 3].map(ItemId);
        let t = [5, 6].map(ItemId);
        let b = train_batch(&[&s, &t], 4, 10, &mut rng);
        // Trimmed to the longest row (2 pairs), not padded to 4.
        assert_eq!(b.width, 2);
        assert_eq!(b.inputs, vec![1, 2, 0, 5]);
        assert_eq!(b.positions, vec![0, 1, 3]);
        assert_eq!(b.targets, vec![2, 3, 6]);
        assert!(b.negatives[..2].iter().all(|n| (4..=10).contains(n)));
        assert!(![0, 5, 6].contains(&b.negatives[2]));
    }
}
