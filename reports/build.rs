//! Records how this build was optimised, for the results' `machine.build_profile`:
//! the gate refuses to compare runs of differently optimised builds.

fn main() {
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let opt_level = std::env::var("OPT_LEVEL").unwrap_or_default();
    println!("cargo:rustc-env=COURIER_BUILD_PROFILE={profile}, opt-level {opt_level}");
    println!("cargo:rerun-if-changed=build.rs");
}
