//! Wiring: from settings and a stack to a running engine.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{router, AppState};
use crate::aws::AwsClients;
use crate::batches::DynamoBatchStore;
use crate::blobs::S3Blobs;
use crate::campaign::run_batches;
use crate::config::Settings;
use crate::mailer::{build_mailer, MailError, Mailer};
use crate::pipeline::Pipeline;
use crate::provision::{provision, ProvisionError, Provisioned};
use crate::queue::SqsQueues;
use crate::sender::spawn_background;
use crate::store::DynamoStatusStore;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Provision(#[from] ProvisionError),
    #[error("mailer: {0}")]
    Mailer(#[from] MailError),
    #[error("HTTP server: {0}")]
    Server(#[from] std::io::Error),
}

/// A provisioned engine bound to its listener, ready to `run`.
pub struct Application {
    listener: TcpListener,
    pipeline: Pipeline,
    provisioned: Provisioned,
}

impl Application {
    /// Provisions (idempotently) and builds every adapter once from `clients`.
    pub async fn build(settings: Settings, clients: &AwsClients, listener: TcpListener) -> Result<Self, StartupError> {
        let provisioned = provision(clients, &settings).await?;
        let mailer = build_mailer(settings.mailer.kind, &settings.mailer.smtp, clients)?;
        let pipeline = on_aws(settings, &provisioned, clients, mailer);
        Ok(Self {
            listener,
            pipeline,
            provisioned,
        })
    }

    /// An engine over an existing pipeline (its adapters and metrics kept):
    /// how a test harness starts an engine again after killing it.
    pub fn restarted(pipeline: Pipeline, provisioned: Provisioned, listener: TcpListener) -> Self {
        Self {
            listener,
            pipeline,
            provisioned,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Swaps the mailer, for fault injection (a throttling or slow provider).
    pub fn with_mailer(mut self, mailer: Arc<dyn Mailer>) -> Self {
        self.pipeline = self.pipeline.with_mailer(mailer);
        self
    }

    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }

    pub fn provisioned(&self) -> &Provisioned {
        &self.provisioned
    }

    /// Serves the API, processes campaign batches (resuming those an earlier
    /// run left unfinished) and runs the senders and reconciler until
    /// `shutdown` resolves; then stops taking requests, lets in-flight sends
    /// and batch chunks finish and returns. Dropping this future mid-way is
    /// a crash: batches resume from their checkpoints at the next start.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartupError> {
        let token = CancellationToken::new();
        let Wired {
            router,
            mut background,
            batches,
        } = wire(self.pipeline.clone(), &token);
        let cancel = token.clone();
        tracing::info!(address = %self.listener.local_addr()?, "engine listening");
        let header_timeout = std::time::Duration::from_secs(self.pipeline.settings().server.header_read_timeout_secs);
        let serve = crate::server::serve(self.listener, router, header_timeout, async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight work");
            cancel.cancel();
        });
        // Batches run inside this future, not in spawned tasks, so that
        // dropping it stops them as a crash would.
        let (served, ()) = tokio::join!(serve, batches);
        token.cancel();
        while background.join_next().await.is_some() {}
        served.map_err(StartupError::Server)
    }
}

/// The engine without its listener: the API's router, and its work.
pub struct Wired {
    /// Every route; a server (or the simulated target, in process) calls it.
    pub router: axum::Router,
    /// The senders and the reconciler, until the token is cancelled.
    pub background: tokio::task::JoinSet<()>,
    /// The campaign batches (resuming those an earlier run left unfinished),
    /// until the token is cancelled; run it, or spawn it.
    pub batches: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Wires `pipeline` into a router and its background work, stopping on `token`.
pub fn wire(pipeline: Pipeline, token: &CancellationToken) -> Wired {
    // A JoinSet, so dropping it (a crash) aborts the tasks too.
    let background = spawn_background(&pipeline, token);
    let (batch_work, new_batches) = tokio::sync::mpsc::unbounded_channel();
    let batches = Box::pin(run_batches(pipeline.clone(), new_batches, token.clone()));
    let state = AppState {
        schema: crate::graphql::schema(pipeline.clone()),
        pipeline,
        batch_work,
    };
    Wired {
        router: router(state),
        background,
        batches,
    }
}

/// A pipeline whose adapters talk to the provisioned AWS resources through
/// `clients` (which may carry a fault plan, or not: loadtest audits through
/// plain clients so that injected faults cannot hide a message).
pub fn on_aws(
    settings: Settings,
    provisioned: &Provisioned,
    clients: &AwsClients,
    mailer: Arc<dyn Mailer>,
) -> Pipeline {
    Pipeline::new(
        settings,
        Arc::new(SqsQueues::new(clients.sqs.clone(), provisioned)),
        Arc::new(DynamoStatusStore::new(
            clients.dynamodb.clone(),
            &provisioned.names.table,
        )),
        Arc::new(S3Blobs::new(clients.s3.clone(), &provisioned.names.bucket)),
        Arc::new(DynamoBatchStore::new(
            clients.dynamodb.clone(),
            &provisioned.names.batches,
        )),
        mailer,
    )
}
