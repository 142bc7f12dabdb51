//! One transactional id's state and the rules that move it: what
//! InitProducerId, AddPartitionsToTxn, EndTxn, the markers and the timeout
//! do to it. Pure functions of the current state and the request, so the
//! coordinator decides every change (ids, epochs and times included)
//! before it writes the record that carries it.
//!
//! ```text
//!             AddPartitions                EndTxn(commit)
//!   Empty ─────────────────▶ Ongoing ────────────────────▶ PrepareCommit ──markers──▶ CompleteCommit
//!     ▲                        │  EndTxn(abort), timeout,                                  │
//!     │                        │  a new InitProducerId                                     │
//!     │                        ▼                                                           │
//!     │                   PrepareAbort ──markers──▶ CompleteAbort                          │
//!     │                                                   │                                │
//!     └──────────── InitProducerId (epoch + 1) ───────────┴────────────────────────────────┘
//!                   AddPartitions from a Complete state opens the next transaction
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::error_codes::ErrorCode;

/// Kafka's transaction states, with the numbers its transaction log uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
}

impl Status {
    pub fn code(self) -> i8 {
        match self {
            Status::Empty => 0,
            Status::Ongoing => 1,
            Status::PrepareCommit => 2,
            Status::PrepareAbort => 3,
            Status::CompleteCommit => 4,
            Status::CompleteAbort => 5,
            Status::Dead => 6,
        }
    }

    pub fn from_code(code: i8) -> Option<Self> {
        Some(match code {
            0 => Status::Empty,
            1 => Status::Ongoing,
            2 => Status::PrepareCommit,
            3 => Status::PrepareAbort,
            4 => Status::CompleteCommit,
            5 => Status::CompleteAbort,
            6 => Status::Dead,
            _ => return None,
        })
    }

    /// The name DescribeTransactions and ListTransactions answer.
    pub fn name(self) -> &'static str {
        match self {
            Status::Empty => "Empty",
            Status::Ongoing => "Ongoing",
            Status::PrepareCommit => "PrepareCommit",
            Status::PrepareAbort => "PrepareAbort",
            Status::CompleteCommit => "CompleteCommit",
            Status::CompleteAbort => "CompleteAbort",
            Status::Dead => "Dead",
        }
    }

    /// Markers are on their way: the transaction has ended for its
    /// producer but not yet in every partition.
    pub fn is_prepared(self) -> bool {
        matches!(self, Status::PrepareCommit | Status::PrepareAbort)
    }
}

/// A partition of a transaction: topic and partition index.
pub type TxnPartition = (Arc<str>, i32);

/// One transactional id as its coordinator holds it, and as each record
/// of `__transaction_state` carries it whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub id: Arc<str>,
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout_ms: i32,
    pub status: Status,
    /// The partitions of the open (or ending) transaction.
    pub partitions: BTreeSet<TxnPartition>,
    /// When the open transaction began; -1 when none is open.
    pub start_ms: i64,
    pub updated_ms: i64,
}

/// The last epoch a producer id may have: at it, the next epoch comes
/// with a new producer id.
pub const MAX_EPOCH: i16 = i16::MAX - 1;

/// What InitProducerId does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Init {
    /// Write this state, then answer its producer id and epoch.
    Write(TxnMeta),
    /// A transaction is open: abort it first with this state (its epoch
    /// bumped, which fences the producer that opened it), send its markers
    /// and complete it; the client is told CONCURRENT_TRANSACTIONS and asks
    /// again.
    AbortFirst(TxnMeta),
}

/// Whether InitProducerId for `current` needs a fresh producer id from the
/// controller: a new transactional id, or an epoch used up.
pub fn needs_new_producer_id(current: Option<&TxnMeta>) -> bool {
    current.is_none_or(|m| m.epoch >= MAX_EPOCH)
}

