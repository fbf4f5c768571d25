use engine::aws::AwsClients;
use engine::config::MailerKind;
use engine::provision::provision;

use crate::helpers::{shared_stack, test_settings};

#[tokio::test]
async fn provisioning_twice_succeeds_and_adopts_changed_queue_settings() {
    let stack = shared_stack().await;
    let clients = AwsClients::for_stack(stack).await;
    let mut settings = test_settings(MailerKind::Ses);
    let first = provision(&clients, &settings).await.expect("first provisioning");
    let second = provision(&clients, &settings)
        .await
        .expect("already-existing resources are success");
    assert_eq!(first.queue_urls, second.queue_urls);
    assert_eq!(first.dead_letter_urls, second.dead_letter_urls);

    settings.queues.max_receive_count = 5;
    let third = provision(&clients, &settings)
        .await
        .expect("changed settings are applied");
    let attributes = clients
        .sqs
        .get_queue_attributes()
        .queue_url(&third.queue_urls[0])
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let policy = &attributes[&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy];
    assert!(
        policy.contains("\"maxReceiveCount\":\"5\"") || policy.contains("\"maxReceiveCount\":5"),
        "{policy}"
    );
}
