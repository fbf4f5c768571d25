//! What a run would cost on AWS: the metered usage (`vocabulary::Usage`, per
//! operation) priced with a dated, editable price card
//! (`pricing/aws-us-east-1.toml`).
//!
//! Pricing is a pure function of the usage and the card, so a finished run
//! can be priced again with other prices (`reports cost`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use vocabulary::{AwsService, Usage, UsageByOperation};

/// The card every run is priced with unless told otherwise.
pub const DEFAULT_CARD: &str = include_str!("../../pricing/aws-us-east-1.toml");

/// What AWS bills, as the card names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Billed {
    SqsRequests,
    DynamodbWriteUnits,
    DynamodbReadUnits,
    SesRecipients,
    SesGigabytes,
    S3PutRequests,
    S3GetRequests,
}

impl Billed {
    /// How much of this item one operation's usage amounts to.
    fn quantity(self, operation: &str, usage: &Usage) -> f64 {
        let service = AwsService::of_label(operation);
        let name = operation.split_once('.').map_or("", |(_, name)| name);
        let s3_get_class = name.starts_with("Get") || name.starts_with("Head");
        let s3_free = name.starts_with("Delete");
        match (self, service) {
            (Billed::SqsRequests, Some(AwsService::Sqs)) => usage.requests as f64,
            (Billed::DynamodbWriteUnits, Some(AwsService::DynamoDb)) => usage.write_units,
            (Billed::DynamodbReadUnits, Some(AwsService::DynamoDb)) => usage.read_units,
            (Billed::SesRecipients, Some(AwsService::Ses | AwsService::Sesv2)) => usage.recipients as f64,
            (Billed::SesGigabytes, Some(AwsService::Ses | AwsService::Sesv2)) if usage.recipients > 0 => {
                usage.bytes_sent as f64 / 1e9
            }
            (Billed::S3PutRequests, Some(AwsService::S3)) if !s3_get_class && !s3_free => usage.requests as f64,
            (Billed::S3GetRequests, Some(AwsService::S3)) if s3_get_class => usage.requests as f64,
            _ => 0.0,
        }
    }
}

/// One priced item of a card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub item: Billed,
    /// What the line prices, for a reader.
    pub what: String,
    /// USD per `per` units.
    pub usd: f64,
    pub per: f64,
    /// When the price was read, and where.
    pub as_of: String,
    pub source: String,
}

/// A price card: which prices, as of when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceCard {
    pub name: String,
    pub price: Vec<Price>,
}

#[derive(Debug, thiserror::Error)]
pub enum PriceCardError {
    #[error("cannot read the price card {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the price card {path} is not valid")]
    Parse {
        path: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("the price card {path}: {item:?} costs {usd} per {per}; both must be finite, the price ≥ 0 and `per` > 0")]
    Invalid {
        path: String,
        item: Billed,
        usd: f64,
        per: f64,
    },
}

impl PriceCard {
    /// The card in `pricing/aws-us-east-1.toml`, as built into the binary.
    pub fn builtin() -> Self {
        Self::parse(DEFAULT_CARD, "pricing/aws-us-east-1.toml").expect("the built-in price card is valid")
    }

    pub fn load(path: &Path) -> Result<Self, PriceCardError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PriceCardError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    pub fn parse(text: &str, path: &str) -> Result<Self, PriceCardError> {
        let card: PriceCard = toml::from_str(text).map_err(|source| PriceCardError::Parse {
            path: path.to_string(),
            source,
        })?;
        if let Some(bad) = card
            .price
            .iter()
            .find(|p| !(p.usd.is_finite() && p.usd >= 0.0 && p.per.is_finite() && p.per > 0.0))
        {
            return Err(PriceCardError::Invalid {
                path: path.to_string(),
                item: bad.item,
                usd: bad.usd,
                per: bad.per,
            });
        }
        Ok(card)
    }

