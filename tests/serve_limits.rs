//! The completion server under bad input, overload and shutdown, over real loopback sockets:
//! client mistakes are 4xx naming the field, a full queue is 429 with `Retry-After`, a late
//! answer is 503, a generator panic is 500 and the server serves on, shutdown lets requests in
//! flight finish, and no bytes a client sends can stop it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use pulserec::serve::{CompletionServer, ServeConfig, TokenCounter};
use pulserec_core::{FinishReason, Generation, GenerationRequest, TextGenerator};

/// Answers each prompt with itself; panics on the prompt `panic`, refuses `invalid` as invalid
/// input; records each call's batch size; with a gate, tells `started` when a call begins and
/// waits for a token on `go` before answering.
struct Gated {
    started: Option<mpsc::Sender<String>>,
    go: Option<Arc<Mutex<mpsc::Receiver<()>>>>,
    calls: Arc<Mutex<Vec<usize>>>,
}

impl Gated {
    fn open() -> Self {
        Self {
            started: None,
            go: None,
            calls: Arc::default(),
        }
    }

    /// A generator that waits for `go` on each call, and the channels that drive it.
    fn held() -> (Self, mpsc::Receiver<String>, mpsc::Sender<()>) {
        let (started, started_rx) = mpsc::channel();
        let (go_tx, go) = mpsc::channel();
        let g = Self {
            started: Some(started),
            go: Some(Arc::new(Mutex::new(go))),
            calls: Arc::default(),
        };
        (g, started_rx, go_tx)
    }
}

impl TextGenerator for Gated {
    fn generate(
        &mut self,
        requests: &[GenerationRequest],
    ) -> pulserec_core::Result<Vec<Generation>> {
        self.calls.lock().unwrap().push(requests.len());
        if requests.iter().any(|r| r.prompt == "panic") {
            panic!("asked to panic");
        }
        if requests.iter().any(|r| r.prompt == "invalid") {
            return Err(pulserec_core::Error::InvalidInput("asked to refuse".into()));
        }
        if let Some(s) = &self.started {
            let _ = s.send(requests[0].prompt.clone());
        }
        if let Some(go) = &self.go {
            let _ = go.lock().unwrap().recv_timeout(Duration::from_secs(20));
        }
        Ok(requests
            .iter()
            .map(|r| Generation {
                text: r.prompt.clone(),
                token_ids: vec![1],
                logprobs: vec![-0.1],
                finish: FinishReason::Stop,
            })
            .collect())
    }
}

/// One token per character, context 64.
struct Chars;

impl TokenCounter for Chars {
    fn context_length(&self) -> usize {
        64
    }
    fn count_within(&self, text: &str, limit: usize) -> Result<Option<usize>, String> {
        let n = text.chars().count();
        Ok((n <= limit).then_some(n))
    }
}

/// A raw HTTP/1.1 exchange: the status, the headers (lower-cased names) and the body.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn param(&self) -> serde_json::Value {
        self.json()["error"]["param"].clone()
    }
}

/// Sends `head` (and `body`) with `Connection: close` and reads the answer to the end.
fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> Answer {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (and close) before taking all of a body it refuses.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .expect("an answer before the read timeout");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete HTTP answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_string(),
    }
}

fn post(addr: SocketAddr, json: &serde_json::Value) -> Answer {
    let body = json.to_string();
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    exchange(addr, &head, body.as_bytes())
}

/// Longest a test waits for the generator to be called.
const WAIT: Duration = Duration::from_secs(10);

/// Posts `prompt` from a thread of its own.
fn send(addr: SocketAddr, prompt: &'static str) -> std::thread::JoinHandle<Answer> {
    std::thread::spawn(move || post(addr, &serde_json::json!({"prompt": prompt})))
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    exchange(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        b"",
    )
}

