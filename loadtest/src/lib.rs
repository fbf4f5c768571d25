//! Courier's stress run: `cargo run -p loadtest -- run scenarios/<name>.toml`.
//!
//! [`run`] starts or connects to the stack, runs the engine in-process with
//! its AWS clients routed through a fault plan, and lets [`driver`] (goose, as
//! an open model) offer the scenario's traffic while the fault timeline plays.
//! It then drains, follows every accepted message to its end ([`audit`]),
//! measures latency ([`latency`], corrected for coordinated omission), judges
//! the SLOs ([`slo`]) and writes a versioned [`results`] file.
//! [`check_stack`] and [`calibrate`] describe the stack the numbers came from.

pub mod audit;
pub mod calibrate;
pub mod check_stack;
pub mod driver;
pub mod latency;
pub mod results;
pub mod run;
pub mod slo;

/// Exit code of a run whose SLOs were not met.
pub const EXIT_SLO_BREACH: i32 = 3;
/// Exit code when the harness itself failed (bad scenario, stack, engine).
pub const EXIT_HARNESS_ERROR: i32 = 1;
