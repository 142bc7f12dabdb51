//! Reading: file slices for fetches, batch walks, lookups by time.

use super::*;

impl Log {
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
            ReadBound::Stable(lso) => lso.min(st.high_watermark),
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
}
