//! A partition log: a directory of segments, appended through io_uring with
//! group commit, read through file slices.
//!
//! Concurrency: a [`Log`] is owned by one shard and used only from that
//! shard's thread; clones are handles to the same log for the shard's tasks.
//! State sits in a `RefCell` that is never borrowed across an `.await`.
//! [`FileSlice`]s are `Send` and may travel to the connection's shard.
//!
//! Append path: [`Log::append`] validates the batch, assigns offsets by
//! rewriting baseOffset and partitionLeaderEpoch in place, decides where it
//! will land (rolling by size or age), and queues it. The first waiter that
//! finds no flush running spawns one flush task; by the time it runs, every
//! append queued in the same event-loop turn is in the queue, and the whole
//! queue goes out as one vectored write, followed (when the policy or a
//! waiter asks) by one fdatasync.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    fs, io,
    os::{fd::AsFd, unix::fs::FileExt},
    path::{Path, PathBuf},
    rc::Rc,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use bytes::{Bytes, BytesMut};
use compio::{
    BufResult,
    fs::{File, OpenOptions},
    io::AsyncWriteAt,
};

use crate::{
    batch,
    config::{FlushPolicy, LogConfig},
    durable_file::{Replace, replace_file},
    epochs::{EpochEnd, EpochHistory},
    error::{LogError, Result},
    files::OpenFiles,
    io::{FaultInjector, Io, IoStats},
    notify::Notify,
    segment::{self, ScannedBatch, Segment, SegmentPaths, Writer},
};

mod append;
mod checkpoint;
mod clean;
mod flush;
mod open;
mod read;
mod trim;

pub use clean::{CLEANED_SUFFIX, CleanRules, CleanStats, Pace, SWAP_SUFFIX};

/// Unwritten offset-index entries that trigger an index write (64 entries
/// span at least 256 KiB of log at the default interval: the most a
/// recovery scan has to re-read beyond the last written entry).
const INDEX_WRITE_BATCH_ENTRIES: usize = 64;

/// The smallest preallocation step: a new or quiet segment reserves this
/// much ahead, a busy one up to its own size, capped by
/// [`LogConfig::preallocate_bytes`].
const MIN_PREALLOCATE_STEP: u64 = 1 << 20;

/// Name of the checkpoint of an advanced log start offset (DeleteRecords).
pub const LOG_START_OFFSET_FILE: &str = "log-start-offset";
/// Name of the high-watermark checkpoint of a replicated partition.
pub const HIGH_WATERMARK_FILE: &str = "high-watermark";

/// Milliseconds since the Unix epoch, as the log sees time.
pub type Clock = Rc<dyn Fn() -> u64>;

fn system_clock() -> Clock {
    Rc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    })
}

/// What a log is opened with besides its config: the clock (tests move it
/// by hand), an optional fault injector, and the counter of open files it
/// shares with its owner's other logs (its own when `None`).
#[derive(Clone, Default)]
pub struct Env {
    pub clock: Option<Clock>,
    pub faults: Option<Rc<FaultInjector>>,
    pub open_files: Option<Rc<OpenFiles>>,
    /// The shard's data-path histograms, shared by its logs.
    pub histograms: Option<Rc<crate::stats::IoHistograms>>,
    /// The shard's staging buffers for direct (follower) writes; a log
    /// without them keeps its own.
    pub direct_buffers: Option<Rc<crate::direct::DirectBuffers>>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("manual_clock", &self.clock.is_some())
            .field("faults", &self.faults)
            .field("open_files", &self.open_files)
            .field("histograms", &self.histograms.is_some())
            .field("direct_buffers", &self.direct_buffers.is_some())
            .finish()
    }
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// What an append waits for before it completes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Written to the page cache (the `acks=1` promise).
    Written,
    /// Covered by an fdatasync (the `acks=all` promise on one node).
    Synced,
}

/// How far a read may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBound {
    /// Up to the high watermark: what consumers see.
    HighWatermark,
    /// Up to the log end offset: what a follower replica would see.
    LogEnd,
    /// Up to the given offset and at most the high watermark: a
    /// read_committed consumer's bound, the last stable offset.
    Stable(i64),
}

