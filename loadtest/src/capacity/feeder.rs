//! Keeps a backlog ahead of the senders through the real ingest API.
//!
//! The requests are the scenario's own (its campaign and notification mix,
//! regenerated with a new seed each time they run out); their timing is not:
//! a request goes out whenever fewer messages than the backlog target are
//! accepted but unfinished, so the senders, not the feeder, set the pace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::domain::Priority;
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

/// Accepted and neither SENT nor ERROR yet.
fn unfinished(pipeline: &Pipeline) -> u64 {
    let metrics = pipeline.metrics();
    let finished: u64 = Priority::ALL
        .iter()
        .map(|&p| metrics.counts(p).sent + metrics.counts(p).errors)
        .sum();
    metrics.accepted().saturating_sub(finished)
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
    let connections = (0..CONNECTIONS).map(|_| {
        let (client, base_url, pipeline) = (client.clone(), base_url.clone(), pipeline.clone());
        let (requests, backlog, stop) = (requests.clone(), backlog.clone(), stop.clone());
        async move {
            let mut fed = Fed::default();
            loop {
                while unfinished(&pipeline) >= backlog.load(Ordering::Relaxed) {
                    tokio::select! {
                        _ = stop.cancelled() => return fed,
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    }
                }
                if stop.is_cancelled() {
                    return fed;
                }
                let request = requests.lock().expect("request source lock").next();
                let Some(request) = request else { return fed };
                fed.requests += 1;
                fed.refused += u64::from(!post(&client, &base_url, request).await);
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

/// The scenario's requests, over and over, each round from the next seed.
fn endless(mut scenario: Scenario) -> Box<dyn Iterator<Item = Request> + Send> {
    Box::new(
        std::iter::repeat_with(move || {
            scenario.seed = scenario.seed.wrapping_add(1);
            scenarios::generate(&scenario).arrivals.into_iter().map(|a| a.request)
        })
        .flatten(),
    )
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
