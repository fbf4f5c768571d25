//! The engine's one clock.
//!
//! Timestamps the engine writes (a record's `createdAt` and `sentAt`, a
//! lease's end, a batch's phases) are read here: the wall-clock time when the
//! clock was first read, plus tokio's monotonic time since. On real time that
//! tracks the system clock; on tokio's paused clock (the simulated target,
//! `loadtest run --stack sim`) it advances with virtual time, so the same
//! engine code measures the same latencies in both.

use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

static ANCHOR: OnceLock<(DateTime<Utc>, Instant)> = OnceLock::new();

/// Now, as a wall-clock time.
pub fn now() -> DateTime<Utc> {
    let (wall, at) = ANCHOR.get_or_init(|| (Utc::now(), Instant::now()));
    let since = Instant::now().saturating_duration_since(*at);
    *wall + chrono::Duration::from_std(since).unwrap_or(chrono::TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn on_a_paused_clock_time_advances_with_virtual_time_only() {
        let before = now();
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        let after = now();
        assert_eq!((after - before).num_seconds(), 3600);
    }

    #[tokio::test]
    async fn on_real_time_it_tracks_the_system_clock() {
        let drift = (now() - Utc::now()).num_milliseconds().abs();
        assert!(drift < 1_000, "{drift} ms");
    }
}
