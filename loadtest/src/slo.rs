//! Judging a run against its scenario's SLOs.

use std::collections::BTreeMap;

use engine::domain::{PerPriority, Priority, QueueRef, SendStatus};
use reports::results::{Percentiles, Sample};
use scenarios::Slo;

use crate::audit::Audit;
use crate::latency::LatencyByPriority;

pub use reports::results::SloCheck;

/// The figures the SLOs are judged on.
pub struct Measured<'a> {
    pub latency: &'a LatencyByPriority,
    pub delivered_per_sec: f64,
    pub audit: &'a Audit,
    /// Latency by phase ([`BEFORE_CAMPAIGNS`], [`WITH_CAMPAIGNS`], [`AFTER_CAMPAIGNS`]).
    pub by_phase: &'a BTreeMap<String, BTreeMap<Priority, Percentiles>>,
    pub samples: &'a [Sample],
    /// The `ses_quota` fault's rate, if the scenario sets one.
    pub quota_rate: Option<f64>,
    /// Sends SES answered with a throttle.
    pub ses_throttles: u64,
}

/// The phases [`crate::summarize`] splits latency into.
pub const BEFORE_CAMPAIGNS: &str = "before first campaign";
pub const WITH_CAMPAIGNS: &str = "with campaigns";
pub const AFTER_CAMPAIGNS: &str = "after campaigns sent";

/// A p99 of fewer messages than this is their slowest one: a ratio of two
/// such tails measures luck, so the ratio is not judged on fewer.
pub const MIN_FOR_P99: u64 = 100;

/// Low's share of sends is judged over windows this long.
const SHARE_WINDOW_SECS: f64 = 5.0;

/// Messages on a priority's main queue at a sample: visible, in flight, or
/// delayed (waiting out a retry's backoff).
fn queued(sample: &Sample, priority: Priority) -> u64 {
    sample
        .queue_depths
        .get(&QueueRef::Main(priority))
        .map_or(0, |d| d.total() + d.delayed)
}

/// Low priority's lowest share of all sends over any [`SHARE_WINDOW_SECS`]
/// in which its queue had work throughout; `None` if there was no such window.
pub fn lowest_low_share(samples: &[Sample]) -> Option<f64> {
    let waiting = |s: &Sample| queued(s, Priority::Low) > 0;
    let mut lowest: Option<f64> = None;
    for (i, first) in samples.iter().enumerate() {
        let Some(j) = (i + 1..samples.len()).find(|&j| samples[j].t_secs - first.t_secs >= SHARE_WINDOW_SECS) else {
            break;
        };
        if !samples[i..=j].iter().all(waiting) {
            continue;
        }
        let last = &samples[j];
        let total = last.sent.saturating_sub(first.sent);
        if total == 0 {
            continue;
        }
        let low = last.sent_by_priority.low.saturating_sub(first.sent_by_priority.low);
        let share = low as f64 / total as f64;
        lowest = Some(lowest.map_or(share, |l: f64| l.min(share)));
    }
    lowest
}

/// Sends per second over the intervals in which more than `one_second`
/// sends waited on the main queues at both ends; `None` if none did.
pub fn sends_while_backlogged(samples: &[Sample], one_second: f64) -> Option<f64> {
    let backlog = |s: &Sample| Priority::ALL.iter().map(|p| queued(s, *p) as f64).sum::<f64>();
    let (mut sent, mut secs) = (0_u64, 0.0);
    for pair in samples.windows(2) {
        if backlog(&pair[0]) > one_second && backlog(&pair[1]) > one_second {
            sent += pair[1].sent.saturating_sub(pair[0].sent);
            secs += pair[1].t_secs - pair[0].t_secs;
        }
    }
    (secs > 0.0).then(|| sent as f64 / secs)
}

