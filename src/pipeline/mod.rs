//! The end-to-end PULSE pipeline: stages 0-4 from one [`PipelineConfig`], each cached in the run
//! directory so a rerun resumes.
//!
//! | stage | folder | output |
//! |---|---|---|
//! | `prepare` | `prepare/` | the data slice with its fixed candidate sets (Parquet), `users.json` (training and evaluation users) |
//! | `sasrec` | `sasrec/` | checkpoint, `metrics.json` (its own protocol and HR@1 on the SLM's candidates), `similar_users.tsv`, `loss.svg` |
//! | `rationales` | `rationales/` | hindsight rationale store |
//! | `thought-space` | `thought_space/` | trained space (`space/`), `metrics.json` (retrieval before/after), `map.svg`, `loss.svg` |
//! | `tot` | `tot/<scorer>/` | Tree-of-Thought rationale store per scorer |
//! | `sft` | `sft/<variant>/` | LoRA adapter checkpoint, `train.json` (data counts, training report), `loss.svg` |
//! | `eval` | `eval/<split>/` | per row (baselines, then SFT variants): `<row>.jsonl` (one prediction per user and list size, data-file ids) and `<row>.json` (HR@1, NDCG@k per list size) |
//!
//! Each stage runs through the stage traits where one exists (`TextGenerator`,
//! `ThoughtScorer`, `SequentialRecommender`, `CandidateSelector`), so another implementation can
//! stand in. A stage
//! folder holds `settings.json` (written first) and `done.json` (written last, atomically); a
//! rerun skips finished stages, and the resumable stores (rationales, Tree-of-Thought) continue
//! with the users that are missing. The run directory also gets the resolved `config.toml` and
//! `report.md`.

mod eval;
mod marker;
mod prepare;
mod rationales;
mod report;
mod sasrec;
mod sft;
mod thought_space;
mod verify;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use indicatif::ProgressBar;
use pulserec_core::UserId;
use pulserec_sft::Variant;
use pulserec_slm::LoadOptions;
pub use pulserec_tot::Shard;
use serde_json::{Value, json};

use crate::config::{
    BaselineKind, ConfigError, PipelineConfig, Precision, ScorerKind, SelectorKind,
};
use crate::device::DeviceSpec;
use crate::results::Results;

pub use marker::DoneMarker;
pub use rationales::chat_format;
pub use verify::{StageCheck, StageState, StoreCheck, Verification};

use marker::StageDir;

/// A stage of the pipeline, in run order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stage {
    /// Load, slice, split, draw candidate sets, pick users.
    Prepare,
    /// Train and evaluate SASRec; similar users.
    SasRec,
    /// Stage 1: hindsight rationales.
    Rationales,
    /// Stage 2: train the Thought Space.
    ThoughtSpace,
    /// Stage 3: Tree-of-Thought refinement.
    Tot,
    /// Stage 4: LoRA SFT of the SLM.
    Sft,
    /// Evaluation of the baselines and the fine-tuned SLM recommenders.
    Eval,
}

impl Stage {
    /// Every stage in run order.
    pub const ALL: [Stage; 7] = [
        Stage::Prepare,
        Stage::SasRec,
        Stage::Rationales,
        Stage::ThoughtSpace,
        Stage::Tot,
        Stage::Sft,
        Stage::Eval,
    ];

    /// The CLI name (`thought-space`).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Prepare => "prepare",
            Stage::SasRec => "sasrec",
            Stage::Rationales => "rationales",
            Stage::ThoughtSpace => "thought-space",
            Stage::Tot => "tot",
            Stage::Sft => "sft",
            Stage::Eval => "eval",
        }
    }

    /// The folder in the run directory.
    pub fn folder(self) -> &'static str {
        match self {
            Stage::ThoughtSpace => "thought_space",
            other => other.name(),
        }
    }
}

/// `shards 1/4, 3/4`: the shards the `missing` users belong to.
fn missing_shards(missing: &[UserId], count: u32) -> String {
    let shards: std::collections::BTreeSet<u32> =
        missing.iter().map(|u| u.0 % count.max(1)).collect();
    let names: Vec<String> = shards.iter().map(|i| format!("{i}/{count}")).collect();
    format!(
        "shard{} {}",
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    )
}

