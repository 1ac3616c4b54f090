//! Model hyper-parameters, read from GGUF metadata or an HF `config.json`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SlmError};
use crate::gguf::GgufFile;

/// Which family a checkpoint belongs to (they differ in weight names and biases only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Architecture {
    /// Llama / SmolLM / Mistral-style decoder.
    Llama,
    /// Qwen2: Llama plus q/k/v biases.
    Qwen2,
    /// Phi-3: fused `qkv_proj` and `gate_up_proj`.
    Phi3,
}

impl Architecture {
    /// Parses a GGUF `general.architecture` or HF `model_type` name.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "llama" | "mistral" => Ok(Self::Llama),
            "qwen2" => Ok(Self::Qwen2),
            "phi3" => Ok(Self::Phi3),
            other => Err(SlmError::UnsupportedArchitecture(other.to_string())),
        }
    }
}

/// Hyper-parameters of a Llama-family decoder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Weight naming / bias family.
    pub architecture: Architecture,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Decoder blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `num_heads`).
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f32,
    /// Longest supported sequence (prompt plus generated tokens).
    pub max_position: usize,
    /// Whether the LM head reuses the token embedding.
    pub tie_embeddings: bool,
}

impl LlamaConfig {
    /// SmolLM2-135M(-Instruct): 30 layers, width 576, 9 heads / 3 KV heads, vocab 49,152.
    pub fn smollm2_135m() -> Self {
        Self {
            architecture: Architecture::Llama,
            vocab_size: 49_152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_layers: 30,
            num_heads: 9,
            num_kv_heads: 3,
            head_dim: 64,
            rope_theta: 100_000.0,
            rms_norm_eps: 1e-5,
            max_position: 8192,
            tie_embeddings: true,
        }
    }

    /// Reads `<arch>.*` keys of a GGUF file.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let arch_name = gguf.str("general.architecture")?.to_string();
        let architecture = Architecture::parse(&arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let hidden_size = gguf.usize(&key("embedding_length"))?;
        let num_heads = gguf.usize(&key("attention.head_count"))?;
        let num_kv_heads = gguf
            .usize(&key("attention.head_count_kv"))
            .unwrap_or(num_heads);
        let vocab_size = match gguf.usize(&key("vocab_size")) {
            Ok(v) => v,
            Err(_) => gguf.str_array("tokenizer.ggml.tokens")?.len(),
        };
        let head_dim = match gguf.usize(&key("attention.key_length")) {
            Ok(v) => v,
            Err(_) => hidden_size / num_heads.max(1),
        };
        let cfg = Self {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size: gguf.usize(&key("feed_forward_length"))?,
            num_layers: gguf.usize(&key("block_count"))?,
            num_heads,
            num_kv_heads,
            head_dim,
            rope_theta: gguf.f64(&key("rope.freq_base")).unwrap_or(10_000.0) as f32,
            rms_norm_eps: gguf.f64(&key("attention.layer_norm_rms_epsilon"))? as f32,
            max_position: gguf.usize(&key("context_length"))?,
            tie_embeddings: gguf.tensor("output.weight").is_none(),
        };
        cfg.validate(gguf.source())?;
        Ok(cfg)
    }

    /// Reads an HF `config.json`.
    pub fn from_hf_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bad = |reason: String| SlmError::HfFormat {
            file: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|source| SlmError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let int = |k: &str| {
            v.get(k)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| bad(format!("missing integer `{k}`")))
        };
        let architecture = Architecture::parse(
            v.get("model_type")
                .and_then(|x| x.as_str())
                .ok_or_else(|| bad("missing `model_type`".into()))?,
        )?;
        let hidden_size = int("hidden_size")?;
        let num_heads = int("num_attention_heads")?;
        // transformers 5 nests RoPE settings in `rope_parameters`; older files use
        // `rope_theta` / `rope_scaling`. Only plain RoPE over the whole head is implemented.
        let rope = v.get("rope_parameters").filter(|r| r.is_object());
        let scaling = rope.or_else(|| v.get("rope_scaling").filter(|r| r.is_object()));
        if let Some(kind) = scaling
            .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
            .and_then(|t| t.as_str())
            .filter(|t| *t != "default")
        {
            return Err(bad(format!("RoPE scaling `{kind}` is not supported")));
        }
        let partial = scaling
            .and_then(|r| r.get("partial_rotary_factor"))
            .or_else(|| v.get("partial_rotary_factor"))
            .and_then(|x| x.as_f64())
            .unwrap_or(1.0);
        if partial != 1.0 {
            return Err(bad(format!(
                "partial rotary factor {partial} is not supported"
            )));
        }
        let cfg = Self {
            architecture,
            vocab_size: int("vocab_size")?,
            hidden_size,
            intermediate_size: int("intermediate_size")?,
            num_layers: int("num_hidden_layers")?,
            num_heads,
            num_kv_heads: int("num_key_value_heads").unwrap_or(num_heads),
            head_dim: int("head_dim").unwrap_or(hidden_size / num_heads.max(1)),
            rope_theta: rope
                .and_then(|r| r.get("rope_theta"))
                .or_else(|| v.get("rope_theta"))
                .and_then(|x| x.as_f64())
                .unwrap_or(10_000.0) as f32,
            rms_norm_eps: v
                .get("rms_norm_eps")
                .and_then(|x| x.as_f64())
                .unwrap_or(1e-6) as f32,
            max_position: int("max_position_embeddings")?,
            tie_embeddings: v
                .get("tie_word_embeddings")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
        };
        cfg.validate(&path.display().to_string())?;
        Ok(cfg)
    }

    fn validate(&self, source: &str) -> Result<()> {
        let bad = |reason: &str| SlmError::Metadata {
            file: source.to_string(),
            key: "model shape".into(),
            reason: reason.to_string(),
        };
        if self.num_heads == 0
            || self.num_kv_heads == 0
            || !self.num_heads.is_multiple_of(self.num_kv_heads)
        {
            return Err(bad(
                "head counts must be positive and heads divisible by KV heads",
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return Err(bad("head dimension must be even and positive"));
        }
        if self.hidden_size == 0 || self.vocab_size == 0 || self.num_layers == 0 {
            return Err(bad("zero width, vocabulary or depth"));
        }
        Ok(())
    }

    /// Query heads per KV head.
    pub fn group_size(&self) -> usize {
        self.num_heads / self.num_kv_heads
    }
}
