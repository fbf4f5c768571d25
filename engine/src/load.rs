//! The load each AWS call met: how many calls were open on the stack when it
//! started.
//!
//! On two cores the local emulators answer in a millisecond when idle and in
//! tens of milliseconds under a campaign, so an answer time means little
//! without the load it was measured under. A real run records each call's
//! answer time under its [`LoadBucket`] (the fault plan's connector sees every
//! call); the simulated target counts its own open calls the same way and
//! draws each answer from the bucket of the load it meets now, so its answer
//! times grow with the load its engine offers, as the emulators' did.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use vocabulary::{AwsOperation, LoadBucket};

/// Calls open on the stack now, long polls left out ([`AwsOperation::loads_the_stack`]).
#[derive(Debug, Default)]
pub struct OpenCalls(AtomicU64);

impl OpenCalls {
    /// Counts a call of `operation` (`None`: one the vocabulary does not name)
    /// as open until the guard drops; returns the load it met.
    pub fn open(&self, operation: Option<AwsOperation>) -> (LoadBucket, OpenCall<'_>) {
        let loads = operation.is_none_or(AwsOperation::loads_the_stack);
        let before = if loads {
            self.0.fetch_add(1, Ordering::Relaxed)
        } else {
            self.0.load(Ordering::Relaxed)
        };
        (LoadBucket::of(before + 1), OpenCall { calls: self, loads })
    }
}

/// One open call; closes it when dropped (answered, failed or cancelled).
pub struct OpenCall<'a> {
    calls: &'a OpenCalls,
    loads: bool,
}

impl Drop for OpenCall<'_> {
    fn drop(&mut self) {
        if self.loads {
            self.calls.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Answer times per operation label and load, in microseconds.
pub type ByLoad = BTreeMap<String, BTreeMap<LoadBucket, Histogram<u64>>>;

/// Answer times recorded per operation and load.
#[derive(Debug, Default)]
pub struct AnswerTimesByLoad(Mutex<ByLoad>);

impl AnswerTimesByLoad {
    pub fn record(&self, label: &str, load: LoadBucket, elapsed: Duration) {
        let mut times = self.0.lock().expect("answer times lock");
        let histogram = times
            .entry(label.to_string())
            .or_default()
            .entry(load)
            .or_insert_with(crate::metrics::duration_histogram);
        crate::metrics::record_duration(histogram, elapsed);
    }

    pub fn snapshot(&self) -> ByLoad {
        self.0.lock().expect("answer times lock").clone()
    }

    /// Per operation label, its answer times under every load together.
    pub fn all_loads(&self) -> BTreeMap<String, Histogram<u64>> {
        let times = self.0.lock().expect("answer times lock");
        times
            .iter()
            .map(|(label, by_load)| {
                let mut all = crate::metrics::duration_histogram();
                for histogram in by_load.values() {
                    all.add(histogram).expect("histograms of one shape add up");
                }
                (label.clone(), all)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_counts_as_open_until_it_ends_and_long_polls_never_do() {
        let open = OpenCalls::default();
        let (first, a) = open.open(Some(AwsOperation::DynamoDbPutItem));
        let (polling, _poll) = open.open(Some(AwsOperation::SqsReceiveMessage));
        let (second, b) = open.open(None);
        let (third, c) = open.open(Some(AwsOperation::Sesv2SendEmail));
        assert_eq!([first, polling, second, third].map(LoadBucket::calls), [1, 2, 2, 2]);
        drop((a, b, c));
        assert_eq!(open.open(Some(AwsOperation::SqsSendMessage)).0, LoadBucket::of(1));
    }

    #[test]
    fn answer_times_under_every_load_add_up_to_the_operations_own() {
        let times = AnswerTimesByLoad::default();
        for (open, ms) in [(1, 1), (1, 2), (8, 30)] {
            times.record("DynamoDB.PutItem", LoadBucket::of(open), Duration::from_millis(ms));
        }
        assert_eq!(times.snapshot()["DynamoDB.PutItem"].len(), 2);
        let all = &times.all_loads()["DynamoDB.PutItem"];
        assert_eq!(all.len(), 3);
        assert!(all.max() >= 30_000, "µs: {}", all.max());
    }
}
