//! SLM runtime benchmarks: one decode step at batch 1 and 8, and a 256-token prefill, on the
//! SmolLM2-135M-Instruct Q4_1 GGUF (`$PULSEREC_ASSETS/smollm2/...`, default `assets/`).
//!
//! `cargo bench --bench slm`; the bench ids name the device and weight mode, and criterion
//! reports throughput in tokens.

use std::hint::black_box;
use std::path::PathBuf;

use burn::tensor::Device;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pulserec_slm::{LoadOptions, Slm, WeightMode};

fn model_path() -> Option<PathBuf> {
    let root = std::env::var_os("PULSEREC_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets"));
    let p = root.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    p.exists().then_some(p)
}

fn bench(c: &mut Criterion) {
    let Some(path) = model_path() else {
        eprintln!("slm bench skipped: SmolLM2 GGUF not found (run `cargo xtask assets`)");
        return;
    };
    let device = Device::flex();
    for (mode, label) in [(WeightMode::Auto, "quantised"), (WeightMode::Dense, "f32")] {
        let opts = LoadOptions {
            weights: mode,
            max_batch: 32,
            ..LoadOptions::default()
        };
        let slm = Slm::load_with(&path, &device, &opts).expect("load model");
        let m = slm.model();
        // A fixed 64-token prompt of ordinary ids.
        let prompt: Vec<u32> = (0..64).map(|i| 300 + (i * 37) % 20_000).collect();
        let mut group = c.benchmark_group(format!("slm/flex/{label}"));
        group.sample_size(20);
        for batch in [1usize, 8] {
            let tokens: Vec<u32> = prompt.iter().copied().cycle().take(64 * batch).collect();
            let mut cache = m.new_cache(batch);
            m.forward(&tokens, batch, &vec![0; batch], &mut cache)
                .expect("prefill");
            let step: Vec<u32> = vec![504; batch];
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_function(format!("decode_step/b{batch}"), |b| {
                b.iter(|| {
                    let mut c = cache.clone();
                    let h = m.forward(&step, batch, &[], &mut c).expect("decode");
                    black_box(m.last_logits(h).expect("logits"))
                })
            });
        }
        let long: Vec<u32> = (0..256).map(|i| 300 + (i * 37) % 20_000).collect();
        group.throughput(Throughput::Elements(256));
        group.sample_size(10);
        group.bench_function("prefill/256", |b| {
            b.iter(|| {
                let mut c = m.new_cache(1);
                let h = m.forward(&long, 1, &[0], &mut c).expect("prefill");
                black_box(m.last_logits(h).expect("logits"))
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
