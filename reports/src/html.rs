//! The stakeholder report: one self-contained HTML file (inline CSS and SVG,
//! no scripts, no external assets, a CSP that forbids loading any) that reads
//! on a phone and prints cleanly. Verdict first, then what happened over time,
//! then the evidence and the provenance of the numbers.
//!
//! Written with maud, which escapes every interpolated value; the SVG charts
//! come from [`crate::svg`] and are the only markup inserted as is.

use maud::{html, Markup, PreEscaped, DOCTYPE};
use vocabulary::{AwsService, Priority, QueueRef, SendStatus, Stage};

use crate::compare::{format_change, format_value, Comparison};
use crate::results::{Capacity, CapacityStep, Percentiles, RunResults, Sample};
use crate::summary::{self, duration_ms, fault_label, injected, narrative};
use crate::svg::{Band, BarChart, LineChart, Panel, PanelChart, Series, PALETTE};

const STYLE: &str = r#"
:root { --ink:#1b1f24; --muted:#5a6270; --line:#d8dde3; --pass:#0a7d3b; --fail:#b3261e; --bg:#fff; }
* { box-sizing: border-box; }
body { margin:0; font:16px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--ink); background:var(--bg); }
main { max-width: 980px; margin: 0 auto; padding: 16px; }
h1 { font-size: 1.6rem; margin: 0 0 4px; }
h2 { font-size: 1.2rem; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.verdict { border-radius: 10px; padding: 16px; border: 2px solid; }
.verdict.pass { border-color: var(--pass); background: #eef8f1; }
.verdict.fail { border-color: var(--fail); background: #fdeeed; }
.simulated { margin: 0 0 10px; padding: 8px 12px; border: 3px dashed #7a4b00; background: #fff4d6; color: #5a3800; border-radius: 8px; }
.badge { display:inline-block; font-weight:700; padding:2px 10px; border-radius:999px; color:#fff; }
.pass .badge, .badge.pass { background: var(--pass); }
.fail .badge, .badge.fail { background: var(--fail); }
.narrative { margin: 8px 0 0; padding-left: 1.1rem; }
.figures { display:grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 8px; margin: 12px 0 0; padding: 0; list-style: none; }
.figures li { background:#fff; border:1px solid var(--line); border-radius: 8px; padding: 8px 10px; }
.figures b { display:block; font-size: 1.3rem; }
.figures span { color: var(--muted); font-size: .85rem; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-size: .92rem; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.bad td { background: #fdeeed; }
.ok { color: var(--pass); font-weight: 600; }
.bad-text { color: var(--fail); font-weight: 700; }
.muted { color: var(--muted); font-size: .9rem; }
svg.chart { width: 100%; height: auto; display: block; margin: 8px 0; }
figure { margin: 0; break-inside: avoid; }
figcaption { color: var(--muted); font-size: .88rem; }
section { break-inside: avoid-page; }
footer { margin-top: 32px; color: var(--muted); font-size: .85rem; }
@media (max-width: 600px) {
  body { font-size: 15px; } main { padding: 10px; } th, td { padding: 5px 4px; }
  /* Charts keep legible text on a phone and scroll sideways instead of shrinking. */
  figure { overflow-x: auto; } svg.chart { min-width: 600px; }
}
@media print {
  body { font-size: 11pt; }
  main { max-width: none; padding: 0; }
  .verdict { background: none !important; }
  h2 { break-after: avoid; }
  figure, table, .verdict { break-inside: avoid; }
}
"#;

fn fault_bands(results: &RunResults) -> Vec<Band> {
    results
        .faults
        .iter()
        .map(|w| Band {
            start: w.start_secs,
            end: w.end_secs.unwrap_or(results.traffic_secs),
            label: fault_label(results, &w.kind, ""),
        })
        .collect()
}

/// A chart (SVG from [`crate::svg`], which escapes its own text) with its caption.
fn figure(svg: String, caption: &str) -> Markup {
    html! { figure { (PreEscaped(svg)) figcaption { (caption) } } }
}

fn faults_caption(results: &RunResults) -> &'static str {
    if results.faults.is_empty() {
        ""
    } else {
        " Shaded: faults in force."
    }
}

fn throughput_chart(results: &RunResults) -> String {
    let series = |name: &str, color: &'static str, dashed: bool, pick: fn(&Sample) -> f64| Series {
        name: name.into(),
        color,
        dashed,
        points: results.timeseries.iter().map(|s| (s.t_secs, pick(s))).collect(),
    };
    LineChart {
        id: "chart-throughput".into(),
        title: "Delivered messages per second".into(),
        y_unit: "msg/s".into(),
        x_max: results.span_secs(),
        x_label: "seconds since start".into(),
        series: vec![
            series("sent/s", PALETTE[0], false, |s| s.sent_per_sec),
            series("errors/s", PALETTE[5], false, |s| s.errors_per_sec),
            series("retries/s", PALETTE[1], true, |s| s.retries_per_sec),
        ],
        bands: fault_bands(results),
    }
    .to_svg()
}

/// Sends per second of each priority, and the senders' send budget (the
/// rate they paced to), when the run had one.
fn priority_chart(results: &RunResults) -> String {
    let samples = &results.timeseries;
    let mut series: Vec<Series> = Priority::ALL
        .into_iter()
        .enumerate()
        .map(|(i, priority)| Series {
            name: format!("{priority} sent/s"),
            color: PALETTE[i % PALETTE.len()],
            dashed: false,
            points: samples
                .iter()
                .map(|s| (s.t_secs, s.sent_per_sec_by_priority[priority]))
                .collect(),
        })
        .collect();
    if samples.iter().any(|s| s.budget_per_sec.is_some()) {
        series.push(Series {
            name: "send budget/s".into(),
            color: PALETTE[5],
            dashed: true,
            points: samples
                .iter()
                .filter_map(|s| Some((s.t_secs, s.budget_per_sec?)))
                .collect(),
        });
    }
    LineChart {
        id: "chart-priorities".into(),
        title: "Sends per second by priority, and the send budget".into(),
        y_unit: "msg/s".into(),
        x_max: results.span_secs(),
        x_label: "seconds since start".into(),
        series,
        bands: fault_bands(results),
    }
    .to_svg()
}

fn queue_chart(results: &RunResults) -> String {
    // Each priority's queue, then its dead-letter queue, if the run sampled it;
    // dead-letter queues that stayed empty would only add flat lines.
    let depth = |s: &Sample, queue: QueueRef| s.queue_depths.get(&queue).map_or(0, |d| d.total());
    let mut queues: Vec<QueueRef> = Priority::ALL
        .into_iter()
        .flat_map(|p| [QueueRef::Main(p), QueueRef::DeadLetter(p)])
        .filter(|q| results.timeseries.iter().any(|s| s.queue_depths.contains_key(q)))
        .collect();
    queues.retain(|q| !q.is_dead_letter() || results.timeseries.iter().any(|s| depth(s, *q) > 0));
    let series = queues
        .iter()
        .enumerate()
        .map(|(i, queue)| Series {
            name: queue.to_string(),
            color: PALETTE[i % PALETTE.len()],
            dashed: queue.is_dead_letter(),
            points: results
                .timeseries
                .iter()
                .map(|s| (s.t_secs, depth(s, *queue) as f64))
                .collect(),
        })
        .collect();
    LineChart {
        id: "chart-queues".into(),
        title: "Queue depth (visible + in flight)".into(),
        y_unit: "messages".into(),
        x_max: results.span_secs(),
        x_label: "seconds since start".into(),
        series,
        bands: fault_bands(results),
    }
    .to_svg()
}

fn latency_over_time_chart(results: &RunResults) -> String {
    let series = Priority::ALL
        .iter()
        .enumerate()
        .map(|(i, priority)| Series {
            name: format!("{priority} p95"),
            color: PALETTE[i],
            dashed: false,
            points: results
                .timeseries
                .iter()
                .filter_map(|s| {
                    let latency = s.latency_ms.get(priority).filter(|l| l.count > 0)?;
                    Some((s.t_secs, latency.p95))
                })
                .collect(),
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    LineChart {
        id: "chart-latency-time".into(),
        title: "Latency p95 so far, by priority".into(),
        y_unit: "ms".into(),
        x_max: results.span_secs(),
        x_label: "seconds since start".into(),
        series,
        bands: fault_bands(results),
    }
    .to_svg()
}

fn latency_bars(results: &RunResults) -> String {
    BarChart {
        id: "chart-latency".into(),
        title: "Latency percentiles by priority (request to sent)".into(),
        y_unit: "ms".into(),
        measures: vec!["p50".into(), "p95".into(), "p99".into()],
        groups: results
            .latency_ms
            .iter()
            .map(|(priority, p)| (priority.to_string(), vec![p.p50_ms, p.p95_ms, p.p99_ms]))
            .collect(),
    }
    .to_svg()
}

/// One table row: its cells, and whether it shows something wrong.
type Row = (Vec<String>, bool);

/// A table whose first column names the row and the rest hold figures.
fn table(headers: &[&str], rows: &[Row]) -> Markup {
    let class = |i: usize| (i > 0).then_some("num");
    html! {
        div.table-wrap { table {
            thead { tr { @for (i, h) in headers.iter().enumerate() { th class=[class(i)] { (h) } } } }
            tbody { @for (cells, bad) in rows {
                tr class=[bad.then_some("bad")] {
                    @for (i, cell) in cells.iter().enumerate() { td class=[class(i)] { (cell) } }
                }
            } }
        } }
    }
}

/// A two-column row of a label and a value.
fn pair(label: &str, value: impl ToString, bad: bool) -> Row {
    (vec![label.to_string(), value.to_string()], bad)
}

fn verdict_section(results: &RunResults) -> Markup {
    let pass = results.passed();
    let mut headline = vec![
        (results.audit.accepted.to_string(), "accepted"),
        (results.sent().to_string(), "sent"),
        (results.errors().to_string(), SendStatus::Error.as_str()),
        (results.audit.lost.to_string(), "lost"),
        (format!("{:.1}", results.delivered_per_sec), "delivered msg/s"),
    ];
    if let Some(p) = results.latency_ms.values().next() {
        headline.push((duration_ms(p.p99_ms), "top-priority p99"));
    }
    let scenario = &results.scenario;
    html! {
        header.verdict.pass[pass].fail[!pass] #verdict {
            @if let Some(banner) = summary::simulated_banner(results) { p.simulated { strong { (banner) } } }
            h1 { span.badge { (if pass { "PASS" } else { "FAIL" }) } " " (scenario.name) }
            p.muted {
                (scenario.description) " · " (scenario.file) " · started " (results.started_at)
                " · seed " (scenario.seed)
            }
            ul.narrative { @for line in narrative(results) { li { (line) } } }
            ul.figures { @for (value, label) in &headline { li { b { (value) } span { (label) } } } }
            @if !scenario.extra_faults.is_empty() {
                p { strong { "Faults added on the command line:" } " " (scenario.extra_faults.join("; ")) }
            }
            @if !scenario.overrides.is_empty() {
                p { strong { "Settings changed from the file's:" } " " (scenario.overrides.join("; ")) }
            }
        }
    }
}

fn slo_section(results: &RunResults) -> Markup {
    let rows: Vec<Row> = results
        .slo
        .iter()
        .map(|v| {
            let result = if v.pass { "met" } else { "MISSED" };
            (
                vec![v.name.clone(), v.target.clone(), v.measured.clone(), result.into()],
                !v.pass,
            )
        })
        .collect();
    html! {
        section #slo { h2 { "Objectives" } (table(&["objective", "target", "measured", "result"], &rows)) }
    }
}

/// The comparison with a baseline, when the report has one.
fn comparison_section(comparison: &Comparison) -> Markup {
    let regressed = comparison.regressed();
    let rows: Vec<Row> = comparison
        .rows
        .iter()
        .map(|r| {
            let cells = vec![
                r.figure.clone(),
                format_value(r.baseline, &r.unit),
                format_value(r.current, &r.unit),
                format_change(r.ratio),
                format_change(r.normalised_ratio),
                r.outcome.label().to_string(),
            ];
            (cells, r.outcome.fails())
        })
        .collect();
    let headers = ["figure", "baseline", "current", "change", "vs yardstick", "outcome"];
    html! {
        section #comparison {
            h2 {
                "Compared with the baseline "
                @if regressed { span.badge.fail { "REGRESSION" } } @else { span.badge.pass { "no regression" } }
            }
            p.muted {
                "baseline " (comparison.baseline_label) " · current " (comparison.current_label) ". "
                "\"vs yardstick\" reads each side against how fast the stack answered the calls that figure "
                "waits on in its own run, so a slower machine does not count as a regression."
            }
            (table(&headers, &rows))
            @for note in &comparison.notes { p.muted { "Note: " (note) } }
        }
    }
}

fn latency_rows(results: &RunResults) -> Vec<Row> {
    let row = |label: String, p: &Percentiles| {
        let cells = vec![
            label,
            p.count.to_string(),
            duration_ms(p.p50_ms),
            duration_ms(p.p95_ms),
            duration_ms(p.p99_ms),
            duration_ms(p.max_ms),
        ];
        (cells, false)
    };
    let mut rows = Vec::new();
    for (label, map) in [
        ("from intended arrival", &results.latency_ms),
        ("from acceptance (engine)", &results.latency_uncorrected_ms),
    ] {
        rows.extend(map.iter().map(|(priority, p)| row(format!("{priority}, {label}"), p)));
    }
    if let Some(p) = &results.handling_ms.all {
        rows.push(row("all, handling (claim to SENT)".into(), p));
    }
    for stage in Stage::ALL {
        if let Some(p) = results.stage_ms.get(&stage) {
            rows.push(row(format!("handling step: {stage}"), p));
        }
    }
    for (phase, map) in &results.latency_by_phase_ms {
        rows.extend(map.iter().map(|(priority, p)| row(format!("{priority}, {phase}"), p)));
    }
    rows
}

fn latency_section(results: &RunResults) -> Markup {
    let bars_caption =
        "From the moment each request was due to be sent (coordinated-omission corrected) until its message was SENT.";
    let caption = format!(
        "Each point is the p95 of everything sent so far, as the engine measures it.{}",
        faults_caption(results)
    );
    html! {
        section #latency {
            h2 { "Latency by priority" }
            (figure(latency_bars(results), bars_caption))
            (table(&["priority", "sent", "p50", "p95", "p99", "max"], &latency_rows(results)))
            (figure(latency_over_time_chart(results), &caption))
        }
    }
}

/// Where the CPU went: each process's CPU per delivered message, its share
/// of the machine and its peak memory.
fn cpu_section(results: &RunResults) -> Markup {
    let cpu = &results.cpu;
    let processes = cpu.busiest_first();
    let rows: Vec<Row> = processes
        .iter()
        .map(|(name, p)| {
            let per_message = p.cpu_ms_per_message.map_or("—".into(), |ms| format!("{ms:.2} ms"));
            let cells = vec![
                name.to_string(),
                per_message,
                format!("{:.0}%", p.machine_pct),
                format!("{:.0} MiB", p.peak_rss_mib),
            ];
            (cells, false)
        })
        .collect();
    let bars = BarChart {
        id: "chart-cpu".into(),
        title: "CPU per delivered message, by process".into(),
        y_unit: "ms".into(),
        measures: vec!["CPU ms per message".into()],
        groups: processes
            .iter()
            .filter_map(|(name, p)| Some((name.to_string(), vec![p.cpu_ms_per_message?])))
            .collect(),
    };
    let caption = format!(
        "CPU time of each process from the start of traffic to the end of the drain ({:.0} s, {} cores); the engine runs inside loadtest, so their shares are one figure.",
        cpu.window_secs, cpu.cores
    );
    html! {
        @if !rows.is_empty() {
            section #cpu {
                h2 { "Where the CPU went" }
                (figure(bars.to_svg(), &caption))
                (table(&["process", "CPU per message", "share of the machine", "peak memory"], &rows))
            }
        }
    }
}

/// What the run would cost on AWS: each billed item, its quantity and price.
fn cost_section(results: &RunResults) -> Markup {
    let Some(cost) = &results.cost else {
        return html! {};
    };
    let quantity = |q: f64| match q {
        q if q.fract() == 0.0 => format!("{q:.0}"),
        q if q >= 1.0 => format!("{q:.1}"),
        q => format!("{q:.6}"),
    };
    let rows: Vec<Row> = cost
        .lines
        .iter()
        .filter(|line| line.quantity > 0.0)
        .map(|line| {
            (
                vec![line.what.clone(), quantity(line.quantity), summary::usd(line.usd)],
                false,
            )
        })
        .chain(std::iter::once((
            vec!["total".into(), String::new(), summary::usd(cost.total_usd)],
            false,
        )))
        .collect();
    let per_1000 = cost.per_1000_messages_usd.map_or("—".into(), summary::usd);
    let card = format!("{} (prices as of {})", cost.price_card, cost.as_of);
    html! {
        section #cost {
            h2 { "What it would cost on AWS" }
            @if let Some(line) = summary::usage_sentence(results) { p { (line) } }
            (table(&["", ""], &[pair("per 1,000 messages sent", per_1000, false), pair("price card", card, false)]))
            (table(&["billed item", "quantity", "cost"], &rows))
            p.muted { "Every call that reached the stack, priced at AWS's list prices: DynamoDB's units as the table reported them, SQS requests per started 64 KiB, SES per recipient accepted. Free tiers, storage and data transfer are left out. Re-price with another card: reports cost results.json --pricing FILE." }
        }
    }
}

fn faults_section(results: &RunResults) -> Markup {
    let rows: Vec<Row> = results
        .faults
        .iter()
        .map(|w| {
            let cells = vec![
                w.kind.replace('_', " "),
                format!("{:.1} s", w.start_secs),
                w.end_secs.map_or("end of traffic".into(), |e| format!("{e:.1} s")),
                w.detail.clone(),
                injected(results, &w.kind).map_or("—".into(), |c| c.to_string()),
            ];
            (cells, false)
        })
        .collect();
    html! {
        section #faults {
            h2 { "Fault timeline" }
            @if rows.is_empty() {
                p { "No faults were injected in this run." }
            } @else {
                (table(&["fault", "from", "to", "detail", "injected"], &rows))
                p.muted { "The same windows are shaded on the charts above." }
            }
        }
    }
}

fn offered_rows(results: &RunResults) -> Vec<Row> {
    let o = &results.offered;
    vec![
        pair("requests offered", o.requests, false),
        pair("campaign uploads", o.campaigns, false),
        pair("notifications", o.notifications, false),
        pair("messages expected", o.expected_messages, false),
        pair("CSV rows rejected (invalid)", o.rejected_rows, false),
        pair("CSV rows skipped (duplicates)", o.duplicate_rows, false),
        pair("requests that failed", o.failed_requests, o.failed_requests > 0),
        pair("requests started late", o.late_starts, false),
        pair("requests never started", o.not_started, o.not_started > 0),
    ]
}

fn outcomes_section(results: &RunResults) -> Markup {
    let statuses: Vec<Row> = results
        .audit
        .by_status
        .iter()
        .map(|(status, count)| pair(status.as_str(), count, !status.is_terminal()))
        .collect();
    let reasons: Vec<Row> = results
        .audit
        .error_reasons
        .iter()
        .map(|(reason, count)| pair(reason, count, false))
        .collect();
    html! {
        section #outcomes {
            h2 { "Message outcomes" }
            (table(&["final status", "messages"], &statuses))
            @if reasons.is_empty() {
                p { "No message ended in " (SendStatus::Error) "." }
            } @else {
                (table(&["error reason", "messages"], &reasons))
            }
            (table(&["offered load", ""], &offered_rows(results)))
        }
    }
}

fn audit_section(results: &RunResults) -> Markup {
    let a = &results.audit;
    let duplicates = if a.mail_record_checked {
        a.duplicated.to_string()
    } else {
        "not checkable".into()
    };
    let rows = vec![
        pair("accepted", a.accepted, false),
        pair("records found", a.records_found, a.records_found < a.accepted),
        pair("lost", a.lost, a.lost > 0),
        pair("duplicate sends", duplicates, a.duplicated > 0),
        pair("unexpected sends", a.unexpected, a.unexpected > 0),
        pair("redeliveries of final messages, skipped", a.redeliveries_skipped, false),
        pair("dead-lettered", a.dead_lettered, false),
        pair("poison injected", a.poison_injected, false),
    ];
    let examples = [
        ("Lost, for example", &a.lost_examples),
        ("Mailed more than once", &a.duplicate_examples),
    ];
    html! {
        section #audit {
            h2 {
                "Conservation audit: "
                @if a.conserved() { span.ok { "conserved" } } @else { span.bad-text { "BROKEN" } }
            }
            p {
                "Every accepted message must end SENT or ERROR exactly once, and nobody may be mailed who was "
                "not accepted. Checked against the status table and the mail provider's own record of what it sent."
            }
            (table(&["check", "count"], &rows))
            @for (title, list) in examples {
                @if !list.is_empty() { p { strong { (title) ":" } " " (list.join(", ")) } }
            }
        }
    }
}