/// The SLOs on priorities under load and on the SES budget.
fn isolation(slo: &Slo, measured: &Measured<'_>, verdicts: &mut Vec<SloCheck>) {
    for (priority, ratio) in slo.p99_with_campaigns_max_ratio.iter() {
        let Some(ratio) = *ratio else { continue };
        let p99 = |phase: &str| {
            let percentiles = measured.by_phase.get(phase)?.get(&priority)?;
            (percentiles.count > 0).then_some((percentiles.p99_ms, percentiles.count))
        };
        let (pass, shown) = match (p99(BEFORE_CAMPAIGNS), p99(WITH_CAMPAIGNS)) {
            (Some((_, n_before)), Some((_, n_with))) if n_before.min(n_with) < MIN_FOR_P99 => (
                false,
                format!("too few to judge: {n_before} before, {n_with} with (a p99 needs {MIN_FOR_P99})"),
            ),
            (Some((before, _)), Some((with, _))) => (
                with <= ratio * before,
                format!("{:.2}× ({with:.0} ms with, {before:.0} ms before)", with / before),
            ),
            _ => (false, "no messages in one of the phases".into()),
        };
        verdicts.push(SloCheck {
            name: format!("p99 {priority} with campaigns ÷ before"),
            target: format!("≤ {ratio}×"),
            measured: shown,
            pass,
        });
    }
    if let Some(min) = slo.min_low_share_pct {
        let lowest = lowest_low_share(measured.samples);
        verdicts.push(SloCheck {
            name: "low's share of sends (lowest 5 s with low waiting)".into(),
            target: format!("≥ {min}%"),
            measured: lowest.map_or("low never waited 5 s".into(), |l| format!("{:.1}%", 100.0 * l)),
            pass: lowest.is_none_or(|l| 100.0 * l >= min),
        });
    }
    if let (Some(min), Some(quota)) = (slo.min_sends_pct_of_quota, measured.quota_rate) {
        let rate = sends_while_backlogged(measured.samples, quota);
        verdicts.push(SloCheck {
            name: "sends/s while a backlog waits, % of SES quota".into(),
            target: format!("≥ {min}% of {quota}/s"),
            measured: rate.map_or("no backlog".into(), |r| format!("{:.1}% ({r:.1}/s)", 100.0 * r / quota)),
            pass: rate.is_some_and(|r| 100.0 * r / quota >= min),
        });
    }
    if let Some(max) = slo.max_ses_throttles {
        verdicts.push(SloCheck {
            name: "SES throttles".into(),
            target: format!("≤ {max}"),
            measured: measured.ses_throttles.to_string(),
            pass: measured.ses_throttles <= max,
        });
    }
}

