//! [`LoraModel`]: the decoder as a trainable burn module (frozen f32 base weights plus LoRA
//! `A`/`B` parameters), with the masked next-token loss used for supervised fine-tuning.
//!
//! The base weights are plain tensors, not [`Param`]s: burn's optimisers and gradient walks see
//! only the adapters, and the base never requires a gradient, so backward computes no weight
//! gradient for it. The math is [`crate::Llama`]'s (RMSNorm, half-split RoPE, grouped-query
//! attention, SwiGLU, tied or separate head, Qwen2 q/k/v biases) without the KV cache: full causal
//! attention over right-padded rows.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::activation::{log_softmax, silu};
use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::LlamaConfig;
use crate::error::{Result, SlmError};
use crate::linear::tensor_vec;
use crate::lora::{
    ADAPTER_WEIGHTS_FILE, AdapterConfigFile, AdapterTensors, LoraConfig, LoraTarget,
    parse_tensor_name, write_tensors,
};
use crate::model::{grouped_attention, rms_norm, rope};
use crate::weights::{LayerWeights, ModelWeights, WeightMatrix};

/// A batch of right-padded token rows for training.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    /// `batch * seq` token ids, row-major; positions past a row's length hold any valid id.
    pub tokens: Vec<u32>,
    /// Rows.
    pub batch: usize,
    /// Padded row length.
    pub seq: usize,
    /// Real tokens per row (`1..=seq`).
    pub lengths: Vec<usize>,
    /// `batch * seq` weights; `1.0` where token `t` is a target predicted from tokens `< t`, `0.0`
    /// elsewhere (never at position 0 or past the row's length). Other non-negative values
    /// weight the position.
    pub loss_mask: Vec<f32>,
    /// Branches of a shared prefix: empty for plain causal rows, else `batch * seq` segment ids.
    /// Segment 0 is the prefix; a token of segment `k > 0` attends to the prefix and to the
    /// earlier tokens of segment `k` only, and its RoPE position counts just those tokens, so
    /// several continuations of one prefix are trained in one row exactly as if each followed
    /// the prefix alone (see [`TokenBatch::with_segments`]).
    pub segments: Vec<u16>,
}

impl TokenBatch {
    /// Right-pads `rows` (token ids with their per-token loss masks) with `pad` to the longest.
    pub fn from_rows(rows: &[(Vec<u32>, Vec<f32>)], pad: u32) -> Result<Self> {
        let seq = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        let mut batch = Self {
            tokens: Vec::with_capacity(rows.len() * seq),
            batch: rows.len(),
            seq,
            lengths: Vec::with_capacity(rows.len()),
            loss_mask: Vec::with_capacity(rows.len() * seq),
            segments: Vec::new(),
        };
        for (i, (tokens, mask)) in rows.iter().enumerate() {
            if tokens.len() != mask.len() {
                return Err(SlmError::InvalidBatch(format!(
                    "row {i}: {} tokens but {} mask values",
                    tokens.len(),
                    mask.len()
                )));
            }
            batch.lengths.push(tokens.len());
            batch.tokens.extend_from_slice(tokens);
            batch.tokens.resize((i + 1) * seq, pad);
            batch.loss_mask.extend_from_slice(mask);
            batch.loss_mask.resize((i + 1) * seq, 0.0);
        }
        Ok(batch)
    }

    /// Gives every row its segment ids (one per real token, padded with the row's last id):
    /// segment 0 is the shared prefix, each `k > 0` one continuation of it (see
    /// [`TokenBatch::segments`]).
    pub fn with_segments(mut self, rows: &[Vec<u16>]) -> Result<Self> {
        if rows.len() != self.batch {
            return Err(SlmError::InvalidBatch(format!(
                "{} segment rows for {} rows",
                rows.len(),
                self.batch
            )));
        }
        let mut segments = Vec::with_capacity(self.batch * self.seq);
        for (r, ids) in rows.iter().enumerate() {
            if ids.len() != self.lengths[r] {
                return Err(SlmError::InvalidBatch(format!(
                    "row {r}: {} segment ids for {} tokens",
                    ids.len(),
                    self.lengths[r]
                )));
            }
            segments.extend_from_slice(ids);
            let last = ids.last().copied().unwrap_or(0);
            segments.resize((r + 1) * self.seq, last);
        }
        self.segments = segments;
        Ok(self)
    }

