//! Set-up: the stack, the engine under test and the handles a run acts on.
//!
//! The engine runs in-process with its AWS clients routed through a
//! [`FaultPlan`]; the harness runs the senders itself so the fault timeline
//! can crash and restart them. A second pipeline over plain clients reads the
//! final records, so that injected faults can never hide a message from the audit.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use engine::aws::AwsClients;
use engine::config::{MailerKind, Settings};
use engine::faults::FaultPlan;
use engine::mailer::DryRunMailer;
use engine::pipeline::Pipeline;
use engine::provision::Provisioned;
use engine::startup::{on_aws, StartupError};
use engine::Application;
use localstack::{Stack, StackOptions, StackTarget};
use scenarios::{Scenario, TargetSpec};
use tokio::sync::{oneshot, Mutex};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{HarnessError, RunOptions};
use crate::audit::MailCounts;
use crate::capacity::{self, Capacity, Ladder};
use crate::check_stack::check_stack;
use crate::cpu::ENGINE_THREAD;
use crate::results::{CheckResult, StackInfo};

/// Everything a run acts on, from set-up to the audit.
pub struct Harness {
    pub stack: Arc<Stack>,
    /// The faults in force, shared by every client of the engine under test.
    pub plan: Arc<FaultPlan>,
    /// The engine's pipeline (through the fault plan).
    pub pipeline: Pipeline,
    /// The same resources through plain clients, for the audit.
    audit_pipeline: Pipeline,
    pub base_url: String,
    pub senders: Arc<Mutex<Senders>>,
    pub engine: Arc<Mutex<Engine>>,
    pub checks: Vec<CheckResult>,
    pub capacity: Option<Capacity>,
    /// What the provider had mailed to each address before the run, where it keeps a record.
    mail_before: Option<MailCounts>,
}

/// The runtime the engine under test runs on: its own threads, named
/// [`ENGINE_THREAD`], so its CPU can be told from the harness's (see [`crate::cpu`]).
/// Two workers, as the engine's own binary would have on this machine; idle
/// threads are kept, so none of the engine's CPU leaves with an exited thread.
pub fn engine_runtime() -> &'static tokio::runtime::Handle {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(std::thread::available_parallelism().map_or(2, usize::from))
                .thread_name(ENGINE_THREAD)
                .thread_keep_alive(std::time::Duration::from_secs(24 * 3600))
                .enable_all()
                .build()
                .expect("the engine's runtime starts")
        })
        .handle()
}

/// The engine's task, and the signal that stops it.
type RunningEngine = (oneshot::Sender<()>, JoinHandle<Result<(), StartupError>>);

/// The engine under test (its API and batch processing), which the fault
/// timeline may kill and start again on the same address, over the same
/// pipeline (adapters and metrics), as a restarted process would find the
/// same AWS resources.
pub struct Engine {
    pipeline: Pipeline,
    provisioned: Provisioned,
    address: SocketAddr,
    running: Option<RunningEngine>,
}

impl Engine {
    fn launch(app: Application) -> Self {
        let mut engine = Self {
            pipeline: app.pipeline().clone(),
            provisioned: app.provisioned().clone(),
            address: app.local_addr(),
            running: None,
        };
        engine.run(app);
        engine
    }

    fn run(&mut self, app: Application) {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = engine_runtime().spawn(app.run(async {
            let _ = stopped.await;
        }));
        self.running = Some((stop, task));
    }

    /// A crash: the engine's future is dropped wherever it is (batches
    /// mid-chunk, requests mid-write); what it had not saved is lost.
    pub async fn kill(&mut self) {
        if let Some((_, task)) = self.running.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Starts the engine again on its old address; it resumes unfinished batches.
    pub async fn restart(&mut self) -> Result<(), HarnessError> {
        if self.running.is_some() {
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(self.address)
            .await
            .map_err(HarnessError::Bind)?;
        let app = Application::restarted(self.pipeline.clone(), self.provisioned.clone(), listener);
        self.run(app);
        Ok(())
    }

    /// A clean stop: open requests and in-flight chunks finish.
    async fn stop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            let _ = stop.send(());
            if let Ok(Err(error)) = task.await {
                tracing::warn!(%error, "the engine stopped with an error");
            }
        }
    }
}

