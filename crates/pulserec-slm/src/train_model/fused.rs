//! SwiGLU, RMSNorm and the attention's masked softmax of the adapted layers as single autodiff
//! ops with host kernels (the host modes of [`FrozenBottom`](super::FrozenBottom)).
//!
//! On the graph, `silu(g) * u` is three burn ops (sigmoid through libm's `expf`, two products)
//! and RMSNorm seven, each a full-size buffer forward and another backward. Here each is one
//! pass forward ([`pulserec_core::fastmath`]'s kernels) and one pass backward, written out:
//!
//! - SwiGLU, `y = g σ(g) u`: `∂g = ∂y u σ(g) (1 + g (1 - σ(g)))`, `∂u = ∂y g σ(g)`.
//! - RMSNorm with a frozen weight `w`, per row of `D` values, `r = 1 / sqrt(mean(x²) + eps)`,
//!   `x̂ = x r`, `y = x̂ w`: `∂x = r (∂y w - x̂ mean(∂y w x̂))` (the weight gets no gradient).
//! - The attention's `p = softmax(scale x + mask)` per score row (burn: five ops and libm's
//!   `expf`): `∂x = scale p (∂p - Σ p ∂p)`; hidden positions have `p = 0` and get none.

use std::borrow::Cow;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind, binary, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use pulserec_core::fastmath;
use rayon::prelude::*;

use crate::error::{Result, SlmError};

/// Rows per rayon task in the backward passes.
const ROWS_PER_TASK: usize = 16;

/// A flex tensor's values as a row-major slice: in place when contiguous, else a copy.
fn values(t: &FlexTensor) -> Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(v) => Cow::Borrowed(v),
        None => match t.clone().into_data().convert::<f32>().try_into_vec::<f32>() {
            Ok(v) => Cow::Owned(v),
            Err(e) => unreachable!("`convert::<f32>` made the values f32: {e:?}"),
        },
    }
}

/// A `[rows, cols]`-shaped flex tensor of `data`.
fn flex(data: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape.to_vec()))
}

fn off_cpu(e: impl std::fmt::Debug) -> SlmError {
    SlmError::InvalidBatch(format!(
        "fused training op off the CPU autodiff device: {e:?}"
    ))
}

/// Records `op` on the graph with `nodes` as its inputs and `y` as its output: with
/// `state()` for its backward when a parent is tracked, as a constant otherwise.
pub(super) fn record<O, const N: usize, const D: usize>(
    op: O,
    nodes: [NodeGuard; N],
    state: impl FnOnce() -> O::State,
    y: FlexTensor,
) -> Tensor<D>
where
    O: Backward<Flex, N>,
{
    let out = match op
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state(), y),
        OpsKind::UnTracked(prep) => prep.finish(y),
    };
    Tensor::from_primitive::<Autodiff<Flex>>(out)
}

/// `σ(x)` with the vectorised `exp`.
#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + fastmath::exp(-x))
}

#[derive(Debug)]
struct SwiGlu;

impl Backward<Flex, 2> for SwiGlu {
    /// The inputs `g` and `u`.
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (gate, up) = ops.state;
        let shape = gate.layout().shape().to_vec();
        let (g, u) = (values(&gate), values(&up));
        binary::<Flex, _, _>(
            ops.parents,
            ops.node,
            grads,
            |dy| {
                let dy = values(&dy).into_owned();
                let mut dg = dy;
                dg.par_chunks_mut(1 << 14)
                    .zip(g.par_chunks(1 << 14))
                    .zip(u.par_chunks(1 << 14))
                    .for_each(|((d, g), u)| {
                        for ((d, &g), &u) in d.iter_mut().zip(g).zip(u) {
                            let s = sigmoid(g);
                            *d *= u * s * (1.0 + g * (1.0 - s));
                        }
                    });
                flex(dg, &shape)
            },
            |dy| {
                let mut du = values(&dy).into_owned();
                du.par_chunks_mut(1 << 14)
                    .zip(g.par_chunks(1 << 14))
                    .for_each(|(d, g)| {
                        for (d, &g) in d.iter_mut().zip(g) {
                            *d *= g * sigmoid(g);
                        }
                    });
                flex(du, &shape)
            },
        );
    }
}

/// `silu(gate) * up` as one op on the CPU autodiff device.
///
/// # Shapes
/// - `gate`, `up`: `[batch, seq, intermediate]`; returns the same
pub(crate) fn swiglu(gate: Tensor<3>, up: Tensor<3>) -> Result<Tensor<3>> {
    let g = gate
        .try_into_primitive::<Autodiff<Flex>>()
        .map_err(off_cpu)?;
    let u = up.try_into_primitive::<Autodiff<Flex>>().map_err(off_cpu)?;
    let shape = g.primitive().layout().shape().to_vec();
    let mut y = values(g.primitive()).into_owned();
    fastmath::silu_mul_inplace(&mut y, &values(u.primitive()));
    let y = flex(y, &shape);
    let state = || (g.primitive().clone(), u.primitive().clone());
    Ok(record(SwiGlu, [g.node(), u.node()], state, y))
}

