#![doc = include_str!("../README.md")]

pub mod answer;
pub mod data;
pub mod error;
pub mod eval;
pub mod prior;
pub mod prompt;
pub mod report;
pub mod select;
pub mod tokenize;
pub mod train;

pub use answer::{AnswerMatch, match_answer, title_in_answer};
pub use data::{
    DataConfig, ExampleBuilder, PopularityUse, SftExample, TrainingSet, Variant, choose_test_users,
};
pub use error::{Result, SftError};
pub use eval::{Evaluation, Outcome, SelectorMetrics, evaluate};
pub use prior::{MAX_PRIOR_WEIGHT, PopularityPrior};
pub use prompt::{
    ANSWER_CUE, CHOICE_LETTERS, PROMPT_VERSION, PromptStyle, RATIONALE_CUE, SEQUENCE_HEADER,
    choice_letter,
};
pub use pulserec_slm::FrozenBottom;
pub use pulserec_train::{NonFiniteLoss, TrainError};
pub use report::{SftMetrics, TrainReport};
pub use select::{
    GenerativeConfig, GenerativeSelector, LikelihoodConfig, LikelihoodSelector, Reduction,
};
pub use tokenize::{
    EncodedExample, EncodedSet, encode_all, encode_auxiliary, encode_example, encode_ranking,
    encode_sequence,
};
pub use train::{
    Objective, SFT_CONFIG_FILE, Schedule, SftConfig, SftTrainer, load_adapter, token_batch,
};
