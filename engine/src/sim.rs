//! What the simulated target adds to the in-memory adapters ([`crate::memory`]):
//! how long each AWS call takes, and SES's sending limits.
//!
//! The engine's code runs unchanged on tokio's paused clock; the adapters
//! wait [`ServiceTimes`] for each call (drawn from a profile of answer times
//! per operation, and where the profile has them per load the call meets —
//! [`crate::load`] — with a seeded dice, so a run repeats), and [`SesModel`]
//! answers sends as SES does: a MaxSendRate token bucket, a 24-hour quota,
//! `Throttling` and "Daily message quota exceeded", and `GetAccount`'s
//! figures to the dispatcher's pacing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vocabulary::{AwsOperation, LoadBucket};

use crate::faults::{QuotaState, SesQuota};
use crate::load::OpenCalls;
use crate::mailer::{Email, MailError, Mailer};
use crate::sender::schedule::SendQuota;

/// One operation's answer times: its percentiles, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnswerTimes {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl AnswerTimes {
    /// The answer time at quantile `q` in [0, 1): linear between the
    /// percentiles, from half the median at q = 0 up to the maximum.
    pub fn at(&self, q: f64) -> f64 {
        let points = [
            (0.0, self.p50_ms * 0.5),
            (0.5, self.p50_ms),
            (0.95, self.p95_ms),
            (0.99, self.p99_ms),
            (1.0, self.max_ms),
        ];
        let q = q.clamp(0.0, 1.0);
        for pair in points.windows(2) {
            let ((q0, v0), (q1, v1)) = (pair[0], pair[1]);
            if q <= q1 {
                return v0 + (v1 - v0) * (q - q0) / (q1 - q0);
            }
        }
        self.max_ms
    }
}

/// How long each AWS call takes on the simulated target.
#[derive(Debug)]
pub struct ServiceTimes {
    by_operation: HashMap<AwsOperation, AnswerTimes>,
    /// Where the profile has them: an operation's answer times under each load.
    by_load: HashMap<AwsOperation, BTreeMap<LoadBucket, AnswerTimes>>,
    /// For an operation the profile does not name.
    fallback: AnswerTimes,
    /// The simulated calls open now: the load the next call meets.
    open: OpenCalls,
    dice: Mutex<ChaCha8Rng>,
    /// Calls made, per operation: what the simulated run would be billed for.
    calls: Mutex<BTreeMap<AwsOperation, u64>>,
    /// Where the profile has it: the engine's own CPU, paid per call.
    engine_cpu: Option<EngineCpu>,
}

/// The engine's own CPU, which virtual time would otherwise give for free:
/// before its answer, each call takes `per_call` of one of `cores` — the
/// engine's work around a call (building, signing and reading requests, its
/// HTTP API, its bookkeeping), measured on a real run as the engine's CPU
/// over its AWS calls. Calls queue for a core as the engine's tasks queue
/// for a CPU, so a burst of messages takes the time it takes on the machine.
#[derive(Debug)]
struct EngineCpu {
    per_call: Duration,
    cores: tokio::sync::Semaphore,
}

impl ServiceTimes {
    pub fn new(by_operation: BTreeMap<AwsOperation, AnswerTimes>, fallback: AnswerTimes, seed: u64) -> Self {
        Self {
            by_operation: by_operation.into_iter().collect(),
            by_load: HashMap::new(),
            fallback,
            open: OpenCalls::default(),
            dice: Mutex::new(ChaCha8Rng::seed_from_u64(seed)),
            calls: Mutex::new(BTreeMap::new()),
            engine_cpu: None,
        }
    }

    /// Every call answered at once (unit tests of the model itself).
    pub fn instant() -> Self {
        let zero = AnswerTimes {
            p50_ms: 0.0,
            p95_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
        };
        Self::new(BTreeMap::new(), zero, 0)
    }

    /// Answer times that depend on the load a call meets: each operation's
    /// times per [`LoadBucket`]. A call takes those of the nearest bucket the
    /// operation has; an operation without any takes its times regardless of load.
    pub fn with_load(mut self, by_load: BTreeMap<AwsOperation, BTreeMap<LoadBucket, AnswerTimes>>) -> Self {
        self.by_load = by_load.into_iter().filter(|(_, times)| !times.is_empty()).collect();
        self
    }

