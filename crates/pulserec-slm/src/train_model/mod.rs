//! [`LoraModel`]: the decoder as a trainable burn module (frozen f32 base weights plus LoRA
//! `A`/`B` parameters), with the masked next-token loss used for supervised fine-tuning.
//!
//! The base weights are plain tensors, not [`Param`]s: burn's optimisers and gradient walks see
//! only the adapters, and the base never requires a gradient, so backward computes no weight
//! gradient for it. The math is [`crate::Llama`]'s (RMSNorm, half-split RoPE, grouped-query
//! attention, SwiGLU, tied or separate head, Qwen2 q/k/v biases) without the KV cache: full causal
//! attention over right-padded rows; the same layer body (`model::layer_forward`) with
//! adapted projections. Its batches are [`TokenBatch`]es; its adapters' I/O is in `adapter.rs`.

mod adapter;
mod batch;
mod frozen_product;
mod fused;

pub use batch::TokenBatch;

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::amx::PackedBf16;
use crate::config::LlamaConfig;
use crate::error::{Result, SlmError};
use crate::linear::tensor_vec;
use crate::lora::{LoraConfig, LoraTarget};
use crate::model::{
    DecoderLayer, NormAt, attend, grouped_attention, grouped_attention_host, layer_forward,
    masked_softmax_ops, rms_norm, rope_inv_freq, rope_tables, vec_tensor,
};
use crate::weights::{ModelWeights, WeightMatrix};
use frozen_product::{FrozenBf16, frozen_product};
use std::sync::Arc;

/// One projection's adapter: `scale · B A dropout(x)`.
#[derive(Module, Debug)]
struct Adapter {
    /// `[rank, in]` (PEFT layout).
    lora_a: Param<Tensor<2>>,
    /// `[out, rank]` (PEFT layout).
    lora_b: Param<Tensor<2>>,
    dropout: Dropout,
    #[module(skip)]
    scale: f32,
    /// Draw the dropout mask with [`host_dropout_mask`] instead of burn's [`Dropout`] (the
    /// host modes of [`FrozenBottom`]).
    #[module(skip)]
    host_mask: bool,
}

impl Adapter {
    /// `dropout(x)`: burn's [`Dropout`], or with `host_mask` the same distribution (keep with
    /// probability `1 - p`, scaled by `1 / (1 - p)`) from [`host_dropout_mask`] in one product.
    /// Identity outside training, as [`Dropout`].
    ///
    /// # Shapes
    /// - `x`: `[n, in]`; returns `[n, in]`
    fn drop(&self, x: Tensor<2>) -> Result<Tensor<2>> {
        let p = self.dropout.prob;
        if !self.host_mask
            || p == 0.0
            || !self.dropout.training.is_enabled()
            || !x.device().is_autodiff()
        {
            return Ok(self.dropout.forward(x));
        }
        let device = x.device();
        let mask = host_dropout_mask(x.dims(), p, &device)?;
        Ok(x * mask)
    }
}

/// A dropout mask of `shape` with values `0` (probability `p`) and `1 / (1 - p)`: ChaCha8
/// streams in parallel chunks, seeded from `device`'s generator (so [`Device::seed`] still makes
/// a run repeatable). burn's [`Dropout`] draws one `f64` Bernoulli sample per value on one
/// thread and multiplies twice; this was 5 % of a training step.
fn host_dropout_mask(shape: [usize; 2], p: f64, device: &Device) -> Result<Tensor<2>> {
    const CHUNK: usize = 1 << 14;
    let seed_values = tensor_vec(Tensor::<1>::random([2], Distribution::Default, device))?;
    let seed = seed_values
        .iter()
        .fold(0u64, |s, v| (s << 32) | u64::from(v.to_bits()));
    let keep = 1.0 - p;
    // Keep when a uniform u32 falls below keep * 2^32.
    let threshold = (keep * 4_294_967_296.0) as u64;
    let scale = (1.0 / keep) as f32;
    let mut mask = vec![0f32; shape[0] * shape[1]];
    mask.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(chunk, out)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(chunk as u64);
            for v in out {
                *v = if u64::from(rng.random::<u32>()) < threshold {
                    scale
                } else {
                    0.0
                };
            }
        });
    Ok(Tensor::<2>::from_data(TensorData::new(mask, shape), device))
}

