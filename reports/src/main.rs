//! `reports render | compare | cost`: thin over the `reports` library.
//! Exit codes: 0 fine, 3 regression (compare), 1 unreadable or incomparable input (2: bad command line).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use reports::compare::{compare, to_text, Tolerances};
use reports::cost::{price, PriceCard};
use reports::results::RunResults;
use reports::{markdown, write_reports, EXIT_ERROR, EXIT_REGRESSION};

#[derive(Parser)]
#[command(name = "reports", about = "Courier's run reports and the CI latency gate")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render report.html and summary.md from a results file.
    Render {
        results: PathBuf,
        /// Where the reports go (default: beside the results file).
        #[arg(long)]
        out: Option<PathBuf>,
        /// A baseline results file (or a directory of them) to compare with, shown in both reports.
        #[arg(long)]
        baseline: Option<PathBuf>,
    },
    /// Compare a run with a baseline; exits 3 on a regression beyond tolerance.
    Compare {
        /// A results file, or a directory of them (runs of the same code; each figure is their median).
        baseline: PathBuf,
        /// One run, or several runs of the same code (each figure is then their median).
        #[arg(required = true)]
        current: Vec<PathBuf>,
        /// Also write the Markdown summary with the comparison here (appends; e.g. $GITHUB_STEP_SUMMARY).
        #[arg(long)]
        summary: Option<PathBuf>,
        /// Allowed growth of the claim→SENT handling time (p50, p95), percent.
        #[arg(long, default_value_t = Tolerances::default().handling_pct)]
        handling_tolerance: f64,
        /// Allowed p50 latency growth, percent.
        #[arg(long, default_value_t = Tolerances::default().p50_pct)]
        p50_tolerance: f64,
        /// Allowed p95 latency growth, percent.
        #[arg(long, default_value_t = Tolerances::default().p95_pct)]
        p95_tolerance: f64,
        /// Latency changes below this many ms never count.
        #[arg(long, default_value_t = Tolerances::default().latency_floor_ms)]
        latency_floor_ms: f64,
        /// Allowed drop in delivered msg/s, percent.
        #[arg(long, default_value_t = Tolerances::default().throughput_pct)]
        throughput_tolerance: f64,
        /// Allowed growth of the AWS cost per 1,000 messages, percent.
        #[arg(long, default_value_t = Tolerances::default().cost_pct)]
        cost_tolerance: f64,
        /// Print the comparison as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// What a finished run would cost on AWS, priced with a price card.
    Cost {
        results: PathBuf,
        /// The price card (default: the built-in pricing/aws-us-east-1.toml).
        #[arg(long, value_name = "FILE")]
        pricing: Option<PathBuf>,
        /// Print the bill as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// One results file, or every `*.json` in a directory.
fn load_runs(path: &Path) -> anyhow::Result<Vec<RunResults>> {
    if !path.is_dir() {
        return Ok(vec![RunResults::load(path)?]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    anyhow::ensure!(!files.is_empty(), "{}: no results files (*.json) in it", path.display());
    Ok(files.iter().map(|f| RunResults::load(f)).collect::<Result<_, _>>()?)
}

fn run() -> anyhow::Result<i32> {
    match Cli::parse().command {
        Command::Cost { results, pricing, json } => {
            let run = RunResults::load(&results)?;
            let card = match &pricing {
                Some(path) => PriceCard::load(path)?,
                None => PriceCard::builtin(),
            };
            anyhow::ensure!(
                !run.aws_usage.is_empty(),
                "{}: the run recorded no AWS usage (results written before metering, or no call reached the stack)",
                results.display()
            );
            let bill = price(&run.aws_usage, &card, run.sent());
            if json {
                println!("{}", serde_json::to_string_pretty(&bill)?);
            } else {
                print!("{}", reports::cost::to_text(&bill));
            }
            Ok(0)
        }
        Command::Render { results, out, baseline } => {
            let current = RunResults::load(&results)?;
            let comparison = match &baseline {
                Some(path) => Some(compare(
                    &load_runs(path)?,
                    std::slice::from_ref(&current),
                    &Tolerances::default(),
                )?),
                None => None,
            };
            let dir = out.unwrap_or_else(|| results.parent().map(PathBuf::from).unwrap_or_default());
            let written = write_reports(&current, comparison.as_ref(), &dir)
                .with_context(|| format!("writing reports into {}", dir.display()))?;
            println!(
                "report:  {}\nsummary: {}",
                written.html.display(),
                written.markdown.display()
            );
            Ok(0)
        }
        Command::Compare {
            baseline,
            current,
            summary,
            handling_tolerance,
            p50_tolerance,
            p95_tolerance,
            latency_floor_ms,
            throughput_tolerance,
            cost_tolerance,
            json,
        } => {
            let tolerances = Tolerances {
                p50_pct: p50_tolerance,
                p95_pct: p95_tolerance,
                latency_floor_ms,
                handling_pct: handling_tolerance,
                throughput_pct: throughput_tolerance,
                cost_pct: cost_tolerance,
                ..Tolerances::default()
            };
            let base = load_runs(&baseline)?;
            let runs = current
                .iter()
                .map(|path| RunResults::load(path))
                .collect::<Result<Vec<_>, _>>()?;
            let comparison = compare(&base, &runs, &tolerances)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&comparison)?);
            } else {
                print!("{}", to_text(&comparison));
            }
            if let Some(path) = summary {
                let latest = runs.last().expect("at least one run");
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("opening {}", path.display()))?;
                file.write_all(markdown::render(latest, Some(&comparison)).as_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            Ok(if comparison.regressed() { EXIT_REGRESSION } else { 0 })
        }
    }
}

fn main() {
    let code = match run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("reports: {error:#}");
            EXIT_ERROR
        }
    };
    std::process::exit(code);
}
