//! Sender workers: take messages off the priority queues and send them.
//!
//! Each worker keeps up to two batches of each priority in hand; every send waits for a
//! permit from the engine's one [`dispatch::Dispatcher`], which paces sends to
//! the SES account's rate and gives them out by priority (high first, low
//! never starved: [`schedule`]). Each outcome is recorded
//! with a conditional status write. Throttling returns the message to its
//! queue with a growing delay; a permanent rejection ends it ERROR; anything
//! else is retried by SQS until the redrive policy moves it to the DLQ.
//!
//! What becomes of a message is decided in one pure function,
//! [`decide::decide`], from what happened to it ([`decide::Handled`]);
//! `process` runs the effects, asks, and applies the answer in one place.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::{stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::domain::Stage;
use crate::domain::{MessageBody, OutboundMessage, PerPriority, Priority, SendId};
use crate::mailer::{Email, EmailAttachment, MailError};
use crate::pipeline::Pipeline;
use crate::queue::{QueueRef, ReceivedMessage, MAX_BATCH};
use crate::store::{Claim, Lease};

pub mod decide;
pub mod dispatch;
pub mod schedule;

use decide::{decide, Handled, Next, RetryPolicy};
use dispatch::{run_quota_reader, Dispatcher};

/// What became of one received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Sent,
    /// Already final, or held by another copy: deleted without sending.
    SkippedFinal,
    Retrying(String),
    Rejected(String),
    /// Left for SQS to redeliver (and eventually dead-letter).
    Left(String),
}

/// Runs `workers` sender loops until `shutdown` is cancelled; in-flight sends
/// finish and fetched-but-unstarted messages go back to their queues. Dropping
/// (or aborting) the returned future stops every worker and fetcher at once,
/// as a crash would: SQS redelivers what they held after its visibility timeout.
///
/// The workers share one [`Dispatcher`]: the account's sending rate and the
/// priorities' shares of it are the engine's, not each worker's.
pub async fn run_senders(pipeline: Pipeline, shutdown: CancellationToken) {
    let dispatcher = Dispatcher::new(&pipeline.settings.sender, pipeline.metrics.clone());
    // The limits are read before the first send, so pacing starts from the first.
    if tokio::time::timeout(QUOTA_FIRST_READ, dispatcher.refresh(pipeline.mailer.as_ref()))
        .await
        .is_err()
    {
        tracing::warn!("SES's sending limits did not answer in time; reading them in the background");
    }
    let mut workers = JoinSet::new();
    workers.spawn(run_quota_reader(pipeline.clone(), dispatcher.clone(), shutdown.clone()));
    let in_hand = Arc::new(InHand::default());
    for worker in 0..pipeline.settings.sender.workers {
        workers.spawn(worker_loop(
            worker,
            pipeline.clone(),
            dispatcher.clone(),
            in_hand.clone(),
            shutdown.clone(),
        ));
    }
    while let Some(result) = workers.join_next().await {
        if let Err(error) = result {
            if error.is_panic() {
                tracing::error!(%error, "sender worker panicked");
            }
        }
    }
}

/// How long the senders wait for SES's limits before they start.
const QUOTA_FIRST_READ: Duration = Duration::from_secs(5);

