//! `cargo xtask <task>`: the project's tasks, as the Rust ecosystem keeps
//! them (an `xtask` crate behind a cargo alias), so a new user needs nothing
//! but cargo.
//!
//! - `cargo xtask test [ARGS…]`: makes sure the machine has what the tests
//!   need (below), installing what is missing from Debian's packages when it
//!   can, then runs `cargo test --workspace [ARGS…]`.
//! - `cargo xtask prerequisites`: only the first half.
//!
//! What the tests need beyond Rust: Python ≥ 3.11 with `venv` (LocalStack,
//! moto and the SMTP server are installed into a cache by the `localstack`
//! crate on first use), npm and Node.js (aws-ses-v2-local, the default SES v2,
//! and DynamoDB Local's jar; dynoxide is built from its crate), Java ≥ 17 (DynamoDB Local, which one test checks the
//! stack on) and Chromium (the HTML report's browser test). A missing one
//! that cannot be installed here (no root, no sudo, no apt) stops the task
//! with one message naming it and the command that installs it.
//!
//! Disk: a cold build of the workspace's tests and its `perf` build with the
//! emulators in the cache take about 5.5 GB. When the disk fills mid-build the
//! linker dies with `Bus error` (signal 7), which names nothing, so the task
//! says first how much is free when it is less than that.

use std::process::{Command, ExitCode, Stdio};

/// One thing the tests need: how to tell it is there, and its Debian packages.
struct Prerequisite {
    name: &'static str,
    present: fn() -> bool,
    packages: &'static [&'static str],
}

const PREREQUISITES: [Prerequisite; 4] = [
    Prerequisite {
        name: "Python >= 3.11 with venv",
        present: python_ok,
        packages: &["python3", "python3-venv"],
    },
    Prerequisite {
        name: "Java >= 17",
        present: java_ok,
        packages: &["openjdk-17-jre-headless"],
    },
    Prerequisite {
        name: "npm",
        present: || succeeds("npm", &["--version"]),
        packages: &["npm"],
    },
    Prerequisite {
        name: "Chromium",
        present: || std::env::var_os("CHROMIUM").is_some() || succeeds("chromium", &["--version"]),
        packages: &["chromium"],
    },
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("test") => match ensure_prerequisites() {
            Ok(()) => {
                warn_if_disk_is_short();
                run_tests(&args[1..])
            }
            Err(message) => fail(&message),
        },
        Some("prerequisites") => match ensure_prerequisites() {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => fail(&message),
        },
        _ => {
            eprintln!("usage: cargo xtask test [cargo test args…] | cargo xtask prerequisites");
            ExitCode::from(2)
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("xtask: {message}");
    ExitCode::FAILURE
}

fn run_tests(extra: &[String]) -> ExitCode {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo).args(["test", "--workspace"]).args(extra).status();
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => ExitCode::from(status.code().unwrap_or(1).clamp(1, 255) as u8),
        Err(error) => fail(&format!("could not run cargo test: {error}")),
    }
}

/// Free bytes below which a cold build may fill the disk: a clean clone's
/// `.ci/run` on 2026-12-06 left 4.7 GB in `target/` and 0.9 GB in the
/// emulators' cache, and the disk's free space fell by 5.5 GB at most.
const COLD_BUILD_BYTES: u64 = 7 * 1_000_000_000;

fn warn_if_disk_is_short() {
    let free = output("df", &["-Pk", "."]).and_then(|text| df_free_bytes(&text));
    if let Some(warning) = free.and_then(disk_warning) {
        eprintln!("xtask: {warning}");
    }
}

/// What to say, if anything, with `free` bytes left where the build writes.
fn disk_warning(free: u64) -> Option<String> {
    (free < COLD_BUILD_BYTES).then(|| {
        format!(
            "warning: {:.1} GB free here; a cold build and the emulators take about {} GB. \
             If the disk fills, the linker stops with `Bus error` (signal 7).",
            free as f64 / 1e9,
            COLD_BUILD_BYTES / 1_000_000_000
        )
    })
}

/// `df -Pk DIR` prints a header and one line whose fourth field is the free
/// space in KiB.
fn df_free_bytes(df_output: &str) -> Option<u64> {
    let line = df_output.lines().nth(1)?;
    let kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}

