#![doc = include_str!("../README.md")]

mod batch;
pub mod context;
pub mod error;
pub mod hindsight;
pub mod likelihood;
pub mod parse;
pub mod prompt;
pub mod remote;
pub mod search;
pub mod store;
pub mod tree;

pub use context::ContextBuilder;
pub use error::{Result, TotError};
pub use hindsight::{HindsightConfig, HindsightOutput, HindsightRationales, ParseStats};
pub use likelihood::LikelihoodThoughtScorer;
pub use parse::{ParsedText, parse_rationale, parse_thought};
pub use prompt::{PROMPT_VERSION, Prompt, PromptConfig, PromptFormat, plain_format};
pub use remote::{MAX_RETRY_AFTER, RemoteConfig, RemoteGenerator};
pub use search::{TotConfig, TreeOfThought};
pub use store::{RationaleStore, Shard, StoredRationale};
pub use tree::{NodeStatus, ThoughtNode, ThoughtTree};
