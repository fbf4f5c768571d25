use engine::config::MailerKind;
use engine::domain::{Priority, SendStatus};
use engine::queue::QueueRef;
use serde_json::json;

use crate::helpers::{spawn_app, test_settings};

#[tokio::test]
async fn requests_without_the_right_api_key_get_401_and_change_nothing() {
    let mut settings = test_settings(MailerKind::DryRun);
    settings.api.key = Some("s3cret-key".into());
    settings.sender.enabled = false;
    let app = spawn_app(settings).await;
    let csv = format!("email,subject,body\n{},S,B\n", app.address_for("k"));
    let notification = json!({ "type": "reminder", "recipient": app.address_for("k"), "body": "b" });

    for key in [None, Some("wrong-key!"), Some("s3cret-kez")] {
        let mut upload =
            app.http
                .post(format!("{}/campaigns/upload", app.address))
                .multipart(reqwest::multipart::Form::new().part(
                    "file",
                    reqwest::multipart::Part::bytes(csv.clone().into_bytes()).file_name("k.csv"),
                ));
        let mut notify = app
            .http
            .post(format!("{}/notifications", app.address))
            .json(&notification);
        let mut graphql = app
            .http
            .post(format!("{}/graphql", app.address))
            .json(&json!({ "query": "{ emailSends(status: SENT) { edges { node { recipient } } } }" }));
        if let Some(key) = key {
            upload = upload.header("x-api-key", key);
            notify = notify.header("x-api-key", key);
            graphql = graphql.header("x-api-key", key);
        }
        for request in [upload, notify, graphql] {
            assert_eq!(request.send().await.unwrap().status(), 401, "key {key:?}");
        }
    }
    for priority in Priority::ALL {
        let depth = app.depth(QueueRef::Main(priority)).await;
        assert_eq!(depth.visible, 0);
    }
    let page = app
        .pipeline
        .store()
        .by_status(
            SendStatus::Queued,
            chrono::DateTime::UNIX_EPOCH,
            chrono::Utc::now(),
            10,
            None,
        )
        .await
        .unwrap();
    assert!(page.items.is_empty(), "nothing was written");

    // Health and metrics stay open; the right key is let in.
    assert_eq!(
        app.http
            .get(format!("{}/health", app.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.http
            .get(format!("{}/metrics", app.address))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let response = app
        .http
        .post(format!("{}/notifications", app.address))
        .header("x-api-key", "s3cret-key")
        .json(&notification)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(app.depth(QueueRef::Main(Priority::High)).await.visible, 1);
    let metrics = app
        .http
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("courier_queue_messages{queue=\"high\",state=\"visible\"} 1\n"),
        "/metrics reports queue depths read from SQS: {metrics}"
    );
    // /stats serves the same figures as the typed reading the TUI draws.
    let stats: vocabulary::stats::Snapshot = app
        .http
        .get(format!("{}/stats", app.address))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats.accepted, 1);
    assert_eq!(stats.by_priority[Priority::High].enqueued, 1);
    assert_eq!(stats.depth(QueueRef::Main(Priority::High)), 1);
    app.stop().await;
}