    /// Whether token `j` is visible from token `i` (`j <= i`) of row `r`.
    fn sees(&self, r: usize, i: usize, j: usize) -> bool {
        if self.segments.is_empty() {
            return true;
        }
        let seg = &self.segments[r * self.seq..(r + 1) * self.seq];
        seg[j] == 0 || seg[j] == seg[i]
    }

    /// Checks shapes, lengths, token ids (`< vocab`), context length and the mask.
    pub fn validate(&self, vocab: usize, context: usize) -> Result<()> {
        let bad = |m: String| Err(SlmError::InvalidBatch(m));
        let n = self.batch * self.seq;
        if self.batch == 0 || self.seq == 0 {
            return bad(format!("empty batch ({} x {})", self.batch, self.seq));
        }
        if self.tokens.len() != n || self.loss_mask.len() != n || self.lengths.len() != self.batch {
            return bad(format!(
                "{} tokens, {} mask values and {} lengths for {} rows of {}",
                self.tokens.len(),
                self.loss_mask.len(),
                self.lengths.len(),
                self.batch,
                self.seq
            ));
        }
        if !self.segments.is_empty() && self.segments.len() != n {
            return bad(format!(
                "{} segment ids for {} rows of {}",
                self.segments.len(),
                self.batch,
                self.seq
            ));
        }
        if self.seq > context {
            return bad(format!(
                "rows of {} tokens exceed the context length {context}",
                self.seq
            ));
        }
        for (r, &len) in self.lengths.iter().enumerate() {
            if len == 0 || len > self.seq {
                return bad(format!("row {r}: length {len} outside 1..={}", self.seq));
            }
            let row = r * self.seq..(r + 1) * self.seq;
            if let Some(t) = self.tokens[row.clone()]
                .iter()
                .find(|&&t| t as usize >= vocab)
            {
                return bad(format!(
                    "row {r}: token id {t} outside the vocabulary ({vocab})"
                ));
            }
            for (p, &w) in self.loss_mask[row].iter().enumerate() {
                if !(w.is_finite() && w >= 0.0) {
                    return bad(format!("row {r} position {p}: loss mask {w}"));
                }
                if w > 0.0 && (p == 0 || p >= len) {
                    return bad(format!(
                        "row {r} position {p}: a target must follow a token and lie within the row's {len} tokens"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Positions with a positive loss mask.
    pub fn target_count(&self) -> usize {
        self.loss_mask.iter().filter(|&&w| w > 0.0).count()
    }
}

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
}

/// `y = x Wᵀ + b + scale · B A dropout(x)` with `W` and `b` frozen.
#[derive(Module, Debug)]
struct LoraLinear {
    /// `[in, out]` (a transposed view of the `[out, in]` checkpoint matrix).
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
    adapter: Option<Adapter>,
}

fn matrix_tensor(data: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::<2>::from_data(TensorData::new(data, shape), device)
}

fn vec_tensor(v: &[f32], device: &Device) -> Tensor<1> {
    Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
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
            }
        });
        Ok(Self {
            weight,
            bias: bias.map(|b| vec_tensor(b, device)),
            adapter,
        })
    }

    /// # Shapes
    /// - `x`: `[batch, seq, in]`; returns `[batch, seq, out]`
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, t, i] = x.dims();
        let out = self.weight.dims()[1];
        let x = x.reshape([b * t, i]);
        let mut y = x.clone().matmul(self.weight.clone());
        if let Some(ad) = &self.adapter {
            let low = ad.dropout.forward(x).matmul(ad.lora_a.val().transpose()) * ad.scale;
            y = y + low.matmul(ad.lora_b.val().transpose());
        }
        let y = y.reshape([b, t, out]);
        match &self.bias {
            Some(bias) => y + bias.clone().unsqueeze::<3>(),
            None => y,
        }
    }
}

#[derive(Module, Debug)]
struct LoraBlock {
    attn_norm: Tensor<1>,
    q: LoraLinear,
    k: LoraLinear,
    v: LoraLinear,
    o: LoraLinear,
    ffn_norm: Tensor<1>,
    gate: LoraLinear,
    up: LoraLinear,
    down: LoraLinear,
}

impl LoraBlock {
    fn linear(&self, target: LoraTarget) -> &LoraLinear {
        match target {
            LoraTarget::Q => &self.q,
            LoraTarget::K => &self.k,
            LoraTarget::V => &self.v,
            LoraTarget::O => &self.o,
            LoraTarget::Gate => &self.gate,
            LoraTarget::Up => &self.up,
            LoraTarget::Down => &self.down,
        }
    }

