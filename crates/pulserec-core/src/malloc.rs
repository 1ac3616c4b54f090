//! glibc `malloc` settings suited to burn's allocation pattern.
//!
//! burn allocates and frees many short-lived multi-megabyte buffers. With glibc's defaults those
//! are `mmap`ed and unmapped on every op (or the heap top is trimmed back to the kernel), so each
//! op faults its pages in again. Raising the mmap threshold, the trim threshold and the top pad
//! keeps that memory in the process: on a 5-epoch ML-100K SASRec run it cut page faults ~20x
//! and CPU time ~20 % (docs/benchmarks.md, "SASRec"). The same settings can be given from
//! outside as `GLIBC_TUNABLES`; [`tune_malloc`] applies them from inside the process, without a
//! wrapper script, for a program that calls it first thing in `main`. The `pulserec` CLI, the
//! `sasrec`, `encode`, `generate`, `rationales`, `likelihood_bench`, `serve` and `serve_load`
//! examples and `pulserec-slm`'s `lora_step` call it; the other examples run with glibc's
//! defaults unless `GLIBC_TUNABLES` says otherwise.

/// The mmap threshold set by [`tune_malloc`]: glibc's largest allowed value on 64-bit (32 MiB).
pub const MMAP_THRESHOLD: usize = 32 << 20;
/// Free memory at the heap top kept before trimming (512 MiB).
pub const TRIM_THRESHOLD: usize = 512 << 20;
/// Extra memory requested with each heap extension (64 MiB).
pub const TOP_PAD: usize = 64 << 20;

/// Applies the settings above to glibc's allocator, unless `PULSEREC_MALLOC=default` is set or
/// `GLIBC_TUNABLES` already says something about malloc. Returns whether they were applied
/// (always `false` off glibc). Call it once, first thing in `main`.
pub fn tune_malloc() -> bool {
    if std::env::var("PULSEREC_MALLOC").is_ok_and(|v| v == "default")
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|v| v.contains("malloc"))
    {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
    #[allow(unsafe_code)]
    let ok = unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD as libc::c_int) == 1
            && libc::mallopt(libc::M_TOP_PAD, TOP_PAD as libc::c_int) == 1
    };
    if !ok {
        tracing::warn!("mallopt refused the pulserec malloc settings; glibc defaults stay");
    }
    ok
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_on_glibc_unless_told_not_to() {
        let told_not_to = std::env::var("PULSEREC_MALLOC").is_ok_and(|v| v == "default")
            || std::env::var("GLIBC_TUNABLES").is_ok_and(|v| v.contains("malloc"));
        let glibc = cfg!(all(target_os = "linux", target_env = "gnu"));
        assert_eq!(tune_malloc(), glibc && !told_not_to);
    }
}