/// A byte range of a segment file, ready for sendfile/splice. Holds the file
/// open, so retention may unlink the segment while the slice is in flight.
#[derive(Debug, Clone)]
pub struct FileSlice {
    pub file: Arc<fs::File>,
    pub position: u64,
    pub len: u64,
    /// The bytes were written moments ago (see [`RECENT_MS`] and
    /// [`RECENT_BYTES`]), so their pages are almost surely in the page
    /// cache: the sender may skip asking the kernel.
    pub recent: bool,
}

/// A slice ending within this many bytes of the active segment's end, in a
/// segment written within [`RECENT_MS`], is [`FileSlice::recent`].
pub const RECENT_BYTES: u64 = 4 << 20;
/// See [`RECENT_BYTES`].
pub const RECENT_MS: u64 = 5_000;

impl FileSlice {
    /// Copies the slice into memory: for tools and tests, not the fetch path.
    pub fn to_bytes(&self) -> io::Result<Bytes> {
        let mut buf = vec![0u8; self.len as usize];
        self.file.read_exact_at(&mut buf, self.position)?;
        Ok(Bytes::from(buf))
    }
}

/// The answer to a read.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole batches starting with the one that holds the requested offset;
    /// `None` when there is nothing at or after it below the bound.
    pub slice: Option<FileSlice>,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    pub high_watermark: i64,
}

/// Result of a timestamp lookup: the first batch whose maxTimestamp is at
/// or after the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    pub offset: i64,
    pub timestamp: i64,
}

#[derive(Debug)]
struct Pending {
    data: Bytes,
    len: u64,
    base_offset: i64,
    last_offset: i64,
    max_timestamp: i64,
    leader_epoch: i32,
    roll_before: bool,
}

/// Where the next append will land, ahead of the writes.
#[derive(Debug)]
struct Projection {
    base_offset: i64,
    size: u64,
    first_append_ms: Option<u64>,
}

#[derive(Debug)]
struct State {
    config: LogConfig,
    segments: VecDeque<Segment>,
    log_start_offset: i64,
    /// Next offset to assign (queued batches included).
    next_offset: i64,
    /// Offset after the last batch written to the page cache.
    log_end_offset: i64,
    /// Offset after the last batch covered by a completed fdatasync.
    durable_offset: i64,
    high_watermark: i64,
    /// The high watermark is `min(log end, hw_limit)`, never moving back
    /// (but for a truncation): `i64::MAX` on one node, where it follows the
    /// log end; replication sets it to what the ISR holds
    /// ([`Log::set_hw_limit`]).
    hw_limit: i64,
    /// The high watermark last written to [`HIGH_WATERMARK_FILE`].
    hw_checkpointed: Option<i64>,
    /// Leader epoch → first offset, persisted in the epoch file.
    epochs: EpochHistory,
    pending: Vec<Pending>,
    /// The previous round's emptied queue, kept for its capacity.
    spare_pending: Vec<Pending>,
    projection: Projection,
    flushing: bool,
    durable_wanted: i64,
    last_sync_ms: u64,
    /// Bytes written since the last fdatasync started (foreground,
    /// background or a roll's), for [`LogConfig::writeback_bytes`].
    written_since_sync: u64,
    /// A background writeback fdatasync is running.
    writing_back: bool,
    poisoned: Option<String>,
    /// The poisoning write or open failed for want of space or file
    /// descriptors, not an fsync: nothing acknowledged is in doubt, so
    /// reopening the log (which runs recovery) once they return is safe.
    poisoned_reopenable: bool,
    closed: bool,
    /// [`Log::close`] has finished: the writer is gone for good.
    files_closed: bool,
    /// [`Log::release_files`] is closing the writer: no flush round starts.
    releasing: bool,
}

impl State {
    /// What must hold of the offsets at every change; a break is a bug.
    fn check_offsets(&self) {
        assert!(
            self.log_start_offset <= self.high_watermark
                && self.high_watermark <= self.log_end_offset
                && self.log_end_offset <= self.next_offset
                && self.durable_offset <= self.log_end_offset,
            "log offsets out of order: start {} hw {} end {} next {} durable {}",
            self.log_start_offset,
            self.high_watermark,
            self.log_end_offset,
            self.next_offset,
            self.durable_offset
        );
    }

