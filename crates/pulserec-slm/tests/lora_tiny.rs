//! LoRA on the tiny random HF checkpoints of `tests/fixtures/hf` (Llama with a separate LM head,
//! Qwen2 with q/k/v biases and a tied head): cheap checks that need no downloaded asset.

mod common;

use std::path::PathBuf;

use burn::module::Module;
use burn::tensor::Device;
use pulserec_slm::weights::ModelWeights;
use pulserec_slm::{
    Llama, LlamaConfig, LoraConfig, LoraModel, LoraTarget, SlmError, TokenBatch, WeightMode,
};

fn tiny(arch: &str) -> (LlamaConfig, ModelWeights) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(arch);
    let cfg = LlamaConfig::from_hf_json(dir.join("config.json")).unwrap();
    let w = ModelWeights::from_hf_dir(&dir, &cfg).unwrap();
    (cfg, w)
}

fn all_targets() -> LoraConfig {
    LoraConfig {
        rank: 2,
        alpha: 5.0,
        dropout: 0.0,
        targets: LoraTarget::ALL.to_vec(),
        layers: None,
    }
}

/// Gives every adapter deterministic non-zero values (the fresh `B` is zero).
fn perturb(m: &mut LoraModel) {
    let (cfg, lora) = (m.config().clone(), m.lora_config().clone());
    let r = lora.rank;
    for layer in (0..cfg.num_layers).filter(|&l| lora.adapts_layer(l)) {
        for t in m.lora_config().targets.clone() {
            let (out, inp) = t.shape(&cfg);
            let wave = |n: usize, s: f32| {
                (0..n)
                    .map(|i| 0.2 * (s + 0.37 * i as f32).sin())
                    .collect::<Vec<_>>()
            };
            let a = wave(r * inp, layer as f32);
            let b = wave(out * r, 1.5 + layer as f32);
            m.set_adapter_weights(layer, t, &a, &b).unwrap();
        }
    }
}

fn llama_logits(cfg: &LlamaConfig, w: &ModelWeights, tokens: &[u32]) -> Vec<f32> {
    let m = Llama::new(cfg.clone(), w, WeightMode::Dense, &Device::flex()).unwrap();
    common::all_logits(&m, tokens)
}

const TOKENS: [u32; 9] = [5, 17, 99, 3, 64, 127, 8, 40, 2];

fn row(tokens: &[u32]) -> TokenBatch {
    TokenBatch::from_rows(&[(tokens.to_vec(), vec![0.0; tokens.len()])], 0).unwrap()
}

#[test]
fn zero_and_merged_adapters_match_the_inference_model() {
    for arch in ["llama", "qwen2"] {
        let (cfg, w) = tiny(arch);
        let mut m = LoraModel::new(&cfg, &w, &all_targets(), 1, &Device::flex()).unwrap();
        let zero = common::tensor_values(m.logits(&row(&TOKENS)).unwrap());
        let diff = common::max_abs_diff(&zero, &llama_logits(&cfg, &w, &TOKENS));
        assert!(diff < 1e-5, "{arch}: B = 0 differs from the base by {diff}");

        perturb(&mut m);
        let adapted = common::tensor_values(m.logits(&row(&TOKENS)).unwrap());
        let merged = llama_logits(&cfg, &m.merged_weights(&w).unwrap(), &TOKENS);
        let diff = common::max_abs_diff(&adapted, &merged);
        assert!(
            diff < 1e-5,
            "{arch}: merged differs from unmerged by {diff}"
        );
        assert!(
            common::max_abs_diff(&adapted, &zero) > 1e-2,
            "{arch}: the adapter changed nothing"
        );
    }
}

/// `-log softmax(logits)[target]` from plain logits.
fn nll(logits: &[f32], target: u32) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    max + sum.ln() - logits[target as usize] as f64
}

