//! An OpenAI-compatible completions server over any [`TextGenerator`], so a pulserec SLM can
//! serve other processes or machines (and `pulserec_tot::RemoteGenerator` can talk to it).
//!
//! Endpoints: `POST /v1/completions` (`prompt` as a string or a list, `max_tokens`,
//! `temperature`, `top_p`, `top_k`, `stop`, `seed`; `n` must be 1), `GET /v1/models`,
//! `GET /health` (`{"status": "ok", "waiting": N, "queue": Q}`: requests waiting for the
//! generator, and the queue's size; 503 once shutdown has begun). A list of prompts is one batched generate call, prompt `i` sampled with seed
//! `seed + i`.
//!
//! HTTP runs on [hyper](https://hyper.rs) over a small tokio runtime; the generator runs on a
//! thread of its own, fed by a bounded queue, and takes the requests waiting there together into
//! one batched generate call (up to [`ServeConfig::batch_prompts`] prompts), so concurrent
//! clients share the model's batched decoding.
//!
//! # What a client gets back
//!
//! | status | when | `error.param` |
//! |---|---|---|
//! | 200 | the completion | |
//! | 400 | invalid JSON or field; a prompt longer than the context; `max_tokens` that does not fit beside the prompt; more prompts or tokens than [`ServeConfig`] allows | the field |
//! | 404 / 405 | unknown path / method | |
//! | 408 | the request head or body did not arrive within [`ServeConfig::read_timeout`] | `body` |
//! | 413 | a body over [`ServeConfig::max_body_bytes`], refused before it is read | `body` |
//! | 429 | the queue is full; `Retry-After` estimates when a slot frees up | |
//! | 500 | the generator failed or panicked (a fault of the server, not of the request) | |
//! | 503 | not answered within [`ServeConfig::request_timeout`], or the server is shutting down; with `Retry-After` | |
//!
//! # Bounded work and memory
//!
//! At most [`ServeConfig::max_connections`] connections are served at once (more wait in the
//! listen backlog), each holds at most one body of [`ServeConfig::max_body_bytes`], at most
//! [`ServeConfig::queue`] requests wait for the generator, and each asks for at most
//! [`ServeConfig::max_request_tokens`] tokens. With a [`TokenCounter`], prompts are checked
//! against the context before they are queued, and a prompt that cannot fit is refused from its
//! length alone, without tokenising it ([`pulserec_slm::SlmTokenizer::count_within`]).
//! The generator cannot be interrupted: a request whose time runs out while it is being
//! generated gets its 503 at once, and the generation finishes unseen.
//!
//! # Shutdown
//!
//! [`CompletionServer::shutdown`] stops accepting connections, lets requests in flight finish
//! for a grace period, then answers the ones still waiting with 503; no response is cut off
//! half-written. Dropping the server is a shutdown with no grace.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use pulserec_core::{FinishReason, Generation, GenerationRequest, SamplingParams, TextGenerator};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

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
    /// A [`ServeConfig`] field that cannot work.
    #[error("serve config `{field}`: {message}")]
    Config {
        /// The field at fault.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The HTTP runtime could not start.
    #[error("cannot start the HTTP runtime: {0}")]
    Runtime(String),
}

/// What the server needs to know about a model's tokens to refuse requests that cannot fit.
pub trait TokenCounter: Send + Sync {
    /// The model's context length in tokens (prompt plus generated tokens).
    fn context_length(&self) -> usize;
    /// Tokens in `text`, or `None` when it has more than `limit`; the cost should be bounded by
    /// `limit`, not by the length of `text`.
    fn count_within(&self, text: &str, limit: usize) -> Result<Option<usize>, String>;
}

/// The [`TokenCounter`] of a pulserec SLM: its tokenizer and context length.
#[derive(Clone, Debug)]
pub struct SlmTokens {
    tokenizer: pulserec_slm::SlmTokenizer,
    context: usize,
}

impl SlmTokens {
    /// The counter of `slm` (its tokenizer is cloned).
    pub fn new(slm: &pulserec_slm::Slm) -> Self {
        Self {
            tokenizer: slm.tokenizer().clone(),
            context: slm.model().config().max_position,
        }
    }
}

impl TokenCounter for SlmTokens {
    fn context_length(&self) -> usize {
        self.context
    }