fn stack_rows(results: &RunResults) -> Vec<Row> {
    let s = &results.stack;
    let mut rows = vec![
        pair("target", &s.target, false),
        pair("mailer", s.mailer, false),
        pair("stack start-up", format!("{:.1} s", s.startup_secs), false),
    ];
    rows.extend(s.versions.iter().map(|(name, version)| pair(name, version, false)));
    if let Some(reference) = results.stack_reference_ms {
        let label = "stack answer time (median SQS/DynamoDB call)";
        rows.push(pair(label, format!("{reference:.1} ms"), false));
    }
    rows
}

fn machine_rows(results: &RunResults) -> Vec<Row> {
    let m = &results.machine;
    let build = if m.build_profile.is_empty() {
        "unknown"
    } else {
        &m.build_profile
    };
    let took = format!("{:.0} s ({:.0} s of traffic)", results.total_secs, results.traffic_secs);
    vec![
        pair("cores", m.cores, false),
        pair("memory", format!("{} GiB", m.memory_gib), false),
        pair("OS", &m.os, false),
        pair("Courier", &m.courier_version, false),
        pair("build", build, false),
        pair("run took", took, false),
    ]
}

fn provenance_section(results: &RunResults) -> Markup {
    let checks: Vec<Row> = results
        .check_stack
        .iter()
        .map(|c| {
            let result = if c.pass { "ok" } else { "FAILED" };
            (vec![c.name.clone(), result.into(), c.detail.clone()], !c.pass)
        })
        .collect();
    html! {
        section #stack {
            h2 { "Stack and versions" }
            (table(&["component", "version / value"], &stack_rows(results)))
            @if !checks.is_empty() { (table(&["stack conformance check", "result", "detail"], &checks)) }
        }
        section #machine { h2 { "Machine" } (table(&["", ""], &machine_rows(results))) }
    }
}

