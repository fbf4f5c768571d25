//! In-memory implementations of the four adapter traits, with AWS's
//! semantics where they are cheap: SQS's visibility timeout, receive count
//! and redrive to the DLQ, long-poll wake-up and delays; DynamoDB's
//! conditional transitions (a final status is never overwritten); S3 as a
//! map; a mailer that records what it sent and answers from a script.
//!
//! For unit tests of decisions (no stack needed) and, later, the simulated
//! target. Time is tokio's, so a paused clock drives it. The AWS adapters
//! themselves are tested against the real local stack, not against these.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::aws::{ErrorKind, ServiceError};
use crate::batches::{BatchProgress, BatchStore, BatchStoreError};
use crate::blobs::{BlobError, BlobStore, BlobStream, BlobWriter};
use crate::domain::{BatchId, OutboundMessage, Priority, SendId, SendRecord, SendStatus};
use crate::mailer::{Email, MailError, Mailer};
use crate::queue::{MessageQueue, QueueDepth, QueueError, QueueRef, ReceivedMessage, MAX_BATCH, MAX_BATCH_BYTES};
use crate::sim::{self, ServiceTimes};
use crate::store::{Claim, Lease, Page, StatusStore, StoreError};
use vocabulary::AwsOperation as Op;

/// One message on an in-memory queue.
#[derive(Debug, Clone)]
struct Entry {
    body: String,
    send_id: Option<String>,
    receive_count: u32,
    visible_at: Instant,
    /// The receipt of its latest receive; an older receipt no longer works.
    receipt: u64,
}

/// Six queues (three priorities and their DLQs) that behave like SQS.
pub struct MemoryQueues {
    queues: Mutex<HashMap<QueueRef, VecDeque<Entry>>>,
    arrived: Notify,
    next_receipt: Mutex<u64>,
    visibility_timeout: Duration,
    max_receives: u32,
    /// How long each call takes (the simulated target); none in unit tests.
    times: Option<Arc<ServiceTimes>>,
}

impl MemoryQueues {
    pub fn new(visibility_timeout: Duration, max_receives: u32) -> Self {
        Self {
            queues: Mutex::new(HashMap::new()),
            arrived: Notify::new(),
            next_receipt: Mutex::new(0),
            visibility_timeout,
            max_receives,
            times: None,
        }
    }


    fn push(&self, queue: QueueRef, body: String, send_id: Option<String>, delay: Duration) {
        let entry = Entry {
            body,
            send_id,
            receive_count: 0,
            visible_at: Instant::now() + delay,
            receipt: 0,
        };
        self.queues
            .lock()
            .expect("queues lock")
            .entry(queue)
            .or_default()
            .push_back(entry);
        self.arrived.notify_waiters();
    }

    /// Takes up to `max` visible messages, moving those past their last
    /// receive to the DLQ first (SQS's redrive policy).
    fn take(&self, queue: QueueRef, max: usize) -> Vec<ReceivedMessage> {
        let now = Instant::now();
        let mut queues = self.queues.lock().expect("queues lock");
        let mut redriven = Vec::new();
        let mut out = Vec::new();
        let entries = queues.entry(queue).or_default();
        entries.retain(|e| {
            let dead =
                matches!(queue, QueueRef::Main(_)) && e.visible_at <= now && e.receive_count >= self.max_receives;
            if dead {
                redriven.push(Entry {
                    receive_count: 0,
                    ..e.clone()
                });
            }
            !dead
        });
        for entry in entries
            .iter_mut()
            .filter(|e| e.visible_at <= now)
            .take(max.clamp(1, MAX_BATCH))
        {
            let mut receipt = self.next_receipt.lock().expect("receipt lock");
            *receipt += 1;
            entry.receipt = *receipt;
            entry.receive_count += 1;
            entry.visible_at = now + self.visibility_timeout;
            out.push(ReceivedMessage {
                queue,
                receipt: entry.receipt.to_string(),
                body: entry.body.clone(),
                send_id: entry.send_id.clone(),
                receive_count: entry.receive_count,
            });
        }
        if !redriven.is_empty() {
            let dlq = QueueRef::DeadLetter(queue.priority());
            queues.entry(dlq).or_default().extend(redriven);
        }
        out
    }

