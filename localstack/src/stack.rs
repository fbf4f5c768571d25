use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use vocabulary::{DynamoDbEmulator, SesV2Emulator};

use crate::install;
use crate::process::ManagedProcess;
use crate::StackError;

/// The AWS services Courier uses, each with its own endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Sqs,
    S3,
    Ses,
    SesV2,
    DynamoDb,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Sqs,
        Service::S3,
        Service::Ses,
        Service::SesV2,
        Service::DynamoDb,
    ];

    /// The suffix of the SDK's `AWS_ENDPOINT_URL_<SERVICE>` variable.
    pub fn env_suffix(self) -> &'static str {
        match self {
            Service::Sqs => "SQS",
            Service::S3 => "S3",
            Service::Ses => "SES",
            Service::SesV2 => "SESV2",
            Service::DynamoDb => "DYNAMODB",
        }
    }
}

/// Where each service is reached; `None` means the SDK's own resolution (real AWS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Endpoints {
    pub sqs: Option<String>,
    pub s3: Option<String>,
    pub ses: Option<String>,
    pub sesv2: Option<String>,
    pub dynamodb: Option<String>,
}

impl Endpoints {
    pub fn get(&self, service: Service) -> Option<&str> {
        self.slot(service).as_deref()
    }

    fn slot(&self, service: Service) -> &Option<String> {
        match service {
            Service::Sqs => &self.sqs,
            Service::S3 => &self.s3,
            Service::Ses => &self.ses,
            Service::SesV2 => &self.sesv2,
            Service::DynamoDb => &self.dynamodb,
        }
    }

    fn set(&mut self, service: Service, url: String) {
        let slot = match service {
            Service::Sqs => &mut self.sqs,
            Service::S3 => &mut self.s3,
            Service::Ses => &mut self.ses,
            Service::SesV2 => &mut self.sesv2,
            Service::DynamoDb => &mut self.dynamodb,
        };
        *slot = Some(url);
    }

    fn all(url: &str) -> Self {
        let mut endpoints = Self::default();
        for service in Service::ALL {
            endpoints.set(service, url.to_string());
        }
        endpoints
    }

    /// Applies `AWS_ENDPOINT_URL` (every service) and then `AWS_ENDPOINT_URL_<SERVICE>`
    /// (one service) from the environment, as the SDK itself would.
    fn with_env_overrides(mut self) -> Self {
        if let Some(url) = std::env::var("AWS_ENDPOINT_URL").ok().filter(|u| !u.is_empty()) {
            for service in Service::ALL {
                self.set(service, url.clone());
            }
        }
        for service in Service::ALL {
            let specific = std::env::var(format!("AWS_ENDPOINT_URL_{}", service.env_suffix())).ok();
            if let Some(url) = specific.filter(|u| !u.is_empty()) {
                self.set(service, url);
            }
        }
        self
    }
}

/// The local stack's SMTP server: where to send, and its control port
/// (sent-mail record, injected replies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpEndpoint {
    pub host: String,
    pub port: u16,
    pub control_url: String,
}

/// A reply the SMTP server gives instead of accepting a message.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SmtpFaultRule {
    /// The SMTP reply code, e.g. 454 or 550.
    pub code: u16,
    pub message: String,
    pub probability: f64,
    /// Only for messages to a recipient containing this text (a test's own prefix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recipient_contains: Option<String>,
}

/// Where the services live.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StackTarget {
    /// Emulators started here as host processes (LocalStack, dynoxide, aws-ses-v2-local).
    #[default]
    Local,
    /// An already running stack (for example a LocalStack container) at this URL.
    Endpoint(String),
    /// LocalStack's container, started through testcontainers (needs Docker).
    Testcontainers,
    /// Real AWS: the default credential chain and region.
    Aws,
}

impl FromStr for StackTarget {
    type Err = StackError;

    /// `local`, `aws`, or an `http(s)://` URL of a running stack.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "local" => Ok(StackTarget::Local),
            "aws" => Ok(StackTarget::Aws),
            "testcontainers" => Ok(StackTarget::Testcontainers),
            url if url.starts_with("http://") || url.starts_with("https://") => {
                Ok(StackTarget::Endpoint(url.trim_end_matches('/').to_string()))
            }
            other => Err(StackError::Config(format!(
                "stack target `{other}` is not one of: local, testcontainers, aws, or an http(s):// endpoint URL"
            ))),
        }
    }
}

