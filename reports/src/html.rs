//! The stakeholder report: one self-contained HTML file (inline CSS and SVG,
//! no scripts, no external assets, a CSP that forbids loading any) that reads
//! on a phone and prints cleanly. Verdict first, then what happened over time,
//! then the evidence and the provenance of the numbers.

use std::fmt::Write;

use crate::compare::{format_change, format_value, Comparison};
use crate::results::RunResults;
use crate::summary::{duration_ms, fault_label, injected, narrative, priorities_in, priority_rank, PRIORITIES};
use crate::svg::{escape, Band, BarChart, LineChart, Series, PALETTE};

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

fn figure(out: &mut String, svg: String, caption: &str) {
    let _ = write!(
        out,
        "<figure>{svg}<figcaption>{}</figcaption></figure>",
        escape(caption)
    );
}

fn faults_caption(results: &RunResults) -> &'static str {
    if results.faults.is_empty() {
        ""
    } else {
        " Shaded: faults in force."
    }
}

fn throughput_chart(results: &RunResults) -> String {
    let series = |name: &str, color: &'static str, dashed: bool, pick: fn(&crate::results::Sample) -> f64| Series {
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
        series: vec![
            series("sent/s", PALETTE[0], false, |s| s.sent_per_sec),
            series("errors/s", PALETTE[5], false, |s| s.errors_per_sec),
            series("retries/s", PALETTE[1], true, |s| s.retries_per_sec),
        ],
        bands: fault_bands(results),
    }
    .to_svg()
}

fn queue_chart(results: &RunResults) -> String {
    let mut names: Vec<String> = Vec::new();
    for sample in &results.timeseries {
        for name in sample.queue_depths.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    // Each priority's queue, then its dead-letter queue.
    let rank = |n: &str| priority_rank(n.trim_end_matches("-dlq")) * 2 + usize::from(n.ends_with("-dlq"));
    names.sort_by_key(|n| rank(n));
    // Dead-letter queues that stayed empty would only add flat lines.
    names.retain(|n| {
        !n.ends_with("-dlq")
            || results
                .timeseries
                .iter()
                .any(|s| s.queue_depths.get(n).is_some_and(|d| d.total() > 0))
    });
    let series = names
        .iter()
        .enumerate()
        .map(|(i, name)| Series {
            name: name.clone(),
            color: PALETTE[i % PALETTE.len()],
            dashed: name.ends_with("-dlq"),
            points: results
                .timeseries
                .iter()
                .map(|s| (s.t_secs, s.queue_depths.get(name).map_or(0, |d| d.total()) as f64))
                .collect(),
        })
        .collect();
    LineChart {
        id: "chart-queues".into(),
        title: "Queue depth (visible + in flight)".into(),
        y_unit: "messages".into(),
        x_max: results.span_secs(),
        series,
        bands: fault_bands(results),
    }
    .to_svg()
}

fn latency_over_time_chart(results: &RunResults) -> String {
    let series = PRIORITIES
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
                    s.latency_ms
                        .get(*priority)
                        .filter(|l| l.count > 0)
                        .map(|l| (s.t_secs, l.p95))
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
        groups: priorities_in(&results.latency_ms)
            .into_iter()
            .map(|(name, p)| (name.to_string(), vec![p.p50_ms, p.p95_ms, p.p99_ms]))
            .collect(),
    }
    .to_svg()
}

