//! Which priority queue a message goes to.

use crate::config::RoutingRules;
use crate::domain::{MessageKind, Priority};

impl RoutingRules {
    /// An explicit priority (a campaign's column) wins; otherwise the kind's rule.
    pub fn route(&self, kind: MessageKind, explicit: Option<Priority>) -> Priority {
        explicit.unwrap_or(match kind {
            MessageKind::Reminder => self.reminder,
            MessageKind::Offer => self.offer,
            MessageKind::Subscription => self.subscription,
            MessageKind::Campaign => self.campaign,
        })
    }
}

/// The order in which a worker visits the queues: each priority appears as
/// often as its weight, spread out (smooth weighted round-robin, as nginx
/// does), so low gets its share between highs instead of after them.
pub fn weighted_schedule(weights: impl Fn(Priority) -> u32) -> Vec<Priority> {
    let total: i64 = Priority::ALL.iter().map(|p| i64::from(weights(*p))).sum();
    let mut current = [0_i64; 3];
    let mut schedule = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for p in Priority::ALL {
            current[p.index()] += i64::from(weights(p));
        }
        let chosen = Priority::ALL
            .into_iter()
            .max_by_key(|p| (current[p.index()], std::cmp::Reverse(p.index())))
            .expect("three priorities");
        current[chosen.index()] -= total;
        schedule.push(chosen);
    }
    schedule
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_route_by_rule_and_an_explicit_priority_wins() {
        let rules = RoutingRules::default();
        assert_eq!(rules.route(MessageKind::Reminder, None), Priority::High);
        assert_eq!(rules.route(MessageKind::Offer, None), Priority::Medium);
        assert_eq!(rules.route(MessageKind::Subscription, None), Priority::Low);
        assert_eq!(rules.route(MessageKind::Campaign, None), Priority::Low);
        assert_eq!(rules.route(MessageKind::Campaign, Some(Priority::High)), Priority::High);
    }

    #[test]
    fn the_schedule_gives_each_queue_its_weight_and_interleaves_them() {
        let schedule = weighted_schedule(|p| match p {
            Priority::High => 6,
            Priority::Medium => 3,
            Priority::Low => 1,
        });
        assert_eq!(schedule.len(), 10);
        let count = |p| schedule.iter().filter(|s| **s == p).count();
        assert_eq!(
            (count(Priority::High), count(Priority::Medium), count(Priority::Low)),
            (6, 3, 1)
        );
        assert_eq!(schedule[0], Priority::High, "high is served first");
        let longest_high_run = schedule
            .split(|p| *p != Priority::High)
            .map(<[Priority]>::len)
            .max()
            .unwrap();
        assert!(longest_high_run <= 2, "highs are spread out: {schedule:?}");
    }

    #[test]
    fn a_zero_weight_queue_is_never_scheduled() {
        let schedule = weighted_schedule(|p| if p == Priority::Low { 0 } else { 1 });
        assert_eq!(schedule, vec![Priority::High, Priority::Medium]);
    }
}
