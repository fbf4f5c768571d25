//! Message status: a domain trait and its DynamoDB adapter.
//!
//! Every transition is a conditional write, so a terminal status is never
//! overwritten: a redelivered message that is already SENT is recognised and
//! not sent again, and a late QUEUED write cannot undo a SENT.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, PutRequest, ReturnValue, Select, TransactWriteItem, Update, WriteRequest,
};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;

use crate::aws::{describe, ErrorKind, ServiceError};
use crate::domain::{BatchId, CopyId, MessageKind, Priority, SendId, SendRecord, SendStatus};
use crate::provision::{BATCH_INDEX, STATUS_INDEX};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("status store: {0}")]
    Service(#[source] ServiceError),
    #[error("status store holds a malformed item {send_id}: {reason}")]
    Malformed { send_id: String, reason: String },
    #[error("`{0}` is not a cursor this API gave out")]
    BadCursor(String),
}

/// The outcome of trying to start a send attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Go ahead; this is attempt number `attempts`.
    Claimed { attempts: u32 },
    /// Already SENT or ERROR: do not send again.
    AlreadyFinal(SendStatus),
    /// Another copy of the message holds the claim (a batch resumed after a
    /// crash may enqueue a message twice); that copy will finish it.
    HeldByAnotherCopy,
    /// No record: the message is not one this pipeline accepted.
    Missing,
}

/// Which copy of a message claims it, and until when (the queue's visibility
/// timeout: if the holder dies, its copy and its lease come back together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub copy: CopyId,
    pub until: DateTime<Utc>,
}

/// One page of records, each with its own cursor (to resume right after
/// it), and the cursor for the next page, if any.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub items: Vec<SendRecord>,
    /// `cursors[i]` resumes after `items[i]`.
    pub cursors: Vec<String>,
    pub next_cursor: Option<String>,
}

