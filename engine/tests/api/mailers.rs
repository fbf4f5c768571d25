use std::time::Duration;

use engine::config::MailerKind;
use engine::domain::SendStatus;
use serde_json::Value;

use crate::helpers::{spawn_app, test_settings, wait_for, TestApp};

/// Uploads a plain row, a row with an attachment and a row whose body is too
/// large for SQS, and waits for all three to end SENT.
async fn send_three_kinds(app: &TestApp) -> (String, String, String) {
    let plain = app.address_for("plain");
    let with_attachment = app.address_for("attached");
    let large = app.address_for("large");
    let big_body = "Long letter. ".repeat(25_000); // ~325 KB: over SQS's 256 KiB
    let csv = format!(
        "email,subject,body,attachment\n{plain},Plain,Just text,\n{with_attachment},Invoice,See attached,invoice.pdf\n{large},Large,{big_body},\n"
    );
    let form = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(csv.into_bytes()).file_name("three.csv"),
        )
        .part(
            "invoice",
            reqwest::multipart::Part::bytes(b"%PDF-1.4 courier test".to_vec())
                .file_name("invoice.pdf")
                .mime_str("application/pdf")
                .unwrap(),
        );
    let response = app
        .http
        .post(format!("{}/campaigns/upload", app.address))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let report: Value = response.json().await.unwrap();
    assert_eq!(report["accepted"], 3, "{report}");
    let batch_id = report["batchId"].as_str().unwrap().to_string();
    let counts = wait_for(Duration::from_secs(60), "three sends to end", || async {
        let counts = app.batch_counts(&batch_id).await;
        let finished: u64 = ["SENT", "ERROR"].iter().filter_map(|s| counts.get(*s)).sum();
        (finished == 3).then_some(counts)
    })
    .await;
    assert_eq!(counts.get("SENT"), Some(&3), "{counts:?}");
    (plain, with_attachment, large)
}

#[tokio::test]
async fn the_ses_v2_mailer_delivers_plain_attached_and_large_messages_through_the_stack() {
    let app = spawn_app(test_settings(MailerKind::Sesv2)).await;
    let (plain, attached, large) = send_three_kinds(&app).await;
    let mail = app.sent_mail().await;
    assert_eq!(mail.len(), 3, "{mail:?}");
    assert!(mail.iter().all(|m| m.recorded_by == MailerKind::Sesv2));
    let to = |address: &str| mail.iter().find(|m| m.to.iter().any(|t| t == address)).unwrap().clone();
    assert_eq!(to(&plain).subject.as_deref(), Some("Plain"));
    let raw = to(&attached).raw.expect("an attachment is sent as a raw MIME message");
    assert!(raw.contains("invoice.pdf") && raw.contains("multipart/mixed"));
    assert!(to(&large).message_id.len() > 5);
    app.stop().await;
}

#[tokio::test]
async fn the_ses_v1_mailer_delivers_plain_attached_and_large_messages_through_the_stack() {
    let app = spawn_app(test_settings(MailerKind::Ses)).await;
    let (plain, attached, _large) = send_three_kinds(&app).await;
    let mail = app.sent_mail().await;
    assert_eq!(mail.len(), 3, "{mail:?}");
    assert!(mail.iter().all(|m| m.recorded_by == MailerKind::Ses));
    assert!(mail
        .iter()
        .any(|m| m.to.contains(&plain) && m.subject.as_deref() == Some("Plain")));
    let raw = mail
        .iter()
        .find(|m| m.raw.as_deref().is_some_and(|r| r.contains(&attached)))
        .expect("raw message");
    assert!(raw.raw.as_deref().unwrap().contains("invoice.pdf"));
    app.stop().await;
}

#[tokio::test]
async fn the_dry_run_mailer_marks_messages_sent_without_mailing_anyone() {
    let app = spawn_app(test_settings(MailerKind::DryRun)).await;
    let id = app
        .notify(serde_json::json!({
            "type": "subscription",
            "recipient": app.address_for("dry"),
            "fields": { "plan": "Pro", "renews": "2027-01-01" }
        }))
        .await;
    let record = app.wait_final(id, Duration::from_secs(30)).await;
    assert_eq!(record.status, SendStatus::Sent);
    assert_eq!(record.subject, "Your subscription");
    assert!(record.provider_message_id.unwrap().starts_with("dry-run-"));
    assert!(app.sent_mail().await.is_empty());
    app.stop().await;
}

/// Settings whose SMTP mailer sends to the stack's own SMTP server.
fn smtp_settings(stack: &localstack::Stack) -> engine::config::Settings {
    let mut settings = test_settings(MailerKind::Smtp);
    let smtp = stack.smtp().expect("the local stack runs an SMTP server");
    settings.mailer.smtp.host = smtp.host.clone();
    settings.mailer.smtp.port = smtp.port;
    settings
}

