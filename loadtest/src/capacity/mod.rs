//! The pipeline's capacity, measured by saturating it.
//!
//! A closed loop of a few clients measures latency, not capacity (Little's
//! law: throughput = concurrency ÷ latency). So the senders' concurrency is
//! stepped up — one worker handling one message at a time, then 2, 5, 10, 20
//! … messages in flight — while ingest keeps a backlog ahead of them, through
//! the real API (HTTP → DynamoDB PENDING → SQS → QUEUED) with the scenario's
//! own traffic mix. Each step warms up, then counts what was SENT in its
//! window, the handling time, and where the CPU went. The ladder stops when
//! throughput stops growing; the ceiling is the best step, the knee the least
//! concurrency within 5 % of it, and the Universal Scalability Law fitted to
//! the steps says why it levels off (σ, contention) or falls (κ, coherency).
//! Then the knee's step runs once more, so the report can say whether the
//! machine held steady while the ladder climbed (`reports::drift`).
//!
//! Decisions ([`stop_reason`], [`assess`], [`recheck_step`], [`backlog_target`]) are pure; the
//! effects are in [`measure`] and the [`feeder`].

mod feeder;
pub mod usl;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::aws::AwsClients;
use engine::domain::Priority;
use engine::faults::FaultPlan;
use engine::pipeline::Pipeline;
use engine::Application;
use hdrhistogram::Histogram;
use localstack::Stack;
use scenarios::Scenario;
use tokio_util::sync::CancellationToken;
use vocabulary::UsageByOperation;

use crate::cpu::CpuMeter;
use crate::run::harness::{bind, engine_runtime, settings_for};
use crate::run::HarnessError;
use crate::summarize::cpu_use;
pub use reports::results::{Capacity, CapacityStep, UslFit};

/// How the ladder is climbed.
#[derive(Debug, Clone)]
pub struct Ladder {
    /// (workers, concurrency per worker), in order.
    pub steps: Vec<(usize, usize)>,
    /// Each step's warm-up, not measured.
    pub warmup: Duration,
    /// Each step's measuring window.
    pub window: Duration,
    /// Run the knee's step once more after the ladder, so the report can say
    /// whether the machine held steady while it climbed (`reports::drift`).
    pub recheck: bool,
}

impl Default for Ladder {
    /// 1, 2, 5, 10, 20, 40, 80, 160, 320 messages in flight at most.
    fn default() -> Self {
        Self {
            steps: vec![
                (1, 1),
                (1, 2),
                (1, 5),
                (1, 10),
                (2, 10),
                (4, 10),
                (8, 10),
                (16, 10),
                (32, 10),
            ],
            warmup: Duration::from_secs(3),
            window: Duration::from_secs(10),
            recheck: true,
        }
    }
}

/// Messages one worker handles at once: its concurrency, within one received batch.
pub fn in_flight(workers: usize, concurrency: usize) -> u32 {
    (workers * concurrency.min(engine::queue::MAX_BATCH)) as u32
}

/// Posted-but-unfinished messages the feeder keeps ahead of the senders:
/// enough for every worker's three prefetched batches and its batch in hand,
/// twice over, and never less than 1,000, so that the rows of a campaign
/// posted when the backlog ran low are enqueued before the senders run dry
/// (about 2 s of sending at the ceiling).
pub fn backlog_target(workers: usize) -> u64 {
    (workers as u64 * 4 * engine::queue::MAX_BATCH as u64 * 2).max(1_000)
}

/// Steps always run before the ladder may stop: enough points for the USL fit,
/// and no verdict from the noisy first steps alone.
pub const MIN_STEPS: usize = 6;

/// Why to stop climbing after these steps, if it is time (never before
/// [`MIN_STEPS`]): throughput has not grown by 5 % over the best earlier step
/// for two steps running, or has fallen below 80 % of the best (retrograde:
/// more concurrency costs throughput).
pub fn stop_reason(steps: &[CapacityStep]) -> Option<String> {
    if steps.len() < MIN_STEPS {
        return None;
    }
    let rates: Vec<f64> = steps.iter().map(|s| s.delivered_per_sec).collect();
    let best = rates.iter().copied().fold(0.0, f64::max);
    let last = *rates.last()?;
    if last < 0.8 * best {
        return Some(format!(
            "throughput fell to {last:.0} msg/s, below 80% of the best ({best:.0}): more concurrency costs throughput"
        ));
    }
    let earlier_best = rates[..rates.len() - 2].iter().copied().fold(0.0, f64::max);
    if rates[rates.len() - 2..].iter().all(|&r| r < 1.05 * earlier_best) {
        return Some(format!(
            "throughput stopped growing: two more steps stayed within 5% of {earlier_best:.0} msg/s"
        ));
    }
    None
}

