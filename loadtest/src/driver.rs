//! Drives the ingest API with goose, as an open model.
//!
//! Goose runs a closed model (users loop over transactions), so arrivals are
//! decoupled from users: every user takes the next arrival from one shared
//! schedule, waits for its intended time and makes the request. A request that
//! starts later than the tolerance is counted as late (the users could not
//! keep up), and its latency is measured from the intended time, so slowness
//! in the harness is never hidden (coordinated omission).

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use goose::config::GooseConfiguration;
use goose::prelude::*;
use scenarios::{Arrival, Request};
use serde_json::Value;

/// What became of one arrival.
#[derive(Debug, Clone)]
pub struct RequestOutcome {
    pub index: usize,
    pub intended_secs: f64,
    pub started_secs: f64,
    pub is_campaign: bool,
    pub status: Option<u16>,
    pub response: Option<Value>,
    pub error: Option<String>,
}

/// The shared schedule and what the users made of it.
pub struct Driver {
    arrivals: Vec<Arrival>,
    next: AtomicUsize,
    start: Instant,
    traffic: Duration,
    lateness_tolerance: Duration,
    late: AtomicU64,
    outcomes: Mutex<Vec<RequestOutcome>>,
    api_key: Option<String>,
}

impl Driver {
    pub fn new(arrivals: Vec<Arrival>, start: Instant, traffic: Duration, api_key: Option<String>) -> Arc<Self> {
        Arc::new(Self {
            arrivals,
            next: AtomicUsize::new(0),
            start,
            traffic,
            lateness_tolerance: Duration::from_millis(100),
            late: AtomicU64::new(0),
            outcomes: Mutex::new(Vec::new()),
            api_key,
        })
    }

    pub fn started(&self) -> usize {
        self.next.load(Ordering::Relaxed).min(self.arrivals.len())
    }

    pub fn total(&self) -> usize {
        self.arrivals.len()
    }

    pub fn late_starts(&self) -> u64 {
        self.late.load(Ordering::Relaxed)
    }

    pub fn outcomes(&self) -> Vec<RequestOutcome> {
        let mut outcomes = self.outcomes.lock().expect("outcomes lock").clone();
        outcomes.sort_by_key(|o| o.index);
        outcomes
    }

    pub fn arrival(&self, index: usize) -> &Arrival {
        &self.arrivals[index]
    }

    /// The outcome of arrival `index` as its request starts, now.
    fn starting(&self, index: usize) -> RequestOutcome {
        let arrival = &self.arrivals[index];
        RequestOutcome {
            index,
            intended_secs: arrival.at_secs,
            started_secs: self.start.elapsed().as_secs_f64(),
            is_campaign: matches!(arrival.request, Request::Campaign { .. }),
            status: None,
            response: None,
            error: None,
        }
    }

    /// Messages the API has said it accepted so far.
    pub fn accepted_so_far(&self) -> u64 {
        self.outcomes
            .lock()
            .expect("outcomes lock")
            .iter()
            .map(accepted_by)
            .sum()
    }

