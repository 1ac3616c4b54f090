//! A small OpenAI-compatible completions server over any [`TextGenerator`], so a pulserec SLM
//! can serve other processes or machines (and `pulserec_tot::RemoteGenerator` can talk to it).
//!
//! Endpoints: `POST /v1/completions` (`prompt` as a string or a list, `max_tokens`,
//! `temperature`, `top_p`, `top_k`, `stop`, `seed`; `n` must be 1), `GET /v1/models`,
//! `GET /health`. Requests are served one at a time; a list of prompts is one batched generate
//! call, prompt `i` sampled with seed `seed + i`. Bad requests get HTTP 400 with an OpenAI-style
//! error body naming the field; generator failures get HTTP 500.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use pulserec_core::{FinishReason, GenerationRequest, SamplingParams, TextGenerator};
use serde_json::{Value, json};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Binding the address failed.
    #[error("cannot listen on {addr}: {message}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The system's reason.
        message: String,
    },
}

/// A running server; stops when dropped.
pub struct CompletionServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    handle: Option<JoinHandle<()>>,
}

/// A request the server refuses, with the field at fault.
struct BadRequest {
    field: &'static str,
    message: String,
}

fn bad(field: &'static str, message: impl Into<String>) -> BadRequest {
    BadRequest {
        field,
        message: message.into(),
    }
}

impl CompletionServer {
    /// Starts serving `generator` as model `model` on `addr` (e.g. `127.0.0.1:0` for any free
    /// port) on a background thread.
    pub fn start<G>(
        addr: &str,
        model: impl Into<String>,
        mut generator: G,
    ) -> Result<Self, ServeError>
    where
        G: TextGenerator + Send + 'static,
    {
        let server = tiny_http::Server::http(addr).map_err(|e| ServeError::Bind {
            addr: addr.to_string(),
            message: e.to_string(),
        })?;
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| ServeError::Bind {
                addr: addr.to_string(),
                message: "not an IP address".into(),
            })?;
        let server = Arc::new(server);
        let model = model.into();
        let worker = Arc::clone(&server);
        let handle = std::thread::spawn(move || {
            // `recv` fails once `unblock` is called on drop: that ends the loop.
            while let Ok(mut request) = worker.recv() {
                let (status, body) = handle_request(&mut request, &model, &mut generator);
                let response = tiny_http::Response::from_string(body.to_string())
                    .with_status_code(status)
                    .with_header(
                        tiny_http::Header::from_bytes("Content-Type", "application/json")
                            .expect("static header is valid"),
                    );
                if let Err(e) = request.respond(response) {
                    tracing::warn!(error = %e, "could not send a response");
                }
            }
        });
        tracing::info!(%bound, "completion server listening");
        Ok(Self {
            server,
            addr: bound,
            handle: Some(handle),
        })
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, the base URL for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for CompletionServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn error_body(message: &str, kind: &str, field: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": field}})
}

fn handle_request<G: TextGenerator>(
    request: &mut tiny_http::Request,
    model: &str,
    generator: &mut G,
) -> (u16, Value) {
    let path = request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    match (request.method(), path.as_str()) {
        (tiny_http::Method::Get, "/health") => (200, json!({"status": "ok"})),
        (tiny_http::Method::Get, "/v1/models") => (
            200,
            json!({"object": "list", "data": [{"id": model, "object": "model", "owned_by": "pulserec"}]}),
        ),
        (tiny_http::Method::Post, "/v1/completions") => {
            let mut text = String::new();
            if let Err(e) = request.as_reader().read_to_string(&mut text) {
                return (
                    400,
                    error_body(
                        &format!("unreadable body: {e}"),
                        "invalid_request_error",
                        None,
                    ),
                );
            }
            match parse_completion(&text) {
                Err(b) => (
                    400,
                    error_body(&b.message, "invalid_request_error", Some(b.field)),
                ),
                Ok(requests) => match generator.generate(&requests) {
                    Ok(gens) => (200, completion_body(model, &gens)),
                    Err(e) => (500, error_body(&e.to_string(), "server_error", None)),
                },
            }
        }
        _ => (
            404,
            error_body(
                &format!("no route for {} {path}", request.method()),
                "invalid_request_error",
                None,
            ),
        ),
    }
}

/// A field holding a string or a list of strings (`None` when absent or null).
fn strings(v: &Value, key: &'static str) -> Result<Option<Vec<String>>, BadRequest> {
    let not_strings = || bad(key, "must be a string or a list of strings");
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(not_strings))
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(not_strings()),
    }
}

fn parse_completion(text: &str) -> Result<Vec<GenerationRequest>, BadRequest> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| bad("body", format!("invalid JSON: {e}")))?;
    let prompts = strings(&v, "prompt")?.ok_or_else(|| bad("prompt", "missing"))?;
    let num = |key: &'static str| -> Result<Option<f64>, BadRequest> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(x) => x
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad(key, "must be a number")),
        }
    };
    if num("n")?.is_some_and(|n| n != 1.0) {
        return Err(bad("n", "only n = 1 is supported"));
    }
    let temperature = num("temperature")?.unwrap_or(1.0) as f32;
    if !(temperature >= 0.0 && temperature.is_finite()) {
        return Err(bad("temperature", "must be a finite number >= 0"));
    }
    let top_p = num("top_p")?.map(|p| p as f32);
    if top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
        return Err(bad("top_p", "must be in (0, 1]"));
    }
    let as_count = |key: &'static str, x: Option<f64>| -> Result<Option<usize>, BadRequest> {
        match x {
            Some(x) if x < 0.0 || x.fract() != 0.0 => {
                Err(bad(key, "must be a non-negative integer"))
            }
            Some(x) => Ok(Some(x as usize)),
            None => Ok(None),
        }
    };
    let max_new_tokens = as_count("max_tokens", num("max_tokens")?)?.unwrap_or(16);
    let top_k = as_count("top_k", num("top_k")?)?.filter(|&k| k > 0);
    let seed = as_count("seed", num("seed")?)?.unwrap_or(0) as u64;
    let stop = strings(&v, "stop")?.unwrap_or_default();
    Ok(prompts
        .into_iter()
        .enumerate()
        .map(|(i, prompt)| GenerationRequest {
            prompt,
            params: SamplingParams {
                temperature,
                top_k,
                top_p,
                max_new_tokens,
                stop: stop.clone(),
                seed: seed.wrapping_add(i as u64),
            },
        })
        .collect())
}

fn completion_body(model: &str, gens: &[pulserec_core::Generation]) -> Value {
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let choices: Vec<Value> = gens
        .iter()
        .enumerate()
        .map(|(i, g)| {
            json!({
                "index": i,
                "text": g.text,
                "finish_reason": match g.finish { FinishReason::Length => "length", _ => "stop" },
                "logprobs": {"token_logprobs": g.logprobs, "token_ids": g.token_ids},
            })
        })
        .collect();
    let completion_tokens: usize = gens.iter().map(|g| g.token_ids.len()).sum();
    json!({
        "id": format!("cmpl-{created}"),
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": {"completion_tokens": completion_tokens},
    })
}