/// How to start or reach the stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub target: StackTarget,
    /// Defaults to us-east-1 for emulators and to the SDK's chain for AWS.
    pub region: Option<String>,
    pub startup_timeout: Duration,
    /// Where emulator logs go; defaults to `target/courier-stack/<run>/`.
    pub log_dir: Option<PathBuf>,
    /// Which emulator serves DynamoDB on the local stack.
    pub dynamodb: DynamoDbEmulator,
    /// Which emulator serves SES v2 on the local stack.
    pub sesv2: SesV2Emulator,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            target: StackTarget::Local,
            region: None,
            startup_timeout: Duration::from_secs(120),
            log_dir: None,
            dynamodb: DynamoDbEmulator::default(),
            sesv2: SesV2Emulator::default(),
        }
    }
}

impl StackOptions {
    /// `COURIER_STACK` (local | aws | URL) picks the target, `local` when unset;
    /// `COURIER_DYNAMODB` (dynoxide | dynamodb-local) the local DynamoDB, dynoxide when unset;
    /// `COURIER_SESV2` (ses-v2-local | moto) the local SES v2, ses-v2-local when unset.
    pub fn from_env() -> Result<Self, StackError> {
        let target = match std::env::var("COURIER_STACK") {
            Ok(text) if !text.trim().is_empty() => text.parse()?,
            _ => StackTarget::Local,
        };
        Ok(Self {
            target,
            dynamodb: emulator_from_env("COURIER_DYNAMODB")?,
            sesv2: emulator_from_env("COURIER_SESV2")?,
            ..Self::default()
        })
    }
}

/// The emulator an environment variable names, or the default when it is unset or blank.
fn emulator_from_env<E>(variable: &str) -> Result<E, StackError>
where
    E: Default + FromStr<Err = vocabulary::UnknownName>,
{
    match std::env::var(variable) {
        Ok(text) if !text.trim().is_empty() => text
            .parse()
            .map_err(|e: vocabulary::UnknownName| StackError::Config(format!("{variable}: {e}"))),
        _ => Ok(E::default()),
    }
}

/// A running or connected AWS stack. Emulators it started stop when it drops.
#[derive(Debug)]
pub struct Stack {
    target: StackTarget,
    endpoints: Endpoints,
    region: Option<String>,
    processes: Vec<ManagedProcess>,
    log_dir: PathBuf,
    versions: Vec<(String, String)>,
    started_in: Duration,
    smtp: Option<SmtpEndpoint>,
    /// The LocalStack container of the testcontainers target; removed on drop.
    container: Option<crate::container::StartedContainer>,
}

const LOCAL_REGION: &str = "us-east-1";

impl Stack {
    /// Starts the emulators (target `local`) or connects to the given target.
    pub async fn start(options: StackOptions) -> Result<Self, StackError> {
        let started = Instant::now();
        let log_dir = match &options.log_dir {
            Some(dir) => dir.clone(),
            None => default_log_dir(),
        };
        std::fs::create_dir_all(&log_dir).map_err(|source| StackError::Io {
            context: format!("creating {}", log_dir.display()),
            source,
        })?;
        let mut stack = Stack {
            target: options.target.clone(),
            endpoints: Endpoints::default(),
            region: options.region.clone(),
            processes: Vec::new(),
            log_dir,
            versions: Vec::new(),
            started_in: Duration::ZERO,
            smtp: None,
            container: None,
        };
        match &options.target {
            StackTarget::Aws => {
                stack.endpoints = Endpoints::default().with_env_overrides();
            }
            StackTarget::Endpoint(url) => {
                stack.endpoints = Endpoints::all(url).with_env_overrides();
                stack.region.get_or_insert_with(|| LOCAL_REGION.to_string());
            }
            StackTarget::Local => {
                stack.region.get_or_insert_with(|| LOCAL_REGION.to_string());
                stack.start_emulators(&options).await?;
            }
            StackTarget::Testcontainers => {
                let started = crate::container::start(options.startup_timeout).await?;
                stack.endpoints = Endpoints::all(&started.url).with_env_overrides();
                stack.region.get_or_insert_with(|| LOCAL_REGION.to_string());
                stack
                    .versions
                    .push(("localstack/localstack".into(), started.tag.clone()));
                stack.container = Some(started);
            }
        }
        stack.started_in = started.elapsed();
        tracing::info!(
            target_kind = ?stack.target,
            seconds = stack.started_in.as_secs_f64(),
            endpoints = ?stack.endpoints,
            "stack ready"
        );
        Ok(stack)
    }

