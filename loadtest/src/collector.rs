//! One collector for everything a run observes while traffic flows (as in
//! oha): the sampler and the fault timeline send [`Event`]s over a channel;
//! the collector alone keeps them, turns readings into the results' samples,
//! and feeds the live view and the progress line.

use std::time::Duration;

use tokio::time::Instant;

use engine::pipeline::Pipeline;
use scenarios::Slo;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vocabulary::stats::{Latency, SloSoFar, Snapshot};
use vocabulary::{Priority, QueueRef};

use crate::cpu::CpuMeter;
use crate::driver::Driver;
use crate::results::{FaultWindow, Sample};

/// Something that happened during a run.
#[derive(Debug, Clone)]
pub enum Event {
    /// The pipeline's figures at one tick.
    Reading(Box<Reading>),
    FaultStarted {
        index: usize,
        kind: &'static str,
        detail: String,
        at_secs: f64,
    },
    FaultEnded {
        index: usize,
        at_secs: f64,
    },
    /// Poison messages put on the queues.
    Poisoned(u64),
}

/// One tick of the sampler.
#[derive(Debug, Clone)]
pub struct Reading {
    pub t_secs: f64,
    /// Messages the API said it accepted so far.
    pub accepted: u64,
    /// Requests started, of all planned.
    pub requests: (usize, usize),
    pub stats: Snapshot,
    /// The faults in force (`kind#index`), as the timeline's events say:
    /// the collector fills them in, so real and simulated runs show the same.
    pub active_faults: Vec<String>,
}

/// What the collector kept, for the summary.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub samples: Vec<Sample>,
    /// In the order the faults began; an open one has no end yet.
    pub windows: Vec<FaultWindow>,
    pub poisoned: u64,
}

/// Where a progress line goes. The binary prints it; the library never
/// writes to the terminal itself.
pub type ProgressSink = fn(&str);

/// Where the collector shows what it sees.
pub struct Outputs {
    pub live: Option<watch::Sender<Snapshot>>,
    /// A progress line every 2 s, when set.
    pub progress: Option<ProgressSink>,
    pub slo: Slo,
}

/// Keeps every event until all senders are gone.
pub async fn collect(mut events: UnboundedReceiver<Event>, outputs: Outputs) -> Collected {
    let mut collected = Collected::default();
    // Fault index → its window's place in `windows`.
    let mut open = std::collections::HashMap::new();
    let mut last_print: Option<Instant> = None;
    while let Some(event) = events.recv().await {
        match event {
            Event::Reading(mut reading) => {
                let mut in_force: Vec<(&usize, &usize)> = open.iter().collect();
                in_force.sort();
                reading.active_faults = in_force
                    .into_iter()
                    .map(|(index, at)| format!("{}#{index}", collected.windows[*at].kind))
                    .collect();
                let sample = sample_of(&reading, collected.samples.last());
                if let Some(live) = &outputs.live {
                    let _ = live.send(live_view(&reading, &outputs.slo));
                }
                let due = last_print.is_none_or(|t| t.elapsed() >= Duration::from_secs(2));
                if let Some(show) = outputs.progress.filter(|_| due) {
                    show(&progress_line(&sample, reading.requests));
                    last_print = Some(Instant::now());
                }
                collected.samples.push(sample);
            }
            Event::FaultStarted {
                index,
                kind,
                detail,
                at_secs,
            } => {
                open.insert(index, collected.windows.len());
                collected.windows.push(FaultWindow {
                    kind: kind.to_string(),
                    start_secs: at_secs,
                    end_secs: None,
                    detail,
                });
            }
            Event::FaultEnded { index, at_secs } => {
                if let Some(window) = open.remove(&index).and_then(|i| collected.windows.get_mut(i)) {
                    window.end_secs = Some(at_secs);
                }
            }
            Event::Poisoned(count) => collected.poisoned += count,
        }
    }
    collected
}

/// What the sampler reads.
pub struct Sources {
    pub pipeline: Pipeline,
    pub driver: std::sync::Arc<Driver>,
    /// The processes' CPU and memory over the same window (none in a simulation).
    pub cpu: Option<CpuMeter>,
}

