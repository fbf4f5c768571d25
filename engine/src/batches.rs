//! A campaign batch's progress: a domain type, the trait that keeps it, and
//! its DynamoDB adapter (one small table, keyed by batch).
//!
//! An upload is answered once its file is stored; the rows become messages
//! afterwards, in chunks. After each chunk the batch's checkpoint (the last
//! row recorded and enqueued) is saved here, so an engine that dies mid-batch
//! resumes where it was on its next start: rows up to the checkpoint are
//! skipped, and the one chunk in doubt is written again with conditions
//! (see `Pipeline::process_batch`).

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aws::ServiceError;
use crate::domain::BatchId;

/// Where a batch is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(rename_items = "SCREAMING_SNAKE_CASE")]
pub enum BatchPhase {
    /// The file is stored and checked; no row is a message yet.
    Received,
    /// Rows are being recorded PENDING and enqueued, chunk by chunk.
    Parsing,
    /// Every accepted row is on its queue (or ended ERROR if SQS refused it).
    Enqueued,
    /// Every accepted row is SENT or ERROR.
    Done,
    /// The batch cannot go on (its stored file is gone or unreadable).
    Failed,
}

impl BatchPhase {
    /// As GraphQL and the stored item spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            BatchPhase::Received => "RECEIVED",
            BatchPhase::Parsing => "PARSING",
            BatchPhase::Enqueued => "ENQUEUED",
            BatchPhase::Done => "DONE",
            BatchPhase::Failed => "FAILED",
        }
    }

    /// Done or failed: nothing more will happen to it.
    pub fn is_final(self) -> bool {
        matches!(self, BatchPhase::Done | BatchPhase::Failed)
    }
}

/// The progress of one batch, saved after every chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchProgress {
    pub batch_id: BatchId,
    pub file_name: String,
    /// Where its CSV is stored.
    pub archive_key: String,
    pub phase: BatchPhase,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Data rows in the file (known once the upload is checked).
    pub rows: u64,
    /// Rows that become messages (rows less rejected and duplicates).
    pub accepted: u64,
    /// Every row up to this spreadsheet row is recorded and enqueued (1: none yet).
    pub checkpoint_row: u64,
    pub enqueued: u64,
    /// Accepted rows SQS would not take; each ended ERROR with its reason.
    pub failed_to_enqueue: u64,
    pub received_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enqueued_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Times the engine took the batch up again after a stop or a crash.
    #[serde(default)]
    pub resumed: u32,
}

impl BatchProgress {
    /// Data rows read so far: those up to the checkpoint (row 1 is the header).
    pub fn rows_read(&self) -> u64 {
        match self.phase {
            BatchPhase::Received | BatchPhase::Parsing => self.checkpoint_row.saturating_sub(1).min(self.rows),
            _ => self.rows,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BatchStoreError {
    #[error("batch store: {0}")]
    Service(#[source] ServiceError),
    #[error("batch store holds a malformed item: {0}")]
    Malformed(String),
}

#[async_trait]
pub trait BatchStore: Send + Sync {
    /// Saves a batch's progress; a batch already DONE or FAILED is not changed.
    async fn save(&self, progress: &BatchProgress) -> Result<(), BatchStoreError>;
    async fn get(&self, batch: BatchId) -> Result<Option<BatchProgress>, BatchStoreError>;
    /// Every batch not yet DONE or FAILED: the work to resume on start-up.
    async fn unfinished(&self) -> Result<Vec<BatchProgress>, BatchStoreError>;
}

/// The DynamoDB adapter: one item per batch in the `<prefix>-Batches` table.
#[derive(Clone, Debug)]
pub struct DynamoBatchStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoBatchStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn progress(item: HashMap<String, AttributeValue>) -> Result<BatchProgress, BatchStoreError> {
        serde_dynamo::from_item(item).map_err(|e| BatchStoreError::Malformed(e.to_string()))
    }
}

fn service_error<E, R>(error: aws_smithy_runtime_api::client::result::SdkError<E, R>) -> BatchStoreError
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    BatchStoreError::Service(crate::aws::service_error(error))
}

fn phase_value(phase: BatchPhase) -> AttributeValue {
    serde_dynamo::to_attribute_value(phase).expect("a phase maps to a string")
}

#[async_trait]
impl BatchStore for DynamoBatchStore {
    async fn save(&self, progress: &BatchProgress) -> Result<(), BatchStoreError> {
        let item = serde_dynamo::to_item(progress).expect("progress always maps to an item");
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(batchId) OR NOT (phase IN (:done, :failed))")
            .expression_attribute_values(":done", phase_value(BatchPhase::Done))
            .expression_attribute_values(":failed", phase_value(BatchPhase::Failed))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                tracing::debug!(batch_id = %progress.batch_id, "batch already final; progress not saved");
                Ok(())
            }
            Err(error) => Err(service_error(error)),
        }
    }

    async fn get(&self, batch: BatchId) -> Result<Option<BatchProgress>, BatchStoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("batchId", AttributeValue::S(batch.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(service_error)?;
        output.item.map(Self::progress).transpose()
    }

    async fn unfinished(&self) -> Result<Vec<BatchProgress>, BatchStoreError> {
        let mut found = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("NOT (phase IN (:done, :failed))")
                .expression_attribute_values(":done", phase_value(BatchPhase::Done))
                .expression_attribute_values(":failed", phase_value(BatchPhase::Failed))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(service_error)?;
            for item in output.items.unwrap_or_default() {
                found.push(Self::progress(item)?);
            }
            start = output.last_evaluated_key.filter(|k| !k.is_empty());
            if start.is_none() {
                return Ok(found);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_read_follow_the_checkpoint_until_every_row_is_enqueued() {
        let mut progress = BatchProgress {
            batch_id: BatchId::new(),
            file_name: "f.csv".into(),
            archive_key: "uploads/x/f.csv".into(),
            phase: BatchPhase::Received,
            reason: None,
            rows: 10,
            accepted: 9,
            checkpoint_row: 1,
            enqueued: 0,
            failed_to_enqueue: 0,
            received_at: crate::clock::now(),
            enqueued_at: None,
            finished_at: None,
            resumed: 0,
        };
        assert_eq!(progress.rows_read(), 0, "the header is row 1");
        progress.phase = BatchPhase::Parsing;
        progress.checkpoint_row = 6;
        assert_eq!(progress.rows_read(), 5);
        progress.phase = BatchPhase::Enqueued;
        assert_eq!(progress.rows_read(), 10);
        assert!(!progress.phase.is_final() && BatchPhase::Done.is_final());
        for phase in [
            BatchPhase::Received,
            BatchPhase::Parsing,
            BatchPhase::Enqueued,
            BatchPhase::Done,
            BatchPhase::Failed,
        ] {
            let stored = serde_json::to_value(phase).unwrap();
            assert_eq!(stored, phase.as_str(), "one spelling everywhere");
        }
    }
}
