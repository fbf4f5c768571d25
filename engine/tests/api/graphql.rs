use std::collections::HashSet;

use chrono::{Duration as ChronoDuration, Utc};
use engine::config::MailerKind;
use serde_json::Value;

use crate::helpers::{spawn_app, test_settings};

fn items(response: &Value) -> Vec<String> {
    response["data"]["emailSends"]["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no edges in {response}"))
        .iter()
        .map(|e| e["node"]["recipient"].as_str().unwrap().to_string())
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
    app.batch_in_phase(&batch_id, "ENQUEUED").await;
    let after = Utc::now() + ChronoDuration::seconds(5);

    // By status and date range, three at a time.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let after_arg = cursor.as_ref().map(|c| format!(", after: \"{c}\"")).unwrap_or_default();
        let query = format!(
            "{{ emailSends(status: QUEUED, from: \"{}\", to: \"{}\", first: 3{after_arg}) {{ edges {{ node {{ recipient status }} }} pageInfo {{ hasNextPage endCursor }} }} }}",
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
            "{{ emailSends(status: QUEUED, from: \"{later}\") {{ edges {{ node {{ recipient }} }} }} }}"
        ))
        .await;
    assert!(items(&response).is_empty());
    let response = app
        .graphql("{ emailSends(status: SENT) { edges { node { recipient } } } }")
        .await;
    assert!(items(&response).is_empty());

    // By batch, five at a time.
    let response = app
        .graphql(&format!("{{ emailSends(batchId: \"{batch_id}\", first: 5) {{ edges {{ node {{ recipient }} }} pageInfo {{ hasNextPage endCursor }} }} }}"))
        .await;
    assert_eq!(items(&response).len(), 5);
    assert_eq!(response["data"]["emailSends"]["pageInfo"]["hasNextPage"], true);
    let cursor = end_cursor(&response).unwrap();
    let response = app
        .graphql(&format!(
            "{{ emailSends(batchId: \"{batch_id}\", first: 5, after: \"{cursor}\") {{ edges {{ node {{ recipient }} }} }} }}"
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
            "{ emailSends(status: SENT, first: 101) { edges { node { recipient } } } }",
            "between 1 and 100",
        ),
        ("{ emailSends { edges { node { recipient } } } }", "scan"),
        (
            "{ emailSends(status: SENT, after: \"bm90LWEtY3Vyc29y\") { edges { node { recipient } } } }",
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

#[tokio::test]
async fn a_relay_client_pages_through_a_batch_of_250_with_edges_and_cursors() {
    let mut settings = test_settings(MailerKind::DryRun);
    settings.sender.enabled = false;
    let app = spawn_app(settings).await;
    let mut csv = String::from("email,subject,body\n");
    let mut expected = HashSet::new();
    for i in 0..250 {
        let to = app.address_for(&format!("relay{i}"));
        csv.push_str(&format!("{to},S{i},B\n"));
        expected.insert(to);
    }
    let report: Value = app.upload_csv("relay.csv", csv).await.json().await.unwrap();
    let batch_id = report["batchId"].as_str().unwrap().to_string();
    app.batch_in_phase(&batch_id, "ENQUEUED").await;

    // What Relay's and Apollo's pagination helpers send: first/after, reading
    // edges { cursor node } and pageInfo { hasNextPage endCursor }.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let after_arg = after.as_ref().map(|c| format!(", after: \"{c}\"")).unwrap_or_default();
        let response = app
            .graphql(&format!(
                "{{ emailSends(batchId: \"{batch_id}\", first: 100{after_arg}) {{ edges {{ cursor node {{ recipient }} }} pageInfo {{ hasNextPage hasPreviousPage endCursor }} }} }}"
            ))
            .await;
        let connection = &response["data"]["emailSends"];
        let edges = connection["edges"].as_array().unwrap_or_else(|| panic!("{response}"));
        assert!(edges
            .iter()
            .all(|e| e["cursor"].as_str().is_some_and(|c| !c.is_empty())));
        if let Some(last) = edges.last() {
            assert_eq!(
                connection["pageInfo"]["endCursor"], last["cursor"],
                "endCursor is the last edge's"
            );
        }
        assert_eq!(connection["pageInfo"]["hasPreviousPage"], after.is_some());
        seen.extend(items(&response));
        pages += 1;
        if connection["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = connection["pageInfo"]["endCursor"].as_str().map(str::to_string);
        assert!(pages < 10, "paging ends");
    }
    assert_eq!(seen.len(), 250, "every send once, none twice");
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), expected);
    assert!((3..=4).contains(&pages), "{pages} pages of 100");

    // A cursor taken from the middle of a page resumes right after its edge.
    let first_page = app
        .graphql(&format!(
            "{{ emailSends(batchId: \"{batch_id}\", first: 10) {{ edges {{ cursor node {{ recipient }} }} }} }}"
        ))
        .await;
    let fifth = first_page["data"]["emailSends"]["edges"][4]["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    let resumed = app
        .graphql(&format!("{{ emailSends(batchId: \"{batch_id}\", first: 2, after: \"{fifth}\") {{ edges {{ node {{ recipient }} }} }} }}"))
        .await;
    assert_eq!(
        items(&resumed)[0],
        first_page["data"]["emailSends"]["edges"][5]["node"]["recipient"]
            .as_str()
            .unwrap()
    );
    app.stop().await;
}

#[tokio::test]
async fn the_seed_systems_query_runs_with_only_the_connection_wrapper_added() {
    let mut settings = test_settings(MailerKind::DryRun);
    settings.sender.enabled = false;
    let app = spawn_app(settings).await;
    let to = app.address_for("seed");
    let report: Value = app
        .upload_csv("seed.csv", format!("email,subject,body\n{to},Hello,B\n"))
        .await
        .json()
        .await
        .unwrap();
    app.batch_in_phase(report["batchId"].as_str().unwrap(), "ENQUEUED")
        .await;
    // Seed 001's clients send the status as a string and name these fields.
    let response = app
        .graphql(
            r#"{ emailSends(status: "QUEUED") { edges { node { sendId batchId email subject status createdAt } } } }"#,
        )
        .await;
    let node = &response["data"]["emailSends"]["edges"][0]["node"];
    assert_eq!(node["email"], to.as_str(), "{response}");
    assert_eq!(node["status"], "QUEUED");
    assert_eq!(node["subject"], "Hello");
    assert!(node["sendId"].is_string() && node["batchId"].is_string() && node["createdAt"].is_string());
    let refused = app
        .graphql(r#"{ emailSends(status: "LOST") { edges { cursor } } }"#)
        .await;
    assert!(
        refused["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not a status"),
        "{refused}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_batch_filtered_by_status_fills_its_page_even_when_the_matches_come_last() {
    let mut settings = test_settings(MailerKind::DryRun);
    settings.sender.enabled = false;
    let app = spawn_app(settings).await;
    let mut csv = String::from("email,subject,body\n");
    for i in 0..30 {
        csv.push_str(&format!("{},S,B\n", app.address_for(&format!("f{i}"))));
    }
    let report: Value = app.upload_csv("filtered.csv", csv).await.json().await.unwrap();
    let batch_id = report["batchId"].as_str().unwrap().to_string();
    app.batch_in_phase(&batch_id, "ENQUEUED").await;
    // The last three in the index's order become SENT; the rest stay QUEUED.
    let all = app
        .pipeline
        .store()
        .by_batch(batch_id.parse().unwrap(), None, 30, None)
        .await
        .unwrap();
    for record in &all.items[27..] {
        app.pipeline
            .store()
            .mark_sent(record.send_id, "p", Utc::now())
            .await
            .unwrap();
    }
    let query = |after: Option<&str>| {
        let after = after.map(|c| format!(", after: \"{c}\"")).unwrap_or_default();
        format!("{{ emailSends(batchId: \"{batch_id}\", status: SENT, first: 2{after}) {{ edges {{ node {{ recipient }} }} pageInfo {{ hasNextPage endCursor }} }} }}")
    };
    let first = app.graphql(&query(None)).await;
    assert_eq!(items(&first).len(), 2, "{first}");
    let cursor = end_cursor(&first).expect("a cursor to go on from");
    let second = app.graphql(&query(Some(&cursor))).await;
    assert_eq!(items(&second).len(), 1, "{second}");
    let mut seen = items(&first);
    seen.extend(items(&second));
    let expected: HashSet<String> = all.items[27..].iter().map(|r| r.recipient.clone()).collect();
    assert_eq!(seen.into_iter().collect::<HashSet<_>>(), expected);
    app.stop().await;
}
