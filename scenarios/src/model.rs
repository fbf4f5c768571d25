//! The scenario schema. Every table refuses unknown keys, so a typo is an
//! error that names the key, not a silently ignored setting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vocabulary::{MailerKind, MessageKind, PerPriority};

/// One load run, as written in `scenarios/<name>.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Every random choice (traffic, data, fault dice) derives from it.
    pub seed: u64,
    #[serde(default)]
    pub run: RunSpec,
    #[serde(default)]
    pub engine: EngineSpec,
    #[serde(default)]
    pub traffic: TrafficSpec,
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
    #[serde(default)]
    pub slo: Slo,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSpec {
    /// `local` (emulators started here), `aws`, or the URL of a running stack.
    pub target: TargetSpec,
    /// How long traffic arrives.
    pub duration_secs: f64,
    /// Stop generating traffic once this many messages were offered (rows + notifications).
    pub message_budget: Option<u64>,
    /// After traffic stops, how long to wait for every message to reach SENT or ERROR.
    pub drain_timeout_secs: f64,
    /// Concurrent goose users that carry the arrivals (an open model needs enough of them).
    pub users: usize,
    /// How often the run samples rates and queue depths.
    pub sample_interval_ms: u64,
}

impl Default for RunSpec {
    fn default() -> Self {
        Self {
            target: TargetSpec::Local,
            duration_secs: 30.0,
            message_budget: None,
            drain_timeout_secs: 60.0,
            users: 16,
            sample_interval_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetSpec {
    Local,
    Aws,
    #[serde(untagged)]
    Endpoint(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSpec {
    pub workers: usize,
    pub concurrency: usize,
    pub visibility_timeout_secs: u32,
    pub max_receives: u32,
    /// `sesv2`, `ses`, `smtp` or `dry-run`.
    pub mailer: MailerKind,
    pub long_poll_secs: u32,
    pub retry_base_secs: u32,
    pub retry_max_secs: u32,
    /// Medium and low sends in flight at most while reminders flow (the
    /// engine's `sender.background_in_flight`; unset: a quarter of
    /// workers × concurrency).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub background_in_flight: Option<usize>,
    /// A campaign's next chunk waits while its queue holds this many messages
    /// (the engine's `queues.campaign_max_waiting`; unset: its default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_max_waiting: Option<u64>,
    /// Campaign chunks written at once while reminders flow (the engine's
    /// `queues.campaign_chunks_while_reminders`; unset: its default, 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_chunks_while_reminders: Option<usize>,
    /// Campaign chunks written at once while reminders flow but the medium
    /// and low senders are starved (the engine's
    /// `queues.campaign_chunks_while_starved`; unset: its default, 4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_chunks_while_starved: Option<usize>,
}

impl Default for EngineSpec {
    fn default() -> Self {
        Self {
            workers: 2,
            concurrency: 10,
            visibility_timeout_secs: 30,
            max_receives: 3,
            mailer: MailerKind::Sesv2,
            long_poll_secs: 1,
            retry_base_secs: 1,
            retry_max_secs: 10,
            background_in_flight: None,
            campaign_max_waiting: None,
            campaign_chunks_while_reminders: None,
            campaign_chunks_while_starved: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrafficSpec {
    pub campaigns: Option<CampaignSpec>,
    pub notifications: Option<NotificationSpec>,
}

/// Uploaded CSV campaigns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CampaignSpec {
    /// How many campaigns at most (the arrival shape spaces them out).
    pub count: u64,
    pub rows: RowCount,
    /// Share of each row type; rows of type `campaign` go by the campaign routing rule.
    pub mix: BTreeMap<MessageKind, f64>,
    pub duplicate_pct: f64,
    pub invalid_pct: f64,
    pub attachment_pct: f64,
    pub attachment_bytes: usize,
    pub arrival: ArrivalShape,
}

impl Default for CampaignSpec {
    fn default() -> Self {
        Self {
            count: 1,
            rows: RowCount::Fixed(100),
            mix: BTreeMap::from([(MessageKind::Campaign, 1.0)]),
            duplicate_pct: 0.0,
            invalid_pct: 0.0,
            attachment_pct: 0.0,
            attachment_bytes: 10_000,
            arrival: ArrivalShape::Constant { rate_per_sec: 0.2 },
        }
    }
}

/// Rows per campaign: a fixed number or a uniform range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RowCount {
    Fixed(u64),
    Uniform { min: u64, max: u64 },
}

/// Single notifications posted to `/notifications`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationSpec {
    pub mix: BTreeMap<MessageKind, f64>,
    pub arrival: ArrivalShape,
}

impl Default for NotificationSpec {
    fn default() -> Self {
        Self {
            mix: BTreeMap::from([
                (MessageKind::Reminder, 0.2),
                (MessageKind::Offer, 0.4),
                (MessageKind::Subscription, 0.4),
            ]),
            arrival: ArrivalShape::Constant { rate_per_sec: 10.0 },
        }
    }
}

/// How arrivals are spread over time: an open model (arrival rate, per second).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "shape", rename_all = "lowercase", deny_unknown_fields)]
pub enum ArrivalShape {
    Constant {
        rate_per_sec: f64,
    },
    /// Linear from `from` to `to` over `over_secs`, then `to`.
    Ramp {
        from: f64,
        to: f64,
        over_secs: f64,
    },
    /// `base` until `at_secs`, then `to`.
    Step {
        base: f64,
        to: f64,
        at_secs: f64,
    },
    /// `base`, with `peak` from `at_secs` for `for_secs`.
    Spike {
        base: f64,
        peak: f64,
        at_secs: f64,
        for_secs: f64,
    },
}

impl ArrivalShape {
    /// The arrival rate at `t` seconds into the run.
    pub fn rate_at(&self, t: f64) -> f64 {
        match *self {
            ArrivalShape::Constant { rate_per_sec } => rate_per_sec,
            ArrivalShape::Ramp { from, to, over_secs } => {
                if over_secs <= 0.0 || t >= over_secs {
                    to
                } else {
                    from + (to - from) * t / over_secs
                }
            }
            ArrivalShape::Step { base, to, at_secs } => {
                if t < at_secs {
                    base
                } else {
                    to
                }
            }
            ArrivalShape::Spike {
                base,
                peak,
                at_secs,
                for_secs,
            } => {
                if t >= at_secs && t < at_secs + for_secs {
                    peak
                } else {
                    base
                }
            }
        }
    }

    pub fn max_rate(&self) -> f64 {
        match *self {
            ArrivalShape::Constant { rate_per_sec } => rate_per_sec,
            ArrivalShape::Ramp { from, to, .. } => from.max(to),
            ArrivalShape::Step { base, to, .. } => base.max(to),
            ArrivalShape::Spike { base, peak, .. } => base.max(peak),
        }
    }
}

/// What a fault does; the `kind` key of a `[[faults]]` table picks it, and
/// each kind takes exactly its own settings (any other key is an error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// SES answers "slow down" to `probability` of sends.
    SesThrottle { probability: Probability },
    /// Every SES send takes `latency_ms` longer.
    SesLatency { latency_ms: u64 },
    /// SES rejects `probability` of sends for good.
    SesReject { probability: Probability },
    /// SQS refuses `probability` of send calls with a server error.
    SqsSendError { probability: Probability },
    /// SQS refuses `probability` of receive calls with a server error.
    SqsReceiveError { probability: Probability },
    /// SQS delivers `probability` of received messages a second time, after
    /// the visibility timeout, as its at-least-once delivery may. Only the
    /// simulated target (`--stack sim`) can make a queue do this.
    SqsDuplicate { probability: Probability },
    /// DynamoDB answers ProvisionedThroughputExceeded to `probability` of calls.
    DynamodbThrottle { probability: Probability },
    /// SES's own sending limits: `max_send_rate` per second and `daily_quota`
    /// per day (`day_secs`, 86,400 unless a scenario compresses the day to
    /// see a quota reset within a run). A quota is the account's, so it stays
    /// in force through the drain unless `until = "traffic"`.
    SesQuota {
        max_send_rate: PositiveRate,
        daily_quota: Option<u64>,
        day_secs: Option<PositiveRate>,
    },
    /// The sender workers crash (abort mid-send) and restart after `duration_secs`.
    KillWorker,
    /// The whole engine crashes — HTTP API, campaign batch processing and
    /// senders, aborted mid-call — and starts again after `duration_secs`,
    /// resuming unfinished batches from their checkpoints.
    KillEngine,
    /// Every emulator process is stopped (SIGSTOP) for `duration_secs`.
    PauseStack,
    /// `count` undecodable messages are put on the queues at `start_secs`.
    Poison { count: std::num::NonZeroU64 },
    /// The SMTP server answers `code` (4xx: retry later; 5xx: refused for
    /// good) to `probability` of messages instead of accepting them.
    SmtpReply { code: SmtpCode, probability: Probability },
}

impl Fault {
    /// Its `kind`, as written in scenario files and shown in results.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::SesThrottle { .. } => "ses_throttle",
            Fault::SesLatency { .. } => "ses_latency",
            Fault::SesReject { .. } => "ses_reject",
            Fault::SqsSendError { .. } => "sqs_send_error",
            Fault::SqsReceiveError { .. } => "sqs_receive_error",
            Fault::SqsDuplicate { .. } => "sqs_duplicate",
            Fault::DynamodbThrottle { .. } => "dynamodb_throttle",
            Fault::SesQuota { .. } => "ses_quota",
            Fault::KillWorker => "kill_worker",
            Fault::KillEngine => "kill_engine",
            Fault::PauseStack => "pause_stack",
            Fault::Poison { .. } => "poison",
            Fault::SmtpReply { .. } => "smtp_reply",
        }
    }

    /// Whether only a model of the services can do it (`--stack sim`).
    pub fn simulated_only(&self) -> bool {
        matches!(self, Fault::SqsDuplicate { .. })
    }

    /// Its settings in a few words, for timelines (`p=0.3`, `+50 ms`).
    pub fn detail(&self) -> String {
        match self {
            Fault::SesThrottle { probability }
            | Fault::SesReject { probability }
            | Fault::SqsSendError { probability }
            | Fault::SqsReceiveError { probability }
            | Fault::SqsDuplicate { probability }
            | Fault::DynamodbThrottle { probability } => format!("p={}", probability.0),
            Fault::SesLatency { latency_ms } => format!("+{latency_ms} ms"),
            Fault::SesQuota {
                max_send_rate,
                daily_quota: Some(quota),
                ..
            } => format!("{}/s, {quota}/day", max_send_rate.0),
            Fault::SesQuota { max_send_rate, .. } => format!("{}/s", max_send_rate.0),
            Fault::KillWorker | Fault::KillEngine | Fault::PauseStack => String::new(),
            Fault::Poison { count } => format!("{count} messages"),
            Fault::SmtpReply { code, probability } => format!("reply {}, p={}", code.0, probability.0),
        }
    }
}

/// One fault on the run's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSpec {
    #[serde(default)]
    pub start_secs: f64,
    /// Until its end (below) when left out.
    pub duration_secs: Option<f64>,
    /// When it ends at the latest: with the traffic (transient faults, by
    /// default), or at the end of the drain (`"end"`: a property of the
    /// account, like an SES quota, which is the default for `ses_quota`).
    pub until: Option<FaultEnd>,
    #[serde(flatten)]
    pub fault: Fault,
}

/// The latest a fault ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FaultEnd {
    /// When the traffic ends, so the drain measures recovery.
    Traffic,
    /// When the drain ends: it stays in force while the backlog empties.
    End,
}

