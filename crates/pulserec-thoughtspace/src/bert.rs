//! The BERT-family transformer (BERT, MiniLM, DistilBERT) as burn modules.
//!
//! Both architectures are post-LayerNorm encoders with the same blocks; they differ only in
//! weight names and in whether token-type embeddings exist. Weights load from (and save to) HF
//! safetensors names, so a trained encoder is again an HF / sentence-transformers directory.

use std::collections::HashMap;

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::{gelu, gelu_approximate, relu, softmax};
use burn::tensor::module::{attention, embedding};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use crate::config::{Activation, Architecture, BertConfig};
use crate::encoder::tensor_to_vec;
use crate::error::Result;
use pulserec_core::fastmath::transpose;
use pulserec_core::tensor_file::{OwnedTensor, TensorFile};

/// One transformer block: self-attention and feed-forward, each followed by residual + LayerNorm.
#[derive(Module, Debug)]
pub struct BertLayer {
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: LayerNorm,
    ffn_in: Linear,
    ffn_out: Linear,
    out_norm: LayerNorm,
    dropout: Dropout,
    attn_dropout: Dropout,
    num_heads: usize,
    #[module(skip)]
    activation: Activation,
}

/// A BERT-family encoder: embeddings and a stack of [`BertLayer`]s.
#[derive(Module, Debug)]
pub struct BertModel {
    word_embeddings: Param<Tensor<2>>,
    position_embeddings: Param<Tensor<2>>,
    token_type_embeddings: Option<Param<Tensor<2>>>,
    embeddings_norm: LayerNorm,
    embeddings_dropout: Dropout,
    layers: Vec<BertLayer>,
}

