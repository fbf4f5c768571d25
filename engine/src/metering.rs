//! Metering: what every AWS call consumed, in the units AWS bills.
//!
//! One SDK interceptor sees each call of every client the fault plan hooks
//! (so every call of a load run) and adds its [`Usage`] to a [`Meter`]:
//!
//! - **DynamoDB** calls ask for `ReturnConsumedCapacity = INDEXES`, so the
//!   service itself says how many read and write units each call took, the
//!   global secondary indexes' share and a transaction's double rate included
//!   (on AWS exactly; the local emulators compute it the same way). A refused
//!   conditional write carries no figure: it is counted as one unit per item
//!   written (two in a transaction), the least AWS charges for it.
//! - **SQS** requests are billed per started 64 KiB of the request or its
//!   answer; receives that brought nothing are counted apart.
//! - **SES** bills recipients of accepted emails and their bytes.
//! - **S3** bills requests; bytes are kept for the report.
//!
//! Answers the fault plan gave in a service's place never reached AWS and are
//! not metered. Pricing the usage is the reports' job (`reports::cost`).

use std::collections::BTreeMap;
use std::sync::Mutex;

use aws_sdk_dynamodb::types::{ConsumedCapacity, ReturnConsumedCapacity};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::{
    AfterDeserializationInterceptorContextRef, BeforeSerializationInterceptorContextMut,
    BeforeTransmitInterceptorContextRef, Input, Output,
};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use vocabulary::{AwsService, Usage, UsageByOperation};

/// The request id the fault plan gives its own answers.
pub(crate) const INJECTED_REQUEST_ID: &str = "courier-fault";

/// SQS bills each started 64 KiB of a payload as one request.
const SQS_CHUNK: u64 = 64 * 1024;

/// The usage of every operation so far.
#[derive(Debug, Default)]
pub struct Meter {
    by_operation: Mutex<BTreeMap<String, Usage>>,
}

impl Meter {
    pub fn usage(&self) -> UsageByOperation {
        self.by_operation.lock().expect("meter lock").clone()
    }

    fn add(&self, operation: String, usage: &Usage) {
        self.by_operation
            .lock()
            .expect("meter lock")
            .entry(operation)
            .or_default()
            .add(usage);
    }
}

/// Billable SQS requests for one call: each started 64 KiB of the larger of
/// the request and its answer, at least one.
pub fn sqs_requests(bytes_sent: u64, bytes_received: u64) -> u64 {
    bytes_sent.max(bytes_received).div_ceil(SQS_CHUNK).max(1)
}

/// Units a DynamoDB answer reports, and the indexes' share of them.
pub fn capacity_units(consumed: &[ConsumedCapacity]) -> (f64, f64) {
    consumed.iter().fold((0.0, 0.0), |(total, indexes), c| {
        let index_units: f64 = c
            .global_secondary_indexes
            .iter()
            .chain(&c.local_secondary_indexes)
            .flat_map(|by_index| by_index.values())
            .filter_map(|capacity| capacity.capacity_units)
            .sum();
        (total + c.capacity_units.unwrap_or(0.0), indexes + index_units)
    })
}

/// What the call being made will be billed for, noted before it is sent.
#[derive(Debug, Clone, Copy, Default)]
struct Billing {
    /// Recipients of an email.
    recipients: u64,
    /// Items a write writes, and whether it is a transaction (twice the rate).
    items_written: u64,
    transaction: bool,
    /// Bytes of the request as sent.
    bytes_sent: u64,
}

impl Storable for Billing {
    type Storer = StoreReplace<Self>;
}

/// The interceptor that feeds a [`Meter`].
#[derive(Debug)]
pub(crate) struct Metering {
    meter: std::sync::Arc<Meter>,
}

impl Metering {
    pub(crate) fn new(meter: std::sync::Arc<Meter>) -> Self {
        Self { meter }
    }
}

