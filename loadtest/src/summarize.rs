//! From what a run gathered to its results: a pure function, so every figure
//! in a results file can be checked by a unit test that needs no stack.
//!
//! The run gathers [`RawRun`] (the final records, folded into [`Finals`] as
//! they are read, readings, fault windows, the engine's
//! histograms, the driver's outcomes); [`summarize`] does the audit, the
//! latency maths, the SLO verdicts and the offered-load accounting.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use engine::domain::{PerPriority, Priority, SendRecord, SendStatus, Stage};
use hdrhistogram::Histogram;
use reports::cost::{self, PriceCard};
use scenarios::{Plan, Request, Slo};
use vocabulary::{UsageByOperation, Verdict};

use crate::audit::{FinalRecord, MailCounts, Tally};
use crate::capacity::Capacity;
use crate::collector::Collected;
use crate::cpu::ProcessUse;
use crate::driver::RequestOutcome;
use crate::latency::{merged, percentiles_of, stack_reference_ms, LatencyByPriority};
use crate::results::{
    Audit, BatchSummary, CheckResult, CpuUse, HandlingTimes, MachineInfo, Offered, ProcessCpu, RunResults,
    ScenarioInfo, StackInfo, SCHEMA_VERSION,
};
use crate::slo::{evaluate, Measured, SloCheck};

/// What the driver made of the plan.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    pub outcomes: Vec<RequestOutcome>,
    pub started: usize,
    pub late_starts: u64,
}

/// The engine's and the stack's own figures, read at the end of the run.
#[derive(Debug, Clone, Default)]
pub struct EngineFigures {
    /// Claim→SENT per priority, µs.
    pub handling: PerPriority<Option<Histogram<u64>>>,
    /// Each handling step, µs.
    pub stages: BTreeMap<Stage, Histogram<u64>>,
    /// Injections per fault activation (`ses_throttle#0`).
    pub fault_counts: BTreeMap<String, u64>,
    /// Calls per AWS operation label.
    pub aws_calls: BTreeMap<String, u64>,
    /// How long the stack took to answer, per operation label, µs.
    pub answer_times: BTreeMap<String, Histogram<u64>>,
    /// The same, apart by the load each call met.
    pub answer_times_by_load: engine::load::ByLoad,
    /// What the calls that reached the stack consumed, per operation label.
    pub usage: UsageByOperation,
    /// Deliveries of already-final messages the senders skipped.
    pub redeliveries_skipped: u64,
}

/// Everything a run gathered, before any figure is worked out.
pub struct RawRun<'a> {
    pub scenario: ScenarioInfo,
    pub slo: &'a Slo,
    pub plan: &'a Plan,
    /// The prices the run's AWS usage is priced with.
    pub pricing: &'a PriceCard,
    /// Wall-clock time of the run's t = 0 (the first intended arrival).
    pub started_at: DateTime<Utc>,
    pub traffic_secs: f64,
    pub total_secs: f64,
    pub traffic: Traffic,
    /// Every accepted message's final record, taken in as the run read them.
    pub finals: Finals<'a>,
    /// Per recipient, what the provider mailed during the run (where it keeps a record).
    pub mailed: Option<MailCounts>,
    pub dead_lettered: u64,
    pub collected: Collected,
    /// Each process's CPU and peak memory from the start of traffic to the end of the drain.
    pub cpu: BTreeMap<String, ProcessUse>,
    /// That window's length.
    pub window_secs: f64,
    pub engine: EngineFigures,
    /// The `ses_quota` fault's rate, if the scenario sets one.
    pub quota_rate: Option<f64>,
    pub capacity: Option<Capacity>,
    pub checks: Vec<CheckResult>,
    /// Every accepted campaign's batch, as it stood after the drain.
    pub batches: Vec<BatchSummary>,
    pub stack: StackInfo,
    pub machine: MachineInfo,
    pub goose_report: Option<String>,
}

/// Latency, corrected from each message's intended arrival and as the engine saw it.
struct Latencies {
    corrected: LatencyByPriority,
    uncorrected: LatencyByPriority,
    /// Phase name → corrected latency of the messages that arrived in it.
    by_phase: BTreeMap<String, BTreeMap<Priority, crate::results::Percentiles>>,
    last_sent: Option<DateTime<Utc>>,
}

