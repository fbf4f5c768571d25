//! Inputs shared by the engine's benches.

/// `rows` distinct data rows of exactly 100 bytes each (newline included),
/// after a 24-byte header.
pub fn campaign_csv(rows: usize) -> Vec<u8> {
    let mut csv = b"email,subject,body,type\n".to_vec();
    for i in 0..rows {
        let mut row =
            format!("user{i:07}@example.com,Your November statement,Hello: your statement is ready.,campaign");
        // Pad the body to make the row 100 bytes with its newline.
        let pad = 99usize.saturating_sub(row.len());
        row.insert_str(row.len() - ",campaign".len(), &".".repeat(pad));
        assert_eq!(row.len(), 99);
        csv.extend_from_slice(row.as_bytes());
        csv.push(b'\n');
    }
    csv
}

pub const ROWS: usize = 100_000;

/// Benchmarks parse and validation of [`ROWS`] rows, in rows per second.
pub fn bench_csv_parse(c: &mut criterion::Criterion, name: &str) {
    let csv = campaign_csv(ROWS);
    assert_eq!(csv.len(), 24 + ROWS * 100);
    let check = engine::csv_upload::parse_all(&csv, 64 * 1024).expect("bench CSV parses");
    assert_eq!(
        check.accepted.len(),
        ROWS,
        "every bench row is valid: {:?}",
        check.rejected.first()
    );

    let mut group = c.benchmark_group("csv");
    group.throughput(criterion::Throughput::Elements(ROWS as u64));
    group.sample_size(20);
    group.bench_function(name, |b| {
        b.iter(|| engine::csv_upload::parse_all(std::hint::black_box(&csv), 64 * 1024).expect("parses"))
    });
    group.finish();
}