impl FaultSpec {
    /// Whether it stays in force through the drain.
    pub fn lasts_through_drain(&self) -> bool {
        match self.until {
            Some(end) => end == FaultEnd::End,
            None => matches!(self.fault, Fault::SesQuota { .. }),
        }
    }
}

/// Gives a number newtype its range check at parse time, so an out-of-range
/// value is refused by the TOML reader with its line.
macro_rules! checked_number {
    ($(#[$doc:meta])* $name:ident($inner:ty as $spelled:literal), $ok:expr, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
        #[serde(try_from = $spelled, into = $spelled)]
        pub struct $name(pub $inner);

        impl TryFrom<$inner> for $name {
            type Error = String;
            fn try_from(value: $inner) -> Result<Self, String> {
                let ok: fn($inner) -> bool = $ok;
                if ok(value) {
                    Ok(Self(value))
                } else {
                    Err(format!("{value} is not {}", $what))
                }
            }
        }

        impl From<$name> for $inner {
            fn from(value: $name) -> $inner {
                value.0
            }
        }
    };
}

checked_number!(
    /// A share of calls, between 0 and 1.
    Probability(f64 as "f64"), |p| (0.0..=1.0).contains(&p), "a probability between 0 and 1"
);
checked_number!(
    /// A rate per second above 0.
    PositiveRate(f64 as "f64"), |r| r.is_finite() && r > 0.0, "a rate above 0"
);
checked_number!(
    /// An SMTP reply code a server may answer instead of accepting.
    SmtpCode(u16 as "u16"), |c| (400..=599).contains(&c), "an SMTP failure code (400–599)"
);

/// What the run must show to pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Slo {
    /// A target per priority; any may be left out.
    pub p50_ms: PerPriority<Option<f64>>,
    /// A target per priority; any may be left out.
    pub p95_ms: PerPriority<Option<f64>>,
    /// A target per priority; any may be left out.
    pub p99_ms: PerPriority<Option<f64>>,
    pub min_delivered_per_sec: Option<f64>,
    pub max_error_pct: Option<f64>,
    pub max_lost: u64,
    pub max_duplicate_sends: u64,
    /// Per priority: its p99 while campaigns flow (from the first campaign's
    /// arrival on) at most this many times its p99 before the first campaign.
    pub p99_with_campaigns_max_ratio: PerPriority<Option<f64>>,
    /// Low priority's lowest share of all sends (%) over any 5 s in which
    /// it had work waiting: its guarantee against starvation.
    pub min_low_share_pct: Option<f64>,
    /// Sends per second while more than a second of sends waits, as a
    /// percentage of the `ses_quota` fault's rate: how fully the quota is used.
    pub min_sends_pct_of_quota: Option<f64>,
    /// Sends SES answered with a throttle (the quota's and injected ones).
    pub max_ses_throttles: Option<u64>,
    /// The DLQ must hold exactly the injected poison messages.
    pub dlq_equals_poison: bool,
}

