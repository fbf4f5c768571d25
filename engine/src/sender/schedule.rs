//! How the senders spend what the bottleneck allows, as pure functions of
//! state and time: no I/O, no clock (time is a `Duration` since an origin the
//! caller picks), so every rule is a unit test and the same code can run on
//! simulated time. [`super::dispatch`] applies them.
//!
//! Two budgets, one allocation rule:
//! - [`RateBudget`]: sends per second, paced to the SES account's sending rate
//!   (`MaxSendRate` × this engine's share, a little under it so the account's
//!   own bucket is never emptied). A throttle that still comes back (another
//!   sender on the account, a lowered quota) cuts the rate multiplicatively
//!   and it recovers additively (AIMD, as TCP does); a daily quota that runs
//!   out pauses sending until it resets.
//! - An in-flight budget: when the local stack rather than SES is the
//!   bottleneck, how many sends may run at once, and how few of them may be
//!   background work (medium, low) while reminders are flowing.
//! - [`Allocator`]: who gets the next send. High takes what it needs first;
//!   medium and low share the rest by weight; low is guaranteed a minimum
//!   share whenever it has work, so it is never starved; what high does not
//!   use flows down at once (high is only chosen when it is waiting).

use std::time::Duration;

use crate::domain::{PerPriority, Priority, SendId};

/// An SES account's sending limits, as `GetAccount` (v2) or `GetSendQuota`
/// (v1) report them. `None` is "no limit" (AWS reports -1 for an unlimited
/// daily quota; the local stack's SES v2 emulators enforce none).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SendQuota {
    pub max_send_rate: Option<f64>,
    pub max_24_hour_send: Option<f64>,
    pub sent_last_24_hours: f64,
}

impl SendQuota {
    /// From the provider's three figures; zero or negative limits mean none.
    pub fn from_figures(max_send_rate: f64, max_24_hour_send: f64, sent_last_24_hours: f64) -> Self {
        let limit = |value: f64| (value.is_finite() && value > 0.0).then_some(value);
        Self {
            max_send_rate: limit(max_send_rate),
            max_24_hour_send: limit(max_24_hour_send),
            sent_last_24_hours: sent_last_24_hours.max(0.0),
        }
    }

    /// Whether the daily quota is used up.
    pub fn exhausted(&self) -> bool {
        self.max_24_hour_send.is_some_and(|max| self.sent_last_24_hours >= max)
    }
}

/// The pacer runs this far under the account's rate, so jitter between the
/// engine and SES never empties SES's own one-second bucket.
pub const HEADROOM: f64 = 0.97;
/// Tokens kept at most, in seconds of the current rate (at least one send).
const BURST_SECS: f64 = 0.2;
/// A throttle keeps this much of the rate.
const CUT: f64 = 0.7;
/// At most one cut per this long: one burst of throttles is one signal.
const CUT_GAP: Duration = Duration::from_secs(1);
/// The rate never falls below this share of its ceiling.
const FLOOR: f64 = 0.1;
/// After a cut, the rate climbs back to its ceiling in about this long.
const RECOVERY_SECS: f64 = 20.0;

/// Which part of the rate budget's bucket a send may draw on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Draw {
    /// A reminder, or a send of low's guaranteed share: any send in the bucket.
    Urgent,
    /// Other background work: only what a burst of reminders would not need.
    Background,
}

/// Sends per second the senders may spend, paced, cut on throttles and
/// recovered gradually, paused while a daily quota is used up.
#[derive(Debug, Clone, PartialEq)]
pub struct RateBudget {
    /// The most it may spend (quota × share × headroom); `None`: no rate limit.
    ceiling: Option<f64>,
    rate: f64,
    tokens: f64,
    at: Duration,
    last_cut: Option<Duration>,
    paused_until: Option<Duration>,
    throttles: u64,
}

impl Default for RateBudget {
    fn default() -> Self {
        Self::new(None, Duration::ZERO)
    }
}

impl RateBudget {
    pub fn new(ceiling: Option<f64>, now: Duration) -> Self {
        let rate = ceiling.unwrap_or(0.0);
        Self {
            ceiling,
            rate,
            tokens: burst(rate),
            at: now,
            last_cut: None,
            paused_until: None,
            throttles: 0,
        }
    }

    /// The sends per second allowed now (`None`: no rate limit).
    pub fn rate(&self) -> Option<f64> {
        self.ceiling.map(|_| self.rate)
    }

    pub fn ceiling(&self) -> Option<f64> {
        self.ceiling
    }

    /// Throttles reported back so far.
    pub fn throttles(&self) -> u64 {
        self.throttles
    }

    /// Until when sending is paused (a daily quota used up).
    pub fn paused_until(&self, now: Duration) -> Option<Duration> {
        self.paused_until.filter(|until| *until > now)
    }