    async fn start_emulators(&mut self, options: &StackOptions) -> Result<(), StackError> {
        // Services already pointed elsewhere by the environment need no emulator.
        let overrides = Endpoints::default().with_env_overrides();
        let wants = |services: &[Service]| services.iter().any(|s| overrides.get(*s).is_none());
        let timeout = options.startup_timeout;
        let log_dir = self.log_dir.clone();

        let localstack = wants(&[Service::Sqs, Service::S3, Service::Ses]).then(|| {
            let log_dir = log_dir.clone();
            tokio::spawn(async move { on_a_free_port(|| start_localstack(&log_dir, timeout)).await })
        });
        let emulator = options.dynamodb;
        let dynamodb = wants(&[Service::DynamoDb]).then(|| {
            let log_dir = log_dir.clone();
            tokio::spawn(async move {
                on_a_free_port(|| async {
                    match emulator {
                        DynamoDbEmulator::Dynoxide => start_dynoxide(&log_dir, timeout).await,
                        DynamoDbEmulator::DynamoDbLocal => start_dynamodb_local(&log_dir, timeout).await,
                    }
                })
                .await
            })
        });
        let sesv2 = options.sesv2;
        let ses_v2 = wants(&[Service::SesV2]).then(|| {
            let log_dir = log_dir.clone();
            tokio::spawn(async move {
                on_a_free_port(|| async {
                    match sesv2 {
                        SesV2Emulator::SesV2Local => start_ses_v2_local(&log_dir, timeout).await,
                        SesV2Emulator::Moto => start_moto(&log_dir, timeout).await,
                    }
                })
                .await
            })
        });
        let smtp = Some({
            let log_dir = log_dir.clone();
            tokio::spawn(async move { on_a_free_port(|| start_smtp(&log_dir, timeout)).await })
        });

        let mut first_error = None;
        for (services, handle) in [
            (&[Service::Sqs, Service::S3, Service::Ses][..], localstack),
            (&[Service::DynamoDb][..], dynamodb),
            (&[Service::SesV2][..], ses_v2),
            (&[][..], smtp),
        ] {
            let Some(handle) = handle else { continue };
            match handle.await {
                Ok(Ok(emulator)) => {
                    for service in services {
                        self.endpoints.set(*service, emulator.url.clone());
                    }
                    self.versions.push((emulator.name.clone(), emulator.version.clone()));
                    self.processes.push(emulator.process);
                    self.smtp = self.smtp.take().or(emulator.smtp);
                }
                Ok(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                Err(join_error) => {
                    first_error.get_or_insert(StackError::Spawn {
                        process: "emulator start-up task".into(),
                        reason: join_error.to_string(),
                    });
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        self.endpoints = std::mem::take(&mut self.endpoints).with_env_overrides();
        Ok(())
    }

    /// The local stack's SMTP server, when this stack started one.
    pub fn smtp(&self) -> Option<&SmtpEndpoint> {
        self.smtp.as_ref()
    }

    /// The SMTP server's fault rules, at its control port.
    fn smtp_faults_url(&self) -> Result<String, StackError> {
        let smtp = self
            .smtp
            .as_ref()
            .ok_or_else(|| StackError::Config("this stack runs no SMTP server".into()))?;
        Ok(format!("{}/faults", smtp.control_url))
    }

    /// How many replies the SMTP server has injected since it started.
    pub async fn smtp_injections(&self) -> Result<u64, StackError> {
        let url = self.smtp_faults_url()?;
        let body: serde_json::Value = reqwest::get(&url)
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| StackError::Config(format!("reading SMTP faults at {url}: {e}")))?
            .json()
            .await
            .map_err(|e| StackError::Config(format!("reading SMTP faults at {url}: {e}")))?;
        Ok(body["injected"].as_u64().unwrap_or(0))
    }

    /// Sets the replies the SMTP server gives instead of accepting (empty: none).
    pub async fn set_smtp_faults(&self, rules: &[SmtpFaultRule]) -> Result<(), StackError> {
        let url = self.smtp_faults_url()?;
        let response = reqwest::Client::new()
            .put(&url)
            .json(rules)
            .send()
            .await
            .map_err(|e| StackError::Config(format!("setting SMTP faults at {url}: {e}")))?;
        if !response.status().is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(StackError::Config(format!("setting SMTP faults at {url}: {text}")));
        }
        Ok(())
    }

    /// The SDK configuration that reaches this stack: region and credentials.
    /// Per-service endpoints come from [`Stack::endpoint`].
    pub async fn sdk_config(&self) -> SdkConfig {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if self.is_emulated() && std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
            // Emulators accept any key; a fixed one keeps a developer's AWS profile out of it.
            loader = loader.credentials_provider(emulator_credentials());
        }
        loader.load().await
    }

    pub fn endpoint(&self, service: Service) -> Option<&str> {
        self.endpoints.get(service)
    }

    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    pub fn target(&self) -> &StackTarget {
        &self.target
    }

    /// True when the services are emulators (started here or at a given endpoint).
    pub fn is_emulated(&self) -> bool {
        !matches!(self.target, StackTarget::Aws)
    }

    /// Emulator names and versions, for results files and logs.
    pub fn versions(&self) -> &[(String, String)] {
        &self.versions
    }

    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Each emulator process this stack started, by name, with its pid (the
    /// leader of its own process group).
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.processes.iter().map(|p| (p.name().to_string(), p.pid())).collect()
    }

    /// Pauses or resumes every emulator process this stack started (fault injection).
    pub fn set_paused(&self, paused: bool) {
        for process in &self.processes {
            tracing::info!(process = process.name(), paused, "emulator pause state changed");
            process.set_paused(paused);
        }
    }
}

fn emulator_credentials() -> aws_credential_types::Credentials {
    aws_credential_types::Credentials::new("test", "test", None, None, "courier-emulator")
}

fn default_log_dir() -> PathBuf {
    let run = format!(
        "{}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default(),
        std::process::id()
    );
    target_dir().join("courier-stack").join(run)
}

/// The Cargo target folder this binary was built into, else the temp folder.
fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|p| p.file_name().is_some_and(|n| n == "target"))
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(std::env::temp_dir)
}

