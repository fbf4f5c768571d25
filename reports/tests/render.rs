//! Rendering from a real results file: every section is there, every chart is
//! well-formed SVG, nothing is loaded from elsewhere, and the Markdown carries
//! the verdict and the objectives.

use std::path::Path;

use reports::compare::{compare, Tolerances};
use reports::results::RunResults;

fn fixture(name: &str) -> RunResults {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    RunResults::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// Every `<svg …>…</svg>` in the page, in order.
fn svgs(html: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<svg") {
        let end = rest[start..].find("</svg>").expect("every svg is closed") + start + "</svg>".len();
        found.push(&rest[start..end]);
        rest = &rest[end..];
    }
    found
}

#[test]
fn the_html_report_has_every_section_verdict_first() {
    let results = fixture("ses-throttle.results.json");
    let html = reports::html::render(&results, None);
    let sections = [
        "id=\"verdict\"",
        "id=\"slo\"",
        "id=\"throughput\"",
        "id=\"queues\"",
        "id=\"latency\"",
        "id=\"faults\"",
        "id=\"outcomes\"",
        "id=\"audit\"",
        "id=\"stack\"",
        "id=\"machine\"",
    ];
    let mut last = 0;
    for section in sections {
        let at = html.find(section).unwrap_or_else(|| panic!("{section} missing"));
        assert!(at > last, "{section} out of order");
        last = at;
    }
    let verdict = if results.passed() { "PASS" } else { "FAIL" };
    assert!(html.contains(&format!("<span class=\"badge\">{verdict}</span>")));
    for v in &results.slo {
        assert!(
            html.contains(&reports::svg::escape(&v.name)),
            "objective {} shown",
            v.name
        );
    }
    for version in results.stack.versions.values() {
        assert!(html.contains(version.as_str()), "stack version {version} shown");
    }
}

