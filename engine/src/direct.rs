//! Appends that bypass the page cache (`O_DIRECT`), for follower replicas
//! (ADR 0017).
//!
//! A follower's log is read only after it becomes leader, so the page-cache
//! copy of every byte it writes (the largest part of a follower's CPU, and
//! memory taken from the leaders' hot data) buys nothing. A direct write
//! needs block-aligned positions, lengths and memory, and appends are not:
//! each write stages the bytes of the partial block at the log's end plus
//! the new batches in one aligned buffer, pads it with zeros to a
//! whole block, and writes it at the block's start. The bytes before the
//! old end are written again unchanged, so a torn write can damage only the
//! new bytes; the zeros past the new end are cut when the segment rolls or
//! closes, and recovery cuts them (as a torn tail) after a crash. The log
//! keeps a copy of the partial block between writes; after anything else
//! moves the log's end (truncation, a roll, a buffered write, a reopen) it
//! is read back from the file. Staging buffers are lent per write from the
//! shard's [`DirectBuffers`], so idle follower logs hold only their partial
//! block. Only runs of large flush rounds take this path ([`Direct::choose`]).

use std::io;
use std::os::fd::AsFd;

use bytes::Bytes;
use compio::BufResult;
use compio::buf::{IntoInner, IoBuf};
use compio::fs::{File, OpenOptions};
use compio::io::AsyncWriteAt;

/// Rounds below the threshold in a row that take an engaged log back to
/// buffered writes.
pub(crate) const SMALL_ROUNDS_TO_DISENGAGE: u32 = 32;

/// Rounds at or above the threshold in a row that engage direct writes.
pub(crate) const LARGE_ROUNDS_TO_ENGAGE: u32 = 8;

/// The alignment of positions, lengths and memory: a page, which every
/// device's logical block size divides.
pub(crate) const BLOCK: u64 = 4096;

/// A heap buffer whose usable part starts on a [`BLOCK`] boundary. Its
/// allocation is reused from write to write.
struct AlignedBuf {
    vec: Vec<u8>,
    start: usize,
}

impl AlignedBuf {
    fn with_capacity(cap: usize) -> Self {
        let block = BLOCK as usize;
        let cap = cap.div_ceil(block) * block;
        let vec = vec![0u8; cap + block];
        let start = (block - (vec.as_ptr() as usize % block)) % block;
        Self { vec, start }
    }

    fn capacity(&self) -> usize {
        self.vec.len() - self.start
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.vec[self.start..]
    }
}

/// The aligned staging buffers of one shard's logs, lent for one write
/// each: memory grows with the writes in flight, not with the number of
/// follower logs. At most `keep_bytes` of idle buffers are kept.
pub struct DirectBuffers {
    idle: std::cell::RefCell<Vec<AlignedBuf>>,
    keep_bytes: usize,
}

impl DirectBuffers {
    pub fn new(keep_bytes: usize) -> std::rc::Rc<Self> {
        std::rc::Rc::new(Self {
            idle: std::cell::RefCell::default(),
            keep_bytes,
        })
    }

    /// The smallest idle buffer that holds `need` bytes, or a new one.
    fn take(&self, need: usize) -> AlignedBuf {
        let mut idle = self.idle.borrow_mut();
        let best = idle
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= need)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match best {
            Some(i) => idle.swap_remove(i),
            None => AlignedBuf::with_capacity(need),
        }
    }

    /// Keeps `buf` for later writes, dropping the smallest idle ones while
    /// more than `keep_bytes` would be kept.
    fn give_back(&self, buf: AlignedBuf) {
        let mut idle = self.idle.borrow_mut();
        idle.push(buf);
        idle.sort_by_key(|b| std::cmp::Reverse(b.capacity()));
        while idle.len() > 1 && idle.iter().map(AlignedBuf::capacity).sum::<usize>() > self.keep_bytes {
            idle.pop();
        }
    }
}

impl std::fmt::Debug for DirectBuffers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectBuffers")
            .field("idle", &self.idle.borrow().len())
            .field("keep_bytes", &self.keep_bytes)
            .finish()
    }
}

