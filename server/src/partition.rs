//! One partition replica on the shard that owns it: its log, its
//! idempotent-producer table, the append rules Produce relies on, and its
//! place in replication ([`ReplicaState`]): leader or follower, the leader
//! epoch, the ISR, and on a leader what each follower has fetched, from
//! which the high watermark follows.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::sync::Arc;

use bytes::BytesMut;
use sluice_engine::{Log, batch};

use crate::error_codes::{self, ErrorCode};
use crate::image::PartitionState;
use crate::producer_state::{BatchFacts, ProducerStates, Verdict};
use crate::protocol::produce::split_batches;

/// One partition, owned by the shard the placement table names. Lives in
/// that shard's partition table and is touched only on its thread.
#[derive(Debug)]
pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    pub log: Log,
    pub producers: RefCell<ProducerStates>,
    /// When its shard last read or appended to it (`Shard::touch`): the
    /// least recently used partitions release their files first.
    pub(crate) last_used: Cell<u64>,
    pub replica: RefCell<ReplicaState>,
    /// What producers appended, for `/metrics`.
    pub traffic: crate::base::counters::Traffic,
    /// What the cleaner last found and did here, for `/metrics`.
    pub cleaning: crate::base::counters::Cleaning,
}

/// What this broker is for a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower {
        leader: i32,
    },
    /// No leader is known (or the partition was just opened).
    Offline,
}

/// A follower as its leader sees it.
#[derive(Debug, Clone, Copy)]
pub struct FollowerState {
    /// The follower's log end, from its last fetch offset; -1 before its
    /// first fetch in this leader epoch.
    pub log_end: i64,
    /// When it last had everything the leader had (Kafka's
    /// lastCaughtUpTime), ms.
    pub caught_up_ms: u64,
    /// The leader's log end and the time at the follower's last fetch.
    pub last_fetch_leader_end: i64,
    pub last_fetch_ms: u64,
}

/// A partition's replication state on this broker, from the metadata image
/// and, on a leader, from its followers' fetches.
#[derive(Debug, Clone)]
pub struct ReplicaState {
    pub me: i32,
    pub role: Role,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// The effective `min.insync.replicas`: the topic's (or broker's)
    /// setting, at most the replica count (`meta::effective_min_isr`).
    pub min_isr: usize,
    /// Leader: its log end when it took over (the new epoch's start).
    pub epoch_start: i64,
    pub followers: HashMap<i32, FollowerState>,
    /// An ISR change sent to the controller and not seen in the image yet.
    pub pending_isr: Option<Vec<i32>>,
    /// After a refused ISR change, no other is asked before this time (a
    /// fenced follower that still fetches would otherwise be proposed on
    /// every fetch).
    pub isr_retry_at: Option<std::time::Instant>,
}

/// What an append waits for before it is answered: its records written
/// or synced (`durability`), then, for acks=all on a replicated partition,
/// the ISR (`isr`: the append's leader epoch and the deadline).
#[derive(Debug, Clone, Copy)]
pub struct AckWait {
    pub end_offset: i64,
    pub durability: sluice_engine::Durability,
    pub isr: Option<(i32, std::time::Instant)>,
}

/// Where a Produce request's batches come from, for the transaction
/// checks of [`Partition::append_records`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Txn {
    /// A producer without a transactional id: transactional batches are
    /// refused (nothing would ever end the transaction they open).
    None,
    /// A transactional producer. Its transactional batches are taken when
    /// its transaction is open in this partition already, or when its
    /// coordinator has `verified` that the transaction holds the
    /// partition (KIP-890: a late batch of an ended transaction must not
    /// open one that never ends).
    Member { verified: bool },
}

/// What applying a new partition state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    None,
    BecameLeader,
    BecameFollower {
        leader: i32,
    },
    /// Same role, but the leader or its epoch changed under a follower.
    NewLeader {
        leader: i32,
    },
    WentOffline,
}

impl ReplicaState {
    fn new(me: i32) -> Self {
        Self {
            me,
            role: Role::Offline,
            leader_epoch: -1,
            partition_epoch: -1,
            replicas: Vec::new(),
            isr: Vec::new(),
            min_isr: 1,
            epoch_start: 0,
            followers: HashMap::new(),
            pending_isr: None,
            isr_retry_at: None,
        }
    }

    /// Whether an ISR change may be asked now.
    pub fn may_ask(&self) -> bool {
        self.pending_isr.is_none() && self.isr_retry_at.is_none_or(|t| std::time::Instant::now() >= t)
    }

