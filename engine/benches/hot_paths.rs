//! The engine's per-row and per-message hot paths: CSV parse and validation
//! (target: ≥ 1M rows/s per core on 100-byte rows), routing, and the queue
//! message encoding both ways. `cargo bench -p engine`.

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use engine::config::RoutingRules;
use engine::csv_upload::parse_all;
use engine::domain::{BatchId, MessageBody, MessageKind, OutboundMessage, Priority, SendId};

/// `rows` distinct data rows of exactly 100 bytes each (newline included).
fn campaign_csv(rows: usize) -> Vec<u8> {
    let mut csv = b"email,subject,body,type\n".to_vec();
    for i in 0..rows {
        let mut row = format!("user{i:07}@example.com,Your November statement,Hello, your statement is ready.,campaign");
        // Pad the body to make the row 100 bytes with its newline.
        let pad = 99usize.saturating_sub(row.len());
        row.insert_str(row.len() - ",campaign".len(), &".".repeat(pad));
        debug_assert_eq!(row.len(), 99);
        csv.extend_from_slice(row.as_bytes());
        csv.push(b'\n');
    }
    csv
}

fn csv_parse(c: &mut Criterion) {
    const ROWS: usize = 100_000;
    let csv = campaign_csv(ROWS);
    assert_eq!(csv.len(), 24 + ROWS * 100);
    let check = parse_all(&csv, 64 * 1024).expect("bench CSV parses");
    assert_eq!(check.accepted.len(), ROWS, "every bench row is valid: {:?}", check.rejected.first());

    let mut group = c.benchmark_group("csv");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(20);
    group.bench_function("parse_and_validate_100_byte_rows", |b| {
        b.iter(|| parse_all(std::hint::black_box(&csv), 64 * 1024).expect("parses"))
    });
    group.finish();
}

fn message() -> OutboundMessage {
    OutboundMessage {
        send_id: SendId::new(),
        batch_id: Some(BatchId::new()),
        kind: MessageKind::Campaign,
        priority: Priority::Low,
        recipient: "user0000001@example.com".into(),
        subject: "Your November statement".into(),
        body: MessageBody::Inline {
            text: "Hello, your statement is ready.".into(),
        },
        attachment: None,
        accepted_at: Utc::now(),
    }
}

fn routing_and_encoding(c: &mut Criterion) {
    let rules = RoutingRules::default();
    let kinds = [
        MessageKind::Reminder,
        MessageKind::Offer,
        MessageKind::Subscription,
        MessageKind::Campaign,
    ];
    let mut group = c.benchmark_group("message");
    group.throughput(Throughput::Elements(kinds.len() as u64));
    group.bench_function("route", |b| {
        b.iter(|| {
            kinds
                .iter()
                .map(|k| rules.route(std::hint::black_box(*k), None).index())
                .sum::<usize>()
        })
    });
    group.throughput(Throughput::Elements(1));
    let encoded = message().encode();
    group.bench_function("encode", |b| {
        b.iter_batched(message, |m| m.encode(), BatchSize::SmallInput)
    });
    group.bench_function("decode", |b| {
        b.iter(|| OutboundMessage::decode(std::hint::black_box(&encoded)).expect("decodes"))
    });
    group.finish();
}

criterion_group!(benches, csv_parse, routing_and_encoding);
criterion_main!(benches);
