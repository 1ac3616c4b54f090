//! The Llama-family decoder in burn: RMSNorm, RoPE (half-split), grouped-query attention,
//! SwiGLU, tied or separate LM head, with a KV cache.

use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::cache::KvCache;
use crate::config::LlamaConfig;
use crate::error::{Result, SlmError};
use crate::kernels::gather_rows;
use crate::linear::{Linear, WeightMode, tensor_vec};
use crate::lora::LoraTarget;
use crate::weights::{ModelWeights, WeightMatrix};

/// A host vector as a 1-D tensor on `device`.
pub(crate) fn vec_tensor(v: &[f32], device: &Device) -> Tensor<1> {
    Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
}

/// RMSNorm: `x / sqrt(mean(x²) + eps) * weight`.
///
/// # Shapes
/// - `x`: `[batch, seq, hidden]`, `weight`: `[hidden]`; returns `[batch, seq, hidden]`
pub(crate) fn rms_norm(x: Tensor<3>, weight: &Tensor<1>, eps: f32) -> Tensor<3> {
    let device = x.device();
    if !on_host(&device) {
        return rms_norm_ops(x, weight, eps);
    }
    // One pass over a copy (`x` stays shared with the residual) instead of seven.
    let mut data = x.into_data();
    let w = weight.clone().into_data();
    if let (Ok(values), Ok(w)) = (data.as_mut_slice::<f32>(), w.as_slice::<f32>()) {
        pulserec_core::fastmath::rms_norm_rows(values, w, eps);
        return Tensor::from_data(data, &device);
    }
    rms_norm_ops(Tensor::from_data(data, &device), weight, eps)
}

/// Whether element-wise steps may run on the tensor's host buffer: the plain flex device.
fn on_host(device: &Device) -> bool {
    !device.is_autodiff() && *device == Device::flex()
}

/// [`rms_norm`] with burn's ops (autodiff, other devices).
fn rms_norm_ops(x: Tensor<3>, weight: &Tensor<1>, eps: f32) -> Tensor<3> {
    let ms = x.clone().powi_scalar(2).mean_dim(2);
    x * (ms + eps).sqrt().recip() * weight.clone().unsqueeze::<3>()
}

/// `silu(gate) * up`. On the plain flex (CPU) device one host pass with the vectorised exp of
/// [`pulserec_core::fastmath`] (burn-flex's sigmoid calls libm's scalar `expf` per element,
/// then multiplies in a second pass); elsewhere burn's ops.
///
/// # Shapes
/// - `gate`, `up`: `[batch, seq, intermediate]`; returns the same
pub(crate) fn swiglu(gate: Tensor<3>, up: Tensor<3>) -> Tensor<3> {
    let device = gate.device();
    if !on_host(&device) {
        return silu(gate) * up;
    }
    // Zero-copy on flex for fresh (contiguous, unshared) linear outputs.
    let mut g = gate.into_data();
    let u = up.into_data();
    match (g.as_mut_slice::<f32>(), u.as_slice::<f32>()) {
        (Ok(gv), Ok(uv)) if gv.len() == uv.len() => {
            pulserec_core::fastmath::silu_mul_inplace(gv, uv);
            Tensor::from_data(g, &device)
        }
        _ => silu(Tensor::from_data(g, &device)) * Tensor::from_data(u, &device),
    }
}

/// One decoder layer as both decoders run it: two RMSNorm weights and seven projections,
/// plain here ([`Linear`], possibly quantised) or with a LoRA adapter in
/// [`crate::train_model::LoraModel`].
pub(crate) trait DecoderLayer {
    /// The RMSNorm weights before attention and before the MLP.
    fn norms(&self) -> (&Tensor<1>, &Tensor<1>);

    /// `x` through projection `which`.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, in]`; returns `[batch, seq, out]`
    fn project(&self, which: LoraTarget, x: Tensor<3>) -> Result<Tensor<3>>;

    /// RMSNorm of `x` before the attention or the MLP, by that one of [`DecoderLayer::norms`]
    /// (default: [`rms_norm`]).
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, hidden]`; returns the same
    fn norm(&self, x: Tensor<3>, at: NormAt, eps: f32) -> Result<Tensor<3>> {
        let (attention, mlp) = self.norms();
        let weight = match at {
            NormAt::Attention => attention,
            NormAt::Mlp => mlp,
        };
        Ok(rms_norm(x, weight, eps))
    }

    /// The MLP's `silu(gate) * up` (default: [`swiglu`]).
    ///
    /// # Shapes
    /// - `gate`, `up`: `[batch, seq, intermediate]`; returns the same
    fn gated(&self, gate: Tensor<3>, up: Tensor<3>) -> Result<Tensor<3>> {
        Ok(swiglu(gate, up))
    }
}

/// Which of a layer's two RMSNorms ([`DecoderLayer::norm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NormAt {
    /// Before the attention.
    Attention,
    /// Before the MLP.
    Mlp,
}

