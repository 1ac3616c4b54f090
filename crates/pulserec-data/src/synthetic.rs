//! Synthetic data sets for benchmarks and tests: realistic shapes (popularity skew, per-user
//! activity skew, timestamp ties), seeded, written in the real file formats so the real loaders
//! read them.

use std::io::{BufWriter, Write};
use std::path::Path;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{DataError, Result};

/// Writes a RecBole atomic `.inter` file with `n_interactions` rows over `n_users` users and
/// `n_items` items (`user_id:token item_id:token rating:float timestamp:float`), in random user
/// order like a real log. Item popularity follows a Zipf-like law; one row in ten repeats the
/// previous row's timestamp, so the tie-break matters.
pub fn write_atomic_inter(
    path: &Path,
    n_users: usize,
    n_items: usize,
    n_interactions: usize,
    seed: u64,
) -> Result<()> {
    if n_users == 0 || n_items == 0 {
        return Err(DataError::Config {
            field: "n_users/n_items",
            message: "must be positive".into(),
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let file = std::fs::File::create(path).map_err(|e| DataError::io(path, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let io = |e| DataError::io(path, e);
    writeln!(
        out,
        "user_id:token\titem_id:token\trating:float\ttimestamp:float"
    )
    .map_err(io)?;
    let mut ts: i64 = 880_000_000;
    for _ in 0..n_interactions {
        // Squaring a uniform draw skews both users and items towards low ids (the popular ones).
        let u = ((rng.random::<f64>().powi(2)) * n_users as f64) as usize;
        let i = ((rng.random::<f64>().powi(3)) * n_items as f64) as usize;
        let rating = rng.random_range(1..=5);
        if rng.random_range(0..10) != 0 {
            ts += rng.random_range(1..600);
        }
        writeln!(out, "{}\t{}\t{rating}\t{ts}", u + 1, i + 1).map_err(io)?;
    }
    out.flush().map_err(io)
}
