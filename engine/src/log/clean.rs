//! Cleaning a compacted log (`cleanup.policy=compact`): the rolled
//! segments below a bound are rewritten to keep the latest record of each
//! key (`crate::compact` has the record rules) and swapped in one at a
//! time.
//!
//! A pass builds the offset map of the segments it may clean, then
//! rewrites each segment into `<base>.log.cleaned` beside it (its batches
//! noted as they are written, so its indexes need no second scan), syncs
//! it, renames it `<base>.log.swap`, and swaps: the old indexes go, the
//! `.swap` file is renamed over the `.log`, the new indexes are written and
//! the log's segment is replaced. Appends go on in the active segment,
//! which is never cleaned; reads before the swap use the old file, reads
//! after it the new one, and slices already handed out keep the old file.
//! The caller paces the pass (`pace` is awaited after every chunk read or
//! written) and so bounds how long it holds its shard.
//!
//! Recovery (`segment.rs` table, rows `interrupted_clean` and
//! `interrupted_swap`): a `.cleaned` file found on open is deleted (the
//! segment it was made from is whole); a `.swap` file was synced before it
//! got its name, so the swap is finished: the segment's indexes are
//! removed, the file renamed to `.log`, and the indexes rebuilt by the
//! `missing_index` row.

use std::{future::Future, os::unix::fs::MetadataExt, pin::Pin};

use compio::{
    BufResult,
    buf::{IntoInner, IoBuf},
    io::{AsyncReadAtExt, AsyncWriteAtExt},
};

use super::*;
use crate::compact::{self, Filtered, OffsetMap};
use crate::crash::crash_point;
use crate::segment::ScannedBatch;

/// Suffix of a cleaned segment being written.
pub const CLEANED_SUFFIX: &str = "log.cleaned";
/// Suffix of a cleaned segment written and synced, replacing its original.
pub const SWAP_SUFFIX: &str = "log.swap";

/// What a cleaning pass keeps, as the partition decides it.
#[allow(missing_debug_implementations)] // two closures
pub struct CleanRules<'a> {
    /// Only rolled segments wholly below this offset (and the high
    /// watermark) are cleaned: the caller's bound, such as the first
    /// unstable offset or where records younger than
    /// `min.compaction.lag.ms` begin.
    pub upto: i64,
    /// Tombstones in segments whose newest timestamp is before this (ms
    /// since the epoch) are removed; later ones are kept.
    pub tombstones_before_ms: i64,
    /// Where the last pass left the log clean (its `cleaned_to`;
    /// `i64::MIN` when unknown): the offset map covers the segments from
    /// there on, and the clean part before is rewritten against it (its
    /// records are each their key's latest there already).
    pub dirty_from: i64,
    /// The offset map's budget in bytes; a pass whose keys pass it cleans
    /// only up to where the map filled.
    pub map_bytes: usize,
    /// Whether the transactional batch of producer `pid` at `base_offset`
    /// was aborted: its records are removed and stay out of the map.
    pub aborted: &'a dyn Fn(i64, i64) -> bool,
    /// Whether the batch of producer `pid` ending at `last_offset` is that
    /// producer's last in the log: kept (empty when every record of it
    /// goes) so its producer state can be rebuilt from the log.
    pub producer_last: &'a dyn Fn(i64, i64) -> bool,
    /// The codecs of compressed batches; without them those batches are
    /// kept whole and their keys stay out of the map.
    pub codecs: Option<&'a dyn compact::Codecs>,
}

/// Awaited by a pass after each chunk it reads or writes and at the end of
/// each segment, with the bytes since the last call: the caller's yield and
/// rate limit.
pub type Pace<'a> = &'a dyn Fn(u64) -> Pin<Box<dyn Future<Output = ()> + 'a>>;

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CleanStats {
    /// Segments rewritten and swapped in.
    pub segments: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_removed: u64,
    /// The offset below which the log is now clean (the map's end).
    pub cleaned_to: i64,
}

/// Bytes read or written between two calls of the pace.
const PACE_CHUNK: u64 = 256 << 10;

/// A rolled segment as a pass found it.
struct Rolled {
    base: i64,
    next: i64,
    size: u64,
    max_timestamp: i64,
    /// The segment's read handle, as the log held it, and its path.
    file: Arc<fs::File>,
    path: PathBuf,
}