macro_rules! dynamodb_calls {
    ($($op:ident :: $input:ident / $output:ident, items $items:expr, $many:tt);+ $(;)?) => {
        /// Asks a DynamoDB call to report its units; returns how many items it writes.
        fn ask_for_units(input: &mut Input) -> Option<(u64, bool)> {
            use aws_sdk_dynamodb::operation::*;
            $(if let Some(input) = input.downcast_mut::<$op::$input>() {
                input.return_consumed_capacity = Some(ReturnConsumedCapacity::Indexes);
                let items: fn(&$op::$input) -> u64 = $items;
                return Some((items(input), stringify!($op) == "transact_write_items"));
            })+
            None
        }

        /// The units a DynamoDB answer reports.
        fn reported_units(output: &Output) -> Option<(f64, f64)> {
            use aws_sdk_dynamodb::operation::*;
            $(if let Some(output) = output.downcast_ref::<$op::$output>() {
                return Some(dynamodb_calls!(@units output, $many));
            })+
            None
        }
    };
    (@units $output:ident, one) => { capacity_units($output.consumed_capacity.as_slice()) };
    (@units $output:ident, many) => { capacity_units($output.consumed_capacity.as_deref().unwrap_or_default()) };
}

dynamodb_calls! {
    get_item::GetItemInput / GetItemOutput, items |_| 0, one;
    query::QueryInput / QueryOutput, items |_| 0, one;
    scan::ScanInput / ScanOutput, items |_| 0, one;
    batch_get_item::BatchGetItemInput / BatchGetItemOutput, items |_| 0, many;
    put_item::PutItemInput / PutItemOutput, items |_| 1, one;
    update_item::UpdateItemInput / UpdateItemOutput, items |_| 1, one;
    delete_item::DeleteItemInput / DeleteItemOutput, items |_| 1, one;
    batch_write_item::BatchWriteItemInput / BatchWriteItemOutput,
        items |i| i.request_items.iter().flat_map(|t| t.values()).map(|w| w.len() as u64).sum(), many;
    transact_write_items::TransactWriteItemsInput / TransactWriteItemsOutput,
        items |i| i.transact_items.as_ref().map_or(0, |t| t.len() as u64), many;
}

/// Recipients of an email about to go to SES (v1 or v2).
fn recipients(input: &Input) -> Option<u64> {
    fn count(lists: [&Option<Vec<String>>; 3]) -> u64 {
        lists
            .iter()
            .map(|list| list.as_ref().map_or(0, |l| l.len() as u64))
            .sum()
    }
    if let Some(send) = input.downcast_ref::<aws_sdk_sesv2::operation::send_email::SendEmailInput>() {
        let to = send.destination.as_ref()?;
        return Some(count([&to.to_addresses, &to.cc_addresses, &to.bcc_addresses]));
    }
    if let Some(send) = input.downcast_ref::<aws_sdk_ses::operation::send_email::SendEmailInput>() {
        let to = send.destination.as_ref()?;
        return Some(count([&to.to_addresses, &to.cc_addresses, &to.bcc_addresses]));
    }
    if let Some(send) = input.downcast_ref::<aws_sdk_ses::operation::send_raw_email::SendRawEmailInput>() {
        // Without explicit destinations SES reads them from the headers: at least one.
        return Some(send.destinations.as_ref().map_or(1, |d| d.len() as u64));
    }
    None
}