    /// A new ceiling (the quota was read again, or overridden). A lower one
    /// takes effect at once; a higher one is climbed to gradually, as after a cut.
    pub fn set_ceiling(&mut self, ceiling: Option<f64>, now: Duration) {
        self.refill(now);
        match (self.ceiling, ceiling) {
            (None, Some(new)) => {
                self.rate = new;
                self.tokens = self.tokens.min(burst(new));
            }
            (Some(_), Some(new)) => self.rate = self.rate.min(new),
            (_, None) => {}
        }
        self.ceiling = ceiling;
    }

    /// Takes one send if the budget has it; otherwise says how long until it
    /// will. [`Draw::Background`] sends take only from a bucket within half a
    /// send of full, so all of it but one send (and that half) is a reserve
    /// for reminders: a burst of them arriving while background sends use up
    /// the rate finds sends ready instead of waiting one send's time each
    /// (with a reserve of one send, `ses-quota-priority`'s reminders waited
    /// up to 100 ms for a permit, p99 38 ms). The reserve is filled once and
    /// then costs nothing in throughput: background sends still get every
    /// send reminders leave. A send of low's guaranteed share draws on the
    /// reserve too ([`Draw::Urgent`]), or every reminder behind it would wait
    /// for the bucket to fill.
    pub fn try_take(&mut self, now: Duration, draw: Draw) -> Result<(), Duration> {
        if let Some(until) = self.paused_until(now) {
            return Err(until - now);
        }
        let Some(_) = self.ceiling else { return Ok(()) };
        self.refill(now);
        // Half a send under full, not full: a background send asking a
        // little late would find the bucket capped and the rate meanwhile lost.
        let needed = match draw {
            Draw::Urgent => 1.0,
            Draw::Background => (burst(self.rate) - 0.5).max(1.0),
        };
        if self.tokens >= needed {
            self.tokens -= 1.0;
            return Ok(());
        }
        let missing = needed - self.tokens;
        Err(Duration::from_secs_f64(missing / self.rate.max(f64::MIN_POSITIVE)).max(Duration::from_millis(1)))
    }

    /// SES said "slow down": cut the rate (once per [`CUT_GAP`]).
    pub fn throttled(&mut self, now: Duration) {
        self.throttles += 1;
        self.refill(now);
        let Some(ceiling) = self.ceiling else { return };
        if self.last_cut.is_some_and(|at| now.saturating_sub(at) < CUT_GAP) {
            return;
        }
        self.rate = (self.rate * CUT).max(ceiling * FLOOR);
        self.tokens = self.tokens.min(burst(self.rate));
        self.last_cut = Some(now);
    }

    /// The daily quota is used up: no sends until `until`.
    pub fn pause_until(&mut self, until: Duration) {
        self.paused_until = Some(until);
        self.tokens = 0.0;
    }

    /// Sending may go on (the quota reset, or was raised).
    pub fn resume(&mut self) {
        self.paused_until = None;
    }

    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.at = now.max(self.at);
        let Some(ceiling) = self.ceiling else { return };
        let calm = self.last_cut.is_none_or(|at| now.saturating_sub(at) >= CUT_GAP);
        if calm && self.rate < ceiling {
            self.rate = (self.rate + ceiling / RECOVERY_SECS * elapsed).min(ceiling);
        }
        self.tokens = (self.tokens + self.rate * elapsed).min(burst(self.rate));
    }
}

fn burst(rate: f64) -> f64 {
    (rate * BURST_SECS).max(1.0)
}

/// How the senders' budget is shared between priorities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shares {
    /// Medium and low share what high leaves by these weights (high's is unused).
    pub weights: PerPriority<u32>,
    /// Low's guaranteed share of all sends while it has work, 0–1.
    pub low_min_share: f64,
    /// Sends in flight at most (the stack's concurrency budget).
    pub max_in_flight: usize,
    /// Medium and low sends in flight at most while reminders are flowing.
    pub background_in_flight: usize,
}

/// How long after its last grant high still counts as flowing. Reminders
/// arrive at random: at 4/s, one gap in fifty is longer than a second, and
/// with a one-second memory (until 2026-12-04) background work took the whole
/// in-flight budget in such a gap, so the next reminder met twenty
/// background sends in the emulators: 120-140 ms in four `priority-isolation`
/// runs of six, against 15-25 ms for the others under the same flood.
pub const HIGH_ACTIVE: Duration = Duration::from_secs(5);
/// Grants are remembered with this half-life when sharing by weight.
const HALF_LIFE_SECS: f64 = 5.0;
/// Sends low may be owed at most: what it catches up at once after it had
/// nothing waiting.
const LOW_OWED_MAX: f64 = 2.0;