    /// Moves the high watermark up to what the log end and the limit allow.
    /// Returns whether it moved.
    fn advance_high_watermark(&mut self) -> bool {
        let hw = self.log_end_offset.min(self.hw_limit).max(self.high_watermark);
        let moved = hw != self.high_watermark;
        self.high_watermark = hw;
        moved
    }

    fn check_writable(&self) -> Result<()> {
        if let Some(cause) = &self.poisoned {
            return Err(LogError::Poisoned { cause: cause.clone() });
        }
        if self.closed {
            return Err(LogError::Closed);
        }
        Ok(())
    }

    fn active(&self) -> &Segment {
        self.segments
            .back()
            .unwrap_or_else(|| unreachable!("a log always has an active segment"))
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .back_mut()
            .unwrap_or_else(|| unreachable!("a log always has an active segment"))
    }

    fn sync_wanted(&self, now_ms: u64) -> bool {
        if self.log_end_offset <= self.durable_offset {
            return false;
        }
        self.durable_wanted > self.durable_offset
            || match self.config.flush {
                FlushPolicy::Always => true,
                FlushPolicy::IntervalMs(ms) => now_ms.saturating_sub(self.last_sync_ms) >= ms,
                FlushPolicy::Never => false,
            }
    }

    fn segment_index_for(&self, offset: i64) -> usize {
        let i = self.segments.partition_point(|s| s.base_offset <= offset);
        i.saturating_sub(1)
    }

    /// The offset a read with `bound` stops before.
    fn upper(&self, bound: ReadBound) -> i64 {
        match bound {
            ReadBound::HighWatermark => self.high_watermark,
            ReadBound::LogEnd => self.log_end_offset,
            ReadBound::Stable(lso) => lso.min(self.high_watermark),
        }
    }
}

struct Shared {
    dir: PathBuf,
    state: RefCell<State>,
    /// Set by a write of the current flush round that failed with ENOSPC
    /// or EDQUOT, or an open that failed with EMFILE or ENFILE; read when the
    /// round's failure poisons the log.
    exhausted: Cell<bool>,
    files: Rc<OpenFiles>,
    notify: Notify,
    io: Io,
    clock: Clock,
    /// Appends past the page cache, for a follower (ADR 0017).
    direct: RefCell<crate::direct::Direct>,
}

/// A partition log. Owned by the partition's shard; cloning makes another
/// handle to the same log for another task of that shard.
#[derive(Clone)]
pub struct Log {
    shared: Rc<Shared>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.shared.state.borrow();
        f.debug_struct("Log")
            .field("dir", &self.shared.dir)
            .field("log_start_offset", &st.log_start_offset)
            .field("log_end_offset", &st.log_end_offset)
            .field("segments", &st.segments.len())
            .finish()
    }
}

fn parse_segment_name(name: &str) -> Option<(i64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LogError + 'a {
    move |e| LogError::io(op, path, e)
}

async fn open_rw(path: &Path, create_new: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if create_new {
        o.create_new(true);
    }
    o.open(path).await
}

/// Replaces the file `name` in `dir` with the decimal `value`: a temporary
/// file, fdatasynced, renamed over it; the directory synced too when
/// `sync_dir` (else by the caller's next directory sync, or not at all for
/// a hint).
fn write_number(dir: &Path, name: &str, value: i64, sync_dir: bool) -> io::Result<()> {
    let how = if sync_dir {
        Replace::Durable
    } else {
        Replace::DirectoryLater
    };
    replace_file(&dir.join(name), value.to_string().as_bytes(), how)
}