    fn count_within(&self, text: &str, limit: usize) -> Result<Option<usize>, String> {
        self.tokenizer
            .count_within(text, limit)
            .map_err(|e| e.to_string())
    }
}

/// Limits and timeouts of a [`CompletionServer`]; [`ServeConfig::default`] suits one 2-core
/// machine serving SmolLM2.
#[derive(Clone)]
pub struct ServeConfig {
    /// Largest request body, in bytes; a larger one gets 413 before it is read. Default 4 MiB.
    pub max_body_bytes: usize,
    /// Most prompts in one request. Default 64.
    pub max_prompts: usize,
    /// Most tokens one request may ask for: over its prompts, prompt tokens plus `max_tokens`
    /// (checked when a [`TokenCounter`] is set). Default 32,768.
    pub max_request_tokens: usize,
    /// Requests accepted and waiting for the generator; past it, 429. Default 8.
    pub queue: usize,
    /// Longest a request may take from arrival to answer; past it, 503. Default 300 s.
    pub request_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog. Default 64.
    pub max_connections: usize,
    /// Time a client has to send a request's head, and then its body; past it, 408 (or the
    /// connection is closed while the head is incomplete). Default 30 s.
    pub read_timeout: Duration,
    /// Threads that run HTTP and the token checks (the generator has its own). Default 2.
    pub http_threads: usize,
    /// Most prompts the generator takes into one call from the requests waiting in the queue
    /// (a request is never split; 1 serves one request at a time). Default 16.
    pub batch_prompts: usize,
    /// Counts prompt tokens for the context checks; without it only the generator checks them.
    pub tokens: Option<Arc<dyn TokenCounter>>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            max_prompts: 64,
            max_request_tokens: 32_768,
            queue: 8,
            request_timeout: Duration::from_secs(300),
            max_connections: 64,
            read_timeout: Duration::from_secs(30),
            http_threads: 2,
            batch_prompts: 16,
            tokens: None,
        }
    }
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_prompts", &self.max_prompts)
            .field("max_request_tokens", &self.max_request_tokens)
            .field("queue", &self.queue)
            .field("request_timeout", &self.request_timeout)
            .field("max_connections", &self.max_connections)
            .field("read_timeout", &self.read_timeout)
            .field("http_threads", &self.http_threads)
            .field("batch_prompts", &self.batch_prompts)
            .field("tokens", &self.tokens.as_ref().map(|t| t.context_length()))
            .finish()
    }
}

impl ServeConfig {
    /// The defaults, with `slm`'s tokenizer and context for the token checks.
    pub fn for_slm(slm: &pulserec_slm::Slm) -> Self {
        Self {
            tokens: Some(Arc::new(SlmTokens::new(slm))),
            ..Self::default()
        }
    }

    /// Checks that every limit can work.
    pub fn validate(&self) -> Result<(), ServeError> {
        let positive = [
            ("max_body_bytes", self.max_body_bytes),
            ("max_prompts", self.max_prompts),
            ("max_request_tokens", self.max_request_tokens),
            ("queue", self.queue),
            ("max_connections", self.max_connections),
            ("http_threads", self.http_threads),
            ("batch_prompts", self.batch_prompts),
        ];
        for (field, value) in positive {
            if value == 0 {
                return Err(ServeError::Config {
                    field,
                    message: "must be at least 1".into(),
                });
            }
        }
        for (field, value) in [
            ("request_timeout", self.request_timeout),
            ("read_timeout", self.read_timeout),
        ] {
            if value.is_zero() {
                return Err(ServeError::Config {
                    field,
                    message: "must be longer than zero".into(),
                });
            }
        }
        Ok(())
    }
}

/// A running server; see the module docs. Stops when dropped.
pub struct CompletionServer {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<oneshot::Sender<Duration>>,
    accept: Option<tokio::task::JoinHandle<()>>,
    shared: Option<Arc<Shared>>,
    worker: Option<JoinHandle<()>>,
}

/// What the HTTP side shares: settings, the job queue and the shutdown signals.
struct Shared {
    model: String,
    config: ServeConfig,
    jobs: mpsc::Sender<Job>,
    /// Set once shutdown starts: new requests get 503.
    closing: AtomicBool,
    /// Set when the grace period is over: requests still waiting get 503.
    abort: watch::Sender<bool>,
    /// Mean seconds per request served (an exponential average over generate calls, as f64
    /// bits), for `Retry-After`.
    mean_secs: Arc<AtomicU64>,
}