impl BertLayer {
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`
    /// - `pad_mask`: `[batch, 1, 1, seq]`, `true` at padding positions
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, x: Tensor<3>, pad_mask: Tensor<4, Bool>) -> Tensor<3> {
        let [batch, seq, hidden] = x.dims();
        let heads = self.num_heads;
        let head_dim = hidden / heads;
        let split = |t: Tensor<3>| t.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x.clone()));
        let training_dropout = x.device().is_autodiff() && self.attn_dropout.prob > 0.0;
        let context = if training_dropout {
            // The fused kernel has no attention dropout; spell it out while training.
            let scores = q
                .matmul(k.swap_dims(2, 3))
                .mul_scalar(1.0 / (head_dim as f64).sqrt())
                .mask_fill(pad_mask.expand([batch, heads, seq, seq]), f32::NEG_INFINITY);
            let probs = self.attn_dropout.forward(softmax(scores, 3));
            probs.matmul(v)
        } else {
            attention(
                q,
                k,
                v,
                Some(pad_mask),
                None,
                AttentionModuleOptions::default(),
            )
        };
        let context = context.swap_dims(1, 2).reshape([batch, seq, hidden]);
        let attended = self.dropout.forward(self.attn_out.forward(context));
        let x = self.attn_norm.forward(attended + x);
        let inner = self.activate(self.ffn_in.forward(x.clone()));
        let out = self.dropout.forward(self.ffn_out.forward(inner));
        self.out_norm.forward(out + x)
    }

    /// The feed-forward activation.
    fn activate<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self.activation {
            Activation::Gelu => gelu_fast(x),
            Activation::GeluTanh => gelu_approximate(x),
            Activation::Relu => relu(x),
        }
    }

    /// Inference forward on packed tokens (no padding rows in the linear layers); attention
    /// runs on the padded layout gathered through `packing`. Dropout is off.
    ///
    /// # Shapes
    /// - `x`: `[packing.tokens(), hidden]`
    /// - `pad_mask`: `[batch, 1, 1, seq]`, `true` at padding positions
    /// - output: `[packing.tokens(), hidden]`
    pub fn forward_packed(
        &self,
        x: Tensor<2>,
        packing: &Packing,
        pad_mask: Tensor<4, Bool>,
    ) -> Tensor<2> {
        let (batch, seq) = (packing.batch, packing.seq);
        let hidden = x.dims()[1];
        let heads = self.num_heads;
        let head_dim = hidden / heads;
        let to_heads = |t: Tensor<2>| {
            t.select(0, packing.padded.clone())
                .reshape([batch, seq, heads, head_dim])
                .swap_dims(1, 2)
        };
        let q = to_heads(self.query.forward(x.clone()));
        let k = to_heads(self.key.forward(x.clone()));
        let v = to_heads(self.value.forward(x.clone()));
        let context = attention(
            q,
            k,
            v,
            Some(pad_mask),
            None,
            AttentionModuleOptions::default(),
        )
        .swap_dims(1, 2)
        .reshape([batch * seq, hidden])
        .select(0, packing.packed.clone());
        let x = self.attn_norm.forward(self.attn_out.forward(context) + x);
        let inner = self.activate(self.ffn_in.forward(x.clone()));
        self.out_norm.forward(self.ffn_out.forward(inner) + x)
    }
}

/// Where the real tokens of a padded `[batch, seq]` batch sit, for [`BertModel::forward_packed`].
#[derive(Clone, Debug)]
pub struct Packing {
    /// For each real token, its row in the flattened `[batch * seq]` layout.
    packed: Tensor<1, Int>,
    /// For each padded slot, the packed row it reads: the token itself, or for a padding slot
    /// its text's first token (a finite value the attention mask and pooling ignore).
    padded: Tensor<1, Int>,
    tokens: usize,
    batch: usize,
    seq: usize,
}

impl Packing {
    /// From the `[batch, seq]` row-major keep mask (`true` for real tokens). Every row must
    /// hold at least one real token.
    pub fn new(keep: &[bool], batch: usize, seq: usize, device: &Device) -> Result<Self> {
        if keep.len() != batch * seq {
            return Err(crate::error::ThoughtSpaceError::InvalidInput(format!(
                "keep mask of {} entries for a {batch} x {seq} batch",
                keep.len()
            )));
        }
        let mut packed = Vec::new();
        let mut padded = Vec::with_capacity(batch * seq);
        for row in 0..batch {
            let first = packed.len() as i64;
            let cells = &keep[row * seq..(row + 1) * seq];
            if !cells.iter().any(|&k| k) {
                return Err(crate::error::ThoughtSpaceError::InvalidInput(format!(
                    "text {row} of the batch has no tokens"
                )));
            }
            for (col, &k) in cells.iter().enumerate() {
                if k {
                    padded.push(packed.len() as i64);
                    packed.push((row * seq + col) as i64);
                } else {
                    padded.push(first);
                }
            }
        }
        let tokens = packed.len();
        Ok(Self {
            packed: Tensor::from_data(TensorData::new(packed, [tokens]), device),
            padded: Tensor::from_data(TensorData::new(padded, [batch * seq]), device),
            tokens,
            batch,
            seq,
        })
    }

    /// Real tokens in the batch.
    pub fn tokens(&self) -> usize {
        self.tokens
    }
}

/// Exact GELU. On the plain flex (CPU) device it runs on the host buffer with the vectorised
/// erf of [`pulserec_core::fastmath`] (burn-flex calls libm's scalar `erff` per element, a fifth
/// of MiniLM's encode time); under autodiff or on another device it is burn's op.
fn gelu_fast<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if device.is_autodiff() || device != Device::flex() {
        return gelu(x);
    }
    // Zero-copy on flex when the tensor is contiguous and not shared (a fresh linear output).
    let mut data = x.into_data();
    match data.as_mut_slice::<f32>() {
        Ok(values) => {
            pulserec_core::fastmath::gelu_inplace(values);
            Tensor::from_data(data, &device)
        }
        Err(_) => gelu(Tensor::from_data(data, &device)),
    }
}

impl BertModel {
    /// Token states of a padded batch.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]` (seq <= `max_position_embeddings`)
    /// - `pad_mask`: `[batch, seq]`, `true` at padding positions
    /// - output: `[batch, seq, hidden]`
    pub fn forward(&self, input_ids: Tensor<2, Int>, pad_mask: Tensor<2, Bool>) -> Tensor<3> {
        let [batch, seq] = input_ids.dims();
        let mut x = self.embed(input_ids);
        let mask = pad_mask.reshape([batch, 1, 1, seq]);
        for layer in &self.layers {
            x = layer.forward(x, mask.clone());
        }
        x
    }

