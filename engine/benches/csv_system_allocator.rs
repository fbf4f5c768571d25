//! CSV parse and validation with glibc's malloc, for comparison with
//! `hot_paths` (mimalloc, as the binaries use). `cargo bench -p engine --bench csv_system_allocator`.

use criterion::{criterion_group, criterion_main, Criterion};

mod support;

fn csv_parse(c: &mut Criterion) {
    support::bench_csv_parse(c, "parse_and_validate_100_byte_rows_system_allocator");
}

criterion_group!(benches, csv_parse);
criterion_main!(benches);
