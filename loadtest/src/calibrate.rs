//! The stack's own ceiling for the pipeline's per-message call mix, measured
//! with the engine's adapters but none of its HTTP or scheduling: record
//! PENDING (batch write), enqueue (batch of 10), record QUEUED (transaction),
//! receive, claim, send, record SENT, delete. A run's delivered msg/s read
//! against this tells how much of what the stack can do the pipeline gets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use engine::domain::{EmailAddress, MessageBody, MessageKind, OutboundMessage, Priority, SendId, SendRecord};
use engine::pipeline::Pipeline;
use engine::queue::{QueueRef, MAX_BATCH};
use futures::future::join_all;

pub use reports::results::Calibration;

fn message(recipient: String) -> (OutboundMessage, SendRecord) {
    let message = OutboundMessage {
        send_id: SendId::new(),
        batch_id: None,
        kind: MessageKind::Subscription,
        priority: Priority::Low,
        recipient: EmailAddress::parse(&recipient).expect("calibration addresses are valid"),
        subject: "Calibration".into(),
        body: MessageBody::Inline {
            text: "Calibration message.".into(),
        },
        attachment: None,
        accepted_at: Utc::now(),
    };
    let record = SendRecord::pending(&message);
    (message, record)
}

/// One batch of ten through the whole call mix; returns how many were sent.
async fn one_batch(pipeline: &Pipeline, worker: usize, round: u64) -> Result<u64, String> {
    let (messages, records): (Vec<_>, Vec<_>) = (0..MAX_BATCH)
        .map(|i| message(format!("calibrate.{worker}.{round}.{i}@example.com")))
        .unzip();
    pipeline
        .store()
        .put_pending(&records)
        .await
        .map_err(|e| e.to_string())?;
    let refused = pipeline
        .queues()
        .send_batch(Priority::Low, &messages)
        .await
        .map_err(|e| e.to_string())?;
    if !refused.is_empty() {
        return Err(format!("{} refused by SQS", refused.len()));
    }
    let ids: Vec<SendId> = messages.iter().map(|m| m.send_id).collect();
    pipeline.store().mark_queued(&ids).await.map_err(|e| e.to_string())?;
    let received = pipeline
        .queues()
        .receive(QueueRef::Main(Priority::Low), MAX_BATCH, Duration::from_secs(1))
        .await
        .map_err(|e| e.to_string())?;
    let sends = received.iter().map(|r| async move {
        let message = OutboundMessage::decode(&r.body).ok()?;
        pipeline.store().begin_attempt(message.send_id).await.ok()?;
        let email = engine::mailer::Email {
            from: pipeline.settings().resources.sender_address.clone(),
            to: message.recipient.clone(),
            subject: message.subject.clone(),
            text: "Calibration message.".into(),
            attachment: None,
        };
        let provider_id = pipeline.mailer().send(&email).await.ok()?;
        pipeline
            .store()
            .mark_sent(message.send_id, &provider_id, Utc::now())
            .await
            .ok()?;
        pipeline.queues().delete(&[r]).await.ok()?;
        Some(())
    });
    Ok(join_all(sends).await.into_iter().flatten().count() as u64)
}

/// Runs `concurrent_batches` loops of [`one_batch`] for `duration`.
pub async fn calibrate(pipeline: Arc<Pipeline>, duration: Duration, concurrent_batches: usize) -> Calibration {
    let started = Instant::now();
    let loops = (0..concurrent_batches).map(|worker| {
        let pipeline = pipeline.clone();
        tokio::spawn(async move {
            let mut sent = 0;
            let mut round = 0;
            while started.elapsed() < duration {
                match one_batch(&pipeline, worker, round).await {
                    Ok(n) => sent += n,
                    Err(error) => tracing::warn!(%error, "calibration batch failed"),
                }
                round += 1;
            }
            sent
        })
    });
    let messages: u64 = join_all(loops).await.into_iter().filter_map(Result::ok).sum();
    let seconds = started.elapsed().as_secs_f64();
    let calibration = Calibration {
        msgs_per_sec: messages as f64 / seconds,
        messages,
        seconds,
        concurrent_batches,
        mailer: pipeline.settings().mailer.kind,
    };
    tracing::info!(msgs_per_sec = calibration.msgs_per_sec, messages, seconds, "calibrated");
    calibration
}