#[test]
fn every_chart_is_well_formed_svg_with_a_title_and_a_viewbox() {
    let results = fixture("ses-throttle.results.json");
    let html = reports::html::render(&results, None);
    let charts = svgs(&html);
    assert_eq!(
        charts.len(),
        5,
        "throughput, sends by priority, queues, latency bars, latency over time"
    );
    for svg in charts {
        let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("invalid SVG ({e}): {svg:.200}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert_eq!(root.tag_name().namespace(), Some("http://www.w3.org/2000/svg"));
        assert!(root.attribute("viewBox").is_some());
        assert!(
            root.children().any(|n| n.has_tag_name("title")),
            "a chart says what it is"
        );
        let drawn = root
            .descendants()
            .filter(|n| n.has_tag_name("polyline") || n.has_tag_name("rect"))
            .count();
        assert!(drawn > 0, "a chart draws something");
    }
}

#[test]
fn the_fault_windows_are_drawn_over_the_time_charts() {
    let results = fixture("ses-throttle.results.json");
    assert!(!results.faults.is_empty(), "the fixture is a run with faults");
    let html = reports::html::render(&results, None);
    let bands = html.matches("<g class=\"fault\">").count();
    // Four time charts, each with every window.
    assert_eq!(bands, 4 * results.faults.len());
}

#[test]
fn the_send_budget_is_drawn_beside_each_prioritys_sends_when_the_run_had_one() {
    let mut results = fixture("ses-throttle.results.json");
    let html = reports::html::render(&results, None);
    assert!(html.contains("high sent/s") && html.contains("low sent/s"));
    assert!(!html.contains("send budget/s"), "no budget recorded, none drawn");
    for sample in &mut results.timeseries {
        sample.budget_per_sec = Some(13.6);
    }
    let html = reports::html::render(&results, None);
    assert!(html.contains("send budget/s"));
}

#[test]
fn the_report_loads_nothing_from_anywhere_else() {
    let html = reports::html::render(&fixture("ses-throttle.results.json"), None);
    let without_namespace = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for reference in ["http://", "https://", "src=", "<link", "<script", "url("] {
        assert!(!without_namespace.contains(reference), "found {reference}");
    }
    assert!(html.contains("Content-Security-Policy"));
}

#[test]
fn the_markdown_summary_carries_verdict_objectives_and_the_comparison() {
    let results = fixture("ses-throttle.results.json");
    let comparison = compare(
        std::slice::from_ref(&results),
        std::slice::from_ref(&results),
        &Tolerances::default(),
    )
    .unwrap();
    let markdown = reports::markdown::render(&results, Some(&comparison));
    let first_line = markdown.lines().next().unwrap();
    assert!(first_line.starts_with("## ") && first_line.contains(&results.scenario.name));
    assert!(markdown.contains("| Objective | Target | Measured |"));
    assert_eq!(
        markdown
            .lines()
            .filter(|l| l.starts_with("| ") && (l.ends_with("✅ |") || l.ends_with("❌ |")))
            .count(),
        results.slo.len()
    );
    assert!(markdown.contains("### Compared with baseline: ✅ no regression"));
    assert!(markdown.len() < 8 * 1024, "fits a job summary at a glance");
}

#[test]
fn a_run_that_failed_says_so_first_and_names_the_missed_objective() {
    let mut results = fixture("ses-throttle.results.json");
    results.verdict = vocabulary::Verdict::Fail;
    results.slo[0].pass = false;
    let name = results.slo[0].name.clone();
    let html = reports::html::render(&results, None);
    assert!(html.contains("<span class=\"badge\">FAIL</span>"));
    let verdict_end = html.find("id=\"slo\"").unwrap();
    assert!(
        html[..verdict_end].contains(&reports::svg::escape(&name)),
        "the narrative names it"
    );
    assert!(reports::markdown::render(&results, None).starts_with("## ❌"));
}

#[test]
fn where_the_cpu_went_is_shown_and_the_busiest_process_is_named() {
    use reports::results::ProcessCpu;
    let mut results = fixture("ses-throttle.results.json");
    assert!(
        !reports::html::render(&results, None).contains("id=\"cpu\""),
        "a run from before CPU was measured has no CPU section"
    );
    let process = |cpu_ms: f64, per_message: f64, pct: f64| ProcessCpu {
        cpu_ms,
        cpu_ms_per_message: Some(per_message),
        machine_pct: pct,
        peak_rss_mib: 250.0,
    };
    results.cpu.window_secs = 40.0;
    results.cpu.cores = 2;
    results
        .cpu
        .by_process
        .insert("dynamodb-local".into(), process(30_000.0, 4.2, 37.5));
    results
        .cpu
        .by_process
        .insert("moto".into(), process(12_000.0, 1.7, 15.0));
    let html = reports::html::render(&results, None);
    assert!(html.contains("id=\"cpu\""), "a CPU section");
    assert!(html.contains("4.20 ms"), "the busiest process's CPU per message");
    let narrative = reports::summary::narrative(&results).join(" ");
    assert!(
        narrative.contains("dynamodb-local used the most CPU: 4.2 ms per message, 38% of the machine's 2 cores"),
        "{narrative}"
    );
    let svg_count = svgs(&html).len();
    assert!(svg_count >= 5, "the CPU bars are one more chart: {svg_count}");
}

#[test]
fn a_run_measured_against_its_capacity_shows_the_curve_the_fit_and_the_fraction() {
    use reports::results::{Capacity, CapacityStep, CpuUse, ProcessCpu, UslFit};
    let mut results = fixture("ses-throttle.results.json");
    assert!(!reports::html::render(&results, None).contains("id=\"capacity\""));
    let usl = UslFit {
        sigma: 0.05,
        kappa: 0.0004,
        lambda: 60.0,
        r_squared: 0.97,
    };
    let step = |workers: usize, concurrency: usize| {
        let in_flight = (workers * concurrency.min(10)) as u32;
        let rate = usl.throughput_at(f64::from(in_flight));
        let mut cpu = CpuUse {
            window_secs: 10.0,
            cores: 2,
            ..CpuUse::default()
        };
        let dynamo = ProcessCpu {
            cpu_ms: 3000.0,
            cpu_ms_per_message: Some(3000.0 / (rate * 10.0)),
            machine_pct: 15.0,
            peak_rss_mib: 9.0,
        };
        cpu.by_process.insert("dynoxide".into(), dynamo);
        CapacityStep {
            workers,
            concurrency,
            in_flight,
            sent: (rate * 10.0) as u64,
            delivered_per_sec: rate,
            handling_mean_ms: 1000.0 * f64::from(in_flight) / rate,
            handling_p99_ms: 3000.0 * f64::from(in_flight) / rate,
            cpu,
            // Shorter receive batches at more workers: more SQS calls per message.
            calls_per_message: [
                ("SQS.ReceiveMessage".to_string(), 0.1 * workers as f64),
                ("SQS.DeleteMessageBatch".to_string(), 0.1 * workers as f64),
                ("DynamoDB.UpdateItem".to_string(), 2.0),
            ]
            .into(),
        }
    };
    let steps: Vec<_> = [(1, 1), (1, 5), (2, 10), (4, 10), (8, 10), (16, 10)]
        .into_iter()
        .map(|(w, c)| step(w, c))
        .collect();
    let ceiling = steps.iter().map(|s| s.delivered_per_sec).fold(0.0, f64::max);
    // The knee's step (4 × 10) again after the ladder, on a machine a fifth
    // slower: the same calls, a quarter more CPU per message.
    let mut again = steps[3].clone();
    again.delivered_per_sec *= 0.8;
    for process in again.cpu.by_process.values_mut() {
        process.cpu_ms_per_message = process.cpu_ms_per_message.map(|ms| ms / 0.8);
    }
    results.capacity = Some(Capacity {
        ceiling_msgs_per_sec: ceiling,
        best_step_msgs_per_sec: ceiling,
        knee_concurrency: 40,
        stopped: "throughput stopped growing".into(),
        mailer: results.stack.mailer,
        step_secs: 10.0,
        steps,
        usl: Some(usl),
        recheck: Some(again),
    });
    results.fraction_of_ceiling = Some(results.delivered_per_sec / ceiling);

    let html = reports::html::render(&results, None);
    assert!(html.contains("id=\"capacity\""), "a capacity section");
    assert!(
        html.contains("id=\"chart-capacity\""),
        "the throughput–concurrency curve"
    );
    assert!(
        html.contains("USL model"),
        "the fitted model is drawn beside the points"
    );
    assert!(html.contains("σ = 0.050"), "the fit's coefficients are given");
    let narrative = reports::summary::narrative(&results).join(" ");
    let percent = format!("{:.0}%", 100.0 * results.delivered_per_sec / ceiling);
    assert!(
        narrative.contains(&format!("{percent} of the {ceiling:.0} msg/s this pipeline carries")),
        "{narrative}"
    );
    assert!(
        narrative.contains("though its knee's step, run again after the ladder, delivered −20% (Capacity says why)"),
        "the fraction is read with the drift beside it: {narrative}"
    );
    let own_page = reports::html::render_capacity(results.capacity.as_ref().unwrap(), "capacity");
    assert!(
        own_page.contains("throughput peaks near 49 in flight"),
        "√(0.95/0.0004) ≈ 49"
    );
    let terminal = reports::text::capacity(results.capacity.as_ref().unwrap());
    assert!(
        terminal.contains("16×10") && terminal.contains("dynoxide"),
        "{terminal}"
    );
    assert!(terminal.contains("sustains about"), "{terminal}");
    assert!(
        terminal.contains("4×10 again") && own_page.contains("4 × 10, again"),
        "the knee's step run again is a row of its own: {terminal}"
    );
    assert!(
        own_page.contains("(−20%)") && own_page.contains("CPU per message +25%: the machine itself ran slower"),
        "and the sentence says how far it moved and why: {terminal}"
    );
    assert!(
        terminal.contains("3.20/2.00") && own_page.contains("3.20 / 2.00"),
        "16 workers: 1.6 receives and 1.6 deletes, 2 updates per message: {terminal}"
    );
}

#[test]
fn a_simulated_run_says_which_partition_throttled_first_or_that_none_did() {
    let mut results = fixture("ses-throttle.results.json");
    results.simulation = Some(reports::results::Simulation {
        profile: "aws-typical".into(),
        calibrated_from: None,
        engine_cpu_ms_per_call: None,
        virtual_secs: 100.0,
        wall_secs: 1.0,
        ses_throttles: 0,
        partition_throttles: Default::default(),
        first_throttled: None,
    });
    let markdown = reports::markdown::render(&results, None);
    assert!(markdown.contains("DynamoDB throttled no write"), "{markdown}");

    let simulation = results.simulation.as_mut().unwrap();
    simulation.partition_throttles.insert("batch_index b1".into(), 1_200);
    simulation.first_throttled = Some(("batch_index b1".into(), 631.0));
    let markdown = reports::markdown::render(&results, None);
    assert!(markdown.contains("The first was on batch_index b1 at"), "{markdown}");
    assert!(!markdown.contains("throttled no write"));
}