/// The sender workers, which the fault timeline may crash and restart.
pub struct Senders {
    pipeline: Pipeline,
    /// Where they run: the engine's runtime, or a simulation's.
    runtime: tokio::runtime::Handle,
    running: Option<(JoinHandle<()>, CancellationToken)>,
}

impl Senders {
    /// Senders for `pipeline` on `runtime`, not yet started.
    pub fn new(pipeline: Pipeline, runtime: tokio::runtime::Handle) -> Self {
        Self {
            pipeline,
            runtime,
            running: None,
        }
    }

    pub fn start(&mut self) {
        if self.running.is_none() {
            let token = CancellationToken::new();
            let senders = engine::sender::run_senders(self.pipeline.clone(), token.clone());
            let handle = self.runtime.spawn(senders);
            self.running = Some((handle, token));
        }
    }

    /// A crash: in-flight sends are dropped mid-way; SQS redelivers them later.
    pub fn crash(&mut self) {
        if let Some((handle, _)) = self.running.take() {
            handle.abort();
        }
    }

    /// A clean stop: in-flight sends finish.
    pub async fn stop(&mut self) {
        if let Some((handle, token)) = self.running.take() {
            token.cancel();
            let _ = handle.await;
        }
    }
}

/// A run's resource names: `lt-<scenario>-<random>`, unique per run.
fn run_prefix(name: &str) -> String {
    let clean: String = name
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(20)
        .collect();
    format!("lt-{clean}-{}", &uuid::Uuid::new_v4().simple().to_string()[..6])
}

/// The engine's settings as the scenario describes it.
pub(crate) fn settings_for(scenario: &Scenario, prefix: String, stack: &Stack) -> Result<Settings, HarnessError> {
    let mut settings = engine_settings(scenario, prefix);
    if scenario.engine.mailer == MailerKind::Smtp {
        // The stack's own SMTP server (only the local target runs one).
        let smtp = stack.smtp().ok_or(HarnessError::NoSmtpServer)?;
        settings.mailer.smtp.host = smtp.host.clone();
        settings.mailer.smtp.port = smtp.port;
    }
    settings.validate()?;
    Ok(settings)
}

/// The engine's settings from the scenario's `[engine]` table.
pub(crate) fn engine_settings(scenario: &Scenario, prefix: String) -> Settings {
    let mut settings = Settings::default();
    settings.resources.prefix = prefix;
    let engine = &scenario.engine;
    settings.sender.workers = engine.workers;
    settings.sender.concurrency = engine.concurrency;
    settings.sender.retry_base_secs = engine.retry_base_secs;
    settings.sender.retry_max_secs = engine.retry_max_secs;
    settings.sender.background_in_flight = engine.background_in_flight;
    if let Some(waiting) = engine.campaign_max_waiting {
        settings.queues.campaign_max_waiting = waiting;
    }
    if let Some(chunks) = engine.campaign_chunks_while_reminders {
        settings.queues.campaign_chunks_while_reminders = chunks;
    }
    if let Some(chunks) = engine.campaign_chunks_while_starved {
        settings.queues.campaign_chunks_while_starved = chunks;
    }
    // The harness runs the senders itself, so it can crash and restart them.
    settings.sender.enabled = false;
    settings.queues.visibility_timeout_secs = engine.visibility_timeout_secs;
    settings.queues.max_receive_count = engine.max_receives;
    settings.queues.long_poll_secs = engine.long_poll_secs;
    settings.mailer.kind = engine.mailer;
    settings
}

async fn start_stack(scenario: &Scenario, options: &RunOptions) -> Result<Stack, HarnessError> {
    let target = match options.stack.as_deref() {
        Some(text) => text.parse::<StackTarget>()?,
        None => match &scenario.run.target {
            TargetSpec::Local => StackTarget::Local,
            TargetSpec::Aws => StackTarget::Aws,
            TargetSpec::Endpoint(url) => url.parse::<StackTarget>()?,
        },
    };
    Ok(Stack::start(StackOptions {
        target,
        dynamodb: options.dynamodb,
        sesv2: options.sesv2,
        ..StackOptions::default()
    })
    .await?)
}

pub(crate) async fn bind() -> Result<tokio::net::TcpListener, HarnessError> {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(HarnessError::Bind)
}

