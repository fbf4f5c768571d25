//! `loadtest run --stack sim`: the scenario on virtual time.
//!
//! The engine's own code — the API's router, campaign batches, routing,
//! the senders' dispatcher and pacing, retries, the conditional claims, the
//! reconciler — runs unchanged on tokio's paused clock, over the in-memory
//! adapters (`engine::memory`) that wait each AWS call's answer time
//! (`engine::sim::ServiceTimes`) and an SES model with the account's limits
//! (`engine::sim::SesModel`). Requests go to the router in process (no
//! socket, so the clock may jump whenever every task waits on a timer), the
//! sampler and collector are the real run's, and the same summary, audit,
//! SLOs and reports follow, marked simulated.
//!
//! Chosen over turmoil and nexosim: turmoil simulates hosts and a network
//! between them (the engine's dependency on the AWS SDK's own HTTP stack
//! would have to be rewritten to its sockets), nexosim wants the model
//! written as its own actors; tokio's paused clock runs the engine as it is.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use engine::memory::{MemoryPipeline, MemoryQueues, MemoryStore};
use engine::pipeline::Pipeline;
use engine::sim::{AnswerTimes, ServiceTimes, SesFault, SesModel};
use engine::startup::{wire, Wired};
use reports::cost::PriceCard;
use reports::results::{Percentiles, RunResults, Simulation, StackInfo};
use scenarios::{Fault, Plan, Scenario};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vocabulary::{AwsOperation, LoadBucket, UsageByOperation};

use super::harness::Senders;
use super::{batch_summaries, HarnessError};
use crate::audit::MailCounts;
use crate::collector::{collect, sample, Collected, Event, Outputs, Sources};
use crate::driver::{Driver, InProcessEngine, RequestOutcome};
use crate::results::{MachineInfo, ScenarioInfo};
use crate::summarize::{summarize, EngineFigures, Finals, RawRun, Traffic};

/// Where the simulated services' answer times come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Profile {
    /// Answer times as AWS describes its services (see [`aws_typical`]).
    AwsTypical,
    /// Each operation's answer times as a real run measured them, under
    /// each load it met (`stack_answer_ms_by_load`, else `stack_answer_ms`).
    Calibrated(PathBuf),
}

impl std::str::FromStr for Profile {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            None if text == "aws-typical" => Ok(Profile::AwsTypical),
            Some(("calibrated", path)) if !path.is_empty() => Ok(Profile::Calibrated(PathBuf::from(path))),
            _ => Err(format!(
                "`{text}` is no simulation profile: `aws-typical` or `calibrated:<results.json of a real run>`"
            )),
        }
    }
}

impl Profile {
    pub fn name(&self) -> &'static str {
        match self {
            Profile::AwsTypical => "aws-typical",
            Profile::Calibrated(_) => "calibrated",
        }
    }

    fn service_times(&self, seed: u64) -> Result<ServiceTimes, HarnessError> {
        match self {
            Profile::AwsTypical => {
                let (by_operation, fallback) = aws_typical();
                Ok(ServiceTimes::new(by_operation, fallback, seed))
            }
            Profile::Calibrated(path) => {
                let run = RunResults::load(path).map_err(HarnessError::Profile)?;
                let (by_operation, fallback) = calibrated(&run);
                let times = ServiceTimes::new(by_operation, fallback, seed).with_load(calibrated_by_load(&run));
                Ok(match engine_cpu_per_call(&run) {
                    Some(per_call) => times.with_engine_cpu(per_call, run.cpu.cores),
                    None => times,
                })
            }
        }
    }
}

fn times(p50_ms: f64, p95_ms: f64, p99_ms: f64, max_ms: f64) -> AnswerTimes {
    AnswerTimes {
        p50_ms,
        p95_ms,
        p99_ms,
        max_ms,
    }
}

