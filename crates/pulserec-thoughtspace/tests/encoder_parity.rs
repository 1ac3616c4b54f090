//! Parity of `SentenceEncoder` with sentence-transformers 6.2 / transformers on torch 2.9 (CPU).
//!
//! The reference numbers come from `scripts/thoughtspace/make_parity_fixture.py`.
//! Tolerance: cosine to the reference >= 0.9999 and max |diff| <= 1e-4 per sentence.

mod common;

use burn::tensor::Device;
use pulserec_core::TextEncoder;
use pulserec_thoughtspace::{EncoderOptions, Pooling, SentenceEncoder};
use serde_json::Value;

fn load_fixture() -> Value {
    let text = std::fs::read_to_string(common::fixture("minilm_parity.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn rows(v: &Value, key: &str) -> Vec<Vec<f32>> {
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn sentences(v: &Value) -> Vec<String> {
    v["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn assert_close(ours: &ndarray::Array2<f32>, reference: &[Vec<f32>], what: &str) {
    let (mut worst_cos, mut worst_diff) = (1.0f32, 0.0f32);
    for (i, want) in reference.iter().enumerate() {
        let got = ours.row(i);
        let dot: f32 = got.iter().zip(want).map(|(a, b)| a * b).sum();
        let na: f32 = got.iter().map(|a| a * a).sum::<f32>().sqrt();
        let nb: f32 = want.iter().map(|b| b * b).sum::<f32>().sqrt();
        let cosine = dot / (na * nb);
        let max_diff = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            cosine >= 0.9999 && max_diff <= 1e-4,
            "{what} sentence {i}: cosine {cosine}, max diff {max_diff}"
        );
        worst_cos = worst_cos.min(cosine);
        worst_diff = worst_diff.max(max_diff);
    }
    eprintln!("{what}: min cosine {worst_cos}, max |diff| {worst_diff:e}");
}

#[test]
fn tokenizer_matches_hf_ids() {
    let Some(encoder) = common::minilm() else {
        return;
    };
    let fx = load_fixture();
    let texts = sentences(&fx);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ids = encoder.tokenizer().encode_ids(&refs).unwrap();
    for (i, want) in fx["token_ids"].as_array().unwrap().iter().enumerate() {
        let want: Vec<u32> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids[i], want, "sentence {i}");
    }
}

#[test]
fn mean_pooled_normalized_matches_sentence_transformers() {
    let Some(encoder) = common::minilm() else {
        return;
    };
    assert_eq!(encoder.pooling(), Pooling::Mean);
    assert!(encoder.normalizes());
    let fx = load_fixture();
    let texts = sentences(&fx);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ours = encoder.encode(&refs).unwrap();
    assert_eq!(ours.shape(), &[texts.len(), 384]);
    assert_close(&ours, &rows(&fx, "mean_normalized"), "mean+norm");
    // One padded batch (not length-sorted chunks) gives the same numbers.
    let one = encoder.embed(&refs).unwrap();
    let one = ndarray::Array2::from_shape_vec(
        (texts.len(), 384),
        one.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap(),
    )
    .unwrap();
    assert_close(&one, &rows(&fx, "mean_normalized"), "single batch");
}

#[test]
fn cls_pooling_matches_transformers() {
    let Some(dir) = common::asset("all-minilm-l6-v2") else {
        return;
    };
    let options = EncoderOptions {
        pooling: Some(Pooling::Cls),
        normalize: Some(false),
        batch_size: Some(4),
        ..Default::default()
    };
    let encoder = SentenceEncoder::from_dir_with(&dir, &options, &Device::flex()).unwrap();
    let fx = load_fixture();
    let texts = sentences(&fx);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ours = encoder.encode(&refs).unwrap();
    assert_close(&ours, &rows(&fx, "cls_raw"), "cls");
}

#[test]
fn packed_forward_equals_the_padded_forward_on_real_tokens() {
    let Some(encoder) = common::minilm() else {
        return;
    };
    let fx = load_fixture();
    let texts = sentences(&fx);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let batch = encoder.tokenizer().batch(&refs).unwrap();
    assert!(
        batch.keep.iter().any(|k| !k),
        "the fixture has texts of different lengths"
    );
    let device = Device::flex();
    let packing =
        pulserec_thoughtspace::bert::Packing::new(&batch.keep, batch.batch, batch.seq, &device)
            .unwrap();
    assert_eq!(packing.tokens(), batch.keep.iter().filter(|&&k| k).count());
    let values = |t: burn::tensor::Tensor<3>| {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    };
    let (ids, pad, _) = batch.tensors(&device);
    let padded = values(encoder.model().forward(ids.clone(), pad.clone()));
    let packed = values(encoder.model().forward_packed(ids, pad, &packing));
    let hidden = padded.len() / batch.keep.len();
    let mut worst = 0.0f32;
    for (slot, _) in batch.keep.iter().enumerate().filter(|(_, k)| **k) {
        for d in 0..hidden {
            worst = worst.max((padded[slot * hidden + d] - packed[slot * hidden + d]).abs());
        }
    }
    assert!(worst < 1e-4, "max |padded - packed| {worst}");
    // A text with no tokens cannot be packed.
    assert!(
        pulserec_thoughtspace::bert::Packing::new(&[true, false, false, false], 2, 2, &device)
            .is_err()
    );
}

/// The DistilBERT layout (the paper's encoder) on real weights: MiniLM's checkpoint rewritten
/// under DistilBERT's names and `config.json` spelling, with the token-type-0 row (which
/// DistilBERT does not have) folded into the position table, must embed exactly like MiniLM.
#[test]
fn distilbert_layout_of_minilm_embeds_like_minilm() {
    use pulserec_core::tensor_file::{OwnedTensor, TensorFile, write_f32};
    let Some(src) = common::asset("all-minilm-l6-v2") else {
        return;
    };
    let minilm = SentenceEncoder::from_dir(&src, &Device::flex()).unwrap();
    let c = minilm.config().clone();
    let (h, ffn) = (c.hidden_size, c.intermediate_size);
    let weights = TensorFile::open(&src.join("model.safetensors")).unwrap();
    let mut out = std::collections::HashMap::new();
    let mut copy = |to: String, from: String, shape: Vec<usize>| {
        let values = weights.f32(&from, &shape).unwrap();
        out.insert(to, OwnedTensor::new(&values, shape));
    };
    copy(
        "embeddings.word_embeddings.weight".into(),
        "embeddings.word_embeddings.weight".into(),
        vec![c.vocab_size, h],
    );
    for p in ["weight", "bias"] {
        copy(
            format!("embeddings.LayerNorm.{p}"),
            format!("embeddings.LayerNorm.{p}"),
            vec![h],
        );
    }
    for i in 0..c.num_layers {
        let (d, b) = (
            format!("transformer.layer.{i}."),
            format!("encoder.layer.{i}."),
        );
        for (to, from, rows, cols) in [
            ("attention.q_lin", "attention.self.query", h, h),
            ("attention.k_lin", "attention.self.key", h, h),
            ("attention.v_lin", "attention.self.value", h, h),
            ("attention.out_lin", "attention.output.dense", h, h),
            ("ffn.lin1", "intermediate.dense", ffn, h),
            ("ffn.lin2", "output.dense", h, ffn),
        ] {
            copy(
                format!("{d}{to}.weight"),
                format!("{b}{from}.weight"),
                vec![rows, cols],
            );
            copy(
                format!("{d}{to}.bias"),
                format!("{b}{from}.bias"),
                vec![rows],
            );
        }
        for (to, from) in [
            ("sa_layer_norm", "attention.output.LayerNorm"),
            ("output_layer_norm", "output.LayerNorm"),
        ] {
            for p in ["weight", "bias"] {
                copy(format!("{d}{to}.{p}"), format!("{b}{from}.{p}"), vec![h]);
            }
        }
    }
    let positions = c.max_position_embeddings;
    let mut pos = weights
        .f32("embeddings.position_embeddings.weight", &[positions, h])
        .unwrap();
    let types = weights
        .f32(
            "embeddings.token_type_embeddings.weight",
            &[c.type_vocab_size, h],
        )
        .unwrap();
    for row in pos.chunks_exact_mut(h) {
        row.iter_mut().zip(&types[..h]).for_each(|(p, t)| *p += t);
    }
    out.insert(
        "embeddings.position_embeddings.weight".into(),
        OwnedTensor::new(&pos, vec![positions, h]),
    );

    let dir = tempfile::tempdir().unwrap();
    write_f32(&dir.path().join("model.safetensors"), out).unwrap();
    let config = serde_json::json!({
        "model_type": "distilbert", "vocab_size": c.vocab_size, "dim": h, "n_layers": c.num_layers,
        "n_heads": c.num_heads, "hidden_dim": ffn, "activation": "gelu",
        "max_position_embeddings": positions, "dropout": 0.1, "attention_dropout": 0.1
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    for f in [
        "tokenizer.json",
        "modules.json",
        "sentence_bert_config.json",
    ] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("1_Pooling")).unwrap();
    std::fs::copy(
        src.join("1_Pooling/config.json"),
        dir.path().join("1_Pooling/config.json"),
    )
    .unwrap();

    let distil = SentenceEncoder::from_dir(dir.path(), &Device::flex()).unwrap();
    assert_eq!(
        distil.config().architecture,
        pulserec_thoughtspace::Architecture::DistilBert
    );
    let fx = load_fixture();
    let texts = sentences(&fx);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let want = minilm.encode(&refs).unwrap();
    let got = distil.encode(&refs).unwrap();
    let worst = (&got - &want).iter().fold(0.0f32, |m, d| m.max(d.abs()));
    assert!(worst < 1e-5, "max |distilbert layout - minilm| {worst}");
}
