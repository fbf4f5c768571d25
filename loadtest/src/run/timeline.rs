//! The fault timeline: each fault of the scenario waits for its start on the
//! run's clock, takes effect, and is undone at its end: the end of traffic at
//! the latest for a transient fault, so the drain measures recovery; the end
//! of the drain for one that lasts (an SES quota is the account's, not a
//! passing fault). Each says when it began and ended over the run's event
//! channel; the collector keeps the windows.
//!
//! The timing is one for real and simulated runs; where a fault takes effect
//! is [`Effects`]: the real harness's fault plan, processes and stack
//! ([`HarnessHandles`]), or the simulated services (`run::sim`).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use engine::domain::{EmailAddress, MessageBody, MessageKind, OutboundMessage, Priority, SendId, SendRecord};
use engine::faults::{FaultEffect, FaultTarget, SesQuota};
use engine::pipeline::Pipeline;
use scenarios::{Fault, FaultSpec};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::harness::Harness;
use super::HarnessError;
use crate::collector::Event;

/// Where faults take effect.
pub trait Effects: Clone + Send + Sync + 'static {
    /// What undoing a fault in force needs.
    type Undo: Send;

    /// Puts a fault in force; `None` when it was done at once (poison).
    fn begin(
        &self,
        fault: &Fault,
        label: &str,
        events: &UnboundedSender<Event>,
    ) -> impl Future<Output = Option<Self::Undo>> + Send;

    /// Undoes a fault.
    fn finish(&self, undo: Self::Undo) -> impl Future<Output = ()> + Send;
}

/// What every fault of a run acts on.
#[derive(Clone)]
pub struct Context<E> {
    /// The run's t = 0.
    pub start: Instant,
    /// When traffic ends, on the run's clock.
    pub traffic: Duration,
    pub harness: E,
    pub events: UnboundedSender<Event>,
    /// Cancelled when traffic is over: faults not yet begun never will, and
    /// transient ones end.
    pub over: CancellationToken,
    /// Cancelled when the drain is over: lasting faults end.
    pub drained: CancellationToken,
}

/// The parts of the harness a fault touches.
#[derive(Clone)]
pub struct HarnessHandles {
    plan: std::sync::Arc<engine::faults::FaultPlan>,
    stack: std::sync::Arc<localstack::Stack>,
    pipeline: Pipeline,
    senders: std::sync::Arc<tokio::sync::Mutex<super::harness::Senders>>,
    engine: std::sync::Arc<tokio::sync::Mutex<super::harness::Engine>>,
}

impl HarnessHandles {
    pub fn of(harness: &Harness) -> Self {
        Self {
            plan: harness.plan.clone(),
            stack: harness.stack.clone(),
            pipeline: harness.pipeline.clone(),
            senders: harness.senders.clone(),
            engine: harness.engine.clone(),
        }
    }
}

/// A fault in force on the real harness, and what undoing it needs.
pub enum Active {
    /// A rule of the fault plan, by id.
    Rule(u64),
    Quota,
    WorkersDown,
    EngineDown,
    StackPaused,
    /// The SMTP server's reply rule; injections it had counted before.
    SmtpReply {
        label: String,
        counted_before: u64,
    },
}

/// Every fault's task: the transient ones (await them once `over` is
/// cancelled) and the lasting ones (once `drained` is).
pub struct Playing {
    pub transient: Vec<JoinHandle<()>>,
    pub lasting: Vec<JoinHandle<()>>,
}

/// Starts every fault's task.
pub fn start<E: Effects>(faults: &[FaultSpec], context: &Context<E>) -> Playing {
    let mut playing = Playing {
        transient: Vec::new(),
        lasting: Vec::new(),
    };
    for (index, spec) in faults.iter().cloned().enumerate() {
        let lasting = spec.lasts_through_drain();
        let handle = tokio::spawn(play(index, spec, context.clone()));
        match lasting {
            true => playing.lasting.push(handle),
            false => playing.transient.push(handle),
        }
    }
    playing
}

