//! Results aggregation: folding per-worker latency histograms into one and
//! reading the percentiles, as a run does at its end. `cargo bench -p loadtest`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use engine::domain::Priority;
use loadtest::latency::LatencyByPriority;

/// One worker's histograms: `samples` latencies spread over 1 ms – 30 s.
fn worker(samples: u64, seed: u64) -> LatencyByPriority {
    let mut latency = LatencyByPriority::default();
    let mut state = seed;
    for i in 0..samples {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let micros = 1_000 + (state >> 33) % 30_000_000;
        latency.record(Priority::ALL[(i % 3) as usize], micros);
    }
    latency
}

fn merges(c: &mut Criterion) {
    const WORKERS: usize = 16;
    let workers: Vec<LatencyByPriority> = (0..WORKERS as u64).map(|w| worker(50_000, w + 1)).collect();
    let mut group = c.benchmark_group("aggregation");
    group.throughput(Throughput::Elements(WORKERS as u64));
    group.bench_function("merge_16_workers_and_summarise", |b| {
        b.iter(|| {
            let mut all = LatencyByPriority::default();
            for w in &workers {
                all.merge(w);
            }
            all.summary()
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("record_one_latency", |b| {
        let mut latency = LatencyByPriority::default();
        let mut micros = 1_000u64;
        b.iter(|| {
            micros = micros.wrapping_mul(31).wrapping_add(7) % 30_000_000 + 1;
            latency.record(Priority::Medium, std::hint::black_box(micros));
        })
    });
    group.finish();
}

criterion_group!(benches, merges);
criterion_main!(benches);
