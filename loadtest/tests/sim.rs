//! The simulated target (`--stack sim`): no stack is started, so these run
//! in a second or two each, on virtual time.

use std::path::PathBuf;

use loadtest::run::sim::Profile;
use loadtest::run::{run, HarnessError, RunOptions, RunOutcome};

fn workspace_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("courier-sim-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn simulated(scenario: &str, out: &str) -> RunOptions {
    RunOptions {
        scenario: workspace_file(&format!("scenarios/{scenario}.toml")),
        out_dir: Some(scratch_dir(out)),
        stack: Some("sim".into()),
        ..RunOptions::default()
    }
}

/// The run met every objective; the message lists those it missed.
fn assert_passed(outcome: &RunOutcome) {
    let missed: Vec<_> = outcome.results.slo.iter().filter(|c| !c.pass).collect();
    assert!(outcome.passed, "{missed:?}");
}

#[tokio::test]
async fn a_simulated_run_repeats_figure_for_figure_and_says_it_is_simulated() {
    let first = run(simulated("smoke", "smoke-1")).await.expect("the simulation runs");
    let second = run(simulated("smoke", "smoke-2")).await.expect("the simulation runs");
    let (a, b) = (&first.results, &second.results);
    assert_passed(&first);
    assert_eq!(a.audit.accepted, a.offered.expected_messages);
    assert_eq!((a.audit.lost, a.audit.duplicated, a.audit.unexpected), (0, 0, 0));
    assert!(
        a.audit.mail_record_checked,
        "the SES model's record of what it accepted is audited"
    );
    // The same scenario and seed: the same figures.
    assert_eq!(a.latency_ms, b.latency_ms);
    assert_eq!(a.handling_ms, b.handling_ms);
    assert_eq!(a.timeseries, b.timeseries);
    assert_eq!(a.delivered_per_sec, b.delivered_per_sec);
    assert_eq!(
        a.total_secs, b.total_secs,
        "the run ends when its last message is final"
    );
    assert_eq!(a.aws_usage, b.aws_usage, "the same calls, billed the same");
    // Latency is virtual time, not zero: each call waited its answer time.
    let high = &a.latency_ms[&vocabulary::Priority::High];
    assert!(high.p50_ms > 10.0, "{high:?}");

    let sim = a.simulation.as_ref().expect("marked simulated");
    assert_eq!(sim.profile, "aws-typical");
    assert!(sim.virtual_secs > sim.wall_secs, "{sim:?}");
    assert_eq!(a.stack.target, "sim");
    // Priced from the modelled calls: SES's $0.10 per 1,000 and the rest.
    let cost = a.cost.as_ref().expect("the modelled calls are priced");
    let per_1000 = cost.per_1000_messages_usd.unwrap();
    assert!(per_1000 > 0.10 && per_1000 < 0.2, "{cost:?}");
    assert_eq!(a.aws_usage["SESv2.SendEmail"].recipients, a.sent());
    // Long polls run out between smoke's arrivals, and are billed as they are on a stack.
    let receives = &a.aws_usage["SQS.ReceiveMessage"];
    assert!(
        receives.empty_receives > 0 && receives.empty_receives < receives.calls,
        "{receives:?}"
    );
    let html = std::fs::read_to_string(&first.reports.html).unwrap();
    assert!(
        html.contains("SIMULATED: no stack ran"),
        "the report cannot be mistaken for a real run"
    );
    let summary = std::fs::read_to_string(&first.reports.markdown).unwrap();
    assert!(summary.contains("SIMULATED"));
}

#[tokio::test]
async fn an_ses_quota_in_simulation_paces_the_senders_to_it_and_keeps_reminders_first() {
    let outcome = run(simulated("ses-quota-priority", "ses-quota"))
        .await
        .expect("the simulation runs");
    let r = &outcome.results;
    assert_passed(&outcome);
    // The model refused nothing: the dispatcher read the quota and paced to it.
    assert_eq!(r.simulation.as_ref().unwrap().ses_throttles, 0);
    assert_eq!(r.fault_counts.get("ses_quota"), None, "{:?}", r.fault_counts);
    // The backlog drained at the quota, not faster: every message at 20/s.
    assert!(r.audit.accepted > 1_600, "{:?}", r.audit);
    assert!(r.total_secs > r.audit.accepted as f64 / 20.0, "{} s", r.total_secs);
}