fn table(out: &mut String, headers: &[&str], rows: &[(Vec<String>, bool)]) {
    out.push_str("<div class=\"table-wrap\"><table><thead><tr>");
    for (i, h) in headers.iter().enumerate() {
        let class = if i > 0 { " class=\"num\"" } else { "" };
        let _ = write!(out, "<th{class}>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for (cells, bad) in rows {
        out.push_str(if *bad { "<tr class=\"bad\">" } else { "<tr>" });
        for (i, cell) in cells.iter().enumerate() {
            let class = if i > 0 { " class=\"num\"" } else { "" };
            let _ = write!(out, "<td{class}>{}</td>", escape(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
}

fn verdict_section(out: &mut String, results: &RunResults) {
    let pass = results.passed();
    let class = if pass { "pass" } else { "fail" };
    let _ = write!(
        out,
        "<header class=\"verdict {class}\" id=\"verdict\"><h1><span class=\"badge\">{}</span> {}</h1><p class=\"muted\">{} · {} · started {} · {}</p><ul class=\"narrative\">",
        if pass { "PASS" } else { "FAIL" },
        escape(&results.scenario.name),
        escape(&results.scenario.description),
        escape(&results.scenario.file),
        escape(&results.started_at),
        escape(&format!("seed {}", results.scenario.seed)),
    );
    for line in narrative(results) {
        let _ = write!(out, "<li>{}</li>", escape(&line));
    }
    out.push_str("</ul><ul class=\"figures\">");
    let mut headline = vec![
        (results.audit.accepted.to_string(), "accepted"),
        (results.sent().to_string(), "sent"),
        (results.errors().to_string(), "ERROR"),
        (results.audit.lost.to_string(), "lost"),
        (format!("{:.1}", results.delivered_per_sec), "delivered msg/s"),
    ];
    if let Some((_, p)) = priorities_in(&results.latency_ms).first() {
        headline.push((duration_ms(p.p99_ms), "top-priority p99"));
    }
    for (value, label) in headline {
        let _ = write!(out, "<li><b>{}</b><span>{}</span></li>", escape(&value), label);
    }
    out.push_str("</ul>");
    if !results.scenario.extra_faults.is_empty() {
        let _ = write!(
            out,
            "<p><strong>Faults added on the command line:</strong> {}</p>",
            escape(&results.scenario.extra_faults.join("; "))
        );
    }
    out.push_str("</header>");
}

fn slo_section(out: &mut String, results: &RunResults) {
    out.push_str("<section id=\"slo\"><h2>Objectives</h2>");
    let rows: Vec<(Vec<String>, bool)> = results
        .slo
        .iter()
        .map(|v| {
            (
                vec![
                    v.name.clone(),
                    v.target.clone(),
                    v.measured.clone(),
                    if v.pass { "met" } else { "MISSED" }.to_string(),
                ],
                !v.pass,
            )
        })
        .collect();
    table(out, &["objective", "target", "measured", "result"], &rows);
    out.push_str("</section>");
}

/// The comparison table, also used on its own by `reports compare --html`.
pub fn comparison_section(out: &mut String, comparison: &Comparison) {
    let verdict = if comparison.regressed() {
        "<span class=\"badge fail\">REGRESSION</span>"
    } else {
        "<span class=\"badge pass\">no regression</span>"
    };
    let _ = write!(
        out,
        "<section id=\"comparison\"><h2>Compared with the baseline {verdict}</h2><p class=\"muted\">baseline {} · current {}. \"vs yardstick\" reads each side against how fast the stack answered the calls that figure waits on in its own run, so a slower machine does not count as a regression.</p>",
        escape(&comparison.baseline_label),
        escape(&comparison.current_label)
    );
    let rows: Vec<(Vec<String>, bool)> = comparison
        .rows
        .iter()
        .map(|r| {
            (
                vec![
                    r.figure.clone(),
                    format_value(r.baseline, &r.unit),
                    format_value(r.current, &r.unit),
                    format_change(r.ratio),
                    format_change(r.normalised_ratio),
                    r.outcome.label().to_string(),
                ],
                r.outcome.fails(),
            )
        })
        .collect();
    table(
        out,
        &["figure", "baseline", "current", "change", "vs yardstick", "outcome"],
        &rows,
    );
    for note in &comparison.notes {
        let _ = write!(out, "<p class=\"muted\">Note: {}</p>", escape(note));
    }
    out.push_str("</section>");
}

fn latency_section(out: &mut String, results: &RunResults) {
    out.push_str("<section id=\"latency\"><h2>Latency by priority</h2>");
    figure(
        out,
        latency_bars(results),
        "From the moment each request was due to be sent (coordinated-omission corrected) until its message was SENT.",
    );
    let row = |label: String, p: &crate::results::Percentiles| {
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
        for (priority, p) in priorities_in(map) {
            rows.push(row(format!("{priority}, {label}"), p));
        }
    }
    if let Some(p) = results.handling_ms.get("all") {
        rows.push(row("all, handling (claim to SENT)".into(), p));
    }
    for stage in ["claim", "content", "send", "record"] {
        if let Some(p) = results.stage_ms.get(stage) {
            rows.push(row(format!("handling step: {stage}"), p));
        }
    }
    for (phase, map) in &results.latency_by_phase_ms {
        for (priority, p) in priorities_in(map) {
            rows.push(row(format!("{priority}, {phase}"), p));
        }
    }
    table(out, &["priority", "sent", "p50", "p95", "p99", "max"], &rows);
    let caption = format!(
        "Each point is the p95 of everything sent so far, as the engine measures it.{}",
        faults_caption(results)
    );
    figure(out, latency_over_time_chart(results), &caption);
    out.push_str("</section>");
}

fn faults_section(out: &mut String, results: &RunResults) {
    out.push_str("<section id=\"faults\"><h2>Fault timeline</h2>");
    if results.faults.is_empty() {
        out.push_str("<p>No faults were injected in this run.</p>");
    } else {
        let rows: Vec<(Vec<String>, bool)> = results
            .faults
            .iter()
            .map(|w| {
                (
                    vec![
                        w.kind.replace('_', " "),
                        format!("{:.1} s", w.start_secs),
                        w.end_secs.map_or("end of traffic".into(), |e| format!("{e:.1} s")),
                        w.detail.clone(),
                        injected(results, &w.kind).map_or("—".into(), |c| c.to_string()),
                    ],
                    false,
                )
            })
            .collect();
        table(out, &["fault", "from", "to", "detail", "injected"], &rows);
        out.push_str("<p class=\"muted\">The same windows are shaded on the charts above.</p>");
    }
    out.push_str("</section>");
}

fn outcomes_section(out: &mut String, results: &RunResults) {
    out.push_str("<section id=\"outcomes\"><h2>Message outcomes</h2>");
    let rows: Vec<(Vec<String>, bool)> = results
        .audit
        .by_status
        .iter()
        .map(|(status, count)| {
            (
                vec![status.clone(), count.to_string()],
                status != "SENT" && status != "ERROR",
            )
        })
        .collect();
    table(out, &["final status", "messages"], &rows);
    if results.audit.error_reasons.is_empty() {
        out.push_str("<p>No message ended in ERROR.</p>");
    } else {
        let rows: Vec<(Vec<String>, bool)> = results
            .audit
            .error_reasons
            .iter()
            .map(|(reason, count)| (vec![reason.clone(), count.to_string()], false))
            .collect();
        table(out, &["error reason", "messages"], &rows);
    }
    let o = &results.offered;
    let rows = vec![
        (vec!["requests offered".to_string(), o.requests.to_string()], false),
        (vec!["campaign uploads".into(), o.campaigns.to_string()], false),
        (vec!["notifications".into(), o.notifications.to_string()], false),
        (vec!["messages expected".into(), o.expected_messages.to_string()], false),
        (
            vec!["CSV rows rejected (invalid)".into(), o.rejected_rows.to_string()],
            false,
        ),
        (
            vec!["CSV rows skipped (duplicates)".into(), o.duplicate_rows.to_string()],
            false,
        ),
        (
            vec!["requests that failed".into(), o.failed_requests.to_string()],
            o.failed_requests > 0,
        ),
        (vec!["requests started late".into(), o.late_starts.to_string()], false),
        (
            vec!["requests never started".into(), o.not_started.to_string()],
            o.not_started > 0,
        ),
    ];
    table(out, &["offered load", ""], &rows);
    out.push_str("</section>");
}

fn audit_section(out: &mut String, results: &RunResults) {
    let a = &results.audit;
    let status = if a.conserved() {
        "<span class=\"ok\">conserved</span>"
    } else {
        "<span class=\"bad-text\">BROKEN</span>"
    };
    let _ = write!(out, "<section id=\"audit\"><h2>Conservation audit: {status}</h2>");
    out.push_str("<p>Every accepted message must end SENT or ERROR exactly once, and nobody may be mailed who was not accepted. Checked against the status table and the mail provider's own record of what it sent.</p>");
    let rows = vec![
        (vec!["accepted".to_string(), a.accepted.to_string()], false),
        (
            vec!["records found".into(), a.records_found.to_string()],
            a.records_found < a.accepted,
        ),
        (vec!["lost".into(), a.lost.to_string()], a.lost > 0),
        (
            vec![
                "duplicate sends".into(),
                if a.mail_record_checked {
                    a.duplicated.to_string()
                } else {
                    "not checkable".into()
                },
            ],
            a.duplicated > 0,
        ),
        (
            vec!["unexpected sends".into(), a.unexpected.to_string()],
            a.unexpected > 0,
        ),
        (vec!["dead-lettered".into(), a.dead_lettered.to_string()], false),
        (vec!["poison injected".into(), a.poison_injected.to_string()], false),
    ];
    table(out, &["check", "count"], &rows);
    for (title, examples) in [
        ("Lost, for example", &a.lost_examples),
        ("Mailed more than once", &a.duplicate_examples),
    ] {
        if !examples.is_empty() {
            let _ = write!(out, "<p><strong>{title}:</strong> {}</p>", escape(&examples.join(", ")));
        }
    }
    out.push_str("</section>");
}

fn provenance_section(out: &mut String, results: &RunResults) {
    out.push_str("<section id=\"stack\"><h2>Stack and versions</h2>");
    let s = &results.stack;
    let mut rows = vec![
        (vec!["target".to_string(), s.target.clone()], false),
        (vec!["mailer".into(), s.mailer.clone()], false),
        (vec!["stack start-up".into(), format!("{:.1} s", s.startup_secs)], false),
    ];
    for (name, version) in &s.versions {
        rows.push((vec![name.clone(), version.clone()], false));
    }
    if let Some(reference) = results.stack_reference_ms {
        rows.push((
            vec![
                "stack answer time (median SQS/DynamoDB call)".into(),
                format!("{reference:.1} ms"),
            ],
            false,
        ));
    }
    if let Some(c) = &results.calibration {
        rows.push((
            vec![
                "calibrated ceiling".into(),
                format!(
                    "{:.1} msg/s ({} messages in {:.1} s)",
                    c.msgs_per_sec, c.messages, c.seconds
                ),
            ],
            false,
        ));
    }
    table(out, &["component", "version / value"], &rows);
    if !results.check_stack.is_empty() {
        let rows: Vec<(Vec<String>, bool)> = results
            .check_stack
            .iter()
            .map(|c| {
                (
                    vec![
                        c.name.clone(),
                        if c.pass { "ok" } else { "FAILED" }.into(),
                        c.detail.clone(),
                    ],
                    !c.pass,
                )
            })
            .collect();
        table(out, &["stack conformance check", "result", "detail"], &rows);
    }
    out.push_str("</section><section id=\"machine\"><h2>Machine</h2>");
    let m = &results.machine;
    let rows = vec![
        (vec!["cores".to_string(), m.cores.to_string()], false),
        (vec!["memory".into(), format!("{} GiB", m.memory_gib)], false),
        (vec!["OS".into(), m.os.clone()], false),
        (vec!["Courier".into(), m.courier_version.clone()], false),
        (
            vec![
                "build".into(),
                if m.build_profile.is_empty() {
                    "unknown".into()
                } else {
                    m.build_profile.clone()
                },
            ],
            false,
        ),
        (
            vec![
                "run took".into(),
                format!("{:.0} s ({:.0} s of traffic)", results.total_secs, results.traffic_secs),
            ],
            false,
        ),
    ];
    table(out, &["", ""], &rows);
    out.push_str("</section>");
}

/// The whole report. `comparison`, when given, goes right after the objectives.
pub fn render(results: &RunResults, comparison: Option<&Comparison>) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; img-src data:\"><title>{} — {} — Courier load run</title><style>{STYLE}</style></head><body><main>",
        escape(&results.scenario.name),
        if results.passed() { "PASS" } else { "FAIL" }
    );
    verdict_section(&mut out, results);
    slo_section(&mut out, results);
    if let Some(comparison) = comparison {
        comparison_section(&mut out, comparison);
    }
    out.push_str("<section id=\"throughput\"><h2>Delivery over time</h2>");
    let caption = format!(
        "Messages the senders marked SENT (or ERROR) per second, and throttled attempts sent back to wait.{}",
        faults_caption(results)
    );
    figure(&mut out, throughput_chart(results), &caption);
    out.push_str("</section><section id=\"queues\"><h2>Queue depth over time</h2>");
    let caption = format!(
        "Messages waiting or being worked on, per queue; dead-letter queues appear when they hold anything.{}",
        faults_caption(results)
    );
    figure(&mut out, queue_chart(results), &caption);
    out.push_str("</section>");
    latency_section(&mut out, results);
    faults_section(&mut out, results);
    outcomes_section(&mut out, results);
    audit_section(&mut out, results);
    provenance_section(&mut out, results);
    let _ = write!(
        out,
        "<footer>Courier {} · results schema v{} · generated from {}</footer></main></body></html>",
        escape(&results.machine.courier_version),
        results.schema_version,
        escape(&format!("{}-{}", results.scenario.name, results.started_at))
    );
    out
}