/// What the steps say: the knee (least in-flight reaching 90 % of the best
/// step), the ceiling (median msg/s of the steps from the knee on) and the best step.
pub fn assess(steps: &[CapacityStep]) -> Assessment {
    let best = steps.iter().map(|s| s.delivered_per_sec).fold(0.0, f64::max);
    let knee = steps
        .iter()
        .filter(|s| s.delivered_per_sec >= 0.9 * best)
        .map(|s| s.in_flight)
        .min()
        .unwrap_or(0);
    let mut saturated: Vec<f64> = steps
        .iter()
        .filter(|s| s.in_flight >= knee)
        .map(|s| s.delivered_per_sec)
        .collect();
    saturated.sort_by(f64::total_cmp);
    let ceiling = match saturated.len() {
        0 => 0.0,
        n if n % 2 == 1 => saturated[n / 2],
        n => (saturated[n / 2 - 1] + saturated[n / 2]) / 2.0,
    };
    Assessment { ceiling, best, knee }
}

/// See [`assess`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    pub ceiling: f64,
    pub best: f64,
    pub knee: u32,
}

/// The step to run again after the ladder: the knee's (the least concurrency
/// that reached 90 % of the best), where the pipeline is saturated with the
/// fewest senders.
pub fn recheck_step(steps: &[CapacityStep]) -> Option<(usize, usize)> {
    let knee = assess(steps).knee;
    steps
        .iter()
        .find(|s| s.in_flight == knee && s.sent > 0)
        .map(|s| (s.workers, s.concurrency))
}

/// The whole reading, from its steps and the knee's step run again.
pub fn capacity(
    steps: Vec<CapacityStep>,
    recheck: Option<CapacityStep>,
    stopped: String,
    ladder: &Ladder,
    scenario: &Scenario,
) -> Capacity {
    let Assessment { ceiling, best, knee } = assess(&steps);
    let points: Vec<(f64, f64)> = steps
        .iter()
        .map(|s| (f64::from(s.in_flight), s.delivered_per_sec))
        .collect();
    Capacity {
        ceiling_msgs_per_sec: ceiling,
        best_step_msgs_per_sec: best,
        knee_concurrency: knee,
        stopped,
        mailer: scenario.engine.mailer,
        step_secs: ladder.window.as_secs_f64(),
        usl: usl::fit(&points),
        steps,
        recheck,
    }
}

/// Measures the capacity of the scenario's pipeline on `stack`, on resources of
/// its own (`<prefix>-cap`): an engine without senders serves ingest, the feeder
/// keeps it busy, and each step runs the senders at its concurrency.
pub async fn measure(
    scenario: &Scenario,
    prefix: &str,
    stack: &Stack,
    ladder: &Ladder,
) -> Result<Capacity, HarnessError> {
    // The same clients as a run's engine (a plan with no faults), so the
    // ceiling is measured through the same metering a run pays for.
    let plan = FaultPlan::new(0);
    let clients = &AwsClients::under_plan(stack, plan.clone()).await;
    let mut settings = settings_for(scenario, format!("{prefix}-cap"), stack)?;
    // Each step's senders hand their prefetched batches back when they stop, and
    // each hand-back counts as a receive: no redrive here, or a long ladder would
    // dead-letter healthy messages. (Redrive is what the run's own queues test.)
    settings.queues.max_receive_count = 1000;
    let app = Application::build(settings, clients, bind().await?).await?;
    let base_url = format!("http://{}", app.local_addr());
    let pipeline = app.pipeline().clone();
    let stop_engine = CancellationToken::new();
    let engine = engine_runtime().spawn(app.run(stop_engine.clone().cancelled_owned()));
    let backlog = Arc::new(AtomicU64::new(backlog_target(1)));
    let stop_feeding = CancellationToken::new();
    let feeding = tokio::spawn(feeder::feed(
        scenario.clone(),
        base_url,
        pipeline.clone(),
        backlog.clone(),
        stop_feeding.clone(),
    ));
    let watched = stack.processes();
    let mut steps = Vec::new();
    let mut stopped = "the ladder's last step was reached".to_string();
    let step_at = |workers: usize, concurrency: usize| {
        backlog.store(backlog_target(workers), Ordering::Relaxed);
        run_step(&pipeline, &plan, workers, concurrency, ladder, &watched)
    };
    for &(workers, concurrency) in &ladder.steps {
        let step = step_at(workers, concurrency).await;
        log_step(&step, "capacity step");
        steps.push(step);
        if let Some(reason) = stop_reason(&steps) {
            stopped = reason;
            break;
        }
    }
    let mut recheck = None;
    if let Some((workers, concurrency)) = recheck_step(&steps).filter(|_| ladder.recheck) {
        let step = step_at(workers, concurrency).await;
        log_step(
            &step,
            "capacity step again (the knee's, to see whether the machine held steady)",
        );
        recheck = Some(step);
    }
    stop_feeding.cancel();
    let fed = feeding.await?;
    stop_engine.cancel();
    let _ = engine.await;
    tracing::info!(
        requests = fed.requests,
        refused = fed.refused,
        "capacity feeder stopped"
    );
    Ok(capacity(steps, recheck, stopped, ladder, scenario))
}

