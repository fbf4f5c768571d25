//! What the pipeline's AWS calls consumed, in the units AWS bills them in.
//!
//! The engine meters every call that reaches a service (see
//! `engine::metering`); the reports price the totals with a price card.
//! Counting and pricing are apart so one run can be priced with any card.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What one operation (`Service.Operation`) consumed during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// Calls that reached the service, every retry counted; answers a fault
    /// plan gave in the service's place are not.
    pub calls: u64,
    /// Billable requests: SQS counts each started 64 KiB of a request or of
    /// its answer as one; other services count calls.
    pub requests: u64,
    /// SQS receives that returned no message (billed like any request).
    pub empty_receives: u64,
    /// DynamoDB read request units, indexes included.
    pub read_units: f64,
    /// DynamoDB write request units, indexes and transactions' double rate included.
    pub write_units: f64,
    /// Of the units above, those spent on global secondary indexes.
    pub index_units: f64,
    /// Recipients of the emails SES accepted.
    pub recipients: u64,
    /// Bytes of the requests (an email's raw size, an object's size).
    pub bytes_sent: u64,
    /// Bytes of the answers.
    pub bytes_received: u64,
}

impl Usage {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Usage) {
        self.calls += other.calls;
        self.requests += other.requests;
        self.empty_receives += other.empty_receives;
        self.read_units += other.read_units;
        self.write_units += other.write_units;
        self.index_units += other.index_units;
        self.recipients += other.recipients;
        self.bytes_sent += other.bytes_sent;
        self.bytes_received += other.bytes_received;
    }
}

/// Usage per operation, keyed by `Service.Operation`.
pub type UsageByOperation = BTreeMap<String, Usage>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_adds_field_by_field_and_reads_back_from_json() {
        let mut total = Usage {
            calls: 1,
            requests: 2,
            write_units: 1.5,
            ..Usage::default()
        };
        total.add(&Usage {
            calls: 2,
            requests: 2,
            write_units: 2.0,
            index_units: 1.0,
            recipients: 3,
            ..Usage::default()
        });
        assert_eq!(total.calls, 3);
        assert_eq!(total.requests, 4);
        assert_eq!(total.write_units, 3.5);
        assert_eq!(total.index_units, 1.0);
        assert_eq!(total.recipients, 3);
        let json = serde_json::to_string(&total).unwrap();
        assert_eq!(serde_json::from_str::<Usage>(&json).unwrap(), total);
        // Older files without some fields still load.
        assert_eq!(serde_json::from_str::<Usage>(r#"{"calls":7}"#).unwrap().calls, 7);
    }
}
