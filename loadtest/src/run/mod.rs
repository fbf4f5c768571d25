//! One load run, start to verdict, flowing one way:
//!
//! 1. [`harness::set_up`]: the stack, the engine under test, the handles;
//! 2. traffic: goose offers the scenario's arrivals while the fault
//!    [`timeline`] plays and the sampler reads the pipeline, both sending
//!    events to one [`collector`](crate::collector);
//! 3. drain: wait until every accepted message is final (or the timeout);
//! 4. gather: the final records, the provider's mail record, the engine's figures;
//! 5. [`summarize`](crate::summarize::summarize), a pure function, then write
//!    `results.json` and the reports.
//!
//! With `--stack sim`, [`sim`] does steps 1–4 on virtual time, against models
//! of the services; steps 5 and the reports are the same.

pub mod harness;
pub mod sim;
pub mod timeline;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use chrono::{DateTime, Utc};
use engine::batches::BatchProgress;
use engine::domain::{BatchId, PerPriority, SendId, SendRecord, Stage};
use engine::pipeline::Pipeline;
use futures::{StreamExt, TryStreamExt};
use scenarios::{Fault, Plan, Scenario};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::collector::{collect, sample, Collected, Outputs, Sources};
use crate::cpu::CpuMeter;
use crate::driver::{drive, Driver, RequestOutcome};
use crate::results::{BatchSummary, MachineInfo, RunResults, ScenarioInfo};
use crate::summarize::{summarize, EngineFigures, Finals, RawRun, Traffic};
use harness::Harness;
use reports::cost::PriceCard;

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Scenario(#[from] scenarios::ScenarioError),
    #[error(transparent)]
    Pricing(#[from] reports::cost::PriceCardError),
    #[error("the simulation's profile: {0}")]
    Profile(#[source] reports::results::ResultsError),
    #[error("starting the simulation's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("--stack sim does not model the fault `{0}` yet (it models ses_quota, ses_throttle, ses_reject, ses_latency, sqs_duplicate and poison); run it on a real stack")]
    NotSimulated(String),
    #[error("the fault `{0}` only the simulated target can play: run it with --stack sim")]
    SimulatedOnly(String),
    #[error("loadtest sweep: {0}")]
    Sweep(String),
    #[error("stack: {0}")]
    Stack(#[from] localstack::StackError),
    #[error("engine: {0}")]
    Engine(#[from] engine::startup::StartupError),
    #[error("engine settings from the scenario: {0}")]
    Settings(#[from] engine::config::SettingsError),
    #[error("engine.mailer = \"smtp\": this stack runs no SMTP server (only the local target does)")]
    NoSmtpServer,
    #[error("binding the engine's port: {0}")]
    Bind(#[source] std::io::Error),
    #[error("load generator: {0}")]
    Goose(#[source] goose::GooseError),
    #[error("status store: {0}")]
    Store(#[from] engine::store::StoreError),
    #[error("queue: {0}")]
    Queue(#[from] engine::queue::QueueError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serialising the results: {0}")]
    Serialise(#[from] serde_json::Error),
    #[error("a task of the run failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

#[derive(Debug, Default)]
pub struct RunOptions {
    pub scenario: PathBuf,
    /// Where results go; `target/loadtest/<scenario>-<time>/` by default.
    pub out_dir: Option<PathBuf>,
    /// Overrides the scenario's target (`local`, `aws` or a URL).
    pub stack: Option<String>,
    /// Measure the pipeline's capacity first, in the same run.
    pub capacity: bool,
    /// Which emulator serves DynamoDB on the local stack.
    pub dynamodb: vocabulary::DynamoDbEmulator,
    /// Which emulator serves SES v2 on the local stack.
    pub sesv2: vocabulary::SesV2Emulator,
    /// Where a progress line goes every few seconds, if anywhere.
    pub progress: Option<crate::collector::ProgressSink>,
    /// Faults added to the scenario's, each an inline TOML table
    /// (`kind = "ses_latency", latency_ms = 50`).
    pub extra_faults: Vec<String>,
    /// Publish every reading for a live view (`loadtest run --tui`).
    pub live: Option<tokio::sync::watch::Sender<vocabulary::stats::Snapshot>>,
    /// The price card the run's AWS usage is priced with; the built-in
    /// `pricing/aws-us-east-1.toml` when unset.
    pub pricing: Option<PathBuf>,
    /// With `stack = "sim"`: where the simulated services' answer times come from.
    pub sim_profile: Option<sim::Profile>,
}

pub struct RunOutcome {
    pub results: RunResults,
    pub results_path: PathBuf,
    /// report.html and summary.md, beside the results.
    pub reports: reports::Written,
    pub passed: bool,
}

/// Runs the scenario and writes its results and reports.
pub async fn run(options: RunOptions) -> Result<RunOutcome, HarnessError> {
    let started = Instant::now();
    let scenario = load(&options)?;
    let pricing = match &options.pricing {
        Some(card) => PriceCard::load(card)?,
        None => PriceCard::builtin(),
    };
    let plan = scenarios::generate(&scenario);
    let out_dir = out_dir(&options, &scenario)?;
    tracing::info!(
        scenario = %scenario.name,
        requests = plan.arrivals.len(),
        expected_messages = plan.expected_messages(),
        out = %out_dir.display(),
        "starting run"
    );
    if options.stack.as_deref() == Some(SIM) {
        let run = sim::SimRun {
            info: scenario_info(&scenario, &options),
            scenario,
            plan,
            pricing,
            profile: options.sim_profile.clone().unwrap_or(sim::Profile::AwsTypical),
            live: options.live.clone(),
            progress: options.progress,
        };
        let results = tokio::task::spawn_blocking(move || sim::run(run)).await??;
        return write(results, &out_dir);
    }
    if let Some(spec) = scenario.faults.iter().find(|f| f.fault.simulated_only()) {
        return Err(HarnessError::SimulatedOnly(spec.fault.name().into()));
    }
    let mut harness = harness::set_up(&scenario, &options).await?;
    let running = offer_traffic(&harness, &scenario, &plan, &options, &out_dir).await?;
    drain(&harness, &running, &scenario).await;
    let raw = gather(&mut harness, running, (&scenario, &plan, &pricing), &options, started).await?;
    let results = summarize(raw);
    write(results, &out_dir)
}

/// `--stack sim`: the scenario on virtual time, against models of the services.
pub const SIM: &str = "sim";

fn scenario_info(scenario: &Scenario, options: &RunOptions) -> ScenarioInfo {
    ScenarioInfo {
        name: scenario.name.clone(),
        description: scenario.description.clone(),
        file: options.scenario.display().to_string(),
        seed: scenario.seed,
        extra_faults: options.extra_faults.clone(),
        overrides: Vec::new(),
    }
}

/// The scenario with the command line's extra faults.
fn load(options: &RunOptions) -> Result<Scenario, HarnessError> {
    let mut scenario = Scenario::load(&options.scenario)?;
    for fault in &options.extra_faults {
        scenario.add_fault(fault)?;
    }
    Ok(scenario)
}

/// Where a measurement's files go unless told: `<target>/loadtest/<label>-<time>/`.
pub fn default_out_dir(label: &str) -> PathBuf {
    let stamp = Utc::now().format("%Y%m%d-%H%M%S");
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
    target.join("loadtest").join(format!("{label}-{stamp}"))
}

fn out_dir(options: &RunOptions, scenario: &Scenario) -> Result<PathBuf, HarnessError> {
    let dir = options
        .out_dir
        .clone()
        .unwrap_or_else(|| default_out_dir(&scenario.name));
    std::fs::create_dir_all(&dir).map_err(|source| HarnessError::Write {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

/// A run whose traffic is over and whose sampler still reads the drain.
struct Running {
    driver: Arc<Driver>,
    /// The run's t = 0, on the monotonic clock and the wall clock.
    start: Instant,
    started_at: DateTime<Utc>,
    traffic_secs: f64,
    stop_sampler: CancellationToken,
    /// Ends the faults that last through the drain.
    drained: CancellationToken,
    lasting_faults: Vec<JoinHandle<()>>,
    sampler: JoinHandle<Option<CpuMeter>>,
    collector: JoinHandle<Collected>,
    goose_report: PathBuf,
}

/// Offers the scenario's traffic while the fault timeline plays; returns once
/// traffic is over and every fault has been undone.
async fn offer_traffic(
    harness: &Harness,
    scenario: &Scenario,
    plan: &Plan,
    options: &RunOptions,
    out_dir: &Path,
) -> Result<Running, HarnessError> {
    let traffic = Duration::from_secs_f64(scenario.run.duration_secs);
    // One second's lead lets goose bring its users up before the first arrival.
    let start = Instant::now() + Duration::from_secs(1);
    let started_at = Utc::now() + chrono::Duration::seconds(1);
    let driver = Driver::new(plan.arrivals.clone(), start, traffic, None);

    let (events, received) = mpsc::unbounded_channel();
    let outputs = Outputs {
        live: options.live.clone(),
        progress: options.progress,
        slo: scenario.slo.clone(),
    };
    let collector = tokio::spawn(collect(received, outputs));
    let stop_sampler = CancellationToken::new();
    let interval = Duration::from_millis(scenario.run.sample_interval_ms.max(100));
    let sources = Sources {
        pipeline: harness.pipeline.clone(),
        driver: driver.clone(),
        cpu: Some(CpuMeter::start(harness.stack.processes())),
    };
    let sampler = tokio::spawn(sample(sources, start, interval, events.clone(), stop_sampler.clone()));
    let over = CancellationToken::new();
    let drained = CancellationToken::new();
    let context = timeline::Context {
        start,
        traffic,
        harness: timeline::HarnessHandles::of(harness),
        events,
        over: over.clone(),
        drained: drained.clone(),
    };
    let faults = timeline::start(&scenario.faults, &context);
    drop(context);

    let goose_report = out_dir.join("goose-report.html");
    let driven = drive(driver.clone(), &harness.base_url, scenario.run.users, &goose_report).await;
    let traffic_secs = start.elapsed().as_secs_f64();
    // Transient faults end with the traffic; the senders must be up for the drain.
    over.cancel();
    for fault in faults.transient {
        fault.await?;
    }
    let paused = scenario.faults.iter().any(|f| matches!(f.fault, Fault::PauseStack));
    let lasting = scenario.faults.iter().any(|f| f.lasts_through_drain());
    harness.recover(paused, lasting).await?;
    driven.map_err(HarnessError::Goose)?;
    Ok(Running {
        driver,
        start,
        started_at,
        traffic_secs,
        stop_sampler,
        drained,
        lasting_faults: faults.lasting,
        sampler,
        collector,
        goose_report,
    })
}

/// Waits until every accepted message (and every poison) is SENT or ERROR and
/// every batch has said so (DONE or FAILED), or the scenario's drain timeout.
async fn drain(harness: &Harness, running: &Running, scenario: &Scenario) {
    let traffic = (running.start, running.traffic_secs);
    drain_until_final(
        &harness.pipeline,
        harness.audit_pipeline(),
        &running.driver,
        scenario,
        traffic,
    )
    .await;
}

/// The drain of a real or simulated run: `engine`'s counters say how many
/// messages finished, `store` (read past any fault) whether work is left.
/// `traffic` is the run's t = 0 and how long its traffic lasted.
async fn drain_until_final(
    engine: &Pipeline,
    store: &Pipeline,
    driver: &Driver,
    scenario: &Scenario,
    (start, traffic_secs): (Instant, f64),
) {
    // A poison fault set to start after the traffic never fired.
    let poison = scenario.poison_count_before(traffic_secs);
    let expected = driver.accepted_so_far() + poison;
    let deadline = Instant::now() + Duration::from_secs_f64(scenario.run.drain_timeout_secs);
    for look in 0u64.. {
        let counters = engine.metrics().counters();
        let finished = counters.finished();
        // A batch is DONE only once its own poll has seen every message final,
        // which may be a poll after the last message was sent.
        let batches_open = counters.ingest.batches_in_progress;
        // The counters miss what a killed engine finished but had not counted
        // yet: every 2 s the store itself says whether work is left.
        let idle = look % 8 == 7 && matches!(store.is_idle().await, Ok(true));
        if (finished >= expected && batches_open == 0) || idle || Instant::now() >= deadline {
            tracing::info!(
                finished,
                expected,
                batches_open,
                drained_secs = start.elapsed().as_secs_f64(),
                "drain over"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Stops the run and reads back everything the summary needs.
async fn gather<'a>(
    harness: &mut Harness,
    running: Running,
    (scenario, plan, pricing): (&'a Scenario, &'a Plan, &'a PriceCard),
    options: &RunOptions,
    started: Instant,
) -> Result<RawRun<'a>, HarnessError> {
    running.drained.cancel();
    for fault in running.lasting_faults {
        fault.await?;
    }
    running.stop_sampler.cancel();
    let (window_secs, cpu) = match running.sampler.await? {
        Some(meter) => (meter.elapsed_secs(), meter.finish()),
        None => (running.start.elapsed().as_secs_f64(), Default::default()),
    };
    let collected = running.collector.await?;
    harness.stop_engine().await;
    let outcomes = running.driver.outcomes();
    let mut finals = Finals::new(plan, running.started_at);
    final_records(harness.audit_pipeline(), &outcomes, &mut finals).await?;
    let batches = batch_summaries(harness.audit_pipeline(), &outcomes).await;
    let traffic = Traffic {
        outcomes,
        started: running.driver.started(),
        late_starts: running.driver.late_starts(),
    };
    Ok(RawRun {
        scenario: scenario_info(scenario, options),
        slo: &scenario.slo,
        plan,
        pricing,
        started_at: running.started_at,
        traffic_secs: running.traffic_secs,
        total_secs: started.elapsed().as_secs_f64(),
        traffic,
        finals,
        mailed: harness.mailed_during_run().await?,
        dead_lettered: harness.dead_lettered().await,
        collected,
        cpu,
        window_secs,
        engine: engine_figures(harness),
        quota_rate: scenario.ses_quota_rate(),
        capacity: harness.capacity.clone(),
        checks: harness.checks.clone(),
        batches,
        stack: harness.stack_info(),
        machine: MachineInfo::current(),
        goose_report: running
            .goose_report
            .exists()
            .then(|| running.goose_report.display().to_string()),
    })
}

/// The engine's handling and stage histograms at the end of the run.
fn engine_histograms(pipeline: &Pipeline) -> EngineFigures {
    let metrics = pipeline.metrics();
    EngineFigures {
        handling: PerPriority::from_fn(|p| Some(metrics.handling_histogram(p))),
        redeliveries_skipped: metrics.redeliveries_skipped(),
        stages: Stage::ALL
            .into_iter()
            .map(|stage| (stage, metrics.stage_histogram(stage)))
            .filter(|(_, histogram)| !histogram.is_empty())
            .collect(),
        ..EngineFigures::default()
    }
}

/// The engine's histograms and the fault plan's counts, at the end of the run.
fn engine_figures(harness: &Harness) -> EngineFigures {
    EngineFigures {
        fault_counts: harness.plan.counts(),
        aws_calls: harness.plan.calls(),
        answer_times: harness.plan.answer_times(),
        answer_times_by_load: harness.plan.answer_times_by_load(),
        usage: harness.plan.usage(),
        ..engine_histograms(&harness.pipeline)
    }
}

/// Every accepted message's final record, read a page at a time (sixteen
/// requests' pages at once) and taken into `finals` as it comes.
async fn final_records(
    pipeline: &Pipeline,
    outcomes: &[RequestOutcome],
    finals: &mut Finals<'_>,
) -> Result<(), HarnessError> {
    let accepted = outcomes.iter().filter(|o| o.status == Some(202));
    let mut pages = futures::stream::iter(accepted)
        .map(|outcome| Box::pin(record_pages(pipeline, outcome).map_ok(move |page| (outcome.index, page))))
        .flatten_unordered(16);
    while let Some(page) = pages.next().await {
        let (index, records) = page?;
        records.iter().for_each(|record| finals.add(index, record));
    }
    Ok(())
}

/// Where each accepted campaign's batch ended, and how long it took.
async fn batch_summaries(pipeline: &Pipeline, outcomes: &[RequestOutcome]) -> Vec<BatchSummary> {
    let batch_ids = outcomes
        .iter()
        .filter(|o| o.is_campaign && o.status == Some(202))
        .filter_map(|o| o.response.as_ref()?["batchId"].as_str()?.parse().ok());
    let mut summaries = Vec::new();
    for batch in batch_ids {
        match pipeline.batch_progress(batch).await {
            Ok(Some(progress)) => summaries.push(summary_of(&progress)),
            Ok(None) => tracing::error!(%batch, "an accepted batch has no progress record"),
            Err(error) => tracing::error!(%batch, %error, "could not read a batch's progress"),
        }
    }
    summaries
}

fn summary_of(progress: &BatchProgress) -> BatchSummary {
    let since_received =
        |at: Option<chrono::DateTime<Utc>>| at.map(|at| (at - progress.received_at).num_milliseconds() as f64 / 1000.0);
    BatchSummary {
        batch_id: progress.batch_id.to_string(),
        phase: progress.phase.as_str().into(),
        rows: progress.rows,
        accepted: progress.accepted,
        enqueued: progress.enqueued,
        resumed: progress.resumed,
        enqueue_secs: since_received(progress.enqueued_at),
        done_secs: since_received(progress.finished_at),
    }
}

/// The records one accepted request led to, a page at a time: a campaign's
/// batch, or one notification.
fn record_pages<'p>(
    pipeline: &'p Pipeline,
    outcome: &RequestOutcome,
) -> impl futures::Stream<Item = Result<Vec<SendRecord>, HarnessError>> + 'p {
    enum Next {
        Notification(SendId),
        Batch(BatchId, Option<String>),
        Done,
    }
    let body = outcome.response.as_ref();
    let id = |key: &str| body.and_then(|b| b[key].as_str()).map(str::to_string);
    let first = match outcome.is_campaign {
        false => id("sendId")
            .and_then(|s| s.parse().ok())
            .map_or(Next::Done, Next::Notification),
        true => id("batchId")
            .and_then(|b| b.parse().ok())
            .map_or(Next::Done, |batch| Next::Batch(batch, None)),
    };
    futures::stream::try_unfold(first, move |next| async move {
        let store = pipeline.store();
        Ok(match next {
            Next::Done => None,
            Next::Notification(id) => Some((store.get(id).await?.into_iter().collect(), Next::Done)),
            Next::Batch(batch, cursor) => {
                let page = store.by_batch(batch, None, 100, cursor.as_deref()).await?;
                let next = page.next_cursor.map_or(Next::Done, |c| Next::Batch(batch, Some(c)));
                Some((page.items, next))
            }
        })
    })
}

/// Writes `results.json`, `report.html` and `summary.md` into `out_dir`.
pub(crate) fn write(results: RunResults, out_dir: &Path) -> Result<RunOutcome, HarnessError> {
    let results_path = out_dir.join("results.json");
    write_results(&results, &results_path)?;
    let reports = reports::write_reports(&results, None, out_dir).map_err(|source| HarnessError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    Ok(RunOutcome {
        passed: results.passed(),
        results,
        results_path,
        reports,
    })
}

pub fn write_results(results: &RunResults, path: &Path) -> Result<(), HarnessError> {
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(path, json).map_err(|source| HarnessError::Write {
        path: path.to_path_buf(),
        source,
    })
}
