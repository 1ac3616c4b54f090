#![doc = include_str!("../README.md")]

pub mod bert;
pub mod config;
pub mod encoder;
pub mod error;
pub mod loss;
pub mod map;
pub mod pairs;
pub mod render;
pub mod scorer;
pub mod space;
pub mod tokenize;
pub mod train;

pub use config::{Activation, Architecture, BertConfig, Pooling};
pub use encoder::{EncoderOptions, SentenceEncoder};
pub use error::{Result, ThoughtSpaceError};
pub use loss::InfoNceConfig;
pub use map::{MapPanel, pca_2d, write_map_svg};
pub use pairs::{
    TrainingPair, read_pairs, read_pairs_jsonl, read_pairs_parquet, write_pairs_jsonl,
};
pub use pulserec_train::{NonFiniteLoss, TrainError};
pub use render::BehaviourRenderer;
pub use scorer::ConsistencyScorer;
pub use space::{RetrievalReport, ThoughtSpace};
pub use train::{GradientReport, ThoughtSpaceTrainer, TrainConfig, TrainReport};