impl Default for Slo {
    fn default() -> Self {
        Self {
            p50_ms: PerPriority::default(),
            p95_ms: PerPriority::default(),
            p99_ms: PerPriority::default(),
            min_delivered_per_sec: None,
            max_error_pct: None,
            max_lost: 0,
            max_duplicate_sends: 0,
            p99_with_campaigns_max_ratio: PerPriority::default(),
            min_low_share_pct: None,
            min_sends_pct_of_quota: None,
            max_ses_throttles: None,
            dlq_equals_poison: true,
        }
    }
}

/// A scenario file that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{}: {field}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ScenarioError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// The dotted key at fault, e.g. `traffic.campaigns.duplicate_pct`.
    pub field: String,
    pub message: String,
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.to_path_buf(),
            line: None,
            field: "(file)".into(),
            message: e.to_string(),
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text`; `path` is only used to name it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|span| line_of(text, span.start));
            let message = e.message().to_string();
            // An unknown or missing key is named in backticks; a bad value
            // is named by the dotted path of the key on its line.
            let named_key = message.starts_with("unknown field") || message.starts_with("missing field");
            let field = named_key
                .then(|| message.split('`').nth(1).map(str::to_string))
                .flatten()
                .or_else(|| line.and_then(|l| path_at(text, l)))
                .unwrap_or_else(|| "(syntax)".into());
            ScenarioError {
                file: path.to_path_buf(),
                line,
                field,
                message,
            }
        })?;
        scenario.validate().map_err(|(field, message)| ScenarioError {
            file: path.to_path_buf(),
            line: locate(text, &field),
            field,
            message,
        })?;
        Ok(scenario)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let fail = |field: &str, message: String| Err((field.to_string(), message));
        let pct = |field: &str, value: f64| {
            if (0.0..=100.0).contains(&value) {
                Ok(())
            } else {
                fail(field, format!("{value} is not a percentage between 0 and 100"))
            }
        };
        if self.name.trim().is_empty() {
            return fail("name", "must not be empty".into());
        }
        if !self.run.duration_secs.is_finite() || self.run.duration_secs <= 0.0 {
            return fail("run.duration_secs", "must be more than 0".into());
        }
        if self.run.users == 0 {
            return fail("run.users", "must be at least 1".into());
        }
        if self.engine.workers == 0 || self.engine.concurrency == 0 {
            return fail("engine.workers", "workers and concurrency must be at least 1".into());
        }
        if self.engine.max_receives == 0 {
            return fail("engine.max_receives", "must be at least 1".into());
        }
        if self.engine.background_in_flight == Some(0) {
            return fail(
                "engine.background_in_flight",
                "must be at least 1 (leave it out for the engine's default)".into(),
            );
        }
        if self.engine.campaign_max_waiting == Some(0) {
            return fail(
                "engine.campaign_max_waiting",
                "must be at least 1: at 0 no campaign would ever be enqueued".into(),
            );
        }
        if self.engine.campaign_chunks_while_reminders == Some(0) {
            return fail(
                "engine.campaign_chunks_while_reminders",
                "must be at least 1: at 0 no campaign would be enqueued while reminders flow".into(),
            );
        }
        if self.engine.campaign_chunks_while_starved == Some(0) {
            return fail(
                "engine.campaign_chunks_while_starved",
                "must be at least 1: at 0 no campaign would be enqueued while reminders flow".into(),
            );
        }
        if self.traffic.campaigns.is_none() && self.traffic.notifications.is_none() {
            return fail("traffic", "needs [traffic.campaigns] or [traffic.notifications]".into());
        }
        if let Some(c) = &self.traffic.campaigns {
            pct("traffic.campaigns.duplicate_pct", c.duplicate_pct)?;
            pct("traffic.campaigns.invalid_pct", c.invalid_pct)?;
            pct("traffic.campaigns.attachment_pct", c.attachment_pct)?;
            check_mix("traffic.campaigns.mix", &c.mix, &MessageKind::ALL)?;
            check_arrival("traffic.campaigns.arrival", &c.arrival)?;
            if let RowCount::Uniform { min, max } = c.rows {
                if min > max || max == 0 {
                    return fail(
                        "traffic.campaigns.rows",
                        format!("min {min} and max {max} make no range"),
                    );
                }
            }
        }
        if let Some(n) = &self.traffic.notifications {
            check_mix("traffic.notifications.mix", &n.mix, &MessageKind::ALL[..3])?;
            check_arrival("traffic.notifications.arrival", &n.arrival)?;
        }
        self.validate_faults()?;
        for (name, figures) in [
            ("slo.p50_ms", self.slo.p50_ms),
            ("slo.p95_ms", self.slo.p95_ms),
            ("slo.p99_ms", self.slo.p99_ms),
        ] {
            for value in figures.iter().filter_map(|(_, target)| *target) {
                if value <= 0.0 {
                    return fail(name, format!("{value} is not a positive latency"));
                }
            }
        }
        if let Some(pct_value) = self.slo.max_error_pct {
            pct("slo.max_error_pct", pct_value)?;
        }
        if let Some(pct_value) = self.slo.min_low_share_pct {
            pct("slo.min_low_share_pct", pct_value)?;
        }
        if let Some(pct_value) = self.slo.min_sends_pct_of_quota {
            pct("slo.min_sends_pct_of_quota", pct_value)?;
            if self.ses_quota_rate().is_none() {
                return fail("slo.min_sends_pct_of_quota", "needs an ses_quota fault".into());
            }
        }
        for value in self.slo.p99_with_campaigns_max_ratio.iter().filter_map(|(_, r)| *r) {
            if !(value.is_finite() && value >= 1.0) {
                return fail(
                    "slo.p99_with_campaigns_max_ratio",
                    format!("{value} is not a ratio ≥ 1"),
                );
            }
        }
        Ok(())
    }

    /// What a fault's settings cannot say alone: windows on the clock, a
    /// duration where one is needed, and SMTP faults only on the SMTP mailer.
    fn validate_faults(&self) -> Result<(), (String, String)> {
        let fail = |field: &str, message: String| Err((format!("faults.{field}"), message));
        for spec in &self.faults {
            if !spec.start_secs.is_finite() || spec.start_secs < 0.0 {
                return fail("start_secs", format!("{} is not a time ≥ 0", spec.start_secs));
            }
            if spec.duration_secs.is_some_and(|d| !d.is_finite() || d <= 0.0) {
                return fail("duration_secs", "must be more than 0".into());
            }
            let lasting = matches!(spec.fault, Fault::KillWorker | Fault::KillEngine | Fault::PauseStack);
            if lasting && spec.until == Some(FaultEnd::End) {
                let kind = spec.fault.name();
                return fail(
                    "until",
                    format!("a {kind} fault cannot last through the drain: nothing would drain"),
                );
            }
            if lasting && spec.duration_secs.is_none() {
                let kind = spec.fault.name();
                return fail("duration_secs", format!("a {kind} fault needs `duration_secs`"));
            }
            if matches!(spec.fault, Fault::SmtpReply { .. }) && self.engine.mailer != MailerKind::Smtp {
                return fail("kind", "an smtp_reply fault needs engine.mailer = \"smtp\"".into());
            }
        }
        let smtp_faults = self
            .faults
            .iter()
            .filter(|f| matches!(f.fault, Fault::SmtpReply { .. }));
        if smtp_faults.count() > 1 {
            let why = "at most one smtp_reply fault per scenario (the SMTP server holds one reply rule)";
            return fail("kind", why.into());
        }
        Ok(())
    }

    /// Adds a fault given as the inside of an inline TOML table, e.g.
    /// `kind = "ses_latency", latency_ms = 50` (`loadtest run --fault`), and
    /// validates the scenario again. Errors name the fault as `--fault`.
    pub fn add_fault(&mut self, table: &str) -> Result<(), ScenarioError> {
        #[derive(Deserialize)]
        struct Wrapper {
            fault: FaultSpec,
        }
        let origin = PathBuf::from("--fault");
        let error = |field: String, message: String| ScenarioError {
            file: origin.clone(),
            line: None,
            field,
            message,
        };
        let wrapper: Wrapper = toml::from_str(&format!("fault = {{ {table} }}")).map_err(|e| {
            let message = e.message().to_string();
            let field = message
                .split('`')
                .nth(1)
                .map(|f| format!("faults.{f}"))
                .unwrap_or_else(|| "faults".into());
            error(field, format!("{message} (in `{table}`)"))
        })?;
        self.faults.push(wrapper.fault);
        self.validate().map_err(|(field, message)| error(field, message))
    }

    /// How many poison messages the scenario injects before `secs` into the run.
    /// The SES account's sending rate, when the scenario sets one (`ses_quota`).
    pub fn ses_quota_rate(&self) -> Option<f64> {
        self.faults.iter().find_map(|spec| match spec.fault {
            Fault::SesQuota { max_send_rate, .. } => Some(max_send_rate.0),
            _ => None,
        })
    }

    pub fn poison_count_before(&self, secs: f64) -> u64 {
        self.faults
            .iter()
            .filter(|f| f.start_secs < secs)
            .map(|f| match f.fault {
                Fault::Poison { count } => count.get(),
                _ => 0,
            })
            .sum()
    }
}

