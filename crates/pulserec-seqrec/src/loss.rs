//! The three training objectives, computed only at slots that carry a loss.

use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::{Bool, Device, Int, Tensor, TensorData};

use rand_chacha::ChaCha8Rng;

use crate::batch::TrainBatch;
use crate::config::LossKind;
use crate::model::SasRec;

/// Logit given to excluded classes (the padding item, a negative equal to the positive).
const EXCLUDED_LOGIT: f32 = -1.0e9;

/// Negatives shared by a batch for [`LossKind::SampledSoftmax`].
#[derive(Clone, Debug, PartialEq)]
pub struct SharedNegatives(pub Vec<i64>);

fn ints1(v: &[i64], device: &Device) -> Tensor<1, Int> {
    Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), device)
}

/// Mean loss of a batch under `kind`.
///
/// `shared` must hold the batch's negatives for [`LossKind::SampledSoftmax`] (it is ignored
/// otherwise). `dropout` draws the dropout masks; `None` trains without dropout.
///
/// # Shapes
/// - output: `[1]`
pub fn batch_loss(
    model: &SasRec,
    batch: &TrainBatch,
    kind: LossKind,
    shared: Option<&SharedNegatives>,
    dropout: Option<&mut ChaCha8Rng>,
    device: &Device,
) -> Tensor<1> {
    let inputs = Tensor::<2, Int>::from_data(
        TensorData::new(batch.inputs.clone(), [batch.rows, batch.width]),
        device,
    );
    let h = model.forward_with_dropout(inputs, dropout);
    let d = model.hidden();
    let h = h
        .reshape([batch.rows * batch.width, d])
        .select(0, ints1(&batch.positions, device)); // [p, d]
    let items = model.item_embeddings(); // [n + 1, d]
    let targets = ints1(&batch.targets, device);
    let p = batch.targets.len();
    match kind {
        LossKind::Bce => {
            let pos = items.clone().select(0, targets);
            let neg = items.select(0, ints1(&batch.negatives, device));
            let pos_logit = (h.clone() * pos).sum_dim(1); // [p, 1]
            let neg_logit = (h * neg).sum_dim(1);
            (log_sigmoid(pos_logit) + log_sigmoid(neg_logit.neg()))
                .neg()
                .mean()
        }
        LossKind::Ce => {
            let n = items.dims()[0];
            let logits = h.matmul(items.transpose()); // [p, n + 1]
            let pad_column = Tensor::<2, Int>::zeros([1, n], device)
                .equal_elem(1)
                .slice_fill([0..1, 0..1], true)
                .expand([p, n]);
            let logits = logits.mask_fill(pad_column, EXCLUDED_LOGIT);
            nll(log_softmax(logits, 1), targets)
        }
        LossKind::SampledSoftmax { .. } => {
            let negs = shared.map(|s| s.0.clone()).unwrap_or_default();
            let k = negs.len();
            let pos = items.clone().select(0, targets);
            let pos_logit = (h.clone() * pos).sum_dim(1); // [p, 1]
            let neg = items.select(0, ints1(&negs, device)); // [k, d]
            let neg_logits = h.matmul(neg.transpose()); // [p, k]
            // A shared negative that happens to be a slot's positive is not a negative there.
            let collide: Vec<bool> = batch
                .targets
                .iter()
                .flat_map(|t| negs.iter().map(move |n| n == t))
                .collect();
            let collide = Tensor::<2, Bool>::from_data(TensorData::new(collide, [p, k]), device);
            let neg_logits = neg_logits.mask_fill(collide, EXCLUDED_LOGIT);
            let logits = Tensor::cat(vec![pos_logit, neg_logits], 1); // [p, 1 + k]
            let zeros = Tensor::<1, Int>::zeros([p], device);
            nll(log_softmax(logits, 1), zeros)
        }
    }
}

/// Mean negative log-likelihood of `targets` under row-wise log-probabilities.
///
/// # Shapes
/// - log_probs: `[p, c]`
/// - targets: `[p]`
/// - output: `[1]`
fn nll(log_probs: Tensor<2>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [p] = targets.dims();
    log_probs.gather(1, targets.reshape([p, 1])).neg().mean()
}
