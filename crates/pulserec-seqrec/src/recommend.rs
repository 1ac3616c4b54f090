//! Inference: user vectors, streaming top-k over the catalogue, similar users, and the
//! [`SequentialRecommender`] implementation.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use pulserec_core::{ItemId, SequentialRecommender, UserId};
use pulserec_data::{LeaveOneOut, Target};

use crate::batch::{check_items, history_tensor};
use crate::error::{Result, SeqRecError};
use crate::eval::{score_candidates, to_vec};
use crate::model::SasRec;

/// A score with a total order (NaN lowest), for heaps.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Scored(f32, u32);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        let key = |s: f32| if s.is_nan() { f32::NEG_INFINITY } else { s };
        // Higher score first; among equal scores the smaller id wins, so results are stable.
        key(self.0)
            .total_cmp(&key(other.0))
            .then_with(|| other.1.cmp(&self.1))
    }
}

/// Keeps the `k` best `(id, score)` pairs of a stream, best first, in O(k) memory.
pub fn top_k_of(scores: impl IntoIterator<Item = (u32, f32)>, k: usize) -> Vec<(u32, f32)> {
    let mut heap: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(k + 1);
    if k == 0 {
        return Vec::new();
    }
    for (id, s) in scores {
        let item = Scored(s, id);
        if heap.len() < k {
            heap.push(Reverse(item));
        } else if heap.peek().is_some_and(|Reverse(worst)| item > *worst) {
            heap.pop();
            heap.push(Reverse(item));
        }
    }
    let mut out: Vec<Scored> = heap.into_iter().map(|Reverse(s)| s).collect();
    out.sort_by(|a, b| b.cmp(a));
    out.into_iter().map(|Scored(s, id)| (id, s)).collect()
}

/// A trained SASRec ready for inference on one device (dropout off).
#[derive(Clone, Debug)]
pub struct SasRecRecommender {
    model: SasRec,
    device: Device,
    batch_size: usize,
}

impl SasRecRecommender {
    /// Wraps `model` (switched to inference mode) for scoring on `device`.
    pub fn new(model: &SasRec, device: &Device) -> Self {
        Self {
            model: model.valid(),
            device: device.clone(),
            batch_size: 256,
        }
    }

    /// Users scored per batch (default 256).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The wrapped model.
    pub fn model(&self) -> &SasRec {
        &self.model
    }

    /// Checks one batch of histories (`first` = index of its first row) and computes their
    /// user vectors.
    ///
    /// # Shapes
    /// - output: `[chunk.len(), d]`
    fn batch_vectors(&self, chunk: &[&[ItemId]], first: usize) -> Result<Tensor<2>> {
        for (i, h) in chunk.iter().enumerate() {
            check_items(h, self.model.n_items(), || format!("history {}", first + i))?;
        }
        let t = history_tensor(chunk, self.model.max_len(), &self.device);
        Ok(self.model.user_vectors(t))
    }

    /// The `k` users most similar to each of `users` (themselves excluded), best first, by
    /// cosine of the vectors of every user's history before their last training item
    /// ([`Target::LastTrain`]), so no item a user chose from then on can make them neighbours.
    pub fn similar_users(
        &self,
        split: &LeaveOneOut<'_>,
        users: &[UserId],
        k: usize,
    ) -> Result<Vec<Vec<(UserId, f32)>>> {
        let histories: Vec<&[ItemId]> = (0..split.sequences().n_users() as u32)
            .map(|u| split.history_before(UserId(u), Target::LastTrain))
            .collect();
        let vectors = self.user_vectors(&histories)?;
        similar_users_of(
            &vectors,
            self.model.hidden(),
            users,
            k,
            self.batch_size,
            &self.device,
        )
    }

    /// User vectors (last-position outputs), row-major `[histories.len() * d]`.
    pub fn user_vectors(&self, histories: &[&[ItemId]]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(histories.len() * self.model.hidden());
        for (b, chunk) in histories.chunks(self.batch_size).enumerate() {
            out.extend(to_vec(self.batch_vectors(chunk, b * self.batch_size)?)?);
        }
        Ok(out)
    }