/// `y = x Wᵀ + b + scale · B A dropout(x)` with `W` and `b` frozen.
#[derive(Module, Debug)]
struct LoraLinear {
    /// `[in, out]` (a transposed view of the `[out, in]` checkpoint matrix).
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    adapter: Option<Adapter>,
    /// [`FrozenBottom::HostBf16`]: `W` in bf16 tiles, for the forward below the lowest
    /// adapted layer and for [`frozen_product`] (`W` and `Wᵀ`) from it up.
    #[module(skip)]
    amx: Option<Arc<FrozenBf16>>,
}

fn matrix_tensor(data: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::<2>::from_data(TensorData::new(data, shape), device)
}

impl LoraLinear {
    fn new(
        w: &WeightMatrix,
        bias: Option<&[f32]>,
        adapter: Option<(&LoraConfig, &mut ChaCha8Rng)>,
        device: &Device,
    ) -> Result<Self> {
        let weight = matrix_tensor(w.to_f32()?, [w.rows, w.cols], device).transpose();
        let adapter = adapter.map(|(cfg, rng)| {
            // PEFT's default: kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)).
            let bound = 1.0 / (w.cols as f32).sqrt();
            let a: Vec<f32> = (0..cfg.rank * w.cols)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            Adapter {
                lora_a: Param::from_tensor(matrix_tensor(a, [cfg.rank, w.cols], device)),
                lora_b: Param::from_tensor(Tensor::zeros([w.rows, cfg.rank], device)),
                dropout: DropoutConfig::new(cfg.dropout as f64).init(),
                scale: cfg.scale(),
                host_mask: false,
            }
        });
        Ok(Self {
            weight,
            bias: bias.map(|b| vec_tensor(b, device)),
            adapter,
            amx: None,
        })
    }

    /// # Shapes
    /// - `x`: `[batch, seq, in]`; returns `[batch, seq, out]`
    fn forward(&self, x: Tensor<3>) -> Result<Tensor<3>> {
        let [b, t, i] = x.dims();
        let out = self.weight.dims()[1];
        let x = x.reshape([b * t, i]);
        let mut y = match &self.amx {
            // On the autodiff device only: the inference copy (`Module::valid`) multiplies in f32.
            Some(amx) if amx.trainable() && x.device().is_autodiff() => {
                frozen_product(x.clone(), amx)?
            }
            _ => x.clone().matmul(self.weight.clone()),
        };
        if let Some(ad) = &self.adapter {
            let low = ad.drop(x)?.matmul(ad.lora_a.val().transpose()) * ad.scale;
            y = y + low.matmul(ad.lora_b.val().transpose());
        }
        let y = y.reshape([b, t, out]);
        Ok(match &self.bias {
            Some(bias) => y + bias.clone().unsqueeze::<3>(),
            None => y,
        })
    }

    /// `x Wᵀ + b` without autodiff, for a frozen layer below every adapter ([`FrozenBottom`]):
    /// on the AMX tiles when packed, else burn's f32 matmul on `x`'s plain device.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, in]` on a plain (non-autodiff) device; returns `[batch, seq, out]`
    fn forward_frozen(&self, x: Tensor<3>) -> Result<Tensor<3>> {
        let [b, t, i] = x.dims();
        let out = self.weight.dims()[1];
        let y = match &self.amx {
            Some(amx) => {
                let device = x.device();
                let y = amx.forward(&tensor_vec(x)?, b * t);
                Tensor::<2>::from_data(TensorData::new(y, [b * t, out]), &device)
            }
            None => x
                .reshape([b * t, i])
                .matmul(self.weight.clone().without_autodiff()),
        };
        let y = y.reshape([b, t, out]);
        Ok(match &self.bias {
            Some(bias) => y + bias.clone().without_autodiff().unsqueeze::<3>(),
            None => y,
        })
    }
}

