//! The real thing over loopback: SmolLM2 (the GGUF asset) served by `CompletionServer`, queried by
//! `RemoteGenerator`. Greedy decoding of the ASSETS.md prompt must give the known answer, the same
//! as generating in-process.

use std::time::Duration;

use pulserec::serve::{CompletionServer, ServeConfig};
use pulserec_core::{GenerationRequest, SamplingParams, TextGenerator};
use pulserec_data::locate::asset;
use pulserec_slm::Slm;
use pulserec_tot::{RemoteConfig, RemoteGenerator};

const PROMPT: &str =
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";

#[test]
fn smollm2_served_over_http_answers_like_in_process() {
    let Some(gguf) = asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let device = burn::tensor::Device::flex();
    let slm = Slm::load(&gguf, &device).unwrap();
    let greedy = GenerationRequest {
        prompt: PROMPT.to_string(),
        params: SamplingParams::greedy(12),
    };
    let sampled = GenerationRequest {
        prompt: PROMPT.to_string(),
        params: SamplingParams {
            temperature: 0.7,
            top_k: Some(51),
            top_p: Some(0.95),
            seed: 3,
            ..SamplingParams::greedy(12)
        },
    };
    let mut local = Slm::load(&gguf, &device).unwrap();
    let expected = local.generate(&[greedy.clone(), sampled.clone()]).unwrap();
    assert_eq!(expected[0].text, "The capital of France is Paris.");

    let config = ServeConfig::for_slm(&slm);
    let server = CompletionServer::start("127.0.0.1:0", "smollm2", slm, config).unwrap();
    let config = RemoteConfig {
        timeout: Duration::from_secs(120),
        concurrency: 1,
        ..RemoteConfig::new(server.url(), "smollm2")
    };
    let mut remote = RemoteGenerator::new(config).unwrap();
    let got = remote.generate(&[greedy, sampled]).unwrap();
    assert_eq!(got[0].text, expected[0].text);
    // Seeded sampling is reproducible across the wire: same seed, same text.
    assert_eq!(got[1].text, expected[1].text);
    assert_eq!(got[0].logprobs.len(), expected[0].token_ids.len());
    // pulserec's server adds the generated ids to the protocol.
    assert_eq!(got[0].token_ids, expected[0].token_ids);
}
