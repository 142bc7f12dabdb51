//! Crash points: named steps of multi-step file changes (the cleaner's
//! rewrite and swap) where the process can be made to abort, so that tests
//! of real broker processes can crash it at exactly that step and check
//! recovery. Only in builds with the feature `crash-points` (the broker's
//! `test-switches`, never a release): there a step aborts when the
//! environment variable `SLUICE_CRASH_AT` names it when the process
//! starts (read once); elsewhere a crash point is nothing.
//! `docs/storage.md` lists the steps.

/// The environment variable naming the step to abort at.
pub const CRASH_AT_VAR: &str = "SLUICE_CRASH_AT";

/// Aborts the process (as `kill -9` would stop it: no destructors, no
/// flushing) when `SLUICE_CRASH_AT` is `step`.
#[cfg(feature = "crash-points")]
pub fn crash_point(step: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var(CRASH_AT_VAR).ok().filter(|s| !s.is_empty()));
    if at.as_deref() == Some(step) {
        eprintln!("{CRASH_AT_VAR}={step}: aborting at this step");
        std::process::abort();
    }
}

/// Without the feature `crash-points`: nothing.
#[cfg(not(feature = "crash-points"))]
#[inline(always)]
pub fn crash_point(_step: &str) {}