/// A training layer: its projections in [`LoraTarget::ALL`] order, adapted or frozen.
#[derive(Module, Debug)]
struct LoraBlock {
    attn_norm: Tensor<1>,
    ffn_norm: Tensor<1>,
    proj: Vec<LoraLinear>,
    /// The host modes of [`FrozenBottom`]: the norm weights' values (attention, MLP), for the
    /// fused RMSNorm and SwiGLU ops of `fused.rs` on the autodiff device.
    #[module(skip)]
    fused: Option<(Vec<f32>, Vec<f32>)>,
}

impl DecoderLayer for LoraBlock {
    fn norms(&self) -> (&Tensor<1>, &Tensor<1>) {
        (&self.attn_norm, &self.ffn_norm)
    }

    fn project(&self, which: LoraTarget, x: Tensor<3>) -> Result<Tensor<3>> {
        self.proj[which.index()].forward(x)
    }

    fn norm(&self, x: Tensor<3>, at: NormAt, eps: f32) -> Result<Tensor<3>> {
        let (weight, host) = match at {
            NormAt::Attention => (&self.attn_norm, self.fused.as_ref().map(|f| &f.0)),
            NormAt::Mlp => (&self.ffn_norm, self.fused.as_ref().map(|f| &f.1)),
        };
        match host {
            Some(host) if x.device().is_autodiff() => fused::rms_norm(x, host, eps),
            _ => Ok(crate::model::rms_norm(x, weight, eps)),
        }
    }

    fn gated(&self, gate: Tensor<3>, up: Tensor<3>) -> Result<Tensor<3>> {
        match &self.fused {
            Some(_) if gate.device().is_autodiff() => fused::swiglu(gate, up),
            _ => Ok(crate::model::swiglu(gate, up)),
        }
    }
}

/// A block below every adapter, run without autodiff ([`FrozenBottom`]): its norm weights on
/// the plain device, its projections through [`LoraLinear::forward_frozen`].
struct FrozenBlock<'a> {
    attn_norm: Tensor<1>,
    ffn_norm: Tensor<1>,
    proj: &'a [LoraLinear],
}

impl<'a> FrozenBlock<'a> {
    fn of(block: &'a LoraBlock) -> Self {
        Self {
            attn_norm: block.attn_norm.clone().without_autodiff(),
            ffn_norm: block.ffn_norm.clone().without_autodiff(),
            proj: &block.proj,
        }
    }
}

impl DecoderLayer for FrozenBlock<'_> {
    fn norms(&self) -> (&Tensor<1>, &Tensor<1>) {
        (&self.attn_norm, &self.ffn_norm)
    }

    fn project(&self, which: LoraTarget, x: Tensor<3>) -> Result<Tensor<3>> {
        self.proj[which.index()].forward_frozen(x)
    }
}

/// How a training [`LoraModel`] runs the layers below its lowest adapted layer, through which no
/// gradient flows ([`LoraModel::set_frozen_bottom`]). The host modes also take the frozen LM
/// head's log-softmax off the graph (only its input gradient enters it; see
/// [`LoraModel::target_log_probs`]), run the adapted layers' RMSNorm, SwiGLU and attention
/// softmax as single ops with host kernels and hand-written backward (`fused.rs`), and draw the
/// adapters' dropout masks on the host in parallel (the same distribution as burn's `Dropout`,
/// other random values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FrozenBottom {
    /// As every other layer: burn's ops on the model's (autodiff) device, and burn's
    /// log-softmax and dropout.
    #[default]
    Autodiff,
    /// Off the autodiff graph on the plain CPU device, with the inference model's host kernels
    /// (one-pass RMSNorm, SwiGLU and masked softmax with a vectorised `exp`); f32 throughout.
    Host,
    /// [`FrozenBottom::Host`] with every product by a frozen weight in bf16 (f32 accumulation)
    /// on the CPU's AMX tiles or, without AMX, AVX512-BF16, as [`crate::WeightMode::Bf16`] runs
    /// inference: the bottom layers' projections, the adapted layers' frozen `x Wᵀ` and its
    /// backward `dy W` (a custom autodiff op, `frozen_product.rs`; the adapters and attention
    /// stay f32), and the head's logits and input gradient. Values, log-probabilities and
    /// gradients change by bf16 rounding (`tests/lora.rs`: loss within 0.3 %, gradient cosine
    /// above 0.999). On a CPU with neither it runs as [`FrozenBottom::Host`].
    HostBf16,
}

