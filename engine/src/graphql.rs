//! The status API at `/graphql`, served from the table's indexes (no scans).
//!
//! Bounded like every other door: a query's depth and complexity are
//! limited (a page of `first` items costs `first` times its selection, and
//! each alias counts again), so one request cannot ask for an unbounded
//! response; and errors from the services behind it are logged, not shown.

use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, EmptyMutation, EmptySubscription, Error, Object, Schema, SimpleObject, ID};
use chrono::{DateTime, Utc};

use crate::batches::{BatchPhase, BatchProgress};
use crate::campaign::BatchReport;
use crate::csv_upload::{DuplicateRow, RejectedRow};
use crate::domain::{BatchId, SendRecord, SendStatus};
use crate::pipeline::Pipeline;
use crate::store::StoreError;

pub type StatusSchema = Schema<QueryRoot, EmptyMutation, EmptySubscription>;

pub fn schema(pipeline: Pipeline) -> StatusSchema {
    let api = &pipeline.settings.api;
    let (depth, complexity) = (api.max_graphql_depth, api.max_graphql_complexity);
    Schema::build(QueryRoot, EmptyMutation, EmptySubscription)
        .limit_depth(depth)
        .limit_complexity(complexity)
        .data(pipeline)
        .finish()
}

/// What a client sees of a store failure: its own mistake (a bad cursor)
/// in full, the service's trouble only as "unavailable" (the log has it).
fn public(error: StoreError) -> Error {
    match error {
        StoreError::BadCursor(_) => Error::new(error.to_string()),
        other => {
            tracing::error!(error = %other, "status store failed under GraphQL");
            Error::new("the status store could not answer; try again")
        }
    }
}

/// The cost of a page field: `first` items of the selection, plus the field.
fn page_cost(first: i32, child_complexity: usize) -> usize {
    (first.max(1) as usize)
        .saturating_mul(child_complexity)
        .saturating_add(1)
}

/// A status to filter by: `SENT` as an enum literal, or `"SENT"` as a
/// string (as clients written for the seed system send it), any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusFilter(SendStatus);

#[async_graphql::Scalar(name = "Status")]
impl async_graphql::ScalarType for StatusFilter {
    fn parse(value: async_graphql::Value) -> async_graphql::InputValueResult<Self> {
        let name = match &value {
            async_graphql::Value::Enum(name) => name.as_str(),
            async_graphql::Value::String(name) => name.as_str(),
            _ => return Err(async_graphql::InputValueError::expected_type(value)),
        };
        name.parse::<SendStatus>()
            .map(StatusFilter)
            .map_err(async_graphql::InputValueError::custom)
    }

    fn to_value(&self) -> async_graphql::Value {
        async_graphql::Value::String(self.0.as_str().to_string())
    }
}

#[derive(SimpleObject)]
pub struct EmailSend {
    send_id: ID,
    batch_id: Option<ID>,
    status: String,
    kind: String,
    priority: String,
    recipient: String,
    /// The recipient, under the name the seed system's clients use.
    email: String,
    subject: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    attempts: u32,
    provider_message_id: Option<String>,
    error_reason: Option<String>,
}

impl From<SendRecord> for EmailSend {
    fn from(r: SendRecord) -> Self {
        Self {
            send_id: ID(r.send_id.to_string()),
            batch_id: r.batch_id.map(|b| ID(b.to_string())),
            status: r.status.to_string(),
            kind: r.kind.to_string(),
            priority: r.priority.to_string(),
            email: r.recipient.clone(),
            recipient: r.recipient,
            subject: r.subject,
            created_at: r.created_at,
            updated_at: r.updated_at,
            sent_at: r.sent_at,
            attempts: r.attempts,
            provider_message_id: r.provider_message_id,
            error_reason: r.error_reason,
        }
    }
}

/// A page of sends as GraphQL clients expect it (Relay's Cursor
/// Connections: `edges { cursor node }`, `pageInfo { hasNextPage endCursor }`).
pub type EmailSendConnection = Connection<String, EmailSend>;

#[derive(SimpleObject)]
pub struct StatusCount {
    status: String,
    count: u64,
}

#[derive(SimpleObject)]
#[graphql(name = "RejectedRow")]
pub struct GqlRejectedRow {
    row: u64,
    field: Option<String>,
    reason: String,
}

#[derive(SimpleObject)]
#[graphql(name = "DuplicateRow")]
pub struct GqlDuplicateRow {
    row: u64,
    duplicate_of_row: u64,
}

