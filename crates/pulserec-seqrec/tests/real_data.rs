//! The evaluation pipeline on the real data sets: ML-100K from the assets (required under CI)
//! and Amazon Games from ../shared/data (required when PULSEREC_REQUIRE_SHARED=1).

use burn::tensor::Device;
use pulserec_core::UserId;
use pulserec_data::locate::{asset, shared};
use pulserec_data::{CandidateConfig, CandidateSets, LeaveOneOut, Target};
use pulserec_seqrec::{
    EvalCase, EvalOptions, SasRecConfig, TrainConfig, TrainData, evaluate_full, evaluate_sampled,
};

fn test_cases<'a>(split: &LeaveOneOut<'a>, target: Target) -> Vec<EvalCase<'a>> {
    split
        .eval_users()
        .map(|user| EvalCase {
            user,
            history: split.history_before(user, target),
            target: split.target(user, target).expect("eval user has a target"),
        })
        .collect()
}

#[test]
fn one_epoch_on_ml100k_evaluates_every_user_under_both_protocols() {
    let Some(path) = asset("ml-100k") else { return };
    let ds = pulserec_data::load(&path).expect("ML-100K loads");
    let split = LeaveOneOut::new(&ds.sequences);
    let n_items = ds.catalog.len();
    let data = TrainData {
        train: (0..ds.sequences.n_users() as u32)
            .map(|u| split.train(UserId(u)))
            .collect(),
        ..TrainData::default()
    };
    let device = Device::flex();
    let config = SasRecConfig::paper(n_items);
    let out = pulserec_seqrec::train(
        &config,
        &TrainConfig::paper().with_epochs(1),
        &data,
        &device,
        None,
    )
    .expect("trains");
    let cases = test_cases(&split, Target::Test);
    assert_eq!(cases.len(), 943);
    let options = EvalOptions::default();
    let full = evaluate_full(&out.model, &cases, &options, &device).expect("full ranking");
    let sets =
        CandidateSets::generate(&ds, &split, Target::Test, &CandidateConfig::uniform(100, 0))
            .expect("candidates");
    let lists: Vec<_> = cases
        .iter()
        .map(|c| sets.get(c.user).expect("listed"))
        .collect();
    let sampled = evaluate_sampled(&out.model, &cases, &lists, &options, &device).expect("sampled");
    assert_eq!((full.users, sampled.users), (943, 943));
    // Against 100 negatives the sampled protocol can only be easier than against 1,681 items.
    assert!(sampled.get("HR@10").unwrap() > full.get("HR@10").unwrap());
}

#[test]
fn games_eval_streams_a_17k_catalogue_with_a_user_cap() {
    let Some(path) = shared("amazon-games-2018") else {
        return;
    };
    let ds = pulserec_data::load(&path).expect("Games loads");
    let split = LeaveOneOut::new(&ds.sequences);
    let device = Device::flex();
    device.seed(0);
    let model = SasRecConfig::paper(ds.catalog.len())
        .init(&device)
        .expect("model");
    let cases = test_cases(&split, Target::Test);
    let options = EvalOptions {
        max_users: Some(500),
        ..EvalOptions::default()
    };
    let m = evaluate_full(&model, &cases, &options, &device).expect("full ranking");
    assert_eq!(m.users, 500);
    // An untrained model is near random: HR@10 ~ 10 / 16,859.
    assert!(m.get("HR@10").unwrap() < 0.05);
}