/// Keeps a long poll open on one queue and hands each batch to its worker.
/// The channel holds one batch, so a fetcher only receives when its worker
/// will take the batch soon (messages do not age in a buffer); it receives
/// nothing while sending is paused, and for medium and low only about what
/// the budget lets them send soon.
async fn fetch(
    priority: Priority,
    pipeline: Pipeline,
    dispatcher: Arc<Dispatcher>,
    inbox: mpsc::Sender<Vec<ReceivedMessage>>,
    shutdown: CancellationToken,
) {
    let long_poll = Duration::from_secs(pipeline.settings.queues.long_poll_secs.into());
    loop {
        let permit = tokio::select! {
            permit = inbox.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = shutdown.cancelled() => return,
        };
        if let Some(paused) = dispatcher.paused_for() {
            tokio::select! {
                _ = tokio::time::sleep(paused.min(Duration::from_secs(1))) => continue,
                _ = shutdown.cancelled() => return,
            }
        }
        let size = dispatcher.fetch_size(priority, MAX_BATCH);
        make_way(&pipeline, priority).await;
        // Not raced with shutdown: a receive dropped mid-way would hide its messages
        // for a whole visibility timeout. It ends within `long_poll` anyway.
        let received = pipeline.queues.receive(QueueRef::Main(priority), size, long_poll).await;
        if let (Ok(messages), true) = (&received, priority != Priority::High) {
            pipeline.high.background_received(messages.len() < size);
        }
        match received {
            Ok(messages) if !messages.is_empty() => {
                if shutdown.is_cancelled() {
                    release(&pipeline, &messages).await;
                    return;
                }
                permit.send(messages);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%priority, %error, "receive failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Makes messages visible again at once, for another worker to take.
async fn release(pipeline: &Pipeline, messages: &[ReceivedMessage]) {
    for message in messages {
        let _ = pipeline.queues.set_visibility(message, Duration::ZERO).await;
    }
}

/// Batches of one priority a worker may have in hand at once: the next
/// starts while the last one's slowest messages finish, so the worker's
/// sends in flight do not dwindle to one straggler before it fetches again
/// (a batch is done when its slowest message is; where answer times are
/// independent, as on AWS, that is near the batch's p90).
const BATCHES_IN_HAND: usize = 2;

/// The messages this engine's senders are handling, by send id. SQS may
/// deliver one message twice at once (at-least-once), and both deliveries
/// would pass the store's claim, which tells copies apart, not deliveries of
/// one copy. The second delivery is left to its visibility timeout instead;
/// by then the first has finished (the claim then finds the message final)
/// or died (and the message is sent). Deliveries to two engine instances at
/// once are not covered: only the claim stands between them.
#[derive(Debug, Default)]
pub(crate) struct InHand(std::sync::Mutex<std::collections::HashSet<String>>);

impl InHand {
    /// Holds `send_id` until the guard is dropped; `None` if it is held already.
    fn hold(&self, send_id: &str) -> Option<Held<'_>> {
        let fresh = self.0.lock().expect("in-hand lock").insert(send_id.to_string());
        fresh.then(|| Held {
            in_hand: self,
            send_id: send_id.to_string(),
        })
    }
}

/// A send id in hand; dropping it lets the next delivery of it through.
struct Held<'a> {
    in_hand: &'a InHand,
    send_id: String,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.in_hand.0.lock().expect("in-hand lock").remove(&self.send_id);
    }
}

/// One worker: batches of each priority may be in hand at once, so a
/// reminder never waits for this worker to finish a batch of offers; who
/// sends first, and how many send at once, is the dispatcher's to say.
async fn worker_loop(
    worker: usize,
    pipeline: Pipeline,
    dispatcher: Arc<Dispatcher>,
    in_hand: Arc<InHand>,
    shutdown: CancellationToken,
) {
    let mut fetchers = JoinSet::new();
    let mut inboxes = Vec::with_capacity(3);
    for priority in Priority::ALL {
        let (tx, rx) = mpsc::channel(1);
        fetchers.spawn(fetch(
            priority,
            pipeline.clone(),
            dispatcher.clone(),
            tx,
            shutdown.clone(),
        ));
        inboxes.push(rx);
    }
    tracing::info!(worker, "sender worker started");
    let mut running = FuturesUnordered::new();
    let mut in_hand_batches = PerPriority::<usize>::default();
    let start = |priority: Priority, batch: Vec<ReceivedMessage>| {
        let (pipeline, dispatcher, shutdown) = (pipeline.clone(), dispatcher.clone(), shutdown.clone());
        let in_hand = in_hand.clone();
        async move {
            let context = Context {
                pipeline: &pipeline,
                dispatcher: &dispatcher,
                in_hand: &in_hand,
                shutdown: &shutdown,
                worker,
            };
            process_batch(&context, &batch).await;
            priority
        }
    };
    loop {
        let [high, medium, low] = &mut inboxes[..] else {
            unreachable!("three inboxes")
        };
        let (priority, batch) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            Some(done) = running.next(), if !running.is_empty() => {
                in_hand_batches[done] -= 1;
                continue;
            }
            Some(batch) = high.recv(), if in_hand_batches.high < BATCHES_IN_HAND => (Priority::High, batch),
            Some(batch) = medium.recv(), if in_hand_batches.medium < BATCHES_IN_HAND => (Priority::Medium, batch),
            Some(batch) = low.recv(), if in_hand_batches.low < BATCHES_IN_HAND => (Priority::Low, batch),
            else => break,
        };
        in_hand_batches[priority] += 1;
        running.push(start(priority, batch));
    }
    // Batches in hand finish their sends; what they had not started goes back.
    while running.next().await.is_some() {}
    while fetchers.join_next().await.is_some() {}
    for inbox in &mut inboxes {
        inbox.close();
        while let Ok(batch) = inbox.try_recv() {
            release(&pipeline, &batch).await;
        }
    }
    tracing::info!(worker, "sender worker stopped");
}

