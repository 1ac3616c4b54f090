//! The pipeline's configuration: one TOML file with a table per stage.
//!
//! Every key is checked before any work starts ([`PipelineConfig::validate`]); an unknown key is
//! refused (a typo must not silently fall back to a default), and every error names the key, the
//! value and what was expected. Relative paths are taken from the current directory.
//!
//! ```
//! let config = pulserec::config::PipelineConfig::quickstart();
//! config.validate().unwrap();
//! let text = config.to_toml().unwrap();
//! assert_eq!(pulserec::config::PipelineConfig::from_toml(&text).unwrap(), config);
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use pulserec_sft::Variant;
use serde::{Deserialize, Serialize};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not valid TOML or does not fit the schema (unknown key, wrong type); the
    /// message names the key and shows the line.
    #[error("config {origin}: {message}")]
    Parse {
        /// The file, or `<text>` for a string.
        origin: String,
        /// toml's message: line, column, key and what was expected.
        message: String,
    },
    /// A value is out of range.
    #[error("config key `{key}` = {value}: expected {expected}")]
    Invalid {
        /// Dotted key, e.g. `tot.depth`.
        key: String,
        /// The value given.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A stage crate refused the settings a section builds (the crate's own check, run once,
    /// here, before any work).
    #[error("config key `{key}` = {value}: {message}")]
    Refused {
        /// Dotted key, e.g. `tot.temperature`.
        key: String,
        /// The value given.
        value: String,
        /// The crate's reason.
        message: String,
    },
}

fn invalid(key: &str, value: impl fmt::Debug, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: format!("{value:?}"),
        expected: expected.to_string(),
    }
}

/// The whole run: where things are and how every stage is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Folder of the run: resolved config, stores, checkpoints, metrics, report.
    pub run_dir: PathBuf,
    /// Seed of every random choice of the run (training, sampling, held-out splits).
    pub seed: u64,
    /// `flex`, `tch`, `tch-cuda:N` or `cuda:N`.
    pub device: String,
    /// How the local SLM multiplies in the hindsight, Tree-of-Thought and evaluation stages:
    /// `f32` (the default); `bf16`, prompts and batched steps in bf16 where the CPU can (AMX
    /// tiles, else AVX512-BF16; f32 elsewhere);
    /// or `int8`, `bf16` and generation's decode steps on 8-bit inputs where the CPU has
    /// AVX512-VNNI, as llama.cpp decodes. `bf16` is faster and moves log-probabilities by about
    /// 1e-2, `int8` decode steps' by about 2e-2 more; those stages record it in their settings where
    /// it changes numbers ([`Precision::changes_numbers`]), so a store is never continued in
    /// another precision. SFT trains in f32 unless `sft.frozen_bottom = "host_bf16"`.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// The data set.
    pub data: DataConfig,
    /// Pretrained models.
    pub assets: AssetsConfig,
    /// Stage 0b: the SASRec baseline and similar users.
    pub sasrec: SasRecStage,
    /// Stage 1: hindsight rationales.
    pub rationales: RationalesStage,
    /// Stage 2: the Thought Space.
    pub thought_space: ThoughtSpaceStage,
    /// Stage 3: Tree-of-Thought refinement.
    pub tot: TotStage,
    /// Stage 4: LoRA fine-tuning of the SLM.
    pub sft: SftStage,
    /// Evaluation of the SLM recommenders.
    pub eval: EvalStage,
    /// Where the hindsight and Tree-of-Thought stages, and the generative selector, generate
    /// text (default: the local SLM).
    #[serde(default, skip_serializing_if = "GeneratorConfig::is_local")]
    pub generator: GeneratorConfig,
}

/// Where the generation stages (hindsight rationales, Tree-of-Thought) and the generative
/// selector run.
///
/// `local` loads `assets.slm` in this process. `remote` sends the same prompts (rendered with
/// the chat template of `assets.slm`, read without its weights) to an OpenAI-compatible
/// `/v1/completions` endpoint: vLLM, llama.cpp's server, TGI, or `pulserec serve`. With
/// `eval.selector = "generative"` the base SLM's row asks the server's `model`, and a variant's
/// row the model named in `variant_models` (the engine serving that variant's adapter, e.g.
/// vLLM's `--lora-modules` or llama.cpp's `--lora`); a variant without one is evaluated on the
/// local SLM with its adapter merged. The likelihood scorers (Tree-of-Thought's `likelihood`,
/// the evaluation's likelihood selector) stay local: they need prompt log-probabilities, which
/// the completions API gives only with `echo` + `logprobs`, and not every engine supports that.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeneratorConfig {
    /// `local` (default) or `remote`.
    #[serde(default)]
    pub kind: GeneratorKind,
    /// `remote`: the server root, e.g. `http://127.0.0.1:8080` (without `/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// `remote`: the `model` field of every request (what the server serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `remote`: the *name* of the environment variable that holds the API key (never the key
    /// itself); absent: no key is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// `remote`: requests in flight at once (default 4).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// `remote`: seconds for one HTTP exchange (default 120).
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// `remote`: retries after the first attempt for timeouts, refused connections, 429 and
    /// 5xx (default 3, with doubling backoff from 0.5 s and at least the server's
    /// `Retry-After`).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// `remote` with `eval.selector = "generative"`: the model name under which the server
    /// serves each variant's fine-tuned model, e.g. `{ pulse = "smollm2-pulse" }`; a variant
    /// not listed is evaluated locally.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub variant_models: BTreeMap<Variant, String>,
}

/// See [`GeneratorConfig::kind`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GeneratorKind {
    /// `assets.slm` in this process.
    #[default]
    Local,
    /// An OpenAI-compatible completions server.
    Remote,
}

fn default_concurrency() -> usize {
    4
}

fn default_timeout_s() -> f64 {
    120.0
}

fn default_retries() -> u32 {
    3
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            kind: GeneratorKind::Local,
            base_url: None,
            model: None,
            api_key_env: None,
            concurrency: default_concurrency(),
            timeout_s: default_timeout_s(),
            retries: default_retries(),
            variant_models: BTreeMap::new(),
        }
    }
}

impl GeneratorConfig {
    /// Whether this is the default: the local SLM (nothing to write in a config).
    pub fn is_local(&self) -> bool {
        *self == Self::default()
    }

    /// What makes generated text what it is, for the stage settings: `None` for the local SLM
    /// (whose file is recorded already), else the endpoint and the model (never the key).
    pub fn identity(&self) -> Option<serde_json::Value> {
        (self.kind == GeneratorKind::Remote).then(|| {
            serde_json::json!({"kind": "remote", "base_url": self.base_url, "model": self.model})
        })
    }