/// The batches of one rolled segment, in order, read [`PACE_CHUNK`] at a
/// time (a read per batch would cost a system call for each of a log's
/// many small batches).
struct Batches<'a> {
    seg: &'a Rolled,
    /// The segment's file opened for io_uring reads.
    file: File,
    /// Bytes of the file from `buf_at`; `start..` not yet handed out.
    buf: Vec<u8>,
    buf_at: u64,
    start: usize,
}

impl<'a> Batches<'a> {
    /// `None` when `seg`'s path no longer names the file the log held
    /// (the segment was deleted or replaced since).
    async fn open(seg: &'a Rolled) -> Option<Self> {
        let file = File::open(&seg.path).await.ok()?;
        if !same_file(&file.metadata().await.ok()?, &seg.file.metadata().ok()?) {
            return None;
        }
        Some(Self {
            seg,
            file,
            buf: Vec::with_capacity(PACE_CHUNK as usize),
            buf_at: 0,
            start: 0,
        })
    }

    /// Makes at least `want` bytes from `start` available, or all the file
    /// has; false when the file ends first. Reads go through io_uring, so
    /// a read that misses the page cache waits off the shard's thread.
    async fn fill(&mut self, want: usize) -> io::Result<bool> {
        let have = self.buf.len() - self.start;
        if have >= want {
            return Ok(true);
        }
        let next = self.buf_at + self.buf.len() as u64;
        let left = self.seg.size.saturating_sub(next);
        if (have as u64) + left < want as u64 {
            return Ok(false);
        }
        self.buf.drain(..self.start);
        self.buf_at += self.start as u64;
        self.start = 0;
        let read = (want - have)
            .max(PACE_CHUNK as usize)
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let old = self.buf.len();
        self.buf.reserve(read);
        let BufResult(res, slice) = (self.file)
            .read_exact_at(std::mem::take(&mut self.buf).slice(old..old + read), next)
            .await;
        self.buf = slice.into_inner();
        res?;
        assert!(
            self.buf.len() == old + read,
            "a whole read fills the buffer it was given"
        );
        Ok(true)
    }

    /// The next batch, or `None` at the end.
    async fn next(&mut self) -> io::Result<Option<&[u8]>> {
        if !self.fill(batch::HEADER_BYTES).await? {
            return Ok(None);
        }
        let at = self.buf_at + self.start as u64;
        let len = batch::BatchHeader::parse(&self.buf[self.start..])
            .ok()
            .and_then(|h| h.total_len())
            .filter(|&l| l >= batch::HEADER_BYTES && at + l as u64 <= self.seg.size)
            .ok_or_else(|| io::Error::other("a bad batch in a rolled segment"))?;
        if !self.fill(len).await? {
            return Err(io::Error::other("a rolled segment ends inside a batch"));
        }
        let b = &self.buf[self.start..self.start + len];
        self.start += len;
        Ok(Some(b))
    }
}

impl Log {
    /// One cleaning pass (see the module's doc).
    pub async fn clean(&self, rules: &CleanRules<'_>, pace: Pace<'_>) -> Result<CleanStats> {
        let rolled = self.cleanable(rules.upto)?;
        let mut stats = CleanStats::default();
        let Some(first) = rolled.first() else {
            return Ok(stats);
        };
        stats.cleaned_to = first.base;
        let (map, map_end) = self.offset_map(&rolled, rules, pace, &mut stats).await?;
        stats.cleaned_to = map_end;
        for r in rolled.iter().filter(|r| r.base < map_end) {
            self.clean_segment(r, &map, map_end, rules, pace, &mut stats).await?;
        }
        Ok(stats)
    }

    /// The rolled segments wholly below `upto` and the high watermark.
    fn cleanable(&self, upto: i64) -> Result<Vec<Rolled>> {
        let st = self.shared.state.borrow();
        st.check_writable()?;
        let bound = upto.min(st.high_watermark);
        let rolled = st.segments.len().saturating_sub(1);
        let mut out = Vec::new();
        for s in st.segments.iter().take(rolled) {
            if s.next_offset > bound {
                break;
            }
            let file = s.reader().map_err(io_err("open", &s.paths.log))?.clone();
            out.push(Rolled {
                base: s.base_offset,
                next: s.next_offset,
                size: s.size,
                max_timestamp: s.max_timestamp,
                file,
                path: s.paths.log.clone(),
            });
        }
        Ok(out)
    }