/// The decoder as a trainable burn module: frozen f32 base weights + LoRA `A`/`B` parameters.
///
/// Train it on an autodiff device: build it on `device.autodiff()`, or turn a model built on a
/// plain device into its training copy with [`Module::train`] ([`Module::to_device`] keeps each
/// tensor's autodiff context in burn 0.22, so it does not make a plain model trainable).
/// [`Module::valid`] gives the inference copy back. Adapter dropout is active only on an
/// autodiff device.
#[derive(Module, Debug)]
pub struct LoraModel {
    /// `[vocab, hidden]`.
    embed: Tensor<2>,
    blocks: Vec<LoraBlock>,
    norm: Tensor<1>,
    /// `[vocab, hidden]`; `None` when tied to the embedding.
    lm_head: Option<Tensor<2>>,
    #[module(skip)]
    cfg: LlamaConfig,
    #[module(skip)]
    lora: LoraConfig,
    /// How the layers below the lowest adapter run ([`LoraModel::set_frozen_bottom`]).
    #[module(skip)]
    frozen_bottom: FrozenBottom,
    /// [`FrozenBottom::HostBf16`]: the head in bf16 tiles.
    #[module(skip)]
    head_amx: Option<HeadBf16>,
}

/// The frozen head packed for [`FrozenBottom::HostBf16`]: `W` for the logits `h Wᵀ` and `Wᵀ`
/// for the input gradient `(onehot - p) W`.
#[derive(Clone, Debug)]
struct HeadBf16 {
    logits: PackedBf16,
    grad_input: PackedBf16,
}

