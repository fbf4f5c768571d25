//! In-memory implementations of the four adapter traits, with AWS's
//! semantics where they are cheap: SQS's visibility timeout, receive count
//! and redrive to the DLQ, long-poll wake-up and delays; DynamoDB's
//! conditional transitions (a final status is never overwritten); S3 as a
//! map; a mailer that records what it sent and answers from a script.
//!
//! For unit tests of decisions (no stack needed) and, later, the simulated
//! target. Time is tokio's, so a paused clock drives it. The AWS adapters
//! themselves are tested against the real local stack, not against these.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
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
use vocabulary::{AwsOperation as Op, UsageByOperation};

/// One message on an in-memory queue.
#[derive(Debug, Clone)]
struct Entry {
    body: String,
    send_id: Option<String>,
    receive_count: u32,
    visible_at: Instant,
    /// The receipt of its latest receive; an older receipt no longer works.
    receipt: u64,
    /// Hidden (in flight or delayed) rather than visible.
    hidden: bool,
}

/// One queue, indexed so that every call costs the same whatever its length
/// (the simulated target holds a million messages): visible messages in
/// order, hidden ones by the instant they show again, receipts by message.
#[derive(Debug, Default)]
struct Queue {
    entries: HashMap<u64, Entry>,
    /// Messages visible now, oldest first. A message hidden again since it
    /// was put here, or deleted, is skipped when reached.
    ready: VecDeque<u64>,
    /// When each hidden message shows again; a pair whose instant is no
    /// longer the message's own is stale and skipped.
    hidden: BinaryHeap<Reverse<(Instant, u64)>>,
    /// The current receipt of each message received and not deleted.
    receipts: HashMap<u64, u64>,
    in_flight: u64,
    delayed: u64,
}

impl Queue {
    fn hide(&mut self, id: u64, until: Instant) {
        let Some(entry) = self.entries.get_mut(&id) else { return };
        if !entry.hidden {
            entry.hidden = true;
            match entry.receive_count {
                0 => self.delayed += 1,
                _ => self.in_flight += 1,
            }
        }
        entry.visible_at = until;
        self.hidden.push(Reverse((until, id)));
    }

    /// Shows every hidden message whose time has come; those past their last
    /// receive come back out of the queue (a main queue's redrive to its DLQ).
    fn show_due(&mut self, now: Instant, max_receives: Option<u32>) -> Vec<Entry> {
        let mut redriven = Vec::new();
        while let Some(Reverse((at, id))) = self.hidden.peek().copied() {
            if at > now {
                break;
            }
            self.hidden.pop();
            let Some(entry) = self.entries.get_mut(&id).filter(|e| e.hidden && e.visible_at == at) else {
                continue;
            };
            entry.hidden = false;
            match entry.receive_count {
                0 => self.delayed -= 1,
                _ => self.in_flight -= 1,
            }
            if max_receives.is_some_and(|max| entry.receive_count >= max) {
                let entry = self.entries.remove(&id).expect("present");
                self.receipts.remove(&entry.receipt);
                redriven.push(Entry {
                    receive_count: 0,
                    receipt: 0,
                    ..entry
                });
            } else {
                self.ready.push_back(id);
            }
        }
        redriven
    }

    fn remove(&mut self, id: u64) {
        if let Some(entry) = self.entries.remove(&id) {
            if entry.hidden {
                match entry.receive_count {
                    0 => self.delayed -= 1,
                    _ => self.in_flight -= 1,
                }
            }
        }
    }
}

/// Six queues (three priorities and their DLQs) that behave like SQS.
pub struct MemoryQueues {
    queues: Mutex<HashMap<QueueRef, Queue>>,
    arrived: Notify,
    /// Message ids and receipts, one sequence for both.
    next_id: std::sync::atomic::AtomicU64,
    visibility_timeout: Duration,
    max_receives: u32,
    /// How long each call takes (the simulated target); none in unit tests.
    times: Option<Arc<ServiceTimes>>,
    /// At-least-once delivery, when a simulation asks for it.
    duplicates: Mutex<Duplicates>,
    /// Receives that came back with nothing (billed like any other).
    empty_receives: std::sync::atomic::AtomicU64,
}

/// SQS's at-least-once delivery: a received message's copy on another server
/// may miss its receive and delete, and be delivered again. With
/// `probability` per receive, a second copy shows at a time drawn within the
/// visibility timeout: while the first is still in hand, or after it is done.
struct Duplicates {
    /// The name copies are counted under, and the share of receives copied.
    rule: Option<(String, f64)>,
    dice: rand_chacha::ChaCha8Rng,
    made: BTreeMap<String, u64>,
}