    /// Each call first takes `per_call` of the engine's CPU, on one of `cores`.
    pub fn with_engine_cpu(mut self, per_call: Duration, cores: usize) -> Self {
        self.engine_cpu = Some(EngineCpu {
            per_call,
            cores: tokio::sync::Semaphore::new(cores.max(1)),
        });
        self
    }

    /// The engine's CPU per call, where the profile has it.
    pub fn engine_cpu_per_call(&self) -> Option<Duration> {
        self.engine_cpu.as_ref().map(|cpu| cpu.per_call)
    }

    /// The answer times of `operation` under `load`.
    fn times(&self, operation: AwsOperation, load: LoadBucket) -> &AnswerTimes {
        let nearest = self.by_load.get(&operation).and_then(|buckets| {
            let below = buckets.range(..=load).next_back();
            let above = buckets.range(load..).next();
            [below, above]
                .into_iter()
                .flatten()
                .min_by_key(|(bucket, _)| bucket.distance(load))
                .map(|(_, times)| times)
        });
        nearest.or(self.by_operation.get(&operation)).unwrap_or(&self.fallback)
    }

    /// One draw of `operation`'s answer time under `load`.
    pub fn draw(&self, operation: AwsOperation, load: LoadBucket) -> Duration {
        let times = self.times(operation, load);
        let q: f64 = self.dice.lock().expect("dice lock").random();
        Duration::from_secs_f64(times.at(q).max(0.0) / 1000.0)
    }

    /// `took` in whole milliseconds, rounded up or down at random in
    /// proportion (0.3 ms: 1 ms three times in ten, else none), so that
    /// tokio's 1-ms timer, which would round every sub-millisecond answer up
    /// to 1 ms, keeps the mean.
    fn in_ticks(&self, took: Duration) -> Duration {
        let ms = took.as_secs_f64() * 1000.0;
        let up: f64 = self.dice.lock().expect("dice lock").random();
        let whole = ms.floor() + if up < ms.fract() { 1.0 } else { 0.0 };
        Duration::from_millis(whole as u64)
    }

    /// Calls made so far, per operation.
    pub fn calls(&self) -> BTreeMap<AwsOperation, u64> {
        self.calls.lock().expect("calls lock").clone()
    }

    /// Waits as long as one `operation` takes, and counts the call.
    pub async fn wait(&self, operation: AwsOperation) {
        let (took, _open) = self.begin(operation).await;
        sleep_ticks(self.in_ticks(took)).await;
    }

    /// Waits as long as one `operation` takes, applying `effect` after
    /// [`SERVED_AT`] of the answer time: a service applies a request before
    /// its answer travels back, so a message sent is there for a long poll
    /// before its sender has the answer. Counts the call.
    pub async fn call<T>(&self, operation: AwsOperation, effect: impl FnOnce() -> T) -> T {
        let (took, _open) = self.begin(operation).await;
        let served = took.mul_f64(SERVED_AT);
        sleep_ticks(self.in_ticks(served)).await;
        let out = effect();
        sleep_ticks(self.in_ticks(took - served)).await;
        out
    }

    /// Counts a call, takes the engine's CPU for it, and opens it: its answer
    /// time under the load it meets, and the open call (closed when dropped).
    async fn begin(&self, operation: AwsOperation) -> (Duration, crate::load::OpenCall<'_>) {
        *self.calls.lock().expect("calls lock").entry(operation).or_insert(0) += 1;
        self.engine_work().await;
        let (load, open) = self.open.open(Some(operation));
        (self.draw(operation, load), open)
    }

    /// The engine's CPU for one call, on a core of its own once one is free.
    async fn engine_work(&self) {
        let Some(cpu) = &self.engine_cpu else { return };
        let took = self.in_ticks(cpu.per_call);
        if took.is_zero() {
            return;
        }
        let _core = cpu.cores.acquire().await.expect("the engine's cores are never closed");
        tokio::time::sleep(took).await;
    }
}

/// How far into a call's answer time the service has applied it: half
/// (the request's way in and the answer's way out alike). With the whole
/// answer time first, every quiet reminder of the 2026-12-04 validation came
/// out 3-5 ms (20-40 %) slower simulated than on the stack, where its
/// `SendMessage` (p50 4.2 ms in `spike`) woke the worker's long poll before
/// it answered; claim to SENT agreed (5.0 / 5.0 ms at p50).
pub const SERVED_AT: f64 = 0.5;