/// Reads the pipeline every `interval` until `stop`; gives back the CPU meter.
pub async fn sample(
    sources: Sources,
    start: Instant,
    interval: Duration,
    events: UnboundedSender<Event>,
    stop: CancellationToken,
) -> Option<CpuMeter> {
    let Sources {
        pipeline,
        driver,
        mut cpu,
    } = sources;
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.cancelled() => return cpu,
        }
        if let Some(cpu) = cpu.as_mut() {
            cpu.sample();
        }
        let depths = pipeline.queue_depths().await;
        let reading = Reading {
            t_secs: start.elapsed().as_secs_f64(),
            accepted: driver.accepted_so_far(),
            requests: (driver.started(), driver.total()),
            stats: pipeline.metrics().snapshot(depths),
            active_faults: Vec::new(),
        };
        if events.send(Event::Reading(Box::new(reading))).is_err() {
            return cpu;
        }
    }
}

/// A reading as the results keep it, with rates since the previous sample.
pub fn sample_of(reading: &Reading, previous: Option<&Sample>) -> Sample {
    let stats = &reading.stats;
    let (sent, errors, retries) = (
        stats.total(|c| c.sent),
        stats.total(|c| c.errors),
        stats.total(|c| c.retries),
    );
    let rate = |now: u64, before: &dyn Fn(&Sample) -> u64| match previous {
        Some(prev) if reading.t_secs > prev.t_secs => {
            now.saturating_sub(before(prev)) as f64 / (reading.t_secs - prev.t_secs)
        }
        _ => 0.0,
    };
    let by_priority = stats.by_priority.map(|_, c| c.sent);
    let sent_per_sec_by_priority = by_priority.map(|p, sent| rate(*sent, &|s: &Sample| s.sent_by_priority[p]));
    Sample {
        t_secs: reading.t_secs,
        accepted: reading.accepted,
        sent,
        errors,
        retries,
        sent_per_sec: rate(sent, &|s| s.sent),
        errors_per_sec: rate(errors, &|s| s.errors),
        retries_per_sec: rate(retries, &|s| s.retries),
        queue_depths: stats.queues.clone(),
        latency_ms: stats.latency.iter().map(|(p, l)| (p, *l)).collect(),
        active_faults: reading.active_faults.clone(),
        sent_by_priority: by_priority,
        sent_per_sec_by_priority,
        budget_per_sec: stats.budget.rate_per_sec,
    }
}

/// The live view's reading: the engine's, with the faults in force and the
/// latency SLOs judged on the figures so far.
pub fn live_view(reading: &Reading, slo: &Slo) -> Snapshot {
    let mut view = reading.stats.clone();
    view.accepted = reading.accepted;
    view.active_faults = reading.active_faults.clone();
    type Pick = fn(&Latency) -> f64;
    let objectives: [(&str, _, Pick); 3] = [
        ("p50", &slo.p50_ms, |l| l.p50),
        ("p95", &slo.p95_ms, |l| l.p95),
        ("p99", &slo.p99_ms, |l| l.p99),
    ];
    for (label, targets, pick) in objectives {
        for (priority, target) in targets.iter() {
            let Some(target) = target else { continue };
            let latency = view.latency[priority];
            let value = pick(&latency);
            view.slo.push(SloSoFar {
                name: format!("{label} {priority} {value:.0} ≤ {target:.0} ms (so far)"),
                met: latency.count == 0 || value <= *target,
            });
        }
    }
    view
}

