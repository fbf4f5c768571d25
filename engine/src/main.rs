//! `engine serve`: the pipeline with its API, on the local stack or AWS.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use engine::aws::AwsClients;
use engine::config::{MailerKind, Settings};
use engine::Application;
use localstack::{Stack, StackOptions, StackTarget};

#[derive(Parser)]
#[command(name = "engine", about = "Courier's message pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct StackArgs {
    /// Start the local emulators (the default unless COURIER_STACK says otherwise).
    #[arg(long, conflicts_with = "stack")]
    local: bool,
    /// `local`, `aws`, or the URL of a running stack such as LocalStack.
    #[arg(long, env = "COURIER_STACK")]
    stack: Option<String>,
    /// A TOML settings file; `COURIER__SECTION__KEY` variables override it.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Provision and serve until Ctrl-C.
    Serve {
        #[command(flatten)]
        stack: StackArgs,
        /// Overrides server.port (0 picks a free port).
        #[arg(long)]
        port: Option<u16>,
        /// Overrides mailer.kind.
        #[arg(long, value_enum)]
        mailer: Option<MailerKind>,
    },
    /// Create the queues, table, bucket and sender identity, then exit.
    Provision {
        #[command(flatten)]
        stack: StackArgs,
    },
}

async fn start_stack(args: &StackArgs) -> anyhow::Result<(Settings, Stack)> {
    let settings = Settings::load(args.config.as_deref())?;
    let target = match (&args.stack, args.local) {
        (Some(text), _) => text.parse::<StackTarget>()?,
        (None, _) => StackTarget::Local,
    };
    let stack = Stack::start(StackOptions {
        target,
        ..StackOptions::default()
    })
    .await
    .context("starting the AWS stack")?;
    Ok((settings, stack))
}

// Ingest allocates a few small strings per CSV row; mimalloc makes that
// about twice as fast as glibc's malloc (engine/benches, README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,aws_config=warn,aws_smithy_runtime=warn".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve { stack, port, mailer } => {
            let (mut settings, stack) = start_stack(&stack).await?;
            if let Some(port) = port {
                settings.server.port = port;
            }
            if let Some(mailer) = mailer {
                settings.mailer.kind = mailer;
            }
            let address = format!("{}:{}", settings.server.host, settings.server.port);
            let listener = tokio::net::TcpListener::bind(&address)
                .await
                .with_context(|| format!("binding {address}"))?;
            let clients = match stack.is_emulated() {
                // A plan with no faults answers for the emulators' SES account ("no limit").
                true => AwsClients::under_plan(&stack, engine::faults::FaultPlan::new(0)).await,
                false => AwsClients::for_stack(&stack).await,
            };
            let app = Application::build(settings, &clients, listener).await?;
            tracing::info!(
                url = %format!("http://{}", app.local_addr()),
                stack_started_in_secs = stack.started_in().as_secs_f64(),
                "engine ready: POST /campaigns/upload, POST /notifications, /graphql, /metrics"
            );
            app.run(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await?;
            drop(stack);
        }
        Command::Provision { stack } => {
            let (settings, stack) = start_stack(&stack).await?;
            let clients = AwsClients::for_stack(&stack).await;
            let provisioned = engine::provision::provision(&clients, &settings).await?;
            tracing::info!(?provisioned, "provisioned");
        }
    }
    Ok(())
}
