//! Load test of the completion server on loopback: SmolLM2 served in this process, N client
//! threads sending a bounded number of requests each. Three phases: a sustainable load (few
//! clients), an overload (many clients, a short queue: the server sheds with 429), and a flood
//! of large bodies (prompts just under the body limit, and declared bodies far over it). Prints
//! per phase the answers by status, throughput, p50/p99 latency and the process's memory.
//!
//! ```text
//! cargo run --release --example serve_load -- --requests 4 --clients 2 --overload-clients 32
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use pulserec::serve::{CompletionServer, ServeConfig};
use pulserec_core::stats::quantile;
use pulserec_slm::Slm;

#[derive(Parser, Debug)]
#[command(about = "Load test of the completion server on loopback")]
struct Args {
    /// The model (default: the SmolLM2 Q4_1 GGUF asset).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Requests per client in each phase.
    #[arg(long, default_value_t = 4)]
    requests: usize,
    /// Clients of the sustainable phase.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Clients of the overload phase.
    #[arg(long, default_value_t = 32)]
    overload_clients: usize,
    /// Clients of the large-body flood (half send big prompts, half declare huge bodies).
    #[arg(long, default_value_t = 16)]
    flood_clients: usize,
    /// Tokens generated per request.
    #[arg(long, default_value_t = 16)]
    max_tokens: usize,
    /// The server's queue of waiting requests.
    #[arg(long, default_value_t = 4)]
    queue: usize,
    /// Most prompts the server's generator takes into one call (1: one request at a time).
    #[arg(long, default_value_t = 16)]
    batch_prompts: usize,
}

/// One client's view of one request.
struct Sample {
    status: u16,
    latency: Duration,
    tokens: usize,
    retry_after: bool,
}

/// Resident and peak resident memory of this process, in MiB (Linux `/proc/self/status`).
fn memory_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn report(phase: &str, samples: &[Sample], wall: Duration) {
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for s in samples {
        *by_status.entry(s.status).or_default() += 1;
    }
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.status == 200).collect();
    let mut lat_ok: Vec<f64> = ok.iter().map(|s| s.latency.as_secs_f64()).collect();
    lat_ok.sort_by(f64::total_cmp);
    let mut lat_other: Vec<f64> = samples
        .iter()
        .filter(|s| s.status != 200)
        .map(|s| s.latency.as_secs_f64())
        .collect();
    lat_other.sort_by(f64::total_cmp);
    let tokens: usize = ok.iter().map(|s| s.tokens).sum();
    let with_retry = samples
        .iter()
        .filter(|s| s.status == 429 || s.status == 503)
        .filter(|s| s.retry_after)
        .count();
    let (rss, peak) = memory_mib();
    println!(
        "{phase}: {} requests in {:.1} s, by status {:?}; 200s: {:.2} req/s, {:.1} generated tok/s, \
         latency p50 {:.3} s p99 {:.3} s; other answers: p50 {:.4} s p99 {:.4} s, {} of the \
         429/503 with Retry-After; memory {:.0} MiB resident, {:.0} MiB peak",
        samples.len(),
        wall.as_secs_f64(),
        by_status,
        ok.len() as f64 / wall.as_secs_f64(),
        tokens as f64 / wall.as_secs_f64(),
        quantile(&lat_ok, 0.5),
        quantile(&lat_ok, 0.99),
        quantile(&lat_other, 0.5),
        quantile(&lat_other, 0.99),
        with_retry,
        rss,
        peak,
    );
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into()
}

/// Sends one completions request; the answer's status, latency and generated tokens.
fn complete(agent: &ureq::Agent, url: &str, body: &serde_json::Value) -> Sample {
    let t = Instant::now();
    match agent.post(url).send_json(body) {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp.headers().contains_key("retry-after");
            let v: serde_json::Value = resp.into_body().read_json().unwrap_or_default();
            let tokens = v["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize;
            Sample {
                status,
                latency: t.elapsed(),
                tokens,
                retry_after,
            }
        }
        // Transport failure (the server closed on us): status 0.
        Err(_) => Sample {
            status: 0,
            latency: t.elapsed(),
            tokens: 0,
            retry_after: false,
        },
    }
}

