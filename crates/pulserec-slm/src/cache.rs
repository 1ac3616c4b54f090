//! Per-layer key/value cache for a batch of sequences sharing slot positions.

use std::ops::Range;

use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{Result, SlmError};

/// Keys and values of every layer for a batch of sequences.
///
/// Slots are shared by all rows; some of a row's slots may be hidden from attention
/// ([`KvCache::hidden`]): left padding, and padding between a reused prompt prefix and the rest
/// of the prompt. A token's RoPE position counts only the visible slots before it.
///
/// Each layer's keys and values live in buffers with room for more slots than are filled
/// ([`KvCache::with_reserve`]), so a decode step writes its new slot in place (on flex, where
/// a uniquely held buffer is written without a copy) instead of copying the whole cache into a
/// longer one; a full buffer grows by half. Cloning is cheap-ish (tensors are
/// reference counted; a clone's first write copies), and [`KvCache::select_rows`] builds a new
/// batch from chosen rows, repeating rows as needed: that is how many continuations of one
/// prompt reuse its prefill.
#[derive(Clone, Debug)]
pub struct KvCache {
    /// `[batch, kv_heads, capacity, head_dim]` per layer; slots `len..capacity` are unused.
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// Hidden slot ranges of each row, ascending and disjoint.
    hidden: Vec<Vec<Range<usize>>>,
    len: usize,
    reserve: usize,
}

/// Spare slots allocated beyond a cache's first fill unless [`KvCache::with_reserve`] says
/// otherwise: room for a short continuation or generation without growing.
pub const DEFAULT_RESERVE: usize = 64;