    /// The latest offset of each key in `rolled`, and the offset the map
    /// covers up to (where its budget ran out, else the end of `rolled`).
    async fn offset_map(
        &self,
        rolled: &[Rolled],
        rules: &CleanRules<'_>,
        pace: Pace<'_>,
        stats: &mut CleanStats,
    ) -> Result<(OffsetMap, i64)> {
        let mut map = OffsetMap::new(rules.map_bytes);
        let mut unpaced = 0;
        for r in rolled.iter().filter(|r| r.next > rules.dirty_from) {
            let Some(mut batches) = Batches::open(r).await else {
                return Ok((map, r.base)); // changed since: the map ends before
            };
            while let Some(b) = batches.next().await.map_err(io_err("read", &self.shared.dir))? {
                let h = batch::BatchHeader::parse(b)?;
                let (len, base) = (b.len() as u64, h.base_offset());
                if !(h.is_transactional() && (rules.aborted)(h.producer_id(), base)) {
                    let mut full = false;
                    compact::walk_records(b, rules.codecs, |rec, _| {
                        if let Some(key) = rec.key
                            && !full
                        {
                            full = !map.put(key, rec.offset);
                        }
                    })?;
                    if full {
                        return Ok((map, base));
                    }
                }
                stats.bytes_read += len;
                unpaced += len;
                if unpaced >= PACE_CHUNK {
                    pace(std::mem::take(&mut unpaced)).await;
                }
            }
            pace(std::mem::take(&mut unpaced)).await;
        }
        Ok((map, rolled.last().map_or(0, |r| r.next)))
    }

    /// Rewrites one rolled segment and swaps it in; leaves it as it was
    /// when nothing in it goes, or when it changed meanwhile (truncated,
    /// deleted by retention).
    async fn clean_segment(
        &self,
        r: &Rolled,
        map: &OffsetMap,
        map_end: i64,
        rules: &CleanRules<'_>,
        pace: Pace<'_>,
        stats: &mut CleanStats,
    ) -> Result<()> {
        let Some(batches) = Batches::open(r).await else {
            return Ok(()); // changed since: left as it is
        };
        let cleaned_path = self.shared.dir.join(format!("{:020}.{CLEANED_SUFFIX}", r.base));
        let swap_path = self.shared.dir.join(format!("{:020}.{SWAP_SUFFIX}", r.base));
        let out = match self.rewrite(r, batches, map, map_end, rules, pace).await {
            Ok(out) => out,
            Err(e) => {
                let _ = fs::remove_file(&cleaned_path);
                return Err(e);
            }
        };
        stats.bytes_read += r.size;
        if !out.changed {
            drop(out);
            let _ = fs::remove_file(&cleaned_path);
            return Ok(());
        }
        let removed = out.removed;
        let mut cleaned = match self.settle(out, &cleaned_path, &swap_path).await {
            Ok(cleaned) => cleaned,
            Err(e) => {
                // The segment is whole; what was made of it goes.
                let _ = fs::remove_file(&cleaned_path);
                let _ = fs::remove_file(&swap_path);
                return Err(e);
            }
        };
        cleaned.forget_tail();
        let written = cleaned.size;
        if !self.swap(r, cleaned, &swap_path)? {
            let _ = fs::remove_file(&swap_path);
            return Ok(());
        }
        stats.segments += 1;
        stats.bytes_written += written;
        stats.records_removed += removed;
        Ok(())
    }

