//! One reading of a running pipeline, parsed from the engine's Prometheus text.
//! Pure data: the App, the plain-text output and tests all start from it.

use std::collections::BTreeMap;

pub const PRIORITIES: [&str; 3] = ["high", "medium", "low"];

/// Counters of one priority, cumulative since the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counters {
    pub enqueued: f64,
    pub sent: f64,
    pub errors: f64,
    pub retries: f64,
    pub dead_lettered: f64,
}

/// Accepted→SENT latency quantiles of one priority, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Messages in one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Depth {
    pub visible: f64,
    pub in_flight: f64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub accepted: f64,
    pub by_priority: BTreeMap<String, Counters>,
    pub latency: BTreeMap<String, Latency>,
    /// `high`, `high-dlq`, … → depth.
    pub queues: BTreeMap<String, Depth>,
    /// Faults in force (when the source knows them, as loadtest does).
    pub active_faults: Vec<String>,
    /// SLO name → met so far (loadtest only).
    pub slo: Vec<(String, bool)>,
}

impl Snapshot {
    pub fn total(&self, pick: fn(&Counters) -> f64) -> f64 {
        self.by_priority.values().map(pick).sum()
    }

    /// Accepted but neither SENT nor ERROR yet.
    pub fn in_pipeline(&self) -> f64 {
        (self.accepted - self.total(|c| c.sent) - self.total(|c| c.errors)).max(0.0)
    }

    /// Parses the engine's `/metrics` text; unknown lines are ignored.
    pub fn from_prometheus(text: &str) -> Self {
        let mut snapshot = Snapshot::default();
        for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else { continue };
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            let priority = labels.get("priority").cloned().unwrap_or_default();
            let mut counter = |apply: fn(&mut Counters, f64)| {
                apply(snapshot.by_priority.entry(priority.clone()).or_default(), value);
            };
            match name {
                "courier_messages_accepted_total" => snapshot.accepted = value,
                "courier_messages_enqueued_total" => counter(|c, v| c.enqueued = v),
                "courier_messages_sent_total" => counter(|c, v| c.sent = v),
                "courier_send_errors_total" => counter(|c, v| c.errors = v),
                "courier_send_retries_total" => counter(|c, v| c.retries = v),
                "courier_messages_dead_lettered_total" => counter(|c, v| c.dead_lettered = v),
                "courier_accepted_to_sent_quantile_seconds" => {
                    let entry = snapshot.latency.entry(priority).or_default();
                    let ms = value * 1000.0;
                    match labels.get("quantile").map(String::as_str) {
                        Some("0.5") => entry.p50 = ms,
                        Some("0.95") => entry.p95 = ms,
                        Some("0.99") => entry.p99 = ms,
                        _ => {}
                    }
                }
                "courier_queue_messages" => {
                    let (Some(queue), Some(state)) = (labels.get("queue"), labels.get("state")) else {
                        continue;
                    };
                    let depth = snapshot.queues.entry(queue.clone()).or_default();
                    match state.as_str() {
                        "visible" => depth.visible = value,
                        "in_flight" => depth.in_flight = value,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        snapshot
    }
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.trim().to_string(), value.trim().trim_matches('"').to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engines_exposition_is_read_into_a_snapshot() {
        let text = r#"# HELP courier_messages_accepted_total x
# TYPE courier_messages_accepted_total counter
courier_messages_accepted_total 120
courier_messages_sent_total{priority="high"} 10
courier_messages_sent_total{priority="low"} 90
courier_send_errors_total{priority="low"} 5
courier_send_retries_total{priority="medium"} 3
courier_accepted_to_sent_quantile_seconds{priority="high",quantile="0.99"} 0.25
courier_accepted_to_sent_quantile_seconds{priority="high",quantile="0.5"} 0.05
courier_queue_messages{queue="low",state="visible"} 42
courier_queue_messages{queue="low",state="in_flight"} 7
courier_queue_messages{queue="low-dlq",state="visible"} 1
"#;
        let s = Snapshot::from_prometheus(text);
        assert_eq!(s.accepted, 120.0);
        assert_eq!(s.by_priority["low"].sent, 90.0);
        assert_eq!(s.total(|c| c.sent), 100.0);
        assert_eq!(s.in_pipeline(), 15.0);
        assert_eq!(s.latency["high"].p99, 250.0);
        assert_eq!(s.latency["high"].p50, 50.0);
        assert_eq!(
            s.queues["low"],
            Depth {
                visible: 42.0,
                in_flight: 7.0
            }
        );
        assert_eq!(s.queues["low-dlq"].visible, 1.0);
    }
}
