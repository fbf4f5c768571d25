//! The status API at `/graphql`, served from the table's indexes (no scans).

use async_graphql::{Context, EmptyMutation, EmptySubscription, Enum, Error, Object, Schema, SimpleObject, ID};
use chrono::{DateTime, Utc};

use crate::domain::{BatchId, SendRecord, SendStatus};
use crate::pipeline::Pipeline;

pub type StatusSchema = Schema<QueryRoot, EmptyMutation, EmptySubscription>;

pub fn schema(pipeline: Pipeline) -> StatusSchema {
    Schema::build(QueryRoot, EmptyMutation, EmptySubscription)
        .data(pipeline)
        .limit_depth(8)
        .finish()
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
#[graphql(name = "Status")]
pub enum GqlStatus {
    Pending,
    Queued,
    Sent,
    Error,
}

impl From<GqlStatus> for SendStatus {
    fn from(status: GqlStatus) -> Self {
        match status {
            GqlStatus::Pending => SendStatus::Pending,
            GqlStatus::Queued => SendStatus::Queued,
            GqlStatus::Sent => SendStatus::Sent,
            GqlStatus::Error => SendStatus::Error,
        }
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

#[derive(SimpleObject)]
pub struct PageInfo {
    has_next_page: bool,
    /// Pass as `after` for the next page.
    end_cursor: Option<String>,
}

#[derive(SimpleObject)]
pub struct EmailSendPage {
    items: Vec<EmailSend>,
    page_info: PageInfo,
}

#[derive(SimpleObject)]
pub struct StatusCount {
    status: String,
    count: u64,
}

#[derive(SimpleObject)]
pub struct Batch {
    batch_id: ID,
    total: u64,
    counts: Vec<StatusCount>,
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
    async fn email_sends(
        &self,
        ctx: &Context<'_>,
        status: Option<GqlStatus>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        batch_id: Option<ID>,
        #[graphql(default = 50)] first: i32,
        after: Option<String>,
    ) -> Result<EmailSendPage, Error> {
        let pipeline = ctx.data::<Pipeline>()?;
        let cap = pipeline.settings.api.max_page_size;
        if first < 1 || first as usize > cap {
            return Err(Error::new(format!("`first` must be between 1 and {cap}")));
        }
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
                        status.map(Into::into),
                        first as usize,
                        after.as_deref(),
                    )
                    .await?
            }
            (None, Some(status)) => {
                let from = from.unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
                let to = to.unwrap_or_else(|| Utc::now() + chrono::Duration::days(1));
                if from > to {
                    return Err(Error::new("`from` is after `to`"));
                }
                pipeline
                    .store
                    .by_status(status.into(), from, to, first as usize, after.as_deref())
                    .await?
            }
            (None, None) => {
                return Err(Error::new(
                    "give `status` or `batchId`: listing everything would scan the table",
                ))
            }
        };
        Ok(EmailSendPage {
            page_info: PageInfo {
                has_next_page: page.next_cursor.is_some(),
                end_cursor: page.next_cursor,
            },
            items: page.items.into_iter().map(Into::into).collect(),
        })
    }

    /// One uploaded batch with its counts by status.
    async fn batch(&self, ctx: &Context<'_>, batch_id: ID) -> Result<Option<Batch>, Error> {
        let pipeline = ctx.data::<Pipeline>()?;
        let counts = pipeline.store.batch_counts(parse_batch(&batch_id)?).await?;
        if counts.is_empty() {
            return Ok(None);
        }
        Ok(Some(Batch {
            batch_id,
            total: counts.values().sum(),
            counts: counts
                .into_iter()
                .map(|(status, count)| StatusCount { status, count })
                .collect(),
        }))
    }
}
