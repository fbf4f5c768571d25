//! The AWS calls Courier makes, named as the SDK labels them: `Service.Operation`.
//!
//! The fault plan matches calls by these, the results file counts calls under
//! these labels, and the CI gate's yardsticks are written in them.

use serde::{Deserialize, Serialize};

/// The AWS services the pipeline uses, spelled as the SDK's service ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AwsService {
    Sqs,
    DynamoDb,
    S3,
    Ses,
    Sesv2,
}

impl AwsService {
    pub const ALL: [AwsService; 5] = [
        AwsService::Sqs,
        AwsService::DynamoDb,
        AwsService::S3,
        AwsService::Ses,
        AwsService::Sesv2,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AwsService::Sqs => "SQS",
            AwsService::DynamoDb => "DynamoDB",
            AwsService::S3 => "S3",
            AwsService::Ses => "SES",
            AwsService::Sesv2 => "SESv2",
        }
    }

    /// The service of a `Service.Operation` label.
    pub fn of_label(label: &str) -> Option<Self> {
        let service = label.split_once('.').map_or(label, |(service, _)| service);
        service.parse().ok()
    }
}

named_enum!(AwsService, "AWS service");

macro_rules! operations {
    ($($variant:ident => $service:ident $label:literal),+ $(,)?) => {
        /// One AWS call the pipeline makes on its hot path.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum AwsOperation { $($variant),+ }

        impl AwsOperation {
            pub const ALL: &'static [AwsOperation] = &[$(AwsOperation::$variant),+];

            /// The SDK's label, `Service.Operation`.
            pub fn as_str(self) -> &'static str {
                match self { $(AwsOperation::$variant => $label),+ }
            }

            pub fn service(self) -> AwsService {
                match self { $(AwsOperation::$variant => AwsService::$service),+ }
            }
        }
    };
}

// Each label starts with its service's spelling; a test checks it.
operations! {
    SqsSendMessage => Sqs "SQS.SendMessage",
    SqsSendMessageBatch => Sqs "SQS.SendMessageBatch",
    SqsReceiveMessage => Sqs "SQS.ReceiveMessage",
    SqsDeleteMessage => Sqs "SQS.DeleteMessage",
    SqsDeleteMessageBatch => Sqs "SQS.DeleteMessageBatch",
    SqsChangeMessageVisibility => Sqs "SQS.ChangeMessageVisibility",
    DynamoDbGetItem => DynamoDb "DynamoDB.GetItem",
    DynamoDbPutItem => DynamoDb "DynamoDB.PutItem",
    DynamoDbUpdateItem => DynamoDb "DynamoDB.UpdateItem",
    DynamoDbDeleteItem => DynamoDb "DynamoDB.DeleteItem",
    DynamoDbQuery => DynamoDb "DynamoDB.Query",
    DynamoDbBatchWriteItem => DynamoDb "DynamoDB.BatchWriteItem",
    DynamoDbTransactWriteItems => DynamoDb "DynamoDB.TransactWriteItems",
    S3PutObject => S3 "S3.PutObject",
    S3GetObject => S3 "S3.GetObject",
    S3DeleteObject => S3 "S3.DeleteObject",
    SesSendEmail => Ses "SES.SendEmail",
    SesSendRawEmail => Ses "SES.SendRawEmail",
    Sesv2SendEmail => Sesv2 "SESv2.SendEmail",
    SesGetSendQuota => Ses "SES.GetSendQuota",
    Sesv2GetAccount => Sesv2 "SESv2.GetAccount",
}

named_enum!(AwsOperation, "AWS operation");

impl AwsOperation {
    /// The calls that hand a message to SES (v1 or v2).
    pub const PROVIDER_SENDS: [AwsOperation; 3] = [
        AwsOperation::Sesv2SendEmail,
        AwsOperation::SesSendEmail,
        AwsOperation::SesSendRawEmail,
    ];

    /// The calls that read the SES account's sending limits.
    pub const ACCOUNT_READS: [AwsOperation; 2] = [AwsOperation::Sesv2GetAccount, AwsOperation::SesGetSendQuota];

    /// The calls that put messages on a queue.
    pub const QUEUE_SENDS: [AwsOperation; 2] = [AwsOperation::SqsSendMessage, AwsOperation::SqsSendMessageBatch];

    /// Whether the call keeps the service busy while it is open. A receive's
    /// long poll mostly waits for a message, so it is no load on the stack.
    pub fn loads_the_stack(self) -> bool {
        self != AwsOperation::SqsReceiveMessage
    }
}

/// The load a call met: how many calls that load the stack were open when it
/// started, itself included, rounded down to a power of two (1, 2, 4, 8, …).
/// Real runs record answer times by it; simulated runs draw answer times by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LoadBucket(u64);

impl LoadBucket {
    pub fn of(calls_open: u64) -> Self {
        let calls = calls_open.max(1);
        Self(1 << calls.ilog2())
    }

    /// The fewest open calls the bucket holds.
    pub fn calls(self) -> u64 {
        self.0
    }

    /// How many doublings apart two buckets are.
    pub fn distance(self, other: LoadBucket) -> u32 {
        self.0.ilog2().abs_diff(other.0.ilog2())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_spelled_as_the_sdk_labels_them() {
        assert_eq!(AwsOperation::DynamoDbUpdateItem.as_str(), "DynamoDB.UpdateItem");
        assert_eq!(AwsOperation::Sesv2SendEmail.as_str(), "SESv2.SendEmail");
        assert_eq!("SQS.ReceiveMessage".parse(), Ok(AwsOperation::SqsReceiveMessage));
        for operation in AwsOperation::ALL {
            assert_eq!(AwsService::of_label(operation.as_str()), Some(operation.service()));
        }
        assert_eq!(AwsService::of_label("DynamoDB.CreateTable"), Some(AwsService::DynamoDb));
        assert_eq!(AwsService::of_label("STS.AssumeRole"), None);
    }

    #[test]
    fn a_load_bucket_rounds_open_calls_down_to_a_power_of_two() {
        let buckets: Vec<u64> = [0, 1, 2, 3, 4, 7, 8, 100].map(|n| LoadBucket::of(n).calls()).into();
        assert_eq!(buckets, [1, 1, 2, 2, 4, 4, 8, 64]);
        assert_eq!(LoadBucket::of(3).distance(LoadBucket::of(40)), 4);
        let keyed: std::collections::BTreeMap<LoadBucket, u8> = [(LoadBucket::of(16), 1)].into();
        let json = serde_json::to_string(&keyed).unwrap();
        assert_eq!(json, r#"{"16":1}"#);
        assert_eq!(
            serde_json::from_str::<std::collections::BTreeMap<LoadBucket, u8>>(&json).unwrap(),
            keyed
        );
    }
}