/// Answer times as AWS describes its services, inside the region: DynamoDB
/// "single-digit millisecond" (transactions and batches of 25 about twice
/// and three times one write), SQS "tens of milliseconds", S3 first bytes in
/// "100–200 ms" at the tail; SES publishes none, so its figures are this
/// model's assumption. A starting point: calibrate from a real run for more.
pub fn aws_typical() -> (BTreeMap<AwsOperation, AnswerTimes>, AnswerTimes) {
    use AwsOperation as Op;
    let dynamodb = times(4.0, 8.0, 15.0, 60.0);
    let sqs = times(10.0, 25.0, 50.0, 200.0);
    let s3 = times(30.0, 100.0, 200.0, 400.0);
    let mut by_operation: BTreeMap<AwsOperation, AnswerTimes> = [
        (Op::DynamoDbTransactWriteItems, times(8.0, 16.0, 30.0, 120.0)),
        (Op::DynamoDbBatchWriteItem, times(12.0, 25.0, 45.0, 150.0)),
        (Op::Sesv2SendEmail, times(40.0, 100.0, 200.0, 500.0)),
        (Op::Sesv2GetAccount, times(40.0, 100.0, 200.0, 500.0)),
    ]
    .into();
    for op in AwsOperation::ALL {
        let default = match op.service() {
            vocabulary::AwsService::DynamoDb => dynamodb,
            vocabulary::AwsService::Sqs => sqs,
            vocabulary::AwsService::S3 => s3,
            _ => times(40.0, 100.0, 200.0, 500.0),
        };
        by_operation.entry(*op).or_insert(default);
    }
    (by_operation, dynamodb)
}

/// The measured SQS calls a receive takes the time of, in order of
/// preference. A real receive's time is mostly its long poll's wait, which
/// the simulated queue waits itself; what is left is the server's work of
/// finding messages and answering, which a batch delete's time matches:
/// where most receives found messages at once, their median was a delete's
/// at the same load (receive / delete p50, 2026-12-03: `priority-isolation`
/// 3.9 / 3.7 ms at four open calls and 7.0 / 7.2 at eight, `crash-resume`
/// 8.8 / 8.8 at eight and 5.3 / 4.5 at sixteen).
const RECEIVE_LIKE: [AwsOperation; 3] = [
    AwsOperation::SqsDeleteMessageBatch,
    AwsOperation::SqsSendMessageBatch,
    AwsOperation::SqsSendMessage,
];

/// Puts a receive's times in `by_operation`: those of the first of
/// [`RECEIVE_LIKE`] it has, or none.
fn receive_like<T: Clone>(by_operation: &mut BTreeMap<AwsOperation, T>) {
    let like = RECEIVE_LIKE.iter().find_map(|op| by_operation.get(op)).cloned();
    match like {
        Some(times) => by_operation.insert(AwsOperation::SqsReceiveMessage, times),
        None => by_operation.remove(&AwsOperation::SqsReceiveMessage),
    };
}

/// Each operation's answer times as a real run measured them; a receive
/// takes those of [`RECEIVE_LIKE`]; what the run never called takes the
/// median of what it did.
pub fn calibrated(run: &RunResults) -> (BTreeMap<AwsOperation, AnswerTimes>, AnswerTimes) {
    let of = |p: &Percentiles| times(p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms);
    let mut by_operation: BTreeMap<AwsOperation, AnswerTimes> = run
        .stack_answer_ms
        .iter()
        .filter(|(_, p)| p.count > 0)
        .filter_map(|(label, p)| Some((label.parse().ok()?, of(p))))
        .collect();
    receive_like(&mut by_operation);
    let mut medians: Vec<AnswerTimes> = by_operation.values().copied().collect();
    medians.sort_by(|a, b| a.p50_ms.total_cmp(&b.p50_ms));
    let fallback = medians
        .get(medians.len() / 2)
        .copied()
        .unwrap_or_else(|| aws_typical().1);
    (by_operation, fallback)
}

/// The engine's CPU over a real run's AWS calls: what each simulated call
/// costs the engine (see [`ServiceTimes::with_engine_cpu`]). Where the
/// engine is busy it varies little, 0.30–0.44 ms a call (2026-12-04: smoke
/// 0.44, baseline 0.34, priority-isolation 0.38, crash-resume 0.30), so a
/// call is the unit it follows; a slow run spreads the idle engine's CPU
/// over few calls (ses-quota-priority 0.72). None where no CPU was measured.
fn engine_cpu_per_call(run: &RunResults) -> Option<Duration> {
    let cpu_ms = run.cpu.by_process.get(crate::cpu::ENGINE)?.cpu_ms;
    let calls: u64 = run.aws_calls.values().sum();
    (cpu_ms > 0.0 && calls > 0).then(|| Duration::from_secs_f64(cpu_ms / calls as f64 / 1000.0))
}

/// Fewer answers than this under one load say too little about it: such a
/// load takes the times of the nearest load measured more often.
const MIN_ANSWERS_PER_LOAD: u64 = 20;