/// One accepted request on its way to the generator.
struct Job {
    requests: Vec<GenerationRequest>,
    deadline: Instant,
    /// Set when the client stopped waiting (timeout, disconnect, shutdown): skip it.
    cancelled: Arc<AtomicBool>,
    reply: oneshot::Sender<JobResult>,
}

#[derive(Clone)]
enum JobResult {
    Done(Vec<Generation>),
    /// The generator refused the request as invalid.
    Invalid(String),
    /// The generator failed or panicked.
    Failed(String),
    /// Its deadline passed before the generator reached it.
    Expired,
}

/// Marks a job cancelled when the handler waiting for it goes away without its answer.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A request the server refuses, with the field at fault.
#[derive(Debug)]
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

type Reply = Response<Full<Bytes>>;

impl CompletionServer {
    /// Starts serving `generator` as model `model` on `addr` (e.g. `127.0.0.1:0` for any free
    /// port): HTTP on a small runtime, the generator on a thread of its own.
    pub fn start<G>(
        addr: &str,
        model: impl Into<String>,
        mut generator: G,
        config: ServeConfig,
    ) -> Result<Self, ServeError>
    where
        G: TextGenerator + Send + 'static,
    {
        config.validate()?;
        let bind_error = |e: std::io::Error| ServeError::Bind {
            addr: addr.to_string(),
            message: e.to_string(),
        };
        let listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
        listener.set_nonblocking(true).map_err(bind_error)?;
        let bound = listener.local_addr().map_err(bind_error)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.http_threads)
            .max_blocking_threads(config.http_threads)
            .thread_name("pulserec-http")
            .enable_all()
            .build()
            .map_err(|e| ServeError::Runtime(e.to_string()))?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener).map_err(bind_error)?
        };

        let (jobs, mut queue) = mpsc::channel::<Job>(config.queue);
        let mean_secs = Arc::new(AtomicU64::new(0f64.to_bits()));
        let worker_mean = Arc::clone(&mean_secs);
        let batch_prompts = config.batch_prompts;
        let worker = std::thread::Builder::new()
            .name("pulserec-generate".into())
            .spawn(move || generate_jobs(&mut generator, &mut queue, batch_prompts, &worker_mean))
            .map_err(|e| ServeError::Runtime(e.to_string()))?;

        let (abort, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            model: model.into(),
            config,
            jobs,
            closing: AtomicBool::new(false),
            abort,
            mean_secs,
        });
        let (stop, stopped) = oneshot::channel();
        let accept = runtime.spawn(accept_loop(listener, Arc::clone(&shared), stopped));
        tracing::info!(%bound, "completion server listening");
        Ok(Self {
            addr: bound,
            runtime: Some(runtime),
            stop: Some(stop),
            accept: Some(accept),
            shared: Some(shared),
            worker: Some(worker),
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

    /// Stops accepting connections, lets requests in flight finish for up to `grace`, answers
    /// the ones still waiting with 503, then stops the generator thread once its current call
    /// returns.
    pub fn shutdown(mut self, grace: Duration) {
        self.stop_with(grace);
    }

    fn stop_with(&mut self, grace: Duration) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(grace);
        }
        let accept = self.accept.take();
        let finish = move || {
            if let Some(accept) = accept {
                // The accept loop returns once every connection is closed (or a short while
                // after the grace period).
                let _ = runtime.block_on(accept);
            }
            runtime.shutdown_timeout(Duration::from_secs(1));
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            // Stopped from a caller's async code, where `block_on` must not run: wait on a
            // thread of our own instead.
            std::thread::scope(|s| {
                s.spawn(finish);
            });
        } else {
            finish();
        }
        // The last sender of the job queue goes with `shared`: the worker's loop ends.
        self.shared.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        tracing::info!(addr = %self.addr, "completion server stopped");
    }
}

impl Drop for CompletionServer {
    fn drop(&mut self) {
        self.stop_with(Duration::ZERO);
    }
}

