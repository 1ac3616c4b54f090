//! Model-level tests on synthetic sequences: overfitting, losses, checkpoints, ties.

use burn::tensor::Device;
use pulserec_core::{ItemId, SequentialRecommender, TiePolicy, UserId};
use pulserec_seqrec::{
    EvalCase, EvalOptions, LossKind, NormPlacement, SasRecConfig, SasRecRecommender, TrainConfig,
    TrainData, WeightInit, evaluate_full, evaluate_sampled, load_checkpoint, save_checkpoint,
    similar_users, similar_users_of, train,
};

const N_ITEMS: usize = 30;

/// 24 users walking the item ring deterministically: user u visits u+1, u+2, ... (mod 30), so the
/// next item is a function of the last one and a model can learn it perfectly.
fn ring_sequences() -> Vec<Vec<ItemId>> {
    (0..24u32)
        .map(|u| {
            (0..8)
                .map(|t| ItemId((u + t) % N_ITEMS as u32 + 1))
                .collect()
        })
        .collect()
}

fn split(seqs: &[Vec<ItemId>]) -> (Vec<&[ItemId]>, Vec<EvalCase<'_>>) {
    let train = seqs.iter().map(|s| &s[..s.len() - 1]).collect();
    let valid = seqs
        .iter()
        .enumerate()
        .map(|(u, s)| EvalCase {
            user: UserId(u as u32),
            history: &s[..s.len() - 1],
            target: s[s.len() - 1],
        })
        .collect();
    (train, valid)
}

fn tiny(norm: NormPlacement) -> SasRecConfig {
    SasRecConfig::paper(N_ITEMS)
        .with_hidden(16)
        .with_inner(16)
        .with_max_len(8)
        .with_dropout(0.1)
        .with_attention_dropout(0.1)
        .with_norm(norm)
}

fn fit(norm: NormPlacement, loss: LossKind, epochs: usize) -> (f64, f64, f64) {
    let seqs = ring_sequences();
    let (train_seqs, valid) = split(&seqs);
    let device = Device::flex();
    let data = TrainData {
        train: train_seqs,
        valid: valid.clone(),
        valid_candidates: None,
    };
    let config = TrainConfig::paper()
        .with_epochs(epochs)
        .with_batch_size(8)
        .with_lr(0.01)
        .with_loss(loss)
        .with_valid_every(0)
        .with_seed(7);
    let out = train(&tiny(norm), &config, &data, &device, None).unwrap();
    let m = evaluate_full(&out.model, &valid, &EvalOptions::default(), &device).unwrap();
    let first = out.epochs.first().unwrap().loss;
    let last = out.epochs.last().unwrap().loss;
    (first, last, m.get("HR@1").unwrap())
}

#[test]
fn tiny_model_overfits_a_tiny_dataset_with_bce() {
    let (first, last, hr1) = fit(NormPlacement::Post, LossKind::Bce, 60);
    assert!(last < first * 0.5, "loss {first} -> {last}");
    assert!(hr1 > 0.8, "HR@1 {hr1}");
}

#[test]
fn pre_norm_and_softmax_losses_learn_too() {
    let (first, last, hr1) = fit(NormPlacement::Pre, LossKind::Ce, 40);
    assert!(
        last < first * 0.5 && hr1 > 0.8,
        "ce: {first} -> {last}, HR@1 {hr1}"
    );
    let (first, last, hr1) = fit(
        NormPlacement::Post,
        LossKind::SampledSoftmax { negatives: 10 },
        40,
    );
    assert!(
        last < first * 0.7 && hr1 > 0.5,
        "sampled: {first} -> {last}, HR@1 {hr1}"
    );
}

