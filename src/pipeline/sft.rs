//! Stage 4: LoRA SFT of the SLM, one adapter per variant.
//!
//! The stage works variant by variant and writes each variant's result last and atomically
//! (`sft/<variant>/train.json`), so a killed run redoes only the variant it was in. A variant's training is seeded from the run seed alone, so a redone variant ends
//! with the same adapter as an uninterrupted run.
//!
//! Every variant trains on the same training users with the same budget; the rationale variants
//! skip (and count) users whose stored rationale is empty.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pulserec_core::UserId;
use pulserec_sft::{
    DataConfig, EncodedExample, EncodedSet, ExampleBuilder, Objective, PROMPT_VERSION,
    PopularityPrior, PopularityUse, PromptStyle, SftConfig, SftTrainer, TrainReport, Variant,
    encode_all, encode_sequence,
};
use pulserec_slm::weights::ModelWeights;
use pulserec_slm::{ChatFormat, LlamaConfig, Slm, SlmTokenizer};
use pulserec_tot::RationaleStore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::marker::{LOSS_PLOT, read_json, write_atomic, write_json};
use super::{Pipeline, PipelineError, Result, Stage, StageResult, prepare, rationales};
use crate::config::{PromptKind, ScorerKind};

/// The file that marks a variant's training as finished.
const TRAIN_FILE: &str = "train.json";

/// What the SFT stage records per variant (`sft/<variant>/train.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct TrainRecord {
    variant: String,
    prompt_version: String,
    model: String,
    training_users: usize,
    examples: usize,
    skipped_no_rationale: usize,
    skipped_no_target: usize,
    skipped_too_long: usize,
    pub(super) config: SftConfig,
    report: TrainReport,
    /// The adapter, relative to the variant's folder.
    pub(super) adapter: PathBuf,
    /// Cross-domain: the run directory the adapter was trained in (and copied from).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    copied_from: Option<PathBuf>,
    /// `sft.popularity_prior`: the weight of `ln(1 + count)` fitted on the training examples,
    /// which evaluation adds to the adapter's scores too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) prior_weight: Option<f32>,
}

/// The base model: its parts, name and prompt style.
pub(super) struct Base {
    pub(super) config: LlamaConfig,
    pub(super) weights: ModelWeights,
    pub(super) tokenizer: SlmTokenizer,
    pub(super) name: String,
    pub(super) style: PromptStyle,
}

pub(super) fn base(p: &Pipeline, stage: Stage) -> Result<Base> {
    let path = &p.config().assets.slm;
    let (config, weights, tokenizer) = Slm::load_parts(path).at(stage)?;
    // Only the chat shape needs the model's template; the sequence shape is plain text.
    let style = match p.config().sft.prompt {
        PromptKind::Chat => {
            let template = tokenizer
                .chat_template()
                .ok_or_else(|| PipelineError::Data {
                    stage: stage.name(),
                    message: format!("{} has no chat template", path.display()),
                })?;
            PromptStyle::Chat(ChatFormat::detect(template).at(stage)?)
        }
        PromptKind::Sequence => PromptStyle::Sequence,
        PromptKind::Choice => PromptStyle::Choice,
    };
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    Ok(Base {
        config,
        weights,
        tokenizer,
        name,
        style,
    })
}

/// What the prompts show: the paper's shapes with the run seed, `sft.history` titles in
/// evaluation prompts when set (and in `choice` training prompts, which have the evaluation's
/// shape), `sft.positions` examples per user and `sft.train_candidates`.
pub(super) fn data_config(p: &Pipeline) -> DataConfig {
    let s = &p.config().sft;
    let mut config = DataConfig::paper(p.config().seed);
    if let Some(history) = s.history {
        config.test_history = history;
        if s.prompt == PromptKind::Choice || s.objective == Objective::Ranking {
            config.train_history = history;
        }
    }
    if let Some(n) = s.train_candidates {
        config.train_candidates = n;
    }
    config.train_positions = s.positions;
    config
}

/// The example builder of the SFT and evaluation stages: [`data_config`], with the most-popular
/// counts shown in every prompt (`sft.show_popularity`) and ordering its candidates
/// (`sft.order_by_popularity`).
pub(super) fn example_builder<'a>(
    p: &Pipeline,
    dataset: &'a pulserec_data::Dataset,
    stage: Stage,
) -> Result<ExampleBuilder<'a>> {
    let s = &p.config().sft;
    let builder = ExampleBuilder::new(dataset, data_config(p)).at(stage)?;
    let usage = PopularityUse {
        show: s.show_popularity,
        order: s.order_by_popularity,
    };
    Ok(if usage == PopularityUse::default() {
        builder
    } else {
        builder.with_popularity(prepare::popularity(p)?.counts().to_vec(), usage)
    })
}