impl Default for DirectBuffers {
    fn default() -> Self {
        Self {
            idle: std::cell::RefCell::default(),
            keep_bytes: 16 << 20,
        }
    }
}

/// A log's direct-write state.
#[derive(Default)]
pub(crate) struct Direct {
    /// Appends go to the device directly (the replica is a follower).
    pub on: bool,
    /// The filesystem refused `O_DIRECT`: buffered writes from then on.
    pub unsupported: bool,
    /// Rounds take the direct path now (a large one engaged it).
    engaged: bool,
    /// Rounds in a row below the threshold while engaged.
    small_rounds: u32,
    /// Rounds in a row at or above the threshold.
    large_rounds: u32,
    /// The active segment's `O_DIRECT` handle, with the segment's base
    /// offset.
    file: Option<(i64, File)>,
    /// Where staging buffers come from (the shard's, or the log's own).
    pub buffers: std::rc::Rc<DirectBuffers>,
    /// The bytes of the partial block at the log's end...
    tail_bytes: Vec<u8>,
    /// ...when it ends at this (segment base offset, position).
    tail: Option<(i64, u64)>,
}

impl Direct {
    pub fn new(buffers: std::rc::Rc<DirectBuffers>) -> Self {
        Self {
            buffers,
            ..Self::default()
        }
    }

    /// Forgets the handle and the cached partial block: the log's end moved
    /// by other means, or its files are being closed.
    pub fn reset(&mut self) {
        self.file = None;
        self.tail = None;
    }

    /// Back to buffered writes until a large round.
    pub fn disengage(&mut self) {
        self.engaged = false;
        self.small_rounds = 0;
        self.large_rounds = 0;
        self.reset();
    }

    /// Whether appends may take the direct path.
    pub fn wanted(&self) -> bool {
        self.on && !self.unsupported
    }

    /// Whether a flush round of `want` bytes takes the direct path.
    /// [`LARGE_ROUNDS_TO_ENGAGE`] rounds of at least `min` bytes in a row
    /// engage it (one when `min` is 0); [`SMALL_ROUNDS_TO_DISENGAGE`]
    /// smaller rounds in a row release it. A small round pays the device's
    /// latency on the direct path and saves little copying, so a follower
    /// under light or middling load stays buffered; each switch costs a
    /// block read back or written out, so the log does not flip with every
    /// round.
    pub fn choose(&mut self, want: u64, min: u64) -> bool {
        if !self.wanted() {
            self.engaged = false;
            return false;
        }
        if want >= min {
            self.large_rounds = self.large_rounds.saturating_add(1);
            self.small_rounds = 0;
            if self.large_rounds >= LARGE_ROUNDS_TO_ENGAGE || min == 0 {
                self.engaged = true;
            }
        } else {
            self.large_rounds = 0;
            if self.engaged {
                self.small_rounds += 1;
                if self.small_rounds >= SMALL_ROUNDS_TO_DISENGAGE {
                    self.engaged = false;
                }
            }
        }
        self.engaged
    }
}

/// What a direct write needs from the log, taken out of its state for the
/// duration of the write.
pub(crate) struct Staged {
    file: File,
    buf: AlignedBuf,
    /// Valid bytes at the buffer's start that belong to the block holding
    /// `position` (read from the file when the cached ones do not match).
    head: usize,
}