    async fn next_arrival(self: &Arc<Self>, user: &mut GooseUser) -> TransactionResult {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        let Some(arrival) = self.arrivals.get(index) else {
            // Schedule done: idle, never spin (goose calls this again at once and records each call).
            self.next.fetch_sub(1, Ordering::Relaxed);
            let end = self.start + self.traffic;
            let idle = end
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(250));
            tokio::time::sleep(idle.min(Duration::from_secs(1))).await;
            return Ok(());
        };
        let intended = self.start + Duration::from_secs_f64(arrival.at_secs);
        let now = Instant::now();
        if intended > now {
            tokio::time::sleep(intended - now).await;
        } else if now - intended > self.lateness_tolerance {
            self.late.fetch_add(1, Ordering::Relaxed);
        }
        let mut outcome = self.starting(index);
        let result = self.send(user, &arrival.request).await;
        match result {
            Ok((status, body)) => {
                outcome.status = Some(status);
                outcome.response = body;
            }
            Err(error) => outcome.error = Some(error),
        }
        let failed = outcome.status.is_none_or(|s| s >= 300);
        let error_text = outcome
            .error
            .clone()
            .unwrap_or_else(|| format!("HTTP {:?}", outcome.status));
        self.outcomes.lock().expect("outcomes lock").push(outcome);
        if failed {
            return Err(Box::new(TransactionError::Custom(error_text)));
        }
        Ok(())
    }

    async fn send(&self, user: &mut GooseUser, request: &Request) -> Result<(u16, Option<Value>), String> {
        let (path, builder) = match request {
            Request::Campaign {
                file_name,
                csv,
                attachments,
                ..
            } => {
                let form = campaign_form(file_name.clone(), csv.clone(), attachments.clone());
                let path = "/campaigns/upload";
                let builder = user
                    .get_request_builder(&GooseMethod::Post, path)
                    .map_err(|e| e.to_string())?;
                (path, builder.multipart(form))
            }
            Request::Notification { body, .. } => {
                let path = "/notifications";
                let builder = user
                    .get_request_builder(&GooseMethod::Post, path)
                    .map_err(|e| e.to_string())?;
                (path, builder.json(body))
            }
        };
        let builder = match &self.api_key {
            Some(key) => builder.header("x-api-key", key),
            None => builder,
        };
        let goose_request = GooseRequest::builder()
            .method(GooseMethod::Post)
            .path(path)
            .expect_status_code(202)
            .set_request_builder(builder)
            .build();
        let response = user.request(goose_request).await.map_err(|e| e.to_string())?;
        let response = response.response.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response.json::<Value>().await.ok();
        Ok((status, body))
    }
}

impl Driver {
    /// Offers every arrival to `app` in process, each at its intended time,
    /// and returns when all are answered: the simulated target's driver. No
    /// socket stands between them, so tokio's paused clock may jump ahead
    /// whenever every task waits on a timer.
    pub async fn offer_in_process(self: &Arc<Self>, engine: InProcessEngine) {
        let mut requests = tokio::task::JoinSet::new();
        for (index, arrival) in self.arrivals.iter().enumerate() {
            tokio::time::sleep_until(self.start + Duration::from_secs_f64(arrival.at_secs)).await;
            self.next.fetch_add(1, Ordering::Relaxed);
            let (driver, engine) = (self.clone(), engine.clone());
            requests.spawn(async move { driver.answer_in_process(index, engine).await });
        }
        while requests.join_next().await.is_some() {}
    }

    async fn answer_in_process(&self, index: usize, engine: InProcessEngine) {
        use tower::ServiceExt as _;
        let mut outcome = self.starting(index);
        let request = in_process_request(&self.arrivals[index].request);
        let answered = match engine.current() {
            None => Err("connection refused: the engine is down"),
            Some((app, killed)) => tokio::select! {
                answered = app.oneshot(request) => match answered {
                    Ok(response) => Ok(response),
                    Err(never) => match never {},
                },
                _ = killed.cancelled() => Err("connection reset: the engine was killed mid-request"),
            },
        };
        match answered {
            Ok(response) => {
                outcome.status = Some(response.status().as_u16());
                match axum::body::to_bytes(response.into_body(), usize::MAX).await {
                    Ok(bytes) => outcome.response = serde_json::from_slice(&bytes).ok(),
                    Err(error) => outcome.error = Some(error.to_string()),
                }
            }
            Err(refused) => outcome.error = Some(refused.into()),
        }
        self.outcomes.lock().expect("outcomes lock").push(outcome);
    }
}

/// The engine as a simulated run reaches it, in process: its router while it
/// is up; while it is down a request fails as a refused connection would, and
/// a request being served when it is killed is dropped mid-way, as a crashed
/// server drops it.
#[derive(Clone, Default)]
pub struct InProcessEngine {
    current: Arc<Mutex<Option<(axum::Router, tokio_util::sync::CancellationToken)>>>,
}

