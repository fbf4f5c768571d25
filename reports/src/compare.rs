//! Baseline comparison: the CI gate.
//!
//! The machines that run CI are shared and noisy: a neighbour's build can make
//! the emulators, and so every latency, much slower for a while. A gate on raw
//! times would cry wolf. So each run also times the stack's answers to every
//! call it makes, and each speed-bound figure is read against the calls it
//! waits on (its [`Yardstick`]): the send step against the mail provider's
//! answer time, the status writes against DynamoDB's, end-to-end figures
//! against the stack as a whole. A figure counts as a regression only when it
//! is worse beyond tolerance **both** as measured **and** against its
//! yardstick. A slower machine or emulator moves both and passes; slower code
//! (or an injected SES delay, added before the emulator is called) moves the
//! figure but not its yardstick, and fails.
//!
//! Each latency figure is itself a median (p50) or high percentile over every
//! message of a priority, and either side may be several runs: the gate then
//! takes the median of each figure across them. p99 and max rest on a handful
//! of messages in a smoke run and are shown, not gated. Correctness figures
//! (lost, duplicated, unexpected, failed objectives) have no tolerance at all.

use serde::Serialize;

use vocabulary::{AwsOperation, AwsService, Priority, Stage};

use crate::results::RunResults;

/// How far a figure may move before it is a regression. The defaults come
/// from 10 runs of the smoke scenario on unchanged code on a shared 2-core
/// machine (README, "How the gate avoids crying wolf").
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Tolerances {
    /// Claim→SENT handling time and each of its stages (p50 over every
    /// message): relative worsening allowed, in percent.
    pub handling_pct: f64,
    /// A handling or stage change smaller than this (ms) is never a regression.
    pub handling_floor_ms: f64,
    /// End-to-end p50 latency per priority: relative worsening allowed, in percent.
    pub p50_pct: f64,
    /// End-to-end p95 latency per priority: relative worsening allowed, in percent.
    pub p95_pct: f64,
    /// An end-to-end latency change smaller than this (ms) is never a regression.
    pub latency_floor_ms: f64,
    /// A p50 over fewer messages than this (in the baseline) is shown, not gated.
    pub min_messages_p50: u64,
    /// A p95 over fewer messages than this (in the baseline) is shown, not gated.
    pub min_messages_p95: u64,
    /// Delivered msg/s: relative drop allowed, in percent.
    pub throughput_pct: f64,
    /// ERROR share: increase allowed, in percentage points.
    pub error_points: f64,
    /// Cost per 1,000 messages sent (both sides priced with the built-in
    /// card, so only usage moves it): relative growth allowed, in percent.
    pub cost_pct: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Self {
            handling_pct: 25.0,
            handling_floor_ms: 10.0,
            p50_pct: 50.0,
            p95_pct: 75.0,
            latency_floor_ms: 25.0,
            min_messages_p50: 30,
            min_messages_p95: 100,
            throughput_pct: 15.0,
            error_points: 1.0,
            cost_pct: 15.0,
        }
    }
}

/// Which way is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Lower,
    Higher,
}

/// How a figure is judged.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "rule")]
pub enum Rule {
    /// Worse by more than `pct` percent and by more than `floor` in absolute
    /// terms, both as measured and against the figure's yardstick.
    Relative { pct: f64, floor: f64 },
    /// Worse by more than `slack` in absolute terms.
    Absolute { slack: f64 },
    /// Shown for context, never gated.
    Informational,
}

/// What became of one figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Improved,
    Within,
    Regressed,
    /// The baseline had it and the current run does not (e.g. nothing sent at a priority).
    Missing,
    Info,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Improved => "improved",
            Outcome::Within => "within tolerance",
            Outcome::Regressed => "REGRESSED",
            Outcome::Missing => "MISSING",
            Outcome::Info => "info",
        }
    }

    pub fn fails(self) -> bool {
        matches!(self, Outcome::Regressed | Outcome::Missing)
    }
}

/// One figure in both runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub figure: String,
    pub unit: String,
    pub better: Better,
    pub rule: Rule,
    pub baseline: Option<f64>,
    pub current: Option<f64>,
    /// current ÷ baseline.
    pub ratio: Option<f64>,
    /// The same ratio with each side read against its run's stack speed.
    pub normalised_ratio: Option<f64>,
    pub outcome: Outcome,
}