/// The generator thread: takes the waiting requests, up to `batch_prompts` prompts (and at
/// least one request), into one generate call, and answers each. Ends when the HTTP side is gone.
fn generate_jobs<G: TextGenerator>(
    generator: &mut G,
    queue: &mut mpsc::Receiver<Job>,
    batch_prompts: usize,
    mean_secs: &AtomicU64,
) {
    while let Some(first) = queue.blocking_recv() {
        let mut batch = vec![first];
        let mut prompts = batch[0].requests.len();
        while prompts < batch_prompts {
            match queue.try_recv() {
                Ok(job) => {
                    prompts += job.requests.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let now = Instant::now();
        let mut live = Vec::with_capacity(batch.len());
        for job in batch {
            if job.cancelled.load(Ordering::Relaxed) {
                continue;
            }
            if now >= job.deadline {
                // The handler may have gone (timeout, disconnect): nothing to tell.
                let _ = job.reply.send(JobResult::Expired);
                continue;
            }
            live.push(job);
        }
        if live.is_empty() {
            continue;
        }
        let t = Instant::now();
        let requests: Vec<GenerationRequest> = live
            .iter()
            .flat_map(|j| j.requests.iter().cloned())
            .collect();
        let answers = match run_generator(generator, &requests) {
            JobResult::Done(mut gens) => live
                .iter()
                .map(|j| JobResult::Done(gens.drain(..j.requests.len()).collect()))
                .collect(),
            // One request's mistake must not fail the others: run each alone.
            JobResult::Invalid(_) if live.len() > 1 => live
                .iter()
                .map(|j| run_generator(generator, &j.requests))
                .collect(),
            other => vec![other; live.len()],
        };
        let secs = t.elapsed().as_secs_f64() / live.len() as f64;
        let old = f64::from_bits(mean_secs.load(Ordering::Relaxed));
        let mean = if old == 0.0 {
            secs
        } else {
            0.8 * old + 0.2 * secs
        };
        mean_secs.store(mean.to_bits(), Ordering::Relaxed);
        for (job, answer) in live.into_iter().zip(answers) {
            let _ = job.reply.send(answer);
        }
    }
}

/// One generate call, a panic caught and reported as a failure.
fn run_generator<G: TextGenerator>(generator: &mut G, requests: &[GenerationRequest]) -> JobResult {
    let out = std::panic::catch_unwind(AssertUnwindSafe(|| generator.generate(requests)));
    match out {
        Ok(Ok(g)) if g.len() == requests.len() => JobResult::Done(g),
        Ok(Ok(g)) => JobResult::Failed(format!(
            "the generator returned {} completions for {} prompts",
            g.len(),
            requests.len()
        )),
        Ok(Err(pulserec_core::Error::InvalidInput(m))) => JobResult::Invalid(m),
        Ok(Err(e)) => JobResult::Failed(e.to_string()),
        Err(_) => {
            tracing::error!("the generator panicked; serving on");
            JobResult::Failed("the generator panicked".into())
        }
    }
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<Duration>,
) {
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(shared.config.max_connections));
    let grace = loop {
        let permit = tokio::select! {
            p = Arc::clone(&permits).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break Duration::ZERO,
            },
            g = &mut stop => break g.unwrap_or_default(),
        };
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            g = &mut stop => break g.unwrap_or_default(),
        };
        let service_shared = Arc::clone(&shared);
        let service = hyper::service::service_fn(move |req| {
            let shared = Arc::clone(&service_shared);
            async move { Ok::<_, Infallible>(route(req, &shared).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(shared.config.read_timeout)
            .max_buf_size(64 << 10)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    };
    drop(listener);
    shared.closing.store(true, Ordering::Relaxed);
    let all_closed = graceful.shutdown();
    tokio::pin!(all_closed);
    tokio::select! {
        _ = &mut all_closed => {}
        _ = tokio::time::sleep(grace) => {
            shared.abort.send_replace(true);
            // The waiting handlers answer at once; give their responses time to be written.
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut all_closed).await;
        }
    }
}

async fn route(req: Request<Incoming>, shared: &Shared) -> Reply {
    let arrived = Instant::now();
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/health") if shared.closing.load(Ordering::Relaxed) => json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "shutting down"}),
        ),
        (&Method::GET, "/health") => {
            let waiting = shared.config.queue - shared.jobs.capacity();
            json_reply(
                StatusCode::OK,
                &json!({"status": "ok", "waiting": waiting, "queue": shared.config.queue}),
            )
        }
        (&Method::GET, "/v1/models") => json_reply(
            StatusCode::OK,
            &json!({"object": "list", "data": [{"id": shared.model, "object": "model", "owned_by": "pulserec"}]}),
        ),
        (&Method::POST, "/v1/completions") => completions(req, shared, arrived).await,
        (_, "/health" | "/v1/models" | "/v1/completions") => error_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{} is not allowed on {path}", req.method()),
            None,
        ),
        _ => error_reply(
            StatusCode::NOT_FOUND,
            &format!("no route for {} {path}", req.method()),
            None,
        ),
    }
}

