//! Element-wise math over `f32` slices that the compiler can vectorise: branch-free `exp`,
//! `erf`, the activations built on them (GELU, SiLU-gated products), three row kernels
//! (RMSNorm, scaled + masked softmax, softmax with its log-sum-exp) that replace several tensor
//! passes with one, a decode step's attention over key/value rows that several query sets share
//! ([`attend_shared`]), and a tiled transpose for weight layouts.
//!
//! The CPU backend evaluates `erf` and `exp` one element at a time through libm; in inference
//! forwards (MiniLM's GELU, SmolLM2's SwiGLU) that was a fifth of the encode time and a tenth of
//! the prefill time. These versions are plain loops of multiply-adds with no branches, so they
//! compile to SIMD (16 lanes wide where the CPU has AVX-512, chosen at run time: `simd_dispatch!`),
//! and the slice functions split long slices across rayon's threads.
//!
//! Accuracy (checked by the tests against f64 references): [`exp`] within a relative
//! error (`< 4e-7`) on `[-87, 88]`, [`erf`] within `5e-7` absolute everywhere (a few ulp of
//! values near +-1).

use rayon::prelude::*;

/// Below this many elements the slice functions stay on the calling thread.
const PARALLEL_MIN: usize = 1 << 15;
/// Elements per rayon task.
const CHUNK: usize = 1 << 13;

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in a high part exact in f32 and the remainder (Cody-Waite reduction).
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;

/// `e^x` for `f32`, branch-free. Inputs above 88.3 are clamped (the top of the normal range),
/// inputs below -87.3 give 0 (so `exp(-inf) == 0` as in masked softmax); NaN stays NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let underflow = x < -87.3;
    let x = x.clamp(-87.3, 88.3);
    // x = n ln2 + r with |r| <= ln2 / 2; n rounded to nearest by the 1.5 * 2^23 trick.
    const ROUND: f32 = 12_582_912.0;
    let shifted = x * LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor series of e^r to degree 7: relative error below 1e-8 for |r| <= 0.35.
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2^n through the exponent bits (n is in [-126, 127] after the clamp). n is read from the
    // low mantissa bits of `shifted` (ROUND's bits plus n), not with `n as i32`, whose
    // saturating conversion compiles to scalar compares and keeps the loop from vectorising.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    if underflow { 0.0 } else { p * scale }
}

/// `erf(x)` for `f32`, branch-free: an odd rational function of degree 13 / 8 on `[-4, 4]`
/// (Eigen's `erf` approximation), saturating to +-1 outside. NaN stays NaN.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let p = -2.726_142_3e-10_f32;
    let p = p * x2 + 2.770_681_4e-8;
    let p = p * x2 - 2.101_024e-6;
    let p = p * x2 - 5.692_506_4e-5;
    let p = p * x2 - 7.349_906_3e-4;
    let p = p * x2 - 2.954_6e-3;
    let p = p * x2 - 1.609_603_3e-2;
    let q = -1.456_607_2e-5_f32;
    let q = q * x2 - 2.133_740_6e-4;
    let q = q * x2 - 1.682_827e-3;
    let q = q * x2 - 7.373_329e-3;
    let q = q * x2 - 1.426_474e-2;
    x * p / q
}

/// Exact GELU, `x * (1 + erf(x / sqrt 2)) / 2`.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// SiLU, `x / (1 + e^-x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// Defines `fn $name` that runs the `#[inline(always)]` function `$inner` compiled for 512-bit
/// vectors (AVX-512F/BW/VL) when the CPU has them, detected at run time, and as compiled for the
/// build's baseline (SSE2 on x86-64) elsewhere. `$inner` is inlined into a `#[target_feature]`
/// copy, so its loops vectorise 16 lanes wide from a portable binary; the values are the same
/// bits either way (no reduction changes order: the [`LANES`] are explicit, and Rust does not
/// contract multiply-adds).
macro_rules! simd_dispatch {
    (fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)? = $inner:ident) => {
        #[allow(unsafe_code)] // a target-feature copy, called only after the features are detected
        fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                /// # Safety
                /// The CPU must have AVX-512F, AVX-512BW and AVX-512VL.
                #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
                unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                    $inner($($arg),*)
                }
                if avx512() {
                    // SAFETY: `avx512` detected the features.
                    return unsafe { wide($($arg),*) };
                }
            }
            $inner($($arg),*)
        }
    };
}