/// Packed rows of every training user's sequence (`sft.every_position`): each title after the
/// first is a target, with up to the evaluation history's length of titles before it in its row.
fn packed_rows(
    base: &Base,
    builder: &ExampleBuilder<'_>,
    training_users: &[UserId],
    max_len: usize,
) -> Result<EncodedSet> {
    let window = builder.config().test_history + 1;
    let mut set = EncodedSet::default();
    for &user in training_users {
        let titles = builder.training_titles(user).at(Stage::Sft)?;
        match encode_sequence(&base.tokenizer, user, &titles, 1, window, max_len) {
            Ok(rows) => set.examples.extend(rows),
            Err(e @ pulserec_sft::SftError::TooLong { .. }) => {
                tracing::warn!("{e}; skipped");
                set.too_long.push(user);
            }
            Err(e) => return Err(e).at(Stage::Sft),
        }
    }
    tracing::info!(
        rows = set.examples.len(),
        targets = set.examples.iter().map(|e| e.targets.len()).sum::<usize>(),
        users = training_users.len(),
        "packed training rows built"
    );
    Ok(set)
}

/// The stored rationale per training user for `variant` (`None` for no rationale).
fn rationales_for(p: &Pipeline, variant: Variant) -> Result<Option<HashMap<UserId, String>>> {
    let dir = match (variant, ScorerKind::for_variant(variant)) {
        (Variant::NoRationale, _) => return Ok(None),
        (_, Some(scorer)) => rationales::tot_store(p, scorer),
        (_, None) => rationales::hindsight_store(p),
    };
    let records = RationaleStore::open(&dir)
        .and_then(|s| s.load())
        .at(Stage::Sft)?;
    Ok(Some(
        records.into_iter().map(|r| (r.user, r.text)).collect(),
    ))
}

pub(super) fn variant_dir(p: &Pipeline, v: Variant) -> PathBuf {
    p.stage_dir(Stage::Sft).join(v.name())
}

pub(super) fn read_record(p: &Pipeline, v: Variant) -> Result<TrainRecord> {
    read_json(&variant_dir(p, v).join(TRAIN_FILE))
}

fn train_variant(
    p: &Pipeline,
    base: &Base,
    builder: &ExampleBuilder<'_>,
    training_users: &[UserId],
    variant: Variant,
) -> Result<TrainRecord> {
    let dir = variant_dir(p, variant);
    let rationales = rationales_for(p, variant)?;
    let mut set = builder
        .training_set(variant, training_users, rationales.as_ref())
        .at(Stage::Sft)?;
    let prior_weight = if p.config().sft.popularity_prior {
        let prior = PopularityPrior::fit(prepare::popularity(p)?, &set.examples);
        prior.attach(&mut set.examples);
        tracing::info!(
            weight = prior.weight(),
            examples = set.examples.len(),
            "popularity prior fitted: the SLM learns the residual of w ln(1 + count)"
        );
        Some(prior.weight())
    } else {
        None
    };
    let config = p
        .config()
        .sft
        .training(p.config().seed, base.config.num_layers);
    let EncodedSet {
        examples: encoded,
        too_long,
    } = if p.config().sft.every_position && !variant.uses_rationale() {
        packed_rows(base, builder, training_users, config.max_len)?
    } else {
        encode_all(
            &base.tokenizer,
            base.style,
            &set.examples,
            config.max_len,
            config.objective,
        )
        .at(Stage::Sft)?
    };
    let too_long = too_long.len();
    if encoded.is_empty() {
        return Err(PipelineError::Data {
            stage: Stage::Sft.name(),
            message: format!(
                "variant `{}` has no training example ({} users without a rationale, {} without a target, {} too long)",
                variant.name(),
                set.skipped_no_rationale.len(),
                set.skipped_no_target.len(),
                too_long
            ),
        });
    }
    let mut trainer = SftTrainer::new(
        &base.config,
        &base.weights,
        config.clone(),
        &base.name,
        p.device(),
    )
    .at(Stage::Sft)?;
    let bar = p.bar(0, variant.name());
    let checkpoints = dir.join("checkpoints");
    let report = trainer
        .fit(&encoded, Some(&checkpoints), &bar)
        .at(Stage::Sft)?;
    bar.finish_and_clear();
    let adapter = report
        .adapter
        .as_ref()
        .and_then(|a| a.strip_prefix(&dir).ok())
        .map(Path::to_path_buf)
        .ok_or_else(|| PipelineError::Data {
            stage: Stage::Sft.name(),
            message: format!("training `{}` wrote no adapter", variant.name()),
        })?;
    let record = TrainRecord {
        variant: variant.name().into(),
        prompt_version: PROMPT_VERSION.into(),
        model: base.name.clone(),
        training_users: training_users.len(),
        // A packed row holds one example per target; a ranking row one example whose targets
        // are its candidates.
        examples: encoded
            .iter()
            .map(|e: &EncodedExample| match config.objective {
                Objective::Generative => e.targets.len(),
                Objective::Ranking => 1,
            })
            .sum(),
        skipped_no_rationale: set.skipped_no_rationale.len(),
        skipped_no_target: set.skipped_no_target.len(),
        skipped_too_long: too_long,
        config,
        report,
        adapter,
        copied_from: None,
        prior_weight,
    };
    let losses: Vec<f64> = record
        .report
        .step_losses
        .iter()
        .map(|&l| l as f64)
        .collect();
    let title = format!("{} training loss", variant.label());
    let labels = crate::plot::CurveLabels {
        title: &title,
        x: "optimiser step",
        y: "loss (mean token NLL of the target)",
        series: variant.label(),
    };
    crate::plot::write_curve_svg(&dir.join(LOSS_PLOT), &losses, &labels).at(Stage::Sft)?;
    write_json(&dir.join(TRAIN_FILE), &record)?;
    Ok(record)
}

