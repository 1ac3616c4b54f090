//! The LibTorch device runs the same model as `flex`: SmolLM2-135M-Instruct (Q4_1 GGUF,
//! dequantised to f32 on both devices) on the five prompts of
//! `tests/fixtures/smollm2_reference.json`.
//!
//! Built only with `--features tch` (see the README's Features section): run it with
//! `cargo xtask test --tch`, which finds the libtorch that `scripts/slm/setup_libtorch.sh`
//! assembled. Unlike the other model tests it fails instead of skipping when the GGUF is
//! missing: whoever asks for the tch build asks for this check.
//!
//! `PULSEREC_TCH_CUDA=N` runs the LibTorch side on CUDA device N instead of the CPU (a LibTorch
//! with CUDA, e.g. the one of a PyTorch CUDA install); flex stays on the CPU.

mod common;

use common::{fixture, u32s};

use std::sync::OnceLock;

use burn::tensor::Device;
use pulserec_core::{FinishReason, GenerationRequest, SamplingParams};
use pulserec_slm::{Slm, WeightMode};

/// Largest |flex - tch| allowed over all 49,152 last-position logits of a prompt. Both devices
/// compute in f32 from the same dequantised weights; only the summation order of matmuls and
/// reductions differs (burn-flex's gemm vs LibTorch's MKL/oneDNN). The top logits are 20-35.
const LOGIT_TOL: f32 = 1e-3;

/// Greedy tokens compared per prompt.
const GREEDY: usize = 16;

fn flex() -> &'static Slm {
    common::dense().expect("the tch parity test needs the SmolLM2 GGUF: run `cargo xtask assets`")
}

#[allow(deprecated)] // burn-tch is deprecated upstream, still the LibTorch path burn 0.22 offers
fn tch() -> &'static Slm {
    static M: OnceLock<Option<Slm>> = OnceLock::new();
    M.get_or_init(|| common::load_on(WeightMode::Dense, &tch_device()))
        .as_ref()
        .expect("the tch parity test needs the SmolLM2 GGUF: run `cargo xtask assets`")
}

/// LibTorch on the CPU, or on CUDA device `$PULSEREC_TCH_CUDA` when that is set.
#[allow(deprecated)]
fn tch_device() -> Device {
    match std::env::var("PULSEREC_TCH_CUDA") {
        Ok(index) => {
            let index: usize = index
                .parse()
                .expect("PULSEREC_TCH_CUDA must be a CUDA device index");
            eprintln!("tch side on LibTorch CUDA device {index}");
            Device::libtorch_cuda(index)
        }
        Err(_) => Device::libtorch(),
    }
}

/// Per prompt: last-position logits within [`LOGIT_TOL`] of flex's, the first [`GREEDY`]
/// greedy tokens equal to flex's and to HF float32's (the fixture).
#[test]
fn tch_logits_and_greedy_tokens_match_flex() {
    let f = fixture();
    let mut worst = 0f32;
    for (i, p) in f["prompts"].as_array().unwrap().iter().enumerate() {
        let ids = u32s(&p["ids"]);
        let (want, want_logits) = common::greedy_no_stop(flex(), &ids, GREEDY);
        let (got, got_logits) = common::greedy_no_stop(tch(), &ids, GREEDY);
        assert_eq!(
            got_logits.len(),
            want_logits.len(),
            "prompt {i}: vocab size"
        );
        let diff = got_logits
            .iter()
            .zip(&want_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            diff < LOGIT_TOL,
            "prompt {i}: max |tch - flex| logit difference {diff} >= {LOGIT_TOL}"
        );
        worst = worst.max(diff);
        assert_eq!(
            got, want,
            "prompt {i}: greedy tokens differ between tch and flex"
        );
        assert_eq!(
            got[..],
            u32s(&p["hf_f32"]["greedy"])[..GREEDY],
            "prompt {i}: tch greedy tokens differ from HF float32"
        );
    }
    eprintln!("largest |tch - flex| last-position logit difference over 5 prompts: {worst:e}");
}

/// The batched generation path (left padding, masks, shared prefill, sampling) on tch: two
/// prompts of different lengths in one batch give flex's answers.
#[test]
fn tch_batched_generation_matches_flex() {
    let f = fixture();
    let prompts: Vec<Vec<u32>> = f["prompts"].as_array().unwrap()[..2]
        .iter()
        .map(|p| u32s(&p["ids"]))
        .collect();
    let reqs: Vec<GenerationRequest> = prompts
        .iter()
        .map(|_| GenerationRequest {
            prompt: String::new(),
            params: SamplingParams::greedy(GREEDY),
        })
        .collect();
    let (want, _) = flex().generate_ids(&prompts, &reqs).unwrap();
    let (got, _) = tch().generate_ids(&prompts, &reqs).unwrap();
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.token_ids, w.token_ids, "row {i}");
        assert_eq!(g.text, w.text, "row {i}");
        assert!(g.finish == FinishReason::Eos || g.token_ids.len() == GREEDY);
    }
    assert_eq!(got[0].text, "The capital of France is Paris.");
}
