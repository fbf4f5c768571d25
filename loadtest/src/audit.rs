//! Conservation audit, in the manner of Jepsen's queue checker: every message
//! accepted must end somewhere, once.
//!
//! - lost: accepted, never terminal (still PENDING/QUEUED at the end, or missing);
//! - duplicated: mailed more than once; of those, `resent_after_interrupted_attempt`
//!   were claimed more than once (a sender died or lost its SENT write mid-attempt,
//!   so the next attempt could not know the mail had gone: at-least-once), and
//!   any other duplicate means two copies were sent, which the claim forbids;
//! - unexpected: mailed, never accepted.

//!
//! The check streams: [`Tally`] takes the store's final records one at a time
//! and keeps, per record, only a 64-bit key of its recipient and its attempts
//! (12 bytes, not the record), so a million-row run is audited in tens of
//! megabytes. [`MailCounts`] keeps the provider's record the same way. Two
//! addresses sharing a key would be counted as one recipient; among a million
//! addresses the chance that any two do is about 3 in 100 million.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use engine::domain::{SendId, SendStatus};

pub use reports::results::Audit;

/// How many examples of each kind of failure an audit keeps for a human.
const EXAMPLES: usize = 10;

/// A recipient's key: a hash of the lower-cased address, the same for every
/// hasher this build makes (`DefaultHasher::new` has fixed keys).
fn recipient_key(recipient: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    recipient.to_ascii_lowercase().hash(&mut hasher);
    hasher.finish()
}

/// One accepted message as the store holds it at the end of the run.
#[derive(Debug, Clone, Copy)]
pub struct FinalRecord<'r> {
    pub send_id: SendId,
    pub recipient: &'r str,
    pub status: SendStatus,
    pub error_reason: Option<&'r str>,
    /// Send attempts claimed.
    pub attempts: u32,
}

/// Emails per recipient in the provider's record, keyed as the audit keys
/// recipients. The address itself is kept only for recipients mailed more
/// than once, to name them in the audit's examples.
#[derive(Debug, Clone, Default)]
pub struct MailCounts {
    counts: HashMap<u64, u64>,
    repeated: HashMap<u64, String>,
}

impl MailCounts {
    pub fn add(&mut self, recipient: &str, emails: u64) {
        let key = recipient_key(recipient);
        let count = self.counts.entry(key).or_default();
        *count += emails;
        if *count > 1 && !self.repeated.contains_key(&key) {
            self.repeated.insert(key, recipient.to_ascii_lowercase());
        }
    }

    /// What was mailed beyond `before`: the counts of a run, from the
    /// provider's record after it and before it.
    pub fn since(self, before: &MailCounts) -> MailCounts {
        let counts: HashMap<u64, u64> = self
            .counts
            .into_iter()
            .filter_map(|(key, n)| {
                let new = n.saturating_sub(before.counts.get(&key).copied().unwrap_or(0));
                (new > 0).then_some((key, new))
            })
            .collect();
        let repeated = self
            .repeated
            .into_iter()
            .filter(|(key, _)| counts.get(key).is_some_and(|n| *n > 1))
            .collect();
        MailCounts { counts, repeated }
    }

    /// Emails in the record, all recipients together.
    pub fn total(&self) -> u64 {
        self.counts.values().sum()
    }
}

impl FromIterator<(String, u64)> for MailCounts {
    fn from_iter<I: IntoIterator<Item = (String, u64)>>(iter: I) -> Self {
        let mut counts = MailCounts::default();
        for (recipient, emails) in iter {
            counts.add(&recipient, emails);
        }
        counts
    }
}

/// The audit's running count of the store's final records, fed one at a time.
#[derive(Debug, Default)]
pub struct Tally {
    audit: Audit,
    /// Recipient key → send attempts claimed for its message.
    attempts: HashMap<u64, u32>,
}

impl Tally {
    pub fn add(&mut self, record: FinalRecord<'_>) {
        let audit = &mut self.audit;
        audit.records_found += 1;
        *audit.by_status.entry(record.status).or_default() += 1;
        if !record.status.is_terminal() {
            audit.lost += 1;
            if audit.lost_examples.len() < EXAMPLES {
                audit
                    .lost_examples
                    .push(format!("{} ({})", record.send_id, record.status));
            }
        }
        if let (Some(reason), SendStatus::Error) = (record.error_reason, record.status) {
            // Group by the reason's stable head, not its unique ids.
            let head: String = reason.chars().take(60).collect();
            *audit.error_reasons.entry(head).or_default() += 1;
        }
        self.attempts.insert(recipient_key(record.recipient), record.attempts);
    }

