//! Whole load runs against the local stack each run starts for itself.

use std::path::PathBuf;
use std::process::Command;

use loadtest::run::{run, RunOptions, RunOutcome};

fn workspace_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("courier-loadtest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs a library scenario into a scratch folder and checks that every SLO passed.
async fn passing_run(name: &str) -> RunOutcome {
    let outcome = run(RunOptions {
        scenario: workspace_file(&format!("scenarios/{name}.toml")),
        out_dir: Some(scratch_dir(name)),
        ..RunOptions::default()
    })
    .await
    .expect("the harness runs");
    let failed: Vec<_> = outcome.results.slo.iter().filter(|v| !v.pass).collect();
    assert!(outcome.passed, "SLOs failed: {failed:?}");
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smoke_scenario_passes_with_every_accepted_message_sent_exactly_once() {
    let out = scratch_dir("smoke");
    let outcome = run(RunOptions {
        scenario: workspace_file("scenarios/smoke.toml"),
        out_dir: Some(out.clone()),
        ..RunOptions::default()
    })
    .await
    .expect("the harness runs");
    let r = &outcome.results;
    let failed: Vec<_> = r.slo.iter().filter(|v| !v.pass).collect();
    assert!(outcome.passed, "SLOs failed: {failed:?}");

    // Conservation: what the plan offered was accepted, and every accepted message was mailed once.
    assert_eq!(
        r.audit.accepted, r.offered.expected_messages,
        "the API accepted what the plan expected"
    );
    assert_eq!(r.audit.records_found, r.audit.accepted);
    assert_eq!(r.audit.count(vocabulary::SendStatus::Sent), r.audit.accepted);
    assert!(
        r.audit.mail_record_checked,
        "the emulator's sent-mail record was audited"
    );
    assert_eq!((r.audit.lost, r.audit.duplicated, r.audit.unexpected), (0, 0, 0));
    assert!(
        r.offered.rejected_rows > 0 && r.offered.duplicate_rows > 0,
        "the campaign's bad rows were offered"
    );

    assert!(r.check_stack.iter().all(|c| c.pass), "{:?}", r.check_stack);
    assert!(r.timeseries.len() >= 5, "sampled through the run");
    // Where the CPU went: the engine and the harness apart, and every emulator of the local stack.
    let cpu = &r.cpu.by_process;
    for part in [loadtest::cpu::ENGINE, loadtest::cpu::HARNESS] {
        let used = &cpu[part];
        assert!(
            used.cpu_ms > 0.0 && used.cpu_ms_per_message.is_some(),
            "{part}: {cpu:?}"
        );
    }
    assert!(cpu.len() >= 3, "the emulators are measured too: {cpu:?}");
    assert!(cpu.values().all(|p| p.peak_rss_mib > 0.0), "{cpu:?}");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&outcome.results_path).unwrap()).unwrap();
    assert_eq!(written["schema_version"], 1);
    assert_eq!(written["verdict"], "pass");
    assert!(out.join("goose-report.html").exists(), "goose's own report is kept");

    // The stack's speed and the senders' handling time are recorded for the gate.
    let reference = r.stack_reference_ms.expect("stack answer time measured");
    assert!(reference > 0.0 && reference < 5_000.0, "{reference}");
    assert_eq!(
        r.handling_ms.all.map(|p| p.count),
        Some(r.audit.accepted),
        "one handling time per message sent"
    );
    // What it would cost on AWS, from what each call consumed as the stack reported it.
    let usage = |op: vocabulary::AwsOperation| r.aws_usage.get(op.as_str()).copied().unwrap_or_default();
    let sends = usage(vocabulary::AwsOperation::Sesv2SendEmail);
    assert_eq!(sends.recipients, r.sent(), "one recipient billed per email sent");
    let claims = usage(vocabulary::AwsOperation::DynamoDbUpdateItem);
    assert!(
        claims.write_units >= 2.0 * r.sent() as f64 && claims.index_units > 0.0,
        "a claim and a SENT record per message, each writing the status index too: {claims:?}"
    );
    let receives = usage(vocabulary::AwsOperation::SqsReceiveMessage);
    assert!(
        receives.requests >= receives.calls && receives.calls > 0,
        "{receives:?}"
    );
    let cost = r.cost.as_ref().expect("priced");
    let per_1000 = cost.per_1000_messages_usd.expect("messages were sent");
    // SES's $0.10 per 1,000 recipients is the floor; the queue and table calls add to it.
    assert!(per_1000 > 0.10 && per_1000 < 1.0, "{cost:?}");
    assert!(
        cost.by_service_usd["DynamoDB"] > 0.0 && cost.by_service_usd["SQS"] > 0.0,
        "{cost:?}"
    );

    // The reports are written beside the results and tell the same verdict.
    let html = std::fs::read_to_string(&outcome.reports.html).unwrap();
    assert!(html.contains("<span class=\"badge\">PASS</span>"));
    assert!(html.contains("What it would cost on AWS"), "the report shows the cost");
    let summary = std::fs::read_to_string(&outcome.reports.markdown).unwrap();
    assert!(summary.starts_with("## ✅ smoke — PASS"), "{summary}");
}

