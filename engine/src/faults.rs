//! Failure injection per AWS operation, inside the SDK, so the same faults
//! work against the local stack, LocalStack and real AWS.
//!
//! Two SDK extension points cooperate: an interceptor tags each request with
//! its operation (read from the SDK's own metadata), and a wrapping HTTP
//! connector decides — by the active faults and a seeded dice — whether to pass
//! the request on, delay it, or answer in the service's place with the
//! service's own error (SES's `Throttling`, DynamoDB's
//! `ProvisionedThroughputExceededException`, …). The SDK then treats the
//! answer exactly as it would a real one: retries, error codes and all.
//!
//! [`SesQuota`] models SES's sending limits (MaxSendRate, a 24-hour quota) the
//! way SES enforces them, answering with SES's throttling errors.
//!
//! The same hooks meter every call that reaches the stack (`crate::metering`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse, Metadata};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;
use vocabulary::{AwsOperation, AwsService, UsageByOperation};

use crate::load::{AnswerTimesByLoad, ByLoad, OpenCalls};
use crate::metering::{Meter, Metering};

const OPERATION_HEADER: &str = "x-courier-operation";

/// Which calls a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultTarget {
    /// SES v1 `SendEmail`/`SendRawEmail` and SES v2 `SendEmail`.
    SesSend,
    /// SQS `SendMessage`/`SendMessageBatch`.
    SqsSend,
    /// SQS `ReceiveMessage`.
    SqsReceive,
    /// Every DynamoDB call.
    DynamoDb,
}

impl FaultTarget {
    /// Whether the call labelled `Service.Operation` is one this target hits.
    fn matches(self, label: &str) -> bool {
        let operation = label.parse::<AwsOperation>().ok();
        match self {
            FaultTarget::SesSend => operation.is_some_and(|op| AwsOperation::PROVIDER_SENDS.contains(&op)),
            FaultTarget::SqsSend => operation.is_some_and(|op| AwsOperation::QUEUE_SENDS.contains(&op)),
            FaultTarget::SqsReceive => operation == Some(AwsOperation::SqsReceiveMessage),
            FaultTarget::DynamoDb => AwsService::of_label(label) == Some(AwsService::DynamoDb),
        }
    }
}

/// What a fault does to a call it hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultEffect {
    /// The service's "slow down" error.
    Throttle,
    /// SES's permanent rejection (`MessageRejected`).
    Reject,
    /// A 500 from the service.
    ServerError,
    /// The call goes through this much later.
    Latency { ms: u64 },
}

/// SES's sending limits: at most `max_send_rate` sends in any second and
/// `daily_quota` in any `day` (24 hours, unless a scenario compresses it).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SesQuota {
    pub max_send_rate: f64,
    pub daily_quota: Option<u64>,
    pub day: Duration,
}

impl SesQuota {
    /// SES's day.
    pub const DAY: Duration = Duration::from_secs(86_400);
}

/// SES's limits as they stand: the bucket's tokens and the day's count.
/// Time is tokio's, so the simulated target's paused clock drives it too.
#[derive(Debug)]
pub(crate) struct QuotaState {
    quota: SesQuota,
    tokens: f64,
    refilled_at: Instant,
    sent_today: u64,
    day_started: Instant,
}

impl QuotaState {
    pub(crate) fn new(quota: SesQuota) -> Self {
        let now = Instant::now();
        Self {
            quota,
            tokens: quota.max_send_rate.max(1.0),
            refilled_at: now,
            sent_today: 0,
            day_started: now,
        }
    }

    /// The limits in force (the SES model's `GetAccount` answer).
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn limits(&self) -> SesQuota {
        self.quota
    }

    /// Sends admitted since the day began.
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn sent_today(&self) -> u64 {
        self.sent_today
    }

    /// `Ok` when the send fits the limits, else which limit it exceeded.
    pub(crate) fn admit(&mut self, now: Instant) -> Result<(), &'static str> {
        self.roll_day(now);
        if self.quota.daily_quota.is_some_and(|q| self.sent_today >= q) {
            return Err("Daily message quota exceeded.");
        }
        // A token bucket one second deep: SES smooths bursts over about a second.
        let elapsed = now.duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.quota.max_send_rate).min(self.quota.max_send_rate.max(1.0));
        self.refilled_at = now;
        if self.tokens < 1.0 {
            return Err("Maximum sending rate exceeded.");
        }
        self.tokens -= 1.0;
        self.sent_today += 1;
        Ok(())
    }

    /// A new day starts the count again.
    fn roll_day(&mut self, now: Instant) {
        if now.duration_since(self.day_started) >= self.quota.day {
            self.day_started = now;
            self.sent_today = 0;
        }
    }
}

