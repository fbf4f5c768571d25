//! The one place the senders' budget is applied: every send waits here for a
//! permit, and the [`schedule`](super::schedule) rules say who gets the next
//! one and when. One dispatcher serves all the workers of an engine, so the
//! account's rate is shared by them, not multiplied.
//!
//! It also keeps the budget in step with the account: [`run_quota_reader`]
//! reads SES's limits at start-up and every `sender.quota_refresh_secs`
//! (more often while a daily quota is used up), and the senders report each
//! throttle and each "daily quota exceeded" back through
//! [`Dispatcher::throttled`] and [`Dispatcher::quota_exhausted`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::schedule::{Allocator, Door, RateBudget, SendQuota, Shares, HEADROOM};
use crate::config::SenderSettings;
use crate::domain::{PerPriority, Priority};
use crate::mailer::Mailer;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

/// Re-checked at least this often while waiting: shares and "high is
/// flowing" change with time alone.
const RECHECK: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct State {
    budget: RateBudget,
    allocator: Allocator,
    waiting: PerPriority<usize>,
    in_flight: PerPriority<usize>,
    /// When the budget's figures were last put in the metrics.
    published_at: Duration,
    door: Door,
}

/// The budget's figures are put in the metrics at least this often while
/// sends are granted (the rate climbs back after a cut with time alone).
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// Grants send permits by priority within the rate and in-flight budgets.
pub struct Dispatcher {
    state: Mutex<State>,
    changed: Notify,
    /// A throttle with no rate known asks the quota reader to read now.
    read_now: Notify,
    origin: Instant,
    settings: SenderSettings,
    metrics: Arc<Metrics>,
}

/// One send in flight; dropping it frees its place.
#[must_use = "the permit is the send's place in flight"]
pub struct SendPermit {
    dispatcher: Arc<Dispatcher>,
    priority: Priority,
}

impl Drop for SendPermit {
    fn drop(&mut self) {
        self.dispatcher.state().in_flight[self.priority] -= 1;
        self.dispatcher.changed.notify_waiters();
    }
}

/// Takes a waiter's place back if it stops waiting before it is granted.
struct Waiting<'a> {
    dispatcher: &'a Dispatcher,
    priority: Priority,
    granted: bool,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if !self.granted {
            self.dispatcher.state().waiting[self.priority] -= 1;
            self.dispatcher.changed.notify_waiters();
        }
    }
}

impl Dispatcher {
    pub fn new(settings: &SenderSettings, metrics: Arc<Metrics>) -> Arc<Self> {
        let max_in_flight = (settings.workers * settings.concurrency).max(1);
        let shares = Shares {
            weights: settings.weights,
            low_min_share: settings.low_min_share,
            max_in_flight,
            background_in_flight: settings
                .background_in_flight
                .unwrap_or(max_in_flight.div_ceil(4))
                .max(1),
        };
        let dispatcher = Arc::new(Self {
            state: Mutex::new(State {
                budget: RateBudget::new(ceiling(settings, None), Duration::ZERO),
                allocator: Allocator::new(shares),
                waiting: PerPriority::default(),
                in_flight: PerPriority::default(),
                published_at: Duration::ZERO,
                door: Door::default(),
            }),
            changed: Notify::new(),
            read_now: Notify::new(),
            origin: Instant::now(),
            settings: settings.clone(),
            metrics,
        });
        dispatcher.publish();
        dispatcher
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("dispatcher lock")
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    /// Waits for a send permit for a message of `priority`; `None` if none
    /// came within `patience` (the caller hands the message back rather than
    /// hold it past its visibility timeout).
    pub async fn acquire(self: &Arc<Self>, priority: Priority, patience: Duration) -> Option<SendPermit> {
        let deadline = Instant::now() + patience;
        self.state().waiting[priority] += 1;
        let mut waiting = Waiting {
            dispatcher: self,
            priority,
            granted: false,
        };
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = match self.try_grant(priority) {
                Ok(()) => {
                    waiting.granted = true;
                    self.changed.notify_waiters();
                    return Some(SendPermit {
                        dispatcher: self.clone(),
                        priority,
                    });
                }
                Err(wait) => wait.min(RECHECK),
            };
            if Instant::now() + wait > deadline {
                return None;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = notified => {}
            }
        }
    }