    /// Inference forward that runs the linear layers on the real tokens only (see
    /// [`BertLayer::forward_packed`]); the result is laid out like [`Self::forward`]'s, with
    /// padding rows holding their text's first token state. Dropout is off.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]`, `pad_mask`: `[batch, seq]` (`true` at padding)
    /// - output: `[batch, seq, hidden]`
    pub fn forward_packed(
        &self,
        input_ids: Tensor<2, Int>,
        pad_mask: Tensor<2, Bool>,
        packing: &Packing,
    ) -> Tensor<3> {
        let [batch, seq] = input_ids.dims();
        let states = self.embed(input_ids);
        let hidden = states.dims()[2];
        let mut x = states
            .reshape([batch * seq, hidden])
            .select(0, packing.packed.clone());
        let mask = pad_mask.reshape([batch, 1, 1, seq]);
        for layer in &self.layers {
            x = layer.forward_packed(x, packing, mask.clone());
        }
        x.select(0, packing.padded.clone())
            .reshape([batch, seq, hidden])
    }

    /// Word + position (+ type 0) embeddings, LayerNorm and dropout.
    ///
    /// # Shapes
    /// - `input_ids`: `[batch, seq]`; output `[batch, seq, hidden]`
    fn embed(&self, input_ids: Tensor<2, Int>) -> Tensor<3> {
        let [_, seq] = input_ids.dims();
        let words = embedding(self.word_embeddings.val(), input_ids);
        let hidden = words.dims()[2];
        let positions = self
            .position_embeddings
            .val()
            .narrow(0, 0, seq)
            .reshape([1, seq, hidden]);
        let mut x = words + positions;
        if let Some(types) = &self.token_type_embeddings {
            // Single-segment inputs: every token has type 0.
            x = x + types.val().narrow(0, 0, 1).reshape([1, 1, hidden]);
        }
        self.embeddings_dropout
            .forward(self.embeddings_norm.forward(x))
    }

