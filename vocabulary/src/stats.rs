//! One live reading of a running pipeline: what the engine serves at
//! `GET /stats` (JSON), what `loadtest run --tui` publishes, and what the TUI
//! draws. Pure data, one definition for the writer and every reader.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{PerPriority, QueueRef};

/// Counters of one priority, cumulative since the engine started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub enqueued: u64,
    pub sent: u64,
    pub errors: u64,
    pub retries: u64,
    pub dead_lettered: u64,
}

/// Accepted→SENT latency of one priority so far, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Messages measured; the quantiles mean nothing while it is 0.
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Messages in one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Depth {
    /// Ready to be received.
    pub visible: u64,
    /// Received and not yet deleted or returned.
    pub in_flight: u64,
    /// Sent with a delay (retries wait here), not yet visible.
    #[serde(default)]
    pub delayed: u64,
}

impl Depth {
    /// Visible + in flight: what the queue is working through now.
    pub fn total(self) -> u64 {
        self.visible + self.in_flight
    }
}

/// One SLO as judged on the figures so far (loadtest only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SloSoFar {
    pub name: String,
    pub met: bool,
}

/// Campaign batches being turned into messages in the background.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ingest {
    /// Rows recorded and enqueued since the engine started.
    pub rows: u64,
    /// Batches received and not yet DONE or FAILED.
    pub batches_in_progress: u64,
}

/// The senders' send budget: what the dispatcher may spend on sends now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// Sends per second allowed now (cut after throttles, recovering);
    /// `None`: no rate limit is known.
    pub rate_per_sec: Option<f64>,
    /// The most it may reach: the account's rate × this engine's share × headroom.
    pub ceiling_per_sec: Option<f64>,
    /// Throttles SES answered to this engine's sends so far.
    pub throttles: u64,
    /// Seconds until sending resumes, while a daily quota is used up.
    pub paused_for_secs: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub accepted: u64,
    #[serde(default)]
    pub ingest: Ingest,
    pub by_priority: PerPriority<Counters>,
    pub latency: PerPriority<Latency>,
    #[serde(default)]
    pub budget: Budget,
    pub queues: BTreeMap<QueueRef, Depth>,
    /// Faults in force (when the source knows them, as loadtest does).
    #[serde(default)]
    pub active_faults: Vec<String>,
    #[serde(default)]
    pub slo: Vec<SloSoFar>,
}

impl Snapshot {
    pub fn total(&self, pick: fn(&Counters) -> u64) -> u64 {
        self.by_priority.iter().map(|(_, c)| pick(c)).sum()
    }

    /// SENT or ERROR: done with.
    pub fn finished(&self) -> u64 {
        self.total(|c| c.sent) + self.total(|c| c.errors)
    }

    /// Accepted but neither SENT nor ERROR yet.
    pub fn in_pipeline(&self) -> u64 {
        self.accepted.saturating_sub(self.finished())
    }

    /// Visible + in flight on one queue (0 when it was not read).
    pub fn depth(&self, queue: QueueRef) -> u64 {
        self.queues.get(&queue).map_or(0, |d| d.total())
    }

    /// Everything waiting in the dead-letter queues.
    pub fn dead_letter_depth(&self) -> u64 {
        dead_lettered(&self.queues)
    }
}

/// Everything waiting in the dead-letter queues among `queues` (visible + in flight).
pub fn dead_lettered(queues: &BTreeMap<QueueRef, Depth>) -> u64 {
    queues
        .iter()
        .filter(|(queue, _)| queue.is_dead_letter())
        .map(|(_, depth)| depth.total())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Priority;

    #[test]
    fn a_snapshot_survives_json_and_counts_what_is_in_the_pipeline() {
        let mut s = Snapshot {
            accepted: 120,
            ..Snapshot::default()
        };
        s.by_priority[Priority::Low].sent = 90;
        s.by_priority[Priority::High].sent = 10;
        s.by_priority[Priority::Low].errors = 5;
        s.queues.insert(
            QueueRef::Main(Priority::Low),
            Depth {
                visible: 42,
                in_flight: 7,
                delayed: 0,
            },
        );
        s.queues.insert(
            QueueRef::DeadLetter(Priority::Low),
            Depth {
                visible: 1,
                in_flight: 0,
                delayed: 0,
            },
        );
        let back: Snapshot = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.in_pipeline(), 15);
        assert_eq!(back.depth(QueueRef::Main(Priority::Low)), 49);
        assert_eq!(back.dead_letter_depth(), 1);
    }
}
