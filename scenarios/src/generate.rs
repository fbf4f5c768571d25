//! Seeded synthetic traffic: the same scenario and seed give the same
//! arrivals and byte-identical CSV files, whatever machine runs them.
//!
//! Arrivals follow a non-homogeneous Poisson process (thinning), so bursts
//! and gaps look like real traffic while the mean follows the arrival shape.

use fake::faker::company::en::CatchPhrase;
use fake::faker::lorem::en::Sentence;
use fake::faker::name::en::{FirstName, LastName};
use fake::Fake;
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use vocabulary::MessageKind;

use crate::model::{ArrivalShape, CampaignSpec, NotificationSpec, RowCount, Scenario};

/// One request the load run makes, at its intended time.
#[derive(Debug, Clone, PartialEq)]
pub struct Arrival {
    /// Seconds after the start of traffic at which it is meant to start.
    pub at_secs: f64,
    pub request: Request,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Campaign {
        file_name: String,
        csv: Vec<u8>,
        /// (file name, bytes) uploaded beside the CSV.
        attachments: Vec<(String, Vec<u8>)>,
        /// Rows the engine should accept (valid and not duplicate).
        valid_rows: u64,
        duplicate_rows: u64,
        invalid_rows: u64,
    },
    Notification {
        kind: MessageKind,
        body: serde_json::Value,
    },
}

impl Request {
    /// Messages this request should lead to (accepted rows or one notification).
    pub fn expected_messages(&self) -> u64 {
        match self {
            Request::Campaign { valid_rows, .. } => *valid_rows,
            Request::Notification { .. } => 1,
        }
    }
}

/// Everything a run will send, in order of intended start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub arrivals: Vec<Arrival>,
}

impl Plan {
    pub fn expected_messages(&self) -> u64 {
        self.arrivals.iter().map(|a| a.request.expected_messages()).sum()
    }
}