fn free_port() -> Result<u16, StackError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| StackError::Io {
        context: "binding a free loopback port".into(),
        source,
    })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| StackError::Io {
            context: "reading a free port".into(),
            source,
        })
}

struct StartedEmulator {
    name: String,
    version: String,
    url: String,
    process: ManagedProcess,
    /// Set by the SMTP server only.
    smtp: Option<SmtpEndpoint>,
}

/// Polls `probe` until it says ready, failing fast when the process dies.
async fn wait_ready<F, Fut>(
    service: &str,
    url: &str,
    process: &mut ManagedProcess,
    log: &Path,
    timeout: Duration,
    probe: F,
) -> Result<(), StackError>
where
    F: Fn(reqwest::Client, String) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("building an HTTP client");
    let deadline = Instant::now() + timeout;
    loop {
        if probe(client.clone(), url.to_string()).await {
            return Ok(());
        }
        if port_taken(log) {
            return Err(StackError::PortTaken {
                service: service.to_string(),
                endpoint: url.to_string(),
                log: log.to_path_buf(),
            });
        }
        if let Some(status) = process.exited() {
            return Err(StackError::ExitedEarly {
                process: service.to_string(),
                status: status.to_string(),
                log: log.to_path_buf(),
            });
        }
        if Instant::now() >= deadline {
            return Err(StackError::NotReady {
                service: service.to_string(),
                endpoint: url.to_string(),
                seconds: timeout.as_secs(),
                log: log.to_path_buf(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// True when an emulator's log says its port was taken. A free port is found by
/// binding port 0 and letting it go, so another process may take it before the
/// emulator binds it; some emulators (LocalStack) then keep running without a listener.
fn port_taken(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|text| text.contains("Address already in use"))
}

/// How many times an emulator is started, each on a fresh port, when its port was taken.
const PORT_ATTEMPTS: u32 = 3;

/// Runs `start` again on a fresh port (each call picks its own) while the port was taken.
async fn on_a_free_port<F, Fut>(start: F) -> Result<StartedEmulator, StackError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<StartedEmulator, StackError>>,
{
    let mut attempt = 1;
    loop {
        match start().await {
            Err(StackError::PortTaken { service, endpoint, .. }) if attempt < PORT_ATTEMPTS => {
                tracing::warn!(%service, %endpoint, attempt, "port taken before the emulator bound it; starting again on another");
                attempt += 1;
            }
            result => return result,
        }
    }
}

async fn blocking_install<T: Send + 'static>(
    install: impl FnOnce() -> Result<T, StackError> + Send + 'static,
) -> Result<T, StackError> {
    tokio::task::spawn_blocking(install)
        .await
        .map_err(|e| StackError::Spawn {
            process: "installer".into(),
            reason: e.to_string(),
        })?
}

async fn start_localstack(log_dir: &Path, timeout: Duration) -> Result<StartedEmulator, StackError> {
    let python = blocking_install(|| install::python_env("localstack", install::LOCALSTACK_LOCK)).await?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let log = log_dir.join("localstack.log");
    let script = write_script(log_dir, "courier_localstack.py", install::LOCALSTACK_LAUNCHER)?;
    // The launcher writes this once its heap is frozen (see the script).
    let frozen = log_dir.join("localstack.frozen");
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .env("GATEWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("LOCALSTACK_HOST", format!("127.0.0.1:{port}"))
        .env("SERVICES", "sqs,s3,ses")
        .env("DNS_ADDRESS", "0")
        .env("SQS_ENDPOINT_STRATEGY", "path")
        .env("SKIP_SSL_CERT_DOWNLOAD", "1")
        .env("DISABLE_EVENTS", "1")
        .env("LOCALSTACK_TELEMETRY", "0")
        // Its INFO log is a line per request: a sixteenth of its CPU under load (py-spy, 2026-11-25).
        .env("LS_LOG", "warn")
        .env("DISABLE_CORS_CHECKS", "1")
        .current_dir(log_dir);
    let mut process = ManagedProcess::spawn("localstack", command, &log)?;
    wait_ready(
        "LocalStack (sqs, s3, ses)",
        &url,
        &mut process,
        &log,
        timeout,
        |client, url| {
            let frozen = frozen.exists();
            async move {
                if !frozen {
                    return false;
                }
                let Ok(response) = client.get(format!("{url}/_localstack/health")).send().await else {
                    return false;
                };
                let Ok(health) = response.json::<serde_json::Value>().await else {
                    return false;
                };
                ["sqs", "s3", "ses"]
                    .iter()
                    .all(|s| matches!(health["services"][s].as_str(), Some("available") | Some("running")))
            }
        },
    )
    .await?;
    Ok(StartedEmulator {
        name: "localstack-core".into(),
        version: lock_version(install::LOCALSTACK_LOCK, "localstack-core"),
        url,
        process,
        smtp: None,
    })
}

async fn start_moto(log_dir: &Path, timeout: Duration) -> Result<StartedEmulator, StackError> {
    let python = blocking_install(|| install::python_env("moto", install::MOTO_LOCK)).await?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let log = log_dir.join("moto.log");
    let script = write_script(log_dir, "courier_moto.py", install::MOTO_SERVER_SCRIPT)?;
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        // CORS headers on every answer (flask-cors) took 7 % of moto's busy time
        // (py-spy, 2026-12-05); the SDK is no browser.
        .env("MOTO_DISABLE_GLOBAL_CORS", "true")
        .current_dir(log_dir);
    let mut process = ManagedProcess::spawn("moto", command, &log)?;
    wait_ready("moto (sesv2)", &url, &mut process, &log, timeout, |client, url| {
        answers_ok(client, format!("{url}/moto-api/"))
    })
    .await?;
    Ok(StartedEmulator {
        name: "moto".into(),
        version: lock_version(install::MOTO_LOCK, "moto"),
        url,
        process,
        smtp: None,
    })
}

/// aws-ses-v2-local under `courier_ses.js`, which adds the paged sent-mail
/// route, identities and unique message ids (see the script).
async fn start_ses_v2_local(log_dir: &Path, timeout: Duration) -> Result<StartedEmulator, StackError> {
    let manifest = blocking_install(|| install::npm_package(install::SES_V2_LOCAL_LOCK)).await?;
    let package = manifest.parent().expect("a package.json lives in its package's folder");
    install::require_program(
        "node",
        &["--version"],
        "install Node.js (Debian: apt-get install nodejs)",
    )?;
    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let name = SesV2Emulator::SesV2Local.as_str();
    let log = log_dir.join(format!("{name}.log"));
    let script = write_script(log_dir, "courier_ses.js", install::SES_V2_LOCAL_SCRIPT)?;
    let mut command = Command::new("node");
    command
        // It keeps every accepted mail in memory, as SES's record: room for a
        // million-message run beyond Node's default heap limit.
        .arg("--max-old-space-size=8192")
        .arg(&script)
        .arg(package)
        .args(["127.0.0.1", &port.to_string()])
        .current_dir(log_dir);
    let mut process = ManagedProcess::spawn(name, command, &log)?;
    wait_ready(
        "aws-ses-v2-local (sesv2)",
        &url,
        &mut process,
        &log,
        timeout,
        |client, url| answers_ok(client, format!("{url}/health-check")),
    )
    .await?;
    Ok(StartedEmulator {
        name: name.into(),
        version: install::SES_V2_LOCAL_LOCK.version(),
        url,
        process,
        smtp: None,
    })
}

/// Writes one of the stack's own programs beside its logs, to run from there.
fn write_script(log_dir: &Path, file: &str, text: &str) -> Result<PathBuf, StackError> {
    let script = log_dir.join(file);
    std::fs::write(&script, text).map_err(|source| StackError::Io {
        context: format!("writing {}", script.display()),
        source,
    })?;
    Ok(script)
}

/// glibc's allocator settings for dynoxide. A quarter of its CPU under load
/// went to glibc's `malloc` and `free` outside the per-thread cache
/// (`_int_malloc`, `malloc_consolidate`; `perf`, 2026-12-05): each request
/// allocates and frees many blocks of many sizes. A larger per-thread cache
/// (1,024 blocks of each size instead of 7) and keeping freed memory instead of
/// handing it back to the kernel cut its CPU per message by 7 % (two pairs of
/// capacity runs: 0.92-0.95 -> 0.86-0.87 of the engine's). Other C libraries
/// ignore the variable.
const DYNOXIDE_MALLOC: &str =
    "glibc.malloc.tcache_count=1024:glibc.malloc.trim_threshold=33554432:glibc.malloc.mmap_threshold=33554432";

/// dynoxide, on a database file in memory-backed storage. Any HTTP answer to
/// a bare GET means it is serving.
///
/// Not dynoxide's in-memory database: SQLite keeps every page of one in its
/// page cache, and at the end of each write transaction walks that cache's
/// whole hash table (`pcache1TruncateUnsafe`, `perf` with frame pointers,
/// 2026-12-06), so each write cost more the longer the stack ran. Seven 2×10
/// capacity steps in one ladder went 588 → 542 msg/s with dynoxide's CPU per
/// message 0.82 → 1.10 ms; on a file (WAL, a bounded page cache) the next
/// ladder went 663 → 603 with dynoxide flat at 0.84–0.90. The file lives in
/// `/dev/shm` where there is one (no disk writes), and is removed with the stack.
async fn start_dynoxide(log_dir: &Path, timeout: Duration) -> Result<StartedEmulator, StackError> {
    let program = blocking_install(|| install::cargo_crate(install::DYNOXIDE_CRATE)).await?;
    let port = free_port()?;
    let scratch = scratch_dir();
    remove_orphaned_databases(&scratch);
    let database = scratch.join(format!("{DYNOXIDE_FILE_PREFIX}{}-{port}.sqlite", std::process::id()));
    let mut command = Command::new(&program);
    command
        .args(["serve", "--host", "127.0.0.1", "--port", &port.to_string()])
        .arg("--db-path")
        .arg(&database)
        .env("GLIBC_TUNABLES", DYNOXIDE_MALLOC);
    let mut started = start_dynamodb(
        DynamoDbEmulator::Dynoxide,
        install::DYNOXIDE_CRATE.version.to_string(),
        port,
        command,
        log_dir,
        timeout,
    )
    .await?;
    let with_suffix = |suffix: &str| PathBuf::from(format!("{}{suffix}", database.display()));
    started.process.remove_on_stop(["", "-wal", "-shm"].map(with_suffix));
    Ok(started)
}

/// dynoxide's database files are named `<this><pid of the stack's process>-<port>`.
const DYNOXIDE_FILE_PREFIX: &str = "courier-dynoxide-";

/// Removes the database files of stacks whose process has gone. A stack that
/// is never dropped (a test binary's shared one) leaves its files behind, and
/// in `/dev/shm` they hold memory.
fn remove_orphaned_databases(scratch: &Path) {
    let Ok(entries) = std::fs::read_dir(scratch) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(owner) = orphan_owner(&name) else { continue };
        if !Path::new("/proc").join(owner.to_string()).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The pid in a dynoxide database file's name, if the name is one.
fn orphan_owner(file_name: &str) -> Option<u32> {
    file_name
        .strip_prefix(DYNOXIDE_FILE_PREFIX)?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Memory-backed storage for an emulator's files where the system has it.
fn scratch_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// AWS's DynamoDB Local. Its CPU in a short run goes mostly to the JIT, so the
/// JVM compiles with C1 only and collects with the serial collector; telemetry is off.
async fn start_dynamodb_local(log_dir: &Path, timeout: Duration) -> Result<StartedEmulator, StackError> {
    install::require_program(
        "java",
        &["-version"],
        "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)",
    )?;
    let jar = blocking_install(install::dynamodb_local_jar).await?;
    let jar_dir = jar.parent().expect("the jar lives in a folder").to_path_buf();
    let port = free_port()?;
    let mut command = Command::new("java");
    command
        .args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
        .arg(format!(
            "-Djava.library.path={}",
            jar_dir.join("DynamoDBLocal_lib").display()
        ))
        .arg("-jar")
        .arg(&jar)
        .args([
            "-inMemory",
            "-sharedDb",
            "-disableTelemetry",
            "-port",
            &port.to_string(),
        ])
        .current_dir(&jar_dir);
    let version = install::DYNAMODB_LOCAL_LOCK.version();
    start_dynamodb(
        DynamoDbEmulator::DynamoDbLocal,
        version,
        port,
        command,
        log_dir,
        timeout,
    )
    .await
}

/// Spawns a DynamoDB emulator and waits until it answers HTTP (both say 400 to a bare GET).
async fn start_dynamodb(
    which: DynamoDbEmulator,
    version: String,
    port: u16,
    command: Command,
    log_dir: &Path,
    timeout: Duration,
) -> Result<StartedEmulator, StackError> {
    let url = format!("http://127.0.0.1:{port}");
    let log = log_dir.join(format!("{which}.log"));
    let mut process = ManagedProcess::spawn(which.as_str(), command, &log)?;
    wait_ready(
        which.as_str(),
        &url,
        &mut process,
        &log,
        timeout,
        |client, url| async move { client.get(&url).send().await.is_ok() },
    )
    .await?;
    Ok(StartedEmulator {
        name: which.as_str().into(),
        version,
        url,
        process,
        smtp: None,
    })
}

async fn start_smtp(log_dir: &Path, timeout: Duration) -> Result<StartedEmulator, StackError> {
    let python = blocking_install(|| install::python_env("smtp", install::SMTP_LOCK)).await?;
    let script = write_script(log_dir, "courier_smtp.py", install::SMTP_SERVER_SCRIPT)?;
    let (port, control_port) = (free_port()?, free_port()?);
    let control_url = format!("http://127.0.0.1:{control_port}");
    let log = log_dir.join("smtp.log");
    let mut command = Command::new(&python);
    command
        .arg(&script)
        .args([port.to_string(), control_port.to_string()])
        .current_dir(log_dir);
    let mut process = ManagedProcess::spawn("smtp", command, &log)?;
    wait_ready(
        "SMTP server (aiosmtpd)",
        &control_url,
        &mut process,
        &log,
        timeout,
        |client, url| answers_ok(client, format!("{url}/health")),
    )
    .await?;
    Ok(StartedEmulator {
        name: "aiosmtpd".into(),
        version: lock_version(install::SMTP_LOCK, "aiosmtpd"),
        url: control_url.clone(),
        process,
        smtp: Some(SmtpEndpoint {
            host: "127.0.0.1".into(),
            port,
            control_url,
        }),
    })
}

/// A readiness probe: the URL answers with a success status.
async fn answers_ok(client: reqwest::Client, url: String) -> bool {
    client.get(url).send().await.is_ok_and(|r| r.status().is_success())
}

fn lock_version(lock: &str, package: &str) -> String {
    lock.lines()
        .find_map(|line| line.strip_prefix(&format!("{package}==")))
        .unwrap_or("unknown")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_dynoxide_database_file_names_the_process_that_owns_it() {
        assert_eq!(orphan_owner("courier-dynoxide-4242-34175.sqlite"), Some(4242));
        assert_eq!(orphan_owner("courier-dynoxide-4242-34175.sqlite-wal"), Some(4242));
        assert_eq!(orphan_owner("courier-dynoxide-x-1.sqlite"), None);
        assert_eq!(orphan_owner("other-4242-1.sqlite"), None);
    }

    fn started(name: &str) -> StartedEmulator {
        let log = std::env::temp_dir().join(format!("courier-{name}-{}.log", std::process::id()));
        let mut command = Command::new("sleep");
        command.arg("30");
        StartedEmulator {
            name: name.into(),
            version: "0".into(),
            url: String::new(),
            process: ManagedProcess::spawn(name, command, &log).expect("sleep starts"),
            smtp: None,
        }
    }

    fn taken() -> StackError {
        StackError::PortTaken {
            service: "emulator".into(),
            endpoint: "http://127.0.0.1:1".into(),
            log: PathBuf::new(),
        }
    }

    #[tokio::test]
    async fn an_emulator_whose_port_was_taken_is_reported_at_once_not_after_the_timeout() {
        let log = std::env::temp_dir().join(format!("courier-port-taken-{}.log", std::process::id()));
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo \"Couldn't listen on any:1: [Errno 98] Address already in use.\"; sleep 30",
        ]);
        let mut process = ManagedProcess::spawn("emulator", command, &log).unwrap();
        let began = Instant::now();
        let result = wait_ready(
            "emulator",
            "http://127.0.0.1:1",
            &mut process,
            &log,
            Duration::from_secs(20),
            |_, _| async { false },
        )
        .await;
        assert!(matches!(result, Err(StackError::PortTaken { .. })), "{result:?}");
        assert!(began.elapsed() < Duration::from_secs(5));
        let _ = std::fs::remove_file(&log);
    }

    #[tokio::test]
    async fn a_taken_port_is_retried_on_another_until_the_attempts_run_out() {
        let calls = AtomicU32::new(0);
        let result = on_a_free_port(|| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(taken()),
                _ => Ok(started("retried")),
            }
        })
        .await;
        assert!(result.is_ok());
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        let calls = AtomicU32::new(0);
        let result = on_a_free_port(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(taken())
        })
        .await;
        assert!(matches!(result, Err(StackError::PortTaken { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), PORT_ATTEMPTS);
    }

    #[tokio::test]
    async fn other_start_up_failures_are_not_retried() {
        let calls = AtomicU32::new(0);
        let result = on_a_free_port(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StackError::Config("broken".into()))
        })
        .await;
        assert!(matches!(result, Err(StackError::Config(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
