//! A short conformance check of the stack in use: the queue and table
//! behaviours the pipeline's guarantees rest on. Its verdicts go into every
//! results file beside the load figures, so a figure from an emulator that
//! gets one of these wrong is read with that in mind.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};
use aws_sdk_sqs::types::QueueAttributeName;
use engine::aws::AwsClients;

pub use reports::results::CheckResult;

type Outcome = Result<String, String>;

async fn timed(name: &str, check: impl std::future::Future<Output = Outcome>) -> CheckResult {
    let started = Instant::now();
    let outcome = check.await;
    let millis = started.elapsed().as_millis() as u64;
    let (pass, detail) = match outcome {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    tracing::info!(check = name, pass, %detail, millis, "stack check");
    CheckResult {
        name: name.to_string(),
        pass,
        detail,
        millis,
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

async fn queue(
    clients: &AwsClients,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> Result<String, String> {
    let mut create = clients.sqs.create_queue().queue_name(name);
    for (k, v) in attributes {
        create = create.attributes(k.clone(), v.clone());
    }
    create
        .send()
        .await
        .map_err(|e| engine_err(&e))?
        .queue_url
        .ok_or_else(|| "no queue URL".to_string())
}

fn engine_err(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn receive_count(clients: &AwsClients, url: &str, wait: i32) -> Result<usize, String> {
    Ok(clients
        .sqs
        .receive_message()
        .queue_url(url)
        .wait_time_seconds(wait)
        .max_number_of_messages(10)
        .send()
        .await
        .map_err(|e| engine_err(&e))?
        .messages
        .unwrap_or_default()
        .len())
}

async fn visibility_timeout(clients: &AwsClients, prefix: &str) -> Outcome {
    let url = queue(
        clients,
        &format!("{prefix}-vis"),
        &[(QueueAttributeName::VisibilityTimeout, "1".into())],
    )
    .await?;
    clients
        .sqs
        .send_message()
        .queue_url(&url)
        .message_body("v")
        .send()
        .await
        .map_err(|e| engine_err(&e))?;
    if receive_count(clients, &url, 0).await? != 1 {
        return Err("the message was not received".into());
    }
    if receive_count(clients, &url, 0).await? != 0 {
        return Err("the message was visible again at once".into());
    }
    let started = Instant::now();
    loop {
        if receive_count(clients, &url, 1).await? == 1 {
            return Ok(format!(
                "reappeared {} ms after a 1 s visibility timeout",
                started.elapsed().as_millis()
            ));
        }
        if started.elapsed() > Duration::from_secs(5) {
            return Err("did not reappear within 5 s of a 1 s visibility timeout".into());
        }
    }
}

async fn dead_letter_redrive(clients: &AwsClients, prefix: &str) -> Outcome {
    let dlq = queue(clients, &format!("{prefix}-dlq"), &[]).await?;
    let arn = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&dlq)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| engine_err(&e))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or("no DLQ ARN")?;
    let policy = serde_json::json!({ "deadLetterTargetArn": arn, "maxReceiveCount": "2" }).to_string();
    let url = queue(
        clients,
        &format!("{prefix}-src"),
        &[
            (QueueAttributeName::VisibilityTimeout, "1".into()),
            (QueueAttributeName::RedrivePolicy, policy),
        ],
    )
    .await?;
    clients
        .sqs
        .send_message()
        .queue_url(&url)
        .message_body("p")
        .send()
        .await
        .map_err(|e| engine_err(&e))?;
    let mut receives = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        receives += receive_count(clients, &url, 1).await?;
        if receive_count(clients, &dlq, 0).await? == 1 {
            return if receives == 2 {
                Ok("moved to the DLQ after maxReceiveCount (2) receives".into())
            } else {
                Err(format!("moved to the DLQ after {receives} receives, not 2"))
            };
        }
    }
    Err(format!("not in the DLQ 10 s after {receives} receives"))
}

async fn long_poll_wakes(clients: &AwsClients, prefix: &str) -> Outcome {
    let url = queue(clients, &format!("{prefix}-poll"), &[]).await?;
    let poller = {
        let clients = clients.clone();
        let url = url.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let got = receive_count(&clients, &url, 10).await;
            (got, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_at = Instant::now();
    clients
        .sqs
        .send_message()
        .queue_url(&url)
        .message_body("w")
        .send()
        .await
        .map_err(|e| engine_err(&e))?;
    let (got, _) = poller.await.map_err(err)?;
    let woke_after = sent_at.elapsed();
    match got? {
        1 if woke_after < Duration::from_secs(2) => Ok(format!(
            "a 10 s long poll woke {} ms after the send",
            woke_after.as_millis()
        )),
        1 => Err(format!(
            "the long poll returned only {} ms after the send",
            woke_after.as_millis()
        )),
        n => Err(format!("the long poll returned {n} messages")),
    }
}

async fn conditional_write_refused(clients: &AwsClients, prefix: &str) -> Outcome {
    let table = format!("{prefix}-cond");
    clients
        .dynamodb
        .create_table()
        .table_name(&table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("k")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(err)?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("k")
                .key_type(KeyType::Hash)
                .build()
                .map_err(err)?,
        )
        .send()
        .await
        .map_err(|e| engine_err(&e))?;
    let put = || {
        clients
            .dynamodb
            .put_item()
            .table_name(&table)
            .item("k", AttributeValue::S("one".into()))
            .condition_expression("attribute_not_exists(k)")
            .send()
    };
    put().await.map_err(|e| engine_err(&e))?;
    let second = put().await;
    let _ = clients.dynamodb.delete_table().table_name(&table).send().await;
    match second {
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
        {
            Ok("a second conditional put was refused with ConditionalCheckFailed".into())
        }
        Err(e) => Err(format!("refused, but not as a failed condition: {}", engine_err(&e))),
        Ok(_) => Err("a conditional put on an existing key was accepted".into()),
    }
}

/// Runs the four checks concurrently; resources get `prefix`.
pub async fn check_stack(clients: &AwsClients, prefix: &str) -> Vec<CheckResult> {
    let (a, b, c, d) = tokio::join!(
        timed(
            "message reappears after its visibility timeout",
            visibility_timeout(clients, prefix)
        ),
        timed(
            "message moves to the DLQ after maxReceiveCount receives",
            dead_letter_redrive(clients, prefix)
        ),
        timed("long poll wakes on arrival", long_poll_wakes(clients, prefix)),
        timed(
            "conditional write is refused",
            conditional_write_refused(clients, prefix)
        ),
    );
    vec![a, b, c, d]
}