#[tokio::test]
async fn the_smtp_mailer_delivers_plain_attached_and_large_messages_to_a_real_smtp_server() {
    let stack = crate::helpers::shared_stack().await;
    let app = spawn_app(smtp_settings(stack)).await;
    let (plain, attached, large) = send_three_kinds(&app).await;
    let mail = app.sent_mail().await;
    assert_eq!(mail.len(), 3, "{mail:?}");
    assert!(mail.iter().all(|m| m.recorded_by == MailerKind::Smtp));
    let to = |address: &str| mail.iter().find(|m| m.to.iter().any(|t| t == address)).unwrap().clone();
    assert!(to(&plain).raw.unwrap().contains("Subject: Plain"));
    let raw = to(&attached).raw.unwrap();
    assert!(raw.contains("invoice.pdf") && raw.contains("multipart/mixed"));
    assert!(
        to(&large).raw.unwrap().len() > 300_000,
        "the S3-stored body went out whole"
    );
    app.stop().await;
}

fn smtp_email(to: &str) -> engine::mailer::Email {
    engine::mailer::Email {
        from: "courier@example.com".into(),
        to: engine::domain::EmailAddress::parse(to).unwrap(),
        subject: "SMTP reply test".into(),
        text: "t".into(),
        attachment: None,
    }
}

/// One test sets the shared SMTP server's faults (rules are server-wide; each
/// rule here is scoped to this test's recipients all the same).
#[tokio::test]
async fn smtp_replies_map_to_meaning_and_a_throttled_message_is_retried_until_sent() {
    use engine::mailer::{MailError, Mailer, SmtpMailer};
    use localstack::SmtpFaultRule;
    let stack = crate::helpers::shared_stack().await;
    let settings = smtp_settings(stack);
    let mailer = SmtpMailer::new(&settings.mailer.smtp).unwrap();
    let scope = crate::helpers::unique_prefix();
    let rule = |code: u16, message: &str| SmtpFaultRule {
        code,
        message: message.into(),
        probability: 1.0,
        recipient_contains: Some(scope.clone()),
    };
    let to = format!("reply+{scope}@example.com");
    for (code, message) in [
        (421, "Service not available, closing channel"),
        (450, "Mailbox unavailable"),
        (451, "Local error in processing"),
        (454, "Throttling failure: Maximum sending rate exceeded."),
    ] {
        stack.set_smtp_faults(&[rule(code, message)]).await.unwrap();
        let error = mailer.send(&smtp_email(&to)).await.unwrap_err();
        assert!(matches!(&error, MailError::Throttled(_)), "{code}: {error}");
    }
    for (code, message) in [
        (550, "Mailbox unavailable"),
        (553, "Mailbox name not allowed"),
        (554, "Message rejected: Email address is not verified."),
    ] {
        stack.set_smtp_faults(&[rule(code, message)]).await.unwrap();
        let error = mailer.send(&smtp_email(&to)).await.unwrap_err();
        assert!(
            matches!(&error, MailError::Rejected(reason) if reason.contains(&code.to_string()) && reason.contains(message)),
            "{code}: {error}"
        );
    }
    stack.set_smtp_faults(&[]).await.unwrap();

    // Nobody listening: a transient failure, tried again later.
    let mut refused = settings.mailer.smtp.clone();
    refused.port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let error = SmtpMailer::new(&refused)
        .unwrap()
        .send(&smtp_email(&to))
        .await
        .unwrap_err();
    assert!(matches!(error, MailError::Transient(_)), "{error}");

    // End to end: 454 for a while, then accepted; the message is retried, never dead-lettered.
    let app = spawn_app(settings).await;
    stack
        .set_smtp_faults(&[SmtpFaultRule {
            recipient_contains: Some(app.prefix.clone()),
            ..rule(454, "Throttling failure")
        }])
        .await
        .unwrap();
    let id = app
        .notify(serde_json::json!({ "type": "reminder", "recipient": app.address_for("retry"), "body": "b" }))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let record = app.record(id).await.unwrap();
    assert!(!record.status.is_terminal(), "still being retried: {record:?}");
    stack.set_smtp_faults(&[]).await.unwrap();
    let record = app.wait_final(id, Duration::from_secs(60)).await;
    assert_eq!(record.status, SendStatus::Sent, "{record:?}");
    assert!(record.attempts >= 2, "{record:?}");
    assert_eq!(app.sent_mail().await.len(), 1);
    app.stop().await;
}
