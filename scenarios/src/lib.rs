//! Scenario files for Courier's load runs.
//!
//! - [`model`]: the TOML schema ([`Scenario`]), its defaults, and validation
//!   errors that name the file, line and field.
//! - [`generate`]: the traffic a scenario describes — campaign CSVs and
//!   notifications with their arrival times — derived from its seed alone, so
//!   the same scenario and seed give byte-identical files.

pub mod generate;
pub mod model;

pub use generate::{generate, Arrival, Plan, Request};
pub use model::{ArrivalShape, Fault, FaultEnd, FaultSpec, PositiveRate, Scenario, ScenarioError, Slo, TargetSpec};
pub use vocabulary::PerPriority;
