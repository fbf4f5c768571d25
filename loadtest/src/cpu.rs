//! Where the CPU went: each emulator of the stack, the engine under test and
//! the harness, read from `/proc` at the start and end of a window, with peak
//! resident memory sampled in between.
//!
//! Each emulator runs in a process group of its own (see `localstack::process`),
//! so a group's CPU is the sum over its members, children included. The engine
//! runs inside the loadtest process on a runtime of its own whose threads are
//! named [`ENGINE_THREAD`] (see `run::harness::engine_runtime`), so the
//! process's CPU splits by thread into the engine's and the harness's.

use std::collections::BTreeMap;

/// The engine under test, in the figures: the loadtest process's engine threads.
pub const ENGINE: &str = "engine";
/// The harness, in the figures: load generation, sampling, collection, audit
/// (every thread of the loadtest process but the engine's).
pub const HARNESS: &str = "loadtest harness";
/// The name of every thread of the engine's runtime.
pub const ENGINE_THREAD: &str = "courier-engine";

/// One process's figures in `/proc/<pid>/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub pid: u32,
    pub group: u32,
    /// User + system time of the process itself (of the thread, in a task's stat), in clock ticks.
    pub ticks: u64,
    /// User + system time of its reaped children (process-wide, even in a task's stat).
    pub child_ticks: u64,
    /// Resident pages.
    pub rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name may hold spaces and parentheses,
/// so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let (head, rest) = text.rsplit_once(')')?;
    let pid = head.split_whitespace().next()?.parse().ok()?;
    // rest: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime ...
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let number = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        pid,
        group: number(2)? as u32,
        ticks: number(11)? + number(12)?,
        child_ticks: number(13)? + number(14)?,
        rss_pages: number(21)?,
    })
}

/// CPU time and memory of one watched process group at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub ticks: u64,
    pub rss_pages: u64,
}

/// Sums `stats` by the watched groups, children included (an emulator's helpers
/// are its own); `own` is this process, counted alone, without its reaped
/// children (a stack stopped earlier is not this window's), and split into the
/// engine's threads (`engine_ticks`) and the rest (the harness). Both parts
/// carry the process's memory, which they share.
pub fn usage_by_name(
    stats: &[Stat],
    watched: &[(String, u32)],
    own: u32,
    engine_ticks: u64,
) -> BTreeMap<String, Usage> {
    let mut usage = BTreeMap::new();
    for (name, root) in watched {
        let members = stats.iter().filter(|s| s.group == *root || s.pid == *root);
        let total = members.fold(Usage::default(), |sum, s| Usage {
            ticks: sum.ticks + s.ticks + s.child_ticks,
            rss_pages: sum.rss_pages + s.rss_pages,
        });
        usage.insert(name.clone(), total);
    }
    if let Some(s) = stats.iter().find(|s| s.pid == own) {
        let engine = engine_ticks.min(s.ticks);
        let part = |ticks| Usage {
            ticks,
            rss_pages: s.rss_pages,
        };
        usage.insert(ENGINE.to_string(), part(engine));
        usage.insert(HARNESS.to_string(), part(s.ticks - engine));
    }
    usage
}

/// CPU ticks of this process's live engine threads (named [`ENGINE_THREAD`]).
fn engine_ticks() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let name = format!("({ENGINE_THREAD}");
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .filter(|text| text.contains(&name))
        .filter_map(|text| parse_stat(&text))
        .map(|stat| stat.ticks)
        .sum()
}

/// Every process's stat now (processes that end while being read are skipped).
fn read_all() -> Vec<Stat> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|text| parse_stat(&text))
        .collect()
}

/// What one process group used over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUse {
    pub cpu_ms: f64,
    pub peak_rss_mib: f64,
}

/// Watches the stack's processes and this one over a window.
pub struct CpuMeter {
    started: std::time::Instant,
    watched: Vec<(String, u32)>,
    own: u32,
    start: BTreeMap<String, Usage>,
    peak_pages: BTreeMap<String, u64>,
    ms_per_tick: f64,
    mib_per_page: f64,
}

