#![doc = include_str!("../README.md")]

pub mod baselines;
pub mod catalog;
pub mod error;
pub mod fastmath;
pub mod fs;
pub mod ids;
pub mod interaction;
pub mod malloc;
pub mod metrics;
pub mod pool;
pub mod seed;
pub mod sequences;
pub mod stats;
pub mod tensor_file;
pub mod text;
pub mod traits;

pub use catalog::Catalog;
pub use error::{Error, Result};
pub use ids::{ItemId, UserId};
pub use interaction::Interaction;
pub use metrics::{RankingAccumulator, RankingMetrics, TiePolicy};
pub use pool::on_pool;
pub use sequences::{SequenceView, Sequences, SequencesError};
pub use traits::*;