/// Whether the CPU has AVX-512F, AVX-512BW and AVX-512VL (`std` caches the detection).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

#[inline(always)]
fn gelu_chunk(values: &mut [f32]) {
    values.iter_mut().for_each(|v| *v = gelu(*v));
}
simd_dispatch!(fn gelu_wide(values: &mut [f32]) = gelu_chunk);

#[inline(always)]
fn silu_mul_chunk(gate: &mut [f32], up: &[f32]) {
    gate.iter_mut()
        .zip(up)
        .for_each(|(g, &u)| *g = silu(*g) * u);
}
simd_dispatch!(fn silu_mul_wide(gate: &mut [f32], up: &[f32]) = silu_mul_chunk);

/// `values[i] = gelu(values[i])`.
pub fn gelu_inplace(values: &mut [f32]) {
    if values.len() < PARALLEL_MIN {
        gelu_wide(values);
    } else {
        values.par_chunks_mut(CHUNK).for_each(gelu_wide);
    }
}

/// `gate[i] = silu(gate[i]) * up[i]`, the SwiGLU product.
///
/// # Panics
/// If the slices differ in length (a caller bug, not a data error).
pub fn silu_mul_inplace(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "silu_mul_inplace: length mismatch");
    if gate.len() < PARALLEL_MIN {
        silu_mul_wide(gate, up);
    } else {
        gate.par_chunks_mut(CHUNK)
            .zip(up.par_chunks(CHUNK))
            .for_each(|(g, u)| silu_mul_wide(g, u));
    }
}

/// Lanes of the reductions below: independent partial results the compiler keeps in SIMD
/// registers (a single running `f32` accumulator is a sequential chain it may not reorder).
const LANES: usize = 16;

/// `sum(f(x))` over `values`, accumulated in [`LANES`] partial sums.
#[inline(always)]
fn lane_sum(values: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    acc.iter().sum::<f32>() + tail.iter().map(|&v| f(v)).sum::<f32>()
}

/// `sum(values)` in [`LANES`] partial sums, the `i`-th non-zero value going to lane `i %
/// LANES`: zeros anywhere (a softmax row's masked columns) change neither the lanes nor the
/// result, so a row sums to the same bits whatever padding surrounds its values.
#[inline(always)]
fn nonzero_lane_sum(values: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut lane = 0;
    for &v in values {
        if v != 0.0 {
            acc[lane] += v;
            lane = (lane + 1) % LANES;
        }
    }
    acc.iter().sum()
}

