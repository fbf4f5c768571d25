use engine::aws::AwsClients;
use engine::config::MailerKind;
use engine::faults::{FaultEffect, FaultPlan, FaultTarget, SesQuota};
use engine::mailer::{Email, MailError, Mailer, SesV1Mailer, SesV2Mailer};

use crate::helpers::shared_stack;

fn email(to: &str) -> Email {
    Email {
        from: "courier@example.com".into(),
        to: engine::domain::EmailAddress::parse(to).unwrap(),
        subject: "Fault test".into(),
        text: "t".into(),
        attachment: None,
    }
}

#[tokio::test]
async fn injected_ses_faults_arrive_as_the_services_own_errors_in_both_api_versions() {
    let stack = shared_stack().await;
    let plan = FaultPlan::new(7);
    let clients = AwsClients::with_faults(stack, plan.clone()).await;
    clients
        .ses
        .verify_email_identity()
        .email_address("courier@example.com")
        .send()
        .await
        .unwrap();
    let _ = clients
        .sesv2
        .create_email_identity()
        .email_identity("courier@example.com")
        .send()
        .await;
    let v2 = SesV2Mailer::new(clients.sesv2.clone());
    let v1 = SesV1Mailer::new(clients.ses.clone());
    let mailers: [(&dyn Mailer, MailerKind); 2] = [(&v2, MailerKind::Sesv2), (&v1, MailerKind::Ses)];

    let reject = plan.activate("ses_reject", FaultTarget::SesSend, 1.0, FaultEffect::Reject);
    for (mailer, kind) in mailers {
        let error = mailer.send(&email("fault-reject@example.com")).await.unwrap_err();
        assert!(
            matches!(&error, MailError::Rejected(m) if m.contains("MessageRejected")),
            "{kind}: {error}"
        );
    }
    plan.deactivate(reject);

    let throttle = plan.activate("ses_throttle", FaultTarget::SesSend, 1.0, FaultEffect::Throttle);
    for (mailer, kind) in mailers {
        let error = mailer.send(&email("fault-throttle@example.com")).await.unwrap_err();
        assert!(matches!(error, MailError::Throttled(_)), "{kind}: {error}");
    }
    plan.deactivate(throttle);
    // The SDK itself retries throttling (3 attempts), as it would against SES.
    assert_eq!(plan.counts()["ses_throttle"], 6);

    // SES's rate limit: a 3/s account answers "Maximum sending rate exceeded" to a burst.
    // The SDK retries that itself, but its jittered backoff may spend all three attempts
    // inside the refusal window, so the caller retries on Throttled, as the senders do.
    plan.set_ses_quota(Some(SesQuota {
        max_send_rate: 3.0,
        daily_quota: None,
        day: SesQuota::DAY,
    }));
    let started = std::time::Instant::now();
    for i in 0..10 {
        let email = email(&format!("quota{i}@example.com"));
        let mut tries = 0;
        loop {
            match v1.send(&email).await {
                Ok(_) => break,
                Err(MailError::Throttled(_)) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(error) => panic!("send {i} after {tries} throttled tries: {error}"),
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // 3 sends fit the first second's bucket; the other 7 need 7/3 s of refill at least.
    assert!(elapsed >= 7.0 / 3.0, "10 sends at 3/s took only {elapsed:.2}s");
    assert!(plan.counts()["ses_quota"] >= 1, "the quota throttled some attempts");
    plan.set_ses_quota(None);
    assert!(
        v2.send(&email("fault-none@example.com")).await.is_ok(),
        "no fault in force: the send goes through"
    );

    // The account's limits, as the senders read them, come from the quota in force.
    plan.set_ses_quota(Some(SesQuota {
        max_send_rate: 14.0,
        daily_quota: Some(2),
        day: SesQuota::DAY,
    }));
    for mailer in [&v1 as &dyn Mailer, &v2] {
        let quota = mailer
            .send_quota()
            .await
            .expect("the limits read")
            .expect("SES has limits");
        assert_eq!(quota.max_send_rate, Some(14.0));
        assert_eq!(quota.max_24_hour_send, Some(2.0));
    }
    // A used-up daily quota is told apart from a rate throttle: the message is kept, not retried.
    v2.send(&email("day1@example.com")).await.expect("first of two");
    v1.send(&email("day2@example.com")).await.expect("second of two");
    assert!(matches!(
        v2.send(&email("day3@example.com")).await,
        Err(MailError::QuotaExhausted(_))
    ));
    assert!(matches!(
        v1.send(&email("day3@example.com")).await,
        Err(MailError::QuotaExhausted(_))
    ));
    let used_up = v2.send_quota().await.unwrap().unwrap();
    assert!(used_up.exhausted(), "{used_up:?}");
    plan.set_ses_quota(None);
    // Without a quota, the account reads go to the stack's own SES.
    assert!(
        v2.send_quota().await.is_err(),
        "the local SES v2 has no account to read"
    );
    plan.model_ses_account();
    assert_eq!(
        v2.send_quota().await.unwrap().unwrap().max_send_rate,
        None,
        "a modelled account without a quota has no limit"
    );
}

#[tokio::test]
async fn injected_dynamodb_throttling_and_sqs_errors_surface_after_the_sdks_retries() {
    let stack = shared_stack().await;
    let plan = FaultPlan::new(8);
    let clients = AwsClients::with_faults(stack, plan.clone()).await;
    plan.activate("dynamodb_throttle", FaultTarget::DynamoDb, 1.0, FaultEffect::Throttle);
    let error = clients.dynamodb.list_tables().send().await.unwrap_err();
    let text = engine_error_text(&error);
    assert!(text.contains("ProvisionedThroughputExceeded"), "{text}");

    plan.activate(
        "sqs_receive_error",
        FaultTarget::SqsReceive,
        1.0,
        FaultEffect::ServerError,
    );
    let queue = clients
        .sqs
        .create_queue()
        .queue_name("fault-probe")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    assert!(clients.sqs.receive_message().queue_url(&queue).send().await.is_err());
    assert!(
        clients
            .sqs
            .send_message()
            .queue_url(&queue)
            .message_body("x")
            .send()
            .await
            .is_ok(),
        "sends are untouched"
    );
    assert_eq!(plan.counts()["sqs_receive_error"], 3, "three attempts, all refused");
}

fn engine_error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = format!("{error:?}");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(" / {cause:?}"));
        source = cause.source();
    }
    text
}