    /// Writes the batches of `r`, filtered by the map and the rules, into
    /// `<base>.log.cleaned` (not yet synced).
    async fn rewrite(
        &self,
        r: &Rolled,
        mut batches: Batches<'_>,
        map: &OffsetMap,
        map_end: i64,
        rules: &CleanRules<'_>,
        pace: Pace<'_>,
    ) -> Result<Rewrite> {
        let dir = &self.shared.dir;
        let cleaned_path = dir.join(format!("{:020}.{CLEANED_SUFFIX}", r.base));
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&cleaned_path)
            .await
            .map_err(io_err("create", &cleaned_path))?;
        let mut out = Rewrite {
            file,
            buf: Vec::with_capacity(2 * PACE_CHUNK as usize),
            at: 0,
            seg: Segment::empty(dir, r.base, &self.shared.files, None),
            interval: self.shared.state.borrow().config.index_interval_bytes,
            removed: 0,
            changed: false,
            has_records: false,
        };
        let keep = |rec: &compact::RecordView<'_>| {
            if rec.offset >= map_end {
                return true;
            }
            let Some(key) = rec.key else {
                return false; // a compacted topic's record needs a key
            };
            if map.latest(key).is_some_and(|latest| latest > rec.offset) {
                return false;
            }
            !(rec.tombstone && r.max_timestamp < rules.tombstones_before_ms)
        };
        let mut unpaced = 0;
        while let Some(b) = batches.next().await.map_err(io_err("read", &r.path))? {
            let h = batch::BatchHeader::parse(b)?;
            let filtered = if h.is_control() {
                Filtered::Unchanged
            } else if h.is_transactional() && (rules.aborted)(h.producer_id(), h.base_offset()) {
                Filtered::Emptied
            } else {
                compact::filter_batch(b, rules.codecs, keep)?
            };
            out.take(b, filtered, rules).map_err(io_err("write", &cleaned_path))?;
            unpaced += b.len() as u64;
            if unpaced >= PACE_CHUNK {
                out.write_out().await.map_err(io_err("write", &cleaned_path))?;
                pace(std::mem::take(&mut unpaced)).await;
            }
        }
        pace(unpaced).await;
        Ok(out)
    }

    /// Makes a written rewrite durable under its `.swap` name: the file
    /// fdatasynced, renamed, and the directory fsynced, each through
    /// io_uring (a blocking directory fsync would hold the shard for a
    /// journal commit). Returns the segment it noted.
    async fn settle(&self, mut out: Rewrite, cleaned_path: &Path, swap_path: &Path) -> Result<Segment> {
        out.write_out().await.map_err(io_err("write", cleaned_path))?;
        crash_point("clean.written");
        self.shared
            .io
            .sync_data(&out.file)
            .await
            .map_err(io_err("sync", cleaned_path))?;
        crash_point("clean.synced");
        drop(out.file);
        compio::fs::rename(cleaned_path, swap_path)
            .await
            .map_err(io_err("rename", cleaned_path))?;
        sync_dir(&self.shared.dir)
            .await
            .map_err(io_err("sync", &self.shared.dir))?;
        crash_point("clean.renamed");
        out.seg.no_records.set(!out.has_records);
        Ok(out.seg)
    }

    /// Replaces the segment `r` with `cleaned`, whose file is at
    /// `swap_path`; false (nothing done) when the log's segment is no
    /// longer the one `r` was read from.
    fn swap(&self, r: &Rolled, mut cleaned: Segment, swap_path: &Path) -> Result<bool> {
        let mut st = self.shared.state.borrow_mut();
        st.check_writable()?;
        let rolled = st.segments.len().saturating_sub(1);
        let Some(i) = st
            .segments
            .iter()
            .take(rolled)
            .position(|s| s.base_offset == r.base && s.next_offset == r.next && s.size == r.size)
        else {
            return Ok(false);
        };
        let paths = cleaned.paths.clone();
        // The same file, not one a truncation and new appends made at the
        // same offsets and size meanwhile.
        let unchanged = (fs::metadata(&paths.log).ok())
            .zip(r.file.metadata().ok())
            .is_some_and(|(now, then)| same_file(&now, &then));
        if !unchanged {
            return Ok(false);
        }
        for p in [&paths.index, &paths.time_index] {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(LogError::io("remove", p, e)),
            }
        }
        // Not synced here: until the directory's next sync, a crash leaves
        // either this rename or the `.swap` file, which recovery finishes
        // (`interrupted_swap`); both hold what the swap put in place.
        crash_point("clean.indexes_removed");
        fs::rename(swap_path, &paths.log).map_err(io_err("rename", swap_path))?;
        crash_point("clean.swapped");
        // Rebuildable (recovery row `missing_index`): written, not synced.
        let mut out = Vec::new();
        cleaned.index.encode_from(0, &mut out);
        fs::write(&paths.index, &out).map_err(io_err("write", &paths.index))?;
        out.clear();
        cleaned.time_index.encode_from(0, &mut out);
        fs::write(&paths.time_index, &out).map_err(io_err("write", &paths.time_index))?;
        cleaned.index_persisted = cleaned.index.len();
        cleaned.time_index_persisted = cleaned.time_index.len();
        assert!(
            cleaned.base_offset == r.base && cleaned.next_offset == r.next,
            "a cleaned segment covers {}..{} where {}..{} was",
            cleaned.base_offset,
            cleaned.next_offset,
            r.base,
            r.next
        );
        st.segments[i] = cleaned;
        st.check_offsets();
        crash_point("clean.indexes_written");
        tracing::info!(dir = %self.shared.dir.display(), base_offset = r.base, before = r.size, after = st.segments[i].size, "cleaned segment");
        Ok(true)
    }
}

