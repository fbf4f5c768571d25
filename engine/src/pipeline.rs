//! The pipeline's shared parts, and acceptance: record PENDING, enqueue by
//! priority, record QUEUED. Nothing accepted is dropped: a message that cannot
//! be enqueued ends ERROR with the reason, and the caller is told.

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use futures::{stream, StreamExt};

use crate::blobs::{BlobError, BlobStore};
use crate::config::Settings;
use crate::domain::{
    Attachment, BatchId, EmailAddress, MessageBody, MessageKind, OutboundMessage, Priority, SendId, SendRecord,
};
use crate::mailer::Mailer;
use crate::metrics::Metrics;
use crate::queue::{MessageQueue, MAX_BATCH};
use crate::store::{StatusStore, StoreError};

/// Everything the API, senders and reconciler share. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    pub settings: Arc<Settings>,
    pub queues: Arc<dyn MessageQueue>,
    pub store: Arc<dyn StatusStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub mailer: Arc<dyn Mailer>,
    pub metrics: Arc<Metrics>,
}

/// A message the API has validated, before it gets an id and a queue.
#[derive(Debug, Clone)]
pub struct NewMessage {
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
    /// Accepted but not enqueued after a retry: recorded ERROR with this reason.
    pub failed: Vec<(SendId, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
}

const PARALLEL_CALLS: usize = 8;

/// The ids a batch put on its queue, and those refused with the reason.
type Enqueued = (Vec<SendId>, Vec<(SendId, String)>);

impl Pipeline {
    pub async fn accept(&self, batch_id: Option<BatchId>, messages: Vec<NewMessage>) -> Result<Accepted, IngestError> {
        let now = Utc::now();
        let inline_limit = self.settings.api.inline_body_limit_bytes;
        let outbound: Vec<OutboundMessage> = stream::iter(messages)
            .map(|new| async move {
                let send_id = SendId::new();
                let priority = self.settings.routing.route(new.kind, new.priority);
                let body = if new.body.len() > inline_limit {
                    let key = format!("bodies/{send_id}");
                    let bytes = new.body.len();
                    self.blobs
                        .put(&key, Bytes::from(new.body), "text/plain; charset=utf-8")
                        .await?;
                    MessageBody::Stored { key, bytes }
                } else {
                    MessageBody::Inline { text: new.body }
                };
                Ok::<_, IngestError>(OutboundMessage {
                    send_id,
                    batch_id,
                    kind: new.kind,
                    priority,
                    recipient: new.recipient.to_string(),
                    subject: new.subject,
                    body,
                    attachment: new.attachment,
                    accepted_at: now,
                })
            })
            .buffered(PARALLEL_CALLS)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;

        let records: Vec<SendRecord> = outbound.iter().map(SendRecord::pending).collect();
        // Recorded before enqueued, so a sender never meets a message with no record.
        self.store.put_pending(&records).await?;
        self.metrics.record_upload(records.len(), 0, 0);

        let mut accepted = Accepted {
            send_ids: outbound.iter().map(|m| (m.send_id, m.priority)).collect(),
            ..Accepted::default()
        };
        let batches: Vec<(Priority, Vec<OutboundMessage>)> = Priority::ALL
            .into_iter()
            .flat_map(|priority| {
                let of_priority: Vec<OutboundMessage> =
                    outbound.iter().filter(|m| m.priority == priority).cloned().collect();
                of_priority
                    .chunks(MAX_BATCH)
                    .map(|chunk| (priority, chunk.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let results: Vec<(Priority, Enqueued)> = stream::iter(batches)
            .map(|(priority, batch)| async move { (priority, self.enqueue_with_retry(priority, batch).await) })
            .buffer_unordered(PARALLEL_CALLS)
            .collect()
            .await;
        let mut queued = Vec::with_capacity(outbound.len());
        for (priority, (sent, failed)) in results {
            self.metrics.record_enqueued(priority, sent.len());
            accepted.enqueued += sent.len();
            queued.extend(sent);
            for (send_id, reason) in failed {
                tracing::error!(%send_id, %reason, "accepted message could not be enqueued; marking ERROR");
                self.store.mark_error(send_id, &reason).await?;
                self.metrics.record_error(priority);
                accepted.failed.push((send_id, reason));
            }
        }
        self.store.mark_queued(&queued).await?;
        Ok(accepted)
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
            tracing::warn!(%priority, refused = refused.len(), "SQS refused part of a batch; retrying");
            pending = refused.into_iter().map(|(m, _)| m).collect();
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        unreachable!("the loop returns on its second attempt")
    }
}