fn over_time_sections(results: &RunResults) -> Markup {
    let throughput = format!(
        "Messages the senders marked SENT (or ERROR) per second, and throttled attempts sent back to wait.{}",
        faults_caption(results)
    );
    let queues = format!(
        "Messages waiting or being worked on, per queue; dead-letter queues appear when they hold anything.{}",
        faults_caption(results)
    );
    let priorities = format!(
        "Sends per second of each priority. The dashed line is the senders' budget: the SES account's rate they pace to, cut after throttles and recovering; it is absent when no rate limit was known.{}",
        faults_caption(results)
    );
    html! {
        section #throughput { h2 { "Delivery over time" } (figure(throughput_chart(results), &throughput)) }
        section #priorities { h2 { "Sends by priority" } (figure(priority_chart(results), &priorities)) }
        section #queues { h2 { "Queue depth over time" } (figure(queue_chart(results), &queues)) }
    }
}

/// The page around a report's sections: head, CSP, style and footer.
fn page(title: &str, body: Markup, footer: Option<String>) -> String {
    let csp = "default-src 'none'; style-src 'unsafe-inline'; img-src data:";
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="Content-Security-Policy" content=(csp);
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { main { (body) @if let Some(footer) = footer { footer { (footer) } } } }
        }
    }
    .into_string()
}