pub fn evaluate(slo: &Slo, measured: &Measured<'_>) -> Vec<SloCheck> {
    let mut verdicts = Vec::new();
    let mut latency =
        |label: &str, targets: &PerPriority<Option<f64>>, pick: fn(&crate::latency::Percentiles) -> f64| {
            for (priority, target) in targets.iter() {
                let Some(target) = *target else { continue };
                let percentiles = measured.latency.percentiles(priority);
                let (pass, shown) = if percentiles.count == 0 {
                    (false, "no messages sent".to_string())
                } else {
                    let value = pick(&percentiles);
                    (value <= target, format!("{value:.0} ms"))
                };
                verdicts.push(SloCheck {
                    name: format!("{label} {priority}"),
                    target: format!("≤ {target:.0} ms"),
                    measured: shown,
                    pass,
                });
            }
        };
    latency("p50 latency", &slo.p50_ms, |p| p.p50_ms);
    latency("p95 latency", &slo.p95_ms, |p| p.p95_ms);
    latency("p99 latency", &slo.p99_ms, |p| p.p99_ms);
    isolation(slo, measured, &mut verdicts);

    if let Some(min) = slo.min_delivered_per_sec {
        verdicts.push(SloCheck {
            name: "delivered msg/s".into(),
            target: format!("≥ {min:.1}"),
            measured: format!("{:.1}", measured.delivered_per_sec),
            pass: measured.delivered_per_sec >= min,
        });
    }
    let audit = measured.audit;
    if let Some(max) = slo.max_error_pct {
        let errors = audit.count(SendStatus::Error);
        let pct = if audit.accepted == 0 {
            0.0
        } else {
            100.0 * errors as f64 / audit.accepted as f64
        };
        verdicts.push(SloCheck {
            name: "ERROR %".into(),
            target: format!("≤ {max}%"),
            measured: format!("{pct:.2}% ({errors} of {})", audit.accepted),
            pass: pct <= max,
        });
    }
    verdicts.push(SloCheck {
        name: "lost".into(),
        target: format!("≤ {}", slo.max_lost),
        measured: audit.lost.to_string(),
        pass: audit.lost <= slo.max_lost,
    });
    verdicts.push(SloCheck {
        name: "duplicate sends".into(),
        target: format!("≤ {}", slo.max_duplicate_sends),
        measured: if audit.mail_record_checked {
            audit.duplicated.to_string()
        } else {
            "not checkable (no mail record)".into()
        },
        pass: audit.duplicated <= slo.max_duplicate_sends,
    });
    if audit.mail_record_checked {
        // A resend after an interrupted attempt is the documented price of
        // at-least-once; a duplicate without one means two copies were sent.
        let two_copies = audit.duplicated.saturating_sub(audit.resent_after_interrupted_attempt);
        verdicts.push(SloCheck {
            name: "sent by two copies".into(),
            target: "0".into(),
            measured: two_copies.to_string(),
            pass: two_copies == 0,
        });
    }
    verdicts.push(SloCheck {
        name: "unexpected sends".into(),
        target: "0".into(),
        measured: audit.unexpected.to_string(),
        pass: audit.unexpected == 0,
    });
    if slo.dlq_equals_poison {
        verdicts.push(SloCheck {
            name: "DLQ = injected poison".into(),
            target: audit.poison_injected.to_string(),
            measured: audit.dead_lettered.to_string(),
            pass: audit.dead_lettered == audit.poison_injected,
        });
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::domain::Priority;

    static NO_LATENCY: std::sync::LazyLock<LatencyByPriority> = std::sync::LazyLock::new(LatencyByPriority::default);
    static NO_AUDIT: std::sync::LazyLock<Audit> = std::sync::LazyLock::new(Audit::default);
    static NO_PHASES: BTreeMap<String, BTreeMap<Priority, Percentiles>> = BTreeMap::new();

    fn measured_nothing() -> Measured<'static> {
        Measured {
            latency: &NO_LATENCY,
            delivered_per_sec: 0.0,
            audit: &NO_AUDIT,
            by_phase: &NO_PHASES,
            samples: &[],
            quota_rate: None,
            ses_throttles: 0,
        }
    }

    /// A sample at `t` with `high` and `low` sent so far and `low_waiting` on low's queue.
    fn sample(t: f64, high: u64, low: u64, low_waiting: u64) -> Sample {
        let depth = engine::queue::QueueDepth {
            visible: low_waiting,
            ..Default::default()
        };
        Sample {
            t_secs: t,
            accepted: 0,
            sent: high + low,
            errors: 0,
            retries: 0,
            sent_per_sec: 0.0,
            errors_per_sec: 0.0,
            retries_per_sec: 0.0,
            queue_depths: BTreeMap::from([(QueueRef::Main(Priority::Low), depth)]),
            latency_ms: BTreeMap::new(),
            active_faults: vec![],
            sent_by_priority: PerPriority { high, medium: 0, low },
            sent_per_sec_by_priority: PerPriority::default(),
            budget_per_sec: None,
        }
    }

    #[test]
    fn low_share_is_its_worst_five_seconds_while_it_waited() {
        // 10/s in all; low gets 5/s, then 1/s from t=10, and stops waiting at t=20.
        let mut samples = Vec::new();
        let (mut high, mut low) = (0, 0);
        for t in 0..=25 {
            samples.push(sample(t as f64, high, low, if t <= 20 { 100 } else { 0 }));
            let low_now = if t < 10 {
                5
            } else if t < 20 {
                1
            } else {
                0
            };
            low += low_now;
            high += 10 - low_now;
        }
        let lowest = lowest_low_share(&samples).unwrap();
        assert!((lowest - 0.1).abs() < 1e-9, "{lowest}");
        assert_eq!(lowest_low_share(&samples[21..]), None, "low never waited");
    }

    #[test]
    fn the_rate_while_backlogged_leaves_out_the_idle_tail() {
        let samples: Vec<Sample> = (0..=10)
            .map(|t| sample(t as f64, 0, (t.min(6) * 19) as u64, if t < 6 { 500 } else { 0 }))
            .collect();
        let rate = sends_while_backlogged(&samples, 20.0).unwrap();
        assert!((rate - 19.0).abs() < 1e-9, "{rate}");
    }

    fn high_p99(p99_ms: f64, count: u64) -> BTreeMap<Priority, Percentiles> {
        BTreeMap::from([(
            Priority::High,
            Percentiles {
                count,
                p99_ms,
                ..Percentiles::default()
            },
        )])
    }

    #[test]
    fn a_p99_ratio_over_fewer_messages_than_a_p99_needs_is_not_judged_a_pass() {
        let phases = BTreeMap::from([
            (BEFORE_CAMPAIGNS.to_string(), high_p99(100.0, MIN_FOR_P99 - 1)),
            (WITH_CAMPAIGNS.to_string(), high_p99(101.0, 400)),
        ]);
        let mut slo = Slo::default();
        slo.p99_with_campaigns_max_ratio.high = Some(2.0);
        let measured = Measured {
            by_phase: &phases,
            ..measured_nothing()
        };
        let verdict = evaluate(&slo, &measured)
            .into_iter()
            .find(|v| v.name.starts_with("p99 high with campaigns"))
            .unwrap();
        assert!(
            !verdict.pass,
            "1.01× over 99 messages before is luck, not a measurement"
        );
        assert!(
            verdict.measured.contains("too few to judge: 99 before"),
            "{}",
            verdict.measured
        );
    }

    #[test]
    fn a_priority_slower_with_campaigns_than_the_ratio_allows_fails() {
        let phases = BTreeMap::from([
            (BEFORE_CAMPAIGNS.to_string(), high_p99(100.0, MIN_FOR_P99)),
            (WITH_CAMPAIGNS.to_string(), high_p99(250.0, 400)),
        ]);
        let mut slo = Slo::default();
        slo.p99_with_campaigns_max_ratio.high = Some(2.0);
        slo.max_ses_throttles = Some(0);
        let measured = Measured {
            by_phase: &phases,
            ses_throttles: 3,
            ..measured_nothing()
        };
        let verdicts = evaluate(&slo, &measured);
        let find = |name: &str| verdicts.iter().find(|v| v.name.starts_with(name)).unwrap();
        assert!(!find("p99 high with campaigns").pass, "2.5× > 2×");
        assert!(!find("SES throttles").pass);
        slo.p99_with_campaigns_max_ratio.high = Some(3.0);
        assert!(
            evaluate(&slo, &measured)
                .iter()
                .find(|v| v.name.starts_with("p99 high"))
                .unwrap()
                .pass
        );
    }

    #[test]
    fn a_latency_over_target_fails_and_one_under_passes() {
        let mut latency = LatencyByPriority::default();
        for ms in 1..=100 {
            latency.record(Priority::High, ms * 1000);
        }
        let slo = Slo {
            p99_ms: PerPriority {
                high: Some(50.0),
                ..PerPriority::default()
            },
            p50_ms: PerPriority {
                high: Some(60.0),
                ..PerPriority::default()
            },
            ..Slo::default()
        };
        let audit = Audit::default();
        let verdicts = evaluate(
            &slo,
            &Measured {
                latency: &latency,
                delivered_per_sec: 10.0,
                audit: &audit,
                ..measured_nothing()
            },
        );
        let find = |name: &str| verdicts.iter().find(|v| v.name == name).unwrap();
        assert!(find("p50 latency high").pass);
        assert!(!find("p99 latency high").pass);
        assert!(find("lost").pass && find("DLQ = injected poison").pass);
    }

    #[test]
    fn no_sends_at_a_priority_with_a_target_is_a_failure_not_a_pass() {
        let slo = Slo {
            p99_ms: PerPriority {
                low: Some(1000.0),
                ..PerPriority::default()
            },
            ..Slo::default()
        };
        let latency = LatencyByPriority::default();
        let audit = Audit::default();
        let verdicts = evaluate(
            &slo,
            &Measured {
                latency: &latency,
                delivered_per_sec: 0.0,
                audit: &audit,
                ..measured_nothing()
            },
        );
        assert!(!verdicts[0].pass);
    }

    #[test]
    fn lost_messages_and_a_short_dlq_fail() {
        let audit = Audit {
            lost: 1,
            dead_lettered: 2,
            poison_injected: 3,
            ..Audit::default()
        };
        let latency = LatencyByPriority::default();
        let verdicts = evaluate(
            &Slo::default(),
            &Measured {
                latency: &latency,
                delivered_per_sec: 0.0,
                audit: &audit,
                ..measured_nothing()
            },
        );
        assert!(!verdicts.iter().find(|v| v.name == "lost").unwrap().pass);
        assert!(
            !verdicts
                .iter()
                .find(|v| v.name == "DLQ = injected poison")
                .unwrap()
                .pass
        );
    }
}
