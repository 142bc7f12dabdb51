//! The data path's I/O: vectored writes and fdatasync through io_uring
//! (compio), with counters and an optional fault injector that tests use to
//! fail the Nth write or sync.

use std::{cell::Cell, io, rc::Rc};

use bytes::Bytes;
use compio::{BufResult, fs::File, io::AsyncWriteAt};

/// Linux's limit on iovecs per writev.
const IOV_MAX: usize = 1024;

/// Counters of one log's data-path I/O, owned by the log's shard.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    batches_appended: Cell<u64>,
    write_calls: Cell<u64>,
    sync_calls: Cell<u64>,
    bytes_written: Cell<u64>,
}

/// A snapshot of a log's data-path counters.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IoStats {
    pub batches_appended: u64,
    /// `writev` calls on segment files (index writes not counted).
    pub write_calls: u64,
    /// `fdatasync` calls on segment files.
    pub sync_calls: u64,
    pub bytes_written: u64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> IoStats {
        IoStats {
            batches_appended: self.batches_appended.get(),
            write_calls: self.write_calls.get(),
            sync_calls: self.sync_calls.get(),
            bytes_written: self.bytes_written.get(),
        }
    }
}

fn bump(c: &Cell<u64>, by: u64) {
    c.set(c.get() + by);
}

/// Makes chosen data-path calls fail, as a dying disk would. Counting starts
/// at 1 and covers segment writes and syncs (index writes are not counted).
/// Shared by a test and the log under test on one thread.
#[derive(Debug, Default)]
pub struct FaultInjector {
    writes: Cell<u64>,
    syncs: Cell<u64>,
    fail_write: Cell<Option<u64>>,
    short_write: Cell<Option<u64>>,
    full_write: Cell<Option<u64>>,
    fail_sync: Cell<Option<u64>>,
}

impl FaultInjector {
    pub fn new() -> Rc<Self> {
        Rc::default()
    }
    /// The `n`th write fails with EIO before writing anything.
    pub fn fail_write_at(&self, n: u64) {
        self.fail_write.set(Some(n));
    }
    /// The `n`th write writes only half of its first buffer, then the
    /// following attempt fails with EIO: a torn write.
    pub fn short_write_at(&self, n: u64) {
        self.short_write.set(Some(n));
    }
    /// The `n`th write writes half of its first buffer, then the disk is
    /// full: the following attempt fails with ENOSPC.
    pub fn full_disk_write_at(&self, n: u64) {
        self.full_write.set(Some(n));
    }
    /// The `n`th fdatasync fails with EIO.
    pub fn fail_sync_at(&self, n: u64) {
        self.fail_sync.set(Some(n));
    }
    pub fn writes_seen(&self) -> u64 {
        self.writes.get()
    }
    pub fn syncs_seen(&self) -> u64 {
        self.syncs.get()
    }
}

fn injected(what: &str) -> io::Error {
    io::Error::other(format!("injected {what} failure"))
}

/// The data path's I/O handle, one per log.
#[derive(Debug, Default)]
pub(crate) struct Io {
    pub(crate) stats: Counters,
    pub(crate) faults: Option<Rc<FaultInjector>>,
    pub(crate) histograms: Option<Rc<crate::stats::IoHistograms>>,
}

