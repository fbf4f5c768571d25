//! Courier's engine: the message pipeline it simulates and measures.
//!
//! Request path: [`server`] (connections, timeouts) → [`api`] (axum: CSV
//! campaigns, notifications, health, metrics, [`graphql`]) → [`campaign`]
//! (a batch: attachments, archive, report) → [`pipeline`] (record PENDING in the [`store`],
//! route by [`routing`], enqueue on the priority [`queue`]s, record QUEUED) →
//! [`sender`] workers (weighted receive, conditional claim, [`mailer`],
//! SENT/ERROR; the reconciler ends dead letters) → [`metrics`].
//!
//! [`domain`] holds the types and the field rules both entry points share
//! (`domain::content`); [`csv_upload`] the streaming CSV checks;
//! [`config`] the layered settings; [`aws`] builds the SDK clients once and
//! [`provision`] creates the resources; [`startup`] wires it all together.
//! [`faults`] injects failures inside the SDK's calls, [`metering`] counts
//! what each call would be billed for and [`load`] the load each call met.
//! AWS types stay in the adapters (`queue`, `store`, `blobs`, `mailer`);
//! `memory` (tests, and the `sim` feature) implements the same traits in
//! memory with AWS's semantics, so decisions are tested without a stack.

pub mod api;
pub mod aws;
pub mod batches;
pub mod blobs;
pub mod campaign;
pub mod clock;
pub mod config;
pub mod csv_upload;
pub mod domain;
pub mod faults;
pub mod graphql;
pub mod load;
pub mod mailer;
#[cfg(any(test, feature = "sim"))]
pub mod memory;
pub mod metering;
pub mod metrics;
pub mod pipeline;
pub mod provision;
pub mod queue;
pub mod routing;
pub mod sender;
pub mod server;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod startup;
pub mod store;

pub use startup::Application;