impl InProcessEngine {
    /// The engine answers with `router` until it is killed.
    pub fn up(&self, router: axum::Router) {
        let killed = tokio_util::sync::CancellationToken::new();
        *self.current.lock().expect("engine lock") = Some((router, killed));
    }

    /// The engine is killed: requests in progress are dropped, new ones refused.
    pub fn kill(&self) {
        if let Some((_, killed)) = self.current.lock().expect("engine lock").take() {
            killed.cancel();
        }
    }

    fn current(&self) -> Option<(axum::Router, tokio_util::sync::CancellationToken)> {
        self.current.lock().expect("engine lock").clone()
    }
}

/// One arrival as an HTTP request to the engine's router.
fn in_process_request(request: &Request) -> axum::http::Request<axum::body::Body> {
    match request {
        Request::Notification { body, .. } => axum::http::Request::post("/notifications")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(body.to_string())),
        Request::Campaign {
            file_name,
            csv,
            attachments,
            ..
        } => {
            let (content_type, body) = multipart_body(file_name, csv, attachments);
            axum::http::Request::post("/campaigns/upload")
                .header("content-type", content_type)
                .body(axum::body::Body::from(body))
        }
    }
    .expect("a request of valid parts")
}

/// The campaign form as `multipart/form-data` bytes (what `campaign_form`
/// makes reqwest send): the CSV as `file`, each attachment as `attachment:<name>`.
fn multipart_body(file_name: &str, csv: &[u8], attachments: &[(String, Vec<u8>)]) -> (String, Vec<u8>) {
    const BOUNDARY: &str = "courier-sim-7f3a9c1e5b";
    let mut body = Vec::with_capacity(csv.len() + 512);
    let mut part = |name: &str, file: &str, bytes: &[u8]| {
        body.extend_from_slice(
            format!(
                "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    };
    part("file", file_name, csv);
    for (name, bytes) in attachments {
        part(&format!("attachment:{name}"), name, bytes);
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={BOUNDARY}"), body)
}

/// The upload form of a campaign: the CSV as `file`, each attachment as `attachment:<name>`.
pub fn campaign_form(file_name: String, csv: Vec<u8>, attachments: Vec<(String, Vec<u8>)>) -> reqwest::multipart::Form {
    let form = reqwest::multipart::Form::new().part("file", reqwest::multipart::Part::bytes(csv).file_name(file_name));
    attachments.into_iter().fold(form, |form, (name, bytes)| {
        let part = reqwest::multipart::Part::bytes(bytes).file_name(name.clone());
        form.part(format!("attachment:{name}"), part)
    })
}

/// Messages one outcome's response says were accepted.
pub fn accepted_by(outcome: &RequestOutcome) -> u64 {
    match (&outcome.response, outcome.status) {
        (Some(body), Some(202)) if outcome.is_campaign => body["accepted"].as_u64().unwrap_or(0),
        (Some(_), Some(202)) => 1,
        _ => 0,
    }
}

/// Runs goose against `base_url` until the schedule's traffic time is over.
pub async fn drive(driver: Arc<Driver>, base_url: &str, users: usize, report: &Path) -> Result<(), GooseError> {
    let mut config = GooseConfiguration::default();
    config.host = Some(base_url.to_string());
    config.users = Some(users);
    config.increase_rate = Some(users.to_string());
    let secs = (driver.start.saturating_duration_since(Instant::now()) + driver.traffic).as_secs() + 2;
    config.run_time = Some(format!("{secs}s"));
    config.report_file = vec![report.display().to_string()];
    config.no_print_metrics = true;
    config.quiet = 1;
    config.no_telnet = true;
    let transaction_driver = driver.clone();
    let transaction = Transaction::new(Arc::new(move |user| {
        let driver = transaction_driver.clone();
        Box::pin(async move { driver.next_arrival(user).await })
    }))
    .set_name("arrival");
    GooseAttack::initialize_with_config(config)?
        .register_scenario(scenario!("open-model arrivals").register_transaction(transaction))
        .execute()
        .await?;
    Ok(())
}
