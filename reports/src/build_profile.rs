//! What decides how a build was optimised, as text: the build script hashes it
//! into the results' `machine.build_profile`, and the gate refuses to compare
//! runs whose texts differ.
//!
//! Cargo tells a build script only `PROFILE` (`debug` or `release`) and the
//! crate's own `OPT_LEVEL`. Neither tells the `perf` profile from `release`,
//! nor sees the per-package overrides (`[profile.perf.package.hyper]`, …)
//! that set how fast the AWS SDK's runtime runs. So the text is the workspace
//! manifest's tables for the profile and each profile it inherits from, plus
//! any `CARGO_PROFILE_*` variable and the compiler flags. This file is shared
//! by `build.rs` (through `#[path]`) and the crate's tests.

/// The profile a build used, from the folder cargo builds it into
/// (`target/<folder>/build/<crate>-<hash>/out`, the build script's `OUT_DIR`):
/// `debug` is the `dev` profile, any other folder is the profile's own name.
pub fn profile_name(out_dir: &std::path::Path) -> Option<String> {
    let folder = out_dir.ancestors().nth(3)?.file_name()?.to_str()?;
    Some(if folder == "debug" { "dev" } else { folder }.to_string())
}

/// The settings that shape a build of `profile`, in a stable text: the
/// manifest's table for `profile` and for each profile it inherits from
/// (`test` inherits `dev` and `bench` `release`, as in cargo), then the
/// `CARGO_PROFILE_*` variables and `CARGO_ENCODED_RUSTFLAGS` among `env`, sorted.
pub fn settings(manifest: &toml::Table, profile: &str, env: &[(String, String)]) -> String {
    let profiles = manifest.get("profile").and_then(|p| p.as_table());
    let mut text = String::new();
    let mut name = Some(profile.to_string());
    let mut seen = Vec::new();
    while let Some(current) = name.take() {
        if seen.contains(&current) {
            break;
        }
        let table = profiles.and_then(|p| p.get(&current)).and_then(|t| t.as_table());
        text.push_str(&format!("[{current}]\n"));
        if let Some(table) = table {
            text.push_str(&toml::to_string(table).unwrap_or_default());
        }
        name = table
            .and_then(|t| t.get("inherits"))
            .and_then(|i| i.as_str())
            .map(str::to_string)
            .or_else(|| built_in_parent(&current).map(str::to_string));
        seen.push(current);
    }
    let mut overrides: Vec<_> = env
        .iter()
        .filter(|(key, _)| key.starts_with("CARGO_PROFILE_") || key == "CARGO_ENCODED_RUSTFLAGS")
        .filter(|(_, value)| !value.is_empty())
        .collect();
    overrides.sort();
    for (key, value) in overrides {
        text.push_str(&format!("{key}={value}\n"));
    }
    text
}

fn built_in_parent(profile: &str) -> Option<&'static str> {
    match profile {
        "test" => Some("dev"),
        "bench" => Some("release"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> toml::Table {
        text.parse().expect("a valid manifest")
    }

    const PERF: &str = r#"
[profile.release]
debug = false
[profile.perf]
inherits = "release"
opt-level = 1
[profile.perf.package.hyper]
opt-level = 3
"#;

    #[test]
    fn the_perf_folder_is_the_perf_profile_and_debug_is_dev() {
        let out = std::path::Path::new("/w/target/perf/build/reports-0a1b/out");
        assert_eq!(profile_name(out).as_deref(), Some("perf"));
        let out = std::path::Path::new("/w/target/debug/build/reports-0a1b/out");
        assert_eq!(profile_name(out).as_deref(), Some("dev"));
    }

    #[test]
    fn a_package_override_changes_the_settings() {
        let without = PERF.replace("[profile.perf.package.hyper]\nopt-level = 3\n", "");
        assert_ne!(
            settings(&manifest(PERF), "perf", &[]),
            settings(&manifest(&without), "perf", &[])
        );
    }

    #[test]
    fn the_inherited_profile_is_part_of_the_settings() {
        let changed = PERF.replace("debug = false", "debug = true");
        let perf = settings(&manifest(PERF), "perf", &[]);
        assert!(perf.contains("[release]"), "{perf}");
        assert_ne!(perf, settings(&manifest(&changed), "perf", &[]));
    }

    #[test]
    fn another_profiles_table_does_not_change_the_settings() {
        let with_dev = format!("{PERF}\n[profile.dev]\nopt-level = 2\n");
        assert_eq!(
            settings(&manifest(PERF), "perf", &[]),
            settings(&manifest(&with_dev), "perf", &[])
        );
    }

    #[test]
    fn profile_variables_and_compiler_flags_count_and_other_variables_do_not() {
        let plain = settings(&manifest(PERF), "perf", &[("HOME".into(), "/root".into())]);
        assert_eq!(plain, settings(&manifest(PERF), "perf", &[]));
        let flags = [("CARGO_ENCODED_RUSTFLAGS".to_string(), "-Ctarget-cpu=native".to_string())];
        assert_ne!(plain, settings(&manifest(PERF), "perf", &flags));
        let level = [("CARGO_PROFILE_PERF_OPT_LEVEL".to_string(), "3".to_string())];
        assert_ne!(plain, settings(&manifest(PERF), "perf", &level));
    }

    #[test]
    fn the_test_profile_inherits_dev() {
        let text = settings(&manifest("[profile.dev]\nopt-level = 1\n"), "test", &[]);
        assert!(
            text.contains("[test]") && text.contains("[dev]\nopt-level = 1"),
            "{text}"
        );
    }
}
