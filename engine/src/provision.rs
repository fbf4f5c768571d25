//! One idempotent routine that creates everything the pipeline needs, on the
//! local stack or real AWS. "Already exists" counts as success.

use std::time::Duration;

use aws_sdk_dynamodb::client::Waiters;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType,
};
use aws_sdk_sqs::types::QueueAttributeName;

use crate::aws::{describe, AwsClients};
use crate::config::{MailerKind, Settings};
use crate::domain::Priority;

/// The names of everything provisioned, derived from the resource prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceNames {
    pub prefix: String,
    pub table: String,
    /// Campaign batches' progress (`crate::batches`).
    pub batches: String,
    pub bucket: String,
}

impl ResourceNames {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            table: format!("{prefix}-EmailSends"),
            batches: format!("{prefix}-Batches"),
            bucket: format!("{prefix}-attachments"),
        }
    }

    pub fn queue(&self, priority: Priority) -> String {
        format!("{}-{}", self.prefix, priority)
    }

    pub fn dead_letter_queue(&self, priority: Priority) -> String {
        format!("{}-{}-dlq", self.prefix, priority)
    }
}

/// The status table's secondary indexes.
pub const STATUS_INDEX: &str = "status_index";
pub const BATCH_INDEX: &str = "batch_index";

/// What provisioning made (or found): the queue URLs the adapters need.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub names: ResourceNames,
    /// Indexed by `Priority::index()`.
    pub queue_urls: [String; 3],
    pub dead_letter_urls: [String; 3],
    /// The smallest `MaximumMessageSize` of the three queues, as SQS reports it.
    pub max_message_bytes: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("provisioning {resource}: {reason}")]
pub struct ProvisionError {
    pub resource: String,
    pub reason: String,
}

fn fail(resource: &str, error: &(dyn std::error::Error + 'static)) -> ProvisionError {
    ProvisionError {
        resource: resource.to_string(),
        reason: describe(error),
    }
}

pub async fn provision(clients: &AwsClients, settings: &Settings) -> Result<Provisioned, ProvisionError> {
    let names = ResourceNames::new(&settings.resources.prefix);
    let (queues, table, batches, bucket, identity) = tokio::join!(
        provision_queues(clients, settings, &names),
        provision_table(clients, &names),
        provision_batches_table(clients, &names),
        provision_bucket(clients, &names),
        provision_identity(clients, settings),
    );
    table?;
    batches?;
    bucket?;
    identity?;
    let (queue_urls, dead_letter_urls, max_message_bytes) = queues?;
    tracing::info!(prefix = %names.prefix, table = %names.table, bucket = %names.bucket, "provisioned");
    Ok(Provisioned {
        names,
        queue_urls,
        dead_letter_urls,
        max_message_bytes,
    })
}

async fn ensure_queue(
    clients: &AwsClients,
    name: &str,
    attributes: Vec<(QueueAttributeName, String)>,
) -> Result<String, ProvisionError> {
    let mut create = clients.sqs.create_queue().queue_name(name);
    for (key, value) in &attributes {
        create = create.attributes(key.clone(), value.clone());
    }
    match create.send().await {
        Ok(output) => Ok(output.queue_url.unwrap_or_default()),
        // Exists with other attributes: adopt it and bring its attributes up to date.
        Err(error) if error.as_service_error().is_some_and(|e| e.is_queue_name_exists()) => {
            let url = clients
                .sqs
                .get_queue_url()
                .queue_name(name)
                .send()
                .await
                .map_err(|e| fail(name, &e))?
                .queue_url
                .unwrap_or_default();
            let mut update = clients.sqs.set_queue_attributes().queue_url(&url);
            for (key, value) in attributes {
                update = update.attributes(key, value);
            }
            update.send().await.map_err(|e| fail(name, &e))?;
            Ok(url)
        }
        Err(error) => Err(fail(name, &error)),
    }
}

async fn provision_queues(
    clients: &AwsClients,
    settings: &Settings,
    names: &ResourceNames,
) -> Result<([String; 3], [String; 3], usize), ProvisionError> {
    let mut max_message_bytes = usize::MAX;
    let mut urls: [String; 3] = Default::default();
    let mut dead_letter_urls: [String; 3] = Default::default();
    for priority in Priority::ALL {
        let dlq_name = names.dead_letter_queue(priority);
        // Dead letters are kept for the longest SQS allows, for inspection and redrive.
        let dlq_url = ensure_queue(
            clients,
            &dlq_name,
            vec![(QueueAttributeName::MessageRetentionPeriod, "1209600".into())],
        )
        .await?;
        let dlq_arn = clients
            .sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| fail(&dlq_name, &e))?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .ok_or_else(|| ProvisionError {
                resource: dlq_name.clone(),
                reason: "the queue has no QueueArn attribute".into(),
            })?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": settings.queues.max_receive_count.to_string(),
        });
        let url = ensure_queue(
            clients,
            &names.queue(priority),
            vec![
                (QueueAttributeName::RedrivePolicy, redrive.to_string()),
                (
                    QueueAttributeName::VisibilityTimeout,
                    settings.queues.visibility_timeout_secs.to_string(),
                ),
            ],
        )
        .await?;
        max_message_bytes = max_message_bytes.min(maximum_message_size(clients, &names.queue(priority), &url).await?);
        urls[priority.index()] = url;
        dead_letter_urls[priority.index()] = dlq_url;
    }
    Ok((urls, dead_letter_urls, max_message_bytes))
}

