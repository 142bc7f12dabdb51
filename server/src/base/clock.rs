//! The wall clock, read in one place. State machines take the time as an
//! argument (chosen before a record is written); only the code that
//! drafts a record or stamps a reply reads it here.

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is set
/// before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// [`now_ms`] as an unsigned count, for the replica timers.
pub fn now_ms_u64() -> u64 {
    now_ms().max(0) as u64
}
