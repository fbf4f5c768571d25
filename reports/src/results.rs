//! The results file every load run writes: versioned JSON that the reports,
//! the CI gate and people read. `loadtest` fills these types; everything here
//! is plain data, so one definition serves the writer and every reader.
//!
//! Bump [`SCHEMA_VERSION`] on any incompatible change. Fields added later carry
//! `#[serde(default)]` so older files still load.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
pub use vocabulary::stats::{Depth, Latency as LatencySample};
use vocabulary::{
    AwsService, MailerKind, PerPriority, Priority, QueueRef, SendStatus, Stage, UsageByOperation, Verdict,
};

use crate::cost::Cost;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    pub schema_version: u32,
    pub scenario: ScenarioInfo,
    pub verdict: Verdict,
    pub started_at: String,
    pub traffic_secs: f64,
    pub total_secs: f64,
    pub slo: Vec<SloCheck>,
    pub audit: Audit,
    pub offered: Offered,
    /// Accepted→SENT, corrected for coordinated omission (from the intended arrival time).
    pub latency_ms: BTreeMap<Priority, Percentiles>,
    /// As the engine measured it (from acceptance), for comparison.
    pub latency_uncorrected_ms: BTreeMap<Priority, Percentiles>,
    /// Latency of messages that arrived before the first campaign, and after it.
    pub latency_by_phase_ms: BTreeMap<String, BTreeMap<Priority, Percentiles>>,
    /// Claim→SENT as the senders measured it: the per-message service time,
    /// with no queueing in it; per priority and `all`.
    #[serde(default)]
    pub handling_ms: HandlingTimes,
    /// Each step of handling a message (`claim`, `content`, `send`, `record`),
    /// every attempt whatever its outcome: where the handling time goes.
    #[serde(default)]
    pub stage_ms: BTreeMap<Stage, Percentiles>,
    pub delivered_per_sec: f64,
    /// The pipeline's capacity, when measured in the same run (`run --capacity`).
    #[serde(default)]
    pub capacity: Option<Capacity>,
    /// delivered_per_sec over the capacity's ceiling, when measured in the same run.
    pub fraction_of_ceiling: Option<f64>,
    pub timeseries: Vec<Sample>,
    pub faults: Vec<FaultWindow>,
    pub fault_counts: BTreeMap<String, u64>,
    pub aws_calls: BTreeMap<String, u64>,
    /// How long the stack took to answer each operation (`Service.Operation`)
    /// during the run; injected delays and answers are not in it.
    #[serde(default)]
    pub stack_answer_ms: BTreeMap<String, Percentiles>,
    /// The same, apart by the load each call met: how many calls were open
    /// on the stack when it started (long polls not counted), rounded down
    /// to a power of two. The `calibrated` simulation profile draws from these.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stack_answer_ms_by_load: BTreeMap<String, BTreeMap<vocabulary::LoadBucket, Percentiles>>,
    /// Median answer time of the run's SQS and DynamoDB calls, long polls
    /// excluded: how fast this machine and its emulators were during the run.
    /// The gate reads latencies against it.
    #[serde(default)]
    pub stack_reference_ms: Option<f64>,
    pub check_stack: Vec<CheckResult>,
    /// Each campaign batch as the engine processed it in the background.
    #[serde(default)]
    pub batches: Vec<BatchSummary>,
    pub stack: StackInfo,
    pub machine: MachineInfo,
    pub goose_report: Option<String>,
    /// Where the CPU went (runs before this field have none).
    #[serde(default)]
    pub cpu: CpuUse,
    /// What the calls that reached the stack consumed, per `Service.Operation`,
    /// in the units AWS bills (runs before this field have none).
    #[serde(default)]
    pub aws_usage: UsageByOperation,
    /// That usage priced with a price card: what the run would cost on AWS.
    #[serde(default)]
    pub cost: Option<Cost>,
    /// Set when the run was simulated (`--stack sim`): no stack ran, and
    /// every figure came from models of the services on virtual time.
    #[serde(default)]
    pub simulation: Option<Simulation>,
}

