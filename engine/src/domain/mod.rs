//! Courier's domain: what a message, a priority, a status and a batch are.
//! No AWS types here; adapters translate at the edge.

mod email;
mod message;
mod status;

pub use email::{AddressError, EmailAddress};
pub use message::{Attachment, BatchId, MessageBody, MessageKind, OutboundMessage, Priority, SendId};
pub use status::{SendRecord, SendStatus};