async fn sleep_ticks(took: Duration) {
    if !took.is_zero() {
        tokio::time::sleep(took).await;
    }
}

/// Waits for `operation` when the adapter has service times, applying
/// `effect` where [`ServiceTimes::call`] does.
pub(crate) async fn call<T>(
    times: &Option<std::sync::Arc<ServiceTimes>>,
    operation: AwsOperation,
    effect: impl FnOnce() -> T,
) -> T {
    match times {
        Some(times) => times.call(operation, effect).await,
        None => effect(),
    }
}

/// Waits for `operation` when the adapter has service times.
pub(crate) async fn wait(times: &Option<std::sync::Arc<ServiceTimes>>, operation: AwsOperation) {
    if let Some(times) = times {
        times.wait(operation).await;
    }
}

/// Waits for `calls` calls of `operation` made `parallel` at a time.
pub(crate) async fn wait_calls(
    times: &Option<std::sync::Arc<ServiceTimes>>,
    operation: AwsOperation,
    calls: usize,
    parallel: usize,
) {
    let Some(times) = times else { return };
    let mut left = calls;
    while left > 0 {
        let now = left.min(parallel.max(1));
        futures::future::join_all((0..now).map(|_| times.wait(operation))).await;
        left -= now;
    }
}

/// A fault a scenario puts on SES's sends (`ses_throttle`, `ses_reject`, `ses_latency`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SesFault {
    Throttle { probability: f64 },
    Reject { probability: f64 },
    Latency { ms: u64 },
}

impl SesFault {
    /// A latency fault touches every send; the others only those they hit.
    fn counts_every_send(self) -> bool {
        matches!(self, SesFault::Latency { .. })
    }
}

/// DynamoDB's write throughput per partition: AWS documents 1,000 write
/// units a second for each partition, on the table and on each global
/// secondary index, and a write whose index partition is over its limit is
/// throttled on the base table too (GSI back-pressure). The table's key
/// (`sendId`) spreads over partitions; its indexes' keys do not:
/// `status_index` is keyed on a status of four values and `batch_index` on a
/// campaign's id, and with a sort key that grows with time (`createdAt`)
/// split-for-heat cannot spread one key value's writes.
///
/// Each key value is a token bucket of `limit` units a second holding
/// `burst_secs` of them, full at the start: AWS keeps up to 300 s of a
/// partition's unused capacity for bursts ("best effort"), so this is the
/// best case; what it still throttles, no burst could carry. A write that
/// finds its bucket short waits until it has the units, as the SDK's and
/// the engine's retries together would play it out (first come, first
/// served: AWS refuses and the retries compete instead), and counts as
/// throttled once against each key that was short.
#[derive(Debug)]
pub struct Partitions {
    limit: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, tokio::time::Instant)>>,
    throttled: Mutex<Throttled>,
}

/// Writes throttled per partition key, and the first one.
#[derive(Debug, Default, Clone)]
pub struct Throttled {
    pub by_key: BTreeMap<String, u64>,
    pub first: Option<(tokio::time::Instant, String)>,
}

impl Partitions {
    /// AWS's per-partition write limit, in write units a second.
    pub const WRITE_UNITS_PER_SEC: f64 = 1000.0;
    /// The unused capacity AWS keeps for bursts, in seconds of the limit.
    pub const BURST_SECS: f64 = 300.0;

    pub fn new(limit: f64, burst_secs: f64) -> Self {
        Self {
            limit,
            burst: limit * burst_secs.max(1.0),
            buckets: Mutex::new(HashMap::new()),
            throttled: Mutex::new(Throttled::default()),
        }
    }

    /// Takes `units` on each partition key of one write; says how long the
    /// write must wait for them (zero when every key had them).
    pub fn take(&self, writes: &[(String, f64)]) -> Duration {
        let now = tokio::time::Instant::now();
        let mut buckets = self.buckets.lock().expect("buckets lock");
        let mut wait = Duration::ZERO;
        let mut short = Vec::new();
        for (key, units) in writes {
            let (tokens, at) = buckets.entry(key.clone()).or_insert((self.burst, now));
            let refilled = *tokens + self.limit * now.saturating_duration_since(*at).as_secs_f64();
            *tokens = refilled.min(self.burst) - units;
            *at = now;
            if *tokens < 0.0 {
                wait = wait.max(Duration::from_secs_f64(-*tokens / self.limit));
                short.push(key.clone());
            }
        }
        drop(buckets);
        if !short.is_empty() {
            let mut throttled = self.throttled.lock().expect("throttled lock");
            for key in short {
                throttled.first.get_or_insert((now, key.clone()));
                *throttled.by_key.entry(key).or_insert(0) += 1;
            }
        }
        wait
    }

