//! Records how this build was optimised, for the results' `machine.build_profile`:
//! the gate refuses to compare runs of differently optimised builds.
//!
//! The record reads `perf, opt-level 1, settings 3f9a1c2e0b7d`: the named
//! profile, this crate's opt-level, and the first six bytes of a SHA-256 of
//! every setting that shapes the profile (`src/build_profile.rs` says which).

use sha2::{Digest, Sha256};
use std::path::PathBuf;

#[path = "src/build_profile.rs"]
mod build_profile;

fn main() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let out_dir = PathBuf::from(var("OUT_DIR"));
    let profile = build_profile::profile_name(&out_dir).unwrap_or_else(|| var("PROFILE"));
    let manifest_path = PathBuf::from(var("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let manifest: toml::Table = std::fs::read_to_string(&manifest_path)
        .unwrap_or_else(|e| panic!("reading the workspace manifest {}: {e}", manifest_path.display()))
        .parse()
        .unwrap_or_else(|e| panic!("parsing the workspace manifest {}: {e}", manifest_path.display()));
    let env: Vec<(String, String)> = std::env::vars().collect();
    let settings = build_profile::settings(&manifest, &profile, &env);
    let digest = Sha256::digest(settings.as_bytes());
    let short: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    let opt_level = var("OPT_LEVEL");
    println!("cargo:rustc-env=COURIER_BUILD_PROFILE={profile}, opt-level {opt_level}, settings {short}");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/build_profile.rs");
    println!("cargo:rerun-if-changed={}", manifest_path.display());
    println!("cargo:rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    let upper = profile.to_uppercase().replace('-', "_");
    for key in [
        "OPT_LEVEL",
        "DEBUG",
        "LTO",
        "CODEGEN_UNITS",
        "PANIC",
        "INCREMENTAL",
        "OVERFLOW_CHECKS",
    ] {
        println!("cargo:rerun-if-env-changed=CARGO_PROFILE_{upper}_{key}");
    }
}
