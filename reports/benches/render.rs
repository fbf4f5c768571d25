//! Report rendering and comparison from a real results file. `cargo bench -p reports`.

use criterion::{criterion_group, criterion_main, Criterion};
use reports::compare::{compare, Tolerances};
use reports::results::RunResults;

fn fixture() -> RunResults {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ses-throttle.results.json");
    RunResults::load(&path).expect("fixture loads")
}

fn rendering(c: &mut Criterion) {
    let results = fixture();
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ses-throttle.results.json"),
    )
    .unwrap();
    let comparison = compare(
        std::slice::from_ref(&results),
        std::slice::from_ref(&results),
        &Tolerances::default(),
    )
    .unwrap();
    let mut group = c.benchmark_group("report");
    group.bench_function("load_results_json", |b| {
        b.iter(|| RunResults::parse(std::hint::black_box(&text), std::path::Path::new("r.json")).unwrap())
    });
    group.bench_function("render_html", |b| {
        b.iter(|| reports::html::render(std::hint::black_box(&results), Some(&comparison)))
    });
    group.bench_function("render_markdown", |b| {
        b.iter(|| reports::markdown::render(std::hint::black_box(&results), Some(&comparison)))
    });
    group.bench_function("compare", |b| {
        b.iter(|| {
            compare(
                std::hint::black_box(std::slice::from_ref(&results)),
                std::slice::from_ref(&results),
                &Tolerances::default(),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, rendering);
criterion_main!(benches);