    /// Checks conservation against what the API accepted and, where the
    /// provider keeps one, its record of mail sent during the run.
    pub fn finish(self, accepted: u64, mailed: Option<&MailCounts>, dead_lettered: u64, poison_injected: u64) -> Audit {
        let mut result = Audit {
            accepted,
            dead_lettered,
            poison_injected,
            mail_record_checked: mailed.is_some(),
            ..self.audit
        };
        // Accepted but with no record at all counts as lost too.
        result.lost += accepted.saturating_sub(result.records_found);
        let Some(mailed) = mailed else { return result };
        for (key, count) in &mailed.counts {
            let Some(claimed) = self.attempts.get(key) else {
                result.unexpected += count;
                continue;
            };
            let extra = count.saturating_sub(1);
            result.duplicated += extra;
            if *claimed > 1 {
                result.resent_after_interrupted_attempt += extra.min(u64::from(*claimed) - 1);
            }
            if let Some(recipient) = mailed.repeated.get(key).filter(|_| *count > 1) {
                result
                    .duplicate_examples
                    .push(format!("{recipient} ×{count} ({claimed} attempts)"));
            }
        }
        result.duplicate_examples.sort();
        result.duplicate_examples.truncate(EXAMPLES);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ERROR: &str = "rejected: MessageRejected";

    fn record(to: &str, status: SendStatus) -> FinalRecord<'_> {
        FinalRecord {
            send_id: SendId::new(),
            recipient: to,
            status,
            error_reason: (status == SendStatus::Error).then_some(ERROR),
            attempts: 1,
        }
    }

    fn tally(records: &[FinalRecord<'_>]) -> Tally {
        let mut tally = Tally::default();
        records.iter().for_each(|r| tally.add(*r));
        tally
    }

    fn mail(counts: &[(&str, u64)]) -> MailCounts {
        counts.iter().map(|(to, n)| (to.to_string(), *n)).collect()
    }

    #[test]
    fn a_clean_run_has_nothing_lost_duplicated_or_unexpected() {
        let records = [
            record("a@x.com", SendStatus::Sent),
            record("b@x.com", SendStatus::Error),
        ];
        let result = tally(&records).finish(2, Some(&mail(&[("A@x.com", 1)])), 0, 0);
        assert_eq!((result.lost, result.duplicated, result.unexpected), (0, 0, 0));
        assert_eq!(result.count(SendStatus::Sent), 1);
        assert_eq!(result.error_reasons[ERROR], 1);
    }

    #[test]
    fn stuck_missing_doubled_and_stray_mail_are_each_counted() {
        let records = [
            record("a@x.com", SendStatus::Sent),
            record("b@x.com", SendStatus::Queued),
            record("c@x.com", SendStatus::Pending),
        ];
        let mailed = mail(&[("a@x.com", 3), ("stranger@x.com", 1)]);
        let result = tally(&records).finish(4, Some(&mailed), 0, 0);
        assert_eq!(result.lost, 3, "two stuck and one with no record");
        assert_eq!(result.duplicated, 2);
        assert_eq!(
            result.resent_after_interrupted_attempt, 0,
            "claimed once, mailed thrice"
        );
        assert_eq!(result.unexpected, 1);
        assert_eq!(result.lost_examples.len(), 2);
        assert!(
            result.lost_examples[0].ends_with("(QUEUED)"),
            "{:?}",
            result.lost_examples
        );
        assert_eq!(result.duplicate_examples, ["a@x.com ×3 (1 attempts)"]);
    }

    #[test]
    fn a_resend_after_an_interrupted_attempt_is_told_apart_from_two_copies_sent() {
        let mut retried = record("a@x.com", SendStatus::Sent);
        retried.attempts = 2;
        let records = [retried, record("b@x.com", SendStatus::Sent)];
        let mailed = mail(&[("a@x.com", 2), ("b@x.com", 2)]);
        let result = tally(&records).finish(2, Some(&mailed), 0, 0);
        assert_eq!(result.duplicated, 2);
        assert_eq!(result.resent_after_interrupted_attempt, 1, "only a@ was claimed twice");
    }

    #[test]
    fn without_a_mail_record_only_the_store_is_checked() {
        let result = tally(&[record("a@x.com", SendStatus::Sent)]).finish(1, None, 0, 0);
        assert!(!result.mail_record_checked);
        assert_eq!((result.lost, result.duplicated, result.unexpected), (0, 0, 0));
    }

    #[test]
    fn a_run_counts_only_the_mail_sent_after_the_record_before_it() {
        let before = mail(&[("a@x.com", 2), ("b@x.com", 1)]);
        let after = mail(&[("a@x.com", 3), ("b@x.com", 3), ("c@x.com", 1)]);
        let during = after.since(&before);
        assert_eq!(during.total(), 4);
        let records = [
            record("a@x.com", SendStatus::Sent),
            record("b@x.com", SendStatus::Sent),
            record("c@x.com", SendStatus::Sent),
        ];
        let result = tally(&records).finish(3, Some(&during), 0, 0);
        assert_eq!(result.duplicated, 1, "b was mailed twice in the run");
        assert_eq!(result.duplicate_examples, ["b@x.com ×2 (1 attempts)"]);
    }
}