async fn completions(req: Request<Incoming>, shared: &Shared, arrived: Instant) -> Reply {
    let config = &shared.config;
    if shared.closing.load(Ordering::Relaxed) {
        return shutting_down();
    }
    let limit = config.max_body_bytes;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large(limit);
    }
    let read = Limited::new(req.into_body(), limit).collect();
    let body = match tokio::time::timeout(config.read_timeout, read).await {
        Err(_) => {
            return close(error_reply(
                StatusCode::REQUEST_TIMEOUT,
                &format!(
                    "the body did not arrive within {} s",
                    config.read_timeout.as_secs_f64()
                ),
                Some("body"),
            ));
        }
        Ok(Err(e)) if e.is::<LengthLimitError>() => return too_large(limit),
        Ok(Err(e)) => {
            return close(error_reply(
                StatusCode::BAD_REQUEST,
                &format!("unreadable body: {e}"),
                Some("body"),
            ));
        }
        Ok(Ok(body)) => body.to_bytes(),
    };
    let requests = match parse_completion(&body, config.max_prompts) {
        Ok(r) => r,
        Err(b) => return invalid(&b),
    };
    drop(body);
    let requests = match &config.tokens {
        None => requests,
        Some(tokens) => {
            let tokens = Arc::clone(tokens);
            let budget = config.max_request_tokens;
            let checked = tokio::task::spawn_blocking(move || {
                check_tokens(&requests, tokens.as_ref(), budget).map(|()| requests)
            })
            .await;
            match checked {
                Ok(Ok(r)) => r,
                Ok(Err(b)) => return invalid(&b),
                Err(e) => return server_error(&format!("token check failed: {e}")),
            }
        }
    };

    let deadline = arrived + config.request_timeout;
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel = CancelOnDrop(Arc::clone(&cancelled));
    let (reply, answer) = oneshot::channel();
    let job = Job {
        requests,
        deadline,
        cancelled,
        reply,
    };
    if let Err(e) = shared.jobs.try_send(job) {
        return match e {
            mpsc::error::TrySendError::Full(_) => {
                let waiting = config.queue;
                with_retry_after(
                    error_reply(
                        StatusCode::TOO_MANY_REQUESTS,
                        &format!("{waiting} requests are already waiting; retry later"),
                        None,
                    ),
                    retry_after(shared, waiting),
                )
            }
            mpsc::error::TrySendError::Closed(_) => shutting_down(),
        };
    }
    let mut abort = shared.abort.subscribe();
    tokio::select! {
        a = answer => match a {
            Ok(JobResult::Done(gens)) => json_reply(StatusCode::OK, &completion_body(&shared.model, &gens)),
            Ok(JobResult::Invalid(m)) => error_reply(StatusCode::BAD_REQUEST, &m, Some("prompt")),
            Ok(JobResult::Failed(m)) => server_error(&m),
            Ok(JobResult::Expired) => timed_out(shared),
            Err(_) => shutting_down(),
        },
        _ = tokio::time::sleep_until(deadline.into()) => timed_out(shared),
        _ = abort.wait_for(|a| *a) => shutting_down(),
    }
}

/// Checks each prompt against the context and the request against the token budget, with
/// the field at fault.
fn check_tokens(
    requests: &[GenerationRequest],
    tokens: &dyn TokenCounter,
    budget: usize,
) -> Result<(), BadRequest> {
    let context = tokens.context_length();
    let mut total = 0usize;
    for (i, r) in requests.iter().enumerate() {
        let max_tokens = r.params.max_new_tokens;
        let n = tokens
            .count_within(&r.prompt, context)
            .map_err(|e| bad("prompt", format!("prompt {i} cannot be tokenised: {e}")))?
            .ok_or_else(|| {
                bad(
                    "prompt",
                    format!("prompt {i} is longer than the model's context of {context} tokens"),
                )
            })?;
        if n == 0 {
            return Err(bad("prompt", format!("prompt {i} is empty")));
        }
        if n + max_tokens > context {
            return Err(bad(
                "max_tokens",
                format!(
                    "prompt {i} has {n} token(s); with max_tokens {max_tokens} that is {}, more \
                     than the model's context of {context} tokens",
                    n + max_tokens
                ),
            ));
        }
        total += n + max_tokens;
        if total > budget {
            return Err(bad(
                "prompt",
                format!(
                    "the request needs more than {budget} tokens (prompt tokens plus max_tokens \
                     over its prompts), the most this server takes in one request"
                ),
            ));
        }
    }
    Ok(())
}