/// A whole comparison: every figure, and what to know before trusting it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub baseline_label: String,
    pub current_label: String,
    /// How many runs each side's figures are the median of.
    pub baseline_runs: usize,
    pub current_runs: usize,
    pub tolerances: Tolerances,
    pub rows: Vec<Row>,
    /// Differences between the runs that a reader should know of.
    pub notes: Vec<String>,
}

impl Comparison {
    pub fn regressed(&self) -> bool {
        self.rows.iter().any(|r| r.outcome.fails())
    }

    pub fn regressions(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.outcome.fails())
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CompareError {
    #[error("nothing to compare: no current results given")]
    NoCurrent,
    #[error("nothing to compare with: no baseline results given")]
    NoBaseline,
    #[error("not comparable: {what} differs (baseline {baseline}, current {current})")]
    NotComparable {
        what: &'static str,
        baseline: String,
        current: String,
    },
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// A figure read from a results file; `None` when the run has no such figure.
type Pick = Box<dyn Fn(&RunResults) -> Option<f64>>;

struct Spec {
    figure: String,
    unit: &'static str,
    better: Better,
    rule: Rule,
    /// What the figure is read against when the stack's speed changes.
    yardstick: Yardstick,
    pick: Pick,
}

/// What a speed-bound figure is read against: a measure, from the same run,
/// of how fast the stack answered the calls the figure waits on.
#[derive(Debug, Clone, Copy)]
enum Yardstick {
    /// Not speed-bound (counts, shares).
    None,
    /// The run's `stack_reference_ms` (SQS and DynamoDB together).
    Stack,
    /// Σ weight × the p50 answer time of one of these operations (the one the run called most).
    Calls(&'static [(&'static [AwsOperation], f64)]),
}

/// The status-table write a claim and a SENT record each make.
const TABLE_UPDATE: &[AwsOperation] = &[AwsOperation::DynamoDbUpdateItem];
/// The provider call of the send step, whichever mailer the run used.
const PROVIDER_SEND: &[AwsOperation] = &AwsOperation::PROVIDER_SENDS;

impl Yardstick {
    fn read(self, run: &RunResults) -> Option<f64> {
        match self {
            Yardstick::None => None,
            Yardstick::Stack => run.stack_reference_ms,
            Yardstick::Calls(parts) => parts.iter().try_fold(0.0, |sum, (operations, weight)| {
                let busiest = operations
                    .iter()
                    .filter_map(|op| run.stack_answer_ms.get(op.as_str()))
                    .filter(|p| p.count > 0)
                    .max_by_key(|p| p.count)?;
                Some(sum + weight * busiest.p50_ms)
            }),
        }
        .filter(|v| *v > 0.0)
    }
}

fn specs(baselines: &[RunResults], runs: &[&RunResults], tolerances: &Tolerances) -> Vec<Spec> {
    let mut specs = correctness_specs(tolerances);
    specs.extend(handling_specs(runs, tolerances));
    specs.extend(latency_specs(baselines, runs, tolerances));
    specs.extend(cost_specs(runs, tolerances));
    specs.push(Spec {
        figure: "stack answer time (reference)".into(),
        unit: "ms",
        better: Better::Lower,
        rule: Rule::Informational,
        yardstick: Yardstick::None,
        pick: Box::new(|r| r.stack_reference_ms),
    });
    specs.push(Spec {
        figure: "late starts".into(),
        unit: "",
        better: Better::Lower,
        rule: Rule::Informational,
        yardstick: Yardstick::None,
        pick: Box::new(|r| Some(r.offered.late_starts as f64)),
    });
    specs
}

/// What 1,000 sent messages cost on AWS, in all and per service. Each side
/// is priced with the same (built-in) card, so a change of prices is not read
/// as a regression: only more calls, units or requests per message are. SES's
/// fixed price per recipient dominates the total, so each service is judged
/// on its own too: twice the DynamoDB writes per message moves the total by 2%.
fn cost_specs(runs: &[&RunResults], tolerances: &Tolerances) -> Vec<Spec> {
    let card = std::rc::Rc::new(crate::cost::PriceCard::builtin());
    let spec = |figure: String, service: Option<&'static str>| {
        let card = card.clone();
        Spec {
            figure,
            unit: "$",
            better: Better::Lower,
            rule: Rule::Relative {
                pct: tolerances.cost_pct,
                floor: COST_FLOOR_USD,
            },
            yardstick: Yardstick::None,
            pick: Box::new(move |r: &RunResults| {
                if r.aws_usage.is_empty() || r.sent() == 0 {
                    return None;
                }
                let cost = crate::cost::price(&r.aws_usage, &card, r.sent());
                let usd = match service {
                    None => cost.total_usd,
                    Some(service) => cost.by_service_usd.get(service).copied().unwrap_or(0.0),
                };
                Some(usd * 1000.0 / r.sent() as f64)
            }),
        }
    };
    let used: std::collections::BTreeSet<AwsService> = runs
        .iter()
        .flat_map(|r| r.aws_usage.keys())
        .filter_map(|op| AwsService::of_label(op))
        .collect();
    std::iter::once(spec("cost per 1,000 msgs".into(), None))
        .chain(
            used.into_iter()
                .map(|service| spec(format!("cost per 1,000 msgs: {service}"), Some(service.as_str()))),
        )
        .collect()
}

