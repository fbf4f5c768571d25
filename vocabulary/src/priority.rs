//! Priorities, a value per priority, and the six queues.

use std::ops::{Index, IndexMut};

use serde::{Deserialize, Serialize};

/// Which queue a message waits on; high is served first, low is never starved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    High,
    Medium,
    Low,
}

impl Priority {
    /// In the order they are served.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Medium, Priority::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

named_enum!(Priority, "priority");

/// One value per priority, indexed by [`Priority`]; in files it reads as
/// `{ high = …, medium = …, low = … }`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerPriority<T> {
    pub high: T,
    pub medium: T,
    pub low: T,
}

impl<T> PerPriority<T> {
    /// The value of each priority, computed from it.
    pub fn from_fn(mut f: impl FnMut(Priority) -> T) -> Self {
        Self {
            high: f(Priority::High),
            medium: f(Priority::Medium),
            low: f(Priority::Low),
        }
    }

    pub fn map<U>(&self, mut f: impl FnMut(Priority, &T) -> U) -> PerPriority<U> {
        PerPriority::from_fn(|p| f(p, &self[p]))
    }

    /// `(priority, value)` in the order priorities are served.
    pub fn iter(&self) -> impl Iterator<Item = (Priority, &T)> {
        Priority::ALL.into_iter().map(move |p| (p, &self[p]))
    }
}

impl<T> Index<Priority> for PerPriority<T> {
    type Output = T;
    fn index(&self, priority: Priority) -> &T {
        match priority {
            Priority::High => &self.high,
            Priority::Medium => &self.medium,
            Priority::Low => &self.low,
        }
    }
}

impl<T> IndexMut<Priority> for PerPriority<T> {
    fn index_mut(&mut self, priority: Priority) -> &mut T {
        match priority {
            Priority::High => &mut self.high,
            Priority::Medium => &mut self.medium,
            Priority::Low => &mut self.low,
        }
    }
}

/// One of the six queues: each priority's main queue and its dead-letter queue.
/// Spelled `high` and `high-dlq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueRef {
    Main(Priority),
    DeadLetter(Priority),
}

impl QueueRef {
    pub const ALL: [QueueRef; 6] = [
        QueueRef::Main(Priority::High),
        QueueRef::Main(Priority::Medium),
        QueueRef::Main(Priority::Low),
        QueueRef::DeadLetter(Priority::High),
        QueueRef::DeadLetter(Priority::Medium),
        QueueRef::DeadLetter(Priority::Low),
    ];

    pub fn priority(self) -> Priority {
        match self {
            QueueRef::Main(p) | QueueRef::DeadLetter(p) => p,
        }
    }

    pub fn is_dead_letter(self) -> bool {
        matches!(self, QueueRef::DeadLetter(_))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            QueueRef::Main(Priority::High) => "high",
            QueueRef::Main(Priority::Medium) => "medium",
            QueueRef::Main(Priority::Low) => "low",
            QueueRef::DeadLetter(Priority::High) => "high-dlq",
            QueueRef::DeadLetter(Priority::Medium) => "medium-dlq",
            QueueRef::DeadLetter(Priority::Low) => "low-dlq",
        }
    }
}

named_enum!(QueueRef, "queue");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_priority_reads_back_as_it_was_written_in_any_case() {
        for p in Priority::ALL {
            assert_eq!(p.to_string().to_uppercase().parse::<Priority>(), Ok(p));
        }
        let error = "urgent".parse::<Priority>().unwrap_err().to_string();
        assert_eq!(error, "`urgent` is not a priority (high, medium, low)");
    }

    #[test]
    fn per_priority_is_indexed_by_priority_and_reads_as_a_table() {
        let mut limits = PerPriority::from_fn(|p| p.index() * 10);
        limits[Priority::Low] += 1;
        assert_eq!(limits.iter().map(|(_, v)| *v).collect::<Vec<_>>(), [0, 10, 21]);
        let json = serde_json::to_string(&limits).unwrap();
        assert_eq!(json, r#"{"high":0,"medium":10,"low":21}"#);
        assert!(serde_json::from_str::<PerPriority<u32>>(r#"{"high":0,"medium":1,"lo":2}"#).is_err());
    }

    #[test]
    fn queues_key_json_maps_by_their_names() {
        let depths: std::collections::BTreeMap<QueueRef, u64> = QueueRef::ALL.into_iter().map(|q| (q, 1)).collect();
        let json = serde_json::to_value(&depths).unwrap();
        assert_eq!(json["low-dlq"], 1);
        let back: std::collections::BTreeMap<QueueRef, u64> = serde_json::from_value(json).unwrap();
        assert_eq!(back, depths);
    }
}
