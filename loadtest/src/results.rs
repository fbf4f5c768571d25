//! The results file every run writes: versioned JSON that reports, the CI
//! gate and people read. Bump [`SCHEMA_VERSION`] on any incompatible change.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::audit::Audit;
use crate::check_stack::CheckResult;
use crate::latency::Percentiles;
use crate::slo::Verdict;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
pub struct RunResults {
    pub schema_version: u32,
    pub scenario: ScenarioInfo,
    pub verdict: String,
    pub started_at: String,
    pub traffic_secs: f64,
    pub total_secs: f64,
    pub slo: Vec<Verdict>,
    pub audit: Audit,
    pub offered: Offered,
    /// Accepted→SENT, corrected for coordinated omission (from the intended arrival time).
    pub latency_ms: BTreeMap<String, Percentiles>,
    /// As the engine measured it (from acceptance), for comparison.
    pub latency_uncorrected_ms: BTreeMap<String, Percentiles>,
    /// Latency of messages that arrived before the first campaign, and after it.
    pub latency_by_phase_ms: BTreeMap<String, BTreeMap<String, Percentiles>>,
    pub delivered_per_sec: f64,
    pub calibration: Option<crate::calibrate::Calibration>,
    /// delivered_per_sec over the calibrated ceiling, when calibrated in the same run.
    pub fraction_of_ceiling: Option<f64>,
    pub timeseries: Vec<Sample>,
    pub faults: Vec<FaultWindow>,
    pub fault_counts: BTreeMap<String, u64>,
    pub aws_calls: BTreeMap<String, u64>,
    pub check_stack: Vec<CheckResult>,
    pub stack: StackInfo,
    pub machine: MachineInfo,
    pub goose_report: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioInfo {
    pub name: String,
    pub description: String,
    pub file: String,
    pub seed: u64,
}

/// What the generator offered and how the API answered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Offered {
    pub requests: u64,
    pub campaigns: u64,
    pub notifications: u64,
    /// Messages the plan expected to be accepted.
    pub expected_messages: u64,
    /// Requests that started more than the lateness tolerance after their intended time.
    pub late_starts: u64,
    /// Requests never started before traffic ended.
    pub not_started: u64,
    pub failed_requests: u64,
    pub rejected_rows: u64,
    pub duplicate_rows: u64,
}

/// One sampling tick.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub t_secs: f64,
    pub accepted: u64,
    pub sent: u64,
    pub errors: u64,
    pub retries: u64,
    pub sent_per_sec: f64,
    pub errors_per_sec: f64,
    pub retries_per_sec: f64,
    /// Per queue (`high`, `high-dlq`, …): visible + in flight.
    pub queue_depths: BTreeMap<String, QueueDepthSample>,
    /// Accepted→SENT so far, per priority, as the engine measures it.
    pub latency_ms: BTreeMap<String, LatencySample>,
    pub active_faults: Vec<String>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencySample {
    pub count: u64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct QueueDepthSample {
    pub visible: u64,
    pub in_flight: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FaultWindow {
    pub kind: String,
    pub start_secs: f64,
    pub end_secs: Option<f64>,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StackInfo {
    pub target: String,
    pub versions: BTreeMap<String, String>,
    pub startup_secs: f64,
    pub mailer: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    pub cores: usize,
    pub memory_gib: f64,
    pub os: String,
    pub courier_version: String,
}

impl MachineInfo {
    pub fn current() -> Self {
        let memory_kib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("MemTotal:"))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
            })
            .unwrap_or(0.0);
        Self {
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
            courier_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}