/// What handling a message needs besides the message.
struct Context<'a> {
    pipeline: &'a Pipeline,
    dispatcher: &'a Arc<Dispatcher>,
    in_hand: &'a InHand,
    shutdown: &'a CancellationToken,
    worker: usize,
}

/// The retry settings the sender's decisions use.
fn policy(pipeline: &Pipeline) -> RetryPolicy {
    let settings = &pipeline.settings;
    RetryPolicy {
        base: Duration::from_secs(settings.sender.retry_base_secs.into()),
        max: Duration::from_secs(settings.sender.retry_max_secs.into()),
        max_receives: settings.queues.max_receive_count,
    }
}

/// Handles one received message to its next resting state: the effects,
/// then the pure [`decide`], then [`apply`] (and the delete, if decided).
/// Sends within the settings' own budget (an unpaced one unless
/// `sender.max_send_rate` is set).
pub async fn process(pipeline: &Pipeline, received: &ReceivedMessage) -> Outcome {
    let dispatcher = Dispatcher::new(&pipeline.settings.sender, pipeline.metrics.clone());
    let shutdown = CancellationToken::new();
    let in_hand = InHand::default();
    let context = Context {
        pipeline,
        dispatcher: &dispatcher,
        in_hand: &in_hand,
        shutdown: &shutdown,
        worker: 0,
    };
    let (outcome, done) = settle(&context, received).await;
    if done {
        delete(pipeline, &[received]).await;
    }
    outcome
}

/// Handles one received batch `concurrency` messages at a time, then deletes
/// every message that is done with one batched call per queue.
async fn process_batch(context: &Context<'_>, batch: &[ReceivedMessage]) {
    let pipeline = context.pipeline;
    // Collected first: a closure held across the await trips the Send check of `tokio::spawn`.
    let settling: Vec<_> = batch.iter().map(|message| settle_logged(context, message)).collect();
    let settled: Vec<(&ReceivedMessage, bool)> = stream::iter(settling)
        .buffer_unordered(pipeline.settings.sender.concurrency)
        .collect()
        .await;
    let done: Vec<&ReceivedMessage> = settled.into_iter().filter(|(_, done)| *done).map(|(m, _)| m).collect();
    if let Some(first) = done.first() {
        make_way(pipeline, first.queue.priority()).await;
        delete(pipeline, &done).await;
    }
}

/// Background work (medium, low) waits here before each call while a
/// reminder is on its way ([`schedule::Passage`]); a reminder never waits.
async fn make_way(pipeline: &Pipeline, priority: Priority) {
    if priority != Priority::High {
        pipeline.high.make_way().await;
    }
}

async fn settle_logged<'a>(context: &Context<'_>, message: &'a ReceivedMessage) -> (&'a ReceivedMessage, bool) {
    let (outcome, done) = settle(context, message).await;
    tracing::debug!(worker = context.worker, send_id = ?message.send_id, ?outcome, "processed");
    (message, done)
}

