//! Pipeline counters and accepted→SENT latency histograms, rendered as
//! Prometheus text at `GET /metrics` (read by the TUI and loadtest).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::domain::Priority;

#[derive(Default)]
struct PerPriority {
    enqueued: AtomicU64,
    sent: AtomicU64,
    errors: AtomicU64,
    retries: AtomicU64,
    dead_lettered: AtomicU64,
}

/// Everything the pipeline counts. Cheap to update from many tasks.
pub struct Metrics {
    accepted: AtomicU64,
    rejected: AtomicU64,
    duplicates: AtomicU64,
    redeliveries_skipped: AtomicU64,
    undecodable: AtomicU64,
    per_priority: [PerPriority; 3],
    /// Microseconds from acceptance to SENT, one histogram per priority.
    latency: [Mutex<Histogram<u64>>; 3],
    /// Microseconds a sender spent on a message, from its claim to SENT
    /// recorded: the per-message service time, with no queueing in it.
    handling: [Mutex<Histogram<u64>>; 3],
    /// Microseconds per step of handling a message, one histogram per [`Stage`].
    stages: [Mutex<Histogram<u64>>; 4],
}

/// The steps of handling one message, timed separately so a slowdown can be
/// placed: claiming it in the status table, loading stored content, the
/// provider's send call, and recording SENT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Claim,
    Content,
    Send,
    Record,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Claim, Stage::Content, Stage::Send, Stage::Record];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Claim => "claim",
            Stage::Content => "content",
            Stage::Send => "send",
            Stage::Record => "record",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Latency buckets (seconds) for the Prometheus histogram.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
const QUANTILES: [f64; 4] = [0.5, 0.95, 0.99, 0.999];

/// A per-priority counter: its name, help text, and how to read it.
type CounterFamily = (&'static str, &'static str, fn(&PriorityCounts) -> u64);

impl Default for Metrics {
    fn default() -> Self {
        let histogram = || Mutex::new(duration_histogram());
        Self {
            accepted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            redeliveries_skipped: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
            per_priority: Default::default(),
            latency: [histogram(), histogram(), histogram()],
            handling: [histogram(), histogram(), histogram()],
            stages: [histogram(), histogram(), histogram(), histogram()],
        }
    }
}

/// Counts for one priority, as read back (tests, summaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PriorityCounts {
    pub enqueued: u64,
    pub sent: u64,
    pub errors: u64,
    pub retries: u64,
    pub dead_lettered: u64,
}

impl Metrics {
    pub fn record_upload(&self, accepted: usize, rejected: usize, duplicates: usize) {
        self.accepted.fetch_add(accepted as u64, Ordering::Relaxed);
        self.rejected.fetch_add(rejected as u64, Ordering::Relaxed);
        self.duplicates.fetch_add(duplicates as u64, Ordering::Relaxed);
    }

    pub fn record_enqueued(&self, priority: Priority, count: usize) {
        self.slot(priority).enqueued.fetch_add(count as u64, Ordering::Relaxed);
    }

    /// A message SENT `latency` after its acceptance, `handling` after its claim.
    pub fn record_sent(&self, priority: Priority, latency: Duration, handling: Duration) {
        self.slot(priority).sent.fetch_add(1, Ordering::Relaxed);
        for (histograms, duration) in [(&self.latency, latency), (&self.handling, handling)] {
            record_duration(
                &mut histograms[priority.index()].lock().expect("histogram lock"),
                duration,
            );
        }
    }

    /// One step of handling a message took `elapsed` (every attempt, whatever its outcome).
    pub fn record_stage(&self, stage: Stage, elapsed: Duration) {
        record_duration(&mut self.stages[stage.index()].lock().expect("histogram lock"), elapsed);
    }

    /// Times of one handling step so far, in microseconds.
    pub fn stage_histogram(&self, stage: Stage) -> Histogram<u64> {
        self.stages[stage.index()].lock().expect("histogram lock").clone()
    }

