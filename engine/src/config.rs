//! Layered, typed settings: built-in defaults, then an optional TOML file,
//! then `COURIER__SECTION__KEY` environment variables.

use std::path::Path;

use serde::Deserialize;

use crate::domain::{PerPriority, Priority};
use secrecy::SecretString;
pub use vocabulary::MailerKind;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub api: ApiSettings,
    pub resources: ResourceSettings,
    pub queues: QueueSettings,
    pub sender: SenderSettings,
    pub mailer: MailerSettings,
    pub routing: RoutingRules,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// A connection that has not sent a request's whole header by then is closed.
    pub header_read_timeout_secs: u64,
    /// A request body that sends nothing for this long is abandoned (408).
    pub body_read_timeout_secs: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8080,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 30,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// When set, every route but `/health`, `/metrics` and `/stats` needs
    /// `x-api-key: <key>`. Kept as a secret: never printed, wiped when dropped.
    pub key: Option<SecretString>,
    /// A campaign upload over this is refused with 413 before it is read in full.
    pub max_upload_bytes: usize,
    /// The largest `POST /notifications` body (413 beyond it).
    pub max_notification_bytes: usize,
    /// The largest `POST /graphql` body (413 beyond it).
    pub max_graphql_bytes: usize,
    /// Largest GraphQL page (`first`).
    pub max_page_size: usize,
    /// A query costing more is refused: each field costs 1, a page of `first`
    /// items costs `first` times its selection (aliases count each).
    pub max_graphql_complexity: usize,
    pub max_graphql_depth: usize,
    /// An upload's answer lists at most this many rejected and duplicate rows
    /// (its counts are always whole; GraphQL's `batch` pages through the rest).
    pub max_reported_rows: usize,
    /// A message larger than this on its queue (measured encoded, as SQS
    /// counts) has its body stored in the blob store; the queue carries the key.
    /// Capped by the queues' own `MaximumMessageSize` and SQS's 256 KiB batch.
    pub inline_body_limit_bytes: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            key: None,
            max_upload_bytes: 2 * 1024 * 1024 * 1024,
            max_notification_bytes: 1024 * 1024,
            max_graphql_bytes: 64 * 1024,
            max_page_size: 100,
            max_graphql_complexity: 2_000,
            max_graphql_depth: 8,
            max_reported_rows: 100,
            inline_body_limit_bytes: 200 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceSettings {
    /// Prepended to every queue, table and bucket name so runs don't see each other.
    pub prefix: String,
    /// The verified sender identity.
    pub sender_address: String,
}

