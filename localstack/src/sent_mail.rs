//! The emulators' record of the email they accepted, for exactly-once checks.
//!
//! LocalStack lists SES v1 mail at `GET /_aws/ses`. Either SES v2 emulator
//! lists its mail a page at a time at `GET /courier/sent`, a route the stack
//! adds to each (`courier_ses.js` for aws-ses-v2-local, `courier_moto.py` for
//! moto, whose own `/moto-api/data.json` dumps every backend whole). The
//! stack's SMTP server lists what it accepted at `GET <control>/messages`.

use serde_json::Value;
use vocabulary::MailerKind;

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
    /// Which emulator recorded it: `ses` (LocalStack), `sesv2` (aws-ses-v2-local or moto) or `smtp`.
    pub recorded_by: MailerKind,
}

/// Sent mails read from the SES v2 emulator per request.
const SES_V2_PAGE: usize = 10_000;

/// How much of each email [`Stack::each_sent_email`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailDetail {
    /// Ids, sender, recipients and subject: enough to count, cheap at a million.
    Recipients,
    /// Raw MIME messages too.
    Whole,
}

impl Stack {
    /// Every email the stack's SES emulators accepted. An error on real AWS.
    pub async fn sent_emails(&self) -> Result<Vec<SentEmail>, StackError> {
        let mut all = Vec::new();
        self.each_sent_email(MailDetail::Whole, |email| all.push(email)).await?;
        Ok(all)
    }

    /// Visits every email the stack's emulators accepted. The SES v2 record
    /// (the default mailer) is read a page at a time, so a million sent mails
    /// are never in memory at once; a caller that keeps only counts stays small.
    pub async fn each_sent_email(
        &self,
        detail: MailDetail,
        mut visit: impl FnMut(SentEmail),
    ) -> Result<(), StackError> {
        if !self.is_emulated() {
            return Err(StackError::Config("real AWS keeps no sent-mail record to read".into()));
        }
        let client = reqwest::Client::new();
        if let Some(url) = self.endpoint(Service::Ses) {
            let body = fetch_json(&client, &format!("{url}/_aws/ses")).await?;
            parse_localstack(&body).into_iter().for_each(&mut visit);
        }
        if let Some(url) = self.endpoint(Service::SesV2) {
            if Some(url) != self.endpoint(Service::Ses) {
                let mut after = 0;
                loop {
                    let raw = u8::from(detail == MailDetail::Whole);
                    let page = format!("{url}/courier/sent?after={after}&limit={SES_V2_PAGE}&raw={raw}");
                    let body = fetch_json(&client, &page).await?;
                    parse_ses_v2(&body).into_iter().for_each(&mut visit);
                    match body["next"].as_u64() {
                        Some(next) => after = next,
                        None => break,
                    }
                }
            }
        }
        if let Some(smtp) = self.smtp() {
            let body = fetch_json(&client, &format!("{}/messages", smtp.control_url)).await?;
            parse_smtp(&body).into_iter().for_each(&mut visit);
        }
        Ok(())
    }
}

async fn fetch_json(client: &reqwest::Client, url: &str) -> Result<Value, StackError> {
    let fail = |reason: String| StackError::SentMail {
        endpoint: url.to_string(),
        reason,
    };
    let response = client.get(url).send().await.map_err(|e| fail(e.to_string()))?;
    // LocalStack registers /_aws/ses when its SES provider first loads: before any
    // SES call there is no route, and no mail.
    if response.status() == reqwest::StatusCode::NOT_FOUND && url.ends_with("/_aws/ses") {
        return Ok(serde_json::json!({ "messages": [] }));
    }
    if !response.status().is_success() {
        return Err(fail(format!("HTTP {}", response.status())));
    }
    response.json().await.map_err(|e| fail(e.to_string()))
}

