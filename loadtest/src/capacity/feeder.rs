//! Keeps a backlog ahead of the senders through the real ingest API.
//!
//! The requests are the scenario's own (its campaign and notification mix,
//! regenerated with a new seed each time they run out); their timing is not:
//! a request goes out whenever fewer messages than the backlog target are
//! posted but unfinished, so the senders, not the feeder, set the pace.
//!
//! A campaign counts from the moment it is posted ([`Ledger`]), not once the
//! engine has read its rows: the engine reads them in the background, and
//! counting only accepted rows let the feeder post campaign after campaign
//! before the first was read (strace of the local DynamoDB on 2026-12-05: 339
//! `BatchWriteItem`s of 25 rows in 2 s, then almost none), so a step measured
//! bursts of ingest and then bursts of sends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::pipeline::Pipeline;
use scenarios::{Request, Scenario};
use tokio_util::sync::CancellationToken;

use crate::driver::campaign_form;

/// Requests in flight at once.
const CONNECTIONS: usize = 8;

/// What the feeder did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Fed {
    pub requests: u64,
    /// Requests the API did not answer 202 (there should be none).
    pub refused: u64,
}

/// Feeds until `stop`; `backlog` is the target, changed by the caller per step.
pub async fn feed(
    scenario: Scenario,
    base_url: String,
    pipeline: Pipeline,
    backlog: Arc<AtomicU64>,
    stop: CancellationToken,
) -> Fed {
    let client = reqwest::Client::new();
    let requests = Arc::new(Mutex::new(endless(scenario)));
    let ledger = Arc::new(Ledger::default());
    let connections = (0..CONNECTIONS).map(|_| {
        let (client, base_url, pipeline) = (client.clone(), base_url.clone(), pipeline.clone());
        let (requests, backlog, stop, ledger) = (requests.clone(), backlog.clone(), stop.clone(), ledger.clone());
        async move {
            let mut fed = Fed::default();
            loop {
                let request = requests.lock().expect("request source lock").next();
                let Some(request) = request else { return fed };
                let messages = request.expected_messages();
                loop {
                    let finished = pipeline.metrics().counters().finished();
                    if ledger.reserve(messages, finished, backlog.load(Ordering::Relaxed)) {
                        break;
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return fed,
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    }
                }
                if stop.is_cancelled() {
                    return fed;
                }
                fed.requests += 1;
                if !post(&client, &base_url, request).await {
                    fed.refused += 1;
                    ledger.release(messages);
                }
            }
        }
    });
    futures::future::join_all(connections)
        .await
        .into_iter()
        .fold(Fed::default(), |total, one| Fed {
            requests: total.requests + one.requests,
            refused: total.refused + one.refused,
        })
}

/// The messages the feeder's requests should lead to, counted when posted.
#[derive(Debug, Default)]
struct Ledger {
    posted: AtomicU64,
}

impl Ledger {
    /// Counts `messages` as posted if fewer than `target` of those posted so
    /// far are unfinished (`finished` of them are); says whether it did.
    fn reserve(&self, messages: u64, finished: u64, target: u64) -> bool {
        let before = self.posted.fetch_add(messages, Ordering::SeqCst);
        if before.saturating_sub(finished) < target {
            return true;
        }
        self.release(messages);
        false
    }

    /// Takes back a reservation whose request the API refused.
    fn release(&self, messages: u64) {
        self.posted.fetch_sub(messages, Ordering::SeqCst);
    }
}

/// The scenario's requests, over and over, each round from the next seed and
/// [`interleave`]d, so that any stretch of the feed has the scenario's mix.
fn endless(mut scenario: Scenario) -> Box<dyn Iterator<Item = Request> + Send> {
    Box::new(
        std::iter::repeat_with(move || {
            scenario.seed = scenario.seed.wrapping_add(1);
            let requests = scenarios::generate(&scenario).arrivals.into_iter().map(|a| a.request);
            interleave(requests.collect())
        })
        .flatten(),
    )
}

