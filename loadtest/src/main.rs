//! `loadtest run | check-stack | capacity`: thin over the `loadtest` library.
//! Exit codes: 0 pass, 3 SLO breach, 1 harness error (2: bad command line).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use engine::aws::AwsClients;
use loadtest::collector::ProgressSink;
use loadtest::run::{run, RunOptions};
use loadtest::{EXIT_HARNESS_ERROR, EXIT_SLO_BREACH};
use localstack::{Stack, StackOptions, StackTarget};
use vocabulary::{DynamoDbEmulator, SesV2Emulator};

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
    /// Overrides the scenario's target: `local`, `testcontainers` (Docker), `aws`, a stack URL,
    /// or `sim` (no stack: models of the services on virtual time).
    #[arg(long, env = "COURIER_STACK")]
    stack: Option<String>,
    /// The local stack's DynamoDB: `dynoxide` (default) or `dynamodb-local` (AWS's own).
    #[arg(long, env = "COURIER_DYNAMODB", default_value_t)]
    dynamodb: DynamoDbEmulator,
    /// The local stack's SES v2: `ses-v2-local` (default) or `moto`.
    #[arg(long, env = "COURIER_SESV2", default_value_t)]
    sesv2: SesV2Emulator,
    /// Measure the pipeline's capacity first (about 2 minutes) and report delivered msg/s against it.
    #[arg(long)]
    capacity: bool,
    /// Show the live view while the run goes on (logs then go to $TMPDIR/courier-loadtest-<pid>.log).
    #[arg(long)]
    tui: bool,
    /// Adds a fault for the whole run, as an inline TOML table, e.g.
    /// --fault 'kind = "ses_latency", latency_ms = 50'. Repeatable; recorded in the results.
    #[arg(long = "fault", value_name = "TOML")]
    faults: Vec<String>,
    /// Prices the run's AWS usage with this price card instead of the built-in
    /// pricing/aws-us-east-1.toml.
    #[arg(long, value_name = "FILE")]
    pricing: Option<PathBuf>,
    /// With --stack sim: the simulated services' answer times, `aws-typical`
    /// (the default) or `calibrated:<results.json of a real run>`.
    #[arg(long, value_name = "PROFILE")]
    sim_profile: Option<loadtest::run::sim::Profile>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario file and judge it against its SLOs.
    Run(RunArgs),
    /// Conformance checks of the stack (visibility, redrive, long poll, conditional writes).
    CheckStack(StackArgs),
    /// The pipeline's capacity: senders' concurrency stepped up until delivered
    /// throughput stops growing; the curve, the ceiling, the knee and a USL fit.
    Capacity(CapacityArgs),
    /// One setting varied over a range, each value a simulated run (`--stack
    /// sim`): end to end, reminders' p99, cost and the verdict, on one chart.
    Sweep(SweepArgs),
}

#[derive(clap::Args)]
struct SweepArgs {
    scenario: PathBuf,
    /// The setting to vary: `workers`, `concurrency` or `ses_rate`.
    #[arg(long)]
    vary: loadtest::sweep::Setting,
    /// Its values, e.g. `1,2,4,8`.
    #[arg(long, value_delimiter = ',', required = true)]
    values: Vec<f64>,
    /// The simulated services' answer times: `aws-typical` (the default) or
    /// `calibrated:<results.json of a real run>`.
    #[arg(long, value_name = "PROFILE", default_value = "aws-typical")]
    sim_profile: loadtest::run::sim::Profile,
    /// Prices each run with this price card instead of the built-in one.
    #[arg(long, value_name = "FILE")]
    pricing: Option<PathBuf>,
    /// Where sweep.json, sweep.html and each value's run go
    /// (default target/loadtest/sweep-<time>/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Runs at once (default: one per core).
    #[arg(long, default_value_t = 0)]
    jobs: usize,
}

#[derive(clap::Args)]
struct StackArgs {
    /// `local`, `testcontainers` (Docker), `aws` or a stack URL.
    #[arg(long, env = "COURIER_STACK", default_value = "local")]
    stack: String,
    /// The local stack's DynamoDB: `dynoxide` (default) or `dynamodb-local` (AWS's own).
    #[arg(long, env = "COURIER_DYNAMODB", default_value_t)]
    dynamodb: DynamoDbEmulator,
    /// The local stack's SES v2: `ses-v2-local` (default) or `moto`.
    #[arg(long, env = "COURIER_SESV2", default_value_t)]
    sesv2: SesV2Emulator,
}

