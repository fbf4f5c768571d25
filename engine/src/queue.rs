//! The priority queues: a domain trait and its SQS adapter.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName, QueueAttributeName,
    SendMessageBatchRequestEntry,
};

use crate::aws::{service_error, ErrorKind, ServiceError};
pub use crate::domain::QueueRef;
use crate::domain::{OutboundMessage, Priority};
use crate::provision::Provisioned;

/// A message as received, with what is needed to delete or delay it.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    pub queue: QueueRef,
    pub receipt: String,
    pub body: String,
    /// The `sendId` message attribute, readable even when the body is not.
    pub send_id: Option<String>,
    /// How many times SQS has handed this message out, this time included.
    pub receive_count: u32,
}

/// How many messages a queue holds.
pub use vocabulary::stats::Depth as QueueDepth;

#[derive(Debug, thiserror::Error)]
#[error("queue {queue:?}: {error}")]
pub struct QueueError {
    pub queue: QueueRef,
    #[source]
    pub error: ServiceError,
}

/// The largest batch SQS accepts.
pub const MAX_BATCH: usize = 10;

/// The most a `SendMessageBatch` may carry in all, bodies and attributes
/// together (SQS's classic limit, which every SQS and emulator honours).
pub const MAX_BATCH_BYTES: usize = 262_144;

/// The name of the message attribute that carries the send id.
const SEND_ID_ATTRIBUTE: &str = "sendId";

/// What SQS counts against its size limits for one message: the encoded
/// body plus each attribute's name, data type and value.
pub fn wire_size(message: &OutboundMessage) -> usize {
    message.encode().len() + SEND_ID_ATTRIBUTE.len() + "String".len() + message.send_id.to_string().len()
}

/// Splits messages into batches SQS takes: at most [`MAX_BATCH`] entries and
/// `max_bytes` in all. A message larger than `max_bytes` travels alone (and
/// SQS will say why it refuses it).
pub fn batches(messages: Vec<OutboundMessage>, max_bytes: usize) -> Vec<Vec<OutboundMessage>> {
    let mut out: Vec<Vec<OutboundMessage>> = Vec::new();
    let mut bytes = 0;
    for message in messages {
        let size = wire_size(&message);
        match out.last_mut() {
            Some(batch) if batch.len() < MAX_BATCH && bytes + size <= max_bytes => {
                bytes += size;
                batch.push(message);
            }
            _ => {
                bytes = size;
                out.push(vec![message]);
            }
        }
    }
    out
}

#[async_trait]
pub trait MessageQueue: Send + Sync {
    /// The largest message every queue takes (its `MaximumMessageSize`).
    fn max_message_bytes(&self) -> usize;
    /// Enqueues up to [`MAX_BATCH`] messages; returns those SQS refused, with why.
    async fn send_batch(
        &self,
        priority: Priority,
        messages: &[OutboundMessage],
    ) -> Result<Vec<(OutboundMessage, String)>, QueueError>;
    /// Enqueues one message after `delay` (at most 15 minutes).
    async fn send_delayed(
        &self,
        priority: Priority,
        message: &OutboundMessage,
        delay: Duration,
    ) -> Result<(), QueueError>;
    /// Enqueues a body as it is, unchecked: for fault injection (poison) and tooling.
    async fn send_raw(&self, priority: Priority, body: &str, send_id: Option<&str>) -> Result<(), QueueError>;
    async fn receive(&self, queue: QueueRef, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError>;
    /// Deletes handled messages, in as few calls as the queue allows (SQS:
    /// `DeleteMessageBatch`, ten of one queue per call). Every message is
    /// tried; the first failure is returned.
    async fn delete(&self, messages: &[&ReceivedMessage]) -> Result<(), QueueError>;
    /// Makes a received message visible again after `timeout`.
    async fn set_visibility(&self, message: &ReceivedMessage, timeout: Duration) -> Result<(), QueueError>;
    async fn depth(&self, queue: QueueRef) -> Result<QueueDepth, QueueError>;
}

/// The SQS adapter over the provisioned queues.
#[derive(Clone, Debug)]
pub struct SqsQueues {
    client: aws_sdk_sqs::Client,
    urls: [String; 3],
    dead_letter_urls: [String; 3],
    max_message_bytes: usize,
}

impl SqsQueues {
    /// A `SendMessage` of one message to `queue`, carrying its send id.
    fn send_message(
        &self,
        queue: QueueRef,
        message: &OutboundMessage,
    ) -> aws_sdk_sqs::operation::send_message::builders::SendMessageFluentBuilder {
        self.client
            .send_message()
            .queue_url(self.url(queue))
            .message_body(message.encode())
            .message_attributes(SEND_ID_ATTRIBUTE, send_id_attribute(message))
    }

