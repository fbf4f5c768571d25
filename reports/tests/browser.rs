//! The HTML report in a real browser: Debian's Chromium, headless. The report
//! carries a CSP that forbids loading anything, so any console message (a
//! blocked asset, a parse or script error) means it is not self-contained.
//! Screenshots at phone and desktop width are kept under
//! `target/test-artifacts/` for a person to look at.
//!
//! Chromium comes from `cargo xtask test` (or `apt-get install chromium`); set `CHROMIUM` to use
//! another binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use reports::results::RunResults;

fn chromium() -> PathBuf {
    if let Ok(path) = std::env::var("CHROMIUM") {
        return PathBuf::from(path);
    }
    for candidate in ["chromium", "chromium-browser", "google-chrome"] {
        if let Ok(out) = Command::new("which").arg(candidate).output() {
            if out.status.success() {
                return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            }
        }
    }
    panic!("Chromium is needed for the report's browser test and was not found: run the tests with `cargo xtask test` (it installs Chromium), or `sudo apt-get install chromium`, or set CHROMIUM to a Chromium binary");
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Load {
    console: Vec<String>,
    dom: String,
}

/// Opens `page` headless, saves a screenshot, and returns what the console said and the DOM.
fn load(page: &Path, screenshot: &Path, width: u32, height: u32) -> Load {
    let profile = tempdir(&format!("chromium-profile-{width}"));
    let base = |cmd: &mut Command| {
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={width},{height}"));
    };
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let mut shot = Command::new(chromium());
    base(&mut shot);
    let out = shot
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(&url)
        .output()
        .expect("chromium runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let console = stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_string)
        .collect();
    let mut dump = Command::new(chromium());
    base(&mut dump);
    let dom = dump.arg("--dump-dom").arg(&url).output().expect("chromium runs");
    Load {
        console,
        dom: String::from_utf8_lossy(&dom.stdout).into_owned(),
    }
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("courier-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fixture() -> RunResults {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ses-throttle.results.json");
    RunResults::load(&path).unwrap()
}

fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|bytes| bytes.len() > 10_000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"))
}

#[test]
fn the_report_loads_in_headless_chromium_without_a_console_message() {
    let dir = tempdir("report");
    let written = reports::write_reports(&fixture(), None, &dir).unwrap();
    for (name, width, height) in [("report-phone.png", 390, 3200), ("report-desktop.png", 1280, 3600)] {
        let screenshot = artifacts().join(name);
        let _ = std::fs::remove_file(&screenshot);
        let loaded = load(&written.html, &screenshot, width, height);
        assert!(loaded.console.is_empty(), "console said: {:#?}", loaded.console);
        assert!(is_png(&screenshot), "screenshot {} taken", screenshot.display());
        assert!(loaded.dom.contains("id=\"verdict\"") && loaded.dom.contains("id=\"machine\""));
        assert_eq!(
            loaded.dom.matches("<svg").count(),
            5,
            "every chart made it into the DOM"
        );
    }
}

#[test]
fn the_browser_check_would_catch_an_asset_from_elsewhere() {
    // The check above passes only if it can fail: the same report with one external image must not.
    let dir = tempdir("tampered");
    let written = reports::write_reports(&fixture(), None, &dir).unwrap();
    let html = std::fs::read_to_string(&written.html).unwrap();
    let tampered = dir.join("tampered.html");
    std::fs::write(
        &tampered,
        html.replacen("<main>", "<main><img src=\"https://example.com/logo.png\" alt=\"\">", 1),
    )
    .unwrap();
    let loaded = load(&tampered, &dir.join("tampered.png"), 800, 600);
    assert!(
        loaded.console.iter().any(|l| l.contains("Content Security Policy")),
        "console said: {:#?}",
        loaded.console
    );
}
