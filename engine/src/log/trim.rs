//! Trimming: retention, the log start moved by DeleteRecords, and
//! truncation (a follower cutting a diverged tail).

use super::*;

impl Log {
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
    pub(super) fn trim_front(&self, mut also: impl FnMut(&Segment, u64) -> bool) -> Result<Vec<i64>> {
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

    /// Waits until no write is queued or running, so the files may change
    /// under the log.
    pub(super) async fn wait_idle(&self) -> Result<()> {
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
}
