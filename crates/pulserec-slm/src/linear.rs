//! A linear layer whose weight is either a dense burn tensor or ggml-quantised blocks.

use burn::tensor::{Device, Tensor, TensorData};

use crate::amx::PackedBf16;
use crate::error::{Result, SlmError};
use crate::kernels::{has_kernel, matmul_quantized};
use crate::weights::WeightMatrix;

/// How weights are held at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WeightMode {
    /// Dequantise everything to f32 burn tensors (works on every device, exact f32 reference).
    Dense,
    /// Keep ggml-quantised weights and use this crate's CPU kernels for decode steps of few
    /// rows, plus an f32 copy for prompts and larger steps, when the device is `flex` and the
    /// weights are quantised; otherwise the same as `Dense`.
    #[default]
    Auto,
    /// `Auto`, and prompts and larger steps multiply in bfloat16 with f32 accumulation (a bf16
    /// copy of the weights, packed at load) on the CPU's AMX tiles, or with AVX512-BF16's
    /// `vdpbf16ps` where it has no AMX ([`crate::amx::bf16_available`]), when the device is
    /// `flex`; elsewhere the same as `Auto`. Faster on such CPUs, but not bit-equal to f32:
    /// logits move by about 1e-2.
    Bf16,
    /// `Bf16`, and decode steps quantise their inputs to 8 bits per block of 32 (as llama.cpp
    /// does) and multiply with integer dot products on the CPU's AVX512-VNNI units, where it
    /// has them (elsewhere decode steps stay f32). The fastest mode and the least exact:
    /// generated tokens' log-probabilities move by about 2e-2 (`tests/smollm2.rs`), and greedy
    /// text can part from f32's where two tokens are nearly tied. Prompts (and with them
    /// likelihood scoring) are as in `Bf16`.
    Int8,
}

/// Decode steps of at least this many rows use the dense f32 copy (gemm) rather than the
/// quantised kernels. Measured on SmolLM2 Q4_1 (2 threads, batched greedy decode, tok/s): at 16
/// rows the kernels ran 198-208 and gemm 154-159, at 32 rows the kernels 218 and gemm 242-248.
const QUANT_MAX_ROWS: usize = 32;

/// `y = x Wᵀ + b`.
pub(crate) struct Linear {
    /// `[in, out]`, always kept: prompts and decode steps of `QUANT_MAX_ROWS` rows or more run
    /// on it.
    dense: Tensor<2>,
    quant: Option<WeightMatrix>,
    /// [`WeightMode::Bf16`] on a CPU with bf16 products: the weight in bf16 tiles, used instead
    /// of `dense`.
    amx: Option<PackedBf16>,
    /// [`WeightMode::Int8`]: decode steps on 8-bit inputs.
    int8: bool,
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
        let flex = *device == Device::flex();
        let quantised = matches!(mode, WeightMode::Auto | WeightMode::Bf16 | WeightMode::Int8)
            && flex
            && w.dtype != crate::quant::GgmlType::F32
            && has_kernel(w.dtype);
        let wf = w.to_f32()?;
        let amx = if matches!(mode, WeightMode::Bf16 | WeightMode::Int8) && flex {
            PackedBf16::pack(&wf, w.rows, w.cols)
        } else {
            None
        };
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
            amx,
            int8: mode == WeightMode::Int8,
            bias: bias
                .map(|b| Tensor::<1>::from_data(TensorData::new(b.to_vec(), [b.len()]), device)),
            out_features: w.rows,
        })
    }

    /// `x Wᵀ + b`. One position per row (a decode step) of fewer than `QUANT_MAX_ROWS` rows
    /// runs on the quantised kernels; everything else, prompts included whatever their batch,
    /// on the dense copy, so a prompt's numbers do not depend on what it was batched with.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, in]`
    /// - returns `[batch, seq, out]`
    pub(crate) fn forward(&self, x: Tensor<3>) -> Result<Tensor<3>> {
        let [b, t, _] = x.dims();
        let y = match &self.quant {
            Some(q) if t == 1 && b < QUANT_MAX_ROWS => {
                let device = x.device();
                let xs = tensor_vec(x)?;
                let y = matmul_quantized(q, &xs, b, self.int8);
                Tensor::<3>::from_data(TensorData::new(y, [b, 1, self.out_features]), &device)
            }
            _ => self.dense_matmul(x)?,
        };
        Ok(self.add_bias(y))
    }

    /// Always the dense f32 copy (gemm), whatever the shape.
    ///
    /// # Shapes
    /// - `x`: `[batch, seq, in]`
    /// - returns `[batch, seq, out]`
    pub(crate) fn forward_dense(&self, x: Tensor<3>) -> Result<Tensor<3>> {
        Ok(self.add_bias(self.dense_matmul(x)?))
    }

    /// One 2-D product over all rows: on the AMX tiles when the layer has them (each row's
    /// result is independent of the others there), else a gemm against the row-major
    /// `[in, out]` copy, where a single row is doubled: gemm's one-row path sums in another
    /// order, and a row's result must not depend on how many rows share the call.
    fn dense_matmul(&self, x: Tensor<3>) -> Result<Tensor<3>> {
        let [b, t, d] = x.dims();
        if let Some(amx) = &self.amx {
            let device = x.device();
            let y = amx.matmul(&tensor_vec(x)?, b * t);
            return Ok(Tensor::<3>::from_data(
                TensorData::new(y, [b, t, self.out_features]),
                &device,
            ));
        }
        let rows = x.reshape([b * t, d]);
        if b * t == 1 {
            return Ok(Tensor::cat(vec![rows.clone(), rows], 0)
                .matmul(self.dense.clone())
                .narrow(0, 0, 1)
                .reshape([b, t, self.out_features]));
        }
        Ok(rows
            .matmul(self.dense.clone())
            .reshape([b, t, self.out_features]))
    }

    fn add_bias(&self, y: Tensor<3>) -> Tensor<3> {
        match &self.bias {
            Some(bias) => y + bias.clone().unsqueeze::<3>(),
            None => y,
        }
    }
}