/// Waits for a send permit, then the effects, the decision and every action
/// but a delete; says whether the message is done with (to be deleted).
async fn settle(context: &Context<'_>, received: &ReceivedMessage) -> (Outcome, bool) {
    let Context {
        pipeline, dispatcher, ..
    } = *context;
    let _held = match received.send_id.as_deref().map(|id| context.in_hand.hold(id)) {
        Some(None) => {
            tracing::info!(send_id = ?received.send_id, "another delivery of this message is in hand; this one waits out its visibility timeout");
            return (
                Outcome::Left("another delivery of this message is in hand".into()),
                false,
            );
        }
        held => held.flatten(),
    };
    // Never held past half its visibility timeout waiting: past that, a
    // fresh copy goes back instead (its receive count must not grow by waiting).
    let patience = pipeline.settings.queues.visibility_timeout() / 2;
    let patience = patience.to_std().unwrap_or(Duration::from_secs(1));
    let permit = tokio::select! {
        permit = dispatcher.acquire(received.queue.priority(), patience) => permit,
        _ = context.shutdown.cancelled() => {
            release(pipeline, std::slice::from_ref(received)).await;
            return (Outcome::Left("the senders are stopping".into()), false);
        }
    };
    let handled = match permit {
        Some(_permit) => handle(pipeline, dispatcher, received).await,
        None => Handled::Deferred {
            reason: "no send budget within half the visibility timeout".into(),
            after: dispatcher.paused_for().unwrap_or_default(),
        },
    };
    let next = decide(&handled, received.receive_count, &policy(pipeline));
    let done = apply(pipeline, received, &handled, next).await;
    (outcome(handled), done)
}

/// Runs the effects for one message — decode, claim, content, send, record —
/// as far as they get, and says what happened.
async fn handle(pipeline: &Pipeline, dispatcher: &Dispatcher, received: &ReceivedMessage) -> Handled {
    let priority = received.queue.priority();
    let message = match OutboundMessage::decode(&received.body) {
        Ok(message) => message,
        Err(reason) => {
            pipeline.metrics.record_undecodable();
            tracing::warn!(send_id = ?received.send_id, receives = received.receive_count, %reason, "undecodable message");
            return Handled::Undecodable(reason);
        }
    };
    let send_id = message.send_id;
    let claimed_at = tokio::time::Instant::now();
    let lease = Lease {
        copy: message.copy_id,
        until: crate::clock::now() + pipeline.settings.queues.visibility_timeout(),
    };
    make_way(pipeline, priority).await;
    match timed(pipeline, Stage::Claim, pipeline.store.begin_attempt(send_id, lease)).await {
        Ok(Claim::Claimed { .. }) => {}
        Ok(Claim::HeldByAnotherCopy) => {
            tracing::info!(%send_id, "another copy of this message holds its claim; deleting this copy");
            return Handled::SecondCopy;
        }
        Ok(Claim::AlreadyFinal(status)) => {
            pipeline.metrics.record_redelivery_skipped();
            tracing::info!(%send_id, %status, "redelivered message is already final; deleting without sending");
            return Handled::AlreadyFinal(status);
        }
        Ok(Claim::Missing) => {
            tracing::warn!(%send_id, "no status record for this message");
            return Handled::Missing;
        }
        Err(error) => {
            tracing::warn!(%send_id, %error, "could not claim message; SQS will redeliver it");
            return Handled::ClaimFailed(error.to_string());
        }
    }
    let email = match timed(pipeline, Stage::Content, resolve_email(pipeline, &message)).await {
        Ok(email) => email,
        Err(reason) => {
            tracing::warn!(%send_id, %reason, "could not load message content; SQS will redeliver it");
            return Handled::ContentFailed(reason);
        }
    };
    dispatcher.at_the_door().await;
    make_way(pipeline, priority).await;
    let sent = timed(pipeline, Stage::Send, pipeline.mailer.send(&email)).await;
    if priority == Priority::High {
        pipeline.high.passed(send_id);
    }
    match sent {
        Ok(provider_message_id) => {
            let sent_at = crate::clock::now();
            make_way(pipeline, priority).await;
            let record = pipeline.store.mark_sent(send_id, &provider_message_id, sent_at);
            let recorded = timed(pipeline, Stage::Record, record).await.map(|_| ());
            match &recorded {
                Ok(()) => {
                    let latency = (sent_at - message.accepted_at).to_std().unwrap_or_default();
                    pipeline.metrics.record_sent(priority, latency, claimed_at.elapsed());
                }
                Err(error) => tracing::error!(%send_id, %error, "sent, but recording SENT failed"),
            }
            Handled::Sent {
                recorded: recorded.map_err(|e| e.to_string()),
            }
        }
        Err(MailError::Throttled(reason)) => {
            dispatcher.throttled();
            pipeline.metrics.record_retry(priority);
            tracing::debug!(%send_id, %reason, "throttled; retrying later");
            Handled::Throttled(reason)
        }
        Err(MailError::Rejected(reason)) => {
            pipeline.metrics.record_error(priority);
            tracing::warn!(%send_id, %reason, "provider rejected message");
            let recorded = pipeline.store.mark_error(send_id, &reason).await.map(|_| ());
            if let Err(error) = &recorded {
                tracing::error!(%send_id, %error, "recording ERROR failed; SQS will redeliver");
            }
            Handled::Rejected {
                reason,
                recorded: recorded.map_err(|e| e.to_string()),
            }
        }
        Err(MailError::QuotaExhausted(reason)) => {
            let recheck = Duration::from_secs(pipeline.settings.sender.quota_recheck_secs.into());
            dispatcher.quota_exhausted(recheck);
            tracing::info!(%send_id, %reason, "daily quota used up; the message waits for it");
            Handled::Deferred { reason, after: recheck }
        }
        Err(MailError::Transient(reason)) => {
            pipeline.metrics.record_retry(priority);
            tracing::warn!(%send_id, receives = received.receive_count, %reason, "transient send failure");
            Handled::Transient(reason)
        }
    }
}

