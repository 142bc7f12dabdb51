//! Idempotent-producer state of one partition: per producer id, the epoch
//! and the last five batches' sequence ranges with their offsets; and its
//! transactions: the first offset of each producer's open transaction
//! (the first of them all bounds the last stable offset) and the aborted
//! transactions that read_committed fetches answer with.
//!
//! Owned by the partition's shard. A retried batch that matches a cached
//! range is answered with its original offset and not written again; a gap
//! is OUT_OF_ORDER_SEQUENCE_NUMBER; an older epoch is INVALID_PRODUCER_EPOCH.
//!
//! Persistence: `producer-state.json` in the partition directory holds the
//! table as of a log offset. It is written on clean close; on open the table
//! is loaded and the log's batch headers after that offset are replayed, so
//! the table is exact after a crash too (the replay is then longer). The
//! aborted transactions are part of that file: a transaction marker is a
//! batch in the log, so the replay finds every abort after the file's
//! offset, and the list loses what falls below the log start.

use std::collections::{BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use sluice_engine::Log;
use sluice_engine::batch::{BatchHeader, Marker, marker};
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
    /// The first offset of its open transaction; none when no transaction
    /// of it is open in this partition.
    #[serde(default)]
    pub txn_first_offset: Option<i64>,
}

/// A transaction that ended with an abort marker: read_committed
/// consumers drop its records (Kafka's aborted-transaction index entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
}

/// What the producer table needs of one batch: from its header and, for
/// a control batch, its marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchFacts {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    pub transactional: bool,
    /// A control batch: it ends a transaction when it holds a marker.
    pub control: Option<Option<Marker>>,
}

impl BatchFacts {
    /// The facts of `bytes`, a whole batch whose header is `h`.
    pub fn of(h: &BatchHeader<'_>, bytes: &[u8]) -> Self {
        Self {
            producer_id: h.producer_id(),
            epoch: h.producer_epoch(),
            first_seq: h.base_sequence(),
            last_seq: h.base_sequence().wrapping_add(h.last_offset_delta()) & i32::MAX,
            transactional: h.is_transactional(),
            control: h.is_control().then(|| marker(bytes)),
        }
    }
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
    /// The open transactions: (first offset, producer id).
    open: BTreeSet<(i64, i64)>,
    /// The aborted transactions, in the order of their markers.
    aborted: VecDeque<AbortedTxn>,
    /// Offset up to which the table reflects the log.
    applied_end_offset: i64,
    /// End offset of the snapshot file as last read or written; a save with
    /// nothing new since is skipped (a shutdown of many idle partitions
    /// writes nothing for them).
    saved_end_offset: Option<i64>,
}

