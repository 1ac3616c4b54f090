//! [`Slm`]: a model plus its tokenizer, loaded from a GGUF file or an HF directory.

use std::path::Path;
use std::sync::{Arc, Mutex};

use burn::tensor::Device;

use crate::chat::ChatFormat;
use crate::config::LlamaConfig;
use crate::error::{Result, SlmError};
use crate::gguf::GgufFile;
use crate::linear::WeightMode;
use crate::model::Llama;
use crate::prefix::PrefixStore;
use crate::tokenizer::SlmTokenizer;
use crate::weights::ModelWeights;

/// How to load a model.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Weight representation at run time.
    pub weights: WeightMode,
    /// Most sequences run together in one batch (larger requests are split).
    pub max_batch: usize,
    /// Memory for the caches of recent prompts, in bytes (0: none kept). A prompt that starts
    /// like a kept one is prefilled only from where they differ: Tree-of-Thought's prompts
    /// repeat the user's context at every depth. Outputs equal those without the store up to
    /// float summation order.
    pub prefix_cache_bytes: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            weights: WeightMode::Auto,
            max_batch: 32,
            prefix_cache_bytes: 1 << 30,
        }
    }
}

/// A ready-to-run language model: weights on a device plus tokenizer.
pub struct Slm {
    pub(crate) model: Llama,
    pub(crate) tokenizer: SlmTokenizer,
    pub(crate) max_batch: usize,
    pub(crate) prefixes: Mutex<PrefixStore>,
}

impl std::fmt::Debug for Slm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slm").field("model", &self.model).finish()
    }
}

/// A shared handle to one loaded [`Slm`]: clones share the weights and the prefix store, so one
/// copy of the model can generate and score in the same run (a Tree-of-Thought search with the
/// likelihood scorer). It implements the same `pulserec_core` traits as `Slm`.
///
/// ```no_run
/// # use pulserec_slm::{SharedSlm, Slm};
/// let slm = SharedSlm::from(Slm::load("model.gguf", &burn::tensor::Device::flex())?);
/// let (generator, scorer) = (slm.clone(), slm);
/// # Ok::<(), pulserec_slm::SlmError>(())
/// ```
#[derive(Clone, Debug)]
pub struct SharedSlm(Arc<Slm>);

impl From<Slm> for SharedSlm {
    fn from(slm: Slm) -> Self {
        Self(Arc::new(slm))
    }
}

impl std::ops::Deref for SharedSlm {
    type Target = Slm;

    fn deref(&self) -> &Slm {
        &self.0
    }
}

impl Slm {
    /// Loads a `.gguf` file or an HF directory (`config.json`, safetensors, `tokenizer.json`).
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::load_with(path, device, &LoadOptions::default())
    }

    /// [`Slm::load`] with options.
    pub fn load_with(path: impl AsRef<Path>, device: &Device, opts: &LoadOptions) -> Result<Self> {
        let (cfg, weights, tokenizer) = Self::load_parts(path)?;
        Self::from_parts(cfg, &weights, tokenizer, device, opts)
    }

    /// Reads a `.gguf` file or an HF directory without building the network: the config, the
    /// (still quantised) weights and the tokenizer. With [`Slm::from_parts`] this lets a caller
    /// change the weights in between, e.g. merge a LoRA adapter
    /// ([`crate::LoraModel::merged_weights`]).
    pub fn load_parts(path: impl AsRef<Path>) -> Result<(LlamaConfig, ModelWeights, SlmTokenizer)> {
        let path = path.as_ref();
        let (cfg, weights, tokenizer) = if path.is_dir() {
            load_hf_dir(path)?
        } else {
            let gguf = GgufFile::open(path)?;
            let cfg = LlamaConfig::from_gguf(&gguf)?;
            let weights = ModelWeights::from_gguf(&gguf, &cfg)?;
            (cfg, weights, SlmTokenizer::from_gguf(&gguf)?)
        };
        tracing::info!(path = %path.display(), layers = cfg.num_layers, hidden = cfg.hidden_size, "loaded model");
        Ok((cfg, weights, tokenizer))
    }

    /// Reads only the tokenizer (with its chat template) of a `.gguf` file or an HF directory,
    /// without the weights: for formatting prompts sent to a server that runs the model.
    pub fn load_tokenizer(path: impl AsRef<Path>) -> Result<SlmTokenizer> {
        let path = path.as_ref();
        if path.is_dir() {
            hf_tokenizer(path)
        } else {
            SlmTokenizer::from_gguf(&GgufFile::open(path)?)
        }
    }

    /// Builds the network on `device` from parts read by [`Slm::load_parts`].
    pub fn from_parts(
        cfg: LlamaConfig,
        weights: &ModelWeights,
        tokenizer: SlmTokenizer,
        device: &Device,
        opts: &LoadOptions,
    ) -> Result<Self> {
        // f32 keys and values of every layer.
        let slot_bytes = cfg.num_layers * 2 * cfg.num_kv_heads * cfg.head_dim * 4;
        let model = Llama::new(cfg, weights, opts.weights, device)?;
        Ok(Self {
            model,
            tokenizer,
            max_batch: opts.max_batch.max(1),
            prefixes: Mutex::new(PrefixStore::new(
                opts.prefix_cache_bytes / slot_bytes.max(1),
            )),
        })
    }

    /// The network.
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &SlmTokenizer {
        &self.tokenizer
    }

    /// The chat format of the model's template.
    pub fn chat_format(&self) -> Result<ChatFormat> {
        ChatFormat::of(&self.tokenizer)
    }

    /// A one-turn chat prompt; the system turn appears only if `system` is non-empty.
    pub fn chat_prompt(&self, system: Option<&str>, user: &str) -> Result<String> {
        Ok(self.chat_format()?.prompt(system, user))
    }
}

fn json_file(path: &Path) -> Result<Option<serde_json::Value>> {
    if !path.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(|source| SlmError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| SlmError::HfFormat {
            file: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn ids(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| x as u32).into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

fn load_hf_dir(dir: &Path) -> Result<(LlamaConfig, ModelWeights, SlmTokenizer)> {
    let cfg = LlamaConfig::from_hf_json(dir.join("config.json"))?;
    let weights = ModelWeights::from_hf_dir(dir, &cfg)?;
    Ok((cfg, weights, hf_tokenizer(dir)?))
}

/// The tokenizer of an HF directory (`tokenizer.json`, with the special ids and chat template of
/// its JSON configs).
fn hf_tokenizer(dir: &Path) -> Result<SlmTokenizer> {
    let config = json_file(&dir.join("config.json"))?;
    let generation = json_file(&dir.join("generation_config.json"))?;
    let tok_cfg = json_file(&dir.join("tokenizer_config.json"))?;
    let mut eos = ids(generation.as_ref().and_then(|g| g.get("eos_token_id")));
    eos.extend(ids(config.as_ref().and_then(|c| c.get("eos_token_id"))));
    eos.sort_unstable();
    eos.dedup();
    let bos = ids(config.as_ref().and_then(|c| c.get("bos_token_id")))
        .first()
        .copied();
    let add_bos = tok_cfg
        .as_ref()
        .and_then(|t| t.get("add_bos_token"))
        .and_then(|b| b.as_bool())
        .unwrap_or(false);
    let template = tok_cfg
        .as_ref()
        .and_then(|t| t.get("chat_template"))
        .and_then(|t| t.as_str())
        .map(str::to_string);
    SlmTokenizer::from_hf_file(dir.join("tokenizer.json"), bos, add_bos, eos, template)
}
