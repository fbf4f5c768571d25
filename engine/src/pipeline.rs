//! The pipeline's shared parts, and acceptance: record PENDING, enqueue by
//! priority, record QUEUED. Nothing accepted is dropped: a message SQS refuses
//! even after a retry either ends ERROR with the reason or is withdrawn (its
//! record deleted), as the caller chooses, and the caller is told. An
//! acceptance that fails before anything was enqueued is rolled back, so an
//! error answered to a client means nothing was written.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::{stream, StreamExt};

use crate::batches::BatchStore;
use crate::blobs::{BlobError, BlobStore};
use crate::config::Settings;
use crate::domain::{
    Attachment, BatchId, EmailAddress, MessageBody, MessageKind, OutboundMessage, Priority, SendId, SendRecord,
};
use crate::mailer::Mailer;
use crate::metrics::Metrics;
use crate::queue::{batches, wire_size, MessageQueue, QueueDepth, QueueRef, MAX_BATCH_BYTES};
use crate::sender::schedule::{Passage, Starvation};
use crate::store::{StatusStore, StoreError};

/// Everything the API, senders and reconciler share. Cheap to clone.
///
/// Its parts are the four adapter traits (AWS in the engine, in memory in
/// unit tests and simulations); outside the engine they are reached through
/// methods, and the flow through them (accept → queue → send → record) is
/// the engine's own.
#[derive(Clone)]
pub struct Pipeline {
    pub(crate) settings: Arc<Settings>,
    pub(crate) queues: Arc<dyn MessageQueue>,
    pub(crate) store: Arc<dyn StatusStore>,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) batches: Arc<dyn BatchStore>,
    pub(crate) mailer: Arc<dyn Mailer>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) high: Arc<HighActivity>,
}

/// Whether high-priority work is flowing, so background work (a campaign
/// batch's ingest) yields the stack to it: while reminders arrive, campaign
/// chunks are written one at a time across all batches
/// (`queues.campaign_chunks_while_reminders`), instead of
/// [`crate::campaign::CHUNKS_IN_FLIGHT`] per batch. On the local stack the
/// emulators serialise writes, and a reminder's writes would otherwise queue
/// behind a burst of batch writes. Yielding is worth it only while the
/// medium and low senders have messages waiting: while their receives come
/// back short and chunks wait, ingest sets their pace, and one more chunk
/// may go each second it lasts, up to `queues.campaign_chunks_while_starved`;
/// one fewer each second a backlog stands ([`Starvation`], [`TurnLimits`]).
///
/// It also keeps the reminders on their way through ([`Passage`]), so
/// background work (campaign ingest, medium and low sends) starts no new
/// call while one passes: [`HighActivity::make_way`].
#[derive(Debug)]
pub struct HighActivity {
    origin: tokio::time::Instant,
    /// Milliseconds since `origin` of the last high message, plus one (0: never).
    last: std::sync::atomic::AtomicU64,
    /// Background turns held now.
    turns: std::sync::atomic::AtomicUsize,
    limits: TurnLimits,
    starvation: std::sync::Mutex<Starvation>,
    passage: std::sync::Mutex<Passage>,
    passed: tokio::sync::Notify,
}

/// One background turn (a chunk being written); dropping it ends the turn.
pub struct BackgroundTurn(Arc<HighActivity>);

impl Drop for BackgroundTurn {
    fn drop(&mut self) {
        self.0.turns.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How many background turns (campaign chunks being written) may be held at
/// once, across all batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnLimits {
    /// While reminders flow and the senders have messages waiting.
    pub while_reminders: usize,
    /// At most, while reminders flow but the medium and low senders are
    /// starved ([`Starvation`]): ingest sets their pace.
    pub while_starved: usize,
}

impl TurnLimits {
    pub fn of(settings: &crate::config::QueueSettings) -> Self {
        Self {
            while_reminders: settings.campaign_chunks_while_reminders,
            while_starved: settings.campaign_chunks_while_starved,
        }
    }