#[async_trait]
pub trait StatusStore: Send + Sync {
    /// Records newly accepted messages as PENDING.
    async fn put_pending(&self, records: &[SendRecord]) -> Result<(), StoreError>;
    /// Records as PENDING those of `records` not recorded yet (a chunk of a
    /// batch taken up again after a crash: some may be queued or sent
    /// already) and returns the ids that are PENDING now: the ones to enqueue.
    async fn put_pending_if_absent(&self, records: &[SendRecord]) -> Result<Vec<SendId>, StoreError>;
    /// Whether any record is still PENDING or QUEUED: at most one item of
    /// the status index read per status.
    async fn has_unfinished(&self) -> Result<bool, StoreError>;
    /// Whether a record of `batch` created at or after `from` is still
    /// PENDING or QUEUED: `None` when none is, else a time at or before the
    /// oldest such record's creation, where the next look may start.
    ///
    /// A batch's records are all written before it is awaited, and SENT and
    /// ERROR are final, so a caller polling until `None` can start each look
    /// where the last one stopped: over a batch's life each record is read
    /// about once, whatever else is in flight. (Reading the status index's
    /// PENDING and QUEUED for the batch instead cost every poll of every
    /// batch the whole backlog of all batches: with a few dozen campaigns in
    /// flight, the local DynamoDB spent a core on those reads alone.)
    async fn unfinished_since(
        &self,
        batch: BatchId,
        from: Option<DateTime<Utc>>,
    ) -> Result<Option<DateTime<Utc>>, StoreError>;
    /// PENDING → QUEUED for messages now on their queue (a later status wins).
    async fn mark_queued(&self, ids: &[SendId]) -> Result<(), StoreError>;
    /// Claims the message for one copy until `lease.until`: a later copy is
    /// refused while the lease lasts, the same copy (a retry) is not.
    async fn begin_attempt(&self, id: SendId, lease: Lease) -> Result<Claim, StoreError>;
    /// → SENT; false when the record was already final.
    async fn mark_sent(
        &self,
        id: SendId,
        provider_message_id: &str,
        sent_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// → ERROR with a reason; false when the record was already final.
    async fn mark_error(&self, id: SendId, reason: &str) -> Result<bool, StoreError>;
    /// Deletes records that are still PENDING (an acceptance rolled back before
    /// anything was enqueued); a record past PENDING is left as it is.
    async fn delete_pending(&self, ids: &[SendId]) -> Result<(), StoreError>;
    async fn get(&self, id: SendId) -> Result<Option<SendRecord>, StoreError>;
    /// Records with `status` created in `[from, to]`, oldest first.
    async fn by_status(
        &self,
        status: SendStatus,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page, StoreError>;
    /// Records of one batch, optionally of one status, oldest first.
    async fn by_batch(
        &self,
        batch: BatchId,
        status: Option<SendStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page, StoreError>;
    async fn batch_counts(&self, batch: BatchId) -> Result<BTreeMap<String, u64>, StoreError>;
}

#[derive(Clone, Debug)]
pub struct DynamoStatusStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// The PENDING → QUEUED write, and the condition that keeps it from touching
/// a record a fast sender already moved on.
const QUEUED_UPDATE: &str = "SET #status = :queued, updatedAt = :now";
const ONLY_PENDING: &str = "#status = :pending";

/// The PENDING → QUEUED write of record `$id` in `$table`, on either kind of
/// DynamoDB update builder (a transaction item's, or a single `UpdateItem`'s):
/// the SDK gives them the same setters but no common trait.
macro_rules! queued_write {
    ($builder:expr, $table:expr, $id:expr) => {
        $builder
            .table_name($table)
            .key("sendId", s($id.to_string()))
            .update_expression(QUEUED_UPDATE)
            .condition_expression(ONLY_PENDING)
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":queued", s(SendStatus::Queued.as_str()))
            .expression_attribute_values(":pending", s(SendStatus::Pending.as_str()))
            .expression_attribute_values(":now", s(timestamp(crate::clock::now())))
    };
}

/// Fixed-width UTC timestamps sort as text in time order (the indexes rely on it).
pub fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

type UpdateItem = aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;

/// Makes an update refuse records that are already SENT or ERROR.
fn unless_final(update: UpdateItem) -> UpdateItem {
    update
        .condition_expression("attribute_exists(sendId) AND NOT (#status IN (:sent, :error))")
        .expression_attribute_names("#status", "status")
        .expression_attribute_values(":sent", s(SendStatus::Sent.as_str()))
        .expression_attribute_values(":error", s(SendStatus::Error.as_str()))
}

fn service_error<E, R>(error: aws_smithy_runtime_api::client::result::SdkError<E, R>) -> StoreError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    StoreError::Service(crate::aws::service_error(error))
}

/// A record as the table holds it, mapped to and from DynamoDB by serde_dynamo.
/// Times are fixed-width strings so that they sort in time order in the indexes.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Item {
    send_id: SendId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    batch_id: Option<BatchId>,
    kind: MessageKind,
    priority: Priority,
    recipient: String,
    #[serde(default)]
    subject: String,
    status: SendStatus,
    #[serde(with = "fixed_time")]
    created_at: DateTime<Utc>,
    #[serde(with = "fixed_time")]
    updated_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "fixed_time::optional")]
    sent_at: Option<DateTime<Utc>>,
    #[serde(default)]
    attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    provider_message_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error_reason: Option<String>,
}

impl From<&SendRecord> for Item {
    fn from(r: &SendRecord) -> Self {
        Item {
            send_id: r.send_id,
            batch_id: r.batch_id,
            kind: r.kind,
            priority: r.priority,
            recipient: r.recipient.clone(),
            subject: r.subject.clone(),
            status: r.status,
            created_at: r.created_at,
            updated_at: r.updated_at,
            sent_at: r.sent_at,
            attempts: r.attempts,
            provider_message_id: r.provider_message_id.clone(),
            error_reason: r.error_reason.clone(),
        }
    }
}

impl From<Item> for SendRecord {
    fn from(i: Item) -> Self {
        SendRecord {
            send_id: i.send_id,
            batch_id: i.batch_id,
            kind: i.kind,
            priority: i.priority,
            recipient: i.recipient,
            subject: i.subject,
            status: i.status,
            created_at: i.created_at,
            updated_at: i.updated_at,
            sent_at: i.sent_at,
            attempts: i.attempts,
            provider_message_id: i.provider_message_id,
            error_reason: i.error_reason,
        }
    }
}

/// Serde for [`timestamp`]'s fixed-width times.
mod fixed_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::timestamp(*at))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(deserializer)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|at| at.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    pub mod optional {
        use super::*;

        pub fn serialize<S: Serializer>(at: &Option<DateTime<Utc>>, serializer: S) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::serialize(at, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<DateTime<Utc>>, D::Error> {
            Ok(Some(super::deserialize(deserializer)?))
        }
    }
}