    /// One `DeleteMessageBatch` of up to ten messages of `queue`; a refused
    /// entry is an error naming it (SQS answers per entry).
    async fn delete_chunk(&self, queue: QueueRef, chunk: &[&&ReceivedMessage]) -> Result<(), QueueError> {
        let entries = chunk.iter().enumerate().map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(&m.receipt)
                .build()
                .expect("id and receipt are set")
        });
        let output = self
            .client
            .delete_message_batch()
            .queue_url(self.url(queue))
            .set_entries(Some(entries.collect()))
            .send()
            .await
            .map_err(|e| Self::error(queue, e))?;
        match output.failed().first() {
            None => Ok(()),
            Some(failed) => Err(QueueError {
                queue,
                error: ServiceError::new(
                    ErrorKind::Invalid,
                    format!("{}: {}", failed.code(), failed.message().unwrap_or_default()),
                ),
            }),
        }
    }

    pub fn new(client: aws_sdk_sqs::Client, provisioned: &Provisioned) -> Self {
        Self {
            client,
            urls: provisioned.queue_urls.clone(),
            dead_letter_urls: provisioned.dead_letter_urls.clone(),
            max_message_bytes: provisioned.max_message_bytes,
        }
    }

    pub fn url(&self, queue: QueueRef) -> &str {
        match queue {
            QueueRef::Main(p) => &self.urls[p.index()],
            QueueRef::DeadLetter(p) => &self.dead_letter_urls[p.index()],
        }
    }

    fn error<E, R>(queue: QueueRef, error: aws_smithy_runtime_api::client::result::SdkError<E, R>) -> QueueError
    where
        E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        QueueError {
            queue,
            error: service_error(error),
        }
    }
}

fn send_id_attribute(message: &OutboundMessage) -> MessageAttributeValue {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(message.send_id.to_string())
        .build()
        .expect("data type is set")
}

#[async_trait]
impl MessageQueue for SqsQueues {
    fn max_message_bytes(&self) -> usize {
        self.max_message_bytes
    }