    /// Claim→SENT handling times so far at `priority`, in microseconds.
    pub fn handling_histogram(&self, priority: Priority) -> Histogram<u64> {
        self.handling[priority.index()].lock().expect("histogram lock").clone()
    }

    pub fn record_error(&self, priority: Priority) {
        self.slot(priority).errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_retry(&self, priority: Priority) {
        self.slot(priority).retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_dead_lettered(&self, priority: Priority) {
        self.slot(priority).dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_redelivery_skipped(&self) {
        self.redeliveries_skipped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_undecodable(&self) {
        self.undecodable.fetch_add(1, Ordering::Relaxed);
    }

    pub fn redeliveries_skipped(&self) -> u64 {
        self.redeliveries_skipped.load(Ordering::Relaxed)
    }

    pub fn counts(&self, priority: Priority) -> PriorityCounts {
        let slot = self.slot(priority);
        PriorityCounts {
            enqueued: slot.enqueued.load(Ordering::Relaxed),
            sent: slot.sent.load(Ordering::Relaxed),
            errors: slot.errors.load(Ordering::Relaxed),
            retries: slot.retries.load(Ordering::Relaxed),
            dead_lettered: slot.dead_lettered.load(Ordering::Relaxed),
        }
    }

    /// Accepted→SENT latency so far at priority `p`: (count, p50, p95, p99) in milliseconds.
    pub fn latency_percentiles(&self, priority: Priority) -> (u64, f64, f64, f64) {
        let histogram = self.latency[priority.index()].lock().expect("latency histogram lock");
        if histogram.is_empty() {
            return (0, 0.0, 0.0, 0.0);
        }
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        (histogram.len(), ms(0.5), ms(0.95), ms(0.99))
    }

    fn slot(&self, priority: Priority) -> &PerPriority {
        &self.per_priority[priority.index()]
    }

    /// The Prometheus text exposition of every metric.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}");
        };
        counter(
            "courier_messages_accepted_total",
            "Messages accepted by the ingest API.",
            self.accepted.load(Ordering::Relaxed),
        );
        counter(
            "courier_rows_rejected_total",
            "Uploaded rows rejected as invalid.",
            self.rejected.load(Ordering::Relaxed),
        );
        counter(
            "courier_rows_duplicate_total",
            "Uploaded rows skipped as duplicates within their file.",
            self.duplicates.load(Ordering::Relaxed),
        );
        counter(
            "courier_redeliveries_skipped_total",
            "Redelivered messages deleted without sending because they were already final.",
            self.redeliveries_skipped.load(Ordering::Relaxed),
        );
        counter(
            "courier_messages_undecodable_total",
            "Queue messages whose body could not be decoded.",
            self.undecodable.load(Ordering::Relaxed),
        );

        let per_priority: [CounterFamily; 5] = [
            (
                "courier_messages_enqueued_total",
                "Messages put on a priority queue.",
                |c| c.enqueued,
            ),
            (
                "courier_messages_sent_total",
                "Messages the mail provider accepted.",
                |c| c.sent,
            ),
            ("courier_send_errors_total", "Messages that ended in ERROR.", |c| {
                c.errors
            }),
            (
                "courier_send_retries_total",
                "Sends put back on their queue to retry (throttling, transient failures).",
                |c| c.retries,
            ),
            (
                "courier_messages_dead_lettered_total",
                "Messages found on a dead-letter queue and marked ERROR.",
                |c| c.dead_lettered,
            ),
        ];
        let counts: Vec<(Priority, PriorityCounts)> = Priority::ALL.iter().map(|p| (*p, self.counts(*p))).collect();
        for (name, help, read) in per_priority {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (priority, c) in &counts {
                let _ = writeln!(out, "{name}{{priority=\"{priority}\"}} {}", read(c));
            }
        }

        let by_priority = |histograms: &[Mutex<Histogram<u64>>; 3]| -> Vec<(&'static str, Histogram<u64>)> {
            Priority::ALL
                .iter()
                .map(|p| {
                    (
                        p.as_str(),
                        histograms[p.index()].lock().expect("histogram lock").clone(),
                    )
                })
                .collect()
        };
        write_histogram(
            &mut out,
            "courier_accepted_to_sent_seconds",
            "Time from acceptance by the API to SENT.",
            "priority",
            &by_priority(&self.latency),
        );
        write_histogram(
            &mut out,
            "courier_send_handling_seconds",
            "Time a sender spent on a message, from its claim to SENT recorded.",
            "priority",
            &by_priority(&self.handling),
        );
        let stages: Vec<(&'static str, Histogram<u64>)> = Stage::ALL
            .iter()
            .map(|s| (s.as_str(), self.stage_histogram(*s)))
            .collect();
        write_histogram(
            &mut out,
            "courier_send_stage_seconds",
            "Time of each step of handling a message: claim, content, send, record.",
            "stage",
            &stages,
        );
        let mut quantiles = String::new();
        for priority in Priority::ALL {
            let histogram = self.latency[priority.index()].lock().expect("histogram lock").clone();
            for q in QUANTILES {
                let value = if histogram.is_empty() {
                    0.0
                } else {
                    histogram.value_at_quantile(q) as f64 / 1e6
                };
                let _ = writeln!(
                    quantiles,
                    "courier_accepted_to_sent_quantile_seconds{{priority=\"{priority}\",quantile=\"{q}\"}} {value}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP courier_accepted_to_sent_quantile_seconds Accepted-to-SENT latency quantiles from an HDR histogram (3 significant figures).\n# TYPE courier_accepted_to_sent_quantile_seconds gauge"
        );
        out.push_str(&quantiles);
        out
    }
}

/// The longest duration the histograms hold, in microseconds (1 hour).
const MAX_MICROS: u64 = 3_600_000_000;

/// A histogram of durations in microseconds, 1 µs to 1 hour at 3
/// significant figures (about 200 KiB).
pub fn duration_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds")
}

/// Records `elapsed` in microseconds, clamped into [`duration_histogram`]'s range.
pub fn record_duration(histogram: &mut Histogram<u64>, elapsed: Duration) {
    histogram.saturating_record((elapsed.as_micros() as u64).clamp(1, MAX_MICROS));
}

/// One Prometheus histogram family, a series per `label` value, from HDR histograms of microseconds.
fn write_histogram(out: &mut String, name: &str, help: &str, label: &str, series: &[(&str, Histogram<u64>)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (value, histogram) in series {
        for bound in BUCKETS {
            let le_micros = (bound * 1e6) as u64;
            let count = if histogram.is_empty() {
                0
            } else {
                histogram.count_between(0, le_micros)
            };
            let _ = writeln!(out, "{name}_bucket{{{label}=\"{value}\",le=\"{bound}\"}} {count}");
        }
        let total = histogram.len();
        let sum_seconds = histogram.mean() * total as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {total}");
        let _ = writeln!(out, "{name}_sum{{{label}=\"{value}\"}} {sum_seconds}");
        let _ = writeln!(out, "{name}_count{{{label}=\"{value}\"}} {total}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix}"))
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
        let text = metrics.render_prometheus();
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
        assert!(text.contains("courier_accepted_to_sent_seconds_bucket{priority=\"low\",le=\"0.025\"} 2\n"));
        assert!(text.contains("courier_accepted_to_sent_seconds_bucket{priority=\"low\",le=\"1\"} 4\n"));
        assert!(text.contains("courier_accepted_to_sent_seconds_bucket{priority=\"low\",le=\"+Inf\"} 5\n"));
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
        assert!(text.contains("courier_accepted_to_sent_seconds_count{priority=\"high\"} 0\n"));
    }
}
