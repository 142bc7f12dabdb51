//! One segment: a `.log` file of verbatim batches plus its two indexes, and
//! the recovery that rebuilds a segment's state from its files on open.
//!
//! Recovery decision table (tests carry these names):
//!
//! | case | found on open | decision |
//! |---|---|---|
//! | `clean_tail` | every batch after the last index entry is whole and its CRC matches | keep all |
//! | `torn_tail` | the newest segment ends in a partial batch | truncate to the last whole valid batch |
//! | `corrupt_tail` | the newest segment has a bad length, offset or CRC after the last index entry | truncate before the bad batch (everything after it is unreachable) |
//! | `stale_index` | index entries point at or past the end of the file, or at something that is not the batch they name | drop those entries, scan from the last good one, rewrite the index |
//! | `missing_index` | `.index` or `.timeindex` absent or unordered | rebuild both from a full scan (CRCs checked) |
//! | `empty_segment` | the newest `.log` is empty and an older segment exists (crash in the middle of a roll) | delete it; the older segment becomes active again |
//! | `orphan_index` | index files without a `.log` (crash in the middle of a roll or of a deletion) | delete them |
//! | `interrupted_truncation` | a follower's truncation crashed after deleting newer segments, before shortening the one holding the cut | keep the longer log (its prefix is intact); the next fetch from the leader truncates again |
//! | `epoch_file_missing` | no readable `leader-epoch-checkpoint` | rebuild the epoch history from the batch headers and write it |
//! | `epoch_file_stale` | the epoch file misses the newest batch's epoch, or names epochs at or past the log end | rebuild it, or drop those entries |
//! | `interrupted_clean` | a `<base>.log.cleaned` file (a cleaning pass crashed while writing it) | delete it: the segment it was made from is whole |
//! | `interrupted_swap` | a `<base>.log.swap` file (synced before it was named so; the pass crashed while swapping it in) | remove the segment's indexes, rename it over `<base>.log`, rebuild the indexes (`missing_index`) |
//! | `corrupt_older_segment` | a segment that is not the newest fails its tail check | refuse to open with [`LogError::Corrupt`]: data acknowledged earlier would be lost silently |

use std::{
    cell::{Cell, OnceCell},
    fs::{self, OpenOptions as StdOpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    rc::Rc,
    sync::Arc,
};

use compio::fs::File;

use crate::{
    batch::{self, BatchHeader, HEADER_BYTES},
    config::LogConfig,
    error::{LogError, Result},
    files::{Counted, OpenFiles},
    index::{OffsetIndex, TimeIndex},
};

/// File names of one segment: `<base_offset:020>.log|.index|.timeindex`.
#[derive(Debug, Clone)]
pub(crate) struct SegmentPaths {
    pub log: PathBuf,
    pub index: PathBuf,
    pub time_index: PathBuf,
}

impl SegmentPaths {
    pub fn new(dir: &Path, base_offset: i64) -> Self {
        let stem = format!("{base_offset:020}");
        Self {
            log: dir.join(format!("{stem}.log")),
            index: dir.join(format!("{stem}.index")),
            time_index: dir.join(format!("{stem}.timeindex")),
        }
    }
}

/// The active segment's io_uring file handles. Only the active segment has
/// them, and only while its log holds its files open (they open on the next
/// write after [`crate::Log::release_files`]); rolled segments are read
/// through [`Segment::reader`] alone.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    pub log: File,
    pub index: File,
    pub time_index: File,
    /// Counts the three files while any clone of the handles lives.
    pub _counted: Rc<Counted>,
}

impl Writer {
    pub fn new(log: File, index: File, time_index: File, files: &Rc<OpenFiles>) -> Self {
        Self {
            log,
            index,
            time_index,
            _counted: Rc::new(Counted::new(files, 3)),
        }
    }
}

/// A segment's read handle, counted while the segment holds it.
#[derive(Debug)]
pub(crate) struct Reader {
    file: Arc<fs::File>,
    _counted: Counted,
}