/// Largest value of `values` (`-inf` for an empty slice or one of `-inf`s; NaNs are skipped, as
/// `f32::max` does).
#[inline(always)]
fn lane_max(values: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    acc.iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

#[inline(always)]
fn rms_norm_row(row: &mut [f32], weight: &[f32], eps: f32) {
    let ms = lane_sum(row, |v| v * v) / weight.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    row.iter_mut()
        .zip(weight)
        .for_each(|(v, w)| *v = *v * inv * w);
}
simd_dispatch!(fn rms_norm_row_wide(row: &mut [f32], weight: &[f32], eps: f32) = rms_norm_row);

/// Row-wise RMSNorm in place: every `weight.len()`-long row `x` of `values` becomes
/// `x / sqrt(mean(x²) + eps) * weight`.
///
/// # Panics
/// If `values.len()` is not a multiple of `weight.len()` (a caller bug).
pub fn rms_norm_rows(values: &mut [f32], weight: &[f32], eps: f32) {
    let dim = weight.len();
    assert!(
        dim > 0 && values.len().is_multiple_of(dim),
        "rms_norm_rows: {} values in rows of {dim}",
        values.len()
    );
    let run = |row: &mut [f32]| rms_norm_row_wide(row, weight, eps);
    if values.len() < PARALLEL_MIN {
        values.chunks_exact_mut(dim).for_each(run);
    } else {
        values.par_chunks_exact_mut(dim).for_each(run);
    }
}

#[inline(always)]
fn softmax_row_masked(row: &mut [f32], mask: &[f32], scale: f32) {
    row.iter_mut()
        .zip(mask)
        .for_each(|(v, &a)| *v = *v * scale + a);
    let max = lane_max(row);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    // Separate passes so each one vectorises: a running sum inside the exp loop would be a
    // strict sequential f32 reduction and keep the whole loop scalar.
    row.iter_mut().for_each(|v| *v = exp(*v - max));
    let inv = 1.0 / nonzero_lane_sum(row);
    row.iter_mut().for_each(|v| *v *= inv);
}
simd_dispatch!(fn softmax_row_masked_wide(row: &mut [f32], mask: &[f32], scale: f32) = softmax_row_masked);

/// Row-wise `softmax(scale * x + mask)` in place over rows of `cols` values; row `r` adds the
/// mask row `mask_row(r)` (`mask` is `[mask rows, cols]`, `-inf` hides a position). A row
/// whose every position is hidden becomes all zeros. A row's values do not depend on where its
/// hidden positions sit (the normaliser skips their zeros), so left padding or a hidden gap
/// gives the probabilities of the visible positions alone, to the bit.
///
/// # Panics
/// If the lengths do not fit `cols` or `mask_row` points past the mask (a caller bug).
pub fn softmax_rows_scaled_masked(
    values: &mut [f32],
    cols: usize,
    scale: f32,
    mask: &[f32],
    mask_row: impl Fn(usize) -> usize + Sync,
) {
    assert!(
        cols > 0 && values.len().is_multiple_of(cols) && mask.len().is_multiple_of(cols),
        "softmax_rows_scaled_masked: {} values, {} mask values, rows of {cols}",
        values.len(),
        mask.len()
    );
    let run = |(r, row): (usize, &mut [f32])| {
        let m = &mask[mask_row(r) * cols..(mask_row(r) + 1) * cols];
        softmax_row_masked_wide(row, m, scale);
    };
    if values.len() < PARALLEL_MIN {
        values.chunks_exact_mut(cols).enumerate().for_each(run);
    } else {
        values.par_chunks_exact_mut(cols).enumerate().for_each(run);
    }
}

#[inline(always)]
fn softmax_row_lse(row: &mut [f32]) -> f32 {
    let max = lane_max(row);
    row.iter_mut().for_each(|v| *v = exp(*v - max));
    let sum = lane_sum(row, |v| v);
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
    max + sum.ln()
}
simd_dispatch!(fn softmax_row_lse_wide(row: &mut [f32]) -> f32 = softmax_row_lse);

/// Row-wise `softmax(x)` in place over rows of `cols` values, returning each row's
/// log-sum-exp `ln sum(e^x)` (so `x_j - lse` is the log-probability of column `j`): the
/// normaliser of a language model's head over its vocabulary, without a second pass of `exp`.
///
/// # Panics
/// If `values.len()` is not a multiple of `cols` or `cols == 0` (a caller bug).
pub fn softmax_rows_lse(values: &mut [f32], cols: usize) -> Vec<f32> {
    assert!(
        cols > 0 && values.len().is_multiple_of(cols),
        "softmax_rows_lse: {} values in rows of {cols}",
        values.len()
    );
    if values.len() < PARALLEL_MIN {
        values
            .chunks_exact_mut(cols)
            .map(softmax_row_lse_wide)
            .collect()
    } else {
        values
            .par_chunks_exact_mut(cols)
            .map(softmax_row_lse_wide)
            .collect()
    }
}

/// Key rows and the value rows beside them (`keys.len() == values.len()`, whole rows of the
/// attention's dimension): a run of consecutive cache slots.
#[derive(Clone, Copy, Debug)]
pub struct KvRows<'a> {
    /// `[rows, dim]` row-major.
    pub keys: &'a [f32],
    /// `[rows, dim]` row-major.
    pub values: &'a [f32],
}

