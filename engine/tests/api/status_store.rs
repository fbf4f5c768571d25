use chrono::Utc;
use engine::config::MailerKind;
use engine::domain::{CopyId, MessageBody, MessageKind, OutboundMessage, Priority, SendId, SendRecord, SendStatus};
use engine::faults::FaultPlan;
use engine::store::{Claim, Lease};

use crate::helpers::{spawn_app, spawn_app_with_faults, test_settings};

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
    // A plan with no faults: it only meters the calls.
    let plan = FaultPlan::new(1);
    let app = spawn_app_with_faults(settings, plan.clone()).await;
    let store = &app.pipeline.store();
    let records: Vec<SendRecord> = (0..10).map(|n| pending(&app, &format!("row{n}"))).collect();
    store.put_pending(&records).await.unwrap();
    // A fast sender got to two of them before the QUEUED write: they must stay SENT.
    for finished in [&records[3], &records[7]] {
        assert!(store
            .mark_sent(finished.send_id, "provider-1", Utc::now())
            .await
            .unwrap());
    }
    let calls = |operation: &str| plan.usage().get(operation).map_or(0, |usage| usage.calls);
    let updates_before = calls("DynamoDB.UpdateItem");

    // The batched write is cancelled by the two; DynamoDB says which, and the
    // other eight are written together again.
    let ids: Vec<SendId> = records.iter().map(|r| r.send_id).collect();
    store.mark_queued(&ids).await.unwrap();

    for (n, record) in records.iter().enumerate() {
        let kept = app.record(record.send_id).await.unwrap();
        match n {
            3 | 7 => {
                assert_eq!(kept.status, SendStatus::Sent);
                assert_eq!(kept.provider_message_id.as_deref(), Some("provider-1"));
            }
            _ => assert_eq!(kept.status, SendStatus::Queued, "row {n}"),
        }
    }
    assert_eq!(
        calls("DynamoDB.TransactWriteItems"),
        2,
        "the cancelled transaction and its retry"
    );
    assert_eq!(calls("DynamoDB.UpdateItem"), updates_before, "no single writes");

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

#[tokio::test]
async fn a_claim_holds_for_one_copy_and_a_resumed_chunk_rewrites_only_what_is_missing() {
    let mut settings = test_settings(MailerKind::DryRun);
    settings.sender.enabled = false;
    let app = spawn_app(settings).await;
    let store = &app.pipeline.store();
    let (claimed, sent, missing) = (
        pending(&app, "claimed"),
        pending(&app, "sent"),
        pending(&app, "missing"),
    );
    store.put_pending(&[claimed.clone(), sent.clone()]).await.unwrap();
    assert!(store.has_unfinished(None).await.unwrap());

    let lease = |seconds: i64| Lease {
        copy: CopyId::new(),
        until: Utc::now() + chrono::Duration::seconds(seconds),
    };
    let first = lease(30);
    let claim = store.begin_attempt(claimed.send_id, first).await.unwrap();
    assert_eq!(claim, Claim::Claimed { attempts: 1 });
    let second = lease(30);
    let claim = store.begin_attempt(claimed.send_id, second).await.unwrap();
    assert_eq!(claim, Claim::HeldByAnotherCopy, "a second copy waits for the first");
    let claim = store.begin_attempt(claimed.send_id, first).await.unwrap();
    assert_eq!(claim, Claim::Claimed { attempts: 2 }, "the same copy retries");
    // A lease that ran out (its holder died) is taken over.
    let expired = lease(-1);
    let claim = store.begin_attempt(sent.send_id, expired).await.unwrap();
    assert_eq!(claim, Claim::Claimed { attempts: 1 });
    let claim = store.begin_attempt(sent.send_id, lease(30)).await.unwrap();
    assert_eq!(claim, Claim::Claimed { attempts: 2 });
    assert!(store.mark_sent(sent.send_id, "provider-1", Utc::now()).await.unwrap());

    // The chunk is written again after a crash: only what is not final is
    // PENDING (to enqueue), and the SENT record is left as it is.
    let again = [claimed.clone(), sent.clone(), missing.clone()];
    let mut to_enqueue = store.put_pending_if_absent(&again).await.unwrap();
    to_enqueue.sort();
    let mut expected = vec![claimed.send_id, missing.send_id];
    expected.sort();
    assert_eq!(to_enqueue, expected);
    let kept = app.record(sent.send_id).await.unwrap();
    assert_eq!(kept.provider_message_id.as_deref(), Some("provider-1"));
    assert_eq!(app.record(claimed.send_id).await.unwrap().attempts, 2, "not rewritten");

    for record in [&claimed, &missing] {
        assert!(store.mark_error(record.send_id, "test").await.unwrap());
    }
    assert!(!store.has_unfinished(None).await.unwrap(), "every record is final");
    app.stop().await;
}