    /// Finds the entry a receipt belongs to, if the receipt is still current.
    fn with_entry<T>(
        &self,
        message: &ReceivedMessage,
        f: impl FnOnce(&mut VecDeque<Entry>, usize) -> T,
    ) -> Result<T, QueueError> {
        let mut queues = self.queues.lock().expect("queues lock");
        let entries = queues.entry(message.queue).or_default();
        let position = entries
            .iter()
            .position(|e| e.receipt.to_string() == message.receipt)
            .ok_or_else(|| QueueError {
                queue: message.queue,
                error: ServiceError::new(ErrorKind::Invalid, "ReceiptHandleIsInvalid"),
            })?;
        Ok(f(entries, position))
    }
}

#[async_trait]
impl MessageQueue for MemoryQueues {
    fn max_message_bytes(&self) -> usize {
        MAX_BATCH_BYTES
    }

    async fn send_batch(
        &self,
        priority: Priority,
        messages: &[OutboundMessage],
    ) -> Result<Vec<(OutboundMessage, String)>, QueueError> {
        sim::wait(&self.times, Op::SqsSendMessageBatch).await;
        for message in messages {
            let send_id = Some(message.send_id.to_string());
            self.push(QueueRef::Main(priority), message.encode(), send_id, Duration::ZERO);
        }
        Ok(Vec::new())
    }

    async fn send_delayed(
        &self,
        priority: Priority,
        message: &OutboundMessage,
        delay: Duration,
    ) -> Result<(), QueueError> {
        sim::wait(&self.times, Op::SqsSendMessage).await;
        let delay = delay.min(Duration::from_secs(900));
        self.push(
            QueueRef::Main(priority),
            message.encode(),
            Some(message.send_id.to_string()),
            delay,
        );
        Ok(())
    }

    async fn send_raw(&self, priority: Priority, body: &str, send_id: Option<&str>) -> Result<(), QueueError> {
        sim::wait(&self.times, Op::SqsSendMessage).await;
        self.push(
            QueueRef::Main(priority),
            body.to_string(),
            send_id.map(str::to_string),
            Duration::ZERO,
        );
        Ok(())
    }

    async fn receive(&self, queue: QueueRef, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        sim::wait(&self.times, Op::SqsReceiveMessage).await;
        let deadline = Instant::now() + wait.min(Duration::from_secs(20));
        loop {
            let arrived = self.arrived.notified();
            let taken = self.take(queue, max);
            if !taken.is_empty() || Instant::now() >= deadline {
                return Ok(taken);
            }
            // Wake on an arrival, or look again soon for messages becoming visible.
            let _ = tokio::time::timeout_at(deadline.min(Instant::now() + Duration::from_millis(50)), arrived).await;
        }
    }