/// Carries out a decision on the message's queue: the one place the sender
/// delays or re-enqueues. Says whether the message is done with; the caller
/// deletes the done ones together ([`delete`]).
async fn apply(pipeline: &Pipeline, received: &ReceivedMessage, handled: &Handled, next: Next) -> bool {
    let send_id = received.send_id.as_deref().unwrap_or("?");
    match next {
        Next::Leave => false,
        Next::Delete => true,
        Next::RetryAfter(delay) => {
            if let Err(error) = pipeline.queues.set_visibility(received, delay).await {
                tracing::warn!(%send_id, %error, "could not delay the message; it reappears after its visibility timeout");
            }
            false
        }
        Next::Requeue(delay) => {
            // Only a decoded message is ever requeued (throttles and deferrals).
            let Ok(message) = OutboundMessage::decode(&received.body) else {
                tracing::error!(%send_id, ?handled, "requeue of an undecodable message refused");
                return false;
            };
            let priority = received.queue.priority();
            match pipeline.queues.send_delayed(priority, &message, delay).await {
                // The copy waits on the queue: the original is done with.
                Ok(()) => true,
                Err(error) => {
                    tracing::warn!(%send_id, %error, "re-enqueue after throttle failed");
                    false
                }
            }
        }
    }
}

/// What a caller is told about one message.
fn outcome(handled: Handled) -> Outcome {
    match handled {
        Handled::Sent { recorded: Ok(()) } => Outcome::Sent,
        Handled::AlreadyFinal(_) | Handled::SecondCopy => Outcome::SkippedFinal,
        Handled::Throttled(reason) | Handled::Deferred { reason, .. } => Outcome::Retrying(reason),
        Handled::Rejected {
            reason,
            recorded: Ok(()),
        } => Outcome::Rejected(reason),
        Handled::Missing => Outcome::Left("no status record for this message".into()),
        Handled::Sent { recorded: Err(reason) }
        | Handled::Rejected {
            recorded: Err(reason), ..
        }
        | Handled::Undecodable(reason)
        | Handled::ClaimFailed(reason)
        | Handled::ContentFailed(reason)
        | Handled::Transient(reason) => Outcome::Left(reason),
    }
}

/// Awaits one step of handling a message and records how long it took.
async fn timed<T>(pipeline: &Pipeline, stage: Stage, step: impl std::future::Future<Output = T>) -> T {
    let started = tokio::time::Instant::now();
    let output = step.await;
    pipeline.metrics.record_stage(stage, started.elapsed());
    output
}

async fn delete(pipeline: &Pipeline, done: &[&ReceivedMessage]) {
    // A failed delete means a redelivery, which the conditional claim turns into a skip.
    if let Err(error) = pipeline.queues.delete(done).await {
        let messages = done.len();
        tracing::warn!(messages, %error, "delete failed; the messages will be redelivered and skipped");
    }
}

