//! Checkpoint weights in PyTorch layout, read from GGUF or HF safetensors.
//!
//! GGUF tensors stay in their quantised form here ([`WeightMatrix`] keeps the ggml blocks), so the
//! runtime can decide between dequantising at load and quantised matmul kernels.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pulserec_core::tensor_file::TensorFile;

use crate::config::{Architecture, LlamaConfig};
use crate::error::{Result, SlmError};
use crate::gguf::GgufFile;
use crate::lora::LoraTarget;
use crate::quant::{GgmlType, dequantize_row};

/// A 2-D weight `[rows = out features, cols = in features]`, row-major, ggml-encoded rows.
#[derive(Clone, Debug)]
pub struct WeightMatrix {
    /// Name for errors.
    pub name: String,
    /// Encoding of each row.
    pub dtype: GgmlType,
    /// Output features.
    pub rows: usize,
    /// Input features (row length).
    pub cols: usize,
    /// `rows` encoded rows, back to back.
    pub bytes: Vec<u8>,
}

impl WeightMatrix {
    pub(crate) fn from_f32(name: &str, rows: usize, cols: usize, data: &[f32]) -> Self {
        Self {
            name: name.to_string(),
            dtype: GgmlType::F32,
            rows,
            cols,
            bytes: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.bytes.len() / self.rows.max(1)
    }

    /// Dequantises to f32 `[rows, cols]`.
    pub fn to_f32(&self) -> Result<Vec<f32>> {
        let mut out = vec![0.0; self.rows * self.cols];
        dequantize_row(self.dtype, &self.bytes, &mut out, &self.name)?;
        Ok(out)
    }

    /// Reorders rows: row `i` of the result is row `order[i]` of `self`.
    fn permute_rows(&mut self, order: &[usize]) {
        let rb = self.row_bytes();
        let mut out = Vec::with_capacity(self.bytes.len());
        for &r in order {
            out.extend_from_slice(&self.bytes[r * rb..(r + 1) * rb]);
        }
        self.bytes = out;
    }

    /// Splits rows `[a; b; ...]` into consecutive blocks of the given row counts.
    fn split_rows(self, counts: &[usize]) -> Result<Vec<WeightMatrix>> {
        if counts.iter().sum::<usize>() != self.rows {
            return Err(SlmError::BadTensor {
                tensor: self.name.clone(),
                reason: format!("{} rows cannot be split as {counts:?}", self.rows),
            });
        }
        let rb = self.row_bytes();
        let mut start = 0;
        Ok(counts
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let m = WeightMatrix {
                    name: format!("{}[{i}]", self.name),
                    dtype: self.dtype,
                    rows: n,
                    cols: self.cols,
                    bytes: self.bytes[start * rb..(start + n) * rb].to_vec(),
                };
                start += n;
                m
            })
            .collect())
    }
}

/// One decoder block's weights.
#[derive(Clone, Debug)]
pub struct LayerWeights {
    /// RMSNorm before attention.
    pub attn_norm: Vec<f32>,
    /// Query projection `[heads * head_dim, hidden]`, rows in HF (half-split RoPE) order.
    pub q: WeightMatrix,
    /// Key projection `[kv_heads * head_dim, hidden]`, HF row order.
    pub k: WeightMatrix,
    /// Value projection.
    pub v: WeightMatrix,
    /// Optional q/k/v biases (Qwen2).
    pub qkv_bias: Option<[Vec<f32>; 3]>,
    /// Attention output projection.
    pub o: WeightMatrix,
    /// RMSNorm before the MLP.
    pub ffn_norm: Vec<f32>,
    /// SwiGLU gate.
    pub gate: WeightMatrix,
    /// SwiGLU up.
    pub up: WeightMatrix,
    /// SwiGLU down.
    pub down: WeightMatrix,
}

impl LayerWeights {
    /// The matrix of projection `which`.
    pub fn matrix(&self, which: LoraTarget) -> &WeightMatrix {
        match which {
            LoraTarget::Q => &self.q,
            LoraTarget::K => &self.k,
            LoraTarget::V => &self.v,
            LoraTarget::O => &self.o,
            LoraTarget::Gate => &self.gate,
            LoraTarget::Up => &self.up,
            LoraTarget::Down => &self.down,
        }
    }

    /// The matrix of projection `which`, mutably.
    pub fn matrix_mut(&mut self, which: LoraTarget) -> &mut WeightMatrix {
        match which {
            LoraTarget::Q => &mut self.q,
            LoraTarget::K => &mut self.k,
            LoraTarget::V => &mut self.v,
            LoraTarget::O => &mut self.o,
            LoraTarget::Gate => &mut self.gate,
            LoraTarget::Up => &mut self.up,
            LoraTarget::Down => &mut self.down,
        }
    }

    /// The bias of projection `which`: Qwen2's q/k/v biases, none elsewhere.
    pub fn bias(&self, which: LoraTarget) -> Option<&[f32]> {
        let i = match which {
            LoraTarget::Q => 0,
            LoraTarget::K => 1,
            LoraTarget::V => 2,
            _ => return None,
        };
        self.qkv_bias.as_ref().map(|b| b[i].as_slice())
    }
}