#[test]
fn masked_loss_is_the_hand_computed_mean_over_targets() {
    let (cfg, w) = tiny("qwen2");
    let mut m = LoraModel::new(&cfg, &w, &all_targets(), 2, &Device::flex()).unwrap();
    perturb(&mut m);
    let v = cfg.vocab_size;
    let a: Vec<u32> = TOKENS.to_vec();
    let b: Vec<u32> = vec![11, 12, 13, 14, 15];
    let mask_a = vec![0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0];
    let mask_b = vec![0.0, 0.0, 1.0, 1.0, 1.0];
    let batch = TokenBatch::from_rows(
        &[(a.clone(), mask_a.clone()), (b.clone(), mask_b.clone())],
        9,
    )
    .unwrap();
    assert_eq!(
        (batch.batch, batch.seq, batch.lengths.clone()),
        (2, 9, vec![9, 5])
    );
    let loss = m.loss(&batch).unwrap().into_scalar::<f32>() as f64;

    // By hand, from each row's own unpadded logits: target t is predicted at t - 1.
    let mut sum = 0.0;
    let mut n = 0;
    for (tokens, mask) in [(&a, &mask_a), (&b, &mask_b)] {
        let logits = common::tensor_values(m.logits(&row(tokens)).unwrap());
        for t in 1..tokens.len() {
            if mask[t] > 0.0 {
                sum += nll(&logits[(t - 1) * v..t * v], tokens[t]);
                n += 1;
            }
        }
    }
    let want = sum / n as f64;
    assert!(
        (loss - want).abs() < 1e-5,
        "loss {loss} vs hand-computed {want}"
    );

    // Tokens that are no target and precede none (after the last target, and the padding) do
    // not matter; the masked-out positions are not targets.
    let mut other = batch.clone();
    for t in 6..9 {
        other.tokens[t] = 100 + t as u32; // row 0 after its last target
    }
    for t in 5..9 {
        other.tokens[9 + t] = 1; // row 1's padding
    }
    let same = m.loss(&other).unwrap().into_scalar::<f32>() as f64;
    assert!((same - loss).abs() < 1e-6, "{same} vs {loss}");
    // Half weight on one target is a weighted mean.
    let mut weighted = batch.clone();
    weighted.loss_mask[4] = 0.5;
    let wl = m.loss(&weighted).unwrap().into_scalar::<f32>() as f64;
    assert!((wl - loss).abs() > 1e-6);
    // Unmasking the prompt changes the loss.
    let mut all = batch.clone();
    all.loss_mask[1] = 1.0;
    let al = m.loss(&all).unwrap().into_scalar::<f32>() as f64;
    assert!((al - loss).abs() > 1e-6);
}

#[test]
fn bad_batches_are_refused() {
    let (cfg, w) = tiny("llama");
    let m = LoraModel::new(&cfg, &w, &LoraConfig::paper(), 0, &Device::flex()).unwrap();
    let good = TokenBatch::from_rows(&[(vec![1, 2, 3], vec![0.0, 1.0, 1.0])], 0).unwrap();
    m.loss(&good).unwrap();
    let cases: Vec<(TokenBatch, &str)> = vec![
        (
            TokenBatch {
                loss_mask: vec![1.0, 1.0, 1.0],
                ..good.clone()
            },
            "position 0",
        ),
        (
            TokenBatch {
                lengths: vec![2],
                ..good.clone()
            },
            "within the row's 2 tokens",
        ),
        (
            TokenBatch {
                tokens: vec![1, 2, 128],
                ..good.clone()
            },
            "outside the vocabulary",
        ),
        (
            TokenBatch {
                loss_mask: vec![0.0; 3],
                ..good.clone()
            },
            "no position",
        ),
        (
            TokenBatch {
                loss_mask: vec![0.0, f32::NAN, 1.0],
                ..good.clone()
            },
            "loss mask NaN",
        ),
        (
            TokenBatch {
                batch: 2,
                ..good.clone()
            },
            "for 2 rows",
        ),
    ];
    for (batch, needle) in cases {
        match m.loss(&batch) {
            Err(e @ SlmError::InvalidBatch(_)) => assert!(e.to_string().contains(needle), "{e}"),
            other => panic!("expected a batch error about {needle}, got {other:?}"),
        }
    }
    assert!(TokenBatch::from_rows(&[(vec![1, 2], vec![0.0])], 0).is_err());
}