/// Each operation's answer times under each load a real run measured them
/// at (`stack_answer_ms_by_load`), so simulated answers slow down as the
/// emulators' did when the simulated engine offers the same load. A receive
/// takes those of [`RECEIVE_LIKE`], as in [`calibrated`].
pub fn calibrated_by_load(run: &RunResults) -> BTreeMap<AwsOperation, BTreeMap<LoadBucket, AnswerTimes>> {
    let mut by_operation: BTreeMap<AwsOperation, BTreeMap<LoadBucket, AnswerTimes>> = run
        .stack_answer_ms_by_load
        .iter()
        .filter_map(|(label, by_load)| Some((label.parse::<AwsOperation>().ok()?, by_load)))
        .map(|(op, by_load)| {
            let measured = by_load
                .iter()
                .filter(|(_, p)| p.count >= MIN_ANSWERS_PER_LOAD)
                .map(|(load, p)| (*load, times(p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms)));
            (op, measured.collect())
        })
        .collect();
    receive_like(&mut by_operation);
    by_operation
}

/// What a simulated run needs, owned: it runs on a thread of its own.
pub struct SimRun {
    pub scenario: Scenario,
    pub plan: Plan,
    pub pricing: PriceCard,
    pub profile: Profile,
    pub info: ScenarioInfo,
    pub live: Option<tokio::sync::watch::Sender<vocabulary::stats::Snapshot>>,
    pub progress: Option<crate::collector::ProgressSink>,
}

/// Runs the scenario simulated, on a paused clock of its own; blocks until done.
pub fn run(sim: SimRun) -> Result<RunResults, HarnessError> {
    check_faults(&sim.scenario)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(HarnessError::Runtime)?;
    runtime.block_on(simulate(sim))
}

/// The faults the simulation models; any other is refused by name rather
/// than silently left out.
fn check_faults(scenario: &Scenario) -> Result<(), HarnessError> {
    let modelled = |fault: &Fault| {
        matches!(
            fault,
            Fault::SesQuota { .. }
                | Fault::SesThrottle { .. }
                | Fault::SesReject { .. }
                | Fault::SesLatency { .. }
                | Fault::SqsDuplicate { .. }
                | Fault::Poison { .. }
                | Fault::KillWorker
                | Fault::KillEngine
        )
    };
    match scenario.faults.iter().find(|f| !modelled(&f.fault)) {
        Some(unmodelled) => Err(HarnessError::NotSimulated(unmodelled.fault.name().to_string())),
        None => Ok(()),
    }
}

