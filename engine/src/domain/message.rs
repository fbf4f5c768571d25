use chrono::{DateTime, Utc};
use std::fmt;
use std::str::FromStr;
use vocabulary::{MessageKind, Priority};

use super::EmailAddress;

macro_rules! uuid_id {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The identifier of one ", $what, ".")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(uuid::Uuid);

        impl $name {
            pub fn new() -> Self {
                Self(uuid::Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s.trim())
                    .map(Self)
                    .map_err(|e| format!("`{s}` is not a {}: {e}", $what))
            }
        }
    };
}

uuid_id!(SendId, "send (one message to one recipient)");
uuid_id!(BatchId, "batch (one uploaded campaign file)");
uuid_id!(
    CopyId,
    "copy of a message put on a queue (a re-enqueued message is a new copy)"
);

impl SendId {
    /// The id of a campaign's row: the same batch and row give the same id,
    /// so a batch processed again after a crash writes and sends nothing twice.
    pub fn for_row(batch: BatchId, row: u64) -> Self {
        Self(uuid::Uuid::new_v5(&batch.0, &row.to_be_bytes()))
    }
}

/// A message body: inline, or stored in the blob store when too large for a queue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", tag = "where")]
pub enum MessageBody {
    Inline { text: String },
    Stored { key: String, bytes: usize },
}

/// A file stored in the blob store and attached when the message is sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub key: String,
    pub filename: String,
    pub content_type: String,
}

/// One message to one recipient, as it travels through the queues.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundMessage {
    pub send_id: SendId,
    pub batch_id: Option<BatchId>,
    pub kind: MessageKind,
    pub priority: Priority,
    pub recipient: EmailAddress,
    pub subject: String,
    pub body: MessageBody,
    pub attachment: Option<Attachment>,
    pub accepted_at: DateTime<Utc>,
    /// Which copy this is: a sender's claim holds the message for this copy
    /// only, so a second copy enqueued by a resumed batch is not sent twice.
    #[serde(default)]
    pub copy_id: CopyId,
}

impl OutboundMessage {
    /// The body as it goes on the queue. Versioned so old messages stay readable.
    pub fn encode(&self) -> String {
        serde_json::to_string(&WireMessage { v: 1, message: self }).expect("messages always serialize")
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        #[derive(serde::Deserialize)]
        struct Owned {
            v: u32,
            #[serde(flatten)]
            message: OutboundMessage,
        }
        let owned: Owned = serde_json::from_str(text).map_err(|e| format!("undecodable message body: {e}"))?;
        if owned.v != 1 {
            return Err(format!("message format version {} is not supported", owned.v));
        }
        Ok(owned.message)
    }
}

#[derive(serde::Serialize)]
struct WireMessage<'a> {
    v: u32,
    #[serde(flatten)]
    message: &'a OutboundMessage,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_survives_the_trip_through_its_wire_form() {
        let message = OutboundMessage {
            send_id: SendId::new(),
            batch_id: Some(BatchId::new()),
            kind: MessageKind::Offer,
            priority: Priority::Medium,
            recipient: EmailAddress::parse("a@example.com").unwrap(),
            subject: "Hi".into(),
            body: MessageBody::Stored {
                key: "bodies/x".into(),
                bytes: 300_000,
            },
            attachment: Some(Attachment {
                key: "att/x".into(),
                filename: "x.pdf".into(),
                content_type: "application/pdf".into(),
            }),
            accepted_at: crate::clock::now(),
            copy_id: Default::default(),
        };
        assert_eq!(OutboundMessage::decode(&message.encode()).unwrap(), message);
    }

    #[test]
    fn garbage_and_future_versions_are_refused_with_a_reason() {
        assert!(OutboundMessage::decode("not json").unwrap_err().contains("undecodable"));
        let message = OutboundMessage {
            send_id: SendId::new(),
            batch_id: None,
            kind: MessageKind::Reminder,
            priority: Priority::High,
            recipient: EmailAddress::parse("a@example.com").unwrap(),
            subject: "s".into(),
            body: MessageBody::Inline { text: "b".into() },
            attachment: None,
            accepted_at: crate::clock::now(),
            copy_id: Default::default(),
        };
        let future = message.encode().replacen("\"v\":1", "\"v\":2", 1);
        assert!(OutboundMessage::decode(&future).unwrap_err().contains("version 2"));
    }

    #[test]
    fn priorities_kinds_and_ids_parse_from_their_names() {
        assert_eq!("HIGH".parse::<Priority>().unwrap(), Priority::High);
        assert!("urgent".parse::<Priority>().is_err());
        assert_eq!(" Offer ".parse::<MessageKind>().unwrap(), MessageKind::Offer);
        let id = SendId::new();
        assert_eq!(id.to_string().parse::<SendId>().unwrap(), id);
    }
}