/// Seconds until a queue slot is likely free: the mean generate time times the work ahead.
fn retry_after(shared: &Shared, waiting: usize) -> u64 {
    let mean = f64::from_bits(shared.mean_secs.load(Ordering::Relaxed));
    ((mean * (waiting + 1) as f64).ceil() as u64).clamp(1, 600)
}

fn json_reply(status: StatusCode, body: &Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn error_reply(status: StatusCode, message: &str, param: Option<&str>) -> Reply {
    let kind = if status.is_server_error() {
        "server_error"
    } else {
        "invalid_request_error"
    };
    json_reply(
        status,
        &json!({"error": {"message": message, "type": kind, "param": param, "code": status.as_u16()}}),
    )
}

fn invalid(b: &BadRequest) -> Reply {
    error_reply(StatusCode::BAD_REQUEST, &b.message, Some(b.field))
}

fn server_error(message: &str) -> Reply {
    error_reply(StatusCode::INTERNAL_SERVER_ERROR, message, None)
}

fn too_large(limit: usize) -> Reply {
    close(error_reply(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("the body is larger than this server's limit of {limit} bytes"),
        Some("body"),
    ))
}

fn timed_out(shared: &Shared) -> Reply {
    with_retry_after(
        error_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "not answered within the server's limit of {} s",
                shared.config.request_timeout.as_secs_f64()
            ),
            None,
        ),
        retry_after(shared, shared.config.queue),
    )
}

fn shutting_down() -> Reply {
    close(error_reply(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is shutting down",
        None,
    ))
}

fn with_retry_after(mut r: Reply, secs: u64) -> Reply {
    r.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// Asks the client to close the connection (its body may be left unread).
fn close(mut r: Reply) -> Reply {
    r.headers_mut()
        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
    r
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

/// Parses a completions body into generation requests, refusing more than `max_prompts`.
fn parse_completion(body: &[u8], max_prompts: usize) -> Result<Vec<GenerationRequest>, BadRequest> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad("body", format!("invalid JSON: {e}")))?;
    if !v.is_object() {
        return Err(bad("body", "must be a JSON object"));
    }
    let prompts = strings(&v, "prompt")?.ok_or_else(|| bad("prompt", "missing"))?;
    if prompts.is_empty() {
        return Err(bad("prompt", "the list of prompts is empty"));
    }
    if prompts.len() > max_prompts {
        return Err(bad(
            "prompt",
            format!(
                "{} prompts; this server takes at most {max_prompts} in one request",
                prompts.len()
            ),
        ));
    }
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
    let as_count = |key: &'static str, x: Option<f64>| -> Result<Option<u64>, BadRequest> {
        match x {
            Some(x) if !(x >= 0.0 && x.fract() == 0.0 && x < u64::MAX as f64) => {
                Err(bad(key, "must be a non-negative integer"))
            }
            Some(x) => Ok(Some(x as u64)),
            None => Ok(None),
        }
    };
    let max_new_tokens = as_count("max_tokens", num("max_tokens")?)?.unwrap_or(16);
    let max_new_tokens = usize::try_from(max_new_tokens)
        .map_err(|_| bad("max_tokens", "is larger than this machine can count"))?;
    let top_k = as_count("top_k", num("top_k")?)?
        .filter(|&k| k > 0)
        .map(|k| usize::try_from(k).unwrap_or(usize::MAX));
    // Read as an integer, not through f64: pipeline seeds use all 64 bits, and a double keeps
    // only 53 (a rounded seed samples different text than the same request in-process).
    let seed = match v.get("seed") {
        None | Some(Value::Null) => 0,
        Some(x) => x
            .as_u64()
            .ok_or_else(|| bad("seed", "must be an integer from 0 to 2^64 - 1"))?,
    };
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