/// All weights of a Llama-family model.
#[derive(Clone, Debug)]
pub struct ModelWeights {
    /// Token embedding `[vocab, hidden]`.
    pub embed: WeightMatrix,
    /// Final RMSNorm.
    pub norm: Vec<f32>,
    /// LM head `[vocab, hidden]`; `None` when tied to the embedding.
    pub lm_head: Option<WeightMatrix>,
    /// Decoder blocks.
    pub layers: Vec<LayerWeights>,
}

/// Row order that undoes llama.cpp's Q/K permutation (adjacent-pair RoPE -> half-split RoPE).
///
/// llama.cpp's converter stores HF row `h*d + s*d/2 + i` at `h*d + 2*i + s`.
fn unpermute_order(heads: usize, head_dim: usize) -> Vec<usize> {
    let half = head_dim / 2;
    let mut order = Vec::with_capacity(heads * head_dim);
    for h in 0..heads {
        for s in 0..2 {
            for i in 0..half {
                order.push(h * head_dim + 2 * i + s);
            }
        }
    }
    order
}

fn gguf_matrix(g: &GgufFile, name: &str, rows: usize, cols: usize) -> Result<WeightMatrix> {
    let info = g.require(name)?;
    if info.elements() != rows * cols || info.dims[0] != cols {
        return Err(SlmError::BadTensor {
            tensor: name.to_string(),
            reason: format!("ggml shape {:?}, expected [{cols}, {rows}]", info.dims),
        });
    }
    if !info.dtype.can_dequantize() {
        return Err(SlmError::UnsupportedDType {
            tensor: name.to_string(),
            dtype: info.dtype.to_string(),
        });
    }
    Ok(WeightMatrix {
        name: name.to_string(),
        dtype: info.dtype,
        rows,
        cols,
        bytes: g.tensor_bytes(info).to_vec(),
    })
}

fn gguf_vector(g: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>> {
    let v = g.dequantize(name)?;
    if v.len() != len {
        return Err(SlmError::BadTensor {
            tensor: name.to_string(),
            reason: format!("{} elements, expected {len}", v.len()),
        });
    }
    Ok(v)
}

impl ModelWeights {
    /// Reads a GGUF model's weights (still quantised), undoing the Q/K row permutation that
    /// llama.cpp applies to Llama checkpoints.
    pub fn from_gguf(g: &GgufFile, cfg: &LlamaConfig) -> Result<Self> {
        let (d, hd) = (cfg.hidden_size, cfg.head_dim);
        let (qd, kd) = (cfg.num_heads * hd, cfg.num_kv_heads * hd);
        let permuted = cfg.architecture == Architecture::Llama;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let n = |s: &str| format!("blk.{l}.{s}");
            let mut q = gguf_matrix(g, &n("attn_q.weight"), qd, d)?;
            let mut k = gguf_matrix(g, &n("attn_k.weight"), kd, d)?;
            if permuted {
                q.permute_rows(&unpermute_order(cfg.num_heads, hd));
                k.permute_rows(&unpermute_order(cfg.num_kv_heads, hd));
            }
            let qkv_bias = if g.tensor(&n("attn_q.bias")).is_some() {
                Some([
                    gguf_vector(g, &n("attn_q.bias"), qd)?,
                    gguf_vector(g, &n("attn_k.bias"), kd)?,
                    gguf_vector(g, &n("attn_v.bias"), kd)?,
                ])
            } else {
                None
            };
            layers.push(LayerWeights {
                attn_norm: gguf_vector(g, &n("attn_norm.weight"), d)?,
                q,
                k,
                v: gguf_matrix(g, &n("attn_v.weight"), kd, d)?,
                qkv_bias,
                o: gguf_matrix(g, &n("attn_output.weight"), d, qd)?,
                ffn_norm: gguf_vector(g, &n("ffn_norm.weight"), d)?,
                gate: gguf_matrix(g, &n("ffn_gate.weight"), cfg.intermediate_size, d)?,
                up: gguf_matrix(g, &n("ffn_up.weight"), cfg.intermediate_size, d)?,
                down: gguf_matrix(g, &n("ffn_down.weight"), d, cfg.intermediate_size)?,
            });
        }
        let lm_head = if cfg.tie_embeddings {
            None
        } else {
            Some(gguf_matrix(g, "output.weight", cfg.vocab_size, d)?)
        };
        Ok(Self {
            embed: gguf_matrix(g, "token_embd.weight", cfg.vocab_size, d)?,
            norm: gguf_vector(g, "output_norm.weight", d)?,
            lm_head,
            layers,
        })
    }

    /// Reads HF safetensors (`model.safetensors`, or the shards named by
    /// `model.safetensors.index.json`) from `dir`.
    pub fn from_hf_dir(dir: &Path, cfg: &LlamaConfig) -> Result<Self> {
        let store = HfTensors::open(dir)?;
        let (d, hd) = (cfg.hidden_size, cfg.head_dim);
        let (qd, kd, ff) = (
            cfg.num_heads * hd,
            cfg.num_kv_heads * hd,
            cfg.intermediate_size,
        );
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let n = |s: &str| format!("model.layers.{l}.{s}");
            let (q, k, v) = if cfg.architecture == Architecture::Phi3 {
                let mut parts = store
                    .matrix(&n("self_attn.qkv_proj.weight"), qd + 2 * kd, d)?
                    .split_rows(&[qd, kd, kd])?
                    .into_iter();
                let mut next = || {
                    parts
                        .next()
                        .ok_or_else(|| SlmError::Backend("split".into()))
                };
                (next()?, next()?, next()?)
            } else {
                (
                    store.matrix(&n("self_attn.q_proj.weight"), qd, d)?,
                    store.matrix(&n("self_attn.k_proj.weight"), kd, d)?,
                    store.matrix(&n("self_attn.v_proj.weight"), kd, d)?,
                )
            };
            let (gate, up) = if cfg.architecture == Architecture::Phi3 {
                let mut parts = store
                    .matrix(&n("mlp.gate_up_proj.weight"), 2 * ff, d)?
                    .split_rows(&[ff, ff])?
                    .into_iter();
                let mut next = || {
                    parts
                        .next()
                        .ok_or_else(|| SlmError::Backend("split".into()))
                };
                (next()?, next()?)
            } else {
                (
                    store.matrix(&n("mlp.gate_proj.weight"), ff, d)?,
                    store.matrix(&n("mlp.up_proj.weight"), ff, d)?,
                )
            };
            let qkv_bias = if store.has(&n("self_attn.q_proj.bias")) {
                Some([
                    store.vector(&n("self_attn.q_proj.bias"), qd)?,
                    store.vector(&n("self_attn.k_proj.bias"), kd)?,
                    store.vector(&n("self_attn.v_proj.bias"), kd)?,
                ])
            } else {
                None
            };
            layers.push(LayerWeights {
                attn_norm: store.vector(&n("input_layernorm.weight"), d)?,
                q,
                k,
                v,
                qkv_bias,
                o: store.matrix(&n("self_attn.o_proj.weight"), d, qd)?,
                ffn_norm: store.vector(&n("post_attention_layernorm.weight"), d)?,
                gate,
                up,
                down: store.matrix(&n("mlp.down_proj.weight"), d, ff)?,
            });
        }
        let tied = cfg.tie_embeddings || !store.has("lm_head.weight");
        Ok(Self {
            embed: store.matrix("model.embed_tokens.weight", cfg.vocab_size, d)?,
            norm: store.vector("model.norm.weight", d)?,
            lm_head: if tied {
                None
            } else {
                Some(store.matrix("lm_head.weight", cfg.vocab_size, d)?)
            },
            layers,
        })
    }
}