#[derive(Debug, Clone)]
struct ActiveFault {
    id: u64,
    name: String,
    target: FaultTarget,
    probability: f64,
    effect: FaultEffect,
}

/// One injected fault, for the results file's timeline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InjectedFault {
    /// Milliseconds since the plan was created.
    pub at_ms: u64,
    pub fault: String,
    pub operation: String,
}

/// The faults currently in force, shared by every client built with it.
#[derive(Debug)]
pub struct FaultPlan {
    created: Instant,
    faults: RwLock<Vec<ActiveFault>>,
    quota: Mutex<Option<QuotaState>>,
    /// Whether the plan is the SES account (the local stack, whose SES
    /// enforces no limits): then it answers the account's limit reads even
    /// with no quota in force (as "no limit").
    models_account: std::sync::atomic::AtomicBool,
    dice: Mutex<ChaCha8Rng>,
    next_id: AtomicU64,
    injected: Mutex<Vec<InjectedFault>>,
    counts: Mutex<BTreeMap<String, u64>>,
    calls: Mutex<BTreeMap<String, u64>>,
    /// Calls open on the stack now.
    open: OpenCalls,
    /// How long the stack itself took to answer, per operation and load it
    /// met (µs), injected delays excluded.
    answered_in: AnswerTimesByLoad,
    /// What the calls that reached the stack consumed, in billable units.
    meter: Arc<Meter>,
}

/// Injections kept for the timeline; counts keep going past it.
const MAX_RECORDED: usize = 200_000;