#[test]
fn a_run_that_misses_its_slo_exits_with_the_breach_code_and_a_bad_scenario_with_the_harness_code() {
    let binary = env!("CARGO_BIN_EXE_loadtest");
    let out = scratch_dir("impossible");
    let status = Command::new(binary)
        .args([
            "run",
            &workspace_file("loadtest/tests/fixtures/impossible-slo.toml")
                .display()
                .to_string(),
        ])
        .arg("--out")
        .arg(&out)
        .env_remove("COURIER_STACK")
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(loadtest::EXIT_SLO_BREACH));
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["verdict"], "fail");
    assert_eq!(results["audit"]["lost"], 0, "a slow run is still a complete one");
    let report = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        report.contains("<span class=\"badge\">FAIL</span>"),
        "a failed run still gets its report"
    );

    let typo = workspace_file("loadtest/tests/fixtures/typo.toml");
    let output = Command::new(binary)
        .args(["run", &typo.display().to_string()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(loadtest::EXIT_HARNESS_ERROR));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("typo.toml:5: duration_sec"),
        "the error names file, line and field: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_quota_used_up_mid_campaign_pauses_sending_and_resumes_after_its_reset_with_nothing_lost_or_failed() {
    let outcome = passing_run("daily-quota").await;
    let r = &outcome.results;
    assert!(
        r.fault_counts.get("ses_quota").is_some_and(|n| *n > 0),
        "the day's quota was used up: {:?}",
        r.fault_counts
    );
    // No message paid for the quota: none ERROR, none dead-lettered, every one SENT.
    assert_eq!(r.audit.count(vocabulary::SendStatus::Sent), r.audit.accepted);
    assert_eq!((r.audit.lost, r.audit.dead_lettered, r.audit.duplicated), (0, 0, 0));
    // Sending stopped at the day's 250 and went on once the 40 s day reset.
    let sent_at = |t: f64| {
        r.timeseries
            .iter()
            .filter(|s| s.t_secs <= t)
            .map(|s| s.sent)
            .max()
            .unwrap_or(0)
    };
    assert!(
        sent_at(38.0) <= 250,
        "at most the day's quota before the reset: {}",
        sent_at(38.0)
    );
    assert!(r.audit.accepted > 250, "more was accepted than one day allows");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_engine_mid_campaign_loses_nothing_sends_no_copy_twice_and_the_batch_ends_done() {
    let outcome = passing_run("crash-resume").await;
    let r = &outcome.results;
    assert!(r.faults.iter().any(|f| f.kind == "kill_engine"), "{:?}", r.faults);

    // The batch was being turned into messages when the engine died: it was
    // taken up again from its checkpoint, and finished.
    let [batch] = r.batches.as_slice() else {
        panic!("one campaign batch: {:?}", r.batches)
    };
    assert_eq!((batch.phase.as_str(), batch.resumed), ("DONE", 1), "{batch:?}");
    assert_eq!(batch.rows, 20_000);
    assert_eq!(
        batch.enqueued, batch.accepted,
        "every accepted row enqueued, counted once"
    );
    // The batch waited for its senders: the queue stayed within the
    // scenario's limit and the chunks already started when it was reached.
    let scenario = scenarios::Scenario::load(&workspace_file("scenarios/crash-resume.toml")).unwrap();
    let limit = scenario.engine.campaign_max_waiting.expect("crash-resume sets a limit");
    let peak = r
        .timeseries
        .iter()
        .map(|s| s.queue_depths[&vocabulary::QueueRef::Main(vocabulary::Priority::Low)].visible)
        .max()
        .unwrap_or(0);
    let started = (engine::campaign::CHUNKS_IN_FLIGHT * engine::campaign::CHUNK_ROWS) as u64;
    assert!(
        peak <= limit + started,
        "the low queue peaked at {peak} (limit {limit})"
    );

    assert!(r.audit.mail_record_checked);
    assert_eq!((r.audit.lost, r.audit.unexpected), (0, 0));
    assert_eq!(
        r.audit.duplicated, r.audit.resent_after_interrupted_attempt,
        "no message was sent by two copies: {:?}",
        r.audit.duplicate_examples
    );
    assert_eq!(r.audit.count(vocabulary::SendStatus::Sent), r.audit.accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stack_checks_pass_on_dynamodb_local_and_moto_records_the_mail_it_accepts() {
    let stack = localstack::Stack::start(localstack::StackOptions {
        dynamodb: vocabulary::DynamoDbEmulator::DynamoDbLocal,
        sesv2: vocabulary::SesV2Emulator::Moto,
        ..localstack::StackOptions::default()
    })
    .await
    .expect("the local stack starts with DynamoDB Local and moto");
    let names: Vec<&str> = stack.versions().iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names.contains(&"dynamodb-local") && names.contains(&"moto"),
        "{names:?}"
    );
    let clients = engine::aws::AwsClients::for_stack(&stack).await;
    let checks = loadtest::check_stack::check_stack(&clients, "chk-ddblocal").await;
    assert!(checks.len() >= 4, "{checks:?}");
    assert!(checks.iter().all(|c| c.pass), "{checks:?}");

    // The other SES v2: mail it accepts is listed as the default's is.
    let _ = clients
        .sesv2
        .create_email_identity()
        .email_identity("courier@example.com")
        .send()
        .await;
    let mailer = engine::mailer::SesV2Mailer::new(clients.sesv2.clone());
    let email = engine::mailer::Email {
        from: "courier@example.com".into(),
        to: engine::domain::EmailAddress::parse("moto-listed@example.com").unwrap(),
        subject: "Through moto".into(),
        text: "t".into(),
        attachment: None,
    };
    let id = engine::mailer::Mailer::send(&mailer, &email)
        .await
        .expect("moto accepts it");
    let sent = stack.sent_emails().await.expect("moto's record is read");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].message_id, id);
    assert_eq!(sent[0].to, ["moto-listed@example.com"]);
    assert_eq!(sent[0].recorded_by, vocabulary::MailerKind::Sesv2);
}
