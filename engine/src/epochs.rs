//! The leader-epoch history of one partition log: for each leader epoch
//! that wrote to the log, the offset of its first batch. Replication asks it
//! where an epoch ended (OffsetForLeaderEpoch, the diverging epoch of a
//! follower fetch) and a follower truncates by it.
//!
//! File `leader-epoch-checkpoint` in the partition directory: a line
//! `sluice-epochs 1`, then one `epoch start_offset` line per entry, epochs
//! and start offsets strictly increasing. It is replaced atomically (temp
//! file, fdatasync, rename, directory sync) before the first batch of a
//! new epoch is queued, and after every truncation. On open, entries at or
//! past the log end (an epoch whose first batch never reached the disk) are
//! dropped; a missing or unreadable file, or one older than the newest
//! batch, is rebuilt from the batch headers.

use std::fs;
use std::io;
use std::path::Path;

use crate::durable_file::{Replace, replace_file};

/// File name of the epoch history in a partition directory.
pub const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";
const HEADER: &str = "sluice-epochs 1";

/// Epoch → first offset entries, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EpochHistory {
    entries: Vec<(i32, i64)>,
}

/// Where an epoch ends, as OffsetForLeaderEpoch answers it: the largest
/// epoch at or below the asked one, and the offset after its last batch
/// (the next epoch's start, or the log end for the newest). `(-1, -1)` when
/// the log holds no epoch at or below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    pub epoch: i32,
    pub end_offset: i64,
}

impl EpochHistory {
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    /// The newest epoch, -1 when the log holds no batch.
    pub fn latest(&self) -> i32 {
        self.entries.last().map_or(-1, |e| e.0)
    }

    /// Where the newest epoch began.
    pub fn latest_start(&self) -> Option<i64> {
        self.entries.last().map(|e| e.1)
    }

    /// Whether a batch of `epoch` may follow the log's batches (epochs never
    /// go back).
    pub fn accepts(&self, epoch: i32) -> bool {
        epoch >= self.latest()
    }

    /// Notes a batch of `epoch` at `offset`. Returns whether the history
    /// changed (a new epoch): the caller persists it before the batch is
    /// written. The caller checked [`EpochHistory::accepts`].
    pub fn note(&mut self, epoch: i32, offset: i64) -> bool {
        if epoch < 0 {
            return false;
        }
        match self.entries.last() {
            Some(&(e, start)) if e >= epoch => {
                assert!(
                    e == epoch,
                    "batch of epoch {epoch} at {offset} after epoch {e} (started at {start})"
                );
                false
            }
            Some(&(_, start)) => {
                assert!(offset > start, "epoch {epoch} starts at {offset}, not after {start}");
                self.entries.push((epoch, offset));
                true
            }
            None => {
                self.entries.push((epoch, offset));
                true
            }
        }
    }