impl CpuMeter {
    /// Starts the window now. `watched` names each process group by its leader's pid.
    pub fn start(watched: Vec<(String, u32)>) -> Self {
        // SAFETY: sysconf only reads a system constant.
        let (ticks_per_sec, page_bytes) =
            unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let own = std::process::id();
        let start = usage_by_name(&read_all(), &watched, own, engine_ticks());
        let peak_pages = start.iter().map(|(name, u)| (name.clone(), u.rss_pages)).collect();
        Self {
            started: std::time::Instant::now(),
            watched,
            own,
            start,
            peak_pages,
            ms_per_tick: 1000.0 / ticks_per_sec.max(1) as f64,
            mib_per_page: page_bytes.max(1) as f64 / (1024.0 * 1024.0),
        }
    }

    /// How long the window has lasted so far.
    pub fn elapsed_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Reads memory now, keeping each group's peak.
    pub fn sample(&mut self) {
        for (name, usage) in usage_by_name(&read_all(), &self.watched, self.own, engine_ticks()) {
            let peak = self.peak_pages.entry(name).or_default();
            *peak = (*peak).max(usage.rss_pages);
        }
    }

    /// Ends the window: each group's CPU over it and its peak memory.
    pub fn finish(mut self) -> BTreeMap<String, ProcessUse> {
        self.sample();
        let end = usage_by_name(&read_all(), &self.watched, self.own, engine_ticks());
        end.into_iter()
            .map(|(name, usage)| {
                let before = self.start.get(&name).map_or(0, |u| u.ticks);
                let peak = self.peak_pages.get(&name).copied().unwrap_or(usage.rss_pages);
                let figures = ProcessUse {
                    cpu_ms: usage.ticks.saturating_sub(before) as f64 * self.ms_per_tick,
                    peak_rss_mib: peak as f64 * self.mib_per_page,
                };
                (name, figures)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_even_when_the_command_holds_spaces_and_parentheses() {
        let text = "4242 (java (dynamo) x) S 1 4200 4200 0 -1 4194560 100 0 0 0 250 50 7 3 20 0 40 0 1000 5000000 1234 18446744073709551615";
        let stat = parse_stat(text).unwrap();
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.group, 4200);
        assert_eq!((stat.ticks, stat.child_ticks), (250 + 50, 7 + 3));
        assert_eq!(stat.rss_pages, 1234);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_group_counts_every_member_and_this_process_splits_into_engine_and_harness() {
        let stat = |pid, group, ticks| Stat {
            pid,
            group,
            ticks,
            child_ticks: 0,
            rss_pages: 10,
        };
        // A stack stopped earlier left its CPU in this process's children's time.
        let own = Stat {
            child_ticks: 900,
            ..stat(7, 7, 40)
        };
        let localstack_helper = Stat {
            child_ticks: 4,
            ..stat(101, 100, 26)
        };
        let stats = [stat(100, 100, 50), localstack_helper, stat(200, 200, 5), own];
        let watched = vec![("localstack".to_string(), 100), ("moto".to_string(), 200)];
        let usage = usage_by_name(&stats, &watched, 7, 15);
        assert_eq!(
            usage["localstack"],
            Usage {
                ticks: 80,
                rss_pages: 20
            }
        );
        assert_eq!(usage["moto"].ticks, 5);
        assert_eq!(usage[ENGINE].ticks, 15);
        assert_eq!(usage[HARNESS].ticks, 25);
    }

    /// CPU time this thread has used, in ms.
    fn thread_cpu_ms() -> f64 {
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes into the timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
        now.tv_sec as f64 * 1000.0 + now.tv_nsec as f64 / 1e6
    }

    #[test]
    fn this_process_is_seen_using_the_cpu_it_used() {
        let meter = CpuMeter::start(Vec::new());
        // Burn 300 ms of this thread's own CPU, however busy the machine is.
        let started = thread_cpu_ms();
        let mut spin = 0u64;
        while thread_cpu_ms() - started < 300.0 {
            spin = spin.wrapping_add(1);
        }
        let own = meter.finish()[HARNESS];
        assert!(spin > 0);
        // Clock ticks are 10 ms: allow one tick either side.
        assert!(own.cpu_ms >= 290.0, "{own:?}");
        assert!(own.peak_rss_mib > 1.0, "{own:?}");
    }
}