/// One message reaches each address once, however often a record lists it
/// (moto adds a raw message's `To:` header to the destinations it was given).
fn distinct(addresses: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    addresses
        .into_iter()
        .filter(|a| seen.insert(a.to_ascii_lowercase()))
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// The `To:` addresses of a raw MIME message (LocalStack records no
/// destination for raw sends).
fn raw_recipients(raw: &str) -> Vec<String> {
    let headers = raw.split("\r\n\r\n").next().unwrap_or_default();
    headers
        .split("\r\n")
        .filter_map(|line| line.strip_prefix("To:"))
        .flat_map(|list| list.split(','))
        .map(|entry| {
            let entry = entry.trim();
            match (entry.find('<'), entry.rfind('>')) {
                (Some(open), Some(close)) if open < close => entry[open + 1..close].to_string(),
                _ => entry.to_string(),
            }
        })
        .filter(|address| !address.is_empty())
        .collect()
}

fn parse_localstack(body: &Value) -> Vec<SentEmail> {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let raw = m["RawData"].as_str().map(str::to_string);
            let mut to = strings(&m["Destination"]["ToAddresses"]);
            if to.is_empty() {
                to = raw.as_deref().map(raw_recipients).unwrap_or_default();
            }
            SentEmail {
                message_id: m["Id"].as_str().unwrap_or_default().to_string(),
                source: m["Source"].as_str().unwrap_or_default().to_string(),
                to: distinct(to),
                subject: m["Subject"].as_str().map(str::to_string),
                raw,
                recorded_by: MailerKind::Ses,
            }
        })
        .collect()
}

fn parse_ses_v2(body: &Value) -> Vec<SentEmail> {
    let ses = &body["ses"];
    let simple = ses["Message"].as_array().into_iter().flatten().map(|m| SentEmail {
        message_id: m["id"].as_str().unwrap_or_default().to_string(),
        source: m["source"].as_str().unwrap_or_default().to_string(),
        to: distinct(strings(&m["destinations"]["ToAddresses"])),
        subject: m["subject"].as_str().map(str::to_string),
        raw: None,
        recorded_by: MailerKind::Sesv2,
    });
    let raw = ses["RawMessage"].as_array().into_iter().flatten().map(|m| SentEmail {
        message_id: m["id"].as_str().unwrap_or_default().to_string(),
        source: m["source"].as_str().unwrap_or_default().to_string(),
        to: distinct(strings(&m["destinations"])),
        subject: None,
        raw: m["raw_data"].as_str().map(str::to_string),
        recorded_by: MailerKind::Sesv2,
    });
    simple.chain(raw).collect()
}

fn parse_smtp(body: &Value) -> Vec<SentEmail> {
    body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| SentEmail {
            message_id: m["id"].as_str().unwrap_or_default().to_string(),
            source: m["from"].as_str().unwrap_or_default().to_string(),
            to: distinct(strings(&m["to"])),
            subject: None,
            raw: m["raw"].as_str().map(str::to_string),
            recorded_by: MailerKind::Smtp,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_read_from_a_raw_message_when_no_destination_is_recorded() {
        let raw = "From: a@example.com\r\nTo: \"Ann\" <ann@example.com>, bob@example.com\r\nSubject: x\r\n\r\nTo: not-a-header@example.com\r\n";
        assert_eq!(raw_recipients(raw), vec!["ann@example.com", "bob@example.com"]);
        let body = serde_json::json!({ "messages": [{ "Id": "1", "Source": "a@example.com", "RawData": raw }] });
        assert_eq!(
            parse_localstack(&body)[0].to,
            vec!["ann@example.com", "bob@example.com"]
        );
    }

    #[test]
    fn a_raw_message_that_moto_lists_twice_counts_once_per_recipient() {
        let body = serde_json::json!({ "ses": { "RawMessage": [{
            "id": "m1", "source": "a@example.com",
            "destinations": ["Ann@example.com", "ann@example.com"], "raw_data": "To: ann@example.com\r\n\r\nx"
        }] } });
        assert_eq!(parse_ses_v2(&body)[0].to, vec!["Ann@example.com"]);
    }
}
