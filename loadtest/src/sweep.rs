//! `loadtest sweep`: one setting varied over a range, each value a simulated
//! run of the same scenario (`--stack sim`), to answer "how many workers, how
//! much SES quota do we need": the end-to-end time, reminders' p99, the cost
//! and the scenario's verdict at every value, on one chart.
//!
//! Each value is an ordinary simulated run with its own `results.json` and
//! report (in `<out>/<setting>-<value>/`); the sweep gathers their figures
//! into `sweep.json` and `sweep.html`. Runs are independent (each on a paused
//! clock of its own), so as many run at once as the machine has cores.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use reports::cost::PriceCard;
use reports::results::{RunResults, Sweep, SweepPoint};
use scenarios::{Fault, FaultEnd, FaultSpec, PositiveRate, Scenario};
use vocabulary::Priority;

use crate::results::ScenarioInfo;
use crate::run::sim::{Profile, SimRun};
use crate::run::HarnessError;

/// The settings a sweep can vary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `engine.workers`: sender workers.
    Workers,
    /// `engine.concurrency`: messages one worker handles at once.
    Concurrency,
    /// The account's SES sending rate (`ses_quota`'s `max_send_rate`); added
    /// for the whole run when the scenario has no quota.
    SesRate,
}

impl std::str::FromStr for Setting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "workers" | "engine.workers" => Ok(Setting::Workers),
            "concurrency" | "engine.concurrency" => Ok(Setting::Concurrency),
            "ses_rate" | "ses-rate" => Ok(Setting::SesRate),
            _ => Err(format!(
                "`{text}` cannot be swept: `workers`, `concurrency` or `ses_rate`"
            )),
        }
    }
}

impl Setting {
    /// As a scenario file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Setting::Workers => "engine.workers",
            Setting::Concurrency => "engine.concurrency",
            Setting::SesRate => "ses_quota.max_send_rate",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Setting::Workers => "sender workers",
            Setting::Concurrency => "messages in hand per worker",
            Setting::SesRate => "SES sends per second",
        }
    }

    /// The scenario with this setting at `value`; a value the setting
    /// cannot take is refused by name.
    pub fn apply(self, scenario: &Scenario, value: f64) -> Result<Scenario, String> {
        let mut changed = scenario.clone();
        let whole = || {
            (value >= 1.0 && value.fract() == 0.0 && value <= 10_000.0)
                .then_some(value as usize)
                .ok_or_else(|| format!("{} = {value}: a whole number from 1 to 10,000", self.name()))
        };
        match self {
            Setting::Workers => changed.engine.workers = whole()?,
            Setting::Concurrency => changed.engine.concurrency = whole()?,
            Setting::SesRate => {
                let rate = PositiveRate::try_from(value).map_err(|why| format!("{}: {why}", self.name()))?;
                let mut found = false;
                for spec in &mut changed.faults {
                    if let Fault::SesQuota { max_send_rate, .. } = &mut spec.fault {
                        *max_send_rate = rate;
                        found = true;
                    }
                }
                if !found {
                    changed.faults.push(FaultSpec {
                        start_secs: 0.0,
                        duration_secs: None,
                        until: Some(FaultEnd::End),
                        fault: Fault::SesQuota {
                            max_send_rate: rate,
                            daily_quota: None,
                            day_secs: None,
                        },
                    });
                }
            }
        }
        Ok(changed)
    }
}

/// What a sweep needs.
#[derive(Debug)]
pub struct SweepOptions {
    pub scenario: PathBuf,
    pub setting: Setting,
    /// The values, each run once; sorted and deduplicated before running.
    pub values: Vec<f64>,
    pub profile: Profile,
    /// The price card; the built-in one when unset.
    pub pricing: Option<PathBuf>,
    pub out_dir: PathBuf,
    /// Runs at once; the machine's cores when 0.
    pub jobs: usize,
}

