//! Loading a 1M-interaction RecBole atomic file: parse, remap ids, sort each user's events by
//! time and build the flat sequences. The file is generated once per run (seeded).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pulserec::data::{load, synthetic::write_atomic_inter};

fn bench_load(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bench.inter");
    write_atomic_inter(&path, 50_000, 20_000, 1_000_000, 7).expect("write the synthetic file");
    let mut group = c.benchmark_group("data");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1_000_000));
    group.bench_function("load_atomic_1M/cpu", |b| {
        b.iter(|| load(&path).expect("load"));
    });
    group.finish();
}

criterion_group!(benches, bench_load);
criterion_main!(benches);
