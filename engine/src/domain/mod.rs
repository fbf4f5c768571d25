//! Courier's domain: what a message, a priority, a status and a batch are.
//! No AWS types here; adapters translate at the edge.

/// `Display` and `FromStr` (case-insensitive) for an enum with `ALL` and `as_str`.
macro_rules! named_enum {
    ($type:ty, $what:literal) => {
        impl std::fmt::Display for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $type {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$type>::ALL
                    .into_iter()
                    .find(|v| v.as_str().eq_ignore_ascii_case(s.trim()))
                    .ok_or_else(|| {
                        let names: Vec<&str> = <$type>::ALL.iter().map(|v| v.as_str()).collect();
                        format!("`{s}` is not a {} ({})", $what, names.join(", "))
                    })
            }
        }
    };
}

pub mod content;
mod email;
mod message;
mod status;

pub use email::{AddressError, EmailAddress};
pub use message::{Attachment, BatchId, MessageBody, MessageKind, OutboundMessage, Priority, SendId};
pub use status::{SendRecord, SendStatus};