/// Chooses who gets the next send; remembers recent grants to keep shares.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocator {
    shares: Shares,
    /// Grants, decayed with [`HALF_LIFE_SECS`].
    recent: PerPriority<f64>,
    /// Sends low is owed of its guaranteed share: each grant adds the share,
    /// each of low's takes one. Never below zero: what low got beyond its
    /// share (high was idle) is not banked against a later flood, so the
    /// share holds in every few seconds, not only on average.
    low_owed: f64,
    at: Duration,
    high_granted_at: Option<Duration>,
}

impl Allocator {
    pub fn new(shares: Shares) -> Self {
        Self {
            shares,
            recent: PerPriority::default(),
            low_owed: 0.0,
            at: Duration::ZERO,
            high_granted_at: None,
        }
    }

    pub fn shares(&self) -> &Shares {
        &self.shares
    }

    /// Whether reminders are flowing: one waits, or one was granted lately.
    pub fn high_active(&self, waiting: &PerPriority<usize>, now: Duration) -> bool {
        waiting.high > 0
            || self
                .high_granted_at
                .is_some_and(|at| now.saturating_sub(at) < HIGH_ACTIVE)
    }

    /// How many of priority `p` may be in flight now.
    pub fn in_flight_limit(&self, priority: Priority, waiting: &PerPriority<usize>, now: Duration) -> usize {
        match priority {
            Priority::High => self.shares.max_in_flight,
            _ if self.high_active(waiting, now) => self.shares.background_in_flight.min(self.shares.max_in_flight),
            _ => self.shares.max_in_flight,
        }
    }

    /// Who gets the next send among those `waiting`, given what is `in_flight`;
    /// `None` when nobody may go now.
    pub fn choose(
        &self,
        waiting: &PerPriority<usize>,
        in_flight: &PerPriority<usize>,
        now: Duration,
    ) -> Option<Priority> {
        let total_in_flight: usize = in_flight.iter().map(|(_, n)| n).sum();
        if total_in_flight >= self.shares.max_in_flight {
            return None;
        }
        let background = in_flight.medium + in_flight.low;
        let may =
            |p: Priority| waiting[p] > 0 && (p == Priority::High || background < self.in_flight_limit(p, waiting, now));
        // Low owed a send of its guaranteed share goes first.
        if may(Priority::Low) && self.owes_low() {
            return Some(Priority::Low);
        }
        if may(Priority::High) {
            return Some(Priority::High);
        }
        // Medium and low by weight: the one furthest behind its share.
        let recent = self.decayed(now);
        [Priority::Medium, Priority::Low]
            .into_iter()
            .filter(|p| may(*p))
            .min_by(|a, b| {
                let behind = |p: Priority| recent[p] / f64::from(self.shares.weights[p].max(1));
                behind(*a).total_cmp(&behind(*b))
            })
    }

    /// Whether low is owed a send of its guaranteed share (it goes first).
    fn owes_low(&self) -> bool {
        self.low_owed >= 1.0
    }

    /// What a send of `priority` granted now may draw on in the rate budget:
    /// a reminder or a send of low's guaranteed share, the whole bucket.
    pub fn draw(&self, priority: Priority) -> Draw {
        match priority {
            Priority::High => Draw::Urgent,
            Priority::Low if self.owes_low() => Draw::Urgent,
            _ => Draw::Background,
        }
    }

    /// Records a grant to `priority` at `now`.
    pub fn granted(&mut self, priority: Priority, now: Duration) {
        self.recent = self.decayed(now);
        self.at = now.max(self.at);
        self.recent[priority] += 1.0;
        let taken = if priority == Priority::Low { 1.0 } else { 0.0 };
        self.low_owed = (self.low_owed + self.shares.low_min_share - taken).clamp(0.0, LOW_OWED_MAX);
        if priority == Priority::High {
            self.high_granted_at = Some(now);
        }
    }

    fn decayed(&self, now: Duration) -> PerPriority<f64> {
        let factor = 0.5_f64.powf(now.saturating_sub(self.at).as_secs_f64() / HALF_LIFE_SECS);
        self.recent.map(|_, n| n * factor)
    }
}

/// Reminders on their way through the pipeline, so background work makes
/// way for them ([`crate::pipeline::HighActivity::make_way`]).
///
/// When the local stack rather than SES is the bottleneck, a reminder's
/// eight or so calls queue in the emulators behind whatever background work
/// is there: measured in `priority-isolation`, dynoxide's `UpdateItem` went
/// from p95 1.7 to 11.7 ms and LocalStack's `SendMessage` from 4.8 to
/// 28.7 ms between one call in flight and eight. Fewer background sends in
/// flight did not keep them (one in flight still doubled reminders' mean).
/// So from a reminder's acceptance until SES has taken it, background work
/// starts no new call: the reminder meets only the calls already under way.
///
/// Two bounds keep background work from being held hostage: a reminder is
/// waited for at most [`PASSAGE_MAX`] (one waiting out a backoff holds
/// nothing), and the gate is closed at most [`CLOSED_MAX`] at a stretch,
/// then open at least [`OPEN_MIN`], so reminders back to back leave
/// background work at least a third of the time.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Passage {
    /// Reminders passing, with when each was accepted.
    passing: Vec<(SendId, Duration)>,
    /// Since when the gate has been closed without a break.
    closed_since: Option<Duration>,
}

