//! The engine's one clock.
//!
//! Timestamps the engine writes (a record's `createdAt` and `sentAt`, a
//! lease's end, a batch's phases) are read here: the wall-clock time when the
//! clock was first read, plus tokio's monotonic time since. On real time that
//! tracks the system clock; on tokio's paused clock (the simulated target,
//! `loadtest run --stack sim`) it advances with virtual time, so the same
//! engine code measures the same latencies in both.

use std::cell::Cell;
use std::sync::OnceLock;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

type Anchor = (DateTime<Utc>, Instant);

/// The process's anchor, taken at the first reading.
static ANCHOR: OnceLock<Anchor> = OnceLock::new();

thread_local! {
    /// A simulated run's own anchor, on the one thread its runtime runs on.
    static THIS_THREAD: Cell<Option<Anchor>> = const { Cell::new(None) };
}

/// Anchors this thread's readings afresh. A simulated run calls it first: its
/// runtime is a current-thread one on a paused clock of its own, whose
/// instants mean nothing to another runtime's, so sharing the process's
/// anchor would let one run's virtual time shift another's timestamps.
pub fn anchor_this_thread() {
    THIS_THREAD.set(Some((Utc::now(), Instant::now())));
}

/// Now, as a wall-clock time.
pub fn now() -> DateTime<Utc> {
    let (wall, at) = THIS_THREAD
        .get()
        .unwrap_or_else(|| *ANCHOR.get_or_init(|| (Utc::now(), Instant::now())));
    let now = Instant::now();
    let span = |d: std::time::Duration| chrono::Duration::from_std(d).unwrap_or(chrono::TimeDelta::MAX);
    // An instant before the anchor (a clock wound back) is a time before it.
    if now >= at {
        wall + span(now - at)
    } else {
        wall - span(at - now)
    }
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

    #[test]
    fn each_simulated_run_anchored_on_its_thread_measures_its_own_virtual_time_exactly() {
        // The first run reads the clock after an hour of virtual time; the
        // second, a fresh paused clock, must not be measured against it.
        let paused = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap()
        };
        paused().block_on(async {
            anchor_this_thread();
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            now();
        });
        let measured = paused().block_on(async {
            anchor_this_thread();
            let before = now();
            tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
            now() - before
        });
        assert_eq!(measured.num_milliseconds(), 1500);
    }

    #[tokio::test]
    async fn on_real_time_it_tracks_the_system_clock() {
        let drift = (now() - Utc::now()).num_milliseconds().abs();
        assert!(drift < 1_000, "{drift} ms");
    }
}