impl DynamoStatusStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn item(record: &SendRecord) -> HashMap<String, AttributeValue> {
        serde_dynamo::to_item(Item::from(record)).expect("a record always maps to an item")
    }

    fn record(item: &HashMap<String, AttributeValue>) -> Result<SendRecord, StoreError> {
        let send_id = item
            .get("sendId")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        serde_dynamo::from_item::<_, Item>(item.clone())
            .map(SendRecord::from)
            .map_err(|error| StoreError::Malformed {
                send_id,
                reason: error.to_string(),
            })
    }

    fn encode_cursor(key: Option<HashMap<String, AttributeValue>>) -> Option<String> {
        let key = key.filter(|k| !k.is_empty())?;
        let plain: BTreeMap<String, String> = key
            .into_iter()
            .filter_map(|(k, v)| v.as_s().ok().map(|s| (k, s.clone())))
            .collect();
        let json = serde_json::to_vec(&plain).expect("a map of strings serializes");
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json))
    }

    /// A cursor is only ever a key this API gave out: the attributes of the
    /// table's and its indexes' keys, each well-formed. Anything else is
    /// refused here, so a crafted cursor never reaches DynamoDB.
    fn decode_cursor(cursor: Option<&str>) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
        let Some(cursor) = cursor else { return Ok(None) };
        let bad = || StoreError::BadCursor(crate::domain::content::quoted(cursor));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| bad())?;
        let plain: BTreeMap<String, String> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        let well_formed = |name: &str, value: &str| match name {
            "sendId" => value.parse::<SendId>().is_ok(),
            "batchId" => value.parse::<BatchId>().is_ok(),
            "status" => value.parse::<SendStatus>().is_ok(),
            "createdAt" => DateTime::parse_from_rfc3339(value).is_ok(),
            _ => false,
        };
        if !plain.contains_key("sendId") || !plain.iter().all(|(k, v)| well_formed(k, v)) {
            return Err(bad());
        }
        Ok(Some(plain.into_iter().map(|(k, v)| (k, s(v))).collect()))
    }

    /// A conditional update that refuses to touch a final record.
    async fn finish(
        &self,
        id: SendId,
        status: SendStatus,
        sets: &[(&str, String)],
        removes: &[&str],
    ) -> Result<bool, StoreError> {
        let mut expression = String::from("SET #status = :new, updatedAt = :now");
        let mut update = unless_final(self.client.update_item())
            .table_name(&self.table)
            .key("sendId", s(id.to_string()))
            .expression_attribute_values(":new", s(status.as_str()))
            .expression_attribute_values(":now", s(timestamp(crate::clock::now())));
        for (i, (name, value)) in sets.iter().enumerate() {
            expression.push_str(&format!(", {name} = :v{i}"));
            update = update.expression_attribute_values(format!(":v{i}"), s(value));
        }
        if !removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        match update.update_expression(expression).send().await {
            Ok(_) => Ok(true),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(error) => Err(service_error(error)),
        }
    }

    /// PENDING → QUEUED for one record, as an item of a transaction.
    fn queued_update(&self, id: SendId) -> TransactWriteItem {
        let update = queued_write!(Update::builder(), &self.table, id)
            .build()
            .expect("key, table and expression are set");
        TransactWriteItem::builder().update(update).build()
    }

    /// One BatchWriteItem of at most 25 records; unprocessed items
    /// (throttling) are retried with backoff, never dropped.
    async fn put_batch(&self, chunk: &[SendRecord]) -> Result<(), StoreError> {
        let mut requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|record| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(Self::item(record)))
                            .build()
                            .expect("item is set"),
                    )
                    .build()
            })
            .collect();
        // Unprocessed items (throttling) are retried with backoff, never dropped.
        let mut delay = Duration::from_millis(50);
        for attempt in 0.. {
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(service_error)?;
            requests = output
                .unprocessed_items
                .and_then(|mut u| u.remove(&self.table))
                .unwrap_or_default();
            if requests.is_empty() {
                break;
            }
            if attempt >= 8 {
                let text = format!(
                    "{} status writes still unprocessed after {attempt} retries",
                    requests.len()
                );
                return Err(StoreError::Service(ServiceError::new(ErrorKind::Throttled, text)));
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        Ok(())
    }

    /// A `PutItem` of `record`, whole.
    fn put(&self, record: &SendRecord) -> aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(Self::item(record)))
    }

    /// Writes one PENDING record unless it exists; `Some(id)` when the
    /// record is PENDING afterwards (written now, or never enqueued before).
    async fn put_pending_one_if_absent(&self, record: &SendRecord) -> Result<Option<SendId>, StoreError> {
        let result = self
            .put(record)
            .condition_expression("attribute_not_exists(sendId)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(Some(record.send_id)),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                let existing = self.get(record.send_id).await?;
                let pending = existing.is_some_and(|r| r.status == SendStatus::Pending);
                Ok(pending.then_some(record.send_id))
            }
            Err(error) => Err(service_error(error)),
        }
    }

    /// PENDING → QUEUED for one record: a conditional `UpdateItem`, which
    /// costs half the write units of a one-item transaction on AWS.
    async fn mark_queued_one(&self, id: SendId) -> Result<(), StoreError> {
        let result = queued_write!(self.client.update_item(), &self.table, id).send().await;
        match result {
            Ok(_) => Ok(()),
            // Already past PENDING (a fast sender got there first): that status stands.
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(error) => Err(service_error(error)),
        }
    }

    /// PENDING → QUEUED for up to [`TRANSACTION_MAX`] records in one
    /// transaction. One record a fast sender already moved on cancels it all;
    /// DynamoDB says which, so the rest are written together again without
    /// it ([`still_to_queue`]). A cancellation for any other reason falls
    /// back to one conditional write each, and a lone record is one anyway.
    async fn mark_queued_together(&self, chunk: &[SendId]) -> Result<(), StoreError> {
        let mut ids = chunk.to_vec();
        for _ in 0..TRANSACTION_TRIES {
            if let [] | [_] = ids.as_slice() {
                break;
            }
            let items = ids.iter().map(|id| self.queued_update(*id)).collect();
            let error = match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(error) => error,
            };
            let codes: Option<Vec<Option<&str>>> = match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                    Some(cancelled.cancellation_reasons().iter().map(|r| r.code()).collect())
                }
                _ => None,
            };
            match codes.and_then(|codes| still_to_queue(&ids, &codes)) {
                Some(rest) => ids = rest,
                None => {
                    tracing::debug!(error = %describe(&error), "batched QUEUED write fell back to single writes");
                    break;
                }
            }
        }
        for id in ids {
            self.mark_queued_one(id).await?;
        }
        Ok(())
    }

    /// One page of an index query. `key` names the attributes of the
    /// index's key and the table's (what DynamoDB needs to resume after an item).
    async fn query_page(
        &self,
        query: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
        key: [&str; 3],
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page, StoreError> {
        let output = query
            .table_name(&self.table)
            .limit(limit.max(1) as i32)
            .set_exclusive_start_key(Self::decode_cursor(cursor)?)
            .scan_index_forward(true)
            .send()
            .await
            .map_err(service_error)?;
        let raw = output.items.unwrap_or_default();
        let items = raw.iter().map(Self::record).collect::<Result<Vec<_>, _>>()?;
        let cursors = raw
            .iter()
            .map(|item| {
                let at: HashMap<String, AttributeValue> = key
                    .iter()
                    .filter_map(|name| item.get(*name).map(|v| (name.to_string(), v.clone())))
                    .collect();
                Self::encode_cursor(Some(at)).unwrap_or_default()
            })
            .collect();
        Ok(Page {
            items,
            cursors,
            next_cursor: Self::encode_cursor(output.last_evaluated_key),
        })
    }
}