#[derive(SimpleObject)]
pub struct RejectedRowPage {
    items: Vec<GqlRejectedRow>,
    /// Pass as `after` for the next page (a position in the batch's report).
    next: Option<i32>,
}

#[derive(SimpleObject)]
pub struct DuplicateRowPage {
    items: Vec<GqlDuplicateRow>,
    next: Option<i32>,
}

/// One uploaded batch: what its file held, how far its processing is, and
/// where its messages are.
pub struct Batch {
    batch_id: ID,
    id: BatchId,
    progress: Option<BatchProgress>,
    report: Option<BatchReport>,
}

impl Batch {
    async fn status_counts(&self, ctx: &Context<'_>) -> Result<std::collections::BTreeMap<String, u64>, Error> {
        let pipeline = ctx.data::<Pipeline>()?;
        pipeline.store.batch_counts(self.id).await.map_err(public)
    }
}

/// Rows `after..after+first` of `rows`, and where the next page starts.
fn rows_page<T, U>(rows: &[T], first: i32, after: Option<i32>, map: impl Fn(&T) -> U) -> (Vec<U>, Option<i32>) {
    let start = after.unwrap_or(0).max(0) as usize;
    let end = start.saturating_add(first.max(0) as usize).min(rows.len());
    let items = rows.get(start..end).unwrap_or_default().iter().map(map).collect();
    (items, (end < rows.len()).then_some(end as i32))
}

#[Object]
impl Batch {
    async fn batch_id(&self) -> &ID {
        &self.batch_id
    }

    /// RECEIVED → PARSING → ENQUEUED → DONE, or FAILED (see `reason`).
    async fn phase(&self) -> Option<BatchPhase> {
        self.progress.as_ref().map(|p| p.phase)
    }

    /// Why the batch failed, when it did.
    async fn reason(&self) -> Option<&str> {
        self.progress.as_ref().and_then(|p| p.reason.as_deref())
    }

    /// Data rows in the file.
    async fn rows(&self) -> Option<u64> {
        self.progress.as_ref().map(|p| p.rows)
    }

    /// Data rows turned into messages so far (at the last checkpoint).
    async fn rows_read(&self) -> Option<u64> {
        self.progress.as_ref().map(BatchProgress::rows_read)
    }

    async fn enqueued(&self) -> Option<u64> {
        self.progress.as_ref().map(|p| p.enqueued)
    }

    /// Accepted rows SQS would not take; each ended ERROR with its reason.
    async fn failed_to_enqueue(&self) -> Option<u64> {
        self.progress.as_ref().map(|p| p.failed_to_enqueue)
    }

    /// Times processing was taken up again after the engine stopped or crashed.
    async fn resumed(&self) -> Option<u32> {
        self.progress.as_ref().map(|p| p.resumed)
    }

    async fn received_at(&self) -> Option<DateTime<Utc>> {
        self.progress.as_ref().map(|p| p.received_at)
    }

    async fn enqueued_at(&self) -> Option<DateTime<Utc>> {
        self.progress.as_ref().and_then(|p| p.enqueued_at)
    }

    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.progress.as_ref().and_then(|p| p.finished_at)
    }

    /// Messages of the batch, all statuses. Counted when asked: it reads
    /// every record of the batch, so it costs like a page of 100.
    #[graphql(complexity = 100)]
    async fn total(&self, ctx: &Context<'_>) -> Result<u64, Error> {
        Ok(self.status_counts(ctx).await?.values().sum())
    }

    /// Messages of the batch by status (read as `total` is).
    #[graphql(complexity = 100)]
    async fn counts(&self, ctx: &Context<'_>) -> Result<Vec<StatusCount>, Error> {
        let counts = self.status_counts(ctx).await?;
        Ok(counts
            .into_iter()
            .map(|(status, count)| StatusCount { status, count })
            .collect())
    }

    async fn file_name(&self) -> Option<&str> {
        self.report.as_ref().map(|r| r.file_name.as_str())
    }

    async fn accepted(&self) -> Option<u64> {
        self.report.as_ref().map(|r| r.accepted)
    }

    async fn duplicates(&self) -> Option<u64> {
        self.report.as_ref().map(|r| r.duplicates as u64)
    }

    async fn rejected(&self) -> Option<u64> {
        self.report.as_ref().map(|r| r.rejected as u64)
    }

    /// The file's rejected rows, by row number, a page at a time.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn rejected_rows(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: i32,
        after: Option<i32>,
    ) -> Result<RejectedRowPage, Error> {
        check_first(ctx, first)?;
        let rows = self
            .report
            .as_ref()
            .map(|r| r.rejected_rows.as_slice())
            .unwrap_or_default();
        let (items, next) = rows_page(rows, first, after, |r: &RejectedRow| GqlRejectedRow {
            row: r.row,
            field: r.field.clone(),
            reason: r.reason.clone(),
        });
        Ok(RejectedRowPage { items, next })
    }

    /// The file's duplicate rows, each with the row it repeats.
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn duplicate_rows(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: i32,
        after: Option<i32>,
    ) -> Result<DuplicateRowPage, Error> {
        check_first(ctx, first)?;
        let rows = self
            .report
            .as_ref()
            .map(|r| r.duplicate_rows.as_slice())
            .unwrap_or_default();
        let (items, next) = rows_page(rows, first, after, |d: &DuplicateRow| GqlDuplicateRow {
            row: d.row,
            duplicate_of_row: d.duplicate_of_row,
        });
        Ok(DuplicateRowPage { items, next })
    }
}