    /// The ISR the high watermark waits for: the committed one plus the
    /// replicas being added (Kafka's maximal ISR).
    pub fn maximal_isr(&self) -> impl Iterator<Item = i32> + '_ {
        let extra = self.pending_isr.iter().flatten().filter(|r| !self.isr.contains(r));
        self.isr.iter().chain(extra).copied()
    }

    /// How far the leader's high watermark may go: the lowest log end of
    /// the other members of the maximal ISR (unlimited when there are
    /// none), or no further than `hw` while the ISR is below
    /// `min.insync.replicas`.
    pub fn hw_limit(&self, hw: i64) -> i64 {
        if self.isr.len() < self.min_isr {
            return hw;
        }
        self.maximal_isr()
            .filter(|&r| r != self.me)
            .map(|r| self.followers.get(&r).map_or(-1, |f| f.log_end))
            .min()
            .unwrap_or(i64::MAX)
    }
}

/// Offsets a produce to one partition got: the first batch's base offset
/// (a duplicate's original one) and the end offset to wait for (0 when
/// there is nothing to wait for).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: i64,
    pub end_offset: i64,
}

/// Why a produce to one partition was refused, with Kafka's error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub code: ErrorCode,
    pub message: String,
}

impl Refused {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl Partition {
    pub fn new(topic: Arc<str>, index: i32, log: Log, producers: ProducerStates, last_used: u64) -> Self {
        Self {
            topic,
            index,
            log,
            producers: RefCell::new(producers),
            last_used: Cell::new(last_used),
            replica: RefCell::new(ReplicaState::new(-1)),
            traffic: Default::default(),
            cleaning: Default::default(),
        }
    }

    pub fn leader_epoch(&self) -> i32 {
        self.replica.borrow().leader_epoch
    }

    pub fn is_leader(&self) -> bool {
        self.replica.borrow().role == Role::Leader
    }

    /// Whether the high watermark has reached the current epoch's start: a
    /// new leader's may be below what the old one announced until its
    /// followers catch up.
    pub fn epoch_settled(&self) -> bool {
        self.log.high_watermark() >= self.replica.borrow().epoch_start
    }

    /// What must hold of a state this replica takes (see
    /// [`Partition::apply_state`]); a break is a bug.
    fn check_incoming(&self, state: &PartitionState) {
        if let Err(e) = state.check() {
            panic!(
                "{}-{}: a broken partition state reached the replica: {e}: {state:?}",
                self.topic, self.index
            );
        }
        let epoch = self.replica.borrow().leader_epoch;
        assert!(
            state.leader_epoch >= epoch,
            "{}-{}: leader epoch would go back from {epoch} to {}",
            self.topic,
            self.index,
            state.leader_epoch
        );
    }

    /// Applies the partition's state from a new metadata image. A new
    /// leader epoch starts at the log end; a follower forgets nothing here
    /// (its fetcher truncates by epoch). Waiters on the log are woken so
    /// that waits for the high watermark see the change.
    ///
    /// Panics on a state that breaks the image's rules (ISR within the
    /// replicas, leader in the ISR, eligible replicas outside it) or whose
    /// leader epoch is below the one this replica has: the image refuses
    /// the first and shards install snapshots in order, so either is a bug.
    pub fn apply_state(&self, state: &PartitionState, me: i32, min_isr: usize, now_ms: u64) -> RoleChange {
        self.check_incoming(state);
        let mut r = self.replica.borrow_mut();
        r.me = me;
        r.min_isr = crate::meta::effective_min_isr(min_isr, state.replicas.len());
        let before = (r.role, r.leader_epoch);
        let role = if state.leader == me {
            Role::Leader
        } else if state.leader >= 0 {
            Role::Follower { leader: state.leader }
        } else {
            Role::Offline
        };
        if state.partition_epoch > r.partition_epoch || state.leader_epoch > r.leader_epoch {
            r.pending_isr = None;
        }
        r.replicas = state.replicas.clone();
        r.isr = state.isr.clone();
        r.partition_epoch = state.partition_epoch;
        r.leader_epoch = state.leader_epoch;
        r.role = role;
        let change = match (before, role) {
            ((Role::Leader, e), Role::Leader) if e == state.leader_epoch => RoleChange::None,
            (_, Role::Leader) => {
                r.epoch_start = self.log.next_offset();
                // Every follower starts this epoch unknown; those in the
                // ISR get a full lag period to show up.
                r.followers = state
                    .replicas
                    .iter()
                    .filter(|&&b| b != me)
                    .map(|&b| {
                        (
                            b,
                            FollowerState {
                                log_end: -1,
                                caught_up_ms: now_ms,
                                last_fetch_leader_end: -1,
                                last_fetch_ms: 0,
                            },
                        )
                    })
                    .collect();
                RoleChange::BecameLeader
            }
            ((Role::Follower { leader: l }, e), Role::Follower { leader })
                if l == leader && e == state.leader_epoch =>
            {
                RoleChange::None
            }
            ((Role::Follower { .. }, _), Role::Follower { leader }) => RoleChange::NewLeader { leader },
            (_, Role::Follower { leader }) => RoleChange::BecameFollower { leader },
            ((Role::Offline, _), Role::Offline) => RoleChange::None,
            (_, Role::Offline) => RoleChange::WentOffline,
        };
        if role != Role::Leader {
            r.followers.clear();
            r.pending_isr = None;
        }
        drop(r);
        self.refresh_hw();
        if change != RoleChange::None {
            self.log.wake_all();
        }
        change
    }

