//! Pipeline counters and latency histograms.
//!
//! Two readers, one set of figures: `GET /metrics` encodes them as Prometheus
//! text with `prometheus-client`, and `GET /stats` serves the same counters as
//! a typed [`vocabulary::stats::Snapshot`] (JSON) for the TUI and loadtest.
//! Latencies are also kept in HDR histograms, which give loadtest its exact
//! percentiles.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram as Buckets;
use prometheus_client::registry::Registry;
use vocabulary::stats::{Budget, Counters, Depth, Ingest, Latency, Snapshot};
use vocabulary::{PerPriority, QueueRef};

use crate::domain::{Priority, Stage};

/// Latency buckets (seconds) for the Prometheus histograms.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
/// Accepted→SENT quantiles exported as gauges (from the HDR histograms).
const QUANTILES: [f64; 4] = [0.5, 0.95, 0.99, 0.999];

/// One label, e.g. `priority="high"`.
type Label = [(&'static str, &'static str); 1];
type BucketFamily = Family<Label, Buckets, fn() -> Buckets>;

fn label(key: &'static str, value: &'static str) -> Label {
    [(key, value)]
}

fn buckets() -> Buckets {
    Buckets::new(BUCKETS)
}

/// The per-priority counters, one Prometheus family each.
#[derive(Default)]
struct PriorityCounters {
    enqueued: Family<Label, Counter>,
    sent: Family<Label, Counter>,
    errors: Family<Label, Counter>,
    retries: Family<Label, Counter>,
    dead_lettered: Family<Label, Counter>,
}

