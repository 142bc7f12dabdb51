//! The free-space reserve of the data directory's filesystem.
//!
//! Produce is refused once free space would fall below
//! `sluice.storage.min.free.bytes`, before the disk is actually full, so
//! appends never fail half-way and logs are not poisoned. What frees space
//! (DeleteTopics, DeleteRecords, retention) and the small metadata writes it
//! needs (topics, committed offsets) are not held to the reserve: they may
//! use it. Writes resume by themselves when space returns.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The size of the filesystem holding `dir` and the bytes available on it
/// to unprivileged users, from `statvfs`.
pub fn filesystem_bytes(dir: &Path) -> std::io::Result<(u64, u64)> {
    let s = rustix::fs::statvfs(dir)?;
    Ok((
        s.f_blocks.saturating_mul(s.f_frsize),
        s.f_bavail.saturating_mul(s.f_frsize),
    ))
}

/// How often a shard that is refusing produce looks at the filesystem
/// again, at most.
const RECHECK_WHEN_LOW: Duration = Duration::from_millis(10);

/// One per shard, touched only on its thread. Reads the filesystem's free
/// space on the shard's housekeeping tick and subtracts what this shard
/// admits in between; near the reserve it reads the filesystem again before
/// refusing. Other shards' writes between two readings are not seen, so the
/// reserve should exceed what all shards write in one tick (100 ms).
#[derive(Debug)]
pub struct DiskSpace {
    dir: PathBuf,
    min_free_bytes: u64,
    free_bytes: Cell<u64>,
    checked_at: Cell<Instant>,
    refusing: Cell<bool>,
}

impl DiskSpace {
    pub fn new(dir: PathBuf, min_free_bytes: u64) -> Self {
        let me = Self {
            dir,
            min_free_bytes,
            free_bytes: Cell::new(u64::MAX),
            checked_at: Cell::new(Instant::now()),
            refusing: Cell::new(false),
        };
        me.refresh();
        me
    }

    pub fn min_free_bytes(&self) -> u64 {
        self.min_free_bytes
    }

    /// Reads the filesystem's free space (blocks available to unprivileged
    /// users) and returns it. A failed reading keeps the last one.
    pub fn refresh(&self) -> u64 {
        self.checked_at.set(Instant::now());
        match filesystem_bytes(&self.dir) {
            Ok((_, available)) => self.free_bytes.set(available),
            Err(e) => tracing::warn!(dir = %self.dir.display(), error = %e, "statvfs of the data directory"),
        }
        let free = self.free_bytes.get();
        let low = free < self.min_free_bytes;
        if low != self.refusing.get() {
            self.refusing.set(low);
            if low {
                tracing::warn!(
                    free_bytes = free,
                    min_free_bytes = self.min_free_bytes,
                    "free space below sluice.storage.min.free.bytes: refusing produce"
                );
            } else {
                tracing::info!(
                    free_bytes = free,
                    "free space above sluice.storage.min.free.bytes again: accepting produce"
                );
            }
        }
        free
    }

    /// Admits a write of `bytes`, or returns the free space that refuses it.
    pub fn admit(&self, bytes: u64) -> Result<(), u64> {
        if self.min_free_bytes == 0 {
            return Ok(());
        }
        let fits = |free: u64| free >= self.min_free_bytes.saturating_add(bytes);
        let mut free = self.free_bytes.get();
        if !fits(free) && self.checked_at.get().elapsed() >= RECHECK_WHEN_LOW {
            free = self.refresh();
        }
        if !fits(free) {
            return Err(free);
        }
        self.free_bytes.set(free - bytes);
        Ok(())
    }

    /// Whether there is room above the reserve (and above nothing when the
    /// reserve is off) as of the last reading.
    pub fn has_room(&self) -> bool {
        self.free_bytes.get() > self.min_free_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_down_to_the_reserve_then_refuses() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let probe = DiskSpace::new(dir.path().to_path_buf(), 0);
        let free = probe.free_bytes.get();
        assert!(free > 1 << 20 && free < u64::MAX, "statvfs read: {free}");
        // A reserve larger than any disk, with a reading just above it:
        // room for 1000 bytes, and a fresh reading cannot add more.
        let reserve = 1u64 << 60;
        let d = DiskSpace::new(dir.path().to_path_buf(), reserve);
        assert!(d.admit(1).is_err(), "a real disk is below the reserve");
        d.free_bytes.set(reserve + 1000);
        assert!(d.admit(600).is_ok());
        assert!(d.admit(600).is_err(), "the second write would cross the reserve");
        let off = DiskSpace::new(dir.path().to_path_buf(), 0);
        assert!(off.admit(u64::MAX / 2).is_ok(), "a reserve of 0 turns the check off");
    }
}