    /// The oldest `as_of` of its lines: how current the card is.
    pub fn as_of(&self) -> &str {
        self.price.iter().map(|p| p.as_of.as_str()).min().unwrap_or("")
    }

    fn usd(&self, operation: &str, usage: &Usage) -> f64 {
        self.price
            .iter()
            .map(|p| p.item.quantity(operation, usage) * p.usd / p.per)
            .sum()
    }
}

/// One line of a run's bill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostLine {
    pub item: Billed,
    pub what: String,
    pub quantity: f64,
    pub usd: f64,
}

/// What a run would cost on AWS, priced with one card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// The card's name and its oldest price date.
    pub price_card: String,
    pub as_of: String,
    pub total_usd: f64,
    /// Messages delivered (SENT) in the run; the per-1,000 figure divides by it.
    pub messages: u64,
    pub per_1000_messages_usd: Option<f64>,
    pub lines: Vec<CostLine>,
    pub by_service_usd: BTreeMap<String, f64>,
    pub by_operation_usd: BTreeMap<String, f64>,
}

/// Prices `usage` with `card`; `messages` delivered gives the per-1,000 figure.
pub fn price(usage: &UsageByOperation, card: &PriceCard, messages: u64) -> Cost {
    let lines: Vec<CostLine> = card
        .price
        .iter()
        .map(|p| {
            let quantity: f64 = usage.iter().map(|(op, u)| p.item.quantity(op, u)).sum();
            CostLine {
                item: p.item,
                what: p.what.clone(),
                quantity,
                usd: quantity * p.usd / p.per,
            }
        })
        .collect();
    let by_operation_usd: BTreeMap<String, f64> = usage
        .iter()
        .map(|(op, u)| (op.clone(), card.usd(op, u)))
        .filter(|(_, usd)| *usd > 0.0)
        .collect();
    let mut by_service_usd = BTreeMap::new();
    for (op, usd) in &by_operation_usd {
        let service = AwsService::of_label(op).map_or("other", AwsService::as_str);
        *by_service_usd.entry(service.to_string()).or_insert(0.0) += usd;
    }
    let total_usd = lines.iter().map(|l| l.usd).sum();
    Cost {
        price_card: card.name.clone(),
        as_of: card.as_of().to_string(),
        total_usd,
        messages,
        per_1000_messages_usd: (messages > 0).then(|| total_usd * 1000.0 / messages as f64),
        lines,
        by_service_usd,
        by_operation_usd,
    }
}