/// Everything the pipeline counts. Cheap to update from many tasks.
pub struct Metrics {
    registry: Registry,
    accepted: Counter,
    rejected: Counter,
    duplicates: Counter,
    redeliveries_skipped: Counter,
    undecodable: Counter,
    ingested_rows: Counter,
    batches_in_progress: Gauge,
    /// The senders' send budget, sends/s (0: no rate limit known).
    send_budget: Gauge<f64, AtomicU64>,
    budget: Mutex<Budget>,
    by_priority: PriorityCounters,
    latency_buckets: BucketFamily,
    handling_buckets: BucketFamily,
    stage_buckets: BucketFamily,
    quantiles: Family<[(&'static str, String); 2], Gauge<f64, AtomicU64>>,
    queue_depth: Family<[(&'static str, &'static str); 2], Gauge>,
    /// Microseconds from acceptance to SENT, one histogram per priority.
    latency: PerPriority<Mutex<Histogram<u64>>>,
    /// Microseconds a sender spent on a message, from its claim to SENT
    /// recorded: the per-message service time, with no queueing in it.
    handling: PerPriority<Mutex<Histogram<u64>>>,
    /// Microseconds per step of handling a message, one histogram per [`Stage`].
    stages: [Mutex<Histogram<u64>>; 4],
}

impl Default for Metrics {
    fn default() -> Self {
        let histogram = || Mutex::new(duration_histogram());
        let mut metrics = Self {
            registry: Registry::default(),
            accepted: Counter::default(),
            rejected: Counter::default(),
            duplicates: Counter::default(),
            redeliveries_skipped: Counter::default(),
            undecodable: Counter::default(),
            ingested_rows: Counter::default(),
            batches_in_progress: Gauge::default(),
            send_budget: Gauge::default(),
            budget: Mutex::new(Budget::default()),
            by_priority: PriorityCounters::default(),
            latency_buckets: Family::new_with_constructor(buckets),
            handling_buckets: Family::new_with_constructor(buckets),
            stage_buckets: Family::new_with_constructor(buckets),
            quantiles: Family::default(),
            queue_depth: Family::default(),
            latency: PerPriority::from_fn(|_| histogram()),
            handling: PerPriority::from_fn(|_| histogram()),
            stages: [histogram(), histogram(), histogram(), histogram()],
        };
        metrics.register();
        metrics
    }
}

impl Metrics {
    /// Names every metric in the registry (counters get `_total` appended).
    fn register(&mut self) {
        let r = &mut self.registry;
        r.register(
            "courier_messages_accepted",
            "Messages accepted by the ingest API.",
            self.accepted.clone(),
        );
        r.register(
            "courier_rows_rejected",
            "Uploaded rows rejected as invalid.",
            self.rejected.clone(),
        );
        r.register(
            "courier_rows_duplicate",
            "Uploaded rows skipped as duplicates within their file.",
            self.duplicates.clone(),
        );
        r.register(
            "courier_redeliveries_skipped",
            "Redelivered messages deleted without sending because they were already final.",
            self.redeliveries_skipped.clone(),
        );
        r.register(
            "courier_ingest_rows",
            "Campaign rows recorded PENDING and enqueued by background batch processing (rate() gives rows/s).",
            self.ingested_rows.clone(),
        );
        r.register(
            "courier_batches_in_progress",
            "Campaign batches received and not yet DONE or FAILED.",
            self.batches_in_progress.clone(),
        );
        r.register(
            "courier_messages_undecodable",
            "Queue messages whose body could not be decoded.",
            self.undecodable.clone(),
        );
        let c = &self.by_priority;
        r.register(
            "courier_messages_enqueued",
            "Messages put on a priority queue.",
            c.enqueued.clone(),
        );
        r.register(
            "courier_messages_sent",
            "Messages the mail provider accepted.",
            c.sent.clone(),
        );
        r.register("courier_send_errors", "Messages that ended in ERROR.", c.errors.clone());
        r.register(
            "courier_send_retries",
            "Sends put back on their queue to retry (throttling, transient failures).",
            c.retries.clone(),
        );
        r.register(
            "courier_messages_dead_lettered",
            "Messages found on a dead-letter queue and marked ERROR.",
            c.dead_lettered.clone(),
        );
        r.register(
            "courier_accepted_to_sent_seconds",
            "Time from acceptance by the API to SENT.",
            self.latency_buckets.clone(),
        );
        r.register(
            "courier_send_handling_seconds",
            "Time a sender spent on a message, from its claim to SENT recorded.",
            self.handling_buckets.clone(),
        );
        r.register(
            "courier_send_stage_seconds",
            "Time of each step of handling a message: claim, content, send, record.",
            self.stage_buckets.clone(),
        );
        r.register(
            "courier_accepted_to_sent_quantile_seconds",
            "Accepted-to-SENT latency quantiles from an HDR histogram (3 significant figures).",
            self.quantiles.clone(),
        );
        r.register(
            "courier_send_budget_per_second",
            "Sends per second the senders may spend now (paced to SES's rate; 0: no limit known).",
            self.send_budget.clone(),
        );
        r.register(
            "courier_queue_messages",
            "Messages in each queue (GetQueueAttributes at scrape time).",
            self.queue_depth.clone(),
        );
    }

    pub fn record_upload(&self, accepted: usize, rejected: usize, duplicates: usize) {
        self.accepted.inc_by(accepted as u64);
        self.rejected.inc_by(rejected as u64);
        self.duplicates.inc_by(duplicates as u64);
    }

    pub fn record_enqueued(&self, priority: Priority, count: usize) {
        self.by_priority
            .enqueued
            .get_or_create(&of(priority))
            .inc_by(count as u64);
    }

    /// A message SENT `latency` after its acceptance, `handling` after its claim.
    pub fn record_sent(&self, priority: Priority, latency: Duration, handling: Duration) {
        self.by_priority.sent.get_or_create(&of(priority)).inc();
        self.latency_buckets
            .get_or_create(&of(priority))
            .observe(latency.as_secs_f64());
        self.handling_buckets
            .get_or_create(&of(priority))
            .observe(handling.as_secs_f64());
        record_duration(&mut self.latency[priority].lock().expect("histogram lock"), latency);
        record_duration(&mut self.handling[priority].lock().expect("histogram lock"), handling);
    }

    /// One step of handling a message took `elapsed` (every attempt, whatever its outcome).
    pub fn record_stage(&self, stage: Stage, elapsed: Duration) {
        let stage_label = label("stage", stage.as_str());
        self.stage_buckets
            .get_or_create(&stage_label)
            .observe(elapsed.as_secs_f64());
        record_duration(&mut self.stages[stage.index()].lock().expect("histogram lock"), elapsed);
    }

    /// Times of one handling step so far, in microseconds.
    pub fn stage_histogram(&self, stage: Stage) -> Histogram<u64> {
        self.stages[stage.index()].lock().expect("histogram lock").clone()
    }

    /// Claim→SENT handling times so far at `priority`, in microseconds.
    pub fn handling_histogram(&self, priority: Priority) -> Histogram<u64> {
        self.handling[priority].lock().expect("histogram lock").clone()
    }

    pub fn record_error(&self, priority: Priority) {
        self.by_priority.errors.get_or_create(&of(priority)).inc();
    }

    pub fn record_retry(&self, priority: Priority) {
        self.by_priority.retries.get_or_create(&of(priority)).inc();
    }

    pub fn record_dead_lettered(&self, priority: Priority) {
        self.by_priority.dead_lettered.get_or_create(&of(priority)).inc();
    }

    pub fn record_redelivery_skipped(&self) {
        self.redeliveries_skipped.inc();
    }

    /// Rows of a batch recorded and enqueued in the background.
    pub fn record_ingested(&self, rows: usize) {
        self.ingested_rows.inc_by(rows as u64);
    }

    /// A batch starts (+1) or ends (-1) its background processing.
    pub fn batch_in_progress(&self, change: i64) {
        self.batches_in_progress.inc_by(change);
    }

    /// The send budget as the dispatcher holds it now.
    pub fn record_budget(&self, budget: Budget) {
        self.send_budget.set(budget.rate_per_sec.unwrap_or(0.0));
        *self.budget.lock().expect("budget lock") = budget;
    }

    pub fn record_undecodable(&self) {
        self.undecodable.inc();
    }

    pub fn redeliveries_skipped(&self) -> u64 {
        self.redeliveries_skipped.get()
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.get()
    }

    pub fn counts(&self, priority: Priority) -> Counters {
        let read = |family: &Family<Label, Counter>| family.get_or_create(&of(priority)).get();
        let c = &self.by_priority;
        Counters {
            enqueued: read(&c.enqueued),
            sent: read(&c.sent),
            errors: read(&c.errors),
            retries: read(&c.retries),
            dead_lettered: read(&c.dead_lettered),
        }
    }

    /// Accepted→SENT latency so far at `priority`, in milliseconds.
    pub fn latency(&self, priority: Priority) -> Latency {
        let histogram = self.latency[priority].lock().expect("latency histogram lock");
        if histogram.is_empty() {
            return Latency::default();
        }
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            count: histogram.len(),
            p50: ms(0.5),
            p95: ms(0.95),
            p99: ms(0.99),
        }
    }

    /// The counters and latencies as one typed reading; the caller adds queue depths.
    pub fn snapshot(&self, queues: std::collections::BTreeMap<QueueRef, Depth>) -> Snapshot {
        Snapshot {
            latency: PerPriority::from_fn(|p| self.latency(p)),
            queues,
            ..self.counters()
        }
    }

    /// The counters alone (accepted, and per priority), without reading the
    /// latency histograms: enough for [`Snapshot::finished`] and [`Snapshot::in_pipeline`].
    pub fn counters(&self) -> Snapshot {
        Snapshot {
            accepted: self.accepted(),
            ingest: Ingest {
                rows: self.ingested_rows.get(),
                batches_in_progress: self.batches_in_progress.get().max(0) as u64,
            },
            by_priority: PerPriority::from_fn(|p| self.counts(p)),
            budget: *self.budget.lock().expect("budget lock"),
            ..Snapshot::default()
        }
    }

    /// The Prometheus text exposition of every metric, with the queue depths read at scrape time.
    pub fn render_prometheus(&self, queues: &std::collections::BTreeMap<QueueRef, Depth>) -> String {
        // A queue that could not be read this time is left out, not shown at its last depth.
        self.queue_depth.clear();
        for (queue, depth) in queues {
            for (state, value) in [
                ("visible", depth.visible),
                ("in_flight", depth.in_flight),
                ("delayed", depth.delayed),
            ] {
                let labels = [("queue", queue.as_str()), ("state", state)];
                self.queue_depth.get_or_create(&labels).set(value as i64);
            }
        }
        for priority in Priority::ALL {
            let histogram = self.latency[priority].lock().expect("histogram lock").clone();
            for q in QUANTILES {
                let seconds = if histogram.is_empty() {
                    0.0
                } else {
                    histogram.value_at_quantile(q) as f64 / 1e6
                };
                let labels = [("priority", priority.as_str().to_string()), ("quantile", q.to_string())];
                self.quantiles.get_or_create(&labels).set(seconds);
            }
        }
        let mut text = String::with_capacity(16 * 1024);
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// The label of one priority's series.
fn of(priority: Priority) -> Label {
    label("priority", priority.as_str())
}

/// The longest duration the histograms hold, in microseconds: a week, so
/// that a simulated million-row campaign behind a small SES quota (hours
/// of backlog) is measured, not clipped.
const MAX_MICROS: u64 = 7 * 24 * 3_600_000_000;

/// A histogram of durations in microseconds, 1 µs to a week at 3
/// significant figures (about 250 KiB).
pub fn duration_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Records `elapsed` in microseconds, clamped into [`duration_histogram`]'s range.
pub fn record_duration(histogram: &mut Histogram<u64>, elapsed: Duration) {
    histogram.saturating_record((elapsed.as_micros() as u64).clamp(1, MAX_MICROS));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix} in\n{text}"))
    }

    #[test]
    fn counters_and_latency_show_up_in_the_exposition() {
        let metrics = Metrics::default();
        metrics.record_upload(5, 2, 1);
        metrics.record_enqueued(Priority::Low, 5);
        for ms in [10, 20, 30, 40, 2_000] {
            metrics.record_sent(Priority::Low, Duration::from_millis(ms), Duration::from_millis(ms / 10));
        }
        metrics.record_retry(Priority::High);
        let depths = [(
            QueueRef::Main(Priority::Low),
            Depth {
                visible: 42,
                in_flight: 7,
                delayed: 0,
            },
        )]
        .into();
        let text = metrics.render_prometheus(&depths);
        assert_eq!(
            line(&text, "courier_messages_accepted_total "),
            "courier_messages_accepted_total 5"
        );
        assert_eq!(
            line(&text, "courier_messages_sent_total{priority=\"low\"}"),
            "courier_messages_sent_total{priority=\"low\"} 5"
        );
        assert_eq!(
            line(&text, "courier_send_retries_total{priority=\"high\"}"),
            "courier_send_retries_total{priority=\"high\"} 1"
        );
        assert!(
            text.contains("courier_accepted_to_sent_seconds_bucket{le=\"0.025\",priority=\"low\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("courier_accepted_to_sent_seconds_bucket{le=\"1.0\",priority=\"low\"} 4\n"));
        assert!(text.contains("courier_accepted_to_sent_seconds_count{priority=\"low\"} 5\n"));
        assert!(text.contains("courier_queue_messages{queue=\"low\",state=\"in_flight\"} 7\n"));
        let p50: f64 = line(
            &text,
            "courier_accepted_to_sent_quantile_seconds{priority=\"low\",quantile=\"0.5\"}",
        )
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
        assert!((p50 - 0.030).abs() < 0.001, "p50 {p50}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn the_typed_reading_carries_the_same_counts() {
        let metrics = Metrics::default();
        metrics.record_upload(3, 0, 0);
        metrics.record_sent(Priority::High, Duration::from_millis(50), Duration::from_millis(5));
        metrics.record_error(Priority::Medium);
        let snapshot = metrics.snapshot(Default::default());
        assert_eq!(snapshot.accepted, 3);
        assert_eq!(snapshot.by_priority[Priority::High].sent, 1);
        assert_eq!(snapshot.by_priority[Priority::Medium].errors, 1);
        assert_eq!(snapshot.latency[Priority::High].count, 1);
        assert_eq!(snapshot.in_pipeline(), 1);
    }
}