/// How a simulated run was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Simulation {
    /// The services' answer times: `aws-typical`, or `calibrated` from a real run.
    pub profile: String,
    /// The real run a `calibrated` profile came from.
    pub calibrated_from: Option<String>,
    /// The engine's CPU each call took, from the calibrating run (none: free).
    #[serde(default)]
    pub engine_cpu_ms_per_call: Option<f64>,
    /// Virtual seconds simulated, and the wall-clock seconds it took.
    pub virtual_secs: f64,
    pub wall_secs: f64,
    /// Sends the SES model refused for its limits (each attempt counted).
    pub ses_throttles: u64,
    /// Writes DynamoDB throttled, by index partition (`status_index PENDING`):
    /// each partition key value takes 1,000 write units a second.
    #[serde(default)]
    pub partition_throttles: BTreeMap<String, u64>,
    /// The first write throttled: its partition, and when (virtual seconds).
    #[serde(default)]
    pub first_throttled: Option<(String, f64)>,
}

/// `loadtest sweep`: one setting varied over a range, each value a simulated
/// run of the same scenario, and what each run came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    pub scenario: ScenarioInfo,
    /// The setting varied, as a scenario file spells it (`engine.workers`).
    pub setting: String,
    /// What its values count, for axes (`sender workers`).
    pub unit: String,
    /// The simulated services' answer times (`aws-typical`, `calibrated`).
    pub profile: String,
    pub started_at: String,
    /// Wall-clock seconds the whole sweep took.
    pub wall_secs: f64,
    /// One per value, in ascending order of value.
    pub points: Vec<SweepPoint>,
}

/// One value of a sweep and what its simulated run came to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepPoint {
    pub value: f64,
    pub passed: bool,
    /// The objectives that did not hold, by name.
    pub failed: Vec<String>,
    /// Virtual seconds from the first arrival until every message was final.
    pub end_to_end_secs: f64,
    pub delivered_per_sec: f64,
    /// Reminders' (high priority's) accepted→SENT p99; none without reminders.
    pub high_p99_ms: Option<f64>,
    /// Low priority's accepted→SENT p99; none without low-priority messages.
    pub low_p99_ms: Option<f64>,
    pub cost_usd: Option<f64>,
    pub cost_per_1000_usd: Option<f64>,
    pub lost: u64,
    pub duplicated: u64,
    /// Sends refused for SES's sending rate or quota.
    pub ses_throttles: u64,
    /// The point's own results.json, relative to the sweep's file.
    pub results: String,
}

impl Sweep {
    /// The least value at which every objective held, if any did.
    pub fn least_passing(&self) -> Option<&SweepPoint> {
        self.points.iter().find(|p| p.passed)
    }
}

/// Each process's CPU over the run's traffic and drain.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CpuUse {
    /// From the start of traffic to the end of the drain.
    pub window_secs: f64,
    pub cores: usize,
    /// By process: each emulator of the stack, and loadtest itself (harness
    /// and engine share that process).
    pub by_process: BTreeMap<String, ProcessCpu>,
}

impl CpuUse {
    /// The processes, the one that used the most CPU first.
    pub fn busiest_first(&self) -> Vec<(&String, &ProcessCpu)> {
        let mut ranked: Vec<_> = self.by_process.iter().collect();
        ranked.sort_by(|a, b| b.1.cpu_ms.total_cmp(&a.1.cpu_ms));
        ranked
    }

    /// The process that used the most CPU, if any was measured.
    pub fn busiest(&self) -> Option<(&String, &ProcessCpu)> {
        self.busiest_first().first().copied()
    }
}

/// One process's CPU and memory over the window.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ProcessCpu {
    pub cpu_ms: f64,
    /// CPU milliseconds per message SENT (none when nothing was sent).
    pub cpu_ms_per_message: Option<f64>,
    /// Its share of the whole machine (every core) over the window.
    pub machine_pct: f64,
    pub peak_rss_mib: f64,
}

impl RunResults {
    pub fn passed(&self) -> bool {
        self.verdict.passed()
    }