/// What the audit and the latency figures need from every accepted
/// message's final record, taken one record at a time as the run reads them
/// from the store: a million-row run's records are never held together.
pub struct Finals<'a> {
    plan: &'a Plan,
    started_at: DateTime<Utc>,
    /// When the first campaign was meant to arrive: notifications before it,
    /// during the campaigns and after them are told apart.
    first_campaign: f64,
    /// When the last campaign message was SENT, in seconds from the start:
    /// the campaigns' backlog lasted until then.
    campaigns_sent_secs: f64,
    tally: Tally,
    corrected: LatencyByPriority,
    uncorrected: LatencyByPriority,
    /// Campaign messages: all of them arrive with the campaigns.
    campaign_messages: LatencyByPriority,
    /// Each notification's intended arrival, priority and latency, put in its
    /// phase once the campaigns' end is known (the records come in any order).
    notifications: Vec<(f64, Priority, u64)>,
    last_sent: Option<DateTime<Utc>>,
}

impl<'a> Finals<'a> {
    pub fn new(plan: &'a Plan, started_at: DateTime<Utc>) -> Self {
        let first_campaign = plan
            .arrivals
            .iter()
            .filter(|a| matches!(a.request, Request::Campaign { .. }))
            .map(|a| a.at_secs)
            .fold(f64::INFINITY, f64::min);
        Self {
            plan,
            started_at,
            first_campaign,
            campaigns_sent_secs: f64::NEG_INFINITY,
            tally: Tally::default(),
            corrected: LatencyByPriority::default(),
            uncorrected: LatencyByPriority::default(),
            campaign_messages: LatencyByPriority::default(),
            notifications: Vec::new(),
            last_sent: None,
        }
    }

    /// The final record of a message the plan's arrival `index` led to.
    pub fn add(&mut self, index: usize, record: &SendRecord) {
        self.tally.add(FinalRecord {
            send_id: record.send_id,
            recipient: &record.recipient,
            status: record.status,
            error_reason: record.error_reason.as_deref(),
            attempts: record.attempts,
        });
        let Some(sent_at) = record.sent_at else { return };
        self.last_sent = Some(self.last_sent.map_or(sent_at, |l| l.max(sent_at)));
        let intended_secs = self.plan.arrivals[index].at_secs;
        let intended = self.started_at + chrono::Duration::microseconds((intended_secs * 1e6) as i64);
        let micros = |from: DateTime<Utc>| (sent_at - from).num_microseconds().unwrap_or(0).max(1) as u64;
        let latency = micros(intended);
        self.corrected.record(record.priority, latency);
        self.uncorrected.record(record.priority, micros(record.created_at));
        match self.plan.arrivals[index].request {
            Request::Campaign { .. } => {
                let sent_secs = micros(self.started_at) as f64 / 1e6;
                self.campaigns_sent_secs = self.campaigns_sent_secs.max(sent_secs);
                self.campaign_messages.record(record.priority, latency);
            }
            _ => self.notifications.push((intended_secs, record.priority, latency)),
        }
    }