    /// The model a remote server answers the generative selector with for the base SLM
    /// (`variant` `None`: `model`) or for variant `v` (`variant_models[v]`); `None` where that
    /// row runs locally.
    pub fn served_model(&self, variant: Option<Variant>) -> Option<&str> {
        if self.kind != GeneratorKind::Remote {
            return None;
        }
        match variant {
            None => self.model.as_deref(),
            Some(v) => self.variant_models.get(&v).map(String::as_str),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.kind == GeneratorKind::Local {
            if let Some((v, _)) = self.variant_models.iter().next() {
                return Err(invalid(
                    &format!("generator.variant_models.{}", v.name()),
                    &self.variant_models,
                    "served models only with generator.kind = \"remote\"",
                ));
            }
            return Ok(());
        }
        match self.base_url.as_deref() {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {}
            other => {
                return Err(invalid(
                    "generator.base_url",
                    other.unwrap_or(""),
                    "an http:// or https:// URL with generator.kind = \"remote\"",
                ));
            }
        }
        if self.model.as_deref().is_none_or(|m| m.trim().is_empty()) {
            return Err(invalid(
                "generator.model",
                self.model.as_deref().unwrap_or(""),
                "the model name the server serves, with generator.kind = \"remote\"",
            ));
        }
        if let Some(var) = &self.api_key_env
            && (var.is_empty() || var.contains(['=', '\0']))
        {
            return Err(invalid(
                "generator.api_key_env",
                var,
                "the name of an environment variable (not the key)",
            ));
        }
        if self.concurrency == 0 {
            return Err(invalid("generator.concurrency", 0, "an integer >= 1"));
        }
        for (v, model) in &self.variant_models {
            if model.trim().is_empty() {
                return Err(invalid(
                    &format!("generator.variant_models.{}", v.name()),
                    model,
                    "the model name under which the server serves this variant",
                ));
            }
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(invalid(
                "generator.timeout_s",
                self.timeout_s,
                "seconds > 0",
            ));
        }
        Ok(())
    }
}

/// The data set and its slice.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Data files or folder (format detected).
    pub path: PathBuf,
    /// Used instead of `path` when `path` does not exist (e.g. Games when ../shared is present,
    /// else the ML-100K asset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<PathBuf>,
    /// Keep only the first N users (in the data's user order); absent: all users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_users: Option<usize>,
    /// An item feature appended to every title in parentheses wherever titles are shown
    /// (prompts, rationales, content similarity): `"release_year"` on RecBole's ML-100K gives
    /// "Usual Suspects, The (1995)", as MovieLens's own `u.item` writes it. Absent: titles as
    /// loaded. An error names the feature when no item has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_feature: Option<String>,
    /// Seed of the stored candidate sets (fixed across run seeds, so every seed is evaluated
    /// on the same candidates).
    pub candidate_seed: u64,
}

/// Model files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetsConfig {
    /// The SLM: a GGUF file or an HF directory.
    pub slm: PathBuf,
    /// The pretrained sentence encoder both Thought-Space encoders start from.
    pub encoder: PathBuf,
}

/// SASRec settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SasRecStage {
    /// Training epochs.
    pub epochs: usize,
    /// Users per batch.
    pub batch_size: usize,
    /// Its own test protocol, reported beside HR@1 on the SLM's candidates: `full` or
    /// `sampledN` (1 positive + N uniform negatives).
    pub protocol: SasRecProtocol,
    /// Similar users kept per user (the paper uses 5).
    pub similar_users: usize,
}

/// SASRec's own test protocol (`sasrec.protocol`), written `full` or `sampledN`: every item,
/// or the positive and N uniform negatives (the pipeline's stored lists when N matches).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SasRecProtocol {
    /// Every item, the history masked.
    Full,
    /// The positive and this many uniform negatives.
    Sampled(usize),
}

impl SasRecProtocol {
    /// The negatives per user, `None` for `full`.
    pub fn negatives(self) -> Option<usize> {
        match self {
            Self::Full => None,
            Self::Sampled(n) => Some(n),
        }
    }
}

impl std::str::FromStr for SasRecProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "full" {
            return Ok(Self::Full);
        }
        match s.strip_prefix("sampled").map(str::parse::<usize>) {
            Some(Ok(n)) if n > 0 => Ok(Self::Sampled(n)),
            _ => Err(format!(
                "`{s}`: expected `full` or `sampledN` with N >= 1 (e.g. `sampled100`)"
            )),
        }
    }
}

impl TryFrom<String> for SasRecProtocol {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for SasRecProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => f.write_str("full"),
            Self::Sampled(n) => write!(f, "sampled{n}"),
        }
    }
}

impl From<SasRecProtocol> for String {
    fn from(p: SasRecProtocol) -> Self {
        p.to_string()
    }
}

/// Hindsight-rationale settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RationalesStage {
    /// Training users that get a rationale (the first N with a history and a chosen item).
    pub users: usize,
    /// Users per batched generate call.
    pub batch_size: usize,
    /// Longest rationale in tokens.
    pub max_new_tokens: usize,
    /// Sampling temperature.
    pub temperature: f32,
}

/// Thought-Space settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThoughtSpaceStage {
    /// Training epochs over the rationale pairs.
    pub epochs: usize,
    /// Pairs per step.
    pub batch_size: usize,
    /// InfoNCE temperature.
    pub temperature: f32,
    /// In-batch negatives per anchor.
    pub negatives: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// Pairs held out of training for retrieval accuracy and the map.
    pub held_out: usize,
    /// Longest encoder input in tokens.
    pub max_len: usize,
}

/// Which model scores Tree-of-Thought chains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScorerKind {
    /// Thought-Space consistency (PULSE).
    Consistency,
    /// The SLM's likelihood of the chosen item (the ablation).
    Likelihood,
}

impl ScorerKind {
    /// The scorer whose Tree-of-Thought store an SFT variant reads, if any: likelihood for
    /// "ToT with likelihood", consistency for PULSE.
    pub fn for_variant(variant: Variant) -> Option<Self> {
        match variant {
            Variant::TotLikelihood => Some(Self::Likelihood),
            Variant::Pulse => Some(Self::Consistency),
            _ => None,
        }
    }

    /// The name used in folders and tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Consistency => "consistency",
            Self::Likelihood => "likelihood",
        }
    }
}

/// Tree-of-Thought settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TotStage {
    /// Thoughts per chain.
    pub depth: usize,
    /// Children per beam node.
    pub branching: usize,
    /// Chains kept per depth.
    pub beam_width: usize,
    /// Longest thought in tokens.
    pub max_new_tokens: usize,
    /// Sampling temperature.
    pub temperature: f32,
    /// Users searched together.
    pub batch_size: usize,
    /// One search (and store) per scorer.
    pub scorers: Vec<ScorerKind>,
}

