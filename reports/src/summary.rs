//! What a run did, in sentences and headline figures: the part of every report
//! a stakeholder reads first. HTML and Markdown both take their words from here.

use crate::results::RunResults;

/// Milliseconds as people read them: "85 ms", "1.8 s".
pub fn duration_ms(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.0} s", ms / 1000.0)
    } else if ms >= 1000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

/// A fault window's label for charts and tables, with how often it struck.
pub fn fault_label(results: &RunResults, kind: &str, detail: &str) -> String {
    let mut label = kind.replace('_', " ");
    if !detail.is_empty() {
        label.push_str(&format!(" ({detail})"));
    }
    if let Some(count) = injected(results, kind) {
        label.push_str(&format!(": {count} injected"));
    }
    label
}

/// How often faults of `kind` struck; counts are kept per activation (`ses_throttle#1`).
pub fn injected(results: &RunResults, kind: &str) -> Option<u64> {
    let counts: Vec<u64> = results
        .fault_counts
        .iter()
        .filter(|(name, _)| name.split('#').next() == Some(kind))
        .map(|(_, count)| *count)
        .collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

/// When the queues held the most, and how many.
pub fn peak_queue_depth(results: &RunResults) -> Option<(f64, u64)> {
    results
        .timeseries
        .iter()
        .map(|s| {
            let depth: u64 = s
                .queue_depths
                .iter()
                .filter(|(queue, _)| !queue.is_dead_letter())
                .map(|(_, d)| d.total())
                .sum();
            (s.t_secs, depth)
        })
        .max_by_key(|(_, depth)| *depth)
}

/// Which process used the most CPU, and what the others used, per message.
pub fn cpu_sentence(results: &RunResults) -> Option<String> {
    let cpu = &results.cpu;
    let ranked = cpu.busiest_first();
    let (&(busiest, figures), others) = ranked.split_first()?;
    let per_message = |p: &crate::results::ProcessCpu| {
        p.cpu_ms_per_message
            .map_or(String::new(), |ms| format!("{ms:.1} ms per message, "))
    };
    let others: Vec<String> = others
        .iter()
        .map(|(name, p)| format!("{name} {}{:.0}%", per_message(p), p.machine_pct))
        .collect();
    let mut line = format!(
        "{busiest} used the most CPU: {}{:.0}% of the machine's {} cores over traffic and drain",
        per_message(figures),
        figures.machine_pct,
        cpu.cores
    );
    if !others.is_empty() {
        line.push_str(&format!("; then {}", others.join(", ")));
    }
    line.push('.');
    Some(line)
}

/// What a simulated run is, said before anything else it shows; `None` for a real run.
pub fn simulated_banner(results: &RunResults) -> Option<String> {
    let sim = results.simulation.as_ref()?;
    let profile = match &sim.calibrated_from {
        Some(from) => format!("answer times calibrated from {from}"),
        None => format!("`{}` answer times", sim.profile),
    };
    Some(format!(
        "SIMULATED: no stack ran. The engine's own code ran on virtual time against models of SQS, DynamoDB, S3 and SES ({profile}); {:.0} s simulated in {:.1} s. Engine CPU is not modelled; nothing was mailed; the cost prices the modelled calls.",
        sim.virtual_secs, sim.wall_secs
    ))
}

/// Dollars, with enough digits to tell small amounts apart.
pub fn usd(amount: f64) -> String {
    // -0.0 and rounding dust read as nothing.
    let amount = if amount.abs() < 5e-7 { 0.0 } else { amount };
    match amount.abs() {
        a if a >= 100.0 => format!("${amount:.0}"),
        a if a >= 1.0 => format!("${amount:.2}"),
        a if a >= 0.01 => format!("${amount:.4}"),
        _ => format!("${amount:.6}"),
    }
}

/// What the run would cost on AWS, and which service most of it goes to.
pub fn cost_sentence(results: &RunResults) -> Option<String> {
    let cost = results.cost.as_ref()?;
    let mut line = format!(
        "On AWS ({}, prices as of {}) this run's calls would cost {}",
        cost.price_card,
        cost.as_of,
        usd(cost.total_usd)
    );
    if let Some(per_1000) = cost.per_1000_messages_usd {
        line.push_str(&format!(", {} per 1,000 messages sent", usd(per_1000)));
    }
    let mut services: Vec<(&String, &f64)> = cost.by_service_usd.iter().collect();
    services.sort_by(|a, b| b.1.total_cmp(a.1));
    if let Some((service, amount)) = services.first().filter(|_| cost.total_usd > 0.0) {
        line.push_str(&format!(
            "; {service} is {:.0}% of it",
            100.0 * **amount / cost.total_usd
        ));
    }
    line.push('.');
    Some(line)
}

/// What each message took from DynamoDB and SQS: the figures a design
/// changes (an index on a changing key, a smaller receive batch).
pub fn usage_sentence(results: &RunResults) -> Option<String> {
    let sent = results.sent();
    if sent == 0 || results.aws_usage.is_empty() {
        return None;
    }
    let mut table = vocabulary::Usage::default();
    let mut queue = vocabulary::Usage::default();
    for (operation, usage) in &results.aws_usage {
        match vocabulary::AwsService::of_label(operation) {
            Some(vocabulary::AwsService::DynamoDb) => table.add(usage),
            Some(vocabulary::AwsService::Sqs) => queue.add(usage),
            _ => {}
        }
    }
    let per = |x: f64| x / sent as f64;
    let units = table.write_units + table.read_units;
    let index_share = if units > 0.0 {
        100.0 * table.index_units / units
    } else {
        0.0
    };
    Some(format!(
        "Per message sent: {:.1} DynamoDB write units and {:.1} read units ({index_share:.0}% of them on the table's indexes), and {:.1} SQS requests ({} receives in all came back empty).",
        per(table.write_units),
        per(table.read_units),
        per(queue.requests as f64),
        queue.empty_receives
    ))
}

/// The story of the run in a few sentences, verdict first.
pub fn narrative(results: &RunResults) -> Vec<String> {
    let mut lines = Vec::new();
    let failed: Vec<&str> = results
        .slo
        .iter()
        .filter(|v| !v.pass)
        .map(|v| v.name.as_str())
        .collect();
    lines.push(if failed.is_empty() {
        format!("Passed: all {} objectives were met.", results.slo.len())
    } else {
        format!(
            "Failed: {} of {} objectives were missed ({}).",
            failed.len(),
            results.slo.len(),
            failed.join(", ")
        )
    });
    let audit = &results.audit;
    lines.push(format!(
        "{} messages were accepted from {} requests ({} campaign uploads, {} notifications) over {:.0} s of traffic; {} were sent, {} ended in ERROR and {} were lost.",
        audit.accepted,
        results.offered.requests,
        results.offered.campaigns,
        results.offered.notifications,
        results.traffic_secs,
        results.sent(),
        results.errors(),
        audit.lost
    ));
    if results.faults.is_empty() {
        lines.push("No faults were injected.".into());
    } else {
        let faults: Vec<String> = results
            .faults
            .iter()
            .map(|w| {
                format!(
                    "{} from {:.0} s to {:.0} s",
                    fault_label(results, &w.kind, &w.detail),
                    w.start_secs,
                    w.end_secs.unwrap_or(results.traffic_secs)
                )
            })
            .collect();
        lines.push(format!("Faults injected: {}.", faults.join("; ")));
    }
    let mut delivery = format!("Delivered {:.1} messages per second", results.delivered_per_sec);
    if let (Some(fraction), Some(capacity)) = (results.fraction_of_ceiling, &results.capacity) {
        delivery.push_str(&format!(
            ", {:.0}% of the {:.0} msg/s this pipeline carries on this stack (measured in the same run)",
            fraction * 100.0,
            capacity.ceiling_msgs_per_sec
        ));
        if let Some(drift) = capacity.unsteady_drift() {
            delivery.push_str(&format!(
                ", though its knee's step, run again after the ladder, delivered {} (Capacity says why)",
                signed_pct(Some(drift.throughput_ratio))
            ));
        }
    }
    if let Some((at, depth)) = peak_queue_depth(results) {
        delivery.push_str(&format!("; the queues peaked at {depth} messages at {at:.0} s"));
    }
    delivery.push('.');
    lines.push(delivery);
    // Priority orders as it is served: high first.
    let latency: Vec<String> = results
        .latency_ms
        .iter()
        .map(|(priority, p)| format!("{priority} {} (p99 {})", duration_ms(p.p50_ms), duration_ms(p.p99_ms)))
        .collect();
    if !latency.is_empty() {
        lines.push(format!("Median time from request to sent: {}.", latency.join(", ")));
    }
    if let Some(line) = cpu_sentence(results) {
        lines.push(line);
    }
    if let Some(line) = cost_sentence(results) {
        lines.push(line);
    }
    if let Some(line) = partition_sentence(results) {
        lines.push(line);
    }
    if audit.dead_lettered > 0 || audit.poison_injected > 0 {
        lines.push(format!(
            "{} messages were dead-lettered; {} undecodable messages were injected.",
            audit.dead_lettered, audit.poison_injected
        ));
    }
    lines.push(if audit.conserved() {
        if audit.mail_record_checked {
            "Every accepted message was accounted for, and no one was mailed twice or unasked.".into()
        } else {
            "Every accepted message was accounted for (no provider mail record to check sends against).".into()
        }
    } else {
        format!(
            "Conservation broken: {} lost, {} duplicate sends, {} unexpected sends.",
            audit.lost, audit.duplicated, audit.unexpected
        )
    });
    lines
}

/// In a simulated run, the DynamoDB index partitions that throttled writes:
/// the hottest first, and when the first write was throttled (or that none did).
pub fn partition_sentence(results: &RunResults) -> Option<String> {
    let sim = results.simulation.as_ref()?;
    let Some((first, at_secs)) = sim.first_throttled.as_ref() else {
        return Some(
            "DynamoDB throttled no write: every index partition stayed within its 1,000 write units a second.".into(),
        );
    };
    let total: u64 = sim.partition_throttles.values().sum();
    let mut hottest: Vec<(&String, &u64)> = sim.partition_throttles.iter().collect();
    hottest.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let named: Vec<String> = hottest
        .iter()
        .take(3)
        .map(|(key, n)| format!("{key} {}", crate::svg::format_count(**n as f64)))
        .collect();
    Some(format!(
        "DynamoDB throttled {} writes on hot index partitions (each key value takes 1,000 write units a second; the writes waited): {}. The first was on {first} at {}.",
        crate::svg::format_count(total as f64),
        named.join(", "),
        duration_ms(at_secs * 1000.0)
    ))
}

/// What a capacity measurement found, in words: the ceiling and where it is
/// reached, the busiest process there, what the USL says, and (in a run) how
/// much of the ceiling the run used.
pub fn capacity_sentence(capacity: &crate::results::Capacity, delivered: Option<f64>) -> String {
    let mut text = format!(
        "This pipeline sustains about {:.0} messages per second on this stack ({}) once saturated (the median of the steps from {} messages in flight on; best step {:.0}); {}.",
        capacity.ceiling_msgs_per_sec,
        capacity.mailer,
        capacity.knee_concurrency,
        capacity.best_step_msgs_per_sec,
        capacity.stopped
    );
    let at_ceiling = capacity.steps.iter().find(|s| s.in_flight == capacity.knee_concurrency);
    if let Some((name, p)) = at_ceiling.and_then(|s| s.cpu.busiest()) {
        let per_message = p
            .cpu_ms_per_message
            .map_or(String::new(), |ms| format!(", {ms:.2} ms per message"));
        text.push_str(&format!(
            " At the knee {name} used the most CPU ({:.0}% of the machine{per_message}).",
            p.machine_pct
        ));
    }
    if let Some(usl) = capacity.usl {
        let measured = capacity
            .steps
            .iter()
            .map(|s| f64::from(s.in_flight))
            .fold(0.0, f64::max);
        let shape = match usl.peak_concurrency() {
            Some(n) if n <= 2.0 * measured => format!("throughput peaks near {n:.0} in flight and falls beyond"),
            _ => format!(
                "throughput levels off towards {:.0} msg/s rather than falling within the range measured",
                usl.max_throughput()
            ),
        };
        text.push_str(&format!(
            " Fitted Universal Scalability Law: contention σ = {:.3}, coherency κ = {:.5}, λ = {:.1} msg/s per message in flight (R² = {:.2}); {shape}.",
            usl.sigma, usl.kappa, usl.lambda, usl.r_squared
        ));
    }
    if let Some(sentence) = drift_sentence(capacity) {
        text.push(' ');
        text.push_str(&sentence);
    }
    if let Some(delivered) = delivered.filter(|_| capacity.ceiling_msgs_per_sec > 0.0) {
        text.push_str(&format!(
            " This run delivered {delivered:.1} msg/s, {:.0}% of it.",
            100.0 * delivered / capacity.ceiling_msgs_per_sec
        ));
    }
    text
}

/// The knee's step run again after the ladder, in words: how far it moved
/// from its first run, and why (see [`crate::drift`]).
pub fn drift_sentence(capacity: &crate::results::Capacity) -> Option<String> {
    use crate::drift::DriftCause;
    let drift = capacity.drift()?;
    let opening = format!(
        "Run again after the ladder, the knee's step ({} in flight) delivered {:.0} msg/s against {:.0} the first time ({})",
        drift.in_flight,
        drift.again_msgs_per_sec,
        drift.first_msgs_per_sec,
        signed_pct(Some(drift.throughput_ratio))
    );
    let (calls, cpu, share) = (
        signed_pct(drift.calls_ratio),
        signed_pct(drift.cpu_per_message_ratio),
        signed_pct(drift.machine_share_ratio),
    );
    let slower = drift.throughput_ratio < 1.0;
    let why = match drift.cause {
        DriftCause::Steady => format!("within {:.0}%: the machine held steady through the ladder", crate::drift::STEADY * 100.0),
        DriftCause::CallsPerMessage => {
            format!("AWS calls per message {calls}: the pipeline did different work, not the machine")
        }
        DriftCause::CpuPerMessage => format!(
            "the same calls per message ({calls}) at CPU per message {cpu}: the machine itself ran {}, so the ceiling is uncertain by about that much",
            if slower { "slower" } else { "quicker" }
        ),
        DriftCause::MachineShare => format!(
            "the same CPU per message ({cpu}) on a share of the machine {share}: something outside the stack {} CPU, so the ceiling is uncertain by about that much",
            if slower { "took" } else { "gave back" }
        ),
        DriftCause::Unexplained => format!(
            "calls per message {calls}, CPU per message {cpu}, the stack's share of the machine {share}: none moved enough to say why"
        ),
    };
    Some(format!("{opening}; {why}."))
}

/// A ratio of a later figure to an earlier one as a signed change: "+29%", "−20%", "±0%".
fn signed_pct(ratio: Option<f64>) -> String {
    let Some(ratio) = ratio else {
        return "not measured".to_string();
    };
    let pct = ((ratio - 1.0) * 100.0).round();
    if pct > 0.0 {
        format!("+{pct:.0}%")
    } else if pct < 0.0 {
        format!("−{:.0}%", -pct)
    } else {
        "±0%".to_string()
    }
}

/// What a sweep found, for every renderer: where the objectives start to
/// hold, and what more of the setting buys beyond that.
pub fn sweep_sentences(sweep: &crate::results::Sweep) -> Vec<String> {
    use crate::svg::format_number as n;
    let (Some(first), Some(last)) = (sweep.points.first(), sweep.points.last()) else {
        return vec!["The sweep ran no values.".into()];
    };
    let setting = &sweep.setting;
    let mut lines = vec![format!(
        "{setting} from {} to {}: {} simulated runs of {} ({} answer times), in {:.0} s of wall time.",
        n(first.value),
        n(last.value),
        sweep.points.len(),
        sweep.scenario.name,
        sweep.profile,
        sweep.wall_secs
    )];
    let point_figures = |p: &crate::results::SweepPoint| {
        let mut parts = vec![format!("end to end {}", duration_ms(p.end_to_end_secs * 1000.0))];
        if let Some(p99) = p.high_p99_ms {
            parts.push(format!("reminders' p99 {}", duration_ms(p99)));
        }
        if let Some(per_1000) = p.cost_per_1000_usd {
            parts.push(format!("{} per 1,000 messages", usd(per_1000)));
        }
        parts.join(", ")
    };
    match sweep.least_passing() {
        None => lines.push(format!(
            "No value tried met every objective; at {setting} = {} these failed: {}.",
            n(last.value),
            last.failed.join(", ")
        )),
        Some(least) => {
            let passing: Vec<&crate::results::SweepPoint> = sweep.points.iter().filter(|p| p.passed).collect();
            let from_on = sweep.points.iter().skip_while(|p| !p.passed).all(|p| p.passed);
            let held = if from_on {
                format!("from {setting} = {} on", n(least.value))
            } else {
                let values: Vec<String> = passing.iter().map(|p| n(p.value)).collect();
                format!("only at {setting} = {}", values.join(", "))
            };
            lines.push(format!(
                "Every objective holds {held} (at {}: {}).",
                n(least.value),
                point_figures(least)
            ));
            if least.value != last.value {
                lines.push(format!("At {}: {}.", n(last.value), point_figures(last)));
            }
        }
    }
    lines
}