    /// Waits until a send may go to SES: sends granted in time go through
    /// [`Door`] paced, however long their claims took.
    pub async fn at_the_door(&self) {
        let wait = {
            let now = self.now();
            let mut state = self.state();
            let ceiling = state.budget.ceiling();
            state.door.pass(now, ceiling)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Grants `priority` a permit now if the rules say so; otherwise how long
    /// to wait before asking again.
    fn try_grant(&self, priority: Priority) -> Result<(), Duration> {
        let now = self.now();
        let mut state = self.state();
        let State {
            budget,
            allocator,
            waiting,
            in_flight,
            ..
        } = &mut *state;
        if allocator.choose(waiting, in_flight, now) != Some(priority) {
            return Err(RECHECK);
        }
        budget.try_take(now, allocator.draw(priority))?;
        waiting[priority] -= 1;
        in_flight[priority] += 1;
        allocator.granted(priority, now);
        if now.saturating_sub(state.published_at) >= PUBLISH_EVERY {
            self.publish_locked(&mut state, now);
        }
        Ok(())
    }

    /// How many messages of `priority` a fetcher should receive at once: a
    /// full batch for high, and for medium and low while no rate is known
    /// (the permits, not the fetch, keep background sends few while reminders
    /// flow; a full batch takes a tenth of the receives and deletes, which on
    /// the local stack queue a reminder's own calls behind them). Under a
    /// rate, about what the budget lets them send in a second (less while
    /// reminders flow), so no message waits in hand longer than that.
    pub fn fetch_size(&self, priority: Priority, max: usize) -> usize {
        if priority == Priority::High {
            return max;
        }
        let now = self.now();
        let state = self.state();
        let workers = self.settings.workers.max(1) as f64;
        let high_active = state.allocator.high_active(&state.waiting, now);
        let per_worker = match state.budget.rate() {
            Some(rate) if high_active => rate * state.allocator.shares().low_min_share.max(0.25) / workers,
            Some(rate) => rate / workers,
            None => max as f64,
        };
        (per_worker.ceil() as usize).clamp(1, max)
    }

    /// Until when sending is paused (a daily quota used up), if it is.
    pub fn paused_for(&self) -> Option<Duration> {
        let now = self.now();
        self.state().budget.paused_until(now).map(|until| until - now)
    }

    /// SES said "slow down" to a send: the budget is cut, then recovers.
    /// With no rate known, the account's limits are read again at once (a
    /// quota put in force since the last read).
    pub fn throttled(&self) {
        let now = self.now();
        let mut state = self.state();
        state.budget.throttled(now);
        if state.budget.ceiling().is_none() {
            self.read_now.notify_one();
        }
        drop(state);
        self.publish();
    }

    /// SES said the daily quota is used up: no sends until the quota reader
    /// sees it reset (or for `recheck`, whichever comes first).
    pub fn quota_exhausted(&self, recheck: Duration) {
        let now = self.now();
        let mut state = self.state();
        if state.budget.paused_until(now).is_none() {
            tracing::warn!(
                recheck_secs = recheck.as_secs(),
                "SES daily quota used up: sending paused"
            );
        }
        state.budget.pause_until(now + recheck);
        drop(state);
        self.publish();
    }

    /// The account's limits as read from SES (`None`: the provider has none).
    pub fn set_quota(&self, quota: Option<SendQuota>) {
        let settings = &self.settings;
        let now = self.now();
        let mut state = self.state();
        state.budget.set_ceiling(ceiling(settings, quota), now);
        match quota {
            Some(quota) if quota.exhausted() => state
                .budget
                .pause_until(now + Duration::from_secs(settings.quota_recheck_secs.into())),
            _ if state.budget.paused_until(now).is_some() => {
                tracing::info!("SES daily quota available again: sending resumes");
                state.budget.resume();
            }
            _ => {}
        }
        drop(state);
        self.changed.notify_waiters();
        self.publish();
    }

    /// Puts the budget's figures in the metrics (for /metrics, /stats, reports).
    fn publish(&self) {
        let now = self.now();
        self.publish_locked(&mut self.state(), now);
    }

    fn publish_locked(&self, state: &mut State, now: Duration) {
        state.published_at = now;
        self.metrics.record_budget(vocabulary::stats::Budget {
            rate_per_sec: state.budget.rate(),
            ceiling_per_sec: state.budget.ceiling(),
            throttles: state.budget.throttles(),
            paused_for_secs: state.budget.paused_until(now).map(|until| (until - now).as_secs_f64()),
        });
    }
}

/// The most the senders may spend: the account's rate (the setting's, or
/// what SES reported) × this engine's share × [`HEADROOM`]; `None`: no limit known.
fn ceiling(settings: &SenderSettings, quota: Option<SendQuota>) -> Option<f64> {
    let account_rate = settings.max_send_rate.or(quota.and_then(|q| q.max_send_rate));
    account_rate.map(|rate| rate * settings.rate_share * HEADROOM)
}

/// Keeps the dispatcher's budget in step with the account's limits until
/// `shutdown`: every `sender.quota_refresh_secs`, every
/// `sender.quota_recheck_secs` while a daily quota is used up, and at once
/// when SES throttles while no rate is known. A provider with no limits
/// (SMTP, a dry run) is not asked again.
pub async fn run_quota_reader(pipeline: Pipeline, dispatcher: Arc<Dispatcher>, shutdown: CancellationToken) {
    let settings = pipeline.settings.sender.clone();
    loop {
        let every = match dispatcher.paused_for() {
            Some(_) => settings.quota_recheck_secs,
            None => settings.quota_refresh_secs,
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(every.max(1).into())) => {}
            _ = dispatcher.read_now.notified() => {}
            _ = shutdown.cancelled() => return,
        }
        if dispatcher.refresh(pipeline.mailer.as_ref()).await == Some(None) {
            return;
        }
        // At most one read a second, however many throttles ask for one.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Dispatcher {
    /// Reads the account's limits once and applies them; what was read
    /// (`Some(None)`: the provider has none), or `None` if it could not be read.
    pub async fn refresh(&self, mailer: &dyn Mailer) -> Option<Option<SendQuota>> {
        match mailer.send_quota().await {
            Ok(quota) => {
                tracing::info!(?quota, "SES sending limits read");
                self.set_quota(quota);
                Some(quota)
            }
            Err(error) => {
                tracing::warn!(%error, "could not read SES's sending limits; the budget stays as it was");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dispatcher(rate: f64) -> Arc<Dispatcher> {
        dispatcher_with(rate, Arc::new(Metrics::default()))
    }

    fn dispatcher_with(rate: f64, metrics: Arc<Metrics>) -> Arc<Dispatcher> {
        let settings = SenderSettings {
            max_send_rate: Some(rate),
            workers: 1,
            concurrency: 100,
            ..SenderSettings::default()
        };
        Dispatcher::new(&settings, metrics)
    }

    #[tokio::test(start_paused = true)]
    async fn the_published_budget_follows_its_recovery_after_a_throttle_while_sends_go_on() {
        let metrics = Arc::new(Metrics::default());
        let d = dispatcher_with(100.0, metrics.clone());
        let published = || metrics.counters().budget.rate_per_sec.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        d.throttled();
        let cut = published();
        assert!((cut - 97.0 * 0.7).abs() < 1e-6, "{cut}");
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(d.acquire(Priority::Low, Duration::from_secs(1)).await);
        }
        assert!(
            published() > cut + 10.0,
            "5 s later the figure has climbed: {}",
            published()
        );
    }

    /// Asks for a permit at `priority` and says when it came (ms since `start`).
    fn ask(d: &Arc<Dispatcher>, priority: Priority, start: Instant) -> tokio::task::JoinHandle<(Priority, u128)> {
        let d = d.clone();
        tokio::spawn(async move {
            let permit = d
                .acquire(priority, Duration::from_secs(60))
                .await
                .expect("a permit in time");
            drop(permit);
            (priority, start.elapsed().as_millis())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn under_the_accounts_rate_a_reminder_overtakes_low_sends_already_waiting() {
        let d = dispatcher(10.0);
        let start = Instant::now();
        let lows: Vec<_> = (0..20).map(|_| ask(&d, Priority::Low, start)).collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let high = ask(&d, Priority::High, start).await.unwrap();
        let mut low_times = Vec::new();
        for low in lows {
            low_times.push(low.await.unwrap().1);
        }
        // Paced at 9.7/s: the reminder waits for the next send, not for the 15 lows ahead.
        assert!(high.1 <= 500 + 110, "the reminder was granted at {} ms", high.1);
        let last_low = *low_times.iter().max().unwrap();
        assert!(
            (1_900..2_100).contains(&last_low),
            "21 sends at 9.7/s after a burst of 0.2 s: {last_low} ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn background_fetches_a_full_batch_while_reminders_flow_unless_a_rate_says_less() {
        let unpaced = Dispatcher::new(
            &SenderSettings {
                workers: 2,
                concurrency: 10,
                max_send_rate: None,
                ..SenderSettings::default()
            },
            Arc::new(Metrics::default()),
        );
        let paced = dispatcher(10.0);
        for d in [&unpaced, &paced] {
            drop(
                d.acquire(Priority::High, Duration::from_secs(1))
                    .await
                    .expect("a permit"),
            );
        }
        assert_eq!(
            unpaced.fetch_size(Priority::Low, 10),
            10,
            "the permits hold background back"
        );
        // 9.7 sends/s, of which a quarter for background while reminders flow.
        assert_eq!(paced.fetch_size(Priority::Low, 10), 3);
        assert_eq!(paced.fetch_size(Priority::High, 10), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_used_up_daily_quota_holds_every_send_until_the_quota_is_read_with_room() {
        let d = dispatcher(10.0);
        d.quota_exhausted(Duration::from_secs(600));
        assert!(d.paused_for().is_some());
        assert!(
            d.acquire(Priority::High, Duration::from_secs(5)).await.is_none(),
            "no permit while paused: the caller hands the message back"
        );
        d.set_quota(Some(SendQuota::from_figures(10.0, 1000.0, 10.0)));
        assert_eq!(d.paused_for(), None);
        assert!(d.acquire(Priority::High, Duration::from_secs(5)).await.is_some());
    }
}