/// InitProducerId for transactional id `id`. `fresh` is the new producer
/// id when [`needs_new_producer_id`] says one is needed; `expected` the
/// producer id and epoch the client already has (KIP-360, v3+; -1 for
/// none).
pub fn init(
    current: Option<&TxnMeta>,
    id: &Arc<str>,
    timeout_ms: i32,
    fresh: Option<i64>,
    expected: (i64, i16),
    now_ms: i64,
) -> Result<Init, ErrorCode> {
    let Some(m) = current else {
        let producer_id = fresh.ok_or(ErrorCode::CoordinatorNotAvailable)?;
        return Ok(Init::Write(TxnMeta {
            id: id.clone(),
            producer_id,
            epoch: 0,
            timeout_ms,
            status: Status::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            updated_ms: now_ms,
        }));
    };
    if expected.0 >= 0 && (expected.0 != m.producer_id || expected.1 != m.epoch) {
        return Err(ErrorCode::ProducerFenced);
    }
    match m.status {
        Status::PrepareCommit | Status::PrepareAbort => Err(ErrorCode::ConcurrentTransactions),
        Status::Ongoing => Ok(Init::AbortFirst(TxnMeta {
            epoch: bump(m.epoch),
            status: Status::PrepareAbort,
            updated_ms: now_ms,
            ..m.clone()
        })),
        Status::Empty | Status::CompleteCommit | Status::CompleteAbort | Status::Dead => {
            let (producer_id, epoch) = if m.epoch >= MAX_EPOCH {
                (fresh.ok_or(ErrorCode::CoordinatorNotAvailable)?, 0)
            } else {
                (m.producer_id, m.epoch + 1)
            };
            Ok(Init::Write(TxnMeta {
                producer_id,
                epoch,
                timeout_ms,
                status: Status::Empty,
                partitions: BTreeSet::new(),
                start_ms: -1,
                updated_ms: now_ms,
                ..m.clone()
            }))
        }
    }
}

/// The epoch after `epoch`, staying at [`MAX_EPOCH`] once there (a fence
/// at the last epoch; the next InitProducerId takes a new producer id).
fn bump(epoch: i16) -> i16 {
    (epoch + 1).min(MAX_EPOCH)
}

/// The checks every request of the producer passes: its id, then its
/// epoch (an older epoch is a zombie: PRODUCER_FENCED).
pub fn check_producer(m: &TxnMeta, producer_id: i64, epoch: i16) -> Result<(), ErrorCode> {
    if producer_id != m.producer_id {
        return Err(ErrorCode::InvalidProducerIdMapping);
    }
    if epoch < m.epoch {
        return Err(ErrorCode::ProducerFenced);
    }
    if epoch > m.epoch {
        return Err(ErrorCode::InvalidProducerEpoch);
    }
    Ok(())
}

/// AddPartitionsToTxn (and AddOffsetsToTxn, whose partition is the
/// group's offsets partition): the state to write, or `None` when every
/// partition is in the open transaction already.
pub fn add_partitions(
    m: &TxnMeta,
    producer_id: i64,
    epoch: i16,
    partitions: &[TxnPartition],
    now_ms: i64,
) -> Result<Option<TxnMeta>, ErrorCode> {
    check_producer(m, producer_id, epoch)?;
    match m.status {
        Status::PrepareCommit | Status::PrepareAbort => Err(ErrorCode::ConcurrentTransactions),
        Status::Dead => Err(ErrorCode::InvalidTxnState),
        Status::Ongoing if partitions.iter().all(|p| m.partitions.contains(p)) => Ok(None),
        Status::Ongoing | Status::Empty | Status::CompleteCommit | Status::CompleteAbort => {
            let opening = m.status != Status::Ongoing;
            let mut next = m.clone();
            if opening {
                next.partitions.clear();
                next.start_ms = now_ms;
            }
            next.partitions.extend(partitions.iter().cloned());
            next.status = Status::Ongoing;
            next.updated_ms = now_ms;
            Ok(Some(next))
        }
    }
}

/// Whether a partition leader may take the producer's first batch of a
/// transaction in `partition` (KIP-890's verification): the transaction
/// is open, at this epoch, and holds the partition.
pub fn verify(m: &TxnMeta, producer_id: i64, epoch: i16, partition: &TxnPartition) -> Result<(), ErrorCode> {
    check_producer(m, producer_id, epoch)?;
    if m.status != Status::Ongoing || !m.partitions.contains(partition) {
        return Err(ErrorCode::InvalidTxnState);
    }
    Ok(())
}