    pub fn throttled(&self) -> Throttled {
        self.throttled.lock().expect("throttled lock").clone()
    }
}

/// SES as the simulated target's mailer: its limits, its answer times, and
/// a record of what it accepted (per recipient, as the audit reads it).
pub struct SesModel {
    quota: Mutex<Option<QuotaState>>,
    /// Faults in force, by the name their injections are counted under.
    faults: Mutex<Vec<(String, SesFault)>>,
    injected: Mutex<BTreeMap<String, u64>>,
    dice: Mutex<ChaCha8Rng>,
    times: std::sync::Arc<ServiceTimes>,
    accepted: Mutex<HashMap<String, u64>>,
}

/// The name the quota's refusals are counted under, as on a real run.
const QUOTA: &str = "ses_quota";

impl SesModel {
    /// `limits` None: an account with no limit (as the local stack's SES).
    pub fn new(limits: Option<SesQuota>, times: std::sync::Arc<ServiceTimes>, seed: u64) -> Self {
        Self {
            quota: Mutex::new(limits.map(QuotaState::new)),
            faults: Mutex::new(Vec::new()),
            injected: Mutex::new(BTreeMap::new()),
            dice: Mutex::new(ChaCha8Rng::seed_from_u64(seed ^ 0x5E5)),
            times,
            accepted: Mutex::new(HashMap::new()),
        }
    }

    /// Puts limits in force (a fresh day), or lifts them.
    pub fn set_limits(&self, limits: Option<SesQuota>) {
        *self.quota.lock().expect("quota lock") = limits.map(QuotaState::new);
    }

    /// Puts a fault in force, its injections counted under `name`.
    pub fn add_fault(&self, name: &str, fault: SesFault) {
        self.faults.lock().expect("faults lock").push((name.to_string(), fault));
    }

    pub fn remove_fault(&self, name: &str) {
        self.faults.lock().expect("faults lock").retain(|(n, _)| n != name);
    }

    /// Injections per fault name, the quota's refusals as `ses_quota`.
    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.injected.lock().expect("injected lock").clone()
    }

    fn count(&self, name: &str) {
        *self
            .injected
            .lock()
            .expect("injected lock")
            .entry(name.to_string())
            .or_insert(0) += 1;
    }

    /// What the faults in force do to one send: extra time, and maybe an answer in SES's place.
    fn injected_answer(&self) -> (Duration, Option<MailError>) {
        let faults = self.faults.lock().expect("faults lock").clone();
        let mut delay = Duration::ZERO;
        for (name, fault) in faults {
            let hit = |p: f64| self.dice.lock().expect("dice lock").random::<f64>() < p;
            let answer = match fault {
                SesFault::Latency { ms } => {
                    delay += Duration::from_millis(ms);
                    None
                }
                SesFault::Throttle { probability } if hit(probability) => {
                    Some(MailError::Throttled("Throttling: injected by Courier".into()))
                }
                SesFault::Reject { probability } if hit(probability) => {
                    Some(MailError::Rejected("MessageRejected: injected by Courier".into()))
                }
                _ => None,
            };
            if fault.counts_every_send() || answer.is_some() {
                self.count(&name);
            }
            if answer.is_some() {
                return (delay, answer);
            }
        }
        (delay, None)
    }

    /// Emails accepted per recipient, lower-cased.
    pub fn accepted(&self) -> HashMap<String, u64> {
        self.accepted.lock().expect("accepted lock").clone()
    }

    /// Sends refused for a limit.
    pub fn throttled(&self) -> u64 {
        self.injected
            .lock()
            .expect("injected lock")
            .get(QUOTA)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait]
