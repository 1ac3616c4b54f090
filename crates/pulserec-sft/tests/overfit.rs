//! LoRA SFT on real SmolLM2: a few examples are learned, checkpoints are kept, a NaN loss stops
//! training with the last good adapter, and mismatched adapters are refused.

mod common;

use std::sync::OnceLock;

use burn::tensor::Device;
use indicatif::ProgressBar;
use pulserec_core::baselines::Popularity;
use pulserec_core::{CandidatePrompt, CandidateSelector, ItemId, UserId};
use pulserec_sft::{
    EncodedExample, FrozenBottom, LikelihoodConfig, LikelihoodSelector, NonFiniteLoss, Objective,
    PopularityPrior, PromptStyle, Schedule, SftConfig, SftError, SftExample, SftTrainer,
    TrainError, encode_auxiliary, encode_example, encode_ranking, load_adapter,
};
use pulserec_slm::weights::ModelWeights;
use pulserec_slm::{ChatFormat, LlamaConfig, LoadOptions, LoraConfig, Slm, SlmTokenizer};

type Parts = (LlamaConfig, ModelWeights, SlmTokenizer);

/// The model is read once per test binary.
fn parts() -> Option<&'static Parts> {
    static PARTS: OnceLock<Option<Parts>> = OnceLock::new();
    PARTS
        .get_or_init(|| {
            let path = common::smollm2_path()?;
            Some(Slm::load_parts(&path).expect("load SmolLM2"))
        })
        .as_ref()
}

const STYLE: PromptStyle = PromptStyle::Chat(ChatFormat::ChatMl);

fn examples() -> Vec<SftExample> {
    let ex =
        |user, history: &[&str], candidates: &[&str], target: usize, rationale: Option<&str>| {
            SftExample {
                prompt: CandidatePrompt {
                    user: UserId(user),
                    history: history.iter().map(|s| s.to_string()).collect(),
                    history_items: Vec::new(),
                    candidates: candidates
                        .iter()
                        .enumerate()
                        .map(|(i, t)| (ItemId(user * 10 + i as u32 + 1), t.to_string()))
                        .collect(),
                    rationale: rationale.map(str::to_string),
                    popularity: None,
                },
                target: ItemId(user * 10 + target as u32 + 1),
                auxiliary: None,
                prior: Vec::new(),
            }
        };
    vec![
        ex(
            1,
            &["Halo 3", "Gears of War 2"],
            &["Mario Kart 8", "Zoo Tycoon DS", "Call of Duty 4"],
            1,
            Some("They want something calm after shooters."),
        ),
        ex(
            2,
            &["Tetris DS", "Dr. Mario"],
            &["Madden NFL 08", "Puzzle Quest", "Guitar Hero III"],
            2,
            None,
        ),
    ]
}

/// The inference model over `weights` (the base's, or merged adapters').
fn inference_model(cfg: &LlamaConfig, weights: &ModelWeights, tok: &SlmTokenizer) -> Slm {
    Slm::from_parts(
        cfg.clone(),
        weights,
        tok.clone(),
        &Device::flex(),
        &LoadOptions::default(),
    )
    .unwrap()
}

/// `-log softmax(scores)[target]`, averaged over the examples.
fn cross_entropy(scores: &[Vec<f32>], exs: &[SftExample]) -> f32 {
    let sum: f32 = scores
        .iter()
        .zip(exs)
        .map(|(s, e)| {
            let max = s.iter().cloned().fold(f32::MIN, f32::max);
            let log_z = max + s.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
            log_z - s[e.target_index()]
        })
        .sum();
    sum / exs.len() as f32
}

fn encoded(tok: &SlmTokenizer) -> Vec<EncodedExample> {
    examples()
        .iter()
        .map(|e| encode_example(tok, STYLE, e, 256).unwrap())
        .collect()
}

fn config(epochs: usize, lr: f64) -> SftConfig {
    SftConfig {
        lora: LoraConfig {
            dropout: 0.0,
            ..LoraConfig::paper()
        },
        learning_rate: lr,
        warmup_ratio: 0.0,
        schedule: Schedule::Constant,
        epochs,
        effective_batch: 2,
        // Two micro-batches per step: the accumulation path is exercised.
        micro_batch: 1,
        max_len: 256,
        weight_decay: 0.0,
        max_grad_norm: None,
        seed: 3,
        objective: Objective::Generative,
        frozen_bottom: FrozenBottom::Autodiff,
    }
}