async fn simulate(sim: SimRun) -> Result<RunResults, HarnessError> {
    // Timestamps of this run measure its virtual time only, whatever other
    // runs (a sweep's, a test's) do on their own clocks beside it.
    engine::clock::anchor_this_thread();
    let wall = std::time::Instant::now();
    let scenario = &sim.scenario;
    // The senders run apart from the rest of the engine, as in a real run,
    // so a fault can crash them alone.
    let settings = super::harness::engine_settings(scenario, "sim".into());
    settings.validate()?;
    let times = Arc::new(sim.profile.service_times(scenario.seed)?);
    let memory = MemoryPipeline::simulated(settings, times.clone());
    let ses = Arc::new(SesModel::new(None, times.clone(), scenario.seed));
    let pipeline = memory.pipeline.clone().with_mailer(ses.clone());
    let engine = Arc::new(Mutex::new(SimEngine::new(pipeline.clone())));
    engine.lock().await.start();
    let senders = Arc::new(Mutex::new(Senders::new(pipeline.clone(), Handle::current())));
    senders.lock().await.start();

    let start = Instant::now();
    let started_at = engine::clock::now();
    let traffic = Duration::from_secs_f64(scenario.run.duration_secs);
    let driver = Driver::new(sim.plan.arrivals.clone(), start, traffic, None);
    let models = Simulated {
        pipeline: pipeline.clone(),
        queues: memory.queues.clone(),
        ses: ses.clone(),
        seed: scenario.seed,
        engine: engine.clone(),
        senders: senders.clone(),
    };
    let mut watching = Watching::start(&sim, models, &driver, start);
    let door = engine.lock().await.door.clone();
    driver.offer_in_process(door).await;
    let traffic_secs = start.elapsed().as_secs_f64().max(scenario.run.duration_secs);
    tokio::time::sleep_until(start + traffic).await;
    watching.traffic_over().await?;
    super::drain_until_final(&pipeline, &pipeline, &driver, scenario, (start, traffic_secs)).await;
    settle_batches(&pipeline, &driver.outcomes()).await;
    // The run ends when every message is final, not when the models have
    // wound down after it; so does its bill: the calls of winding down (a
    // worker's last long poll cut short) are not the run's and fall
    // differently from run to run.
    let virtual_secs = start.elapsed().as_secs_f64();
    let usage = simulated_usage(&times, &memory, &ses);
    let collected = watching.stop().await?;
    engine.lock().await.stop().await;
    senders.lock().await.stop().await;

    let outcomes = driver.outcomes();
    let ended = Ended {
        finals: finals_of(&memory.store, &outcomes, Finals::new(&sim.plan, started_at)),
        dead_lettered: vocabulary::stats::dead_lettered(&pipeline.queue_depths().await),
        batches: batch_summaries(&pipeline, &outcomes).await,
        traffic: Traffic {
            outcomes,
            started: driver.started(),
            late_starts: driver.late_starts(),
        },
        engine: EngineFigures {
            usage,
            ..engine_figures(
                &pipeline,
                ses.injected().into_iter().chain(memory.queues.duplicated()).collect(),
            )
        },
        mailed: ses.accepted().into_iter().collect(),
        collected,
        started_at,
        traffic_secs,
        virtual_secs,
    };
    let throttled = memory
        .store
        .partitions
        .as_ref()
        .map(|p| p.throttled())
        .unwrap_or_default();
    let mut results = summarize(ended.into_raw(&sim));
    results.simulation = Some(Simulation {
        profile: sim.profile.name().into(),
        calibrated_from: match &sim.profile {
            Profile::Calibrated(path) => Some(path.display().to_string()),
            Profile::AwsTypical => None,
        },
        engine_cpu_ms_per_call: times.engine_cpu_per_call().map(|d| d.as_secs_f64() * 1000.0),
        virtual_secs: results.total_secs,
        wall_secs: wall.elapsed().as_secs_f64(),
        ses_throttles: ses.throttled(),
        partition_throttles: throttled.by_key,
        first_throttled: throttled
            .first
            .map(|(at, key)| (key, at.saturating_duration_since(start).as_secs_f64())),
    });
    Ok(results)
}

/// The sampler, the collector and the fault timeline, while a simulation runs.
struct Watching {
    collector: tokio::task::JoinHandle<Collected>,
    sampler: tokio::task::JoinHandle<Option<crate::cpu::CpuMeter>>,
    stop_sampler: CancellationToken,
    faults: super::timeline::Playing,
    over: CancellationToken,
    drained: CancellationToken,
}

impl Watching {
    fn start(sim: &SimRun, models: Simulated, driver: &Arc<Driver>, start: Instant) -> Self {
        let (events, received) = mpsc::unbounded_channel();
        let outputs = Outputs {
            live: sim.live.clone(),
            progress: sim.progress,
            slo: sim.scenario.slo.clone(),
        };
        let collector = tokio::spawn(collect(received, outputs));
        let stop_sampler = CancellationToken::new();
        let sources = Sources {
            pipeline: models.pipeline.clone(),
            driver: driver.clone(),
            cpu: None,
        };
        let interval = Duration::from_millis(sim.scenario.run.sample_interval_ms.max(100));
        let sampler = tokio::spawn(sample(sources, start, interval, events.clone(), stop_sampler.clone()));
        let (over, drained) = (CancellationToken::new(), CancellationToken::new());
        let context = super::timeline::Context {
            start,
            traffic: Duration::from_secs_f64(sim.scenario.run.duration_secs),
            harness: models,
            events,
            over: over.clone(),
            drained: drained.clone(),
        };
        let faults = super::timeline::start(&sim.scenario.faults, &context);
        Self {
            collector,
            sampler,
            stop_sampler,
            faults,
            over,
            drained,
        }
    }

    /// Traffic is over: transient faults end, and those not begun never will.
    async fn traffic_over(&mut self) -> Result<(), HarnessError> {
        self.over.cancel();
        for fault in self.faults.transient.drain(..) {
            fault.await?;
        }
        Ok(())
    }

