#![doc = include_str!("../README.md")]

pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod dropout;
pub mod error;
pub mod eval;
pub mod loss;
pub mod model;
pub mod recommend;
pub mod train;

pub use checkpoint::{load_checkpoint, save_checkpoint};
pub use config::{Activation, LossKind, NormPlacement, SasRecConfig, TrainConfig, WeightInit};
pub use error::{Result, SeqRecError};
pub use eval::{EvalCase, EvalOptions, EvalReport, Protocol, evaluate_full, evaluate_sampled};
pub use model::SasRec;
pub use recommend::{SasRecRecommender, similar_users, similar_users_of, top_k_of};
pub use train::{EpochLog, TrainData, TrainOutcome, train};