fn train_summary(r: &TrainRecord) -> Value {
    json!({
        "examples": r.examples,
        "skipped_no_rationale": r.skipped_no_rationale,
        "skipped_too_long": r.skipped_too_long,
        "steps": r.report.steps,
        "epoch_losses": r.report.epoch_losses,
        "tokens_per_second": r.report.tokens_per_s,
    })
}

/// Copies file `from` to `to` atomically.
fn copy_file(from: &Path, to: &Path) -> Result<()> {
    let bytes = std::fs::read(from).map_err(|e| PipelineError::io(from, e))?;
    write_atomic(to, &bytes)
}

/// Copies the files of folder `from` into `to` (one level: adapter folders are flat).
fn copy_files(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| PipelineError::io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| PipelineError::io(from, e))? {
        let path = entry.map_err(|e| PipelineError::io(from, e))?.path();
        if path.is_file()
            && let Some(name) = path.file_name()
        {
            copy_file(&path, &to.join(name))?;
        }
    }
    Ok(())
}

/// Cross-domain: takes `variant`'s adapter, loss curve and record from the run `from`.
fn copy_variant(p: &Pipeline, from: &Path, variant: Variant) -> Result<TrainRecord> {
    let source = from.join("sft").join(variant.name());
    let mut record: TrainRecord = read_json(&source.join(TRAIN_FILE))?;
    let dir = variant_dir(p, variant);
    copy_files(&source.join(&record.adapter), &dir.join(&record.adapter))?;
    let curve = source.join(LOSS_PLOT);
    if curve.is_file() {
        copy_file(&curve, &dir.join(LOSS_PLOT))?;
    }
    record.copied_from = Some(from.to_path_buf());
    write_json(&dir.join(TRAIN_FILE), &record)?;
    tracing::info!(variant = variant.name(), from = %from.display(), "adapter copied");
    Ok(record)
}

pub(super) fn run_sft(p: &Pipeline, _dir: &Path) -> Result<Value> {
    if let Some(from) = &p.config().sft.adapters_from {
        let mut out = serde_json::Map::new();
        for &variant in &p.config().sft.variants {
            let record = if variant_dir(p, variant).join(TRAIN_FILE).exists() {
                read_record(p, variant)?
            } else {
                copy_variant(p, from, variant)?
            };
            let mut summary = train_summary(&record);
            summary["copied_from"] = json!(from);
            out.insert(variant.name().into(), summary);
        }
        return Ok(Value::Object(out));
    }
    let (prepared, users) = prepare::load(p)?;
    let builder = example_builder(p, &prepared.dataset, Stage::Sft)?;
    let base = base(p, Stage::Sft)?;
    let mut out = serde_json::Map::new();
    for &variant in &p.config().sft.variants {
        let record = if variant_dir(p, variant).join(TRAIN_FILE).exists() {
            tracing::info!(variant = variant.name(), "already trained, skipped");
            read_record(p, variant)?
        } else {
            tracing::info!(variant = variant.name(), "training");
            train_variant(p, &base, &builder, &users.training, variant)?
        };
        out.insert(variant.name().into(), train_summary(&record));
    }
    Ok(Value::Object(out))
}