    /// Reads a results file, refusing one written under another schema.
    pub fn load(path: &Path) -> Result<Self, ResultsError> {
        let text = std::fs::read_to_string(path).map_err(|source| ResultsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ResultsError> {
        let path = path.display().to_string();
        // Look at the version first, so a future file gets that error rather than a missing field.
        #[derive(Deserialize)]
        struct Versioned {
            schema_version: Option<u32>,
        }
        let versioned: Versioned = serde_json::from_str(text).map_err(|e| ResultsError::Invalid {
            path: path.clone(),
            line: e.line(),
            message: e.to_string(),
        })?;
        match versioned.schema_version {
            Some(SCHEMA_VERSION) => {}
            found => {
                return Err(ResultsError::Version {
                    path,
                    found: found.map_or("none".into(), |v| v.to_string()),
                })
            }
        }
        serde_json::from_str(text).map_err(|e| ResultsError::Invalid {
            path,
            line: e.line(),
            message: e.to_string(),
        })
    }

    pub fn sent(&self) -> u64 {
        self.audit.count(SendStatus::Sent)
    }

    pub fn errors(&self) -> u64 {
        self.audit.count(SendStatus::Error)
    }

    /// The run's time span on charts: traffic plus drain, as sampled.
    pub fn span_secs(&self) -> f64 {
        self.timeseries
            .last()
            .map(|s| s.t_secs)
            .unwrap_or(0.0)
            .max(self.traffic_secs)
            .max(1.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("{path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}:{line}: not a Courier results file: {message}")]
    Invalid { path: String, line: usize, message: String },
    #[error("{path}: results schema_version {found}, this build reads {SCHEMA_VERSION}")]
    Version { path: String, found: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioInfo {
    pub name: String,
    pub description: String,
    pub file: String,
    pub seed: u64,
    /// Faults added on the command line (`loadtest run --fault`), beyond the file's.
    #[serde(default)]
    pub extra_faults: Vec<String>,
    /// Settings changed from the file's, as `engine.workers = 4`
    /// (each point of `loadtest sweep`).
    #[serde(default)]
    pub overrides: Vec<String>,
}

/// One objective, what was measured, and whether it held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloCheck {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub pass: bool,
}

/// What the conservation audit found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audit {
    /// Messages the API said it accepted.
    pub accepted: u64,
    /// Records found for them in the status store.
    pub records_found: u64,
    pub by_status: BTreeMap<SendStatus, u64>,
    pub lost: u64,
    /// Extra sends beyond the first, summed over recipients.
    pub duplicated: u64,
    /// Of those, resends after an attempt whose outcome was lost (a sender
    /// killed mid-send, or its SENT write failed): the at-least-once price.
    /// Any other duplicate is two copies sent, which must never happen.
    #[serde(default)]
    pub resent_after_interrupted_attempt: u64,
    /// Deliveries of a message already final that the senders' conditional
    /// claim skipped (deleted unsent): SQS's at-least-once copies, or a
    /// message back after a crash. Each one a duplicate send prevented.
    #[serde(default)]
    pub redeliveries_skipped: u64,
    pub unexpected: u64,
    /// Messages in the dead-letter queues at the end.
    pub dead_lettered: u64,
    pub poison_injected: u64,
    /// Whether a provider record of sent mail was available to check against.
    pub mail_record_checked: bool,
    /// The first few lost messages, for a human to look at.
    pub lost_examples: Vec<String>,
    /// The first few recipients mailed more than once, with their counts.
    pub duplicate_examples: Vec<String>,
    pub error_reasons: BTreeMap<String, u64>,
}

impl Audit {
    /// Records found with this final status.
    pub fn count(&self, status: SendStatus) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// Nothing lost, mailed twice or mailed unasked.
    pub fn conserved(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.unexpected == 0
    }
}

/// What the generator offered and how the API answered.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
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

/// Percentiles of one latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// One sampling tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub t_secs: f64,
    pub accepted: u64,
    pub sent: u64,
    pub errors: u64,
    pub retries: u64,
    pub sent_per_sec: f64,
    pub errors_per_sec: f64,
    pub retries_per_sec: f64,
    /// Per queue (`high`, `high-dlq`, …).
    pub queue_depths: BTreeMap<QueueRef, Depth>,
    /// Accepted→SENT so far, per priority, as the engine measures it.
    pub latency_ms: BTreeMap<Priority, LatencySample>,
    pub active_faults: Vec<String>,
    /// SENT so far, per priority.
    #[serde(default)]
    pub sent_by_priority: PerPriority<u64>,
    /// SENT per second since the previous sample, per priority.
    #[serde(default)]
    pub sent_per_sec_by_priority: PerPriority<f64>,
    /// The senders' send budget at this tick, sends/s (none: no rate limit known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_per_sec: Option<f64>,
}

/// Claim→SENT handling times: per priority, and all priorities together.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HandlingTimes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Percentiles>,
    #[serde(flatten)]
    pub by_priority: BTreeMap<Priority, Percentiles>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultWindow {
    pub kind: String,
    pub start_secs: f64,
    pub end_secs: Option<f64>,
    pub detail: String,
}

/// The pipeline's capacity, measured by saturating it: sender concurrency
/// stepped up, with ingest keeping a backlog ahead of the senders, until
/// delivered throughput stops growing (`loadtest capacity`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// What the pipeline sustains once saturated: the median delivered msg/s
    /// of the steps from the knee on. (The best single step is biased upwards
    /// by the noise of a shared machine; the median of the saturated steps is not.)
    pub ceiling_msgs_per_sec: f64,
    /// The best single step, for reference.
    #[serde(default)]
    pub best_step_msgs_per_sec: f64,
    /// The least concurrency (messages in flight at once) that reached 90 % of
    /// the best step: beyond it more senders add latency, not throughput.
    pub knee_concurrency: u32,
    /// Why the ladder stopped climbing.
    pub stopped: String,
    pub mailer: MailerKind,
    /// Each step's measuring window (after its warm-up).
    pub step_secs: f64,
    /// The throughput–latency curve, one point per step, in the order run.
    pub steps: Vec<CapacityStep>,
    /// Gunther's Universal Scalability Law fitted to the steps (none with fewer than 3).
    pub usl: Option<UslFit>,
    /// The knee's step run once more after the ladder, to tell a ceiling the
    /// machine held steady under from one it drifted under ([`Capacity::drift`];
    /// none in files from before 2026-12-06, or when the ladder was told not to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck: Option<CapacityStep>,
}

impl Capacity {
    /// How the knee's step compared when it was run again after the ladder.
    pub fn drift(&self) -> Option<crate::drift::Drift> {
        let again = self.recheck.as_ref()?;
        let first = self.steps.iter().find(|s| s.in_flight == again.in_flight)?;
        crate::drift::Drift::between(first, again)
    }