/// Why the pipeline stopped.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The configuration was refused (before any work).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A stage failed; `source` is the stage crate's own error.
    #[error("stage `{stage}` failed: {source}")]
    Stage {
        /// The stage.
        stage: &'static str,
        /// Its error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A stage folder was started or finished with other settings.
    #[error(
        "stage `{stage}` in {dir} was run with other settings ({} differ): use another run_dir, or delete {dir} to redo it",
        keys.join(", ")
    )]
    SettingsChanged {
        /// The stage.
        stage: &'static str,
        /// Its folder.
        dir: PathBuf,
        /// Dotted keys whose values differ.
        keys: Vec<String>,
    },
    /// A stage cannot run yet.
    #[error("stage `{stage}` is not available: {reason}")]
    NotAvailable {
        /// The stage.
        stage: &'static str,
        /// Why.
        reason: String,
    },
    /// A generation stage written in shards lacks the users of some shards: a sharded run
    /// finished its own part, or an unsharded run found shards still missing (it does not
    /// generate them itself).
    #[error(
        "stage `{stage}`: {} lacks {} users ({}; first: {}): run `pulserec {stage} --shard i/{shards}` for them, or copy their parts into that folder",
        store.display(),
        missing.len(),
        missing_shards(missing, *shards),
        missing.iter().take(10).map(|u| u.0.to_string()).collect::<Vec<_>>().join(", ")
    )]
    Incomplete {
        /// The stage.
        stage: &'static str,
        /// The store folder.
        store: PathBuf,
        /// The shard count it is written in.
        shards: u32,
        /// The users not stored yet, in user order.
        missing: Vec<UserId>,
    },
    /// The data does not allow what the config asks for.
    #[error("stage `{stage}`: {message}")]
    Data {
        /// The stage.
        stage: &'static str,
        /// What is missing.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A JSON file could not be read or written.
    #[error("{path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// serde_json's message.
        message: String,
    },
}

impl PipelineError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn json(path: &Path, e: impl std::fmt::Display) -> Self {
        Self::Json {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }

    pub(crate) fn stage(
        stage: Stage,
    ) -> impl FnOnce(Box<dyn std::error::Error + Send + Sync + 'static>) -> Self {
        move |source| Self::Stage {
            stage: stage.name(),
            source,
        }
    }
}

/// Result with [`PipelineError`].
pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// Maps any stage crate's error into [`PipelineError::Stage`].
pub(crate) trait StageResult<T> {
    /// Tags the error with the stage.
    fn at(self, stage: Stage) -> Result<T>;
}

impl<T, E: std::error::Error + Send + Sync + 'static> StageResult<T> for std::result::Result<T, E> {
    fn at(self, stage: Stage) -> Result<T> {
        self.map_err(|e| PipelineError::stage(stage)(Box::new(e)))
    }
}

/// What happened to a stage in one invocation.
#[derive(Clone, Debug, PartialEq)]
pub enum StageStatus {
    /// It had finished before; nothing was done.
    Skipped(DoneMarker),
    /// It ran (from scratch or resuming a partial store) and finished.
    Ran(DoneMarker),
}

impl StageStatus {
    /// The stage's marker.
    pub fn marker(&self) -> &DoneMarker {
        match self {
            StageStatus::Skipped(m) | StageStatus::Ran(m) => m,
        }
    }
}

/// The outcome of [`Pipeline::run_until`].
#[derive(Clone, Debug)]
pub struct RunSummary {
    /// Every stage that was asked for, in order.
    pub stages: Vec<(Stage, StageStatus)>,
    /// HR@1 with intervals of every row evaluated so far.
    pub results: Results,
    /// The Markdown report written to the run directory.
    pub report: PathBuf,
}

/// The PULSE pipeline over one run directory.
pub struct Pipeline {
    config: PipelineConfig,
    device: Device,
    device_name: String,
    progress: bool,
    shard: Shard,
}

impl Pipeline {
    /// Validates `config` and builds its device; nothing is written yet.
    pub fn new(config: PipelineConfig) -> Result<Self> {
        config.validate()?;
        let spec: DeviceSpec = config
            .device
            .parse()
            .map_err(|e: crate::device::DeviceError| ConfigError::Invalid {
                key: "device".into(),
                value: format!("{:?}", config.device),
                expected: e.to_string(),
            })?;
        let device = spec.device().map_err(|e| ConfigError::Invalid {
            key: "device".into(),
            value: format!("{:?}", config.device),
            expected: e.to_string(),
        })?;
        Ok(Self {
            device_name: spec.to_string(),
            config,
            device,
            progress: false,
            shard: Shard::ALL,
        })
    }

    /// Shows progress bars on stderr (the CLI turns this on; off by default).
    pub fn with_progress(mut self, progress: bool) -> Self {
        self.progress = progress;
        self
    }

