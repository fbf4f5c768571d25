use std::collections::HashSet;

use chrono::{Duration as ChronoDuration, Utc};
use engine::config::MailerKind;
use serde_json::Value;

use crate::helpers::{spawn_app, test_settings};

fn items(response: &Value) -> Vec<String> {
    response["data"]["emailSends"]["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {response}"))
        .iter()
        .map(|i| i["recipient"].as_str().unwrap().to_string())
        .collect()
}

fn end_cursor(response: &Value) -> Option<String> {
    response["data"]["emailSends"]["pageInfo"]["endCursor"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn graphql_pages_through_sends_by_status_and_date_range_and_by_batch() {
    let mut settings = test_settings(MailerKind::DryRun);
    settings.sender.enabled = false; // everything stays QUEUED, so the pages are deterministic
    let app = spawn_app(settings).await;
    let before = Utc::now() - ChronoDuration::seconds(5);
    let mut csv = String::from("email,subject,body\n");
    for i in 0..7 {
        csv.push_str(&format!("{},S,B\n", app.address_for(&format!("g{i}"))));
    }
    let report: Value = app.upload_csv("seven.csv", csv).await.json().await.unwrap();
    let batch_id = report["batchId"].as_str().unwrap().to_string();
    let after = Utc::now() + ChronoDuration::seconds(5);

    // By status and date range, three at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let after_arg = cursor.as_ref().map(|c| format!(", after: \"{c}\"")).unwrap_or_default();
        let query = format!(
            "{{ emailSends(status: QUEUED, from: \"{}\", to: \"{}\", first: 3{after_arg}) {{ items {{ recipient status }} pageInfo {{ hasNextPage endCursor }} }} }}",
            before.to_rfc3339(),
            after.to_rfc3339()
        );
        let response = app.graphql(&query).await;
        let page = items(&response);
        assert!(page.len() <= 3);
        seen.extend(page);
        pages += 1;
        cursor = end_cursor(&response);
        if cursor.is_none() || pages > 5 {
            break;
        }
    }
    assert_eq!(seen.len(), 7, "{seen:?}");
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        7,
        "no send appears twice across pages"
    );
    assert!(pages >= 3);

    // A range that excludes them finds none; another status finds none.
    let later = (Utc::now() + ChronoDuration::hours(1)).to_rfc3339();
    let response = app
        .graphql(&format!(
            "{{ emailSends(status: QUEUED, from: \"{later}\") {{ items {{ recipient }} }} }}"
        ))
        .await;
    assert!(items(&response).is_empty());
    let response = app
        .graphql("{ emailSends(status: SENT) { items { recipient } } }")
        .await;
    assert!(items(&response).is_empty());

    // By batch, five at a time.
    let response = app
        .graphql(&format!("{{ emailSends(batchId: \"{batch_id}\", first: 5) {{ items {{ recipient }} pageInfo {{ hasNextPage endCursor }} }} }}"))
        .await;
    assert_eq!(items(&response).len(), 5);
    assert_eq!(response["data"]["emailSends"]["pageInfo"]["hasNextPage"], true);
    let cursor = end_cursor(&response).unwrap();
    let response = app
        .graphql(&format!(
            "{{ emailSends(batchId: \"{batch_id}\", first: 5, after: \"{cursor}\") {{ items {{ recipient }} }} }}"
        ))
        .await;
    assert_eq!(items(&response).len(), 2);

    let response = app
        .graphql(&format!(
            "{{ batch(batchId: \"{batch_id}\") {{ total counts {{ status count }} }} }}"
        ))
        .await;
    assert_eq!(response["data"]["batch"]["total"], 7);
    assert_eq!(response["data"]["batch"]["counts"][0]["status"], "QUEUED");
    assert_eq!(response["data"]["batch"]["counts"][0]["count"], 7);
    app.stop().await;
}

#[tokio::test]
async fn graphql_refuses_oversized_pages_table_scans_and_foreign_cursors() {
    let mut settings = test_settings(MailerKind::DryRun);
    settings.sender.enabled = false;
    let app = spawn_app(settings).await;
    let cases = [
        (
            "{ emailSends(status: SENT, first: 101) { items { recipient } } }",
            "between 1 and 100",
        ),
        ("{ emailSends { items { recipient } } }", "scan"),
        (
            "{ emailSends(status: SENT, after: \"bm90LWEtY3Vyc29y\") { items { recipient } } }",
            "cursor",
        ),
        ("{ batch(batchId: \"not-a-uuid\") { total } }", "not a batch"),
    ];
    for (query, expected) in cases {
        let response = app.graphql(query).await;
        let message = response["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{query}: {response}");
    }
    let unknown = uuid::Uuid::new_v4();
    let response = app
        .graphql(&format!("{{ batch(batchId: \"{unknown}\") {{ total }} }}"))
        .await;
    assert!(response["data"]["batch"].is_null());
    app.stop().await;
}