/// One segment of a partition log. Owned by the log, and so by the
/// partition's shard; the reader's file is shared with in-flight
/// [`crate::FileSlice`]s, which keep it readable after retention unlinks it
/// or the log releases it.
#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    pub paths: SegmentPaths,
    /// Opened on first use, closed by [`Segment::release_reader`].
    reader: OnceCell<Reader>,
    files: Rc<OpenFiles>,
    pub writer: Option<Writer>,
    /// Bytes written (visible to readers).
    pub size: u64,
    /// Offset after the last written batch.
    pub next_offset: i64,
    pub index: OffsetIndex,
    pub index_persisted: usize,
    pub time_index: TimeIndex,
    pub time_index_persisted: usize,
    pub bytes_since_index: u64,
    /// The last [`TAIL_BATCHES`] batches (or fewer) up to the end of the
    /// written bytes, in order: reads near the end find positions and
    /// lengths here instead of reading headers from the file.
    tail: Vec<TailBatch>,
    /// Largest batch maxTimestamp in the segment, -1 when none.
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    /// The leader epoch of the last batch noted (written, or seen by the
    /// recovery scan, which always reaches the last batch); `None` when
    /// none was.
    pub last_epoch: Option<i32>,
    /// Wall-clock time of the segment's first append, for `segment_ms`.
    pub first_append_ms: Option<u64>,
    /// Wall-clock time of this process's last write to the segment (0:
    /// none since it opened).
    pub last_write_ms: u64,
    /// End of the disk blocks reserved for this segment ahead of `size`
    /// (see [`crate::LogConfig::preallocate_bytes`]); `size` or less when
    /// none are known to be, `u64::MAX` once a reserve failed (no more
    /// attempts for this segment).
    pub preallocated_to: u64,
    /// Direct writes left zeros past `size` in the file (up to a block);
    /// cut when the segment rolls.
    pub padded: bool,
    /// Known to hold no record, only the header-only batches a cleaning
    /// pass leaves (set for rolled segments only, which no append changes;
    /// a truncation makes a new `Segment`): consumers' reads pass over it.
    pub no_records: Cell<bool>,
}

/// How many of its newest batches a segment keeps the positions of: 16
/// bytes of memory each, at most 1 KiB per written partition.
pub(crate) const TAIL_BATCHES: usize = 32;

/// Where one batch of the segment's tail lies.
#[derive(Debug, Clone, Copy)]
struct TailBatch {
    position: u32,
    len: u32,
    /// Base and last offset relative to the segment's base offset.
    base_rel: u32,
    last_rel: u32,
}

impl TailBatch {
    fn position(&self) -> u64 {
        u64::from(self.position)
    }
    fn len(&self) -> u64 {
        u64::from(self.len)
    }
    fn end(&self) -> u64 {
        self.position() + self.len()
    }
}

/// What a scan saw of one batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScannedBatch {
    pub position: u64,
    pub len: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
    pub leader_epoch: i32,
}

/// Reads the header of the batch at `pos`, or `None` at end of file.
pub(crate) fn read_header(file: &fs::File, pos: u64, file_len: u64) -> io::Result<Option<[u8; HEADER_BYTES]>> {
    if pos + HEADER_BYTES as u64 > file_len {
        return Ok(None);
    }
    let mut h = [0u8; HEADER_BYTES];
    file.read_exact_at(&mut h, pos)?;
    Ok(Some(h))
}

/// Where a scan stopped, when it stopped before the end of the file.
#[derive(Debug)]
pub(crate) struct ScanStop {
    pub position: u64,
    pub reason: String,
}

