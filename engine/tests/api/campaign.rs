use std::collections::HashMap;
use std::time::Duration;

use engine::config::MailerKind;
use serde_json::Value;

use crate::helpers::{spawn_app, test_settings, wait_for};

#[tokio::test]
async fn every_accepted_row_ends_sent_and_is_mailed_exactly_once_while_bad_rows_come_back_by_number() {
    let app = spawn_app(test_settings(MailerKind::Sesv2)).await;
    let mut csv = String::from("email,subject,body\r\n");
    let mut accepted = Vec::new();
    for i in 0..20 {
        let to = app.address_for(&format!("user{i}"));
        csv.push_str(&format!("{to},Hello {i},\"Dear user {i},\r\nwelcome.\"\r\n"));
        accepted.push(to);
    }
    csv.push_str(&format!("{},Again,dup\r\n", app.address_for("user3"))); // row 22: duplicate of row 5
    csv.push_str("not-an-address,S,B\r\n"); // row 23
    csv.push_str(&format!("{},,no subject\r\n", app.address_for("nosubject"))); // row 24
    csv.push_str(&format!("{},S\r\n", app.address_for("short"))); // row 25: two fields

    let response = app.upload_csv("campaign.csv", csv).await;
    assert_eq!(response.status(), 202);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["accepted"], 20);
    assert_eq!(report["phase"], "RECEIVED");
    assert_eq!(report["duplicates"], 1);
    assert_eq!(report["rejected"], 3);
    assert_eq!(report["duplicateRows"][0]["row"], 22);
    assert_eq!(report["duplicateRows"][0]["duplicateOfRow"], 5);
    let rejected: Vec<(u64, String)> = report["rejectedRows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["row"].as_u64().unwrap(),
                r["field"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        vec![(23, "email".into()), (24, "subject".into()), (25, "".into())]
    );

    let batch_id = report["batchId"].as_str().unwrap().to_string();
    let batch = app.batch_in_phase(&batch_id, "DONE").await;
    assert_eq!(
        (batch["rows"].as_u64(), batch["rowsRead"].as_u64()),
        (Some(24), Some(24))
    );
    assert_eq!(batch["enqueued"], 20);
    assert!(batch["finishedAt"].is_string());
    let counts = wait_for(Duration::from_secs(60), "all 20 rows to be SENT", || async {
        let counts = app.batch_counts(&batch_id).await;
        (counts.get("SENT") == Some(&20)).then_some(counts)
    })
    .await;
    assert_eq!(
        counts.values().sum::<u64>(),
        20,
        "only accepted rows have records: {counts:?}"
    );

    let mail = app.sent_mail().await;
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for email in &mail {
        for to in &email.to {
            *per_recipient.entry(to.clone()).or_default() += 1;
        }
    }
    for to in &accepted {
        assert_eq!(per_recipient.get(to), Some(&1), "{to} is mailed exactly once");
    }
    assert_eq!(per_recipient.len(), 20, "nobody else was mailed: {per_recipient:?}");
    app.stop().await;
}