/// Campaigns and notifications merged in proportion to the messages each
/// carries. A plan is ordered by time, and a scenario may upload its campaigns
/// early and send notifications throughout; fed in that order, one step of the
/// ladder would measure campaign rows and the next notifications, which cost
/// the pipeline different amounts. Each request is placed at the middle of
/// its share of its own stream's messages.
pub fn interleave(requests: Vec<Request>) -> Vec<Request> {
    let (campaigns, notifications): (Vec<_>, Vec<_>) = requests
        .into_iter()
        .partition(|r| matches!(r, Request::Campaign { .. }));
    let placed = |stream: Vec<Request>| {
        let total = stream.iter().map(Request::expected_messages).sum::<u64>().max(1) as f64;
        let mut before = 0.0;
        stream
            .into_iter()
            .map(|request| {
                let messages = request.expected_messages() as f64;
                let position = (before + messages / 2.0) / total;
                before += messages;
                (position, request)
            })
            .collect::<Vec<_>>()
    };
    let mut merged = placed(campaigns);
    merged.extend(placed(notifications));
    merged.sort_by(|a, b| a.0.total_cmp(&b.0));
    merged.into_iter().map(|(_, request)| request).collect()
}

/// Posts one request; says whether the API accepted it (202).
async fn post(client: &reqwest::Client, base_url: &str, request: Request) -> bool {
    let builder = match request {
        Request::Campaign {
            file_name,
            csv,
            attachments,
            ..
        } => client
            .post(format!("{base_url}/campaigns/upload"))
            .multipart(campaign_form(file_name, csv, attachments)),
        Request::Notification { body, .. } => client.post(format!("{base_url}/notifications")).json(&body),
    };
    match builder.send().await {
        Ok(response) if response.status().as_u16() == 202 => true,
        Ok(response) => {
            tracing::warn!(status = %response.status(), "the capacity feeder's request was refused");
            false
        }
        Err(error) => {
            tracing::warn!(%error, "the capacity feeder's request failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::domain::MessageKind;

    fn campaign(rows: u64) -> Request {
        Request::Campaign {
            file_name: "c.csv".into(),
            csv: Vec::new(),
            attachments: Vec::new(),
            valid_rows: rows,
            duplicate_rows: 0,
            invalid_rows: 0,
        }
    }

    fn notification() -> Request {
        Request::Notification {
            kind: MessageKind::Reminder,
            body: serde_json::Value::Null,
        }
    }

    #[test]
    fn a_campaign_counts_from_its_post_so_no_second_one_goes_before_the_engine_has_read_the_first() {
        let ledger = Ledger::default();
        assert!(ledger.reserve(250, 0, 200), "nothing outstanding");
        // The engine has not read a row of it yet; it still counts.
        assert!(!ledger.reserve(250, 0, 200));
        assert!(!ledger.reserve(1, 0, 200), "not even one notification");
        // 100 of the campaign's messages are finished: 150 outstanding.
        assert!(ledger.reserve(1, 100, 200));
        // A refused request gives its room back.
        ledger.release(1);
        assert_eq!(ledger.posted.load(Ordering::SeqCst), 250);
    }

    #[test]
    fn campaigns_sent_first_in_time_are_spread_through_the_notifications() {
        // Two 100-row campaigns up front, then 200 notifications: 400 messages, half each.
        let mut plan = vec![campaign(100), campaign(100)];
        plan.extend((0..200).map(|_| notification()));
        let fed = interleave(plan);
        let at: Vec<usize> = fed
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r, Request::Campaign { .. }))
            .map(|(i, _)| i)
            .collect();
        // Each campaign sits in the middle of its half of the notifications.
        assert_eq!(at.len(), 2);
        assert!((45..=55).contains(&at[0]), "{at:?}");
        assert!((145..=155).contains(&at[1]), "{at:?}");
    }
}
