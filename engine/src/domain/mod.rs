//! Courier's domain: what a message, a priority, a status and a batch are.
//! No AWS types here; adapters translate at the edge.

pub mod content;
mod email;
mod message;
mod status;

pub use email::{AddressError, EmailAddress};
pub use message::{Attachment, BatchId, CopyId, MessageBody, OutboundMessage, SendId};
pub use status::SendRecord;
/// The words every crate shares, defined once in `vocabulary`.
pub use vocabulary::{MailerKind, MessageKind, PerPriority, Priority, QueueRef, SendStatus, Stage};