async fn resolve_email(pipeline: &Pipeline, message: &OutboundMessage) -> Result<Email, String> {
    let text = match &message.body {
        MessageBody::Inline { text } => text.clone(),
        MessageBody::Stored { key, .. } => {
            let bytes = pipeline.blobs.get(key).await.map_err(|e| e.to_string())?;
            String::from_utf8(bytes.to_vec()).map_err(|e| format!("stored body {key}: {e}"))?
        }
    };
    let attachment = match &message.attachment {
        None => None,
        Some(a) => Some(EmailAttachment {
            filename: a.filename.clone(),
            content_type: a.content_type.clone(),
            bytes: pipeline.blobs.get(&a.key).await.map_err(|e| e.to_string())?,
        }),
    };
    Ok(Email {
        from: pipeline.settings.resources.sender_address.clone(),
        to: message.recipient.clone(),
        subject: message.subject.clone(),
        text,
        attachment,
    })
}

/// Ends dead-lettered messages: marks each ERROR and hides it in its DLQ,
/// where it stays for inspection and redrive.
pub async fn run_reconciler(pipeline: Pipeline, shutdown: CancellationToken) {
    let long_poll = Duration::from_secs(pipeline.settings.queues.long_poll_secs.into());
    // 12 hours, SQS's longest: reconciled letters stay put but out of the way.
    let hide_for = Duration::from_secs(43_200);
    let max_receives = pipeline.settings.queues.max_receive_count;
    while !shutdown.is_cancelled() {
        let polls = Priority::ALL.map(|p| pipeline.queues.receive(QueueRef::DeadLetter(p), MAX_BATCH, long_poll));
        let results = tokio::select! {
            results = futures::future::join_all(polls) => results,
            _ = shutdown.cancelled() => break,
        };
        for message in results.into_iter().filter_map(Result::ok).flatten() {
            reconcile(&pipeline, &message, max_receives).await;
            if let Err(error) = pipeline.queues.set_visibility(&message, hide_for).await {
                tracing::warn!(%error, "could not hide reconciled dead letter");
            }
        }
    }
}

async fn reconcile(pipeline: &Pipeline, message: &ReceivedMessage, max_receives: u32) {
    let priority = message.queue.priority();
    let Some(send_id) = message.send_id.as_deref().and_then(|id| id.parse::<SendId>().ok()) else {
        tracing::error!(queue = ?message.queue, "dead letter without a sendId attribute; left in the DLQ");
        return;
    };
    let reason = format!("gave up after {max_receives} receives; moved to the dead-letter queue");
    match pipeline.store.mark_error(send_id, &reason).await {
        Ok(true) => {
            pipeline.metrics.record_dead_lettered(priority);
            pipeline.metrics.record_error(priority);
            tracing::warn!(%send_id, %priority, "dead-lettered message marked ERROR");
        }
        Ok(false) => tracing::info!(%send_id, "dead letter was already final"),
        Err(error) => tracing::error!(%send_id, %error, "could not mark dead letter ERROR"),
    }
}

