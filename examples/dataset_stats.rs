//! Loads a data set (a file or a folder; format detected unless `--format` is given) and prints
//! its summary as JSON on stdout.
//!
//! ```text
//! cargo run --release --example dataset_stats -- ../shared/data/amazon-games-2018
//! cargo run --release --example dataset_stats -- assets/ml-100k --k-core 10
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use pulserec::data::{Filter, Format, load, load_with};

#[derive(Parser)]
#[command(about = "Print a data set's summary as JSON")]
struct Args {
    /// File or folder to load.
    path: PathBuf,
    /// Format (recbole, ml-100k, ml-1m, ml-csv, amazon-2018, amazon-2023); detected if absent.
    #[arg(long)]
    format: Option<Format>,
    /// Apply an iterative k-core filter (users and items) before summarising.
    #[arg(long)]
    k_core: Option<usize>,
    /// Apply the paper code's single-pass count filter before summarising.
    #[arg(long)]
    min_count: Option<usize>,
}

fn main() {
    pulserec::init_logging("warn");
    let args = Args::parse();
    let start = Instant::now();
    let loaded = match args.format {
        Some(f) => load_with(&args.path, f),
        None => load(&args.path),
    };
    let mut ds = match loaded {
        Ok(ds) => ds,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let load_s = start.elapsed().as_secs_f64();
    if let Some(k) = args.min_count {
        ds = ds.filter(Filter::MinCount {
            min_user: k,
            min_item: k,
        });
    }
    if let Some(k) = args.k_core {
        ds = ds.filter(Filter::KCore {
            min_user: k,
            min_item: k,
        });
    }
    let summary = ds.summary();
    let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = writeln!(std::io::stdout(), "{json}");
    eprintln!(
        "loaded {} interactions in {:.3} s ({:.0} interactions/s)",
        ds.n_interactions(),
        load_s,
        ds.n_interactions() as f64 / load_s.max(1e-9)
    );
}