/// Walks whole, valid batches from `pos` with consecutive offsets from
/// `expected_offset`, checking length, magic, offset and CRC of each; calls
/// `f` for each. Returns the stop point if something invalid follows.
pub(crate) fn scan(
    file: &fs::File,
    mut pos: u64,
    file_len: u64,
    mut expected_offset: i64,
    mut f: impl FnMut(ScannedBatch),
) -> io::Result<Option<ScanStop>> {
    let mut buf = Vec::new();
    while pos < file_len {
        let stop = |reason: String| Ok(Some(ScanStop { position: pos, reason }));
        let Some(h) = read_header(file, pos, file_len)? else {
            return stop(format!("partial header: {} bytes", file_len - pos));
        };
        let header = BatchHeader::parse(&h).map_err(io::Error::other)?;
        let Some(len) = header.total_len().filter(|&l| l >= HEADER_BYTES) else {
            return stop(format!("bad batchLength {}", header.batch_length()));
        };
        if pos + len as u64 > file_len {
            return stop(format!(
                "partial batch: {len} bytes declared, {} present",
                file_len - pos
            ));
        }
        if header.magic() != batch::MAGIC_V2 {
            return stop(format!("bad magic {}", header.magic()));
        }
        if header.base_offset() != expected_offset || header.last_offset_delta() < 0 {
            return stop(format!(
                "offset {} where {expected_offset} was expected",
                header.base_offset()
            ));
        }
        buf.resize(len, 0);
        file.read_exact_at(&mut buf, pos)?;
        if batch::compute_crc(&buf) != header.crc() {
            return stop("CRC mismatch".into());
        }
        f(ScannedBatch {
            position: pos,
            len: len as u64,
            base_offset: header.base_offset(),
            last_offset: header.last_offset(),
            max_timestamp: header.max_timestamp(),
            leader_epoch: header.partition_leader_epoch(),
        });
        expected_offset = header.last_offset() + 1;
        pos += len as u64;
    }
    Ok(None)
}

fn rewrite_if_changed(path: &Path, on_disk: Option<&[u8]>, wanted: &[u8]) -> Result<()> {
    if on_disk == Some(wanted) {
        return Ok(());
    }
    fs::write(path, wanted).map_err(|e| LogError::io("write", path, e))
}

/// Removes a segment's three files; a file already gone is not an error.
pub(crate) fn remove_files(paths: &SegmentPaths) -> Result<()> {
    for p in [&paths.log, &paths.index, &paths.time_index] {
        match fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io("remove", p, e)),
        }
    }
    Ok(())
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io("read", path, e)),
    }
}

impl Segment {
    pub fn rel(&self, offset: i64) -> u32 {
        let rel = offset - self.base_offset;
        assert!(
            (0..=i64::from(u32::MAX)).contains(&rel),
            "offset {offset} outside segment {}",
            self.base_offset
        );
        rel as u32
    }

    /// Index bookkeeping for one batch now on disk at `b.position`.
    pub fn note_batch(&mut self, b: &ScannedBatch, index_interval_bytes: u32) {
        if b.max_timestamp > self.max_timestamp {
            self.max_timestamp = b.max_timestamp;
            self.offset_of_max_timestamp = b.base_offset;
        }
        assert_eq!(b.position, self.size, "batches are noted in file order, without gaps");
        if self.bytes_since_index >= u64::from(index_interval_bytes) {
            let rel = self.rel(b.base_offset);
            self.index.push(rel, b.position as u32);
            if self.max_timestamp >= 0 {
                let rel_max = self.rel(self.offset_of_max_timestamp);
                self.time_index.push_if_newer(self.max_timestamp, rel_max);
            }
            self.bytes_since_index = 0;
        }
        if self.tail.len() == TAIL_BATCHES {
            // Keep the newer half; amortised, a batch costs one move.
            self.tail.drain(..TAIL_BATCHES / 2);
        }
        // Positions fit in u32, as in the offset index; a segment past that
        // (a single batch over 4 GiB cannot be appended) keeps no tail.
        match (u32::try_from(b.position), u32::try_from(b.len)) {
            (Ok(position), Ok(len)) if u32::try_from(b.position + b.len).is_ok() => self.tail.push(TailBatch {
                position,
                len,
                base_rel: self.rel(b.base_offset),
                last_rel: self.rel(b.last_offset),
            }),
            _ => self.tail.clear(),
        }
        self.bytes_since_index += b.len;
        self.size = b.position + b.len;
        self.next_offset = b.last_offset + 1;
        self.last_epoch = Some(b.leader_epoch);
    }

    /// Drops the tail of a segment that is no longer written (after a roll).
    pub fn forget_tail(&mut self) {
        self.tail = Vec::new();
    }

    /// The tail batches from the one that starts at or holds `pos`, when
    /// the tail reaches back that far.
    fn tail_from_position(&self, pos: u64) -> Option<&[TailBatch]> {
        let first = self.tail.first()?;
        if pos < first.position() {
            return None;
        }
        let i = self.tail.partition_point(|t| t.end() <= pos);
        Some(&self.tail[i..])
    }