/// SFT settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftStage {
    /// The variants to train, each on the same users with the same budget.
    pub variants: Vec<Variant>,
    /// Training epochs.
    pub epochs: usize,
    /// Examples per optimiser step (the paper: 64).
    pub effective_batch: usize,
    /// Rows per forward/backward pass; `effective_batch` is accumulated from these.
    pub micro_batch: usize,
    /// LoRA rank.
    pub lora_rank: usize,
    /// Adapt only the top N layers (PEFT's `layers_to_transform`); absent: every layer. Training
    /// records nothing for the backward pass below the lowest adapted layer, so fewer layers
    /// train faster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_top_layers: Option<usize>,
    /// How the layers below the lowest adapted one run in training: `autodiff` (default: as the
    /// others), `host` (off the autodiff graph with the inference model's host kernels, f32,
    /// and the head's log-softmax and the dropout masks on the host too) or `host_bf16` (`host`
    /// with bf16 products on the CPU's AMX tiles, or AVX512-BF16 where it has no AMX);
    /// [`pulserec_sft::FrozenBottom`].
    #[serde(default, skip_serializing_if = "is_autodiff")]
    pub frozen_bottom: pulserec_sft::FrozenBottom,
    /// Peak AdamW learning rate (the paper: 2e-4 over 7 epochs; the CPU configs take 1e-3 so a
    /// handful of steps move the adapters).
    pub learning_rate: f64,
    /// The prompt shape of training and evaluation: `chat` (default: the paper's instructions
    /// and candidate list in the chat template) or `sequence` (the history as a list of titles,
    /// continued with the next one; no candidate list, so the likelihood selector's ranking
    /// cannot depend on the listed order).
    #[serde(default)]
    pub prompt: PromptKind,
    /// History titles shown in evaluation prompts (default: the paper's 3); with
    /// `every_position`, also the most titles of context in a training row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<usize>,
    /// `sequence` prompts only: the no-rationale variant learns every item of each training
    /// user's sequence after the first (one packed row per user and window), not only the last
    /// training item. The rationale variants keep one example per user (their rationale
    /// explains the last training item).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub every_position: bool,
    /// What SFT teaches: `generative` (default: the correct answer's tokens, the paper's SFT)
    /// or `ranking` (a softmax over each training prompt's candidates, each scored as the
    /// likelihood selector scores it; [`pulserec_sft::Objective`]). Not with `every_position`.
    #[serde(default, skip_serializing_if = "is_generative")]
    pub objective: pulserec_sft::Objective,
    /// Training examples per user: the last this many training items, each with its own history
    /// and negatives (default 1: the last training item only; only that one carries a
    /// rationale). Not with `every_position`, whose packed rows already hold every position.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub positions: usize,
    /// Candidates in a training prompt, the target included (default: the paper's 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_candidates: Option<usize>,
    /// `choice` prompts only: each candidate is shown with its training-interaction count (the
    /// most-popular baseline's counts), so the model can weigh popularity against content.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub show_popularity: bool,
    /// Prompts with a candidate list (`chat`, `choice`) list the candidates by the same counts,
    /// most bought first (ties in the seeded shuffled order) instead of shuffled: popularity is
    /// the first-stage ranking the SLM reranks, as LlamaRec lists its retriever's candidates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub order_by_popularity: bool,
    /// `ranking` objective and `likelihood` selector only: every candidate's score is the
    /// SLM's plus `w ln(1 + count)` (the most-popular baseline's counts, `w` fitted on the
    /// training examples before training and recorded with the adapter), in training and
    /// evaluation, so the SLM learns to rerank what popularity alone would choose
    /// ([`pulserec_sft::PopularityPrior`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub popularity_prior: bool,
    /// Cross-domain: a finished run directory (trained on another data set) whose adapters
    /// this run evaluates instead of training its own. Stages 1-3 are then not needed and
    /// finish at once; SASRec still trains on this run's data (an ID model cannot transfer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapters_from: Option<PathBuf>,
}

// Each section is the stage's vocabulary in the config file (flat keys, the stage's recorded
// settings); the methods below build the stage crate's own config from it, in one place, for
// the stage and for `PipelineConfig::validate`, which runs the crate's checks once before any
// work. What a section does not name is the paper's (the crates' `paper` constructors).

impl SasRecStage {
    /// SASRec's training settings: the paper's optimiser with this section's epochs and batch
    /// and the run's seed, no validation passes (the pipeline evaluates after training).
    pub fn training(&self, seed: u64) -> pulserec_seqrec::TrainConfig {
        pulserec_seqrec::TrainConfig::paper()
            .with_epochs(self.epochs)
            .with_batch_size(self.batch_size)
            .with_seed(seed)
            .with_valid_every(0)
    }
}

impl RationalesStage {
    /// The hindsight stage's settings: the paper's with this section's batch, length and
    /// temperature.
    pub fn hindsight(&self, seed: u64) -> pulserec_tot::HindsightConfig {
        let mut config = pulserec_tot::HindsightConfig::paper(seed);
        config.batch_size = self.batch_size;
        config.sampling.temperature = self.temperature;
        config.sampling.max_new_tokens = self.max_new_tokens;
        config
    }
}

impl ThoughtSpaceStage {
    /// The Thought Space's training settings: one-directional InfoNCE with this section's
    /// temperature and negatives, its batch, epochs and learning rate.
    pub fn training(&self, seed: u64) -> pulserec_thoughtspace::TrainConfig {
        pulserec_thoughtspace::TrainConfig {
            loss: pulserec_thoughtspace::InfoNceConfig {
                temperature: self.temperature,
                negatives: Some(self.negatives),
                symmetric: false,
            },
            batch_size: self.batch_size,
            epochs: self.epochs,
            learning_rate: self.learning_rate,
            seed,
            ..pulserec_thoughtspace::TrainConfig::default()
        }
    }
}

impl TotStage {
    /// The search's settings: the paper's sampling (top-k 51, top-p 0.95) and prompts with
    /// this section's depth, branching, beam, length, temperature and batch.
    pub fn search(&self, seed: u64) -> pulserec_tot::TotConfig {
        let mut config = pulserec_tot::TotConfig::paper(seed);
        config.depth = self.depth;
        config.branching = self.branching;
        config.beam_width = self.beam_width;
        config.batch_size = self.batch_size;
        config.sampling.temperature = self.temperature;
        config.sampling.max_new_tokens = self.max_new_tokens;
        config
    }
}

impl SftStage {
    /// The training settings for a model of `num_layers` layers: the paper's (dropout 0.05 on
    /// q/k/v/o, warmup 3 % and linear decay, max length 512, gradient norm 1) with this
    /// section's epochs, batch, rank, layers, learning rate and objective; alpha stays at
    /// twice the rank, as in the paper's r8 / a16.
    pub fn training(&self, seed: u64, num_layers: usize) -> pulserec_sft::SftConfig {
        let mut config = pulserec_sft::SftConfig::paper(seed);
        config.epochs = self.epochs;
        config.effective_batch = self.effective_batch;
        config.micro_batch = self.micro_batch;
        config.learning_rate = self.learning_rate;
        config.lora.rank = self.lora_rank;
        config.lora.alpha = 2.0 * self.lora_rank as f32;
        config.objective = self.objective;
        config.frozen_bottom = self.frozen_bottom;
        if let Some(k) = self.lora_top_layers {
            config.lora = config.lora.top_layers(k, num_layers);
        }
        config
    }
}

/// The prompt shape of the SLM rows (see [`SftStage::prompt`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptKind {
    /// The paper's instructions and candidate list in the model's chat template.
    #[default]
    Chat,
    /// The history as a list of titles, continued with the next one.
    Sequence,
    /// The history as a list, then lettered candidates; the model answers with a letter.
    Choice,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

fn is_generative(o: &pulserec_sft::Objective) -> bool {
    *o == pulserec_sft::Objective::Generative
}

fn is_autodiff(mode: &pulserec_sft::FrozenBottom) -> bool {
    *mode == pulserec_sft::FrozenBottom::Autodiff
}

/// How the local SLM multiplies prompts ([`PipelineConfig::precision`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Precision {
    /// f32 products (gemm), the same numbers on every CPU.
    #[default]
    F32,
    /// bf16 products with f32 accumulation on AMX, or AVX512-BF16 where the CPU has no AMX
    /// (`pulserec_slm::WeightMode::Bf16`).
    Bf16,
    /// `bf16`, and generation's decode steps on 8-bit inputs with integer dot products where
    /// the CPU has AVX512-VNNI, as llama.cpp decodes (`pulserec_slm::WeightMode::Int8`);
    /// likelihood scoring is as under `bf16`.
    Int8,
}

impl Precision {
    fn is_f32(&self) -> bool {
        *self == Self::F32
    }

    /// Whether this precision gives other numbers than f32 on this CPU: `bf16` where it has
    /// bf16 products (AMX or AVX512-BF16), `int8` where it has those or AVX512-VNNI.
    pub fn changes_numbers(self) -> bool {
        match self {
            Self::F32 => false,
            Self::Bf16 => pulserec_slm::amx::bf16_available(),
            Self::Int8 => pulserec_slm::amx::bf16_available() || pulserec_slm::int8_available(),
        }
    }