#[test]
fn adapters_for_other_layer_counts_or_shapes_are_refused() {
    let (cfg, w) = tiny("llama");
    let lora = LoraConfig::paper();
    let dir = tempfile::tempdir().unwrap();
    let two = LoraModel::new(&cfg, &w, &lora, 0, &Device::flex()).unwrap();
    two.save_adapter(dir.path(), "tiny-llama").unwrap();

    // The same checkpoint cut to one layer: the file has a layer too many.
    let mut one_cfg = cfg.clone();
    one_cfg.num_layers = 1;
    let mut one_w = w.clone();
    one_w.layers.truncate(1);
    let mut one = LoraModel::new(&one_cfg, &one_w, &lora, 0, &Device::flex()).unwrap();
    let e = one.load_adapter(dir.path()).unwrap_err();
    assert!(e.to_string().contains("outside the model (1 layers"), "{e}");

    // A one-layer adapter lacks layer 1 of the two-layer model.
    let dir1 = tempfile::tempdir().unwrap();
    one.save_adapter(dir1.path(), "tiny-llama-1").unwrap();
    let mut two = two;
    let e = two.load_adapter(dir1.path()).unwrap_err();
    assert!(
        e.to_string()
            .contains("missing tensor `base_model.model.model.layers.1."),
        "{e}"
    );

    // A tensor of the wrong shape.
    let file = dir.path().join("adapter_model.safetensors");
    let bytes = std::fs::read(&file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let wrong = vec![0u8; 4 * 8];
    let bad_name = LoraTarget::Q.tensor_name(0, true);
    let tensors: Vec<(String, safetensors::tensor::TensorView)> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| {
            if n == bad_name {
                let v = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    vec![2, 4],
                    &wrong,
                );
                (n, v.unwrap())
            } else {
                (n, t)
            }
        })
        .collect();
    let bad_dir = tempfile::tempdir().unwrap();
    safetensors::tensor::serialize_to_file(
        tensors,
        None,
        &bad_dir.path().join("adapter_model.safetensors"),
    )
    .unwrap();
    std::fs::copy(
        dir.path().join("adapter_config.json"),
        bad_dir.path().join("adapter_config.json"),
    )
    .unwrap();
    let e = two.load_adapter(bad_dir.path()).unwrap_err();
    assert!(
        e.to_string().contains("has shape [2, 4], expected [8, 32]"),
        "{e}"
    );
    // No adapter directory at all.
    assert!(matches!(
        two.load_adapter(&dir.path().join("nope")),
        Err(SlmError::Io { .. })
    ));
}

#[test]
fn dropout_acts_only_on_an_autodiff_device() {
    let (cfg, w) = tiny("llama");
    let lora = LoraConfig {
        dropout: 0.5,
        ..all_targets()
    };
    let mut m = LoraModel::new(&cfg, &w, &lora, 0, &Device::flex()).unwrap();
    perturb(&mut m);
    let mut mask = vec![1.0; TOKENS.len()];
    mask[0] = 0.0;
    let batch = TokenBatch::from_rows(&[(TOKENS.to_vec(), mask)], 0).unwrap();
    let plain = (0..2)
        .map(|_| m.loss(&batch).unwrap().into_scalar::<f32>())
        .collect::<Vec<_>>();
    assert_eq!(plain[0], plain[1]);
    let device = Device::flex().autodiff();
    device.seed(5);
    let train = m.clone().train();
    assert!(train.device().is_autodiff());
    let noisy = (0..2)
        .map(|_| train.loss(&batch).unwrap().into_scalar::<f32>())
        .collect::<Vec<_>>();
    assert_ne!(noisy[0], noisy[1]);
    // The inference copy of the trained model is deterministic again and equals the original.
    let valid = train.valid();
    assert_eq!(valid.loss(&batch).unwrap().into_scalar::<f32>(), plain[0]);
}