#[derive(clap::Args)]
struct CapacityArgs {
    /// The scenario whose traffic mix and engine settings (mailer, timeouts) to measure.
    #[arg(default_value = "scenarios/capacity.toml")]
    scenario: PathBuf,
    #[command(flatten)]
    stack: StackArgs,
    /// Each step's measuring window, after a 3 s warm-up.
    #[arg(long, default_value_t = 10)]
    step_secs: u64,
    /// The steps as workers×concurrency, e.g. `1x1,2x10,8x10` (default 1x1 … 32x10).
    #[arg(long, value_delimiter = ',', value_parser = parse_step)]
    ladder: Vec<(usize, usize)>,
    /// Where capacity.json goes (default target/loadtest/capacity-<time>/).
    #[arg(long)]
    out: Option<PathBuf>,
}

async fn start_stack(args: &StackArgs) -> anyhow::Result<Stack> {
    let target: StackTarget = args.stack.parse()?;
    Ok(Stack::start(StackOptions {
        target,
        dynamodb: args.dynamodb,
        sesv2: args.sesv2,
        ..StackOptions::default()
    })
    .await?)
}

async fn main_inner() -> anyhow::Result<i32> {
    match Cli::parse().command {
        Command::Run(args) => run_scenario(args).await,
        Command::CheckStack(args) => check(&args).await,
        Command::Capacity(args) => measure_capacity(args).await,
        Command::Sweep(args) => sweep(args).await,
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
        capacity: args.capacity,
        dynamodb: args.dynamodb,
        sesv2: args.sesv2,
        extra_faults: args.faults,
        progress: (!show_view).then_some(print_progress as ProgressSink),
        live,
        pricing: args.pricing,
        sim_profile: args.sim_profile,
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

/// The progress line, on standard error: standard output keeps the summary.
fn print_progress(line: &str) {
    eprintln!("{line}");
}

/// `loadtest check-stack`: the stack's conformance checks, one line each.
async fn check(args: &StackArgs) -> anyhow::Result<i32> {
    let stack = start_stack(args).await?;
    println!("stack: {}", versions(&stack));
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

/// `8x10` → 8 workers of concurrency 10.
fn parse_step(text: &str) -> Result<(usize, usize), String> {
    let (workers, concurrency) = text
        .split_once(['x', '×'])
        .ok_or_else(|| format!("`{text}` is not workers×concurrency, e.g. 8x10"))?;
    let number = |part: &str| part.trim().parse::<usize>().ok().filter(|n| *n > 0);
    match (number(workers), number(concurrency)) {
        (Some(w), Some(c)) => Ok((w, c)),
        _ => Err(format!(
            "`{text}`: workers and concurrency are whole numbers of at least 1"
        )),
    }
}

fn versions(stack: &Stack) -> String {
    let names: Vec<String> = stack.versions().iter().map(|(n, v)| format!("{n} {v}")).collect();
    names.join(", ")
}

/// `loadtest capacity`: the ladder, printed as it climbs, then written as JSON.
async fn measure_capacity(args: CapacityArgs) -> anyhow::Result<i32> {
    let scenario = scenarios::Scenario::load(&args.scenario)?;
    let stack = start_stack(&args.stack).await?;
    println!("stack: {}", versions(&stack));
    let mut ladder = loadtest::capacity::Ladder {
        window: Duration::from_secs(args.step_secs.max(1)),
        ..Default::default()
    };
    if !args.ladder.is_empty() {
        ladder.steps = args.ladder;
    }
    let prefix = format!("cap-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let capacity = loadtest::capacity::measure(&scenario, &prefix, &stack, &ladder).await?;
    println!("\n{}", reports::text::capacity(&capacity));
    let out = args.out.unwrap_or_else(|| loadtest::run::default_out_dir("capacity"));
    std::fs::create_dir_all(&out)?;
    let path = out.join("capacity.json");
    std::fs::write(&path, serde_json::to_string_pretty(&capacity)?)?;
    let title = format!("Capacity of {} — Courier", scenario.name);
    let page = out.join("capacity.html");
    std::fs::write(&page, reports::html::render_capacity(&capacity, &title))?;
    println!("capacity: {}", path.display());
    println!("report:   {}", page.display());
    Ok(0)
}

/// `loadtest sweep`: the table as each value's run ends, then where it all went.
async fn sweep(args: SweepArgs) -> anyhow::Result<i32> {
    let out = args.out.unwrap_or_else(|| loadtest::run::default_out_dir("sweep"));
    std::fs::create_dir_all(&out)?;
    let options = loadtest::sweep::SweepOptions {
        scenario: args.scenario,
        setting: args.vary,
        values: args.values,
        profile: args.sim_profile,
        pricing: args.pricing,
        out_dir: out,
        jobs: args.jobs,
    };
    let (sweep, path) = loadtest::sweep::sweep(options).await?;
    println!("\n{}", reports::text::sweep(&sweep));
    println!("sweep:  {}", path.display());
    println!("report: {}", path.with_file_name("sweep.html").display());
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
