//! LoRA adapter settings and the PEFT adapter files (`adapter_config.json`,
//! `adapter_model.safetensors`).
//!
//! The trainable decoder that uses them is [`crate::LoraModel`]; this module holds what can be
//! read and written without a model: the configuration, the target names, and the file format.

use std::fmt;
use std::path::{Path, PathBuf};

use pulserec_core::tensor_file::TensorFileError;
use serde::{Deserialize, Serialize};

use crate::config::LlamaConfig;
use crate::error::{Result, SlmError};

/// File name of the adapter tensors inside an adapter directory (PEFT's name).
pub const ADAPTER_WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// File name of the adapter configuration inside an adapter directory (PEFT's name).
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";

/// A projection of the decoder block that can carry an adapter.
///
/// Serialised with PEFT's module names (`q_proj`, ..., `down_proj`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LoraTarget {
    /// Attention query projection.
    #[serde(rename = "q_proj")]
    Q,
    /// Attention key projection.
    #[serde(rename = "k_proj")]
    K,
    /// Attention value projection.
    #[serde(rename = "v_proj")]
    V,
    /// Attention output projection.
    #[serde(rename = "o_proj")]
    O,
    /// SwiGLU gate projection.
    #[serde(rename = "gate_proj")]
    Gate,
    /// SwiGLU up projection.
    #[serde(rename = "up_proj")]
    Up,
    /// SwiGLU down projection.
    #[serde(rename = "down_proj")]
    Down,
}

impl LoraTarget {
    /// Every target, in block order.
    pub const ALL: [LoraTarget; 7] = [
        Self::Q,
        Self::K,
        Self::V,
        Self::O,
        Self::Gate,
        Self::Up,
        Self::Down,
    ];

    /// Position in [`LoraTarget::ALL`] (block order).
    pub fn index(self) -> usize {
        self as usize
    }

    /// PEFT / HF module name (`q_proj`, ...).
    pub fn peft_name(self) -> &'static str {
        match self {
            Self::Q => "q_proj",
            Self::K => "k_proj",
            Self::V => "v_proj",
            Self::O => "o_proj",
            Self::Gate => "gate_proj",
            Self::Up => "up_proj",
            Self::Down => "down_proj",
        }
    }

    /// Parses a PEFT module name.
    pub fn from_peft_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.peft_name() == name)
    }

    /// `self_attn` or `mlp`: the HF sub-module holding the projection.
    fn parent(self) -> &'static str {
        match self {
            Self::Q | Self::K | Self::V | Self::O => "self_attn",
            Self::Gate | Self::Up | Self::Down => "mlp",
        }
    }

    /// `(out, in)` features of this projection in a model of shape `cfg`.
    pub fn shape(self, cfg: &LlamaConfig) -> (usize, usize) {
        let (d, q, kv) = (
            cfg.hidden_size,
            cfg.num_heads * cfg.head_dim,
            cfg.num_kv_heads * cfg.head_dim,
        );
        match self {
            Self::Q => (q, d),
            Self::K | Self::V => (kv, d),
            Self::O => (d, q),
            Self::Gate | Self::Up => (cfg.intermediate_size, d),
            Self::Down => (d, cfg.intermediate_size),
        }
    }

    /// PEFT tensor name of this target's `lora_A` (`a = true`) or `lora_B` weight in `layer`.
    pub fn tensor_name(self, layer: usize, a: bool) -> String {
        format!(
            "base_model.model.model.layers.{layer}.{}.{}.lora_{}.weight",
            self.parent(),
            self.peft_name(),
            if a { "A" } else { "B" }
        )
    }
}

impl fmt::Display for LoraTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.peft_name())
    }
}

