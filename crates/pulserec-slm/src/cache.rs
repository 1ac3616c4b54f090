//! Per-layer key/value cache for a batch of sequences sharing slot positions.

use std::ops::Range;

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{Int, Tensor, TensorData};
use pulserec_core::fastmath::{KvRows, QuerySet, attend_shared};
use rayon::prelude::*;

use crate::error::{Result, SlmError};

/// Slot ranges, ascending.
type Runs = Vec<Range<usize>>;

/// A flex tensor's buffer, contiguous (copied when it is a strided view).
fn host_values(t: &Tensor<4>) -> Result<FlexTensor> {
    let t = t
        .clone()
        .try_into_primitive::<Flex>()
        .map_err(|e| SlmError::Backend(format!("host attention off the flex device: {e:?}")))?;
    let t = if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    };
    match t.as_slice::<f32>() {
        Some(_) => Ok(t),
        None => Err(SlmError::Backend(format!(
            "host attention on a {:?} cache",
            t.dtype()
        ))),
    }
}

/// The values of a contiguous f32 flex tensor (checked by [`host_values`]).
fn slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().unwrap_or_default()
}

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
    /// With a [`SharedPrefix`], only the slots after it (slot `s` at `s - prefix.len`).
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    /// Hidden slot ranges of each row, ascending and disjoint (the shared prefix's included).
    hidden: Vec<Vec<Range<usize>>>,
    len: usize,
    reserve: usize,
    /// The first slots of every row, held once per prompt ([`KvCache::fork`]).
    prefix: Option<SharedPrefix>,
}

