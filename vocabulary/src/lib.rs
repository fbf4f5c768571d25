//! Courier's vocabulary, defined once and used by every crate.
//!
//! Each word is a type; its spelling (in JSON, TOML, queue names, Prometheus
//! labels) lives here and nowhere else, so a typo is a compile error rather
//! than a silent mismatch between crates.
//!
//! - [`Priority`] and [`PerPriority`]: which queue, and one value per queue;
//! - [`MessageKind`]: what a message is for (routing maps it to a priority);
//! - [`SendStatus`]: where a message is in its life;
//! - [`Stage`]: the timed steps of handling one message;
//! - [`MailerKind`]: which provider sends;
//! - [`DynamoDbEmulator`] and [`SesV2Emulator`]: which emulators serve DynamoDB and
//!   SES v2 on the local stack;
//! - [`Verdict`]: a run's pass or fail;
//! - [`AwsOperation`]: the AWS calls Courier makes, as `Service.Operation`;
//! - [`QueueRef`]: one of the six queues;
//! - [`stats`]: the live reading the engine serves and the TUI draws;
//! - [`Usage`]: what the AWS calls consumed, in the units AWS bills.

#[macro_use]
mod named;
mod operation;
mod priority;
pub mod stats;
mod usage;
mod words;

pub use named::UnknownName;
pub use operation::{AwsOperation, AwsService, LoadBucket};
pub use priority::{PerPriority, Priority, QueueRef};
pub use usage::{Usage, UsageByOperation};
pub use words::{DynamoDbEmulator, MailerKind, MessageKind, SendStatus, SesV2Emulator, Stage, Verdict};
