//! The engine's per-row and per-message hot paths: CSV parse and validation
//! (target: ≥ 1M rows/s per core on 100-byte rows), routing, and the queue
//! message encoding both ways. `cargo bench -p engine`.

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use engine::config::RoutingRules;
use engine::domain::{BatchId, MessageBody, MessageKind, OutboundMessage, Priority, SendId};

mod support;

// As in the engine and loadtest binaries (see `csv_system_allocator` for glibc's malloc).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn csv_parse(c: &mut Criterion) {
    support::bench_csv_parse(c, "parse_and_validate_100_byte_rows");
}

fn message() -> OutboundMessage {
    OutboundMessage {
        send_id: SendId::new(),
        batch_id: Some(BatchId::new()),
        kind: MessageKind::Campaign,
        priority: Priority::Low,
        recipient: engine::domain::EmailAddress::parse("user0000001@example.com").unwrap(),
        subject: "Your November statement".into(),
        body: MessageBody::Inline {
            text: "Hello: your statement is ready.".into(),
        },
        attachment: None,
        accepted_at: Utc::now(),
        copy_id: Default::default(),
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