    /// Ends lasting faults, then the sampler; gives what the collector kept.
    async fn stop(self) -> Result<Collected, HarnessError> {
        self.drained.cancel();
        for fault in self.faults.lasting {
            fault.await?;
        }
        self.stop_sampler.cancel();
        let _ = self.sampler.await;
        Ok(self.collector.await?)
    }
}

/// What a simulation gathered once it ended.
struct Ended<'a> {
    finals: Finals<'a>,
    dead_lettered: u64,
    batches: Vec<crate::results::BatchSummary>,
    traffic: Traffic,
    engine: EngineFigures,
    mailed: MailCounts,
    collected: Collected,
    started_at: chrono::DateTime<chrono::Utc>,
    traffic_secs: f64,
    virtual_secs: f64,
}

impl<'a> Ended<'a> {
    fn into_raw(self, sim: &'a SimRun) -> RawRun<'a> {
        RawRun {
            scenario: sim.info.clone(),
            slo: &sim.scenario.slo,
            plan: &sim.plan,
            pricing: &sim.pricing,
            started_at: self.started_at,
            traffic_secs: self.traffic_secs,
            total_secs: self.virtual_secs,
            traffic: self.traffic,
            finals: self.finals,
            mailed: Some(self.mailed),
            dead_lettered: self.dead_lettered,
            collected: self.collected,
            cpu: BTreeMap::new(),
            window_secs: self.virtual_secs,
            engine: self.engine,
            quota_rate: sim.scenario.ses_quota_rate(),
            capacity: None,
            checks: Vec::new(),
            batches: self.batches,
            stack: StackInfo {
                target: "sim".into(),
                versions: [("profile".to_string(), profile_label(&sim.profile))].into(),
                startup_secs: 0.0,
                mailer: sim.scenario.engine.mailer,
            },
            machine: MachineInfo::current(),
            goose_report: None,
        }
    }
}

fn profile_label(profile: &Profile) -> String {
    match profile {
        Profile::AwsTypical => "aws-typical".into(),
        Profile::Calibrated(path) => format!("calibrated from {}", path.display()),
    }
}

/// Where a fault takes effect in a simulation: SES's limits and faults on
/// the SES model, duplicate deliveries and poison on the simulated queues,
/// crashes on the engine's own tasks. The timing is the real run's
/// ([`timeline`](super::timeline)); `check_faults` refused the rest.
#[derive(Clone)]
struct Simulated {
    pipeline: Pipeline,
    queues: Arc<MemoryQueues>,
    ses: Arc<SesModel>,
    seed: u64,
    engine: Arc<Mutex<SimEngine>>,
    senders: Arc<Mutex<Senders>>,
}

/// A fault in force on the models: SES's limits, a fault rule by name,
/// duplicate deliveries, or a crash.
enum InForce {
    Quota,
    SesFault(String),
    Duplicates,
    WorkersDown,
    EngineDown,
}

/// The simulated engine apart from its senders: the API, the campaign
/// batches and the reconciler, on the simulation's clock. `kill_engine`
/// drops it wherever it is and starts it again, which resumes the batches it
/// left unfinished, as a real engine's restart does.
struct SimEngine {
    pipeline: Pipeline,
    /// How the driver reaches the API.
    door: InProcessEngine,
    running: Option<Incarnation>,
}

/// One start of the simulated engine.
struct Incarnation {
    token: CancellationToken,
    background: tokio::task::JoinSet<()>,
    batches: JoinHandle<()>,
}

impl SimEngine {
    fn new(pipeline: Pipeline) -> Self {
        Self {
            pipeline,
            door: InProcessEngine::default(),
            running: None,
        }
    }

    fn start(&mut self) {
        if self.running.is_some() {
            return;
        }
        let token = CancellationToken::new();
        let Wired {
            router,
            background,
            batches,
        } = wire(self.pipeline.clone(), &token);
        self.door.up(router);
        self.running = Some(Incarnation {
            token,
            background,
            batches: tokio::spawn(batches),
        });
    }

    /// A crash: requests being served, batches mid-chunk and the reconciler
    /// are dropped wherever they are; what they had not written is lost.
    async fn kill(&mut self) {
        self.door.kill();
        if let Some(mut incarnation) = self.running.take() {
            incarnation.batches.abort();
            let _ = incarnation.batches.await;
            incarnation.background.shutdown().await;
        }
    }

