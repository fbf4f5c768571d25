//! Courier's live view: `cargo run -p tui -- --engine http://127.0.0.1:8080`.
//!
//! - [`Snapshot`] (from `vocabulary`): one reading of the pipeline, as the
//!   engine serves it at `/stats`, the pure data every output starts from;
//! - [`app`]: the view's state, updated by readings and keys;
//! - [`ui`]: `draw(frame, &app)`, one function per panel;
//! - [`event_loop`]: the terminal, keys and readings, with a plain line per
//!   reading when stdout is not a terminal.

pub mod app;
pub mod event_loop;
pub mod ui;

pub use vocabulary::stats::Snapshot;