/// Queries that attend to the shared key/value rows of [`attend_shared`] and then to their own.
#[derive(Debug)]
pub struct QuerySet<'a> {
    /// `[n, dim]` row-major.
    pub queries: &'a [f32],
    /// Key/value rows only this set attends to, after the shared ones.
    pub own: Vec<KvRows<'a>>,
    /// `[n, dim]`: written with each query's attention output.
    pub out: &'a mut [f32],
}

/// `a · b` in [`LANES`] partial sums folded pairwise (a fixed order, the same bits at every
/// vector width).
#[inline(always)]
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((a, &x), &y) in acc.iter_mut().zip(x).zip(y) {
            *a += x * y;
        }
    }
    fold_half(&mut acc, 8);
    fold_half(&mut acc, 4);
    fold_half(&mut acc, 2);
    fold_half(&mut acc, 1);
    acc[0] + tail
}

/// `acc[i] += acc[i + width]` for `i < width`.
#[inline(always)]
fn fold_half(acc: &mut [f32; LANES], width: usize) {
    let (low, high) = acc.split_at_mut(width);
    for (a, &b) in low.iter_mut().zip(&high[..width]) {
        *a += b;
    }
}

/// [`lane_dot`] with AVX-512 intrinsics: the same lanes, the same pairwise fold, the same
/// bits (products and sums rounded separately, as Rust's scalar code does). LLVM vectorised the
/// portable version's short dot products two lanes wide.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)] // intrinsics, inlined only into the AVX-512 copy of `attend_sets`
mod avx512_dot {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU must have AVX-512F, and `a.len() == b.len()`.
    #[inline(always)]
    pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: the caller guarantees the features; reads stay below `whole <= a.len()`.
        unsafe {
            let whole = a.len() / 16 * 16;
            let mut acc = _mm512_setzero_ps();
            let mut i = 0;
            while i < whole {
                let x = _mm512_loadu_ps(a.as_ptr().add(i));
                let y = _mm512_loadu_ps(b.as_ptr().add(i));
                acc = _mm512_add_ps(acc, _mm512_mul_ps(x, y));
                i += 16;
            }
            let tail: f32 = a[whole..].iter().zip(&b[whole..]).map(|(x, y)| x * y).sum();
            let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(acc)));
            let s8 = _mm256_add_ps(_mm512_castps512_ps256(acc), high);
            let s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps::<1>(s8));
            let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
            let s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
            _mm_cvtss_f32(s1) + tail
        }
    }
}

/// [`attend_shared`] with the AVX-512 dot products where the CPU has them (the same bits).
#[allow(unsafe_code)] // a target-feature copy, called only after the features are detected
fn attend_sets_wide(shared: &[KvRows<'_>], sets: &mut [QuerySet<'_>], dim: usize, scale: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        /// # Safety
        /// The CPU must have AVX-512F, AVX-512BW and AVX-512VL.
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        unsafe fn wide(shared: &[KvRows<'_>], sets: &mut [QuerySet<'_>], dim: usize, scale: f32) {
            attend_sets(shared, sets, dim, scale, |a, b| {
                // SAFETY: `wide` runs only where `avx512` found the features; equal lengths.
                unsafe { avx512_dot::dot(a, b) }
            });
        }
        if avx512() {
            // SAFETY: `avx512` detected the features.
            return unsafe { wide(shared, sets, dim, scale) };
        }
    }
    attend_sets(shared, sets, dim, scale, lane_dot);
}