/// Installs what is missing when this user may, or says exactly what to run.
fn ensure_prerequisites() -> Result<(), String> {
    let missing: Vec<&Prerequisite> = PREREQUISITES.iter().filter(|p| !(p.present)()).collect();
    if missing.is_empty() {
        eprintln!("xtask: prerequisites present (Python, Java, npm, Chromium)");
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.name).collect();
    let packages: Vec<&str> = missing.iter().flat_map(|p| p.packages.iter().copied()).collect();
    let install = format!("apt-get install -y {}", packages.join(" "));
    let as_root = is_root();
    let sudo = !as_root && succeeds("sudo", &["-n", "true"]);
    if !succeeds("apt-get", &["--version"]) || !(as_root || sudo) {
        return Err(format!(
            "missing: {}. Install them (on Debian/Ubuntu: `sudo {install}`) and run again.",
            names.join(", ")
        ));
    }
    eprintln!("xtask: installing {} ({})", names.join(", "), packages.join(" "));
    let prefix: &[&str] = if as_root { &[] } else { &["sudo", "-n"] };
    run_quietly(prefix, &["apt-get", "update", "-qq"])?;
    let mut apt = vec!["apt-get", "install", "-y", "-qq"];
    apt.extend(&packages);
    run_quietly(prefix, &apt)?;
    let still: Vec<&str> = missing.iter().filter(|p| !(p.present)()).map(|p| p.name).collect();
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!("still missing after `{install}`: {}", still.join(", ")))
    }
}

fn run_quietly(prefix: &[&str], command: &[&str]) -> Result<(), String> {
    let mut all: Vec<&str> = prefix.to_vec();
    all.extend(command);
    let status = Command::new(all[0])
        .args(&all[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("could not run `{}`: {e}", all.join(" ")))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed ({status})", all.join(" ")))
    }
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| {
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        text
    })
}

fn is_root() -> bool {
    output("id", &["-u"]).is_some_and(|uid| uid.trim() == "0")
}

fn python_ok() -> bool {
    succeeds(
        "python3",
        &[
            "-c",
            "import sys, venv; sys.exit(0 if sys.version_info >= (3, 11) else 1)",
        ],
    )
}

/// `java -version` prints e.g. `openjdk version "17.0.15" 2025-04-15` (on stderr).
fn java_ok() -> bool {
    output("java", &["-version"]).is_some_and(|text| java_major(&text).is_some_and(|major| major >= 17))
}

fn java_major(version_text: &str) -> Option<u32> {
    let quoted = version_text.split('"').nth(1)?;
    let first = quoted.split('.').next()?;
    // Java 8 and older call themselves 1.x.
    match first {
        "1" => quoted.split('.').nth(1)?.parse().ok(),
        major => major.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::{df_free_bytes, disk_warning, java_major, COLD_BUILD_BYTES};

    #[test]
    fn free_space_is_read_from_what_df_prints() {
        let df = "Filesystem     1024-blocks     Used Available Capacity Mounted on\n\
                  /dev/vda         264241152 94371840   1992294      98% /\n";
        assert_eq!(df_free_bytes(df), Some(1_992_294 * 1024));
        assert_eq!(df_free_bytes("df: .: No such file or directory\n"), None);
    }

    #[test]
    fn a_disk_too_short_for_a_cold_build_is_named_before_the_linker_fails() {
        let warning = disk_warning(1_900_000_000).expect("1.9 GB is short");
        assert!(warning.contains("1.9 GB free"), "{warning}");
        assert!(warning.contains("Bus error"), "{warning}");
        assert_eq!(disk_warning(COLD_BUILD_BYTES), None);
        assert_eq!(disk_warning(66_000_000_000), None);
    }

    #[test]
    fn java_versions_are_read_from_what_java_prints() {
        assert_eq!(java_major("openjdk version \"17.0.15\" 2025-04-15"), Some(17));
        assert_eq!(java_major("java version \"1.8.0_402\""), Some(8));
        assert_eq!(java_major("openjdk version \"21\" 2023-09-19"), Some(21));
        assert_eq!(java_major("no java here"), None);
    }
}