fn capacity_chart(capacity: &Capacity) -> String {
    let top = capacity
        .steps
        .iter()
        .map(|s| f64::from(s.in_flight))
        .fold(1.0, f64::max);
    let measured = Series {
        name: "measured".into(),
        color: PALETTE[0],
        dashed: false,
        points: capacity
            .steps
            .iter()
            .map(|s| (f64::from(s.in_flight), s.delivered_per_sec))
            .collect(),
    };
    let model = capacity.usl.map(|usl| Series {
        name: "USL model".into(),
        color: PALETTE[1],
        dashed: true,
        points: (0..=100)
            .map(|i| 1.0 + (top - 1.0) * f64::from(i) / 100.0)
            .map(|n| (n, usl.throughput_at(n)))
            .collect(),
    });
    LineChart {
        id: "chart-capacity".into(),
        title: "Delivered msg/s against messages in flight".into(),
        y_unit: "msg/s".into(),
        x_max: top,
        x_label: "messages in flight at once (workers × concurrency)".into(),
        series: std::iter::once(measured).chain(model).collect(),
        bands: Vec::new(),
    }
    .to_svg()
}

/// One step of the capacity ladder as a table row; `again` marks the knee's
/// step run once more after the ladder, flagged when the machine drifted.
fn capacity_row(s: &CapacityStep, again: Option<bool>) -> Row {
    let busiest = s.cpu.busiest().map_or("—".to_string(), |(name, p)| {
        format!("{name} ({:.0}% of the machine)", p.machine_pct)
    });
    let label = format!("{} × {}", s.workers, s.concurrency);
    let cells = vec![
        if again.is_some() {
            format!("{label}, again")
        } else {
            label
        },
        s.in_flight.to_string(),
        format!("{:.1}", s.delivered_per_sec),
        format!("{:.1} / {:.1} ms", s.handling_mean_ms, s.handling_p99_ms),
        s.cpu_ms_per_message()
            .map_or("—".to_string(), |ms| format!("{ms:.2} ms")),
        format!(
            "{:.2} / {:.2}",
            s.calls_per_message_to(AwsService::Sqs),
            s.calls_per_message_to(AwsService::DynamoDb)
        ),
        busiest,
    ];
    (cells, again.unwrap_or(false))
}