/// Polls `/health` until `n` requests wait in the queue.
fn wait_for_queue(addr: SocketAddr, n: u64) {
    for _ in 0..500 {
        if get(addr, "/health").json()["waiting"] == n {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{n} requests never reached the queue");
}

fn start(generator: Gated, config: ServeConfig) -> CompletionServer {
    CompletionServer::start("127.0.0.1:0", "test", generator, config).unwrap()
}

#[test]
fn oversized_bodies_are_413_before_they_are_read() {
    let config = ServeConfig {
        max_body_bytes: 1000,
        ..ServeConfig::default()
    };
    let server = start(Gated::open(), config);
    // A declared gigabyte, none of it sent: answered at once, not after waiting for it.
    let a = exchange(
        server.addr(),
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000\r\n\r\n",
        b"",
    );
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(a.param(), "body");
    assert!(a.body.contains("1000 bytes"), "{}", a.body);
    // Chunked, so the size is only known while reading: cut off at the limit.
    let chunk = "x".repeat(600);
    let chunked = format!("258\r\n{chunk}\r\n258\r\n{chunk}\r\n0\r\n\r\n");
    let a = exchange(
        server.addr(),
        "POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n",
        chunked.as_bytes(),
    );
    assert_eq!(a.status, 413, "{}", a.body);
    // Within the limit, the same server answers.
    let a = post(server.addr(), &serde_json::json!({"prompt": "hi"}));
    assert_eq!(
        (a.status, a.json()["choices"][0]["text"].as_str()),
        (200, Some("hi"))
    );
}

#[test]
fn prompts_and_max_tokens_past_the_context_are_400_naming_the_field() {
    let config = ServeConfig {
        tokens: Some(Arc::new(Chars)),
        max_request_tokens: 100,
        max_prompts: 3,
        ..ServeConfig::default()
    };
    let server = start(Gated::open(), config);
    let addr = server.addr();
    let a = post(
        addr,
        &serde_json::json!({"prompt": "hi", "max_tokens": 100_000_000}),
    );
    assert_eq!(
        (a.status, a.param()),
        (400, "max_tokens".into()),
        "{}",
        a.body
    );
    assert!(a.body.contains("context of 64 tokens"), "{}", a.body);
    let a = post(
        addr,
        &serde_json::json!({"prompt": "x".repeat(65), "max_tokens": 0}),
    );
    assert_eq!((a.status, a.param()), (400, "prompt".into()), "{}", a.body);
    let a = post(addr, &serde_json::json!({"prompt": "", "max_tokens": 1}));
    assert_eq!((a.status, a.param()), (400, "prompt".into()), "{}", a.body);
    // Three prompts of 40 + 10 tokens: 150 > the request budget of 100.
    let p = "y".repeat(40);
    let a = post(
        addr,
        &serde_json::json!({"prompt": [p, p, p], "max_tokens": 10}),
    );
    assert_eq!((a.status, a.param()), (400, "prompt".into()), "{}", a.body);
    let a = post(addr, &serde_json::json!({"prompt": ["a", "b", "c", "d"]}));
    assert_eq!((a.status, a.param()), (400, "prompt".into()), "{}", a.body);
    let a = post(
        addr,
        &serde_json::json!({"prompt": "x".repeat(54), "max_tokens": 10}),
    );
    assert_eq!(a.status, 200, "{}", a.body);
}

#[test]
fn unknown_routes_and_methods() {
    let server = start(Gated::open(), ServeConfig::default());
    assert_eq!(get(server.addr(), "/health").status, 200);
    assert_eq!(get(server.addr(), "/v1/chat").status, 404);
    assert_eq!(get(server.addr(), "/v1/completions").status, 405);
}

#[test]
fn a_full_queue_is_429_with_retry_after_and_every_accepted_request_is_answered() {
    let (generator, started, go) = Gated::held();
    let config = ServeConfig {
        queue: 1,
        ..ServeConfig::default()
    };
    let server = start(generator, config);
    let addr = server.addr();
    let send = |prompt: &'static str| send(addr, prompt);
    let first = send("first");
    assert_eq!(started.recv_timeout(WAIT).unwrap(), "first");
    let second = send("second");
    wait_for_queue(addr, 1);
    let third = post(addr, &serde_json::json!({"prompt": "third"}));
    assert_eq!(third.status, 429, "{}", third.body);
    let retry: u64 = third.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry));
    go.send(()).unwrap();
    go.send(()).unwrap();
    let a = first.join().unwrap();
    assert_eq!(
        (a.status, a.json()["choices"][0]["text"].clone()),
        (200, "first".into())
    );
    let b = second.join().unwrap();
    assert_eq!(
        (b.status, b.json()["choices"][0]["text"].clone()),
        (200, "second".into())
    );
}