impl LoraModel {
    /// Builds the model on `device` from `base` (dequantised to f32) with fresh adapters: `A`
    /// kaiming-uniform as PEFT (seeded by `seed`), `B = 0`, so the model starts equal to the base.
    pub fn new(
        cfg: &LlamaConfig,
        base: &ModelWeights,
        lora: &LoraConfig,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        lora.validate()?;
        lora.validate_layers(cfg.num_layers)?;
        if base.layers.len() != cfg.num_layers {
            return Err(SlmError::BadTensor {
                tensor: "layers".into(),
                reason: format!(
                    "{} layers of weights for a {}-layer config",
                    base.layers.len(),
                    cfg.num_layers
                ),
            });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut blocks = Vec::with_capacity(base.layers.len());
        for (layer, l) in base.layers.iter().enumerate() {
            let mut lin = |t: LoraTarget| {
                let m = l.matrix(t);
                if (m.rows, m.cols) != t.shape(cfg) {
                    return Err(SlmError::BadTensor {
                        tensor: m.name.clone(),
                        reason: format!(
                            "[{}, {}], the config needs {:?}",
                            m.rows,
                            m.cols,
                            t.shape(cfg)
                        ),
                    });
                }
                let adapter = lora.adapts(layer, t).then_some((lora, &mut rng));
                LoraLinear::new(m, l.bias(t), adapter, device)
            };
            // In block order: the adapters' initial values follow the seeded stream.
            blocks.push(LoraBlock {
                attn_norm: vec_tensor(&l.attn_norm, device),
                ffn_norm: vec_tensor(&l.ffn_norm, device),
                fused: None,
                proj: LoraTarget::ALL
                    .into_iter()
                    .map(&mut lin)
                    .collect::<Result<_>>()?,
            });
        }
        let dense = |m: &WeightMatrix| -> Result<Tensor<2>> {
            Ok(matrix_tensor(m.to_f32()?, [m.rows, m.cols], device))
        };
        Ok(Self {
            embed: dense(&base.embed)?,
            blocks,
            norm: vec_tensor(&base.norm, device),
            lm_head: base.lm_head.as_ref().map(dense).transpose()?,
            cfg: cfg.clone(),
            lora: lora.clone(),
            frozen_bottom: FrozenBottom::Autodiff,
            head_amx: None,
        })
    }

    /// Chooses how the layers below the lowest adapted one run on an autodiff device
    /// ([`FrozenBottom`]; default [`FrozenBottom::Autodiff`]) and returns the mode in effect:
    /// the host modes need the CPU (`flex`) device, and [`FrozenBottom::HostBf16`] a CPU with
    /// bf16 products, AMX or AVX512-BF16 ([`crate::amx::bf16_available`]; elsewhere it is
    /// [`FrozenBottom::Host`]). The bf16 mode packs every projection once (2 bytes per weight
    /// beside the f32 copies; those of the adapted layers and the head twice, `W` and `Wᵀ`; a
    /// matrix whose sizes are not multiples of 32 stays in f32). When layer 0 is adapted there is no frozen bottom, and only the
    /// adapted layers' kernels, the head and the dropout change; on a plain device nothing does
    /// (every layer already runs without autodiff).
    pub fn set_frozen_bottom(&mut self, mode: FrozenBottom) -> Result<FrozenBottom> {
        let mode = match mode {
            _ if self.device().without_autodiff() != Device::flex() => FrozenBottom::Autodiff,
            FrozenBottom::HostBf16 if !crate::amx::bf16_available() => FrozenBottom::Host,
            mode => mode,
        };
        let lowest = self.lowest_adapted();
        for (layer, block) in self.blocks.iter_mut().enumerate() {
            block.fused = match mode {
                FrozenBottom::Autodiff => None,
                _ => Some((
                    tensor_vec(block.attn_norm.clone())?,
                    tensor_vec(block.ffn_norm.clone())?,
                )),
            };
            for proj in &mut block.proj {
                proj.amx = match mode {
                    FrozenBottom::HostBf16 => {
                        let [k, n] = proj.weight.dims();
                        // `[out, in]` row-major, as the checkpoint stores it.
                        let w = tensor_vec(proj.weight.clone().transpose())?;
                        FrozenBf16::pack(&w, n, k, layer >= lowest).map(Arc::new)
                    }
                    _ => None,
                };
                if let Some(ad) = &mut proj.adapter {
                    ad.host_mask = mode != FrozenBottom::Autodiff;
                }
            }
        }
        self.head_amx = match mode {
            FrozenBottom::HostBf16 => {
                let w = self.lm_head.as_ref().unwrap_or(&self.embed).clone();
                let [vocab, hidden] = w.dims();
                let w = tensor_vec(w)?;
                let wt = pulserec_core::fastmath::transpose(&w, vocab, hidden);
                PackedBf16::pack(&w, vocab, hidden)
                    .zip(PackedBf16::pack(&wt, hidden, vocab))
                    .map(|(logits, grad_input)| HeadBf16 { logits, grad_input })
            }
            _ => None,
        };
        self.frozen_bottom = mode;
        Ok(mode)
    }

    /// The first layer with an adapter (`num_layers` when none has one).
    fn lowest_adapted(&self) -> usize {
        (0..self.cfg.num_layers)
            .find(|&l| self.lora.adapts_layer(l))
            .unwrap_or(self.cfg.num_layers)
    }

    /// The adapter settings.
    pub fn lora_config(&self) -> &LoraConfig {
        &self.lora
    }

    /// The base model's hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> Device {
        self.embed.device()
    }

