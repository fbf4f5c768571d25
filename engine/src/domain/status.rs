use super::{BatchId, MessageKind, OutboundMessage, Priority, SendId, SendStatus};
use chrono::{DateTime, Utc};

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
            recipient: message.recipient.to_string(),
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