fn check_first(ctx: &Context<'_>, first: i32) -> Result<(), Error> {
    let cap = ctx.data::<Pipeline>()?.settings.api.max_page_size;
    if first < 1 || first as usize > cap {
        return Err(Error::new(format!("`first` must be between 1 and {cap}")));
    }
    Ok(())
}

pub struct QueryRoot;

fn parse_batch(id: &ID) -> Result<BatchId, Error> {
    id.parse::<BatchId>().map_err(Error::new)
}

#[Object]
impl QueryRoot {
    /// Sends by status (and creation time range) or by batch, oldest first.
    /// At least one of `status` and `batchId` is required: every query is served by an index.
    #[allow(clippy::too_many_arguments)]
    #[graphql(complexity = "page_cost(first, child_complexity)")]
    async fn email_sends(
        &self,
        ctx: &Context<'_>,
        status: Option<StatusFilter>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        batch_id: Option<ID>,
        #[graphql(default = 50)] first: i32,
        after: Option<String>,
    ) -> Result<EmailSendConnection, Error> {
        let pipeline = ctx.data::<Pipeline>()?;
        check_first(ctx, first)?;
        let page = match (batch_id, status) {
            (Some(batch), status) => {
                if from.is_some() || to.is_some() {
                    return Err(Error::new(
                        "`from`/`to` filter by status; with `batchId` leave them out",
                    ));
                }
                pipeline
                    .store
                    .by_batch(
                        parse_batch(&batch)?,
                        status.map(|s| s.0),
                        first as usize,
                        after.as_deref(),
                    )
                    .await
                    .map_err(public)?
            }
            (None, Some(status)) => {
                let from = from.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
                let to = to.unwrap_or_else(|| crate::clock::now() + chrono::Duration::days(1));
                if from > to {
                    return Err(Error::new("`from` is after `to`"));
                }
                pipeline
                    .store
                    .by_status(status.0, from, to, first as usize, after.as_deref())
                    .await
                    .map_err(public)?
            }
            (None, None) => {
                return Err(Error::new(
                    "give `status` or `batchId`: listing everything would scan the table",
                ))
            }
        };
        let mut connection = Connection::new(after.is_some(), page.next_cursor.is_some());
        let edges = page.items.into_iter().zip(page.cursors);
        connection
            .edges
            .extend(edges.map(|(record, cursor)| Edge::new(cursor, EmailSend::from(record))));
        Ok(connection)
    }

    /// One uploaded batch: its file's verdicts (accepted, duplicate and
    /// rejected rows) and its messages' counts by status. `null` only for
    /// an id no upload was given.
    async fn batch(&self, ctx: &Context<'_>, batch_id: ID) -> Result<Option<Batch>, Error> {
        let pipeline = ctx.data::<Pipeline>()?;
        let id = parse_batch(&batch_id)?;
        let (progress, report) = tokio::join!(pipeline.batch_progress(id), pipeline.batch_report(id));
        let progress = progress.map_err(|error| {
            tracing::error!(%error, "batch progress unreadable under GraphQL");
            Error::new("the batch's progress could not be read; try again")
        })?;
        let report = report.map_err(|error| {
            tracing::error!(%error, "batch report unreadable under GraphQL");
            Error::new("the batch's report could not be read; try again")
        })?;
        if progress.is_none() && report.is_none() {
            return Ok(None);
        }
        Ok(Some(Batch {
            batch_id,
            id,
            progress,
            report,
        }))
    }
}
