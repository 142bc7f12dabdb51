//! Crash points: named steps of multi-step file changes (the cleaner's
//! rewrite and swap) where the process can be made to abort, so that tests
//! of real broker processes can crash it at exactly that step and check
//! recovery. A step aborts when the environment variable
//! `SLUICE_CRASH_AT` names it when the process starts (read once); without
//! it a crash point costs one comparison. `docs/storage.md` lists the
//! steps.

use std::sync::OnceLock;

/// The environment variable naming the step to abort at.
pub const CRASH_AT_VAR: &str = "SLUICE_CRASH_AT";

/// Aborts the process (as `kill -9` would stop it: no destructors, no
/// flushing) when `SLUICE_CRASH_AT` is `step`.
pub fn crash_point(step: &str) {
    static AT: OnceLock<Option<String>> = OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(CRASH_AT_VAR).ok().filter(|s| !s.is_empty()));
    if at.as_deref() == Some(step) {
        eprintln!("{CRASH_AT_VAR}={step}: aborting at this step");
        std::process::abort();
    }
}
