//! A [`TextGenerator`] that talks to an OpenAI-compatible completions server (llama.cpp's and
//! vLLM's servers, or pulserec's own), so generation can run on an existing LM serving engine
//! when one machine is not enough.
//!
//! Each request is one `POST {base_url}/v1/completions` (requests carry their own seed, so they
//! are not merged into one call); up to `concurrency` requests are in flight at once. A request
//! that times out, cannot connect or gets HTTP 429/5xx is retried with exponential backoff, at
//! most `max_retries` times, waiting at least as long as the server's `Retry-After` (in seconds,
//! at most [`MAX_RETRY_AFTER`]); other HTTP errors are not retried. Token ids are not part of the
//! OpenAI completions protocol, so [`Generation::token_ids`] is empty unless the server adds them
//! (pulserec's own does, in `logprobs.token_ids`). Log-probabilities are asked for only with
//! [`RemoteConfig::logprobs`] (no PULSE stage reads them, and llama-cpp-python's server refuses
//! them unless started with `--logits_all true`); otherwise [`Generation::logprobs`] holds one NaN
//! per generated token, counted from the response's `usage.completion_tokens`, so
//! [`Generation::token_count`] is right either way.

use std::time::Duration;

use pulserec_core::{FinishReason, Generation, GenerationRequest, TextGenerator};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::TotError;

/// Settings of a remote completions endpoint. Its `Debug` output shows whether an API key is set,
/// never the key.
#[derive(Clone, PartialEq)]
pub struct RemoteConfig {
    /// Server root, e.g. `http://127.0.0.1:8080` (without `/v1`).
    pub base_url: String,
    /// The `model` field sent with each request.
    pub model: String,
    /// Bearer token, if the server wants one.
    pub api_key: Option<String>,
    /// Limit for one HTTP exchange.
    pub timeout: Duration,
    /// Retries after the first attempt, for timeouts, connection errors, 429 and 5xx.
    pub max_retries: u32,
    /// Delay before the first retry; doubles at each further retry.
    pub backoff: Duration,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Ask for each generated token's log-probability (`"logprobs": 1`); off by default.
    pub logprobs: bool,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("backoff", &self.backoff)
            .field("concurrency", &self.concurrency)
            .field("logprobs", &self.logprobs)
            .finish()
    }
}

impl RemoteConfig {
    /// Defaults for a server at `base_url`: 120 s timeout, 3 retries from 0.5 s, 4 in flight, no
    /// log-probabilities.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            model: model.into(),
            api_key: None,
            timeout: Duration::from_secs(120),
            max_retries: 3,
            backoff: Duration::from_millis(500),
            concurrency: 4,
            logprobs: false,
        }
    }
}

