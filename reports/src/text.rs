//! The run told on a terminal: what `loadtest run` prints when it ends.

use std::fmt::Write;

use vocabulary::{AwsService, SendStatus};

use crate::results::{Capacity, RunResults};

/// The verdict, each objective, the audit and latency, one line each.
pub fn render(r: &RunResults) -> String {
    let mut out = String::new();
    let verdict = r.verdict.as_str().to_uppercase();
    let _ = writeln!(out, "{} — {verdict}", r.scenario.name);
    if let Some(banner) = crate::summary::simulated_banner(r) {
        let _ = writeln!(out, "{banner}");
    }
    let _ = writeln!(out, "{:<28} {:>14} {:>34}", "objective", "target", "measured");
    for check in &r.slo {
        let result = if check.pass { "ok" } else { "FAIL" };
        let _ = writeln!(
            out,
            "{:<28} {:>14} {:>34} {result}",
            check.name, check.target, check.measured
        );
    }
    let a = &r.audit;
    let _ = writeln!(
        out,
        "accepted {}  sent {}  errors {}  lost {}  duplicated {}  unexpected {}  dlq {}",
        a.accepted,
        a.count(SendStatus::Sent),
        a.count(SendStatus::Error),
        a.lost,
        a.duplicated,
        a.unexpected,
        a.dead_lettered
    );
    for (priority, p) in &r.latency_ms {
        let _ = writeln!(
            out,
            "latency {priority:<6} n={:<6} p50 {:>8.1} ms  p95 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms",
            p.count, p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms
        );
    }
    let _ = write!(out, "delivered {:.1} msg/s", r.delivered_per_sec);
    if let (Some(c), Some(f)) = (&r.capacity, r.fraction_of_ceiling) {
        let _ = write!(
            out,
            "  (capacity {:.0} msg/s, {:.0}% of it)",
            c.ceiling_msgs_per_sec,
            f * 100.0
        );
    }
    let o = &r.offered;
    let _ = writeln!(
        out,
        "\nlate starts {}  failed requests {}",
        o.late_starts, o.failed_requests
    );
    for (name, p) in r.cpu.busiest_first() {
        let per_message = p.cpu_ms_per_message.map_or("—".into(), |ms| format!("{ms:.2} ms/msg"));
        let _ = writeln!(
            out,
            "cpu {name:<28} {per_message:>12}  {:>4.0}% of the machine  peak {:>5.0} MiB",
            p.machine_pct, p.peak_rss_mib
        );
    }
    if let Some(cost) = &r.cost {
        let per_1000 = cost.per_1000_messages_usd.map_or("—".into(), crate::summary::usd);
        let _ = writeln!(
            out,
            "cost on AWS {} ({per_1000} per 1,000 messages; {}, prices as of {})",
            crate::summary::usd(cost.total_usd),
            cost.price_card,
            cost.as_of
        );
    }
    out
}

/// A capacity measurement for the terminal: one line per step, then the verdict.
pub fn capacity(c: &Capacity) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>11} {:>9} {:>9} {:>11} {:>10} {:>13}  cpu ms/msg by process",
        "workers×c", "in flight", "msg/s", "handling ms", "p99 ms", "SQS/DDB calls"
    );
    let again = c.recheck.iter().map(|s| (s, " again"));
    for (s, note) in c.steps.iter().map(|s| (s, "")).chain(again) {
        let cpu: Vec<String> = s
            .cpu
            .busiest_first()
            .into_iter()
            .filter_map(|(name, p)| Some(format!("{name} {:.2}", p.cpu_ms_per_message?)))
            .collect();
        let _ = writeln!(
            out,
            "{:>11} {:>9} {:>9.1} {:>11.1} {:>10.1} {:>13}  {}",
            format!("{}×{}{note}", s.workers, s.concurrency),
            s.in_flight,
            s.delivered_per_sec,
            s.handling_mean_ms,
            s.handling_p99_ms,
            format!(
                "{:.2}/{:.2}",
                s.calls_per_message_to(AwsService::Sqs),
                s.calls_per_message_to(AwsService::DynamoDb)
            ),
            cpu.join(", ")
        );
    }
    out.push_str(&crate::summary::capacity_sentence(c, None));
    out
}

/// A sweep as a table, one line per value, then what it found.
pub fn sweep(sweep: &crate::results::Sweep) -> String {
    use crate::summary::{duration_ms, usd};
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>10} {:>6} {:>12} {:>10} {:>14} {:>14} {:>12} {:>9}",
        sweep.setting, "", "end to end", "msg/s", "reminders p99", "low p99", "per 1,000", "throttled"
    );
    for p in &sweep.points {
        let ms = |v: Option<f64>| v.map_or("—".to_string(), duration_ms);
        let _ = writeln!(
            out,
            "{:>10} {:>6} {:>12} {:>10.1} {:>14} {:>14} {:>12} {:>9}",
            crate::svg::format_number(p.value),
            if p.passed { "PASS" } else { "FAIL" },
            duration_ms(p.end_to_end_secs * 1000.0),
            p.delivered_per_sec,
            ms(p.high_p99_ms),
            ms(p.low_p99_ms),
            p.cost_per_1000_usd.map_or("—".to_string(), usd),
            p.ses_throttles
        );
    }
    for line in crate::summary::sweep_sentences(sweep) {
        let _ = writeln!(out, "{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_terminal_summary_leads_with_the_verdict_and_counts_by_status() {
        let results = crate::fixtures::results();
        let text = super::render(&results);
        let first = text.lines().next().unwrap();
        assert!(first.ends_with(&results.verdict.as_str().to_uppercase()), "{first}");
        assert!(text.contains(&format!("sent {}", results.sent())), "{text}");
        assert!(text.contains("latency high"), "{text}");
    }
}