impl FaultPlan {
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            created: Instant::now(),
            faults: RwLock::new(Vec::new()),
            quota: Mutex::new(None),
            models_account: std::sync::atomic::AtomicBool::new(false),
            dice: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            next_id: AtomicU64::new(1),
            injected: Mutex::new(Vec::new()),
            counts: Mutex::new(BTreeMap::new()),
            calls: Mutex::new(BTreeMap::new()),
            open: OpenCalls::default(),
            answered_in: AnswerTimesByLoad::default(),
            meter: Arc::default(),
        })
    }

    /// Starts a fault; returns its id for [`FaultPlan::deactivate`].
    pub fn activate(&self, name: &str, target: FaultTarget, probability: f64, effect: FaultEffect) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        tracing::info!(fault = name, ?target, probability, ?effect, "fault on");
        self.faults.write().expect("faults lock").push(ActiveFault {
            id,
            name: name.to_string(),
            target,
            probability,
            effect,
        });
        id
    }

    pub fn deactivate(&self, id: u64) {
        let mut faults = self.faults.write().expect("faults lock");
        if let Some(fault) = faults.iter().find(|f| f.id == id) {
            tracing::info!(fault = %fault.name, "fault off");
        }
        faults.retain(|f| f.id != id);
    }

    /// Makes the plan the SES account: it answers `GetAccount` and
    /// `GetSendQuota` with the quota in force, or with no limits. For the
    /// local stack, whose SES emulators enforce none.
    pub fn model_ses_account(&self) {
        self.models_account.store(true, Ordering::Relaxed);
    }

    /// Lifts every fault and the SES quota.
    pub fn clear(&self) {
        self.faults.write().expect("faults lock").clear();
        self.set_ses_quota(None);
        tracing::info!("all faults off");
    }

    /// Puts SES's sending limits in force (`None` lifts them).
    pub fn set_ses_quota(&self, quota: Option<SesQuota>) {
        *self.quota.lock().expect("quota lock") = quota.map(QuotaState::new);
    }

    /// How many times each fault was injected.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().expect("counts lock").clone()
    }

    /// Adds injections made outside the SDK's connector (the SMTP server's
    /// replies) to a fault's count.
    pub fn add_count(&self, name: &str, injections: u64) {
        *self
            .counts
            .lock()
            .expect("counts lock")
            .entry(name.to_string())
            .or_insert(0) += injections;
    }

    /// How many calls each operation (`Service.Operation`) made through the plan.
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.calls.lock().expect("calls lock").clone()
    }

    /// What each operation (`Service.Operation`) consumed, in the units AWS
    /// bills; answers the plan gave in the stack's place are not in it.
    pub fn usage(&self) -> UsageByOperation {
        self.meter.usage()
    }

    /// How long the stack took to answer each operation (`Service.Operation`),
    /// in microseconds, as histograms. Injected delays and answers are not in it:
    /// this is the stack's own speed during the run, a reference for its latencies.
    pub fn answer_times(&self) -> BTreeMap<String, hdrhistogram::Histogram<u64>> {
        self.answered_in.all_loads()
    }

    /// The answer times of [`FaultPlan::answer_times`], apart by the load
    /// each call met: the `calibrated` simulation profile draws from these.
    pub fn answer_times_by_load(&self) -> ByLoad {
        self.answered_in.snapshot()
    }

    pub fn injected(&self) -> Vec<InjectedFault> {
        self.injected.lock().expect("injected lock").clone()
    }

    /// A uniform number in [0, 1) from the plan's seeded dice.
    fn roll(&self) -> f64 {
        self.dice.lock().expect("dice lock").random()
    }

    fn record(&self, fault: &str, operation: &str) {
        *self
            .counts
            .lock()
            .expect("counts lock")
            .entry(fault.to_string())
            .or_default() += 1;
        let mut injected = self.injected.lock().expect("injected lock");
        if injected.len() < MAX_RECORDED {
            injected.push(InjectedFault {
                at_ms: self.created.elapsed().as_millis() as u64,
                fault: fault.to_string(),
                operation: operation.to_string(),
            });
        }
    }

    /// Decides what happens to one call, labelled `Service.Operation`.
    fn decide(&self, label: &str) -> Decision {
        let service = AwsService::of_label(label);
        *self
            .calls
            .lock()
            .expect("calls lock")
            .entry(label.to_string())
            .or_default() += 1;
        let mut delay = Duration::ZERO;
        if label
            .parse::<AwsOperation>()
            .is_ok_and(|op| AwsOperation::ACCOUNT_READS.contains(&op))
        {
            let mut quota = self.quota.lock().expect("quota lock");
            if let Some(state) = quota.as_mut() {
                state.roll_day(Instant::now());
            }
            if quota.is_some() || self.models_account.load(Ordering::Relaxed) {
                return Decision::Answer {
                    delay,
                    response: account_response(service, quota.as_ref()),
                };
            }
        }
        let faults = self.faults.read().expect("faults lock").clone();
        for fault in faults.iter().filter(|f| f.target.matches(label)) {
            if self.roll() >= fault.probability {
                continue;
            }
            self.record(&fault.name, label);
            match fault.effect {
                FaultEffect::Latency { ms } => delay += Duration::from_millis(ms),
                effect => {
                    return Decision::Answer {
                        delay,
                        response: error_response(service, effect, "injected by Courier"),
                    }
                }
            }
        }
        if FaultTarget::SesSend.matches(label) {
            let mut quota = self.quota.lock().expect("quota lock");
            if let Some(state) = quota.as_mut() {
                if let Err(message) = state.admit(Instant::now()) {
                    drop(quota);
                    self.record("ses_quota", label);
                    return Decision::Answer {
                        delay,
                        response: error_response(service, FaultEffect::Throttle, message),
                    };
                }
            }
        }
        Decision::Pass { delay }
    }
}

enum Decision {
    Pass { delay: Duration },
    Answer { delay: Duration, response: ErrorResponse },
}