    /// The SLM's weight mode for this precision.
    pub fn weight_mode(self) -> pulserec_slm::WeightMode {
        match self {
            Self::F32 => pulserec_slm::WeightMode::Auto,
            Self::Bf16 => pulserec_slm::WeightMode::Bf16,
            Self::Int8 => pulserec_slm::WeightMode::Int8,
        }
    }
}

/// How an SLM recommender picks a candidate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SelectorKind {
    /// Generate an answer and map it to a candidate (the paper's HR@1).
    Generative,
    /// Rank candidates by the log-likelihood of their titles.
    Likelihood,
}

/// Which held-out item the evaluation asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EvalSplit {
    /// The last item: final numbers, read once per final configuration.
    #[default]
    Test,
    /// The item before it (the history stops before it too): where settings are chosen.
    Valid,
}

impl EvalSplit {
    /// `test` or `valid` (also the folder under `eval/`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Test => "test",
            Self::Valid => "valid",
        }
    }

    /// The leave-one-out target of this split.
    pub fn target(self) -> pulserec_data::Target {
        match self {
            Self::Test => pulserec_data::Target::Test,
            Self::Valid => pulserec_data::Target::Valid,
        }
    }
}

impl std::str::FromStr for EvalSplit {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s {
            "test" => Ok(Self::Test),
            "valid" => Ok(Self::Valid),
            other => Err(invalid("eval.split", other, "`test` or `valid`")),
        }
    }
}

/// A baseline row of the results table: evaluated on the same users and candidate lists as the
/// SLM rows, and needing no SFT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BaselineKind {
    /// A seeded uniform choice.
    Random,
    /// The candidate with the most training interactions over every user of the data files
    /// (each sequence without its valid and test items); ties go to the candidate listed first.
    MostPopular,
    /// Zero-shot content similarity under the untrained encoder (`assets.encoder`): cosine of the
    /// mean history-title embedding and each candidate title.
    Content,
    /// The `sasrec` stage's model (trained on every user's training sequence).
    Sasrec,
    /// The SLM without SFT, through the configured selector.
    BaseSlm,
}

impl BaselineKind {
    /// Every baseline, in table order.
    pub const ALL: [BaselineKind; 5] = [
        Self::Random,
        Self::MostPopular,
        Self::Content,
        Self::Sasrec,
        Self::BaseSlm,
    ];

    fn all() -> Vec<BaselineKind> {
        Self::ALL.to_vec()
    }

    /// The row's file name under `eval/<split>/`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::MostPopular => "most-popular",
            Self::Content => "content",
            Self::Sasrec => "sasrec",
            Self::BaseSlm => "base-slm",
        }
    }

    /// The row's label in tables.
    pub fn label(self) -> &'static str {
        match self {
            Self::Random => "random",
            Self::MostPopular => "most popular",
            Self::Content => "content similarity (MiniLM, zero shot)",
            Self::Sasrec => "SASRec",
            Self::BaseSlm => "base SLM (no SFT)",
        }
    }
}

/// Evaluation settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalStage {
    /// Held-out users evaluated (the first N evaluation users that are not training users).
    pub users: usize,
    /// Candidate-list sizes (positive included); the paper reports 5 and 20.
    pub candidates: Vec<usize>,
    /// How the SLM picks.
    pub selector: SelectorKind,
    /// `test` (default) or `valid`; each split is evaluated into its own folder `eval/<split>/`.
    #[serde(default)]
    pub split: EvalSplit,
    /// Baseline rows (default: all of them).
    #[serde(default = "BaselineKind::all")]
    pub baselines: Vec<BaselineKind>,
    /// The list sizes the SLM rows (base SLM and variants) are evaluated on, a subset of
    /// `candidates`; absent: all of them. An SLM row costs a forward pass over every candidate
    /// title, so long lists on many users can be left to the cheap baselines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slm_candidates: Option<Vec<usize>>,
    /// The likelihood selector's score of a candidate: `mean` (default) token log-probability of
    /// its title, or `sum` (the title's log-probability, which favours short titles).
    #[serde(default)]
    pub reduction: pulserec_sft::Reduction,
}

impl EvalStage {
    /// The list sizes of the SLM rows.
    pub fn slm_sizes(&self) -> &[usize] {
        self.slm_candidates.as_deref().unwrap_or(&self.candidates)
    }
}

impl PipelineConfig {
    /// A small run that finishes in about 15 minutes on two CPU cores: Games when
    /// `../shared/data` is present (else ML-100K), 1,000 users, 32 rationale users, a
    /// one-level Tree-of-Thought, one SFT epoch.
    pub fn quickstart() -> Self {
        Self {
            run_dir: "runs/quickstart".into(),
            seed: 42,
            device: "flex".into(),
            precision: Precision::F32,
            data: DataConfig {
                path: "../shared/data/amazon-games-2018".into(),
                fallback: Some("assets/ml-100k".into()),
                max_users: Some(1000),
                title_feature: None,
                candidate_seed: 2024,
            },
            assets: AssetsConfig {
                slm: "assets/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
                encoder: "assets/all-minilm-l6-v2".into(),
            },
            sasrec: SasRecStage {
                epochs: 20,
                batch_size: 128,
                protocol: SasRecProtocol::Sampled(100),
                similar_users: 5,
            },
            rationales: RationalesStage {
                users: 32,
                batch_size: 8,
                max_new_tokens: 80,
                temperature: 0.7,
            },
            thought_space: ThoughtSpaceStage {
                epochs: 2,
                batch_size: 8,
                temperature: 1.0,
                negatives: 7,
                learning_rate: 2e-5,
                held_out: 8,
                max_len: 128,
            },
            tot: TotStage {
                depth: 1,
                branching: 2,
                beam_width: 1,
                max_new_tokens: 40,
                temperature: 1.0,
                batch_size: 8,
                scorers: vec![ScorerKind::Consistency],
            },
            sft: SftStage {
                variants: vec![Variant::NoRationale, Variant::Pulse],
                epochs: 1,
                effective_batch: 8,
                micro_batch: 2,
                lora_rank: 8,
                lora_top_layers: None,
                learning_rate: 1e-3,
                prompt: PromptKind::Chat,
                history: None,
                every_position: false,
                objective: pulserec_sft::Objective::Generative,
                frozen_bottom: pulserec_sft::FrozenBottom::Autodiff,
                positions: 1,
                train_candidates: None,
                show_popularity: false,
                order_by_popularity: false,
                popularity_prior: false,
                adapters_from: None,
            },
            eval: EvalStage {
                users: 50,
                candidates: vec![5, 20],
                selector: SelectorKind::Likelihood,
                split: EvalSplit::Test,
                baselines: BaselineKind::all(),
                slm_candidates: None,
                reduction: pulserec_sft::Reduction::Mean,
            },
            generator: GeneratorConfig::default(),
        }
    }