impl KvCache {
    /// An empty cache.
    pub fn new(num_layers: usize, batch: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            hidden: vec![Vec::new(); batch],
            len: 0,
            reserve: DEFAULT_RESERVE,
        }
    }

    /// Allocates `slots` spare slots beyond the first fill (e.g. the most tokens a generation
    /// will add after its prompt), so that decoding never grows the buffers.
    pub fn with_reserve(mut self, slots: usize) -> Self {
        self.reserve = slots;
        self
    }

    /// Rows.
    pub fn batch(&self) -> usize {
        self.hidden.len()
    }

    /// Filled slots.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Slots the buffers hold before they must grow (0 before the first fill).
    pub fn capacity(&self) -> usize {
        self.layers
            .first()
            .and_then(|kv| kv.as_ref())
            .map_or(0, |(k, _)| k.dims()[2])
    }

    /// Whether no slot is filled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The slot ranges of row `r` hidden from attention (padding), ascending.
    pub fn hidden(&self, r: usize) -> &[Range<usize>] {
        &self.hidden[r]
    }

    /// Whether slot `slot` of row `r` is hidden.
    pub fn is_hidden(&self, r: usize, slot: usize) -> bool {
        self.hidden[r].iter().any(|h| h.contains(&slot))
    }

    /// The RoPE positions of row `r`'s slots `from..from + n`: a slot's position is the number
    /// of visible slots before it (a hidden slot gets the position the next visible one will).
    pub fn positions(&self, r: usize, from: usize, n: usize) -> Vec<usize> {
        (from..from + n)
            .map(|s| {
                let hidden_before: usize = self.hidden[r]
                    .iter()
                    .map(|h| h.end.min(s).saturating_sub(h.start))
                    .sum();
                s - hidden_before
            })
            .collect()
    }

    /// Hides the first `new_pads[r]` of the slots the next forward will fill in row `r` (the
    /// tokens there are padding).
    pub(crate) fn push_pads(&mut self, new_pads: &[usize]) -> Result<()> {
        if new_pads.iter().all(|&p| p == 0) {
            return Ok(());
        }
        if new_pads.len() != self.hidden.len() {
            return Err(SlmError::Backend(format!(
                "{} pads for a cache of {} rows",
                new_pads.len(),
                self.hidden.len()
            )));
        }
        let start = self.len;
        for (ranges, &p) in self.hidden.iter_mut().zip(new_pads) {
            if p == 0 {
                continue;
            }
            match ranges.last_mut() {
                Some(last) if last.end == start => last.end = start + p,
                _ => ranges.push(start..start + p),
            }
        }
        Ok(())
    }

    /// Layer `l`'s buffers, taken out of the cache, with room for `new` more slots: allocated
    /// on the first fill (with the reserve), grown by half when full.
    fn take_room(&mut self, l: usize, like: &Tensor<4>, new: usize) -> (Tensor<4>, Tensor<4>) {
        let [b, heads, _, hd] = like.dims();
        let end = self.len + new;
        match self.layers[l].take() {
            None => {
                let cap = end + self.reserve;
                let zeros = || Tensor::<4>::zeros([b, heads, cap, hd], &like.device());
                (zeros(), zeros())
            }
            Some((bk, bv)) if bk.dims()[2] < end => {
                let cap = end.max(bk.dims()[2] * 3 / 2);
                let grow = |t: Tensor<4>| {
                    let extra = Tensor::<4>::zeros([b, heads, cap - t.dims()[2], hd], &t.device());
                    Tensor::cat(vec![t, extra], 2)
                };
                (grow(bk), grow(bv))
            }
            Some(kv) => kv,
        }
    }

    /// Writes new keys/values of layer `l` after the filled slots and returns all filled ones
    /// (views of the buffers).
    ///
    /// # Shapes
    /// - `k`, `v`: `[batch, kv_heads, new, head_dim]`; returns `[batch, kv_heads, slots, head_dim]`
    pub(crate) fn append(
        &mut self,
        l: usize,
        k: Tensor<4>,
        v: Tensor<4>,
    ) -> (Tensor<4>, Tensor<4>) {
        let [b, heads, new, hd] = k.dims();
        let (start, end) = (self.len, self.len + new);
        let (bk, bv) = self.take_room(l, &k, new);
        let bk = bk.slice_assign([0..b, 0..heads, start..end, 0..hd], k);
        let bv = bv.slice_assign([0..b, 0..heads, start..end, 0..hd], v);
        let filled = (bk.clone().narrow(2, 0, end), bv.clone().narrow(2, 0, end));
        self.layers[l] = Some((bk, bv));
        if l + 1 == self.layers.len() {
            self.len = end;
        }
        filled
    }

    /// A cache made of the given rows (repeats allowed), e.g. `[0, 0, 0]` for three
    /// continuations of row 0's prompt. The rows keep their spare slots.
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
            hidden: rows.iter().map(|&r| self.hidden[r].clone()).collect(),
            len: self.len,
            reserve: self.reserve,
        })
    }

    /// Row `r`'s visible slots as a one-row cache without hidden slots (and no spare ones):
    /// what [`crate::Slm`]'s prefix store keeps of a prompt.
    pub fn compact_row(&self, r: usize) -> Result<KvCache> {
        if r >= self.batch() {
            return Err(SlmError::Backend(format!(
                "cache row {r} of {}",
                self.batch()
            )));
        }
        let visible: Vec<i64> = (0..self.len)
            .filter(|&s| !self.is_hidden(r, s))
            .map(|s| s as i64)
            .collect();
        let n = visible.len();
        let layers = self
            .layers
            .iter()
            .map(|kv| {
                kv.as_ref().map(|(k, v)| {
                    let device = k.device();
                    let row =
                        Tensor::<1, Int>::from_data(TensorData::new(vec![r as i64], [1]), &device);
                    let slots =
                        Tensor::<1, Int>::from_data(TensorData::new(visible.clone(), [n]), &device);
                    let pick =
                        |t: &Tensor<4>| t.clone().select(0, row.clone()).select(2, slots.clone());
                    (pick(k), pick(v))
                })
            })
            .collect();
        Ok(KvCache {
            layers,
            hidden: vec![Vec::new()],
            len: n,
            reserve: self.reserve,
        })
    }

    /// The rows of several caches in one batch (in order), right-aligned: a cache with fewer
    /// filled slots is left-padded with hidden ones. The spare slots are the most any part had.
    pub fn cat_rows(parts: Vec<KvCache>) -> Result<KvCache> {
        let spare = parts
            .iter()
            .map(|c| c.capacity().saturating_sub(c.len))
            .max()
            .unwrap_or(0);
        let reserve = parts.first().map_or(DEFAULT_RESERVE, |c| c.reserve);
        Self::join(&parts, spare, reserve)
    }

    /// A batch whose row `i` holds the first `prefixes[i].1` slots of the one-row cache
    /// `prefixes[i].0` (a row without hidden slots, as [`KvCache::compact_row`] makes),
    /// right-aligned: shorter prefixes are left-padded with hidden slots. `reserve` spare slots
    /// follow.
    pub fn from_prefixes(prefixes: &[(&KvCache, usize)], reserve: usize) -> Result<KvCache> {
        if let Some((c, n)) = prefixes
            .iter()
            .find(|(c, n)| c.batch() != 1 || !c.hidden[0].is_empty() || *n > c.len || *n == 0)
        {
            return Err(SlmError::Backend(format!(
                "a prefix of {n} slots from a cache of {} rows and {} slots",
                c.batch(),
                c.len
            )));
        }
        // The first `n` slots of each: the same buffers, fewer filled slots.
        let views: Vec<KvCache> = prefixes
            .iter()
            .map(|&(c, n)| KvCache {
                len: n,
                ..c.clone()
            })
            .collect();
        Self::join(&views, reserve, reserve)
    }

    /// [`KvCache::cat_rows`] with `spare` slots after the filled ones.
    fn join(parts: &[KvCache], spare: usize, reserve: usize) -> Result<KvCache> {
        let Some(len) = parts.iter().map(|c| c.len).max() else {
            return Err(SlmError::Backend("no caches to join".into()));
        };
        let num_layers = parts[0].layers.len();
        if parts
            .iter()
            .any(|c| c.layers.len() != num_layers || c.is_empty())
        {
            return Err(SlmError::Backend(
                "joining empty or mismatched caches".into(),
            ));
        }
        let mut hidden = Vec::new();
        for c in parts {
            let shift = len - c.len;
            for ranges in &c.hidden {
                let mut out: Vec<Range<usize>> = Vec::with_capacity(ranges.len() + 1);
                if shift > 0 {
                    out.push(0..shift);
                }
                for h in ranges {
                    let h = h.start + shift..h.end + shift;
                    match out.last_mut() {
                        Some(last) if last.end == h.start => last.end = h.end,
                        _ => out.push(h),
                    }
                }
                hidden.push(out);
            }
        }
        let mut layers = Vec::with_capacity(num_layers);
        for l in 0..num_layers {
            let mut ks = Vec::with_capacity(parts.len());
            let mut vs = Vec::with_capacity(parts.len());
            for c in parts {
                let Some((k, v)) = &c.layers[l] else {
                    return Err(SlmError::Backend(format!("cache without layer {l}")));
                };
                let fit = |t: &Tensor<4>| {
                    let [b, heads, _, hd] = t.dims();
                    let mut pieces = Vec::with_capacity(3);
                    if len > c.len {
                        pieces.push(Tensor::<4>::zeros([b, heads, len - c.len, hd], &t.device()));
                    }
                    pieces.push(t.clone().narrow(2, 0, c.len));
                    if spare > 0 {
                        pieces.push(Tensor::<4>::zeros([b, heads, spare, hd], &t.device()));
                    }
                    Tensor::cat(pieces, 2)
                };
                ks.push(fit(k));
                vs.push(fit(v));
            }
            layers.push(Some((Tensor::cat(ks, 0), Tensor::cat(vs, 0))));
        }
        Ok(KvCache {
            layers,
            hidden,
            len,
            reserve,
        })
    }
}

#[cfg(test)]
impl KvCache {
    /// A one-row cache claiming `len` filled slots and holding no tensors (bookkeeping tests).
    pub(crate) fn placeholder(len: usize) -> Self {
        Self {
            layers: Vec::new(),
            hidden: vec![Vec::new()],
            len,
            reserve: 0,
        }
    }
}
