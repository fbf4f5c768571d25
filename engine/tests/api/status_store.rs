use chrono::Utc;
use engine::config::MailerKind;
use engine::domain::{MessageBody, MessageKind, OutboundMessage, Priority, SendId, SendRecord, SendStatus};

use crate::helpers::{spawn_app, test_settings};

fn pending(app: &crate::helpers::TestApp, name: &str) -> SendRecord {
    SendRecord::pending(&OutboundMessage {
        send_id: SendId::new(),
        batch_id: None,
        kind: MessageKind::Offer,
        priority: Priority::Medium,
        recipient: engine::domain::EmailAddress::parse(&app.address_for(name)).unwrap(),
        subject: "s".into(),
        body: MessageBody::Inline { text: "b".into() },
        attachment: None,
        accepted_at: Utc::now(),
        copy_id: Default::default(),
    })
}

#[tokio::test]
async fn a_late_queued_write_moves_pending_records_and_never_overwrites_a_final_one() {
    let mut settings = test_settings(MailerKind::DryRun);
    settings.sender.enabled = false;
    let app = spawn_app(settings).await;
    let store = &app.pipeline.store();
    let (fresh, finished) = (pending(&app, "fresh"), pending(&app, "finished"));
    store.put_pending(&[fresh.clone(), finished.clone()]).await.unwrap();
    // A fast sender got to one of them before the QUEUED write: it must stay SENT.
    assert!(store
        .mark_sent(finished.send_id, "provider-1", Utc::now())
        .await
        .unwrap());

    // The batched write is refused as a whole; each record is then written on its own.
    store.mark_queued(&[fresh.send_id, finished.send_id]).await.unwrap();

    assert_eq!(app.record(fresh.send_id).await.unwrap().status, SendStatus::Queued);
    let kept = app.record(finished.send_id).await.unwrap();
    assert_eq!(kept.status, SendStatus::Sent);
    assert_eq!(kept.provider_message_id.as_deref(), Some("provider-1"));

    // One record (a notification) is one conditional write, with the same guarantee.
    let (single, raced) = (pending(&app, "single"), pending(&app, "raced"));
    store.put_pending(&[single.clone(), raced.clone()]).await.unwrap();
    assert!(store.mark_sent(raced.send_id, "provider-2", Utc::now()).await.unwrap());
    store.mark_queued(&[single.send_id]).await.unwrap();
    store.mark_queued(&[raced.send_id]).await.unwrap();
    assert_eq!(app.record(single.send_id).await.unwrap().status, SendStatus::Queued);
    assert_eq!(app.record(raced.send_id).await.unwrap().status, SendStatus::Sent);
    app.stop().await;
}