    /// [`Capacity::drift`], when the knee's step moved more than the noise
    /// ([`crate::drift::STEADY`]): what a reader must be told beside the ceiling.
    pub fn unsteady_drift(&self) -> Option<crate::drift::Drift> {
        self.drift().filter(|d| d.cause != crate::drift::DriftCause::Steady)
    }
}

/// One step of the ladder: the senders at one concurrency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityStep {
    pub workers: usize,
    /// Messages one worker handles at once.
    pub concurrency: usize,
    /// Messages in flight at once, at most: workers × min(concurrency, batch of 10).
    pub in_flight: u32,
    /// Messages SENT in the window.
    pub sent: u64,
    pub delivered_per_sec: f64,
    /// Claim→SENT per message in the window.
    pub handling_mean_ms: f64,
    pub handling_p99_ms: f64,
    /// Where the CPU went in the window.
    pub cpu: CpuUse,
    /// AWS calls that reached the stack in the window per message SENT, by
    /// operation (`Service.Operation`): what each message cost in calls, e.g.
    /// more receives and deletes per message when batches come back short.
    #[serde(default)]
    pub calls_per_message: BTreeMap<String, f64>,
}

impl CapacityStep {
    /// CPU milliseconds per message sent, every process together (none when
    /// nothing was sent).
    pub fn cpu_ms_per_message(&self) -> Option<f64> {
        self.cpu
            .by_process
            .values()
            .filter_map(|p| p.cpu_ms_per_message)
            .reduce(|a, b| a + b)
    }

    /// The share of the machine (every core) the processes had together, %.
    pub fn machine_pct(&self) -> f64 {
        self.cpu.by_process.values().map(|p| p.machine_pct).sum()
    }

