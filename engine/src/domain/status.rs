use super::{BatchId, MessageKind, OutboundMessage, Priority, SendId};
use chrono::{DateTime, Utc};

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

named_enum!(SendStatus, "status");

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

impl SendRecord {
    /// The record of a message just accepted: PENDING, no attempts yet.
    pub fn pending(message: &OutboundMessage) -> Self {
        Self {
            send_id: message.send_id,
            batch_id: message.batch_id,
            kind: message.kind,
            priority: message.priority,
            recipient: message.recipient.clone(),
            subject: message.subject.clone(),
            status: SendStatus::Pending,
            created_at: message.accepted_at,
            updated_at: message.accepted_at,
            sent_at: None,
            attempts: 0,
            provider_message_id: None,
            error_reason: None,
        }
    }
}