/// Independent streams per purpose, so adding a campaign does not shift notification times.
fn stream(seed: u64, purpose: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Arrival times in `[0, duration)` for `shape`, by thinning a Poisson process at the peak rate.
fn arrival_times(shape: &ArrivalShape, duration: f64, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let peak = shape.max_rate();
    let mut times = Vec::new();
    if peak <= 0.0 {
        return times;
    }
    let mut t = 0.0;
    loop {
        let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
        t += -u.ln() / peak;
        if t >= duration {
            return times;
        }
        if rng.random::<f64>() * peak < shape.rate_at(t) {
            times.push(t);
        }
    }
}

/// Picks message kinds by their weights in a scenario's mix.
struct Mix {
    kinds: Vec<MessageKind>,
    weights: WeightedIndex<f64>,
}

impl Mix {
    /// A validated scenario's mix has finite weights ≥ 0, not all 0.
    fn new(mix: &std::collections::BTreeMap<MessageKind, f64>) -> Self {
        Self {
            kinds: mix.keys().copied().collect(),
            weights: WeightedIndex::new(mix.values().copied()).expect("a validated mix has a positive weight"),
        }
    }

    fn pick(&self, rng: &mut ChaCha8Rng) -> MessageKind {
        self.kinds[self.weights.sample(rng)]
    }
}

fn address(rng: &mut ChaCha8Rng, sequence: u64) -> String {
    let first: String = FirstName().fake_with_rng(rng);
    let last: String = LastName().fake_with_rng(rng);
    let clean = |s: String| {
        s.to_ascii_lowercase()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
    };
    // The sequence number keeps every generated recipient distinct within a run.
    format!("{}.{}.{sequence}@example.com", clean(first), clean(last))
}

fn campaign(spec: &CampaignSpec, index: u64, rng: &mut ChaCha8Rng, next_address: &mut u64) -> Request {
    let rows = match spec.rows {
        RowCount::Fixed(n) => n,
        RowCount::Uniform { min, max } => rng.random_range(min..=max),
    };
    let attachment_name = format!("attachment-{index}.bin");
    let mut uses_attachment = false;
    let mix = Mix::new(&spec.mix);
    let mut csv = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(Vec::new());
    write_row(&mut csv, ["email", "subject", "body", "type", "attachment"]);
    let mut seen: Vec<String> = Vec::new();
    let (mut valid, mut duplicates, mut invalid) = (0, 0, 0);
    for _ in 0..rows {
        let roll = rng.random::<f64>() * 100.0;
        let kind = mix.pick(rng);
        let subject: String = CatchPhrase().fake_with_rng(rng);
        let body: String = Sentence(8..20).fake_with_rng(rng);
        let (email, subject) = if roll < spec.invalid_pct {
            invalid += 1;
            // Alternate the two commonest real-world faults: a broken address and an empty subject.
            if invalid % 2 == 1 {
                (format!("broken.{}.example.com", *next_address), subject)
            } else {
                (address(rng, *next_address), String::new())
            }
        } else if roll < spec.invalid_pct + spec.duplicate_pct && !seen.is_empty() {
            duplicates += 1;
            let earlier = seen[rng.random_range(0..seen.len())].clone();
            (earlier.to_uppercase(), subject)
        } else {
            valid += 1;
            let email = address(rng, *next_address);
            seen.push(email.clone());
            (email, subject)
        };
        *next_address += 1;
        let attach = rng.random::<f64>() * 100.0 < spec.attachment_pct;
        uses_attachment |= attach;
        let attachment = if attach { attachment_name.as_str() } else { "" };
        write_row(&mut csv, [&email, &subject, &body, kind.as_str(), attachment]);
    }
    let attachments = if uses_attachment {
        let mut bytes = vec![0u8; spec.attachment_bytes];
        rng.fill(&mut bytes[..]);
        vec![(attachment_name, bytes)]
    } else {
        Vec::new()
    };
    Request::Campaign {
        file_name: format!("campaign-{index}.csv"),
        csv: csv.into_inner().expect("writing to memory cannot fail"),
        attachments,
        valid_rows: valid,
        duplicate_rows: duplicates,
        invalid_rows: invalid,
    }
}

/// One CSV record; the writer quotes whatever needs quoting.
fn write_row<const N: usize>(csv: &mut csv::Writer<Vec<u8>>, cells: [&str; N]) {
    csv.write_record(cells).expect("writing to memory cannot fail");
}

fn notification(spec: &NotificationSpec, rng: &mut ChaCha8Rng, next_address: &mut u64) -> Request {
    let kind = Mix::new(&spec.mix).pick(rng);
    let recipient = address(rng, *next_address);
    *next_address += 1;
    let subject: String = CatchPhrase().fake_with_rng(rng);
    let body: String = Sentence(6..16).fake_with_rng(rng);
    Request::Notification {
        body: json!({ "type": kind, "recipient": recipient, "subject": subject, "body": body }),
        kind,
    }
}

/// The whole run's traffic, in order of intended start.
pub fn generate(scenario: &Scenario) -> Plan {
    let duration = scenario.run.duration_secs;
    let mut arrivals = Vec::new();
    // Addresses are numbered apart per stream so the two never collide.
    let mut campaign_address = 0_u64;
    let mut notification_address = 1_u64 << 40;
    if let Some(spec) = &scenario.traffic.campaigns {
        let mut times_rng = stream(scenario.seed, 1);
        let mut data_rng = stream(scenario.seed, 2);
        let mut times = arrival_times(&spec.arrival, duration, &mut times_rng);
        // A campaign at t=0 as well when the shape starts above zero, so short runs upload something.
        if spec.arrival.rate_at(0.0) > 0.0 {
            times.insert(0, 0.0);
        }
        for (index, at_secs) in times.into_iter().take(spec.count as usize).enumerate() {
            let request = campaign(spec, index as u64, &mut data_rng, &mut campaign_address);
            arrivals.push(Arrival { at_secs, request });
        }
    }
    if let Some(spec) = &scenario.traffic.notifications {
        let mut times_rng = stream(scenario.seed, 3);
        let mut data_rng = stream(scenario.seed, 4);
        for at_secs in arrival_times(&spec.arrival, duration, &mut times_rng) {
            let request = notification(spec, &mut data_rng, &mut notification_address);
            arrivals.push(Arrival { at_secs, request });
        }
    }
    arrivals.sort_by(|a, b| a.at_secs.total_cmp(&b.at_secs));
    if let Some(budget) = scenario.run.message_budget {
        let mut offered = 0;
        arrivals.retain(|a| {
            let messages = match &a.request {
                Request::Campaign {
                    valid_rows,
                    duplicate_rows,
                    invalid_rows,
                    ..
                } => valid_rows + duplicate_rows + invalid_rows,
                Request::Notification { .. } => 1,
            };
            let keep = offered < budget;
            offered += messages;
            keep
        });
    }
    Plan { arrivals }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scenario(seed: u64) -> Scenario {
        let text = format!(
            "name = \"g\"\nseed = {seed}\n[run]\nduration_secs = 20\n\
             [traffic.campaigns]\ncount = 3\nrows = {{ min = 40, max = 60 }}\nduplicate_pct = 5\ninvalid_pct = 5\nattachment_pct = 10\nattachment_bytes = 64\n\
             mix = {{ campaign = 2, offer = 1 }}\narrival = {{ shape = \"constant\", rate_per_sec = 0.5 }}\n\
             [traffic.notifications]\narrival = {{ shape = \"spike\", base = 2, peak = 20, at_secs = 5, for_secs = 5 }}\n"
        );
        Scenario::parse(&text, Path::new("g.toml")).unwrap()
    }

    fn csv_bytes(plan: &Plan) -> Vec<Vec<u8>> {
        plan.arrivals
            .iter()
            .filter_map(|a| match &a.request {
                Request::Campaign { csv, .. } => Some(csv.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_same_seed_gives_byte_identical_traffic() {
        let first = generate(&scenario(42));
        let second = generate(&scenario(42));
        assert_eq!(first, second);
        assert_eq!(csv_bytes(&first).len(), 3);
    }

    #[test]
    fn another_seed_gives_other_bytes() {
        let a = csv_bytes(&generate(&scenario(42)));
        let b = csv_bytes(&generate(&scenario(43)));
        assert_ne!(a, b);
    }

    #[test]
    fn campaign_rows_add_up_and_are_valid_csv_for_the_engine() {
        let plan = generate(&scenario(7));
        for arrival in &plan.arrivals {
            if let Request::Campaign {
                csv,
                valid_rows,
                duplicate_rows,
                invalid_rows,
                ..
            } = &arrival.request
            {
                let text = String::from_utf8(csv.clone()).unwrap();
                let data_rows = text.lines().count() as u64 - 1; // no quoted newlines are generated
                assert_eq!(valid_rows + duplicate_rows + invalid_rows, data_rows);
                assert!((40..=60).contains(&data_rows));
            }
        }
    }

    #[test]
    fn a_spike_concentrates_arrivals_in_its_window() {
        let plan = generate(&scenario(11));
        let notifications: Vec<f64> = plan
            .arrivals
            .iter()
            .filter(|a| matches!(a.request, Request::Notification { .. }))
            .map(|a| a.at_secs)
            .collect();
        let in_spike = notifications.iter().filter(|t| (5.0..10.0).contains(*t)).count() as f64;
        let outside = notifications.len() as f64 - in_spike;
        // Expected: 100 in the 5 s spike, 30 in the other 15 s. Poisson noise is ~±10 and ±5.5.
        assert!((60.0..140.0).contains(&in_spike), "{in_spike} in the spike");
        assert!((10.0..55.0).contains(&outside), "{outside} outside it");
    }

    #[test]
    fn a_message_budget_caps_the_offered_messages() {
        let mut s = scenario(5);
        s.traffic.campaigns = None;
        s.run.message_budget = Some(25);
        assert_eq!(generate(&s).arrivals.len(), 25);
    }
}