/// A reminder not through in this long no longer holds background work.
pub const PASSAGE_MAX: Duration = Duration::from_millis(100);
/// The gate is closed at most this long at a stretch…
pub const CLOSED_MAX: Duration = Duration::from_millis(100);
/// …and then open at least this long.
pub const OPEN_MIN: Duration = Duration::from_millis(50);

impl Passage {
    /// A reminder was accepted at `now`.
    pub fn arrived(&mut self, send_id: SendId, now: Duration) {
        // Those given up on go here too: with no background work asking,
        // nothing else would drop a reminder that never passed.
        self.forget_given_up(now);
        self.passing.push((send_id, now));
    }

    /// SES has taken the reminder (or it was given up).
    pub fn passed(&mut self, send_id: SendId) {
        self.passing.retain(|(id, _)| *id != send_id);
    }

    /// How long background work holds from `now` before it asks again;
    /// `None`: it may go.
    pub fn hold(&mut self, now: Duration) -> Option<Duration> {
        self.forget_given_up(now);
        let Some(oldest) = self.passing.iter().map(|(_, at)| *at).min() else {
            self.closed_since = None;
            return None;
        };
        let mut since = *self.closed_since.get_or_insert(now);
        let closed = now.saturating_sub(since);
        if closed >= CLOSED_MAX + OPEN_MIN {
            since = now;
            self.closed_since = Some(now);
        } else if closed >= CLOSED_MAX {
            return None;
        }
        let until = (oldest + PASSAGE_MAX).min(since + CLOSED_MAX);
        Some(until.saturating_sub(now).max(Duration::from_millis(1)))
    }

    /// Drops the reminders accepted [`PASSAGE_MAX`] or more before `now`.
    fn forget_given_up(&mut self, now: Duration) {
        self.passing.retain(|(_, at)| *at + PASSAGE_MAX > now);
    }
}

/// Whether campaign ingest, held back while reminders flow, is starving the
/// medium and low senders: their receives come back short of what they
/// asked for (their queues have run dry) while campaign chunks wait for a
/// turn. Ingest then sets the senders' pace, and holding it back protects
/// the reminders from nothing the senders would not do anyway. So each
/// [`STARVED_STEP`] it lasts, one more chunk may go at once; each step the
/// receives come back mostly full (a backlog has formed), one fewer. Like
/// TCP's window, the number settles where the queues are just kept fed.
///
/// A share of short receives, not the last one, judges it: with many
/// fetchers on a shallow queue, some come back full now and then.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Starvation {
    /// Exponentially weighted share of recent receives that came back short.
    short_share: f64,
    /// Chunks that may go at once beyond the usual number.
    extra: usize,
    /// When `extra` last changed.
    changed_at: Duration,
    /// Since when the senders have been starved while chunks waited.
    since: Option<Duration>,
}

/// Each receive's weight in [`Starvation`]'s share of short receives.
const SHORT_WEIGHT: f64 = 0.1;
/// How often [`Starvation`]'s number of extra chunks may change by one.
pub const STARVED_STEP: Duration = Duration::from_secs(1);

impl Starvation {
    /// A medium or low receive came back at `now`, `short` of what it asked for or not.
    pub fn received(&mut self, short: bool, now: Duration) {
        let short = if short { 1.0 } else { 0.0 };
        self.short_share += SHORT_WEIGHT * (short - self.short_share);
        if self.starved() {
            return;
        }
        self.since = None;
        if self.extra > 0 && self.step_due(now) {
            self.extra -= 1;
            self.changed_at = now;
        }
    }

    /// A campaign chunk waits for a turn at `now`; at most `most` extra
    /// chunks. The first comes a whole step after the starving began.
    pub fn held_back(&mut self, now: Duration, most: usize) {
        if !self.starved() {
            return;
        }
        let since = *self.since.get_or_insert(now);
        if self.extra < most && self.step_due(now) && now.saturating_sub(since) >= STARVED_STEP {
            self.extra += 1;
            self.changed_at = now;
        }
    }

    /// How many more chunks than usual may go at once.
    pub fn extra_turns(&self) -> usize {
        self.extra
    }

    fn step_due(&self, now: Duration) -> bool {
        now.saturating_sub(self.changed_at) >= STARVED_STEP
    }

    fn starved(&self) -> bool {
        self.short_share > 0.5
    }
}