impl Default for ResourceSettings {
    fn default() -> Self {
        Self {
            prefix: "courier".into(),
            sender_address: "courier@example.com".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// Receives before SQS moves a message to its dead-letter queue.
    pub max_receive_count: u32,
    pub visibility_timeout_secs: u32,
    /// How long an idle worker long-polls before looking again.
    pub long_poll_secs: u32,
    /// A campaign's next chunk is enqueued only while its queue holds fewer
    /// messages than this waiting (visible); the batch waits between chunks
    /// until the senders have taken the queue below it. Enqueueing far
    /// ahead of sending gains nothing: its writes share the status table's
    /// hot index partitions with the sends (on AWS, 1,000 write units a
    /// second per key value), and a queue keeps a message only 4 days.
    pub campaign_max_waiting: u64,
    /// Campaign chunks written at once, across all batches, while reminders
    /// flow (otherwise [`crate::campaign::CHUNKS_IN_FLIGHT`] per batch). One
    /// keeps a reminder's calls behind few campaign writes; more lets
    /// campaigns keep their queues fed when the senders could send faster,
    /// at the cost of the reminders' latency (see the README's capacity notes).
    pub campaign_chunks_while_reminders: usize,
    /// Campaign chunks written at most at once, across all batches, while
    /// reminders flow but the medium and low senders are starved (most of
    /// their receives come back short while chunks wait): their queues have
    /// run dry, so holding ingest back would only idle them. One more each
    /// second it lasts; back to `campaign_chunks_while_reminders` once
    /// receives come back mostly full. Set it to that to never raise it.
    pub campaign_chunks_while_starved: usize,
}

impl QueueSettings {
    /// How long a received message stays hidden (and its claim held).
    pub fn visibility_timeout(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::from(self.visibility_timeout_secs))
    }
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            max_receive_count: 3,
            visibility_timeout_secs: 30,
            long_poll_secs: 1,
            campaign_max_waiting: 50_000,
            campaign_chunks_while_reminders: 1,
            campaign_chunks_while_starved: crate::campaign::CHUNKS_IN_FLIGHT,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SenderSettings {
    pub enabled: bool,
    pub workers: usize,
    /// Messages one worker sends at once.
    pub concurrency: usize,
    /// Share of receives given to each queue when all have work.
    pub weights: PerPriority<u32>,
    /// First retry delay after a throttle or transient failure; doubles per receive.
    pub retry_base_secs: u32,
    pub retry_max_secs: u32,
    /// The account's sending rate (sends/s) to pace to, instead of what SES
    /// reports (`GetAccount` / `GetSendQuota`).
    pub max_send_rate: Option<f64>,
    /// This engine's share of the account's rate, 0–1, when several engines
    /// send from one account.
    pub rate_share: f64,
    /// Low priority's guaranteed share of sends while it has work, 0–1.
    pub low_min_share: f64,
    /// Medium and low sends in flight at most while reminders flow; by
    /// default a quarter of workers × concurrency.
    pub background_in_flight: Option<usize>,
    /// How often SES's sending limits are read again.
    pub quota_refresh_secs: u32,
    /// How often they are read while a daily quota is used up.
    pub quota_recheck_secs: u32,
}

impl Default for SenderSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            workers: 2,
            concurrency: 10,
            weights: PerPriority {
                high: 6,
                medium: 3,
                low: 1,
            },
            retry_base_secs: 1,
            retry_max_secs: 60,
            max_send_rate: None,
            rate_share: 1.0,
            low_min_share: 0.1,
            background_in_flight: None,
            quota_refresh_secs: 60,
            quota_recheck_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MailerSettings {
    pub kind: MailerKind,
    pub smtp: SmtpSettings,
}

impl Default for MailerSettings {
    fn default() -> Self {
        Self {
            kind: MailerKind::Sesv2,
            smtp: SmtpSettings::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: SmtpTls,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (a relay on loopback, the local stack's server).
    None,
    /// Plain, upgraded with STARTTLS before anything is sent (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 25,
            username: None,
            password: None,
            tls: SmtpTls::None,
        }
    }
}

/// Which queue each kind of message goes to.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingRules {
    pub reminder: Priority,
    pub offer: Priority,
    pub subscription: Priority,
    /// Campaign rows with neither a priority nor a type column.
    pub campaign: Priority,
}

impl Default for RoutingRules {
    fn default() -> Self {
        Self {
            reminder: Priority::High,
            offer: Priority::Medium,
            subscription: Priority::Low,
            campaign: Priority::Low,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("settings: {0}")]
pub struct SettingsError(String);

impl Settings {
    /// Defaults, then `file` if given, then `COURIER__…` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, SettingsError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            if !file.exists() {
                return Err(SettingsError(format!("{} does not exist", file.display())));
            }
            builder = builder.add_source(config::File::from(file));
        }
        builder = builder.add_source(
            config::Environment::with_prefix("COURIER")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        let settings: Settings = builder
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| SettingsError(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        let fail = |m: &str| Err(SettingsError(m.to_string()));
        if self.queues.max_receive_count == 0 {
            return fail("queues.max_receive_count must be at least 1");
        }
        if self.queues.long_poll_secs > 20 {
            return fail("queues.long_poll_secs must be at most 20 (SQS's limit)");
        }
        if self.queues.visibility_timeout_secs > 43_200 {
            return fail("queues.visibility_timeout_secs must be at most 43200 (SQS's limit)");
        }
        if self.queues.campaign_max_waiting == 0 {
            return fail("queues.campaign_max_waiting must be at least 1 (0 would stop every campaign)");
        }
        if self.queues.campaign_chunks_while_reminders == 0 {
            return fail("queues.campaign_chunks_while_reminders must be at least 1 (0 would stop every campaign while reminders flow)");
        }
        if self.queues.campaign_chunks_while_starved == 0 {
            return fail("queues.campaign_chunks_while_starved must be at least 1 (0 would stop every campaign while reminders flow)");
        }
        if self.sender.workers == 0 || self.sender.concurrency == 0 {
            return fail("sender.workers and sender.concurrency must be at least 1");
        }
        if !(self.sender.rate_share > 0.0 && self.sender.rate_share <= 1.0) {
            return fail("sender.rate_share must be above 0 and at most 1");
        }
        if !(0.0..1.0).contains(&self.sender.low_min_share) {
            return fail("sender.low_min_share must be at least 0 and below 1");
        }
        if self.sender.max_send_rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
            return fail("sender.max_send_rate must be above 0");
        }
        if Priority::ALL.iter().all(|p| self.sender.weights[*p] == 0) {
            return fail("sender.weights must give at least one queue a weight");
        }
        if self.api.inline_body_limit_bytes > 240 * 1024 {
            return fail("api.inline_body_limit_bytes must leave room in SQS's 256 KiB message");
        }
        let prefix_ok = !self.resources.prefix.is_empty()
            && self.resources.prefix.len() <= 40
            && self
                .resources
                .prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !prefix_ok {
            return fail("resources.prefix must be 1-40 characters of a-z, 0-9 and '-' (it names S3 buckets too)");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_overrides_defaults_and_unknown_keys_are_refused() {
        let dir = std::env::temp_dir().join(format!("courier-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("courier.toml");
        std::fs::write(&file, "[sender]\nworkers = 7\n[routing]\noffer = \"high\"\n").unwrap();
        let settings = Settings::load(Some(&file)).unwrap();
        assert_eq!(settings.sender.workers, 7);
        assert_eq!(settings.routing.offer, Priority::High);
        assert_eq!(settings.queues.max_receive_count, 3);

        std::fs::write(&file, "[sender]\nworkerz = 7\n").unwrap();
        let error = Settings::load(Some(&file)).unwrap_err().to_string();
        assert!(error.contains("workerz"), "{error}");
    }

    #[test]
    fn an_smtp_tls_mode_that_does_not_exist_is_refused_naming_the_setting() {
        let dir = std::env::temp_dir().join(format!("courier-smtp-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("courier.toml");
        std::fs::write(
            &file,
            "[mailer]\nkind = \"smtp\"\n[mailer.smtp]\ntls = \"starttls\"\nport = 587\n",
        )
        .unwrap();
        let settings = Settings::load(Some(&file)).unwrap();
        assert_eq!(settings.mailer.smtp.tls, SmtpTls::Starttls);
        std::fs::write(&file, "[mailer.smtp]\ntls = \"ssl\"\n").unwrap();
        let error = Settings::load(Some(&file)).unwrap_err().to_string();
        assert!(error.contains("ssl") && error.contains("mailer.smtp.tls"), "{error}");
    }

    #[test]
    fn nonsense_values_are_refused_by_name() {
        let mut settings = Settings::default();
        settings.resources.prefix = "Bad_Prefix".into();
        assert!(settings
            .validate()
            .unwrap_err()
            .to_string()
            .contains("resources.prefix"));
        let mut settings = Settings::default();
        settings.queues.long_poll_secs = 30;
        assert!(settings.validate().unwrap_err().to_string().contains("long_poll_secs"));
        let mut settings = Settings::default();
        settings.queues.campaign_chunks_while_reminders = 0;
        assert!(settings
            .validate()
            .unwrap_err()
            .to_string()
            .contains("campaign_chunks_while_reminders"));
        let mut settings = Settings::default();
        settings.queues.campaign_chunks_while_starved = 0;
        assert!(settings
            .validate()
            .unwrap_err()
            .to_string()
            .contains("campaign_chunks_while_starved"));
    }
}
