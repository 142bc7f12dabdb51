//! Per-log settings, named after the Kafka topic configs they implement.

use crate::error::{LogError, Result};

/// When appended bytes are forced to the device with `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Every flush round ends with an fdatasync; an append completes only
    /// after the fdatasync that covers it.
    Always,
    /// An append completes once written to the page cache; a flush round
    /// syncs when the last sync is at least this many milliseconds old, and
    /// [`crate::Log::sync_if_due`] lets the owner's timer bound the gap when
    /// appends stop.
    IntervalMs(u64),
    /// Appends complete once written to the page cache; fdatasync only on
    /// roll, on close, or when a caller asks for durability.
    Never,
}

impl FlushPolicy {
    /// The policy of a flush interval as Kafka's settings give it
    /// (`flush.ms`, `log.flush.interval.ms`): negative never, 0 after every
    /// append, otherwise every that many milliseconds.
    pub fn from_interval_ms(ms: i64) -> Self {
        match ms {
            ms if ms < 0 => Self::Never,
            0 => Self::Always,
            ms => Self::IntervalMs(ms as u64),
        }
    }
}

/// Settings of one partition log. Plain data: cheap to clone, validated by
/// [`LogConfig::validate`] when a log opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before a batch would take the active one past
    /// this size (`segment.bytes`).
    pub segment_bytes: u64,
    /// Roll when the active segment's first append is older than this
    /// (`segment.ms`).
    pub segment_ms: u64,
    /// Add an offset-index entry after at least this many bytes since the
    /// previous one (`index.interval.bytes`).
    pub index_interval_bytes: u32,
    /// Delete whole non-active segments whose newest timestamp is older than
    /// this; `None` keeps them (`retention.ms`, -1 in Kafka).
    pub retention_ms: Option<u64>,
    /// Delete the oldest non-active segments while the log is larger than
    /// this; `None` is unlimited (`retention.bytes`).
    pub retention_bytes: Option<u64>,
    /// Largest batch accepted, header included (`max.message.bytes`).
    pub max_batch_bytes: u32,
    pub flush: FlushPolicy,
    /// The topic is compacted (`cleanup.policy` includes `compact`): its
    /// records need keys, and its owner cleans it ([`crate::Log::clean`]).
    pub compacted: bool,
    /// Reserve the active segment's disk blocks ahead of its end with
    /// `fallocate(FALLOC_FL_KEEP_SIZE)`, in steps that grow with the
    /// segment up to this many bytes; 0 turns it off. Appends into reserved
    /// blocks skip the filesystem's per-block delayed allocation, which
    /// halves the kernel's cost of a buffered write on ext4. The file's
    /// size stays the bytes written; the reserve past it is released when
    /// the segment rolls or the log closes.
    pub preallocate_bytes: u64,
    /// Flush rounds of at most this many bytes are written with `pwritev`
    /// on the owner's thread; larger ones go through io_uring. On
    /// filesystems without non-blocking buffered writes (ext4) io_uring
    /// runs every buffered write in a worker thread, which costs two
    /// thread wake-ups per round: for small rounds that is most of their
    /// cost. A buffered write to the page cache blocks only when the kernel
    /// throttles dirty pages. 0 sends every round through io_uring.
    pub inline_write_bytes: u64,
    /// Once this many bytes were written since the last fdatasync, one is
    /// started in the background (appends go on meanwhile), so the dirty
    /// pages a roll must sync stay few: a roll's fdatasync of a whole
    /// segment's dirty pages would stall the log's writes for seconds.
    /// What it covers counts as durable when it returns. 0 turns it off.
    pub writeback_bytes: u64,
    /// With direct writes allowed ([`crate::Log::set_direct_writes`]), 8
    /// flush rounds in a row of at least this many bytes switch the log to
    /// writing past the page cache; 32 smaller rounds in a row switch it
    /// back. 0: every round goes direct.
    pub direct_write_min_bytes: u64,
}

pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * DAY_MS,
            index_interval_bytes: 4096,
            retention_ms: Some(7 * DAY_MS),
            retention_bytes: None,
            max_batch_bytes: 1_048_588,
            flush: FlushPolicy::Never,
            compacted: false,
            preallocate_bytes: 64 << 20,
            inline_write_bytes: 64 << 10,
            writeback_bytes: 32 << 20,
            direct_write_min_bytes: 64 << 10,
        }
    }
}

impl LogConfig {
    /// Positions in the index are 32-bit and a segment never holds more than
    /// `segment_bytes` plus one batch, so both are capped below 2 GiB.
    pub fn validate(&self) -> Result<()> {
        let cap = i32::MAX as u64;
        if self.segment_bytes < 1024 || self.segment_bytes > cap {
            return Err(LogError::Config(format!(
                "segment_bytes {} outside [1024, {cap}]",
                self.segment_bytes
            )));
        }
        if u64::from(self.max_batch_bytes) > cap || (self.max_batch_bytes as usize) < crate::batch::HEADER_BYTES {
            return Err(LogError::Config(format!(
                "max_batch_bytes {} outside [61, {cap}]",
                self.max_batch_bytes
            )));
        }
        if self.index_interval_bytes == 0 {
            return Err(LogError::Config("index_interval_bytes must be positive".into()));
        }
        if self.segment_ms == 0 {
            return Err(LogError::Config("segment_ms must be positive".into()));
        }
        Ok(())
    }
}
