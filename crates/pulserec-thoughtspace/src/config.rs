//! Model configuration: HF `config.json` (BERT and DistilBERT spellings), pooling and the
//! sentence-transformers normalisation flag.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Result, ThoughtSpaceError};

/// Which weight-naming scheme (and embedding layout) a checkpoint uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// `BertModel` (MiniLM, BERT, ...): token-type embeddings, `encoder.layer.N.*` names.
    Bert,
    /// `DistilBertModel`: no token types, `transformer.layer.N.*` names.
    DistilBert,
}

/// The feed-forward activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// Exact (erf) GELU, HF's `"gelu"`.
    Gelu,
    /// Tanh-approximated GELU (`"gelu_new"`, `"gelu_pytorch_tanh"`).
    GeluTanh,
    /// ReLU.
    Relu,
}

/// Shape and numerics of a BERT-family encoder, read from an HF `config.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Weight naming and embedding layout.
    pub architecture: Architecture,
    /// Vocabulary size (rows of the word-embedding table).
    pub vocab_size: usize,
    /// Hidden width.
    pub hidden_size: usize,
    /// Number of transformer layers.
    pub num_layers: usize,
    /// Number of attention heads; must divide `hidden_size`.
    pub num_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Feed-forward activation.
    pub activation: Activation,
    /// Rows of the position-embedding table (longest input the model can take).
    pub max_position_embeddings: usize,
    /// Rows of the token-type table (0 for DistilBERT).
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub layer_norm_eps: f64,
    /// Dropout on hidden states during training.
    pub hidden_dropout: f64,
    /// Dropout on attention probabilities during training.
    pub attention_dropout: f64,
}

impl BertConfig {
    /// all-MiniLM-L6-v2: 6 layers, 384 wide, 12 heads.
    pub fn minilm_l6() -> Self {
        Self {
            architecture: Architecture::Bert,
            vocab_size: 30522,
            hidden_size: 384,
            num_layers: 6,
            num_heads: 12,
            intermediate_size: 1536,
            activation: Activation::Gelu,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            hidden_dropout: 0.1,
            attention_dropout: 0.1,
        }
    }

    /// distilbert-base-uncased (the paper's encoder): 6 layers, 768 wide, 12 heads.
    pub fn distilbert_base() -> Self {
        Self {
            architecture: Architecture::DistilBert,
            vocab_size: 30522,
            hidden_size: 768,
            num_layers: 6,
            num_heads: 12,
            intermediate_size: 3072,
            activation: Activation::Gelu,
            max_position_embeddings: 512,
            type_vocab_size: 0,
            layer_norm_eps: 1e-12,
            hidden_dropout: 0.1,
            attention_dropout: 0.1,
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Reads an HF `config.json` in either the BERT or the DistilBERT spelling.
    pub fn from_hf_file(path: &Path) -> Result<Self> {
        let value = read_json(path)?;
        Self::from_hf_value(&value, path)
    }

    /// Interprets an already parsed HF config; `path` is only used in error messages.
    pub fn from_hf_value(value: &Value, path: &Path) -> Result<Self> {
        let model_type = value
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        let is_distil = model_type == "distilbert"
            || (model_type.is_empty() && value.get("n_layers").is_some());
        let field = |names: &[&str]| -> Result<&Value> {
            names
                .iter()
                .find_map(|n| value.get(*n))
                .ok_or_else(|| config_error(path, names[0], "missing"))
        };
        let usize_field = |names: &[&str]| -> Result<usize> {
            let v = field(names)?;
            v.as_u64()
                .filter(|&n| n > 0)
                .map(|n| n as usize)
                .ok_or_else(|| config_error(path, names[0], "expected a positive integer"))
        };
        let f64_or = |names: &[&str], default: f64| -> Result<f64> {
            match names.iter().find_map(|n| value.get(*n)) {
                None => Ok(default),
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| config_error(path, names[0], "expected a number")),
            }
        };
        let act_name = field(&["hidden_act", "activation"])
            .ok()
            .and_then(Value::as_str)
            .unwrap_or("gelu");
        let activation = match act_name {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => {
                return Err(config_error(
                    path,
                    "hidden_act",
                    &format!("unsupported activation `{other}`"),
                ));
            }
        };
        let config = if is_distil {
            if value.get("sinusoidal_pos_embds").and_then(Value::as_bool) == Some(true) {
                tracing::debug!(
                    "{}: sinusoidal_pos_embds is set; positions are read from the weights file",
                    path.display()
                );
            }
            Self {
                architecture: Architecture::DistilBert,
                vocab_size: usize_field(&["vocab_size"])?,
                hidden_size: usize_field(&["dim", "hidden_size"])?,
                num_layers: usize_field(&["n_layers", "num_hidden_layers"])?,
                num_heads: usize_field(&["n_heads", "num_attention_heads"])?,
                intermediate_size: usize_field(&["hidden_dim", "intermediate_size"])?,
                activation,
                max_position_embeddings: usize_field(&["max_position_embeddings"])?,
                type_vocab_size: 0,
                layer_norm_eps: 1e-12,
                hidden_dropout: f64_or(&["dropout"], 0.1)?,
                attention_dropout: f64_or(&["attention_dropout"], 0.1)?,
            }
        } else {
            if !model_type.is_empty() && !matches!(model_type, "bert" | "roberta" | "xlm-roberta") {
                return Err(config_error(
                    path,
                    "model_type",
                    &format!("`{model_type}` is not a BERT-family encoder"),
                ));
            }
            let pos_type = value
                .get("position_embedding_type")
                .and_then(Value::as_str)
                .unwrap_or("absolute");
            if pos_type != "absolute" {
                return Err(config_error(
                    path,
                    "position_embedding_type",
                    &format!("only `absolute` is supported, found `{pos_type}`"),
                ));
            }
            Self {
                architecture: Architecture::Bert,
                vocab_size: usize_field(&["vocab_size"])?,
                hidden_size: usize_field(&["hidden_size"])?,
                num_layers: usize_field(&["num_hidden_layers"])?,
                num_heads: usize_field(&["num_attention_heads"])?,
                intermediate_size: usize_field(&["intermediate_size"])?,
                activation,
                max_position_embeddings: usize_field(&["max_position_embeddings"])?,
                type_vocab_size: value
                    .get("type_vocab_size")
                    .and_then(Value::as_u64)
                    .unwrap_or(2) as usize,
                layer_norm_eps: f64_or(&["layer_norm_eps"], 1e-12)?,
                hidden_dropout: f64_or(&["hidden_dropout_prob"], 0.1)?,
                attention_dropout: f64_or(&["attention_probs_dropout_prob"], 0.1)?,
            }
        };
        config.validate(path)?;
        Ok(config)
    }

    /// Checks the invariants the model relies on.
    pub fn validate(&self, path: &Path) -> Result<()> {
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return Err(config_error(
                path,
                "num_attention_heads",
                &format!(
                    "{} heads do not divide hidden size {}",
                    self.num_heads, self.hidden_size
                ),
            ));
        }
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout),
            ("attention_probs_dropout_prob", self.attention_dropout),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(config_error(path, name, "dropout must lie in [0, 1)"));
            }
        }
        Ok(())
    }
}