/// The sizes a layer's forward needs: `[batch, seq, heads, kv_heads, head_dim]`.
pub(crate) type LayerDims = [usize; 5];

/// The block body of both decoders: pre-norm grouped-query attention with RoPE, then a
/// pre-norm SwiGLU MLP, each added to the residual. `attend(q, k, v)` is the attention proper
/// (with the KV cache at inference, over the whole rows in training).
///
/// # Shapes
/// - `x`: `[batch, seq, hidden]`, `cos`/`sin`: `[1 or batch, 1, seq, head_dim / 2]`
/// - `attend` gets `q` `[batch, heads, seq, head_dim]`, `k`/`v` `[batch, kv_heads, seq,
///   head_dim]` and returns `[batch, seq, heads * head_dim]`
/// - returns `[batch, seq, hidden]`
pub(crate) fn layer_forward(
    layer: &impl DecoderLayer,
    x: Tensor<3>,
    [batch, t, h, kv, hd]: LayerDims,
    (cos, sin): (&Tensor<4>, &Tensor<4>),
    eps: f32,
    attend: impl FnOnce(Tensor<4>, Tensor<4>, Tensor<4>) -> Result<Tensor<3>>,
) -> Result<Tensor<3>> {
    let xn = layer.norm(x.clone(), NormAt::Attention, eps)?;
    let heads = |y: Tensor<3>, n: usize| y.reshape([batch, t, n, hd]).swap_dims(1, 2);
    let q = rope(
        heads(layer.project(LoraTarget::Q, xn.clone())?, h),
        cos,
        sin,
    );
    let k = rope(
        heads(layer.project(LoraTarget::K, xn.clone())?, kv),
        cos,
        sin,
    );
    let v = heads(layer.project(LoraTarget::V, xn)?, kv);
    let x = x + layer.project(LoraTarget::O, attend(q, k, v)?)?;
    let xn = layer.norm(x.clone(), NormAt::Mlp, eps)?;
    let act = layer.gated(
        layer.project(LoraTarget::Gate, xn.clone())?,
        layer.project(LoraTarget::Up, xn)?,
    )?;
    Ok(x + layer.project(LoraTarget::Down, act)?)
}

/// RoPE's inverse frequencies `1 / theta^(2i / head_dim)` for `i < head_dim / 2`.
pub(crate) fn rope_inv_freq(cfg: &LlamaConfig) -> Vec<f32> {
    (0..cfg.head_dim / 2)
        .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f32 / cfg.head_dim as f32))
        .collect()
}