struct ErrorResponse {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

/// The error each service itself answers, in its own protocol.
/// The answer `service` itself gives for `effect`, in its own protocol.
fn error_response(service: Option<AwsService>, effect: FaultEffect, message: &str) -> ErrorResponse {
    use AwsService::{DynamoDb, Ses, Sesv2, Sqs};
    match (service, effect) {
        (Some(Sesv2), FaultEffect::Throttle) => rest_json(429, "TooManyRequestsException", message),
        (Some(Sesv2), FaultEffect::Reject) => rest_json(400, "MessageRejected", "Email address is not verified."),
        (Some(Sesv2), _) => rest_json(500, "InternalFailure", message),
        (Some(Ses), FaultEffect::Throttle) => query_xml(400, "Throttling", message),
        (Some(Ses), FaultEffect::Reject) => query_xml(400, "MessageRejected", "Email address is not verified."),
        (Some(Ses), _) => query_xml(500, "InternalFailure", message),
        (Some(DynamoDb), FaultEffect::Throttle) => aws_json(
            400,
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded.",
        ),
        (Some(Sqs), FaultEffect::Throttle) => aws_json(400, "com.amazonaws.sqs#RequestThrottled", message),
        (_, _) => aws_json(500, "InternalFailure", message),
    }
}

/// The account's sending limits as SES itself reports them (-1: no limit).
fn account_response(service: Option<AwsService>, quota: Option<&QuotaState>) -> ErrorResponse {
    let (rate, daily, sent) = match quota {
        Some(state) => (
            state.quota.max_send_rate,
            state.quota.daily_quota.map_or(-1.0, |q| q as f64),
            state.sent_today as f64,
        ),
        None => (-1.0, -1.0, 0.0),
    };
    match service {
        Some(AwsService::Ses) => ErrorResponse {
            status: 200,
            headers: vec![("content-type", "text/xml".into())],
            body: format!(
                "<GetSendQuotaResponse xmlns=\"http://ses.amazonaws.com/doc/2010-12-01/\"><GetSendQuotaResult><SentLast24Hours>{sent}</SentLast24Hours><Max24HourSend>{daily}</Max24HourSend><MaxSendRate>{rate}</MaxSendRate></GetSendQuotaResult><ResponseMetadata><RequestId>courier-account</RequestId></ResponseMetadata></GetSendQuotaResponse>"
            ),
        },
        _ => ErrorResponse {
            status: 200,
            headers: vec![("content-type", "application/json".into())],
            body: serde_json::json!({
                "SendQuota": { "Max24HourSend": daily, "MaxSendRate": rate, "SentLast24Hours": sent },
                "SendingEnabled": true,
                "ProductionAccessEnabled": true,
                "EnforcementStatus": "HEALTHY",
            })
            .to_string(),
        },
    }
}

fn rest_json(status: u16, error_type: &str, message: &str) -> ErrorResponse {
    ErrorResponse {
        status,
        headers: vec![
            ("content-type", "application/json".into()),
            ("x-amzn-errortype", error_type.into()),
        ],
        body: serde_json::json!({ "message": message }).to_string(),
    }
}

fn aws_json(status: u16, error_type: &str, message: &str) -> ErrorResponse {
    ErrorResponse {
        status,
        headers: vec![("content-type", "application/x-amz-json-1.0".into())],
        body: serde_json::json!({ "__type": error_type, "message": message }).to_string(),
    }
}

fn query_xml(status: u16, code: &str, message: &str) -> ErrorResponse {
    let kind = if status >= 500 { "Receiver" } else { "Sender" };
    ErrorResponse {
        status,
        headers: vec![("content-type", "text/xml".into())],
        body: format!(
            "<ErrorResponse xmlns=\"http://ses.amazonaws.com/doc/2010-12-01/\"><Error><Type>{kind}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>courier-fault</RequestId></ErrorResponse>"
        ),
    }
}

impl ErrorResponse {
    fn into_http(self) -> HttpResponse {
        let mut response = HttpResponse::new(
            StatusCode::try_from(self.status).expect("a valid status"),
            SdkBody::from(self.body),
        );
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
            .headers_mut()
            .insert("x-amzn-requestid", crate::metering::INJECTED_REQUEST_ID);
        response
    }
}

/// The label of the call `cfg` belongs to, `Service.Operation`, from the SDK's own metadata.
pub(crate) fn operation_label(cfg: &ConfigBag) -> Option<String> {
    let metadata = cfg.load::<Metadata>()?;
    Some(format!("{}.{}", metadata.service(), metadata.name()))
}

/// Tags each request with `Service.Operation` for the connector to read.
#[derive(Debug)]
struct OperationTagger;

impl Intercept for OperationTagger {
    fn name(&self) -> &'static str {
        "CourierOperationTagger"
    }