/// The creation time of the first of `items` (a page of an index, in its
/// order) that is not SENT or ERROR, if any; an item whose status or time
/// cannot be read is an error, not a finished record.
fn first_unfinished(items: &[HashMap<String, AttributeValue>]) -> Option<Result<DateTime<Utc>, StoreError>> {
    let text = |item: &HashMap<String, AttributeValue>, name: &str| {
        item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
    };
    let malformed = |item: &HashMap<String, AttributeValue>, reason: String| StoreError::Malformed {
        send_id: text(item, "sendId"),
        reason,
    };
    items.iter().find_map(|item| {
        let created = match text(item, "status").parse::<SendStatus>() {
            Ok(status) if status.is_terminal() => return None,
            Ok(_) => text(item, "createdAt"),
            Err(error) => return Some(Err(malformed(item, error.to_string()))),
        };
        Some(
            DateTime::parse_from_rfc3339(&created)
                .map(|at| at.with_timezone(&Utc))
                .map_err(|error| malformed(item, format!("createdAt {created:?}: {error}"))),
        )
    })
}

/// Of a cancelled transaction of QUEUED writes to `ids`, the ones to write
/// again together, given DynamoDB's cancellation reason for each item (in
/// order; `None` or "None" for an item that was not at fault). `None` when the
/// reasons do not say that failed conditions alone cancelled it.
fn still_to_queue(ids: &[SendId], codes: &[Option<&str>]) -> Option<Vec<SendId>> {
    const FAILED_CONDITION: &str = "ConditionalCheckFailed";
    let blameless = |code: &Option<&str>| matches!(code, None | Some("None"));
    let explained = codes.len() == ids.len()
        && codes.contains(&Some(FAILED_CONDITION))
        && codes
            .iter()
            .all(|code| blameless(code) || *code == Some(FAILED_CONDITION));
    explained.then(|| {
        ids.iter()
            .zip(codes)
            .filter(|(_, code)| blameless(code))
            .map(|(id, _)| *id)
            .collect()
    })
}