#[inline(always)]
fn attend_sets(
    shared: &[KvRows<'_>],
    sets: &mut [QuerySet<'_>],
    dim: usize,
    scale: f32,
    dot: impl Fn(&[f32], &[f32]) -> f32,
) {
    let rows = |blocks: &[KvRows<'_>]| blocks.iter().map(|b| b.keys.len() / dim).sum::<usize>();
    let n_shared = rows(shared);
    // Scores of each set, `[queries, shared + own]`, and its row length.
    let mut scores: Vec<(Vec<f32>, usize)> = sets
        .iter()
        .map(|s| {
            let cols = n_shared + rows(&s.own);
            (vec![0.0; s.queries.len() / dim * cols], cols)
        })
        .collect();
    // Each shared key is read once for every query of every set.
    let mut first = 0;
    for block in shared {
        for (j, k) in block.keys.chunks_exact(dim).enumerate() {
            for (set, (sc, cols)) in sets.iter().zip(scores.iter_mut()) {
                for (i, q) in set.queries.chunks_exact(dim).enumerate() {
                    sc[i * *cols + first + j] = dot(q, k) * scale;
                }
            }
        }
        first += block.keys.len() / dim;
    }
    for (set, (sc, cols)) in sets.iter().zip(scores.iter_mut()) {
        for (q, row) in set
            .queries
            .chunks_exact(dim)
            .zip(sc.chunks_exact_mut(*cols))
        {
            let mut at = n_shared;
            for block in &set.own {
                for (j, k) in block.keys.chunks_exact(dim).enumerate() {
                    row[at + j] = dot(q, k) * scale;
                }
                at += block.keys.len() / dim;
            }
            softmax_row_lse(row);
        }
    }
    for set in sets.iter_mut() {
        set.out.fill(0.0);
    }
    let add = |out: &mut [f32], p: f32, v: &[f32]| {
        out.iter_mut().zip(v).for_each(|(o, &v)| *o += p * v);
    };
    // Each shared value row is read once for every query of every set.
    let mut first = 0;
    for block in shared {
        for (j, v) in block.values.chunks_exact(dim).enumerate() {
            for (set, (sc, cols)) in sets.iter_mut().zip(&scores) {
                for (i, out) in set.out.chunks_exact_mut(dim).enumerate() {
                    add(out, sc[i * *cols + first + j], v);
                }
            }
        }
        first += block.values.len() / dim;
    }
    for (set, (sc, cols)) in sets.iter_mut().zip(&scores) {
        let own = &set.own;
        for (out, probs) in set.out.chunks_exact_mut(dim).zip(sc.chunks_exact(*cols)) {
            let mut at = n_shared;
            for block in own {
                for (j, v) in block.values.chunks_exact(dim).enumerate() {
                    add(out, probs[at + j], v);
                }
                at += block.values.len() / dim;
            }
        }
    }
}

/// Scaled dot-product attention of several sets of queries over key/value rows, where every
/// set attends to the `shared` rows followed by its own ([`QuerySet::own`]):
/// `out = softmax(scale * q Kᵀ) V` for each query `q` of a set, `K` and `V` being the shared
/// rows then the set's own, in order. The shared rows are read once for all sets: the prompt
/// slots that a prompt's continuations have in common, in a decode step.
///
/// A query's output does not depend on the other sets or on how its rows are split into
/// blocks or between shared and own: the same bits as attending alone to the same rows. Runs on
/// the calling thread (callers parallelise over independent groups).
///
/// ```
/// use pulserec_core::fastmath::{attend_shared, KvRows, QuerySet};
/// // Two keys along the axes; the query looks along the first, so mostly at the first value.
/// let keys = [1.0, 0.0, 0.0, 1.0];
/// let values = [10.0, 0.0, 0.0, 10.0];
/// let shared = [KvRows { keys: &keys, values: &values }];
/// let mut out = [0.0; 2];
/// let mut sets = [QuerySet { queries: &[4.0, 0.0], own: Vec::new(), out: &mut out }];
/// attend_shared(&shared, &mut sets, 2, 1.0);
/// assert!(out[0] > 9.8 && out[1] < 0.2);
/// ```
///
/// # Panics
/// If a slice is not whole rows of `dim` or keys and values differ in length (a caller bug).
pub fn attend_shared(shared: &[KvRows<'_>], sets: &mut [QuerySet<'_>], dim: usize, scale: f32) {
    let whole =
        |b: &KvRows<'_>| b.keys.len() == b.values.len() && b.keys.len().is_multiple_of(dim.max(1));
    assert!(
        dim > 0
            && shared.iter().all(whole)
            && sets.iter().all(|s| {
                s.own.iter().all(whole)
                    && s.queries.len() == s.out.len()
                    && s.queries.len().is_multiple_of(dim)
            }),
        "attend_shared: slices are not whole rows of {dim}"
    );
    attend_sets_wide(shared, sets, dim, scale);
}

/// `[rows, cols]` row-major to `[cols, rows]` row-major, copied in cache-sized tiles (weight
/// layouts: HF stores linear weights `[out, in]`, the burn models multiply by `[in, out]`).
///
/// # Panics
/// If `values.len() != rows * cols` (a caller bug).
pub fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    assert_eq!(
        values.len(),
        rows * cols,
        "transpose: {} values for {rows} x {cols}",
        values.len()
    );
    let mut out = vec![0.0f32; values.len()];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    out[c * rows + r] = values[r * cols + c];
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by Simpson's rule on 2/sqrt(pi) e^{-t^2}, accurate far below f32 precision.
    fn erf_ref(x: f64) -> f64 {
        let n = 4000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_is_accurate_over_the_normal_range() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let rel = ((exp(x) as f64 - want) / want).abs();
            worst = worst.max(rel);
            x += 0.013;
        }
        assert!(worst < 4e-7, "worst relative error {worst}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn erf_is_accurate_everywhere() {
        let mut worst = 0.0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            let err = (erf(x) as f64 - erf_ref(x as f64)).abs();
            worst = worst.max(err);
            x += 0.0037;
        }
        assert!(worst < 5e-7, "worst absolute error {worst}");
        assert_eq!(erf(0.0), 0.0);
        assert!(erf(f32::NAN).is_nan());
        assert!((erf(10.0) - 1.0).abs() < 5e-7 && (erf(-10.0) + 1.0).abs() < 5e-7);
    }

    #[test]
    fn slice_functions_match_the_scalar_ones_in_parallel_too() {
        for n in [7, PARALLEL_MIN + 5] {
            let xs: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 6.0).collect();
            let ups: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let mut g = xs.clone();
            gelu_inplace(&mut g);
            let mut s = xs.clone();
            silu_mul_inplace(&mut s, &ups);
            for i in 0..n {
                let x = xs[i] as f64;
                let want_gelu = 0.5 * x * (1.0 + erf_ref(x / 2f64.sqrt()));
                let tol = 1e-6 * x.abs().max(1.0);
                assert!((g[i] as f64 - want_gelu).abs() < tol, "gelu({x})");
                let want_silu = x / (1.0 + (-x).exp()) * ups[i] as f64;
                assert!((s[i] as f64 - want_silu).abs() < tol, "silu({x})");
            }
        }
    }

    #[test]
    fn masked_columns_do_not_change_a_softmax_row() {
        // The same 40 scores alone, and with 23 masked columns before them and 9 between.
        let scores: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).cos() * 4.0).collect();
        let mut alone = scores.clone();
        softmax_rows_scaled_masked(&mut alone, 40, 0.125, &[0.0; 40], |_| 0);
        let mut padded = vec![1.0f32; 23];
        padded.extend_from_slice(&scores[..17]);
        padded.extend_from_slice(&[-2.0; 9]);
        padded.extend_from_slice(&scores[17..]);
        let mask: Vec<f32> = (0..padded.len())
            .map(|i| {
                if i < 23 || (40..49).contains(&i) {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect();
        softmax_rows_scaled_masked(&mut padded, mask.len(), 0.125, &mask, |_| 0);
        let visible: Vec<f32> = padded[23..40]
            .iter()
            .chain(&padded[49..])
            .copied()
            .collect();
        assert!(
            padded[..23]
                .iter()
                .chain(&padded[40..49])
                .all(|&p| p == 0.0)
        );
        assert_eq!(
            visible.iter().map(|p| p.to_bits()).collect::<Vec<_>>(),
            alone.iter().map(|p| p.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn transpose_moves_every_element() {
        for (rows, cols) in [(1, 1), (3, 5), (33, 70)] {
            let xs: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = transpose(&xs, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        xs[r * cols + c],
                        "{rows}x{cols} at {r},{c}"
                    );
                }
            }
            assert_eq!(transpose(&t, cols, rows), xs);
        }
    }

    #[test]
    fn the_wide_copies_give_the_baseline_bits() {
        // On a CPU with AVX-512 the dispatchers run the 16-lane copy; the baseline functions
        // are the same code compiled for SSE2. Rows of 37: two full lanes and a tail.
        let xs: Vec<f32> = (0..37).map(|i| (i as f32 * 0.71).sin() * 3.0).collect();
        let w: Vec<f32> = (0..37).map(|c| 0.5 * c as f32 - 1.0).collect();
        let mask: Vec<f32> = (0..37)
            .map(|i| if i % 3 == 1 { f32::NEG_INFINITY } else { 0.0 })
            .collect();
        let (mut a, mut b) = (xs.clone(), xs.clone());
        softmax_row_masked(&mut a, &mask, 0.5);
        softmax_row_masked_wide(&mut b, &mask, 0.5);
        assert_eq!(a, b);
        let (mut a, mut b) = (xs.clone(), xs.clone());
        assert_eq!(
            softmax_row_lse(&mut a).to_bits(),
            softmax_row_lse_wide(&mut b).to_bits()
        );
        assert_eq!(a, b);
        let (mut a, mut b) = (xs.clone(), xs.clone());
        rms_norm_row(&mut a, &w, 1e-5);
        rms_norm_row_wide(&mut b, &w, 1e-5);
        assert_eq!(a, b);
        let (mut a, mut b) = (xs.clone(), xs.clone());
        silu_mul_chunk(&mut a, &w);
        silu_mul_wide(&mut b, &w);
        assert_eq!(a, b);
        let (mut a, mut b) = (xs.clone(), xs);
        gelu_chunk(&mut a);
        gelu_wide(&mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn shared_attention_matches_its_definition_and_the_unshared_bits() {
        // dim 37: two full lanes and a tail; 11 shared rows in two blocks, 0-5 own rows.
        let dim = 37;
        let vals = |n: usize, seed: f32| -> Vec<f32> {
            (0..n * dim)
                .map(|i| ((i as f32 + seed) * 0.37).sin())
                .collect()
        };
        let (sk, sv) = (vals(11, 1.0), vals(11, 2.0));
        let own: Vec<(Vec<f32>, Vec<f32>)> = (0..3)
            .map(|s| (vals(2 * s, 3.0 + s as f32), vals(2 * s, 7.0 + s as f32)))
            .collect();
        let queries: Vec<Vec<f32>> = (0..3).map(|s| vals(2, 11.0 + s as f32)).collect();
        let shared = [
            KvRows {
                keys: &sk[..4 * dim],
                values: &sv[..4 * dim],
            },
            KvRows {
                keys: &sk[4 * dim..],
                values: &sv[4 * dim..],
            },
        ];
        let mut outs = vec![vec![0.0f32; 2 * dim]; 3];
        let mut sets: Vec<QuerySet<'_>> = outs
            .iter_mut()
            .zip(&queries)
            .zip(&own)
            .map(|((out, q), (k, v))| QuerySet {
                queries: q,
                own: vec![KvRows { keys: k, values: v }],
                out,
            })
            .collect();
        attend_shared(&shared, &mut sets, dim, 0.3);
        for s in 0..3 {
            let keys: Vec<f32> = sk.iter().chain(&own[s].0).copied().collect();
            let values: Vec<f32> = sv.iter().chain(&own[s].1).copied().collect();
            // Alone, every row its own, in one block (dispatched, and the baseline copy): the
            // same bits.
            for baseline in [false, true] {
                let mut alone = vec![0.0f32; 2 * dim];
                let mut set = [QuerySet {
                    queries: &queries[s],
                    own: vec![KvRows {
                        keys: &keys,
                        values: &values,
                    }],
                    out: &mut alone,
                }];
                if baseline {
                    attend_sets(&[], &mut set, dim, 0.3, lane_dot);
                } else {
                    attend_shared(&[], &mut set, dim, 0.3);
                }
                assert_eq!(alone, outs[s], "set {s}, baseline {baseline}");
            }
            // The definition, in f64.
            let n = keys.len() / dim;
            for (i, q) in queries[s].chunks_exact(dim).enumerate() {
                let z: Vec<f64> = (0..n)
                    .map(|j| {
                        let d: f64 = (0..dim)
                            .map(|c| q[c] as f64 * keys[j * dim + c] as f64)
                            .sum();
                        (0.3 * d).exp()
                    })
                    .collect();
                let sum: f64 = z.iter().sum();
                for c in 0..dim {
                    let want: f64 = (0..n)
                        .map(|j| z[j] / sum * values[j * dim + c] as f64)
                        .sum();
                    let got = outs[s][i * dim + c] as f64;
                    assert!((got - want).abs() < 1e-5, "set {s} query {i} col {c}");
                }
            }
        }
    }

    #[test]
    fn row_kernels_match_their_definitions() {
        // 5 columns: only the reductions' tail; 37: two full lanes of 16 and a tail of 5.
        for (rows, cols) in [
            (3, 5),
            (PARALLEL_MIN / 4 + 1, 5),
            (4, 37),
            (PARALLEL_MIN / 32, 37),
        ] {
            let xs: Vec<f32> = (0..rows * cols)
                .map(|i| (i as f32 * 0.71).sin() * 3.0)
                .collect();
            // RMSNorm.
            let w: Vec<f32> = (0..cols).map(|c| 0.5 * c as f32 - 1.0).collect();
            let mut got = xs.clone();
            rms_norm_rows(&mut got, &w, 1e-5);
            for r in 0..rows {
                let row = &xs[r * cols..(r + 1) * cols];
                let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / cols as f64;
                for c in 0..cols {
                    let want = row[c] as f64 / (ms + 1e-5).sqrt() * w[c] as f64;
                    assert!(
                        (got[r * cols + c] as f64 - want).abs() < 1e-5 * w[c].abs().max(1.0) as f64,
                        "rms {r} {c}"
                    );
                }
            }
            // Masked, scaled softmax; mask row = r % 2, the second hiding every third position.
            let ninf = f32::NEG_INFINITY;
            let mask: Vec<f32> = (0..2 * cols)
                .map(|i| if i >= cols && i % 3 == 1 { ninf } else { 0.0 })
                .collect();
            let mut got = xs.clone();
            softmax_rows_scaled_masked(&mut got, cols, 0.5, &mask, |r| r % 2);
            for r in 0..rows {
                let m = &mask[(r % 2) * cols..(r % 2 + 1) * cols];
                let z: Vec<f64> = (0..cols)
                    .map(|c| (xs[r * cols + c] as f64 * 0.5 + m[c] as f64).exp())
                    .collect();
                let sum: f64 = z.iter().sum();
                for c in 0..cols {
                    let want = z[c] / sum;
                    assert!(
                        (got[r * cols + c] as f64 - want).abs() < 1e-6,
                        "softmax {r} {c}"
                    );
                }
            }
            // Softmax with the log-sum-exp.
            let mut got = xs.clone();
            let lse = softmax_rows_lse(&mut got, cols);
            for r in 0..rows {
                let row = &xs[r * cols..(r + 1) * cols];
                let sum: f64 = row.iter().map(|&v| (v as f64).exp()).sum();
                assert!((lse[r] as f64 - sum.ln()).abs() < 1e-5, "lse {r}");
                for c in 0..cols {
                    let want = (row[c] as f64).exp() / sum;
                    assert!((got[r * cols + c] as f64 - want).abs() < 1e-6, "p {r} {c}");
                }
            }
        }
        // A fully hidden row is all zeros, not NaN.
        let mut row = [1.0f32, 2.0];
        softmax_rows_scaled_masked(&mut row, 2, 1.0, &[f32::NEG_INFINITY; 2], |_| 0);
        assert_eq!(row, [0.0, 0.0]);
    }
}