    fn linear_mut(&mut self, target: LoraTarget) -> &mut LoraLinear {
        match target {
            LoraTarget::Q => &mut self.q,
            LoraTarget::K => &mut self.k,
            LoraTarget::V => &mut self.v,
            LoraTarget::O => &mut self.o,
            LoraTarget::Gate => &mut self.gate,
            LoraTarget::Up => &mut self.up,
            LoraTarget::Down => &mut self.down,
        }
    }
}

fn base_matrix(l: &LayerWeights, target: LoraTarget) -> &WeightMatrix {
    match target {
        LoraTarget::Q => &l.q,
        LoraTarget::K => &l.k,
        LoraTarget::V => &l.v,
        LoraTarget::O => &l.o,
        LoraTarget::Gate => &l.gate,
        LoraTarget::Up => &l.up,
        LoraTarget::Down => &l.down,
    }
}

fn base_matrix_mut(l: &mut LayerWeights, target: LoraTarget) -> &mut WeightMatrix {
    match target {
        LoraTarget::Q => &mut l.q,
        LoraTarget::K => &mut l.k,
        LoraTarget::V => &mut l.v,
        LoraTarget::O => &mut l.o,
        LoraTarget::Gate => &mut l.gate,
        LoraTarget::Up => &mut l.up,
        LoraTarget::Down => &mut l.down,
    }
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
            let bias = |i: usize| l.qkv_bias.as_ref().map(|b| b[i].as_slice());
            let mut lin = |t: LoraTarget, b: Option<&[f32]>| {
                let m = base_matrix(l, t);
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
                LoraLinear::new(m, b, adapter, device)
            };
            blocks.push(LoraBlock {
                attn_norm: vec_tensor(&l.attn_norm, device),
                q: lin(LoraTarget::Q, bias(0))?,
                k: lin(LoraTarget::K, bias(1))?,
                v: lin(LoraTarget::V, bias(2))?,
                o: lin(LoraTarget::O, None)?,
                ffn_norm: vec_tensor(&l.ffn_norm, device),
                gate: lin(LoraTarget::Gate, None)?,
                up: lin(LoraTarget::Up, None)?,
                down: lin(LoraTarget::Down, None)?,
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
        })
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
    fn hidden(&self, tokens: &[u32], layout: &TokenBatch, t: usize) -> Tensor<3> {
        let device = self.device();
        let batch = layout.batch;
        let (h, kv, hd) = (self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim);
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [batch * t]), &device);
        let mut x = self
            .embed
            .clone()
            .select(0, ids)
            .reshape([batch, t, self.cfg.hidden_size]);
        let (mask, cos, sin) = self.attention_layout(layout, t, &device);
        let eps = self.cfg.rms_norm_eps;
        for blk in &self.blocks {
            let xn = rms_norm(x.clone(), &blk.attn_norm, eps);
            let heads = |y: Tensor<3>, n: usize| y.reshape([batch, t, n, hd]).swap_dims(1, 2);
            let q = rope(heads(blk.q.forward(xn.clone()), h), &cos, &sin);
            let k = rope(heads(blk.k.forward(xn.clone()), kv), &cos, &sin);
            let v = heads(blk.v.forward(xn), kv);
            let ctx = grouped_attention(q, k, v, mask.clone());
            x = x + blk.o.forward(ctx);
            let xn = rms_norm(x.clone(), &blk.ffn_norm, eps);
            let act = silu(blk.gate.forward(xn.clone())) * blk.up.forward(xn);
            x = x + blk.down.forward(act);
        }
        rms_norm(x, &self.norm, eps)
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
        let (cos, sin) = self.rope_tables(&positions, rows, device);
        (mask, cos, sin)
    }

    /// RoPE cos/sin at `positions` (`rows * t` of them, row-major).
    ///
    /// # Shapes
    /// - returns two `[rows, 1, t, head_dim / 2]` tensors
    fn rope_tables(
        &self,
        positions: &[usize],
        rows: usize,
        device: &Device,
    ) -> (Tensor<4>, Tensor<4>) {
        let (hd, theta) = (self.cfg.head_dim, self.cfg.rope_theta);
        let half = hd / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / theta.powf(2.0 * i as f32 / hd as f32))
            .collect();
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        for &p in positions {
            for f in &inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let t = positions.len() / rows.max(1);
        let mk = |v| Tensor::<4>::from_data(TensorData::new(v, [rows, 1, t, half]), device);
        (mk(cos), mk(sin))
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
        let h = self.hidden(&batch.tokens, batch, t);
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
    /// states that predict a target, and rows are cut after the longest row's last token.
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
        let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
        let h = self
            .hidden(&tokens, batch, t)
            .reshape([b * t, self.cfg.hidden_size])
            .select(0, rows);
        Ok(log_softmax(self.head(h), 1).gather(1, targets).reshape([n]))
    }

    fn adapter(&self, layer: usize, target: LoraTarget) -> Result<&Adapter> {
        self.blocks
            .get(layer)
            .and_then(|b| b.linear(target).adapter.as_ref())
            .ok_or_else(|| {
                SlmError::InvalidLoraConfig(format!(
                    "no adapter on `{target}` of layer {layer} (model: {} layers, targets {:?})",
                    self.blocks.len(),
                    self.lora.targets
                ))
            })
    }

    /// The adapter of `target` in `layer` as `(A [rank, in], B [out, rank])`, row-major.
    pub fn adapter_weights(
        &self,
        layer: usize,
        target: LoraTarget,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let ad = self.adapter(layer, target)?;
        Ok((tensor_vec(ad.lora_a.val())?, tensor_vec(ad.lora_b.val())?))
    }

    /// Replaces the adapter of `target` in `layer` with `a` (`[rank, in]`) and `b`
    /// (`[out, rank]`), row-major; parameter ids and gradient settings are kept.
    pub fn set_adapter_weights(
        &mut self,
        layer: usize,
        target: LoraTarget,
        a: &[f32],
        b: &[f32],
    ) -> Result<()> {
        self.adapter(layer, target)?;
        let (out, inp) = target.shape(&self.cfg);
        let r = self.lora.rank;
        if a.len() != r * inp || b.len() != out * r {
            return Err(SlmError::InvalidLoraConfig(format!(
                "`{target}` of layer {layer}: got {} A and {} B values, need [{r}, {inp}] and [{out}, {r}]",
                a.len(),
                b.len()
            )));
        }
        let device = self.device();
        let replace = |p: Param<Tensor<2>>, v: &[f32], shape: [usize; 2]| {
            p.map(|old| {
                let grad = old.is_require_grad();
                let new = matrix_tensor(v.to_vec(), shape, &device);
                if grad { new.require_grad() } else { new }
            })
        };
        // `adapter` checked above that it exists.
        let lin = self.blocks[layer].linear_mut(target);
        if let Some(ad) = lin.adapter.take() {
            lin.adapter = Some(Adapter {
                lora_a: replace(ad.lora_a, a, [r, inp]),
                lora_b: replace(ad.lora_b, b, [out, r]),
                ..ad
            });
        }
        Ok(())
    }

    /// Every adapter tensor under its PEFT name (`...layers.{i}.self_attn.q_proj.lora_A.weight`),
    /// layer by layer in target order; on an autodiff device their gradients can be read with
    /// [`Tensor::grad`].
    pub fn lora_parameters(&self) -> Vec<(String, Tensor<2>)> {
        let mut out = Vec::new();
        for (i, blk) in self.blocks.iter().enumerate() {
            for &t in &self.lora.targets {
                if let Some(ad) = &blk.linear(t).adapter {
                    out.push((t.tensor_name(i, true), ad.lora_a.val()));
                    out.push((t.tensor_name(i, false), ad.lora_b.val()));
                }
            }
        }
        out
    }

    /// Writes `dir/adapter_model.safetensors` (f32, PEFT names and layout) and
    /// `dir/adapter_config.json`, creating `dir`.
    pub fn save_adapter(&self, dir: &Path, base_model: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| SlmError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut tensors = Vec::new();
        for (name, t) in self.lora_parameters() {
            let [rows, cols] = t.dims();
            tensors.push((name, [rows, cols], tensor_vec(t)?));
        }
        write_tensors(&dir.join(ADAPTER_WEIGHTS_FILE), &tensors)?;
        AdapterConfigFile::new(&self.lora, base_model).write(dir)?;
        tracing::info!(dir = %dir.display(), tensors = tensors.len(), "saved LoRA adapter");
        Ok(())
    }

    /// Loads a PEFT adapter directory into this model's adapters. The file's rank, alpha and
    /// targets must equal this model's, every layer must be present with the model's shapes, and
    /// no tensor may name a layer or target the model lacks; otherwise nothing changes and the
    /// error says what differs. The model keeps its own dropout (it only matters in training).
    pub fn load_adapter(&mut self, dir: &Path) -> Result<()> {
        let file = AdapterConfigFile::read(dir)?;
        let theirs = file.lora_config();
        let mismatch = |what: &str, a: String, b: String| SlmError::Adapter {
            path: dir.to_path_buf(),
            reason: format!("{what} {a} does not match the model's {b}"),
        };
        if theirs.rank != self.lora.rank {
            return Err(mismatch(
                "rank",
                theirs.rank.to_string(),
                self.lora.rank.to_string(),
            ));
        }
        if theirs.alpha != self.lora.alpha {
            return Err(mismatch(
                "lora_alpha",
                theirs.alpha.to_string(),
                self.lora.alpha.to_string(),
            ));
        }
        let (mut a, mut b) = (theirs.targets.clone(), self.lora.targets.clone());
        a.sort();
        b.sort();
        if a != b {
            return Err(mismatch(
                "target_modules",
                format!("{a:?}"),
                format!("{b:?}"),
            ));
        }
        let sorted = |l: &Option<Vec<usize>>| {
            l.clone().map(|mut l| {
                l.sort_unstable();
                l
            })
        };
        if sorted(&theirs.layers) != sorted(&self.lora.layers) {
            return Err(mismatch(
                "layers_to_transform",
                format!("{:?}", theirs.layers),
                format!("{:?}", self.lora.layers),
            ));
        }
        let tensors = AdapterTensors::open(dir)?;
        let layers = self.blocks.len();
        for name in tensors.names()? {
            let Some((layer, target, _)) = parse_tensor_name(&name) else {
                return Err(SlmError::Adapter {
                    path: dir.join(ADAPTER_WEIGHTS_FILE),
                    reason: format!("unexpected tensor `{name}`"),
                });
            };
            if layer >= layers || !self.lora.adapts(layer, target) {
                return Err(SlmError::Adapter {
                    path: dir.join(ADAPTER_WEIGHTS_FILE),
                    reason: format!(
                        "tensor `{name}` is outside the model ({layers} layers, targets {:?})",
                        self.lora.targets
                    ),
                });
            }
        }
        let r = self.lora.rank;
        let mut values = Vec::with_capacity(layers * self.lora.targets.len());
        for layer in (0..layers).filter(|&l| self.lora.adapts_layer(l)) {
            for &t in &self.lora.targets {
                let (out, inp) = t.shape(&self.cfg);
                let a = tensors.matrix(&t.tensor_name(layer, true), [r, inp])?;
                let b = tensors.matrix(&t.tensor_name(layer, false), [out, r])?;
                values.push((layer, t, a, b));
            }
        }
        for (layer, t, a, b) in values {
            self.set_adapter_weights(layer, t, &a, &b)?;
        }
        tracing::info!(dir = %dir.display(), "loaded LoRA adapter");
        Ok(())
    }

    /// `base` with every adapter merged in: `W + scale · B A`, merged matrices stored as F32
    /// (other weights are cloned unchanged). `base` must be the weights the model was built from.
    pub fn merged_weights(&self, base: &ModelWeights) -> Result<ModelWeights> {
        if base.layers.len() != self.blocks.len() {
            return Err(SlmError::BadTensor {
                tensor: "layers".into(),
                reason: format!(
                    "{} layers of base weights for a {}-layer adapter model",
                    base.layers.len(),
                    self.blocks.len()
                ),
            });
        }
        let mut merged = base.clone();
        let (r, scale) = (self.lora.rank, self.lora.scale());
        for (layer, lw) in merged.layers.iter_mut().enumerate() {
            if !self.lora.adapts_layer(layer) {
                continue;
            }
            for &t in &self.lora.targets {
                let (a, b) = self.adapter_weights(layer, t)?;
                let m = base_matrix_mut(lw, t);
                let (out, inp) = (m.rows, m.cols);
                if (out, inp) != t.shape(&self.cfg) {
                    return Err(SlmError::BadTensor {
                        tensor: m.name.clone(),
                        reason: format!(
                            "[{out}, {inp}], the adapter needs {:?}",
                            t.shape(&self.cfg)
                        ),
                    });
                }
                let mut w = m.to_f32()?;
                for (o, row) in w.chunks_exact_mut(inp).enumerate() {
                    for k in 0..r {
                        let bk = scale * b[o * r + k];
                        let ak = &a[k * inp..(k + 1) * inp];
                        for (x, &av) in row.iter_mut().zip(ak) {
                            *x += bk * av;
                        }
                    }
                }
                *m = WeightMatrix::from_f32(&m.name, out, inp, &w);
            }
        }
        Ok(merged)
    }
}