    /// The paper's settings (PAPER.md): ToT 3/3/2, Thought Space 53 epochs at batch 16 with 10
    /// negatives, all four SFT variants, generative selection. Sized for a GPU; the user counts
    /// are this project's choice (see docs/reproducing.md).
    pub fn paper() -> Self {
        let q = Self::quickstart();
        Self {
            run_dir: "runs/paper".into(),
            data: DataConfig {
                max_users: None,
                title_feature: None,
                ..q.data
            },
            sasrec: SasRecStage {
                epochs: 200,
                ..q.sasrec
            },
            rationales: RationalesStage {
                users: 2000,
                batch_size: 32,
                max_new_tokens: 150,
                temperature: 0.7,
            },
            thought_space: ThoughtSpaceStage {
                epochs: 53,
                batch_size: 16,
                temperature: 1.0,
                negatives: 10,
                learning_rate: 2e-5,
                held_out: 256,
                max_len: 128,
            },
            tot: TotStage {
                depth: 3,
                branching: 3,
                beam_width: 2,
                max_new_tokens: 61,
                temperature: 1.0,
                batch_size: 32,
                scorers: vec![ScorerKind::Consistency, ScorerKind::Likelihood],
            },
            sft: SftStage {
                variants: Variant::PAPER.to_vec(),
                epochs: 7,
                effective_batch: 64,
                micro_batch: 8,
                lora_rank: 8,
                lora_top_layers: None,
                learning_rate: 2e-4,
                prompt: PromptKind::Chat,
                history: None,
                every_position: false,
                objective: pulserec_sft::Objective::Generative,
                frozen_bottom: pulserec_sft::FrozenBottom::Autodiff,
                positions: 1,
                train_candidates: None,
                show_popularity: false,
                order_by_popularity: false,
                popularity_prior: false,
                adapters_from: None,
            },
            eval: EvalStage {
                users: 1000,
                candidates: vec![5, 20],
                selector: SelectorKind::Generative,
                split: EvalSplit::Test,
                baselines: BaselineKind::all(),
                slm_candidates: None,
                reduction: pulserec_sft::Reduction::Mean,
            },
            ..q
        }
    }

    /// A preset by name (`quickstart` or `paper`).
    pub fn preset(name: &str) -> Result<Self, ConfigError> {
        match name {
            "quickstart" => Ok(Self::quickstart()),
            "paper" => Ok(Self::paper()),
            other => Err(invalid("preset", other, "`quickstart` or `paper`")),
        }
    }

    /// Parses TOML text (unknown keys refused) and validates it.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, "<text>")
    }

    /// Reads, parses and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let config = Self::from_file_unvalidated(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file without validating it, for callers that change fields
    /// first (the CLI's `--seed`, `--run-dir`, `--adapters-from`): call
    /// [`PipelineConfig::validate`] after the changes.
    pub fn from_file_unvalidated(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            origin: path.display().to_string(),
            message: e.to_string(),
        })
    }

    fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The config as TOML (what is written to the run directory).
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        toml::to_string_pretty(self).map_err(|e| ConfigError::Parse {
            origin: "<serialise>".into(),
            message: e.to_string(),
        })
    }

    /// The data path in use: `data.path`, or `data.fallback` when `data.path` is missing.
    pub fn data_path(&self) -> &Path {
        match &self.data.fallback {
            Some(f) if !self.data.path.exists() => f,
            _ => &self.data.path,
        }
    }

    /// Checks every value; the first problem is returned with its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Err(e) = self.device.parse::<crate::device::DeviceSpec>() {
            return Err(invalid("device", &self.device, &e.to_string()));
        }
        self.generator.validate()?;
        if let Some(v) = self.generator.variant_models.keys().next() {
            if self.eval.selector != SelectorKind::Generative {
                return Err(invalid(
                    &format!("generator.variant_models.{}", v.name()),
                    &self.generator.variant_models,
                    "served variants only with eval.selector = \"generative\" (the likelihood \
                     selector runs locally)",
                ));
            }
            if let Some(v) = self
                .generator
                .variant_models
                .keys()
                .find(|v| !self.sft.variants.contains(v))
            {
                return Err(invalid(
                    &format!("generator.variant_models.{}", v.name()),
                    v.name(),
                    "a variant listed in sft.variants",
                ));
            }
        }
        self.stage_crates_accept()?;
        let positive = [
            ("sasrec.epochs", self.sasrec.epochs),
            ("sasrec.similar_users", self.sasrec.similar_users),
            ("rationales.users", self.rationales.users),
            ("thought_space.epochs", self.thought_space.epochs),
            ("thought_space.held_out", self.thought_space.held_out),
            ("thought_space.max_len", self.thought_space.max_len),
            ("eval.users", self.eval.users),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, value, "an integer >= 1"));
            }
        }
        if self.data.max_users == Some(0) {
            return Err(invalid("data.max_users", 0, "an integer >= 1, or no key"));
        }
        if self.data.path.as_os_str().is_empty() {
            return Err(invalid("data.path", "", "a file or folder"));
        }
        let ts = &self.thought_space;
        // The crate takes all others when asked for more; a config asking for more is a typo.
        if ts.negatives >= ts.batch_size {
            return Err(invalid(
                "thought_space.negatives",
                ts.negatives,
                &format!(
                    "1 ..= thought_space.batch_size - 1 = {}",
                    ts.batch_size.saturating_sub(1)
                ),
            ));
        }
        if ts.held_out + ts.batch_size > self.rationales.users {
            return Err(invalid(
                "thought_space.held_out",
                ts.held_out,
                &format!(
                    "at most rationales.users - thought_space.batch_size = {} (training needs one full batch)",
                    self.rationales.users.saturating_sub(ts.batch_size)
                ),
            ));
        }
        if self.tot.scorers.is_empty() {
            return Err(invalid(
                "tot.scorers",
                &self.tot.scorers,
                "one or more of \"consistency\", \"likelihood\"",
            ));
        }
        if has_duplicates(&self.tot.scorers) {
            return Err(invalid(
                "tot.scorers",
                &self.tot.scorers,
                "each scorer at most once",
            ));
        }
        if has_duplicates(&self.sft.variants) {
            return Err(invalid(
                "sft.variants",
                &self.sft.variants,
                "each variant at most once",
            ));
        }
        for v in &self.sft.variants {
            if let Some(s) = ScorerKind::for_variant(*v)
                && !self.tot.scorers.contains(&s)
            {
                return Err(invalid(
                    "sft.variants",
                    v.name(),
                    &format!(
                        "a variant whose Tree-of-Thought scorer `{}` is listed in tot.scorers",
                        s.name()
                    ),
                ));
            }
        }
        if let Some(from) = &self.sft.adapters_from {
            if from == &self.run_dir {
                return Err(invalid(
                    "sft.adapters_from",
                    from,
                    "another run directory than run_dir",
                ));
            }
            for v in &self.sft.variants {
                let record = from.join("sft").join(v.name()).join("train.json");
                if !record.is_file() {
                    return Err(invalid(
                        "sft.adapters_from",
                        from,
                        &format!(
                            "a run directory whose SFT stage trained variant `{}` ({} is missing)",
                            v.name(),
                            record.display()
                        ),
                    ));
                }
            }
        }
        if self.sft.history == Some(0) {
            return Err(invalid("sft.history", 0, "an integer >= 1, or no key"));
        }
        if self.sft.every_position && self.sft.prompt != PromptKind::Sequence {
            return Err(invalid(
                "sft.every_position",
                true,
                "false unless sft.prompt = \"sequence\"",
            ));
        }
        if self.sft.objective == pulserec_sft::Objective::Ranking && self.sft.every_position {
            return Err(invalid(
                "sft.objective",
                "ranking",
                "\"generative\" with sft.every_position (a packed row has no candidates)",
            ));
        }
        if self.sft.positions == 0 {
            return Err(invalid("sft.positions", 0, "an integer >= 1"));
        }
        if self.sft.positions > 1 && self.sft.every_position {
            return Err(invalid(
                "sft.positions",
                self.sft.positions,
                "1 with sft.every_position (a packed row already teaches every position)",
            ));
        }
        let letters = pulserec_sft::CHOICE_LETTERS.len();
        if let Some(n) = self.sft.train_candidates
            && (n < 2 || (self.sft.prompt == PromptKind::Choice && n > letters))
        {
            return Err(invalid(
                "sft.train_candidates",
                n,
                &format!("an integer from 2 to {letters}"),
            ));
        }
        if self.sft.prompt == PromptKind::Choice
            && let Some(&n) = self.eval.slm_sizes().iter().find(|&&n| n > letters)
        {
            return Err(invalid(
                "eval.slm_candidates",
                n,
                &format!("at most {letters} with sft.prompt = \"choice\" (one letter each)"),
            ));
        }
        if self.sft.show_popularity && self.sft.prompt != PromptKind::Choice {
            return Err(invalid(
                "sft.show_popularity",
                true,
                "false unless sft.prompt = \"choice\"",
            ));
        }
        if self.sft.popularity_prior
            && (self.sft.objective != pulserec_sft::Objective::Ranking
                || self.eval.selector != SelectorKind::Likelihood)
        {
            return Err(invalid(
                "sft.popularity_prior",
                true,
                "false unless sft.objective = \"ranking\" and eval.selector = \"likelihood\" (the prior is added to likelihood scores)",
            ));
        }
        if self.sft.order_by_popularity && self.sft.prompt == PromptKind::Sequence {
            return Err(invalid(
                "sft.order_by_popularity",
                true,
                "false with sft.prompt = \"sequence\" (it lists no candidates)",
            ));
        }
        if self.eval.candidates.is_empty() || self.eval.candidates.iter().any(|&c| c < 2) {
            return Err(invalid(
                "eval.candidates",
                &self.eval.candidates,
                "one or more list sizes >= 2 (e.g. [5, 20])",
            ));
        }
        if let Some(slm) = &self.eval.slm_candidates
            && (slm.is_empty()
                || has_duplicates(slm)
                || slm.iter().any(|n| !self.eval.candidates.contains(n)))
        {
            return Err(invalid(
                "eval.slm_candidates",
                slm,
                &format!(
                    "distinct sizes among eval.candidates = {:?}, or no key",
                    self.eval.candidates
                ),
            ));
        }
        if has_duplicates(&self.eval.baselines) {
            return Err(invalid(
                "eval.baselines",
                &self.eval.baselines,
                "each baseline at most once",
            ));
        }
        if has_duplicates(&self.eval.candidates) {
            return Err(invalid(
                "eval.candidates",
                &self.eval.candidates,
                "each size at most once",
            ));
        }
        Ok(())
    }
}