/// Completions over HTTP; see the module docs for the protocol and the retry policy.
#[derive(Debug)]
pub struct RemoteGenerator {
    config: RemoteConfig,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct CompletionResponse {
    choices: Vec<Choice>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Usage {
    completion_tokens: Option<usize>,
}

#[derive(Deserialize)]
struct Choice {
    text: String,
    finish_reason: Option<String>,
    logprobs: Option<Logprobs>,
}

#[derive(Deserialize)]
struct Logprobs {
    #[serde(default)]
    token_logprobs: Vec<Option<f32>>,
    /// pulserec's own server adds the generated ids.
    #[serde(default)]
    token_ids: Vec<u32>,
}

/// The longest `Retry-After` a client honours; a server asking for more gets this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// One failed attempt: whether it is worth retrying, after how long the server asked for, and
/// what happened.
struct Attempt {
    retry: bool,
    retry_after: Option<Duration>,
    message: String,
}

impl RemoteGenerator {
    /// A generator for the endpoint; checks the settings.
    pub fn new(config: RemoteConfig) -> Result<Self, TotError> {
        if !(config.base_url.starts_with("http://") || config.base_url.starts_with("https://")) {
            return Err(TotError::config(
                "base_url",
                format!("`{}` is not an http(s) URL", config.base_url),
            ));
        }
        if config.concurrency == 0 {
            return Err(TotError::config("concurrency", "must be at least 1"));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self { config, agent })
    }

    /// The settings.
    pub fn config(&self) -> &RemoteConfig {
        &self.config
    }

    fn body(&self, request: &GenerationRequest) -> Value {
        let p = &request.params;
        let mut body = json!({
            "model": self.config.model,
            "prompt": request.prompt,
            "max_tokens": p.max_new_tokens,
            "temperature": p.temperature,
            "seed": p.seed,
            "n": 1,
            "stream": false,
        });
        if self.config.logprobs {
            body["logprobs"] = json!(1);
        }
        if let Some(top_p) = p.top_p {
            body["top_p"] = json!(top_p);
        }
        // Not in OpenAI's API, but llama.cpp, vLLM and pulserec's server honour it.
        if let Some(top_k) = p.top_k {
            body["top_k"] = json!(top_k);
        }
        if !p.stop.is_empty() {
            body["stop"] = json!(p.stop);
        }
        body
    }

    fn attempt(&self, url: &str, body: &Value) -> Result<Generation, Attempt> {
        let mut call = self.agent.post(url);
        if let Some(key) = &self.config.api_key {
            call = call.header("Authorization", &format!("Bearer {key}"));
        }
        let response = call.send_json(body).map_err(|e| Attempt {
            // Transport problems (refused, reset, timed out) are worth another try.
            retry: true,
            retry_after: None,
            message: e.to_string(),
        })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let mut body = response.into_body();
        if status != 200 {
            let text = body.read_to_string().unwrap_or_default();
            return Err(Attempt {
                retry: status == 429 || status >= 500,
                retry_after,
                message: format!(
                    "HTTP {status}: {}",
                    text.chars().take(300).collect::<String>()
                ),
            });
        }
        let parsed: CompletionResponse = body.read_json().map_err(|e| Attempt {
            retry: false,
            retry_after: None,
            message: format!("unreadable completion response: {e}"),
        })?;
        let completion_tokens = parsed.usage.and_then(|u| u.completion_tokens);
        let choice = parsed.choices.into_iter().next().ok_or(Attempt {
            retry: false,
            retry_after: None,
            message: "the response has no choices".into(),
        })?;
        let finish = match choice.finish_reason.as_deref() {
            Some("length") => FinishReason::Length,
            _ => FinishReason::Stop,
        };
        let (mut logprobs, token_ids): (Vec<f32>, Vec<u32>) = choice
            .logprobs
            .map(|l| {
                let lp = l.token_logprobs.into_iter();
                (lp.map(|x| x.unwrap_or(f32::NAN)).collect(), l.token_ids)
            })
            .unwrap_or_default();
        if logprobs.is_empty() && token_ids.is_empty() {
            // Not asked for: one unknown log-probability per generated token, so the count holds.
            logprobs = vec![f32::NAN; completion_tokens.unwrap_or(0)];
        }
        Ok(Generation {
            text: choice.text,
            token_ids,
            logprobs,
            finish,
        })
    }

    /// One request with retries.
    fn complete(&self, index: usize, request: &GenerationRequest) -> Result<Generation, TotError> {
        let url = format!("{}/v1/completions", self.config.base_url);
        let body = self.body(request);
        let mut delay = self.config.backoff;
        let mut attempts = 0;
        loop {
            attempts += 1;
            match self.attempt(&url, &body) {
                Ok(g) => return Ok(g),
                Err(a) if a.retry && attempts <= self.config.max_retries => {
                    tracing::warn!(request = index, attempts, error = %a.message, "remote generation failed, retrying");
                    std::thread::sleep(delay.max(a.retry_after.unwrap_or_default()));
                    delay = delay.saturating_mul(2);
                }
                Err(a) => {
                    return Err(TotError::Remote {
                        url,
                        request: index,
                        attempts,
                        message: a.message,
                    });
                }
            }
        }
    }
}

impl TextGenerator for RemoteGenerator {
    fn generate(
        &mut self,
        requests: &[GenerationRequest],
    ) -> pulserec_core::Result<Vec<Generation>> {
        let mut out: Vec<Option<Result<Generation, TotError>>> =
            (0..requests.len()).map(|_| None).collect();
        let workers = self.config.concurrency.min(requests.len()).max(1);
        let this = &*self;
        // Once a request has failed for good the batch fails, so nothing more is sent.
        let failed = std::sync::atomic::AtomicBool::new(false);
        let failed = &failed;
        std::thread::scope(|scope| {
            // Worker k takes requests k, k + workers, ...; results go back by index.
            let handles: Vec<_> = (0..workers)
                .map(|k| {
                    scope.spawn(move || {
                        let mut done = Vec::new();
                        for i in (k..requests.len()).step_by(workers) {
                            if failed.load(std::sync::atomic::Ordering::Relaxed) {
                                break;
                            }
                            let result = this.complete(i, &requests[i]);
                            if result.is_err() {
                                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                            }
                            done.push((i, result));
                        }
                        done
                    })
                })
                .collect();
            for h in handles {
                // A worker only panics if `complete` does, which it never should; surface it.
                for (i, r) in h.join().expect("remote generation worker panicked") {
                    out[i] = Some(r);
                }
            }
        });
        // The first failure in request order; requests left unsent after it have no result.
        if let Some(err) = out.iter_mut().find_map(|r| match r {
            Some(Err(_)) => r.take().and_then(Result::err),
            _ => None,
        }) {
            return Err(err.into());
        }
        out.into_iter()
            .map(|r| {
                r.expect("every request was handled when none failed")
                    .map_err(pulserec_core::Error::from)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_api_key() {
        let mut config = RemoteConfig::new("http://127.0.0.1:9/", "m");
        assert!(format!("{config:?}").contains("api_key: None"));
        config.api_key = Some("sk-secret-123".into());
        let text = format!(
            "{config:?} {:?}",
            RemoteGenerator::new(config.clone()).unwrap()
        );
        assert!(!text.contains("sk-secret-123"), "{text}");
        assert!(text.contains("<redacted>") && text.contains("http://127.0.0.1:9"));
    }
}
