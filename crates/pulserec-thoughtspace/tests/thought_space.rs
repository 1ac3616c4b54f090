//! Training mechanics: gradients reach both encoders, checkpoints round-trip, NaN losses stop
//! training with the last good checkpoint in place, bad checkpoints are named errors.

mod common;

use burn::tensor::Device;
use indicatif::ProgressBar;
use pulserec_core::{HistoryEntry, ItemId, ThoughtScorer, UserContext, UserId};
use pulserec_thoughtspace::{
    ConsistencyScorer, EncoderOptions, InfoNceConfig, ThoughtSpace, ThoughtSpaceError,
    ThoughtSpaceTrainer, TrainConfig, TrainError, TrainingPair,
};

fn pairs() -> Vec<TrainingPair> {
    [
        ("History: Halo 3; Gears of War", "They love fast shooters."),
        (
            "History: Stardew Valley; Animal Crossing",
            "They enjoy calm farming life.",
        ),
        (
            "History: Forza Horizon; Gran Turismo",
            "They are into realistic racing.",
        ),
        (
            "History: Dark Souls; Bloodborne",
            "They seek hard dark fantasy combat.",
        ),
    ]
    .iter()
    .enumerate()
    .map(|(i, (b, r))| TrainingPair {
        user: i.to_string(),
        behaviour: b.to_string(),
        rationale: r.to_string(),
    })
    .collect()
}

fn space() -> Option<ThoughtSpace> {
    let dir = common::asset("all-minilm-l6-v2")?;
    let options = EncoderOptions {
        max_len: Some(32),
        ..Default::default()
    };
    Some(ThoughtSpace::from_pretrained(&dir, &options, &Device::flex()).unwrap())
}

fn config() -> TrainConfig {
    TrainConfig {
        loss: InfoNceConfig {
            temperature: 0.1,
            negatives: Some(3),
            symmetric: false,
        },
        batch_size: 4,
        epochs: 1,
        learning_rate: 1e-4,
        weight_decay: 0.0,
        ..Default::default()
    }
}

#[test]
fn gradients_reach_both_encoders() {
    let Some(space) = space() else { return };
    let mut trainer = ThoughtSpaceTrainer::new(space, config()).unwrap();
    let data = pairs();
    let batch: Vec<&TrainingPair> = data.iter().collect();
    let report = trainer.gradient_report(&batch).unwrap();
    // Token-type rows and unused embedding rows still get a (zero) gradient tensor, so every
    // parameter tensor of both encoders must appear.
    assert_eq!(report.behaviour_tensors.0, report.behaviour_tensors.1);
    assert_eq!(report.rationale_tensors.0, report.rationale_tensors.1);
    assert!(report.behaviour_tensors.1 >= 100, "{report:?}");
    assert!(report.behaviour_norm > 1e-6 && report.behaviour_norm.is_finite());
    assert!(report.rationale_norm > 1e-6 && report.rationale_norm.is_finite());

    // A few steps on the same batch lower its loss.
    let first = trainer.step(&batch, 1).unwrap();
    let mut last = first;
    for _ in 0..3 {
        last = trainer.step(&batch, 1).unwrap();
    }
    assert!(last < first, "loss {first} -> {last}");
}

#[test]
fn nan_loss_stops_training_and_keeps_the_last_checkpoint() {
    let Some(space) = space() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut trainer = ThoughtSpaceTrainer::new(space, config()).unwrap();
    let data = pairs();
    let report = trainer
        .fit(&data, Some(tmp.path()), &ProgressBar::hidden())
        .unwrap();
    let good = report.checkpoint.clone().unwrap();
    assert!(good.ends_with("epoch-001"));
    // A subnormal temperature turns cosines into infinities: the loss is NaN.
    trainer
        .set_loss(InfoNceConfig {
            temperature: 1e-45,
            ..config().loss
        })
        .unwrap();
    let err = trainer
        .fit(&data, Some(tmp.path()), &ProgressBar::hidden())
        .unwrap_err();
    match &err {
        ThoughtSpaceError::Train(TrainError::NonFiniteLoss(stop)) => {
            assert_eq!(stop.last_good.as_deref(), Some(good.as_path()))
        }
        other => panic!("expected NonFiniteLoss, got {other}"),
    }
    // The checkpoint is intact and loads; it scores like the trained space did.
    let loaded = ThoughtSpace::load(&good, &EncoderOptions::default(), &Device::flex()).unwrap();
    let trained = trainer.into_space();
    let (b1, r1) = loaded.embed_pairs(&data).unwrap();
    let (b0, r0) = trained.embed_pairs(&data).unwrap();
    let diff = (&b1 - &b0)
        .iter()
        .chain((&r1 - &r0).iter())
        .fold(0.0f32, |m, v| m.max(v.abs()));
    assert!(diff < 1e-5, "reloaded checkpoint differs by {diff}");
}

#[test]
fn bad_checkpoints_are_named_errors() {
    let Some(space) = space() else { return };
    let tmp = tempfile::tempdir().unwrap();
    space.save(tmp.path(), serde_json::json!({})).unwrap();
    let config_path = tmp.path().join("behaviour/config.json");
    let original = std::fs::read_to_string(&config_path).unwrap();

    // The config says a different FFN width than the weights hold.
    std::fs::write(
        &config_path,
        original.replace("\"intermediate_size\": 1536", "\"intermediate_size\": 1000"),
    )
    .unwrap();
    let err = ThoughtSpace::load(tmp.path(), &EncoderOptions::default(), &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("encoder.layer.0.intermediate.dense.weight") && err.contains("[1000, 384]"),
        "{err}"
    );

    // The tokenizer has more tokens than the model's embedding table.
    std::fs::write(
        &config_path,
        original.replace("\"vocab_size\": 30522", "\"vocab_size\": 1000"),
    )
    .unwrap();
    let err = ThoughtSpace::load(tmp.path(), &EncoderOptions::default(), &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("does not fit"),
        "{err}"
    );
}

#[test]
fn consistency_scorer_prefers_the_matching_chain() {
    let Some(space) = space() else { return };
    let mut scorer = ConsistencyScorer::new(space);
    assert_eq!(scorer.name(), "consistency");
    let entry = |title: &str| HistoryEntry {
        item: ItemId(1),
        title: title.into(),
        rating: Some(5.0),
        review: None,
    };
    let ctx = UserContext {
        user: UserId(0),
        history: vec![entry("Forza Horizon 4"), entry("Gran Turismo Sport")],
        target: Some(entry("Logitech G29 Racing Wheel")),
        similar_items: vec![],
    };
    let chains = vec![
        "They play racing games and want a steering wheel for realistic driving.".to_string(),
        "They enjoy cooking recipes and gardening books.".to_string(),
    ];
    let scores = scorer.score(&ctx, &chains).unwrap();
    assert_eq!(scores.len(), 2);
    assert!(scores[0] > scores[1], "{scores:?}");
    // Batched scoring over users agrees with one-by-one scoring.
    let batched = scorer
        .score_batch(&[(&ctx, &chains[..]), (&ctx, &chains[1..])])
        .unwrap();
    assert!((batched[0][0] - scores[0]).abs() < 1e-5);
    assert!((batched[1][0] - scores[1]).abs() < 1e-5);
    assert!(scorer.score(&ctx, &[]).unwrap().is_empty());
}