/// SES's door. SES counts a send against its rate as the request arrives,
/// in a bucket about a second deep, and a permit granted in time can reach
/// it late: a claim write held up (a throttled index partition, a slow
/// store) releases the sends granted meanwhile together, and a bunch larger
/// than SES's bucket is throttled. The door is a bucket of the same depth
/// filled at the budget's ceiling (below SES's rate): a send waits only when
/// it is empty, so paced sends and small bursts go at once (a reminder does
/// not queue behind background sends) and no bunch empties SES's bucket.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Door {
    /// Sends the door lets through now (negative: promised to waiting sends);
    /// `None` until the first send, when the bucket is full.
    tokens: Option<f64>,
    at: Duration,
}

impl Door {
    /// How long a send arriving at `now` waits before it goes (none without
    /// a rate limit).
    pub fn pass(&mut self, now: Duration, ceiling: Option<f64>) -> Duration {
        let Some(rate) = ceiling.filter(|rate| *rate > 0.0) else {
            return Duration::ZERO;
        };
        let depth = rate.max(1.0);
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        let tokens = self.tokens.map_or(depth, |t| (t + elapsed * rate).min(depth)) - 1.0;
        self.tokens = Some(tokens);
        self.at = self.at.max(now);
        if tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-tokens / rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paced_sends_and_small_bursts_pass_the_door_at_once_and_a_bunch_leaves_paced() {
        let mut door = Door::default();
        let depth = 10;
        let first: Vec<Duration> = (0..depth).map(|_| door.pass(ms(0), Some(10.0))).collect();
        assert!(first.iter().all(|wait| wait.is_zero()), "a full bucket: {first:?}");
        assert_eq!(
            [ms(0), ms(0), ms(0)].map(|now| door.pass(now, Some(10.0))),
            [ms(100), ms(200), ms(300)],
            "past the bucket, 100 ms apart"
        );
        let mut door = Door::default();
        let paced: Vec<Duration> = (0..50).map(|i| door.pass(ms(100 * i), Some(10.0))).collect();
        assert!(paced.iter().all(|wait| wait.is_zero()), "at the rate: never");
        assert_eq!(door.pass(ms(100), None), ms(0), "no rate limit: no door");
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn background_work_holds_while_a_reminder_passes_and_goes_once_ses_has_it() {
        let mut passage = Passage::default();
        assert_eq!(passage.hold(ms(0)), None, "no reminder: go");
        let reminder = SendId::new();
        passage.arrived(reminder, ms(10));
        assert_eq!(
            passage.hold(ms(12)),
            Some(ms(98)),
            "until the reminder would be given up on"
        );
        passage.passed(reminder);
        assert_eq!(passage.hold(ms(25)), None, "through: go at once");
    }

    #[test]
    fn a_reminder_that_does_not_pass_holds_background_work_no_longer_than_its_passage() {
        let mut passage = Passage::default();
        passage.arrived(SendId::new(), ms(0));
        assert!(passage.hold(ms(60)).is_some());
        assert_eq!(
            passage.hold(ms(100)),
            None,
            "a reminder waiting out a backoff holds nothing"
        );
        for t in 0..1_000 {
            passage.arrived(SendId::new(), ms(200 + t));
        }
        assert_eq!(passage.passing.len(), 100, "only those of the last 100 ms are kept");
    }

    #[test]
    fn reminders_back_to_back_leave_background_work_a_third_of_the_time() {
        let mut passage = Passage::default();
        let mut open = 0;
        for t in 0..3_000 {
            // A reminder every 5 ms, each through in 20 ms.
            if t % 5 == 0 {
                passage.arrived(SendId::new(), ms(t));
            }
            if t % 5 == 0 && t >= 20 {
                let oldest = passage.passing[0].0;
                passage.passed(oldest);
            }
            if passage.hold(ms(t)).is_none() {
                open += 1;
            }
        }
        assert!((950..=1_050).contains(&open), "open {open} of 3,000 ms");
    }

    fn shares() -> Shares {
        Shares {
            weights: PerPriority {
                high: 6,
                medium: 3,
                low: 1,
            },
            low_min_share: 0.1,
            max_in_flight: 20,
            background_in_flight: 4,
        }
    }

    fn waiting(high: usize, medium: usize, low: usize) -> PerPriority<usize> {
        PerPriority { high, medium, low }
    }

    /// Grants `n` sends, each to whoever the allocator chooses, one every `every`.
    fn run(allocator: &mut Allocator, wait: PerPriority<usize>, n: usize, every: Duration) -> PerPriority<usize> {
        let mut counts = PerPriority::<usize>::default();
        let none = PerPriority::default();
        for i in 0..n {
            let now = every * i as u32;
            let chosen = allocator.choose(&wait, &none, now).expect("someone may go");
            allocator.granted(chosen, now);
            counts[chosen] += 1;
        }
        counts
    }

    #[test]
    fn a_budget_paces_to_its_rate_after_a_small_burst() {
        let mut budget = RateBudget::new(Some(10.0), Duration::ZERO);
        assert_eq!(
            budget.try_take(Duration::ZERO, Draw::Urgent),
            Ok(()),
            "a burst of 0.2 s = 2 sends"
        );
        assert_eq!(budget.try_take(Duration::ZERO, Draw::Urgent), Ok(()));
        let wait = budget.try_take(Duration::ZERO, Draw::Urgent).unwrap_err();
        assert_eq!(wait, ms(100), "then one every 1/10 s");
        let mut taken = 0;
        for step in 1..=1000 {
            if budget.try_take(ms(step), Draw::Urgent).is_ok() {
                taken += 1;
            }
        }
        assert_eq!(taken, 10, "ten in the next second");
    }

    #[test]
    fn background_sends_take_only_from_a_nearly_full_bucket_so_a_burst_of_reminders_finds_sends_ready() {
        let mut budget = RateBudget::new(Some(20.0), Duration::ZERO);
        // A bucket of 4: low takes one and leaves the other three (it takes
        // at 3.5 sends or more).
        let low_taken = (0..10)
            .filter(|_| budget.try_take(Duration::ZERO, Draw::Background).is_ok())
            .count();
        assert_eq!(low_taken, 1);
        for reminder in 1..=3 {
            assert_eq!(
                budget.try_take(Duration::ZERO, Draw::Urgent),
                Ok(()),
                "reminder {reminder} of the burst does not wait"
            );
        }
        assert!(budget.try_take(Duration::ZERO, Draw::Urgent).is_err());
        // Low waits until the bucket is nearly full again: 3.5 sends' time.
        let wait = budget.try_take(Duration::ZERO, Draw::Background).unwrap_err();
        assert_eq!(wait, Duration::from_millis(175));
        // Over the next second, low gets the whole rate less the three.
        let mut low = 0;
        for step in 1..=1000 {
            if budget.try_take(ms(step), Draw::Background).is_ok() {
                low += 1;
            }
        }
        assert_eq!(low, 17);
        let mut slow = RateBudget::new(Some(2.0), Duration::ZERO);
        assert_eq!(
            slow.try_take(Duration::ZERO, Draw::Background),
            Ok(()),
            "no reserve in a bucket of one"
        );
    }

    #[test]
    fn background_sends_get_the_rate_reminders_leave_at_rates_whose_bucket_is_not_a_round_number() {
        // (Under 7.5/s the bucket holds under a send and a half: no reserve.)
        for rate in [19.4, 48.5, 58.2, 0.97 * 14.0] {
            let mut budget = RateBudget::new(Some(rate), Duration::ZERO);
            let (mut high, mut low) = (0, 0);
            for step in 0..10_000 {
                // A reminder every 250 ms, background sends asking every millisecond.
                if step % 250 == 0 && budget.try_take(ms(step), Draw::Urgent).is_ok() {
                    high += 1;
                }
                if budget.try_take(ms(step), Draw::Background).is_ok() {
                    low += 1;
                }
            }
            let expected = rate * 10.0 - f64::from(high);
            assert_eq!(high, 40, "at {rate}/s every reminder went at once");
            assert!(
                (f64::from(low) - expected).abs() <= 2.0,
                "at {rate}/s low got {low}, the rate left {expected:.1}"
            );
        }
    }

    #[test]
    fn a_budget_without_a_ceiling_never_makes_anyone_wait() {
        let mut budget = RateBudget::new(None, Duration::ZERO);
        for _ in 0..1000 {
            assert_eq!(budget.try_take(Duration::ZERO, Draw::Urgent), Ok(()));
        }
        assert_eq!(budget.rate(), None);
    }

    #[test]
    fn a_throttle_cuts_the_rate_once_per_burst_and_it_climbs_back_to_the_ceiling() {
        let mut budget = RateBudget::new(Some(100.0), Duration::ZERO);
        budget.throttled(ms(1000));
        assert_eq!(budget.rate(), Some(70.0));
        budget.throttled(ms(1500));
        assert_eq!(budget.rate(), Some(70.0), "the same burst: one cut");
        budget.throttled(ms(2000));
        // Calm since 1.5 s: +5/s for 0.5 s, then the cut.
        assert!(
            (budget.rate().unwrap() - 72.5 * 0.7).abs() < 1e-9,
            "a second burst cuts again"
        );
        budget.try_take(ms(7000), Draw::Urgent).unwrap();
        let climbed = budget.rate().unwrap();
        assert!((climbed - (50.75 + 25.0)).abs() < 1e-6, "5 s at +5/s: {climbed}");
        budget.try_take(ms(60_000), Draw::Urgent).unwrap();
        assert_eq!(budget.rate(), Some(100.0), "never above its ceiling");
        assert_eq!(budget.throttles(), 3);
    }

    #[test]
    fn a_budget_throttled_every_second_settles_low_but_never_below_its_floor() {
        let mut budget = RateBudget::new(Some(50.0), Duration::ZERO);
        for second in 1..100 {
            budget.throttled(Duration::from_secs(second));
            assert!(budget.rate().unwrap() >= 5.0, "{:?}", budget.rate());
        }
        // x = (x + 2.5) × 0.7: the cut and a second's recovery balance.
        assert!((budget.rate().unwrap() - 5.833).abs() < 0.01, "{:?}", budget.rate());
        let mut floored = RateBudget::new(Some(50.0), Duration::ZERO);
        for step in 1..200 {
            floored.throttled(Duration::from_millis(1000 * step));
            floored.set_ceiling(Some(50.0), Duration::from_millis(1000 * step));
        }
        assert!(floored.rate().unwrap() >= 5.0);
    }

    #[test]
    fn a_lower_ceiling_applies_at_once_and_a_higher_one_is_climbed_to() {
        let mut budget = RateBudget::new(Some(100.0), Duration::ZERO);
        budget.set_ceiling(Some(20.0), ms(10));
        assert_eq!(budget.rate(), Some(20.0));
        budget.set_ceiling(Some(40.0), ms(20));
        assert_eq!(budget.rate(), Some(20.0));
        budget.try_take(ms(10_020), Draw::Urgent).unwrap();
        assert_eq!(budget.rate(), Some(40.0), "10 s at +2/s");
    }

    #[test]
    fn a_paused_budget_says_how_long_until_it_resumes() {
        let mut budget = RateBudget::new(None, Duration::ZERO);
        budget.pause_until(Duration::from_secs(60));
        assert_eq!(
            budget.try_take(Duration::from_secs(20), Draw::Urgent),
            Err(Duration::from_secs(40))
        );
        assert_eq!(
            budget.paused_until(Duration::from_secs(20)),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            budget.try_take(Duration::from_secs(61), Draw::Urgent),
            Ok(()),
            "the pause ends by itself"
        );
        budget.pause_until(Duration::from_secs(120));
        budget.resume();
        assert_eq!(budget.try_take(Duration::from_secs(62), Draw::Urgent), Ok(()));
    }

    #[test]
    fn a_quota_reads_zero_and_negative_limits_as_none() {
        let quota = SendQuota::from_figures(-1.0, -1.0, 5.0);
        assert_eq!(quota.max_send_rate, None);
        assert!(!quota.exhausted());
        let used_up = SendQuota::from_figures(14.0, 200.0, 200.0);
        assert_eq!(used_up.max_send_rate, Some(14.0));
        assert!(used_up.exhausted());
    }

    #[test]
    fn high_goes_first_but_low_keeps_its_guaranteed_share() {
        let mut allocator = Allocator::new(shares());
        let counts = run(&mut allocator, waiting(50, 50, 50), 1000, ms(10));
        assert_eq!(counts.medium, 0, "medium waits while high needs everything");
        assert!((95..=105).contains(&counts.low), "low keeps ~10%: {counts:?}");
        assert_eq!(counts.high, 1000 - counts.low);
    }

    #[test]
    fn low_keeps_its_share_from_the_first_seconds_of_a_flood_whatever_it_had_before() {
        // Ten seconds at 60 sends/s with only low waiting: it takes them all.
        let mut allocator = Allocator::new(shares());
        let every = Duration::from_micros(16_667);
        let before = run(&mut allocator, waiting(0, 0, 50), 600, every);
        assert_eq!(before.low, 600);
        // Then reminders need every send: low's surplus is not held against
        // it, so in the flood's first second it already has its 10 %.
        let mut counts = PerPriority::<usize>::default();
        let none = PerPriority::default();
        for i in 600..660 {
            let now = every * i;
            let chosen = allocator.choose(&waiting(50, 0, 50), &none, now).unwrap();
            allocator.granted(chosen, now);
            counts[chosen] += 1;
        }
        assert!((5..=7).contains(&counts.low), "6 of 60: {counts:?}");
    }

    #[test]
    fn a_send_of_lows_guaranteed_share_draws_on_the_reminders_reserve_and_other_background_sends_do_not() {
        let mut allocator = Allocator::new(shares());
        assert_eq!(allocator.draw(Priority::High), Draw::Urgent);
        assert_eq!(allocator.draw(Priority::Low), Draw::Background);
        assert_eq!(allocator.draw(Priority::Medium), Draw::Background);
        // Eleven reminders granted: low is owed a send of its 10 %, and
        // takes it from any send in the bucket (waiting for a full one would
        // hold up every reminder behind it).
        for i in 0..11 {
            allocator.granted(Priority::High, ms(i));
        }
        let none = PerPriority::default();
        assert_eq!(allocator.choose(&waiting(5, 0, 5), &none, ms(11)), Some(Priority::Low));
        assert_eq!(allocator.draw(Priority::Low), Draw::Urgent);
        assert_eq!(allocator.draw(Priority::Medium), Draw::Background);
        allocator.granted(Priority::Low, ms(11));
        assert_eq!(allocator.draw(Priority::Low), Draw::Background);
    }

    #[test]
    fn without_high_medium_and_low_share_by_weight() {
        let mut allocator = Allocator::new(shares());
        let counts = run(&mut allocator, waiting(0, 50, 50), 1000, ms(10));
        assert_eq!(counts.high, 0);
        assert!((720..=780).contains(&counts.medium), "3:1 → 750: {counts:?}");
    }

    #[test]
    fn what_high_leaves_flows_down_at_once() {
        let mut allocator = Allocator::new(shares());
        run(&mut allocator, waiting(50, 0, 50), 100, ms(10));
        let none = PerPriority::default();
        assert_eq!(
            allocator.choose(&waiting(0, 0, 3), &none, ms(1000)),
            Some(Priority::Low)
        );
        assert_eq!(allocator.choose(&waiting(0, 0, 0), &none, ms(1000)), None);
    }

    #[test]
    fn background_work_in_flight_is_kept_small_while_reminders_flow() {
        let mut allocator = Allocator::new(shares());
        let busy = PerPriority {
            high: 1,
            medium: 0,
            low: 4,
        };
        assert_eq!(
            allocator.choose(&waiting(0, 0, 10), &busy, ms(0)),
            Some(Priority::Low),
            "high idle: all 20"
        );
        allocator.granted(Priority::High, ms(0));
        assert_eq!(
            allocator.choose(&waiting(0, 0, 10), &busy, ms(500)),
            None,
            "4 low in flight is the cap"
        );
        assert_eq!(
            allocator.choose(&waiting(1, 0, 10), &busy, ms(500)),
            Some(Priority::High)
        );
        assert_eq!(
            allocator.choose(&waiting(0, 0, 10), &busy, ms(4_500)),
            None,
            "a gap of seconds between reminders is not their end"
        );
        assert_eq!(
            allocator.choose(&waiting(0, 0, 10), &busy, ms(5_000)),
            Some(Priority::Low),
            "five seconds after the last reminder, low may use everything again"
        );
    }

    #[test]
    fn nobody_goes_past_the_in_flight_budget() {
        let allocator = Allocator::new(shares());
        let full = PerPriority {
            high: 20,
            medium: 0,
            low: 0,
        };
        assert_eq!(allocator.choose(&waiting(5, 5, 5), &full, ms(0)), None);
    }

    #[test]
    fn starved_senders_let_one_more_chunk_go_each_second_chunks_wait_and_one_fewer_each_second_they_have_work() {
        let mut starvation = Starvation::default();
        (0..20).for_each(|i| starvation.received(true, ms(i)));
        assert_eq!(
            starvation.extra_turns(),
            0,
            "short receives, no chunk waiting: nothing to raise"
        );
        starvation.held_back(ms(4_000), 3);
        assert_eq!(starvation.extra_turns(), 0, "a chunk starts waiting: not at once");
        starvation.held_back(ms(5_000), 3);
        assert_eq!(
            starvation.extra_turns(),
            1,
            "starved a whole second while a chunk waits"
        );
        starvation.held_back(ms(5_900), 3);
        assert_eq!(starvation.extra_turns(), 1, "one step a second");
        for at in [6_000, 7_000] {
            starvation.held_back(ms(at), 3);
        }
        assert_eq!(starvation.extra_turns(), 3, "up to the most allowed");
        starvation.received(false, ms(7_100));
        assert_eq!(
            starvation.extra_turns(),
            3,
            "one full receive among short ones is not a backlog"
        );
        (0..10).for_each(|i| starvation.received(false, ms(7_200 + i)));
        assert_eq!(
            starvation.extra_turns(),
            3,
            "mostly full, but the last step was under a second ago"
        );
        starvation.received(false, ms(8_000));
        assert_eq!(starvation.extra_turns(), 2, "a backlog: one fewer");
        starvation.held_back(ms(9_000), 3);
        assert_eq!(
            starvation.extra_turns(),
            2,
            "chunks waiting while the senders have work: not raised"
        );
        starvation.received(false, ms(9_000));
        starvation.received(false, ms(10_000));
        assert_eq!(starvation.extra_turns(), 0);
        starvation.received(false, ms(11_000));
        assert_eq!(starvation.extra_turns(), 0, "never below the usual number");
    }
}
