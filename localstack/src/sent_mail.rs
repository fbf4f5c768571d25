//! The emulators' record of the email they accepted, for exactly-once checks.
//!
//! LocalStack lists SES v1 mail at `GET /_aws/ses`; moto keeps SES v2 mail in
//! its SES backend, listed by `GET /moto-api/data.json`.

use serde_json::Value;

use crate::{Service, Stack, StackError};

/// One email as an emulator recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentEmail {
    pub message_id: String,
    pub source: String,
    pub to: Vec<String>,
    /// `None` for raw (MIME) messages, whose subject lives in `raw`.
    pub subject: Option<String>,
    pub raw: Option<String>,
    /// Which emulator recorded it: `ses` (LocalStack) or `sesv2` (moto).
    pub recorded_by: &'static str,
}

impl Stack {
    /// Every email the stack's SES emulators accepted. An error on real AWS.
    pub async fn sent_emails(&self) -> Result<Vec<SentEmail>, StackError> {
        if !self.is_emulated() {
            return Err(StackError::Config("real AWS keeps no sent-mail record to read".into()));
        }
        let client = reqwest::Client::new();
        let mut all = Vec::new();
        if let Some(url) = self.endpoint(Service::Ses) {
            let body = fetch_json(&client, &format!("{url}/_aws/ses")).await?;
            all.extend(parse_localstack(&body));
        }
        if let Some(url) = self.endpoint(Service::SesV2) {
            if Some(url) != self.endpoint(Service::Ses) {
                let body = fetch_json(&client, &format!("{url}/moto-api/data.json")).await?;
                all.extend(parse_moto(&body));
            }
        }
        Ok(all)
    }
}

async fn fetch_json(client: &reqwest::Client, url: &str) -> Result<Value, StackError> {
    let fail = |reason: String| StackError::SentMail {
        endpoint: url.to_string(),
        reason,
    };
    let response = client.get(url).send().await.map_err(|e| fail(e.to_string()))?;
    if !response.status().is_success() {
        return Err(fail(format!("HTTP {}", response.status())));
    }
    response.json().await.map_err(|e| fail(e.to_string()))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

fn parse_localstack(body: &Value) -> Vec<SentEmail> {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| SentEmail {
            message_id: m["Id"].as_str().unwrap_or_default().to_string(),
            source: m["Source"].as_str().unwrap_or_default().to_string(),
            to: strings(&m["Destination"]["ToAddresses"]),
            subject: m["Subject"].as_str().map(str::to_string),
            raw: m["RawData"].as_str().map(str::to_string),
            recorded_by: "ses",
        })
        .collect()
}

fn parse_moto(body: &Value) -> Vec<SentEmail> {
    let ses = &body["ses"];
    let simple = ses["Message"].as_array().into_iter().flatten().map(|m| SentEmail {
        message_id: m["id"].as_str().unwrap_or_default().to_string(),
        source: m["source"].as_str().unwrap_or_default().to_string(),
        to: strings(&m["destinations"]["ToAddresses"]),
        subject: m["subject"].as_str().map(str::to_string),
        raw: None,
        recorded_by: "sesv2",
    });
    let raw = ses["RawMessage"].as_array().into_iter().flatten().map(|m| SentEmail {
        message_id: m["id"].as_str().unwrap_or_default().to_string(),
        source: m["source"].as_str().unwrap_or_default().to_string(),
        to: strings(&m["destinations"]),
        subject: None,
        raw: m["raw_data"].as_str().map(str::to_string),
        recorded_by: "sesv2",
    });
    simple.chain(raw).collect()
}