impl MemoryQueues {
    pub fn new(visibility_timeout: Duration, max_receives: u32) -> Self {
        Self {
            queues: Mutex::new(HashMap::new()),
            arrived: Notify::new(),
            next_id: std::sync::atomic::AtomicU64::new(1),
            visibility_timeout,
            max_receives,
            times: None,
            duplicates: Mutex::new(Duplicates {
                rule: None,
                dice: rand::SeedableRng::seed_from_u64(0xD0B1E),
                made: BTreeMap::new(),
            }),
            empty_receives: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Receives so far that came back with no message: a long poll that ran
    /// out, as SQS bills it (a request like any other).
    pub fn empty_receives(&self) -> u64 {
        self.empty_receives.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Delivers `probability` of received messages twice (the second copy
    /// within the visibility timeout), counted under `name`; `None` stops.
    /// The dice are seeded with `seed`, so a simulation repeats.
    pub fn set_duplicates(&self, rule: Option<(&str, f64)>, seed: u64) {
        let mut duplicates = self.duplicates.lock().expect("duplicates lock");
        duplicates.rule = rule.map(|(name, p)| (name.to_string(), p));
        duplicates.dice = rand::SeedableRng::seed_from_u64(seed ^ 0xD0B1E);
    }

    /// Copies delivered again, by the name of the rule that made them.
    pub fn duplicated(&self) -> BTreeMap<String, u64> {
        self.duplicates.lock().expect("duplicates lock").made.clone()
    }

    /// When this receive's message shows a second copy, if it does.
    fn duplicate_after(&self) -> Option<Duration> {
        let mut duplicates = self.duplicates.lock().expect("duplicates lock");
        let (name, probability) = duplicates.rule.clone()?;
        if rand::RngExt::random::<f64>(&mut duplicates.dice) >= probability {
            return None;
        }
        *duplicates.made.entry(name).or_insert(0) += 1;
        let share: f64 = rand::RngExt::random(&mut duplicates.dice);
        Some(self.visibility_timeout.mul_f64(share))
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    fn push(&self, queue: QueueRef, body: String, send_id: Option<String>, delay: Duration) {
        let id = self.next_id();
        let now = Instant::now();
        let entry = Entry {
            body,
            send_id,
            receive_count: 0,
            visible_at: now,
            receipt: 0,
            hidden: false,
        };
        let mut queues = self.queues.lock().expect("queues lock");
        let q = queues.entry(queue).or_default();
        q.entries.insert(id, entry);
        if delay.is_zero() {
            q.ready.push_back(id);
        } else {
            q.hide(id, now + delay);
        }
        drop(queues);
        self.arrived.notify_waiters();
    }

    /// Takes up to `max` visible messages, moving those past their last
    /// receive to the DLQ first (SQS's redrive policy); also says when the
    /// next hidden message shows.
    fn take(&self, queue: QueueRef, max: usize) -> (Vec<ReceivedMessage>, Option<Instant>) {
        let now = Instant::now();
        let mut queues = self.queues.lock().expect("queues lock");
        let redrive = matches!(queue, QueueRef::Main(_)).then_some(self.max_receives);
        let q = queues.entry(queue).or_default();
        let redriven = q.show_due(now, redrive);
        let mut out = Vec::new();
        while out.len() < max.clamp(1, MAX_BATCH) {
            let Some(id) = q.ready.pop_front() else { break };
            let receipt = self.next_id();
            let Some(entry) = q.entries.get_mut(&id).filter(|e| !e.hidden) else {
                continue;
            };
            let old = std::mem::replace(&mut entry.receipt, receipt);
            entry.receive_count += 1;
            out.push(ReceivedMessage {
                queue,
                receipt: receipt.to_string(),
                body: entry.body.clone(),
                send_id: entry.send_id.clone(),
                receive_count: entry.receive_count,
            });
            q.receipts.remove(&old);
            q.receipts.insert(receipt, id);
            q.hide(id, now + self.visibility_timeout);
            let copy_after = matches!(queue, QueueRef::Main(_))
                .then(|| self.duplicate_after())
                .flatten();
            if let Some(after) = copy_after {
                // Not received yet: hidden as a delayed message is.
                let copy = Entry {
                    receive_count: 0,
                    receipt: 0,
                    hidden: false,
                    ..q.entries[&id].clone()
                };
                let copy_id = self.next_id();
                q.entries.insert(copy_id, copy);
                q.hide(copy_id, now + after);
            }
        }
        let next = q.hidden.peek().map(|Reverse((at, _))| *at);
        if !redriven.is_empty() {
            let dlq = queues.entry(QueueRef::DeadLetter(queue.priority())).or_default();
            for entry in redriven {
                let id = self.next_id();
                dlq.entries.insert(id, entry);
                dlq.ready.push_back(id);
            }
        }
        (out, next)
    }

    /// Finds the message a receipt belongs to, if the receipt is still current.
    fn with_entry<T>(&self, message: &ReceivedMessage, f: impl FnOnce(&mut Queue, u64) -> T) -> Result<T, QueueError> {
        let invalid = || QueueError {
            queue: message.queue,
            error: ServiceError::new(ErrorKind::Invalid, "ReceiptHandleIsInvalid"),
        };
        let receipt: u64 = message.receipt.parse().map_err(|_| invalid())?;
        let mut queues = self.queues.lock().expect("queues lock");
        let q = queues.entry(message.queue).or_default();
        let id = *q.receipts.get(&receipt).ok_or_else(invalid)?;
        Ok(f(q, id))
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
        // As the SQS adapter calls it: one message alone is a `SendMessage`.
        let op = match messages.len() {
            0 => return Ok(Vec::new()),
            1 => Op::SqsSendMessage,
            _ => Op::SqsSendMessageBatch,
        };
        sim::call(&self.times, op, || {
            for message in messages {
                let send_id = Some(message.send_id.to_string());
                self.push(QueueRef::Main(priority), message.encode(), send_id, Duration::ZERO);
            }
        })
        .await;
        Ok(Vec::new())
    }

    async fn send_delayed(
        &self,
        priority: Priority,
        message: &OutboundMessage,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let delay = delay.min(Duration::from_secs(900));
        sim::call(&self.times, Op::SqsSendMessage, || {
            self.push(
                QueueRef::Main(priority),
                message.encode(),
                Some(message.send_id.to_string()),
                delay,
            )
        })
        .await;
        Ok(())
    }

    async fn send_raw(&self, priority: Priority, body: &str, send_id: Option<&str>) -> Result<(), QueueError> {
        sim::call(&self.times, Op::SqsSendMessage, || {
            self.push(
                QueueRef::Main(priority),
                body.to_string(),
                send_id.map(str::to_string),
                Duration::ZERO,
            )
        })
        .await;
        Ok(())
    }

    async fn receive(&self, queue: QueueRef, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        let deadline = Instant::now() + wait.min(Duration::from_secs(20));
        let taken = loop {
            let arrived = self.arrived.notified();
            let (taken, next_shown) = self.take(queue, max);
            if !taken.is_empty() || Instant::now() >= deadline {
                break taken;
            }
            // Wake on an arrival, or when the next hidden message shows.
            let wake = next_shown.map_or(deadline, |at| at.min(deadline));
            let _ = tokio::time::timeout_at(wake, arrived).await;
        };
        // The answer comes after the messages are found (or the poll runs
        // out), so a long poll woken by an arrival still takes its time.
        sim::wait(&self.times, Op::SqsReceiveMessage).await;
        if taken.is_empty() {
            self.empty_receives.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(taken)
    }

    async fn delete(&self, messages: &[&ReceivedMessage]) -> Result<(), QueueError> {
        sim::wait(&self.times, Op::SqsDeleteMessageBatch).await;
        let mut first_failure = None;
        for message in messages {
            let deleted = self.with_entry(message, |q, id| {
                let receipt = q.entries.get(&id).map(|e| e.receipt);
                receipt.map(|r| q.receipts.remove(&r));
                q.remove(id);
            });
            if let Err(error) = deleted {
                first_failure.get_or_insert(error);
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    async fn set_visibility(&self, message: &ReceivedMessage, timeout: Duration) -> Result<(), QueueError> {
        sim::wait(&self.times, Op::SqsChangeMessageVisibility).await;
        let until = Instant::now() + timeout;
        self.with_entry(message, |q, id| q.hide(id, until))?;
        if timeout.is_zero() {
            self.arrived.notify_waiters();
        }
        Ok(())
    }

    async fn depth(&self, queue: QueueRef) -> Result<QueueDepth, QueueError> {
        let now = Instant::now();
        let mut queues = self.queues.lock().expect("queues lock");
        let Some(q) = queues.get_mut(&queue) else {
            return Ok(QueueDepth::default());
        };
        // Show what is due (without redriving: SQS redrives on a receive).
        let redrive = None;
        let redriven = q.show_due(now, redrive);
        debug_assert!(redriven.is_empty());
        Ok(QueueDepth {
            visible: q.entries.len() as u64 - q.in_flight - q.delayed,
            in_flight: q.in_flight,
            delayed: q.delayed,
        })
    }
}

/// The records, and how many of each batch are in each status (so that
/// "is this batch finished?" costs the same at a million records).
#[derive(Default)]
struct Table {
    records: HashMap<SendId, SendRecord>,
    counts: HashMap<(Option<BatchId>, SendStatus), u64>,
    /// The units each operation would have taken on DynamoDB.
    usage: UsageByOperation,
}

/// A record's key in one global secondary index, if it is in it.
type IndexKey = fn(&SendRecord) -> Option<(String, DateTime<Utc>)>;

/// Write units of one item write on DynamoDB, as AWS bills them for this
/// table: one for the item (they stay under 1 KB), and for each global
/// secondary index (both project every attribute) one for an item that
/// enters, leaves or changes in it, two when its index key changes (a delete
/// and a put). `status_index` is keyed on (status, createdAt) and holds every
/// record; `batch_index` on (batchId, createdAt) holds campaign records.
/// Returns (all units, the indexes' share).
pub fn write_units(old: Option<&SendRecord>, new: Option<&SendRecord>) -> (f64, f64) {
    let index = |key: IndexKey| match (old.and_then(key), new.and_then(key)) {
        (Some(a), Some(b)) if a != b => 2.0,
        (None, None) => 0.0,
        _ => 1.0,
    };
    let status = index(|r| Some((r.status.to_string(), r.created_at)));
    let batch = index(|r| r.batch_id.map(|b| (b.to_string(), r.created_at)));
    (1.0 + status + batch, status + batch)
}

/// The index partitions one item write lands on, as `partition key` labels
/// with their write units (`rate` 2 in a transaction): the same rule as
/// [`write_units`], key by key. The table's own key spreads and is left out.
pub fn partition_writes(old: Option<&SendRecord>, new: Option<&SendRecord>, rate: f64) -> Vec<(String, f64)> {
    let mut writes = Vec::new();
    let mut index = |name: &str, key: fn(&SendRecord) -> Option<String>| match (old.and_then(key), new.and_then(key)) {
        (Some(a), Some(b)) if a != b => {
            writes.push((format!("{name} {a}"), rate));
            writes.push((format!("{name} {b}"), rate));
        }
        (Some(key), _) | (None, Some(key)) => writes.push((format!("{name} {key}"), rate)),
        (None, None) => {}
    };
    index(crate::provision::STATUS_INDEX, |r| Some(r.status.to_string()));
    index(crate::provision::BATCH_INDEX, |r| r.batch_id.map(|b| b.to_string()));
    writes
}

impl Table {
    /// The index partitions writing each of `records` would land on.
    fn puts(&self, records: &[SendRecord]) -> Vec<(String, f64)> {
        let old = |r: &SendRecord| self.records.get(&r.send_id);
        records
            .iter()
            .flat_map(|r| partition_writes(old(r), Some(r), 1.0))
            .collect()
    }

    /// The index partitions changing each of `ids` by `change` would land on.
    fn changes(&self, ids: &[SendId], change: impl Fn(&mut SendRecord), rate: f64) -> Vec<(String, f64)> {
        ids.iter()
            .filter_map(|id| self.records.get(id))
            .flat_map(|old| {
                let mut new = old.clone();
                change(&mut new);
                partition_writes(Some(old), Some(&new), rate)
            })
            .collect()
    }

    /// Bills one write of `op` (twice the rate in a transaction).
    fn bill(&mut self, op: Op, old: Option<&SendRecord>, new: Option<&SendRecord>) {
        let (units, indexes) = write_units(old, new);
        let rate = if op == Op::DynamoDbTransactWriteItems { 2.0 } else { 1.0 };
        let usage = self.usage.entry(op.as_str().to_string()).or_default();
        usage.write_units += units * rate;
        usage.index_units += indexes * rate;
    }

    /// Bills a read of `op`: half a unit (an eventually consistent read of up to 4 KB).
    fn bill_read(&mut self, op: Op) {
        let usage = self.usage.entry(op.as_str().to_string()).or_default();
        usage.read_units += 0.5;
    }

    /// Bills a conditional write its condition refused: one unit.
    fn bill_refused(&mut self, op: Op) {
        self.usage.entry(op.as_str().to_string()).or_default().write_units += 1.0;
    }

    fn count(&mut self, record: &SendRecord, add: bool) {
        let count = self.counts.entry((record.batch_id, record.status)).or_insert(0);
        if add {
            *count += 1;
        } else {
            *count -= 1;
        }
    }

    fn insert(&mut self, op: Op, record: SendRecord) {
        self.count(&record, true);
        let old = self.records.insert(record.send_id, record.clone());
        self.bill(op, old.as_ref(), Some(&record));
        if let Some(old) = old {
            self.count(&old, false);
        }
    }

    fn remove(&mut self, op: Op, id: &SendId) {
        if let Some(old) = self.records.remove(id) {
            self.count(&old, false);
            self.bill(op, Some(&old), None);
        }
    }

    /// Changes one record, keeping the counts right.
    fn update<T>(&mut self, op: Op, id: &SendId, change: impl FnOnce(&mut SendRecord) -> T) -> Option<T> {
        let mut record = self.records.remove(id)?;
        self.count(&record, false);
        let old = record.clone();
        let result = change(&mut record);
        self.count(&record, true);
        self.bill(op, Some(&old), Some(&record));
        self.records.insert(record.send_id, record);
        Some(result)
    }

    fn unfinished(&self, batch: Option<BatchId>) -> bool {
        self.counts
            .iter()
            .any(|((b, status), n)| *n > 0 && !status.is_terminal() && batch.is_none_or(|batch| *b == Some(batch)))
    }
}

/// The status table as a map, with DynamoDB's conditional transitions.
#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<Table>,
    /// The copy holding each claimed message, and until when.
    leases: Mutex<HashMap<SendId, Lease>>,
    /// When set, `mark_sent` fails this many more times (a store outage after a send).
    pub fail_mark_sent: Mutex<u32>,
    /// How long each call takes (the simulated target); none in unit tests.
    pub times: Option<Arc<ServiceTimes>>,
    /// DynamoDB's per-partition write limit (the simulated target).
    pub partitions: Option<Arc<sim::Partitions>>,
}

impl MemoryStore {
    /// Waits while the partitions `plan` reads off the table are short of
    /// write units (the simulated target; nothing elsewhere).
    async fn pace(&self, plan: impl FnOnce(&Table) -> Vec<(String, f64)>) {
        let Some(partitions) = &self.partitions else { return };
        let writes = plan(&self.records.lock().expect("records lock"));
        let wait = partitions.take(&writes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// The units each DynamoDB operation would have taken (the simulated target's bill).
    pub fn usage(&self) -> UsageByOperation {
        self.records.lock().expect("records lock").usage.clone()
    }

    /// Visits every record in the table, without copying them (the
    /// simulated target's audit reads them so).
    pub fn each_record(&self, mut visit: impl FnMut(&SendRecord)) {
        self.records
            .lock()
            .expect("records lock")
            .records
            .values()
            .for_each(&mut visit);
    }

    /// Every record as it stands, copied.
    pub fn records(&self) -> Vec<SendRecord> {
        self.records
            .lock()
            .expect("records lock")
            .records
            .values()
            .cloned()
            .collect()
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
        let table = self.records.lock().expect("records lock");
        table.records.values().filter(|r| keep(r)).cloned().collect()
    }

    /// Moves a record that is not final yet to `status`; false if it was final.
    fn finish(&self, id: SendId, update: impl FnOnce(&mut SendRecord)) -> Result<bool, StoreError> {
        let mut table = self.records.lock().expect("records lock");
        if table.records.get(&id).is_none_or(|r| r.status.is_terminal()) {
            table.bill_refused(Op::DynamoDbUpdateItem);
            return Ok(false);
        }
        table.update(Op::DynamoDbUpdateItem, &id, |record| {
            update(record);
            record.updated_at = crate::clock::now();
        });
        Ok(true)
    }
}

#[async_trait]
impl StatusStore for MemoryStore {
    async fn put_pending(&self, records: &[SendRecord]) -> Result<(), StoreError> {
        // As the DynamoDB adapter writes: one record alone with a put, more
        // in batches of 25, four at a time.
        let op = match records.len() {
            1 => Op::DynamoDbPutItem,
            _ => Op::DynamoDbBatchWriteItem,
        };
        sim::wait_calls(&self.times, op, records.len().div_ceil(25), 4).await;
        self.pace(|table| table.puts(records)).await;
        let mut table = self.records.lock().expect("records lock");
        for record in records {
            // Unconditional, as DynamoDB's PutItem and BatchWriteItem are.
            table.insert(op, record.clone());
        }
        Ok(())
    }

    async fn put_pending_if_absent(&self, records: &[SendRecord]) -> Result<Vec<SendId>, StoreError> {
        // One conditional put each, eight at a time.
        sim::wait_calls(&self.times, Op::DynamoDbPutItem, records.len(), 8).await;
        self.pace(|table| {
            let absent: Vec<SendRecord> = records
                .iter()
                .filter(|r| !table.records.contains_key(&r.send_id))
                .cloned()
                .collect();
            table.puts(&absent)
        })
        .await;
        let mut table = self.records.lock().expect("records lock");
        let mut pending = Vec::new();
        for record in records {
            if table.records.contains_key(&record.send_id) {
                table.bill_refused(Op::DynamoDbPutItem);
            } else {
                table.insert(Op::DynamoDbPutItem, record.clone());
            }
            if table.records[&record.send_id].status == SendStatus::Pending {
                pending.push(record.send_id);
            }
        }
        Ok(pending)
    }

    async fn has_unfinished(&self) -> Result<bool, StoreError> {
        sim::wait(&self.times, Op::DynamoDbQuery).await;
        let mut table = self.records.lock().expect("records lock");
        table.bill_read(Op::DynamoDbQuery);
        Ok(table.unfinished(None))
    }

    async fn unfinished_since(
        &self,
        batch: BatchId,
        from: Option<DateTime<Utc>>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        // One read of the batch's first page, as a poll of the DynamoDB
        // adapter usually is. The counts answer whether anything is left;
        // `from` is then a valid place for the next look to start.
        sim::wait(&self.times, Op::DynamoDbQuery).await;
        let mut table = self.records.lock().expect("records lock");
        table.bill_read(Op::DynamoDbQuery);
        Ok(table
            .unfinished(Some(batch))
            .then(|| from.unwrap_or(DateTime::<Utc>::MIN_UTC)))
    }

    async fn mark_queued(&self, ids: &[SendId]) -> Result<(), StoreError> {
        // One message: a conditional update; more: transactions of 25, one after another.
        match ids.len() {
            1 => sim::wait(&self.times, Op::DynamoDbUpdateItem).await,
            n => sim::wait_calls(&self.times, Op::DynamoDbTransactWriteItems, n.div_ceil(25), 1).await,
        }
        let op = match ids.len() {
            1 => Op::DynamoDbUpdateItem,
            _ => Op::DynamoDbTransactWriteItems,
        };
        let rate = if op == Op::DynamoDbTransactWriteItems { 2.0 } else { 1.0 };
        self.pace(|table| table.changes(ids, |r| r.status = SendStatus::Queued, rate))
            .await;
        let mut table = self.records.lock().expect("records lock");
        for id in ids {
            if table.records.get(id).is_some_and(|r| r.status == SendStatus::Pending) {
                table.update(op, id, |record| record.status = SendStatus::Queued);
            } else {
                table.bill_refused(op);
            }
        }
        Ok(())
    }

    async fn begin_attempt(&self, id: SendId, lease: Lease) -> Result<Claim, StoreError> {
        sim::wait(&self.times, Op::DynamoDbUpdateItem).await;
        self.pace(|table| table.changes(&[id], |r| r.attempts += 1, 1.0)).await;
        let mut table = self.records.lock().expect("records lock");
        let mut leases = self.leases.lock().expect("leases lock");
        let held_by_another = leases
            .get(&id)
            .is_some_and(|held| held.copy != lease.copy && held.until >= crate::clock::now());
        let claim = match table.records.get(&id) {
            None => Claim::Missing,
            Some(record) if record.status.is_terminal() => Claim::AlreadyFinal(record.status),
            Some(_) if held_by_another => Claim::HeldByAnotherCopy,
            Some(_) => {
                leases.insert(id, lease);
                let attempts = table.update(Op::DynamoDbUpdateItem, &id, |record| {
                    record.attempts += 1;
                    record.attempts
                });
                return Ok(Claim::Claimed {
                    attempts: attempts.expect("the record is there"),
                });
            }
        };
        table.bill_refused(Op::DynamoDbUpdateItem);
        Ok(claim)
    }

    async fn mark_sent(
        &self,
        id: SendId,
        provider_message_id: &str,
        sent_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        sim::wait(&self.times, Op::DynamoDbUpdateItem).await;
        self.pace(|table| table.changes(&[id], |r| r.status = SendStatus::Sent, 1.0))
            .await;
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
        self.pace(|table| table.changes(&[id], |r| r.status = SendStatus::Error, 1.0))
            .await;
        self.finish(id, |r| {
            r.status = SendStatus::Error;
            r.error_reason = Some(reason.to_string());
        })
    }

    async fn delete_pending(&self, ids: &[SendId]) -> Result<(), StoreError> {
        sim::wait_calls(&self.times, Op::DynamoDbDeleteItem, ids.len(), 1).await;
        self.pace(|table| {
            let pending = ids.iter().filter_map(|id| table.records.get(id));
            pending.flat_map(|old| partition_writes(Some(old), None, 1.0)).collect()
        })
        .await;
        let mut table = self.records.lock().expect("records lock");
        for id in ids {
            if table.records.get(id).is_some_and(|r| r.status == SendStatus::Pending) {
                table.remove(Op::DynamoDbDeleteItem, id);
            } else {
                table.bill_refused(Op::DynamoDbDeleteItem);
            }
        }
        Ok(())
    }

    async fn get(&self, id: SendId) -> Result<Option<SendRecord>, StoreError> {
        sim::wait(&self.times, Op::DynamoDbGetItem).await;
        let mut table = self.records.lock().expect("records lock");
        table.bill_read(Op::DynamoDbGetItem);
        Ok(table.records.get(&id).cloned())
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
        let table = self.records.lock().expect("records lock");
        let counts = table
            .counts
            .iter()
            .filter(|((b, _), n)| *b == Some(batch) && **n > 0)
            .map(|((_, status), n)| (status.to_string(), *n))
            .collect();
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
            partitions: times.is_some().then(|| {
                Arc::new(sim::Partitions::new(
                    sim::Partitions::WRITE_UNITS_PER_SEC,
                    sim::Partitions::BURST_SECS,
                ))
            }),
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

    fn record(batch: Option<BatchId>, status: SendStatus) -> SendRecord {
        SendRecord {
            send_id: SendId::new(),
            batch_id: batch,
            kind: crate::domain::MessageKind::Offer,
            priority: Priority::Medium,
            recipient: "a@example.com".into(),
            subject: "S".into(),
            status,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            sent_at: None,
            attempts: 0,
            provider_message_id: None,
            error_reason: None,
        }
    }

    #[test]
    fn a_write_costs_a_unit_for_the_item_and_each_index_it_touches_and_two_where_a_key_moves() {
        let campaign = record(Some(BatchId::new()), SendStatus::Pending);
        let notification = record(None, SendStatus::Pending);
        // PENDING: the table and both indexes (a notification is in no batch).
        assert_eq!(write_units(None, Some(&campaign)), (3.0, 2.0));
        assert_eq!(write_units(None, Some(&notification)), (2.0, 1.0));
        // A status change moves the item within status_index: a delete and a put.
        let queued = SendRecord {
            status: SendStatus::Queued,
            ..campaign.clone()
        };
        assert_eq!(write_units(Some(&campaign), Some(&queued)), (4.0, 3.0));
        // A claim changes attributes only: one write in each index.
        let claimed = SendRecord {
            attempts: 1,
            ..queued.clone()
        };
        assert_eq!(write_units(Some(&queued), Some(&claimed)), (3.0, 2.0));
        assert_eq!(write_units(Some(&notification), None), (2.0, 1.0));
    }

    #[test]
    fn a_status_move_lands_on_the_old_and_the_new_status_partition_and_the_campaigns() {
        let batch = BatchId::new();
        let pending = record(Some(batch), SendStatus::Pending);
        let queued = SendRecord {
            status: SendStatus::Queued,
            ..pending.clone()
        };
        let writes = partition_writes(Some(&pending), Some(&queued), 2.0);
        let expected = vec![
            ("status_index PENDING".to_string(), 2.0),
            ("status_index QUEUED".to_string(), 2.0),
            (format!("batch_index {batch}"), 2.0),
        ];
        assert_eq!(writes, expected);
        // The same units as AWS bills, key by key (here in a transaction).
        let billed: f64 = writes.iter().map(|(_, u)| u).sum();
        assert_eq!(billed, 2.0 * write_units(Some(&pending), Some(&queued)).1);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn one_record_alone_is_a_put_item_and_more_are_a_batch_write_as_in_dynamodb() {
        let times = Arc::new(ServiceTimes::instant());
        let store = MemoryStore {
            times: Some(times.clone()),
            ..MemoryStore::default()
        };
        let pending = || record(None, SendStatus::Pending);
        store.put_pending(&[pending()]).await.unwrap();
        store.put_pending(&[pending(), pending(), pending()]).await.unwrap();
        let calls = times.calls();
        assert_eq!(calls.get(&Op::DynamoDbPutItem), Some(&1));
        assert_eq!(calls.get(&Op::DynamoDbBatchWriteItem), Some(&1));
        assert_eq!(store.records.lock().unwrap().records.len(), 4);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn one_message_alone_is_a_send_message_and_more_are_a_batch_as_on_sqs() {
        let times = Arc::new(ServiceTimes::instant());
        let mut queues = MemoryQueues::new(Duration::from_secs(30), 5);
        queues.times = Some(times.clone());
        let message = crate::queue::tests::message;
        queues.send_batch(Priority::High, &[message(10)]).await.unwrap();
        queues
            .send_batch(Priority::Low, &[message(10), message(10), message(10)])
            .await
            .unwrap();
        queues.send_batch(Priority::Low, &[]).await.unwrap();
        let calls = times.calls();
        assert_eq!(calls.get(&Op::SqsSendMessage), Some(&1));
        assert_eq!(calls.get(&Op::SqsSendMessageBatch), Some(&1));
        assert_eq!(queues.depth(QueueRef::Main(Priority::Low)).await.unwrap().visible, 3);
    }

    /// Queues whose `operation` answers in `ms` at the median and above (half
    /// of it at the fastest: `AnswerTimes::at`; the dice are seeded, so each
    /// test's draws are fixed), every other call at once.
    fn queues_answering(operation: Op, ms: f64) -> Arc<MemoryQueues> {
        let answer = |ms: f64| sim::AnswerTimes {
            p50_ms: ms,
            p95_ms: ms,
            p99_ms: ms,
            max_ms: ms,
        };
        let times = ServiceTimes::new([(operation, answer(ms))].into(), answer(0.0), 1);
        let mut queues = MemoryQueues::new(Duration::from_secs(30), 5);
        queues.times = Some(Arc::new(times));
        Arc::new(queues)
    }

    /// A long poll on the high queue: how many it took, and when it had them.
    fn long_poll(queues: &Arc<MemoryQueues>, started: Instant) -> tokio::task::JoinHandle<(usize, Duration)> {
        let queues = queues.clone();
        tokio::spawn(async move {
            let taken = queues
                .receive(QueueRef::Main(Priority::High), 10, Duration::from_secs(20))
                .await
                .unwrap();
            (taken.len(), started.elapsed())
        })
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_long_poll_woken_by_an_arrival_answers_a_receive_time_after_it() {
        let queues = queues_answering(Op::SqsReceiveMessage, 6.0);
        let started = Instant::now();
        let poll = long_poll(&queues, started);
        tokio::time::sleep(Duration::from_millis(100)).await;
        queues.send_raw(Priority::High, "m", Some("id")).await.unwrap();
        let (taken, took) = poll.await.unwrap();
        assert_eq!(taken, 1);
        assert!(
            (Duration::from_millis(103)..=Duration::from_millis(106)).contains(&took),
            "{took:?}"
        );
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_long_poll_takes_a_message_before_its_sender_has_the_answer() {
        let queues = queues_answering(Op::SqsSendMessage, 8.0);
        let started = Instant::now();
        let poll = long_poll(&queues, started);
        queues.send_raw(Priority::High, "m", Some("id")).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(8), "the sender has its answer");
        let (taken, received_after) = poll.await.unwrap();
        assert_eq!(taken, 1);
        assert_eq!(
            received_after,
            Duration::from_millis(4),
            "served halfway through the answer"
        );
    }

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

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn at_least_once_delivery_shows_a_deleted_message_again_within_the_visibility_timeout() {
        let queues = MemoryQueues::new(Duration::from_secs(30), 5);
        queues.set_duplicates(Some(("sqs_duplicate#0", 1.0)), 7);
        queues.send_raw(Priority::Low, "m", Some("id")).await.unwrap();
        let queue = QueueRef::Main(Priority::Low);
        let first = queues.receive(queue, 10, Duration::ZERO).await.unwrap();
        queues.set_duplicates(None, 7);
        queues.delete(&[&first[0]]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(30)).await;
        let again = queues.receive(queue, 10, Duration::ZERO).await.unwrap();
        assert_eq!(again.len(), 1, "the copy that missed the delete");
        assert_eq!((again[0].body.as_str(), again[0].send_id.as_deref()), ("m", Some("id")));
        assert_eq!(again[0].receive_count, 1, "a copy counts its own receives");
        queues.delete(&[&again[0]]).await.unwrap();
        assert_eq!(queues.depth(queue).await.unwrap(), QueueDepth::default());
        assert_eq!(queues.duplicated()["sqs_duplicate#0"], 1);
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

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn a_long_poll_that_runs_out_is_counted_as_an_empty_receive_and_one_that_finds_a_message_is_not() {
        let queues = MemoryQueues::new(Duration::from_secs(30), 5);
        let low = QueueRef::Main(Priority::Low);
        assert!(queues
            .receive(low, 10, Duration::from_secs(1))
            .await
            .unwrap()
            .is_empty());
        queues.send_raw(Priority::Low, "one", None).await.unwrap();
        assert_eq!(queues.receive(low, 10, Duration::from_secs(1)).await.unwrap().len(), 1);
        assert_eq!(queues.empty_receives(), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_final_status_is_never_overwritten_and_a_second_copy_cannot_claim_a_held_message() {
        let store = MemoryStore::default();
        let record = record(None, SendStatus::Pending);
        let id = record.send_id;
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