/// The largest message the queue takes, as it says itself (AWS and
/// LocalStack differ, and an owner may lower it).
async fn maximum_message_size(clients: &AwsClients, name: &str, url: &str) -> Result<usize, ProvisionError> {
    clients
        .sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::MaximumMessageSize)
        .send()
        .await
        .map_err(|e| fail(name, &e))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::MaximumMessageSize))
        .and_then(|size| size.parse().ok())
        .ok_or_else(|| ProvisionError {
            resource: name.to_string(),
            reason: "the queue has no readable MaximumMessageSize attribute".into(),
        })
}

fn string_attribute(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("name and type are set")
}

fn key(name: &str, key_type: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .expect("name and type are set")
}

fn index(name: &str, hash: &str, range: &str) -> GlobalSecondaryIndex {
    GlobalSecondaryIndex::builder()
        .index_name(name)
        .key_schema(key(hash, KeyType::Hash))
        .key_schema(key(range, KeyType::Range))
        .projection(Projection::builder().projection_type(ProjectionType::All).build())
        .build()
        .expect("name, keys and projection are set")
}

async fn provision_table(clients: &AwsClients, names: &ResourceNames) -> Result<(), ProvisionError> {
    let create = clients
        .dynamodb
        .create_table()
        .table_name(&names.table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attribute("sendId"))
        .attribute_definitions(string_attribute("status"))
        .attribute_definitions(string_attribute("createdAt"))
        .attribute_definitions(string_attribute("batchId"))
        .key_schema(key("sendId", KeyType::Hash))
        .global_secondary_indexes(index(STATUS_INDEX, "status", "createdAt"))
        .global_secondary_indexes(index(BATCH_INDEX, "batchId", "createdAt"));
    ensure_table(clients, &names.table, create).await
}

/// One small item per campaign batch, keyed by its id.
async fn provision_batches_table(clients: &AwsClients, names: &ResourceNames) -> Result<(), ProvisionError> {
    let create = clients
        .dynamodb
        .create_table()
        .table_name(&names.batches)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(string_attribute("batchId"))
        .key_schema(key("batchId", KeyType::Hash));
    ensure_table(clients, &names.batches, create).await
}

type CreateTable = aws_sdk_dynamodb::operation::create_table::builders::CreateTableFluentBuilder;

/// Creates a table (or finds it there) and waits until it is ACTIVE.
async fn ensure_table(clients: &AwsClients, table: &str, create: CreateTable) -> Result<(), ProvisionError> {
    match create.send().await {
        Ok(_) => {}
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) =>
        {
            tracing::debug!(%table, "table already exists");
        }
        Err(error) => return Err(fail(table, &error)),
    }
    // Real DynamoDB takes a few seconds to make a table ACTIVE: the SDK's waiter polls for it.
    clients
        .dynamodb
        .wait_until_table_exists()
        .table_name(table)
        .wait(Duration::from_secs(60))
        .await
        .map_err(|e| fail(table, &e))?;
    Ok(())
}

async fn provision_bucket(clients: &AwsClients, names: &ResourceNames) -> Result<(), ProvisionError> {
    match clients.s3.create_bucket().bucket(&names.bucket).send().await {
        Ok(_) => Ok(()),
        Err(error)
            if error
                .as_service_error()
                .is_some_and(|e| e.is_bucket_already_owned_by_you()) =>
        {
            Ok(())
        }
        Err(error) => Err(fail(&names.bucket, &error)),
    }
}

async fn provision_identity(clients: &AwsClients, settings: &Settings) -> Result<(), ProvisionError> {
    let address = &settings.resources.sender_address;
    match settings.mailer.kind {
        MailerKind::Ses => {
            clients
                .ses
                .verify_email_identity()
                .email_address(address)
                .send()
                .await
                .map_err(|e| fail(&format!("SES identity {address}"), &e))?;
        }
        MailerKind::Sesv2 => {
            let created = clients
                .sesv2
                .create_email_identity()
                .email_identity(address)
                .send()
                .await;
            match created {
                Ok(_) => {}
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_already_exists_exception()) => {}
                Err(error) => return Err(fail(&format!("SES v2 identity {address}"), &error)),
            }
        }
        MailerKind::Smtp | MailerKind::DryRun => {}
    }
    Ok(())
}
