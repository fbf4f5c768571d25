//! The engine tried as an attacker and a careless user would: one test per
//! class of hostile input, each asserting the status, the message, and what
//! was (or was not) written — records, queue depths, S3 objects, sent mail.

use std::time::{Duration, Instant};

use engine::config::MailerKind;
use engine::domain::SendStatus;
use engine::faults::{FaultEffect, FaultPlan, FaultTarget};
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{spawn_app, spawn_app_with_faults, test_settings, wait_for, TestApp};

fn quiet_settings() -> engine::config::Settings {
    let mut settings = test_settings(MailerKind::DryRun);
    settings.sender.enabled = false;
    settings
}

fn csv_part(name: &str, csv: impl Into<Vec<u8>>) -> Part {
    Part::bytes(csv.into()).file_name(name.to_string())
}

async fn error_of(response: reqwest::Response, status: u16) -> String {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
        .to_string()
}

/// The raw MIME text sent to `to`.
async fn mail_to(app: &TestApp, to: &str) -> String {
    let mail = app.sent_mail().await;
    let sent: Vec<_> = mail.iter().filter(|m| m.to.iter().any(|t| t == to)).collect();
    assert_eq!(sent.len(), 1, "{to} is mailed once");
    sent[0].raw.clone().expect("a message with an attachment is sent raw")
}

#[tokio::test]
async fn attachments_whose_names_sanitize_alike_each_reach_their_own_recipient() {
    let app = spawn_app(test_settings(MailerKind::Sesv2)).await;
    let (mueller, moeller) = (app.address_for("mueller"), app.address_for("moeller"));
    let csv = format!(
        "email,subject,body,attachment\n{mueller},Invoice,Hi,Rechnung_Müller.pdf\n{moeller},Invoice,Hi,Rechnung_Möller.pdf\n"
    );
    let form = Form::new()
        .part("file", csv_part("invoices.csv", csv))
        .part(
            "a",
            Part::bytes(b"MUELLER-INVOICE".to_vec()).file_name("Rechnung_Müller.pdf"),
        )
        .part(
            "b",
            Part::bytes(b"MOELLER-INVOICE".to_vec()).file_name("Rechnung_Möller.pdf"),
        );
    let response = app.upload_form(form).await;
    assert_eq!(response.status(), 202);
    let report: Value = response.json().await.unwrap();
    let batch = report["batchId"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(60), "both invoices SENT", || async {
        (app.batch_counts(&batch).await.get("SENT") == Some(&2)).then_some(())
    })
    .await;
    // Short ASCII attachments travel as 7-bit text in the MIME message.
    let to_mueller = mail_to(&app, &mueller).await;
    let to_moeller = mail_to(&app, &moeller).await;
    assert!(
        to_mueller.contains("MUELLER-INVOICE") && !to_mueller.contains("MOELLER-INVOICE"),
        "{to_mueller}"
    );
    assert!(
        to_moeller.contains("MOELLER-INVOICE") && !to_moeller.contains("MUELLER-INVOICE"),
        "{to_moeller}"
    );
    app.stop().await;
}

#[tokio::test]
async fn two_attachment_parts_with_one_name_are_refused_and_nothing_is_written() {
    let app = spawn_app(quiet_settings()).await;
    let csv = format!("email,subject,body,attachment\n{},S,B,a.txt\n", app.address_for("twin"));
    let form = Form::new()
        .part("file", csv_part("twins.csv", csv))
        .part("x", Part::bytes(b"one".to_vec()).file_name("a.txt"))
        .part("y", Part::bytes(b"two".to_vec()).file_name("a.txt"));
    let error = error_of(app.upload_form(form).await, 400).await;
    assert!(error.contains("both named `a.txt`"), "{error}");
    app.assert_nothing_written("twin attachments").await;
    app.stop().await;
}