/// A change in the cost per 1,000 messages smaller than this (USD) is never a
/// regression: a thousandth of a cent per message.
const COST_FLOOR_USD: f64 = 0.0002;

/// Counts that may not grow at all, the ERROR share and the throughput.
fn correctness_specs(tolerances: &Tolerances) -> Vec<Spec> {
    let no_more = |figure: &str, pick: fn(&RunResults) -> u64| Spec {
        figure: figure.into(),
        unit: "",
        better: Better::Lower,
        rule: Rule::Absolute { slack: 0.0 },
        yardstick: Yardstick::None,
        pick: Box::new(move |r| Some(pick(r) as f64)),
    };
    vec![
        no_more("objectives failed", |r| r.slo.iter().filter(|v| !v.pass).count() as u64),
        no_more("lost", |r| r.audit.lost),
        no_more("duplicate sends", |r| r.audit.duplicated),
        no_more("unexpected sends", |r| r.audit.unexpected),
        Spec {
            figure: "ERROR share".into(),
            unit: "%",
            better: Better::Lower,
            rule: Rule::Absolute {
                slack: tolerances.error_points,
            },
            yardstick: Yardstick::None,
            pick: Box::new(|r| (r.audit.accepted > 0).then(|| 100.0 * r.errors() as f64 / r.audit.accepted as f64)),
        },
        Spec {
            figure: "delivered msg/s".into(),
            unit: "msg/s",
            better: Better::Higher,
            rule: Rule::Relative {
                pct: tolerances.throughput_pct,
                floor: 0.5,
            },
            yardstick: Yardstick::Stack,
            pick: Box::new(|r| Some(r.delivered_per_sec)),
        },
    ]
}

/// Handling time and its stages: medians over every message, so gated
/// tightly. Each step is read against the service it waits on: emulators
/// slow down independently of each other (moto's SES alone can swing ±30%).
fn handling_specs(runs: &[&RunResults], tolerances: &Tolerances) -> Vec<Spec> {
    let rule = Rule::Relative {
        pct: tolerances.handling_pct,
        floor: tolerances.handling_floor_ms,
    };
    let gated = |figure: String, yardstick: Yardstick, pick: Pick| Spec {
        figure,
        unit: "ms",
        better: Better::Lower,
        rule,
        yardstick,
        pick,
    };
    let mut specs = vec![gated(
        "handling p50 (claim→SENT)".into(),
        Yardstick::Calls(&[(TABLE_UPDATE, 2.0), (PROVIDER_SEND, 1.0)]),
        Box::new(|r| r.handling_ms.all.filter(|p| p.count > 0).map(|p| p.p50_ms)),
    )];
    for stage in Stage::ALL
        .into_iter()
        .filter(|s| runs.iter().any(|r| r.stage_ms.contains_key(s)))
    {
        let yardstick = match stage {
            Stage::Claim | Stage::Record => Yardstick::Calls(&[(TABLE_UPDATE, 1.0)]),
            Stage::Send => Yardstick::Calls(&[(PROVIDER_SEND, 1.0)]),
            Stage::Content => Yardstick::Stack,
        };
        let pick: Pick = Box::new(move |r| r.stage_ms.get(&stage).filter(|p| p.count > 0).map(|p| p.p50_ms));
        specs.push(gated(format!("stage p50 {stage}"), yardstick, pick));
    }
    specs.push(Spec {
        figure: "handling p95 (claim→SENT)".into(),
        unit: "ms",
        better: Better::Lower,
        rule: Rule::Informational,
        yardstick: Yardstick::Stack,
        pick: Box::new(|r| r.handling_ms.all.filter(|p| p.count > 0).map(|p| p.p95_ms)),
    });
    specs
}

