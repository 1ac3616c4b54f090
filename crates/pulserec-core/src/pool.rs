//! Running work on rayon's global pool.

/// Runs `f` on a thread of rayon's global pool and waits for it (on the calling thread when it
/// is already one), inside the caller's current `tracing` span.
///
/// The SLM's kernels, burn's CPU ops and gemm open a parallel region per product. Opened from a
/// thread outside the pool, each region hands its work to the pool and puts the caller to sleep
/// until it is done: a futex wake and wait per region, hundreds per decode step or training
/// step. Opened from a pool thread, the region starts on that thread and the other workers steal
/// from it. The results are the same either way (the regions split their work the same way);
/// SmolLM2's batch-1 decode ran 1.3x faster inside the pool, Tree-of-Thought generation 1.3x
/// (docs/benchmarks.md).
///
/// ```
/// let sum: u64 = pulserec_core::on_pool(|| {
///     use rayon::prelude::*;
///     (1..=100u64).into_par_iter().sum()
/// });
/// assert_eq!(sum, 5050);
/// ```
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    // The caller's tracing span goes along, so log lines from the work keep its fields.
    let span = tracing::Span::current();
    rayon::scope(|_| span.in_scope(f))
}