/// LoRA hyper-parameters: `W x + (alpha / rank) · B A dropout(x)` on each target projection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Rank `r` of the update (`A` is `[r, in]`, `B` is `[out, r]`).
    pub rank: usize,
    /// Scaling numerator; the update is scaled by `alpha / rank`.
    pub alpha: f32,
    /// Dropout on the adapter's input (training only), as PEFT's `lora_dropout`.
    pub dropout: f32,
    /// Projections that carry an adapter, in every adapted layer.
    pub targets: Vec<LoraTarget>,
    /// The layers that carry adapters (PEFT's `layers_to_transform`); `None`: every layer.
    /// Adapting only the top layers makes training cheaper: nothing below the lowest adapted
    /// layer is recorded for the backward pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<usize>>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self::paper()
    }
}

impl LoraConfig {
    /// The paper's adapter: rank 8, alpha 16, dropout 0.05, on q/k/v/o.
    pub fn paper() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            dropout: 0.05,
            targets: vec![LoraTarget::Q, LoraTarget::K, LoraTarget::V, LoraTarget::O],
            layers: None,
        }
    }

    /// The same adapter on the top `k` of `num_layers` layers only (all of them when `k` is
    /// at least `num_layers`).
    pub fn top_layers(mut self, k: usize, num_layers: usize) -> Self {
        self.layers = (k < num_layers).then(|| (num_layers - k..num_layers).collect());
        self
    }

    /// Whether `layer` carries adapters.
    pub fn adapts_layer(&self, layer: usize) -> bool {
        self.layers.as_ref().is_none_or(|l| l.contains(&layer))
    }

    /// Checks [`LoraConfig::layers`] against a model of `num_layers` layers.
    pub fn validate_layers(&self, num_layers: usize) -> Result<()> {
        if let Some(bad) = self
            .layers
            .as_ref()
            .and_then(|l| l.iter().find(|&&i| i >= num_layers))
        {
            return Err(SlmError::InvalidLoraConfig(format!(
                "layer {bad} in `layers` is outside the model's {num_layers} layers"
            )));
        }
        Ok(())
    }

    /// The update's scale, `alpha / rank`.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }

    /// Rejects settings that cannot build an adapter (zero rank, no targets, repeated targets,
    /// dropout outside `[0, 1)`, non-finite alpha).
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(SlmError::InvalidLoraConfig(reason));
        if self.rank == 0 {
            return bad("rank must be positive".into());
        }
        if !self.alpha.is_finite() {
            return bad(format!("alpha {} is not finite", self.alpha));
        }
        if !(self.dropout.is_finite() && (0.0..1.0).contains(&self.dropout)) {
            return bad(format!("dropout {} is outside [0, 1)", self.dropout));
        }
        if self.targets.is_empty() {
            return bad("no target modules".into());
        }
        let mut seen = self.targets.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != self.targets.len() {
            return bad(format!("repeated target modules in {:?}", self.targets));
        }
        if let Some(layers) = &self.layers {
            let mut seen = layers.clone();
            seen.sort_unstable();
            seen.dedup();
            if layers.is_empty() || seen.len() != layers.len() {
                return bad(format!("`layers` {layers:?} is empty or repeats a layer"));
            }
        }
        Ok(())
    }

    /// Whether `target` carries an adapter (in the adapted layers).
    pub fn has_target(&self, target: LoraTarget) -> bool {
        self.targets.contains(&target)
    }

    /// Whether `target` of `layer` carries an adapter.
    pub fn adapts(&self, layer: usize, target: LoraTarget) -> bool {
        self.has_target(target) && self.adapts_layer(layer)
    }

    /// Reads the configuration of a PEFT adapter directory (`adapter_config.json`).
    pub fn from_adapter_dir(dir: impl AsRef<Path>) -> Result<Self> {
        Ok(AdapterConfigFile::read(dir.as_ref())?.lora_config())
    }
}