impl PipelineConfig {
    /// Each stage crate's own checks of the config its section builds, under the section's
    /// keys (the crates' checks are not repeated here).
    fn stage_crates_accept(&self) -> Result<(), ConfigError> {
        use pulserec_seqrec::SeqRecError;
        use pulserec_sft::SftError;
        use pulserec_thoughtspace::ThoughtSpaceError;
        use pulserec_tot::TotError;
        let seed = self.seed;
        check(
            "sasrec",
            &self.sasrec,
            self.sasrec.training(seed).validate(),
            |e| match e {
                SeqRecError::InvalidConfig { field, reason } => (field, reason),
                e => ("", e.to_string()),
            },
        )?;
        let tot_field = |e: TotError| match e {
            TotError::Config { field, message } => (field, message),
            e => ("", e.to_string()),
        };
        let rationales = self.rationales.hindsight(seed).validate();
        check("rationales", &self.rationales, rationales, tot_field)?;
        check(
            "tot",
            &self.tot,
            self.tot.search(seed).validate(),
            tot_field,
        )?;
        let ts = self.thought_space.training(seed).validate();
        check("thought_space", &self.thought_space, ts, |e| match e {
            ThoughtSpaceError::Setting { field, message } => (field, message),
            e => ("", e.to_string()),
        })?;
        if self.sft.lora_top_layers == Some(0) {
            return Err(invalid(
                "sft.lora_top_layers",
                0,
                "an integer >= 1, or no key",
            ));
        }
        // The model's depth is known at load; any depth >= lora_top_layers checks the same.
        let sft = self
            .sft
            .training(seed, self.sft.lora_top_layers.unwrap_or(1));
        check("sft", &self.sft, sft.validate(), |e| match e {
            SftError::Config { field, message } => (field, message),
            e => ("", e.to_string()),
        })?;
        // Of the adapter's settings only the rank (and the layers, checked above) come from
        // the section.
        check("sft", &self.sft, sft.lora.validate(), |e| {
            ("lora.rank", e.to_string())
        })
    }
}

