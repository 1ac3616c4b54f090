//! Stage 2: the Thought Space, trained on (behaviour text, hindsight rationale) pairs, with
//! held-out retrieval accuracy and the map (the paper's Figure 3) before and after training.

use std::path::{Path, PathBuf};

use pulserec_core::UserContext;
use pulserec_data::LeaveOneOut;
use pulserec_thoughtspace::{
    EncoderOptions, MapPanel, ThoughtSpace, ThoughtSpaceTrainer, TrainingPair, write_map_svg,
};
use pulserec_tot::{ContextBuilder, RationaleStore};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

use super::marker::{LOSS_PLOT, MAP_PLOT, write_json};
use super::{Pipeline, PipelineError, Result, Stage, StageResult, prepare, rationales, summary};

/// Retrieval groups: each held-out behaviour looks for its own rationale among this many.
const GROUP_SIZE: usize = 8;

/// The trained space's folder.
pub(super) fn space_dir(p: &Pipeline) -> PathBuf {
    p.stage_dir(Stage::ThoughtSpace).join("space")
}

pub(super) fn run(p: &Pipeline, dir: &Path) -> Result<Value> {
    let c = p.config();
    let ts = &c.thought_space;
    let (prepared, _) = prepare::load(p)?;
    let dataset = &prepared.dataset;
    let split = LeaveOneOut::new(&dataset.sequences);
    let store = RationaleStore::open(rationales::hindsight_store(p)).at(Stage::ThoughtSpace)?;
    let options = EncoderOptions {
        max_len: Some(ts.max_len),
        ..EncoderOptions::default()
    };
    let space = ThoughtSpace::from_pretrained(&c.assets.encoder, &options, p.device())
        .at(Stage::ThoughtSpace)?;
    let builder = ContextBuilder::default();
    let mut pairs: Vec<TrainingPair> = Vec::new();
    let mut empty = 0;
    for r in store.load().at(Stage::ThoughtSpace)? {
        // An empty rationale carries no reason to learn from; it is counted, not used.
        if r.text.trim().is_empty() {
            empty += 1;
            continue;
        }
        let context: Option<UserContext> = builder.context(dataset, &split, r.user, &[]);
        if let Some(context) = context {
            pairs.push(TrainingPair {
                user: dataset.raw_user_id(r.user).unwrap_or_default().to_string(),
                behaviour: space.renderer().render(&context),
                rationale: r.text,
            });
        }
    }
    if pairs.len() < ts.held_out + ts.batch_size {
        return Err(PipelineError::Data {
            stage: Stage::ThoughtSpace.name(),
            message: format!(
                "{} usable rationales ({empty} empty) are too few for thought_space.held_out = {} plus one batch of {}",
                pairs.len(),
                ts.held_out,
                ts.batch_size
            ),
        });
    }
    pairs.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(c.seed));
    let (train, held_out) = pairs.split_at(pairs.len() - ts.held_out);

    let before = space
        .retrieval(held_out, GROUP_SIZE)
        .at(Stage::ThoughtSpace)?;
    let (b0, r0) = space.embed_pairs(held_out).at(Stage::ThoughtSpace)?;
    let config = ts.training(c.seed);
    let mut trainer = ThoughtSpaceTrainer::new(space, config.clone()).at(Stage::ThoughtSpace)?;
    // Our own loop over `step` (rather than `fit`) to keep every step's loss for the curve.
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(c.seed ^ 0x7453);
    let per_epoch = train.len() / ts.batch_size;
    let bar = p.bar(per_epoch * ts.epochs, "thought space");
    let mut step_losses = Vec::new();
    let mut epoch_losses = Vec::new();
    for epoch in 1..=ts.epochs {
        order.shuffle(&mut rng);
        let mut sum = 0.0;
        // A trailing partial batch is dropped: fewer negatives would change the loss scale.
        for chunk in order.chunks_exact(ts.batch_size) {
            let batch: Vec<&TrainingPair> = chunk.iter().map(|&i| &train[i]).collect();
            let loss = trainer.step(&batch, epoch).at(Stage::ThoughtSpace)?;
            step_losses.push(f64::from(loss));
            sum += f64::from(loss);
            bar.inc(1);
        }
        epoch_losses.push(sum / per_epoch.max(1) as f64);
    }
    bar.finish_and_clear();
    let trained = trainer.into_space();
    let after = trained
        .retrieval(held_out, GROUP_SIZE)
        .at(Stage::ThoughtSpace)?;
    let (b1, r1) = trained.embed_pairs(held_out).at(Stage::ThoughtSpace)?;
    trained
        .save(
            &space_dir(p),
            json!({"config": config, "epoch_losses": epoch_losses, "train_pairs": train.len()}),
        )
        .at(Stage::ThoughtSpace)?;
    let panel = |title, b, r| MapPanel {
        title,
        behaviour: b,
        rationale: r,
    };
    write_map_svg(
        &dir.join(MAP_PLOT),
        &[
            panel("held-out pairs, before training", &b0, &r0),
            panel("held-out pairs, after training", &b1, &r1),
        ],
    )
    .at(Stage::ThoughtSpace)?;
    let labels = crate::plot::CurveLabels {
        title: "Thought-Space training loss",
        x: "optimiser step",
        y: "symmetric InfoNCE loss",
        series: "Thought Space",
    };
    crate::plot::write_curve_svg(&dir.join(LOSS_PLOT), &step_losses, &labels)
        .at(Stage::ThoughtSpace)?;
    let metrics = json!({
        "device": p.device_name(),
        "train_pairs": train.len(),
        "held_out_pairs": held_out.len(),
        "empty_rationales": empty,
        "group_size": GROUP_SIZE,
        "before": before,
        "after": after,
        "config": config,
        "epoch_losses": epoch_losses,
        "step_losses": step_losses,
    });
    write_json(&dir.join("metrics.json"), &metrics)?;
    Ok(summary(&[
        ("train_pairs", json!(train.len())),
        ("held_out_pairs", json!(held_out.len())),
        ("retrieval_before", json!(before.accuracy)),
        ("retrieval_after", json!(after.accuracy)),
    ]))
}