    /// Final-norm hidden states of right-padded rows cut to `t` tokens: full causal attention
    /// from position 0, or the branch layout of [`TokenBatch::segments`].
    ///
    /// # Shapes
    /// - `tokens`: `batch * t` ids; returns `[batch, t, hidden]`
    fn hidden(&self, tokens: &[u32], layout: &TokenBatch, t: usize) -> Result<Tensor<3>> {
        let device = self.device();
        let batch = layout.batch;
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [batch * t]), &device);
        let mut x = self
            .embed
            .clone()
            .select(0, ids)
            .reshape([batch, t, self.cfg.hidden_size]);
        let (mask, cos, sin) = self.attention_layout(layout, t, &device);
        let eps = self.cfg.rms_norm_eps;
        let dims = [
            batch,
            t,
            self.cfg.num_heads,
            self.cfg.num_kv_heads,
            self.cfg.head_dim,
        ];
        // The host modes: the mask's values for the host kernels, the layers below the lowest
        // adapter off the graph, and the adapted layers' masked softmax as one op (`fused.rs`).
        let host = match self.frozen_bottom {
            FrozenBottom::Host | FrozenBottom::HostBf16 if device.is_autodiff() => {
                Some(host_mask(mask.clone(), batch)?)
            }
            _ => None,
        };
        let bottom = if host.is_some() {
            self.lowest_adapted()
        } else {
            0
        };
        if let Some(host_mask) = host.as_ref().filter(|_| bottom > 0) {
            // No gradient flows below the lowest adapter: those layers run off the graph, with
            // the host kernels of the plain device, and their output re-enters it as a constant.
            let rope = (
                cos.clone().without_autodiff(),
                sin.clone().without_autodiff(),
            );
            let mut h = x.without_autodiff();
            for blk in &self.blocks[..bottom] {
                h = layer_forward(
                    &FrozenBlock::of(blk),
                    h,
                    dims,
                    (&rope.0, &rope.1),
                    eps,
                    |q, k, v| Ok(grouped_attention_host(q, k, v, host_mask)),
                )?;
            }
            x = h.autodiff();
        }
        for blk in &self.blocks[bottom..] {
            x = layer_forward(blk, x, dims, (&cos, &sin), eps, |q, k, v| {
                Ok(match &host {
                    Some(host) => attend(q, k, v, |scores, scale, sizes| {
                        fused::masked_softmax(scores.clone(), scale, host, sizes).unwrap_or_else(
                            |_| masked_softmax_ops(scores, scale, mask.clone(), sizes),
                        )
                    }),
                    None => grouped_attention(q, k, v, mask.clone()),
                })
            })?;
        }
        Ok(rms_norm(x, &self.norm, eps))
    }

    /// The additive attention mask and the RoPE cos/sin of the first `t` tokens of `batch`'s
    /// rows: causal with positions `0..t` for plain rows (shared by every row), per row for the
    /// branch layout (a token sees the prefix and its own segment; its position counts them).
    ///
    /// # Shapes
    /// - returns `[1 or batch, 1, t, t]` and two `[1 or batch, 1, t, head_dim / 2]` tensors
    fn attention_layout(
        &self,
        batch: &TokenBatch,
        t: usize,
        device: &Device,
    ) -> (Tensor<4>, Tensor<4>, Tensor<4>) {
        let rows = if batch.segments.is_empty() {
            1
        } else {
            batch.batch
        };
        let mut mask = vec![f32::NEG_INFINITY; rows * t * t];
        let mut positions = Vec::with_capacity(rows * t);
        for r in 0..rows {
            for i in 0..t {
                let mut seen = 0;
                for j in 0..=i {
                    if batch.sees(r, i, j) {
                        mask[(r * t + i) * t + j] = 0.0;
                        seen += 1;
                    }
                }
                positions.push(seen - 1);
            }
        }
        let mask = Tensor::<4>::from_data(TensorData::new(mask, [rows, 1, t, t]), device);
        let (cos, sin) = rope_tables(&rope_inv_freq(&self.cfg), &positions, rows, device);
        (mask, cos, sin)
    }

    /// Logits of hidden rows.
    ///
    /// # Shapes
    /// - `hidden`: `[n, hidden]`; returns `[n, vocab]`
    fn head(&self, hidden: Tensor<2>) -> Tensor<2> {
        let w = self.lm_head.as_ref().unwrap_or(&self.embed);
        hidden.matmul(w.clone().transpose())
    }

    /// Logits for every position (eval / tests).
    ///
    /// # Shapes
    /// - returns `[batch, seq, vocab]`
    pub fn logits(&self, batch: &TokenBatch) -> Result<Tensor<3>> {
        batch.validate(self.cfg.vocab_size, self.cfg.max_position)?;
        let (b, t) = (batch.batch, batch.seq);
        let h = self.hidden(&batch.tokens, batch, t)?;
        Ok(self
            .head(h.reshape([b * t, self.cfg.hidden_size]))
            .reshape([b, t, self.cfg.vocab_size]))
    }

    /// Mean cross-entropy over the positions with a positive loss mask (weighted by the mask),
    /// differentiable on an autodiff device. The LM head runs only on the hidden states that
    /// predict a target, and rows are cut after the longest row's last token.
    ///
    /// # Shapes
    /// - returns `[1]`
    pub fn loss(&self, batch: &TokenBatch) -> Result<Tensor<1>> {
        let logp = self.target_log_probs(batch)?;
        let weights: Vec<f32> = batch
            .loss_mask
            .iter()
            .copied()
            .filter(|&w| w > 0.0)
            .collect();
        let total: f32 = weights.iter().sum();
        let n = weights.len();
        let weights = Tensor::<1>::from_data(TensorData::new(weights, [n]), &self.device());
        Ok((logp * weights).sum() * (-1.0 / total))
    }

    /// Log-probability of every target token: the positions with a positive loss mask, row by
    /// row, in order (differentiable on an autodiff device). The LM head runs only on the hidden
    /// states that predict a target, and rows are cut after the longest row's last token; in the
    /// host modes of [`FrozenBottom`] its log-softmax runs off the graph (`head_log_probs_host`).
    ///
    /// # Shapes
    /// - returns `[n]`, `n` = [`TokenBatch::target_count`]
    pub fn target_log_probs(&self, batch: &TokenBatch) -> Result<Tensor<1>> {
        batch.validate(self.cfg.vocab_size, self.cfg.max_position)?;
        if batch.target_count() == 0 {
            return Err(SlmError::InvalidBatch(
                "no position has a positive loss mask".into(),
            ));
        }
        let (b, seq) = (batch.batch, batch.seq);
        let t = batch.lengths.iter().copied().max().unwrap_or(seq);
        let mut tokens = Vec::with_capacity(b * t);
        let (mut rows, mut targets) = (Vec::new(), Vec::new());
        for r in 0..b {
            tokens.extend_from_slice(&batch.tokens[r * seq..r * seq + t]);
            for p in 1..t {
                if batch.loss_mask[r * seq + p] > 0.0 {
                    // The hidden state of the token before p predicts token p (in the branch
                    // layout: the last one p sees; a continuation's first token follows the
                    // prefix's last token).
                    let prev = (0..p).rev().find(|&j| batch.sees(r, p, j)).unwrap_or(p - 1);
                    rows.push((r * t + prev) as i64);
                    targets.push(batch.tokens[r * seq + p] as i64);
                }
            }
        }
        let device = self.device();
        let n = rows.len();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), &device);
        let h = self
            .hidden(&tokens, batch, t)?
            .reshape([b * t, self.cfg.hidden_size])
            .select(0, rows);
        if self.frozen_bottom != FrozenBottom::Autodiff && device.is_autodiff() {
            return self.head_log_probs_host(h, &targets);
        }
        let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
        Ok(log_softmax(self.head(h), 1).gather(1, targets).reshape([n]))
    }

    /// `log softmax(h Wᵀ)[target]` per row with the head off the autodiff graph (the host
    /// modes of [`FrozenBottom`]): the logits and their softmax are computed on the plain
    /// device (in bf16 under [`FrozenBottom::HostBf16`]), and only a `[n,
    /// hidden]` product enters the graph. The head is frozen, so the log-probability's gradient
    /// with respect to `h` is all backward needs: `∂ log p_t / ∂h = (onehot(t) - p) W =: G`,
    /// and `s = Σ h ⊙ G` (with `G` a constant) has it; the result is `s - detach(s) +
    /// log p_t`, the exact log-probability with `s`'s gradient. This replaces the graph's
    /// `[n, vocab]` log-softmax (several full-size passes of `exp` and copies, forward and
    /// backward) by one softmax pass and two matmuls.
    ///
    /// # Shapes
    /// - `h`: `[n, hidden]` on the autodiff device; returns `[n]`
    fn head_log_probs_host(&self, h: Tensor<2>, targets: &[i64]) -> Result<Tensor<1>> {
        let [n, hidden] = h.dims();
        let vocab = self.cfg.vocab_size;
        let plain_h = h.clone().without_autodiff();
        let host = plain_h.device();
        let w = self
            .lm_head
            .as_ref()
            .unwrap_or(&self.embed)
            .clone()
            .without_autodiff();
        let mut probs = match &self.head_amx {
            Some(amx) => amx.logits.matmul(&tensor_vec(plain_h)?, n),
            None => tensor_vec(plain_h.matmul(w.clone().transpose()))?,
        };
        let target_logit: Vec<f32> = (0..n)
            .map(|r| probs[r * vocab + targets[r] as usize])
            .collect();
        let lse = pulserec_core::fastmath::softmax_rows_lse(&mut probs, vocab);
        let logp: Vec<f32> = target_logit.iter().zip(&lse).map(|(z, l)| z - l).collect();
        // p - onehot(t), then G = -(p - onehot(t)) W.
        for (r, &t) in targets.iter().enumerate() {
            probs[r * vocab + t as usize] -= 1.0;
        }
        let minus_g = match &self.head_amx {
            Some(amx) => {
                let g = amx.grad_input.matmul(&probs, n);
                Tensor::<2>::from_data(TensorData::new(g, [n, hidden]), &host)
            }
            None => Tensor::<2>::from_data(TensorData::new(probs, [n, vocab]), &host).matmul(w),
        };
        let device = self.device();
        let g = (-minus_g).autodiff();
        let s = (h * g).sum_dim(1).reshape([n]);
        let logp = Tensor::<1>::from_data(TensorData::new(logp, [n]), &device);
        Ok(s.clone() - s.detach() + logp)
    }
}