/// End-to-end latency: queueing makes it swing far more than the stack's
/// speed explains, so only gross regressions are gated, and only where
/// enough messages stand behind the percentile.
fn latency_specs(baselines: &[RunResults], runs: &[&RunResults], tolerances: &Tolerances) -> Vec<Spec> {
    // Every priority either run saw, in the order high, medium, low.
    let priorities: Vec<Priority> = Priority::ALL
        .into_iter()
        .filter(|p| runs.iter().any(|r| r.latency_ms.contains_key(p)))
        .collect();
    let baseline_count = |priority: Priority| {
        let counts = baselines
            .iter()
            .filter_map(|r| r.latency_ms.get(&priority))
            .map(|p| p.count as f64);
        median(counts.collect()).unwrap_or(0.0) as u64
    };
    // Label, (tolerance %, fewest messages to gate on) when gated, and the reading.
    type Percentile = fn(&crate::results::Percentiles) -> f64;
    type Gate = Option<(f64, u64)>;
    let percentiles: [(&str, Gate, Percentile); 3] = [
        ("p50", Some((tolerances.p50_pct, tolerances.min_messages_p50)), |p| {
            p.p50_ms
        }),
        ("p95", Some((tolerances.p95_pct, tolerances.min_messages_p95)), |p| {
            p.p95_ms
        }),
        ("p99", None, |p| p.p99_ms),
    ];
    let mut specs = Vec::new();
    for (label, gate, read) in percentiles {
        for &priority in &priorities {
            let count = baseline_count(priority);
            let (rule, figure) = match gate {
                Some((pct, min)) if count >= min => (
                    Rule::Relative {
                        pct,
                        floor: tolerances.latency_floor_ms,
                    },
                    format!("latency {label} {priority}"),
                ),
                Some(_) => (
                    Rule::Informational,
                    format!("latency {label} {priority} (n={count}, too few to gate)"),
                ),
                None => (Rule::Informational, format!("latency {label} {priority}")),
            };
            specs.push(Spec {
                figure,
                unit: "ms",
                better: Better::Lower,
                rule,
                yardstick: Yardstick::Stack,
                pick: Box::new(move |r| r.latency_ms.get(&priority).filter(|p| p.count > 0).map(read)),
            });
        }
    }
    specs
}

fn check_comparable(baseline: &RunResults, current: &RunResults) -> Result<(), CompareError> {
    let differ = |what: &'static str, b: String, c: String| {
        if b == c {
            Ok(())
        } else {
            Err(CompareError::NotComparable {
                what,
                baseline: b,
                current: c,
            })
        }
    };
    differ(
        "scenario",
        baseline.scenario.name.clone(),
        current.scenario.name.clone(),
    )?;
    differ(
        "seed",
        baseline.scenario.seed.to_string(),
        current.scenario.seed.to_string(),
    )?;
    let (b, c) = (&baseline.machine.build_profile, &current.machine.build_profile);
    if !b.is_empty() && !c.is_empty() {
        differ("build profile", b.clone(), c.clone())?;
    }
    Ok(())
}

/// Whether `current` is worse than `baseline` beyond `rule`, by raw values.
fn worse_beyond(better: Better, rule: Rule, baseline: f64, current: f64) -> bool {
    let worsening = match better {
        Better::Lower => current - baseline,
        Better::Higher => baseline - current,
    };
    match rule {
        Rule::Absolute { slack } => worsening > slack + 1e-9,
        Rule::Relative { pct, floor } => worsening > floor && worsening > baseline.abs() * pct / 100.0,
        Rule::Informational => false,
    }
}