/// What EndTxn does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The transaction already ended this way (a retried EndTxn).
    Done,
    /// Write this prepared state, answer, then send the markers.
    Prepare(TxnMeta),
}

pub fn end(m: &TxnMeta, producer_id: i64, epoch: i16, commit: bool, now_ms: i64) -> Result<End, ErrorCode> {
    check_producer(m, producer_id, epoch)?;
    match (m.status, commit) {
        (Status::Ongoing, _) => Ok(End::Prepare(TxnMeta {
            status: if commit {
                Status::PrepareCommit
            } else {
                Status::PrepareAbort
            },
            updated_ms: now_ms,
            ..m.clone()
        })),
        (Status::CompleteCommit, true) | (Status::CompleteAbort, false) => Ok(End::Done),
        (Status::PrepareCommit, true) | (Status::PrepareAbort, false) => Err(ErrorCode::ConcurrentTransactions),
        _ => Err(ErrorCode::InvalidTxnState),
    }
}

/// The state once every marker of a prepared transaction is written.
pub fn complete(m: &TxnMeta, now_ms: i64) -> TxnMeta {
    assert!(m.status.is_prepared(), "completing {} in state {:?}", m.id, m.status);
    TxnMeta {
        status: if m.status == Status::PrepareCommit {
            Status::CompleteCommit
        } else {
            Status::CompleteAbort
        },
        partitions: BTreeSet::new(),
        start_ms: -1,
        updated_ms: now_ms,
        ..m.clone()
    }
}

/// The abort of a transaction open past its timeout: prepared with the
/// epoch bumped, so the producer that left it is fenced.
pub fn abort_timed_out(m: &TxnMeta, now_ms: i64) -> Option<TxnMeta> {
    (m.status == Status::Ongoing && now_ms.saturating_sub(m.start_ms) > i64::from(m.timeout_ms)).then(|| TxnMeta {
        epoch: bump(m.epoch),
        status: Status::PrepareAbort,
        updated_ms: now_ms,
        ..m.clone()
    })
}