/// Takes the handle and buffer for a write of `want` bytes at `position`
/// of the segment at `segment`, opening the handle or reading back the
/// partial block when needed. `Ok(None)`: this filesystem has no
/// `O_DIRECT`; write buffered.
pub(crate) async fn stage(
    direct: &std::cell::RefCell<Direct>,
    segment: i64,
    path: impl FnOnce() -> std::path::PathBuf,
    buffered: &File,
    position: u64,
    want: u64,
) -> io::Result<Option<Staged>> {
    let block_start = position - position % BLOCK;
    let head = usize::try_from(position - block_start).unwrap_or(0);
    let need = head + usize::try_from(want).unwrap_or(usize::MAX);
    let (file, cached, buffers) = {
        let mut d = direct.borrow_mut();
        let file = match &d.file {
            Some((base, f)) if *base == segment => Some(f.clone()),
            _ => None,
        };
        let cached = d.tail == Some((segment, position)) && d.tail_bytes.len() == head;
        d.tail = None;
        (file, cached, d.buffers.clone())
    };
    let file = match file {
        Some(f) => f,
        None => {
            let path = path();
            let mut o = OpenOptions::new();
            o.write(true).custom_flags(o_direct());
            match o.open(&path).await {
                Ok(f) => {
                    direct.borrow_mut().file = Some((segment, f.clone()));
                    f
                }
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => {
                    tracing::info!(path = %path.display(), "no O_DIRECT on this filesystem; follower writes stay buffered");
                    direct.borrow_mut().unsupported = true;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
    };
    let mut buf = buffers.take(need + BLOCK as usize);
    if cached {
        buf.bytes_mut()[..head].copy_from_slice(&direct.borrow().tail_bytes);
    } else if head > 0
        && let Err(e) = read_exact_at(buffered, &mut buf.bytes_mut()[..head], block_start)
    {
        buffers.give_back(buf);
        return Err(e);
    }
    Ok(Some(Staged { file, buf, head }))
}

/// Gives the staged buffer back without writing.
pub(crate) fn unstage(direct: &std::cell::RefCell<Direct>, staged: Staged) {
    let buffers = direct.borrow().buffers.clone();
    buffers.give_back(staged.buf);
}

/// Writes `bufs` at `position` through the staged handle: copies them after
/// the partial block's bytes, pads to a whole block, writes from the
/// block's start, and keeps the new partial block for the next write.
/// Returns the end of what the file now holds (padding included).
pub(crate) async fn write(
    direct: &std::cell::RefCell<Direct>,
    segment: i64,
    staged: Staged,
    bufs: &[Bytes],
    position: u64,
) -> io::Result<u64> {
    let Staged { file, mut buf, head } = staged;
    let block_start = position - position % BLOCK;
    let mut len = head;
    {
        let dst = buf.bytes_mut();
        for b in bufs {
            dst[len..len + b.len()].copy_from_slice(b);
            len += b.len();
        }
    }
    let padded = len.div_ceil(BLOCK as usize) * BLOCK as usize;
    buf.bytes_mut()[len..padded].fill(0);
    let end = position + (len - head) as u64;
    let mut done = 0usize;
    let mut vec = std::mem::take(&mut buf.vec);
    let result = loop {
        let from = buf.start + done;
        let to = buf.start + padded;
        let mut handle = &file;
        let BufResult(res, slice) = handle.write_at(vec.slice(from..to), block_start + done as u64).await;
        vec = slice.into_inner();
        match res {
            Ok(0) => break Err(io::Error::new(io::ErrorKind::WriteZero, "direct write wrote nothing")),
            Ok(n) => {
                done += n;
                if done >= padded {
                    break Ok(());
                }
                if !done.is_multiple_of(BLOCK as usize) {
                    break Err(io::Error::other(format!(
                        "direct write stopped at {n} bytes, not a block boundary"
                    )));
                }
            }
            Err(e) => break Err(e),
        }
    };
    buf.vec = vec;
    let mut d = direct.borrow_mut();
    if result.is_ok() {
        // The new partial block, for the next write.
        let tail_start = usize::try_from(end - end % BLOCK - block_start).unwrap_or(0);
        let tail_len = usize::try_from(end % BLOCK).unwrap_or(0);
        d.tail_bytes.clear();
        d.tail_bytes
            .extend_from_slice(&buf.bytes_mut()[tail_start..tail_start + tail_len]);
        d.tail = Some((segment, end));
    }
    let buffers = d.buffers.clone();
    drop(d);
    buffers.give_back(buf);
    result.map(|()| block_start + padded as u64)
}

fn o_direct() -> i32 {
    i32::try_from(rustix::fs::OFlags::DIRECT.bits()).unwrap_or(0)
}

fn read_exact_at(file: &File, out: &mut [u8], pos: u64) -> io::Result<()> {
    let mut done = 0;
    while done < out.len() {
        match rustix::io::pread(file.as_fd(), &mut out[done..], pos + done as u64) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the log's last block is short",
                ));
            }
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