    /// The turns that may be held now: no limit while no reminder flows;
    /// while they do, at least one, plus `extra` for starved senders
    /// ([`Starvation::extra_turns`]), up to `while_starved`.
    pub fn now(self, reminders_flowing: bool, extra: usize) -> Option<usize> {
        reminders_flowing.then(|| self.usual() + extra.min(self.most_extra()))
    }

    /// The most turns starved senders may add.
    pub fn most_extra(self) -> usize {
        self.while_starved.saturating_sub(self.usual())
    }

    /// The turns while reminders flow and the senders have work: never below one.
    fn usual(self) -> usize {
        self.while_reminders.max(1)
    }
}

impl Default for TurnLimits {
    fn default() -> Self {
        Self::of(&crate::config::QueueSettings::default())
    }
}

impl Default for HighActivity {
    fn default() -> Self {
        Self::new(TurnLimits::default())
    }
}

impl HighActivity {
    pub fn new(limits: TurnLimits) -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            last: Default::default(),
            turns: Default::default(),
            limits,
            starvation: Default::default(),
            passage: Default::default(),
            passed: Default::default(),
        }
    }

    /// High-priority messages were accepted now: they are on their way.
    pub fn arriving(&self, send_ids: impl IntoIterator<Item = SendId>) {
        let now = self.origin.elapsed();
        self.last
            .store(now.as_millis() as u64 + 1, std::sync::atomic::Ordering::Relaxed);
        let mut passage = self.passage();
        for send_id in send_ids {
            passage.arrived(send_id, now);
        }
    }

    /// SES has taken a reminder (or it was given up): background work need
    /// not wait for it.
    pub fn passed(&self, send_id: SendId) {
        self.passage().passed(send_id);
        self.passed.notify_waiters();
    }

    /// Waits while a reminder is on its way (within [`Passage`]'s bounds),
    /// so background work starts no call that a reminder's would queue behind.
    pub async fn make_way(&self) {
        loop {
            let notified = self.passed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let Some(hold) = self.passage().hold(self.origin.elapsed()) else {
                return;
            };
            tokio::select! {
                () = tokio::time::sleep(hold) => {}
                () = notified => {}
            }
        }
    }

    /// A medium or low fetcher's receive came back: `short` if it brought
    /// fewer messages than it asked for (its queue ran dry).
    pub fn background_received(&self, short: bool) {
        self.starvation().received(short, self.origin.elapsed());
    }

    fn starvation(&self) -> std::sync::MutexGuard<'_, Starvation> {
        self.starvation.lock().expect("starvation lock")
    }

    fn passage(&self) -> std::sync::MutexGuard<'_, Passage> {
        self.passage.lock().expect("passage lock")
    }

    /// Whether a high-priority message was accepted within the last
    /// [`crate::sender::schedule::HIGH_ACTIVE`].
    pub fn active(&self) -> bool {
        let last = self.last.load(std::sync::atomic::Ordering::Relaxed);
        let window = crate::sender::schedule::HIGH_ACTIVE.as_millis() as u64;
        last > 0 && (self.origin.elapsed().as_millis() as u64 + 1).saturating_sub(last) < window
    }

    /// Waits for a turn at background work: when fewer are held than
    /// [`TurnLimits::now`] allows.
    pub async fn background_turn(self: &Arc<Self>) -> BackgroundTurn {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            let held = self.turns.load(SeqCst);
            let now = self.origin.elapsed();
            let extra = self.starvation().extra_turns();
            let may = self.limits.now(self.active(), extra).is_none_or(|limit| held < limit);
            if may && self.turns.compare_exchange(held, held + 1, SeqCst, SeqCst).is_ok() {
                return BackgroundTurn(self.clone());
            }
            if !may {
                self.starvation().held_back(now, self.limits.most_extra());
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// A message the API has validated, before it gets an id and a queue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// A fresh id for a notification; a campaign row's is derived from its
    /// batch and row (`SendId::for_row`), so writing it again is harmless.
    pub send_id: SendId,
    pub kind: MessageKind,
    /// Wins over the routing rule for its kind.
    pub priority: Option<Priority>,
    pub recipient: EmailAddress,
    pub subject: String,
    pub body: String,
    pub attachment: Option<Attachment>,
}

#[derive(Debug, Clone, Default)]
pub struct Accepted {
    pub send_ids: Vec<(SendId, Priority)>,
    pub enqueued: usize,
    /// Accepted but not enqueued after a retry, with the reason: recorded
    /// ERROR or withdrawn, as [`OnRefused`] said.
    pub failed: Vec<(SendId, String)>,
}

/// How a chunk of a batch is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recording {
    /// Never written before: one batched write.
    New,
    /// Perhaps written (and enqueued, or sent) before: conditional writes.
    MayExist,
}