fn completion_body(model: &str, gens: &[Generation]) -> Value {
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const VALID: &str = r#"{"prompt": ["a", "b"], "max_tokens": 3, "temperature": 0.7, "top_p": 0.9, "top_k": 5, "stop": ["\n"], "seed": 4, "n": 1}"#;

    #[test]
    fn a_valid_body_parses_with_seeds_per_prompt() {
        let r = parse_completion(VALID.as_bytes(), 64).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[1].params.seed, 5);
        assert_eq!(r[0].params.max_new_tokens, 3);
        assert_eq!(r[0].params.top_k, Some(5));
        // Seeds keep all 64 bits (a double would round this one).
        let big = r#"{"prompt": ["a", "b"], "seed": 18446744073709551557}"#;
        let r = parse_completion(big.as_bytes(), 64).unwrap();
        assert_eq!(r[0].params.seed, 18446744073709551557);
        assert_eq!(r[1].params.seed, 18446744073709551558);
    }

    #[test]
    fn bad_fields_are_named() {
        let field = |body: &str| parse_completion(body.as_bytes(), 2).unwrap_err().field;
        assert_eq!(field(r#"{"prompt": "a", "max_tokens": -1}"#), "max_tokens");
        assert_eq!(
            field(r#"{"prompt": "a", "max_tokens": 1e300}"#),
            "max_tokens"
        );
        assert_eq!(field(r#"{"prompt": 5}"#), "prompt");
        assert_eq!(field(r#"{"prompt": ["a", "b", "c"]}"#), "prompt");
        assert_eq!(field(r#"{"prompt": []}"#), "prompt");
        assert_eq!(field(r#"{"prompt": "a", "n": 2}"#), "n");
        assert_eq!(
            field(r#"{"prompt": "a", "temperature": "hot"}"#),
            "temperature"
        );
        assert_eq!(field(r#"{"prompt": "a", "seed": 1.5}"#), "seed");
        assert_eq!(field(r#"{"prompt": "a", "seed": -3}"#), "seed");
        assert_eq!(field(r#"[1, 2]"#), "body");
        assert_eq!(field(r#"{"prompt": "a""#), "body");
    }

    /// Counts characters; context 10.
    struct Chars;

    impl TokenCounter for Chars {
        fn context_length(&self) -> usize {
            10
        }
        fn count_within(&self, text: &str, limit: usize) -> Result<Option<usize>, String> {
            let n = text.chars().count();
            Ok((n <= limit).then_some(n))
        }
    }

    #[test]
    fn token_checks_name_prompt_or_max_tokens() {
        let req = |prompt: &str, max: usize| GenerationRequest {
            prompt: prompt.into(),
            params: SamplingParams::greedy(max),
        };
        let field =
            |r: &[GenerationRequest], budget| check_tokens(r, &Chars, budget).map_err(|b| b.field);
        assert_eq!(field(&[req("abc", 7)], 100), Ok(()));
        assert_eq!(field(&[req("abc", 8)], 100), Err("max_tokens"));
        assert_eq!(field(&[req(&"x".repeat(11), 0)], 100), Err("prompt"));
        assert_eq!(field(&[req("", 1)], 100), Err("prompt"));
        assert_eq!(field(&[req("abc", 2), req("abc", 2)], 9), Err("prompt"));
        assert_eq!(field(&[req("abc", 2), req("abc", 2)], 10), Ok(()));
    }

    fn mutate(body: &[u8], edits: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut b = body.to_vec();
        for &(at, op, byte) in edits {
            let at = at % (b.len() + 1);
            match op % 3 {
                0 if at < b.len() => b[at] = byte,
                1 => b.insert(at, byte),
                _ if at < b.len() => {
                    b.remove(at);
                }
                _ => {}
            }
        }
        b
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_completion(&body, 64);
        }

        #[test]
        fn mutated_valid_bodies_never_panic(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<u8>()), 1..12)
        ) {
            let _ = parse_completion(&mutate(VALID.as_bytes(), &edits), 64);
        }

        #[test]
        fn numbers_anywhere_never_panic(x in any::<f64>(), key in 0usize..6) {
            let keys = ["max_tokens", "top_k", "seed", "temperature", "top_p", "n"];
            let body = format!(r#"{{"prompt": "a", "{}": {}}}"#, keys[key], x);
            let _ = parse_completion(body.as_bytes(), 64);
        }
    }
}
