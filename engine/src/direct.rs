//! Appends that bypass the page cache (`O_DIRECT`), for follower replicas
//! (ADR 0017).
//!
//! A follower's log is read only after it becomes leader, so the page-cache
//! copy of every byte it writes (the largest part of a follower's CPU, and
//! memory taken from the leaders' hot data) buys nothing. A direct write
//! needs block-aligned positions, lengths and memory, and appends are not:
//! each write stages the bytes of the partial block at the log's end plus
//! the new batches in one reused aligned buffer, pads it with zeros to a
//! whole block, and writes it at the block's start. The bytes before the
//! old end are written again unchanged, so a torn write can damage only the
//! new bytes; the zeros past the new end are cut when the segment rolls or
//! closes, and recovery cuts them (as a torn tail) after a crash. The
//! partial block is kept in the buffer between writes; after anything else
//! moves the log's end (truncation, a roll, a buffered write, a reopen) it
//! is read back from the file.

use std::io;
use std::os::fd::AsFd;

use bytes::Bytes;
use compio::BufResult;
use compio::buf::{IntoInner, IoBuf};
use compio::fs::{File, OpenOptions};
use compio::io::AsyncWriteAt;

/// The alignment of positions, lengths and memory: a page, which every
/// device's logical block size divides.
pub(crate) const BLOCK: u64 = 4096;

/// A heap buffer whose usable part starts on a [`BLOCK`] boundary. Its
/// allocation is reused from write to write.
pub(crate) struct AlignedBuf {
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

/// A log's direct-write state.
#[derive(Default)]
pub(crate) struct Direct {
    /// Appends go to the device directly (the replica is a follower).
    pub on: bool,
    /// The filesystem refused `O_DIRECT`: buffered writes from then on.
    pub unsupported: bool,
    /// The active segment's `O_DIRECT` handle, with the segment's base
    /// offset.
    file: Option<(i64, File)>,
    /// The staging buffer; taken while a write is in flight.
    buf: Option<AlignedBuf>,
    /// The buffer's first bytes are those of the partial block ending at
    /// this (segment base offset, position).
    tail: Option<(i64, u64)>,
}

impl Direct {
    /// Forgets the handle and the cached partial block: the log's end moved
    /// by other means, or its files are being closed.
    pub fn reset(&mut self) {
        self.file = None;
        self.tail = None;
    }

    /// Whether appends should take the direct path now.
    pub fn wanted(&self) -> bool {
        self.on && !self.unsupported
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
    path: &std::path::Path,
    buffered: &File,
    position: u64,
    want: u64,
) -> io::Result<Option<Staged>> {
    let block_start = position - position % BLOCK;
    let head = usize::try_from(position - block_start).unwrap_or(0);
    let need = head + usize::try_from(want).unwrap_or(usize::MAX);
    let (file, buf, cached) = {
        let mut d = direct.borrow_mut();
        let file = match &d.file {
            Some((base, f)) if *base == segment => Some(f.clone()),
            _ => None,
        };
        let cached = d.tail == Some((segment, position));
        d.tail = None;
        (file, d.buf.take(), cached)
    };
    let file = match file {
        Some(f) => f,
        None => {
            let mut o = OpenOptions::new();
            o.write(true).custom_flags(o_direct());
            match o.open(path).await {
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
    let mut buf = match buf {
        Some(b) if b.capacity() >= need + BLOCK as usize => b,
        other => {
            // Grow, keeping a cached partial block.
            let mut b = AlignedBuf::with_capacity(need + BLOCK as usize);
            if let (Some(old), true) = (other, cached) {
                b.bytes_mut()[..head].copy_from_slice(&old.vec[old.start..old.start + head]);
            }
            b
        }
    };
    if head > 0 && !cached {
        read_exact_at(buffered, &mut buf.bytes_mut()[..head], block_start)?;
    }
    Ok(Some(Staged { file, buf, head }))
}

/// Gives the staged buffer back without writing.
pub(crate) fn unstage(direct: &std::cell::RefCell<Direct>, staged: Staged) {
    direct.borrow_mut().buf = Some(staged.buf);
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
    if result.is_ok() {
        // The new partial block moves to the buffer's start.
        let tail_start = usize::try_from(end - end % BLOCK - block_start).unwrap_or(0);
        let tail_len = usize::try_from(end % BLOCK).unwrap_or(0);
        buf.bytes_mut().copy_within(tail_start..tail_start + tail_len, 0);
    }
    let mut d = direct.borrow_mut();
    d.buf = Some(buf);
    if result.is_ok() {
        d.tail = Some((segment, end));
    }
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