    /// Runs the generation stages (hindsight rationales, Tree-of-Thought) for the users of
    /// `shard` only (user id mod n = i), writing their own store parts: n machines sharing a run
    /// directory (or copying their parts back into one) each run one shard. A stage is done when
    /// its stores hold every user; until then the run stops there with
    /// [`PipelineError::Incomplete`], and an unsharded run refuses to continue it (naming the
    /// missing users and their shards) instead of generating them itself.
    pub fn with_shard(mut self, shard: Shard) -> Self {
        self.shard = shard;
        self
    }

    /// The shard of the generation stages ([`Shard::ALL`] unless [`Pipeline::with_shard`]).
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.config.run_dir
    }

    /// The folder of `stage` (`eval/<split>` for the evaluation, one folder per split).
    pub fn stage_dir(&self, stage: Stage) -> PathBuf {
        let dir = self.config.run_dir.join(stage.folder());
        match stage {
            Stage::Eval => dir.join(self.config.eval.split.name()),
            _ => dir,
        }
    }

    /// The results tables from the predictions the run directory holds now (nothing is run).
    pub fn results(&self) -> Result<Results> {
        report::pooled(std::slice::from_ref(self))
    }

    /// The results tables of this run as Markdown: rows with intervals, paired differences,
    /// HR@1 by the positive's position.
    pub fn results_markdown(&self, results: &Results) -> String {
        report::tables_markdown(self, results)
    }

    /// What each stage of the run directory has finished, and which users the generation
    /// stages' stores still lack, by shard (reads only; `pulserec verify`).
    pub fn verify(&self) -> Result<Verification> {
        verify::verify(self)
    }

    /// Runs every stage.
    pub fn run(&self) -> Result<RunSummary> {
        self.run_until(Stage::Eval)
    }

    /// Runs the stages up to and including `last`, skipping finished ones, then writes the
    /// report.
    pub fn run_until(&self, last: Stage) -> Result<RunSummary> {
        let run_dir = &self.config.run_dir;
        // A stage run before with other settings is refused before anything is written, so the
        // resolved config.toml always describes the stages in the run directory.
        for stage in Stage::ALL.into_iter().filter(|s| *s <= last) {
            self.stage_dir_with_settings(stage).done()?;
        }
        std::fs::create_dir_all(run_dir).map_err(|e| PipelineError::io(run_dir, e))?;
        marker::write_atomic(
            &run_dir.join("config.toml"),
            self.config.to_toml()?.as_bytes(),
        )?;
        let mut stages = Vec::new();
        for stage in Stage::ALL.into_iter().filter(|s| *s <= last) {
            let status = match self.run_stage(stage) {
                Ok(status) => status,
                Err(e) => {
                    // The report still shows everything finished so far.
                    if let Err(r) = report::write(self) {
                        tracing::warn!(error = %r, "could not write the report");
                    }
                    return Err(e);
                }
            };
            match &status {
                StageStatus::Skipped(_) => {
                    tracing::info!(stage = stage.name(), "already done, skipped")
                }
                StageStatus::Ran(m) => {
                    tracing::info!(stage = stage.name(), seconds = m.seconds, "stage done")
                }
            }
            stages.push((stage, status));
        }
        let (results, report) = report::write(self)?;
        Ok(RunSummary {
            stages,
            results,
            report,
        })
    }

    /// Runs one stage unless it is done; its inputs must be done already.
    pub fn run_stage(&self, stage: Stage) -> Result<StageStatus> {
        let dir = self.stage_dir_with_settings(stage);
        if let Some(done) = dir.done()? {
            return Ok(StageStatus::Skipped(done));
        }
        for upstream in Stage::ALL.into_iter().filter(|s| *s < stage) {
            if !self.stage_dir(upstream).join(marker::DONE_FILE).exists() {
                return Err(PipelineError::NotAvailable {
                    stage: stage.name(),
                    reason: format!("stage `{}` has not finished yet", upstream.name()),
                });
            }
        }
        dir.start()?;
        let started = Instant::now();
        let summary = match stage {
            _ if self.not_needed(stage).is_some() => {
                json!({"not_needed": self.not_needed(stage)})
            }
            Stage::Prepare => prepare::run(self, &dir.dir)?,
            Stage::SasRec => sasrec::run(self, &dir.dir)?,
            Stage::Rationales => rationales::run_hindsight(self, &dir.dir)?,
            Stage::ThoughtSpace => thought_space::run(self, &dir.dir)?,
            Stage::Tot => rationales::run_tot(self, &dir.dir)?,
            Stage::Sft => sft::run_sft(self, &dir.dir)?,
            Stage::Eval => eval::run(self, &dir.dir)?,
        };
        Ok(StageStatus::Ran(
            dir.finish(started.elapsed().as_secs_f64(), summary)?,
        ))
    }

    /// The settings that make a stage's output what it is (a change refuses to reuse it).
    fn stage_dir_with_settings(&self, stage: Stage) -> StageDir {
        let c = &self.config;
        let settings = match stage {
            Stage::Prepare => json!({
                "data": c.data, "data_in_use": c.data_path(), "training_users": c.rationales.users,
                "eval": {"users": c.eval.users, "candidates": c.eval.candidates},
                "sasrec_protocol": c.sasrec.protocol,
            }),
            Stage::SasRec => json!({"seed": c.seed, "sasrec": c.sasrec}),
            // The prompts' wording version: a change to it must not continue an older store.
            Stage::Rationales => json!({
                "seed": c.seed, "slm": c.assets.slm, "rationales": c.rationales,
                "prompt": pulserec_tot::PROMPT_VERSION,
            }),
            Stage::ThoughtSpace => json!({
                "seed": c.seed, "encoder": c.assets.encoder, "thought_space": c.thought_space,
            }),
            Stage::Tot => json!({
                "seed": c.seed, "slm": c.assets.slm, "tot": c.tot,
                "prompt": pulserec_tot::PROMPT_VERSION,
            }),
            Stage::Sft => json!({
                "seed": c.seed, "slm": c.assets.slm, "sft": c.sft,
                "prompt": pulserec_sft::PROMPT_VERSION,
            }),
            // The SFT keys (variants, prompt shape) and wording shape every SLM row, the base
            // SLM's too.
            Stage::Eval => json!({
                "seed": c.seed, "eval": c.eval, "sft": c.sft,
                "prompt": pulserec_sft::PROMPT_VERSION,
            }),
        };
        // A remote generator's endpoint and model make the generated text what it is too (the
        // local SLM's file is recorded already), and so do the served models of the generative
        // selector's rows.
        let generator = match stage {
            Stage::Rationales | Stage::Tot => c.generator.identity(),
            Stage::Eval if c.eval.selector == SelectorKind::Generative => {
                c.generator.identity().map(|mut g| {
                    g["variant_models"] = json!(c.generator.variant_models);
                    g
                })
            }
            _ => None,
        };
        let settings = match (generator, settings) {
            (Some(generator), Value::Object(mut map)) => {
                map.insert("generator".into(), generator);
                Value::Object(map)
            }
            (_, settings) => settings,
        };
        // bf16 and int8 products give other text and scores than f32: recorded where the local
        // SLM generates or scores, when they actually change numbers (a CPU with AMX, or VNNI
        // for int8; elsewhere the products are f32, and such a store is not continued there).
        // Absent in f32 runs, whose settings predate the key.
        let other = self.config.precision.changes_numbers();
        let settings = match (other, stage, settings) {
            (true, Stage::Rationales | Stage::Tot | Stage::Eval, Value::Object(mut map)) => {
                map.insert("precision".into(), json!(c.precision));
                Value::Object(map)
            }
            (_, _, settings) => settings,
        };
        let settings = match self.not_needed(stage) {
            Some(why) => json!({"not_needed": why}),
            None => settings,
        };
        StageDir {
            stage: stage.name(),
            dir: self.stage_dir(stage),
            settings,
        }
    }

    /// Why `stage` has nothing to do in this run, if it has not: the adapters come from another
    /// run (`sft.adapters_from`), or no configured variant reads its output (no rationale
    /// variant: no rationales; no Tree-of-Thought variant: no Thought Space and no search; no
    /// SASRec row and no search: no SASRec; no variant at all: no SFT, only the baselines are
    /// evaluated).
    pub(crate) fn not_needed(&self, stage: Stage) -> Option<String> {
        let sft = &self.config.sft;
        let uses = |f: fn(Variant) -> bool| sft.variants.iter().any(|&v| f(v));
        let generation = matches!(stage, Stage::Rationales | Stage::ThoughtSpace | Stage::Tot);
        match stage {
            _ if generation && sft.adapters_from.is_some() => Some(format!(
                "sft.adapters_from = {}: the adapters come from another run",
                sft.adapters_from
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
            )),
            Stage::Rationales if !uses(Variant::uses_rationale) => {
                Some("no variant in sft.variants uses a rationale".into())
            }
            Stage::ThoughtSpace | Stage::Tot if !uses(|v| ScorerKind::for_variant(v).is_some()) => {
                Some("no variant in sft.variants uses Tree-of-Thought rationales".into())
            }
            Stage::SasRec
                if !self.config.eval.baselines.contains(&BaselineKind::Sasrec)
                    && self.not_needed(Stage::Tot).is_some() =>
            {
                Some(
                    "neither the SASRec row nor Tree-of-Thought (its similar users) is configured"
                        .into(),
                )
            }
            Stage::Sft if sft.variants.is_empty() => {
                Some("sft.variants is empty: only the baselines are evaluated".into())
            }
            _ => None,
        }
    }

    /// A progress bar over `len` units (hidden unless progress is on).
    pub(crate) fn bar(&self, len: usize, what: &str) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        pulserec_train::progress_bar(len as u64, what)
    }

    pub(crate) fn device(&self) -> &Device {
        &self.device
    }

    /// How the local SLM is loaded: `precision`'s weight mode.
    pub(crate) fn slm_options(&self) -> LoadOptions {
        match self.config.precision {
            Precision::Bf16 if !pulserec_slm::amx::bf16_available() => tracing::warn!(
                "precision = \"bf16\": this CPU has no AMX or AVX512-BF16, the SLM multiplies in \
                 f32"
            ),
            Precision::Int8 if !pulserec_slm::int8_available() => tracing::warn!(
                "precision = \"int8\": this CPU has no AVX512-VNNI, decode steps run in f32"
            ),
            _ => {}
        }
        LoadOptions {
            weights: self.config.precision.weight_mode(),
            ..LoadOptions::default()
        }
    }

    pub(crate) fn device_name(&self) -> &str {
        &self.device_name
    }
}