/// Mean log-probability of each example's target answer, and whether the target is chosen.
fn target_scores(slm: Slm) -> Vec<(f32, bool)> {
    let exs = examples();
    let prompts: Vec<CandidatePrompt> = exs.iter().map(|e| e.prompt.clone()).collect();
    let mut selector = LikelihoodSelector::new(slm, STYLE, LikelihoodConfig::default());
    let sel = selector.select(&prompts).unwrap();
    exs.iter()
        .zip(sel)
        .map(|(e, s)| {
            (
                s.scores.unwrap()[e.target_index()],
                s.chosen == Some(e.target),
            )
        })
        .collect()
}

#[test]
fn a_few_examples_are_learned() {
    let Some((cfg, weights, tok)) = parts() else {
        return;
    };
    let device = Device::flex();
    let before = target_scores(inference_model(cfg, weights, tok));

    let data = encoded(tok);
    let dir = tempfile::tempdir().unwrap();
    let mut trainer =
        SftTrainer::new(cfg, weights, config(5, 2e-3), "smollm2-test", &device).unwrap();
    let start_loss = trainer.eval_loss(&data).unwrap();
    let report = trainer
        .fit(&data, Some(dir.path()), &ProgressBar::hidden())
        .unwrap();
    let end_loss = trainer.eval_loss(&data).unwrap();
    eprintln!(
        "loss {start_loss:.3} -> {end_loss:.3}, steps {:?}, {:.1} tok/s",
        report.step_losses, report.tokens_per_s
    );
    assert_eq!(report.steps, 5);
    assert!(end_loss < 0.3 * start_loss, "{start_loss} -> {end_loss}");
    assert_eq!(
        report.target_tokens,
        5 * data.iter().map(|e| e.target_len()).sum::<usize>()
    );

    // Only the last epoch's checkpoint is left, with the adapter and the settings.
    let last = dir.path().join("epoch-005");
    assert_eq!(report.adapter.as_deref(), Some(last.as_path()));
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(names, vec!["epoch-005".to_string()]);
    for f in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "sft_config.json",
    ] {
        assert!(last.join(f).is_file(), "{f}");
    }

    // The merged model prefers the trained answers.
    let merged = trainer.merged_weights(weights).unwrap();
    let tuned = Slm::from_parts(
        cfg.clone(),
        &merged,
        tok.clone(),
        &device,
        &LoadOptions::default(),
    )
    .unwrap();
    let after = target_scores(tuned);
    eprintln!("target (mean log-prob, chosen): base {before:?}, tuned {after:?}");
    for (b, a) in before.iter().zip(&after) {
        assert!(a.1, "the tuned model does not choose the trained target");
        assert!(a.0 > b.0 + 0.5, "target log-prob {} -> {}", b.0, a.0);
    }

    // The checkpoint loads back onto the same base, and is refused elsewhere.
    let lora = config(1, 1e-3).lora;
    let loaded = load_adapter(&last, cfg, weights, &lora, "smollm2-test", &device).unwrap();
    let reloaded = loaded.merged_weights(weights).unwrap();
    assert_eq!(
        reloaded.layers[0].q.to_f32().unwrap(),
        merged.layers[0].q.to_f32().unwrap()
    );
    let err = load_adapter(&last, cfg, weights, &lora, "another-model", &device).unwrap_err();
    assert!(matches!(err, SftError::AdapterMismatch { .. }), "{err}");
    let rank4 = LoraConfig { rank: 4, ..lora };
    let err = load_adapter(&last, cfg, weights, &rank4, "smollm2-test", &device).unwrap_err();
    assert!(
        matches!(&err, SftError::AdapterMismatch { message, .. } if message.contains("rank")),
        "{err}"
    );
}

