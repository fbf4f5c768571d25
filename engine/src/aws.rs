//! The AWS SDK clients, built once from one stack description.

use std::sync::Arc;

use localstack::{Service, Stack};

use crate::faults::{FaultHooks, FaultPlan};

/// Every AWS client the pipeline uses, each pointed at its service's endpoint.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub sqs: aws_sdk_sqs::Client,
    pub s3: aws_sdk_s3::Client,
    pub ses: aws_sdk_ses::Client,
    pub sesv2: aws_sdk_sesv2::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

impl AwsClients {
    pub async fn for_stack(stack: &Stack) -> Self {
        Self::build(stack, None).await
    }

    /// Clients whose every call goes through `plan` (failure injection).
    pub async fn with_faults(stack: &Stack, plan: Arc<FaultPlan>) -> Self {
        Self::build(stack, Some(plan)).await
    }

    async fn build(stack: &Stack, plan: Option<Arc<FaultPlan>>) -> Self {
        let sdk = stack.sdk_config().await;
        let hooks = plan.map(|plan| {
            // The same client the SDK builds by default: hyper 1 with rustls on aws-lc.
            let base = sdk.http_client().unwrap_or_else(|| {
                use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
                aws_smithy_http_client::Builder::new()
                    .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
                    .build_https()
            });
            FaultHooks::new(base, plan)
        });
        macro_rules! hook {
            ($builder:expr) => {
                if let Some(hooks) = &hooks {
                    $builder.set_http_client(Some(hooks.http_client.clone()));
                    $builder.push_interceptor(hooks.interceptor.clone());
                }
            };
        }
        let endpoint = |service| stack.endpoint(service).map(str::to_string);

        let mut sqs = aws_sdk_sqs::config::Builder::from(&sdk);
        sqs.set_endpoint_url(endpoint(Service::Sqs));
        let mut s3 = aws_sdk_s3::config::Builder::from(&sdk);
        s3.set_endpoint_url(endpoint(Service::S3));
        // Emulators serve buckets by path, not by DNS name.
        s3.set_force_path_style(Some(stack.is_emulated()));
        let mut ses = aws_sdk_ses::config::Builder::from(&sdk);
        ses.set_endpoint_url(endpoint(Service::Ses));
        let mut sesv2 = aws_sdk_sesv2::config::Builder::from(&sdk);
        sesv2.set_endpoint_url(endpoint(Service::SesV2));
        let mut dynamodb = aws_sdk_dynamodb::config::Builder::from(&sdk);
        dynamodb.set_endpoint_url(endpoint(Service::DynamoDb));
        hook!(sqs);
        hook!(s3);
        hook!(ses);
        hook!(sesv2);
        hook!(dynamodb);
        Self {
            sqs: aws_sdk_sqs::Client::from_conf(sqs.build()),
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            ses: aws_sdk_ses::Client::from_conf(ses.build()),
            sesv2: aws_sdk_sesv2::Client::from_conf(sesv2.build()),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(dynamodb.build()),
        }
    }
}

/// An SDK error with its whole cause chain, for logs and error reasons.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
