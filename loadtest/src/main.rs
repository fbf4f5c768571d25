//! `loadtest run | check-stack | calibrate`: thin over the `loadtest` library.
//! Exit codes: 0 pass, 3 SLO breach, 1 harness error (2: bad command line).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use engine::aws::AwsClients;
use loadtest::run::{run, RunOptions};
use loadtest::{EXIT_HARNESS_ERROR, EXIT_SLO_BREACH};
use localstack::{Stack, StackOptions, StackTarget};

#[derive(Parser)]
#[command(name = "loadtest", about = "Courier's stress runs against the real pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct RunArgs {
    scenario: PathBuf,
    /// Where results.json and goose's report go (default target/loadtest/<name>-<time>/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Overrides the scenario's target: `local`, `testcontainers` (Docker), `aws` or a stack URL.
    #[arg(long, env = "COURIER_STACK")]
    stack: Option<String>,
    /// Measure the stack's own ceiling first and report delivered msg/s against it.
    #[arg(long)]
    calibrate: bool,
    /// Show the live view while the run goes on (logs then go to $TMPDIR/courier-loadtest-<pid>.log).
    #[arg(long)]
    tui: bool,
    /// Adds a fault for the whole run, as an inline TOML table, e.g.
    /// --fault 'kind = "ses_latency", latency_ms = 50'. Repeatable; recorded in the results.
    #[arg(long = "fault", value_name = "TOML")]
    faults: Vec<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario file and judge it against its SLOs.
    Run(RunArgs),
    /// Conformance checks of the stack (visibility, redrive, long poll, conditional writes).
    CheckStack {
        #[arg(long, env = "COURIER_STACK", default_value = "local")]
        stack: String,
    },
    /// Measure the stack's ceiling for the pipeline's per-message call mix.
    Calibrate {
        #[arg(long, env = "COURIER_STACK", default_value = "local")]
        stack: String,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
}

async fn start_stack(stack: &str) -> anyhow::Result<Stack> {
    let target: StackTarget = stack.parse()?;
    Ok(Stack::start(StackOptions {
        target,
        ..StackOptions::default()
    })
    .await?)
}

async fn main_inner() -> anyhow::Result<i32> {
    match Cli::parse().command {
        Command::Run(args) => run_scenario(args).await,
        Command::CheckStack { stack } => check(&stack).await,
        Command::Calibrate {
            stack,
            seconds,
            concurrency,
        } => measure_ceiling(&stack, seconds, concurrency).await,
    }
}

/// `loadtest run`: the run, with the live view when asked for and a terminal is there.
async fn run_scenario(args: RunArgs) -> anyhow::Result<i32> {
    let show_view = args.tui && std::io::stdout().is_terminal();
    let (live, view) = if show_view {
        let (tx, rx) = tokio::sync::watch::channel(::tui::Snapshot::default());
        let title = format!("loadtest {}", args.scenario.display());
        let source = ::tui::event_loop::WatchSource(rx);
        let view = tokio::spawn(::tui::event_loop::run(source, title, Duration::from_millis(500)));
        (Some(tx), Some(view))
    } else {
        (None, None)
    };
    let options = RunOptions {
        scenario: args.scenario,
        out_dir: args.out,
        stack: args.stack,
        calibrate: args.calibrate,
        extra_faults: args.faults,
        progress: !show_view,
        live,
    };
    let outcome = run(options).await;
    if let Some(view) = view {
        // The view ends when the run drops its sender, or sooner on `q`.
        let _ = view.await;
    }
    let outcome = outcome?;
    println!("\n{}", reports::text::render(&outcome.results));
    println!("results: {}", outcome.results_path.display());
    println!("report:  {}", outcome.reports.html.display());
    println!("summary: {}", outcome.reports.markdown.display());
    Ok(if outcome.passed { 0 } else { EXIT_SLO_BREACH })
}

/// `loadtest check-stack`: the stack's conformance checks, one line each.
async fn check(stack: &str) -> anyhow::Result<i32> {
    let stack = start_stack(stack).await?;
    let clients = AwsClients::for_stack(&stack).await;
    let prefix = format!("chk-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let results = loadtest::check_stack::check_stack(&clients, &prefix).await;
    for r in &results {
        let result = if r.pass { "ok  " } else { "FAIL" };
        println!("{result} {:<55} {} ({} ms)", r.name, r.detail, r.millis);
    }
    Ok(if results.iter().all(|r| r.pass) {
        0
    } else {
        EXIT_SLO_BREACH
    })
}

/// `loadtest calibrate`: the stack's ceiling for the pipeline's call mix.
async fn measure_ceiling(stack: &str, seconds: u64, concurrency: usize) -> anyhow::Result<i32> {
    let stack = start_stack(stack).await?;
    let clients = AwsClients::for_stack(&stack).await;
    let mut settings = engine::config::Settings::default();
    settings.resources.prefix = format!("cal-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    settings.sender.enabled = false;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let app = engine::Application::build(settings, &clients, listener).await?;
    let pipeline = std::sync::Arc::new(app.pipeline().clone());
    let c = loadtest::calibrate::calibrate(pipeline, Duration::from_secs(seconds), concurrency).await;
    println!(
        "stack ceiling: {:.1} msg/s ({} messages in {:.1} s, {} concurrent batches of 10, mailer {})",
        c.msgs_per_sec, c.messages, c.seconds, c.concurrent_batches, c.mailer
    );
    Ok(0)
}

// Ingest allocates a few small strings per CSV row; mimalloc makes that
// about twice as fast as glibc's malloc (engine/benches, README).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,loadtest=info,localstack=info".into());
    // Under the live view, log lines would tear the screen: they go to a file instead.
    let wants_view = std::env::args().any(|a| a == "--tui") && std::io::stdout().is_terminal();
    if wants_view {
        let path = std::env::temp_dir().join(format!("courier-loadtest-{}.log", std::process::id()));
        match std::fs::File::create(&path) {
            Ok(file) => tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .init(),
            Err(_) => tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::sink)
                .init(),
        }
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let code = match main_inner().await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("loadtest: {error:#}");
            EXIT_HARNESS_ERROR
        }
    };
    std::process::exit(code);
}
