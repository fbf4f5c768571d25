//! The Markdown summary: short enough for a CI job summary
//! (`$GITHUB_STEP_SUMMARY`), complete enough to act on.

use std::fmt::Write;

use crate::compare::{format_change, format_value, Comparison};
use crate::results::RunResults;
use crate::summary::{duration_ms, narrative};

/// Keeps a cell on one table row: pipes and line breaks would split it.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

pub fn render(results: &RunResults, comparison: Option<&Comparison>) -> String {
    let mut out = String::new();
    let pass = results.passed();
    let _ = writeln!(
        out,
        "## {} {} — {}\n",
        if pass { "✅" } else { "❌" },
        cell(&results.scenario.name),
        if pass { "PASS" } else { "FAIL" }
    );
    if let Some(banner) = crate::summary::simulated_banner(results) {
        let _ = writeln!(out, "> **{}**\n", cell(&banner));
    }
    for line in narrative(results) {
        let _ = writeln!(out, "- {}", cell(&line));
    }
    if !results.scenario.extra_faults.is_empty() {
        let _ = writeln!(
            out,
            "- Faults added on the command line: `{}`",
            results.scenario.extra_faults.join("`; `")
        );
    }
    if !results.scenario.overrides.is_empty() {
        let _ = writeln!(
            out,
            "- Settings changed from the file's: `{}`",
            results.scenario.overrides.join("`; `")
        );
    }
    out.push_str("\n| Objective | Target | Measured | |\n|---|---:|---:|---|\n");
    for v in &results.slo {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            cell(&v.name),
            cell(&v.target),
            cell(&v.measured),
            if v.pass { "✅" } else { "❌" }
        );
    }
    out.push_str("\n| Priority | Sent | p50 | p95 | p99 |\n|---|---:|---:|---:|---:|\n");
    for (priority, p) in &results.latency_ms {
        let _ = writeln!(
            out,
            "| {priority} | {} | {} | {} | {} |",
            p.count,
            duration_ms(p.p50_ms),
            duration_ms(p.p95_ms),
            duration_ms(p.p99_ms)
        );
    }
    let _ = writeln!(
        out,
        "\nDelivered **{:.1} msg/s** · accepted {} · sent {} · ERROR {} · lost {} · duplicated {} · unexpected {} · dead-lettered {}",
        results.delivered_per_sec,
        results.audit.accepted,
        results.sent(),
        results.errors(),
        results.audit.lost,
        results.audit.duplicated,
        results.audit.unexpected,
        results.audit.dead_lettered
    );
    if let Some(reference) = results.stack_reference_ms {
        let _ = writeln!(out, "\nStack answer time (median SQS/DynamoDB call): {reference:.1} ms");
    }
    if let Some(comparison) = comparison {
        out.push('\n');
        out.push_str(&comparison_table(comparison));
    }
    out
}

/// The comparison on its own, as `reports compare` writes it.
pub fn comparison_table(comparison: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Compared with baseline: {}\n\nBaseline {} · current {}\n",
        if comparison.regressed() {
            "❌ REGRESSION"
        } else {
            "✅ no regression"
        },
        cell(&comparison.baseline_label),
        cell(&comparison.current_label)
    );
    out.push_str("| Figure | Baseline | Current | Change | vs yardstick | Outcome |\n|---|---:|---:|---:|---:|---|\n");
    for r in &comparison.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {}{} |",
            cell(&r.figure),
            format_value(r.baseline, &r.unit),
            format_value(r.current, &r.unit),
            format_change(r.ratio),
            format_change(r.normalised_ratio),
            if r.outcome.fails() { "❌ " } else { "" },
            r.outcome.label()
        );
    }
    for note in &comparison.notes {
        let _ = writeln!(out, "\n> Note: {}", cell(note));
    }
    out
}