#[tokio::test]
async fn an_unterminated_quote_refuses_the_file_naming_its_row_and_field_and_mails_nobody() {
    let mut settings = test_settings(MailerKind::DryRun);
    settings.sender.enabled = true;
    let app = spawn_app(settings).await;
    let csv = format!(
        "email,subject,body\n{},S,\"oops\n{},S,B3\n{},S,B4\n",
        app.address_for("r2"),
        app.address_for("r3"),
        app.address_for("r4")
    );
    let error = error_of(app.upload_csv("quote.csv", csv).await, 422).await;
    assert!(
        error.contains("quote.csv")
            && error.contains("row 2")
            && error.contains("`body`")
            && error.contains("never closed"),
        "{error}"
    );
    app.assert_nothing_written("unterminated quote").await;
    app.stop().await;
}

#[tokio::test]
async fn bodies_are_sized_as_sqs_counts_them_and_characters_it_refuses_are_rejected_by_row() {
    let app = spawn_app(test_settings(MailerKind::DryRun)).await;
    let mut csv = String::from("email,subject,body\n");
    // Ten 150 KB bodies, each under the inline limit, 1.5 MB together.
    for i in 0..10 {
        csv.push_str(&format!(
            "{},Big {i},{}\n",
            app.address_for(&format!("big{i}")),
            "y".repeat(150_000)
        ));
    }
    // 199 KB that escaping would have blown up to 1.2 MB: now refused by row.
    csv.push_str(&format!("{},Ctl,{}\n", app.address_for("ctl"), "\u{1}".repeat(199_000)));
    csv.push_str(&format!("{},Odd \u{FFFF},B\n", app.address_for("ffff")));
    // Quotes and backslashes double when encoded: the body goes to S3 if it must.
    csv.push_str(&format!(
        "{},Esc,\"{}\"\n",
        app.address_for("esc"),
        "\"\"\\".repeat(70_000)
    ));
    let response = app.upload_csv("sizes.csv", csv).await;
    assert_eq!(response.status(), 202);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["accepted"], 11, "{}", report["rejectedRows"]);
    let batch = app
        .batch_in_phase(report["batchId"].as_str().unwrap(), "ENQUEUED")
        .await;
    assert_eq!(batch["enqueued"], 11);
    assert_eq!(batch["failedToEnqueue"], 0);
    let rejected: Vec<(u64, &str)> = report["rejectedRows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["row"].as_u64().unwrap(), r["field"].as_str().unwrap()))
        .collect();
    assert_eq!(rejected, [(12, "body"), (13, "subject")]);
    assert!(report["rejectedRows"][0]["reason"].as_str().unwrap().contains("U+0001"));
    let batch = report["batchId"].as_str().unwrap().to_string();
    let counts = wait_for(Duration::from_secs(90), "all 11 SENT", || async {
        let counts = app.batch_counts(&batch).await;
        (counts.get("SENT") == Some(&11)).then_some(counts)
    })
    .await;
    assert_eq!(counts.get("ERROR"), None, "{counts:?}");
    app.stop().await;
}

#[tokio::test]
async fn a_notification_sqs_will_not_take_is_a_503_that_leaves_no_record() {
    let plan = FaultPlan::new(3);
    let app = spawn_app_with_faults(quiet_settings(), plan.clone()).await;
    plan.activate("sqs_down", FaultTarget::SqsSend, 1.0, FaultEffect::ServerError);
    let response = app
        .post_notification(json!({ "type": "reminder", "recipient": app.address_for("n503"), "body": "b" }))
        .await;
    let error = error_of(response, 503).await;
    assert!(error.contains("nothing was recorded"), "{error}");
    plan.clear();
    app.assert_nothing_written("notification refused by SQS").await;
    app.stop().await;
}