/// What becomes of accepted messages SQS still refuses after a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnRefused {
    /// Recorded ERROR with the reason (a campaign: the rest of it goes on).
    RecordError,
    /// Their records and stored bodies deleted (a single notification,
    /// answered with an error: the client retries, nothing stays behind).
    Withdraw,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Batch(#[from] crate::batches::BatchStoreError),
}

const PARALLEL_CALLS: usize = 8;

/// The ids a batch put on its queue, and those refused with the reason.
type Enqueued = (Vec<SendId>, Vec<(SendId, String)>);

impl Pipeline {
    /// A pipeline over these adapters, with fresh metrics.
    pub fn new(
        settings: Settings,
        queues: Arc<dyn MessageQueue>,
        store: Arc<dyn StatusStore>,
        blobs: Arc<dyn BlobStore>,
        batches: Arc<dyn BatchStore>,
        mailer: Arc<dyn Mailer>,
    ) -> Self {
        let high = Arc::new(HighActivity::new(TurnLimits::of(&settings.queues)));
        Self {
            settings: Arc::new(settings),
            queues,
            store,
            blobs,
            batches,
            mailer,
            metrics: Arc::new(Metrics::default()),
            high,
        }
    }

    /// The same pipeline (adapters and metrics shared) with other sender settings:
    /// how `loadtest capacity` steps the senders' concurrency.
    pub fn with_sender(&self, sender: crate::config::SenderSettings) -> Self {
        let mut settings = (*self.settings).clone();
        settings.sender = sender;
        Self {
            settings: Arc::new(settings),
            ..self.clone()
        }
    }

