use chrono::{DateTime, Utc};
use std::fmt;
use std::str::FromStr;

use super::{BatchId, MessageKind, Priority, SendId};

/// Where a message is in its life. SENT and ERROR are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SendStatus {
    /// Accepted and recorded, not yet on a queue.
    Pending,
    /// On its priority queue.
    Queued,
    /// Handed to the mail provider, which accepted it.
    Sent,
    /// Given up on: rejected by the provider, failed to enqueue, or dead-lettered.
    Error,
}

impl SendStatus {
    pub const ALL: [SendStatus; 4] = [
        SendStatus::Pending,
        SendStatus::Queued,
        SendStatus::Sent,
        SendStatus::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SendStatus::Pending => "PENDING",
            SendStatus::Queued => "QUEUED",
            SendStatus::Sent => "SENT",
            SendStatus::Error => "ERROR",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, SendStatus::Sent | SendStatus::Error)
    }
}

impl fmt::Display for SendStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SendStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SendStatus::ALL
            .into_iter()
            .find(|status| status.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| format!("`{s}` is not a status (PENDING, QUEUED, SENT, ERROR)"))
    }
}

/// What the status store holds for one message.
#[derive(Debug, Clone, PartialEq)]
pub struct SendRecord {
    pub send_id: SendId,
    pub batch_id: Option<BatchId>,
    pub kind: MessageKind,
    pub priority: Priority,
    pub recipient: String,
    pub subject: String,
    pub status: SendStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub provider_message_id: Option<String>,
    pub error_reason: Option<String>,
}