    /// Builds the model from an HF safetensors file, checking every tensor against `config`.
    pub fn load(config: &BertConfig, weights: &TensorFile, device: &Device) -> Result<Self> {
        let names = NameScheme::detect(config.architecture, weights);
        let h = config.hidden_size;
        let emb = |name: &str, rows: usize| -> Result<Param<Tensor<2>>> {
            let values = weights.f32(name, &[rows, h])?;
            Ok(param2(values, [rows, h], device))
        };
        let word_embeddings = emb(
            &names.embedding("word_embeddings.weight"),
            config.vocab_size,
        )?;
        let position_embeddings = emb(
            &names.embedding("position_embeddings.weight"),
            config.max_position_embeddings,
        )?;
        let token_type_embeddings = match config.architecture {
            Architecture::Bert if config.type_vocab_size > 0 => Some(emb(
                &names.embedding("token_type_embeddings.weight"),
                config.type_vocab_size,
            )?),
            _ => None,
        };
        let embeddings_norm = load_norm(weights, &names.embedding("LayerNorm"), config, device)?;
        let layers = (0..config.num_layers)
            .map(|i| {
                let n = names.layer(i);
                let i_size = config.intermediate_size;
                Ok(BertLayer {
                    query: load_linear(weights, &n.query, h, h, device)?,
                    key: load_linear(weights, &n.key, h, h, device)?,
                    value: load_linear(weights, &n.value, h, h, device)?,
                    attn_out: load_linear(weights, &n.attn_out, h, h, device)?,
                    attn_norm: load_norm(weights, &n.attn_norm, config, device)?,
                    ffn_in: load_linear(weights, &n.ffn_in, h, i_size, device)?,
                    ffn_out: load_linear(weights, &n.ffn_out, i_size, h, device)?,
                    out_norm: load_norm(weights, &n.out_norm, config, device)?,
                    dropout: DropoutConfig::new(config.hidden_dropout).init(),
                    attn_dropout: DropoutConfig::new(config.attention_dropout).init(),
                    num_heads: config.num_heads,
                    activation: config.activation,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            word_embeddings,
            position_embeddings,
            token_type_embeddings,
            embeddings_norm,
            embeddings_dropout: DropoutConfig::new(config.hidden_dropout).init(),
            layers,
        })
    }

    /// The weights under their HF names (no prefix), ready for [`pulserec_core::tensor_file::write_f32`].
    pub fn to_hf_tensors(&self, config: &BertConfig) -> Result<HashMap<String, OwnedTensor>> {
        let names = NameScheme {
            arch: config.architecture,
            prefix: String::new(),
        };
        let mut out = HashMap::new();
        let mut put = |name: String, tensor: OwnedTensor| {
            out.insert(name, tensor);
        };
        put(
            names.embedding("word_embeddings.weight"),
            export2(&self.word_embeddings.val(), false)?,
        );
        put(
            names.embedding("position_embeddings.weight"),
            export2(&self.position_embeddings.val(), false)?,
        );
        if let Some(t) = &self.token_type_embeddings {
            put(
                names.embedding("token_type_embeddings.weight"),
                export2(&t.val(), false)?,
            );
        }
        export_norm(
            &self.embeddings_norm,
            &names.embedding("LayerNorm"),
            &mut put,
        )?;
        for (i, layer) in self.layers.iter().enumerate() {
            let n = names.layer(i);
            for (linear, base) in [
                (&layer.query, &n.query),
                (&layer.key, &n.key),
                (&layer.value, &n.value),
                (&layer.attn_out, &n.attn_out),
                (&layer.ffn_in, &n.ffn_in),
                (&layer.ffn_out, &n.ffn_out),
            ] {
                put(
                    format!("{base}.weight"),
                    export2(&linear.weight.val(), true)?,
                );
                if let Some(b) = &linear.bias {
                    put(format!("{base}.bias"), export1(&b.val())?);
                }
            }
            export_norm(&layer.attn_norm, &n.attn_norm, &mut put)?;
            export_norm(&layer.out_norm, &n.out_norm, &mut put)?;
        }
        Ok(out)
    }
}

/// HF tensor names of one block (without `.weight` / `.bias`).
struct LayerNames {
    query: String,
    key: String,
    value: String,
    attn_out: String,
    attn_norm: String,
    ffn_in: String,
    ffn_out: String,
    out_norm: String,
}

/// The naming scheme of one checkpoint: architecture plus an optional `bert.` / `distilbert.`
/// prefix (present in checkpoints saved from a task head model).
struct NameScheme {
    arch: Architecture,
    prefix: String,
}

impl NameScheme {
    fn detect(arch: Architecture, weights: &TensorFile) -> Self {
        let prefix = ["", "bert.", "distilbert.", "model."]
            .into_iter()
            .find(|p| weights.contains(&format!("{p}embeddings.word_embeddings.weight")))
            .unwrap_or("");
        Self {
            arch,
            prefix: prefix.to_string(),
        }
    }

    fn embedding(&self, rest: &str) -> String {
        format!("{}embeddings.{rest}", self.prefix)
    }

    fn layer(&self, i: usize) -> LayerNames {
        let p = &self.prefix;
        match self.arch {
            Architecture::Bert => {
                let l = format!("{p}encoder.layer.{i}");
                LayerNames {
                    query: format!("{l}.attention.self.query"),
                    key: format!("{l}.attention.self.key"),
                    value: format!("{l}.attention.self.value"),
                    attn_out: format!("{l}.attention.output.dense"),
                    attn_norm: format!("{l}.attention.output.LayerNorm"),
                    ffn_in: format!("{l}.intermediate.dense"),
                    ffn_out: format!("{l}.output.dense"),
                    out_norm: format!("{l}.output.LayerNorm"),
                }
            }
            Architecture::DistilBert => {
                let l = format!("{p}transformer.layer.{i}");
                LayerNames {
                    query: format!("{l}.attention.q_lin"),
                    key: format!("{l}.attention.k_lin"),
                    value: format!("{l}.attention.v_lin"),
                    attn_out: format!("{l}.attention.out_lin"),
                    attn_norm: format!("{l}.sa_layer_norm"),
                    ffn_in: format!("{l}.ffn.lin1"),
                    ffn_out: format!("{l}.ffn.lin2"),
                    out_norm: format!("{l}.output_layer_norm"),
                }
            }
        }
    }
}

fn param2(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Param<Tensor<2>> {
    Param::from_tensor(Tensor::from_data(TensorData::new(values, shape), device))
}

fn param1(values: Vec<f32>, device: &Device) -> Param<Tensor<1>> {
    let n = values.len();
    Param::from_tensor(Tensor::from_data(TensorData::new(values, [n]), device))
}

/// HF stores `[out, in]`; burn's `Linear` wants `[in, out]`.
fn load_linear(
    weights: &TensorFile,
    base: &str,
    d_in: usize,
    d_out: usize,
    device: &Device,
) -> Result<Linear> {
    let w = weights.f32(&format!("{base}.weight"), &[d_out, d_in])?;
    let b = weights.f32(&format!("{base}.bias"), &[d_out])?;
    Ok(Linear {
        weight: param2(transpose(&w, d_out, d_in), [d_in, d_out], device),
        bias: Some(param1(b, device)),
    })
}

fn load_norm(
    weights: &TensorFile,
    base: &str,
    config: &BertConfig,
    device: &Device,
) -> Result<LayerNorm> {
    let gamma_names = [format!("{base}.weight"), format!("{base}.gamma")];
    let beta_names = [format!("{base}.bias"), format!("{base}.beta")];
    let gamma = weights.resolve(&[&gamma_names[0], &gamma_names[1]])?;
    let beta = weights.resolve(&[&beta_names[0], &beta_names[1]])?;
    let h = config.hidden_size;
    let mut norm = LayerNormConfig::new(h)
        .with_epsilon(config.layer_norm_eps)
        .init(device);
    norm.gamma = param1(weights.f32(gamma, &[h])?, device);
    norm.beta = Some(param1(weights.f32(beta, &[h])?, device));
    Ok(norm)
}

/// Exports a 2-D parameter; `linear` transposes burn's `[in, out]` back to HF's `[out, in]`.
fn export2(t: &Tensor<2>, linear: bool) -> Result<OwnedTensor> {
    let [rows, cols] = t.dims();
    let values = tensor_to_vec(t.clone())?;
    Ok(if linear {
        OwnedTensor::new(&transpose(&values, rows, cols), vec![cols, rows])
    } else {
        OwnedTensor::new(&values, vec![rows, cols])
    })
}

fn export1(t: &Tensor<1>) -> Result<OwnedTensor> {
    Ok(OwnedTensor::new(
        &tensor_to_vec(t.clone())?,
        vec![t.dims()[0]],
    ))
}

fn export_norm(
    norm: &LayerNorm,
    base: &str,
    put: &mut impl FnMut(String, OwnedTensor),
) -> Result<()> {
    put(format!("{base}.weight"), export1(&norm.gamma.val())?);
    if let Some(beta) = &norm.beta {
        put(format!("{base}.bias"), export1(&beta.val())?);
    }
    Ok(())
}