/// One line of progress for a terminal without the live view.
pub fn progress_line(sample: &Sample, (started, total): (usize, usize)) -> String {
    let depth = |queue: QueueRef| sample.queue_depths.get(&queue).map_or(0, |d| d.total());
    let main = |p: Priority| depth(QueueRef::Main(p));
    let dlq = vocabulary::stats::dead_lettered(&sample.queue_depths);
    let faults = match sample.active_faults.is_empty() {
        true => "none".to_string(),
        false => sample.active_faults.join(","),
    };
    format!(
        "[{:>6.1}s] requests {started}/{total}  accepted {}  sent {} ({:.1}/s)  errors {}  retries {}  queues h/m/l {}/{}/{}  dlq {dlq}  faults: {faults}",
        sample.t_secs,
        sample.accepted,
        sample.sent,
        sample.sent_per_sec,
        sample.errors,
        sample.retries,
        main(Priority::High),
        main(Priority::Medium),
        main(Priority::Low),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vocabulary::stats::Depth;

    fn reading(t_secs: f64, sent: u64) -> Reading {
        let mut stats = Snapshot::default();
        stats.by_priority[Priority::Low].sent = sent;
        stats.latency[Priority::High].count = 3;
        stats.latency[Priority::High].p99 = 900.0;
        let depth = Depth {
            visible: 5,
            in_flight: 2,
            delayed: 0,
        };
        stats.queues.insert(QueueRef::Main(Priority::Low), depth);
        Reading {
            t_secs,
            accepted: 100,
            requests: (4, 10),
            stats,
            active_faults: vec!["ses_throttle#0".into()],
        }
    }

    #[test]
    fn a_sample_gives_rates_since_the_previous_one() {
        let first = sample_of(&reading(1.0, 10), None);
        assert_eq!(first.sent_per_sec, 0.0, "no rate without a previous sample");
        let second = sample_of(&reading(3.0, 50), Some(&first));
        assert_eq!(second.sent_per_sec, 20.0);
        assert_eq!(second.queue_depths[&QueueRef::Main(Priority::Low)].total(), 7);
        let line = progress_line(&second, (4, 10));
        assert!(
            line.contains("requests 4/10") && line.contains("queues h/m/l 0/0/7"),
            "{line}"
        );
    }

    #[test]
    fn the_live_view_judges_latency_objectives_so_far() {
        let mut slo = Slo::default();
        slo.p99_ms[Priority::High] = Some(500.0);
        slo.p99_ms[Priority::Low] = Some(500.0);
        let view = live_view(&reading(1.0, 10), &slo);
        let met: Vec<(String, bool)> = view.slo.iter().map(|s| (s.name.clone(), s.met)).collect();
        assert_eq!(met.len(), 2);
        assert!(!met[0].1, "high's p99 of 900 ms misses 500: {met:?}");
        assert!(met[1].1, "low has sent nothing measured yet: {met:?}");
        assert_eq!(view.active_faults, ["ses_throttle#0"]);
    }

    static SHOWN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

    fn remember(line: &str) {
        SHOWN.lock().unwrap().push(line.to_owned());
    }

    #[tokio::test(start_paused = true)]
    async fn progress_lines_go_to_the_sink_the_binary_gives_at_most_every_two_seconds() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let outputs = Outputs {
            live: None,
            progress: Some(remember),
            slo: Slo::default(),
        };
        let collector = tokio::spawn(collect(rx, outputs));
        for second in 0..5u32 {
            tx.send(Event::Reading(Box::new(reading(
                f64::from(second),
                10 * u64::from(second),
            ))))
            .unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        drop(tx);
        let collected = collector.await.unwrap();
        assert_eq!(collected.samples.len(), 5, "every reading is kept");
        let shown = SHOWN.lock().unwrap().clone();
        assert_eq!(shown.len(), 3, "at 0, 2 and 4 s: {shown:?}");
        assert!(shown[2].contains("sent 40"), "{}", shown[2]);
    }

    #[tokio::test]
    async fn the_collector_keeps_fault_windows_in_order_and_counts_poison() {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let outputs = Outputs {
            live: None,
            progress: None,
            slo: Slo::default(),
        };
        let collector = tokio::spawn(collect(rx, outputs));
        let started = |index, at_secs| Event::FaultStarted {
            index,
            kind: "kill_worker",
            detail: String::new(),
            at_secs,
        };
        tx.send(started(1, 2.0)).unwrap();
        tx.send(started(0, 3.0)).unwrap();
        tx.send(Event::FaultEnded { index: 1, at_secs: 5.0 }).unwrap();
        tx.send(Event::Poisoned(4)).unwrap();
        tx.send(Event::Reading(Box::new(reading(1.0, 1)))).unwrap();
        drop(tx);
        let collected = collector.await.unwrap();
        let ends: Vec<Option<f64>> = collected.windows.iter().map(|w| w.end_secs).collect();
        assert_eq!(ends, [Some(5.0), None], "the second fault is still open");
        assert_eq!(collected.poisoned, 4);
        assert_eq!(collected.samples.len(), 1);
    }
}
