//! Courier's stress run: `cargo run -p loadtest -- run scenarios/<name>.toml`.
//!
//! A run flows one way ([`run`]): set-up starts or connects to the stack and
//! runs the engine in-process with its AWS clients routed through a fault
//! plan; [`driver`] (goose, as an open model) offers the scenario's traffic
//! while the fault timeline plays and a sampler reads the pipeline, both
//! sending events to one [`collector`]; the run drains, gathers every
//! accepted message's final record, and [`summarize`] (pure) turns what was
//! gathered into the versioned [`results`]: the conservation [`audit`],
//! [`latency`] corrected for coordinated omission, and the [`slo`] verdicts.
//! [`cpu`] says where the CPU went; [`check_stack`] describes the stack the
//! numbers came from, and [`capacity`] measures how much the pipeline carries
//! on it (senders' concurrency stepped up until throughput stops growing).
//! [`run::sim`] runs a scenario on virtual time against models of the
//! services (`--stack sim`), and [`sweep`] runs it so over a range of one
//! setting to answer "how many workers, how much quota".

pub mod audit;
pub mod capacity;
pub mod check_stack;
pub mod collector;
pub mod cpu;
pub mod driver;
pub mod latency;
pub mod results;
pub mod run;
pub mod slo;
pub mod summarize;
pub mod sweep;

/// Exit code of a run whose SLOs were not met.
pub const EXIT_SLO_BREACH: i32 = 3;
/// Exit code when the harness itself failed (bad scenario, stack, engine).
pub const EXIT_HARNESS_ERROR: i32 = 1;