/// A directory sync on the calling thread, for the rare changes (truncation)
/// made while the log's state is borrowed.
fn sync_dir_now(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// The epoch history of a log being opened: the file, less epochs that
/// start at or past the log end; rebuilt from the batch headers when the
/// file is missing, unreadable or older than the newest batch.
fn load_epochs(dir: &Path, segments: &VecDeque<Segment>, log_start: i64, log_end: i64) -> Result<EpochHistory> {
    let path = dir.join(crate::epochs::LEADER_EPOCH_FILE);
    // Recovery's tail scan read the newest batch's header: no extra I/O.
    let newest_batch_epoch = segments.iter().rev().find(|s| s.size > 0).and_then(|s| s.last_epoch);
    if let Some(mut h) = EpochHistory::load(dir).map_err(io_err("read", &path))? {
        let changed = h.truncate_end(log_end);
        let stale = match newest_batch_epoch {
            Some(e) => e > h.latest(),
            None => log_end > log_start && h.latest() < 0,
        };
        if !stale {
            if changed {
                h.save(dir).map_err(io_err("write", &path))?;
            }
            return Ok(h);
        }
    }
    if log_end == log_start && newest_batch_epoch.is_none() {
        return Ok(EpochHistory::default());
    }
    tracing::info!(dir = %dir.display(), "rebuilding the leader-epoch history from batch headers");
    let mut h = EpochHistory::default();
    for seg in segments {
        seg.for_each_header_from(seg.base_offset, |b| {
            if h.accepts(b.partition_leader_epoch()) {
                h.note(b.partition_leader_epoch(), b.base_offset());
            }
            true
        })
        .map_err(io_err("read", &seg.paths.log))?;
    }
    h.truncate_start(log_start);
    h.save(dir).map_err(io_err("write", &path))?;
    Ok(h)
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = OpenOptions::new().read(true).open(dir).await?;
    d.sync_all().await
}

async fn write_at(file: &File, data: Vec<u8>, pos: u64) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut handle = file;
    let want = data.len();
    let BufResult(res, _) = handle.write_at(data, pos).await;
    match res? {
        n if n == want => Ok(()),
        n => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("index write of {want} bytes wrote {n}"),
        )),
    }
}
impl Log {
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub fn log_start_offset(&self) -> i64 {
        self.shared.state.borrow().log_start_offset
    }

    /// Offset after the last batch written (visible to reads).
    pub fn log_end_offset(&self) -> i64 {
        self.shared.state.borrow().log_end_offset
    }

    /// Offset after the last batch covered by an fdatasync.
    pub fn durable_offset(&self) -> i64 {
        self.shared.state.borrow().durable_offset
    }

    pub fn high_watermark(&self) -> i64 {
        self.shared.state.borrow().high_watermark
    }

    /// Offset the next append will get.
    pub fn next_offset(&self) -> i64 {
        self.shared.state.borrow().next_offset
    }

    pub fn segment_count(&self) -> usize {
        self.shared.state.borrow().segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<i64> {
        self.shared
            .state
            .borrow()
            .segments
            .iter()
            .map(|s| s.base_offset)
            .collect()
    }

    /// The rolled segments (every one but the active), oldest first: base
    /// offset, next offset, bytes and newest timestamp (-1 when none).
    pub fn rolled_segments(&self) -> Vec<(i64, i64, u64, i64)> {
        let st = self.shared.state.borrow();
        let rolled = st.segments.len().saturating_sub(1);
        st.segments
            .iter()
            .take(rolled)
            .map(|s| (s.base_offset, s.next_offset, s.size, s.max_timestamp))
            .collect()
    }

    /// Bytes written across all segments.
    pub fn size_bytes(&self) -> u64 {
        self.shared.state.borrow().segments.iter().map(|s| s.size).sum()
    }

    pub fn is_poisoned(&self) -> bool {
        self.shared.state.borrow().poisoned.is_some()
    }

    /// Poisoned because a write found the disk full or an open found no
    /// file descriptor, not by a failed fsync: the owner may reopen the log
    /// (recovery drops any torn tail) once there is room again, as a
    /// restart would.
    pub fn is_poisoned_reopenable(&self) -> bool {
        let st = self.shared.state.borrow();
        st.poisoned.is_some() && st.poisoned_reopenable
    }

    pub fn stats(&self) -> IoStats {
        self.shared.io.stats.snapshot()
    }
}

/// ENOSPC or EDQUOT (the filesystem or the user's quota is full), or EMFILE
/// or ENFILE (no file descriptors): a want of resources that leaves nothing
/// synced in doubt, so the log may be reopened once they return.
fn is_exhaustion(e: &io::Error) -> bool {
    use rustix::io::Errno;
    let code = e.raw_os_error();
    [Errno::NOSPC, Errno::DQUOT, Errno::MFILE, Errno::NFILE]
        .iter()
        .any(|c| code == Some(c.raw_os_error()))
}

async fn open_rw_create(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .await
}
