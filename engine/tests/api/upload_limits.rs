use engine::config::MailerKind;
use serde_json::Value;

use crate::helpers::{spawn_app, test_settings, TestApp};

fn big_csv(app: &TestApp, rows: usize) -> String {
    let mut csv = String::from("email,subject,body\n");
    for i in 0..rows {
        csv.push_str(&format!(
            "{},Subject,{}\n",
            app.address_for(&format!("big{i}")),
            "x".repeat(80)
        ));
    }
    csv
}

#[tokio::test]
async fn an_upload_over_the_size_limit_is_refused_with_413_and_nothing_is_enqueued() {
    let mut settings = test_settings(MailerKind::DryRun);
    settings.api.max_upload_bytes = 4 * 1024;
    let app = spawn_app(settings).await;

    // Declared length over the limit: refused before the body is read.
    let response = app.upload_csv("big.csv", big_csv(&app, 200)).await;
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");

    // Streamed without a length: refused when the limit is crossed.
    let csv = big_csv(&app, 200).into_bytes();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = csv.chunks(512).map(|c| Ok(c.to_vec())).collect();
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .file_name("streamed.csv");
    let response = app
        .http
        .post(format!("{}/campaigns/upload", app.address))
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);

    app.assert_nothing_written("refused upload").await;
    app.stop().await;
}

#[tokio::test]
async fn malformed_csv_files_get_a_verdict_that_names_the_file_row_and_field() {
    let mut settings = test_settings(MailerKind::DryRun);
    settings.sender.enabled = false;
    let app = spawn_app(settings).await;

    let response = app.upload_csv("wrong-columns.csv", "mail,subject\nx,y\n").await;
    assert_eq!(response.status(), 422);
    let body: Value = response.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("wrong-columns.csv") && error.contains("email") && error.contains("body"),
        "{error}"
    );

    let response = app.upload_csv("empty.csv", "").await;
    assert_eq!(response.status(), 422);
    assert!(response.text().await.unwrap().contains("empty"));

    let response = app
        .http
        .post(format!("{}/campaigns/upload", app.address))
        .multipart(reqwest::multipart::Form::new().text("note", "no file here"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    app.assert_nothing_written("refused upload").await;

    // Row-level faults reject only their rows; the good row is still accepted.
    let mut csv = b"email,subject,body\n".to_vec();
    csv.extend_from_slice(format!("{},ok,fine\n", app.address_for("good")).as_bytes());
    csv.extend_from_slice(format!("{},bad,", app.address_for("utf8")).as_bytes());
    csv.extend_from_slice(b"\xff\xfe\n");
    csv.extend_from_slice(format!("{},too,many,fields\n", app.address_for("wide")).as_bytes());
    let response = app.upload_csv("mixed.csv", csv).await;
    assert_eq!(response.status(), 202);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["accepted"], 1);
    assert_eq!(report["rejectedRows"][0]["row"], 3);
    assert_eq!(report["rejectedRows"][0]["field"], "body");
    assert!(report["rejectedRows"][0]["reason"].as_str().unwrap().contains("UTF-8"));
    assert_eq!(report["rejectedRows"][1]["row"], 4);
    assert!(report["rejectedRows"][1]["reason"]
        .as_str()
        .unwrap()
        .contains("4 fields"));
    app.stop().await;
}