/// Whether two stats name the same file (device and inode).
fn same_file(a: &impl MetadataExt, b: &impl MetadataExt) -> bool {
    a.ino() == b.ino() && a.dev() == b.dev()
}

/// A cleaned segment being written: batches gather in `buf` and go out
/// through io_uring [`PACE_CHUNK`] at a time.
struct Rewrite {
    file: File,
    buf: Vec<u8>,
    /// Where `buf` goes in the file.
    at: u64,
    /// Notes each batch written, building the indexes.
    seg: Segment,
    interval: u32,
    removed: u64,
    changed: bool,
    /// A batch written holds a record.
    has_records: bool,
}

impl Rewrite {
    fn take(&mut self, b: &[u8], filtered: Filtered, rules: &CleanRules<'_>) -> io::Result<()> {
        let h = batch::BatchHeader::parse(b).map_err(io::Error::other)?;
        let (base, last, epoch, ts) = (
            h.base_offset(),
            h.last_offset(),
            h.partition_leader_epoch(),
            h.max_timestamp(),
        );
        match filtered {
            Filtered::Unchanged => self.write(b),
            Filtered::Rewritten(mut out) => {
                self.changed = true;
                self.removed += u64::try_from(h.records_count()).unwrap_or(0)
                    - u64::try_from(compact::records_in(&out)).unwrap_or(0);
                batch::assign(&mut out, base, epoch);
                self.write(&out)
            }
            Filtered::Emptied => {
                self.changed = true;
                self.removed += u64::try_from(h.records_count()).unwrap_or(0);
                // The same offsets, no records: a follower behind this
                // replica fetches whole batches from where its log ends,
                // which is always at one of the original batches' bounds.
                let pid = h.producer_id();
                let (producer, attributes) = if pid >= 0 && (rules.producer_last)(pid, last) {
                    let producer = batch::ProducerFields {
                        producer_id: pid,
                        producer_epoch: h.producer_epoch(),
                        base_sequence: h.base_sequence(),
                    };
                    (producer, h.attributes() & batch::TRANSACTIONAL)
                } else {
                    (batch::ProducerFields::NONE, 0)
                };
                self.write(&compact::empty_batch(base, last, epoch, ts, producer, attributes))
            }
        }
    }

    fn write(&mut self, b: &[u8]) -> io::Result<()> {
        let h = batch::BatchHeader::parse(b).map_err(io::Error::other)?;
        self.buf.extend_from_slice(b);
        self.has_records |= h.records_count() > 0;
        self.seg.note_batch(
            &ScannedBatch {
                position: self.seg.size,
                len: b.len() as u64,
                base_offset: h.base_offset(),
                last_offset: h.last_offset(),
                max_timestamp: h.max_timestamp(),
                leader_epoch: h.partition_leader_epoch(),
            },
            self.interval,
        );
        Ok(())
    }

    /// Writes what gathered in `buf` to the file.
    async fn write_out(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let len = self.buf.len() as u64;
        let BufResult(res, mut buf) = self.file.write_all_at(std::mem::take(&mut self.buf), self.at).await;
        res?;
        buf.clear();
        self.buf = buf;
        self.at += len;
        Ok(())
    }
}