#[test]
fn waiting_requests_share_one_generate_call_and_an_invalid_one_fails_alone() {
    let (generator, started, go) = Gated::held();
    let calls = Arc::clone(&generator.calls);
    let server = start(generator, ServeConfig::default());
    let addr = server.addr();
    let send = |prompt: &'static str| send(addr, prompt);
    let first = send("first");
    assert_eq!(started.recv_timeout(WAIT).unwrap(), "first");
    let waiting = [send("a"), send("b"), send("invalid")];
    // The three wait in the queue while the first call is held.
    wait_for_queue(addr, 3);
    for _ in 0..5 {
        go.send(()).unwrap();
    }
    assert_eq!(first.join().unwrap().status, 200);
    let answers: Vec<Answer> = waiting.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(answers[0].json()["choices"][0]["text"], "a");
    assert_eq!(answers[1].json()["choices"][0]["text"], "b");
    assert_eq!(
        (answers[2].status, answers[2].param()),
        (400, "prompt".into())
    );
    // The first call alone; then the three together (refused as a whole), then each alone.
    assert_eq!(*calls.lock().unwrap(), [1, 3, 1, 1, 1]);
}

#[test]
fn a_late_answer_is_503_with_retry_after() {
    let (generator, started, go) = Gated::held();
    let config = ServeConfig {
        request_timeout: Duration::from_millis(300),
        ..ServeConfig::default()
    };
    let server = start(generator, config);
    let a = post(server.addr(), &serde_json::json!({"prompt": "slow"}));
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.header("retry-after").is_some());
    assert_eq!(started.recv().unwrap(), "slow");
    go.send(()).unwrap();
}

#[test]
fn a_generator_panic_is_500_and_the_server_serves_on() {
    // No time limit to speak of: printing the panic's backtrace can take a while.
    let server = start(Gated::open(), ServeConfig::default());
    let a = post(server.addr(), &serde_json::json!({"prompt": "panic"}));
    assert_eq!(a.status, 500, "{}", a.body);
    assert_eq!(a.json()["error"]["type"], "server_error");
    let a = post(server.addr(), &serde_json::json!({"prompt": "after"}));
    assert_eq!(a.status, 200, "{}", a.body);
}

#[test]
fn shutdown_lets_requests_in_flight_finish_then_refuses_connections() {
    let (generator, started, go) = Gated::held();
    let server = start(generator, ServeConfig::default());
    let addr = server.addr();
    let client = std::thread::spawn(move || post(addr, &serde_json::json!({"prompt": "inflight"})));
    assert_eq!(started.recv_timeout(WAIT).unwrap(), "inflight");
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        go.send(()).unwrap();
    });
    server.shutdown(Duration::from_secs(10));
    let a = client.join().unwrap();
    assert_eq!(
        (a.status, a.json()["choices"][0]["text"].clone()),
        (200, "inflight".into())
    );
    release.join().unwrap();
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
}

#[test]
fn shutdown_past_its_grace_answers_the_waiting_with_503() {
    let (generator, started, go) = Gated::held();
    let server = start(generator, ServeConfig::default());
    let addr = server.addr();
    let client = std::thread::spawn(move || {
        let a = post(addr, &serde_json::json!({"prompt": "stuck"}));
        // Only now let the generator finish, so the server's stop can join it.
        go.send(()).unwrap();
        a
    });
    assert_eq!(started.recv_timeout(WAIT).unwrap(), "stuck");
    server.shutdown(Duration::from_millis(200));
    let a = client.join().unwrap();
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.body.contains("shutting down"), "{}", a.body);
}

#[test]
fn the_server_can_be_dropped_inside_an_async_runtime() {
    let server = start(Gated::open(), ServeConfig::default());
    let addr = server.addr();
    assert_eq!(get(addr, "/health").status, 200);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime.block_on(async move { drop(server) });
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Whatever bytes arrive on a connection, the server answers or closes it, and keeps serving.
    #[test]
    fn arbitrary_bytes_on_the_socket_leave_the_server_serving(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        prefix in 0usize..3,
    ) {
        let config = ServeConfig {
            read_timeout: Duration::from_millis(300),
            max_body_bytes: 512,
            ..ServeConfig::default()
        };
        let server = start(Gated::open(), config);
        let heads = ["", "POST /v1/completions HTTP/1.1\r\n", "POST /v1/completions HTTP/1.1\r\nContent-Length: 40\r\n\r\n"];
        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(heads[prefix].as_bytes());
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        prop_assert_eq!(get(server.addr(), "/health").status, 200);
    }
}