/// DynamoDB takes at most 25 puts per BatchWriteItem (and 100 items per transaction).
const BATCH_WRITE_MAX: usize = 25;
/// BatchWriteItem calls one `put_pending` makes at once.
const PARALLEL_WRITES: usize = 4;
/// Transactions of 25, not DynamoDB's 100: the same write units on AWS (per
/// item), and a local DynamoDB holds its write lock for a quarter as long,
/// so a reminder's write waits less behind a campaign's.
const TRANSACTION_MAX: usize = 25;
/// Transactions one chunk of QUEUED writes makes before writing one at a
/// time: each try leaves out the records a sender finished meanwhile.
const TRANSACTION_TRIES: usize = 3;
/// Items one read of a batch's records takes while looking for one that is
/// not finished yet: a poll usually stops in its first page.
const UNFINISHED_PAGE: i32 = 100;
/// Reads one filtered page may take before answering short.
const MAX_FILTERED_READS: usize = 20;
/// An error reason is stored up to this many characters.
const MAX_REASON_CHARS: usize = 1_000;

#[async_trait]
impl StatusStore for DynamoStatusStore {
    async fn put_pending(&self, records: &[SendRecord]) -> Result<(), StoreError> {
        // One record, one `PutItem`: the same write units, and timed apart
        // from batches of 25 (a simulated run draws each operation's answer
        // times from a real run's).
        if let [record] = records {
            self.put(record).send().await.map_err(service_error)?;
            return Ok(());
        }
        // Owned chunks: async-trait's futures cannot borrow from the stream.
        let chunks: Vec<Vec<SendRecord>> = records.chunks(BATCH_WRITE_MAX).map(<[_]>::to_vec).collect();
        let writes: Vec<Result<(), StoreError>> = futures::stream::iter(chunks)
            .map(|chunk| async move { self.put_batch(&chunk).await })
            .buffer_unordered(PARALLEL_WRITES)
            .collect()
            .await;
        writes.into_iter().collect()
    }

    async fn put_pending_if_absent(&self, records: &[SendRecord]) -> Result<Vec<SendId>, StoreError> {
        let written: Vec<Result<Option<SendId>, StoreError>> = futures::stream::iter(records.to_vec())
            .map(|record| async move { self.put_pending_one_if_absent(&record).await })
            .buffered(8)
            .collect()
            .await;
        written.into_iter().filter_map(Result::transpose).collect()
    }

    async fn has_unfinished(&self) -> Result<bool, StoreError> {
        for status in [SendStatus::Pending, SendStatus::Queued] {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(STATUS_INDEX)
                .key_condition_expression("#status = :status")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", s(status.as_str()))
                .select(Select::Count)
                .limit(1)
                .send()
                .await
                .map_err(service_error)?;
            if output.count > 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn unfinished_since(
        &self,
        batch: BatchId,
        from: Option<DateTime<Utc>>,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let mut start = None;
        loop {
            let query = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BATCH_INDEX)
                .expression_attribute_values(":batch", s(batch.to_string()))
                .projection_expression("sendId, #status, createdAt")
                .expression_attribute_names("#status", "status")
                .limit(UNFINISHED_PAGE)
                .set_exclusive_start_key(start);
            let query = match from {
                Some(from) => query
                    .key_condition_expression("batchId = :batch AND createdAt >= :from")
                    .expression_attribute_values(":from", s(timestamp(from))),
                None => query.key_condition_expression("batchId = :batch"),
            };
            let output = query.send().await.map_err(service_error)?;
            if let Some(oldest) = first_unfinished(output.items()) {
                return oldest.map(Some);
            }
            start = output.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                return Ok(None);
            }
        }
    }