fn check_mix(field: &str, mix: &BTreeMap<MessageKind, f64>, allowed: &[MessageKind]) -> Result<(), (String, String)> {
    if let Some(unknown) = mix.keys().find(|k| !allowed.contains(k)) {
        let allowed: Vec<&str> = allowed.iter().map(|k| k.as_str()).collect();
        return Err((
            field.to_string(),
            format!("`{unknown}` is not one of {}", allowed.join(", ")),
        ));
    }
    if mix.values().any(|w| *w < 0.0 || !w.is_finite()) || mix.values().sum::<f64>() <= 0.0 {
        return Err((field.to_string(), "weights must be ≥ 0 and not all 0".into()));
    }
    Ok(())
}

/// The highest arrival rate a scenario may ask for.
pub const MAX_RATE_PER_SEC: f64 = 100_000.0;

fn check_arrival(field: &str, arrival: &ArrivalShape) -> Result<(), (String, String)> {
    let rates: Vec<f64> = match *arrival {
        ArrivalShape::Constant { rate_per_sec } => vec![rate_per_sec],
        ArrivalShape::Ramp { from, to, .. } => vec![from, to],
        ArrivalShape::Step { base, to, .. } => vec![base, to],
        ArrivalShape::Spike { base, peak, .. } => vec![base, peak],
    };
    if rates.iter().any(|r| *r < 0.0 || !r.is_finite()) || arrival.max_rate() <= 0.0 {
        return Err((field.to_string(), "rates must be ≥ 0 with at least one above 0".into()));
    }
    if arrival.max_rate() > MAX_RATE_PER_SEC {
        return Err((
            field.to_string(),
            format!("rates above {MAX_RATE_PER_SEC} per second are more than a load run here can offer"),
        ));
    }
    Ok(())
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The dotted path of the key set on `line` (1-based): its table's name and the key.
fn path_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().take(line).collect();
    let key = lines.last()?.split('=').next()?.trim();
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let table = lines.iter().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim())
    });
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_string(),
    })
}