    /// Gives the log the high-watermark limit this replica's state allows
    /// (on a leader, [`ReplicaState::hw_limit`]; a follower's comes from
    /// its leader's answers and stays where it is).
    pub fn refresh_hw(&self) {
        let hw = self.log.high_watermark();
        let limit = {
            let r = self.replica.borrow();
            if r.role == Role::Leader { r.hw_limit(hw) } else { hw }
        };
        self.log.set_hw_limit(limit);
    }

    /// What an append ending at `end_offset` at leader `epoch` waits for
    /// under `acks` (`None`: acks=0, or nothing appended). acks=all syncs
    /// on a partition with one replica, or everywhere with
    /// `fsync_before_ack`, and asks for the sync now, so that the
    /// partitions of one request sync together; it waits for the ISR when
    /// `isr_wait` (only a test switch turns that off).
    pub fn ack_wait(
        &self,
        acks: i16,
        end_offset: i64,
        epoch: i32,
        deadline: std::time::Instant,
        fsync_before_ack: bool,
        isr_wait: bool,
    ) -> Option<AckWait> {
        use sluice_engine::Durability;
        let replicated = self.replica.borrow().replicas.len() > 1;
        let durability = match acks {
            -1 if !replicated || fsync_before_ack => Durability::Synced,
            -1 | 1 => self.log.default_durability(),
            _ => return None,
        };
        if end_offset <= 0 {
            return None;
        }
        if durability == Durability::Synced {
            self.log.want_synced(end_offset);
        }
        Some(AckWait {
            end_offset,
            durability,
            isr: (acks == -1 && replicated && isr_wait).then_some((epoch, deadline)),
        })
    }

    /// Waits for what [`Partition::ack_wait`] said.
    pub async fn acked(&self, w: AckWait) -> Result<(), Refused> {
        self.log
            .wait(w.end_offset, w.durability)
            .await
            .map_err(|e| Refused::new(error_codes::for_log_error(&e), e.to_string()))?;
        match w.isr {
            Some((epoch, deadline)) => self.wait_replicated(w.end_offset, epoch, deadline).await,
            None => Ok(()),
        }
    }

    /// The last stable offset: the high watermark, or the first offset of
    /// the earliest open transaction when that is lower. read_committed
    /// consumers read below it.
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.log.high_watermark();
        self.producers
            .borrow()
            .first_unstable_offset()
            .map_or(hw, |first| first.min(hw))
    }