    /// Latency by phase: notifications meant to arrive before the first
    /// campaign; those meant to arrive while the campaigns' messages were
    /// still being sent (with the campaign messages themselves); those after
    /// the last campaign message was SENT, when the flood was over.
    fn phases(&self) -> [(&'static str, LatencyByPriority); 3] {
        let [mut before, mut with, mut after] = [(); 3].map(|_| LatencyByPriority::default());
        with.merge(&self.campaign_messages);
        for &(intended_secs, priority, micros) in &self.notifications {
            let phase = if intended_secs < self.first_campaign {
                &mut before
            } else if intended_secs <= self.campaigns_sent_secs {
                &mut with
            } else {
                &mut after
            };
            phase.record(priority, micros);
        }
        [
            (crate::slo::BEFORE_CAMPAIGNS, before),
            (crate::slo::WITH_CAMPAIGNS, with),
            (crate::slo::AFTER_CAMPAIGNS, after),
        ]
    }

    fn latencies(&self) -> Latencies {
        let mut by_phase = BTreeMap::new();
        if self.first_campaign.is_finite() && self.first_campaign > 0.0 {
            for (name, latency) in self.phases() {
                let summary = latency.summary();
                if name != crate::slo::AFTER_CAMPAIGNS || !summary.is_empty() {
                    by_phase.insert(name.to_string(), summary);
                }
            }
        }
        Latencies {
            corrected: self.corrected.clone(),
            uncorrected: self.uncorrected.clone(),
            by_phase,
            last_sent: self.last_sent,
        }
    }
}

/// SENT messages over the time from the run's start to the last one sent.
fn delivered_per_sec(sent: u64, started_at: DateTime<Utc>, last_sent: Option<DateTime<Utc>>) -> f64 {
    let active_secs = last_sent.map_or(0.0, |l| (l - started_at).num_milliseconds() as f64 / 1000.0);
    if active_secs > 0.0 {
        sent as f64 / active_secs
    } else {
        0.0
    }
}

fn offered(plan: &Plan, traffic: &Traffic) -> Offered {
    let campaigns = plan
        .arrivals
        .iter()
        .filter(|a| matches!(a.request, Request::Campaign { .. }))
        .count() as u64;
    let mut offered = Offered {
        requests: plan.arrivals.len() as u64,
        campaigns,
        notifications: plan.arrivals.len() as u64 - campaigns,
        expected_messages: plan.expected_messages(),
        late_starts: traffic.late_starts,
        not_started: (plan.arrivals.len() - traffic.started.min(plan.arrivals.len())) as u64,
        failed_requests: traffic.outcomes.iter().filter(|o| o.status != Some(202)).count() as u64,
        ..Offered::default()
    };
    for body in traffic
        .outcomes
        .iter()
        .filter(|o| o.is_campaign)
        .filter_map(|o| o.response.as_ref())
    {
        offered.rejected_rows += body["rejected"].as_u64().unwrap_or(0);
        offered.duplicate_rows += body["duplicates"].as_u64().unwrap_or(0);
    }
    offered
}

/// Messages the API said it accepted.
fn accepted(traffic: &Traffic) -> u64 {
    traffic.outcomes.iter().map(crate::driver::accepted_by).sum()
}

fn conservation(raw: &RawRun<'_>, tally: Tally) -> Audit {
    Audit {
        redeliveries_skipped: raw.engine.redeliveries_skipped,
        ..tally.finish(
            accepted(&raw.traffic),
            raw.mailed.as_ref(),
            raw.dead_lettered,
            raw.collected.poisoned,
        )
    }
}

fn handling(engine: &EngineFigures) -> HandlingTimes {
    let present: Vec<(Priority, &Histogram<u64>)> = engine
        .handling
        .iter()
        .filter_map(|(p, h)| Some((p, h.as_ref().filter(|h| !h.is_empty())?)))
        .collect();
    let all = merged(present.iter().map(|(_, h)| *h))
        .expect("every duration histogram has the same bounds")
        .map(|all| percentiles_of(&all));
    HandlingTimes {
        all,
        by_priority: present.into_iter().map(|(p, h)| (p, percentiles_of(h))).collect(),
    }
}

/// Where the CPU went: each process's CPU per delivered message and its share of the machine.
pub fn cpu_use(cpu: &BTreeMap<String, ProcessUse>, window_secs: f64, cores: usize, sent: u64) -> CpuUse {
    let machine_ms = window_secs * 1000.0 * cores.max(1) as f64;
    let by_process = cpu
        .iter()
        .map(|(name, used)| {
            let figures = ProcessCpu {
                cpu_ms: used.cpu_ms,
                cpu_ms_per_message: (sent > 0).then(|| used.cpu_ms / sent as f64),
                machine_pct: if machine_ms > 0.0 {
                    100.0 * used.cpu_ms / machine_ms
                } else {
                    0.0
                },
                peak_rss_mib: used.peak_rss_mib,
            };
            (name.clone(), figures)
        })
        .collect();
    CpuUse {
        window_secs,
        cores,
        by_process,
    }
}

/// Every uploaded campaign must end DONE: all its rows read, enqueued and
/// finished, whatever crashed on the way. No check when nothing was uploaded.
fn batches_done(batches: &[BatchSummary]) -> Option<SloCheck> {
    if batches.is_empty() {
        return None;
    }
    let done = batches.iter().filter(|b| b.phase == "DONE").count();
    let others: Vec<String> = batches
        .iter()
        .filter(|b| b.phase != "DONE")
        .map(|b| format!("{} {}", &b.batch_id[..8.min(b.batch_id.len())], b.phase))
        .collect();
    let measured = match others.is_empty() {
        true => format!("{done} DONE"),
        false => format!("{done} DONE; {}", others.join(", ")),
    };
    Some(SloCheck {
        name: "campaign batches DONE".into(),
        target: format!("all {}", batches.len()),
        measured,
        pass: done == batches.len(),
    })
}

/// The run's results, from what it gathered.
pub fn summarize(mut raw: RawRun<'_>) -> RunResults {
    let latency = raw.finals.latencies();
    let tally = std::mem::take(&mut raw.finals.tally);
    let audit = conservation(&raw, tally);
    let sent = audit.count(SendStatus::Sent);
    let delivered = delivered_per_sec(sent, raw.started_at, latency.last_sent);
    let ses_throttles = ["ses_quota", "ses_throttle"]
        .iter()
        .map(|kind| {
            raw.engine
                .fault_counts
                .iter()
                .filter(|(name, _)| name.starts_with(kind))
                .map(|(_, n)| n)
                .sum::<u64>()
        })
        .sum();
    let measured = Measured {
        latency: &latency.corrected,
        delivered_per_sec: delivered,
        audit: &audit,
        by_phase: &latency.by_phase,
        samples: &raw.collected.samples,
        quota_rate: raw.quota_rate,
        ses_throttles,
    };
    let mut slo = evaluate(raw.slo, &measured);
    slo.extend(batches_done(&raw.batches));
    let mut faults = raw.collected.windows;
    // A fault still in force when traffic ended was ended then.
    for window in faults.iter_mut().filter(|w| w.end_secs.is_none()) {
        window.end_secs = Some(raw.traffic_secs);
    }
    let engine = &raw.engine;
    let cpu = cpu_use(
        &raw.cpu,
        raw.window_secs,
        raw.machine.cores,
        audit.count(SendStatus::Sent),
    );
    RunResults {
        schema_version: SCHEMA_VERSION,
        scenario: raw.scenario,
        verdict: Verdict::of_all(slo.iter().map(|check| check.pass)),
        started_at: raw.started_at.to_rfc3339(),
        traffic_secs: raw.traffic_secs,
        total_secs: raw.total_secs,
        slo,
        offered: offered(raw.plan, &raw.traffic),
        latency_ms: latency.corrected.summary(),
        latency_uncorrected_ms: latency.uncorrected.summary(),
        latency_by_phase_ms: latency.by_phase,
        handling_ms: handling(engine),
        stage_ms: engine
            .stages
            .iter()
            .map(|(stage, h)| (*stage, percentiles_of(h)))
            .collect(),
        delivered_per_sec: delivered,
        fraction_of_ceiling: raw
            .capacity
            .as_ref()
            .filter(|c| c.ceiling_msgs_per_sec > 0.0)
            .map(|c| delivered / c.ceiling_msgs_per_sec),
        capacity: raw.capacity,
        audit,
        timeseries: raw.collected.samples,
        faults,
        fault_counts: engine.fault_counts.clone(),
        aws_calls: engine.aws_calls.clone(),
        stack_answer_ms: engine
            .answer_times
            .iter()
            .map(|(op, h)| (op.clone(), percentiles_of(h)))
            .collect(),
        stack_answer_ms_by_load: engine
            .answer_times_by_load
            .iter()
            .map(|(op, by_load)| {
                (
                    op.clone(),
                    by_load.iter().map(|(load, h)| (*load, percentiles_of(h))).collect(),
                )
            })
            .collect(),
        stack_reference_ms: stack_reference_ms(&engine.answer_times),
        check_stack: raw.checks,
        batches: raw.batches,
        stack: raw.stack,
        machine: raw.machine,
        goose_report: raw.goose_report,
        // No call reached a stack (a simulation): nothing to price.
        cost: (!engine.usage.is_empty()).then(|| cost::price(&engine.usage, raw.pricing, sent)),
        simulation: None,
        aws_usage: engine.usage.clone(),
        cpu,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::FaultWindow;
    use engine::domain::{MessageKind, SendId};
    use scenarios::Arrival;
    use serde_json::json;
    use vocabulary::MailerKind;

    fn notification(at_secs: f64) -> Arrival {
        Arrival {
            at_secs,
            request: Request::Notification {
                kind: MessageKind::Reminder,
                body: json!({}),
            },
        }
    }

    fn campaign(at_secs: f64, rows: u64) -> Arrival {
        Arrival {
            at_secs,
            request: Request::Campaign {
                file_name: "c.csv".into(),
                csv: Vec::new(),
                attachments: Vec::new(),
                valid_rows: rows,
                duplicate_rows: 0,
                invalid_rows: 1,
            },
        }
    }

    fn outcome(index: usize, is_campaign: bool, response: serde_json::Value) -> RequestOutcome {
        RequestOutcome {
            index,
            intended_secs: 0.0,
            started_secs: 0.0,
            is_campaign,
            status: Some(202),
            response: Some(response),
            error: None,
        }
    }

    fn start() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-24T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// A record accepted at `accepted_ms` and SENT at `sent_ms` after the start.
    fn record(priority: Priority, status: SendStatus, accepted_ms: i64, sent_ms: Option<i64>) -> SendRecord {
        let at = |ms: i64| start() + chrono::Duration::milliseconds(ms);
        SendRecord {
            send_id: SendId::new(),
            batch_id: None,
            kind: MessageKind::Reminder,
            priority,
            recipient: format!("{}@example.com", uuid::Uuid::new_v4().simple()),
            subject: "s".into(),
            status,
            created_at: at(accepted_ms),
            updated_at: at(accepted_ms),
            sent_at: sent_ms.map(at),
            attempts: 1,
            provider_message_id: None,
            error_reason: None,
        }
    }

    static CARD: std::sync::LazyLock<PriceCard> = std::sync::LazyLock::new(PriceCard::builtin);

    fn raw<'a>(plan: &'a Plan, slo: &'a Slo, records: Vec<(usize, SendRecord)>, traffic: Traffic) -> RawRun<'a> {
        let mut finals = Finals::new(plan, start());
        records.iter().for_each(|(index, record)| finals.add(*index, record));
        RawRun {
            scenario: ScenarioInfo {
                name: "t".into(),
                description: String::new(),
                file: "t.toml".into(),
                seed: 1,
                extra_faults: Vec::new(),
                overrides: Vec::new(),
            },
            slo,
            plan,
            pricing: &CARD,
            started_at: start(),
            traffic_secs: 10.0,
            total_secs: 20.0,
            traffic,
            finals,
            mailed: None,
            dead_lettered: 0,
            collected: Collected::default(),
            cpu: BTreeMap::new(),
            window_secs: 12.0,
            engine: EngineFigures::default(),
            quota_rate: None,
            capacity: None,
            checks: Vec::new(),
            batches: Vec::new(),
            stack: StackInfo {
                target: "Local".into(),
                versions: BTreeMap::new(),
                startup_secs: 0.0,
                mailer: MailerKind::Sesv2,
            },
            machine: MachineInfo::current(),
            goose_report: None,
        }
    }

    #[test]
    fn latency_is_measured_from_the_intended_arrival_not_from_acceptance() {
        // Due at 1 s, accepted late at 1.5 s, SENT at 1.6 s.
        let plan = Plan {
            arrivals: vec![notification(1.0)],
        };
        let slo = Slo::default();
        let records = vec![(0, record(Priority::High, SendStatus::Sent, 1_500, Some(1_600)))];
        let traffic = Traffic {
            outcomes: vec![outcome(0, false, json!({ "sendId": "x" }))],
            started: 1,
            late_starts: 1,
        };
        let results = summarize(raw(&plan, &slo, records, traffic));
        let corrected = results.latency_ms[&Priority::High];
        let uncorrected = results.latency_uncorrected_ms[&Priority::High];
        assert!((corrected.p50_ms - 600.0).abs() < 1.0, "{corrected:?}");
        assert!((uncorrected.p50_ms - 100.0).abs() < 1.0, "{uncorrected:?}");
        assert_eq!(results.offered.late_starts, 1);
        assert!((results.delivered_per_sec - 1.0 / 1.6).abs() < 1e-9);
        assert_eq!(results.verdict, Verdict::Pass);
    }

    #[test]
    fn a_message_left_queued_is_lost_and_fails_the_run() {
        let plan = Plan {
            arrivals: vec![notification(0.0), notification(0.5)],
        };
        let slo = Slo::default();
        let records = vec![
            (0, record(Priority::Low, SendStatus::Sent, 0, Some(100))),
            (1, record(Priority::Low, SendStatus::Queued, 500, None)),
        ];
        let traffic = Traffic {
            outcomes: vec![outcome(0, false, json!({})), outcome(1, false, json!({}))],
            started: 2,
            late_starts: 0,
        };
        let results = summarize(raw(&plan, &slo, records, traffic));
        assert_eq!(results.audit.lost, 1);
        assert_eq!(results.verdict, Verdict::Fail);
        assert!(results.slo.iter().any(|check| check.name == "lost" && !check.pass));
    }

    #[test]
    fn campaigns_split_latency_into_before_with_and_after_them_and_count_their_refused_rows() {
        let plan = Plan {
            arrivals: vec![
                notification(0.0),
                campaign(2.0, 1),
                notification(3.0),
                notification(5.0),
            ],
        };
        let slo = Slo::default();
        // Read in any order: the reminder at 5 s comes before the campaign
        // message that tells when the campaign was all sent (4 s).
        let records = vec![
            (0, record(Priority::High, SendStatus::Sent, 0, Some(50))),
            (3, record(Priority::High, SendStatus::Sent, 5_000, Some(5_020))),
            (1, record(Priority::Low, SendStatus::Sent, 2_000, Some(4_000))),
            (2, record(Priority::High, SendStatus::Sent, 3_000, Some(3_400))),
        ];
        let traffic = Traffic {
            outcomes: vec![
                outcome(0, false, json!({})),
                outcome(1, true, json!({ "accepted": 1, "rejected": 1, "duplicates": 0 })),
                outcome(2, false, json!({})),
                outcome(3, false, json!({})),
            ],
            started: 4,
            late_starts: 0,
        };
        let results = summarize(raw(&plan, &slo, records, traffic));
        assert_eq!((results.offered.campaigns, results.offered.notifications), (1, 3));
        assert_eq!(results.offered.rejected_rows, 1);
        assert_eq!(results.offered.expected_messages, 4);
        let before = &results.latency_by_phase_ms["before first campaign"];
        let with = &results.latency_by_phase_ms["with campaigns"];
        assert_eq!(before[&Priority::High].count, 1);
        assert_eq!(with[&Priority::High].count, 1);
        assert!((with[&Priority::High].p50_ms - 400.0).abs() < 1.0);
        assert_eq!(with[&Priority::Low].count, 1);
        let after = &results.latency_by_phase_ms["after campaigns sent"];
        assert_eq!(after[&Priority::High].count, 1, "the flood was over by 5 s");
        assert!((after[&Priority::High].p50_ms - 20.0).abs() < 1.0);
    }

    #[test]
    fn cpu_is_told_per_delivered_message_and_as_a_share_of_the_machine() {
        let plan = Plan {
            arrivals: vec![notification(0.0), notification(0.1)],
        };
        let slo = Slo::default();
        let records = vec![
            (0, record(Priority::High, SendStatus::Sent, 0, Some(10))),
            (1, record(Priority::High, SendStatus::Sent, 100, Some(110))),
        ];
        let traffic = Traffic {
            outcomes: vec![outcome(0, false, json!({})), outcome(1, false, json!({}))],
            started: 2,
            late_starts: 0,
        };
        let mut raw = raw(&plan, &slo, records, traffic);
        raw.machine.cores = 2;
        raw.window_secs = 10.0;
        let used = ProcessUse {
            cpu_ms: 5_000.0,
            peak_rss_mib: 300.0,
        };
        raw.cpu = BTreeMap::from([("dynamodb-local".to_string(), used)]);
        let cpu = summarize(raw).cpu;
        let dynamo = &cpu.by_process["dynamodb-local"];
        assert_eq!(dynamo.cpu_ms_per_message, Some(2_500.0));
        assert!((dynamo.machine_pct - 25.0).abs() < 1e-9, "5 s of 2 cores × 10 s");
        assert_eq!(cpu.busiest().map(|(name, _)| name.as_str()), Some("dynamodb-local"));
    }

    #[test]
    fn a_fault_open_at_the_end_of_traffic_ends_with_it() {
        let plan = Plan::default();
        let slo = Slo::default();
        let mut raw = raw(&plan, &slo, Vec::new(), Traffic::default());
        raw.collected.windows = vec![FaultWindow {
            kind: "kill_worker".into(),
            start_secs: 2.0,
            end_secs: None,
            detail: String::new(),
        }];
        let mut handling = engine::metrics::duration_histogram();
        handling.record(5_000).unwrap();
        raw.engine.handling[Priority::Medium] = Some(handling);
        let results = summarize(raw);
        assert_eq!(results.faults[0].end_secs, Some(10.0));
        assert_eq!(results.handling_ms.all.map(|p| p.count), Some(1));
        assert!(results.handling_ms.by_priority.contains_key(&Priority::Medium));
    }
}
