use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::aws::AwsClients;
use engine::config::{MailerKind, Settings};
use engine::domain::{SendId, SendRecord};
use engine::mailer::Mailer;
use engine::pipeline::Pipeline;
use engine::queue::{QueueDepth, QueueRef};
use engine::Application;
use localstack::{SentEmail, Stack, StackOptions};
use serde_json::{json, Value};
use tokio::sync::OnceCell;

static STACK: OnceCell<Stack> = OnceCell::const_new();

/// The stack shared by every test in this binary; started on first use.
/// It is never dropped: its emulators die with this process (PDEATHSIG).
pub async fn shared_stack() -> &'static Stack {
    STACK
        .get_or_init(|| async {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
                .with_test_writer()
                .try_init();
            let started = Instant::now();
            let stack = Stack::start(StackOptions::from_env().expect("COURIER_STACK is valid"))
                .await
                .expect("the local stack starts");
            eprintln!(
                "shared stack ready in {:.1}s (logs: {})",
                started.elapsed().as_secs_f64(),
                stack.log_dir().display()
            );
            stack
        })
        .await
}

/// A short unique resource prefix, so tests never see each other's queues or tables.
pub fn unique_prefix() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

pub struct TestApp {
    pub address: String,
    pub prefix: String,
    pub http: reqwest::Client,
    pub pipeline: Pipeline,
    pub clients: AwsClients,
    pub stack: &'static Stack,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// Settings tuned for tests: quick retries, short polls, own resource prefix.
pub fn test_settings(mailer: MailerKind) -> Settings {
    let mut settings = Settings::default();
    settings.resources.prefix = unique_prefix();
    settings.mailer.kind = mailer;
    settings.queues.visibility_timeout_secs = 5;
    settings.queues.long_poll_secs = 1;
    settings.sender.retry_base_secs = 1;
    settings.sender.retry_max_secs = 2;
    settings
}

pub async fn spawn_app(settings: Settings) -> TestApp {
    spawn_app_with(settings, |app, _| app).await
}

/// Like `spawn_app`, with a hook to adjust the application (e.g. its mailer) first.
pub async fn spawn_app_with(
    settings: Settings,
    adjust: impl FnOnce(Application, &AwsClients) -> Application,
) -> TestApp {
    let clients = AwsClients::for_stack(shared_stack().await).await;
    spawn_app_on(settings, clients, adjust).await
}

/// An app whose AWS calls pass through `plan`, to inject the services' own errors.
pub async fn spawn_app_with_faults(settings: Settings, plan: Arc<engine::faults::FaultPlan>) -> TestApp {
    let clients = AwsClients::with_faults(shared_stack().await, plan).await;
    spawn_app_on(settings, clients, |app, _| app).await
}

async fn spawn_app_on(
    settings: Settings,
    clients: AwsClients,
    adjust: impl FnOnce(Application, &AwsClients) -> Application,
) -> TestApp {
    let stack = shared_stack().await;
    let prefix = settings.resources.prefix.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = adjust(
        Application::build(settings, &clients, listener)
            .await
            .expect("the engine builds"),
        &clients,
    );
    let address = format!("http://{}", app.local_addr());
    let pipeline = app.pipeline().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run(async {
            let _ = rx.await;
        })
        .await
        .expect("the engine runs");
    });
    TestApp {
        address,
        prefix,
        http: reqwest::Client::new(),
        pipeline,
        clients,
        stack,
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    /// A recipient address unique to this test.
    pub fn address_for(&self, name: &str) -> String {
        format!("{name}+{}@example.com", self.prefix)
    }

    pub async fn upload_csv(&self, file_name: &str, csv: impl Into<Vec<u8>>) -> reqwest::Response {
        let part = reqwest::multipart::Part::bytes(csv.into()).file_name(file_name.to_string());
        self.http
            .post(format!("{}/campaigns/upload", self.address))
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await
            .unwrap()
    }

    pub async fn post_notification(&self, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/notifications", self.address))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Posts a notification that must be accepted, and returns its send id.
    pub async fn notify(&self, body: Value) -> SendId {
        let response = self.post_notification(body).await;
        assert_eq!(response.status(), 202, "the notification is accepted");
        let accepted: Value = response.json().await.unwrap();
        accepted["sendId"].as_str().unwrap().parse().unwrap()
    }

    pub async fn graphql(&self, query: &str) -> Value {
        let response = self
            .http
            .post(format!("{}/graphql", self.address))
            .json(&json!({ "query": query }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// The batch's progress as GraphQL shows it, once it has reached `phase`
    /// (ENQUEUED: every row on its queue; DONE: every message final).
    pub async fn batch_in_phase(&self, batch_id: &str, phase: &str) -> Value {
        let query = format!(
            "{{ batch(batchId: \"{batch_id}\") {{ phase reason rows rowsRead accepted enqueued failedToEnqueue resumed receivedAt enqueuedAt finishedAt }} }}"
        );
        let order = ["RECEIVED", "PARSING", "ENQUEUED", "DONE"];
        let wanted = order.iter().position(|p| *p == phase).expect("a phase");
        wait_for(
            Duration::from_secs(60),
            &format!("batch {batch_id} to be {phase}"),
            || async {
                let batch = self.graphql(&query).await["data"]["batch"].clone();
                let now = batch["phase"].as_str().unwrap_or_default();
                assert_ne!(now, "FAILED", "the batch failed: {batch}");
                let reached = order.iter().position(|p| *p == now).is_some_and(|at| at >= wanted);
                reached.then_some(batch)
            },
        )
        .await
    }

    pub async fn record(&self, id: SendId) -> Option<SendRecord> {
        self.pipeline.store().get(id).await.unwrap()
    }

    /// Waits until `id` reaches a terminal status, or panics after `timeout`.
    pub async fn wait_final(&self, id: SendId, timeout: Duration) -> SendRecord {
        wait_for(timeout, &format!("{id} to become final"), || async {
            self.record(id).await.filter(|r| r.status.is_terminal())
        })
        .await
    }

    pub async fn batch_counts(&self, batch_id: &str) -> BTreeMap<String, u64> {
        self.pipeline
            .store()
            .batch_counts(batch_id.parse().unwrap())
            .await
            .unwrap()
    }

    pub async fn depth(&self, queue: QueueRef) -> QueueDepth {
        self.pipeline.queues().depth(queue).await.unwrap()
    }

    /// Mail the stack recorded for addresses of this test.
    pub async fn sent_mail(&self) -> Vec<SentEmail> {
        self.stack
            .sent_emails()
            .await
            .unwrap()
            .into_iter()
            .filter(|m| m.to.iter().any(|to| to.contains(&self.prefix)))
            .collect()
    }

    /// Every object key in this app's bucket.
    pub async fn s3_keys(&self) -> Vec<String> {
        let bucket = engine::provision::ResourceNames::new(&self.prefix).bucket;
        let listed = self.clients.s3.list_objects_v2().bucket(bucket).send().await.unwrap();
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    /// Up to `limit` records of one status, oldest first.
    pub async fn with_status(&self, status: engine::domain::SendStatus, limit: usize) -> Vec<SendRecord> {
        let until = chrono::Utc::now() + chrono::Duration::hours(1);
        let page = self
            .pipeline
            .store()
            .by_status(status, chrono::DateTime::UNIX_EPOCH, until, limit, None);
        page.await.unwrap().items
    }

    /// Records of every status in this app's table (up to 100 of each).
    pub async fn records(&self) -> Vec<SendRecord> {
        let mut all = Vec::new();
        for status in engine::domain::SendStatus::ALL {
            all.extend(self.with_status(status, 100).await);
        }
        all
    }

    /// Asserts that nothing was written anywhere: no record, nothing on a
    /// queue, no object in the bucket, no mail sent.
    pub async fn assert_nothing_written(&self, case: &str) {
        let records = self.records().await;
        assert!(records.is_empty(), "{case}: no records, found {}", records.len());
        for priority in engine::domain::Priority::ALL {
            let depth = self.depth(QueueRef::Main(priority)).await;
            assert_eq!(
                depth.visible + depth.in_flight + depth.delayed,
                0,
                "{case}: the {priority} queue is empty"
            );
        }
        assert_eq!(self.s3_keys().await, Vec::<String>::new(), "{case}: no objects stored");
        assert!(self.sent_mail().await.is_empty(), "{case}: no mail sent");
    }

    pub async fn upload_form(&self, form: reqwest::multipart::Form) -> reqwest::Response {
        self.http
            .post(format!("{}/campaigns/upload", self.address))
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
    }
}

/// Polls `probe` until it yields `Some`, or panics naming what it waited for.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A mailer that answers "slow down" to its first `throttles` calls, then delegates.
pub struct ThrottleFirst {
    pub remaining: std::sync::atomic::AtomicU32,
    pub inner: Arc<dyn Mailer>,
}

#[async_trait::async_trait]
impl Mailer for ThrottleFirst {
    async fn send(&self, email: &engine::mailer::Email) -> Result<String, engine::mailer::MailError> {
        use std::sync::atomic::Ordering;
        if self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(engine::mailer::MailError::Throttled(
                "Maximum sending rate exceeded.".into(),
            ));
        }
        self.inner.send(email).await
    }
}