/// The capacity ladder: the curve, the USL fit, and each step's figures.
fn capacity_section(capacity: &Capacity, delivered: Option<f64>) -> Markup {
    let drifted = capacity.unsteady_drift().is_some();
    let rows: Vec<Row> = capacity
        .steps
        .iter()
        .map(|s| capacity_row(s, None))
        .chain(capacity.recheck.iter().map(|s| capacity_row(s, Some(drifted))))
        .collect();
    html! {
        section #capacity {
            h2 { "Capacity" }
            p { (crate::summary::capacity_sentence(capacity, delivered)) }
            (figure(capacity_chart(capacity), "Each point is one step of the ladder, measured over its window after a warm-up; dashed: the Universal Scalability Law fitted to them."))
            (table(&["workers × concurrency", "in flight", "msg/s", "handling mean / p99", "CPU per message (all)", "SQS / DynamoDB calls per message", "busiest"], &rows))
        }
    }
}

/// A capacity measurement's own page (`loadtest capacity`).
pub fn render_capacity(capacity: &Capacity, title: &str) -> String {
    page(title, capacity_section(capacity, None), None)
}

/// The sweep's one chart: end to end, reminders' p99 and cost against the
/// setting, sharing its axis.
fn sweep_chart(sweep: &crate::results::Sweep) -> String {
    let measure = |title: &str, unit: &str, color, value: fn(&crate::results::SweepPoint) -> Option<f64>| Panel {
        title: title.into(),
        unit: unit.into(),
        color,
        values: sweep.points.iter().map(value).collect(),
    };
    PanelChart {
        id: "sweep".into(),
        title: format!("{} against {}", sweep.scenario.name, sweep.setting),
        x_label: format!("{} ({})", sweep.setting, sweep.unit),
        xs: sweep.points.iter().map(|p| p.value).collect(),
        held: sweep.points.iter().map(|p| p.passed).collect(),
        panels: vec![
            measure("End to end", "s", PALETTE[0], |p| Some(p.end_to_end_secs)),
            measure("Reminders' p99, accepted to SENT", "s", PALETTE[5], |p| {
                p.high_p99_ms.map(|ms| ms / 1000.0)
            }),
            measure("Cost per 1,000 messages", "USD", PALETTE[2], |p| p.cost_per_1000_usd),
        ],
    }
    .to_svg()
}