#[tokio::test]
async fn ses_faults_and_poison_play_on_the_models_in_their_windows_with_nothing_lost() {
    let throttled = run(simulated("ses-throttle", "ses-throttle"))
        .await
        .expect("the simulation runs");
    let r = &throttled.results;
    assert_passed(&throttled);
    let window = r.faults.iter().find(|w| w.kind == "ses_throttle").expect("its window");
    assert_eq!((window.start_secs, window.end_secs), (10.0, Some(25.0)));
    let injected: u64 = r
        .fault_counts
        .iter()
        .filter(|(k, _)| k.starts_with("ses_throttle"))
        .map(|(_, n)| n)
        .sum();
    assert!(injected > 0, "{:?}", r.fault_counts);
    assert_eq!((r.audit.lost, r.audit.duplicated, r.errors()), (0, 0, 0));

    let poisoned = run(simulated("poison", "poison")).await.expect("the simulation runs");
    let audit = &poisoned.results.audit;
    assert!(poisoned.passed);
    assert!(
        audit.poison_injected > 0 && audit.dead_lettered == audit.poison_injected,
        "{audit:?}"
    );
}

#[tokio::test]
async fn a_calibrated_profile_comes_from_a_real_run_and_an_unmodelled_fault_is_refused_by_name() {
    let mut options = simulated("smoke", "calibrated");
    options.sim_profile = Some(Profile::Calibrated(workspace_file(
        "reports/baselines/smoke/run-1.json",
    )));
    let outcome = run(options).await.expect("the simulation runs");
    let sim = outcome.results.simulation.as_ref().unwrap();
    assert_eq!(sim.profile, "calibrated");
    assert!(sim
        .calibrated_from
        .as_deref()
        .is_some_and(|f| f.ends_with("run-1.json")));

    let error = run(simulated("smtp", "smtp")).await.err().expect("refused");
    assert!(
        matches!(error, HarnessError::NotSimulated(ref kind) if kind == "smtp_reply"),
        "{error}"
    );
    let error = "calibrated:".parse::<Profile>().unwrap_err();
    assert!(error.contains("aws-typical"), "{error}");
}

#[tokio::test]
async fn a_sweep_runs_each_value_simulated_and_finds_where_the_objectives_start_to_hold() {
    use loadtest::sweep::{sweep, Setting, SweepOptions};
    let out = scratch_dir("sweep");
    std::fs::create_dir_all(&out).unwrap();
    let options = SweepOptions {
        scenario: workspace_file("scenarios/smoke.toml"),
        setting: Setting::SesRate,
        values: vec![50.0, 5.0, 50.0],
        profile: Profile::AwsTypical,
        pricing: None,
        out_dir: out.clone(),
        jobs: 0,
    };
    let (swept, path) = sweep(options).await.expect("the sweep runs");
    let values: Vec<f64> = swept.points.iter().map(|p| p.value).collect();
    assert_eq!(values, vec![5.0, 50.0], "sorted, each value once");
    let (slow, fast) = (&swept.points[0], &swept.points[1]);
    // At 5 sends/s the smoke run's ~200 messages take far longer than at 50,
    // and low priority's p99 objective (20 s) no longer holds.
    assert!(slow.end_to_end_secs > 2.0 * fast.end_to_end_secs, "{slow:?} {fast:?}");
    assert!(
        !slow.passed && slow.failed.iter().any(|f| f.contains("low")),
        "{slow:?}"
    );
    assert!(fast.passed, "{fast:?}");
    assert_eq!(swept.least_passing().map(|p| p.value), Some(50.0));
    assert_eq!((fast.lost, fast.duplicated), (0, 0));
    // Each value's run has its own results, marked with what was changed.
    let point: reports::results::RunResults = reports::results::RunResults::load(&out.join(&slow.results)).unwrap();
    assert_eq!(point.scenario.overrides, vec!["ses_quota.max_send_rate = 5"]);
    assert!(point.simulation.is_some());
    let page = std::fs::read_to_string(path.with_file_name("sweep.html")).unwrap();
    assert!(
        page.contains("SIMULATED") && page.contains("<svg"),
        "the sweep's page has its chart"
    );
}