/// RoPE cos/sin at `positions` (`rows * seq` of them, row-major).
///
/// # Shapes
/// - returns two `[rows, 1, seq, head_dim / 2]` tensors
pub(crate) fn rope_tables(
    inv_freq: &[f32],
    positions: &[usize],
    rows: usize,
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(positions.len() * half);
    let mut sin = Vec::with_capacity(positions.len() * half);
    for &p in positions {
        for &f in inv_freq {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    let t = positions.len() / rows.max(1);
    let mk = |v| Tensor::<4>::from_data(TensorData::new(v, [rows, 1, t, half]), device);
    (mk(cos), mk(sin))
}

/// An inference layer: its projections in [`LoraTarget::ALL`] order.
struct Block {
    attn_norm: Tensor<1>,
    ffn_norm: Tensor<1>,
    proj: Vec<Linear>,
}

impl DecoderLayer for Block {
    fn norms(&self) -> (&Tensor<1>, &Tensor<1>) {
        (&self.attn_norm, &self.ffn_norm)
    }

    fn project(&self, which: LoraTarget, x: Tensor<3>) -> Result<Tensor<3>> {
        self.proj[which.index()].forward(x)
    }
}

/// Token embedding: dense tensor, or quantised rows looked up on the CPU.
enum Embedding {
    Dense(Tensor<2>),
    Quant(WeightMatrix),
}

/// A Llama-family causal language model.
pub struct Llama {
    cfg: LlamaConfig,
    device: Device,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Tensor<1>,
    lm_head: Linear,
    inv_freq: Vec<f32>,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama").field("config", &self.cfg).finish()
    }
}

impl Llama {
    /// Builds the model on `device` from loaded weights.
    pub fn new(
        cfg: LlamaConfig,
        w: &ModelWeights,
        mode: WeightMode,
        device: &Device,
    ) -> Result<Self> {
        let blocks = w
            .layers
            .iter()
            .map(|l| {
                Ok(Block {
                    attn_norm: vec_tensor(&l.attn_norm, device),
                    ffn_norm: vec_tensor(&l.ffn_norm, device),
                    proj: LoraTarget::ALL
                        .iter()
                        .map(|&t| Linear::new(l.matrix(t), l.bias(t), mode, device))
                        .collect::<Result<_>>()?,
                })
            })
            .collect::<Result<_>>()?;
        let lm_head = Linear::new(w.lm_head.as_ref().unwrap_or(&w.embed), None, mode, device)?;
        let quant_embed = mode != WeightMode::Dense && *device == Device::flex();
        let embed = if quant_embed {
            Embedding::Quant(w.embed.clone())
        } else {
            let e = w.embed.to_f32()?;
            Embedding::Dense(Tensor::<2>::from_data(
                TensorData::new(e, [w.embed.rows, w.embed.cols]),
                device,
            ))
        };
        let inv_freq = rope_inv_freq(&cfg);
        Ok(Self {
            norm: vec_tensor(&w.norm, device),
            cfg,
            device: device.clone(),
            embed,
            blocks,
            lm_head,
            inv_freq,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// An empty cache for `batch` sequences.
    pub fn new_cache(&self, batch: usize) -> KvCache {
        KvCache::new(self.cfg.num_layers, batch)
    }

    fn embed(&self, tokens: &[u32], b: usize, t: usize) -> Result<Tensor<3>> {
        if let Some(&bad) = tokens
            .iter()
            .find(|&&id| id as usize >= self.cfg.vocab_size)
        {
            return Err(SlmError::InvalidRequest {
                index: 0,
                reason: format!(
                    "token id {bad} outside the vocabulary ({})",
                    self.cfg.vocab_size
                ),
            });
        }
        Ok(match &self.embed {
            Embedding::Dense(e) => {
                let ids: Vec<i64> = tokens.iter().map(|&x| x as i64).collect();
                let ids =
                    Tensor::<1, Int>::from_data(TensorData::new(ids, [tokens.len()]), &self.device);
                e.clone()
                    .select(0, ids)
                    .reshape([b, t, self.cfg.hidden_size])
            }
            Embedding::Quant(w) => {
                let rows = gather_rows(w, tokens)?;
                Tensor::<3>::from_data(
                    TensorData::new(rows, [b, t, self.cfg.hidden_size]),
                    &self.device,
                )
            }
        })
    }

    /// Runs new tokens through the model, appending their keys/values to `cache`.
    ///
    /// `tokens` is `[batch, seq]` row-major; `new_pads[i]` of row `i`'s first new tokens are
    /// padding, hidden from attention and skipped by the positions (left padding on an empty
    /// cache; on a filled one, the gap between a reused prefix and the rest of a prompt). Empty
    /// `new_pads`: no padding. Returns the final-norm hidden states.
    ///
    /// # Shapes
    /// - `tokens`: `batch * seq` ids
    /// - returns `[batch, seq, hidden]`
    pub fn forward(
        &self,
        tokens: &[u32],
        batch: usize,
        new_pads: &[usize],
        cache: &mut KvCache,
    ) -> Result<Tensor<3>> {
        let t = tokens.len() / batch.max(1);
        if batch == 0 || t == 0 || tokens.len() != batch * t || cache.batch() != batch {
            return Err(SlmError::Backend(format!(
                "forward: {} tokens for batch {batch}, cache batch {}",
                tokens.len(),
                cache.batch()
            )));
        }
        let start = cache.len();
        // The context limit bounds positions (visible slots), not slots: hidden padding after a
        // reused prefix may make a row's slots outnumber its tokens.
        let visible = (0..batch)
            .map(|r| {
                let hidden: usize = cache.hidden(r).iter().map(|h| h.len()).sum();
                start + t - hidden - new_pads.get(r).copied().unwrap_or(0).min(t)
            })
            .max()
            .unwrap_or(0);
        if visible > self.cfg.max_position {
            return Err(SlmError::ContextOverflow {
                index: 0,
                tokens: visible,
                context: self.cfg.max_position,
            });
        }
        cache.push_pads(new_pads)?;
        let positions: Vec<usize> = (0..batch)
            .flat_map(|r| cache.positions(r, start, t))
            .collect();
        let (cos, sin) = rope_tables(&self.inv_freq, &positions, batch, &self.device);
        // A decode step on the host reads the visible slots directly and needs no mask.
        let host_decode = t == 1 && on_host(&self.device);
        let mask_values = if host_decode {
            Vec::new()
        } else {
            self.attention_mask(cache, start, t)
        };
        // On flex the mask stays a host buffer for the one-pass softmax.
        let mask = (!on_host(&self.device)).then(|| {
            let data = TensorData::new(mask_values.clone(), [batch, 1, t, start + t]);
            Tensor::<4>::from_data(data, &self.device)
        });
        let dims = [
            batch,
            t,
            self.cfg.num_heads,
            self.cfg.num_kv_heads,
            self.cfg.head_dim,
        ];
        let mut x = self.embed(tokens, batch, t)?;
        for (li, blk) in self.blocks.iter().enumerate() {
            x = layer_forward(
                blk,
                x,
                dims,
                (&cos, &sin),
                self.cfg.rms_norm_eps,
                |q, k, v| {
                    if host_decode {
                        cache.write(li, k, v);
                        return self.decode_attention(cache, li, start + 1, q);
                    }
                    let (k, v) = cache.append(li, k, v);
                    Ok(match &mask {
                        Some(mask) => grouped_attention(q, k, v, mask.clone()),
                        None => grouped_attention_host(q, k, v, &mask_values),
                    })
                },
            )?;
        }
        Ok(rms_norm(x, &self.norm, self.cfg.rms_norm_eps))
    }

    /// A decode step's attention on the host ([`KvCache::attend_step`]): the visible slots
    /// only, read in place, a forked cache's shared slots once per prompt.
    ///
    /// # Shapes
    /// - `q`: `[batch, heads, 1, head_dim]`; returns `[batch, 1, heads * head_dim]`
    fn decode_attention(
        &self,
        cache: &KvCache,
        layer: usize,
        end: usize,
        q: Tensor<4>,
    ) -> Result<Tensor<3>> {
        let [batch, heads, _, hd] = q.dims();
        let y = cache.attend_step(layer, end, &tensor_vec(q)?, heads, 1.0 / (hd as f32).sqrt())?;
        Ok(Tensor::<3>::from_data(
            TensorData::new(y, [batch, 1, heads * hd]),
            &self.device,
        ))
    }

    /// Whether decode steps run [`KvCache::attend_step`] (one token per row on the plain flex
    /// device): where a [`KvCache::fork`]ed cache saves copying its prompts.
    pub(crate) fn decodes_on_host(&self) -> bool {
        on_host(&self.device)
    }

    /// Additive mask over `[batch, 1, t, start + t]` (row-major): causal, hidden (padding) keys
    /// hidden (a padding query still sees itself so its row stays finite).
    fn attention_mask(&self, cache: &KvCache, start: usize, t: usize) -> Vec<f32> {
        let b = cache.batch();
        let s = start + t;
        let mut m = vec![0.0f32; b * t * s];
        for r in 0..b {
            let mut hidden = vec![false; s];
            for h in cache.hidden(r) {
                hidden[h.start.min(s)..h.end.min(s)].fill(true);
            }
            for i in 0..t {
                let qi = start + i;
                for j in 0..s {
                    if j > qi || (hidden[j] && j != qi) {
                        m[(r * t + i) * s + j] = f32::NEG_INFINITY;
                    }
                }
            }
        }
        m
    }

    /// Logits of selected hidden states, always on the dense copy of the output layer (gemm),
    /// so a row's logits do not depend on how many rows are selected.
    ///
    /// # Shapes
    /// - `hidden`: `[n, hidden]`; returns `[n, vocab]` as a row-major `Vec`
    pub fn logits(&self, hidden: Tensor<2>) -> Result<Vec<f32>> {
        let [n, d] = hidden.dims();
        let y = self.lm_head.forward_dense(hidden.reshape([1, n, d]))?;
        tensor_vec(y)
    }

    /// Logits at the last position of every row.
    ///
    /// # Shapes
    /// - `hidden`: `[batch, seq, hidden]`; returns `[batch, vocab]` row-major
    pub fn last_logits(&self, hidden: Tensor<3>) -> Result<Vec<f32>> {
        let t = hidden.dims()[1];
        let last = hidden.narrow(1, t - 1, 1);
        // A prompt's (t > 1) on the dense copy, whatever the batch; a decode step's as the
        // step's other layers ran.
        tensor_vec(if t == 1 {
            self.lm_head.forward(last)?
        } else {
            self.lm_head.forward_dense(last)?
        })
    }
}

/// Scaled dot-product attention with grouped KV heads and an additive mask.
///
/// # Shapes
/// - `q`: `[batch, heads, seq, head_dim]`, `k`/`v`: `[batch, kv_heads, keys, head_dim]`,
///   `mask`: broadcastable to `[batch, heads, seq, keys]`
/// - returns `[batch, seq, heads * head_dim]`
pub(crate) fn grouped_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Tensor<4>,
) -> Tensor<3> {
    attend(q, k, v, |scores, scale, [batch, h, t, s]| {
        masked_softmax_ops(scores, scale, mask, [batch, h, t, s])
    })
}

/// [`grouped_attention`] with the scale, mask and softmax in one pass over the scores' host
/// buffer (flex, no autodiff): burn's version makes five passes and calls libm's scalar `expf`.
///
/// # Shapes
/// - `q`: `[batch, heads, seq, head_dim]`, `k`/`v`: `[batch, kv_heads, keys, head_dim]`,
///   `mask`: `[batch, 1, seq, keys]` row-major
/// - returns `[batch, seq, heads * head_dim]`
pub(crate) fn grouped_attention_host(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: &[f32],
) -> Tensor<3> {
    attend(q, k, v, |scores, scale, [batch, h, t, s]| {
        let device = scores.device();
        let mut data = scores.into_data();
        match data.as_mut_slice::<f32>() {
            Ok(values) if mask.len() == batch * t * s => {
                // Score row r is (b, kv head, group head, query i) with i = r % t.
                let per_batch = h * t;
                pulserec_core::fastmath::softmax_rows_scaled_masked(values, s, scale, mask, |r| {
                    (r / per_batch) * t + r % t
                });
                Tensor::from_data(data, &device)
            }
            _ => {
                let mask = TensorData::new(mask.to_vec(), [batch, 1, t, s]);
                let mask = Tensor::<4>::from_data(mask, &device);
                masked_softmax_ops(
                    Tensor::from_data(data, &device),
                    scale,
                    mask,
                    [batch, h, t, s],
                )
            }
        }
    })
}

/// The attention around its softmax: `probs(scores, scale, [batch, heads, seq, keys])` turns
/// the unscaled grouped scores `[batch, kv_heads, group * seq, keys]` into probabilities of the
/// same shape.
pub(crate) fn attend(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    probs: impl FnOnce(Tensor<4>, f32, [usize; 4]) -> Tensor<4>,
) -> Tensor<3> {
    let [batch, h, t, hd] = q.dims();
    let [_, kv, s, _] = k.dims();
    let g = h / kv;
    // Query heads sharing a KV head are stacked along the sequence axis, so one 4-D
    // matmul serves the whole group without repeating K/V.
    let qg = q.reshape([batch, kv, g * t, hd]);
    let scores = qg.matmul(k.swap_dims(2, 3));
    probs(scores, 1.0 / (hd as f32).sqrt(), [batch, h, t, s])
        .matmul(v)
        .reshape([batch, h, t, hd])
        .swap_dims(1, 2)
        .reshape([batch, t, h * hd])
}

/// `softmax(scale * scores + mask)` with burn's ops, on grouped scores
/// `[batch, kv_heads, group * seq, keys]`; `dims` is `[batch, heads, seq, keys]`.
pub(crate) fn masked_softmax_ops(
    scores: Tensor<4>,
    scale: f32,
    mask: Tensor<4>,
    dims: [usize; 4],
) -> Tensor<4> {
    let grouped = scores.dims();
    let scores = scores.reshape(dims) * scale + mask;
    softmax(scores, 3).reshape(grouped)
}

/// Half-split rotary embedding (HF `rotate_half` convention).
///
/// # Shapes
/// - `x`: `[batch, heads, seq, head_dim]`, `cos`/`sin`: `[batch, 1, seq, head_dim / 2]`
pub(crate) fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(
        vec![
            x1.clone() * cos.clone() - x2.clone() * sin.clone(),
            x2 * cos.clone() + x1 * sin.clone(),
        ],
        3,
    )
}
