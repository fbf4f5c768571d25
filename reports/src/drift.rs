//! Did the machine hold steady while the capacity ladder climbed?
//!
//! On a shared machine the same code's step can deliver a third less from one
//! minute to the next, and a ceiling read off such a ladder carries that
//! error silently. So after the ladder the knee's step runs once more, and
//! the two runs of the same step are compared. At saturation the processes'
//! CPU is spent, so throughput × CPU per message ≈ the CPU the processes got.
//! A change in throughput is then one of three things:
//!
//! - more (or fewer) AWS calls per message: the pipeline did different work;
//! - the same calls, more (or less) CPU per message: each call cost more, so
//!   the machine itself ran slower (a neighbour's load on the shared caches
//!   and memory, a lower clock);
//! - the same CPU per message, a smaller (or larger) share of the machine:
//!   something outside the stack took CPU.
//!
//! [`Drift::between`] decides which, as a pure function of the two steps.

use crate::results::CapacityStep;

/// Throughput within this fraction of the first run is the same.
pub const STEADY: f64 = 0.10;

/// Calls per message within this fraction of the first run are the same calls.
pub const SAME_CALLS: f64 = 0.10;

/// What the second run of the knee's step says about the first.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drift {
    /// Messages in flight in the step run twice.
    pub in_flight: u32,
    pub first_msgs_per_sec: f64,
    pub again_msgs_per_sec: f64,
    /// The second run's figure ÷ the first's.
    pub throughput_ratio: f64,
    /// AWS calls per message, all operations: second ÷ first.
    pub calls_ratio: Option<f64>,
    /// CPU per message, every process together: second ÷ first.
    pub cpu_per_message_ratio: Option<f64>,
    /// The processes' share of the machine: second ÷ first.
    pub machine_share_ratio: Option<f64>,
    pub cause: DriftCause,
}

/// Why the second run of the same step delivered what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriftCause {
    /// Within [`STEADY`] of the first run.
    Steady,
    /// The pipeline made other calls per message.
    CallsPerMessage,
    /// The same calls cost other CPU: the machine ran at another speed.
    CpuPerMessage,
    /// The same CPU per message, another share of the machine: something
    /// outside the stack took (or gave back) CPU.
    MachineShare,
    /// None of the above moved enough to say.
    Unexplained,
}

impl Drift {
    /// Compares the knee's step with its second run (none when the first
    /// delivered nothing, so there is nothing to compare with).
    pub fn between(first: &CapacityStep, again: &CapacityStep) -> Option<Drift> {
        let ratio = |a: f64, b: f64| (a > 0.0 && b > 0.0).then(|| b / a);
        let throughput_ratio = ratio(first.delivered_per_sec, again.delivered_per_sec)?;
        let calls_ratio = ratio(first.calls_per_message(), again.calls_per_message());
        let cpu_per_message_ratio = first
            .cpu_ms_per_message()
            .zip(again.cpu_ms_per_message())
            .and_then(|(a, b)| ratio(a, b));
        let machine_share_ratio = ratio(first.machine_pct(), again.machine_pct());
        Some(Drift {
            in_flight: again.in_flight,
            first_msgs_per_sec: first.delivered_per_sec,
            again_msgs_per_sec: again.delivered_per_sec,
            throughput_ratio,
            calls_ratio,
            cpu_per_message_ratio,
            machine_share_ratio,
            cause: cause(
                throughput_ratio,
                calls_ratio,
                cpu_per_message_ratio,
                machine_share_ratio,
            ),
        })
    }
}

/// The rule of the module's opening, in order: steady, then the calls, then
/// the CPU per message, then the share. A ratio explains the change when it
/// moved the way that would cause it and by at least half as much.
fn cause(throughput: f64, calls: Option<f64>, cpu_per_message: Option<f64>, share: Option<f64>) -> DriftCause {
    if (throughput - 1.0).abs() <= STEADY {
        return DriftCause::Steady;
    }
    if calls.is_some_and(|r| (r - 1.0).abs() > SAME_CALLS) {
        return DriftCause::CallsPerMessage;
    }
    // Fewer messages a second for the same CPU means more CPU per message.
    let costlier = 1.0 / throughput - 1.0;
    if cpu_per_message.is_some_and(|r| explains(r - 1.0, costlier)) {
        return DriftCause::CpuPerMessage;
    }
    if share.is_some_and(|r| explains(r - 1.0, throughput - 1.0)) {
        return DriftCause::MachineShare;
    }
    DriftCause::Unexplained
}