#[tokio::test]
async fn a_fault_set_to_start_after_the_traffic_never_fires_as_on_a_real_stack() {
    let mut options = simulated("smoke", "late-fault");
    // smoke's traffic lasts 10 s; the timeline is the real run's, so a
    // transient fault due at 30 s is dropped when the traffic ends.
    options.extra_faults = vec![r#"start_secs = 30, kind = "ses_reject", probability = 1.0"#.into()];
    let r = run(options).await.expect("the simulation runs").results;
    assert!(r.faults.is_empty(), "{:?}", r.faults);
    assert_eq!(r.fault_counts.get("ses_reject#0"), None, "{:?}", r.fault_counts);
    assert_eq!((r.audit.lost, r.errors()), (0, 0));
}

#[tokio::test]
async fn messages_sqs_delivers_twice_are_mailed_once() {
    let mut options = simulated("smoke", "duplicates");
    options.extra_faults = vec![r#"kind = "sqs_duplicate", probability = 0.3"#.into()];
    let r = run(options).await.expect("the simulation runs").results;
    let copies = r.fault_counts.get("sqs_duplicate#0").copied().unwrap_or(0);
    // About 30% of ~200 messages' receives made a second copy, shown within
    // the 10 s visibility timeout: most while the run went on, where the
    // senders' conditional claim found them final and deleted them unsent.
    assert!(copies > 30, "{:?}", r.fault_counts);
    assert!(
        r.audit.redeliveries_skipped > copies / 2,
        "{copies} copies; {:?}",
        r.audit
    );
    assert_eq!(r.audit.accepted, r.offered.expected_messages);
    assert_eq!(
        (r.audit.lost, r.audit.duplicated, r.audit.unexpected, r.errors()),
        (0, 0, 0, 0),
        "{:?}",
        r.audit
    );
    assert_eq!(r.sent(), r.audit.accepted);
}

#[tokio::test]
async fn a_fault_only_a_model_can_play_is_refused_on_a_real_stack_before_it_starts() {
    let options = RunOptions {
        scenario: workspace_file("scenarios/smoke.toml"),
        out_dir: Some(scratch_dir("duplicates-real")),
        stack: Some("local".into()),
        extra_faults: vec![r#"kind = "sqs_duplicate", probability = 0.1"#.into()],
        ..RunOptions::default()
    };
    let error = run(options).await.err().expect("refused").to_string();
    assert!(
        error.contains("sqs_duplicate") && error.contains("--stack sim"),
        "{error}"
    );
}

#[tokio::test]
async fn a_killed_engine_refuses_requests_while_down_and_resumes_its_batch_in_simulation() {
    let outcome = run(simulated("crash-resume", "crash-resume"))
        .await
        .expect("the simulation runs");
    let results = &outcome.results;
    assert_passed(&outcome);
    let audit = &results.audit;
    assert_eq!((audit.lost, audit.unexpected), (0, 0));
    // A send cut off by the crash may go again (at-least-once: its attempt's
    // outcome was lost); no message is ever sent by two copies.
    assert_eq!(audit.duplicated, audit.resent_after_interrupted_attempt, "{audit:?}");
    // The engine is down from 3 s to 8 s: the reminders offered meanwhile
    // are refused, as a crashed server refuses them (14 on a real stack too).
    let scenario = scenarios::Scenario::load(&workspace_file("scenarios/crash-resume.toml")).unwrap();
    let plan = scenarios::generate::generate(&scenario);
    let while_down = plan.arrivals.iter().filter(|a| (3.0..8.0).contains(&a.at_secs)).count();
    assert_eq!(
        results.offered.failed_requests, while_down as u64,
        "{:?}",
        results.offered
    );
    let batch = &results.batches[0];
    assert_eq!(batch.phase, "DONE");
    assert!(
        batch.resumed >= 1,
        "the restarted engine took the batch up again: {batch:?}"
    );
    assert_eq!(audit.count(vocabulary::SendStatus::Sent), audit.accepted);
}

#[tokio::test]
async fn crashed_sender_workers_restart_and_lose_nothing_in_simulation() {
    let outcome = run(simulated("worker-crash", "worker-crash"))
        .await
        .expect("the simulation runs");
    let results = &outcome.results;
    assert_passed(&outcome);
    let audit = &results.audit;
    assert_eq!(audit.accepted, results.offered.expected_messages);
    assert_eq!((audit.lost, audit.unexpected), (0, 0));
    let crash = results
        .faults
        .iter()
        .find(|f| f.kind == "kill_worker")
        .expect("the crash played");
    assert_eq!((crash.start_secs, crash.end_secs), (10.0, Some(15.0)));
}
