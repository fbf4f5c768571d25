//! The sender's decisions, as pure functions: given what happened to one
//! received message, what becomes of it on its queue. No I/O, no clock:
//! every branch is a table row in the tests below, and the same code runs
//! against real SQS and, later, simulated time.
//!
//! The effects (claim, fetch content, send, record) happen in
//! [`super::process`], which sums them up as a [`Handled`]; [`decide`] turns
//! that into a [`Next`]; [`super::apply`] carries it out.

use std::time::Duration;

use crate::domain::SendStatus;

/// What happened to one received message, as far as it got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// The body is not a message this pipeline wrote (poison).
    Undecodable(String),
    /// The status store could not be asked.
    ClaimFailed(String),
    /// The store has no record of it: not a message this pipeline accepted (yet).
    Missing,
    /// Already SENT or ERROR (a redelivery).
    AlreadyFinal(SendStatus),
    /// Another copy holds the claim and stays on its queue until the message
    /// is final: this copy is redundant.
    SecondCopy,
    /// A stored body or attachment could not be read.
    ContentFailed(String),
    /// The provider took it; `recorded` says whether SENT was written.
    Sent { recorded: Result<(), String> },
    /// The provider asked us to slow down.
    Throttled(String),
    /// The provider refused it for good; `recorded` says whether ERROR was written.
    Rejected {
        reason: String,
        recorded: Result<(), String>,
    },
    /// A failure that may pass (network, 5xx, connection refused).
    Transient(String),
    /// Not sent: the send budget had no room for it (a daily quota used up,
    /// or no permit in time); it may go again after this long.
    Deferred { reason: String, after: Duration },
}

/// What to do with the message on its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Finished with: delete it.
    Delete,
    /// Hide it for this long, then let it be received again (receive count grows).
    RetryAfter(Duration),
    /// Put a fresh copy on the queue after this delay (its receive count starts
    /// again) and delete this one: a throttle must never dead-letter a message.
    Requeue(Duration),
    /// Do nothing: it reappears after the queue's visibility timeout, and the
    /// redrive policy ends it in the DLQ if it keeps failing.
    Leave,
}

/// SQS's longest message delay.
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// The settings the decisions depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first retry delay; it doubles with every receive.
    pub base: Duration,
    pub max: Duration,
    /// Receives before SQS moves a message to its DLQ.
    pub max_receives: u32,
}

impl RetryPolicy {
    /// The delay before the next attempt of a message received `receive_count` times.
    pub fn backoff(&self, receive_count: u32) -> Duration {
        let doublings = receive_count.saturating_sub(1).min(16);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }

    /// Whether one more receive would move the message to its DLQ.
    pub fn on_last_receive(&self, receive_count: u32) -> bool {
        receive_count + 1 >= self.max_receives
    }
}

/// The one place the sender decides what becomes of a message.
pub fn decide(handled: &Handled, receive_count: u32, policy: &RetryPolicy) -> Next {
    let later = Next::RetryAfter(policy.backoff(receive_count));
    match handled {
        Handled::AlreadyFinal(_) | Handled::SecondCopy | Handled::Sent { recorded: Ok(()) } => Next::Delete,
        Handled::Rejected { recorded: Ok(()), .. } => Next::Delete,
        // Sent but not recorded: keep it, so the record is retried. A resend
        // is possible then; it is the price of never losing a SENT.
        Handled::Sent { recorded: Err(_) } | Handled::Rejected { recorded: Err(_), .. } => Next::Leave,
        // Could not even ask the store: SQS redelivers after the visibility timeout.
        Handled::ClaimFailed(_) => Next::Leave,
        Handled::Throttled(_) if policy.on_last_receive(receive_count) => Next::Requeue(policy.backoff(receive_count)),
        // The message did nothing wrong: a fresh copy waits (its receive count
        // starts again, so waiting never dead-letters it), within SQS's longest delay.
        Handled::Deferred { after, .. } => Next::Requeue((*after).min(MAX_DELAY)),
        // Poison and unknown messages back off too, and reach the DLQ after
        // `max_receives`, where the reconciler ends them.
        Handled::Undecodable(_) | Handled::Missing | Handled::ContentFailed(_) => later,
        Handled::Throttled(_) | Handled::Transient(_) => later,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        base: Duration::from_secs(1),
        max: Duration::from_secs(60),
        max_receives: 3,
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn every_branch_of_the_sender_decides_as_the_table_says() {
        let failed = || Err("DynamoDB unavailable".to_string());
        let table: Vec<(Handled, u32, Next)> = vec![
            (Handled::Sent { recorded: Ok(()) }, 1, Next::Delete),
            (Handled::Sent { recorded: failed() }, 1, Next::Leave),
            (Handled::AlreadyFinal(SendStatus::Sent), 2, Next::Delete),
            (Handled::AlreadyFinal(SendStatus::Error), 1, Next::Delete),
            (Handled::SecondCopy, 1, Next::Delete),
            (Handled::Missing, 1, Next::RetryAfter(secs(1))),
            (Handled::Missing, 2, Next::RetryAfter(secs(2))),
            (Handled::ClaimFailed("timeout".into()), 1, Next::Leave),
            (Handled::Undecodable("not json".into()), 1, Next::RetryAfter(secs(1))),
            (
                Handled::ContentFailed("no such key".into()),
                2,
                Next::RetryAfter(secs(2)),
            ),
            (Handled::Throttled("slow down".into()), 1, Next::RetryAfter(secs(1))),
            // On the last allowed receive, a throttle re-enqueues instead of dead-lettering.
            (Handled::Throttled("slow down".into()), 2, Next::Requeue(secs(2))),
            (Handled::Throttled("slow down".into()), 3, Next::Requeue(secs(4))),
            (Handled::Transient("refused".into()), 2, Next::RetryAfter(secs(2))),
            // Deferred by the budget: a fresh copy, whatever the receive count.
            (
                Handled::Deferred {
                    reason: "daily quota".into(),
                    after: secs(10),
                },
                3,
                Next::Requeue(secs(10)),
            ),
            (
                Handled::Deferred {
                    reason: "daily quota".into(),
                    after: secs(86_400),
                },
                1,
                Next::Requeue(MAX_DELAY),
            ),
            // A transient failure on the last receive is left to the redrive policy.
            (Handled::Transient("refused".into()), 3, Next::RetryAfter(secs(4))),
            (
                Handled::Rejected {
                    reason: "550".into(),
                    recorded: Ok(()),
                },
                1,
                Next::Delete,
            ),
            (
                Handled::Rejected {
                    reason: "550".into(),
                    recorded: failed(),
                },
                1,
                Next::Leave,
            ),
        ];
        for (handled, receives, expected) in table {
            assert_eq!(
                decide(&handled, receives, &POLICY),
                expected,
                "{handled:?} on receive {receives}"
            );
        }
    }

    #[test]
    fn the_backoff_doubles_per_receive_up_to_its_cap() {
        let delays: Vec<u64> = (1..=8).map(|r| POLICY.backoff(r).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(POLICY.backoff(0), secs(1));
        assert_eq!(POLICY.backoff(u32::MAX), secs(60), "no overflow");
    }
}