    /// A clean stop: batches and the reconciler finish what they are doing.
    async fn stop(&mut self) {
        self.door.kill();
        if let Some(mut incarnation) = self.running.take() {
            incarnation.token.cancel();
            let _ = incarnation.batches.await;
            while incarnation.background.join_next().await.is_some() {}
        }
    }
}

impl super::timeline::Effects for Simulated {
    type Undo = InForce;

    async fn begin(&self, fault: &Fault, name: &str, events: &mpsc::UnboundedSender<Event>) -> Option<InForce> {
        let ses_fault = match *fault {
            Fault::SesQuota { .. } => {
                self.ses.set_limits(super::timeline::account_quota(fault));
                return Some(InForce::Quota);
            }
            Fault::Poison { count } => {
                super::timeline::poison(&self.pipeline, count.get(), events).await;
                return None;
            }
            Fault::SqsDuplicate { probability } => {
                self.queues.set_duplicates(Some((name, probability.0)), self.seed);
                return Some(InForce::Duplicates);
            }
            Fault::SesThrottle { probability } => SesFault::Throttle {
                probability: probability.0,
            },
            Fault::SesReject { probability } => SesFault::Reject {
                probability: probability.0,
            },
            Fault::SesLatency { latency_ms } => SesFault::Latency { ms: latency_ms },
            Fault::KillWorker => {
                tracing::warn!("fault: crashing the sender workers");
                self.senders.lock().await.crash();
                return Some(InForce::WorkersDown);
            }
            Fault::KillEngine => {
                tracing::warn!("fault: killing the engine (API, batch processing and senders)");
                self.senders.lock().await.crash();
                self.engine.lock().await.kill().await;
                return Some(InForce::EngineDown);
            }
            _ => {
                tracing::error!(
                    fault = fault.name(),
                    "a fault the simulation does not model was not refused"
                );
                return None;
            }
        };
        self.ses.add_fault(name, ses_fault);
        Some(InForce::SesFault(name.to_string()))
    }