/// The ranking objective: its loss starts at the softmax cross-entropy of the likelihood
/// selector's own scores (the same mean log-probabilities, from an independent code path: the
/// quantised inference model), and training on it makes the selector choose the targets.
#[test]
fn the_ranking_objective_scores_as_the_selector_and_is_learned() {
    let Some((cfg, weights, tok)) = parts() else {
        return;
    };
    let device = Device::flex();
    let load = |w: &ModelWeights| inference_model(cfg, w, tok);
    let exs = examples();
    let prompts: Vec<CandidatePrompt> = exs.iter().map(|e| e.prompt.clone()).collect();
    let scores = |slm: Slm| -> Vec<Vec<f32>> {
        let mut selector = LikelihoodSelector::new(slm, STYLE, LikelihoodConfig::default());
        let sel = selector.select(&prompts).unwrap();
        sel.into_iter().map(|s| s.scores.unwrap()).collect()
    };
    let selector_loss = cross_entropy(&scores(load(weights)), &exs);
    let data: Vec<EncodedExample> = exs
        .iter()
        .map(|e| encode_ranking(tok, STYLE, e, 256).unwrap())
        .collect();
    // On the autodiff graph, and with the host kernels (fused ops, bf16 frozen products where
    // the CPU has AMX): both learn the examples.
    for frozen_bottom in [FrozenBottom::Autodiff, FrozenBottom::HostBf16] {
        let ranking = SftConfig {
            objective: Objective::Ranking,
            frozen_bottom,
            ..config(6, 2e-3)
        };
        let mut trainer = SftTrainer::new(cfg, weights, ranking, "smollm2-test", &device).unwrap();
        let start = trainer.eval_loss(&data).unwrap();
        // The fresh adapters leave the model equal to the base; the only difference is the
        // selector's quantised kernels against the trainer's f32 (or bf16) products.
        assert!(
            (start - selector_loss).abs() < 0.05,
            "{frozen_bottom:?}: ranking loss {start} vs the selector's {selector_loss}"
        );
        let report = trainer.fit(&data, None, &ProgressBar::hidden()).unwrap();
        let end = trainer.eval_loss(&data).unwrap();
        eprintln!(
            "{frozen_bottom:?}: ranking loss {start:.3} -> {end:.3}, steps {:?}",
            report.step_losses
        );
        assert!(end < 0.5 * start, "{frozen_bottom:?}: {start} -> {end}");
        let tuned = scores(load(&trainer.merged_weights(weights).unwrap()));
        for (s, e) in tuned.iter().zip(&exs) {
            let best = (0..s.len()).max_by(|&a, &b| s[a].total_cmp(&s[b])).unwrap();
            assert_eq!(best, e.target_index(), "{frozen_bottom:?}: scores {s:?}");
        }
        assert!(cross_entropy(&tuned, &exs) < 0.5 * selector_loss);
    }
}