#[test]
fn adapters_on_the_top_layers_only_merge_save_and_load() {
    let (cfg, w) = tiny("llama");
    let top = all_targets().top_layers(1, cfg.num_layers);
    let last = cfg.num_layers - 1;
    assert_eq!(top.layers, Some(vec![last]));
    let mut m = LoraModel::new(&cfg, &w, &top, 1, &Device::flex()).unwrap();
    perturb(&mut m);
    assert!(
        m.adapter_weights(0, LoraTarget::Q).is_err(),
        "no adapter below the top"
    );
    let names: Vec<String> = m.lora_parameters().into_iter().map(|(n, _)| n).collect();
    assert!(
        names.iter().all(|n| n.contains(&format!("layers.{last}."))),
        "{names:?}"
    );

    // Merging changes only the adapted layer, and equals the unmerged forward.
    let merged = m.merged_weights(&w).unwrap();
    assert_eq!(
        merged.layers[0].q.to_f32().unwrap(),
        w.layers[0].q.to_f32().unwrap()
    );
    let adapted = common::tensor_values(m.logits(&row(&TOKENS)).unwrap());
    let diff = common::max_abs_diff(&adapted, &llama_logits(&cfg, &merged, &TOKENS));
    assert!(diff < 1e-5, "merged differs from unmerged by {diff}");

    // PEFT's `layers_to_transform` round-trips; a model adapting other layers refuses the file.
    let dir = tempfile::tempdir().unwrap();
    m.save_adapter(dir.path(), "tiny").unwrap();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["layers_to_transform"], serde_json::json!([last]));
    let mut again = LoraModel::new(&cfg, &w, &top, 7, &Device::flex()).unwrap();
    again.load_adapter(dir.path()).unwrap();
    let loaded = common::tensor_values(again.logits(&row(&TOKENS)).unwrap());
    assert!(common::max_abs_diff(&adapted, &loaded) < 1e-6);
    let mut every = LoraModel::new(&cfg, &w, &all_targets(), 7, &Device::flex()).unwrap();
    let e = every.load_adapter(dir.path()).unwrap_err().to_string();
    assert!(e.contains("layers_to_transform"), "{e}");
}

/// Target log-probabilities of `batch` as plain numbers.
fn target_log_probs(m: &LoraModel, batch: &TokenBatch) -> Vec<f32> {
    m.target_log_probs(batch)
        .unwrap()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn branches_of_a_prefix_score_as_if_each_followed_it_alone() {
    let prefixes: [&[u32]; 2] = [&[5, 17, 99, 3], &[7, 1]];
    let branches: [&[&[u32]]; 2] = [
        &[&[64, 127, 8], &[40, 2], &[11, 12, 13, 14]],
        &[&[9], &[33, 21]],
    ];
    for arch in ["llama", "qwen2"] {
        let (cfg, w) = tiny(arch);
        let mut m = LoraModel::new(&cfg, &w, &all_targets(), 0, &Device::flex()).unwrap();
        perturb(&mut m);
        // Each continuation after its prefix in a row of its own.
        let mut plain = Vec::new();
        for (prefix, conts) in prefixes.iter().zip(branches) {
            for c in conts {
                let tokens = [*prefix, *c].concat();
                let mask = [vec![0.0; prefix.len()], vec![1.0; c.len()]].concat();
                plain.push((tokens, mask));
            }
        }
        let want = target_log_probs(&m, &TokenBatch::from_rows(&plain, 0).unwrap());
        // Each prefix once, its continuations after it as segments 1, 2, ... (rows of different
        // lengths, so the second is padded).
        let (mut rows, mut segments) = (Vec::new(), Vec::new());
        for (prefix, conts) in prefixes.iter().zip(branches) {
            let (mut tokens, mut mask, mut seg) = (
                prefix.to_vec(),
                vec![0.0; prefix.len()],
                vec![0u16; prefix.len()],
            );
            for (k, c) in conts.iter().enumerate() {
                tokens.extend_from_slice(c);
                mask.extend(vec![1.0; c.len()]);
                seg.extend(vec![k as u16 + 1; c.len()]);
            }
            rows.push((tokens, mask));
            segments.push(seg);
        }
        let batch = TokenBatch::from_rows(&rows, 0)
            .unwrap()
            .with_segments(&segments)
            .unwrap();
        let got = target_log_probs(&m, &batch);
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() < 1e-4, "{arch} target {i}: {g} vs {w}");
        }
        // A wrong number of segment ids is refused, naming the row.
        let err = TokenBatch::from_rows(&rows, 0)
            .unwrap()
            .with_segments(&[segments[0].clone(), vec![0]])
            .unwrap_err();
        assert!(err.to_string().contains("row 1"), "{err}");
    }
}