/// The subset of PEFT's `adapter_config.json` this crate writes and checks.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AdapterConfigFile {
    pub peft_type: String,
    #[serde(default)]
    pub task_type: Option<String>,
    pub r: usize,
    pub lora_alpha: f32,
    #[serde(default)]
    pub lora_dropout: f32,
    pub target_modules: TargetModules,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default = "bias_none")]
    pub bias: String,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default)]
    pub use_rslora: bool,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub inference_mode: bool,
    #[serde(default)]
    pub layers_to_transform: Option<serde_json::Value>,
    #[serde(skip)]
    path: PathBuf,
}

fn bias_none() -> String {
    "none".into()
}

/// PEFT allows a list of names or one regular expression; only the list is supported.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum TargetModules {
    List(Vec<String>),
    Regex(String),
}

impl AdapterConfigFile {
    pub(crate) fn new(cfg: &LoraConfig, base_model: &str) -> Self {
        Self {
            peft_type: "LORA".into(),
            task_type: Some("CAUSAL_LM".into()),
            r: cfg.rank,
            lora_alpha: cfg.alpha,
            lora_dropout: cfg.dropout,
            target_modules: TargetModules::List(
                cfg.targets.iter().map(|t| t.peft_name().into()).collect(),
            ),
            base_model_name_or_path: Some(base_model.into()),
            bias: bias_none(),
            fan_in_fan_out: false,
            use_rslora: false,
            use_dora: false,
            inference_mode: true,
            layers_to_transform: cfg.layers.as_ref().map(|l| serde_json::json!(l)),
            path: PathBuf::new(),
        }
    }

    fn bad(&self, reason: String) -> SlmError {
        SlmError::Adapter {
            path: self.path.clone(),
            reason,
        }
    }

