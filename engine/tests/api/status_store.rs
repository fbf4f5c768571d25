use chrono::Utc;
use engine::config::MailerKind;
use engine::domain::{
    BatchId, CopyId, MessageBody, MessageKind, OutboundMessage, Priority, SendId, SendRecord, SendStatus,
};
use engine::faults::FaultPlan;
use engine::store::{Claim, Lease};

use crate::helpers::{spawn_app, spawn_app_with_faults, test_settings};

fn pending(app: &crate::helpers::TestApp, name: &str) -> SendRecord {
    in_batch(app, name, None, Utc::now())
}

fn in_batch(
    app: &crate::helpers::TestApp,
    name: &str,
    batch_id: Option<BatchId>,
    accepted_at: chrono::DateTime<Utc>,
) -> SendRecord {
    SendRecord::pending(&OutboundMessage {
        send_id: SendId::new(),
        batch_id,
        kind: MessageKind::Offer,
        priority: Priority::Medium,
        recipient: engine::domain::EmailAddress::parse(&app.address_for(name)).unwrap(),
        subject: "s".into(),
        body: MessageBody::Inline { text: "b".into() },
        attachment: None,
        accepted_at,
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
    assert!(store.has_unfinished().await.unwrap());

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
    assert!(!store.has_unfinished().await.unwrap(), "every record is final");
    app.stop().await;
}

#[tokio::test]
async fn a_batch_is_looked_at_from_its_oldest_unfinished_record_and_another_batchs_backlog_costs_it_nothing() {
    let mut settings = test_settings(MailerKind::DryRun);
    settings.sender.enabled = false;
    let plan = FaultPlan::new(1);
    let app = spawn_app_with_faults(settings, plan.clone()).await;
    let store = &app.pipeline.store();
    let start = Utc::now() - chrono::Duration::hours(1);
    let at = |ms: i64| start + chrono::Duration::milliseconds(ms);
    // Another campaign's backlog, all accepted before ours and all PENDING:
    // more than a page of the status index.
    let theirs = BatchId::new();
    let backlog: Vec<SendRecord> = (0..250)
        .map(|n| in_batch(&app, &format!("theirs{n}"), Some(theirs), at(n)))
        .collect();
    let ours = BatchId::new();
    let rows: Vec<SendRecord> = (0..5)
        .map(|n| in_batch(&app, &format!("ours{n}"), Some(ours), at(1_000 + n)))
        .collect();
    store.put_pending(&backlog).await.unwrap();
    store.put_pending(&rows).await.unwrap();
    let ids: Vec<SendId> = rows.iter().map(|r| r.send_id).collect();
    store.mark_queued(&ids).await.unwrap();
    for row in &rows[..2] {
        assert!(store.mark_sent(row.send_id, "provider", Utc::now()).await.unwrap());
    }
    assert!(store.mark_error(rows[2].send_id, "test").await.unwrap());
    let created = |record: &SendRecord| engine::store::timestamp(record.created_at);
    let queries = || plan.usage().get("DynamoDB.Query").map_or(0, |usage| usage.calls);

    let before = queries();
    let oldest = store
        .unfinished_since(ours, None)
        .await
        .unwrap()
        .expect("two rows are QUEUED");
    assert_eq!(engine::store::timestamp(oldest), created(&rows[3]));
    assert_eq!(
        queries() - before,
        1,
        "one read, though 250 older records of another batch are PENDING"
    );

    assert!(store.mark_sent(rows[3].send_id, "provider", Utc::now()).await.unwrap());
    let next = store
        .unfinished_since(ours, Some(oldest))
        .await
        .unwrap()
        .expect("one row is QUEUED");
    assert_eq!(engine::store::timestamp(next), created(&rows[4]));

    assert!(store.mark_error(rows[4].send_id, "test").await.unwrap());
    assert_eq!(store.unfinished_since(ours, Some(next)).await.unwrap(), None);
    assert_eq!(
        store.unfinished_since(ours, None).await.unwrap(),
        None,
        "every row is final"
    );
    let theirs_oldest = store
        .unfinished_since(theirs, None)
        .await
        .unwrap()
        .expect("their backlog is left");
    assert_eq!(engine::store::timestamp(theirs_oldest), created(&backlog[0]));
    app.stop().await;
}