/// The bill as a terminal table.
pub fn to_text(cost: &Cost) -> String {
    use std::fmt::Write as _;
    let mut text = format!("Priced with {} (prices as of {})\n", cost.price_card, cost.as_of);
    for line in cost.lines.iter().filter(|l| l.quantity > 0.0) {
        let _ = writeln!(
            text,
            "  {:>14.3}  {:>12}  {}",
            line.quantity,
            crate::summary::usd(line.usd),
            line.what
        );
    }
    let _ = writeln!(text, "  {:>14}  {:>12}  total", "", crate::summary::usd(cost.total_usd));
    if let Some(per_1000) = cost.per_1000_messages_usd {
        let _ = writeln!(
            text,
            "  {:>14}  {:>12}  per 1,000 messages sent ({} sent)",
            "",
            crate::summary::usd(per_1000),
            cost.messages
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(entries: &[(&str, Usage)]) -> UsageByOperation {
        entries.iter().map(|(op, u)| (op.to_string(), *u)).collect()
    }

    #[test]
    fn the_built_in_card_prices_every_item_and_is_dated() {
        let card = PriceCard::builtin();
        for item in [
            Billed::SqsRequests,
            Billed::DynamodbWriteUnits,
            Billed::DynamodbReadUnits,
            Billed::SesRecipients,
            Billed::SesGigabytes,
            Billed::S3PutRequests,
            Billed::S3GetRequests,
        ] {
            let line = card.price.iter().find(|p| p.item == item).expect("priced");
            assert!(!line.as_of.is_empty() && !line.source.is_empty(), "{item:?}");
        }
    }

    #[test]
    fn a_million_of_each_unit_costs_what_the_card_says() {
        let card = PriceCard::builtin();
        let million = usage(&[
            (
                "SQS.SendMessage",
                Usage {
                    calls: 1_000_000,
                    requests: 1_000_000,
                    ..Usage::default()
                },
            ),
            (
                "DynamoDB.UpdateItem",
                Usage {
                    calls: 1,
                    write_units: 1e6,
                    ..Usage::default()
                },
            ),
            (
                "DynamoDB.Query",
                Usage {
                    calls: 1,
                    read_units: 1e6,
                    ..Usage::default()
                },
            ),
            (
                "SESv2.SendEmail",
                Usage {
                    calls: 1_000_000,
                    recipients: 1_000_000,
                    ..Usage::default()
                },
            ),
            (
                "S3.PutObject",
                Usage {
                    calls: 1000,
                    requests: 1000,
                    ..Usage::default()
                },
            ),
            (
                "S3.GetObject",
                Usage {
                    calls: 1000,
                    requests: 1000,
                    ..Usage::default()
                },
            ),
            (
                "S3.DeleteObject",
                Usage {
                    calls: 1000,
                    requests: 1000,
                    ..Usage::default()
                },
            ),
        ]);
        let cost = price(&million, &card, 1_000_000);
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        assert!(close(cost.by_service_usd["SQS"], 0.40));
        assert!(close(cost.by_service_usd["DynamoDB"], 0.625 + 0.125));
        assert!(close(cost.by_service_usd["SESv2"], 100.0));
        assert!(close(cost.by_service_usd["S3"], 0.005 + 0.0004), "deletes are free");
        assert!(close(cost.total_usd, 0.40 + 0.75 + 100.0 + 0.0054));
        assert!(close(cost.per_1000_messages_usd.unwrap(), cost.total_usd / 1000.0));
        let by_lines: f64 = cost.lines.iter().map(|l| l.usd).sum();
        let by_operations: f64 = cost.by_operation_usd.values().sum();
        assert!(
            close(by_lines, by_operations),
            "lines and operations add up to the same total"
        );
    }

    #[test]
    fn an_email_s_bytes_are_billed_only_for_sends_ses_accepted() {
        let card = PriceCard::builtin();
        let sent = Usage {
            calls: 1,
            recipients: 1,
            bytes_sent: 2_000_000_000,
            ..Usage::default()
        };
        let refused = Usage {
            calls: 1,
            bytes_sent: 2_000_000_000,
            ..Usage::default()
        };
        let cost = price(&usage(&[("SESv2.SendEmail", sent)]), &card, 1);
        assert!((cost.total_usd - (0.0001 + 0.24)).abs() < 1e-9, "{cost:?}");
        assert_eq!(price(&usage(&[("SESv2.SendEmail", refused)]), &card, 0).total_usd, 0.0);
        assert_eq!(price(&UsageByOperation::new(), &card, 0).per_1000_messages_usd, None);
    }

    #[test]
    fn a_card_with_a_typo_or_a_negative_price_is_refused_naming_it() {
        let typo = "name = \"x\"\n[[price]]\nitem = \"sqs_request\"\nwhat = \"\"\nusd = 1\nper = 1\nas_of = \"\"\nsource = \"\"\n";
        let error = PriceCard::parse(typo, "card.toml").unwrap_err();
        assert!(matches!(error, PriceCardError::Parse { .. }), "{error}");
        let negative = typo
            .replace("sqs_request", "sqs_requests")
            .replace("usd = 1", "usd = -1");
        let error = PriceCard::parse(&negative, "card.toml").unwrap_err();
        assert!(
            error.to_string().contains("card.toml") && error.to_string().contains("SqsRequests"),
            "{error}"
        );
    }
}
