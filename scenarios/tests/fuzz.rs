//! Property-based fuzzing of the scenario TOML reader: whatever a file
//! holds, `Scenario::parse` answers with a scenario or an error naming a
//! field, and never panics. A longer run: `PROPTEST_CASES=100000 cargo test
//! --release -p scenarios --test fuzz`.

use std::path::Path;

use proptest::prelude::*;
use scenarios::model::Scenario;

const SMOKE: &str = include_str!("../smoke.toml");

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_text_gets_a_verdict_without_panicking(text in "\\PC{0,300}") {
        let _ = Scenario::parse(&text, Path::new("fuzz.toml"));
    }

    #[test]
    fn a_real_scenario_with_one_line_changed_gets_a_verdict(line in 0usize..60, replacement in "[a-z_]{1,12} = (-?[0-9]{1,6}(\\.[0-9])?|\"[a-z]{0,6}\"|\\{\\}|\\[\\]|true)") {
        let lines: Vec<&str> = SMOKE.lines().collect();
        let at = line % lines.len();
        let mut changed: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        changed[at] = replacement;
        if let Err(error) = Scenario::parse(&changed.join("\n"), Path::new("fuzz.toml")) {
            prop_assert!(!error.field.is_empty());
        }
    }

    #[test]
    fn rates_out_of_range_are_refused_naming_the_field(
        value in prop_oneof![Just("-1".to_string()), Just("0".to_string()), Just("1e308".to_string()), Just("nan".to_string()), Just("inf".to_string()), (100_001u64..u64::MAX).prop_map(|v| v.to_string())]
    ) {
        let text = SMOKE.replace("rate_per_sec = 8", &format!("rate_per_sec = {value}"));
        prop_assert_ne!(&text, SMOKE);
        let error = Scenario::parse(&text, Path::new("fuzz.toml")).unwrap_err();
        prop_assert_eq!(error.field, "traffic.notifications.arrival");
    }

    #[test]
    fn mix_weights_that_are_not_numbers_are_refused(weight in prop_oneof![Just("nan"), Just("inf"), Just("-1")]) {
        let text = SMOKE.replace("mix = { reminder = 1,", &format!("mix = {{ reminder = {weight},"));
        prop_assert_ne!(&text, SMOKE);
        prop_assert!(Scenario::parse(&text, Path::new("fuzz.toml")).is_err());
    }
}