    async fn delete(&self, messages: &[&ReceivedMessage]) -> Result<(), QueueError> {
        sim::wait(&self.times, Op::SqsDeleteMessageBatch).await;
        let mut first_failure = None;
        for message in messages {
            let deleted = self.with_entry(message, |entries, at| {
                entries.remove(at);
            });
            if let Err(error) = deleted {
                first_failure.get_or_insert(error);
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    async fn set_visibility(&self, message: &ReceivedMessage, timeout: Duration) -> Result<(), QueueError> {
        sim::wait(&self.times, Op::SqsChangeMessageVisibility).await;
        self.with_entry(message, |entries, at| entries[at].visible_at = Instant::now() + timeout)
    }

    async fn depth(&self, queue: QueueRef) -> Result<QueueDepth, QueueError> {
        let now = Instant::now();
        let queues = self.queues.lock().expect("queues lock");
        let mut depth = QueueDepth::default();
        for entry in queues.get(&queue).into_iter().flatten() {
            match (entry.visible_at <= now, entry.receive_count) {
                (true, _) => depth.visible += 1,
                (false, 0) => depth.delayed += 1,
                (false, _) => depth.in_flight += 1,
            }
        }
        Ok(depth)
    }
}

/// The status table as a map, with DynamoDB's conditional transitions.
#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<HashMap<SendId, SendRecord>>,
    /// The copy holding each claimed message, and until when.
    leases: Mutex<HashMap<SendId, Lease>>,
    /// When set, `mark_sent` fails this many more times (a store outage after a send).
    pub fail_mark_sent: Mutex<u32>,
    /// How long each call takes (the simulated target); none in unit tests.
    pub times: Option<Arc<ServiceTimes>>,
}

impl MemoryStore {
    /// Every record as it stands (the simulated target's audit reads them all at once).
    pub fn records(&self) -> Vec<SendRecord> {
        self.records.lock().expect("records lock").values().cloned().collect()
    }

    fn page(&self, mut items: Vec<SendRecord>, limit: usize, cursor: Option<&str>) -> Result<Page, StoreError> {
        items.sort_by_key(|r| (r.created_at, r.send_id));
        let start = match cursor {
            None => 0,
            Some(c) => c.parse::<usize>().map_err(|_| StoreError::BadCursor(c.to_string()))?,
        };
        let end = (start + limit.max(1)).min(items.len());
        let page: Vec<SendRecord> = items.get(start..end).map(<[_]>::to_vec).unwrap_or_default();
        Ok(Page {
            cursors: (start + 1..=end).map(|i| i.to_string()).collect(),
            next_cursor: (end < items.len()).then(|| end.to_string()),
            items: page,
        })
    }

    /// Copies of the records `keep` says yes to (the index query's stand-in).
    fn select(&self, keep: impl Fn(&SendRecord) -> bool) -> Vec<SendRecord> {
        let records = self.records.lock().expect("records lock");
        records.values().filter(|r| keep(r)).cloned().collect()
    }

    /// Moves a record that is not final yet to `status`; false if it was final.
    fn finish(&self, id: SendId, update: impl FnOnce(&mut SendRecord)) -> Result<bool, StoreError> {
        let mut records = self.records.lock().expect("records lock");
        match records.get_mut(&id) {
            Some(record) if !record.status.is_terminal() => {
                update(record);
                record.updated_at = crate::clock::now();
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl StatusStore for MemoryStore {
    async fn put_pending(&self, records: &[SendRecord]) -> Result<(), StoreError> {
        sim::wait(&self.times, Op::DynamoDbBatchWriteItem).await;
        let mut all = self.records.lock().expect("records lock");
        for record in records {
            // Unconditional, as DynamoDB's BatchWriteItem is.
            all.insert(record.send_id, record.clone());
        }
        Ok(())
    }

    async fn put_pending_if_absent(&self, records: &[SendRecord]) -> Result<Vec<SendId>, StoreError> {
        sim::wait(&self.times, Op::DynamoDbTransactWriteItems).await;
        let mut all = self.records.lock().expect("records lock");
        let pending = records
            .iter()
            .filter(|record| {
                all.entry(record.send_id).or_insert_with(|| (*record).clone()).status == SendStatus::Pending
            })
            .map(|record| record.send_id)
            .collect();
        Ok(pending)
    }

    async fn has_unfinished(&self, batch: Option<BatchId>) -> Result<bool, StoreError> {
        sim::wait(&self.times, Op::DynamoDbQuery).await;
        let records = self.records.lock().expect("records lock");
        Ok(records
            .values()
            .any(|r| batch.is_none_or(|b| r.batch_id == Some(b)) && !r.status.is_terminal()))
    }

    async fn mark_queued(&self, ids: &[SendId]) -> Result<(), StoreError> {
        sim::wait(&self.times, Op::DynamoDbTransactWriteItems).await;
        let mut records = self.records.lock().expect("records lock");
        for id in ids {
            if let Some(record) = records.get_mut(id).filter(|r| r.status == SendStatus::Pending) {
                record.status = SendStatus::Queued;
            }
        }
        Ok(())
    }

    async fn begin_attempt(&self, id: SendId, lease: Lease) -> Result<Claim, StoreError> {
        sim::wait(&self.times, Op::DynamoDbUpdateItem).await;
        let mut records = self.records.lock().expect("records lock");
        let mut leases = self.leases.lock().expect("leases lock");
        let held_by_another = leases
            .get(&id)
            .is_some_and(|held| held.copy != lease.copy && held.until >= crate::clock::now());
        Ok(match records.get_mut(&id) {
            None => Claim::Missing,
            Some(record) if record.status.is_terminal() => Claim::AlreadyFinal(record.status),
            Some(_) if held_by_another => Claim::HeldByAnotherCopy,
            Some(record) => {
                leases.insert(id, lease);
                record.attempts += 1;
                Claim::Claimed {
                    attempts: record.attempts,
                }
            }
        })
    }

    async fn mark_sent(
        &self,
        id: SendId,
        provider_message_id: &str,
        sent_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        sim::wait(&self.times, Op::DynamoDbUpdateItem).await;
        {
            let mut failures = self.fail_mark_sent.lock().expect("failure lock");
            if *failures > 0 {
                *failures -= 1;
                let error = ServiceError::new(ErrorKind::Unavailable, "injected: the store is unavailable");
                return Err(StoreError::Service(error));
            }
        }
        self.finish(id, |r| {
            r.status = SendStatus::Sent;
            r.sent_at = Some(sent_at);
            r.provider_message_id = Some(provider_message_id.to_string());
        })
    }

    async fn mark_error(&self, id: SendId, reason: &str) -> Result<bool, StoreError> {
        sim::wait(&self.times, Op::DynamoDbUpdateItem).await;
        self.finish(id, |r| {
            r.status = SendStatus::Error;
            r.error_reason = Some(reason.to_string());
        })
    }

    async fn delete_pending(&self, ids: &[SendId]) -> Result<(), StoreError> {
        sim::wait(&self.times, Op::DynamoDbBatchWriteItem).await;
        let mut records = self.records.lock().expect("records lock");
        for id in ids {
            if records.get(id).is_some_and(|r| r.status == SendStatus::Pending) {
                records.remove(id);
            }
        }
        Ok(())
    }

    async fn get(&self, id: SendId) -> Result<Option<SendRecord>, StoreError> {
        sim::wait(&self.times, Op::DynamoDbGetItem).await;
        Ok(self.records.lock().expect("records lock").get(&id).cloned())
    }

    async fn by_status(
        &self,
        status: SendStatus,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page, StoreError> {
        sim::wait(&self.times, Op::DynamoDbQuery).await;
        let items = self.select(|r| r.status == status && r.created_at >= from && r.created_at <= to);
        self.page(items, limit, cursor)
    }

    async fn by_batch(
        &self,
        batch: BatchId,
        status: Option<SendStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page, StoreError> {
        sim::wait(&self.times, Op::DynamoDbQuery).await;
        let items = self.select(|r| r.batch_id == Some(batch) && status.is_none_or(|s| r.status == s));
        self.page(items, limit, cursor)
    }

    async fn batch_counts(&self, batch: BatchId) -> Result<BTreeMap<String, u64>, StoreError> {
        sim::wait(&self.times, Op::DynamoDbQuery).await;
        let mut counts = BTreeMap::new();
        for record in self.records.lock().expect("records lock").values() {
            if record.batch_id == Some(batch) {
                *counts.entry(record.status.to_string()).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }
}

/// Batches' progress by id.
#[derive(Default)]
pub struct MemoryBatches {
    batches: Mutex<HashMap<BatchId, BatchProgress>>,
    pub times: Option<Arc<ServiceTimes>>,
}

#[async_trait]
impl BatchStore for MemoryBatches {
    async fn save(&self, progress: &BatchProgress) -> Result<(), BatchStoreError> {
        sim::wait(&self.times, Op::DynamoDbPutItem).await;
        let mut batches = self.batches.lock().expect("batches lock");
        let final_already = batches.get(&progress.batch_id).is_some_and(|b| b.phase.is_final());
        if !final_already {
            batches.insert(progress.batch_id, progress.clone());
        }
        Ok(())
    }

    async fn get(&self, batch: BatchId) -> Result<Option<BatchProgress>, BatchStoreError> {
        sim::wait(&self.times, Op::DynamoDbGetItem).await;
        Ok(self.batches.lock().expect("batches lock").get(&batch).cloned())
    }

    async fn unfinished(&self) -> Result<Vec<BatchProgress>, BatchStoreError> {
        sim::wait(&self.times, Op::DynamoDbQuery).await;
        let batches = self.batches.lock().expect("batches lock");
        Ok(batches.values().filter(|b| !b.phase.is_final()).cloned().collect())
    }
}

/// Objects by key.
#[derive(Default)]
pub struct MemoryBlobs {
    objects: Arc<Mutex<HashMap<String, Bytes>>>,
    pub times: Option<Arc<ServiceTimes>>,
}

/// An object appears whole when finished, as on S3.
struct MemoryWriter {
    objects: Arc<Mutex<HashMap<String, Bytes>>>,
    key: String,
    bytes: Vec<u8>,
}

#[async_trait]
impl BlobWriter for MemoryWriter {
    async fn write(&mut self, bytes: Bytes) -> Result<(), BlobError> {
        self.bytes.extend_from_slice(&bytes);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<u64, BlobError> {
        let size = self.bytes.len() as u64;
        let mut objects = self.objects.lock().expect("objects lock");
        objects.insert(self.key, Bytes::from(self.bytes));
        Ok(size)
    }

    async fn abort(self: Box<Self>) {}
}

#[async_trait]
impl BlobStore for MemoryBlobs {
    async fn put(&self, key: &str, bytes: Bytes, _content_type: &str) -> Result<(), BlobError> {
        sim::wait(&self.times, Op::S3PutObject).await;
        self.objects
            .lock()
            .expect("objects lock")
            .insert(key.to_string(), bytes);
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Bytes, BlobError> {
        sim::wait(&self.times, Op::S3GetObject).await;
        self.objects
            .lock()
            .expect("objects lock")
            .get(key)
            .cloned()
            .ok_or_else(|| BlobError::new(key, ServiceError::new(ErrorKind::NotFound, "NoSuchKey")))
    }

    async fn read(&self, key: &str) -> Result<BlobStream, BlobError> {
        let bytes = self.get(key).await?;
        // In small chunks, as a network read would come.
        let chunks: Vec<Result<Bytes, BlobError>> = (0..bytes.len())
            .step_by(64 * 1024)
            .map(|at| Ok(bytes.slice(at..bytes.len().min(at + 64 * 1024))))
            .collect();
        Ok(Box::pin(futures::stream::iter(chunks)))
    }

    async fn writer(&self, key: &str, _content_type: &str) -> Result<Box<dyn BlobWriter>, BlobError> {
        Ok(Box::new(MemoryWriter {
            objects: self.objects.clone(),
            key: key.to_string(),
            bytes: Vec::new(),
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        sim::wait(&self.times, Op::S3DeleteObject).await;
        self.objects.lock().expect("objects lock").remove(key);
        Ok(())
    }
}

/// A mailer that answers from a script (then accepts everything) and keeps
/// every email it accepted.
#[derive(Default)]
pub struct MemoryMailer {
    pub script: Mutex<VecDeque<MailError>>,
    pub sent: Mutex<Vec<Email>>,
}

#[async_trait]
impl Mailer for MemoryMailer {
    async fn send(&self, email: &Email) -> Result<String, MailError> {
        if let Some(error) = self.script.lock().expect("script lock").pop_front() {
            return Err(error);
        }
        let mut sent = self.sent.lock().expect("sent lock");
        sent.push(email.clone());
        Ok(format!("memory-{}", sent.len()))
    }
}

/// A pipeline on in-memory adapters, with handles on the parts tests look at.
pub struct MemoryPipeline {
    pub pipeline: crate::pipeline::Pipeline,
    pub store: std::sync::Arc<MemoryStore>,
    pub queues: std::sync::Arc<MemoryQueues>,
    pub mailer: std::sync::Arc<MemoryMailer>,
}

impl MemoryPipeline {
    /// Queues whose visibility timeout is `settings.queues.visibility_timeout_secs`.
    pub fn new(settings: crate::config::Settings) -> Self {
        Self::build(settings, None)
    }

    /// The simulated target's pipeline: every call takes as long as `times`
    /// says (on tokio's clock, paused in a simulation). Give it SES's model
    /// with `Pipeline::with_mailer`.
    pub fn simulated(settings: crate::config::Settings, times: Arc<ServiceTimes>) -> Self {
        Self::build(settings, Some(times))
    }

    fn build(settings: crate::config::Settings, times: Option<Arc<ServiceTimes>>) -> Self {
        let visibility = Duration::from_secs(u64::from(settings.queues.visibility_timeout_secs));
        let store = Arc::new(MemoryStore {
            times: times.clone(),
            ..MemoryStore::default()
        });
        let mut queues = MemoryQueues::new(visibility, settings.queues.max_receive_count);
        queues.times = times.clone();
        let queues = Arc::new(queues);
        let mailer = Arc::new(MemoryMailer::default());
        let pipeline = crate::pipeline::Pipeline::new(
            settings,
            queues.clone(),
            store.clone(),
            Arc::new(MemoryBlobs {
                times: times.clone(),
                ..MemoryBlobs::default()
            }),
            Arc::new(MemoryBatches {
                times,
                ..MemoryBatches::default()
            }),
            mailer.clone(),
        );
        Self {
            pipeline,
            store,
            queues,
            mailer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::CopyId;

    #[tokio::test(flavor = "current_thread")]
    async fn a_received_message_is_hidden_for_its_visibility_timeout_and_a_stale_receipt_fails() {
        let queues = MemoryQueues::new(Duration::from_millis(200), 5);
        queues.send_raw(Priority::High, "m", Some("id")).await.unwrap();
        let queue = QueueRef::Main(Priority::High);
        let first = queues.receive(queue, 10, Duration::ZERO).await.unwrap();
        assert_eq!(first.len(), 1);
        assert!(
            queues.receive(queue, 10, Duration::ZERO).await.unwrap().is_empty(),
            "hidden"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
        let again = queues.receive(queue, 10, Duration::ZERO).await.unwrap();
        assert_eq!(again[0].receive_count, 2);
        assert!(queues.delete(&[&first[0]]).await.is_err(), "the first receipt is stale");
        queues.delete(&[&again[0]]).await.unwrap();
        assert_eq!(queues.depth(queue).await.unwrap(), QueueDepth::default());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_long_poll_wakes_when_a_message_arrives() {
        let queues = std::sync::Arc::new(MemoryQueues::new(Duration::from_secs(30), 5));
        let sender = queues.clone();
        let started = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            sender.send_raw(Priority::Low, "late", None).await.unwrap();
        });
        let got = queues
            .receive(QueueRef::Main(Priority::Low), 1, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_final_status_is_never_overwritten_and_a_second_copy_cannot_claim_a_held_message() {
        let store = MemoryStore::default();
        let id = SendId::new();
        let record = SendRecord {
            send_id: id,
            batch_id: None,
            kind: crate::domain::MessageKind::Offer,
            priority: Priority::Medium,
            recipient: "a@example.com".into(),
            subject: "S".into(),
            status: SendStatus::Pending,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            sent_at: None,
            attempts: 0,
            provider_message_id: None,
            error_reason: None,
        };
        store.put_pending(&[record]).await.unwrap();
        let lease = Lease {
            copy: CopyId::new(),
            until: Utc::now() + chrono::Duration::seconds(30),
        };
        let other = Lease {
            copy: CopyId::new(),
            ..lease
        };
        assert_eq!(
            store.begin_attempt(id, lease).await.unwrap(),
            Claim::Claimed { attempts: 1 }
        );
        assert_eq!(store.begin_attempt(id, other).await.unwrap(), Claim::HeldByAnotherCopy);
        assert_eq!(
            store.begin_attempt(id, lease).await.unwrap(),
            Claim::Claimed { attempts: 2 }
        );
        assert!(store.mark_sent(id, "p", Utc::now()).await.unwrap());
        assert!(!store.mark_error(id, "late").await.unwrap());
        store.mark_queued(&[id]).await.unwrap();
        assert_eq!(store.get(id).await.unwrap().unwrap().status, SendStatus::Sent);
        assert_eq!(
            store.begin_attempt(id, other).await.unwrap(),
            Claim::AlreadyFinal(SendStatus::Sent)
        );
    }
}