    /// Reads and checks `dir/adapter_config.json`: a plain LoRA (no DoRA / rsLoRA / bias) over
    /// known target names, on every layer or the listed `layers_to_transform`.
    pub(crate) fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(ADAPTER_CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| SlmError::Io {
            path: path.clone(),
            source,
        })?;
        let mut file: Self = serde_json::from_str(&text).map_err(|e| SlmError::Adapter {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        file.path = path;
        if file.peft_type != "LORA" {
            return Err(file.bad(format!("peft_type `{}` is not LORA", file.peft_type)));
        }
        if file.use_dora || file.use_rslora || file.fan_in_fan_out || file.bias != "none" {
            return Err(file.bad(
                "only plain LoRA is supported (no DoRA, rsLoRA, fan_in_fan_out or bias)".into(),
            ));
        }
        file.layers()?;
        file.targets()?;
        file.lora_config()
            .validate()
            .map_err(|e| file.bad(e.to_string()))?;
        Ok(file)
    }

    pub(crate) fn targets(&self) -> Result<Vec<LoraTarget>> {
        match &self.target_modules {
            TargetModules::List(names) => names
                .iter()
                .map(|n| {
                    LoraTarget::from_peft_name(n)
                        .ok_or_else(|| self.bad(format!("unknown target module `{n}`")))
                })
                .collect(),
            TargetModules::Regex(r) => Err(self.bad(format!(
                "target_modules as a regular expression (`{r}`) is not supported"
            ))),
        }
    }

    /// `layers_to_transform`: absent or null (every layer), one index, or a list of indices.
    pub(crate) fn layers(&self) -> Result<Option<Vec<usize>>> {
        let index = |v: &serde_json::Value| {
            v.as_u64()
                .map(|i| i as usize)
                .ok_or_else(|| self.bad(format!("layers_to_transform: `{v}` is not a layer index")))
        };
        match &self.layers_to_transform {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(index)
                .collect::<Result<Vec<_>>>()
                .map(Some),
            Some(v) => Ok(Some(vec![index(v)?])),
        }
    }

    pub(crate) fn lora_config(&self) -> LoraConfig {
        LoraConfig {
            rank: self.r,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            // `read` has checked the names and the layers.
            targets: self.targets().unwrap_or_default(),
            layers: self.layers().unwrap_or_default(),
        }
    }

    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(ADAPTER_CONFIG_FILE);
        let text = serde_json::to_string_pretty(self).map_err(|e| SlmError::Adapter {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        pulserec_core::fs::write_atomic(&path, text.as_bytes())
            .map_err(|source| SlmError::Io { path, source })
    }
}

/// An error reading or writing the tensors of adapter directory `dir`, as
/// [`SlmError::Adapter`] (I/O errors stay [`SlmError::Io`]).
pub(crate) fn adapter_error(dir: &Path) -> impl Fn(TensorFileError) -> SlmError + '_ {
    move |e| match e {
        TensorFileError::Io { path, source } => SlmError::Io { path, source },
        other => SlmError::Adapter {
            path: dir.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

/// Parses `base_model.model.model.layers.{i}.{parent}.{target}.lora_{A|B}.weight`.
pub(crate) fn parse_tensor_name(name: &str) -> Option<(usize, LoraTarget, bool)> {
    let rest = name.strip_prefix("base_model.model.model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (_parent, rest) = rest.split_once('.')?;
    let (target, rest) = rest.split_once('.')?;
    let a = match rest {
        "lora_A.weight" => true,
        "lora_B.weight" => false,
        _ => return None,
    };
    Some((layer.parse().ok()?, LoraTarget::from_peft_name(target)?, a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_serialise_as_peft_names() {
        let json = serde_json::to_string(&LoraTarget::ALL).unwrap();
        assert_eq!(
            json,
            r#"["q_proj","k_proj","v_proj","o_proj","gate_proj","up_proj","down_proj"]"#
        );
        for t in LoraTarget::ALL {
            assert_eq!(LoraTarget::from_peft_name(t.peft_name()), Some(t));
        }
    }

    #[test]
    fn tensor_names_round_trip() {
        let n = LoraTarget::Down.tensor_name(12, false);
        assert_eq!(
            n,
            "base_model.model.model.layers.12.mlp.down_proj.lora_B.weight"
        );
        assert_eq!(parse_tensor_name(&n), Some((12, LoraTarget::Down, false)));
        assert_eq!(
            parse_tensor_name("base_model.model.model.layers.3.self_attn.q_proj.lora_A.weight"),
            Some((3, LoraTarget::Q, true))
        );
        assert_eq!(
            parse_tensor_name("model.layers.3.self_attn.q_proj.weight"),
            None
        );
    }

    #[test]
    fn top_layers_adapt_only_the_last_k() {
        let top = LoraConfig::paper().top_layers(2, 5);
        assert_eq!(top.layers, Some(vec![3, 4]));
        assert!(top.adapts(4, LoraTarget::Q) && !top.adapts(2, LoraTarget::Q));
        assert!(!top.adapts(4, LoraTarget::Gate));
        assert_eq!(LoraConfig::paper().top_layers(5, 5).layers, None);
        assert!(top.validate_layers(5).is_ok());
        assert!(top.validate_layers(4).is_err());
    }

    #[test]
    fn paper_config_is_valid_and_bad_ones_are_refused() {
        let p = LoraConfig::paper();
        p.validate().unwrap();
        assert_eq!(p.scale(), 2.0);
        for bad in [
            LoraConfig {
                rank: 0,
                ..p.clone()
            },
            LoraConfig {
                dropout: 1.0,
                ..p.clone()
            },
            LoraConfig {
                targets: vec![],
                ..p.clone()
            },
            LoraConfig {
                targets: vec![LoraTarget::Q, LoraTarget::Q],
                ..p.clone()
            },
            LoraConfig {
                layers: Some(vec![]),
                ..p.clone()
            },
            LoraConfig {
                layers: Some(vec![3, 3]),
                ..p.clone()
            },
        ] {
            assert!(matches!(
                bad.validate(),
                Err(SlmError::InvalidLoraConfig(_))
            ));
        }
    }
}