    /// The segment's read handle, opened now if it is not open.
    pub fn reader(&self) -> io::Result<&Arc<fs::File>> {
        if let Some(r) = self.reader.get() {
            return Ok(&r.file);
        }
        let file = fs::File::open(&self.paths.log)?;
        Ok(&self
            .reader
            .get_or_init(|| Reader {
                file: Arc::new(file),
                _counted: Counted::new(&self.files, 1),
            })
            .file)
    }

    /// Closes the read handle (slices already handed out keep the file).
    pub fn release_reader(&mut self) {
        self.reader.take();
    }

    /// Files this segment holds open: its reader and the writer's three.
    pub fn open_files(&self) -> usize {
        usize::from(self.reader.get().is_some()) + if self.writer.is_some() { 3 } else { 0 }
    }

    /// A brand-new empty segment's in-memory state.
    pub fn empty(dir: &Path, base_offset: i64, files: &Rc<OpenFiles>, writer: Option<Writer>) -> Self {
        Self {
            base_offset,
            paths: SegmentPaths::new(dir, base_offset),
            reader: OnceCell::new(),
            files: Rc::clone(files),
            writer,
            size: 0,
            next_offset: base_offset,
            index: OffsetIndex::default(),
            index_persisted: 0,
            time_index: TimeIndex::default(),
            time_index_persisted: 0,
            bytes_since_index: 0,
            tail: Vec::new(),
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            last_epoch: None,
            first_append_ms: None,
            last_write_ms: 0,
            preallocated_to: 0,
            padded: false,
            no_records: Cell::new(false),
        }
    }

    /// Rebuilds a segment's state from its files; see the table at the top
    /// of this module. `newest` allows truncating a damaged tail.
    /// The segment keeps no file open afterwards.
    pub fn recover(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        newest: bool,
        files: &Rc<OpenFiles>,
    ) -> Result<Self> {
        let paths = SegmentPaths::new(dir, base_offset);
        let file = StdOpenOptions::new()
            .read(true)
            .write(true)
            .open(&paths.log)
            .map_err(|e| LogError::io("open", &paths.log, e))?;
        let mut file_len = file.metadata().map_err(|e| LogError::io("stat", &paths.log, e))?.len();
        let mut seg = Segment::empty(dir, base_offset, files, None);
        let reader = file;

        let index_bytes = read_optional(&paths.index)?;
        let time_bytes = read_optional(&paths.time_index)?;
        // Entries past the final log end are cut after the scan.
        let decoded = match (&index_bytes, &time_bytes) {
            (Some(idx), Some(time)) => TimeIndex::decode(time, u64::from(u32::MAX))
                .map(|time| (OffsetIndex::decode_prefix(idx, file_len).0, time)),
            _ => None,
        };
        // missing_index: without both files in order, a full scan rebuilds them.
        let (mut index, time_index) = decoded.unwrap_or_default();

        // stale_index: the scan starts at the last entry that names the batch
        // at its position; entries that do not are dropped.
        let (start_pos, start_offset) = loop {
            let Some((rel, pos)) = index.last() else {
                break (0u64, base_offset);
            };
            let pos = u64::from(pos);
            let expected = base_offset + i64::from(rel);
            let header = read_header(&reader, pos, file_len).map_err(|e| LogError::io("read", &paths.log, e))?;
            let names_batch = header
                .as_ref()
                .and_then(|h| BatchHeader::parse(h).ok())
                .is_some_and(|h| h.base_offset() == expected && h.magic() == batch::MAGIC_V2);
            if names_batch {
                break (pos, expected);
            }
            index.pop();
        };
        seg.index = index;
        seg.time_index = time_index;
        seg.size = start_pos;
        seg.next_offset = start_offset;
        let interval = config.index_interval_bytes;
        let stop = scan(&reader, start_pos, file_len, start_offset, |b| {
            seg.note_batch(&b, interval)
        })
        .map_err(|e| LogError::io("read", &paths.log, e))?;
        if let Some(stop) = stop {
            if !newest {
                return Err(LogError::Corrupt {
                    path: paths.log.clone(),
                    position: stop.position,
                    reason: stop.reason,
                });
            }
            tracing::warn!(
                path = %paths.log.display(),
                position = stop.position,
                reason = %stop.reason,
                dropped_bytes = file_len - stop.position,
                "truncating damaged tail of the newest segment"
            );
            reader
                .set_len(stop.position)
                .and_then(|()| reader.sync_data())
                .map_err(|e| LogError::io("truncate", &paths.log, e))?;
            file_len = stop.position;
        }
        assert_eq!(seg.size, file_len, "recovery must account for every kept byte");
        let next_rel = u32::try_from(seg.next_offset - base_offset).unwrap_or(u32::MAX);
        seg.time_index.truncate_from_rel(next_rel);
        // The segment's largest timestamp: the time index vouches for the
        // batches before the scan start, the scan for the rest.
        if let Some((ts, rel)) = seg.time_index.last()
            && ts > seg.max_timestamp
        {
            seg.max_timestamp = ts;
            seg.offset_of_max_timestamp = base_offset + i64::from(rel);
        }
        // Rewrite an index file only when what recovery holds differs from it.
        let mut out = Vec::new();
        seg.index.encode_from(0, &mut out);
        rewrite_if_changed(&paths.index, index_bytes.as_deref(), &out)?;
        out.clear();
        seg.time_index.encode_from(0, &mut out);
        rewrite_if_changed(&paths.time_index, time_bytes.as_deref(), &out)?;
        seg.index_persisted = seg.index.len();
        seg.time_index_persisted = seg.time_index.len();
        drop(reader);
        Ok(seg)
    }