    async fn mark_queued(&self, ids: &[SendId]) -> Result<(), StoreError> {
        // One record (a notification) is one conditional `UpdateItem`:
        // `mark_queued_together` writes a lone record on its own.
        for chunk in ids.chunks(TRANSACTION_MAX) {
            self.mark_queued_together(chunk).await?;
        }
        Ok(())
    }

    async fn begin_attempt(&self, id: SendId, lease: Lease) -> Result<Claim, StoreError> {
        let now = crate::clock::now();
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("sendId", s(id.to_string()))
            .update_expression(
                "SET attempts = if_not_exists(attempts, :zero) + :one, updatedAt = :now, \
                 leaseCopy = :copy, leaseUntil = :until",
            )
            .condition_expression(
                "attribute_exists(sendId) AND NOT (#status IN (:sent, :error)) \
                 AND (attribute_not_exists(leaseCopy) OR leaseCopy = :copy OR leaseUntil < :nowms)",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":sent", s(SendStatus::Sent.as_str()))
            .expression_attribute_values(":error", s(SendStatus::Error.as_str()))
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(":one", AttributeValue::N("1".into()))
            .expression_attribute_values(":now", s(timestamp(now)))
            .expression_attribute_values(":copy", s(lease.copy.to_string()))
            .expression_attribute_values(":until", AttributeValue::N(lease.until.timestamp_millis().to_string()))
            .expression_attribute_values(":nowms", AttributeValue::N(now.timestamp_millis().to_string()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match result {
            Ok(output) => {
                let attempts = output
                    .attributes
                    .and_then(|a| {
                        a.get("attempts")
                            .and_then(|v| v.as_n().ok())
                            .and_then(|n| n.parse().ok())
                    })
                    .unwrap_or(1);
                Ok(Claim::Claimed { attempts })
            }
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(match self.get(id).await? {
                    Some(record) if record.status.is_terminal() => Claim::AlreadyFinal(record.status),
                    Some(_) => Claim::HeldByAnotherCopy,
                    None => Claim::Missing,
                })
            }
            Err(error) => Err(service_error(error)),
        }
    }

    async fn mark_sent(
        &self,
        id: SendId,
        provider_message_id: &str,
        sent_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.finish(
            id,
            SendStatus::Sent,
            &[
                ("sentAt", timestamp(sent_at)),
                ("providerMessageId", provider_message_id.to_string()),
            ],
            &["errorReason"],
        )
        .await
    }

    async fn mark_error(&self, id: SendId, reason: &str) -> Result<bool, StoreError> {
        // A provider's reason can be long; the item must stay far below DynamoDB's 400 KB.
        let reason: String = reason.chars().take(MAX_REASON_CHARS).collect();
        self.finish(id, SendStatus::Error, &[("errorReason", reason)], &[])
            .await
    }

    async fn delete_pending(&self, ids: &[SendId]) -> Result<(), StoreError> {
        for id in ids {
            let deleted = self
                .client
                .delete_item()
                .table_name(&self.table)
                .key("sendId", s(id.to_string()))
                .condition_expression("#status = :pending")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":pending", s(SendStatus::Pending.as_str()))
                .send()
                .await;
            match deleted {
                Ok(_) => {}
                // Gone already, or past PENDING: nothing to roll back.
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(error) => return Err(service_error(error)),
            }
        }
        Ok(())
    }

