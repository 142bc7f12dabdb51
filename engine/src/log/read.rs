//! Reading: file slices for fetches, batch walks, lookups by time.

use super::*;

/// How many header-only batches one [`Log::read_records`] passes over at
/// most (each a header read, but for segments known to hold no record).
pub const SKIP_HEADERS: usize = 4096;

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
        let upper = st.upper(bound);
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

    /// As [`Log::read`], for a consumer: in a compacted log, the batches
    /// from `offset` that hold no record (the header-only batches cleaning
    /// leaves, ADR 0020) are passed over, so the answer starts at the
    /// first batch holding a record, as a Kafka log whose cleaner dropped
    /// them would answer. A run of them that reaches the bound, or goes on
    /// past [`SKIP_HEADERS`] headers, is answered with its last batch, which
    /// moves the consumer past it. A read from the active segment is a
    /// plain read (the cleaner never writes there). (A client that finds no record in a
    /// full answer takes it for a record too large to fetch.) A follower
    /// reads with [`Log::read`]: it copies every batch.
    pub fn read_records(&self, offset: i64, max_bytes: u64, bound: ReadBound) -> Result<ReadResult> {
        let from = self.past_empty_batches(offset, bound)?;
        self.read(from, max_bytes, bound)
    }

    /// Where [`Log::read_records`] reads from: `offset`, the base of the
    /// first batch from it that holds a record, or the last offset of the
    /// run of header-only batches before the bound.
    fn past_empty_batches(&self, offset: i64, bound: ReadBound) -> Result<i64> {
        let st = self.shared.state.borrow();
        if !st.config.compacted || offset < st.log_start_offset || offset >= st.log_end_offset {
            return Ok(offset);
        }
        let rolled = st.segments.len() - 1;
        if st.segment_index_for(offset) == rolled {
            // In the active segment (where a consumer at the tail reads):
            // served as it is, without a header read on that path.
            return Ok(offset);
        }
        let upper = st.upper(bound);
        let mut left = SKIP_HEADERS;
        let mut last_empty = None;
        for (i, seg) in st.segments.iter().enumerate().skip(st.segment_index_for(offset)) {
            if seg.next_offset <= offset {
                continue;
            }
            if seg.base_offset >= upper || left == 0 {
                break;
            }
            if i < rolled && seg.no_records.get() && seg.next_offset <= upper {
                last_empty = Some(seg.next_offset - 1);
                continue;
            }
            let from = offset.max(seg.base_offset);
            let Some((pos, _)) = seg.position_of(from).map_err(io_err("read", &seg.paths.log))? else {
                continue;
            };
            let mut found = None;
            let mut whole = true;
            seg.walk(pos, |_, h, _| {
                if h.base_offset() >= upper || left == 0 {
                    whole = false;
                } else if h.records_count() > 0 {
                    found = Some(h.base_offset().max(offset));
                } else {
                    last_empty = Some(h.last_offset());
                    left -= 1;
                    return true;
                }
                false
            })
            .map_err(io_err("read", &seg.paths.log))?;
            if let Some(at) = found {
                return Ok(at);
            }
            if whole && i < rolled && pos == 0 {
                seg.no_records.set(true);
            }
        }
        Ok(last_empty.map_or(offset, |last| last.max(offset)))
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