/// How token states become one sentence vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The first token's state (`[CLS]`); the paper's choice with DistilBERT.
    Cls,
    /// The mean of the non-padding token states (sentence-transformers' usual choice).
    Mean,
}

impl Pooling {
    /// Reads a sentence-transformers `1_Pooling/config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let value = read_json(path)?;
        let flag = |name: &str| value.get(name).and_then(Value::as_bool).unwrap_or(false);
        match (
            flag("pooling_mode_cls_token"),
            flag("pooling_mode_mean_tokens"),
        ) {
            (true, false) => Ok(Pooling::Cls),
            (false, true) => Ok(Pooling::Mean),
            _ => Err(config_error(
                path,
                "pooling_mode_*",
                "exactly one of pooling_mode_cls_token / pooling_mode_mean_tokens must be true",
            )),
        }
    }
}

/// Reads and parses a JSON file, naming it in errors.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| ThoughtSpaceError::io(path, e))?;
    serde_json::from_str(&text).map_err(|source| ThoughtSpaceError::Json {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn config_error(path: &Path, field: &str, reason: &str) -> ThoughtSpaceError {
    ThoughtSpaceError::Config {
        path: PathBuf::from(path),
        field: field.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_both_spellings() {
        let p = Path::new("config.json");
        let bert = json!({"model_type": "bert", "vocab_size": 30522, "hidden_size": 384,
            "num_hidden_layers": 6, "num_attention_heads": 12, "intermediate_size": 1536,
            "hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2,
            "layer_norm_eps": 1e-12});
        assert_eq!(
            BertConfig::from_hf_value(&bert, p).unwrap(),
            BertConfig::minilm_l6()
        );
        let distil = json!({"model_type": "distilbert", "vocab_size": 30522, "dim": 768,
            "n_layers": 6, "n_heads": 12, "hidden_dim": 3072, "activation": "gelu",
            "max_position_embeddings": 512, "dropout": 0.1, "attention_dropout": 0.1});
        assert_eq!(
            BertConfig::from_hf_value(&distil, p).unwrap(),
            BertConfig::distilbert_base()
        );
    }

    #[test]
    fn bad_configs_name_the_field() {
        let p = Path::new("x/config.json");
        let err = BertConfig::from_hf_value(&json!({"model_type": "bert"}), p).unwrap_err();
        assert!(err.to_string().contains("vocab_size"), "{err}");
        let heads = json!({"model_type": "bert", "vocab_size": 10, "hidden_size": 10,
            "num_hidden_layers": 1, "num_attention_heads": 3, "intermediate_size": 4,
            "max_position_embeddings": 8});
        let err = BertConfig::from_hf_value(&heads, p).unwrap_err();
        assert!(err.to_string().contains("num_attention_heads"), "{err}");
        let llama = json!({"model_type": "llama"});
        assert!(BertConfig::from_hf_value(&llama, p).is_err());
    }
}
