//! Times LoRA training steps (forward + backward + AdamW) on the SmolLM2 GGUF and optionally
//! saves the adapter with a logit check file for `scripts/slm/lora_reference.py --check-adapter`.
//!
//! ```text
//! cargo run --release -p pulserec-slm --example lora_step -- GGUF [--batch 4] [--seq 128]
//!     [--steps 3] [--top-layers K] [--frozen-bottom autodiff|host|host_bf16] [--save DIR]
//!     [--device flex|tch|tch-cuda:N]
//! ```
//! `--top-layers K` puts the adapters on the top K layers only (PEFT's `layers_to_transform`);
//! `--frozen-bottom` chooses how the layers below them run (`LoraModel::set_frozen_bottom`).
//! `--device tch` and `tch-cuda:N` need `--features tch` (LibTorch on the CPU or CUDA device N).

use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::Device;
use pulserec_slm::{FrozenBottom, LoraConfig, LoraModel, Slm, TokenBatch};

const TEXT: &str = "<|im_start|>user\nThe user recently played The Legend of Zelda: Breath of the \
Wild, Mario Kart 8 Deluxe and Animal Crossing. Candidates: Splatoon 2, FIFA 19, Forza Horizon 4, \
Super Smash Bros. Ultimate, Call of Duty. Which one will they play next?<|im_end|>\n\
<|im_start|>assistant\nlet me think: they like colourful Nintendo multiplayer games with friends. \
Answer: Super Smash Bros. Ultimate<|im_end|>\n";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The allocator settings of the `pulserec` CLI, whose SFT stage this times.
    pulserec_core::malloc::tune_malloc();
    let mut args = std::env::args().skip(1);
    let gguf = PathBuf::from(args.next().ok_or("usage: lora_step GGUF [options]")?);
    let (mut batch, mut seq, mut steps, mut save) = (4usize, 128usize, 3usize, None);
    let mut top_layers = None;
    let mut device = Device::flex();
    let mut frozen_bottom = FrozenBottom::Autodiff;
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--batch" => batch = value.parse()?,
            "--seq" => seq = value.parse()?,
            "--steps" => steps = value.parse()?,
            "--save" => save = Some(PathBuf::from(value)),
            "--top-layers" => top_layers = Some(value.parse::<usize>()?),
            "--device" => device = device_named(&value)?,
            "--frozen-bottom" => {
                frozen_bottom = serde_json::from_value(serde_json::Value::String(value.clone()))
                    .map_err(|_| format!("--frozen-bottom {value}: autodiff, host or host_bf16"))?
            }
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let (cfg, base, tok) = Slm::load_parts(&gguf)?;
    let device = device.autodiff();
    device.seed(0);
    let lora = match top_layers {
        Some(k) => LoraConfig::paper().top_layers(k, cfg.num_layers),
        None => LoraConfig::paper(),
    };
    let mut model = LoraModel::new(&cfg, &base, &lora, 0, &device)?;
    let frozen_bottom = model.set_frozen_bottom(frozen_bottom)?;
    println!("frozen layers below the adapters: {frozen_bottom:?}");

    // Rows of `seq` tokens cut from the repeated text at different offsets; loss on the second half.
    let stream: Vec<u32> = tok.encode(&TEXT.repeat(1 + (batch + 1) * seq / 64))?;
    let rows: Vec<(Vec<u32>, Vec<f32>)> = (0..batch)
        .map(|r| {
            let tokens = stream[r * 7..r * 7 + seq].to_vec();
            let mask = (0..seq)
                .map(|t| if t >= seq / 2 { 1.0 } else { 0.0 })
                .collect();
            (tokens, mask)
        })
        .collect();
    let data = TokenBatch::from_rows(&rows, 0)?;

    let mut optim = AdamWConfig::new().init();
    let mut times = Vec::new();
    for step in 0..steps {
        let start = Instant::now();
        let loss = model.loss(&data)?;
        let value = loss.clone().into_scalar::<f32>();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        let secs = start.elapsed().as_secs_f64();
        times.push(secs);
        println!(
            "step {step}: loss {value:.4}, {secs:.2} s, {:.0} training tokens/s",
            (batch * seq) as f64 / secs
        );
    }
    times.sort_by(f64::total_cmp);
    if let Some(&median) = times.get(times.len() / 2) {
        println!(
            "batch {batch} x {seq}: median {median:.2} s/step, {:.0} training tokens/s",
            (batch * seq) as f64 / median
        );
    }

    if let Some(dir) = save {
        let model = model.valid();
        model.save_adapter(&dir, "SmolLM2-135M-Instruct")?;
        let ids = tok.encode(TEXT)?;
        let check = TokenBatch::from_rows(&[(ids.clone(), vec![0.0; ids.len()])], 0)?;
        let logits: Vec<f32> = model
            .logits(&check)?
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| format!("{e:?}"))?;
        let vocab = cfg.vocab_size;
        let positions = [0, ids.len() / 2, ids.len() - 1];
        let mut top_ids = Vec::new();
        let mut top_logits = Vec::new();
        for &p in &positions {
            let row = &logits[p * vocab..(p + 1) * vocab];
            let mut idx: Vec<usize> = (0..vocab).collect();
            idx.sort_by(|a, b| row[*b].total_cmp(&row[*a]));
            top_ids.push(idx[..5].to_vec());
            top_logits.push(idx[..5].iter().map(|&i| row[i]).collect::<Vec<_>>());
        }
        let json = serde_json::json!({
            "ids": ids, "positions": positions, "top_ids": top_ids, "top_logits": top_logits,
        });
        std::fs::write(dir.join("check.json"), serde_json::to_string(&json)?)?;
        println!("adapter written to {}", dir.display());
    }
    Ok(())
}

/// `flex`, or with `--features tch` LibTorch's `tch` (CPU) and `tch-cuda:N`.
#[allow(deprecated)] // burn-tch is deprecated upstream, still the LibTorch path burn 0.22 offers
fn device_named(name: &str) -> Result<Device, String> {
    match name {
        "flex" => Ok(Device::flex()),
        #[cfg(feature = "tch")]
        "tch" => Ok(Device::libtorch()),
        #[cfg(feature = "tch")]
        cuda if cuda.starts_with("tch-cuda:") => cuda["tch-cuda:".len()..]
            .parse::<usize>()
            .map(Device::libtorch_cuda)
            .map_err(|_| format!("bad CUDA index in `{name}`")),
        _ => Err(format!(
            "unknown device `{name}`: flex, or tch / tch-cuda:N with --features tch"
        )),
    }
}
