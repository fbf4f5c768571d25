//! Accepted→SENT latency per priority, in HDR histograms (microseconds).

use std::collections::BTreeMap;

use engine::domain::Priority;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles of one histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One histogram per priority.
#[derive(Debug, Clone)]
pub struct LatencyByPriority {
    histograms: [Histogram<u64>; 3],
}

impl Default for LatencyByPriority {
    fn default() -> Self {
        let new = || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        Self {
            histograms: [new(), new(), new()],
        }
    }
}

impl LatencyByPriority {
    pub fn record(&mut self, priority: Priority, micros: u64) {
        self.histograms[priority.index()].saturating_record(micros.clamp(1, 3_600_000_000));
    }

    /// Folds another set in (histograms merge exactly).
    pub fn merge(&mut self, other: &LatencyByPriority) {
        for (mine, theirs) in self.histograms.iter_mut().zip(&other.histograms) {
            mine.add(theirs).expect("same bounds");
        }
    }

    pub fn percentiles(&self, priority: Priority) -> Percentiles {
        let h = &self.histograms[priority.index()];
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

    pub fn summary(&self) -> BTreeMap<String, Percentiles> {
        Priority::ALL
            .iter()
            .map(|p| (p.to_string(), self.percentiles(*p)))
            .filter(|(_, p)| p.count > 0)
            .collect()
    }
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
}