/// Declares a body of `bytes` but sends none of it; the status the server answers with.
fn declare_huge(addr: SocketAddr, bytes: usize) -> Sample {
    let t = Instant::now();
    let status = (|| -> std::io::Result<u16> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        write!(
            s,
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {bytes}\r\n\r\n"
        )?;
        let mut head = [0u8; 64];
        let n = s.read(&mut head)?;
        let text = String::from_utf8_lossy(&head[..n]).to_string();
        Ok(text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0))
    })()
    .unwrap_or(0);
    Sample {
        status,
        latency: t.elapsed(),
        tokens: 0,
        retry_after: false,
    }
}

/// Runs `clients` threads, each calling `one(client, request)` `requests` times.
fn phase(
    clients: usize,
    requests: usize,
    one: impl Fn(usize, usize) -> Sample + Sync,
) -> (Vec<Sample>, Duration) {
    let t = Instant::now();
    let samples = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let one = &one;
                s.spawn(move || (0..requests).map(|r| one(c, r)).collect::<Vec<_>>())
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("client thread"))
            .collect()
    });
    (samples, t.elapsed())
}

fn main() -> anyhow::Result<()> {
    pulserec::malloc::tune_malloc();
    pulserec::init_logging("warn");
    let args = Args::parse();
    let model = match args.model {
        Some(m) => m,
        None => pulserec_data::locate::asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
            .context("the SmolLM2 asset is missing: run `cargo xtask assets` or pass --model")?,
    };
    let device = burn::tensor::Device::flex();
    let slm = Slm::load(&model, &device).with_context(|| format!("loading {}", model.display()))?;
    let config = ServeConfig {
        queue: args.queue,
        batch_prompts: args.batch_prompts,
        ..ServeConfig::for_slm(&slm)
    };
    println!("server: {config:?}");
    let server = CompletionServer::start("127.0.0.1:0", "smollm2", slm, config)?;
    let url = format!("{}/v1/completions", server.url());
    let (rss, peak) = memory_mib();
    println!("model loaded: {rss:.0} MiB resident, {peak:.0} MiB peak");

    let prompt = |c: usize, r: usize| {
        serde_json::json!({
            "prompt": format!("<|im_start|>user\nName a video game for player {c}.<|im_end|>\n<|im_start|>assistant\n"),
            "max_tokens": args.max_tokens,
            "temperature": 0.7,
            "seed": 1000 * c + r,
        })
    };
    let agent = agent();
    // Warm-up: the first call pays for allocations and page faults.
    complete(&agent, &url, &prompt(0, 0));

    let (s, wall) = phase(args.clients, args.requests, |c, r| {
        complete(&agent, &url, &prompt(c, r))
    });
    report(
        &format!("sustainable ({} clients x {})", args.clients, args.requests),
        &s,
        wall,
    );

    let (s, wall) = phase(args.overload_clients, args.requests, |c, r| {
        complete(&agent, &url, &prompt(c, r))
    });
    report(
        &format!(
            "overload ({} clients x {}, queue {})",
            args.overload_clients, args.requests, args.queue
        ),
        &s,
        wall,
    );

    // Just under the 4 MiB body limit: read, then refused from its length, untokenised.
    let big = "a video game title ".repeat((4 << 20) / 20);
    let big_body = serde_json::json!({"prompt": big, "max_tokens": 1});
    let (s, wall) = phase(args.flood_clients, args.requests, |c, _| {
        if c % 2 == 0 {
            complete(&agent, &url, &big_body)
        } else {
            declare_huge(server.addr(), 64 << 20)
        }
    });
    report(
        &format!(
            "large-body flood ({} clients x {}: {:.1} MB prompts, 64 MiB declared bodies)",
            args.flood_clients,
            args.requests,
            big.len() as f64 / 1e6
        ),
        &s,
        wall,
    );

    // And the server still answers as before.
    let after = complete(&agent, &url, &prompt(0, 1));
    println!(
        "after the flood: status {} in {:.3} s",
        after.status,
        after.latency.as_secs_f64()
    );
    let t = Instant::now();
    server.shutdown(Duration::from_secs(30));
    println!("graceful shutdown: {:.2} s", t.elapsed().as_secs_f64());
    Ok(())
}