/// A sweep's own page (`loadtest sweep`): what it found, the chart, each run.
pub fn render_sweep(sweep: &crate::results::Sweep) -> String {
    use crate::summary::usd;
    let rows: Vec<Row> = sweep
        .points
        .iter()
        .map(|p| {
            let ms = |v: Option<f64>| v.map_or("—".to_string(), duration_ms);
            let cells = vec![
                crate::svg::format_number(p.value),
                if p.passed {
                    "PASS".into()
                } else {
                    format!("FAIL: {}", p.failed.join(", "))
                },
                duration_ms(p.end_to_end_secs * 1000.0),
                format!("{:.1}", p.delivered_per_sec),
                ms(p.high_p99_ms),
                ms(p.low_p99_ms),
                p.cost_per_1000_usd.map_or("—".to_string(), usd),
                p.ses_throttles.to_string(),
            ];
            (cells, !p.passed)
        })
        .collect();
    let title = format!(
        "{} against {} — Courier SIMULATED sweep",
        sweep.scenario.name, sweep.setting
    );
    let body = html! {
        header.verdict #verdict {
            p.simulated { strong { "SIMULATED: no stack ran. Each value is a run of the engine's own code on virtual time against models of SQS, DynamoDB, S3 and SES; engine CPU is not modelled." } }
            h1 { (title) }
            p.muted { (sweep.scenario.description) " · " (sweep.scenario.file) " · started " (sweep.started_at) " · seed " (sweep.scenario.seed) }
            ul.narrative { @for line in crate::summary::sweep_sentences(sweep) { li { (line) } } }
        }
        section #sweep {
            h2 { "What each value came to" }
            (figure(sweep_chart(sweep), "Each point is one simulated run; hollow points are runs where an objective of the scenario did not hold. End to end runs from the first arrival until every message was final."))
            (table(&[sweep.setting.as_str(), "verdict", "end to end", "msg/s", "reminders p99", "low p99", "per 1,000 msgs", "SES refusals"], &rows))
            p { "Each run's own report: "
                @for p in &sweep.points {
                    a href=(p.results.replace("results.json", "report.html")) { (crate::svg::format_number(p.value)) } " "
                }
            }
        }
    };
    page(
        &title,
        body,
        Some(format!(
            "Courier {} · sweep of {}",
            env!("CARGO_PKG_VERSION"),
            sweep.scenario.file
        )),
    )
}

/// The whole report. `comparison`, when given, goes right after the objectives.
pub fn render(results: &RunResults, comparison: Option<&Comparison>) -> String {
    let verdict = if results.passed() { "PASS" } else { "FAIL" };
    let kind = if results.simulation.is_some() {
        "SIMULATED run"
    } else {
        "load run"
    };
    let title = format!("{} — {verdict} — Courier {kind}", results.scenario.name);
    let body = html! {
        (verdict_section(results))
        (slo_section(results))
        @if let Some(comparison) = comparison { (comparison_section(comparison)) }
        (over_time_sections(results))
        (latency_section(results))
        (cpu_section(results))
        (cost_section(results))
        @if let Some(capacity) = &results.capacity { (capacity_section(capacity, Some(results.delivered_per_sec))) }
        (faults_section(results))
        (outcomes_section(results))
        (audit_section(results))
        (provenance_section(results))
    };
    let footer = format!(
        "Courier {} · results schema v{} · generated from {}-{}",
        results.machine.courier_version, results.schema_version, results.scenario.name, results.started_at
    );
    page(&title, body, Some(footer))
}