/// A popularity prior enters the ranking loss as the likelihood selector adds it: the loss of
/// examples carrying the prior is the softmax cross-entropy of the selector's scores with the
/// same prior, and a prior that favours wrong candidates raises it well past the tolerance.
#[test]
fn a_popularity_prior_enters_the_ranking_loss_as_the_selector_adds_it() {
    let Some((cfg, weights, tok)) = parts() else {
        return;
    };
    let device = Device::flex();
    // Items 11 and 21 (wrong for both users) are popular; 13 a little.
    let mut counts = vec![0u32; 24];
    counts[11] = 400;
    counts[21] = 400;
    counts[13] = 3;
    let prior = PopularityPrior::new(Popularity::new(counts), 1.0).unwrap();
    let mut exs = examples();
    prior.attach(&mut exs);
    assert!((exs[0].prior[0] - 401f32.ln()).abs() < 1e-5);
    let prompts: Vec<CandidatePrompt> = exs.iter().map(|e| e.prompt.clone()).collect();
    let mut selector = LikelihoodSelector::new(
        inference_model(cfg, weights, tok),
        STYLE,
        LikelihoodConfig::default(),
    )
    .with_prior(prior);
    let scores: Vec<Vec<f32>> = (selector.select(&prompts).unwrap())
        .into_iter()
        .map(|s| s.scores.unwrap())
        .collect();
    let selector_loss = cross_entropy(&scores, &exs);
    let ranking = SftConfig {
        objective: Objective::Ranking,
        ..config(1, 1e-3)
    };
    let trainer = SftTrainer::new(cfg, weights, ranking, "smollm2-test", &device).unwrap();
    let with_prior: Vec<EncodedExample> = exs
        .iter()
        .map(|e| encode_ranking(tok, STYLE, e, 256).unwrap())
        .collect();
    // The correct candidate's prior comes first, as its answer does.
    assert_eq!(
        with_prior[0].offsets[0],
        exs[0].prior[exs[0].target_index()]
    );
    let loss = trainer.eval_loss(&with_prior).unwrap();
    assert!(
        (loss - selector_loss).abs() < 0.05,
        "ranking loss with the prior {loss} vs the selector's {selector_loss}"
    );
    let plain: Vec<EncodedExample> = examples()
        .iter()
        .map(|e| encode_ranking(tok, STYLE, e, 256).unwrap())
        .collect();
    let without = trainer.eval_loss(&plain).unwrap();
    assert!(
        loss > without + 1.0,
        "{loss} with the prior, {without} without"
    );
    // A prior of the wrong length is refused by name.
    let mut bad = exs[0].clone();
    bad.prior.pop();
    let err = encode_ranking(tok, STYLE, &bad, 256).unwrap_err();
    assert!(
        err.to_string().contains("2 prior scores for 3 candidates"),
        "{err}"
    );
}

/// The auxiliary variant's rationale row: under the ranking objective it adds the negative mean
/// log-probability of its tokens (the generative objective's loss of the same row), and a
/// micro-batch that mixes a ranked example and a rationale row averages the two losses.
#[test]
fn an_auxiliary_rationale_row_adds_its_token_loss_to_the_ranking_loss() {
    let Some((cfg, weights, tok)) = parts() else {
        return;
    };
    let device = Device::flex();
    let ex = examples().remove(0);
    let ranked = encode_ranking(tok, STYLE, &ex, 256).unwrap();
    let aux = encode_auxiliary(tok, STYLE, &ex, "They collect racing games.", 256).unwrap();
    let trainer = |objective| {
        let config = SftConfig {
            objective,
            // Both rows in one micro-batch: the mixed path is what is checked.
            micro_batch: 2,
            ..config(1, 1e-3)
        };
        SftTrainer::new(cfg, weights, config, "smollm2-test", &device).unwrap()
    };
    let ranking = trainer(Objective::Ranking);
    let aux_loss = ranking.eval_loss(std::slice::from_ref(&aux)).unwrap();
    let token_loss = trainer(Objective::Generative)
        .eval_loss(std::slice::from_ref(&aux))
        .unwrap();
    assert!(
        (aux_loss - token_loss).abs() < 1e-4,
        "{aux_loss} vs {token_loss}"
    );
    let ranked_loss = ranking.eval_loss(std::slice::from_ref(&ranked)).unwrap();
    let both = ranking.eval_loss(&[ranked, aux]).unwrap();
    assert!(
        (both - 0.5 * (ranked_loss + aux_loss)).abs() < 1e-4,
        "{both} vs {ranked_loss} and {aux_loss}"
    );
}

#[test]
fn a_non_finite_loss_stops_training_and_keeps_the_last_adapter() {
    let Some((cfg, weights, tok)) = parts() else {
        return;
    };
    let device = Device::flex();
    let data = encoded(tok);
    let dir = tempfile::tempdir().unwrap();
    // An absurd learning rate blows the adapters up after the first step.
    let mut trainer =
        SftTrainer::new(cfg, weights, config(4, 1e30), "smollm2-test", &device).unwrap();
    let err = trainer
        .fit(&data, Some(dir.path()), &ProgressBar::hidden())
        .unwrap_err();
    let SftError::Train(TrainError::NonFiniteLoss(NonFiniteLoss {
        epoch,
        last_good: Some(last_good),
        ..
    })) = &err
    else {
        panic!("expected a non-finite loss after a checkpoint, got {err}");
    };
    assert!(*epoch >= 2, "{err}");
    assert!(last_good.join("adapter_model.safetensors").is_file());
}
