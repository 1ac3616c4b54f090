#![doc = include_str!("../README.md")]

pub mod amx;
pub mod error;
pub mod gguf;
pub mod quant;

pub use error::{Result, SlmError};
pub use gguf::{GgufFile, MetaValue, TensorInfo};
pub use quant::GgmlType;
pub mod tokenizer;
pub use tokenizer::SlmTokenizer;
pub mod cache;
pub mod config;
mod kernels;
pub mod linear;
pub mod lora;
pub mod model;
pub mod weights;
pub use cache::KvCache;
pub use config::{Architecture, LlamaConfig};
pub use kernels::int8_available;
pub use linear::WeightMode;
pub use model::Llama;
pub mod chat;
pub mod generate;
mod likelihood;
mod prefix;
pub mod sampler;
pub mod slm;
pub mod train_model;
pub use chat::{ChatFormat, ChatMessage};
pub use generate::GenerationStats;
pub use lora::{LoraConfig, LoraTarget};
pub use sampler::Sampler;
pub use slm::{LoadOptions, SharedSlm, Slm};
pub use train_model::{FrozenBottom, LoraModel, TokenBatch};
