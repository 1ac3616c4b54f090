//! A [`LoraModel`]'s adapters in and out: read and replace their weights, save and load them
//! as a PEFT adapter directory, merge them into the base weights.

use std::path::Path;

use burn::module::Param;
use burn::tensor::Tensor;
use pulserec_core::tensor_file::{OwnedTensor, TensorFile, write_f32};

use super::{Adapter, LoraModel, matrix_tensor};
use crate::error::{Result, SlmError};
use crate::linear::tensor_vec;
use crate::lora::{
    ADAPTER_WEIGHTS_FILE, AdapterConfigFile, LoraTarget, adapter_error, parse_tensor_name,
};
use crate::weights::{ModelWeights, WeightMatrix};

impl LoraModel {
    fn adapter(&self, layer: usize, target: LoraTarget) -> Result<&Adapter> {
        self.blocks
            .get(layer)
            .and_then(|b| b.proj[target.index()].adapter.as_ref())
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
        let lin = &mut self.blocks[layer].proj[target.index()];
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
                if let Some(ad) = &blk.proj[t.index()].adapter {
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
            let shape = t.dims().to_vec();
            tensors.push((name, OwnedTensor::new(&tensor_vec(t)?, shape)));
        }
        let count = tensors.len();
        write_f32(&dir.join(ADAPTER_WEIGHTS_FILE), tensors).map_err(adapter_error(dir))?;
        AdapterConfigFile::new(&self.lora, base_model).write(dir)?;
        tracing::info!(dir = %dir.display(), tensors = count, "saved LoRA adapter");
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
        let tensors =
            TensorFile::open(&dir.join(ADAPTER_WEIGHTS_FILE)).map_err(adapter_error(dir))?;
        let layers = self.blocks.len();
        for name in tensors.names() {
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
                let read = |a: bool, shape: &[usize]| {
                    (tensors.f32(&t.tensor_name(layer, a), shape)).map_err(adapter_error(dir))
                };
                let (a, b) = (read(true, &[r, inp])?, read(false, &[out, r])?);
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
                let m = lw.matrix_mut(t);
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
