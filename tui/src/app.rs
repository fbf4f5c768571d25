//! The view's state, updated from snapshots and keys; drawn by [`crate::ui`].

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use vocabulary::{Priority, QueueRef};

use crate::Snapshot;

/// The panels, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    Queues,
    Rates,
    Latency,
    Statuses,
    Faults,
}

impl Panel {
    pub const ALL: [Panel; 5] = [
        Panel::Queues,
        Panel::Rates,
        Panel::Latency,
        Panel::Statuses,
        Panel::Faults,
    ];

    fn step(self, by: isize) -> Panel {
        let index = Panel::ALL.iter().position(|p| *p == self).unwrap_or(0) as isize;
        Panel::ALL[(index + by).rem_euclid(Panel::ALL.len() as isize) as usize]
    }
}

/// Whether the target is answering.
#[derive(Debug, Clone, PartialEq)]
pub enum Connection {
    Waiting,
    Connected,
    Lost { error: String, failures: u32 },
}

/// One point of the charts.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub t: f64,
    pub sent_per_sec: f64,
    pub errors_per_sec: f64,
    pub retries_per_sec: f64,
    /// Campaign rows turned into messages per second (background ingest).
    pub ingest_rows_per_sec: f64,
    /// Visible + in flight, per queue.
    pub depths: BTreeMap<QueueRef, f64>,
}

/// Keys the view understands (independent of the terminal library).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Tab,
    BackTab,
    Left,
    Right,
    Esc,
}

/// Points kept for the charts: 10 minutes at the default 1 s refresh.
pub const HISTORY: usize = 600;

#[derive(Debug)]
pub struct App {
    pub target: String,
    pub history: VecDeque<Point>,
    pub latest: Option<Snapshot>,
    previous: Option<(f64, Snapshot)>,
    pub selected: Panel,
    pub paused: bool,
    pub show_help: bool,
    pub connection: Connection,
    pub quit: bool,
}

