//! The capacity ladder on the local stack. A test binary of its own, so no
//! other test shares the machine while it compares throughput between steps.

use std::path::PathBuf;

use loadtest::capacity::{measure, Ladder};

fn workspace_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capacity_ladder_climbs_with_concurrency_and_records_the_curve_and_the_cpu() {
    let stack = localstack::Stack::start(localstack::StackOptions::default())
        .await
        .expect("the local stack starts");
    let scenario = scenarios::Scenario::load(&workspace_file("scenarios/smoke.toml")).unwrap();
    // A short ladder: one message at a time, then five, then twenty (three
    // concurrencies: the fewest the USL is fitted to).
    let ladder = Ladder {
        steps: vec![(1, 1), (1, 5), (2, 10)],
        warmup: std::time::Duration::from_secs(1),
        window: std::time::Duration::from_secs(3),
        recheck: true,
    };
    let capacity = measure(&scenario, "test-cap", &stack, &ladder)
        .await
        .expect("the ladder runs");
    let rates: Vec<f64> = capacity.steps.iter().map(|s| s.delivered_per_sec).collect();
    let in_flight: Vec<f64> = capacity
        .steps
        .iter()
        .map(|s| s.delivered_per_sec * s.handling_mean_ms / 1000.0)
        .collect();
    assert_eq!(capacity.steps.len(), 3, "{rates:?}");
    assert!(capacity.steps.iter().all(|s| s.sent > 0), "every step sent: {rates:?}");
    // The ladder really raised the concurrency: by Little's law the messages
    // in handling (delivered/s × mean handling time) grow with each step.
    // Throughput itself is not compared here: with the debug build the
    // harness's own CPU is the bottleneck, so twenty in flight carried
    // 1.15–1.5× what one did, depending on what else shared the two cores.
    assert!(in_flight[0] < 1.5, "one at a time: {in_flight:?}");
    assert!(in_flight[2] > 2.5 * in_flight[0], "{in_flight:?}");
    assert!(in_flight[1] > in_flight[0], "{in_flight:?}");
    assert_eq!(
        capacity.best_step_msgs_per_sec,
        rates.iter().copied().fold(0.0, f64::max)
    );
    assert!(
        capacity.ceiling_msgs_per_sec > rates[0] && capacity.ceiling_msgs_per_sec <= capacity.best_step_msgs_per_sec
    );
    assert!(capacity.usl.is_some(), "three steps are enough for a fit");
    // The knee's step ran once more, so the report can say whether the
    // machine held steady; the drift's cause is the machine's to decide.
    let again = capacity.recheck.as_ref().expect("the knee's step was run again");
    assert_eq!(again.in_flight, capacity.knee_concurrency);
    assert!(
        again.sent > 0 && again.cpu.by_process.contains_key("dynoxide"),
        "{again:?}"
    );
    let drift = capacity.drift().expect("the two runs of the knee's step compare");
    assert_eq!(
        drift.first_msgs_per_sec,
        capacity
            .steps
            .iter()
            .find(|s| s.in_flight == again.in_flight)
            .unwrap()
            .delivered_per_sec
    );
    let at_one = &capacity.steps[0];
    assert!(at_one.handling_mean_ms > 0.0 && at_one.handling_p99_ms >= at_one.handling_mean_ms);
    // Where the CPU went, per step: the engine apart from the harness, and the emulators.
    let cpu = &capacity.steps[2].cpu.by_process;
    assert!(cpu[loadtest::cpu::ENGINE].cpu_ms > 0.0, "{cpu:?}");
    assert!(cpu.contains_key(loadtest::cpu::HARNESS), "{cpu:?}");
    assert!(
        cpu.contains_key("dynoxide") && cpu.contains_key("localstack"),
        "{cpu:?}"
    );
}