async fn play<E: Effects>(index: usize, spec: FaultSpec, context: Context<E>) {
    let at = context.start + Duration::from_secs_f64(spec.start_secs);
    tokio::select! {
        _ = tokio::time::sleep_until(at) => {}
        _ = context.over.cancelled() => return,
    }
    let now = || context.start.elapsed().as_secs_f64();
    let kind = spec.fault.name();
    let detail = spec.fault.detail();
    let _ = context.events.send(Event::FaultStarted {
        index,
        kind,
        detail,
        at_secs: now(),
    });
    let label = format!("{kind}#{index}");
    if let Some(undo) = context.harness.begin(&spec.fault, &label, &context.events).await {
        let lasting = spec.lasts_through_drain();
        let end = context.start + Duration::from_secs_f64(end_secs(&spec, context.traffic).min(1e9));
        let ended = if lasting { &context.drained } else { &context.over };
        tokio::select! {
            _ = tokio::time::sleep_until(end) => {}
            _ = ended.cancelled() => {}
        }
        context.harness.finish(undo).await;
    }
    let _ = context.events.send(Event::FaultEnded { index, at_secs: now() });
}

/// When a fault in force ends on the run's clock, unless the drain ends
/// first: after its duration, and at the end of traffic at the latest unless
/// it lasts through the drain (then infinity when it has no duration).
pub(crate) fn end_secs(spec: &FaultSpec, traffic: Duration) -> f64 {
    let latest = if spec.lasts_through_drain() {
        f64::INFINITY
    } else {
        traffic.as_secs_f64()
    };
    spec.duration_secs
        .map_or(f64::INFINITY, |d| spec.start_secs + d)
        .min(latest)
        .max(spec.start_secs)
}

impl Effects for HarnessHandles {
    type Undo = Active;

    async fn begin(&self, fault: &Fault, label: &str, events: &UnboundedSender<Event>) -> Option<Active> {
        begin(fault, label, self, events).await
    }

    async fn finish(&self, undo: Active) {
        finish(undo, self).await
    }
}

/// Puts a fault in force.
async fn begin(fault: &Fault, label: &str, h: &HarnessHandles, events: &UnboundedSender<Event>) -> Option<Active> {
    let rule =
        |target, probability: f64, effect| Some(Active::Rule(h.plan.activate(label, target, probability, effect)));
    match *fault {
        Fault::SesThrottle { probability } => rule(FaultTarget::SesSend, probability.0, FaultEffect::Throttle),
        Fault::SesReject { probability } => rule(FaultTarget::SesSend, probability.0, FaultEffect::Reject),
        Fault::SesLatency { latency_ms } => rule(FaultTarget::SesSend, 1.0, FaultEffect::Latency { ms: latency_ms }),
        Fault::SqsSendError { probability } => rule(FaultTarget::SqsSend, probability.0, FaultEffect::ServerError),
        Fault::SqsReceiveError { probability } => {
            rule(FaultTarget::SqsReceive, probability.0, FaultEffect::ServerError)
        }
        Fault::DynamodbThrottle { probability } => rule(FaultTarget::DynamoDb, probability.0, FaultEffect::Throttle),
        Fault::SqsDuplicate { .. } => {
            tracing::error!("sqs_duplicate reached a real stack: `run` refuses it before the stack starts");
            None
        }
        Fault::SesQuota { .. } => {
            h.plan.set_ses_quota(account_quota(fault));
            Some(Active::Quota)
        }
        Fault::KillWorker => {
            tracing::warn!("fault: crashing the sender workers");
            h.senders.lock().await.crash();
            Some(Active::WorkersDown)
        }
        Fault::KillEngine => {
            tracing::warn!("fault: killing the engine (API, batch processing and senders)");
            h.senders.lock().await.crash();
            h.engine.lock().await.kill().await;
            Some(Active::EngineDown)
        }
        Fault::PauseStack => {
            tracing::warn!("fault: pausing the stack's processes");
            h.stack.set_paused(true);
            Some(Active::StackPaused)
        }
        Fault::SmtpReply { code, probability } => {
            let counted_before = h.stack.smtp_injections().await.unwrap_or(0);
            let rule = localstack::SmtpFaultRule {
                code: code.0,
                message: "Injected by Courier's smtp_reply fault".into(),
                probability: probability.0,
                recipient_contains: None,
            };
            if let Err(error) = h.stack.set_smtp_faults(&[rule]).await {
                tracing::error!(%error, "smtp_reply fault could not be set");
            }
            let label = label.to_string();
            Some(Active::SmtpReply { label, counted_before })
        }
        Fault::Poison { count } => {
            poison(&h.pipeline, count.get(), events).await;
            None
        }
    }
}