impl App {
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            history: VecDeque::with_capacity(HISTORY),
            latest: None,
            previous: None,
            selected: Panel::Queues,
            paused: false,
            show_help: false,
            connection: Connection::Waiting,
            quit: false,
        }
    }

    /// A reading taken `t` seconds after the view started. Paused, the view
    /// stays as it is (the connection state still updates).
    pub fn on_snapshot(&mut self, t: f64, snapshot: Snapshot) {
        self.connection = Connection::Connected;
        if self.paused {
            return;
        }
        let rate = |now: u64, before: u64, dt: f64| {
            if dt > 0.0 {
                now.saturating_sub(before) as f64 / dt
            } else {
                0.0
            }
        };
        let (sent, errors, retries, ingested) = match &self.previous {
            // A counter that went down means the engine restarted: start the rates afresh.
            Some((t0, before)) if snapshot.total(|c| c.sent) >= before.total(|c| c.sent) => {
                let dt = t - t0;
                (
                    rate(snapshot.total(|c| c.sent), before.total(|c| c.sent), dt),
                    rate(snapshot.total(|c| c.errors), before.total(|c| c.errors), dt),
                    rate(snapshot.total(|c| c.retries), before.total(|c| c.retries), dt),
                    rate(snapshot.ingest.rows, before.ingest.rows, dt),
                )
            }
            _ => (0.0, 0.0, 0.0, 0.0),
        };
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Point {
            t,
            sent_per_sec: sent,
            errors_per_sec: errors,
            retries_per_sec: retries,
            ingest_rows_per_sec: ingested,
            depths: snapshot.queues.iter().map(|(q, d)| (*q, d.total() as f64)).collect(),
        });
        self.previous = Some((t, snapshot.clone()));
        self.latest = Some(snapshot);
    }

    /// The target did not answer; the view keeps what it had and says so.
    pub fn on_error(&mut self, error: impl Into<String>) {
        let failures = match &self.connection {
            Connection::Lost { failures, .. } => failures + 1,
            _ => 1,
        };
        self.connection = Connection::Lost {
            error: error.into(),
            failures,
        };
    }

    pub fn on_key(&mut self, key: Key) {
        if self.show_help {
            self.show_help = false;
            if matches!(key, Key::Esc | Key::Char('?')) {
                return;
            }
        }
        match key {
            Key::Char('q') => self.quit = true,
            Key::Char('p') | Key::Char(' ') => self.paused = !self.paused,
            Key::Char('?') => self.show_help = true,
            Key::Tab | Key::Right => self.selected = self.selected.step(1),
            Key::BackTab | Key::Left => self.selected = self.selected.step(-1),
            _ => {}
        }
    }

    /// How long to wait before the next reading: the refresh interval while
    /// connected, backing off (doubling, at most 5 s) while the target is down.
    pub fn next_poll_in(&self, refresh: Duration) -> Duration {
        match &self.connection {
            Connection::Lost { failures, .. } => {
                let backoff = refresh.saturating_mul(1 << (*failures).min(6));
                backoff.min(Duration::from_secs(5)).max(refresh)
            }
            _ => refresh,
        }
    }

    /// One line for a terminal-less output (CI logs, pipes).
    pub fn plain_line(&self) -> String {
        let state = match &self.connection {
            Connection::Waiting => "waiting".to_string(),
            Connection::Connected => "connected".to_string(),
            Connection::Lost { error, failures } => format!("LOST ({failures} failures: {error})"),
        };
        let Some(s) = &self.latest else {
            return format!("{} {state}", self.target);
        };
        let point = self.history.back();
        let depth = |q: QueueRef| point.and_then(|p| p.depths.get(&q)).copied().unwrap_or(0.0);
        let main = |p: Priority| depth(QueueRef::Main(p));
        let dead_letters: f64 = Priority::ALL.into_iter().map(|p| depth(QueueRef::DeadLetter(p))).sum();
        format!(
            "{} {state} batches {} (ingest {:.0} rows/s) accepted {} sent {} ({:.1}/s) errors {} retries {} queues h/m/l {}/{}/{} dlq {}",
            self.target,
            s.ingest.batches_in_progress,
            point.map(|p| p.ingest_rows_per_sec).unwrap_or(0.0),
            s.accepted,
            s.total(|c| c.sent),
            point.map(|p| p.sent_per_sec).unwrap_or(0.0),
            s.total(|c| c.errors),
            s.total(|c| c.retries),
            main(Priority::High),
            main(Priority::Medium),
            main(Priority::Low),
            dead_letters,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vocabulary::stats::Depth;

    fn snapshot(sent: u64, low_depth: u64) -> Snapshot {
        let mut s = Snapshot {
            accepted: 1000,
            ..Snapshot::default()
        };
        s.by_priority[Priority::Low].sent = sent;
        let depth = Depth {
            visible: low_depth,
            ..Depth::default()
        };
        s.queues.insert(QueueRef::Main(Priority::Low), depth);
        s
    }

    #[test]
    fn rates_come_from_consecutive_snapshots() {
        let mut app = App::new("engine");
        app.on_snapshot(0.0, snapshot(0, 500));
        app.on_snapshot(2.0, snapshot(40, 460));
        app.on_snapshot(3.0, snapshot(70, 430));
        let rates: Vec<f64> = app.history.iter().map(|p| p.sent_per_sec).collect();
        assert_eq!(rates, vec![0.0, 20.0, 30.0]);
        assert_eq!(
            app.history.back().unwrap().depths[&QueueRef::Main(Priority::Low)],
            430.0
        );
    }

    #[test]
    fn an_engine_restart_does_not_show_a_negative_rate() {
        let mut app = App::new("engine");
        app.on_snapshot(0.0, snapshot(500, 0));
        app.on_snapshot(1.0, snapshot(3, 0));
        assert_eq!(app.history.back().unwrap().sent_per_sec, 0.0);
    }

    #[test]
    fn pausing_freezes_the_view_and_keys_move_between_panels() {
        let mut app = App::new("engine");
        app.on_snapshot(0.0, snapshot(0, 1));
        app.on_key(Key::Char('p'));
        app.on_snapshot(1.0, snapshot(10, 2));
        assert_eq!(app.history.len(), 1, "nothing added while paused");
        app.on_key(Key::Char('p'));
        app.on_key(Key::Tab);
        assert_eq!(app.selected, Panel::Rates);
        app.on_key(Key::BackTab);
        app.on_key(Key::BackTab);
        assert_eq!(app.selected, Panel::Faults, "tab order wraps around");
        app.on_key(Key::Char('?'));
        assert!(app.show_help);
        app.on_key(Key::Esc);
        assert!(!app.show_help && !app.quit);
        app.on_key(Key::Char('q'));
        assert!(app.quit);
    }

    #[test]
    fn a_lost_target_backs_off_and_a_reading_reconnects() {
        let refresh = Duration::from_millis(500);
        let mut app = App::new("engine");
        app.on_snapshot(0.0, snapshot(0, 0));
        assert_eq!(app.next_poll_in(refresh), refresh);
        app.on_error("connection refused");
        app.on_error("connection refused");
        assert_eq!(
            app.connection,
            Connection::Lost {
                error: "connection refused".into(),
                failures: 2
            }
        );
        assert_eq!(app.next_poll_in(refresh), Duration::from_secs(2));
        for _ in 0..10 {
            app.on_error("connection refused");
        }
        assert_eq!(app.next_poll_in(refresh), Duration::from_secs(5), "backoff is capped");
        assert!(app.plain_line().contains("LOST (12 failures"));
        app.on_snapshot(1.0, snapshot(5, 0));
        assert_eq!(app.connection, Connection::Connected);
        assert_eq!(app.history.len(), 2, "history survived the outage");
    }
}
