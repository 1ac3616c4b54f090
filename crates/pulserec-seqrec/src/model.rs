//! The SASRec network: embeddings, causal self-attention blocks and the shared output layer.

use burn::module::Module;
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::tensor::activation::{gelu, relu, softmax};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use rand_chacha::ChaCha8Rng;

use crate::config::{Activation, NormPlacement, SasRecConfig, WeightInit};
use crate::dropout::MaskDropout;
use crate::error::Result;

/// Multi-head scaled dot-product self-attention with a causal, padding-aware mask.
#[derive(Module, Debug)]
pub struct SelfAttention {
    query: Linear,
    key: Linear,
    value: Linear,
    output: Linear,
    dropout: MaskDropout,
    heads: usize,
}

impl SelfAttention {
    /// Attends every position to itself and the real positions before it.
    ///
    /// # Shapes
    /// - input: `[batch, len, d]`
    /// - mask_bias: `[batch, 1, len, len]` (0 where allowed, -inf elsewhere; every row allows one key)
    /// - output: `[batch, len, d]`
    ///
    /// `rng` draws the dropout masks (training); `None` disables dropout.
    pub fn forward(
        &self,
        input: Tensor<3>,
        mask_bias: Tensor<4>,
        rng: Option<&mut ChaCha8Rng>,
    ) -> Tensor<3> {
        let [b, l, d] = input.dims();
        let dk = d / self.heads;
        let split = |t: Tensor<3>| t.reshape([b, l, self.heads, dk]).swap_dims(1, 2);
        let q = split(self.query.forward(input.clone()));
        let k = split(self.key.forward(input.clone()));
        let v = split(self.value.forward(input));
        let scores = q.matmul(k.swap_dims(2, 3)).div_scalar((dk as f32).sqrt()) + mask_bias;
        let weights = self.dropout.forward(softmax(scores, 3), rng);
        let context = weights.matmul(v).swap_dims(1, 2).reshape([b, l, d]);
        self.output.forward(context)
    }
}

/// The point-wise feed-forward network `W2 · act(W1 x + b1) + b2`, shared by all positions.
#[derive(Module, Debug)]
pub struct PointWiseFeedForward {
    inner: Linear,
    outer: Linear,
    dropout: MaskDropout,
    gelu: bool,
}

impl PointWiseFeedForward {
    /// # Shapes
    /// - input: `[batch, len, d]`
    /// - output: `[batch, len, d]`
    pub fn forward(&self, input: Tensor<3>, rng: Option<&mut ChaCha8Rng>) -> Tensor<3> {
        let h = self.inner.forward(input);
        let h = if self.gelu { gelu(h) } else { relu(h) };
        self.outer.forward(self.dropout.forward(h, rng))
    }
}

/// One self-attention block: attention and feed-forward sub-layers with residuals, dropout and
/// layer norms placed as the config says.
#[derive(Module, Debug)]
pub struct SasRecBlock {
    attention: SelfAttention,
    attention_norm: LayerNorm,
    feed_forward: PointWiseFeedForward,
    feed_forward_norm: LayerNorm,
    dropout: MaskDropout,
    pre_norm: bool,
}

impl SasRecBlock {
    /// # Shapes
    /// - input: `[batch, len, d]`
    /// - mask_bias: `[batch, 1, len, len]`
    /// - output: `[batch, len, d]`
    pub fn forward(
        &self,
        input: Tensor<3>,
        mask_bias: Tensor<4>,
        mut rng: Option<&mut ChaCha8Rng>,
    ) -> Tensor<3> {
        if self.pre_norm {
            let h = self.attention_norm.forward(input.clone());
            let a = self.attention.forward(h, mask_bias, rng.as_deref_mut());
            let x = input + self.dropout.forward(a, rng.as_deref_mut());
            let h = self.feed_forward_norm.forward(x.clone());
            let f = self.feed_forward.forward(h, rng.as_deref_mut());
            x + self.dropout.forward(f, rng)
        } else {
            let a = self
                .attention
                .forward(input.clone(), mask_bias, rng.as_deref_mut());
            let x = self
                .attention_norm
                .forward(input + self.dropout.forward(a, rng.as_deref_mut()));
            let f = self.feed_forward.forward(x.clone(), rng.as_deref_mut());
            self.feed_forward_norm
                .forward(x + self.dropout.forward(f, rng))
        }
    }
}

/// SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018).
///
/// Input sequences are left-padded with [`pulserec_core::ItemId::PAD`] to `max_len`, so the most
/// recent item always sits in the last slot and positions are slot indices. The item embedding
/// table is shared between the input and the prediction layer: the score of item `i` after a
/// prefix is `<F_t, M_i>`.
#[derive(Module, Debug)]
pub struct SasRec {
    item_embedding: Embedding,
    position_embedding: Embedding,
    input_norm: Option<LayerNorm>,
    dropout: MaskDropout,
    blocks: Vec<SasRecBlock>,
    final_norm: Option<LayerNorm>,
    embedding_scale: f64,
    max_len: usize,
}

fn linear(d_in: usize, d_out: usize, init: WeightInit, device: &Device) -> Linear {
    let initializer = match init {
        WeightInit::Xavier => Initializer::XavierUniform { gain: 1.0 },
        WeightInit::Normal { std } => Initializer::Normal { mean: 0.0, std },
    };
    let mut layer = LinearConfig::new(d_in, d_out)
        .with_initializer(initializer)
        .init(device);
    // Both reference implementations start biases at zero.
    layer.bias = Some(Initializer::Zeros.init([d_out], device));
    layer
}

fn embedding(n: usize, d: usize, init: WeightInit, device: &Device) -> Embedding {
    let std = match init {
        // Glorot normal over the [n, d] table, as torch's xavier_normal_ and TF's glorot do.
        WeightInit::Xavier => (2.0 / (n + d) as f64).sqrt(),
        WeightInit::Normal { std } => std,
    };
    EmbeddingConfig::new(n, d)
        .with_initializer(Initializer::Normal { mean: 0.0, std })
        .init(device)
}

impl SasRecConfig {
    /// Builds the model on `device` (use `device.autodiff()` to train).
    pub fn init(&self, device: &Device) -> Result<SasRec> {
        self.validate()?;
        let d = self.hidden;
        let norm = || {
            LayerNormConfig::new(d)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let dropout = MaskDropout::new;
        let blocks = (0..self.blocks)
            .map(|_| SasRecBlock {
                attention: SelfAttention {
                    query: linear(d, d, self.init, device),
                    key: linear(d, d, self.init, device),
                    value: linear(d, d, self.init, device),
                    output: linear(d, d, self.init, device),
                    dropout: dropout(self.attention_dropout),
                    heads: self.heads,
                },
                attention_norm: norm(),
                feed_forward: PointWiseFeedForward {
                    inner: linear(d, self.inner, self.init, device),
                    outer: linear(self.inner, d, self.init, device),
                    dropout: dropout(self.dropout),
                    gelu: self.activation == Activation::Gelu,
                },
                feed_forward_norm: norm(),
                dropout: dropout(self.dropout),
                pre_norm: self.norm == NormPlacement::Pre,
            })
            .collect();
        Ok(SasRec {
            item_embedding: embedding(self.n_items + 1, d, self.init, device),
            position_embedding: embedding(self.max_len, d, self.init, device),
            input_norm: self.input_layer_norm.then(norm),
            dropout: dropout(self.dropout),
            blocks,
            final_norm: (self.norm == NormPlacement::Pre).then(norm),
            embedding_scale: if self.scale_embedding {
                (d as f64).sqrt()
            } else {
                1.0
            },
            max_len: self.max_len,
        })
    }
}

impl SasRec {
    /// The sequence length the model was built for.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Number of real items (the padding row excluded).
    pub fn n_items(&self) -> usize {
        self.item_embedding.weight.dims()[0] - 1
    }

    /// Hidden width `d`.
    pub fn hidden(&self) -> usize {
        self.item_embedding.weight.dims()[1]
    }