    /// Leader: writes a transaction marker of `producer_id` (from its
    /// transaction coordinator, WriteTxnMarkers), ending the producer's
    /// open transaction here. A marker below the producer's epoch is
    /// refused (INVALID_PRODUCER_EPOCH); waiting for the ISR is the
    /// caller's.
    pub fn append_marker(
        &self,
        producer_id: i64,
        epoch: i16,
        marker: batch::Marker,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<Appended, Refused> {
        self.producers
            .borrow()
            .check_marker(producer_id, epoch)
            .map_err(|code| Refused::new(code, format!("marker of producer {producer_id} at epoch {epoch}")))?;
        let b = batch::build_marker(marker, producer_id, epoch, coordinator_epoch, now_ms);
        let header =
            batch::BatchHeader::parse(&b).map_err(|e| Refused::new(ErrorCode::CorruptMessage, e.to_string()))?;
        let facts = BatchFacts::of(&header, &b);
        let info = self
            .log
            .append(b, self.leader_epoch().max(0))
            .map_err(|e| Refused::new(error_codes::for_log_error(&e), e.to_string()))?;
        self.producers
            .borrow_mut()
            .apply(&facts, info.base_offset, info.last_offset);
        Ok(Appended {
            base_offset: info.base_offset,
            end_offset: info.last_offset + 1,
        })
    }

    /// A follower fetched from `fetch_offset` (its log end): notes it,
    /// moves the high watermark, and returns the ISR to ask the
    /// controller for when the follower has caught up and is not in it.
    pub fn follower_fetched(&self, follower: i32, fetch_offset: i64, now_ms: u64) -> Option<Vec<i32>> {
        let mut r = self.replica.borrow_mut();
        if r.role != Role::Leader {
            return None;
        }
        let leader_end = self.log.log_end_offset();
        let f = r.followers.get_mut(&follower)?;
        f.log_end = fetch_offset.min(leader_end);
        if fetch_offset >= leader_end {
            f.caught_up_ms = now_ms;
        } else if fetch_offset >= f.last_fetch_leader_end && f.last_fetch_leader_end >= 0 {
            f.caught_up_ms = f.caught_up_ms.max(f.last_fetch_ms);
        }
        f.last_fetch_leader_end = leader_end;
        f.last_fetch_ms = now_ms;
        let log_end = f.log_end;
        drop(r);
        self.refresh_hw();
        let r = self.replica.borrow();
        let hw = self.log.high_watermark();
        let joins = !r.isr.contains(&follower) && r.may_ask() && log_end >= hw && log_end >= r.epoch_start;
        joins.then(|| {
            let mut isr = r.isr.clone();
            isr.push(follower);
            isr
        })
    }

    /// Whether acks=all may append now: the ISR is at least the effective
    /// `min.insync.replicas` (NOT_ENOUGH_REPLICAS otherwise).
    pub fn check_min_isr(&self) -> Result<(), Refused> {
        let r = self.replica.borrow();
        if r.isr.len() < r.min_isr {
            return Err(Refused::new(
                ErrorCode::NotEnoughReplicas,
                format!(
                    "{}-{} has {} in-sync replicas {:?}, below its effective min.insync.replicas {}",
                    self.topic,
                    self.index,
                    r.isr.len(),
                    r.isr,
                    r.min_isr
                ),
            ));
        }
        Ok(())
    }

    /// Waits until the high watermark reaches `end` (every in-sync replica
    /// has the batches below it), woken by the log's notifications: the
    /// follower fetches that move the high watermark, role changes. Fails
    /// with NOT_LEADER_OR_FOLLOWER when this broker stops leading in
    /// `epoch`, NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR shrank below
    /// `min.insync.replicas` meanwhile, REQUEST_TIMED_OUT at `deadline`.
    pub async fn wait_replicated(&self, end: i64, epoch: i32, deadline: std::time::Instant) -> Result<(), Refused> {
        loop {
            let listen = self.log.listen();
            {
                let r = self.replica.borrow();
                if r.role != Role::Leader || r.leader_epoch != epoch {
                    return Err(Refused::new(
                        ErrorCode::NotLeaderOrFollower,
                        format!("leadership of {}-{} moved", self.topic, self.index),
                    ));
                }
                if self.log.high_watermark() >= end {
                    if r.isr.len() < r.min_isr {
                        return Err(Refused::new(
                            ErrorCode::NotEnoughReplicasAfterAppend,
                            format!(
                                "{}-{}: the ISR {:?} shrank below its effective min.insync.replicas {}",
                                self.topic, self.index, r.isr, r.min_isr
                            ),
                        ));
                    }
                    return Ok(());
                }
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(Refused::new(
                    ErrorCode::RequestTimedOut,
                    format!(
                        "{}-{}: the in-sync replicas did not confirm in time",
                        self.topic, self.index
                    ),
                ));
            }
            let _ = crate::util::race(listen, compio::runtime::time::sleep(left)).await;
        }
    }

    /// Follower: appends the batches its leader sent (whole batches, as
    /// the leader's log holds them), skipping any that end before the log
    /// end, and notes idempotent producers' batches so that this replica
    /// deduplicates retries once it leads. Returns the new end offset.
    pub fn append_replicated(&self, mut records: bytes::Bytes) -> Result<i64, sluice_engine::LogError> {
        let mut end = self.log.next_offset();
        while !records.is_empty() {
            let h = batch::BatchHeader::parse(&records)?;
            let Some(len) = h.total_len().filter(|&l| l <= records.len()) else {
                // A partial batch at the end of a fetch answer (the leader's
                // size limit): it comes whole with the next fetch.
                break;
            };
            if h.last_offset() < end {
                records = records.split_off(len);
                continue;
            }
            let facts = BatchFacts::of(&h, &records[..len]);
            let b = records.split_to(len);
            let info = self.log.append_replica(b)?;
            end = info.last_offset + 1;
            self.producers
                .borrow_mut()
                .apply(&facts, info.base_offset, info.last_offset);
        }
        Ok(end)
    }

    /// Follower: cuts the log back to `offset` and rebuilds the producer
    /// table from what is left.
    pub async fn truncate_to(&self, offset: i64) -> Result<i64, String> {
        let end = self.log.truncate_to(offset).await.map_err(|e| e.to_string())?;
        self.cleaning.truncated(end);
        self.reload_producers()?;
        Ok(end)
    }

    /// Follower: empties the log to restart at the leader's log start.
    pub async fn truncate_fully(&self, start: i64) -> Result<(), String> {
        self.log.truncate_fully(start).await.map_err(|e| e.to_string())?;
        self.cleaning.truncated(start);
        self.reload_producers()
    }

    fn reload_producers(&self) -> Result<(), String> {
        let _ = std::fs::remove_file(self.log.dir().join(crate::producer_state::FILE));
        *self.producers.borrow_mut() = ProducerStates::load(&self.log).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Leader: the ISR without followers that have not caught up within
    /// `max_lag_ms`, when that drops any and no change is in flight.
    pub fn shrunk_isr(&self, now_ms: u64, max_lag_ms: u64) -> Option<Vec<i32>> {
        let r = self.replica.borrow();
        if r.role != Role::Leader || !r.may_ask() {
            return None;
        }
        let isr: Vec<i32> = r
            .isr
            .iter()
            .copied()
            .filter(|&b| {
                b == r.me
                    || r.followers
                        .get(&b)
                        .is_some_and(|f| now_ms.saturating_sub(f.caught_up_ms) <= max_lag_ms)
            })
            .collect();
        (isr.len() != r.isr.len()).then_some(isr)
    }

    /// Appends the record batches of one partition of a Produce request,
    /// synchronously and in order: every batch is validated first when
    /// there are several (all or nothing), duplicates of an idempotent
    /// producer's recent batches answer their original offset, sequence
    /// gaps and stale epochs are refused, and the producer table records
    /// each batch appended. Transactional batches are taken as [`Txn`]
    /// says. Waiting for durability is the caller's.
    pub fn append_records(&self, records: BytesMut, txn: Txn) -> Result<Appended, Refused> {
        let batches = split_batches(records);
        let config = self.log.config();
        let max = config.max_batch_bytes as usize;
        if batches.len() > 1 {
            for b in &batches {
                if let Err(e) = batch::validate(b, max) {
                    return Err(Refused::new(
                        error_codes::for_log_error(&e.into()),
                        "invalid record batch",
                    ));
                }
            }
        }
        let mut first_offset = None;
        let mut end_offset = 0;
        for b in batches {
            let (facts, last_delta) = self.admit(&b, txn, config.compacted)?;
            let (pid, epoch, first_seq) = (facts.producer_id, facts.epoch, facts.first_seq);
            match self.producers.borrow().check(pid, epoch, first_seq, facts.last_seq) {
                Verdict::Append => {}
                Verdict::Duplicate { base_offset } => {
                    first_offset.get_or_insert(base_offset);
                    // The original may still be on its way to the ISR: the
                    // answer waits for it as for a new batch (a high
                    // watermark past its first offset is past all of it,
                    // as followers copy whole batches).
                    end_offset = end_offset.max(base_offset + 1);
                    continue;
                }
                Verdict::Reject(code) => {
                    return Err(Refused::new(
                        code,
                        format!("producer {pid} epoch {epoch} sequence {first_seq} rejected"),
                    ));
                }
            }
            let (bytes, records) = (b.len() as u64, u64::from(last_delta.unsigned_abs()) + 1);
            let info = self
                .log
                .append(b, self.leader_epoch().max(0))
                .map_err(|e| Refused::new(error_codes::for_log_error(&e), e.to_string()))?;
            self.traffic.appended(bytes, records);
            first_offset.get_or_insert(info.base_offset);
            end_offset = info.last_offset + 1;
            self.producers
                .borrow_mut()
                .apply(&facts, info.base_offset, info.last_offset);
        }
        Ok(Appended {
            base_offset: first_offset.unwrap_or(-1),
            end_offset,
        })
    }

    /// Ends a rewrite of an internal log's live state (the offsets log's,
    /// the transaction-state log's): once the rewrite, `start..end`, is
    /// synced and on the ISR (within `timeout`, while this replica still
    /// leads in `epoch`), the log start moves to `start`, deleting every
    /// older segment.
    pub async fn drop_before_rewrite(
        &self,
        start: i64,
        end: i64,
        epoch: i32,
        timeout: std::time::Duration,
    ) -> Result<(), String> {
        self.log
            .wait(end, sluice_engine::Durability::Synced)
            .await
            .map_err(|e| e.to_string())?;
        if self.replica.borrow().replicas.len() > 1 {
            self.wait_replicated(end, epoch, std::time::Instant::now() + timeout)
                .await
                .map_err(|r| r.message)?;
        }
        self.log
            .advance_log_start_offset(start)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// What a produced batch is, if this partition takes it at all: a
    /// header that parses, not a control batch, every record keyed when
    /// the topic is `compacted`, and when transactional, from a member of
    /// a transaction holding this partition.
    fn admit(&self, b: &BytesMut, txn: Txn, compacted: bool) -> Result<(BatchFacts, i32), Refused> {
        let (facts, last_delta) = match batch::BatchHeader::parse(b) {
            Ok(h) => (BatchFacts::of(&h, b), h.last_offset_delta()),
            Err(e) => {
                return Err(Refused::new(
                    error_codes::for_log_error(&e.clone().into()),
                    e.to_string(),
                ));
            }
        };
        if facts.control.is_some() {
            return Err(Refused::new(
                ErrorCode::InvalidRecord,
                "control batches are written by the broker, not produced",
            ));
        }
        if compacted && has_null_key(b) {
            return Err(Refused::new(
                ErrorCode::InvalidRecord,
                "a compacted topic takes only records with keys (one has none, or the batch cannot be read)",
            ));
        }
        if facts.transactional {
            let pid = facts.producer_id;
            match txn {
                Txn::None => {
                    return Err(Refused::new(
                        ErrorCode::InvalidRecord,
                        "a transactional batch needs its producer's transactional.id",
                    ));
                }
                Txn::Member { verified: false } if !self.producers.borrow().has_open_txn(pid) => {
                    return Err(Refused::new(
                        ErrorCode::InvalidTxnState,
                        format!("producer {pid} has no open transaction that holds this partition"),
                    ));
                }
                Txn::Member { .. } => {}
            }
        }
        Ok((facts, last_delta))
    }
}

/// Whether a batch holds a record without a key, or cannot be read
/// (a compressed one is inflated: only for compacted topics, as Kafka
/// does).
fn has_null_key(b: &[u8]) -> bool {
    let mut null = false;
    let codecs = crate::base::codecs::KafkaCodecs;
    match sluice_engine::compact::walk_records(b, Some(&codecs), |r, _| null |= r.key.is_none()) {
        Ok(true) => null,
        _ => true,
    }
}

/// Writes the high watermark of every replicated partition in `parts` that
/// moved since its last checkpoint; from the shard's housekeeping and at
/// close. A one-replica partition's high watermark is its log end, so it
/// writes nothing.
pub fn checkpoint_high_watermarks(parts: &[std::rc::Rc<Partition>]) {
    for p in parts.iter().filter(|p| p.replica.borrow().replicas.len() > 1) {
        if let Err(e) = p.log.checkpoint_high_watermark() {
            tracing::warn!(topic = %p.topic, partition = p.index, error = %e, "high-watermark checkpoint");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use sluice_engine::{Durability, Env, LogConfig};

    async fn leader(dir: &std::path::Path, isr: Vec<i32>, min_isr: usize) -> Partition {
        let log = Log::open(dir, LogConfig::default(), Env::default()).await.unwrap();
        let p = Partition::new("t".into(), 0, log, ProducerStates::default(), 0);
        let state = PartitionState {
            replicas: vec![1, 2, 3],
            isr,
            leader: 1,
            leader_epoch: 4,
            partition_epoch: 7,
            elr: Vec::new(),
        };
        assert_eq!(p.apply_state(&state, 1, min_isr, 1_000), RoleChange::BecameLeader);
        p
    }

    async fn append(p: &Partition, records: usize) {
        let end = p
            .append_records(batch::build_simple(records, 10, 1), Txn::None)
            .unwrap()
            .end_offset;
        p.log.wait(end, Durability::Written).await.unwrap();
    }

    const VERIFIED: Txn = Txn::Member { verified: true };

    fn txn_batch(pid: i64, epoch: i16, seq: i32) -> BytesMut {
        let records = [batch::Record::default(), batch::Record::default()];
        let producer = batch::ProducerFields {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
        };
        batch::build_with(&records, producer, batch::TRANSACTIONAL)
    }

    #[compio::test]
    async fn transactions_hold_the_stable_offset_and_survive_a_reopen_with_or_without_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader(dir.path(), vec![1], 1).await;
        append(&p, 2).await; // 0-1
        p.append_records(txn_batch(7, 0, 0), VERIFIED).unwrap(); // 2-3
        p.append_records(txn_batch(8, 0, 0), VERIFIED).unwrap(); // 4-5
        let end = p.append_records(txn_batch(7, 0, 2), VERIFIED).unwrap().end_offset; // 6-7
        p.log.wait(end, Durability::Written).await.unwrap();
        assert_eq!(p.log.high_watermark(), 8);
        assert_eq!(p.last_stable_offset(), 2);
        let marker = p.append_marker(7, 0, batch::Marker::Abort, 3, 5).unwrap(); // 8
        assert_eq!(marker.base_offset, 8);
        assert_eq!(p.last_stable_offset(), 4, "producer 8's transaction is still open");
        let end = p.append_marker(8, 0, batch::Marker::Commit, 3, 5).unwrap().end_offset; // 9
        p.log.wait(end, Durability::Written).await.unwrap();
        assert_eq!(p.last_stable_offset(), 10);
        assert_eq!(p.producers.borrow().aborted_between(0, 10), vec![(7, 2)]);
        let refused = p.append_marker(7, -1, batch::Marker::Abort, 3, 5).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidProducerEpoch);
        let produced_marker = p.append_records(batch::build_marker(batch::Marker::Commit, 7, 0, 0, 5), VERIFIED);
        assert_eq!(produced_marker.unwrap_err().code, ErrorCode::InvalidRecord);
        let outside = p.append_records(txn_batch(10, 0, 0), Txn::None);
        assert_eq!(outside.unwrap_err().code, ErrorCode::InvalidRecord);
        // Producer 9 opens a transaction and the broker stops.
        let end = p.append_records(txn_batch(9, 0, 0), VERIFIED).unwrap().end_offset; // 10-11
        p.log.wait(end, Durability::Written).await.unwrap();
        let before = p.producers.borrow().clone();
        // Replayed from the log alone, then from the snapshot file.
        let replayed = ProducerStates::load(&p.log).unwrap();
        assert_eq!(replayed.aborted_between(0, 100), vec![(7, 2)]);
        assert_eq!(replayed.first_unstable_offset(), Some(10));
        p.producers.borrow_mut().save(&p.log).unwrap();
        let loaded = ProducerStates::load(&p.log).unwrap();
        assert_eq!(loaded.aborted_between(0, 100), vec![(7, 2)]);
        assert_eq!(
            loaded.open_transactions().collect::<Vec<_>>(),
            before.open_transactions().collect::<Vec<_>>()
        );
        assert_eq!(loaded.check(9, 0, 2, 3), Verdict::Append);
        // A transactional producer's batch without its coordinator's word
        // is taken only where its transaction is open.
        let unverified = Txn::Member { verified: false };
        let late = p.append_records(txn_batch(10, 0, 0), unverified);
        assert_eq!(
            late.unwrap_err().code,
            ErrorCode::InvalidTxnState,
            "no open transaction here"
        );
        p.append_records(txn_batch(9, 0, 2), unverified)
            .expect("producer 9's transaction is open here");
    }

    #[compio::test]
    async fn the_high_watermark_is_the_lowest_log_end_of_the_isr() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader(dir.path(), vec![1, 2, 3], 2).await;
        append(&p, 10).await;
        assert_eq!(p.log.high_watermark(), 0, "followers not heard from yet");
        assert_eq!(p.follower_fetched(2, 6, 1_100), None);
        assert_eq!(p.log.high_watermark(), 0, "follower 3 holds it");
        p.follower_fetched(3, 4, 1_100);
        assert_eq!(p.log.high_watermark(), 4);
        p.follower_fetched(3, 10, 1_200);
        assert_eq!(p.log.high_watermark(), 6);
        p.follower_fetched(2, 10, 1_200);
        assert_eq!(p.log.high_watermark(), 10);
        // Batches carry the leader's epoch.
        assert_eq!(p.log.epoch_entries(), vec![(4, 0)]);
    }

    #[compio::test]
    async fn below_min_insync_the_high_watermark_holds_and_acks_all_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader(dir.path(), vec![1], 2).await;
        append(&p, 5).await;
        assert_eq!(p.log.high_watermark(), 0);
        assert_eq!(p.check_min_isr().unwrap_err().code, ErrorCode::NotEnoughReplicas);
        // A caught-up follower outside the ISR is proposed, and while the
        // change is in flight it holds the high watermark too.
        let proposed = p.follower_fetched(2, 5, 1_100);
        assert_eq!(proposed, Some(vec![1, 2]));
        p.replica.borrow_mut().pending_isr = proposed;
        assert_eq!(p.follower_fetched(3, 5, 1_100), None, "one change at a time");
        // The ISR grows in the image: the high watermark moves.
        let state = PartitionState {
            replicas: vec![1, 2, 3],
            isr: vec![1, 2],
            leader: 1,
            leader_epoch: 4,
            partition_epoch: 8,
            elr: Vec::new(),
        };
        assert_eq!(p.apply_state(&state, 1, 2, 1_200), RoleChange::None);
        assert_eq!(p.log.high_watermark(), 5);
        assert!(p.check_min_isr().is_ok());
    }

    #[compio::test]
    async fn min_insync_above_the_replica_count_asks_for_every_replica_and_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), LogConfig::default(), Env::default())
            .await
            .unwrap();
        let p = Partition::new("t".into(), 0, log, ProducerStates::default(), 0);
        // RF=1 under min.insync.replicas=2: the one replica is enough.
        let alone = PartitionState {
            replicas: vec![1],
            isr: vec![1],
            leader: 1,
            leader_epoch: 1,
            partition_epoch: 1,
            elr: Vec::new(),
        };
        assert_eq!(p.apply_state(&alone, 1, 2, 1_000), RoleChange::BecameLeader);
        assert!(p.check_min_isr().is_ok());
        append(&p, 3).await;
        assert_eq!(
            p.log.high_watermark(),
            3,
            "the high watermark moves with the one replica"
        );
        // RF=2 under min.insync.replicas=3: both replicas are needed...
        let pair = PartitionState {
            replicas: vec![1, 2],
            isr: vec![1, 2],
            partition_epoch: 2,
            ..alone.clone()
        };
        assert_eq!(p.apply_state(&pair, 1, 3, 1_100), RoleChange::None);
        assert_eq!(p.replica.borrow().min_isr, 2);
        assert!(p.check_min_isr().is_ok());
        // ...and one of them is not enough.
        let shrunk = PartitionState {
            isr: vec![1],
            partition_epoch: 3,
            ..pair
        };
        p.apply_state(&shrunk, 1, 3, 1_200);
        assert_eq!(p.check_min_isr().unwrap_err().code, ErrorCode::NotEnoughReplicas);
    }

    #[compio::test]
    #[should_panic(expected = "leader epoch would go back from 4 to 3")]
    async fn a_replica_refuses_a_leader_epoch_that_goes_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader(dir.path(), vec![1, 2, 3], 1).await;
        let older = PartitionState {
            replicas: vec![1, 2, 3],
            isr: vec![1, 2, 3],
            leader: 2,
            leader_epoch: 3,
            partition_epoch: 9,
            elr: Vec::new(),
        };
        p.apply_state(&older, 1, 1, 1_000);
    }

    #[compio::test]
    #[should_panic(expected = "leader 2 is not in the ISR")]
    async fn a_replica_refuses_a_leader_outside_the_isr() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader(dir.path(), vec![1, 2, 3], 1).await;
        let broken = PartitionState {
            replicas: vec![1, 2, 3],
            isr: vec![1, 3],
            leader: 2,
            leader_epoch: 5,
            partition_epoch: 9,
            elr: Vec::new(),
        };
        p.apply_state(&broken, 1, 1, 1_000);
    }

    #[compio::test]
    async fn a_follower_that_has_not_caught_up_within_the_lag_leaves_the_isr() {
        let dir = tempfile::tempdir().unwrap();
        let p = leader(dir.path(), vec![1, 2, 3], 1).await;
        append(&p, 5).await;
        p.follower_fetched(2, 5, 2_000);
        p.follower_fetched(3, 2, 2_000);
        assert_eq!(p.shrunk_isr(10_000, 30_000), None, "within the lag");
        assert_eq!(
            p.shrunk_isr(32_000, 30_000),
            Some(vec![1, 2]),
            "3 last caught up at 1 000"
        );
        // A refused change waits before the next ask.
        p.replica.borrow_mut().isr_retry_at = Some(std::time::Instant::now() + std::time::Duration::from_secs(60));
        assert_eq!(p.shrunk_isr(32_000, 30_000), None);
    }
}