/// Compares `current` with `baseline`. Either side may be several runs of
/// the same code: each figure is then the median across them.
pub fn compare(
    baselines: &[RunResults],
    current: &[RunResults],
    tolerances: &Tolerances,
) -> Result<Comparison, CompareError> {
    let baseline = baselines.first().ok_or(CompareError::NoBaseline)?;
    let first = current.first().ok_or(CompareError::NoCurrent)?;
    for run in baselines.iter().chain(current) {
        check_comparable(baseline, run)?;
    }
    let mut notes = Vec::new();
    for run in current {
        if run.scenario.extra_faults != baseline.scenario.extra_faults {
            notes.push(format!(
                "current run {} had faults added on the command line: {}",
                run.started_at,
                if run.scenario.extra_faults.is_empty() {
                    "none".into()
                } else {
                    run.scenario.extra_faults.join("; ")
                }
            ));
        }
        if run.machine.cores != baseline.machine.cores {
            notes.push(format!(
                "the baseline ran on {} cores, a current run on {}",
                baseline.machine.cores, run.machine.cores
            ));
        }
        if run.stack.versions != baseline.stack.versions {
            notes.push("the stack's versions differ from the baseline's".into());
        }
    }
    notes.dedup();

    if baselines.iter().chain(current).any(|r| r.stack_reference_ms.is_none()) {
        notes.push("a run has no stack answer time; latency and throughput are judged as measured only".into());
    }

    let all_runs: Vec<&RunResults> = baselines.iter().chain(current).collect();
    let rows = specs(baselines, &all_runs, tolerances)
        .into_iter()
        .map(|spec| {
            let base = median(baselines.iter().filter_map(|r| (spec.pick)(r)).collect());
            let now = median(current.iter().filter_map(|r| (spec.pick)(r)).collect());
            let ratio = base.zip(now).filter(|(b, _)| *b != 0.0).map(|(b, c)| c / b);
            // How much slower the calls this figure waits on were answered now.
            let yardstick = |runs: &[RunResults]| median(runs.iter().filter_map(|r| spec.yardstick.read(r)).collect());
            let slowdown = yardstick(baselines).zip(yardstick(current)).map(|(b, c)| c / b);
            // A latency that grows with the stack's slowdown is no regression; a
            // throughput that shrinks with it is none either.
            let normalised = |value: f64| match (slowdown, spec.better) {
                (Some(s), Better::Lower) => Some(value / s),
                (Some(s), Better::Higher) => Some(value * s),
                _ => None,
            };
            let normalised_ratio = ratio.and_then(normalised);
            let outcome = match (base, now) {
                _ if spec.rule == Rule::Informational => Outcome::Info,
                (Some(_), None) => Outcome::Missing,
                (None, _) => Outcome::Info,
                (Some(b), Some(c)) => {
                    let raw_worse = worse_beyond(spec.better, spec.rule, b, c);
                    let normalised_worse = match normalised(c) {
                        Some(c_norm) => worse_beyond(spec.better, spec.rule, b, c_norm),
                        None => raw_worse,
                    };
                    let improved = match spec.better {
                        Better::Lower => c < b,
                        Better::Higher => c > b,
                    } && worse_beyond(spec.better, spec.rule, c, b);
                    if raw_worse && normalised_worse {
                        Outcome::Regressed
                    } else if improved {
                        Outcome::Improved
                    } else {
                        Outcome::Within
                    }
                }
            };
            Row {
                figure: spec.figure,
                unit: spec.unit.to_string(),
                better: spec.better,
                rule: spec.rule,
                baseline: base,
                current: now,
                ratio,
                normalised_ratio,
                outcome,
            }
        })
        .collect();
    let label = |runs: &[RunResults], first: &RunResults| {
        if runs.len() == 1 {
            format!("{} ({})", first.scenario.name, first.started_at)
        } else {
            format!("{} (median of {} runs)", first.scenario.name, runs.len())
        }
    };
    Ok(Comparison {
        baseline_label: label(baselines, baseline),
        current_label: label(current, first),
        baseline_runs: baselines.len(),
        current_runs: current.len(),
        tolerances: *tolerances,
        rows,
        notes,
    })
}

/// A figure as people read it: whole milliseconds, one decimal for rates.
pub fn format_value(value: Option<f64>, unit: &str) -> String {
    match value {
        None => "—".into(),
        Some(v) if unit == "ms" && v >= 100.0 => format!("{v:.0} ms"),
        Some(v) if unit == "ms" => format!("{v:.1} ms"),
        Some(v) if unit == "%" => format!("{v:.2}%"),
        Some(v) if unit == "$" => crate::summary::usd(v),
        Some(v) if unit.is_empty() => format!("{v:.0}"),
        Some(v) => format!("{v:.1} {unit}"),
    }
}

/// "+12%" / "−8%" from a ratio.
pub fn format_change(ratio: Option<f64>) -> String {
    match ratio {
        None => "—".into(),
        Some(r) => {
            let pct = (r - 1.0) * 100.0;
            if pct.abs() < 0.5 {
                "±0%".into()
            } else if pct > 0.0 {
                format!("+{pct:.0}%")
            } else {
                format!("−{:.0}%", pct.abs())
            }
        }
    }
}

