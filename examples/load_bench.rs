//! Times loading a RecBole atomic `.inter` file into per-user chronological sequences, for the
//! side-by-side with pandas (scripts/data/bench_vs_pandas.sh). Generates the file first when
//! `--generate` is given.
//!
//! ```text
//! cargo run --release --example load_bench -- /tmp/bench1m.inter --generate --repeat 5
//! ```

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use pulserec::data::{load, synthetic::write_atomic_inter};

#[derive(Parser)]
struct Args {
    /// The `.inter` file.
    path: PathBuf,
    /// Write a synthetic 1M-interaction file there first (50k users, 20k items, seed 7).
    #[arg(long)]
    generate: bool,
    /// Timed loads.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.generate {
        write_atomic_inter(&args.path, 50_000, 20_000, 1_000_000, 7)?;
    }
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..args.repeat.max(1) {
        let start = Instant::now();
        let ds = load(&args.path)?;
        times.push(start.elapsed().as_secs_f64());
        n = ds.n_interactions();
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{{\"impl\": \"pulserec\", \"interactions\": {n}, \"median_s\": {median:.4}, \"runs\": {:?}}}",
        times
            .iter()
            .map(|t| (t * 1e4).round() / 1e4)
            .collect::<Vec<_>>()
    );
    Ok(())
}