/// HF safetensors shards (mapped) with a name -> shard index.
struct HfTensors {
    files: Vec<TensorFile>,
    index: HashMap<String, usize>,
}

impl HfTensors {
    fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join("model.safetensors.index.json");
        let files_of_dir: Vec<PathBuf> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|source| SlmError::Io {
                path: index_path.clone(),
                source,
            })?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| SlmError::HfFormat {
                    file: index_path.clone(),
                    reason: e.to_string(),
                })?;
            let mut names: Vec<String> = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| SlmError::HfFormat {
                    file: index_path.clone(),
                    reason: "no `weight_map` object".into(),
                })?
                .values()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            vec![dir.join("model.safetensors")]
        };
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for path in files_of_dir {
            let file = TensorFile::map(&path)?;
            for name in file.names() {
                index.insert(name, files.len());
            }
            files.push(file);
        }
        Ok(Self { files, index })
    }

    fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    fn load(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| SlmError::MissingTensor {
                file: self
                    .files
                    .first()
                    .map(|f| f.path().display().to_string())
                    .unwrap_or_default(),
                tensor: name.to_string(),
            })?;
        Ok(self.files[i].f32(name, shape)?)
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<WeightMatrix> {
        let data = self.load(name, &[rows, cols])?;
        Ok(WeightMatrix::from_f32(name, rows, cols, &data))
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        self.load(name, &[len])
    }
}

#[cfg(test)]
mod tests {
    use super::unpermute_order;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: reshape(heads, 2, d/2) -> swap(1,2): gguf row h*d + 2i + s = hf row h*d + s*d/2 + i.
        let (heads, d) = (2, 6);
        let hf: Vec<usize> = (0..heads * d).collect();
        let mut gguf = vec![0; heads * d];
        for h in 0..heads {
            for s in 0..2 {
                for i in 0..d / 2 {
                    gguf[h * d + 2 * i + s] = hf[h * d + s * d / 2 + i];
                }
            }
        }
        let back: Vec<usize> = unpermute_order(heads, d).iter().map(|&r| gguf[r]).collect();
        assert_eq!(back, hf);
    }
}
