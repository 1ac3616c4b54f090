#![doc = include_str!("../README.md")]

pub mod config;
pub mod device;
pub mod pipeline;
pub mod plot;
pub mod results;
pub mod serve;

pub use config::PipelineConfig;
pub use pipeline::{Pipeline, PipelineError, Stage};
/// glibc `malloc` settings for burn's allocation pattern (moved to `pulserec-core`, so the
/// crates' own examples use them too).
pub use pulserec_core::malloc;

pub use pulserec_core as core;
pub use pulserec_data as data;

/// Sends `tracing` logs to stderr for the examples and the CLI: `RUST_LOG` when set, else
/// `default_filter` (e.g. `"info"`, `"warn"`). Calling it twice is harmless.
pub fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
