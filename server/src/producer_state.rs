//! Idempotent-producer state of one partition: per producer id, the epoch
//! and the last five batches' sequence ranges with their offsets.
//!
//! Owned by the partition's shard. A retried batch that matches a cached
//! range is answered with its original offset and not written again; a gap
//! is OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch is INVALID_PRODUCER_EPOCH.
//!
//! Persistence: `producer-state.json` in the partition directory holds the
//! table as of a log offset. It is written on clean close; on open the table
//! is loaded and the log's batch headers after that offset are replayed, so
//! the table is exact after a crash too (the replay is then longer).

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use sluice_engine::Log;
use sluice_engine::durable_file::{Replace, replace_file};

use crate::error_codes::ErrorCode;

/// Batches remembered per producer, as Kafka does.
pub const CACHED_BATCHES: usize = 5;
pub const FILE: &str = "producer-state.json";

/// One appended batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRange {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchRange>,
}

/// What to do with an incoming batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// Already written at this base offset: answer, do not write.
    Duplicate {
        base_offset: i64,
    },
    Reject(ErrorCode),
}

/// The table of one partition.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// Offset up to which the table reflects the log.
    applied_end_offset: i64,
    /// End offset of the snapshot file as last read or written; a save with
    /// nothing new since is skipped (a shutdown of many idle partitions
    /// writes nothing for them).
    saved_end_offset: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    end_offset: i64,
    producers: Vec<(i64, ProducerEntry)>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

impl ProducerStates {
    /// Judges a batch with producer fields `(producer_id, epoch, first_seq,
    /// last_seq)`. Batches without a producer id are always appended.
    pub fn check(&self, producer_id: i64, epoch: i16, first_seq: i32, last_seq: i32) -> Verdict {
        if producer_id < 0 || first_seq < 0 {
            return Verdict::Append;
        }
        let Some(entry) = self.producers.get(&producer_id) else {
            // Unknown producer (new, or its state expired with the log):
            // accepted from any sequence, as Kafka does.
            return Verdict::Append;
        };
        if epoch < entry.epoch {
            return Verdict::Reject(ErrorCode::InvalidProducerEpoch);
        }
        if epoch > entry.epoch {
            return if first_seq == 0 {
                Verdict::Append
            } else {
                Verdict::Reject(ErrorCode::OutOfOrderSequenceNumber)
            };
        }
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Verdict::Duplicate {
                base_offset: b.base_offset,
            };
        }
        match entry.batches.back() {
            Some(last) if first_seq == next_seq(last.last_seq) => Verdict::Append,
            None => Verdict::Append,
            Some(_) => Verdict::Reject(ErrorCode::OutOfOrderSequenceNumber),
        }
    }

    /// Records an appended batch.
    pub fn record(&mut self, producer_id: i64, epoch: i16, range: BatchRange, end_offset: i64) {
        self.applied_end_offset = self.applied_end_offset.max(end_offset);
        if producer_id < 0 || range.first_seq < 0 {
            return;
        }
        let entry = self.producers.entry(producer_id).or_default();
        if epoch != entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == CACHED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(range);
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Rebuilds the table: the snapshot file if it is readable, then every
    /// batch header from its offset (or the log start) to the log end.
    pub fn load(log: &Log) -> std::io::Result<Self> {
        let path = log.dir().join(FILE);
        let mut states = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<Snapshot>(&bytes) {
                Ok(s) if s.format == 1 && s.end_offset <= log.log_end_offset() => Self {
                    producers: s.producers.into_iter().collect(),
                    applied_end_offset: s.end_offset,
                    saved_end_offset: Some(s.end_offset),
                },
                _ => {
                    tracing::warn!(path = %path.display(), "ignoring unreadable producer-state snapshot; replaying the log");
                    Self::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(e) => return Err(e),
        };
        log.for_each_batch(states.applied_end_offset, |h, _| {
            if h.base_sequence() >= 0 && h.producer_id() >= 0 {
                let last_seq = h.base_sequence().wrapping_add(h.last_offset_delta()) & i32::MAX;
                let range = BatchRange {
                    first_seq: h.base_sequence(),
                    last_seq,
                    base_offset: h.base_offset(),
                };
                states.record(h.producer_id(), h.producer_epoch(), range, h.last_offset() + 1);
            }
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        states.applied_end_offset = log.log_end_offset();
        Ok(states)
    }

    /// Writes the snapshot file (temp file, fsync, rename).
    pub fn save(&mut self, log: &Log) -> std::io::Result<()> {
        let end_offset = self.applied_end_offset.min(log.log_end_offset());
        // Nothing new since the file on disk, or nothing at all to replay.
        if self.saved_end_offset == Some(end_offset)
            || (end_offset == log.log_start_offset() && self.producers.is_empty())
        {
            return Ok(());
        }
        let snap = Snapshot {
            format: 1,
            end_offset,
            producers: self.producers.iter().map(|(k, v)| (*k, v.clone())).collect(),
        };
        let bytes = serde_json::to_vec(&snap).map_err(std::io::Error::other)?;
        let path = log.dir().join(FILE);
        // The directory is synced too: a crash could otherwise lose the
        // rename and replay from an older snapshot than the log start.
        replace_file(&path, &bytes, Replace::Durable)?;
        self.saved_end_offset = Some(end_offset);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: i32, last: i32, base: i64) -> BatchRange {
        BatchRange {
            first_seq: first,
            last_seq: last,
            base_offset: base,
        }
    }

    #[test]
    fn sequences_dedupe_and_detect_gaps() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(7, 0, 0, 4), Verdict::Append);
        s.record(7, 0, range(0, 4, 100), 105);
        assert_eq!(s.check(7, 0, 0, 4), Verdict::Duplicate { base_offset: 100 });
        assert_eq!(s.check(7, 0, 5, 9), Verdict::Append);
        assert_eq!(
            s.check(7, 0, 6, 9),
            Verdict::Reject(ErrorCode::OutOfOrderSequenceNumber)
        );
        assert_eq!(s.check(7, 1, 0, 0), Verdict::Append, "new epoch restarts at 0");
        assert_eq!(
            s.check(7, 1, 3, 3),
            Verdict::Reject(ErrorCode::OutOfOrderSequenceNumber)
        );
        s.record(7, 1, range(0, 0, 200), 201);
        assert_eq!(s.check(7, 0, 5, 9), Verdict::Reject(ErrorCode::InvalidProducerEpoch));
        assert_eq!(s.check(-1, -1, -1, -1), Verdict::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(1, 0, range(i, i, i64::from(i)), i64::from(i) + 1);
        }
        assert_eq!(s.check(1, 0, 2, 2), Verdict::Duplicate { base_offset: 2 });
        assert_eq!(
            s.check(1, 0, 1, 1),
            Verdict::Reject(ErrorCode::OutOfOrderSequenceNumber)
        );
        assert_eq!(s.check(1, 0, 7, 7), Verdict::Append);
    }
}
