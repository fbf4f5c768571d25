//! The testcontainers target: LocalStack's container through Docker.
//!
//! Where a Docker engine answers, the container is started, used (a queue
//! made and listed through the SDK) and removed with the stack. Everywhere
//! else the target must fail at once, saying Docker is missing and naming
//! the Docker-free default; that half runs on every machine.

use std::time::{Duration, Instant};

use localstack::{Service, Stack, StackOptions, StackTarget};

fn docker_answers() -> bool {
    std::env::var("DOCKER_HOST").is_ok_and(|h| !h.is_empty())
        || std::os::unix::net::UnixStream::connect("/var/run/docker.sock").is_ok()
}

/// Says a test was skipped where the test runner cannot hide it (libtest
/// captures `eprintln!`, not direct writes to the stderr handle).
fn say_skipped(why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {why}");
}

fn options() -> StackOptions {
    StackOptions {
        target: "testcontainers".parse().unwrap(),
        startup_timeout: Duration::from_secs(180),
        ..StackOptions::default()
    }
}

#[tokio::test]
async fn without_docker_the_testcontainers_target_fails_at_once_naming_the_default() {
    assert_eq!(options().target, StackTarget::Testcontainers);
    if docker_answers() {
        say_skipped("a Docker engine answers here, so the no-Docker refusal cannot be shown");
        return;
    }
    let started = Instant::now();
    let error = Stack::start(options()).await.unwrap_err().to_string();
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(
        error.contains("needs a Docker engine") && error.contains("`local`"),
        "{error}"
    );
}

#[tokio::test]
async fn with_docker_localstacks_container_serves_sqs_and_is_removed_with_the_stack() {
    if !docker_answers() {
        say_skipped("the testcontainers target's container test: no Docker engine here (no DOCKER_HOST, no /var/run/docker.sock); it runs where Docker does");
        return;
    }
    let stack = Stack::start(options()).await.expect("LocalStack's container starts");
    let url = stack.endpoint(Service::Sqs).unwrap().to_string();
    let config = stack.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(&config).endpoint_url(&url).build());
    sqs.create_queue().queue_name("courier-tc").send().await.unwrap();
    let listed = sqs.list_queues().send().await.unwrap();
    assert!(listed.queue_urls().iter().any(|u| u.ends_with("courier-tc")));
    drop(stack);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        reqwest::get(format!("{url}/_localstack/health")).await.is_err(),
        "the container is gone"
    );
}
