//! Flushing: the group-commit round that writes what was queued and
//! syncs it, segment rolls, preallocation, close.

use super::*;

impl Log {
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
}

impl Shared {
    /// One group-commit round: write everything queued, then sync if the
    /// policy or a waiter wants it. `Ok(false)` when there was nothing to do.
    pub(super) async fn flush_round(self: &Rc<Self>) -> Result<bool, String> {
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
    pub(super) async fn maybe_write_back(self: &Rc<Self>) -> Result<(), String> {
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
    pub(super) async fn write_run(&self, run: &mut [Pending]) -> Result<(), String> {
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
    pub(super) async fn writer(&self) -> Result<Writer, String> {
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
    pub(super) fn write_failed(&self, cause: String, e: &io::Error) -> String {
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
    pub(super) async fn preallocate(&self, writer: &Writer, position: u64, want: u64) {
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
    pub(super) async fn release_reserve(&self, file: &File, size: u64, reserved_to: u64) {
        if reserved_to > size
            && let Err(e) = file.set_len(size).await
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not release preallocated blocks");
        }
    }

    /// Closes the active segment (sync, final time-index entry) and opens a
    /// new one at `base_offset`, syncing the directory so the new file
    /// survives a crash.
    pub(super) async fn roll(&self, base_offset: i64) -> Result<(), String> {
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
