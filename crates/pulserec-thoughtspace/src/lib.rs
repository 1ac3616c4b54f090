#![doc = include_str!("../README.md")]

pub mod bert;
pub mod config;
pub mod encoder;
pub mod error;
pub mod loss;
pub mod tokenize;
pub mod weights;

pub use config::{Activation, Architecture, BertConfig, Pooling};
pub use encoder::{EncoderOptions, SentenceEncoder};
pub use error::{Result, ThoughtSpaceError};
pub use loss::InfoNceConfig;