    /// Walks the headers of written batches from `pos` (a batch start),
    /// calling `f(position, header, total_len)` until it returns false or
    /// the written bytes end.
    pub(crate) fn walk(&self, mut pos: u64, mut f: impl FnMut(u64, &BatchHeader<'_>, u64) -> bool) -> io::Result<()> {
        let reader = self.reader()?;
        while let Some(h) = read_header(reader, pos, self.size)? {
            let h = BatchHeader::parse(&h).map_err(io::Error::other)?;
            let len = h
                .total_len()
                .ok_or_else(|| io::Error::other("negative batchLength in a written segment"))?
                as u64;
            if !f(pos, &h, len) {
                break;
            }
            pos += len;
        }
        Ok(())
    }

    /// Position and base offset of the batch holding `offset` (or of the
    /// first batch after it), scanning headers forward from the nearest
    /// index entry; `None` when `offset` is at or past the segment's end.
    pub fn position_of(&self, offset: i64) -> io::Result<Option<(u64, i64)>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        if let Some(first) = self.tail.first()
            && offset >= self.base_offset + i64::from(first.base_rel)
        {
            let rel = self.rel(offset);
            let i = self.tail.partition_point(|t| t.last_rel < rel);
            let t = self.tail[i];
            return Ok(Some((t.position(), self.base_offset + i64::from(t.base_rel))));
        }
        self.position_of_by_headers(offset)
    }