/// The line that sets `field` (a dotted path), found by its table header and key.
fn locate(text: &str, field: &str) -> Option<usize> {
    let (table, key) = match field.rsplit_once('.') {
        Some((table, key)) => (Some(table), key),
        None => (None, field),
    };
    let mut in_table = table.is_none();
    let mut table_line = None;
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            let name = trimmed.trim_matches(|c| c == '[' || c == ']').trim();
            in_table = table == Some(name);
            if in_table {
                table_line = Some(index + 1);
            }
            continue;
        }
        if in_table {
            let this_key = trimmed.split('=').next().unwrap_or_default().trim();
            if this_key == key {
                return Some(index + 1);
            }
        }
    }
    table_line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, Path::new("scenarios/test.toml"))
    }

    const MINIMAL: &str =
        "name = \"t\"\nseed = 7\n[traffic.notifications]\narrival = { shape = \"constant\", rate_per_sec = 5 }\n";

    #[test]
    fn a_minimal_scenario_gets_the_documented_defaults() {
        let scenario = parse(MINIMAL).unwrap();
        assert_eq!(scenario.run.duration_secs, 30.0);
        assert_eq!(scenario.engine.max_receives, 3);
        assert_eq!(scenario.run.target, TargetSpec::Local);
        assert_eq!(scenario.slo.max_lost, 0);
        assert!(scenario.traffic.campaigns.is_none());
        assert_eq!(scenario.traffic.notifications.unwrap().mix.len(), 3);
    }

    #[test]
    fn background_sends_in_flight_are_set_or_left_to_the_engine_but_never_zero() {
        assert_eq!(parse(MINIMAL).unwrap().engine.background_in_flight, None);
        let text = format!("{MINIMAL}[engine]\nbackground_in_flight = 2\n");
        assert_eq!(parse(&text).unwrap().engine.background_in_flight, Some(2));
        let text = format!("{MINIMAL}[engine]\nbackground_in_flight = 0\n");
        let error = parse(&text).unwrap_err();
        assert_eq!(error.field, "engine.background_in_flight");
        assert_eq!(error.line, Some(6));
        let text = format!("{MINIMAL}[engine]\ncampaign_max_waiting = 0\n");
        assert_eq!(parse(&text).unwrap_err().field, "engine.campaign_max_waiting");
        let text = format!("{MINIMAL}[engine]\ncampaign_max_waiting = 2000000\n");
        assert_eq!(parse(&text).unwrap().engine.campaign_max_waiting, Some(2_000_000));
        let text = format!("{MINIMAL}[engine]\ncampaign_chunks_while_reminders = 0\n");
        assert_eq!(
            parse(&text).unwrap_err().field,
            "engine.campaign_chunks_while_reminders"
        );
        let text = format!("{MINIMAL}[engine]\ncampaign_chunks_while_reminders = 2\n");
        assert_eq!(parse(&text).unwrap().engine.campaign_chunks_while_reminders, Some(2));
        let text = format!("{MINIMAL}[engine]\ncampaign_chunks_while_starved = 0\n");
        assert_eq!(parse(&text).unwrap_err().field, "engine.campaign_chunks_while_starved");
        let text = format!("{MINIMAL}[engine]\ncampaign_chunks_while_starved = 1\n");
        assert_eq!(parse(&text).unwrap().engine.campaign_chunks_while_starved, Some(1));
    }

    #[test]
    fn an_unknown_key_is_named_with_its_file_and_line() {
        let error = parse("name = \"t\"\nseed = 1\n[run]\nduration = 10\n").unwrap_err();
        assert_eq!(error.line, Some(4));
        assert_eq!(error.field, "duration");
        assert!(
            error.to_string().starts_with("scenarios/test.toml:4: duration:"),
            "{error}"
        );
    }

    #[test]
    fn a_wrong_type_is_named_with_its_line() {
        let error = parse("name = \"t\"\nseed = \"abc\"\n").unwrap_err();
        assert_eq!(error.line, Some(2));
        assert!(
            error.message.contains("integer") || error.message.contains("u64"),
            "{error}"
        );
    }

    #[test]
    fn out_of_range_values_name_the_field_and_its_line() {
        let text = "name = \"t\"\nseed = 1\n\n[traffic.campaigns]\ncount = 2\nduplicate_pct = 140\n";
        let error = parse(text).unwrap_err();
        assert_eq!(error.field, "traffic.campaigns.duplicate_pct");
        assert_eq!(error.line, Some(6));
        assert!(error.message.contains("140"));

        let text = format!("{MINIMAL}[[faults]]\nkind = \"ses_throttle\"\nstart_secs = 3\n");
        let error = parse(&text).unwrap_err();
        assert_eq!(error.field, "probability");
        assert!(error.message.contains("missing field `probability`"), "{error}");

        let text = format!("{MINIMAL}[[faults]]\nkind = \"ses_throttle\"\nprobability = 1.5\n");
        let error = parse(&text).unwrap_err();
        assert!(error.message.contains("1.5 is not a probability"), "{error}");

        let text = format!("{MINIMAL}[[faults]]\nkind = \"kill_worker\"\nstart_secs = 3\n");
        let error = parse(&text).unwrap_err();
        assert_eq!(error.field, "faults.duration_secs");
        assert_eq!(error.line, Some(5), "the fault's table, where the key belongs");

        let text = format!("{MINIMAL}[[faults]]\nkind = \"kill_engine\"\nstart_secs = 3\n");
        let error = parse(&text).unwrap_err();
        assert!(
            error.message.contains("a kill_engine fault needs `duration_secs`"),
            "{error}"
        );

        let text = format!("{MINIMAL}[[faults]]\nkind = \"ses_meltdown\"\n");
        let error = parse(&text).unwrap_err();
        assert_eq!(error.line, Some(5), "the fault's table ({error})");
        assert!(error.message.contains("ses_meltdown"));
    }

    #[test]
    fn traffic_is_required_and_mixes_only_know_real_kinds() {
        let error = parse("name = \"t\"\nseed = 1\n").unwrap_err();
        assert_eq!(error.field, "traffic");
        let text = "name = \"t\"\nseed = 1\n[traffic.notifications]\nmix = { reminder = 1, invoice = 2 }\n";
        let error = parse(text).unwrap_err();
        assert_eq!(error.field, "traffic.notifications.mix");
        assert_eq!(error.line, Some(4));
    }

    #[test]
    fn arrival_shapes_give_their_rates_over_time() {
        let ramp = ArrivalShape::Ramp {
            from: 0.0,
            to: 10.0,
            over_secs: 10.0,
        };
        assert_eq!(ramp.rate_at(5.0), 5.0);
        assert_eq!(ramp.rate_at(20.0), 10.0);
        let spike = ArrivalShape::Spike {
            base: 1.0,
            peak: 50.0,
            at_secs: 10.0,
            for_secs: 5.0,
        };
        assert_eq!(
            (spike.rate_at(9.9), spike.rate_at(10.0), spike.rate_at(15.0)),
            (1.0, 50.0, 1.0)
        );
        let step = ArrivalShape::Step {
            base: 2.0,
            to: 8.0,
            at_secs: 3.0,
        };
        assert_eq!((step.rate_at(2.9), step.rate_at(3.0)), (2.0, 8.0));
    }

    #[test]
    fn every_library_scenario_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut count = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") && !path.ends_with("Cargo.toml") {
                Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
                count += 1;
            }
        }
        assert!(count >= 7, "the library has its seven scenarios, found {count}");
    }

    #[test]
    fn a_fault_from_the_command_line_joins_the_timeline_or_names_what_is_wrong() {
        let mut scenario = parse(MINIMAL).unwrap();
        scenario.add_fault(r#"kind = "ses_latency", latency_ms = 50"#).unwrap();
        assert_eq!(scenario.faults.len(), 1);
        assert_eq!(scenario.faults[0].fault, Fault::SesLatency { latency_ms: 50 });
        assert_eq!(scenario.faults[0].duration_secs, None, "in force for the whole run");

        let missing = scenario.add_fault(r#"kind = "ses_latency""#).unwrap_err();
        assert_eq!(missing.field, "faults.latency_ms");
        assert!(
            missing.to_string().starts_with("--fault: faults.latency_ms:"),
            "{missing}"
        );
        let unknown = parse(MINIMAL)
            .unwrap()
            .add_fault(r#"kind = "ses_latency", latncy_ms = 5"#)
            .unwrap_err();
        assert_eq!(unknown.field, "faults.latncy_ms", "{unknown}");
    }
}