    /// AWS calls per message sent, every operation together.
    pub fn calls_per_message(&self) -> f64 {
        self.calls_per_message.values().sum()
    }

    /// Calls to `service` per message sent, all its operations together.
    pub fn calls_per_message_to(&self, service: AwsService) -> f64 {
        self.calls_per_message
            .iter()
            .filter(|(operation, _)| AwsService::of_label(operation) == Some(service))
            .map(|(_, calls)| calls)
            .sum()
    }
}

/// `X(N) = λN / (1 + σ(N−1) + κN(N−1))`: throughput at concurrency N.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UslFit {
    /// Contention: the share of the work that is serialised (0 = none).
    pub sigma: f64,
    /// Coherency: the cost of keeping N workers in step (0 = none).
    pub kappa: f64,
    /// Throughput of one unit of concurrency, msg/s.
    pub lambda: f64,
    /// How much of the variance of the measured throughput the model explains.
    pub r_squared: f64,
}

impl UslFit {
    /// Modelled msg/s at concurrency `n`.
    pub fn throughput_at(&self, n: f64) -> f64 {
        self.lambda * n / (1.0 + self.sigma * (n - 1.0) + self.kappa * n * (n - 1.0))
    }

    /// The concurrency of peak throughput, `√((1−σ)/κ)`; none when κ is 0
    /// (throughput then only levels off, towards λ/σ).
    pub fn peak_concurrency(&self) -> Option<f64> {
        (self.kappa > 0.0).then(|| ((1.0 - self.sigma).max(0.0) / self.kappa).sqrt())
    }

    /// The throughput the model tends to or peaks at.
    pub fn max_throughput(&self) -> f64 {
        match self.peak_concurrency() {
            Some(n) => self.throughput_at(n.max(1.0)),
            None if self.sigma > 0.0 => self.lambda / self.sigma,
            None => f64::INFINITY,
        }
    }
}

/// One uploaded campaign, from its 202 to DONE: how the asynchronous ingest went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchSummary {
    pub batch_id: String,
    /// RECEIVED, PARSING, ENQUEUED, DONE or FAILED at the end of the run.
    pub phase: String,
    pub rows: u64,
    pub accepted: u64,
    pub enqueued: u64,
    /// Times the engine took it up again after a crash or a stop.
    pub resumed: u32,
    /// From the upload's 202 to every row on its queue.
    pub enqueue_secs: Option<f64>,
    /// From the upload's 202 to every message SENT or ERROR.
    pub done_secs: Option<f64>,
}

impl BatchSummary {
    /// Rows turned into messages per second, 202 to ENQUEUED.
    pub fn ingest_rows_per_sec(&self) -> Option<f64> {
        self.enqueue_secs.filter(|s| *s > 0.0).map(|s| self.rows as f64 / s)
    }
}

/// One conformance check of the stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub pass: bool,
    pub detail: String,
    pub millis: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StackInfo {
    pub target: String,
    pub versions: BTreeMap<String, String>,
    pub startup_secs: f64,
    pub mailer: MailerKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineInfo {
    pub cores: usize,
    pub memory_gib: f64,
    pub os: String,
    pub courier_version: String,
    /// The cargo profile and a digest of its settings (`reports/build.rs`):
    /// figures from differently optimised builds are not comparable.
    #[serde(default)]
    pub build_profile: String,
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
            // "perf, opt-level 1, settings 3f9a1c2e0b7d": the named profile, and a
            // digest of its settings, package overrides included (build.rs).
            build_profile: env!("COURIER_BUILD_PROFILE").into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_from_another_schema_version_is_refused_by_name() {
        let error = RunResults::parse(r#"{"schema_version": 99}"#, Path::new("old.json")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "old.json: results schema_version 99, this build reads 1"
        );
    }

    #[test]
    fn a_file_that_is_not_json_names_its_line() {
        let error = RunResults::parse("{\n\"schema_version\": 1,\n oops", Path::new("r.json")).unwrap_err();
        assert!(
            error.to_string().starts_with("r.json:3: not a Courier results file"),
            "{error}"
        );
    }
}