/// Runs the sweep, writes each run's results and reports and the sweep's
/// own `sweep.json` and `sweep.html`; gives the sweep and where it went.
pub async fn sweep(options: SweepOptions) -> Result<(Sweep, PathBuf), HarnessError> {
    let wall = std::time::Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339();
    let scenario = Scenario::load(&options.scenario)?;
    let pricing = Arc::new(match &options.pricing {
        Some(card) => PriceCard::load(card)?,
        None => PriceCard::builtin(),
    });
    let mut values = options.values.clone();
    values.sort_by(f64::total_cmp);
    values.dedup();
    let runs = values
        .iter()
        .map(|value| point_run(&options, &scenario, *value, &pricing))
        .collect::<Result<Vec<_>, _>>()?;
    let jobs = match options.jobs {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut points = Vec::with_capacity(runs.len());
    let mut pending = runs.into_iter();
    loop {
        let wave: Vec<_> = pending.by_ref().take(jobs).collect();
        if wave.is_empty() {
            break;
        }
        let handles: Vec<_> = wave
            .into_iter()
            .map(|(value, run, dir)| {
                (
                    value,
                    dir,
                    tokio::task::spawn_blocking(move || crate::run::sim::run(run)),
                )
            })
            .collect();
        for (value, dir, handle) in handles {
            let results = handle.await??;
            crate::run::write(results.clone(), &dir)?;
            tracing::info!(
                setting = options.setting.name(),
                value,
                passed = results.passed(),
                "sweep point done"
            );
            points.push(point(value, &results, &dir, &options.out_dir));
        }
    }
    let sweep = Sweep {
        scenario: info(&options, &scenario, Vec::new()),
        setting: options.setting.name().into(),
        unit: options.setting.unit().into(),
        profile: options.profile.name().into(),
        started_at,
        wall_secs: wall.elapsed().as_secs_f64(),
        points,
    };
    let path = write(&sweep, &options.out_dir)?;
    Ok((sweep, path))
}

/// One value's simulated run, and the directory its files go to.
fn point_run(
    options: &SweepOptions,
    scenario: &Scenario,
    value: f64,
    pricing: &PriceCard,
) -> Result<(f64, SimRun, PathBuf), HarnessError> {
    let setting = options.setting;
    let changed = setting.apply(scenario, value).map_err(HarnessError::Sweep)?;
    let value_label = reports::svg::format_number(value);
    let dir = options.out_dir.join(format!("{}-{value_label}", setting.name()));
    std::fs::create_dir_all(&dir).map_err(|source| HarnessError::Write {
        path: dir.clone(),
        source,
    })?;
    let overrides = vec![format!("{} = {value_label}", setting.name())];
    let run = SimRun {
        info: info(options, &changed, overrides),
        plan: scenarios::generate(&changed),
        scenario: changed,
        pricing: pricing.clone(),
        profile: options.profile.clone(),
        live: None,
        progress: None,
    };
    Ok((value, run, dir))
}

fn info(options: &SweepOptions, scenario: &Scenario, overrides: Vec<String>) -> ScenarioInfo {
    ScenarioInfo {
        name: scenario.name.clone(),
        description: scenario.description.clone(),
        file: options.scenario.display().to_string(),
        seed: scenario.seed,
        extra_faults: Vec::new(),
        overrides,
    }
}

/// What one run came to, as the sweep shows it.
pub fn point(value: f64, results: &RunResults, dir: &Path, sweep_dir: &Path) -> SweepPoint {
    let p99 = |priority| {
        results
            .latency_ms
            .get(&priority)
            .filter(|p| p.count > 0)
            .map(|p| p.p99_ms)
    };
    let relative = dir.strip_prefix(sweep_dir).unwrap_or(dir).join("results.json");
    SweepPoint {
        value,
        passed: results.passed(),
        failed: results.slo.iter().filter(|c| !c.pass).map(|c| c.name.clone()).collect(),
        end_to_end_secs: results.total_secs,
        delivered_per_sec: results.delivered_per_sec,
        high_p99_ms: p99(Priority::High),
        low_p99_ms: p99(Priority::Low),
        cost_usd: results.cost.as_ref().map(|c| c.total_usd),
        cost_per_1000_usd: results.cost.as_ref().and_then(|c| c.per_1000_messages_usd),
        lost: results.audit.lost,
        duplicated: results.audit.duplicated,
        ses_throttles: results.simulation.as_ref().map_or(0, |s| s.ses_throttles),
        results: relative.display().to_string(),
    }
}

fn write(sweep: &Sweep, dir: &Path) -> Result<PathBuf, HarnessError> {
    let written = |path: PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|source| HarnessError::Write { path, source })
    };
    let path = dir.join("sweep.json");
    written(path.clone(), serde_json::to_string_pretty(sweep)?)?;
    written(dir.join("sweep.html"), reports::html::render_sweep(sweep))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(name: &str) -> Scenario {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../scenarios")
            .join(name);
        Scenario::load(&path).unwrap()
    }

    #[test]
    fn workers_and_concurrency_take_whole_numbers_only() {
        let base = scenario("baseline.toml");
        assert_eq!(Setting::Workers.apply(&base, 6.0).unwrap().engine.workers, 6);
        assert_eq!(Setting::Concurrency.apply(&base, 3.0).unwrap().engine.concurrency, 3);
        let refused = Setting::Workers.apply(&base, 2.5).unwrap_err();
        assert!(refused.contains("engine.workers"), "{refused}");
        assert!(Setting::Concurrency.apply(&base, 0.0).is_err());
    }

    #[test]
    fn an_ses_rate_replaces_the_scenarios_quota_or_adds_one_that_lasts_the_run() {
        let quota = |s: &Scenario| -> Vec<(f64, Option<FaultEnd>)> {
            s.faults
                .iter()
                .filter_map(|f| match f.fault {
                    Fault::SesQuota { max_send_rate, .. } => Some((max_send_rate.0, f.until)),
                    _ => None,
                })
                .collect()
        };
        let with_quota = scenario("ses-quota-priority.toml");
        let before = quota(&with_quota);
        assert_eq!(before.len(), 1);
        let changed = Setting::SesRate.apply(&with_quota, 35.0).unwrap();
        assert_eq!(quota(&changed), vec![(35.0, before[0].1)]);

        let without = scenario("baseline.toml");
        assert!(quota(&without).is_empty());
        let added = Setting::SesRate.apply(&without, 12.0).unwrap();
        assert_eq!(quota(&added), vec![(12.0, Some(FaultEnd::End))]);
        assert!(Setting::SesRate.apply(&without, 0.0).is_err());
    }

    #[test]
    fn settings_are_named_as_a_scenario_file_spells_them() {
        assert_eq!("workers".parse(), Ok(Setting::Workers));
        assert_eq!("engine.concurrency".parse(), Ok(Setting::Concurrency));
        assert_eq!("ses_rate".parse(), Ok(Setting::SesRate));
        assert!("table_capacity".parse::<Setting>().unwrap_err().contains("ses_rate"));
    }
}