    async fn get(&self, id: SendId) -> Result<Option<SendRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("sendId", s(id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(service_error)?;
        output.item.as_ref().map(Self::record).transpose()
    }

    async fn by_status(
        &self,
        status: SendStatus,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page, StoreError> {
        let query = self
            .client
            .query()
            .index_name(STATUS_INDEX)
            .key_condition_expression("#status = :status AND createdAt BETWEEN :from AND :to")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":status", s(status.as_str()))
            .expression_attribute_values(":from", s(timestamp(from)))
            .expression_attribute_values(":to", s(timestamp(to)));
        self.query_page(query, ["sendId", "status", "createdAt"], limit, cursor)
            .await
    }

    async fn by_batch(
        &self,
        batch: BatchId,
        status: Option<SendStatus>,
        limit: usize,
        cursor: Option<&str>,
    ) -> Result<Page, StoreError> {
        let mut query = self
            .client
            .query()
            .index_name(BATCH_INDEX)
            .key_condition_expression("batchId = :batch")
            .expression_attribute_values(":batch", s(batch.to_string()));
        if let Some(status) = status {
            query = query
                .filter_expression("#status = :status")
                .expression_attribute_names("#status", "status")
                .expression_attribute_values(":status", s(status.as_str()));
        }
        let key = ["sendId", "batchId", "createdAt"];
        let mut page = self.query_page(query.clone(), key, limit, cursor).await?;
        // A status filter applies after DynamoDB's page limit, so one read can
        // come back short or empty while more remain: read on (boundedly)
        // until the page is full or the batch ends.
        let mut reads = 1;
        while status.is_some() && page.items.len() < limit && reads < MAX_FILTERED_READS {
            let Some(next) = page.next_cursor.take() else { break };
            let more = self
                .query_page(query.clone(), key, limit - page.items.len(), Some(&next))
                .await?;
            page.items.extend(more.items);
            page.cursors.extend(more.cursors);
            page.next_cursor = more.next_cursor;
            reads += 1;
        }
        Ok(page)
    }

    async fn batch_counts(&self, batch: BatchId) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut counts = BTreeMap::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BATCH_INDEX)
                .key_condition_expression("batchId = :batch")
                .expression_attribute_values(":batch", s(batch.to_string()))
                .select(Select::SpecificAttributes)
                .projection_expression("#status")
                .expression_attribute_names("#status", "status")
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(service_error)?;
            for item in output.items.unwrap_or_default() {
                if let Some(status) = item.get("status").and_then(|v| v.as_s().ok()) {
                    *counts.entry(status.clone()).or_insert(0) += 1;
                }
            }
            start = output.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                return Ok(counts);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(status: &str, created: &str) -> HashMap<String, AttributeValue> {
        HashMap::from([
            ("sendId".to_string(), s("id")),
            ("status".to_string(), s(status)),
            ("createdAt".to_string(), s(created)),
        ])
    }

    #[test]
    fn the_first_record_neither_sent_nor_in_error_is_the_oldest_unfinished() {
        let page = [
            item("SENT", "2026-12-05T10:00:00.000001Z"),
            item("ERROR", "2026-12-05T10:00:00.000002Z"),
            item("QUEUED", "2026-12-05T10:00:00.000003Z"),
            item("PENDING", "2026-12-05T10:00:00.000004Z"),
        ];
        let oldest = first_unfinished(&page).unwrap().unwrap();
        assert_eq!(timestamp(oldest), "2026-12-05T10:00:00.000003Z");
        assert!(first_unfinished(&page[..2]).is_none(), "a page of final records");
    }

    #[test]
    fn a_record_whose_status_cannot_be_read_is_an_error_not_a_finished_one() {
        let page = [
            item("SENT", "2026-12-05T10:00:00.000001Z"),
            item("", "2026-12-05T10:00:00.000002Z"),
        ];
        assert!(matches!(
            first_unfinished(&page),
            Some(Err(StoreError::Malformed { .. }))
        ));
    }

    #[test]
    fn a_transaction_cancelled_by_failed_conditions_is_tried_again_without_those_records() {
        let ids: Vec<SendId> = (0..4).map(|_| SendId::new()).collect();
        let codes = [
            Some("None"),
            Some("ConditionalCheckFailed"),
            None,
            Some("ConditionalCheckFailed"),
        ];
        assert_eq!(still_to_queue(&ids, &codes), Some(vec![ids[0], ids[2]]));
    }

    #[test]
    fn a_transaction_cancelled_for_any_other_reason_is_not_retried_as_one() {
        let ids: Vec<SendId> = (0..3).map(|_| SendId::new()).collect();
        // A conflict with another transaction: no condition says who to leave out.
        let conflict = [
            Some("None"),
            Some("TransactionConflict"),
            Some("ConditionalCheckFailed"),
        ];
        assert_eq!(still_to_queue(&ids, &conflict), None);
        // No reasons that match the items, or none at fault.
        assert_eq!(still_to_queue(&ids, &[Some("ConditionalCheckFailed")]), None);
        assert_eq!(still_to_queue(&ids, &[Some("None"), None, Some("None")]), None);
    }
}