/// Whether an idle transactional id has expired
/// (`transactional.id.expiration.ms` since its last change, no
/// transaction open or ending).
pub fn expired(m: &TxnMeta, now_ms: i64, expiration_ms: i64) -> bool {
    matches!(m.status, Status::Empty | Status::CompleteCommit | Status::CompleteAbort)
        && now_ms.saturating_sub(m.updated_ms) > expiration_ms
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn id() -> Arc<str> {
        "tx".into()
    }

    fn written(i: Init) -> TxnMeta {
        match i {
            Init::Write(m) => m,
            other => panic!("expected a write, got {other:?}"),
        }
    }

    fn part(p: i32) -> TxnPartition {
        ("t".into(), p)
    }

    #[test]
    fn a_transaction_runs_from_init_to_commit_and_the_next_init_bumps_the_epoch() {
        assert!(needs_new_producer_id(None));
        assert_eq!(
            init(None, &id(), 1000, None, (-1, -1), 0),
            Err(ErrorCode::CoordinatorNotAvailable)
        );
        let m = written(init(None, &id(), 1000, Some(42), (-1, -1), 5).unwrap());
        assert_eq!((m.producer_id, m.epoch, m.status), (42, 0, Status::Empty));
        let m1 = add_partitions(&m, 42, 0, &[part(0), part(1)], 10).unwrap().unwrap();
        assert_eq!((m1.status, m1.start_ms, m1.partitions.len()), (Status::Ongoing, 10, 2));
        assert_eq!(add_partitions(&m1, 42, 0, &[part(1)], 11), Ok(None), "already in it");
        assert_eq!(verify(&m1, 42, 0, &part(1)), Ok(()));
        assert_eq!(verify(&m1, 42, 0, &part(2)), Err(ErrorCode::InvalidTxnState));
        let End::Prepare(p) = end(&m1, 42, 0, true, 20).unwrap() else {
            panic!("an open transaction is prepared");
        };
        assert_eq!(p.status, Status::PrepareCommit);
        assert_eq!(
            add_partitions(&p, 42, 0, &[part(3)], 21),
            Err(ErrorCode::ConcurrentTransactions)
        );
        assert_eq!(end(&p, 42, 0, true, 21), Err(ErrorCode::ConcurrentTransactions));
        assert_eq!(end(&p, 42, 0, false, 21), Err(ErrorCode::InvalidTxnState));
        let c = complete(&p, 30);
        assert_eq!(
            (c.status, c.partitions.len(), c.start_ms),
            (Status::CompleteCommit, 0, -1)
        );
        assert_eq!(end(&c, 42, 0, true, 31), Ok(End::Done), "a retried commit");
        assert_eq!(end(&c, 42, 0, false, 31), Err(ErrorCode::InvalidTxnState));
        // The next transaction opens from the completed state.
        let n = add_partitions(&c, 42, 0, &[part(5)], 40).unwrap().unwrap();
        assert_eq!((n.status, n.start_ms), (Status::Ongoing, 40));
        assert_eq!(n.partitions.iter().cloned().collect::<Vec<_>>(), vec![part(5)]);
        // A new producer with the id: the open transaction is aborted
        // first, with the epoch bumped.
        let Init::AbortFirst(a) = init(Some(&n), &id(), 1000, None, (-1, -1), 50).unwrap() else {
            panic!("an open transaction is aborted first");
        };
        assert_eq!((a.status, a.epoch), (Status::PrepareAbort, 1));
        assert_eq!(check_producer(&a, 42, 0), Err(ErrorCode::ProducerFenced), "the zombie");
        assert_eq!(
            init(Some(&a), &id(), 1000, None, (-1, -1), 51),
            Err(ErrorCode::ConcurrentTransactions)
        );
        let done = complete(&a, 60);
        let again = written(init(Some(&done), &id(), 1000, None, (-1, -1), 61).unwrap());
        assert_eq!((again.producer_id, again.epoch, again.status), (42, 2, Status::Empty));
    }

    #[test]
    fn producers_are_checked_by_id_then_epoch() {
        let m = written(init(None, &id(), 1000, Some(7), (-1, -1), 0).unwrap());
        assert_eq!(
            add_partitions(&m, 8, 0, &[part(0)], 1),
            Err(ErrorCode::InvalidProducerIdMapping)
        );
        assert_eq!(
            add_partitions(&m, 7, 1, &[part(0)], 1),
            Err(ErrorCode::InvalidProducerEpoch)
        );
        let bumped = written(init(Some(&m), &id(), 1000, None, (7, 0), 2).unwrap());
        assert_eq!(
            add_partitions(&bumped, 7, 0, &[part(0)], 3),
            Err(ErrorCode::ProducerFenced)
        );
        assert_eq!(
            init(Some(&bumped), &id(), 1000, None, (7, 0), 3),
            Err(ErrorCode::ProducerFenced),
            "a client with an older epoch asking for a bump"
        );
        assert_eq!(
            end(&bumped, 7, 1, true, 4),
            Err(ErrorCode::InvalidTxnState),
            "nothing is open"
        );
    }

    #[test]
    fn an_exhausted_epoch_takes_a_new_producer_id() {
        let mut m = written(init(None, &id(), 1000, Some(7), (-1, -1), 0).unwrap());
        m.epoch = MAX_EPOCH;
        assert!(needs_new_producer_id(Some(&m)));
        let n = written(init(Some(&m), &id(), 1000, Some(9), (-1, -1), 1).unwrap());
        assert_eq!((n.producer_id, n.epoch), (9, 0));
    }

    #[test]
    fn timeouts_abort_with_a_bumped_epoch_and_idle_ids_expire() {
        let m = written(init(None, &id(), 1000, Some(7), (-1, -1), 0).unwrap());
        let o = add_partitions(&m, 7, 0, &[part(0)], 100).unwrap().unwrap();
        assert_eq!(abort_timed_out(&o, 1100), None, "at the timeout, not past it");
        let a = abort_timed_out(&o, 1101).unwrap();
        assert_eq!((a.status, a.epoch), (Status::PrepareAbort, 1));
        assert!(!expired(&o, i64::MAX, 10), "an open transaction never expires");
        let c = complete(&a, 2000);
        assert!(!expired(&c, 2010, 10));
        assert!(expired(&c, 2011, 10));
    }
}
