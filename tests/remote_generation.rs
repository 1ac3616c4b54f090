//! The OpenAI-compatible path end to end over real loopback sockets: pulserec's completion
//! server in front of a generator, `RemoteGenerator` as the client; retries against a flaky
//! server; refusal of bad requests.

use std::time::Duration;

use pulserec::serve::{CompletionServer, ServeConfig};
use pulserec_core::{FinishReason, Generation, GenerationRequest, SamplingParams, TextGenerator};
use pulserec_tot::{RemoteConfig, RemoteGenerator};

/// Answers with a text that shows which request and settings reached it.
struct Echo;

impl TextGenerator for Echo {
    fn generate(
        &mut self,
        requests: &[GenerationRequest],
    ) -> pulserec_core::Result<Vec<Generation>> {
        Ok(requests
            .iter()
            .map(|r| Generation {
                text: format!(
                    "{} seed={} t={} k={:?} stop={:?}",
                    r.prompt.to_uppercase(),
                    r.params.seed,
                    r.params.temperature,
                    r.params.top_k,
                    r.params.stop
                ),
                token_ids: vec![7; r.params.max_new_tokens],
                logprobs: vec![-0.5; r.params.max_new_tokens],
                finish: FinishReason::Length,
            })
            .collect())
    }
}

fn request(prompt: &str, seed: u64) -> GenerationRequest {
    GenerationRequest {
        prompt: prompt.to_string(),
        params: SamplingParams {
            temperature: 0.7,
            top_k: Some(51),
            top_p: Some(0.95),
            max_new_tokens: 3,
            stop: vec!["\n".into()],
            seed,
        },
    }
}

fn fast(url: String) -> RemoteConfig {
    RemoteConfig {
        timeout: Duration::from_secs(10),
        backoff: Duration::from_millis(10),
        concurrency: 3,
        ..RemoteConfig::new(url, "echo")
    }
}

#[test]
fn requests_round_trip_in_order_with_their_settings() {
    let server =
        CompletionServer::start("127.0.0.1:0", "echo", Echo, ServeConfig::default()).unwrap();
    let mut remote = RemoteGenerator::new(fast(server.url())).unwrap();
    let requests: Vec<_> = (0..7)
        .map(|i| request(&format!("prompt {i}"), 100 + i))
        .collect();
    let out = remote.generate(&requests).unwrap();
    assert_eq!(out.len(), 7);
    for (i, g) in out.iter().enumerate() {
        assert_eq!(
            g.text,
            format!(
                "PROMPT {i} seed={} t=0.7 k=Some(51) stop=[\"\\n\"]",
                100 + i
            )
        );
        assert_eq!(g.logprobs, vec![-0.5; 3]);
        assert_eq!(g.finish, FinishReason::Length);
    }
}

#[test]
fn the_server_refuses_bad_requests_naming_the_field() {
    let server =
        CompletionServer::start("127.0.0.1:0", "echo", Echo, ServeConfig::default()).unwrap();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}/v1/completions", server.url());
    for (body, field) in [
        (serde_json::json!({"max_tokens": 3}), "prompt"),
        (
            serde_json::json!({"prompt": "x", "temperature": -1}),
            "temperature",
        ),
        (serde_json::json!({"prompt": "x", "n": 2}), "n"),
        (serde_json::json!({"prompt": [1, 2]}), "prompt"),
        (
            serde_json::json!({"prompt": "x", "max_tokens": 1.5}),
            "max_tokens",
        ),
    ] {
        let resp = agent.post(&url).send_json(&body).unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{body}");
        let v: serde_json::Value = resp.into_body().read_json().unwrap();
        assert_eq!(v["error"]["param"], field, "{body}");
    }
    let resp = agent
        .get(&format!("{}/v1/models", server.url()))
        .call()
        .unwrap();
    let v: serde_json::Value = resp.into_body().read_json().unwrap();
    assert_eq!(v["data"][0]["id"], "echo");
}

/// A server that answers 503 to its first `failures` requests, then (with `retry_after`) a 429
/// asking for a 1 s wait, then a valid completion.
fn flaky_server(failures: usize, retry_after: bool) -> (String, std::thread::JoinHandle<usize>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = 0;
        while let Ok(Some(req)) = server.recv_timeout(Duration::from_secs(3)) {
            seen += 1;
            let (status, body) = if seen <= failures {
                (503, r#"{"error":{"message":"busy"}}"#.to_string())
            } else if seen == failures + 1 && retry_after {
                (429, r#"{"error":{"message":"queue full"}}"#.to_string())
            } else {
                (
                    200,
                    r#"{"choices":[{"text":"ok","finish_reason":"stop"}]}"#.to_string(),
                )
            };
            let mut response = tiny_http::Response::from_string(body).with_status_code(status);
            if status == 429 {
                response.add_header(tiny_http::Header::from_bytes("Retry-After", "1").unwrap());
            }
            req.respond(response).unwrap();
        }
        seen
    });
    (url, handle)
}

