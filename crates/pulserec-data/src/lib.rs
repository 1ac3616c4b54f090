#![doc = include_str!("../README.md")]

pub mod candidates;
pub mod dataset;
pub mod error;
pub mod filter;
pub mod formats;
pub mod locate;
mod log;
pub mod parquet_file;
mod reader;
pub mod split;
pub mod store;
pub mod summary;
pub mod synthetic;
pub mod text;

pub use candidates::{CandidateConfig, CandidateSets, Sampling};
pub use dataset::Dataset;
pub use error::{DataError, Result};
pub use filter::Filter;
pub use formats::{AmazonVersion, Format, Sources, detect, load, load_with};
pub use split::{LeaveOneOut, Target};
pub use store::PreparedDataset;
pub use summary::{Quantiles, Summary};
pub use text::TextLimits;