impl Io {
    /// Writes every buffer, in order, starting at `pos`: one `writev` per
    /// IOV_MAX buffers, continuing after short writes. The buffers are
    /// reference-counted slices of the producers' frames; the kernel reads
    /// them in place. A write of at most `inline_max` bytes is a `pwritev`
    /// on this thread, a larger one an io_uring `writev`.
    pub(crate) async fn write_all(
        &self,
        file: &File,
        mut bufs: Vec<Bytes>,
        mut pos: u64,
        inline_max: u64,
    ) -> io::Result<()> {
        while !bufs.is_empty() {
            let rest = if bufs.len() > IOV_MAX {
                bufs.split_off(IOV_MAX)
            } else {
                Vec::new()
            };
            let want: usize = bufs.iter().map(Bytes::len).sum();
            let mut torn = None;
            if let Some((f, n)) = self.count_write()? {
                let full = f.full_write.get() == Some(n);
                if full || f.short_write.get() == Some(n) {
                    torn = Some(if full {
                        io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error())
                    } else {
                        injected("torn write")
                    });
                    bufs.truncate(1);
                    let half = bufs[0].len() / 2;
                    bufs[0].truncate(half.max(1));
                }
            }
            let started = std::time::Instant::now();
            let (res, mut written_bufs) = if want as u64 <= inline_max {
                (pwritev_now(file, &bufs, pos), bufs)
            } else {
                let mut handle = file;
                let BufResult(res, bufs) = handle.write_vectored_at(bufs, pos).await;
                (res, bufs)
            };
            if let Some(h) = &self.histograms {
                h.write_ns.observe(elapsed_ns(started));
            }
            let n = res?;
            bump(&self.stats.bytes_written, n as u64);
            if let Some(e) = torn {
                return Err(e);
            }
            if n == 0 && want > 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "writev wrote nothing"));
            }
            pos += n as u64;
            if n < want {
                // Drop what went out, keep the unwritten tail of a partly
                // written buffer (a refcount, not a copy), and go round again.
                let mut skip = n;
                written_bufs.retain_mut(|b| {
                    if skip >= b.len() {
                        skip -= b.len();
                        false
                    } else {
                        let _ = b.split_to(skip);
                        skip = 0;
                        true
                    }
                });
                written_bufs.extend(rest);
                bufs = written_bufs;
            } else {
                bufs = rest;
            }
        }
        Ok(())
    }

    /// Writes `bufs` at `pos` past the page cache through a staged
    /// `O_DIRECT` handle ([`crate::direct`]); returns the file's end,
    /// padding included.
    pub(crate) async fn write_direct(
        &self,
        direct: &std::cell::RefCell<crate::direct::Direct>,
        segment: i64,
        staged: crate::direct::Staged,
        bufs: &[Bytes],
        pos: u64,
    ) -> io::Result<u64> {
        if let Err(e) = self.count_write() {
            crate::direct::unstage(direct, staged);
            return Err(e);
        }
        let started = std::time::Instant::now();
        let end = crate::direct::write(direct, segment, staged, bufs, pos).await?;
        if let Some(h) = &self.histograms {
            h.write_ns.observe(elapsed_ns(started));
        }
        bump(&self.stats.bytes_written, bufs.iter().map(|b| b.len() as u64).sum());
        Ok(end)
    }

    /// Counts one write call; with a fault injector, also its number, and
    /// the injected failure when this is the write it fails.
    fn count_write(&self) -> io::Result<Option<(&FaultInjector, u64)>> {
        bump(&self.stats.write_calls, 1);
        let Some(f) = &self.faults else {
            return Ok(None);
        };
        let n = f.writes.get() + 1;
        f.writes.set(n);
        if f.fail_write.get() == Some(n) {
            return Err(injected("write"));
        }
        Ok(Some((f, n)))
    }

    pub(crate) async fn sync_data(&self, file: &File) -> io::Result<()> {
        bump(&self.stats.sync_calls, 1);
        if let Some(f) = &self.faults {
            let n = f.syncs.get() + 1;
            f.syncs.set(n);
            if f.fail_sync.get() == Some(n) {
                return Err(injected("fdatasync"));
            }
        }
        let started = std::time::Instant::now();
        let r = file.sync_data().await;
        if let Some(h) = &self.histograms {
            h.sync_ns.observe(elapsed_ns(started));
        }
        r
    }

    pub(crate) fn count_appended(&self, batches: u64) {
        bump(&self.stats.batches_appended, batches);
    }

    /// A group-commit round wrote `batches` batches.
    pub(crate) fn count_round(&self, batches: usize) {
        if let Some(h) = &self.histograms {
            h.round_batches.observe(batches as u64);
        }
    }
}

fn elapsed_ns(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One `pwritev` of `bufs` at `pos`, on this thread, retried on EINTR.
fn pwritev_now(file: &File, bufs: &[Bytes], pos: u64) -> io::Result<usize> {
    use std::os::fd::AsFd;
    let slices: Vec<io::IoSlice<'_>> = bufs.iter().map(|b| io::IoSlice::new(b)).collect();
    loop {
        match rustix::io::pwritev(file.as_fd(), &slices, pos) {
            Err(rustix::io::Errno::INTR) => {}
            r => return r.map_err(io::Error::from),
        }
    }
}
