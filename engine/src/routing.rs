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
}