#[test]
fn checkpoint_round_trip_gives_identical_scores() {
    let seqs = ring_sequences();
    let (train_seqs, valid) = split(&seqs);
    let device = Device::flex();
    let data = TrainData {
        train: train_seqs.clone(),
        valid,
        valid_candidates: None,
    };
    let config = TrainConfig::paper().with_epochs(2).with_batch_size(8);
    let model_config = tiny(NormPlacement::Pre);
    let out = train(&model_config, &config, &data, &device, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    save_checkpoint(&out.model, &model_config, dir.path()).unwrap();
    let (loaded, loaded_config) = load_checkpoint(dir.path(), &device).unwrap();
    assert_eq!(loaded_config.hidden, 16);
    let before = SasRecRecommender::new(&out.model, &device)
        .top_k(&train_seqs, 5, false)
        .unwrap();
    let after = SasRecRecommender::new(&loaded, &device)
        .top_k(&train_seqs, 5, false)
        .unwrap();
    assert_eq!(before, after);
    // A missing checkpoint is an error, not a panic.
    assert!(load_checkpoint(&dir.path().join("nope"), &device).is_err());
}

#[test]
fn constant_scores_rank_pessimistically_and_history_is_masked() {
    // Zero weights make every score 0: every competitor ties with the target.
    let config = SasRecConfig::paper(N_ITEMS).with_init(WeightInit::Normal { std: 0.0 });
    let device = Device::flex();
    let model = config.init(&device).unwrap();
    let history = [ItemId(1), ItemId(2), ItemId(3)];
    let cases = [EvalCase {
        user: UserId(0),
        history: &history,
        target: ItemId(4),
    }];
    let mut options = EvalOptions {
        ks: vec![1, 30],
        ..EvalOptions::default()
    };
    let m = evaluate_full(&model, &cases, &options, &device).unwrap();
    // 30 items - 3 history - the target = 26 competitors, all tied: rank 27.
    assert!((m.get("MRR").unwrap() - 1.0 / 27.0).abs() < 1e-12);
    assert_eq!(m.get("HR@1"), Some(0.0));
    assert!((m.get("NDCG@30").unwrap() - 1.0 / 28f64.log2()).abs() < 1e-12);
    options.tie_policy = TiePolicy::Optimistic;
    let m = evaluate_full(&model, &cases, &options, &device).unwrap();
    assert_eq!(m.get("HR@1"), Some(1.0));

    let cands: Vec<ItemId> = (4..=14).map(ItemId).collect();
    options.tie_policy = TiePolicy::Pessimistic;
    let m = evaluate_sampled(&model, &cases, &[&cands], &options, &device).unwrap();
    assert!((m.get("MRR").unwrap() - 1.0 / 11.0).abs() < 1e-12);
    // The positive must come first.
    let wrong: Vec<ItemId> = (5..=14).map(ItemId).collect();
    assert!(evaluate_sampled(&model, &cases, &[&wrong], &options, &device).is_err());
}

#[test]
fn bad_inputs_are_errors() {
    let device = Device::flex();
    assert!(SasRecConfig::paper(10).with_heads(3).init(&device).is_err());
    assert!(SasRecConfig::paper(0).init(&device).is_err());
    let model = SasRecConfig::paper(10).init(&device).unwrap();
    let rec = SasRecRecommender::new(&model, &device);
    let bad = [ItemId(11)];
    assert!(rec.top_k(&[&bad], 3, true).is_err());
    assert!(rec.score_candidates(&[&[ItemId(1)]], &[&bad]).is_err());
    assert!(rec.score_candidates(&[&[ItemId(1)]], &[]).is_err());
    let empty = TrainData::default();
    assert!(
        train(
            &SasRecConfig::paper(10),
            &TrainConfig::paper(),
            &empty,
            &device,
            None
        )
        .is_err()
    );
}

#[test]
fn top_k_excludes_history_and_similar_users_finds_twins() {
    let device = Device::flex();
    device.seed(3);
    let model = SasRecConfig::paper(N_ITEMS).init(&device).unwrap();
    let rec = SasRecRecommender::new(&model, &device);
    let a = [ItemId(1), ItemId(2), ItemId(3)];
    let b = [ItemId(7), ItemId(9)];
    let top = rec.top_k(&[&a, &b, &a], N_ITEMS, true).unwrap();
    assert_eq!(top[0].len(), N_ITEMS - 3);
    assert!(top[0].iter().all(|(i, _)| !a.contains(i)));
    assert!(top[0].windows(2).all(|w| w[0].1 >= w[1].1));
    let all = rec.top_k(&[&a], N_ITEMS, false).unwrap();
    assert_eq!(all[0].len(), N_ITEMS);

    let vectors = rec.user_vectors(&[&a, &b, &a]).unwrap();
    let sims = similar_users(&vectors, model.hidden(), 1, 2, &device).unwrap();
    assert_eq!(sims[0][0].0, UserId(2));
    assert_eq!(sims[2][0].0, UserId(0));
    assert!((sims[0][0].1 - 1.0).abs() < 1e-5);
    // A subset of queries gets the rows of the full computation; an unknown user is an error.
    let some = similar_users_of(&vectors, model.hidden(), &[UserId(2)], 1, 2, &device).unwrap();
    assert_eq!(some, vec![sims[2].clone()]);
    let err = similar_users_of(&vectors, model.hidden(), &[UserId(3)], 1, 2, &device);
    assert!(err.unwrap_err().to_string().contains("user 3"));
}
