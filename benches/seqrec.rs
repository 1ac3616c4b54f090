//! SASRec benches: one training step (batch 128, length 50, paper config, BCE) and full-ranking
//! evaluation throughput (users/s) on a 17k-item catalogue. The device is named in the bench id.

use std::hint::black_box;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::Device;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pulserec_core::{ItemId, UserId};
use pulserec_seqrec::batch::train_batch;
use pulserec_seqrec::loss::batch_loss;
use pulserec_seqrec::{EvalCase, EvalOptions, LossKind, SasRecConfig, evaluate_full};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

const N_ITEMS: usize = 17_000;

fn sequences(users: usize, len: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<ItemId>> {
    (0..users)
        .map(|_| {
            (0..len)
                .map(|_| ItemId(rng.random_range(1..=N_ITEMS as u32)))
                .collect()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let device = Device::flex();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut dropout = ChaCha8Rng::seed_from_u64(1);
    let config = SasRecConfig::paper(N_ITEMS);

    let ad = device.clone().autodiff();
    let mut model = config.init(&ad).expect("valid config");
    let mut optim = AdamConfig::new().with_beta_2(0.98).init();
    let seqs = sequences(128, 51, &mut rng);
    let refs: Vec<&[ItemId]> = seqs.iter().map(|s| &s[..]).collect();
    let mut group = c.benchmark_group("sasrec");
    group.sample_size(20);
    group.throughput(Throughput::Elements(128));
    group.bench_function("train_step/b128_l50/flex", |b| {
        b.iter(|| {
            let batch = train_batch(&refs, 50, N_ITEMS, &mut rng);
            let loss = batch_loss(&model, &batch, LossKind::Bce, None, Some(&mut dropout), &ad);
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optim.step(1e-3, model.clone(), grads);
        })
    });

    let eval_model = model.valid();
    let histories = sequences(1024, 50, &mut rng);
    let cases: Vec<EvalCase> = histories
        .iter()
        .enumerate()
        .map(|(u, h)| EvalCase {
            user: UserId(u as u32),
            history: &h[..49],
            target: h[49],
        })
        .collect();
    group.throughput(Throughput::Elements(cases.len() as u64));
    group.bench_function("full_ranking_eval/17k_items/flex", |b| {
        b.iter(|| {
            black_box(
                evaluate_full(&eval_model, &cases, &EvalOptions::default(), &device)
                    .expect("evaluates"),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