    /// The `k` best items per user over the whole catalogue, best first (streamed: one
    /// `[batch, n_items + 1]` score block at a time).
    pub fn recommend(
        &self,
        histories: &[&[ItemId]],
        k: usize,
        exclude_history: bool,
    ) -> Result<Vec<Vec<(ItemId, f32)>>> {
        let n_items = self.model.n_items();
        let mut out = Vec::with_capacity(histories.len());
        let mut masked = vec![false; n_items + 1];
        masked[0] = true;
        for (b, chunk) in histories.chunks(self.batch_size).enumerate() {
            let users = self.batch_vectors(chunk, b * self.batch_size)?;
            let scores = to_vec(self.model.score_all(users))?;
            for (h, row) in chunk.iter().zip(scores.chunks_exact(n_items + 1)) {
                if exclude_history {
                    h.iter().for_each(|i| masked[i.index()] = true);
                }
                let stream = row
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !masked[*i])
                    .map(|(i, s)| (i as u32, *s));
                out.push(
                    top_k_of(stream, k)
                        .into_iter()
                        .map(|(i, s)| (ItemId(i), s))
                        .collect(),
                );
                h.iter().for_each(|i| masked[i.index()] = false);
                masked[0] = true;
            }
        }
        Ok(out)
    }
}

/// The `k` most similar users of every user by cosine similarity of their vectors (the user
/// itself excluded), best first. `vectors` is row-major `[n_users * dim]`; similarities are
/// computed one `[batch, n_users]` block at a time on `device`.
pub fn similar_users(
    vectors: &[f32],
    dim: usize,
    k: usize,
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Vec<(UserId, f32)>>> {
    let all: Vec<UserId> = (0..(vectors.len() / dim.max(1)) as u32)
        .map(UserId)
        .collect();
    similar_users_of(vectors, dim, &all, k, batch_size, device)
}

/// [`similar_users`] for the users `queries` only (one list each, in their order): the
/// similarities of a query to every user, `batch_size` queries at a time.
pub fn similar_users_of(
    vectors: &[f32],
    dim: usize,
    queries: &[UserId],
    k: usize,
    batch_size: usize,
    device: &Device,
) -> Result<Vec<Vec<(UserId, f32)>>> {
    let dim = dim.max(1);
    let n = vectors.len() / dim;
    if let Some(bad) = queries.iter().find(|u| u.index() >= n) {
        return Err(SeqRecError::UserOutOfRange {
            user: bad.0,
            n_users: n,
        });
    }
    let mut normed = vectors[..n * dim].to_vec();
    for row in normed.chunks_exact_mut(dim) {
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|x| *x /= norm);
        }
    }
    let all = Tensor::<2>::from_data(TensorData::new(normed.clone(), [n, dim]), device);
    let all_t = all.transpose();
    let mut out = Vec::with_capacity(queries.len());
    for chunk in queries.chunks(batch_size.max(1)) {
        let rows: Vec<f32> = chunk
            .iter()
            .flat_map(|u| &normed[u.index() * dim..(u.index() + 1) * dim])
            .copied()
            .collect();
        let q = Tensor::<2>::from_data(TensorData::new(rows, [chunk.len(), dim]), device);
        let sims = to_vec(q.matmul(all_t.clone()))?;
        for (row, me) in sims.chunks_exact(n).zip(chunk) {
            let me = me.index();
            let stream = row
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != me)
                .map(|(j, s)| (j as u32, *s));
            out.push(
                top_k_of(stream, k)
                    .into_iter()
                    .map(|(j, s)| (UserId(j), s))
                    .collect(),
            );
        }
    }
    Ok(out)
}

impl SequentialRecommender for SasRecRecommender {
    fn score_candidates(
        &self,
        histories: &[&[ItemId]],
        candidates: &[&[ItemId]],
    ) -> pulserec_core::Result<Vec<Vec<f32>>> {
        Ok(score_candidates(
            &self.model,
            histories,
            candidates,
            self.batch_size,
            &self.device,
        )?)
    }

    fn top_k(
        &self,
        histories: &[&[ItemId]],
        k: usize,
        exclude_history: bool,
    ) -> pulserec_core::Result<Vec<Vec<(ItemId, f32)>>> {
        Ok(self.recommend(histories, k, exclude_history)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_breaks_ties_by_id_and_puts_nan_last() {
        let s = [(5, 1.0), (2, 3.0), (9, 3.0), (1, f32::NAN), (4, 0.5)];
        let top = top_k_of(s, 3);
        assert_eq!(top.iter().map(|p| p.0).collect::<Vec<_>>(), vec![2, 9, 5]);
        assert_eq!(top_k_of(s, 10).last().map(|p| p.0), Some(1));
        assert!(top_k_of(s, 0).is_empty());
    }
}