#[derive(Debug)]
struct RmsNorm;

impl Backward<Flex, 1> for RmsNorm {
    /// The input, the frozen weight and `eps`.
    type State = (FlexTensor, Vec<f32>, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (input, w, eps) = ops.state;
        let shape = input.layout().shape().to_vec();
        let x = values(&input);
        let dim = w.len();
        unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
            let mut dx = values(&dy).into_owned();
            dx.par_chunks_mut(dim * ROWS_PER_TASK)
                .zip(x.par_chunks(dim * ROWS_PER_TASK))
                .for_each(|(d, x)| {
                    for (d, x) in d.chunks_exact_mut(dim).zip(x.chunks_exact(dim)) {
                        let ms = x.iter().map(|v| v * v).sum::<f32>() / dim as f32;
                        let r = 1.0 / (ms + eps).sqrt();
                        // mean(∂y w x̂), then ∂x = r (∂y w - x̂ mean).
                        let mean = d
                            .iter()
                            .zip(x)
                            .zip(&w)
                            .map(|((&g, &x), &w)| g * w * x * r)
                            .sum::<f32>()
                            / dim as f32;
                        for ((g, &x), &w) in d.iter_mut().zip(x).zip(&w) {
                            *g = r * (*g * w - x * r * mean);
                        }
                    }
                });
            flex(dx, &shape)
        });
    }
}

/// RMSNorm by a frozen weight as one op on the CPU autodiff device.
///
/// # Shapes
/// - `x`: `[batch, seq, hidden]`, `weight`: `[hidden]`; returns `[batch, seq, hidden]`
pub(crate) fn rms_norm(x: Tensor<3>, weight: &[f32], eps: f32) -> Result<Tensor<3>> {
    let x = x.try_into_primitive::<Autodiff<Flex>>().map_err(off_cpu)?;
    let shape = x.primitive().layout().shape().to_vec();
    let mut y = values(x.primitive()).into_owned();
    fastmath::rms_norm_rows(&mut y, weight, eps);
    let y = flex(y, &shape);
    let state = || (x.primitive().clone(), weight.to_vec(), eps);
    Ok(record(RmsNorm, [x.node()], state, y))
}

#[derive(Debug)]
struct MaskedSoftmax;

impl Backward<Flex, 1> for MaskedSoftmax {
    /// The probabilities (the op's output) and the scale.
    type State = (FlexTensor, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (probs, scale) = ops.state;
        let shape = probs.layout().shape().to_vec();
        let cols = shape[shape.len() - 1];
        let p = values(&probs);
        unary::<Flex, _>(ops.parents, ops.node, grads, |dy| {
            let mut dx = values(&dy).into_owned();
            dx.par_chunks_mut(cols * ROWS_PER_TASK)
                .zip(p.par_chunks(cols * ROWS_PER_TASK))
                .for_each(|(d, p)| {
                    for (d, p) in d.chunks_exact_mut(cols).zip(p.chunks_exact(cols)) {
                        let dot = d.iter().zip(p).map(|(d, p)| d * p).sum::<f32>();
                        for (d, &p) in d.iter_mut().zip(p) {
                            *d = scale * p * (*d - dot);
                        }
                    }
                });
            flex(dx, &shape)
        });
    }
}

/// `softmax(scale * scores + mask)` over the last axis as one op on the CPU autodiff device, for
/// the grouped scores of `model::attend` (`[batch, kv_heads, group * seq, keys]`; `dims` is
/// `[batch, heads, seq, keys]`); `mask` holds `batch` additive `[seq, keys]` blocks.
///
/// # Shapes
/// - `scores`: `[batch, kv_heads, group * seq, keys]`; returns the same
pub(crate) fn masked_softmax(
    scores: Tensor<4>,
    scale: f32,
    mask: &[f32],
    [batch, h, t, s]: [usize; 4],
) -> Result<Tensor<4>> {
    if mask.len() != batch * t * s {
        return Err(SlmError::InvalidBatch(format!(
            "{} mask values for {batch} rows of {t} x {s}",
            mask.len()
        )));
    }
    let x = scores
        .try_into_primitive::<Autodiff<Flex>>()
        .map_err(off_cpu)?;
    let shape = x.primitive().layout().shape().to_vec();
    let mut y = values(x.primitive()).into_owned();
    // Score row r is (b, kv head, group head, query i) with i = r % t.
    let per_batch = h * t;
    fastmath::softmax_rows_scaled_masked(&mut y, s, scale, mask, |r| (r / per_batch) * t + r % t);
    let y = flex(y, &shape);
    // The backward needs the probabilities: one more handle on the same buffer.
    let probs = y.clone();
    Ok(record(MaskedSoftmax, [x.node()], || (probs, scale), y))
}