    /// The item embedding table `M`, row 0 being padding.
    ///
    /// # Shapes
    /// - output: `[n_items + 1, d]`
    pub fn item_embeddings(&self) -> Tensor<2> {
        self.item_embedding.weight.val()
    }

    /// Hidden states `F` after every position, without dropout (inference).
    ///
    /// # Shapes
    /// - items: `[batch, len]` with `len <= max_len`, left-padded with 0 (the last slot is the
    ///   most recent item; slot `s` gets position `max_len - len + s`)
    /// - output: `[batch, len, d]` (rows of padding slots are zero)
    pub fn forward(&self, items: Tensor<2, Int>) -> Tensor<3> {
        self.forward_with_dropout(items, None)
    }

    /// [`forward`](Self::forward) with dropout masks drawn from `rng` when given (training).
    ///
    /// # Shapes
    /// - items: `[batch, len]`, `len <= max_len`, left-padded with 0
    /// - output: `[batch, len, d]`
    pub fn forward_with_dropout(
        &self,
        items: Tensor<2, Int>,
        mut rng: Option<&mut ChaCha8Rng>,
    ) -> Tensor<3> {
        let [b, l] = items.dims();
        let device = items.device();
        let real = items.clone().not_equal_elem(0); // [b, l]
        let keep = real.clone().float().unsqueeze_dim::<3>(2); // [b, l, 1]

        let positions = self
            .position_embedding
            .weight
            .val()
            .slice_dim(0, self.max_len - l..self.max_len)
            .unsqueeze_dim::<3>(0);
        let mut x = self
            .item_embedding
            .forward(items)
            .mul_scalar(self.embedding_scale)
            + positions;
        if let Some(norm) = &self.input_norm {
            x = norm.forward(x);
        }
        x = self.dropout.forward(x, rng.as_deref_mut()) * keep.clone();

        // Forbidden keys: the future, and padding except a query's own slot. A padding query
        // thus attends only to itself, so no row is entirely -inf (no NaN) and its output is
        // discarded by `keep`. -inf rather than a large finite number because exp of a large
        // negative finite argument takes libm's slow underflow path (~6 % of a training epoch).
        let causal: Vec<bool> = (0..l * l).map(|k| k % l > k / l).collect();
        let off_diagonal: Vec<bool> = (0..l * l).map(|k| k % l != k / l).collect();
        let square = |v: Vec<bool>| {
            Tensor::<2, Bool>::from_data(TensorData::new(v, [l, l]), &device)
                .unsqueeze_dims::<4>(&[0, 1])
                .expand([b, 1, l, l])
        };
        let pad_keys = real
            .bool_not()
            .unsqueeze_dims::<4>(&[1, 2])
            .expand([b, 1, l, l]); // [b, 1, l, l], true at padding keys
        let forbidden = square(causal).bool_or(pad_keys.bool_and(square(off_diagonal)));
        let mask_bias =
            Tensor::<4>::zeros([b, 1, l, l], &device).mask_fill(forbidden, f32::NEG_INFINITY);

        for block in &self.blocks {
            x = block.forward(x, mask_bias.clone(), rng.as_deref_mut()) * keep.clone();
        }
        match &self.final_norm {
            Some(norm) => norm.forward(x) * keep,
            None => x,
        }
    }

    /// The user vector: the hidden state after the most recent item (the last slot).
    ///
    /// # Shapes
    /// - items: `[batch, max_len]`, left-padded with 0
    /// - output: `[batch, d]`
    pub fn user_vectors(&self, items: Tensor<2, Int>) -> Tensor<2> {
        let h = self.forward(items);
        let [b, l, d] = h.dims();
        h.slice([0..b, l - 1..l, 0..d]).reshape([b, d])
    }

    /// Scores of every catalogue item (column 0 is padding) for each user vector.
    ///
    /// # Shapes
    /// - users: `[batch, d]`
    /// - output: `[batch, n_items + 1]`
    pub fn score_all(&self, users: Tensor<2>) -> Tensor<2> {
        users.matmul(self.item_embeddings().transpose())
    }
}