/// The additive mask of [`LoraModel::attention_layout`] as host values with one `[t, t]` block
/// per row (a mask shared by every row is repeated).
///
/// # Shapes
/// - `mask`: `[1 or batch, 1, t, t]`; returns `batch * t * t` values
fn host_mask(mask: Tensor<4>, batch: usize) -> Result<Vec<f32>> {
    let rows = mask.dims()[0];
    let values = tensor_vec(mask.without_autodiff())?;
    Ok(if rows == batch {
        values
    } else {
        values.repeat(batch)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_dropout_mask_keeps_1_minus_p_scaled_and_follows_the_device_seed() {
        let device = Device::flex().autodiff();
        let shape = [300, 1000];
        device.seed(11);
        let first = tensor_vec(host_dropout_mask(shape, 0.05, &device).unwrap()).unwrap();
        let second = tensor_vec(host_dropout_mask(shape, 0.05, &device).unwrap()).unwrap();
        device.seed(11);
        let again = tensor_vec(host_dropout_mask(shape, 0.05, &device).unwrap()).unwrap();
        assert_eq!(first, again, "the device seed fixes the mask");
        assert_ne!(first, second, "each call draws a new mask");
        let scale = 1.0 / 0.95f32;
        assert!(first.iter().all(|&v| v == 0.0 || v == scale));
        // 300,000 draws: the dropped share's standard deviation is 0.0004.
        let dropped = first.iter().filter(|&&v| v == 0.0).count() as f64 / first.len() as f64;
        assert!((dropped - 0.05).abs() < 0.002, "dropped {dropped}");
        // Chunks draw different streams (not one stream repeated).
        assert_ne!(first[..1 << 14], first[1 << 14..2 << 14]);
    }
}
