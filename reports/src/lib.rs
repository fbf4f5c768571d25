//! Courier's reports: what a load run found, for people and for CI.
//!
//! - [`results`]: the versioned results schema `loadtest` writes and everything here reads;
//! - [`summary`]: the run told in sentences and headline figures;
//! - [`html`]: the self-contained stakeholder report (inline CSS and [`svg`] charts);
//! - [`markdown`]: the CI job summary;
//! - [`text`]: the terminal summary `loadtest run` prints;
//! - [`compare`]: the baseline comparison behind the CI latency gate;
//! - [`cost`]: what the run would cost on AWS, by a dated price card;
//! - [`drift`]: whether a capacity ladder's machine held steady, from its knee's step run twice;
//! - `build_profile` (shared with `build.rs`): the settings behind `machine.build_profile`.
//!
//! `cargo run -p reports -- render <results.json>` and
//! `cargo run -p reports -- compare <baseline.json> <current.json>` are thin over this.

#[cfg(test)]
mod build_profile;
pub mod compare;
pub mod cost;
pub mod drift;
pub mod html;
pub mod markdown;
pub mod results;
pub mod summary;
pub mod svg;
pub mod text;

use std::path::{Path, PathBuf};

use compare::Comparison;
use results::RunResults;

/// Exit code of `reports compare` when a figure regressed (as `loadtest` on an SLO breach).
pub const EXIT_REGRESSION: i32 = 3;
/// Exit code when the inputs could not be read or compared.
pub const EXIT_ERROR: i32 = 1;

/// Where a run's reports went.
#[derive(Debug, Clone)]
pub struct Written {
    pub html: PathBuf,
    pub markdown: PathBuf,
}

/// Writes `report.html` and `summary.md` into `dir`.
pub fn write_reports(results: &RunResults, comparison: Option<&Comparison>, dir: &Path) -> std::io::Result<Written> {
    std::fs::create_dir_all(dir)?;
    let written = Written {
        html: dir.join("report.html"),
        markdown: dir.join("summary.md"),
    };
    std::fs::write(&written.html, html::render(results, comparison))?;
    std::fs::write(&written.markdown, markdown::render(results, comparison))?;
    Ok(written)
}

#[cfg(test)]
pub(crate) mod fixtures {
    use super::results::RunResults;

    /// A real results file, from `loadtest run scenarios/ses-throttle.toml`.
    pub fn results() -> RunResults {
        RunResults::parse(
            include_str!("../tests/fixtures/ses-throttle.results.json"),
            std::path::Path::new("ses-throttle.results.json"),
        )
        .expect("fixture parses")
    }
}