impl Intercept for Metering {
    fn name(&self) -> &'static str {
        "CourierMetering"
    }

    fn modify_before_serialization(
        &self,
        context: &mut BeforeSerializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let mut billing = Billing::default();
        if let Some((items, transaction)) = ask_for_units(context.input_mut()) {
            billing.items_written = items;
            billing.transaction = transaction;
        }
        billing.recipients = recipients(context.input()).unwrap_or(0);
        cfg.interceptor_state().store_put(billing);
        Ok(())
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let mut billing = cfg.load::<Billing>().copied().unwrap_or_default();
        billing.bytes_sent = context.request().body().content_length().unwrap_or(0);
        cfg.interceptor_state().store_put(billing);
        Ok(())
    }

    fn read_after_deserialization(
        &self,
        context: &AfterDeserializationInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let response = context.response();
        if response.headers().get("x-amzn-requestid") == Some(INJECTED_REQUEST_ID) {
            return Ok(());
        }
        let Some(label) = crate::faults::operation_label(cfg) else {
            return Ok(());
        };
        let service = AwsService::of_label(&label);
        let billing = cfg.load::<Billing>().copied().unwrap_or_default();
        let body = response.body().bytes();
        let bytes_received = body.map(|b| b.len() as u64).unwrap_or_else(|| {
            response
                .headers()
                .get("content-length")
                .and_then(|length| length.parse().ok())
                .unwrap_or(0)
        });
        let mut usage = Usage {
            calls: 1,
            requests: 1,
            bytes_sent: billing.bytes_sent,
            bytes_received,
            ..Usage::default()
        };
        match (service, context.output_or_error()) {
            (Some(AwsService::Sqs), output) => {
                usage.requests = sqs_requests(billing.bytes_sent, bytes_received);
                let empty = output
                    .ok()
                    .and_then(|o| o.downcast_ref::<aws_sdk_sqs::operation::receive_message::ReceiveMessageOutput>());
                if empty.is_some_and(|r| r.messages.as_ref().is_none_or(Vec::is_empty)) {
                    usage.empty_receives = 1;
                }
            }
            (Some(AwsService::DynamoDb), Ok(output)) => {
                if let Some((units, index_units)) = reported_units(output) {
                    usage.index_units = index_units;
                    if billing.items_written > 0 {
                        usage.write_units = units;
                    } else {
                        usage.read_units = units;
                    }
                }
            }
            (Some(AwsService::DynamoDb), Err(_)) => {
                let refused = body.is_some_and(|b| {
                    let text = String::from_utf8_lossy(b);
                    text.contains("ConditionalCheckFailed") || text.contains("TransactionCanceled")
                });
                if refused {
                    let rate = if billing.transaction { 2.0 } else { 1.0 };
                    usage.write_units = billing.items_written as f64 * rate;
                }
            }
            (Some(AwsService::Ses | AwsService::Sesv2), Ok(_)) => usage.recipients = billing.recipients,
            _ => {}
        }
        self.meter.add(label, &usage);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::Capacity;

    #[test]
    fn sqs_bills_each_started_64_kib_of_the_larger_side_and_at_least_one_request() {
        assert_eq!(sqs_requests(0, 0), 1);
        assert_eq!(sqs_requests(300, 2_000), 1);
        assert_eq!(sqs_requests(64 * 1024, 10), 1);
        assert_eq!(sqs_requests(64 * 1024 + 1, 10), 2);
        assert_eq!(sqs_requests(100, 200 * 1024), 4);
    }

    #[test]
    fn capacity_units_add_up_every_table_and_keep_the_indexes_share() {
        let index = |units| Capacity::builder().capacity_units(units).build();
        let write = ConsumedCapacity::builder()
            .table_name("sends")
            .capacity_units(3.0)
            .global_secondary_indexes("status_index", index(2.0))
            .build();
        let plain = ConsumedCapacity::builder()
            .table_name("batches")
            .capacity_units(1.0)
            .build();
        assert_eq!(capacity_units(&[write, plain]), (4.0, 2.0));
        assert_eq!(capacity_units(&[]), (0.0, 0.0));
    }

    #[test]
    fn a_dynamodb_write_is_asked_to_report_its_units_and_its_items_are_counted() {
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput;
        use aws_sdk_dynamodb::types::{TransactWriteItem, Update};
        let update = Update::builder()
            .table_name("sends")
            .key("sendId", aws_sdk_dynamodb::types::AttributeValue::S("a".into()))
            .update_expression("SET s = :s")
            .build()
            .unwrap();
        let item = TransactWriteItem::builder().update(update).build();
        let input = TransactWriteItemsInput::builder()
            .transact_items(item.clone())
            .transact_items(item)
            .build()
            .unwrap();
        let mut input = Input::erase(input);
        assert_eq!(ask_for_units(&mut input), Some((2, true)));
        let input = input.downcast_ref::<TransactWriteItemsInput>().unwrap();
        assert_eq!(input.return_consumed_capacity, Some(ReturnConsumedCapacity::Indexes));
        let mut not_dynamodb = Input::erase(
            aws_sdk_sqs::operation::receive_message::ReceiveMessageInput::builder()
                .build()
                .unwrap(),
        );
        assert_eq!(ask_for_units(&mut not_dynamodb), None);
    }

    #[test]
    fn an_email_counts_every_recipient_it_is_addressed_to() {
        use aws_sdk_sesv2::operation::send_email::SendEmailInput;
        use aws_sdk_sesv2::types::Destination;
        let to = Destination::builder()
            .to_addresses("a@example.com")
            .bcc_addresses("b@example.com")
            .build();
        let input = Input::erase(SendEmailInput::builder().destination(to).build().unwrap());
        assert_eq!(recipients(&input), Some(2));
        let raw = aws_sdk_ses::operation::send_raw_email::SendRawEmailInput::builder()
            .build()
            .unwrap();
        assert_eq!(recipients(&Input::erase(raw)), Some(1));
    }
}