/// The file's format: 1 had no transactions; 2 adds each producer's open
/// transaction and the aborted ones. Both are read.
const FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    format: u32,
    end_offset: i64,
    producers: Vec<(i64, ProducerEntry)>,
    #[serde(default)]
    aborted: Vec<AbortedTxn>,
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
    fn record(&mut self, producer_id: i64, epoch: i16, range: BatchRange, end_offset: i64) {
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

    /// Records a batch appended at `base_offset..=last_offset`, whoever
    /// appended it (a produce, a transaction marker, a follower's copy, the
    /// replay when a partition opens): its sequence range, and the
    /// transaction it opens or ends.
    pub fn apply(&mut self, b: &BatchFacts, base_offset: i64, last_offset: i64) {
        let end_offset = last_offset + 1;
        match b.control {
            Some(Some(marker)) => self.end_txn(b.producer_id, b.epoch, marker, base_offset, end_offset),
            Some(None) => self.applied_end_offset = self.applied_end_offset.max(end_offset),
            None => {
                let range = BatchRange {
                    first_seq: b.first_seq,
                    last_seq: b.last_seq,
                    base_offset,
                };
                self.record(b.producer_id, b.epoch, range, end_offset);
                if b.transactional && b.producer_id >= 0 {
                    let entry = self.producers.entry(b.producer_id).or_default();
                    if entry.txn_first_offset.is_none() {
                        entry.txn_first_offset = Some(base_offset);
                        self.open.insert((base_offset, b.producer_id));
                    }
                }
            }
        }
    }

    /// A marker at `offset` ends `producer_id`'s open transaction (if any:
    /// a marker for a partition its transaction wrote nothing to ends
    /// nothing); an abort is remembered for read_committed fetches. The
    /// marker's epoch becomes the producer's (the coordinator bumps it when
    /// it aborts for a new or timed-out producer).
    fn end_txn(&mut self, producer_id: i64, epoch: i16, marker: Marker, offset: i64, end_offset: i64) {
        self.applied_end_offset = self.applied_end_offset.max(end_offset);
        let entry = self.producers.entry(producer_id).or_default();
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        let Some(first) = entry.txn_first_offset.take() else {
            return;
        };
        let was_open = self.open.remove(&(first, producer_id));
        assert!(
            was_open,
            "producer {producer_id}'s open transaction at {first} was not in the open set"
        );
        if marker == Marker::Abort {
            assert!(
                self.aborted.back().is_none_or(|a| a.last_offset < offset),
                "abort markers out of order at {offset}"
            );
            self.aborted.push_back(AbortedTxn {
                producer_id,
                first_offset: first,
                last_offset: offset,
            });
        }
    }

    /// Whether a marker of `producer_id` at `epoch` may be written: not
    /// for an epoch below the producer's (a fenced coordinator's marker).
    pub fn check_marker(&self, producer_id: i64, epoch: i16) -> Result<(), ErrorCode> {
        match self.producers.get(&producer_id) {
            Some(e) if epoch < e.epoch => Err(ErrorCode::InvalidProducerEpoch),
            _ => Ok(()),
        }
    }

    /// Every producer with its epoch, the last sequence of its newest
    /// batch (-1 when none is remembered) and the first offset of its open
    /// transaction (-1 when none), by producer id (DescribeProducers).
    pub fn active(&self) -> Vec<(i64, i16, i32, i64)> {
        let mut out: Vec<_> = self
            .producers
            .iter()
            .map(|(&id, e)| {
                let last_seq = e.batches.back().map_or(-1, |b| b.last_seq);
                (id, e.epoch, last_seq, e.txn_first_offset.unwrap_or(-1))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Whether `producer_id` has a transaction open in this partition.
    pub fn has_open_txn(&self, producer_id: i64) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|e| e.txn_first_offset.is_some())
    }

    /// The first offset of the earliest open transaction: the last stable
    /// offset is below it.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.open.first().map(|&(offset, _)| offset)
    }

    /// The open transactions: (first offset, producer id), oldest first.
    pub fn open_transactions(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.open.iter().copied()
    }

    /// The aborted transactions a read of `from..to` must tell a
    /// read_committed consumer about: those whose marker is at or after
    /// `from` and whose first record is before `to`, as (producer id,
    /// first offset).
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<(i64, i64)> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        self.aborted
            .range(start..)
            .filter(|a| a.first_offset < to)
            .map(|a| (a.producer_id, a.first_offset))
            .collect()
    }

    /// Whether the transactional batch of `producer_id` at `offset` belongs
    /// to an aborted transaction (the log cleaner removes its records).
    pub fn was_aborted(&self, producer_id: i64, offset: i64) -> bool {
        let start = self.aborted.partition_point(|a| a.last_offset < offset);
        self.aborted
            .range(start..)
            .any(|a| a.producer_id == producer_id && a.first_offset <= offset)
    }

    /// Whether the batch of `producer_id` ending at `last_offset` is the
    /// newest the table remembers of it: the log cleaner keeps it (empty
    /// if need be) so the table can be rebuilt from the log.
    pub fn is_last_batch(&self, producer_id: i64, last_offset: i64) -> bool {
        self.producers
            .get(&producer_id)
            .and_then(|e| e.batches.back())
            .is_some_and(|b| b.base_offset + i64::from(b.last_seq.wrapping_sub(b.first_seq)) == last_offset)
    }

    /// Forgets the aborted transactions whose marker is below the log
    /// start (retention removed them).
    pub fn trim_aborted(&mut self, log_start: i64) {
        while self.aborted.front().is_some_and(|a| a.last_offset < log_start) {
            self.aborted.pop_front();
        }
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
                Ok(s) if (1..=FORMAT).contains(&s.format) && s.end_offset <= log.log_end_offset() => {
                    let open = s
                        .producers
                        .iter()
                        .filter_map(|(id, e)| e.txn_first_offset.map(|first| (first, *id)))
                        .collect();
                    Self {
                        producers: s.producers.into_iter().collect(),
                        open,
                        aborted: s.aborted.into(),
                        applied_end_offset: s.end_offset,
                        saved_end_offset: Some(s.end_offset),
                    }
                }
                _ => {
                    tracing::warn!(path = %path.display(), "ignoring unreadable producer-state snapshot; replaying the log");
                    Self::default()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(e) => return Err(e),
        };
        log.for_each_batch(states.applied_end_offset, |h, bytes| {
            states.apply(&BatchFacts::of(h, bytes), h.base_offset(), h.last_offset());
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?;
        states.applied_end_offset = log.log_end_offset();
        states.trim_aborted(log.log_start_offset());
        Ok(states)
    }

    /// Writes the snapshot file (temp file, fsync, rename).
    pub fn save(&mut self, log: &Log) -> std::io::Result<()> {
        self.trim_aborted(log.log_start_offset());
        let end_offset = self.applied_end_offset.min(log.log_end_offset());
        // Nothing new since the file on disk, or nothing at all to replay.
        if self.saved_end_offset == Some(end_offset)
            || (end_offset == log.log_start_offset() && self.producers.is_empty())
        {
            return Ok(());
        }
        let snap = Snapshot {
            format: FORMAT,
            end_offset,
            producers: self.producers.iter().map(|(k, v)| (*k, v.clone())).collect(),
            aborted: self.aborted.iter().copied().collect(),
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

    fn data(pid: i64, epoch: i16, seq: i32, transactional: bool) -> BatchFacts {
        BatchFacts {
            producer_id: pid,
            epoch,
            first_seq: seq,
            last_seq: seq + 1,
            transactional,
            control: None,
        }
    }

    fn end(pid: i64, epoch: i16, m: Marker) -> BatchFacts {
        BatchFacts {
            producer_id: pid,
            epoch,
            first_seq: -1,
            last_seq: -1,
            transactional: true,
            control: Some(Some(m)),
        }
    }

    #[test]
    fn open_transactions_bound_the_stable_offset_and_aborts_are_remembered() {
        let mut s = ProducerStates::default();
        s.apply(&data(1, 0, 0, false), 0, 1);
        assert_eq!(s.first_unstable_offset(), None, "idempotent batches open nothing");
        s.apply(&data(2, 0, 0, true), 2, 3);
        s.apply(&data(3, 0, 0, true), 4, 5);
        s.apply(&data(2, 0, 2, true), 6, 7);
        assert_eq!(s.first_unstable_offset(), Some(2));
        assert_eq!(s.open_transactions().collect::<Vec<_>>(), vec![(2, 2), (4, 3)]);
        s.apply(&end(2, 0, Marker::Commit), 8, 8);
        assert_eq!(s.first_unstable_offset(), Some(4), "the commit of 2 leaves 3 open");
        s.apply(&end(3, 1, Marker::Abort), 9, 9);
        assert_eq!(s.first_unstable_offset(), None);
        assert_eq!(s.aborted_between(0, 100), vec![(3, 4)]);
        assert_eq!(s.aborted_between(10, 100), vec![], "its marker is before the read");
        assert_eq!(s.aborted_between(0, 4), vec![], "its first record is after the read");
        assert_eq!(
            s.check(3, 0, 2, 3),
            Verdict::Reject(ErrorCode::InvalidProducerEpoch),
            "the abort's epoch fences the producer's older epoch"
        );
        assert_eq!(s.check_marker(3, 0), Err(ErrorCode::InvalidProducerEpoch));
        assert_eq!(s.check_marker(3, 1), Ok(()));
        // A marker with no open transaction here ends nothing.
        s.apply(&end(2, 0, Marker::Abort), 10, 10);
        assert_eq!(s.aborted_between(0, 100), vec![(3, 4)]);
        // A new transaction of the same producer.
        s.apply(&data(3, 1, 0, true), 11, 12);
        assert_eq!(s.first_unstable_offset(), Some(11));
        s.trim_aborted(10);
        assert_eq!(s.aborted_between(0, 100), vec![], "its marker is below the log start");
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
