//! Conservation audit, in the manner of Jepsen's queue checker: every message
//! accepted must end somewhere, once.
//!
//! - lost: accepted, never terminal (still PENDING/QUEUED at the end, or missing);
//! - duplicated: mailed more than once; of those, `resent_after_interrupted_attempt`
//!   were claimed more than once (a sender died or lost its SENT write mid-attempt,
//!   so the next attempt could not know the mail had gone: at-least-once), and
//!   any other duplicate means two copies were sent, which the claim forbids;
//! - unexpected: mailed, never accepted.

use std::collections::HashMap;

use engine::domain::SendStatus;

pub use reports::results::Audit;

/// One accepted message as the store holds it at the end of the run.
#[derive(Debug, Clone)]
pub struct FinalRecord {
    pub send_id: String,
    pub recipient: String,
    pub status: SendStatus,
    pub error_reason: Option<String>,
    /// Send attempts claimed.
    pub attempts: u32,
}

/// Checks conservation. `mailed` counts each recipient's emails sent during the
/// run (from the provider's record), when there is one.
pub fn audit(
    accepted: u64,
    records: &[FinalRecord],
    mailed: Option<&HashMap<String, u64>>,
    dead_lettered: u64,
    poison_injected: u64,
) -> Audit {
    let mut result = Audit {
        accepted,
        records_found: records.len() as u64,
        dead_lettered,
        poison_injected,
        mail_record_checked: mailed.is_some(),
        ..Audit::default()
    };
    for record in records {
        *result.by_status.entry(record.status).or_default() += 1;
        if !record.status.is_terminal() {
            result.lost += 1;
            if result.lost_examples.len() < 10 {
                result
                    .lost_examples
                    .push(format!("{} ({})", record.send_id, record.status));
            }
        }
        if let Some(reason) = &record.error_reason {
            if record.status == SendStatus::Error {
                // Group by the reason's stable head, not its unique ids.
                let head: String = reason.chars().take(60).collect();
                *result.error_reasons.entry(head).or_default() += 1;
            }
        }
    }
    // Accepted but with no record at all counts as lost too.
    result.lost += accepted.saturating_sub(records.len() as u64);
    if let Some(mailed) = mailed {
        let attempts: HashMap<String, u32> = records
            .iter()
            .map(|r| (r.recipient.to_ascii_lowercase(), r.attempts))
            .collect();
        for (recipient, count) in mailed {
            if let Some(claimed) = attempts.get(&recipient.to_ascii_lowercase()) {
                let extra = count.saturating_sub(1);
                result.duplicated += extra;
                if *claimed > 1 {
                    result.resent_after_interrupted_attempt += extra.min(u64::from(*claimed) - 1);
                }
                if *count > 1 && result.duplicate_examples.len() < 10 {
                    result
                        .duplicate_examples
                        .push(format!("{recipient} ×{count} ({claimed} attempts)"));
                }
            } else {
                result.unexpected += count;
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, to: &str, status: SendStatus) -> FinalRecord {
        FinalRecord {
            send_id: id.into(),
            recipient: to.into(),
            status,
            error_reason: (status == SendStatus::Error).then(|| "rejected: MessageRejected".into()),
            attempts: 1,
        }
    }

    #[test]
    fn a_clean_run_has_nothing_lost_duplicated_or_unexpected() {
        let records = vec![
            record("1", "a@x.com", SendStatus::Sent),
            record("2", "b@x.com", SendStatus::Error),
        ];
        let mailed = HashMap::from([("a@x.com".to_string(), 1)]);
        let result = audit(2, &records, Some(&mailed), 0, 0);
        assert_eq!((result.lost, result.duplicated, result.unexpected), (0, 0, 0));
        assert_eq!(result.count(SendStatus::Sent), 1);
        assert_eq!(result.error_reasons["rejected: MessageRejected"], 1);
    }

    #[test]
    fn stuck_missing_doubled_and_stray_mail_are_each_counted() {
        let records = vec![
            record("1", "a@x.com", SendStatus::Sent),
            record("2", "b@x.com", SendStatus::Queued),
            record("3", "c@x.com", SendStatus::Pending),
        ];
        let mailed = HashMap::from([("a@x.com".to_string(), 3), ("stranger@x.com".to_string(), 1)]);
        let result = audit(4, &records, Some(&mailed), 0, 0);
        assert_eq!(result.lost, 3, "two stuck and one with no record");
        assert_eq!(result.duplicated, 2);
        assert_eq!(
            result.resent_after_interrupted_attempt, 0,
            "claimed once, mailed thrice"
        );
        assert_eq!(result.unexpected, 1);
        assert_eq!(result.lost_examples.len(), 2);
    }

    #[test]
    fn a_resend_after_an_interrupted_attempt_is_told_apart_from_two_copies_sent() {
        let mut retried = record("1", "a@x.com", SendStatus::Sent);
        retried.attempts = 2;
        let records = vec![retried, record("2", "b@x.com", SendStatus::Sent)];
        let mailed = HashMap::from([("a@x.com".to_string(), 2), ("b@x.com".to_string(), 2)]);
        let result = audit(2, &records, Some(&mailed), 0, 0);
        assert_eq!(result.duplicated, 2);
        assert_eq!(result.resent_after_interrupted_attempt, 1, "only a@ was claimed twice");
    }

    #[test]
    fn without_a_mail_record_only_the_store_is_checked() {
        let result = audit(1, &[record("1", "a@x.com", SendStatus::Sent)], None, 0, 0);
        assert!(!result.mail_record_checked);
        assert_eq!((result.lost, result.duplicated, result.unexpected), (0, 0, 0));
    }
}
