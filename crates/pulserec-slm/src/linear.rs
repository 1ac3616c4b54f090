//! A linear layer whose weight is either a dense burn tensor or ggml-quantised blocks.

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Result, SlmError};
use crate::kernels::{has_kernel, matmul_quantized};
use crate::weights::WeightMatrix;

/// How weights are held at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WeightMode {
    /// Dequantise everything to f32 burn tensors (works on every device, exact f32 reference).
    Dense,
    /// Keep ggml-quantised weights and use this crate's CPU kernels for small batches, plus an
    /// f32 copy for large ones (prefill), when the device is `flex` and the weights are
    /// quantised; otherwise the same as `Dense`.
    #[default]
    Auto,
}

/// Inputs with at least this many rows use the dense f32 copy (gemm) rather than the
/// quantised kernels. Measured on SmolLM2 Q4_1 (2 threads, batched greedy decode, tok/s): at 16
/// rows the kernels ran 198-208 and gemm 154-159, at 32 rows the kernels 218 and gemm 242-248.
const QUANT_MAX_ROWS: usize = 32;

/// `y = x Wᵀ + b`.
pub(crate) struct Linear {
    /// `[in, out]`, always kept: batches of `QUANT_MAX_ROWS` rows or more (prefill) run on it.
    dense: Tensor<2>,
    quant: Option<WeightMatrix>,
    bias: Option<Tensor<1>>,
    out_features: usize,
}

pub(crate) fn to_err(e: impl std::fmt::Debug) -> SlmError {
    SlmError::Backend(format!("{e:?}"))
}

/// Reads a tensor back as a flat `Vec<f32>`.
pub(crate) fn tensor_vec<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(to_err)
}

impl Linear {
    pub(crate) fn new(
        w: &WeightMatrix,
        bias: Option<&[f32]>,
        mode: WeightMode,
        device: &Device,
    ) -> Result<Self> {
        let quantised = mode == WeightMode::Auto
            && *device == Device::flex()
            && w.dtype != crate::quant::GgmlType::F32
            && has_kernel(w.dtype);
        let wf = w.to_f32()?;
        // Row-major `[in, out]` (gemm packs it per call): prefill ran ~8 % faster and 64-row
        // decode 306 against 226 tok/s than with a column-major view of `[out, in]`.
        let dense = Tensor::<2>::from_data(
            TensorData::new(
                pulserec_core::fastmath::transpose(&wf, w.rows, w.cols),
                [w.cols, w.rows],
            ),
            device,
        );
        Ok(Self {
            dense,
            quant: quantised.then(|| w.clone()),
            bias: bias
                .map(|b| Tensor::<1>::from_data(TensorData::new(b.to_vec(), [b.len()]), device)),
            out_features: w.rows,
        })
    }

    /// # Shapes
    /// - `x`: `[batch, seq, in]`
    /// - returns `[batch, seq, out]`
    pub(crate) fn forward(&self, x: Tensor<3>) -> Result<Tensor<3>> {
        let [b, t, _] = x.dims();
        let y = match &self.quant {
            Some(q) if b * t < QUANT_MAX_ROWS => {
                let device = x.device();
                let xs = tensor_vec(x)?;
                let y = matmul_quantized(q, &xs, b * t);
                Tensor::<3>::from_data(TensorData::new(y, [b, t, self.out_features]), &device)
            }
            // One 2-D gemm over all rows against the row-major `[in, out]` copy.
            _ => x
                .reshape([b * t, self.dense.dims()[0]])
                .matmul(self.dense.clone())
                .reshape([b, t, self.out_features]),
        };
        Ok(match &self.bias {
            Some(bias) => y + bias.clone().unsqueeze::<3>(),
            None => y,
        })
    }
}
