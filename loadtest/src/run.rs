//! One load run, start to verdict.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use engine::aws::AwsClients;
use engine::config::{MailerKind, Settings};
use engine::domain::{Priority, SendId, SendRecord};
use engine::faults::{FaultEffect, FaultPlan, FaultTarget, SesQuota};
use engine::pipeline::Pipeline;
use engine::queue::QueueRef;
use engine::Application;
use futures::StreamExt;
use localstack::{Stack, StackOptions, StackTarget};
use scenarios::{FaultKind, FaultSpec, Scenario, TargetSpec};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::audit::{audit, FinalRecord};
use crate::calibrate::{calibrate, Calibration};
use crate::check_stack::check_stack;
use crate::driver::{drive, Driver};
use crate::latency::{merged, percentiles_of, stack_reference_ms, LatencyByPriority};
use crate::results::{
    FaultWindow, LatencySample, MachineInfo, Offered, QueueDepthSample, RunResults, Sample, ScenarioInfo, StackInfo,
    SCHEMA_VERSION,
};
use crate::slo::{evaluate, Measured};

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Scenario(#[from] scenarios::ScenarioError),
    #[error("stack: {0}")]
    Stack(#[from] localstack::StackError),
    #[error("engine: {0}")]
    Engine(#[from] engine::startup::StartupError),
    #[error("load generator: {0}")]
    Goose(String),
    #[error("{context}: {reason}")]
    Other { context: String, reason: String },
}

fn other(context: &str, reason: impl std::fmt::Display) -> HarnessError {
    HarnessError::Other {
        context: context.into(),
        reason: reason.to_string(),
    }
}

#[derive(Debug, Default)]
pub struct RunOptions {
    pub scenario: PathBuf,
    /// Where results go; `target/loadtest/<scenario>-<time>/` by default.
    pub out_dir: Option<PathBuf>,
    /// Overrides the scenario's target (`local`, `aws` or a URL).
    pub stack: Option<String>,
    /// Measure the stack's own ceiling first, in the same run.
    pub calibrate: bool,
    /// Print a progress line every few seconds.
    pub progress: bool,
    /// Faults added to the scenario's, each an inline TOML table
    /// (`kind = "ses_latency", latency_ms = 50`).
    pub extra_faults: Vec<String>,
    /// Publish every reading for a live view (`loadtest run --tui`).
    pub live: Option<tokio::sync::watch::Sender<tui::snapshot::Snapshot>>,
}

pub struct RunOutcome {
    pub results: RunResults,
    pub results_path: PathBuf,
    /// report.html and summary.md, beside the results.
    pub reports: reports::Written,
    pub passed: bool,
}

fn settings_for(scenario: &Scenario, prefix: String, stack: &Stack) -> Result<Settings, HarnessError> {
    let mut settings = Settings::default();
    settings.resources.prefix = prefix;
    let engine = &scenario.engine;
    settings.sender.workers = engine.workers;
    settings.sender.concurrency = engine.concurrency;
    settings.sender.retry_base_secs = engine.retry_base_secs;
    settings.sender.retry_max_secs = engine.retry_max_secs;
    // The harness runs the senders itself, so it can crash and restart them.
    settings.sender.enabled = false;
    settings.queues.visibility_timeout_secs = engine.visibility_timeout_secs;
    settings.queues.max_receive_count = engine.max_receives;
    settings.queues.long_poll_secs = engine.long_poll_secs;
    settings.mailer.kind = match engine.mailer.as_str() {
        "sesv2" => MailerKind::Sesv2,
        "ses" => MailerKind::Ses,
        "smtp" => MailerKind::Smtp,
        _ => MailerKind::DryRun,
    };
    if settings.mailer.kind == MailerKind::Smtp {
        // The stack's own SMTP server, unless the environment names another relay.
        let smtp = stack.smtp().ok_or_else(|| {
            other(
                "engine.mailer = \"smtp\"",
                "this stack runs no SMTP server (only the local target does); set COURIER__MAILER__SMTP__HOST and __PORT",
            )
        })?;
        settings.mailer.smtp.host = smtp.host.clone();
        settings.mailer.smtp.port = smtp.port;
    }
    settings
        .validate()
        .map_err(|e| other("engine settings from the scenario", e))?;
    Ok(settings)
}

fn run_prefix(name: &str) -> String {
    let clean: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(20)
        .collect();
    format!("lt-{clean}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6])
}

/// The sender workers, which the fault timeline may crash and restart.
struct Senders {
    pipeline: Pipeline,
    handle: Option<(tokio::task::JoinHandle<()>, CancellationToken)>,
}

impl Senders {
    fn start(&mut self) {
        let token = CancellationToken::new();
        let handle = tokio::spawn(engine::sender::run_senders(self.pipeline.clone(), token.clone()));
        self.handle = Some((handle, token));
    }

    /// A crash: in-flight sends are dropped mid-way; SQS redelivers them later.
    fn crash(&mut self) {
        if let Some((handle, _)) = self.handle.take() {
            handle.abort();
        }
    }

    async fn stop(&mut self) {
        if let Some((handle, token)) = self.handle.take() {
            token.cancel();
            let _ = handle.await;
        }
    }
}

struct Shared {
    senders: Mutex<Senders>,
    windows: std::sync::Mutex<Vec<FaultWindow>>,
    samples: std::sync::Mutex<Vec<Sample>>,
    poisoned: std::sync::atomic::AtomicU64,
}

async fn inject_poison(pipeline: &Pipeline, count: u64) -> Result<(), String> {
    use engine::domain::{MessageBody, MessageKind, OutboundMessage};
    for i in 0..count {
        let priority = Priority::ALL[(i % 3) as usize];
        let message = OutboundMessage {
            send_id: SendId::new(),
            batch_id: None,
            kind: MessageKind::Offer,
            priority,
            recipient: format!("poison.{i}@example.com"),
            subject: "poison".into(),
            body: MessageBody::Inline { text: "poison".into() },
            attachment: None,
            accepted_at: Utc::now(),
        };
        pipeline
            .store
            .put_pending(&[SendRecord::pending(&message)])
            .await
            .map_err(|e| e.to_string())?;
        // A body no sender can decode, carrying a real sendId: it must end in the DLQ.
        pipeline
            .queues
            .send_raw(priority, "{\"poison\": true", Some(&message.send_id.to_string()))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn fault_detail(fault: &FaultSpec) -> String {
    let mut parts = Vec::new();
    if let Some(p) = fault.probability {
        parts.push(format!("p={p}"));
    }
    if let Some(ms) = fault.latency_ms {
        parts.push(format!("+{ms} ms"));
    }
    if let Some(rate) = fault.max_send_rate {
        parts.push(format!("{rate}/s"));
    }
    if let Some(quota) = fault.daily_quota {
        parts.push(format!("{quota}/day"));
    }
    if let Some(count) = fault.count {
        parts.push(format!("{count} messages"));
    }
    if let Some(code) = fault.code {
        parts.push(format!("reply {code}"));
    }
    parts.join(", ")
}

/// What every fault of a run acts on.
#[derive(Clone)]
struct FaultContext {
    start: Instant,
    traffic_end: Duration,
    plan: Arc<FaultPlan>,
    shared: Arc<Shared>,
    stack: Arc<Stack>,
    pipeline: Pipeline,
    stop: CancellationToken,
}

/// Runs one fault from its start to its end on the run's clock.
async fn run_fault(fault: FaultSpec, index: usize, context: FaultContext) {
    let FaultContext {
        start,
        traffic_end,
        plan,
        shared,
        stack,
        pipeline,
        stop,
    } = context;
    let at = start + Duration::from_secs_f64(fault.start_secs);
    tokio::select! {
        _ = tokio::time::sleep_until(at.into()) => {}
        _ = stop.cancelled() => return,
    }
    let name = format!("{:?}", fault.kind).to_lowercase();
    let window_index = {
        let mut windows = shared.windows.lock().expect("windows lock");
        windows.push(FaultWindow {
            kind: serde_json::to_value(fault.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or(name.clone()),
            start_secs: start.elapsed().as_secs_f64(),
            end_secs: None,
            detail: fault_detail(&fault),
        });
        windows.len() - 1
    };
    let label = format!(
        "{}#{index}",
        shared.windows.lock().expect("windows lock")[window_index].kind
    );
    let effect = |target, effect| plan.activate(&label, target, fault.probability.unwrap_or(1.0), effect);
    let mut smtp_injected_before = 0;
    let fault_id = match fault.kind {
        FaultKind::SesThrottle => Some(effect(FaultTarget::SesSend, FaultEffect::Throttle)),
        FaultKind::SesReject => Some(effect(FaultTarget::SesSend, FaultEffect::Reject)),
        FaultKind::SesLatency => Some(plan.activate(
            &label,
            FaultTarget::SesSend,
            1.0,
            FaultEffect::Latency {
                ms: fault.latency_ms.unwrap_or(0),
            },
        )),
        FaultKind::SqsSendError => Some(effect(FaultTarget::SqsSend, FaultEffect::ServerError)),
        FaultKind::SqsReceiveError => Some(effect(FaultTarget::SqsReceive, FaultEffect::ServerError)),
        FaultKind::DynamodbThrottle => Some(effect(FaultTarget::DynamoDb, FaultEffect::Throttle)),
        FaultKind::SesQuota => {
            plan.set_ses_quota(Some(SesQuota {
                max_send_rate: fault.max_send_rate.unwrap_or(14.0),
                daily_quota: fault.daily_quota,
            }));
            None
        }
        FaultKind::KillWorker => {
            tracing::warn!("fault: crashing the sender workers");
            shared.senders.lock().await.crash();
            None
        }
        FaultKind::PauseStack => {
            tracing::warn!("fault: pausing the stack's processes");
            stack.set_paused(true);
            None
        }
        FaultKind::SmtpReply => {
            smtp_injected_before = stack.smtp_injections().await.unwrap_or(0);
            let rule = localstack::SmtpFaultRule {
                code: fault.code.unwrap_or(451),
                message: "Injected by Courier's smtp_reply fault".into(),
                probability: fault.probability.unwrap_or(1.0),
                recipient_contains: None,
            };
            if let Err(error) = stack.set_smtp_faults(&[rule]).await {
                tracing::error!(%error, "smtp_reply fault could not be set");
            }
            None
        }
        FaultKind::Poison => {
            let count = fault.count.unwrap_or(0);
            match inject_poison(&pipeline, count).await {
                Ok(()) => {
                    shared.poisoned.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                }
                Err(error) => tracing::error!(%error, "poison injection failed"),
            }
            None
        }
    };
    if fault.kind == FaultKind::Poison {
        shared.windows.lock().expect("windows lock")[window_index].end_secs = Some(start.elapsed().as_secs_f64());
        return;
    }
    // Every fault ends with the traffic at the latest: the drain measures recovery.
    let end_secs = fault
        .duration_secs
        .map_or(f64::INFINITY, |d| fault.start_secs + d)
        .min(traffic_end.as_secs_f64());
    let end = start + Duration::from_secs_f64(end_secs.max(fault.start_secs));
    tokio::select! {
        _ = tokio::time::sleep_until(end.into()) => {}
        _ = stop.cancelled() => {}
    }
    match fault.kind {
        FaultKind::SesQuota => plan.set_ses_quota(None),
        FaultKind::KillWorker => {
            tracing::warn!("fault over: restarting the sender workers");
            shared.senders.lock().await.start();
        }
        FaultKind::PauseStack => stack.set_paused(false),
        FaultKind::SmtpReply => {
            if let Err(error) = stack.set_smtp_faults(&[]).await {
                tracing::error!(%error, "smtp_reply fault could not be cleared");
            }
            let injected = stack.smtp_injections().await.unwrap_or(0);
            plan.add_count(&label, injected.saturating_sub(smtp_injected_before));
        }
        _ => {}
    }
    if let Some(id) = fault_id {
        plan.deactivate(id);
    }
    shared.windows.lock().expect("windows lock")[window_index].end_secs = Some(start.elapsed().as_secs_f64());
}

async fn sample(
    pipeline: &Pipeline,
    start: Instant,
    accepted: u64,
    plan: &FaultPlan,
    previous: Option<&Sample>,
) -> Sample {
    let t_secs = start.elapsed().as_secs_f64();
    let (mut sent, mut errors, mut retries) = (0, 0, 0);
    for p in Priority::ALL {
        let c = pipeline.metrics.counts(p);
        sent += c.sent;
        errors += c.errors;
        retries += c.retries;
    }
    let mut queue_depths = BTreeMap::new();
    for p in Priority::ALL {
        for (queue, name) in [
            (QueueRef::Main(p), p.to_string()),
            (QueueRef::DeadLetter(p), format!("{p}-dlq")),
        ] {
            if let Ok(depth) = pipeline.queues.depth(queue).await {
                queue_depths.insert(
                    name,
                    QueueDepthSample {
                        visible: depth.visible,
                        in_flight: depth.in_flight,
                    },
                );
            }
        }
    }
    let rate = |now: u64, before: Option<u64>| match (previous, before) {
        (Some(prev), Some(before)) if t_secs > prev.t_secs => {
            now.saturating_sub(before) as f64 / (t_secs - prev.t_secs)
        }
        _ => 0.0,
    };
    Sample {
        t_secs,
        accepted,
        sent,
        errors,
        retries,
        sent_per_sec: rate(sent, previous.map(|p| p.sent)),
        errors_per_sec: rate(errors, previous.map(|p| p.errors)),
        retries_per_sec: rate(retries, previous.map(|p| p.retries)),
        queue_depths,
        latency_ms: Priority::ALL
            .iter()
            .map(|p| {
                let (count, p50, p95, p99) = pipeline.metrics.latency_percentiles(*p);
                (p.to_string(), LatencySample { count, p50, p95, p99 })
            })
            .collect(),
        active_faults: plan.active(),
    }
}

/// The live view's reading: the sample, the engine's counters, and the latency
/// SLOs judged on the engine's figures so far.
fn live_snapshot(sample: &Sample, pipeline: &Pipeline, slo: &scenarios::Slo) -> tui::snapshot::Snapshot {
    use tui::snapshot::{Counters, Depth, Latency, Snapshot};
    let mut snapshot = Snapshot {
        accepted: sample.accepted as f64,
        active_faults: sample.active_faults.clone(),
        ..Snapshot::default()
    };
    for p in Priority::ALL {
        let c = pipeline.metrics.counts(p);
        snapshot.by_priority.insert(
            p.to_string(),
            Counters {
                enqueued: c.enqueued as f64,
                sent: c.sent as f64,
                errors: c.errors as f64,
                retries: c.retries as f64,
                dead_lettered: c.dead_lettered as f64,
            },
        );
        if let Some(l) = sample.latency_ms.get(p.as_str()) {
            snapshot.latency.insert(
                p.to_string(),
                Latency {
                    p50: l.p50,
                    p95: l.p95,
                    p99: l.p99,
                },
            );
            for (label, targets, value) in [
                ("p50", slo.p50_ms, l.p50),
                ("p95", slo.p95_ms, l.p95),
                ("p99", slo.p99_ms, l.p99),
            ] {
                let target = match p {
                    Priority::High => targets.high,
                    Priority::Medium => targets.medium,
                    Priority::Low => targets.low,
                };
                if let Some(target) = target {
                    snapshot.slo.push((
                        format!("{label} {p} {value:.0} ≤ {target:.0} ms (so far)"),
                        l.count == 0 || value <= target,
                    ));
                }
            }
        }
    }
    snapshot.queues = sample
        .queue_depths
        .iter()
        .map(|(q, d)| {
            (
                q.clone(),
                Depth {
                    visible: d.visible as f64,
                    in_flight: d.in_flight as f64,
                },
            )
        })
        .collect();
    snapshot
}

fn progress_line(sample: &Sample, driver: &Driver) -> String {
    let depth = |name: &str| {
        sample
            .queue_depths
            .get(name)
            .map(|d| d.visible + d.in_flight)
            .unwrap_or(0)
    };
    let dlq: u64 = ["high-dlq", "medium-dlq", "low-dlq"].iter().map(|q| depth(q)).sum();
    format!(
        "[{:>6.1}s] requests {}/{}  accepted {}  sent {} ({:.1}/s)  errors {}  retries {}  queues h/m/l {}/{}/{}  dlq {}  faults: {}",
        sample.t_secs,
        driver.started(),
        driver.total(),
        sample.accepted,
        sample.sent,
        sample.sent_per_sec,
        sample.errors,
        sample.retries,
        depth("high"),
        depth("medium"),
        depth("low"),
        dlq,
        if sample.active_faults.is_empty() { "none".to_string() } else { sample.active_faults.join(",") }
    )
}

/// Reads every accepted message's final record.
async fn final_records(pipeline: &Pipeline, driver: &Driver) -> Result<Vec<(usize, SendRecord)>, HarnessError> {
    let outcomes = driver.outcomes();
    let lookups = futures::stream::iter(outcomes.into_iter().filter(|o| o.status == Some(202)))
        .map(|outcome| async move {
            let body = outcome.response.clone().unwrap_or_default();
            let mut records = Vec::new();
            if outcome.is_campaign {
                let Some(batch) = body["batchId"].as_str().and_then(|b| b.parse().ok()) else {
                    return Ok(records);
                };
                let mut cursor: Option<String> = None;
                loop {
                    let page = pipeline
                        .store
                        .by_batch(batch, None, 100, cursor.as_deref())
                        .await
                        .map_err(|e| other("reading final records", e))?;
                    records.extend(page.items.into_iter().map(|r| (outcome.index, r)));
                    cursor = page.next_cursor;
                    if cursor.is_none() {
                        break;
                    }
                }
            } else if let Some(id) = body["sendId"].as_str().and_then(|s| s.parse::<SendId>().ok()) {
                if let Some(record) = pipeline
                    .store
                    .get(id)
                    .await
                    .map_err(|e| other("reading final records", e))?
                {
                    records.push((outcome.index, record));
                }
            }
            Ok::<_, HarnessError>(records)
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let mut all = Vec::new();
    for lookup in lookups {
        all.extend(lookup?);
    }
    Ok(all)
}

fn mail_counts(mail: &[localstack::SentEmail]) -> HashMap<String, u64> {
    let mut counts = HashMap::new();
    for email in mail {
        for to in &email.to {
            *counts.entry(to.to_ascii_lowercase()).or_default() += 1;
        }
    }
    counts
}

fn default_out_dir(name: &str) -> PathBuf {
    let stamp = Utc::now().format("%Y%m%d-%H%M%S");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("loadtest").join(format!("{name}-{stamp}"))
}

pub async fn run(options: RunOptions) -> Result<RunOutcome, HarnessError> {
    let run_started = Instant::now();
    let mut scenario = Scenario::load(&options.scenario)?;
    for fault in &options.extra_faults {
        scenario.add_fault(fault)?;
    }
    let plan_of_traffic = scenarios::generate(&scenario);
    let out_dir = options
        .out_dir
        .clone()
        .unwrap_or_else(|| default_out_dir(&scenario.name));
    std::fs::create_dir_all(&out_dir).map_err(|e| other(&format!("creating {}", out_dir.display()), e))?;
    tracing::info!(
        scenario = %scenario.name,
        requests = plan_of_traffic.arrivals.len(),
        expected_messages = plan_of_traffic.expected_messages(),
        out = %out_dir.display(),
        "starting run"
    );

    let target = match options.stack.as_deref() {
        Some(text) => text.parse::<StackTarget>()?,
        None => match &scenario.run.target {
            TargetSpec::Local => StackTarget::Local,
            TargetSpec::Aws => StackTarget::Aws,
            TargetSpec::Endpoint(url) => url.parse::<StackTarget>()?,
        },
    };
    let stack = Arc::new(
        Stack::start(StackOptions {
            target,
            ..StackOptions::default()
        })
        .await?,
    );
    let plain_clients = AwsClients::for_stack(&stack).await;
    let fault_plan = FaultPlan::new(scenario.seed);
    let clients = AwsClients::with_faults(&stack, fault_plan.clone()).await;

    let prefix = run_prefix(&scenario.name);
    let checks = check_stack(&plain_clients, &format!("{prefix}-chk")).await;
    let settings = settings_for(&scenario, prefix.clone(), &stack)?;

    let calibration: Option<Calibration> = if options.calibrate {
        let cal_settings = settings_for(&scenario, format!("{prefix}-cal"), &stack)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| other("binding", e))?;
        let cal_app = Application::build(cal_settings, &plain_clients, listener).await?;
        let pipeline = Arc::new(cal_app.pipeline().clone());
        Some(calibrate(pipeline, Duration::from_secs(10), scenario.engine.workers * 2).await)
    } else {
        None
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| other("binding", e))?;
    let app = Application::build(settings, &clients, listener).await?;
    let base_url = format!("http://{}", app.local_addr());
    let pipeline = app.pipeline().clone();
    let (stop_engine, engine_stopped) = tokio::sync::oneshot::channel::<()>();
    let engine_task = tokio::spawn(app.run(async {
        let _ = engine_stopped.await;
    }));

    let mail_checkable = stack.is_emulated()
        && matches!(
            pipeline.settings.mailer.kind,
            MailerKind::Ses | MailerKind::Sesv2 | MailerKind::Smtp
        );
    let mail_before = if mail_checkable {
        Some(mail_counts(&stack.sent_emails().await?))
    } else {
        None
    };

    let shared = Arc::new(Shared {
        senders: Mutex::new(Senders {
            pipeline: pipeline.clone(),
            handle: None,
        }),
        windows: std::sync::Mutex::new(Vec::new()),
        samples: std::sync::Mutex::new(Vec::new()),
        poisoned: std::sync::atomic::AtomicU64::new(0),
    });
    shared.senders.lock().await.start();

    let traffic = Duration::from_secs_f64(scenario.run.duration_secs);
    // One second's lead lets goose bring its users up before the first arrival.
    let start = Instant::now() + Duration::from_secs(1);
    let start_wall: DateTime<Utc> = Utc::now() + chrono::Duration::seconds(1);
    let driver = Driver::new(plan_of_traffic.arrivals.clone(), start, traffic, None);
    let stop_background = CancellationToken::new();

    let fault_context = FaultContext {
        start,
        traffic_end: traffic,
        plan: fault_plan.clone(),
        shared: shared.clone(),
        stack: stack.clone(),
        pipeline: pipeline.clone(),
        stop: stop_background.clone(),
    };
    let fault_tasks: Vec<_> = scenario
        .faults
        .iter()
        .cloned()
        .enumerate()
        .map(|(index, fault)| tokio::spawn(run_fault(fault, index, fault_context.clone())))
        .collect();

    let sampler = {
        let pipeline = pipeline.clone();
        let plan = fault_plan.clone();
        let shared = shared.clone();
        let driver = driver.clone();
        let stop = stop_background.clone();
        let interval = Duration::from_millis(scenario.run.sample_interval_ms.max(100));
        let progress = options.progress;
        let live = options.live.clone();
        let slo = scenario.slo.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            let mut last_print = Instant::now();
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop.cancelled() => break,
                }
                let previous = shared.samples.lock().expect("samples lock").last().cloned();
                let s = sample(&pipeline, start, driver.accepted_so_far(), &plan, previous.as_ref()).await;
                if let Some(live) = &live {
                    let _ = live.send(live_snapshot(&s, &pipeline, &slo));
                }
                if progress && last_print.elapsed() >= Duration::from_secs(2) {
                    eprintln!("{}", progress_line(&s, &driver));
                    last_print = Instant::now();
                }
                shared.samples.lock().expect("samples lock").push(s);
            }
        })
    };

    let report_path = out_dir.join("goose-report.html");
    drive(driver.clone(), &base_url, scenario.run.users, &report_path)
        .await
        .map_err(|e| HarnessError::Goose(e.to_string()))?;
    let traffic_secs = start.elapsed().as_secs_f64();

    // Faults end with the traffic; the senders must be up for the drain.
    for task in &fault_tasks {
        task.abort();
    }
    fault_plan.clear();
    if scenario.faults.iter().any(|f| f.kind == FaultKind::PauseStack) {
        stack.set_paused(false);
    }
    {
        let mut senders = shared.senders.lock().await;
        if senders.handle.is_none() {
            senders.start();
        }
    }
    {
        let mut windows = shared.windows.lock().expect("windows lock");
        for window in windows.iter_mut().filter(|w| w.end_secs.is_none()) {
            window.end_secs = Some(traffic_secs);
        }
    }

    // Drain: every accepted message (and every poison) must reach a final status.
    let accepted_total = driver.accepted_so_far();
    let poison = shared.poisoned.load(std::sync::atomic::Ordering::Relaxed);
    let drain_deadline = Instant::now() + Duration::from_secs_f64(scenario.run.drain_timeout_secs);
    loop {
        let finished: u64 = Priority::ALL
            .iter()
            .map(|p| {
                let c = pipeline.metrics.counts(*p);
                c.sent + c.errors
            })
            .sum();
        if finished >= accepted_total + poison || Instant::now() >= drain_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop_background.cancel();
    let _ = sampler.await;
    let drained_secs = start.elapsed().as_secs_f64();

    shared.senders.lock().await.stop().await;
    let _ = stop_engine.send(());
    let _ = engine_task.await;

    // Audit against the stack itself, without the fault plan in the way.
    let plain_pipeline = Pipeline {
        store: Arc::new(engine::store::DynamoStatusStore::new(
            plain_clients.dynamodb.clone(),
            engine::provision::ResourceNames::new(&prefix).table,
        )),
        ..pipeline.clone()
    };
    let records = final_records(&plain_pipeline, &driver).await?;
    let mailed = match &mail_before {
        Some(before) => {
            let after = mail_counts(&stack.sent_emails().await?);
            Some(
                after
                    .into_iter()
                    .filter_map(|(to, n)| {
                        let new = n.saturating_sub(before.get(&to).copied().unwrap_or(0));
                        // Poison recipients are never mailed; calibration mail is not this run's.
                        (new > 0 && !to.starts_with("calibrate.")).then_some((to, new))
                    })
                    .collect::<HashMap<_, _>>(),
            )
        }
        None => None,
    };
    let mut dead_lettered = 0;
    for p in Priority::ALL {
        if let Ok(depth) = pipeline.queues.depth(QueueRef::DeadLetter(p)).await {
            dead_lettered += depth.visible + depth.in_flight;
        }
    }
    let finals: Vec<FinalRecord> = records
        .iter()
        .map(|(_, r)| FinalRecord {
            send_id: r.send_id.to_string(),
            recipient: r.recipient.clone(),
            status: r.status.to_string(),
            error_reason: r.error_reason.clone(),
        })
        .collect();
    let audit_result = audit(accepted_total, &finals, mailed.as_ref(), dead_lettered, poison);

    // Latency: corrected from the intended arrival, and as the engine saw it.
    let mut corrected = LatencyByPriority::default();
    let mut uncorrected = LatencyByPriority::default();
    let first_campaign = driver
        .outcomes()
        .iter()
        .filter(|o| o.is_campaign)
        .map(|o| o.intended_secs)
        .fold(f64::INFINITY, f64::min);
    let mut before_campaigns = LatencyByPriority::default();
    let mut with_campaigns = LatencyByPriority::default();
    let mut last_sent: Option<DateTime<Utc>> = None;
    for (index, record) in &records {
        let Some(sent_at) = record.sent_at else { continue };
        last_sent = Some(last_sent.map_or(sent_at, |l| l.max(sent_at)));
        let intended_secs = driver.arrival(*index).at_secs;
        let intended = start_wall + chrono::Duration::microseconds((intended_secs * 1e6) as i64);
        let micros = |from: DateTime<Utc>| (sent_at - from).num_microseconds().unwrap_or(0).max(1) as u64;
        corrected.record(record.priority, micros(intended));
        uncorrected.record(record.priority, micros(record.created_at));
        if intended_secs < first_campaign {
            before_campaigns.record(record.priority, micros(intended));
        } else {
            with_campaigns.record(record.priority, micros(intended));
        }
    }
    let sent_count = audit_result.by_status.get("SENT").copied().unwrap_or(0);
    let active_secs = last_sent
        .map(|l| (l - start_wall).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0);
    let delivered_per_sec = if active_secs > 0.0 {
        sent_count as f64 / active_secs
    } else {
        0.0
    };

    let verdicts = evaluate(
        &scenario.slo,
        &Measured {
            latency: &corrected,
            delivered_per_sec,
            audit: &audit_result,
        },
    );
    let passed = verdicts.iter().all(|v| v.pass);

    let outcomes = driver.outcomes();
    let mut offered = Offered {
        requests: plan_of_traffic.arrivals.len() as u64,
        campaigns: plan_of_traffic
            .arrivals
            .iter()
            .filter(|a| matches!(a.request, scenarios::Request::Campaign { .. }))
            .count() as u64,
        expected_messages: plan_of_traffic.expected_messages(),
        late_starts: driver.late_starts(),
        not_started: (driver.total() - driver.started()) as u64,
        failed_requests: outcomes.iter().filter(|o| o.status != Some(202)).count() as u64,
        ..Offered::default()
    };
    offered.notifications = offered.requests - offered.campaigns;
    for outcome in outcomes.iter().filter(|o| o.is_campaign) {
        if let Some(body) = &outcome.response {
            offered.rejected_rows += body["rejected"].as_u64().unwrap_or(0);
            offered.duplicate_rows += body["duplicates"].as_u64().unwrap_or(0);
        }
    }

    let mut latency_by_phase = BTreeMap::new();
    if first_campaign.is_finite() && first_campaign > 0.0 {
        latency_by_phase.insert("before first campaign".to_string(), before_campaigns.summary());
        latency_by_phase.insert("with campaigns".to_string(), with_campaigns.summary());
    }
    let fraction_of_ceiling = calibration
        .as_ref()
        .filter(|c| c.msgs_per_sec > 0.0)
        .map(|c| delivered_per_sec / c.msgs_per_sec);

    let answer_times = fault_plan.answer_times();
    let handling: Vec<(Priority, hdrhistogram::Histogram<u64>)> = Priority::ALL
        .iter()
        .map(|p| (*p, pipeline.metrics.handling_histogram(*p)))
        .filter(|(_, histogram)| !histogram.is_empty())
        .collect();
    let mut handling_ms: BTreeMap<String, _> = handling
        .iter()
        .map(|(priority, histogram)| (priority.to_string(), percentiles_of(histogram)))
        .collect();
    if let Some(all) = merged(handling.iter().map(|(_, h)| h)).map_err(|e| other("merging handling times", e))? {
        handling_ms.insert("all".to_string(), percentiles_of(&all));
    }
    let stage_ms = engine::metrics::Stage::ALL
        .iter()
        .map(|stage| (stage.as_str().to_string(), pipeline.metrics.stage_histogram(*stage)))
        .filter(|(_, histogram)| !histogram.is_empty())
        .map(|(stage, histogram)| (stage, percentiles_of(&histogram)))
        .collect();
    let results = RunResults {
        schema_version: SCHEMA_VERSION,
        scenario: ScenarioInfo {
            name: scenario.name.clone(),
            description: scenario.description.clone(),
            file: options.scenario.display().to_string(),
            seed: scenario.seed,
            extra_faults: options.extra_faults.clone(),
        },
        verdict: if passed { "pass" } else { "fail" }.into(),
        started_at: start_wall.to_rfc3339(),
        traffic_secs,
        total_secs: run_started.elapsed().as_secs_f64(),
        slo: verdicts,
        audit: audit_result,
        offered,
        latency_ms: corrected.summary(),
        latency_uncorrected_ms: uncorrected.summary(),
        latency_by_phase_ms: latency_by_phase,
        handling_ms,
        stage_ms,
        delivered_per_sec,
        calibration,
        fraction_of_ceiling,
        timeseries: shared.samples.lock().expect("samples lock").clone(),
        faults: shared.windows.lock().expect("windows lock").clone(),
        fault_counts: fault_plan.counts(),
        aws_calls: fault_plan.calls(),
        stack_answer_ms: answer_times
            .iter()
            .map(|(op, h)| (op.clone(), percentiles_of(h)))
            .collect(),
        stack_reference_ms: stack_reference_ms(&answer_times),
        check_stack: checks,
        stack: StackInfo {
            target: format!("{:?}", stack.target()),
            versions: stack.versions().iter().cloned().collect(),
            startup_secs: stack.started_in().as_secs_f64(),
            mailer: pipeline.mailer.name().to_string(),
        },
        machine: MachineInfo::current(),
        goose_report: report_path.exists().then(|| report_path.display().to_string()),
    };
    tracing::info!(drained_secs, "run finished");
    let results_path = out_dir.join("results.json");
    write_results(&results, &results_path)?;
    let reports = reports::write_reports(&results, None, &out_dir)
        .map_err(|e| other(&format!("writing reports into {}", out_dir.display()), e))?;
    Ok(RunOutcome {
        results,
        results_path,
        reports,
        passed,
    })
}

pub fn write_results(results: &RunResults, path: &Path) -> Result<(), HarnessError> {
    let json = serde_json::to_string_pretty(results).map_err(|e| other("serialising results", e))?;
    std::fs::write(path, json).map_err(|e| other(&format!("writing {}", path.display()), e))
}