/// The results of several runs (e.g. one per seed, same users) pooled into one set of tables, as
/// Markdown: each user's hits are averaged over the runs before the intervals.
pub fn summarize(runs: &[Pipeline]) -> Result<String> {
    let results = report::pooled(runs)?;
    Ok(match runs.first() {
        Some(p) => report::tables_markdown(p, &results),
        None => String::new(),
    })
}

/// A stage summary value for `done.json`.
pub(crate) fn summary(pairs: &[(&str, Value)]) -> Value {
    Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Precision;

    /// The settings the committed stores of the ablation were made with are what this code
    /// records for their configs, so a change to the config types never refuses (or silently
    /// reruns) a store that a later part of the experiment continues from.
    #[test]
    fn committed_stores_keep_their_settings() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (config, stages) in [
            (
                "rank-games-tot",
                &[Stage::SasRec, Stage::ThoughtSpace, Stage::Tot][..],
            ),
            ("rank-games-reasons", &[Stage::Rationales][..]),
        ] {
            let path = root.join(format!("configs/experiments/{config}.toml"));
            let run = Pipeline::new(PipelineConfig::from_file(&path).unwrap()).unwrap();
            for &stage in stages {
                let file = root.join(format!(
                    "docs/results/{config}-seed1/{}/settings.json",
                    stage.folder()
                ));
                let committed: Value =
                    serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
                assert_eq!(
                    run.stage_dir_with_settings(stage).settings,
                    committed,
                    "{}",
                    file.display()
                );
            }
        }
    }

    /// bf16 (where the CPU runs it: AMX or AVX512-BF16) is recorded in the settings of the stages where the
    /// local SLM generates or scores, not in the others; f32 settings carry no `precision` key
    /// (as before the key existed).
    #[test]
    fn bf16_is_part_of_the_generation_and_evaluation_settings_only() {
        let mut config = PipelineConfig::quickstart();
        let f32_run = Pipeline::new(config.clone()).unwrap();
        config.precision = Precision::Bf16;
        let bf16_run = Pipeline::new(config).unwrap();
        for stage in Stage::ALL {
            let f32_settings = f32_run.stage_dir_with_settings(stage).settings;
            let bf16_settings = bf16_run.stage_dir_with_settings(stage).settings;
            assert!(f32_settings.get("precision").is_none(), "{}", stage.name());
            let recorded = Precision::Bf16.changes_numbers()
                && matches!(stage, Stage::Rationales | Stage::Tot | Stage::Eval);
            assert_eq!(
                bf16_settings.get("precision").is_some(),
                recorded,
                "{}",
                stage.name()
            );
        }
    }
}
