use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::MessageAttributeValue;
use chrono::Utc;
use engine::config::MailerKind;
use engine::domain::{
    EmailAddress, MessageBody, MessageKind, OutboundMessage, Priority, SendId, SendRecord, SendStatus,
};
use engine::mailer::SesV2Mailer;
use engine::queue::QueueRef;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::helpers::{spawn_app, spawn_app_with, test_settings, wait_for, ThrottleFirst};

#[tokio::test]
async fn a_reminder_posted_after_a_low_priority_backlog_is_sent_before_the_backlog_drains() {
    let mut settings = test_settings(MailerKind::DryRun);
    settings.sender.enabled = false; // build the backlog first, then start one worker
    settings.sender.workers = 1;
    settings.sender.concurrency = 2;
    let app = spawn_app(settings).await;

    let mut csv = String::from("email,subject,body,type\n");
    for i in 0..100 {
        csv.push_str(&format!(
            "{},Newsletter,Body,subscription\n",
            app.address_for(&format!("sub{i}"))
        ));
    }
    let report: serde_json::Value = app.upload_csv("backlog.csv", csv).await.json().await.unwrap();
    let batch_id = report["batchId"].as_str().unwrap().to_string();
    assert_eq!(app.batch_in_phase(&batch_id, "ENQUEUED").await["enqueued"], 100);

    let response = app
        .post_notification(json!({
            "type": "reminder",
            "recipient": app.address_for("urgent"),
            "subject": "Your appointment is tomorrow",
            "body": "See you at 9."
        }))
        .await;
    assert_eq!(response.status(), 202);
    let accepted: serde_json::Value = response.json().await.unwrap();
    assert_eq!(accepted["priority"], "high");
    let reminder: SendId = accepted["sendId"].as_str().unwrap().parse().unwrap();

    let shutdown = CancellationToken::new();
    let senders = tokio::spawn(engine::sender::run_senders(app.pipeline.clone(), shutdown.clone()));
    let reminder_record = app.wait_final(reminder, Duration::from_secs(60)).await;
    assert_eq!(reminder_record.status, SendStatus::Sent);
    wait_for(Duration::from_secs(120), "the backlog to drain", || async {
        (app.batch_counts(&batch_id).await.get("SENT") == Some(&100)).then_some(())
    })
    .await;
    shutdown.cancel();
    senders.await.unwrap();

    let mut low_sent_after = 0;
    let mut cursor: Option<String> = None;
    loop {
        let page = app
            .pipeline
            .store()
            .by_batch(batch_id.parse().unwrap(), None, 100, cursor.as_deref())
            .await
            .unwrap();
        low_sent_after += page
            .items
            .iter()
            .filter(|r| r.sent_at.unwrap() > reminder_record.sent_at.unwrap())
            .count();
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert!(
        low_sent_after >= 80,
        "the reminder jumped the queue: only {} of 100 backlog messages went before it",
        100 - low_sent_after
    );
    app.stop().await;
}

#[tokio::test]
async fn a_poison_message_reaches_the_dead_letter_queue_after_three_receives_and_ends_error() {
    let app = spawn_app(test_settings(MailerKind::DryRun)).await;
    let send_id = SendId::new();
    let now = Utc::now();
    app.pipeline
        .store()
        .put_pending(&[SendRecord {
            send_id,
            batch_id: None,
            kind: MessageKind::Offer,
            priority: Priority::Medium,
            recipient: app.address_for("poison"),
            subject: "s".into(),
            status: SendStatus::Pending,
            created_at: now,
            updated_at: now,
            sent_at: None,
            attempts: 0,
            provider_message_id: None,
            error_reason: None,
        }])
        .await
        .unwrap();
    let queue_url = app.pipeline.settings().resources.prefix.clone() + "-medium";
    let url = app
        .clients
        .sqs
        .get_queue_url()
        .queue_name(queue_url)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    app.clients
        .sqs
        .send_message()
        .queue_url(url)
        .message_body("{not a message")
        .message_attributes(
            "sendId",
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(send_id.to_string())
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let record = app.wait_final(send_id, Duration::from_secs(60)).await;
    assert_eq!(record.status, SendStatus::Error);
    assert!(record.error_reason.unwrap().contains("dead-letter"));
    let dlq = app.depth(QueueRef::DeadLetter(Priority::Medium)).await;
    assert_eq!(
        dlq.visible + dlq.in_flight,
        1,
        "the message stays in the DLQ for inspection: {dlq:?}"
    );
    let main = app.depth(QueueRef::Main(Priority::Medium)).await;
    assert_eq!(main.visible + main.in_flight, 0);
    assert_eq!(app.pipeline.metrics().counts(Priority::Medium).dead_lettered, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_redelivered_message_that_is_already_sent_is_deleted_without_a_second_send() {
    let app = spawn_app(test_settings(MailerKind::Sesv2)).await;
    let recipient = app.address_for("once");
    let send_id = app
        .notify(json!({ "type": "offer", "recipient": recipient, "subject": "20% off", "body": "Today only." }))
        .await;
    let record = app.wait_final(send_id, Duration::from_secs(30)).await;
    assert_eq!(record.status, SendStatus::Sent);

    // SQS is at-least-once: deliver the same message again.
    let duplicate = OutboundMessage {
        send_id,
        batch_id: None,
        kind: MessageKind::Offer,
        priority: Priority::Medium,
        recipient: EmailAddress::parse(&recipient).unwrap(),
        subject: "20% off".into(),
        body: MessageBody::Inline {
            text: "Today only.".into(),
        },
        attachment: None,
        accepted_at: record.created_at,
        copy_id: Default::default(),
    };
    let refused = app
        .pipeline
        .queues()
        .send_batch(Priority::Medium, &[duplicate])
        .await
        .unwrap();
    assert!(refused.is_empty());
    wait_for(Duration::from_secs(30), "the redelivery to be skipped", || async {
        (app.pipeline.metrics().redeliveries_skipped() == 1).then_some(())
    })
    .await;
    let main = app.depth(QueueRef::Main(Priority::Medium)).await;
    assert_eq!(main.visible + main.in_flight, 0, "the duplicate was deleted");
    let mail = app.sent_mail().await;
    assert_eq!(mail.iter().filter(|m| m.to.contains(&recipient)).count(), 1);
    assert_eq!(
        app.record(send_id).await.unwrap().attempts,
        1,
        "no second attempt was made"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_throttled_send_goes_back_to_its_queue_and_is_sent_on_a_later_receive() {
    let settings = test_settings(MailerKind::Sesv2);
    let app = spawn_app_with(settings, |app, clients| {
        let inner = Arc::new(SesV2Mailer::new(clients.sesv2.clone()));
        app.with_mailer(Arc::new(ThrottleFirst {
            remaining: AtomicU32::new(3),
            inner,
        }))
    })
    .await;
    let recipient = app.address_for("throttled");
    let send_id = app
        .notify(json!({ "type": "reminder", "recipient": recipient, "body": "Pay by Friday." }))
        .await;
    let record = app.wait_final(send_id, Duration::from_secs(60)).await;
    assert_eq!(
        record.status,
        SendStatus::Sent,
        "throttling is not an error: {record:?}"
    );
    assert_eq!(
        record.attempts, 4,
        "three throttled attempts, then the one that went through"
    );
    assert_eq!(app.pipeline.metrics().counts(Priority::High).retries, 3);
    assert_eq!(app.pipeline.metrics().counts(Priority::High).dead_lettered, 0);
    assert_eq!(app.sent_mail().await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn aborted_senders_stop_sending_at_once_and_a_restart_delivers_what_waited() {
    let mut settings = test_settings(MailerKind::DryRun);
    settings.sender.enabled = false;
    let app = spawn_app(settings).await;
    let post =
        |name: &'static str| app.notify(json!({ "type": "reminder", "recipient": app.address_for(name), "body": "b" }));
    let senders = tokio::spawn(engine::sender::run_senders(
        app.pipeline.clone(),
        CancellationToken::new(),
    ));
    let first = post("before-crash").await;
    assert_eq!(
        app.wait_final(first, Duration::from_secs(30)).await.status,
        SendStatus::Sent
    );

    senders.abort(); // a crash: no graceful shutdown
    let _ = senders.await;
    let second = post("during-crash").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        app.record(second).await.unwrap().status,
        SendStatus::Queued,
        "no worker survived the abort"
    );

    let shutdown = CancellationToken::new();
    let restarted = tokio::spawn(engine::sender::run_senders(app.pipeline.clone(), shutdown.clone()));
    assert_eq!(
        app.wait_final(second, Duration::from_secs(30)).await.status,
        SendStatus::Sent
    );
    shutdown.cancel();
    restarted.await.unwrap();
    app.stop().await;
}
