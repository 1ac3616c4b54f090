//! A frozen weight's product `x Wᵀ` on the AMX tiles in bf16, forward and backward, as a custom
//! operation of burn's autodiff graph ([`FrozenBottom::HostBf16`](super::FrozenBottom) in the
//! adapted layers).
//!
//! burn's `matmul` of an input that needs a gradient by a frozen weight computes `x Wᵀ` and, in
//! backward, `dy W` with its f32 gemm; the weight needs no gradient, so these two products are
//! all there is, and both are plain matrix products by a fixed matrix: the packed bf16 kernels
//! of inference ([`PackedBf16`]) compute them with f32 accumulation. The operation is registered
//! through burn's backend-extension path (`Tensor::try_into_primitive::<Autodiff<Flex>>`, a
//! [`Backward`] implementation), so it composes with every other op of the graph.

use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};

use super::fused::record;
use burn::tensor::{Tensor, TensorData};

use crate::amx::PackedBf16;
use crate::error::{Result, SlmError};

/// A frozen `[out, in]` weight packed for both products of [`frozen_product`].
#[derive(Debug)]
pub(crate) struct FrozenBf16 {
    /// `W` for `y = x Wᵀ` (`[m, in]` to `[m, out]`).
    forward: PackedBf16,
    /// `Wᵀ` for `dx = dy W` (`[m, out]` to `[m, in]`); `None` for a weight used off the graph
    /// only.
    backward: Option<PackedBf16>,
}

impl FrozenBf16 {
    /// Packs `w: [out, in]` row-major (and `Wᵀ` too when `backward`), or `None` where
    /// [`PackedBf16::pack`] cannot (no bf16 products on this CPU, or a dimension that is not a
    /// multiple of 32).
    pub(crate) fn pack(w: &[f32], out: usize, input: usize, backward: bool) -> Option<Self> {
        let forward = PackedBf16::pack(w, out, input)?;
        let backward = if backward {
            let wt = pulserec_core::fastmath::transpose(w, out, input);
            Some(PackedBf16::pack(&wt, input, out)?)
        } else {
            None
        };
        Some(Self { forward, backward })
    }

    /// Whether [`frozen_product`] can run on it (the backward product is packed).
    pub(crate) fn trainable(&self) -> bool {
        self.backward.is_some()
    }

    /// `x Wᵀ` off the graph (no backward), for the layers below every adapter.
    ///
    /// # Shapes
    /// - `x`: `[m, in]` row-major; returns `[m, out]`
    pub(crate) fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.forward.matmul(x, m)
    }
}

/// The backward step of [`frozen_product`]: `dx = dy W` (the weight gets no gradient).
#[derive(Debug)]
struct FrozenProduct;

impl Backward<Flex, 1> for FrozenProduct {
    type State = Arc<FrozenBf16>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let weight = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad: FlexTensor| {
            let m = grad.layout().shape()[0];
            // `frozen_product` records the op only with the backward packed.
            let Some(packed) = &weight.backward else {
                unreachable!("frozen product recorded without its backward weight")
            };
            let dx = match grad.as_slice::<f32>() {
                Some(dy) => packed.matmul(dy, m),
                None => {
                    let dy = grad.into_data().convert::<f32>();
                    let Ok(dy) = dy.as_slice::<f32>() else {
                        unreachable!("`convert::<f32>` made the values f32")
                    };
                    packed.matmul(dy, m)
                }
            };
            FlexTensor::from_data(TensorData::new(dx, [m, packed.n()]))
        });
    }
}

/// `x Wᵀ` for `x` on the CPU autodiff device, forward and backward on the AMX tiles.
///
/// # Shapes
/// - `x`: `[m, in]`; returns `[m, out]`
pub(crate) fn frozen_product(x: Tensor<2>, weight: &Arc<FrozenBf16>) -> Result<Tensor<2>> {
    let [m, _] = x.dims();
    if !weight.trainable() {
        return Err(SlmError::InvalidBatch(
            "bf16 frozen product without its backward weight".into(),
        ));
    }
    let x = x
        .try_into_primitive::<Autodiff<Flex>>()
        .map_err(|e| SlmError::InvalidBatch(format!("bf16 frozen product off the CPU: {e:?}")))?;
    // The input's values in place when contiguous (the usual case), else a contiguous copy.
    let copy;
    let values = match x.primitive().as_slice::<f32>() {
        Some(values) => values,
        None => {
            copy = x.primitive().clone().into_data().convert::<f32>();
            copy.as_slice::<f32>()
                .map_err(|e| SlmError::InvalidBatch(format!("bf16 frozen product of {e:?}")))?
        }
    };
    let y = weight.forward.matmul(values, m);
    let y = FlexTensor::from_data(TensorData::new(y, [m, weight.forward.n()]));
    Ok(record(FrozenProduct, [x.node()], || Arc::clone(weight), y))
}
