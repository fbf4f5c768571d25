//! Judging a run against its scenario's SLOs.

use engine::domain::{PerPriority, SendStatus};
use scenarios::Slo;

use crate::audit::Audit;
use crate::latency::LatencyByPriority;

pub use reports::results::SloCheck;

/// The figures the SLOs are judged on.
pub struct Measured<'a> {
    pub latency: &'a LatencyByPriority,
    pub delivered_per_sec: f64,
    pub audit: &'a Audit,
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