    async fn send_batch(
        &self,
        priority: Priority,
        messages: &[OutboundMessage],
    ) -> Result<Vec<(OutboundMessage, String)>, QueueError> {
        assert!(
            messages.len() <= MAX_BATCH,
            "SQS batches hold at most {MAX_BATCH} messages"
        );
        let queue = QueueRef::Main(priority);
        match messages {
            [] => return Ok(Vec::new()),
            // One message, one `SendMessage`: the same request on the bill, and
            // timed apart from batches of ten (a simulated run draws each
            // operation's answer times from a real run's).
            [message] => {
                self.send_message(queue, message)
                    .send()
                    .await
                    .map_err(|e| Self::error(queue, e))?;
                return Ok(Vec::new());
            }
            _ => {}
        }
        let entries = messages
            .iter()
            .enumerate()
            .map(|(i, message)| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(message.encode())
                    .message_attributes(SEND_ID_ATTRIBUTE, send_id_attribute(message))
                    .build()
                    .expect("id and body are set")
            })
            .collect();
        let output = self
            .client
            .send_message_batch()
            .queue_url(self.url(queue))
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| Self::error(queue, e))?;
        Ok(output
            .failed
            .into_iter()
            .filter_map(|failure| {
                let index: usize = failure.id.parse().ok()?;
                let reason = format!("{}: {}", failure.code, failure.message.unwrap_or_default());
                Some((messages.get(index)?.clone(), reason))
            })
            .collect())
    }

    async fn send_delayed(
        &self,
        priority: Priority,
        message: &OutboundMessage,
        delay: Duration,
    ) -> Result<(), QueueError> {
        let queue = QueueRef::Main(priority);
        self.send_message(queue, message)
            .delay_seconds(delay.as_secs().min(900) as i32)
            .send()
            .await
            .map_err(|e| Self::error(queue, e))?;
        Ok(())
    }

    async fn send_raw(&self, priority: Priority, body: &str, send_id: Option<&str>) -> Result<(), QueueError> {
        let queue = QueueRef::Main(priority);
        let mut send = self.client.send_message().queue_url(self.url(queue)).message_body(body);
        if let Some(id) = send_id {
            let attribute = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(id)
                .build()
                .expect("data type is set");
            send = send.message_attributes(SEND_ID_ATTRIBUTE, attribute);
        }
        send.send().await.map_err(|e| Self::error(queue, e))?;
        Ok(())
    }

    async fn receive(&self, queue: QueueRef, max: usize, wait: Duration) -> Result<Vec<ReceivedMessage>, QueueError> {
        let output = self
            .client
            .receive_message()
            .queue_url(self.url(queue))
            .max_number_of_messages(max.clamp(1, MAX_BATCH) as i32)
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names(SEND_ID_ATTRIBUTE)
            .send()
            .await
            .map_err(|e| Self::error(queue, e))?;
        Ok(output
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| ReceivedMessage {
                queue,
                receipt: m.receipt_handle.unwrap_or_default(),
                body: m.body.unwrap_or_default(),
                send_id: m
                    .message_attributes
                    .as_ref()
                    .and_then(|a| a.get(SEND_ID_ATTRIBUTE))
                    .and_then(|v| v.string_value.clone()),
                receive_count: m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1),
            })
            .collect())
    }

    async fn delete(&self, messages: &[&ReceivedMessage]) -> Result<(), QueueError> {
        let mut first_failure = None;
        for queue in QueueRef::ALL {
            let of_queue: Vec<&&ReceivedMessage> = messages.iter().filter(|m| m.queue == queue).collect();
            for chunk in of_queue.chunks(MAX_BATCH) {
                if let Err(error) = self.delete_chunk(queue, chunk).await {
                    first_failure.get_or_insert(error);
                }
            }
        }
        first_failure.map_or(Ok(()), Err)
    }

    async fn set_visibility(&self, message: &ReceivedMessage, timeout: Duration) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(self.url(message.queue))
            .receipt_handle(&message.receipt)
            .visibility_timeout(timeout.as_secs().min(43_200) as i32)
            .send()
            .await
            .map_err(|e| Self::error(message.queue, e))?;
        Ok(())
    }

    async fn depth(&self, queue: QueueRef) -> Result<QueueDepth, QueueError> {
        let attributes = self
            .client
            .get_queue_attributes()
            .queue_url(self.url(queue))
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| Self::error(queue, e))?
            .attributes
            .unwrap_or_default();
        let read = |name: QueueAttributeName| attributes.get(&name).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(QueueDepth {
            visible: read(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: read(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            delayed: read(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::domain::{MessageBody, MessageKind, SendId};

    /// A campaign message of `body_bytes` of text, for tests.
    pub(crate) fn message(body_bytes: usize) -> OutboundMessage {
        OutboundMessage {
            send_id: SendId::new(),
            batch_id: None,
            kind: MessageKind::Campaign,
            priority: Priority::Low,
            recipient: crate::domain::EmailAddress::parse("a@example.com").unwrap(),
            subject: "S".into(),
            body: MessageBody::Inline {
                text: "x".repeat(body_bytes),
            },
            attachment: None,
            accepted_at: chrono::Utc::now(),
            copy_id: Default::default(),
        }
    }

    #[test]
    fn the_wire_size_counts_the_encoded_body_and_the_attribute() {
        let m = message(100);
        assert_eq!(wire_size(&m), m.encode().len() + "sendId".len() + "String".len() + 36);
        let mut escaped = message(0);
        escaped.body = MessageBody::Inline { text: "\"".repeat(100) };
        assert!(wire_size(&escaped) >= 200, "each quote costs two bytes once encoded");
    }

    #[test]
    fn batches_respect_both_the_count_and_the_total_size() {
        let ten_big: Vec<_> = (0..10).map(|_| message(150_000)).collect();
        let split = batches(ten_big, MAX_BATCH_BYTES);
        assert_eq!(split.len(), 10, "one 150 KB message per batch under 256 KiB");
        let small: Vec<_> = (0..25).map(|_| message(10)).collect();
        let sizes: Vec<usize> = batches(small, MAX_BATCH_BYTES).iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let mixed = vec![message(100_000), message(100_000), message(100_000), message(10)];
        for batch in batches(mixed, MAX_BATCH_BYTES) {
            assert!(batch.iter().map(wire_size).sum::<usize>() <= MAX_BATCH_BYTES);
        }
    }
}