#[tokio::test]
async fn notifications_follow_the_csv_field_rules_with_a_4xx_naming_the_field() {
    let app = spawn_app(quiet_settings()).await;
    let to = app.address_for("rules");
    let cases = [
        (
            json!({ "type": "offer", "recipient": to, "subject": "x".repeat(999), "body": "b" }),
            "subject",
            "999 characters",
        ),
        (
            json!({ "type": "offer", "recipient": to, "subject": "s".repeat(500_000), "body": "b" }),
            "subject",
            "500000 characters",
        ),
        (
            json!({ "type": "offer", "recipient": to, "subject": "nul\u{0}", "body": "b" }),
            "subject",
            "U+0000",
        ),
        (
            json!({ "type": "offer", "recipient": to, "subject": "S", "body": "b\u{FFFF}" }),
            "body",
            "U+FFFF",
        ),
        (
            json!({ "type": "offer", "recipient": to, "subject": "S", "body": "b\u{7}" }),
            "body",
            "U+0007",
        ),
    ];
    for (request, field, words) in cases {
        let response = app.post_notification(request).await;
        assert_eq!(response.status(), 422, "{field} {words}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["details"]["field"], field);
        assert!(body["error"].as_str().unwrap().contains(words), "{body}");
    }
    let huge = json!({ "type": "offer", "recipient": to, "body": "b".repeat(2 * 1024 * 1024) });
    assert_eq!(app.post_notification(huge).await.status(), 413);
    app.assert_nothing_written("notification field rules").await;
    app.stop().await;
}

/// Sends a whole upload on a raw socket and hangs up without reading the answer.
async fn upload_and_hang_up(app: &TestApp, csv: &str) {
    let boundary = "courier-hangs-up";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"gone.csv\"\r\nContent-Type: text/csv\r\n\r\n{csv}\r\n--{boundary}--\r\n"
    );
    let host = app.address.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(host).await.unwrap();
    let head = format!(
        "POST /campaigns/upload HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    socket.write_all(body.as_bytes()).await.unwrap();
    socket.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    drop(socket);
}

#[tokio::test]
async fn a_client_that_hangs_up_mid_upload_strands_nothing() {
    let app = spawn_app(test_settings(MailerKind::DryRun)).await;
    let mut csv = String::from("email,subject,body\n");
    for i in 0..2_000 {
        csv.push_str(&format!("{},S,B\n", app.address_for(&format!("h{i}"))));
    }
    upload_and_hang_up(&app, &csv).await;
    let sent = wait_for(Duration::from_secs(120), "every row SENT, none PENDING", || async {
        let pending = app.with_status(SendStatus::Pending, 1).await;
        let counts = batch_counts_of_only_batch(&app).await?;
        (pending.is_empty() && counts.get("SENT") == Some(&2_000)).then_some(counts)
    })
    .await;
    assert_eq!(sent.values().sum::<u64>(), 2_000, "{sent:?}");
    app.stop().await;
}

/// The counts of the one batch this app has accepted, found from its records.
async fn batch_counts_of_only_batch(app: &TestApp) -> Option<std::collections::BTreeMap<String, u64>> {
    let any = app.records().await.into_iter().next()?;
    Some(app.batch_counts(&any.batch_id?.to_string()).await)
}

#[tokio::test]
async fn graphql_has_a_body_limit_and_takes_only_json() {
    let app = spawn_app(quiet_settings()).await;
    let url = format!("{}/graphql", app.address);
    let padding = " ".repeat(200 * 1024);
    let big = json!({ "query": format!("{{ __typename {padding} }}") });
    let response = app.http.post(&url).json(&big).send().await.unwrap();
    assert_eq!(response.status(), 413);
    let form = Form::new()
        .text("operations", "{}")
        .part("0", Part::bytes(vec![0u8; 1024]).file_name("f"));
    let response = app.http.post(&url).multipart(form).send().await.unwrap();
    assert_eq!(response.status(), 415, "multipart is not a GraphQL body here");
    app.stop().await;
}

#[tokio::test]
async fn aliases_cannot_multiply_a_query_past_its_complexity() {
    let app = spawn_app(quiet_settings()).await;
    let aliases = |n: usize| -> String {
        (0..n)
            .map(|i| {
                format!(
                    "a{i}: emailSends(status: SENT, first: 100) {{ edges {{ node {{ sendId recipient subject }} }} }} "
                )
            })
            .collect()
    };
    // The 2,000-alias query of the report is over the body limit already.
    let response = app
        .http
        .post(format!("{}/graphql", app.address))
        .json(&json!({ "query": format!("{{ {} }}", aliases(2_000)) }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    // Fifty fit in the body; their cost does not fit the complexity limit.
    let response = app.graphql(&format!("{{ {} }}", aliases(50))).await;
    let message = response["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("complex"), "{response}");
    assert!(response["data"].is_null());
    // One honest page still fits.
    let page = app
        .graphql("{ emailSends(status: SENT, first: 100) { edges { node { sendId recipient subject status } } } }")
        .await;
    assert!(page["errors"].is_null(), "{page}");
    app.stop().await;
}

#[tokio::test]
async fn a_header_of_100000_columns_is_refused_at_once_and_health_keeps_answering() {
    let app = spawn_app(quiet_settings()).await;
    let header: String = (0..100_000).map(|i| format!("c{i},")).collect::<String>() + "email,subject,body\n";
    let started = Instant::now();
    let upload = app.upload_csv("wide.csv", header);
    let health = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        app.http
            .get(format!("{}/health", app.address))
            .send()
            .await
            .unwrap()
            .status()
    };
    let (response, health) = tokio::join!(upload, health);
    assert_eq!(health, 200);
    let error = error_of(response, 422).await;
    assert!(error.contains("more than 64 columns"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    app.assert_nothing_written("wide header").await;
    app.stop().await;
}

#[tokio::test]
async fn a_file_of_mostly_bad_rows_gets_a_bounded_answer_and_graphql_pages_the_rest() {
    let app = spawn_app(quiet_settings()).await;
    let mut csv = format!("email,subject,body\n{},S,B\n", app.address_for("only-good"));
    csv.push_str(&format!("{},S,B\n", "x".repeat(100_000))); // row 3: a 100 KB "address"
    csv.push_str(&",,\n".repeat(149)); // rows 4-152
    let response = app.upload_csv("mostly-bad.csv", csv).await;
    assert_eq!(response.status(), 202);
    let text = response.text().await.unwrap();
    assert!(text.len() < 40_000, "the answer is {} bytes", text.len());
    let report: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["rejected"], 150);
    assert_eq!(report["rejectedRows"].as_array().unwrap().len(), 100);
    assert!(report["moreRows"]
        .as_str()
        .unwrap()
        .contains("rejectedRows(first, after)"));
    assert!(report["rejectedRows"][0]["reason"]
        .as_str()
        .unwrap()
        .contains("(100000 bytes)"));

    let batch = report["batchId"].as_str().unwrap();
    let page = app
        .graphql(&format!(
            "{{ batch(batchId: \"{batch}\") {{ fileName accepted rejected rejectedRows(first: 100, after: 100) {{ items {{ row field }} next }} }} }}"
        ))
        .await;
    let batch_view = &page["data"]["batch"];
    assert_eq!(batch_view["fileName"], "mostly-bad.csv", "{page}");
    assert_eq!(batch_view["rejected"], 150);
    let rows = batch_view["rejectedRows"]["items"].as_array().unwrap();
    assert_eq!(rows.len(), 50);
    assert_eq!(rows[49]["row"], 152);
    assert!(batch_view["rejectedRows"]["next"].is_null());

    let mut csv = String::from("email,subject,body\n");
    csv.push_str(&",,\n".repeat(100_001));
    let error = error_of(app.upload_csv("all-bad.csv", csv).await, 422).await;
    assert!(error.contains("more than 100000 rows were rejected"), "{error}");
    app.stop().await;
}

#[tokio::test]
async fn only_what_a_batch_uses_is_stored_and_a_batch_id_given_out_resolves_at_once() {
    let app = spawn_app(quiet_settings()).await;
    let csv = format!(
        "email,subject,body,attachment\n{},S,B,used.txt\n",
        app.address_for("uses")
    );
    let mut form = Form::new().part("file", csv_part("orphans.csv", csv));
    for name in ["used.txt", "spare1.txt", "spare2.txt"] {
        form = form.part(
            name.to_string(),
            Part::bytes(name.as_bytes().to_vec()).file_name(name.to_string()),
        );
    }
    let response = app.upload_form(form).await;
    assert_eq!(response.status(), 202);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["unusedAttachments"], json!(["spare1.txt", "spare2.txt"]));
    let mut keys = app.s3_keys().await;
    keys.sort();
    assert_eq!(keys.len(), 3, "archive, report and the one attachment used: {keys:?}");
    assert!(keys.iter().any(|k| k.ends_with("/used.txt")));
    let batch = report["batchId"].as_str().unwrap();
    let view = app
        .graphql(&format!(
            "{{ batch(batchId: \"{batch}\") {{ fileName accepted total }} }}"
        ))
        .await;
    assert_eq!(view["data"]["batch"]["accepted"], 1, "{view}");

    let header_only = app.upload_csv("header-only.csv", "email,subject,body\n").await;
    let error = error_of(header_only, 422).await;
    assert!(
        error.contains("header-only.csv") && error.contains("no row can be sent"),
        "{error}"
    );
    assert_eq!(app.s3_keys().await.len(), 3, "the refused file stored nothing");
    app.stop().await;
}

#[tokio::test]
async fn slow_clients_are_cut_off_by_the_header_and_body_timeouts() {
    let mut settings = quiet_settings();
    settings.server.header_read_timeout_secs = 1;
    settings.server.body_read_timeout_secs = 1;
    let app = spawn_app(settings).await;
    let host = app.address.trim_start_matches("http://").to_string();

    // A header that never ends: the connection is closed.
    let mut slow = tokio::net::TcpStream::connect(&host).await.unwrap();
    slow.write_all(b"POST /notifications HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server closed the connection within the timeout");

    // A body that stalls: answered 408.
    let mut stalled = tokio::net::TcpStream::connect(&host).await.unwrap();
    stalled
        .write_all(b"POST /notifications HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"type\":")
        .await
        .unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut answer))
        .await
        .expect("answered within the timeout")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    app.assert_nothing_written("slow clients").await;
    app.stop().await;
}

#[tokio::test]
async fn a_crafted_cursor_is_refused_without_the_stores_internals() {
    let app = spawn_app(quiet_settings()).await;
    use base64::Engine as _;
    let crafted = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sendId":"x","nope":"y"}"#);
    let response = app
        .graphql(&format!(
            "{{ emailSends(status: SENT, after: \"{crafted}\") {{ edges {{ node {{ sendId }} }} }} }}"
        ))
        .await;
    let message = response["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("is not a cursor this API gave out"), "{message}");
    assert!(
        !message.to_lowercase().contains("dynamodb") && !message.contains("ValidationException"),
        "{message}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_non_utf8_api_key_is_told_it_is_wrong() {
    let mut settings = quiet_settings();
    settings.api.key = Some("s3cret".into());
    let app = spawn_app(settings).await;
    let key = reqwest::header::HeaderValue::from_bytes(b"s3cr\xe9t").unwrap();
    let response = app
        .http
        .post(format!("{}/notifications", app.address))
        .header("x-api-key", key)
        .json(&json!({ "type": "reminder", "recipient": app.address_for("k"), "body": "b" }))
        .send()
        .await
        .unwrap();
    let error = error_of(response, 401).await;
    assert_eq!(error, "the x-api-key header is wrong");
    app.stop().await;
}