/// `result` of a stage crate's check, its error split into the crate's field name and message
/// by `split`, as a [`ConfigError::Refused`] under the section's key (the field renamed as the
/// section names it) with the section's value.
fn check<E>(
    section: &str,
    values: &impl Serialize,
    result: Result<(), E>,
    split: impl FnOnce(E) -> (&'static str, String),
) -> Result<(), ConfigError> {
    let (field, message) = match result {
        Ok(()) => return Ok(()),
        Err(e) => split(e),
    };
    let name = match field {
        "sampling.temperature" | "loss.temperature" => "temperature",
        "sampling.max_new_tokens" => "max_new_tokens",
        "loss.negatives" => "negatives",
        "lora.rank" => "lora_rank",
        other => other,
    };
    let value = serde_json::to_value(values)
        .ok()
        .and_then(|v| v.get(name).cloned())
        .map_or_else(|| "-".to_string(), |v| v.to_string());
    let key = match name {
        "" => section.to_string(),
        name => format!("{section}.{name}"),
    };
    Err(ConfigError::Refused {
        key,
        value,
        message,
    })
}

fn has_duplicates<T: PartialEq>(v: &[T]) -> bool {
    v.iter().enumerate().any(|(i, a)| v[..i].contains(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { key, .. } | ConfigError::Refused { key, .. } => key,
            other => panic!("expected an invalid value, got {other}"),
        }
    }

    #[test]
    fn presets_validate_and_round_trip_through_toml() {
        for c in [PipelineConfig::quickstart(), PipelineConfig::paper()] {
            c.validate().unwrap();
            let text = c.to_toml().unwrap();
            assert_eq!(PipelineConfig::from_toml(&text).unwrap(), c);
        }
    }

    /// `precision` is written only when it is not the default, so the settings and resolved
    /// files of f32 runs made before the key existed stay what they were.
    #[test]
    fn precision_defaults_to_f32_and_is_written_only_when_bf16() {
        let c = PipelineConfig::quickstart();
        assert_eq!(c.precision, Precision::F32);
        assert!(!c.to_toml().unwrap().contains("precision"));
        let text = format!("precision = \"bf16\"\n{}", c.to_toml().unwrap());
        let bf16 = PipelineConfig::from_toml(&text).unwrap();
        assert_eq!(bf16.precision, Precision::Bf16);
        assert_eq!(bf16.precision.weight_mode(), pulserec_slm::WeightMode::Bf16);
        assert!(bf16.to_toml().unwrap().starts_with("run_dir"));
        let text = format!("precision = \"int8\"\n{}", c.to_toml().unwrap());
        let int8 = PipelineConfig::from_toml(&text).unwrap();
        assert_eq!(int8.precision.weight_mode(), pulserec_slm::WeightMode::Int8);
        assert_eq!(
            PipelineConfig::from_toml(&int8.to_toml().unwrap()).unwrap(),
            int8
        );
        assert!(bf16.to_toml().unwrap().contains("precision = \"bf16\""));
        let bad = format!("precision = \"f16\"\n{}", c.to_toml().unwrap());
        let msg = PipelineConfig::from_toml(&bad).unwrap_err().to_string();
        assert!(msg.contains("precision"), "{msg}");
    }

    #[test]
    fn the_committed_quickstart_file_is_the_preset() {
        let text = include_str!("../configs/quickstart.toml");
        assert_eq!(
            PipelineConfig::from_toml(text).unwrap(),
            PipelineConfig::quickstart()
        );
    }

    #[test]
    fn the_experiment_files_parse_and_cross_domain_needs_its_source_run() {
        for text in [
            include_str!("../configs/experiments/games.toml"),
            include_str!("../configs/experiments/ml100k.toml"),
        ] {
            let c = PipelineConfig::from_toml(text).unwrap();
            assert_eq!(c.sft.variants, Variant::PAPER.to_vec());
            assert_eq!(c.sft.adapters_from, None);
        }
        // The source runs are not in the checkout: refused before any work, naming the key and
        // the missing file.
        let cross = include_str!("../configs/experiments/ml100k-to-games.toml")
            .replace("runs/exp/ml100k-seed1", "/nonexistent/run");
        let msg = PipelineConfig::from_toml(&cross).unwrap_err().to_string();
        assert!(
            msg.contains("sft.adapters_from") && msg.contains("/nonexistent/run/sft/"),
            "{msg}"
        );
        let tmp = tempfile::tempdir().unwrap();
        for v in Variant::PAPER {
            let dir = tmp.path().join("sft").join(v.name());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("train.json"), "{}").unwrap();
        }
        let cross = include_str!("../configs/experiments/games-to-ml100k.toml")
            .replace("runs/exp/games-seed1", &tmp.path().display().to_string());
        let c = PipelineConfig::from_toml(&cross).unwrap();
        assert_eq!(c.sft.adapters_from.as_deref(), Some(tmp.path()));
        let mut same = c.clone();
        same.run_dir = tmp.path().to_path_buf();
        assert_eq!(key_of(same.validate().unwrap_err()), "sft.adapters_from");
    }

    #[test]
    fn out_of_range_values_name_key_value_and_expectation() {
        let mut c = PipelineConfig::quickstart();
        c.tot.depth = 0;
        let e = c.validate().unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("`tot.depth` = 0") && msg.contains("at least 1"),
            "{msg}"
        );

        // The stage crates' own checks, under the section's keys and values.
        for (change, key, value) in [
            (
                (|c: &mut PipelineConfig| c.tot.temperature = -1.0) as fn(&mut PipelineConfig),
                "tot.temperature",
                "-1.0",
            ),
            (|c| c.tot.branching = 0, "tot.branching", "0"),
            (
                |c| c.rationales.temperature = f32::NAN,
                "rationales.temperature",
                "null",
            ),
            (
                |c| c.rationales.batch_size = 0,
                "rationales.batch_size",
                "0",
            ),
            (
                |c| c.thought_space.temperature = 0.0,
                "thought_space.temperature",
                "0.0",
            ),
            (
                |c| c.thought_space.learning_rate = -1.0,
                "thought_space.learning_rate",
                "-1.0",
            ),
            (|c| c.sft.micro_batch = 0, "sft.effective_batch", "8"),
            (|c| c.sft.epochs = 0, "sft.epochs", "0"),
            (|c| c.sft.lora_rank = 0, "sft.lora_rank", "0"),
            (
                |c| c.sft.lora_top_layers = Some(0),
                "sft.lora_top_layers",
                "0",
            ),
            (|c| c.sasrec.batch_size = 0, "sasrec.batch_size", "0"),
        ] {
            let mut c = PipelineConfig::quickstart();
            change(&mut c);
            let e = c.validate().unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(&format!("`{key}` = {value}")), "{msg}");
            assert_eq!(key_of(e), key);
        }

        // The protocol is parsed once, with the file: the error names the key and the line.
        let text = PipelineConfig::quickstart()
            .to_toml()
            .unwrap()
            .replace("protocol = \"sampled100\"", "protocol = \"sampled\"");
        let msg = PipelineConfig::from_toml(&text).unwrap_err().to_string();
        assert!(
            msg.contains("protocol") && msg.contains("sampledN"),
            "{msg}"
        );
        assert_eq!(
            "sampled100".parse::<SasRecProtocol>().unwrap().negatives(),
            Some(100)
        );
        assert_eq!("full".parse::<SasRecProtocol>().unwrap().negatives(), None);

        let mut c = PipelineConfig::quickstart();
        c.device = "gpu".into();
        assert_eq!(key_of(c.validate().unwrap_err()), "device");

        let mut c = PipelineConfig::quickstart();
        c.sft.variants.push(Variant::TotLikelihood);
        assert_eq!(key_of(c.validate().unwrap_err()), "sft.variants");

        let mut c = PipelineConfig::quickstart();
        c.eval.candidates = vec![5, 1];
        assert_eq!(key_of(c.validate().unwrap_err()), "eval.candidates");

        let mut c = PipelineConfig::quickstart();
        c.thought_space.held_out = 30;
        assert_eq!(key_of(c.validate().unwrap_err()), "thought_space.held_out");

        let mut c = PipelineConfig::quickstart();
        c.sft.every_position = true;
        assert_eq!(key_of(c.validate().unwrap_err()), "sft.every_position");
        c.sft.prompt = PromptKind::Sequence;
        c.validate().unwrap();
        c.sft.history = Some(0);
        assert_eq!(key_of(c.validate().unwrap_err()), "sft.history");

        let mut c = PipelineConfig::quickstart();
        c.sft.show_popularity = true;
        assert_eq!(key_of(c.validate().unwrap_err()), "sft.show_popularity");
        c.sft.prompt = PromptKind::Choice;
        c.validate().unwrap();
        c.sft.positions = 0;
        assert_eq!(key_of(c.validate().unwrap_err()), "sft.positions");
        c.sft.positions = 3;
        c.sft.train_candidates = Some(27);
        assert_eq!(key_of(c.validate().unwrap_err()), "sft.train_candidates");
        c.sft.train_candidates = Some(5);
        c.eval.candidates = vec![5, 30];
        assert_eq!(key_of(c.validate().unwrap_err()), "eval.slm_candidates");
        c.eval.slm_candidates = Some(vec![5]);
        c.validate().unwrap();
        c.sft.order_by_popularity = true;
        c.validate().unwrap();
        c.sft.prompt = PromptKind::Sequence;
        c.sft.show_popularity = false;
        assert_eq!(key_of(c.validate().unwrap_err()), "sft.order_by_popularity");

        let mut c = PipelineConfig::quickstart();
        c.sft.popularity_prior = true;
        assert_eq!(key_of(c.validate().unwrap_err()), "sft.popularity_prior");
        c.sft.objective = pulserec_sft::Objective::Ranking;
        c.validate().unwrap();
        c.eval.selector = SelectorKind::Generative;
        assert_eq!(key_of(c.validate().unwrap_err()), "sft.popularity_prior");
    }

    #[test]
    fn a_file_can_be_changed_before_it_is_validated() {
        // The CLI's --adapters-from replaces a cross-domain file's source run before validating.
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("configs/experiments/rank-games-to-ml100k.toml");
        let mut c = PipelineConfig::from_file_unvalidated(&path).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        c.sft.adapters_from = Some(tmp.path().to_path_buf());
        for v in &c.sft.variants {
            let dir = tmp.path().join("sft").join(v.name());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("train.json"), "{}").unwrap();
        }
        c.validate().unwrap();
    }

    #[test]
    fn every_experiment_file_parses_and_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/experiments");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            // Cross-domain files need their source run on disk (checked above).
            if path.extension().is_none_or(|e| e != "toml") || text.contains("adapters_from") {
                continue;
            }
            let c = PipelineConfig::from_toml(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            c.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            n += 1;
        }
        assert!(n >= 10, "{n} experiment files");
    }

    #[test]
    fn the_choice_experiment_files_parse_with_their_keys() {
        for text in [
            include_str!("../configs/experiments/choice-games.toml"),
            include_str!("../configs/experiments/choice-ml100k.toml"),
            include_str!("../configs/experiments/choice-rank-games.toml"),
        ] {
            let c = PipelineConfig::from_toml(text).unwrap();
            assert_eq!(c.sft.prompt, PromptKind::Choice);
            assert!(c.sft.show_popularity);
            assert!(c.sft.positions > 1);
            assert_eq!(c.sft.train_candidates, Some(5));
        }
        // The keys a config leaves out keep their defaults and are not written back.
        let c = PipelineConfig::quickstart();
        assert_eq!((c.sft.positions, c.sft.train_candidates), (1, None));
        let text = toml::to_string(&c).unwrap();
        assert!(!text.contains("positions") && !text.contains("show_popularity"));
    }

    #[test]
    fn the_sequence_experiment_file_parses_with_its_prompt_keys() {
        let c = PipelineConfig::from_toml(include_str!("../configs/experiments/seq-games.toml"))
            .unwrap();
        assert_eq!(c.sft.prompt, PromptKind::Sequence);
        assert_eq!(c.sft.history, Some(10));
        assert!(c.sft.every_position);
        assert_eq!(c.eval.reduction, pulserec_sft::Reduction::Mean);
        let text = include_str!("../configs/experiments/seq-games.toml")
            .replace("[eval]\n", "[eval]\nreduction = \"sum\"\n");
        let c = PipelineConfig::from_toml(&text).unwrap();
        assert_eq!(c.eval.reduction, pulserec_sft::Reduction::Sum);
        let c =
            PipelineConfig::from_toml(include_str!("../configs/experiments/seq-games-250.toml"))
                .unwrap();
        assert_eq!((c.rationales.users, c.sft.history), (250, Some(10)));
        let c =
            PipelineConfig::from_toml(include_str!("../configs/experiments/seq-games-250-e3.toml"))
                .unwrap();
        assert_eq!((c.rationales.users, c.sft.epochs), (250, 3));
        let c = PipelineConfig::from_toml(include_str!("../configs/experiments/rank-games.toml"))
            .unwrap();
        assert_eq!(c.sft.objective, pulserec_sft::Objective::Ranking);
        assert_eq!((c.sft.positions, c.sft.train_candidates), (2, Some(5)));
        // Ranking needs candidates, which packed rows do not have.
        let text = include_str!("../configs/experiments/rank-games.toml")
            .replace("positions = 2 ", "every_position = true #");
        let err = PipelineConfig::from_toml(&text).unwrap_err();
        assert_eq!(key_of(err), "sft.objective");
    }

    #[test]
    fn a_remote_generator_needs_an_endpoint_and_a_model_and_never_holds_the_key() {
        let quickstart = include_str!("../configs/quickstart.toml");
        let with = |section: &str| PipelineConfig::from_toml(&format!("{quickstart}\n{section}"));
        // Local is the default and writes nothing back.
        let c = PipelineConfig::from_toml(quickstart).unwrap();
        assert!(c.generator.is_local() && c.generator.identity().is_none());
        assert!(!c.to_toml().unwrap().contains("[generator]"));
        let c = with(
            "[generator]\nkind = \"remote\"\nbase_url = \"http://10.0.0.5:8000\"\nmodel = \"smollm2\"\napi_key_env = \"VLLM_KEY\"\nconcurrency = 16\n",
        )
        .unwrap();
        assert_eq!(c.generator.kind, GeneratorKind::Remote);
        assert_eq!((c.generator.concurrency, c.generator.retries), (16, 3));
        let identity = c.generator.identity().unwrap().to_string();
        assert!(identity.contains("10.0.0.5:8000") && !identity.contains("VLLM_KEY"));
        assert_eq!(PipelineConfig::from_toml(&c.to_toml().unwrap()).unwrap(), c);
        for (section, key) in [
            ("kind = \"remote\"\nmodel = \"m\"", "generator.base_url"),
            (
                "kind = \"remote\"\nbase_url = \"10.0.0.5:8000\"\nmodel = \"m\"",
                "generator.base_url",
            ),
            (
                "kind = \"remote\"\nbase_url = \"http://h\"",
                "generator.model",
            ),
            (
                "kind = \"remote\"\nbase_url = \"http://h\"\nmodel = \"m\"\napi_key_env = \"KEY=sk-123\"",
                "generator.api_key_env",
            ),
            (
                "kind = \"remote\"\nbase_url = \"http://h\"\nmodel = \"m\"\nconcurrency = 0",
                "generator.concurrency",
            ),
            (
                "kind = \"remote\"\nbase_url = \"http://h\"\nmodel = \"m\"\ntimeout_s = 0.0",
                "generator.timeout_s",
            ),
        ] {
            let err = with(&format!("[generator]\n{section}\n")).unwrap_err();
            assert_eq!(key_of(err), key, "{section}");
        }
        // There is no key for the key itself.
        let err = with("[generator]\napi_key = \"sk-123\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }

    #[test]
    fn served_variants_need_a_remote_generator_the_generative_selector_and_the_variant() {
        let quickstart = include_str!("../configs/quickstart.toml");
        let remote =
            "[generator]\nkind = \"remote\"\nbase_url = \"http://h:8000\"\nmodel = \"base\"\n";
        let generative =
            quickstart.replace("selector = \"likelihood\"", "selector = \"generative\"");
        let served = "[generator.variant_models]\npulse = \"smollm2-pulse\"\n";
        let c = PipelineConfig::from_toml(&format!("{generative}\n{remote}{served}")).unwrap();
        assert_eq!(c.generator.served_model(None), Some("base"));
        assert_eq!(
            c.generator.served_model(Some(Variant::Pulse)),
            Some("smollm2-pulse")
        );
        assert_eq!(c.generator.served_model(Some(Variant::NoRationale)), None);
        assert_eq!(PipelineConfig::from_toml(&c.to_toml().unwrap()).unwrap(), c);
        let key = "generator.variant_models.pulse";
        for text in [
            // The likelihood selector runs locally.
            format!("{quickstart}\n{remote}{served}"),
            // Not a variant of this run.
            format!("{generative}\n{remote}[generator.variant_models]\nwith-reasons = \"m\"\n"),
            // A local generator serves nothing.
            format!("{generative}\n[generator]\n[generator.variant_models]\npulse = \"m\"\n"),
            format!("{generative}\n{remote}[generator.variant_models]\npulse = \" \"\n"),
        ] {
            let err = PipelineConfig::from_toml(&text).unwrap_err();
            let got = key_of(err);
            assert!(
                got == key || got == "generator.variant_models.with-reasons",
                "{got}"
            );
        }
        let err = PipelineConfig::from_toml(&format!(
            "{generative}\n{remote}[generator.variant_models]\npulsar = \"m\"\n"
        ))
        .unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_with_the_key() {
        let quickstart = include_str!("../configs/quickstart.toml");
        let text = quickstart.replace("[tot]\n", "[tot]\ndepht = 2\n");
        assert_ne!(text, quickstart);
        let msg = PipelineConfig::from_toml(&text).unwrap_err().to_string();
        assert!(msg.contains("depht"), "{msg}");

        let text = quickstart.replace("scorers = [\"consistency\"]", "scorers = [\"cosine\"]");
        assert_ne!(text, quickstart);
        let msg = PipelineConfig::from_toml(&text).unwrap_err().to_string();
        assert!(
            msg.contains("cosine") && msg.contains("consistency"),
            "{msg}"
        );
    }
}