/// Starts the sender workers (when enabled) and the reconciler; they stop on `shutdown`.
pub fn spawn_background(pipeline: &Pipeline, shutdown: &CancellationToken) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    if pipeline.settings.sender.enabled {
        tasks.spawn(run_senders(pipeline.clone(), shutdown.clone()));
    }
    tasks.spawn(run_reconciler(pipeline.clone(), shutdown.clone()));
    tasks
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::config::Settings;
    use crate::domain::{EmailAddress, MessageKind, SendStatus};
    use crate::memory::{MemoryMailer, MemoryPipeline, MemoryStore};
    use crate::pipeline::{NewMessage, OnRefused};
    use crate::store::StatusStore;

    struct Harness {
        pipeline: Pipeline,
        store: Arc<MemoryStore>,
        mailer: Arc<MemoryMailer>,
    }

    /// A pipeline on in-memory adapters: retries and visibility at zero, so
    /// a message can be received again at once.
    fn harness(max_receives: u32) -> Harness {
        let mut settings = Settings::default();
        settings.sender.retry_base_secs = 0;
        settings.queues.max_receive_count = max_receives;
        settings.queues.visibility_timeout_secs = 0;
        let memory = MemoryPipeline::new(settings);
        Harness {
            pipeline: memory.pipeline,
            store: memory.store,
            mailer: memory.mailer,
        }
    }

    impl Harness {
        async fn accept_reminder(&self) -> SendId {
            let message = NewMessage {
                send_id: SendId::new(),
                kind: MessageKind::Reminder,
                priority: None,
                recipient: EmailAddress::parse("ann@example.com").unwrap(),
                subject: "Tomorrow".into(),
                body: "See you at 9.".into(),
                attachment: None,
            };
            let accepted = self
                .pipeline
                .accept(None, vec![message], OnRefused::Withdraw)
                .await
                .unwrap();
            accepted.send_ids[0].0
        }

        /// Receives one message from the high queue and processes it.
        async fn once(&self) -> (u32, Outcome) {
            let received = self
                .pipeline
                .queues
                .receive(QueueRef::Main(Priority::High), 1, Duration::ZERO)
                .await
                .unwrap();
            let message = received.into_iter().next().expect("a message to receive");
            (message.receive_count, process(&self.pipeline, &message).await)
        }

        async fn status(&self, id: SendId) -> SendStatus {
            self.store.get(id).await.unwrap().unwrap().status
        }

        async fn messages_in(&self, queue: QueueRef) -> u64 {
            let depth = self.pipeline.queues.depth(queue).await.unwrap();
            depth.visible + depth.in_flight + depth.delayed
        }
    }

    /// Sends in 10 ms, but to "slow…" addresses in 5 s.
    struct OneStraggler;

    #[async_trait::async_trait]
    impl crate::mailer::Mailer for OneStraggler {
        async fn send(&self, email: &crate::mailer::Email) -> Result<String, crate::mailer::MailError> {
            let slow = email.to.to_string().starts_with("slow");
            tokio::time::sleep(Duration::from_millis(if slow { 5_000 } else { 10 })).await;
            Ok(format!("id-{}", email.to))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_takes_its_next_batch_while_a_straggler_of_the_last_is_still_sending() {
        let mut settings = Settings::default();
        settings.sender.workers = 1;
        settings.sender.concurrency = 10;
        let memory = MemoryPipeline::new(settings);
        let pipeline = memory.pipeline.clone().with_mailer(Arc::new(OneStraggler));
        let reminders = (0..20).map(|n| NewMessage {
            send_id: SendId::new(),
            kind: MessageKind::Reminder,
            priority: None,
            recipient: EmailAddress::parse(&format!("{}{n}@example.com", if n == 0 { "slow" } else { "quick" }))
                .unwrap(),
            subject: "Tomorrow".into(),
            body: "See you at 9.".into(),
            attachment: None,
        });
        pipeline
            .accept(None, reminders.collect(), OnRefused::Withdraw)
            .await
            .unwrap();
        let shutdown = CancellationToken::new();
        let senders = tokio::spawn(run_senders(pipeline.clone(), shutdown.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The first batch of ten holds the straggler for 5 s; the second
        // batch went out meanwhile (it waited for it before: 9 sent at 1 s).
        let records = memory.store.records();
        let sent = records.iter().filter(|r| r.status == SendStatus::Sent).count();
        assert_eq!(sent, 19);
        shutdown.cancel();
        senders.await.unwrap();
    }

    #[test]
    fn a_second_delivery_of_a_message_in_hand_is_held_back_until_the_first_is_done() {
        let in_hand = InHand::default();
        let first = in_hand.hold("send-1").expect("nothing in hand yet");
        assert!(
            in_hand.hold("send-1").is_none(),
            "the same message, delivered twice at once"
        );
        assert!(in_hand.hold("send-2").is_some(), "another message goes through");
        drop(first);
        assert!(
            in_hand.hold("send-1").is_some(),
            "a later delivery, once the first is done"
        );
    }

    #[tokio::test]
    async fn a_sent_message_is_recorded_sent_and_deleted() {
        let h = harness(3);
        let id = h.accept_reminder().await;
        assert_eq!(h.once().await, (1, Outcome::Sent));
        assert_eq!(h.status(id).await, SendStatus::Sent);
        assert_eq!(h.messages_in(QueueRef::Main(Priority::High)).await, 0);
        assert_eq!(h.mailer.sent.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_second_copy_received_while_another_copy_holds_the_claim_is_deleted_unsent() {
        let h = harness(3);
        let id = h.accept_reminder().await;
        // Another copy of the same message (a resumed batch enqueued it
        // again) was claimed a moment ago and is being sent.
        let other = Lease {
            copy: crate::domain::CopyId::new(),
            until: chrono::Utc::now() + chrono::Duration::seconds(30),
        };
        let claimed = h.store.begin_attempt(id, other).await.unwrap();
        assert_eq!(claimed, Claim::Claimed { attempts: 1 });
        assert_eq!(h.once().await, (1, Outcome::SkippedFinal));
        assert_eq!(h.mailer.sent.lock().unwrap().len(), 0, "only the holder sends");
        assert_eq!(h.messages_in(QueueRef::Main(Priority::High)).await, 0);
        assert_eq!(h.status(id).await, SendStatus::Queued, "the holder finishes it");
    }

    #[tokio::test]
    async fn a_throttle_on_the_last_allowed_receive_requeues_a_fresh_copy_instead_of_dead_lettering() {
        let h = harness(3);
        let id = h.accept_reminder().await;
        h.mailer.script.lock().unwrap().extend([
            MailError::Throttled("slow down".into()),
            MailError::Throttled("slow down".into()),
        ]);
        assert!(matches!(h.once().await, (1, Outcome::Retrying(_))));
        // Receive 2 of 3: one more would dead-letter it, so a fresh copy goes back.
        assert!(matches!(h.once().await, (2, Outcome::Retrying(_))));
        assert_eq!(h.once().await, (1, Outcome::Sent), "the copy starts its count again");
        assert_eq!(h.status(id).await, SendStatus::Sent);
        assert_eq!(h.messages_in(QueueRef::DeadLetter(Priority::High)).await, 0);
        assert_eq!(h.mailer.sent.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_send_whose_sent_record_fails_is_kept_and_recorded_on_redelivery_at_the_price_of_a_resend() {
        let h = harness(3);
        let id = h.accept_reminder().await;
        *h.store.fail_mark_sent.lock().unwrap() = 1;
        assert!(matches!(h.once().await, (1, Outcome::Left(_))));
        assert_eq!(h.status(id).await, SendStatus::Queued, "not lost, not final");
        assert_eq!(
            h.messages_in(QueueRef::Main(Priority::High)).await,
            1,
            "left on its queue"
        );
        assert_eq!(h.once().await, (2, Outcome::Sent));
        assert_eq!(h.status(id).await, SendStatus::Sent);
        assert_eq!(h.mailer.sent.lock().unwrap().len(), 2, "the documented resend");
    }

    #[tokio::test]
    async fn a_redelivered_final_message_is_deleted_without_a_second_send() {
        let h = harness(3);
        let id = h.accept_reminder().await;
        let message = h
            .pipeline
            .queues
            .receive(QueueRef::Main(Priority::High), 1, Duration::ZERO)
            .await
            .unwrap();
        h.store.mark_sent(id, "earlier", chrono::Utc::now()).await.unwrap();
        assert_eq!(process(&h.pipeline, &message[0]).await, Outcome::SkippedFinal);
        assert_eq!(h.messages_in(QueueRef::Main(Priority::High)).await, 0);
        assert!(h.mailer.sent.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_message_with_no_record_backs_off_until_the_redrive_moves_it_to_the_dlq() {
        let h = harness(2);
        let foreign = OutboundMessage {
            send_id: SendId::new(),
            batch_id: None,
            kind: MessageKind::Subscription,
            priority: Priority::Low,
            recipient: crate::domain::EmailAddress::parse("bob@example.com").unwrap(),
            subject: "S".into(),
            body: crate::domain::MessageBody::Inline { text: "B".into() },
            attachment: None,
            accepted_at: chrono::Utc::now(),
            copy_id: Default::default(),
        };
        let queues = h.pipeline.queues.clone();
        queues
            .send_raw(Priority::Low, &foreign.encode(), Some(&foreign.send_id.to_string()))
            .await
            .unwrap();
        for expected_receive in 1..=2 {
            let received = queues
                .receive(QueueRef::Main(Priority::Low), 1, Duration::ZERO)
                .await
                .unwrap();
            assert_eq!(received[0].receive_count, expected_receive);
            assert!(matches!(process(&h.pipeline, &received[0]).await, Outcome::Left(_)));
        }
        let third = queues
            .receive(QueueRef::Main(Priority::Low), 1, Duration::ZERO)
            .await
            .unwrap();
        assert!(third.is_empty(), "past its last receive it was redriven");
        assert_eq!(h.messages_in(QueueRef::DeadLetter(Priority::Low)).await, 1);
        assert!(h.mailer.sent.lock().unwrap().is_empty());
    }
}
