//! Training on MovieLens-100K genres raises held-out retrieval accuracy.
//!
//! behaviour = a user's 6 latest titles; rationale = "This viewer is drawn to <genre> films."
//! for the genre that dominates those titles (ties: alphabetical). Held-out users never appear in
//! training; retrieval is behaviour -> own rationale among groups of 16 held-out users.

mod common;

use burn::tensor::Device;
use indicatif::ProgressBar;
use pulserec_thoughtspace::{
    EncoderOptions, InfoNceConfig, ThoughtSpace, ThoughtSpaceTrainer, TrainConfig,
};

#[path = "common/movielens.rs"]
mod movielens;

#[test]
fn genre_training_beats_the_untrained_encoder_on_held_out_users() {
    let (Some(model), Some(ml)) = (common::asset("all-minilm-l6-v2"), common::asset("ml-100k"))
    else {
        return;
    };
    let pairs = movielens::genre_pairs(&ml, 6);
    assert_eq!(pairs.len(), 943);
    let (train, held_out) = pairs.split_at(480);
    let held_out = &held_out[..256];
    let options = EncoderOptions {
        max_len: Some(64),
        ..Default::default()
    };
    let space = ThoughtSpace::from_pretrained(&model, &options, &Device::flex()).unwrap();
    let before = space.retrieval(held_out, 16).unwrap();

    let config = TrainConfig {
        loss: InfoNceConfig {
            temperature: 0.05,
            negatives: Some(10),
            symmetric: true,
        },
        batch_size: 16,
        epochs: 1,
        learning_rate: 1e-4,
        seed: 7,
        ..Default::default()
    };
    let mut trainer = ThoughtSpaceTrainer::new(space, config).unwrap();
    let report = trainer.fit(train, None, &ProgressBar::hidden()).unwrap();
    let trained = trainer.into_space();
    let after = trained.retrieval(held_out, 16).unwrap();
    eprintln!(
        "held-out retrieval@16: before {:.3} (mrr {:.3}), after {:.3} (mrr {:.3}); \
         {} steps in {:.1}s, losses {:?}",
        before.accuracy,
        before.mrr,
        after.accuracy,
        after.mrr,
        report.steps,
        report.seconds,
        report.epoch_losses
    );
    assert!(
        after.accuracy >= before.accuracy + 0.10,
        "accuracy {:.3} -> {:.3}",
        before.accuracy,
        after.accuracy
    );
    assert!(after.mrr > before.mrr);
}