#[test]
fn retries_with_backoff_then_reports_the_request() {
    let (url, handle) = flaky_server(2, false);
    let mut remote = RemoteGenerator::new(fast(url)).unwrap();
    let out = remote.generate(&[request("x", 1)]).unwrap();
    assert_eq!(
        (out[0].text.as_str(), out[0].finish),
        ("ok", FinishReason::Stop)
    );
    assert_eq!(handle.join().unwrap(), 3, "two 503s, then the answer");

    let (url, handle) = flaky_server(5, false);
    let mut remote = RemoteGenerator::new(RemoteConfig {
        max_retries: 1,
        ..fast(url)
    })
    .unwrap();
    let err = remote.generate(&[request("x", 1)]).unwrap_err().to_string();
    assert!(
        err.contains("request 0 failed after 2 attempt(s): HTTP 503"),
        "{err}"
    );
    drop(handle);

    // A 429 with `Retry-After: 1` is retried after a second, not after the 10 ms backoff.
    let (url, handle) = flaky_server(0, true);
    let mut remote = RemoteGenerator::new(fast(url)).unwrap();
    let t = std::time::Instant::now();
    let out = remote.generate(&[request("x", 1)]).unwrap();
    assert_eq!(out[0].text, "ok");
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(handle.join().unwrap(), 2, "the 429, then the answer");

    // Nobody listening: connection refused, retried, then an error naming the endpoint.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let mut remote = RemoteGenerator::new(RemoteConfig {
        max_retries: 2,
        ..fast(url.clone())
    })
    .unwrap();
    let err = remote.generate(&[request("x", 1)]).unwrap_err().to_string();
    assert!(
        err.contains(&url) && err.contains("after 3 attempt(s)"),
        "{err}"
    );
}

#[test]
fn bad_settings_are_refused() {
    assert!(RemoteGenerator::new(RemoteConfig::new("ftp://x", "m")).is_err());
    assert!(
        RemoteGenerator::new(RemoteConfig {
            concurrency: 0,
            ..RemoteConfig::new("http://x", "m")
        })
        .is_err()
    );
}

/// A server that answers every request with `status` and `body`; returns how many it saw.
fn canned_server(status: u16, body: &'static str) -> (String, std::thread::JoinHandle<usize>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = 0;
        while let Ok(Some(req)) = server.recv_timeout(Duration::from_secs(2)) {
            seen += 1;
            let response = tiny_http::Response::from_string(body).with_status_code(status);
            req.respond(response).unwrap();
        }
        seen
    });
    (url, handle)
}

#[test]
fn bad_answers_end_with_an_error_naming_the_endpoint_and_the_request() {
    // (status, body, what the error says, attempts: client errors and bad bodies are final).
    let cases: [(u16, &'static str, &str, usize); 5] = [
        (
            401,
            r#"{"error":{"message":"invalid API key"}}"#,
            "HTTP 401",
            1,
        ),
        (200, "{\"choices\": [", "unreadable completion response", 1),
        (200, r#"{"choices": []}"#, "the response has no choices", 1),
        (
            200,
            r#"{"choices": [{"finish_reason": "stop"}]}"#,
            "unreadable completion response",
            1,
        ),
        (500, "internal error", "HTTP 500", 3),
    ];
    for (status, body, needle, attempts) in cases {
        let (url, handle) = canned_server(status, body);
        let mut remote = RemoteGenerator::new(RemoteConfig {
            max_retries: 2,
            concurrency: 1,
            ..fast(url.clone())
        })
        .unwrap();
        let err = remote
            .generate(&[request("x", 1), request("y", 2)])
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{url}/v1/completions")), "{err}");
        assert!(err.contains("request 0") && err.contains(needle), "{err}");
        assert!(
            err.contains(&format!("after {attempts} attempt(s)")),
            "{status} {body}: {err}"
        );
        // After the first request fails for good, the second is not sent.
        assert_eq!(handle.join().unwrap(), attempts, "{status} {body}");
    }
}

/// Answers as llama-cpp-python's server does without `--logits_all`: a text and `usage`, no
/// log-probabilities; returns the request bodies it saw.
fn usage_only_server() -> (String, std::thread::JoinHandle<Vec<serde_json::Value>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    let handle = std::thread::spawn(move || {
        let mut bodies = Vec::new();
        while let Ok(Some(mut req)) = server.recv_timeout(Duration::from_secs(2)) {
            let mut text = String::new();
            req.as_reader().read_to_string(&mut text).unwrap();
            bodies.push(serde_json::from_str(&text).unwrap());
            let body = r#"{"choices": [{"text": "a b c d", "finish_reason": "length", "logprobs": null}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}"#;
            req.respond(tiny_http::Response::from_string(body)).unwrap();
        }
        bodies
    });
    (url, handle)
}

#[test]
fn log_probabilities_are_asked_for_only_on_request_and_tokens_are_counted_from_usage() {
    let (url, handle) = usage_only_server();
    let mut remote = RemoteGenerator::new(fast(url.clone())).unwrap();
    let out = remote.generate(&[request("x", 1)]).unwrap();
    assert_eq!(out[0].text, "a b c d");
    assert_eq!(
        out[0].token_count(),
        4,
        "counted from usage.completion_tokens"
    );
    assert!(out[0].token_ids.is_empty() && out[0].logprobs.iter().all(|x| x.is_nan()));
    let mut remote = RemoteGenerator::new(RemoteConfig {
        logprobs: true,
        ..fast(url)
    })
    .unwrap();
    remote.generate(&[request("y", 2)]).unwrap();
    let bodies = handle.join().unwrap();
    assert_eq!(bodies.len(), 2);
    assert!(bodies[0].get("logprobs").is_none(), "{}", bodies[0]);
    assert_eq!(bodies[1]["logprobs"], 1, "{}", bodies[1]);
    assert_eq!(bodies[0]["seed"], 1);
}