    /// Forgets epochs that start at or after `end` (the log was truncated
    /// there). Returns whether anything changed.
    pub fn truncate_end(&mut self, end: i64) -> bool {
        let keep = self.entries.partition_point(|e| e.1 < end);
        let changed = keep != self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log now starts at `start`: the epoch that held `start` begins
    /// there, older ones go.
    pub fn truncate_start(&mut self, start: i64) {
        let holding = self.entries.partition_point(|e| e.1 <= start);
        if holding > 0 {
            self.entries.drain(..holding - 1);
            self.entries[0].1 = start;
        }
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Where `epoch` ends in a log whose end is `log_end`: the largest
    /// epoch at or below it and the start of the next one (or `log_end`).
    /// An epoch older than every entry ends where the oldest entry starts
    /// (a follower's tail from before this log's history diverges there);
    /// an empty history knows no epoch: `(-1, -1)`.
    pub fn end_of(&self, epoch: i32, log_end: i64) -> EpochEnd {
        let i = self.entries.partition_point(|e| e.0 <= epoch);
        if i == 0 {
            return match self.entries.first() {
                Some(&(_, start)) if epoch >= 0 => EpochEnd {
                    epoch,
                    end_offset: start,
                },
                _ => EpochEnd {
                    epoch: -1,
                    end_offset: -1,
                },
            };
        }
        let found = self.entries[i - 1].0;
        let end_offset = self.entries.get(i).map_or(log_end, |next| next.1);
        EpochEnd {
            epoch: found,
            end_offset,
        }
    }

    /// Reads the file; `None` when it is missing or unreadable (the caller
    /// rebuilds from the log).
    pub fn load(dir: &Path) -> io::Result<Option<Self>> {
        let text = match fs::read_to_string(dir.join(LEADER_EPOCH_FILE)) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            return Ok(None);
        }
        let mut out = Self::default();
        for line in lines {
            let mut it = line.split_whitespace();
            let (Some(e), Some(o), None) = (it.next(), it.next(), it.next()) else {
                return Ok(None);
            };
            let (Ok(e), Ok(o)) = (e.parse::<i32>(), o.parse::<i64>()) else {
                return Ok(None);
            };
            if e < 0 || o < 0 || out.entries.last().is_some_and(|&(le, lo)| e <= le || o <= lo) {
                return Ok(None);
            }
            out.entries.push((e, o));
        }
        Ok(Some(out))
    }

    /// Replaces the file atomically.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        let path = dir.join(LEADER_EPOCH_FILE);
        let mut text = String::with_capacity(16 + self.entries.len() * 24);
        text.push_str(HEADER);
        text.push('\n');
        for (e, o) in &self.entries {
            text.push_str(&format!("{e} {o}\n"));
        }
        replace_file(&path, text.as_bytes(), Replace::Durable)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn history(entries: &[(i32, i64)]) -> EpochHistory {
        let mut h = EpochHistory::default();
        for &(e, o) in entries {
            h.note(e, o);
        }
        h
    }

    #[test]
    fn end_of_answers_like_offset_for_leader_epoch() {
        let h = history(&[(1, 0), (3, 10), (4, 25)]);
        // Older than the history: it ends where the history starts.
        assert_eq!(
            h.end_of(0, 40),
            EpochEnd {
                epoch: 0,
                end_offset: 0
            }
        );
        let later = history(&[(5, 12)]);
        assert_eq!(
            later.end_of(2, 40),
            EpochEnd {
                epoch: 2,
                end_offset: 12
            }
        );
        assert_eq!(
            history(&[]).end_of(2, 40),
            EpochEnd {
                epoch: -1,
                end_offset: -1
            }
        );
        assert_eq!(
            h.end_of(1, 40),
            EpochEnd {
                epoch: 1,
                end_offset: 10
            }
        );
        // Epoch 2 never wrote: the answer is the largest epoch below it.
        assert_eq!(
            h.end_of(2, 40),
            EpochEnd {
                epoch: 1,
                end_offset: 10
            }
        );
        assert_eq!(
            h.end_of(3, 40),
            EpochEnd {
                epoch: 3,
                end_offset: 25
            }
        );
        assert_eq!(
            h.end_of(4, 40),
            EpochEnd {
                epoch: 4,
                end_offset: 40
            }
        );
        assert_eq!(
            h.end_of(9, 40),
            EpochEnd {
                epoch: 4,
                end_offset: 40
            }
        );
    }

    #[test]
    fn truncation_from_either_end() {
        let mut h = history(&[(1, 0), (3, 10), (4, 25)]);
        assert!(!h.truncate_end(30));
        assert!(h.truncate_end(25));
        assert_eq!(h.entries(), &[(1, 0), (3, 10)]);
        assert!(h.truncate_end(5));
        assert_eq!(h.entries(), &[(1, 0)]);
        let mut h = history(&[(1, 0), (3, 10), (4, 25)]);
        h.truncate_start(12);
        assert_eq!(h.entries(), &[(3, 12), (4, 25)]);
        h.truncate_start(25);
        assert_eq!(h.entries(), &[(4, 25)]);
    }

    #[test]
    fn the_file_round_trips_and_bad_files_read_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(EpochHistory::load(dir.path()).unwrap(), None);
        let h = history(&[(0, 0), (2, 7)]);
        h.save(dir.path()).unwrap();
        assert_eq!(EpochHistory::load(dir.path()).unwrap(), Some(h));
        fs::write(dir.path().join(LEADER_EPOCH_FILE), "sluice-epochs 1\n2 7\n1 9\n").unwrap();
        assert_eq!(EpochHistory::load(dir.path()).unwrap(), None);
        fs::write(dir.path().join(LEADER_EPOCH_FILE), "garbage").unwrap();
        assert_eq!(EpochHistory::load(dir.path()).unwrap(), None);
    }

    #[test]
    #[should_panic(expected = "after epoch")]
    fn an_older_epoch_after_a_newer_one_is_a_bug() {
        let mut h = history(&[(3, 0)]);
        h.note(2, 5);
    }
}