impl Mailer for SesModel {
    async fn send(&self, email: &Email) -> Result<String, MailError> {
        // A send is refused or admitted as the request arrives, not as the
        // answer leaves: an injected fault as the real run's fault plan
        // decides it, and SES's rate against its bucket, so sends paced at
        // the door reach the bucket paced however their answer times vary.
        // A send a fault refuses takes no token.
        let (delay, injected) = self.injected_answer();
        let admitted = match (&injected, self.quota.lock().expect("quota lock").as_mut()) {
            (None, Some(quota)) => quota.admit(tokio::time::Instant::now()),
            _ => Ok(()),
        };
        self.times.wait(AwsOperation::Sesv2SendEmail).await;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if let Some(error) = injected {
            return Err(error);
        }
        if let Err(message) = admitted {
            self.count(QUOTA);
            return Err(if message.starts_with("Daily") {
                MailError::QuotaExhausted(message.into())
            } else {
                MailError::Throttled(message.into())
            });
        }
        let mut accepted = self.accepted.lock().expect("accepted lock");
        let count = accepted.entry(email.to.to_string().to_ascii_lowercase()).or_insert(0);
        *count += 1;
        Ok(format!("sim-{}-{count}", email.to))
    }

    async fn send_quota(&self) -> Result<Option<SendQuota>, MailError> {
        self.times.wait(AwsOperation::Sesv2GetAccount).await;
        let quota = self.quota.lock().expect("quota lock");
        Ok(quota.as_ref().map(|state| {
            let limits = state.limits();
            SendQuota::from_figures(
                limits.max_send_rate,
                limits.daily_quota.map_or(-1.0, |q| q as f64),
                state.sent_today() as f64,
            )
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_partition_key_takes_a_thousand_write_units_a_second_and_the_rest_wait() {
        // No burst beyond one second's worth.
        let partitions = Partitions::new(Partitions::WRITE_UNITS_PER_SEC, 1.0);
        let hot = || vec![("status_index/PENDING".to_string(), 2.0), ("table".to_string(), 1.0)];
        // A second's worth at once: no wait.
        for _ in 0..500 {
            assert_eq!(partitions.take(&hot()), Duration::ZERO);
        }
        // Beyond it, each 2-unit write waits 2 ms more than the last.
        assert_eq!(partitions.take(&hot()), Duration::from_millis(2));
        assert_eq!(partitions.take(&hot()), Duration::from_millis(4));
        // Another key has its own bucket.
        assert_eq!(
            partitions.take(&[("status_index/SENT".to_string(), 1.0)]),
            Duration::ZERO
        );
        let throttled = partitions.throttled();
        assert_eq!(throttled.by_key["status_index/PENDING"], 2);
        assert_eq!(
            throttled.first.map(|(_, key)| key),
            Some("status_index/PENDING".to_string())
        );
        // After a quiet second the bucket is full again, and no fuller.
        tokio::time::sleep(Duration::from_secs(2)).await;
        for _ in 0..500 {
            assert_eq!(partitions.take(&hot()), Duration::ZERO);
        }
        assert!(partitions.take(&hot()) > Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_spends_the_kept_capacity_then_the_key_takes_its_limit() {
        let partitions = Partitions::new(1000.0, 300.0);
        let write = [("status_index/PENDING".to_string(), 1000.0)];
        // 300 s of capacity at once, then one second more per second.
        for _ in 0..300 {
            assert_eq!(partitions.take(&write), Duration::ZERO);
        }
        assert_eq!(partitions.take(&write), Duration::from_secs(1));
        assert!(partitions.throttled().by_key.contains_key("status_index/PENDING"));
    }

    fn times(p50: f64) -> AnswerTimes {
        AnswerTimes {
            p50_ms: p50,
            p95_ms: p50 * 3.0,
            p99_ms: p50 * 5.0,
            max_ms: p50 * 10.0,
        }
    }

    #[test]
    fn answer_times_follow_the_percentiles_they_come_from() {
        let t = times(10.0);
        let close = |q: f64, ms: f64| assert!((t.at(q) - ms).abs() < 1e-9, "at {q}: {} ms", t.at(q));
        close(0.0, 5.0);
        close(0.5, 10.0);
        close(0.95, 30.0);
        close(0.97, 40.0);
        close(1.0, 100.0);
        let service = ServiceTimes::new([(AwsOperation::DynamoDbUpdateItem, t)].into(), times(1.0), 7);
        let mut draws: Vec<f64> = (0..10_000)
            .map(|_| {
                service
                    .draw(AwsOperation::DynamoDbUpdateItem, LoadBucket::of(1))
                    .as_secs_f64()
                    * 1000.0
            })
            .collect();
        draws.sort_by(f64::total_cmp);
        let median = draws[5_000];
        assert!((9.0..11.0).contains(&median), "{median}");
        let p95 = draws[9_500];
        assert!((27.0..33.0).contains(&p95), "{p95}");
        let other = service
            .draw(AwsOperation::SqsSendMessage, LoadBucket::of(1))
            .as_secs_f64()
            * 1000.0;
        assert!(
            other <= 10.0,
            "an unnamed operation takes the fallback's times: {other}"
        );
    }

    #[test]
    fn the_same_seed_draws_the_same_times() {
        let draw = |seed| {
            let service = ServiceTimes::new(BTreeMap::new(), times(10.0), seed);
            (0..5)
                .map(|_| service.draw(AwsOperation::S3GetObject, LoadBucket::of(1)))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn a_call_takes_the_answer_times_of_the_load_nearest_the_one_it_meets() {
        let op = AwsOperation::DynamoDbPutItem;
        let by_load = [(LoadBucket::of(1), times(1.0)), (LoadBucket::of(16), times(20.0))];
        let service =
            ServiceTimes::new([(op, times(5.0))].into(), times(100.0), 3).with_load([(op, by_load.into())].into());
        let p50_at = |open: u64| service.times(op, LoadBucket::of(open)).p50_ms;
        assert_eq!([1, 2, 3, 8, 16, 500].map(p50_at), [1.0, 1.0, 1.0, 20.0, 20.0, 20.0]);
        let other = AwsOperation::SqsSendMessage;
        assert_eq!(service.times(other, LoadBucket::of(16)).p50_ms, 100.0, "the fallback");
    }

    #[test]
    fn answers_rounded_to_whole_milliseconds_keep_their_mean() {
        let service = ServiceTimes::instant();
        let ticks: Vec<u128> = (0..10_000)
            .map(|_| service.in_ticks(Duration::from_micros(2_300)).as_millis())
            .collect();
        assert!(ticks.iter().all(|ms| [2, 3].contains(ms)));
        let mean = ticks.iter().sum::<u128>() as f64 / ticks.len() as f64;
        assert!((2.27..2.33).contains(&mean), "{mean}");
    }

    #[tokio::test(start_paused = true)]
    async fn simulated_answers_slow_down_as_calls_pile_up() {
        let op = AwsOperation::DynamoDbPutItem;
        let fixed = |ms: f64| AnswerTimes {
            p50_ms: ms,
            p95_ms: ms,
            p99_ms: ms,
            max_ms: ms,
        };
        let by_load = [(LoadBucket::of(1), fixed(2.0)), (LoadBucket::of(8), fixed(40.0))];
        let service = ServiceTimes::new(BTreeMap::new(), fixed(2.0), 1).with_load([(op, by_load.into())].into());
        let started = tokio::time::Instant::now();
        service.wait(op).await;
        let alone = started.elapsed();
        let started = tokio::time::Instant::now();
        futures::future::join_all((0..8).map(|_| service.wait(op))).await;
        let piled = started.elapsed();
        assert!(alone <= Duration::from_millis(2), "{alone:?}");
        // The eighth call met eight open: at least half its bucket's median.
        assert!(piled >= Duration::from_millis(20), "{piled:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn calls_queue_for_the_engines_cores_before_their_answers() {
        let service = ServiceTimes::instant().with_engine_cpu(Duration::from_millis(1), 2);
        let started = tokio::time::Instant::now();
        service.wait(AwsOperation::DynamoDbPutItem).await;
        assert_eq!(started.elapsed(), Duration::from_millis(1), "one call: its own CPU");
        let started = tokio::time::Instant::now();
        futures::future::join_all((0..8).map(|_| service.wait(AwsOperation::DynamoDbPutItem))).await;
        assert_eq!(started.elapsed(), Duration::from_millis(4), "eight calls on two cores");
        let free = ServiceTimes::instant();
        let started = tokio::time::Instant::now();
        futures::future::join_all((0..8).map(|_| free.wait(AwsOperation::DynamoDbPutItem))).await;
        assert_eq!(started.elapsed(), Duration::ZERO, "no CPU in the profile: free");
    }

    fn email(to: &str) -> Email {
        Email {
            from: "courier@example.com".into(),
            to: crate::domain::EmailAddress::parse(to).unwrap(),
            subject: "s".into(),
            text: "b".into(),
            attachment: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_injected_fault_hits_about_its_share_of_sends_and_is_counted_by_name() {
        let ses = SesModel::new(None, std::sync::Arc::new(ServiceTimes::instant()), 3);
        ses.add_fault("ses_throttle#0", SesFault::Throttle { probability: 0.3 });
        ses.add_fault("ses_latency#1", SesFault::Latency { ms: 50 });
        let started = tokio::time::Instant::now();
        let mut throttled = 0;
        for _ in 0..1000 {
            if matches!(ses.send(&email("a@example.com")).await, Err(MailError::Throttled(_))) {
                throttled += 1;
            }
        }
        assert!((250..350).contains(&throttled), "{throttled}");
        assert_eq!(ses.injected()["ses_throttle#0"], throttled);
        // Each send that got past the throttle also waited the added latency.
        assert_eq!(ses.injected()["ses_latency#1"], 1000 - throttled);
        assert!(started.elapsed() >= Duration::from_millis(50) * (1000 - throttled) as u32);
        ses.remove_fault("ses_throttle#0");
        ses.remove_fault("ses_latency#1");
        assert!(ses.send(&email("a@example.com")).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn sends_paced_at_the_door_are_admitted_however_their_answer_times_vary() {
        let limits = SesQuota {
            max_send_rate: 1.0,
            daily_quota: None,
            day: SesQuota::DAY,
        };
        // Answers take 0.5–1 s at random: admitted as they leave, one send
        // after a slower one would come less than a second after it.
        let second = AnswerTimes {
            p50_ms: 1_000.0,
            p95_ms: 1_000.0,
            p99_ms: 1_000.0,
            max_ms: 1_000.0,
        };
        let times = ServiceTimes::new([(AwsOperation::Sesv2SendEmail, second)].into(), second, 5);
        let ses = std::sync::Arc::new(SesModel::new(Some(limits), std::sync::Arc::new(times), 5));
        let mut sends = Vec::new();
        for _ in 0..20 {
            let ses = ses.clone();
            sends.push(tokio::spawn(async move { ses.send(&email("a@example.com")).await }));
            tokio::time::sleep(Duration::from_secs(1)).await; // exactly the rate
        }
        for send in sends {
            assert!(send.await.unwrap().is_ok());
        }
        assert_eq!(ses.throttled(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_an_injected_fault_refuses_takes_no_token_of_the_rate() {
        let limits = SesQuota {
            max_send_rate: 1.0,
            daily_quota: None,
            day: SesQuota::DAY,
        };
        let ses = SesModel::new(Some(limits), std::sync::Arc::new(ServiceTimes::instant()), 1);
        ses.add_fault("ses_throttle#0", SesFault::Throttle { probability: 1.0 });
        assert!(matches!(
            ses.send(&email("a@example.com")).await,
            Err(MailError::Throttled(_))
        ));
        ses.remove_fault("ses_throttle#0");
        assert!(
            ses.send(&email("a@example.com")).await.is_ok(),
            "the bucket's one token is still there"
        );
        assert_eq!(ses.throttled(), 0, "no refusal for the rate");
    }

    #[tokio::test(start_paused = true)]
    async fn ses_admits_its_send_rate_then_throttles_and_reports_its_limits() {
        let limits = SesQuota {
            max_send_rate: 5.0,
            daily_quota: Some(8),
            day: SesQuota::DAY,
        };
        let ses = SesModel::new(Some(limits), std::sync::Arc::new(ServiceTimes::instant()), 1);
        let mut results = Vec::new();
        for _ in 0..7 {
            results.push(ses.send(&email("a@example.com")).await);
        }
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            5,
            "the bucket holds one second's sends"
        );
        assert!(matches!(results[6], Err(MailError::Throttled(_))));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let b = email("b@example.com");
        let mut later = Vec::new();
        for _ in 0..4 {
            later.push(ses.send(&b).await);
        }
        assert_eq!(
            later.iter().filter(|r| r.is_ok()).count(),
            3,
            "the day's quota of 8 is used up"
        );
        assert!(later.iter().any(|r| matches!(r, Err(MailError::QuotaExhausted(_)))));
        assert_eq!(ses.accepted()["a@example.com"], 5);
        assert_eq!(ses.throttled(), 3);
        let quota = ses.send_quota().await.unwrap().expect("limits");
        assert_eq!(quota, SendQuota::from_figures(5.0, 8.0, 8.0));
    }
}
