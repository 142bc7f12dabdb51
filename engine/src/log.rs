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
    /// Opens (or creates) the log in `dir`, recovering its segments; see the
    /// recovery table in `segment.rs` and `docs/storage.md`.
    pub async fn open(dir: impl AsRef<Path>, config: LogConfig, env: Env) -> Result<Self> {
        config.validate()?;
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        let clock = env.clock.unwrap_or_else(system_clock);
        let files = env.open_files.unwrap_or_default();

        let mut bases = std::collections::BTreeSet::new();
        let mut others = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            match parse_segment_name(name) {
                Some((base, "log")) => {
                    bases.insert(base);
                }
                Some((base, "index" | "timeindex")) => others.push((base, entry.path())),
                _ => {}
            }
        }
        // orphan_index: index files whose log is gone.
        for (base, path) in others {
            if !bases.contains(&base) {
                tracing::warn!(path = %path.display(), "removing index without a segment");
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }

        let checkpoint_path = dir.join(LOG_START_OFFSET_FILE);
        let checkpoint = match fs::read_to_string(&checkpoint_path) {
            Ok(s) => s.trim().parse::<i64>().ok().filter(|&o| o >= 0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(LogError::io("read", &checkpoint_path, e)),
        };

        let mut bases: Vec<i64> = bases.into_iter().collect();
        if bases.is_empty() {
            let base = checkpoint.unwrap_or(0);
            let paths = SegmentPaths::new(&dir, base);
            fs::File::create(&paths.log).map_err(io_err("create", &paths.log))?;
            sync_dir(&dir).await.map_err(io_err("sync", &dir))?;
            bases.push(base);
        }
        // empty_segment: a roll that created the newest file and crashed
        // before writing to it.
        while let [.., _, newest] = bases[..] {
            let paths = SegmentPaths::new(&dir, newest);
            let len = fs::metadata(&paths.log).map_err(io_err("stat", &paths.log))?.len();
            if len > 0 {
                break;
            }
            tracing::warn!(path = %paths.log.display(), "removing empty newest segment left by a roll");
            segment::remove_files(&paths)?;
            bases.pop();
        }

        let mut segments: VecDeque<Segment> = VecDeque::with_capacity(bases.len());
        for (i, &base) in bases.iter().enumerate() {
            let newest = i + 1 == bases.len();
            let seg = Segment::recover(&dir, base, &config, newest, &files)?;
            if let Some(prev) = segments.back()
                && prev.next_offset > base
            {
                return Err(LogError::Corrupt {
                    path: seg.paths.log.clone(),
                    position: 0,
                    reason: format!(
                        "segment starts at {base} but the previous one runs to {}",
                        prev.next_offset
                    ),
                });
            }
            segments.push_back(seg);
        }

        let active = segments
            .back_mut()
            .unwrap_or_else(|| unreachable!("at least one segment was opened"));
        let log_file = open_rw(&active.paths.log, false)
            .await
            .map_err(io_err("open", &active.paths.log))?;
        // What recovery kept is made durable once, so durable_offset is true.
        log_file.sync_data().await.map_err(io_err("sync", &active.paths.log))?;
        // The writer opens on the first write: an idle log holds no file.
        drop(log_file);
        if active.size > 0 {
            let created = fs::metadata(&active.paths.log)
                .and_then(|m| m.created().or_else(|_| m.modified()))
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64);
            active.first_append_ms = Some(created.unwrap_or_else(|| clock()));
        }
        let projection = Projection {
            base_offset: active.base_offset,
            size: active.size,
            first_append_ms: active.first_append_ms,
        };
        let log_end_offset = active.next_offset;
        let first_base = segments.front().map_or(0, |s| s.base_offset);
        let log_start_offset = checkpoint.unwrap_or(first_base).max(first_base).min(log_end_offset);
        let epochs = load_epochs(&dir, &segments, log_start_offset, log_end_offset)?;
        // No checkpoint: a log that never replicated, whose high watermark
        // is its end; replication lowers the limit before anything is read.
        let hw_path = dir.join(HIGH_WATERMARK_FILE);
        let hw_checkpointed = match fs::read_to_string(&hw_path) {
            Ok(s) => Some(s.trim().parse::<i64>().unwrap_or(log_start_offset)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(LogError::io("read", &hw_path, e)),
        };
        let high_watermark = hw_checkpointed
            .unwrap_or(log_end_offset)
            .clamp(log_start_offset, log_end_offset);
        let now = clock();
        let state = State {
            config,
            segments,
            log_start_offset,
            next_offset: log_end_offset,
            log_end_offset,
            durable_offset: log_end_offset,
            high_watermark,
            hw_limit: i64::MAX,
            hw_checkpointed,
            epochs,
            pending: Vec::new(),
            spare_pending: Vec::new(),
            projection,
            flushing: false,
            durable_wanted: log_end_offset,
            last_sync_ms: now,
            written_since_sync: 0,
            writing_back: false,
            poisoned: None,
            poisoned_reopenable: false,
            closed: false,
            files_closed: false,
            releasing: false,
        };
        state.check_offsets();
        let direct_buffers = env.direct_buffers.clone().unwrap_or_default();
        Ok(Self {
            shared: Rc::new(Shared {
                dir,
                state: RefCell::new(state),
                exhausted: Cell::new(false),
                files,
                notify: Notify::default(),
                io: Io {
                    stats: Default::default(),
                    faults: env.faults,
                    histograms: env.histograms,
                },
                clock,
                direct: RefCell::new(crate::direct::Direct::new(direct_buffers)),
            }),
        })
    }

    /// Validates `batch`, assigns its offsets and queues it for the next
    /// flush round. Returns at once; [`Log::wait`] (or [`Log::append_wait`])
    /// completes when the batch is written or synced. The batch's bytes are
    /// not copied: they are rewritten in place and written from this buffer.
    ///
    /// `leader_epoch` is stamped into the batch; it may not be below the
    /// newest epoch in the log ([`LogError::StaleEpoch`]). The first batch
    /// of a new epoch writes the epoch file first.
    pub fn append(&self, mut batch: BytesMut, leader_epoch: i32) -> Result<AppendInfo> {
        let mut st = self.shared.state.borrow_mut();
        st.check_writable()?;
        let info = batch::validate(&batch, st.config.max_batch_bytes as usize)?;
        let base_offset = st.next_offset;
        // Stamped before `queue` checks the epoch: a refused batch is not
        // written, stamped or not.
        batch::assign(&mut batch, base_offset, leader_epoch);
        self.queue(&mut st, batch.freeze(), &info, base_offset, leader_epoch)
    }

    /// A follower's append: the batch keeps the offsets and leader epoch
    /// the leader gave it. It must start at the log's next offset, pass its
    /// CRC check, and not carry an epoch below the log's newest. The bytes
    /// are written as they are, without a copy.
    pub fn append_replica(&self, batch: Bytes) -> Result<AppendInfo> {
        let mut st = self.shared.state.borrow_mut();
        st.check_writable()?;
        let info = batch::validate(&batch, usize::MAX)?;
        let header = batch::BatchHeader::parse(&batch)?;
        let (base_offset, epoch) = (header.base_offset(), header.partition_leader_epoch());
        if base_offset != st.next_offset {
            return Err(LogError::NotContiguous {
                expected: st.next_offset,
                got: base_offset,
            });
        }
        self.queue(&mut st, batch, &info, base_offset, epoch)
    }

    /// Queues a validated batch that carries its offsets and epoch.
    fn queue(
        &self,
        st: &mut State,
        batch: Bytes,
        info: &batch::BatchInfo,
        base_offset: i64,
        leader_epoch: i32,
    ) -> Result<AppendInfo> {
        if !st.epochs.accepts(leader_epoch) {
            return Err(LogError::StaleEpoch {
                epoch: leader_epoch,
                latest: st.epochs.latest(),
            });
        }
        if st.epochs.note(leader_epoch, base_offset)
            && let Err(e) = st.epochs.save(&self.shared.dir)
        {
            st.epochs.truncate_end(base_offset);
            return Err(LogError::io(
                "write",
                self.shared.dir.join(crate::epochs::LEADER_EPOCH_FILE),
                e,
            ));
        }
        let now = (self.shared.clock)();
        let last_offset = base_offset + i64::from(info.last_offset_delta);
        let len = info.len as u64;
        let (segment_bytes, segment_ms) = (st.config.segment_bytes, st.config.segment_ms);
        let p = &mut st.projection;
        let too_big = p.size + len > segment_bytes;
        let too_old = p.first_append_ms.is_some_and(|t| now.saturating_sub(t) >= segment_ms);
        let rel_overflow = last_offset - p.base_offset > i64::from(i32::MAX);
        let roll_before = p.size > 0 && (too_big || too_old || rel_overflow);
        if roll_before {
            *p = Projection {
                base_offset,
                size: 0,
                first_append_ms: None,
            };
        }
        p.first_append_ms.get_or_insert(now);
        p.size += len;
        st.pending.push(Pending {
            data: batch,
            len,
            base_offset,
            last_offset,
            max_timestamp: info.max_timestamp,
            leader_epoch,
            roll_before,
        });
        st.next_offset = last_offset + 1;
        st.check_offsets();
        self.shared.io.count_appended(1);
        // A caller that never waits (acks=0) still gets its batch written.
        self.kick(st);
        Ok(AppendInfo {
            base_offset,
            last_offset,
            max_timestamp: info.max_timestamp,
        })
    }

    /// Appends and waits for the given durability.
    pub async fn append_wait(&self, batch: BytesMut, leader_epoch: i32, durability: Durability) -> Result<AppendInfo> {
        let info = self.append(batch, leader_epoch)?;
        self.wait(info.last_offset + 1, durability).await?;
        Ok(info)
    }

    /// The durability the config gives an append by itself: `Synced` under
    /// `FlushPolicy::Always`, else `Written`.
    pub fn default_durability(&self) -> Durability {
        match self.shared.state.borrow().config.flush {
            FlushPolicy::Always => Durability::Synced,
            _ => Durability::Written,
        }
    }

    /// Waits until every offset below `end_offset` is written (or synced),
    /// driving a flush round if none is running.
    pub async fn wait(&self, end_offset: i64, durability: Durability) -> Result<()> {
        loop {
            let listen = self.shared.notify.listen();
            {
                let mut st = self.shared.state.borrow_mut();
                if let Some(cause) = &st.poisoned {
                    return Err(LogError::Poisoned { cause: cause.clone() });
                }
                let reached = match durability {
                    Durability::Written => st.log_end_offset >= end_offset,
                    Durability::Synced => st.durable_offset >= end_offset,
                };
                if reached {
                    return Ok(());
                }
                if end_offset > st.next_offset || st.files_closed {
                    return Err(LogError::Closed);
                }
                if durability == Durability::Synced {
                    st.durable_wanted = st.durable_wanted.max(end_offset);
                }
                self.kick(&mut st);
            }
            listen.await;
        }
    }

    /// Asks for every offset below `end_offset` to become durable, without
    /// waiting: the next flush round syncs. A caller that appends to several
    /// logs and waits on them one after another calls this right after each
    /// append, so every log's first round carries its fdatasync instead of
    /// the syncs running one log after another.
    pub fn want_synced(&self, end_offset: i64) {
        let mut st = self.shared.state.borrow_mut();
        if st.poisoned.is_some() || end_offset > st.next_offset {
            return;
        }
        st.durable_wanted = st.durable_wanted.max(end_offset);
        self.kick(&mut st);
    }

    /// Completes at the next flush round, roll, poisoning, high-watermark
    /// move or role change, counting from when it is called: a waiter
    /// creates it, checks the state, then awaits it, and cannot miss a
    /// change in between.
    pub fn listen(&self) -> impl std::future::Future<Output = ()> + '_ {
        self.shared.notify.listen()
    }

    /// Syncs written data when the `IntervalMs` policy says it is due; the
    /// owner calls this from a timer so the bound holds when appends stop.
    pub async fn sync_if_due(&self) -> Result<()> {
        let target = {
            let st = self.shared.state.borrow();
            let due = match st.config.flush {
                FlushPolicy::IntervalMs(ms) => (self.shared.clock)().saturating_sub(st.last_sync_ms) >= ms,
                _ => false,
            };
            if !due || st.log_end_offset <= st.durable_offset {
                return Ok(());
            }
            st.log_end_offset
        };
        self.wait(target, Durability::Synced).await
    }

    /// Makes everything appended so far durable.
    pub async fn sync(&self) -> Result<()> {
        let end = self.shared.state.borrow().next_offset;
        self.wait(end, Durability::Synced).await
    }

    /// Flushes and syncs everything, then refuses further appends. Reads
    /// keep working.
    pub async fn close(&self) -> Result<()> {
        self.shared.state.borrow_mut().closed = true;
        self.sync().await?;
        let (writer, (idx, idx_pos, time, time_pos), size, reserved_to) = {
            let mut st = self.shared.state.borrow_mut();
            let seg = st.active_mut();
            (
                seg.writer.take(),
                seg.take_unpersisted_index(),
                seg.size,
                seg.preallocated_to,
            )
        };
        self.shared.direct.borrow_mut().reset();
        if let Some(w) = writer {
            self.shared.release_reserve(&w.log, size, reserved_to).await;
            let dir = &self.shared.dir;
            write_at(&w.index, idx, idx_pos).await.map_err(io_err("write", dir))?;
            write_at(&w.time_index, time, time_pos)
                .await
                .map_err(io_err("write", dir))?;
            w.index.sync_data().await.map_err(io_err("sync", &self.shared.dir))?;
            w.time_index
                .sync_data()
                .await
                .map_err(io_err("sync", &self.shared.dir))?;
        }
        self.shared.state.borrow_mut().files_closed = true;
        Ok(())
    }

    /// Closes the files this log holds (segment readers, the active
    /// segment's writer) when it is idle: nothing queued, no flush round or
    /// release running. They reopen on the next read or write. Returns
    /// whether the log was idle. Unsynced data stays in the page cache; the
    /// next sync reopens the file to sync it.
    pub async fn release_files(&self) -> bool {
        let (writer, (idx, idx_pos, time, time_pos), size, reserved_to) = {
            let mut st = self.shared.state.borrow_mut();
            if st.flushing || st.releasing || st.closed || !st.pending.is_empty() {
                return false;
            }
            for seg in st.segments.iter_mut() {
                seg.release_reader();
            }
            let seg = st.active_mut();
            let Some(w) = seg.writer.take() else {
                return true;
            };
            let out = (w, seg.take_unpersisted_index(), seg.size, seg.preallocated_to);
            st.releasing = true;
            self.shared.direct.borrow_mut().reset();
            out
        };
        self.shared.release_reserve(&writer.log, size, reserved_to).await;
        // Index entries are hints that recovery checks: a failed write
        // costs a longer scan on the next open, not data.
        let dir = &self.shared.dir;
        if let Err(e) = write_at(&writer.index, idx, idx_pos).await {
            tracing::warn!(dir = %dir.display(), error = %e, "index write on release");
        }
        if let Err(e) = write_at(&writer.time_index, time, time_pos).await {
            tracing::warn!(dir = %dir.display(), error = %e, "time index write on release");
        }
        drop(writer);
        let mut st = self.shared.state.borrow_mut();
        st.releasing = false;
        let seg = st.active_mut();
        if seg.preallocated_to != u64::MAX {
            seg.preallocated_to = seg.preallocated_to.min(size);
        }
        self.kick(&mut st);
        drop(st);
        self.shared.notify.notify_all();
        true
    }

    /// Files this log holds open (not counting slices handed to readers).
    pub fn open_files(&self) -> usize {
        self.shared
            .state
            .borrow()
            .segments
            .iter()
            .map(Segment::open_files)
            .sum()
    }

    fn kick(&self, st: &mut State) {
        if st.flushing || st.releasing {
            return;
        }
        let now = (self.shared.clock)();
        if st.pending.is_empty() && !st.sync_wanted(now) {
            return;
        }
        st.flushing = true;
        let shared = Rc::clone(&self.shared);
        compio::runtime::spawn(async move {
            loop {
                match shared.flush_round().await {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(cause) => {
                        tracing::error!(dir = %shared.dir.display(), %cause, "log poisoned");
                        let mut st = shared.state.borrow_mut();
                        st.poisoned = Some(cause);
                        st.poisoned_reopenable = shared.exhausted.get();
                        st.pending.clear();
                        break;
                    }
                }
            }
            shared.state.borrow_mut().flushing = false;
            shared.notify.notify_all();
        })
        .detach();
    }

    /// The first batch holding an offset at or after `from` (and the log
    /// start) whose maxTimestamp is at or after `ts`: its base offset (or
    /// that bound, when it falls inside the batch) and its maxTimestamp.
    /// The broker refines this to the record with [`Log::read_bytes`].
    pub fn offset_for_timestamp(&self, ts: i64, from: i64) -> Result<Option<TimestampOffset>> {
        let st = self.shared.state.borrow();
        let lso = st.log_start_offset.max(from);
        for seg in st
            .segments
            .iter()
            .filter(|s| s.next_offset > lso && s.max_timestamp >= ts)
        {
            let start_rel = seg.time_index.last_below(ts).map_or(0, |(_, rel)| rel);
            let start = (seg.base_offset + i64::from(start_rel)).max(lso);
            let mut found = None;
            seg.for_each_header_from(start, |h| {
                if h.max_timestamp() >= ts {
                    found = Some(TimestampOffset {
                        offset: h.base_offset().max(lso),
                        timestamp: h.max_timestamp(),
                    });
                    false
                } else {
                    true
                }
            })
            .map_err(io_err("read", &seg.paths.log))?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// The largest batch maxTimestamp and the base offset of its batch (the
    /// first such batch); the broker finds the record in it.
    pub fn max_timestamp(&self) -> Option<TimestampOffset> {
        let st = self.shared.state.borrow();
        st.segments
            .iter()
            .filter(|s| s.max_timestamp >= 0 && s.offset_of_max_timestamp >= st.log_start_offset)
            .max_by_key(|s| s.max_timestamp)
            .map(|s| TimestampOffset {
                offset: s.offset_of_max_timestamp,
                timestamp: s.max_timestamp,
            })
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (at
    /// least one batch even if it is larger), within one segment.
    pub fn read(&self, offset: i64, max_bytes: u64, bound: ReadBound) -> Result<ReadResult> {
        let st = self.shared.state.borrow();
        let mut result = ReadResult {
            slice: None,
            log_start_offset: st.log_start_offset,
            log_end_offset: st.log_end_offset,
            high_watermark: st.high_watermark,
        };
        if offset < st.log_start_offset || offset > st.log_end_offset {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: st.log_start_offset,
                log_end_offset: st.log_end_offset,
            });
        }
        let upper = match bound {
            ReadBound::HighWatermark => st.high_watermark,
            ReadBound::LogEnd => st.log_end_offset,
        };
        if offset >= upper {
            return Ok(result);
        }
        let mut i = st.segment_index_for(offset);
        while st.segments[i].next_offset <= offset {
            i += 1;
            if i == st.segments.len() {
                return Ok(result);
            }
        }
        let seg = &st.segments[i];
        let err = io_err("read", &seg.paths.log);
        let Some((start, _)) = seg.position_of(offset).map_err(err)? else {
            return Ok(result);
        };
        let end_bound = if upper >= seg.next_offset {
            seg.size
        } else {
            seg.position_of(upper)
                .map_err(io_err("read", &seg.paths.log))?
                .map_or(seg.size, |(p, _)| p)
        };
        if start >= end_bound {
            return Ok(result);
        }
        let first = seg.batch_len_at(start).map_err(io_err("read", &seg.paths.log))?;
        let end = if first >= max_bytes {
            start + first
        } else {
            seg.batch_end_within(start, (start + max_bytes).min(end_bound))
                .map_err(io_err("read", &seg.paths.log))?
                .max(start + first)
        };
        let recent = i + 1 == st.segments.len()
            && seg.size - end <= RECENT_BYTES
            && (self.shared.clock)().saturating_sub(seg.last_write_ms) <= RECENT_MS;
        result.slice = Some(FileSlice {
            file: Arc::clone(seg.reader().map_err(io_err("open", &seg.paths.log))?),
            position: start,
            len: end - start,
            recent,
        });
        Ok(result)
    }

    /// A copying read for tools and tests.
    pub fn read_bytes(&self, offset: i64, max_bytes: u64) -> Result<Bytes> {
        let r = self.read(offset, max_bytes, ReadBound::LogEnd)?;
        match r.slice {
            None => Ok(Bytes::new()),
            Some(s) => s.to_bytes().map_err(io_err("read", &self.shared.dir)),
        }
    }

    /// Calls `f` with each whole batch from the one holding `offset` to the
    /// log end, in order, reading up to 1 MiB at a time. For replays when a
    /// partition opens (producer state, committed offsets); records already
    /// passed recovery's checks. Stops early if a read returns no whole
    /// batch.
    pub fn for_each_batch(&self, offset: i64, mut f: impl FnMut(&batch::BatchHeader<'_>, &[u8])) -> Result<()> {
        let mut offset = offset.max(self.log_start_offset());
        while offset < self.log_end_offset() {
            let bytes = self.read_bytes(offset, 1 << 20)?;
            let mut at = 0;
            while let Ok(h) = batch::BatchHeader::parse(&bytes[at..]) {
                let Some(len) = h.total_len().filter(|&l| at + l <= bytes.len()) else {
                    break;
                };
                f(&h, &bytes[at..at + len]);
                offset = h.last_offset() + 1;
                at += len;
            }
            if at == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Deletes whole non-active segments past `retention_ms` (by their
    /// largest timestamp, or file time when they have none) or beyond
    /// `retention_bytes`, and those wholly below the log start offset.
    /// Returns the base offsets deleted.
    pub fn enforce_retention(&self) -> Result<Vec<i64>> {
        let now = (self.shared.clock)();
        let (retention_ms, retention_bytes) = {
            let st = self.shared.state.borrow();
            (st.config.retention_ms, st.config.retention_bytes)
        };
        self.trim_front(|front, total| {
            let expired = retention_ms.is_some_and(|ms| {
                let newest_ms = if front.max_timestamp >= 0 {
                    front.max_timestamp as u64
                } else {
                    fs::metadata(&front.paths.log)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map_or(now, |d| d.as_millis() as u64)
                };
                now.saturating_sub(newest_ms) > ms
            });
            expired || retention_bytes.is_some_and(|max| total - front.size >= max)
        })
    }

    /// Deletes the oldest segment while it is wholly below the log start
    /// offset or `also(segment, total log bytes)` says so; never the active
    /// segment. Moves the log start offset to the new first segment.
    fn trim_front(&self, mut also: impl FnMut(&Segment, u64) -> bool) -> Result<Vec<i64>> {
        let mut st = self.shared.state.borrow_mut();
        let mut total: u64 = st.segments.iter().map(|s| s.size).sum();
        let mut deleted = Vec::new();
        while st.segments.len() > 1 {
            let front = &st.segments[0];
            // Never past the high watermark: what followers may still need,
            // and what a consumer may not see yet, stays.
            if front.next_offset > st.high_watermark
                || !(front.next_offset <= st.log_start_offset || also(front, total))
            {
                break;
            }
            let seg = st
                .segments
                .pop_front()
                .unwrap_or_else(|| unreachable!("len checked above"));
            total -= seg.size;
            st.log_start_offset = st.log_start_offset.max(st.segments[0].base_offset);
            let start = st.log_start_offset;
            st.epochs.truncate_start(start);
            st.check_offsets();
            seg.delete_files()?;
            tracing::info!(dir = %self.shared.dir.display(), base_offset = seg.base_offset, "deleted segment");
            deleted.push(seg.base_offset);
        }
        Ok(deleted)
    }

    /// Moves the log start offset forward (DeleteRecords), persisting it,
    /// and deletes segments wholly below it. Never past the high watermark.
    pub fn advance_log_start_offset(&self, offset: i64) -> Result<i64> {
        {
            let mut st = self.shared.state.borrow_mut();
            if offset > st.high_watermark || offset < 0 {
                return Err(LogError::OffsetOutOfRange {
                    requested: offset,
                    log_start_offset: st.log_start_offset,
                    log_end_offset: st.high_watermark,
                });
            }
            if offset <= st.log_start_offset {
                return Ok(st.log_start_offset);
            }
            let dir = &self.shared.dir;
            let path = dir.join(LOG_START_OFFSET_FILE);
            let write = || write_number(dir, LOG_START_OFFSET_FILE, offset, true);
            match write() {
                Ok(()) => {}
                // A full disk: the segments wholly below the new start are
                // going anyway, and deleting them first makes room for the
                // checkpoint. A crash in between leaves the start at the
                // first remaining segment, which is at or below `offset`.
                Err(e) if is_exhaustion(&e) => {
                    drop(st);
                    self.trim_front(|front, _| front.next_offset <= offset)?;
                    write().map_err(io_err("checkpoint", &path))?;
                    st = self.shared.state.borrow_mut();
                }
                Err(e) => return Err(LogError::io("checkpoint", &path, e)),
            }
            st.log_start_offset = offset;
            st.check_offsets();
        }
        self.trim_front(|_, _| false)?;
        Ok(offset)
    }

    /// Changes the config (AlterConfigs). Takes effect from the next append,
    /// roll or retention pass.
    pub fn set_config(&self, config: LogConfig) -> Result<()> {
        config.validate()?;
        self.shared.state.borrow_mut().config = config;
        Ok(())
    }

    pub fn config(&self) -> LogConfig {
        self.shared.state.borrow().config.clone()
    }

    /// Lets flush rounds of at least [`LogConfig::direct_write_min_bytes`]
    /// go straight to the device, past the page cache (`O_DIRECT`), or
    /// sends every round back through it. A follower's log is read only
    /// once it leads, so its copies into the page cache are wasted work
    /// (ADR 0017). On a filesystem without `O_DIRECT` appends stay buffered.
    pub fn set_direct_writes(&self, on: bool) {
        let mut d = self.shared.direct.borrow_mut();
        if d.on != on {
            d.on = on;
            d.disengage();
        }
    }

    /// Whether large flush rounds may go past the page cache: direct writes
    /// are allowed and the filesystem has not refused `O_DIRECT`.
    pub fn direct_writes(&self) -> bool {
        self.shared.direct.borrow().wanted()
    }

    /// Sets how far the high watermark may go (replication: the lowest
    /// log end of the ISR, a follower's leader's high watermark; `i64::MAX`
    /// to follow the log end). The high watermark becomes
    /// `min(log end, limit)` when that is higher; it never moves back but
    /// for a truncation. Wakes waiters when it moves.
    pub fn set_hw_limit(&self, limit: i64) {
        let mut st = self.shared.state.borrow_mut();
        st.hw_limit = limit;
        let moved = st.advance_high_watermark();
        st.check_offsets();
        drop(st);
        if moved {
            self.shared.notify.notify_all();
        }
    }

    /// Wakes every waiter on this log (a replica's role changed, so waits
    /// for the high watermark must look again).
    pub fn wake_all(&self) {
        self.shared.notify.notify_all();
    }

    /// Writes the high watermark to [`HIGH_WATERMARK_FILE`] when it moved
    /// since the last write. A lower bound after a crash: a restarted
    /// replica starts from it rather than from its log end.
    pub fn checkpoint_high_watermark(&self) -> Result<()> {
        let hw = {
            let st = self.shared.state.borrow();
            if st.hw_checkpointed == Some(st.high_watermark) {
                return Ok(());
            }
            st.high_watermark
        };
        let dir = &self.shared.dir;
        write_number(dir, HIGH_WATERMARK_FILE, hw, false)
            .map_err(io_err("checkpoint", &dir.join(HIGH_WATERMARK_FILE)))?;
        self.shared.state.borrow_mut().hw_checkpointed = Some(hw);
        Ok(())
    }

    /// The newest leader epoch in the log (-1 when empty).
    pub fn latest_epoch(&self) -> i32 {
        self.shared.state.borrow().epochs.latest()
    }

    /// Where the newest epoch's first batch is, if any.
    pub fn latest_epoch_start(&self) -> Option<i64> {
        self.shared.state.borrow().epochs.latest_start()
    }

    /// Where `epoch` ends in this log (OffsetForLeaderEpoch).
    pub fn epoch_end(&self, epoch: i32) -> EpochEnd {
        let st = self.shared.state.borrow();
        st.epochs.end_of(epoch, st.log_end_offset)
    }

    /// The epoch history, oldest first: `(epoch, start offset)`.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.shared.state.borrow().epochs.entries().to_vec()
    }

    /// Waits until no write is queued or running, so the files may change
    /// under the log.
    async fn wait_idle(&self) -> Result<()> {
        loop {
            let listen = self.shared.notify.listen();
            {
                let st = self.shared.state.borrow();
                st.check_writable()?;
                if !st.flushing && !st.releasing && st.pending.is_empty() {
                    return Ok(());
                }
            }
            listen.await;
        }
    }

    /// Cuts the log back to `offset` (a follower whose tail diverged from
    /// its leader's). The batch holding `offset` goes too, so the log may
    /// end a little below it; returns the new log end. Newer segments are
    /// deleted newest first, the one holding the cut is shortened and
    /// synced, then recovered like at open; the epoch history and the high
    /// watermark follow. A crash part-way leaves a longer log with the
    /// same prefix, which the next fetch truncates again.
    pub async fn truncate_to(&self, offset: i64) -> Result<i64> {
        self.wait_idle().await?;
        let mut st = self.shared.state.borrow_mut();
        if offset >= st.log_end_offset {
            return Ok(st.log_end_offset);
        }
        if offset < st.log_start_offset {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: st.log_start_offset,
                log_end_offset: st.log_end_offset,
            });
        }
        st.active_mut().writer = None;
        self.shared.direct.borrow_mut().reset();
        while st.segments.len() > 1 && st.active().base_offset >= offset {
            let seg = st
                .segments
                .pop_back()
                .unwrap_or_else(|| unreachable!("more than one segment"));
            seg.delete_files()?;
        }
        let (base, position) = {
            let seg = st.active();
            let err = io_err("read", &seg.paths.log);
            let pos = seg.position_of(offset).map_err(err)?.map_or(seg.size, |(p, _)| p);
            (seg.base_offset, pos)
        };
        let path = st.active().paths.log.clone();
        let file = fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        file.set_len(position)
            .and_then(|()| file.sync_data())
            .map_err(io_err("truncate", &path))?;
        drop(file);
        sync_dir_now(&self.shared.dir).map_err(io_err("sync", &self.shared.dir))?;
        let seg = Segment::recover(&self.shared.dir, base, &st.config, true, &self.shared.files)?;
        let end = seg.next_offset;
        assert!(end <= offset, "truncation to {offset} kept the log to {end}");
        let now = (self.shared.clock)();
        st.projection = Projection {
            base_offset: seg.base_offset,
            size: seg.size,
            first_append_ms: (seg.size > 0).then_some(now),
        };
        let last = st.segments.len() - 1;
        st.segments[last] = seg;
        st.next_offset = end;
        st.log_end_offset = end;
        st.durable_offset = st.durable_offset.min(end);
        st.durable_wanted = st.durable_wanted.min(end);
        st.high_watermark = st.high_watermark.min(end);
        if st.epochs.truncate_end(end) {
            st.epochs
                .save(&self.shared.dir)
                .map_err(io_err("write", &self.shared.dir))?;
        }
        st.check_offsets();
        drop(st);
        tracing::info!(dir = %self.shared.dir.display(), offset, end, "truncated log");
        self.shared.notify.notify_all();
        Ok(end)
    }

    /// Empties the log and restarts it at `start` (a follower that fell
    /// behind its leader's log start): every segment goes, newest first, the
    /// log-start checkpoint names `start`, and a new empty segment begins
    /// there.
    pub async fn truncate_fully(&self, start: i64) -> Result<()> {
        self.wait_idle().await?;
        let dir = self.shared.dir.clone();
        let mut st = self.shared.state.borrow_mut();
        st.active_mut().writer = None;
        self.shared.direct.borrow_mut().reset();
        write_number(&dir, LOG_START_OFFSET_FILE, start, false)
            .map_err(io_err("checkpoint", &dir.join(LOG_START_OFFSET_FILE)))?;
        while let Some(seg) = st.segments.pop_back() {
            seg.delete_files()?;
        }
        let paths = SegmentPaths::new(&dir, start);
        fs::File::create(&paths.log).map_err(io_err("create", &paths.log))?;
        sync_dir_now(&dir).map_err(io_err("sync", &dir))?;
        let seg = Segment::recover(&dir, start, &st.config, true, &self.shared.files)?;
        st.segments.push_back(seg);
        st.projection = Projection {
            base_offset: start,
            size: 0,
            first_append_ms: None,
        };
        st.log_start_offset = start;
        st.next_offset = start;
        st.log_end_offset = start;
        st.durable_offset = start;
        st.durable_wanted = start;
        st.high_watermark = start;
        st.epochs.clear();
        st.epochs.save(&dir).map_err(io_err("write", &dir))?;
        st.check_offsets();
        drop(st);
        tracing::info!(dir = %dir.display(), start, "emptied log to restart at a new offset");
        self.shared.notify.notify_all();
        Ok(())
    }

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

impl Shared {
    /// One group-commit round: write everything queued, then sync if the
    /// policy or a waiter wants it. `Ok(false)` when there was nothing to do.
    async fn flush_round(self: &Rc<Self>) -> Result<bool, String> {
        let mut pending = {
            let mut st = self.state.borrow_mut();
            let now = (self.clock)();
            if st.pending.is_empty() && !st.sync_wanted(now) {
                return Ok(false);
            }
            let spare = std::mem::take(&mut st.spare_pending);
            std::mem::replace(&mut st.pending, spare)
        };
        self.exhausted.set(false);
        if !pending.is_empty() {
            self.io.count_round(pending.len());
        }
        // Runs of batches bound for one segment, split where a roll comes.
        let mut i = 0;
        while i < pending.len() {
            if pending[i].roll_before {
                self.roll(pending[i].base_offset).await?;
            }
            let run_len = 1 + pending[i + 1..].iter().take_while(|p| !p.roll_before).count();
            self.write_run(&mut pending[i..i + run_len]).await?;
            i += run_len;
        }
        pending.clear();
        self.state.borrow_mut().spare_pending = pending;
        let (sync, target) = {
            let st = self.state.borrow();
            (st.sync_wanted((self.clock)()), st.log_end_offset)
        };
        if sync {
            let file = self.writer().await?.log;
            self.state.borrow_mut().written_since_sync = 0;
            self.io
                .sync_data(&file)
                .await
                .map_err(|e| format!("fdatasync of {}: {e}", self.dir.display()))?;
            let mut st = self.state.borrow_mut();
            // A truncation while the sync ran may have cut below `target`.
            st.durable_offset = st.durable_offset.max(target.min(st.log_end_offset));
            st.check_offsets();
            st.last_sync_ms = (self.clock)();
        } else {
            self.maybe_write_back().await?;
        }
        self.notify.notify_all();
        Ok(true)
    }

    /// Starts a background fdatasync of the active segment once
    /// [`LogConfig::writeback_bytes`] were written since the last one; it
    /// runs while appends go on, and what it covers becomes durable when it
    /// returns. A failure poisons the log like any failed fdatasync.
    async fn maybe_write_back(self: &Rc<Self>) -> Result<(), String> {
        let target = {
            let st = self.state.borrow();
            let every = st.config.writeback_bytes;
            if every == 0 || st.writing_back || st.written_since_sync < every {
                return Ok(());
            }
            st.log_end_offset
        };
        let file = self.writer().await?.log;
        {
            let mut st = self.state.borrow_mut();
            st.writing_back = true;
            st.written_since_sync = 0;
        }
        let shared = Rc::clone(self);
        compio::runtime::spawn(async move {
            let r = shared.io.sync_data(&file).await;
            let mut st = shared.state.borrow_mut();
            st.writing_back = false;
            match r {
                Ok(()) => {
                    // The segment may have rolled meanwhile: the roll synced
                    // the file too, so `target` is durable either way.
                    st.durable_offset = st.durable_offset.max(target.min(st.log_end_offset));
                    st.check_offsets();
                }
                Err(e) => {
                    let cause = format!("background fdatasync of {}: {e}", shared.dir.display());
                    tracing::error!(dir = %shared.dir.display(), %cause, "log poisoned");
                    st.poisoned.get_or_insert(cause);
                }
            }
            drop(st);
            shared.notify.notify_all();
        })
        .detach();
        Ok(())
    }

    /// Writes batches that all land in the active segment, in one writev per
    /// IOV_MAX batches, then their new index entries.
    async fn write_run(&self, run: &mut [Pending]) -> Result<(), String> {
        let writer = self.writer().await?;
        let position = self.state.borrow().active().size;
        let want: u64 = run.iter().map(|p| p.len).sum();
        self.preallocate(&writer, position, want).await;
        let bufs: Vec<Bytes> = run.iter_mut().map(|p| std::mem::take(&mut p.data)).collect();
        let inline = self.state.borrow().config.inline_write_bytes;
        let fail = |e: io::Error| self.write_failed(format!("write to {}: {e}", self.dir.display()), &e);
        let min = self.state.borrow().config.direct_write_min_bytes;
        let direct = self.direct.borrow_mut().choose(want, min);
        let staged = if direct {
            let segment = self.state.borrow().active().base_offset;
            let path = || self.state.borrow().active().paths.log.clone();
            crate::direct::stage(&self.direct, segment, path, &writer.log, position, want)
                .await
                .map_err(fail)?
                .map(|s| (segment, s))
        } else {
            self.direct.borrow_mut().reset();
            None
        };
        match staged {
            Some((segment, staged)) => {
                let file_end = self
                    .io
                    .write_direct(&self.direct, segment, staged, &bufs, position)
                    .await
                    .map_err(fail)?;
                let mut st = self.state.borrow_mut();
                let seg = st.active_mut();
                if file_end > position + want {
                    // Zeros past the end until the segment rolls or closes.
                    seg.padded = true;
                    if seg.preallocated_to != u64::MAX {
                        seg.preallocated_to = seg.preallocated_to.max(file_end);
                    }
                }
            }
            None => self
                .io
                .write_all(&writer.log, bufs, position, inline)
                .await
                .map_err(fail)?,
        }
        let (idx, idx_pos, time, time_pos) = {
            let mut st = self.state.borrow_mut();
            let now = (self.clock)();
            let interval = st.config.index_interval_bytes;
            let seg = st.active_mut();
            seg.first_append_ms.get_or_insert(now);
            seg.last_write_ms = now;
            let mut pos = position;
            for p in run.iter() {
                seg.note_batch(
                    &ScannedBatch {
                        position: pos,
                        len: p.len,
                        base_offset: p.base_offset,
                        last_offset: p.last_offset,
                        max_timestamp: p.max_timestamp,
                        leader_epoch: p.leader_epoch,
                    },
                    interval,
                );
                pos += p.len;
            }
            let end = seg.next_offset;
            // Index entries are hints that recovery checks and rebuilds, so
            // they go out in groups rather than as two more ops per round.
            let unpersisted = if seg.index.len() - seg.index_persisted >= INDEX_WRITE_BATCH_ENTRIES {
                seg.take_unpersisted_index()
            } else {
                Default::default()
            };
            st.log_end_offset = end;
            st.written_since_sync += want;
            st.advance_high_watermark();
            st.check_offsets();
            unpersisted
        };
        self.notify.notify_all();
        let fail = |e: io::Error| self.write_failed(format!("index write in {}: {e}", self.dir.display()), &e);
        write_at(&writer.index, idx, idx_pos).await.map_err(fail)?;
        write_at(&writer.time_index, time, time_pos).await.map_err(fail)
    }

    /// The active segment's writer, opened now if the log released it.
    /// Refused once [`Log::close`] has finished.
    async fn writer(&self) -> Result<Writer, String> {
        let paths = {
            let st = self.state.borrow();
            if let Some(w) = &st.active().writer {
                return Ok(w.clone());
            }
            if st.files_closed {
                return Err("log is closed".into());
            }
            st.active().paths.clone()
        };
        // Out of descriptors (or space) on open leaves the log reopenable.
        let fail = |what: &Path, e: io::Error| self.write_failed(format!("open {}: {e}", what.display()), &e);
        let log = open_rw(&paths.log, false).await.map_err(|e| fail(&paths.log, e))?;
        let index = open_rw(&paths.index, false).await.map_err(|e| fail(&paths.index, e))?;
        let time_index = open_rw(&paths.time_index, false)
            .await
            .map_err(|e| fail(&paths.time_index, e))?;
        let w = Writer::new(log, index, time_index, &self.files);
        self.state.borrow_mut().active_mut().writer = Some(w.clone());
        Ok(w)
    }

    /// Notes a failed write or open (never an fsync) that found the disk
    /// full or no descriptor left, and returns its cause.
    fn write_failed(&self, cause: String, e: &io::Error) -> String {
        if is_exhaustion(e) {
            self.exhausted.set(true);
        }
        cause
    }

    /// Reserves the active segment's blocks past a write of `want` bytes at
    /// `position` when the reserve does not already cover it. `fallocate`
    /// blocks in the filesystem, so it runs on the runtime's blocking pool
    /// while the shard goes on. A failure costs only the speed-up (the write
    /// itself reports a full disk), so it turns the reserve off for this
    /// segment instead of failing the append.
    async fn preallocate(&self, writer: &Writer, position: u64, want: u64) {
        let end = position + want;
        let (from, to) = {
            let st = self.state.borrow();
            let cap = st.config.preallocate_bytes;
            let seg = st.active();
            if cap == 0 || end <= seg.preallocated_to {
                return;
            }
            let step = position.clamp(MIN_PREALLOCATE_STEP.min(cap), cap);
            let to = (end + step).min(st.config.segment_bytes.max(end));
            (seg.preallocated_to.max(position), to)
        };
        let res = match writer.log.as_fd().try_clone_to_owned() {
            Ok(fd) => compio::runtime::spawn_blocking(move || {
                rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::KEEP_SIZE, from, to - from)
                    .map_err(io::Error::from)
            })
            .await
            .unwrap_or_else(|_| Err(io::Error::other("fallocate task panicked"))),
            Err(e) => Err(e),
        };
        let reached = match res {
            Ok(()) => to,
            Err(e) => {
                if e.kind() != io::ErrorKind::Unsupported {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "fallocate failed; segment not preallocated");
                }
                u64::MAX
            }
        };
        self.state.borrow_mut().active_mut().preallocated_to = reached;
    }

    /// Gives back the blocks reserved past the end of a segment that takes
    /// no more writes. Only space is at stake, so a failure is logged, not
    /// raised.
    async fn release_reserve(&self, file: &File, size: u64, reserved_to: u64) {
        if reserved_to > size
            && let Err(e) = file.set_len(size).await
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not release preallocated blocks");
        }
    }

    /// Closes the active segment (sync, final time-index entry) and opens a
    /// new one at `base_offset`, syncing the directory so the new file
    /// survives a crash.
    async fn roll(&self, base_offset: i64) -> Result<(), String> {
        let fail = |what: &str, e: &io::Error| format!("roll to {base_offset} in {}: {what}: {e}", self.dir.display());
        let old = self.writer().await?;
        let old_end = self.state.borrow().log_end_offset;
        self.state.borrow_mut().written_since_sync = 0;
        self.io.sync_data(&old.log).await.map_err(|e| fail("fdatasync", &e))?;
        let (size, reserved_to, padded) = {
            let st = self.state.borrow();
            (st.active().size, st.active().preallocated_to, st.active().padded)
        };
        if padded {
            // A rolled segment must end at its last batch: recovery cuts a
            // zero tail only from the newest one.
            old.log.set_len(size).await.map_err(|e| fail("cut the padding", &e))?;
            self.state.borrow_mut().active_mut().padded = false;
        } else {
            self.release_reserve(&old.log, size, reserved_to).await;
        }
        self.direct.borrow_mut().reset();
        let (idx, idx_pos, time, time_pos) = {
            let mut st = self.state.borrow_mut();
            st.durable_offset = st.durable_offset.max(old_end.min(st.log_end_offset));
            st.check_offsets();
            let seg = st.active_mut();
            if seg.max_timestamp >= 0 {
                let rel = seg.rel(seg.offset_of_max_timestamp);
                seg.time_index.push_if_newer(seg.max_timestamp, rel);
            }
            seg.take_unpersisted_index()
        };
        // Writes and creations (not the fdatasync above) that find the disk
        // full leave the log reopenable.
        let wfail = |what: &str, e: io::Error| self.write_failed(fail(what, &e), &e);
        write_at(&old.index, idx, idx_pos)
            .await
            .map_err(|e| wfail("index", e))?;
        write_at(&old.time_index, time, time_pos)
            .await
            .map_err(|e| wfail("index", e))?;

        let paths = SegmentPaths::new(&self.dir, base_offset);
        let log = open_rw(&paths.log, true).await.map_err(|e| wfail("create log", e))?;
        let index = open_rw_create(&paths.index)
            .await
            .map_err(|e| wfail("create index", e))?;
        let time_index = open_rw_create(&paths.time_index)
            .await
            .map_err(|e| wfail("create time index", e))?;
        sync_dir(&self.dir).await.map_err(|e| fail("sync directory", &e))?;
        let mut st = self.state.borrow_mut();
        st.active_mut().writer = None;
        st.active_mut().release_reader();
        st.active_mut().forget_tail();
        let writer = Writer::new(log, index, time_index, &self.files);
        let seg = Segment::empty(&self.dir, base_offset, &self.files, Some(writer));
        st.segments.push_back(seg);
        Ok(())
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
