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

    /// Clients of an engine under test: every call goes through `plan`
    /// (faults, metering), and on the emulated stack the plan also answers
    /// for the SES account, since the emulators enforce no sending limits and
    /// answer no `GetAccount` (moto has none; aws-ses-v2-local has no account).
    pub async fn under_plan(stack: &Stack, plan: Arc<FaultPlan>) -> Self {
        if stack.is_emulated() {
            plan.model_ses_account();
        }
        Self::with_faults(stack, plan).await
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
                    for interceptor in &hooks.interceptors {
                        $builder.push_interceptor(interceptor.clone());
                    }
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

/// What a failed AWS call means to the pipeline, whatever the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// "Slow down": throttling, provisioned throughput, request limits.
    Throttled,
    /// The queue, table, key or bucket does not exist.
    NotFound,
    /// A condition did not hold (a conditional write, a cancelled transaction).
    Conflict,
    /// The service did not answer, or answered 5xx: may pass on a later try.
    Unavailable,
    /// The request itself was refused (validation, a stale receipt, too large).
    Invalid,
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ErrorKind::Throttled => "throttled",
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "condition failed",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Invalid => "invalid request",
        })
    }
}

/// A failed AWS call: its meaning, a readable text, and the SDK's error as the source.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {text}")]
pub struct ServiceError {
    pub kind: ErrorKind,
    text: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ServiceError {
    /// An error that did not come from the SDK (in-memory adapters, checks).
    pub fn new(kind: ErrorKind, text: impl Into<String>) -> Self {
        Self {
            kind,
            text: text.into(),
            source: None,
        }
    }
}

/// Error codes by meaning, across SQS, DynamoDB, S3 and SES.
const THROTTLED: [&str; 8] = [
    "Throttling",
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "SlowDown",
    "LimitExceededException",
];
const NOT_FOUND: [&str; 5] = [
    "ResourceNotFoundException",
    "NoSuchKey",
    "NoSuchBucket",
    "QueueDoesNotExist",
    "AWS.SimpleQueueService.NonExistentQueue",
];
const CONFLICT: [&str; 2] = ["ConditionalCheckFailedException", "TransactionCanceledException"];

/// Maps an SDK error to what it means, keeping it as the source.
pub fn service_error<E, R>(error: aws_smithy_runtime_api::client::result::SdkError<E, R>) -> ServiceError
where
    E: aws_sdk_sqs::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    use aws_sdk_sqs::error::ProvideErrorMetadata as _;
    use aws_smithy_runtime_api::client::result::SdkError;
    let kind = match &error {
        SdkError::ServiceError(_) => match error.code() {
            Some(code) if THROTTLED.contains(&code) => ErrorKind::Throttled,
            Some(code) if NOT_FOUND.contains(&code) => ErrorKind::NotFound,
            Some(code) if CONFLICT.contains(&code) => ErrorKind::Conflict,
            Some(code) if code.contains("InternalFailure") || code.contains("ServiceUnavailable") => {
                ErrorKind::Unavailable
            }
            _ => ErrorKind::Invalid,
        },
        SdkError::ConstructionFailure(_) => ErrorKind::Invalid,
        _ => ErrorKind::Unavailable,
    };
    ServiceError {
        kind,
        text: describe(&error),
        source: Some(Box::new(error)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::operation::put_item::PutItemError;
    use aws_smithy_runtime_api::client::result::SdkError;
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    use aws_smithy_types::error::ErrorMetadata;

    fn with_code(code: &str) -> SdkError<PutItemError, Response> {
        let error = PutItemError::generic(ErrorMetadata::builder().code(code).message("m").build());
        SdkError::service_error(
            error,
            Response::new(StatusCode::try_from(400).unwrap(), SdkBody::empty()),
        )
    }

    #[test]
    fn sdk_errors_are_mapped_to_their_meaning_and_kept_as_the_source() {
        for (code, kind) in [
            ("ProvisionedThroughputExceededException", ErrorKind::Throttled),
            ("ThrottlingException", ErrorKind::Throttled),
            ("ResourceNotFoundException", ErrorKind::NotFound),
            ("ConditionalCheckFailedException", ErrorKind::Conflict),
            ("InternalFailure", ErrorKind::Unavailable),
            ("ValidationException", ErrorKind::Invalid),
        ] {
            let error = service_error(with_code(code));
            assert_eq!(error.kind, kind, "{code}");
            assert!(
                std::error::Error::source(&error).is_some(),
                "{code}: the SDK error is the source"
            );
            assert!(error.to_string().contains(code), "{error}");
        }
        let timeout: SdkError<PutItemError, Response> = SdkError::timeout_error("took too long");
        assert_eq!(service_error(timeout).kind, ErrorKind::Unavailable);
    }
}