/// The slots `0..len` of each row of a forked cache: row `r`'s are row `rows[r]` of `layers`.
#[derive(Clone, Debug)]
struct SharedPrefix {
    /// `[prompts, kv_heads, capacity >= len, head_dim]` per layer.
    layers: Vec<(Tensor<4>, Tensor<4>)>,
    len: usize,
    rows: Vec<usize>,
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
            prefix: None,
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
        let own = self
            .layers
            .first()
            .and_then(|kv| kv.as_ref())
            .map_or(0, |(k, _)| k.dims()[2]);
        own + self.prefix_len()
    }

    /// Slots held once for several rows ([`KvCache::fork`]); 0 for a plain cache.
    fn prefix_len(&self) -> usize {
        self.prefix.as_ref().map_or(0, |p| p.len)
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
        let end = self.len - self.prefix_len() + new;
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
        let end = self.len + k.dims()[2];
        self.write(l, k, v);
        match &self.layers[l] {
            Some((bk, bv)) if self.prefix.is_none() => {
                (bk.clone().narrow(2, 0, end), bv.clone().narrow(2, 0, end))
            }
            // A forked cache's rows as whole tensors: a copy of the prefix per row (the host
            // decode step reads it in place instead, `attend_step`).
            _ => self.whole_layer(l, end),
        }
    }

    /// Writes new keys/values of layer `l` after the filled slots ([`KvCache::append`] without
    /// the views).
    ///
    /// # Shapes
    /// - `k`, `v`: `[batch, kv_heads, new, head_dim]`
    pub(crate) fn write(&mut self, l: usize, k: Tensor<4>, v: Tensor<4>) {
        let [b, heads, new, hd] = k.dims();
        let start = self.len - self.prefix_len();
        let (bk, bv) = self.take_room(l, &k, new);
        let bk = bk.slice_assign([0..b, 0..heads, start..start + new, 0..hd], k);
        let bv = bv.slice_assign([0..b, 0..heads, start..start + new, 0..hd], v);
        self.layers[l] = Some((bk, bv));
        if l + 1 == self.layers.len() {
            self.len += new;
        }
    }

    /// Layer `l`'s first `end` slots of every row as `[batch, kv_heads, end, head_dim]`, the
    /// shared prefix copied into each row.
    fn whole_layer(&self, l: usize, end: usize) -> (Tensor<4>, Tensor<4>) {
        let own = self.layers[l].as_ref();
        let Some(prefix) = &self.prefix else {
            let (k, v) = own.unwrap_or_else(|| unreachable!("written before it is read"));
            return (k.clone().narrow(2, 0, end), v.clone().narrow(2, 0, end));
        };
        let (pk, pv) = &prefix.layers[l];
        let idx: Vec<i64> = prefix.rows.iter().map(|&r| r as i64).collect();
        let n = idx.len();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &pk.device());
        let whole = |p: &Tensor<4>, own: Option<&Tensor<4>>| {
            let p = p.clone().select(0, idx.clone()).narrow(2, 0, prefix.len);
            match own {
                Some(o) if end > prefix.len => {
                    Tensor::cat(vec![p, o.clone().narrow(2, 0, end - prefix.len)], 2)
                }
                _ => p,
            }
        };
        (
            whole(pk, own.map(|(k, _)| k)),
            whole(pv, own.map(|(_, v)| v)),
        )
    }

    /// Attention of a decode step on the host: one new position per row, its keys and values
    /// already [`KvCache::write`]n, over the visible ones of layer `l`'s first `end` slots
    /// (hidden ones skipped, not masked), read in place from the buffers. The rows of a forked
    /// cache that continue the same prompt read its slots once for all of them
    /// ([`attend_shared`]). A row's result does not depend on the other rows of the batch or on
    /// its hidden slots.
    ///
    /// # Shapes
    /// - `q`: `[batch, heads, 1, head_dim]` row-major; returns `[batch, heads * head_dim]`
    ///   row-major
    pub(crate) fn attend_step(
        &self,
        l: usize,
        end: usize,
        q: &[f32],
        heads: usize,
        scale: f32,
    ) -> Result<Vec<f32>> {
        let Some((own_k, own_v)) = &self.layers[l] else {
            return Err(SlmError::Backend(format!(
                "layer {l} read before it was written"
            )));
        };
        let [batch, kv, own_cap, hd] = own_k.dims();
        let group = heads / kv.max(1);
        let p = self.prefix_len();
        if batch != self.batch()
            || q.len() != batch * heads * hd
            || group * kv != heads
            || end < p
            || end - p > own_cap
        {
            return Err(SlmError::Backend(format!(
                "decode attention: {} query values for {batch} rows of {heads} heads of {hd}, \
                 {end} slots",
                q.len()
            )));
        }
        let own = (host_values(own_k)?, host_values(own_v)?);
        let (own_k, own_v) = (slice(&own.0), slice(&own.1));
        let shared = match &self.prefix {
            Some(p) => {
                let (k, v) = &p.layers[l];
                Some((host_values(k)?, host_values(v)?, k.dims()[2]))
            }
            None => None,
        };
        // Visible runs of each row, split at the prefix's end (own slots counted from there).
        let runs: Vec<(Runs, Runs)> = (0..batch)
            .map(|r| {
                let mut runs = (Vec::new(), Vec::new());
                let mut from = 0;
                let hidden = self.hidden[r].iter().map(|h| (h.start, h.end));
                for (start, stop) in hidden.chain([(end, end)]) {
                    let visible = from..start.min(end);
                    if visible.start < p.min(visible.end) {
                        runs.0.push(visible.start..visible.end.min(p));
                    }
                    if visible.end > p.max(visible.start) {
                        runs.1.push(visible.start.max(p) - p..visible.end - p);
                    }
                    from = stop;
                }
                runs
            })
            .collect();
        // Rows reading the same prompt slots, in first-seen order.
        let mut groups: Vec<(Option<usize>, Vec<usize>)> = Vec::new();
        for r in 0..batch {
            let key = self.prefix.as_ref().map(|pr| pr.rows[r]);
            match groups
                .iter_mut()
                .find(|(k, rows)| key.is_some() && *k == key && runs[rows[0]].0 == runs[r].0)
            {
                Some((_, rows)) => rows.push(r),
                None => groups.push((key, vec![r])),
            }
        }
        // One task per group and KV head; where that leaves the threads short of work (a
        // batch-1 step has 3 tasks for 2 threads), one per query head instead, each reading its
        // KV head's rows on its own (the same bits: a query's output does not depend on the
        // others attending with it).
        let split = if groups.len() * kv < 2 * rayon::current_num_threads() {
            group
        } else {
            1
        };
        let width = group / split;
        let tasks: Vec<(usize, usize, usize)> = (0..groups.len())
            .flat_map(|g| (0..kv).flat_map(move |h| (0..split).map(move |j| (g, h, j))))
            .collect();
        // Slots `run` of row `row`, head `h` of a `[rows, kv, cap, hd]` buffer.
        fn slab<'a>(
            values: &'a [f32],
            [kv, cap, hd]: [usize; 3],
            row: usize,
            h: usize,
            run: &Range<usize>,
        ) -> &'a [f32] {
            let base = (row * kv + h) * cap;
            &values[(base + run.start) * hd..(base + run.end) * hd]
        }
        let outs: Vec<Vec<f32>> = tasks
            .par_iter()
            .map(|&(g, h, j)| {
                let (key, rows) = &groups[g];
                let shared_rows: Vec<KvRows<'_>> = match (key, &shared) {
                    (Some(u), Some((k, v, cap))) => runs[rows[0]]
                        .0
                        .iter()
                        .map(|run| KvRows {
                            keys: slab(slice(k), [kv, *cap, hd], *u, h, run),
                            values: slab(slice(v), [kv, *cap, hd], *u, h, run),
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                let mut out = vec![0.0f32; rows.len() * width * hd];
                let mut sets: Vec<QuerySet<'_>> = rows
                    .iter()
                    .zip(out.chunks_exact_mut(width * hd))
                    .map(|(&r, out)| {
                        let at = (r * heads + h * group + j * width) * hd;
                        QuerySet {
                            queries: &q[at..at + width * hd],
                            own: runs[r]
                                .1
                                .iter()
                                .map(|run| KvRows {
                                    keys: slab(own_k, [kv, own_cap, hd], r, h, run),
                                    values: slab(own_v, [kv, own_cap, hd], r, h, run),
                                })
                                .collect(),
                            out,
                        }
                    })
                    .collect();
                attend_shared(&shared_rows, &mut sets, hd, scale);
                out
            })
            .collect();
        let mut y = vec![0.0f32; batch * heads * hd];
        for (&(g, h, j), out) in tasks.iter().zip(&outs) {
            for (i, &r) in groups[g].1.iter().enumerate() {
                let at = (r * heads + h * group + j * width) * hd;
                y[at..at + width * hd].copy_from_slice(&out[i * width * hd..(i + 1) * width * hd]);
            }
        }
        Ok(y)
    }

    /// A cache whose row `i` continues row `rows[i]` of this one (repeats allowed), without
    /// copying the filled slots: every row reads them from this cache's buffers, and a decode
    /// step on the host ([`crate::Llama::forward`] with one token per row on `flex`) reads each
    /// prompt's slots once for all rows that continue it. New slots go to buffers of the new
    /// rows' own, with `reserve` spare ones. Elsewhere (more tokens per step, other devices) the
    /// rows are copied out per step: fork only for host decoding.
    pub fn fork(&self, rows: &[usize], reserve: usize) -> Result<KvCache> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.batch()) {
            return Err(SlmError::Backend(format!(
                "cache row {bad} of {}",
                self.batch()
            )));
        }
        let base = if self.prefix.is_some() {
            self.materialized()
        } else {
            self.clone()
        };
        let layers = base
            .layers
            .into_iter()
            .map(|kv| kv.ok_or_else(|| SlmError::Backend("forking an empty cache".into())))
            .collect::<Result<Vec<_>>>()?;
        Ok(KvCache {
            layers: vec![None; layers.len()],
            hidden: rows.iter().map(|&r| self.hidden[r].clone()).collect(),
            len: self.len,
            reserve,
            prefix: Some(SharedPrefix {
                layers,
                len: self.len,
                rows: rows.to_vec(),
            }),
        })
    }

    /// This cache with its shared prefix copied into every row (itself when it has none).
    fn materialized(&self) -> KvCache {
        if self.prefix.is_none() {
            return self.clone();
        }
        let layers = (0..self.layers.len())
            .map(|l| Some(self.whole_layer(l, self.len)))
            .collect();
        KvCache {
            layers,
            hidden: self.hidden.clone(),
            len: self.len,
            reserve: self.reserve,
            prefix: None,
        }
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
        // A forked cache's shared slots stay where they are; only the rows' own are copied.
        let prefix = self.prefix.as_ref().map(|p| SharedPrefix {
            rows: rows.iter().map(|&r| p.rows[r]).collect(),
            ..p.clone()
        });
        Ok(KvCache {
            layers,
            hidden: rows.iter().map(|&r| self.hidden[r].clone()).collect(),
            len: self.len,
            reserve: self.reserve,
            prefix,
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
        if self.prefix.is_some() {
            return self.materialized().compact_row(r);
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
            prefix: None,
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
        let parts: Vec<KvCache> = parts.iter().map(KvCache::materialized).collect();
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
                ..c.materialized()
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
            prefix: None,
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
            prefix: None,
        }
    }
}