fn log_step(step: &CapacityStep, what: &'static str) {
    tracing::info!(
        workers = step.workers,
        concurrency = step.concurrency,
        in_flight = step.in_flight,
        msgs_per_sec = format!("{:.1}", step.delivered_per_sec),
        handling_mean_ms = format!("{:.1}", step.handling_mean_ms),
        "{what}"
    );
}

/// One step: the senders at this concurrency, warmed up, then counted over the window.
async fn run_step(
    pipeline: &Pipeline,
    plan: &FaultPlan,
    workers: usize,
    concurrency: usize,
    ladder: &Ladder,
    watched: &[(String, u32)],
) -> CapacityStep {
    let mut sender_settings = pipeline.settings().sender.clone();
    sender_settings.workers = workers;
    sender_settings.concurrency = concurrency;
    let senders = pipeline.with_sender(sender_settings);
    let stop = CancellationToken::new();
    let running = engine_runtime().spawn(engine::sender::run_senders(senders, stop.clone()));
    tokio::time::sleep(ladder.warmup).await;

    let (sent_before, handling_before) = reading(pipeline);
    let calls_before = plan.usage();
    let mut meter = CpuMeter::start(watched.to_vec());
    let started = Instant::now();
    while started.elapsed() < ladder.window {
        tokio::time::sleep(Duration::from_secs(1).min(ladder.window)).await;
        meter.sample();
    }
    let (sent_after, mut handling) = reading(pipeline);
    let calls_after = plan.usage();
    let window_secs = started.elapsed().as_secs_f64();
    let cpu = meter.finish();
    stop.cancel();
    let _ = running.await;

    let _ = handling.subtract(&handling_before);
    let sent = sent_after.saturating_sub(sent_before);
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    CapacityStep {
        workers,
        concurrency,
        in_flight: in_flight(workers, concurrency),
        sent,
        delivered_per_sec: sent as f64 / window_secs,
        handling_mean_ms: handling.mean() / 1000.0,
        handling_p99_ms: handling.value_at_quantile(0.99) as f64 / 1000.0,
        cpu: cpu_use(&cpu, window_secs, cores, sent),
        calls_per_message: calls_per_message(&calls_before, &calls_after, sent),
    }
}

/// Calls made between two readings of the meter, per message sent between them.
pub fn calls_per_message(before: &UsageByOperation, after: &UsageByOperation, sent: u64) -> BTreeMap<String, f64> {
    let was = |operation: &str| before.get(operation).map_or(0, |usage| usage.calls);
    after
        .iter()
        .map(|(operation, usage)| (operation, usage.calls.saturating_sub(was(operation))))
        .filter(|&(_, calls)| calls > 0 && sent > 0)
        .map(|(operation, calls)| (operation.clone(), calls as f64 / sent as f64))
        .collect()
}