/// Starts (or connects to) the stack, checks it, builds and starts the engine.
pub async fn set_up(scenario: &Scenario, options: &RunOptions) -> Result<Harness, HarnessError> {
    let stack = Arc::new(start_stack(scenario, options).await?);
    let plain_clients = AwsClients::for_stack(&stack).await;
    let plan = FaultPlan::new(scenario.seed);
    let clients = AwsClients::under_plan(&stack, plan.clone()).await;

    let prefix = run_prefix(&scenario.name);
    let checks = check_stack(&plain_clients, &format!("{prefix}-chk")).await;
    let capacity = match options.capacity {
        true => Some(capacity::measure(scenario, &prefix, &stack, &Ladder::default()).await?),
        false => None,
    };
    let settings = settings_for(scenario, prefix, &stack)?;
    let app = Application::build(settings.clone(), &clients, bind().await?).await?;
    let audit_pipeline = on_aws(settings, app.provisioned(), &plain_clients, Arc::new(DryRunMailer));
    let base_url = format!("http://{}", app.local_addr());
    let pipeline = app.pipeline().clone();
    let engine = Arc::new(Mutex::new(Engine::launch(app)));

    let mail_kept = stack.is_emulated() && scenario.engine.mailer.leaves_a_record();
    let mail_before = match mail_kept {
        true => Some(mail_counts(&stack).await?),
        false => None,
    };
    // An SES quota in force from t = 0 is the account's before the run
    // starts: the senders read it before their first send, as on AWS.
    let from_the_start = scenario.faults.iter().filter(|f| f.start_secs == 0.0);
    if let Some(quota) = from_the_start
        .filter_map(|f| super::timeline::account_quota(&f.fault))
        .next()
    {
        plan.set_ses_quota(Some(quota));
    }
    let senders = Arc::new(Mutex::new(Senders::new(pipeline.clone(), engine_runtime().clone())));
    senders.lock().await.start();
    Ok(Harness {
        stack,
        plan,
        pipeline,
        audit_pipeline,
        base_url,
        senders,
        engine,
        checks,
        capacity,
        mail_before,
    })
}

impl Harness {
    /// After traffic: no transient fault stays in force (those that last
    /// through the drain, like an SES quota, stay while `lasting`), the stack
    /// runs (if a fault paused it) and the senders are up.
    pub async fn recover(&self, stack_was_paused: bool, lasting: bool) -> Result<(), HarnessError> {
        if !lasting {
            self.plan.clear();
        }
        if stack_was_paused {
            self.stack.set_paused(false);
        }
        self.engine.lock().await.restart().await?;
        self.senders.lock().await.start();
        Ok(())
    }

    /// Stops the senders (in-flight sends finish) and the engine.
    pub async fn stop_engine(&mut self) {
        self.senders.lock().await.stop().await;
        self.engine.lock().await.stop().await;
    }

    /// The pipeline to read final records through: no fault plan in the way.
    pub fn audit_pipeline(&self) -> &Pipeline {
        &self.audit_pipeline
    }

    /// Messages now on the dead-letter queues, through the plain clients.
    pub async fn dead_lettered(&self) -> u64 {
        vocabulary::stats::dead_lettered(&self.audit_pipeline.queue_depths().await)
    }

    /// Per recipient, what the provider mailed during the run, where it keeps a record.
    pub async fn mailed_during_run(&self) -> Result<Option<MailCounts>, HarnessError> {
        let Some(before) = &self.mail_before else {
            return Ok(None);
        };
        Ok(Some(mail_counts(&self.stack).await?.since(before)))
    }

    pub fn stack_info(&self) -> StackInfo {
        StackInfo {
            target: format!("{:?}", self.stack.target()),
            versions: self.stack.versions().iter().cloned().collect(),
            startup_secs: self.stack.started_in().as_secs_f64(),
            mailer: self.pipeline.settings().mailer.kind,
        }
    }
}

/// Emails per recipient in the stack's sent-mail record, read a page at a
/// time: only the counts are kept.
async fn mail_counts(stack: &Stack) -> Result<MailCounts, HarnessError> {
    let mut counts = MailCounts::default();
    stack
        .each_sent_email(localstack::MailDetail::Recipients, |email| {
            for to in email.to {
                counts.add(&to, 1);
            }
        })
        .await?;
    Ok(counts)
}