/// `moved` is in the direction of `needed` and at least half of it.
fn explains(moved: f64, needed: f64) -> bool {
    moved * needed > 0.0 && moved.abs() >= 0.5 * needed.abs()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::results::{CpuUse, ProcessCpu};

    /// A step at 20 in flight: `rate` msg/s, the calls per message, and the
    /// two processes' CPU per message (ms) and share of the machine (%).
    fn step(rate: f64, calls: f64, cpu_ms: f64, share: f64) -> CapacityStep {
        let process = ProcessCpu {
            cpu_ms: cpu_ms * rate,
            cpu_ms_per_message: Some(cpu_ms / 2.0),
            machine_pct: share / 2.0,
            peak_rss_mib: 0.0,
        };
        CapacityStep {
            workers: 2,
            concurrency: 10,
            in_flight: 20,
            sent: rate as u64 * 10,
            delivered_per_sec: rate,
            handling_mean_ms: 30.0,
            handling_p99_ms: 80.0,
            cpu: CpuUse {
                window_secs: 10.0,
                cores: 2,
                by_process: BTreeMap::from([("dynoxide".into(), process.clone()), ("engine".into(), process)]),
            },
            calls_per_message: BTreeMap::from([("SQS.ReceiveMessage".into(), calls)]),
        }
    }

    #[test]
    fn the_same_step_within_a_tenth_of_its_first_run_is_a_steady_machine() {
        let drift = Drift::between(&step(600.0, 1.0, 3.0, 180.0), &step(560.0, 1.3, 3.2, 180.0)).unwrap();
        assert_eq!(drift.cause, DriftCause::Steady);
        assert!((drift.throughput_ratio - 560.0 / 600.0).abs() < 1e-9);
        assert_eq!(drift.in_flight, 20);
    }

    #[test]
    fn a_third_less_for_the_same_calls_at_a_third_more_cpu_each_is_a_slower_machine() {
        // As measured on 2026-12-06: 652 then 520 msg/s, receives 0.16-0.17
        // per message both times, every process's CPU per message a third up.
        let drift = Drift::between(&step(652.0, 0.16, 2.86, 186.0), &step(520.0, 0.17, 3.7, 190.0)).unwrap();
        assert_eq!(drift.cause, DriftCause::CpuPerMessage);
        let cpu = drift.cpu_per_message_ratio.unwrap();
        assert!((cpu - 3.7 / 2.86).abs() < 1e-9, "{cpu}");
    }

    #[test]
    fn the_same_cpu_per_message_on_a_smaller_share_of_the_machine_is_cpu_taken_by_something_else() {
        let drift = Drift::between(&step(600.0, 1.0, 3.0, 180.0), &step(450.0, 1.0, 3.0, 135.0)).unwrap();
        assert_eq!(drift.cause, DriftCause::MachineShare);
    }

    #[test]
    fn more_calls_per_message_is_the_pipeline_not_the_machine_even_when_the_cpu_rose_too() {
        let drift = Drift::between(&step(600.0, 1.0, 3.0, 180.0), &step(480.0, 1.4, 3.75, 180.0)).unwrap();
        assert_eq!(drift.cause, DriftCause::CallsPerMessage);
    }

    #[test]
    fn a_quicker_second_run_is_explained_the_same_way_round() {
        let drift = Drift::between(&step(500.0, 1.0, 3.6, 180.0), &step(640.0, 1.0, 2.8, 180.0)).unwrap();
        assert_eq!(drift.cause, DriftCause::CpuPerMessage);
    }

    #[test]
    fn a_change_nothing_measured_accounts_for_is_said_to_be_unexplained() {
        let drift = Drift::between(&step(600.0, 1.0, 3.0, 180.0), &step(450.0, 1.0, 3.1, 178.0)).unwrap();
        assert_eq!(drift.cause, DriftCause::Unexplained);
    }

    #[test]
    fn a_first_run_that_sent_nothing_has_nothing_to_compare_with() {
        assert_eq!(
            Drift::between(&step(0.0, 1.0, 3.0, 180.0), &step(500.0, 1.0, 3.0, 180.0)),
            None
        );
    }
}