    /// The same pipeline with another mailer (a throttling or slow provider).
    pub fn with_mailer(mut self, mailer: Arc<dyn Mailer>) -> Self {
        self.mailer = mailer;
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn store(&self) -> &dyn StatusStore {
        self.store.as_ref()
    }

    pub fn queues(&self) -> &dyn MessageQueue {
        self.queues.as_ref()
    }

    pub fn mailer(&self) -> &dyn Mailer {
        self.mailer.as_ref()
    }

    /// Whether nothing accepted is left to do: no batch still being turned
    /// into messages and no record PENDING or QUEUED. The store's truth,
    /// whatever this process's counters say (a crash loses counts, not work).
    pub async fn is_idle(&self) -> Result<bool, IngestError> {
        if !self.batches.unfinished().await?.is_empty() {
            return Ok(false);
        }
        Ok(!self.store.has_unfinished().await?)
    }

    /// Every queue's depth now; a queue that cannot be read is left out.
    ///
    /// Read one queue at a time, not all six at once: six reads landing
    /// together on LocalStack's one Python process queued a reminder's
    /// `SendMessage` behind them. In `ses-quota-priority`, read every second
    /// all at once, a read took 9 ms at p50, `SendMessage` up to 115–176 ms,
    /// and reminders' p99 with the flood rose 3–4× in two runs of seven; one
    /// at a time, a read takes 2 ms, `SendMessage` at most 15 ms, and the
    /// ratio was 1.04–1.90× in three of three. The harness reads the
    /// pipeline it measures every second; it must not be what it measures.
    pub async fn queue_depths(&self) -> BTreeMap<QueueRef, QueueDepth> {
        let mut depths = BTreeMap::new();
        for queue in QueueRef::ALL {
            if let Ok(depth) = self.queues.depth(queue).await {
                depths.insert(queue, depth);
            }
        }
        depths
    }

    /// The most one message may take on its queue, measured as SQS measures
    /// it (encoded body and attributes): the setting, capped by what the
    /// queues say they take and by the batch limit.
    pub fn inline_limit(&self) -> usize {
        self.settings
            .api
            .inline_body_limit_bytes
            .min(self.queues.max_message_bytes())
            .min(MAX_BATCH_BYTES)
    }

    pub async fn accept(
        &self,
        batch_id: Option<BatchId>,
        messages: Vec<NewMessage>,
        on_refused: OnRefused,
    ) -> Result<Accepted, IngestError> {
        let outbound = self.prepare(batch_id, messages).await?;
        let reminders: Vec<SendId> = outbound
            .iter()
            .filter(|m| m.priority == Priority::High)
            .map(|m| m.send_id)
            .collect();
        self.high.arriving(reminders.iter().copied());
        let records: Vec<SendRecord> = outbound.iter().map(SendRecord::pending).collect();
        // Recorded before enqueued, so a sender never meets a message with no record.
        if let Err(error) = self.store.put_pending(&records).await {
            reminders.into_iter().for_each(|id| self.high.passed(id));
            self.roll_back(&outbound).await;
            return Err(error.into());
        }
        self.metrics.record_upload(records.len(), 0, 0);
        Ok(self.enqueue_recorded(outbound, on_refused).await)
    }

    /// One chunk of a campaign batch: recorded PENDING and enqueued. When the
    /// chunk may have been written before (the batch was taken up again after
    /// a crash, or this is a retry), records are written only where absent and
    /// only those still PENDING are enqueued: a row already queued or sent is
    /// left alone, and a second copy of one PENDING but already enqueued is
    /// harmless (the sender's claim holds for one copy). Nothing is rolled
    /// back on an error: the caller retries the chunk as `MayExist`.
    pub(crate) async fn accept_chunk(
        &self,
        batch_id: BatchId,
        messages: Vec<NewMessage>,
        recording: Recording,
    ) -> Result<Accepted, IngestError> {
        let outbound = self.prepare(Some(batch_id), messages).await?;
        let records: Vec<SendRecord> = outbound.iter().map(SendRecord::pending).collect();
        let outbound = match recording {
            Recording::New => {
                self.store.put_pending(&records).await?;
                outbound
            }
            Recording::MayExist => {
                let pending: std::collections::HashSet<SendId> =
                    self.store.put_pending_if_absent(&records).await?.into_iter().collect();
                outbound.into_iter().filter(|m| pending.contains(&m.send_id)).collect()
            }
        };
        self.metrics.record_upload(outbound.len(), 0, 0);
        Ok(self.enqueue_recorded(outbound, OnRefused::RecordError).await)
    }

    /// Enqueues recorded messages and records them QUEUED; those SQS still
    /// refuses after a retry are given up as `on_refused` says.
    async fn enqueue_recorded(&self, outbound: Vec<OutboundMessage>, on_refused: OnRefused) -> Accepted {
        let mut accepted = Accepted {
            send_ids: outbound.iter().map(|m| (m.send_id, m.priority)).collect(),
            ..Accepted::default()
        };
        let by_id: std::collections::HashMap<SendId, &OutboundMessage> =
            outbound.iter().map(|m| (m.send_id, m)).collect();
        let mut queued = Vec::with_capacity(outbound.len());
        for (priority, (sent, failed)) in self.enqueue_all(&outbound).await {
            self.metrics.record_enqueued(priority, sent.len());
            accepted.enqueued += sent.len();
            queued.extend(sent);
            for (send_id, reason) in failed {
                self.give_up(by_id[&send_id], &reason, on_refused).await;
                accepted.failed.push((send_id, reason));
            }
        }
        // The messages are on their queues now: a failed QUEUED write loses
        // nothing (a sender claims PENDING and QUEUED alike), so it is no error.
        if let Err(error) = self.store.mark_queued(&queued).await {
            tracing::warn!(%error, count = queued.len(), "could not record QUEUED; the senders will still claim them");
        }
        accepted
    }

    /// Gives each message its id and priority, and stores a body too large
    /// for its queue in the blob store. On failure, removes what it stored.
    async fn prepare(
        &self,
        batch_id: Option<BatchId>,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<OutboundMessage>, IngestError> {
        let now = crate::clock::now();
        let inline_limit = self.inline_limit();
        let prepared: Vec<Result<OutboundMessage, IngestError>> = stream::iter(messages)
            .map(|new| async move {
                let send_id = new.send_id;
                let mut message = OutboundMessage {
                    send_id,
                    batch_id,
                    kind: new.kind,
                    priority: self.settings.routing.route(new.kind, new.priority),
                    recipient: new.recipient.clone(),
                    subject: new.subject,
                    body: MessageBody::Inline { text: new.body },
                    attachment: new.attachment,
                    accepted_at: now,
                    copy_id: Default::default(),
                };
                if wire_size(&message) > inline_limit {
                    let MessageBody::Inline { text } = message.body else {
                        unreachable!("built inline")
                    };
                    let key = format!("bodies/{send_id}");
                    let bytes = text.len();
                    self.blobs
                        .put(&key, Bytes::from(text), "text/plain; charset=utf-8")
                        .await?;
                    message.body = MessageBody::Stored { key, bytes };
                }
                Ok(message)
            })
            .buffered(PARALLEL_CALLS)
            .collect()
            .await;
        if let Some(position) = prepared.iter().position(Result::is_err) {
            let stored: Vec<OutboundMessage> = prepared.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
            self.roll_back(&stored).await;
            return Err(prepared
                .into_iter()
                .nth(position)
                .and_then(Result::err)
                .expect("an error is there"));
        }
        Ok(prepared.into_iter().map(|r| r.expect("no errors")).collect())
    }

    /// Puts every message on its priority's queue in batches SQS takes.
    async fn enqueue_all(&self, outbound: &[OutboundMessage]) -> Vec<(Priority, Enqueued)> {
        let jobs: Vec<(Priority, Vec<OutboundMessage>)> = Priority::ALL
            .into_iter()
            .flat_map(|priority| {
                let of_priority: Vec<OutboundMessage> =
                    outbound.iter().filter(|m| m.priority == priority).cloned().collect();
                batches(of_priority, MAX_BATCH_BYTES)
                    .into_iter()
                    .map(move |batch| (priority, batch))
            })
            .collect();
        // While reminders flow, background enqueues go two at a time.
        let parallel = match self.high.active() && outbound.iter().all(|m| m.priority != Priority::High) {
            true => 2,
            false => PARALLEL_CALLS,
        };
        stream::iter(jobs)
            .map(|(priority, batch)| async move { (priority, self.enqueue_with_retry(priority, batch).await) })
            .buffer_unordered(parallel)
            .collect()
            .await
    }

    /// An accepted message SQS would not take: ERROR, or withdrawn. Other
    /// messages of the batch may be on their queues already, so a failure
    /// here is logged, not returned: the acceptance must not be rolled back.
    async fn give_up(&self, message: &OutboundMessage, reason: &str, on_refused: OnRefused) {
        let send_id = message.send_id;
        match on_refused {
            OnRefused::RecordError => {
                tracing::error!(%send_id, %reason, "accepted message could not be enqueued; marking ERROR");
                if let Err(error) = self.store.mark_error(send_id, reason).await {
                    tracing::error!(%send_id, %error, "could not record ERROR; the record stays PENDING");
                }
                self.metrics.record_error(message.priority);
            }
            OnRefused::Withdraw => {
                tracing::warn!(%send_id, %reason, "message could not be enqueued; withdrawn");
                self.roll_back(std::slice::from_ref(message)).await;
            }
        }
    }

    /// Deletes what an acceptance wrote for these messages: PENDING records
    /// and stored bodies. Failures are logged; a record left behind stays
    /// PENDING and is visible to `emailSends(status: PENDING)`.
    pub async fn roll_back(&self, messages: &[OutboundMessage]) {
        let ids: Vec<SendId> = messages.iter().map(|m| m.send_id).collect();
        if let Err(error) = self.store.delete_pending(&ids).await {
            tracing::error!(%error, count = ids.len(), "rolling back: could not delete PENDING records");
        }
        for message in messages {
            if let MessageBody::Stored { key, .. } = &message.body {
                self.delete_blob(key).await;
            }
        }
    }

    /// Deletes one stored object, logging (not failing) when it cannot.
    pub async fn delete_blob(&self, key: &str) {
        if let Err(error) = self.blobs.delete(key).await {
            tracing::error!(%error, "rolling back: could not delete a stored object");
        }
    }

    /// Sends one batch, retrying refused entries once; returns (enqueued, failed).
    async fn enqueue_with_retry(&self, priority: Priority, batch: Vec<OutboundMessage>) -> Enqueued {
        let mut pending = batch;
        let mut enqueued = Vec::new();
        for attempt in 0..2 {
            let refused = match self.queues.send_batch(priority, &pending).await {
                Ok(refused) => refused,
                Err(error) => pending.iter().map(|m| (m.clone(), error.to_string())).collect(),
            };
            let refused_ids: Vec<SendId> = refused.iter().map(|(m, _)| m.send_id).collect();
            enqueued.extend(pending.iter().map(|m| m.send_id).filter(|id| !refused_ids.contains(id)));
            if refused.is_empty() {
                return (enqueued, Vec::new());
            }
            if attempt == 1 {
                let failed = refused
                    .into_iter()
                    .map(|(m, reason)| (m.send_id, format!("could not enqueue: {reason}")))
                    .collect();
                return (enqueued, failed);
            }
            let reason = refused.first().map(|(_, reason)| reason.as_str()).unwrap_or_default();
            tracing::warn!(%priority, refused = refused.len(), %reason, "SQS refused part of a batch; retrying");
            pending = refused.into_iter().map(|(m, _)| m).collect();
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        unreachable!("the loop returns on its second attempt")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn background_work_makes_way_until_ses_has_the_reminder_and_no_longer() {
        let high = Arc::new(HighActivity::default());
        let started = tokio::time::Instant::now();
        high.make_way().await;
        assert_eq!(started.elapsed(), Duration::ZERO, "no reminder: no wait");
        let reminder = SendId::new();
        high.arriving([reminder]);
        let waiting = tokio::spawn({
            let high = high.clone();
            async move {
                high.make_way().await;
                started.elapsed()
            }
        });
        tokio::time::sleep(Duration::from_millis(15)).await;
        assert!(
            !waiting.is_finished(),
            "background work holds while the reminder passes"
        );
        high.passed(reminder);
        assert_eq!(
            waiting.await.unwrap(),
            Duration::from_millis(15),
            "and goes the moment SES has it"
        );
        high.arriving([SendId::new()]);
        high.make_way().await;
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(15) + crate::sender::schedule::PASSAGE_MAX,
            "a reminder that never passes holds it no longer than its passage"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn background_work_takes_turns_one_at_a_time_only_while_reminders_flow() {
        let high = Arc::new(HighActivity::default());
        let first = high.background_turn().await;
        let second = high.background_turn().await;
        drop((first, second));
        // No reminder yet: as many turns as asked for, at once.
        high.arriving([SendId::new()]);
        assert!(high.active());
        let held = high.background_turn().await;
        let waiting = tokio::spawn({
            let high = high.clone();
            async move { high.background_turn().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "a second turn waits while a reminder flows");
        drop(held);
        let _turn = tokio::time::timeout(Duration::from_millis(50), waiting)
            .await
            .expect("the turn is taken once the first ends")
            .unwrap();
        tokio::time::sleep(crate::sender::schedule::HIGH_ACTIVE).await;
        assert!(
            !high.active(),
            "once reminders have stopped, background work may run in parallel"
        );
        let _another = tokio::time::timeout(Duration::from_millis(1), high.background_turn())
            .await
            .expect("no waiting once reminders stopped");
    }

    #[tokio::test(start_paused = true)]
    async fn background_work_may_take_as_many_turns_as_set_while_reminders_flow() {
        let high = Arc::new(HighActivity::new(TurnLimits {
            while_reminders: 2,
            while_starved: 2,
        }));
        high.arriving([SendId::new()]);
        let first = high.background_turn().await;
        let _second = tokio::time::timeout(Duration::from_millis(1), high.background_turn())
            .await
            .expect("a second turn at once: two are allowed");
        let third = tokio::spawn({
            let high = high.clone();
            async move { high.background_turn().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!third.is_finished(), "a third waits while two are held");
        drop(first);
        tokio::time::timeout(Duration::from_millis(50), third)
            .await
            .expect("the third is taken once one ends")
            .unwrap();
    }

    #[test]
    fn campaign_ingest_is_held_back_only_while_reminders_flow_and_less_the_longer_the_senders_starve() {
        let limits = TurnLimits {
            while_reminders: 1,
            while_starved: 4,
        };
        assert_eq!(limits.now(false, 0), None, "no reminders: no limit");
        assert_eq!(limits.now(false, 2), None);
        assert_eq!(limits.now(true, 0), Some(1), "reminders, senders busy: one chunk");
        assert_eq!(limits.now(true, 2), Some(3), "senders starved: more");
        assert_eq!(limits.now(true, 9), Some(4), "up to the setting");
        let never_raised = TurnLimits {
            while_reminders: 2,
            while_starved: 1,
        };
        assert_eq!(never_raised.now(true, 3), Some(2), "starving never lowers it");
        let zero = TurnLimits {
            while_reminders: 0,
            while_starved: 0,
        };
        assert_eq!(zero.now(true, 0), Some(1), "never below one turn");
    }

    #[tokio::test(start_paused = true)]
    async fn short_background_receives_while_a_chunk_waits_let_another_chunk_go_until_a_backlog_forms() {
        let step = crate::sender::schedule::STARVED_STEP;
        let high = Arc::new(HighActivity::new(TurnLimits {
            while_reminders: 1,
            while_starved: 2,
        }));
        high.arriving([SendId::new()]);
        (0..10).for_each(|_| high.background_received(true));
        tokio::time::sleep(step).await;
        let _first = high.background_turn().await;
        let second = tokio::spawn({
            let high = high.clone();
            async move { high.background_turn().await }
        });
        tokio::time::sleep(step / 2).await;
        assert!(!second.is_finished(), "starved, but not for a whole second yet");
        let _second = tokio::time::timeout(step, second)
            .await
            .expect("starved a whole second while it waited: a second turn")
            .unwrap();
        high.arriving([SendId::new()]);
        let third = tokio::time::timeout(step * 3, high.background_turn()).await;
        assert!(third.is_err(), "two at most");
        (0..10).for_each(|_| high.background_received(false));
        high.arriving([SendId::new()]);
        drop(_first);
        let again = tokio::time::timeout(step * 3, high.background_turn()).await;
        assert!(again.is_err(), "a backlog: back to one, and one is held");
    }
}