/// The comparison as a fixed-width table for a terminal or a CI log.
pub fn to_text(comparison: &Comparison) -> String {
    let mut out = format!(
        "baseline: {}\ncurrent:  {}\n\n{:<32} {:>12} {:>12} {:>8} {:>12}  {}\n",
        comparison.baseline_label,
        comparison.current_label,
        "figure",
        "baseline",
        "current",
        "change",
        "vs yardstick",
        "outcome"
    );
    for row in &comparison.rows {
        out.push_str(&format!(
            "{:<32} {:>12} {:>12} {:>8} {:>12}  {}\n",
            row.figure,
            format_value(row.baseline, &row.unit),
            format_value(row.current, &row.unit),
            format_change(row.ratio),
            format_change(row.normalised_ratio),
            row.outcome.label()
        ));
    }
    for note in &comparison.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    let t = &comparison.tolerances;
    out.push_str(&format!(
        "\ntolerances (each both as measured and against its yardstick): handling and stage p50 +{}% (and > {} ms); latency p50 +{}% (n ≥ {}), p95 +{}% (n ≥ {}), and > {} ms; delivered msg/s −{}%; cost per 1,000 messages, in all and per service, +{}% (and > ${}). ERROR share +{} points; lost, duplicated, unexpected, failed objectives: none more\n",
        t.handling_pct, t.handling_floor_ms, t.p50_pct, t.min_messages_p50, t.p95_pct, t.min_messages_p95, t.latency_floor_ms, t.throughput_pct, t.cost_pct, COST_FLOOR_USD, t.error_points
    ));
    out.push_str(if comparison.regressed() {
        "verdict: REGRESSION\n"
    } else {
        "verdict: no regression\n"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::Percentiles;

    fn run(p50_high: f64, reference: f64) -> RunResults {
        let mut results = crate::fixtures::results();
        results.latency_ms.insert(
            Priority::High,
            Percentiles {
                count: 100,
                p50_ms: p50_high,
                p95_ms: p50_high * 2.0,
                p99_ms: p50_high * 3.0,
                max_ms: p50_high * 4.0,
            },
        );
        results.handling_ms.all = Some(Percentiles {
            count: 300,
            p50_ms: p50_high / 2.0,
            p95_ms: p50_high,
            p99_ms: p50_high * 1.5,
            max_ms: p50_high * 2.0,
        });
        results.stack_reference_ms = Some(reference);
        // Every service answers at the run's speed.
        for answer in results.stack_answer_ms.values_mut() {
            answer.p50_ms = reference;
        }
        results
    }

    /// `run` with its send step's p50 set to `send_ms`.
    fn with_send_stage(mut run: RunResults, send_ms: f64) -> RunResults {
        run.stage_ms.insert(
            Stage::Send,
            Percentiles {
                count: 300,
                p50_ms: send_ms,
                ..Percentiles::default()
            },
        );
        run
    }

    fn outcome(comparison: &Comparison, figure: &str) -> Outcome {
        comparison.rows.iter().find(|r| r.figure == figure).unwrap().outcome
    }

    /// `run` whose calls used `write_units` DynamoDB units per message sent.
    fn with_usage(mut run: RunResults, write_units: f64) -> RunResults {
        let sent = run.sent();
        let usage = |u: vocabulary::Usage| u;
        run.aws_usage = [
            (
                "DynamoDB.UpdateItem".to_string(),
                usage(vocabulary::Usage {
                    write_units: write_units * sent as f64,
                    ..Default::default()
                }),
            ),
            (
                "SESv2.SendEmail".to_string(),
                usage(vocabulary::Usage {
                    recipients: sent,
                    ..Default::default()
                }),
            ),
        ]
        .into();
        run
    }

    #[test]
    fn more_aws_usage_per_message_is_a_cost_regression_and_old_runs_without_usage_are_not_judged() {
        const TOTAL: &str = "cost per 1,000 msgs";
        const DYNAMODB: &str = "cost per 1,000 msgs: DynamoDB";
        let base = with_usage(run(100.0, 8.0), 3.0);
        let same = compare(
            std::slice::from_ref(&base),
            &[with_usage(run(100.0, 8.0), 3.0)],
            &Tolerances::default(),
        )
        .unwrap();
        assert_eq!(outcome(&same, TOTAL), Outcome::Within);
        assert_eq!(outcome(&same, DYNAMODB), Outcome::Within);
        // Twice the writes per message: DynamoDB's part of the bill doubles,
        // a change the total (mostly SES's price per recipient) hardly shows.
        let dearer = compare(
            std::slice::from_ref(&base),
            &[with_usage(run(100.0, 8.0), 6.0)],
            &Tolerances::default(),
        )
        .unwrap();
        assert_eq!(outcome(&dearer, DYNAMODB), Outcome::Regressed, "{}", to_text(&dearer));
        assert_eq!(outcome(&dearer, TOTAL), Outcome::Within);
        let older = compare(&[run(100.0, 8.0)], &[base], &Tolerances::default()).unwrap();
        assert_eq!(outcome(&older, DYNAMODB), Outcome::Info);
    }

    #[test]
    fn the_same_figures_are_within_tolerance() {
        let c = compare(&[run(100.0, 8.0)], &[run(100.0, 8.0)], &Tolerances::default()).unwrap();
        assert!(!c.regressed(), "{}", to_text(&c));
        assert_eq!(outcome(&c, "latency p50 high"), Outcome::Within);
    }

    #[test]
    fn slower_code_on_an_unchanged_stack_is_a_regression() {
        let c = compare(&[run(100.0, 8.0)], &[run(200.0, 8.0)], &Tolerances::default()).unwrap();
        assert!(c.regressed());
        assert_eq!(outcome(&c, "handling p50 (claim→SENT)"), Outcome::Regressed);
        assert_eq!(outcome(&c, "latency p50 high"), Outcome::Regressed);
        assert_eq!(outcome(&c, "latency p95 high"), Outcome::Regressed);
        assert_eq!(
            outcome(&c, "latency p99 high"),
            Outcome::Info,
            "p99 is shown, not gated"
        );
    }

    #[test]
    fn a_slower_send_on_an_unchanged_stack_fails_on_handling_time_alone() {
        // End-to-end latency hidden in the noise, but every message took 40% longer to handle.
        let mut current = run(100.0, 8.0);
        for p in current.handling_ms.all.iter_mut() {
            p.p50_ms *= 1.4;
            p.p95_ms *= 1.4;
        }
        let c = compare(&[run(100.0, 8.0)], &[current], &Tolerances::default()).unwrap();
        assert_eq!(outcome(&c, "latency p50 high"), Outcome::Within);
        assert_eq!(outcome(&c, "handling p50 (claim→SENT)"), Outcome::Regressed);
        assert!(c.regressed());
    }

    #[test]
    fn a_slower_provider_call_fails_on_its_stage() {
        let with_send = |send_ms: f64| with_send_stage(run(100.0, 8.0), send_ms);
        let c = compare(&[with_send(60.0)], &[with_send(110.0)], &Tolerances::default()).unwrap();
        assert_eq!(outcome(&c, "stage p50 send"), Outcome::Regressed);
        let c = compare(&[with_send(60.0)], &[with_send(65.0)], &Tolerances::default()).unwrap();
        assert_eq!(outcome(&c, "stage p50 send"), Outcome::Within);
    }

    #[test]
    fn a_send_step_that_slows_with_the_mail_provider_alone_is_no_regression() {
        // moto slowed down by a third; SQS and DynamoDB did not.
        let run_with = |send_ms: f64, provider_ms: f64| {
            let mut r = with_send_stage(run(100.0, 8.0), send_ms);
            r.stack_answer_ms
                .get_mut(AwsOperation::Sesv2SendEmail.as_str())
                .unwrap()
                .p50_ms = provider_ms;
            r
        };
        let c = compare(
            &[run_with(90.0, 82.0)],
            &[run_with(120.0, 113.0)],
            &Tolerances::default(),
        )
        .unwrap();
        let row = c.rows.iter().find(|r| r.figure == "stage p50 send").unwrap();
        assert_eq!(row.outcome, Outcome::Within, "{}", to_text(&c));
        // The same step 50 ms slower while the provider answered as before is one.
        let c = compare(
            &[run_with(90.0, 82.0)],
            &[run_with(140.0, 82.0)],
            &Tolerances::default(),
        )
        .unwrap();
        assert_eq!(outcome(&c, "stage p50 send"), Outcome::Regressed);
    }

    #[test]
    fn a_percentile_over_too_few_messages_is_shown_not_gated() {
        let mut few = run(100.0, 8.0);
        few.latency_ms.get_mut(&Priority::High).unwrap().count = 19;
        let mut current = few.clone();
        current.latency_ms.get_mut(&Priority::High).unwrap().p50_ms = 400.0;
        let c = compare(&[few], &[current], &Tolerances::default()).unwrap();
        assert_eq!(outcome(&c, "latency p50 high (n=19, too few to gate)"), Outcome::Info);
        assert!(!c.regressed(), "{}", to_text(&c));
    }

    #[test]
    fn a_baseline_of_several_runs_is_their_median() {
        let baselines = [run(100.0, 8.0), run(300.0, 8.0), run(110.0, 8.0)];
        let c = compare(&baselines, &[run(120.0, 8.0)], &Tolerances::default()).unwrap();
        let row = c.rows.iter().find(|r| r.figure == "latency p50 high").unwrap();
        assert_eq!(row.baseline, Some(110.0));
        assert_eq!(
            c.baseline_label,
            format!("{} (median of 3 runs)", baselines[0].scenario.name)
        );
        assert!(!c.regressed(), "{}", to_text(&c));
    }

    #[test]
    fn a_uniformly_slower_machine_is_not_a_regression() {
        // Everything twice as slow, the stack's own answers included.
        let c = compare(&[run(100.0, 8.0)], &[run(200.0, 16.0)], &Tolerances::default()).unwrap();
        assert!(!c.regressed(), "{}", to_text(&c));
        let row = c.rows.iter().find(|r| r.figure == "latency p50 high").unwrap();
        assert_eq!(row.ratio, Some(2.0));
        assert_eq!(row.normalised_ratio, Some(1.0));
    }

    #[test]
    fn a_faster_stack_does_not_hide_an_unchanged_figure_as_a_regression() {
        // The stack answered twice as fast but the figure held: against the
        // yardstick it looks worse, as measured it is not, so it passes.
        let c = compare(&[run(100.0, 8.0)], &[run(100.0, 4.0)], &Tolerances::default()).unwrap();
        assert!(!c.regressed(), "{}", to_text(&c));
    }

    #[test]
    fn faster_code_is_an_improvement() {
        let c = compare(&[run(200.0, 8.0)], &[run(100.0, 8.0)], &Tolerances::default()).unwrap();
        assert!(!c.regressed());
        assert_eq!(outcome(&c, "latency p50 high"), Outcome::Improved);
    }

    #[test]
    fn a_small_change_under_the_floor_is_never_a_regression() {
        // +50% but only +10 ms: noise at this scale.
        let c = compare(&[run(20.0, 8.0)], &[run(30.0, 8.0)], &Tolerances::default()).unwrap();
        assert_eq!(outcome(&c, "latency p50 high"), Outcome::Within);
    }

    #[test]
    fn one_lost_message_fails_whatever_the_latency() {
        let mut current = run(100.0, 8.0);
        current.audit.lost = 1;
        let c = compare(&[run(100.0, 8.0)], &[current], &Tolerances::default()).unwrap();
        assert_eq!(outcome(&c, "lost"), Outcome::Regressed);
    }

    #[test]
    fn a_priority_that_stopped_sending_is_missing_and_fails() {
        let mut current = run(100.0, 8.0);
        current.latency_ms.remove(&Priority::High);
        let c = compare(&[run(100.0, 8.0)], &[current], &Tolerances::default()).unwrap();
        assert_eq!(outcome(&c, "latency p50 high"), Outcome::Missing);
        assert!(c.regressed());
    }

    #[test]
    fn several_current_runs_are_judged_by_their_median() {
        // One outlier among three does not fail the gate.
        let runs = [run(100.0, 8.0), run(400.0, 8.0), run(105.0, 8.0)];
        let c = compare(&[run(100.0, 8.0)], &runs, &Tolerances::default()).unwrap();
        assert!(!c.regressed(), "{}", to_text(&c));
        let row = c.rows.iter().find(|r| r.figure == "latency p50 high").unwrap();
        assert_eq!(row.current, Some(105.0));
    }

    #[test]
    fn runs_of_different_scenarios_are_refused() {
        let mut other = run(100.0, 8.0);
        other.scenario.name = "another".into();
        let baseline = run(100.0, 8.0);
        let error = compare(std::slice::from_ref(&baseline), &[other], &Tolerances::default()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "not comparable: scenario differs (baseline {}, current another)",
                baseline.scenario.name
            )
        );
    }

    #[test]
    fn lower_throughput_on_an_unchanged_stack_is_a_regression() {
        let mut current = run(100.0, 8.0);
        current.delivered_per_sec = run(100.0, 8.0).delivered_per_sec * 0.5;
        let c = compare(&[run(100.0, 8.0)], &[current], &Tolerances::default()).unwrap();
        assert_eq!(outcome(&c, "delivered msg/s"), Outcome::Regressed);
    }
}