/// The SES account's limits an `ses_quota` fault sets (`None` for any other fault).
pub fn account_quota(fault: &Fault) -> Option<SesQuota> {
    match *fault {
        Fault::SesQuota {
            max_send_rate,
            daily_quota,
            day_secs,
        } => Some(SesQuota {
            max_send_rate: max_send_rate.0,
            daily_quota,
            day: day_secs.map_or(SesQuota::DAY, |d| Duration::from_secs_f64(d.0)),
        }),
        _ => None,
    }
}

/// Undoes a fault.
async fn finish(active: Active, h: &HarnessHandles) {
    match active {
        Active::Rule(id) => h.plan.deactivate(id),
        Active::Quota => h.plan.set_ses_quota(None),
        Active::WorkersDown => {
            tracing::warn!("fault over: restarting the sender workers");
            h.senders.lock().await.start();
        }
        Active::EngineDown => {
            tracing::warn!("fault over: starting the engine again");
            if let Err(error) = h.engine.lock().await.restart().await {
                tracing::error!(%error, "the engine could not start again; the run's recovery tries once more");
            }
            h.senders.lock().await.start();
        }
        Active::StackPaused => h.stack.set_paused(false),
        Active::SmtpReply { label, counted_before } => {
            if let Err(error) = h.stack.set_smtp_faults(&[]).await {
                tracing::error!(%error, "smtp_reply fault could not be cleared");
            }
            let injected = h.stack.smtp_injections().await.unwrap_or(0);
            h.plan.add_count(&label, injected.saturating_sub(counted_before));
        }
    }
}

/// Puts `count` poison messages on the queues and says so to the collector.
pub(crate) async fn poison(pipeline: &Pipeline, count: u64, events: &UnboundedSender<Event>) {
    match inject_poison(pipeline, count).await {
        Ok(()) => drop(events.send(Event::Poisoned(count))),
        Err(error) => tracing::error!(%error, "poison injection failed"),
    }
}

/// Puts `count` messages no sender can decode on the queues, each with a
/// real PENDING record: every one must end in a dead-letter queue.
async fn inject_poison(pipeline: &Pipeline, count: u64) -> Result<(), HarnessError> {
    for i in 0..count {
        let priority = Priority::ALL[(i % 3) as usize];
        let message = OutboundMessage {
            send_id: SendId::new(),
            batch_id: None,
            kind: MessageKind::Offer,
            priority,
            recipient: EmailAddress::parse(&format!("poison.{i}@example.com")).expect("a valid address"),
            subject: "poison".into(),
            body: MessageBody::Inline { text: "poison".into() },
            attachment: None,
            accepted_at: engine::clock::now(),
            copy_id: Default::default(),
        };
        pipeline.store().put_pending(&[SendRecord::pending(&message)]).await?;
        let send_id = message.send_id.to_string();
        pipeline
            .queues()
            .send_raw(priority, "{\"poison\": true", Some(&send_id))
            .await?;
    }
    Ok(())
}