    /// [`Segment::position_of`] from the index and the headers on disk.
    fn position_of_by_headers(&self, offset: i64) -> io::Result<Option<(u64, i64)>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let rel = self.rel(offset.max(self.base_offset));
        let from = self.index.floor(rel).map_or(0, |(_, p)| u64::from(p));
        let mut found = None;
        self.walk(from, |pos, h, _| {
            if h.last_offset() >= offset {
                found = Some((pos, h.base_offset()));
            }
            found.is_none()
        })?;
        Ok(found)
    }

    /// The end of the last whole batch that starts at or after `start` and
    /// ends at or before `limit`, using the index to skip ahead; `start` if
    /// the first batch alone passes `limit`.
    pub fn batch_end_within(&self, start: u64, limit: u64) -> io::Result<u64> {
        let limit = limit.min(self.size);
        if limit == self.size {
            return Ok(self.size);
        }
        if let Some(tail) = self.tail_from_position(start) {
            let fits = tail.partition_point(|t| t.end() <= limit);
            return Ok(fits.checked_sub(1).map_or(start, |i| tail[i].end().max(start)));
        }
        self.batch_end_within_by_headers(start, limit)
    }

    /// [`Segment::batch_end_within`] from the index and the headers on disk.
    fn batch_end_within_by_headers(&self, start: u64, limit: u64) -> io::Result<u64> {
        let limit = limit.min(self.size);
        if limit == self.size {
            return Ok(self.size);
        }
        let from = self
            .index
            .floor_position(u32::try_from(limit).unwrap_or(u32::MAX))
            .map_or(start, |(_, p)| start.max(u64::from(p)));
        let mut end = from;
        self.walk(from, |pos, _, len| {
            let fits = pos + len <= limit;
            if fits {
                end = pos + len;
            }
            fits
        })?;
        Ok(end)
    }

    /// Length of the batch at `pos`.
    pub fn batch_len_at(&self, pos: u64) -> io::Result<u64> {
        if let Some(t) = self.tail_from_position(pos).and_then(|t| t.first())
            && t.position() == pos
        {
            return Ok(t.len());
        }
        let mut len = None;
        self.walk(pos, |_, _, l| {
            len = Some(l);
            false
        })?;
        len.ok_or_else(|| io::Error::other("no batch at position"))
    }

    /// Visits the headers of written batches from the one holding `offset`
    /// on, stopping when `f` returns false.
    pub fn for_each_header_from(&self, offset: i64, mut f: impl FnMut(&BatchHeader<'_>) -> bool) -> io::Result<()> {
        match self.position_of(offset)? {
            Some((pos, _)) => self.walk(pos, |_, h, _| f(h)),
            None => Ok(()),
        }
    }

    /// New index entries not yet on disk, encoded, with the file positions
    /// to write them at; marks them persisted.
    pub fn take_unpersisted_index(&mut self) -> (Vec<u8>, u64, Vec<u8>, u64) {
        let mut idx = Vec::new();
        self.index.encode_from(self.index_persisted, &mut idx);
        let idx_pos = (self.index_persisted * crate::index::OFFSET_ENTRY_BYTES) as u64;
        self.index_persisted = self.index.len();
        let mut time = Vec::new();
        self.time_index.encode_from(self.time_index_persisted, &mut time);
        let time_pos = (self.time_index_persisted * crate::index::TIME_ENTRY_BYTES) as u64;
        self.time_index_persisted = self.time_index.len();
        (idx, idx_pos, time, time_pos)
    }

    /// Removes the segment's files. Open [`crate::FileSlice`]s keep the log
    /// file's inode alive until they drop.
    pub fn delete_files(&self) -> Result<()> {
        remove_files(&self.paths)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::io::Write;

    use super::*;

    /// The tail answers exactly what reading the headers answers, for every
    /// offset and bound it covers, across index entries.
    #[test]
    fn the_tail_agrees_with_the_headers_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let files = OpenFiles::new();
        let mut seg = Segment::empty(dir.path(), 100, &files, None);
        let mut file = fs::File::create(&seg.paths.log).unwrap();
        let mut offset = 100;
        for i in 0..60usize {
            let mut b = batch::build_simple(1 + i % 4, 10 + (i * 37) % 300, 0);
            batch::assign(&mut b, offset, 0);
            let h = BatchHeader::parse(&b).unwrap();
            let scanned = ScannedBatch {
                position: seg.size,
                len: b.len() as u64,
                base_offset: offset,
                last_offset: h.last_offset(),
                max_timestamp: h.max_timestamp(),
                leader_epoch: 0,
            };
            file.write_all(&b).unwrap();
            offset = h.last_offset() + 1;
            seg.note_batch(&scanned, 512);
        }
        assert!(seg.index.len() > 3, "the test must cross index entries");
        assert!(seg.tail.len() <= TAIL_BATCHES);
        let first = seg.tail[0];
        assert!(first.position > 0);
        for o in seg.base_offset + i64::from(first.base_rel)..seg.next_offset + 2 {
            assert_eq!(
                seg.position_of(o).unwrap(),
                seg.position_of_by_headers(o).unwrap(),
                "offset {o}"
            );
        }
        for t in seg.tail.clone() {
            assert_eq!(seg.batch_len_at(t.position()).unwrap(), t.len());
            for limit in (t.position()..seg.size + 10).step_by(7) {
                assert_eq!(
                    seg.batch_end_within(t.position(), limit).unwrap(),
                    seg.batch_end_within_by_headers(t.position(), limit).unwrap(),
                    "start {} limit {limit}",
                    t.position
                );
            }
        }
    }
}