    async fn finish(&self, undo: InForce) {
        match undo {
            InForce::Quota => self.ses.set_limits(None),
            InForce::SesFault(name) => self.ses.remove_fault(&name),
            InForce::Duplicates => self.queues.set_duplicates(None, self.seed),
            InForce::WorkersDown => self.senders.lock().await.start(),
            InForce::EngineDown => {
                self.engine.lock().await.start();
                self.senders.lock().await.start();
            }
        }
    }
}

/// Gives each batch whose messages are all final the time to see it and
/// say DONE (it looks every couple of seconds), as a real run's engine has
/// while it is stopped; at most ten virtual seconds.
async fn settle_batches(pipeline: &Pipeline, outcomes: &[RequestOutcome]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let batches = batch_summaries(pipeline, outcomes).await;
        if batches.iter().all(|b| b.done_secs.is_some() || b.phase == "FAILED") {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What the simulated calls would be billed for: every modelled call (a
/// request each), the DynamoDB units the table model charged item by item
/// (`engine::memory::write_units`), the receives that came back empty, and
/// a recipient per email SES accepted.
fn simulated_usage(times: &ServiceTimes, memory: &MemoryPipeline, ses: &SesModel) -> UsageByOperation {
    let mut usage = memory.store.usage();
    for (operation, calls) in times.calls() {
        let billed = usage.entry(operation.as_str().to_string()).or_default();
        billed.calls = calls;
        billed.requests = calls;
    }
    usage
        .entry(AwsOperation::SqsReceiveMessage.as_str().to_string())
        .or_default()
        .empty_receives = memory.queues.empty_receives();
    let recipients = ses.accepted().values().sum();
    usage
        .entry(AwsOperation::Sesv2SendEmail.as_str().to_string())
        .or_default()
        .recipients = recipients;
    usage
}

/// Every record in the simulated table, taken into `finals` with the arrival it came from.
fn finals_of<'a>(store: &MemoryStore, outcomes: &[RequestOutcome], mut finals: Finals<'a>) -> Finals<'a> {
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for outcome in outcomes.iter().filter(|o| o.status == Some(202)) {
        let Some(body) = &outcome.response else { continue };
        for key in ["batchId", "sendId"] {
            if let Some(id) = body[key].as_str() {
                by_key.insert(id.to_string(), outcome.index);
            }
        }
    }
    store.each_record(|record| {
        let key = match record.batch_id {
            Some(batch) => batch.to_string(),
            None => record.send_id.to_string(),
        };
        if let Some(index) = by_key.get(&key) {
            finals.add(*index, record);
        }
    });
    finals
}

/// The engine's histograms at the end of the run, and what the models
/// injected (the SES model's refusals counted as the real run counts the
/// quota's; the queues' second deliveries), by fault.
fn engine_figures(pipeline: &Pipeline, injected: BTreeMap<String, u64>) -> EngineFigures {
    EngineFigures {
        fault_counts: injected,
        ..super::engine_histograms(pipeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_calibrated_profile_keeps_each_load_measured_often_enough_and_no_long_polls() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../reports/baselines/smoke/run-1.json");
        let mut run = RunResults::load(&path).unwrap();
        let p = |count, p50_ms: f64| Percentiles {
            count,
            p50_ms,
            p95_ms: p50_ms * 2.0,
            p99_ms: p50_ms * 3.0,
            max_ms: p50_ms * 4.0,
        };
        let put = [(1, p(500, 1.0)), (8, p(300, 12.0)), (64, p(3, 90.0))].map(|(n, p)| (LoadBucket::of(n), p));
        let receive = [(LoadBucket::of(1), p(500, 900.0))];
        let delete = [(LoadBucket::of(4), p(100, 3.5))];
        run.stack_answer_ms_by_load = [
            ("DynamoDB.PutItem".to_string(), put.into()),
            ("SQS.ReceiveMessage".to_string(), receive.into()),
            ("SQS.DeleteMessageBatch".to_string(), delete.into()),
        ]
        .into();
        let by_load = calibrated_by_load(&run);
        let put = &by_load[&AwsOperation::DynamoDbPutItem];
        assert_eq!(
            put.keys().map(|l| l.calls()).collect::<Vec<_>>(),
            [1, 8],
            "64: three answers"
        );
        assert_eq!(put[&LoadBucket::of(8)].p50_ms, 12.0);
        let receive = &by_load[&AwsOperation::SqsReceiveMessage];
        assert_eq!(receive.len(), 1);
        assert_eq!(
            receive[&LoadBucket::of(4)].p50_ms,
            3.5,
            "a batch delete's, not the long polls'"
        );
    }

    #[test]
    fn a_calibrated_profile_takes_each_operation_from_the_run_and_a_receive_from_a_batch_delete() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../reports/baselines/smoke/run-1.json");
        let run = RunResults::load(&path).unwrap();
        let (by_operation, fallback) = calibrated(&run);
        let measured = &run.stack_answer_ms["DynamoDB.UpdateItem"];
        let update = by_operation[&AwsOperation::DynamoDbUpdateItem];
        assert_eq!((update.p50_ms, update.p99_ms), (measured.p50_ms, measured.p99_ms));
        // A receive's measured time is mostly its long poll's wait.
        assert!(run.stack_answer_ms["SQS.ReceiveMessage"].p50_ms > 100.0);
        assert_eq!(
            by_operation[&AwsOperation::SqsReceiveMessage],
            by_operation[&AwsOperation::SqsDeleteMessageBatch]
        );
        assert!(fallback.p50_ms > 0.0 && fallback.p50_ms < 100.0, "{fallback:?}");
    }

    #[test]
    fn a_calibrated_profile_charges_each_call_the_engines_cpu_over_the_runs_calls() {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../reports/baselines/smoke/run-1.json");
        let mut run = RunResults::load(&path).unwrap();
        run.aws_calls = [
            ("SQS.SendMessage".to_string(), 300),
            ("DynamoDB.PutItem".to_string(), 100),
        ]
        .into();
        run.cpu.by_process.insert(
            crate::cpu::ENGINE.to_string(),
            reports::results::ProcessCpu {
                cpu_ms: 120.0,
                ..Default::default()
            },
        );
        assert_eq!(engine_cpu_per_call(&run), Some(Duration::from_micros(300)));
        run.cpu.by_process.clear();
        assert_eq!(engine_cpu_per_call(&run), None, "a run without CPU figures: free");
    }

    #[test]
    fn profiles_are_named_on_the_command_line() {
        assert_eq!("aws-typical".parse(), Ok(Profile::AwsTypical));
        assert_eq!(
            "calibrated:r.json".parse(),
            Ok(Profile::Calibrated(PathBuf::from("r.json")))
        );
        assert!("typical".parse::<Profile>().is_err());
        let (by_operation, _) = aws_typical();
        assert!(AwsOperation::ALL.iter().all(|op| by_operation.contains_key(op)));
    }
}
