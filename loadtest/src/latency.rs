//! Accepted→SENT latency per priority, in HDR histograms (microseconds).

use std::collections::BTreeMap;
use std::time::Duration;

use engine::domain::{PerPriority, Priority};
use hdrhistogram::Histogram;
use vocabulary::AwsOperation;

pub use reports::results::Percentiles;

/// One histogram per priority.
#[derive(Debug, Clone)]
pub struct LatencyByPriority {
    histograms: PerPriority<Histogram<u64>>,
}

impl Default for LatencyByPriority {
    fn default() -> Self {
        Self {
            histograms: PerPriority::from_fn(|_| engine::metrics::duration_histogram()),
        }
    }
}

impl LatencyByPriority {
    pub fn record(&mut self, priority: Priority, micros: u64) {
        engine::metrics::record_duration(&mut self.histograms[priority], Duration::from_micros(micros));
    }

    /// Folds another set in (histograms merge exactly).
    pub fn merge(&mut self, other: &LatencyByPriority) {
        for priority in Priority::ALL {
            self.histograms[priority]
                .add(&other.histograms[priority])
                .expect("every duration histogram has the same bounds");
        }
    }

    pub fn percentiles(&self, priority: Priority) -> Percentiles {
        percentiles_of(&self.histograms[priority])
    }

    /// Each priority that sent anything, with its percentiles.
    pub fn summary(&self) -> BTreeMap<Priority, Percentiles> {
        Priority::ALL
            .into_iter()
            .map(|p| (p, self.percentiles(p)))
            .filter(|(_, p)| p.count > 0)
            .collect()
    }
}

/// Percentiles in milliseconds of a histogram of microseconds.
pub fn percentiles_of(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    let ms = |v: u64| v as f64 / 1000.0;
    Percentiles {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p95_ms: ms(h.value_at_quantile(0.95)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

/// The calls the stack's speed is read from: the pipeline's steady per-message
/// SQS and DynamoDB work. Long polls wait by design, SES may carry injected
/// faults and set-up calls (CreateTable, …) are one-off and slow.
const REFERENCE_OPERATIONS: [AwsOperation; 11] = [
    AwsOperation::DynamoDbBatchWriteItem,
    AwsOperation::DynamoDbTransactWriteItems,
    AwsOperation::DynamoDbUpdateItem,
    AwsOperation::DynamoDbPutItem,
    AwsOperation::DynamoDbGetItem,
    AwsOperation::DynamoDbQuery,
    AwsOperation::SqsSendMessage,
    AwsOperation::SqsSendMessageBatch,
    AwsOperation::SqsDeleteMessage,
    AwsOperation::SqsDeleteMessageBatch,
    AwsOperation::SqsChangeMessageVisibility,
];

/// The stack's speed during a run: the median answer time of its
/// [`REFERENCE_OPERATIONS`].
pub fn stack_reference_ms(answer_times: &BTreeMap<String, Histogram<u64>>) -> Option<f64> {
    let reference = answer_times
        .iter()
        .filter(|(label, _)| REFERENCE_OPERATIONS.iter().any(|op| op.as_str() == label.as_str()))
        .map(|(_, histogram)| histogram);
    merged(reference)
        .ok()?
        .filter(|m| !m.is_empty())
        .map(|m| m.value_at_quantile(0.5) as f64 / 1000.0)
}

/// Folds histograms into one (they merge exactly); `None` when there are none.
pub fn merged<'a>(
    histograms: impl IntoIterator<Item = &'a Histogram<u64>>,
) -> Result<Option<Histogram<u64>>, hdrhistogram::AdditionError> {
    let mut histograms = histograms.into_iter();
    let Some(first) = histograms.next() else {
        return Ok(None);
    };
    let mut all = first.clone();
    for histogram in histograms {
        all.add(histogram)?;
    }
    Ok(Some(all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_histograms_give_the_percentiles_of_the_whole() {
        let mut a = LatencyByPriority::default();
        let mut b = LatencyByPriority::default();
        for ms in 1..=50 {
            a.record(Priority::High, ms * 1000);
        }
        for ms in 51..=100 {
            b.record(Priority::High, ms * 1000);
        }
        a.merge(&b);
        let p = a.percentiles(Priority::High);
        assert_eq!(p.count, 100);
        assert!((p.p50_ms - 50.0).abs() < 0.1, "{p:?}");
        assert!((p.p99_ms - 99.0).abs() < 0.1, "{p:?}");
        assert_eq!(a.percentiles(Priority::Low).count, 0);
    }

    #[test]
    fn the_stack_reference_leaves_out_long_polls_set_up_and_ses() {
        let histogram = |ms: u64| {
            let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
            for _ in 0..10 {
                h.record(ms * 1000).unwrap();
            }
            h
        };
        let times = BTreeMap::from([
            (AwsOperation::DynamoDbUpdateItem.to_string(), histogram(8)),
            (AwsOperation::SqsSendMessageBatch.to_string(), histogram(8)),
            (AwsOperation::SqsReceiveMessage.to_string(), histogram(20_000)),
            ("DynamoDB.CreateTable".to_string(), histogram(2_000)),
            (AwsOperation::Sesv2SendEmail.to_string(), histogram(500)),
        ]);
        let reference = stack_reference_ms(&times).unwrap();
        assert!((reference - 8.0).abs() < 0.01, "{reference}");
        assert_eq!(stack_reference_ms(&BTreeMap::new()), None);
    }
}