/// SENT so far, and every priority's handling times so far (µs).
fn reading(pipeline: &Pipeline) -> (u64, Histogram<u64>) {
    let metrics = pipeline.metrics();
    let sent = metrics.counters().total(|c| c.sent);
    let mut handling = engine::metrics::duration_histogram();
    for priority in Priority::ALL {
        let _ = handling.add(metrics.handling_histogram(priority));
    }
    (sent, handling)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(in_flight: u32, rate: f64) -> CapacityStep {
        CapacityStep {
            workers: 1,
            concurrency: in_flight as usize,
            in_flight,
            sent: (rate * 10.0) as u64,
            delivered_per_sec: rate,
            handling_mean_ms: 0.0,
            handling_p99_ms: 0.0,
            cpu: Default::default(),
            calls_per_message: BTreeMap::new(),
        }
    }

    #[test]
    fn the_ladder_climbs_while_throughput_grows() {
        let steps = [step(1, 30.0), step(2, 58.0), step(5, 140.0), step(10, 260.0)];
        assert_eq!(stop_reason(&steps), None);
    }

    #[test]
    fn the_ladder_stops_after_two_steps_without_five_percent_more() {
        let steps = [
            step(1, 30.0),
            step(2, 58.0),
            step(10, 260.0),
            step(20, 500.0),
            step(40, 510.0),
            step(80, 520.0),
        ];
        let reason = stop_reason(&steps).unwrap();
        assert!(reason.contains("stopped growing"), "{reason}");
        // One flat step alone is not enough: noise happens.
        let one_flat = [&steps[..5], &[step(80, 700.0)]].concat();
        assert_eq!(stop_reason(&one_flat), None);
    }

    #[test]
    fn the_ladder_never_stops_on_its_first_few_steps() {
        let flat = [step(1, 200.0), step(2, 200.0), step(5, 150.0)];
        assert_eq!(stop_reason(&flat), None);
    }

    #[test]
    fn the_ladder_stops_when_more_concurrency_costs_throughput() {
        let steps = [
            step(1, 30.0),
            step(2, 58.0),
            step(5, 140.0),
            step(10, 260.0),
            step(20, 500.0),
            step(40, 380.0),
        ];
        assert!(stop_reason(&steps).unwrap().contains("fell"));
    }

    #[test]
    fn the_knee_is_the_least_concurrency_near_the_best_and_the_ceiling_the_median_beyond_it() {
        let steps = [
            step(10, 260.0),
            step(20, 460.0),
            step(40, 500.0),
            step(80, 430.0),
            step(160, 440.0),
        ];
        let assessment = assess(&steps);
        assert_eq!(assessment.knee, 20);
        assert_eq!(assessment.best, 500.0);
        // Median of 460, 500, 430, 440: (440 + 460) / 2; one lucky step does not set it.
        assert_eq!(assessment.ceiling, 450.0);
    }

    #[test]
    fn the_step_run_again_after_the_ladder_is_the_knees() {
        let steps = [
            step(1, 30.0),
            step(5, 140.0),
            step(20, 560.0),
            step(40, 600.0),
            step(80, 590.0),
        ];
        // 90 % of the best (600) is 540: twenty in flight reach it first.
        assert_eq!(recheck_step(&steps), Some((1, 20)));
        assert_eq!(recheck_step(&[]), None, "no ladder, nothing to run again");
        assert_eq!(recheck_step(&[step(1, 0.0)]), None, "a knee that sent nothing");
    }

    #[test]
    fn a_step_counts_the_calls_made_in_its_window_per_message_sent() {
        let usage = |pairs: &[(&str, u64)]| -> UsageByOperation {
            pairs
                .iter()
                .map(|&(operation, calls)| {
                    let usage = vocabulary::Usage {
                        calls,
                        ..Default::default()
                    };
                    (operation.to_string(), usage)
                })
                .collect()
        };
        let before = usage(&[("SQS.ReceiveMessage", 100), ("DynamoDB.Query", 7)]);
        let after = usage(&[
            ("SQS.ReceiveMessage", 150),
            ("DynamoDB.Query", 7),
            ("DynamoDB.UpdateItem", 400),
        ]);
        let calls = calls_per_message(&before, &after, 200);
        assert_eq!(
            calls.get("SQS.ReceiveMessage"),
            Some(&0.25),
            "50 receives for 200 sends"
        );
        assert_eq!(calls.get("DynamoDB.UpdateItem"), Some(&2.0), "new in this window");
        assert_eq!(calls.get("DynamoDB.Query"), None, "none in this window");
        assert!(
            calls_per_message(&before, &after, 0).is_empty(),
            "nothing sent, no ratio"
        );
    }

    #[test]
    fn the_backlog_keeps_every_worker_fed() {
        assert_eq!(backlog_target(1), 1_000);
        assert_eq!(backlog_target(32), 32 * 4 * 10 * 2);
        assert_eq!(in_flight(1, 5), 5);
        assert_eq!(in_flight(4, 25), 40);
    }
}