    fn modify_before_transmit(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(tag) = operation_label(cfg) {
            context.request_mut().headers_mut().insert(OPERATION_HEADER, tag);
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct FaultyHttpClient {
    inner: SharedHttpClient,
    plan: Arc<FaultPlan>,
}

impl HttpClient for FaultyHttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(FaultyConnector {
            inner: self.inner.http_connector(settings, components),
            plan: self.plan.clone(),
        })
    }
}

#[derive(Debug)]
struct FaultyConnector {
    inner: SharedHttpConnector,
    plan: Arc<FaultPlan>,
}

impl HttpConnector for FaultyConnector {
    fn call(&self, mut request: HttpRequest) -> HttpConnectorFuture {
        // The tag is the operation's label, `Service.Operation`.
        let Some(label) = request
            .headers_mut()
            .remove(OPERATION_HEADER)
            .filter(|tag| tag.contains('.'))
        else {
            return self.inner.call(request);
        };
        match self.plan.decide(&label) {
            Decision::Pass { delay } => {
                let inner = self.inner.clone();
                let plan = self.plan.clone();
                HttpConnectorFuture::new(async move {
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let (load, open) = plan.open.open(label.parse().ok());
                    let started = Instant::now();
                    let response = inner.call(request).await;
                    drop(open);
                    plan.answered_in.record(&label, load, started.elapsed());
                    response
                })
            }
            Decision::Answer { delay, response } => HttpConnectorFuture::new(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(response.into_http())
            }),
        }
    }
}

/// What a client config builder needs to route its calls through `plan`
/// and meter them.
pub struct FaultHooks {
    pub http_client: SharedHttpClient,
    pub interceptors: [SharedInterceptor; 2],
}

impl FaultHooks {
    pub fn new(base: SharedHttpClient, plan: Arc<FaultPlan>) -> Self {
        let metering = Metering::new(plan.meter.clone());
        Self {
            http_client: SharedHttpClient::new(FaultyHttpClient { inner: base, plan }),
            interceptors: [
                SharedInterceptor::new(OperationTagger),
                SharedInterceptor::new(metering),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quota_admits_the_send_rate_and_then_throttles() {
        let start = Instant::now();
        let mut state = QuotaState {
            quota: SesQuota {
                max_send_rate: 14.0,
                daily_quota: Some(30),
                day: SesQuota::DAY,
            },
            tokens: 14.0,
            refilled_at: start,
            sent_today: 0,
            day_started: start,
        };
        let admitted = (0..100).filter(|_| state.admit(start).is_ok()).count();
        assert_eq!(admitted, 14, "one second's worth at once");
        let later = start + Duration::from_millis(500);
        let admitted = (0..100).filter(|_| state.admit(later).is_ok()).count();
        assert_eq!(admitted, 7, "half a second refills half the rate");
        let much_later = start + Duration::from_secs(10);
        let admitted = (0..100).filter(|_| state.admit(much_later).is_ok()).count();
        assert_eq!(admitted, 9, "the daily quota of 30 caps the rest");
        assert_eq!(state.admit(much_later), Err("Daily message quota exceeded."));
    }

    #[test]
    fn an_injected_fault_hits_close_to_the_asked_rate() {
        let plan = FaultPlan::new(99);
        plan.activate("ses_throttle", FaultTarget::SesSend, 0.3, FaultEffect::Throttle);
        let n = 20_000;
        let hits = (0..n)
            .filter(|_| {
                matches!(
                    plan.decide(AwsOperation::Sesv2SendEmail.as_str()),
                    Decision::Answer { .. }
                )
            })
            .count() as f64;
        // Binomial(20000, 0.3): sd ≈ 64.8; 5 sd either side is a false alarm once in ~3.5 million runs.
        let expected = 0.3 * n as f64;
        assert!((hits - expected).abs() < 5.0 * 64.8, "{hits} hits, expected {expected}");
        assert_eq!(plan.counts()["ses_throttle"], hits as u64);
        // Other operations are untouched.
        assert!((0..1000).all(|_| matches!(
            plan.decide(AwsOperation::SqsReceiveMessage.as_str()),
            Decision::Pass { .. }
        )));
    }

    #[test]
    fn a_deactivated_fault_stops_hitting() {
        let plan = FaultPlan::new(1);
        let id = plan.activate("dynamo", FaultTarget::DynamoDb, 1.0, FaultEffect::Throttle);
        assert!(matches!(
            plan.decide(AwsOperation::DynamoDbUpdateItem.as_str()),
            Decision::Answer { .. }
        ));
        plan.deactivate(id);
        assert!(matches!(
            plan.decide(AwsOperation::DynamoDbUpdateItem.as_str()),
            Decision::Pass { .. }
        ));
    }
}
