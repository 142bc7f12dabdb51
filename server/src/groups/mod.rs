//! The consumer-group coordinator.
//!
//! Placement: a group id hashes (Java's `String.hashCode`, as Kafka) to one
//! partition of `__consumer_offsets`; the shard that owns that partition is
//! the group's coordinator. Group state lives only there; requests from
//! connections on other shards travel to it as jobs.
//!
//! Storage: every OffsetCommit is one record batch appended to the group's
//! offsets partition and synced before the commit is answered. When a shard
//! opens an offsets partition it replays the log (the latest value of each
//! key wins, a tombstone removes it), before it serves any request. Once a
//! partition's log rolls, the live offsets are written again at its end and
//! the older segments are deleted (`compact_offsets`), so the log and the
//! replay stay bounded by one segment plus the live offsets.
//!
//! Timers: each group with members has one task on its coordinator's event
//! loop that sleeps until the group's next deadline (a session expiry, the
//! end of a join phase) or until a request moves that deadline.

pub mod assignors;
pub mod consumer;
pub mod group;
pub mod records;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use sluice_engine::Durability;

use crate::error_codes::{self, ErrorCode};
use crate::meta::OFFSETS_TOPIC;
use crate::partition::Partition;
use crate::shard::{Shard, ShardId};
use crate::util::{Changed, race};
use group::Group;

use crate::base::clock::now_ms;
use records::{OffsetRecord, OffsetValue};

/// A group and the signal that wakes its timer when a deadline moves.
#[derive(Debug)]
pub struct GroupHandle {
    pub group: RefCell<Group>,
    changed: Changed,
}

pub type GroupRef = Rc<GroupHandle>;

/// The groups one shard coordinates.
#[derive(Debug, Default)]
pub struct Groups {
    table: RefCell<HashMap<Arc<str>, GroupRef>>,
}

impl Groups {
    pub fn get(&self, id: &str) -> Option<GroupRef> {
        self.table.borrow().get(id).cloned()
    }

    pub fn get_or_create(&self, id: &str) -> GroupRef {
        self.table
            .borrow_mut()
            .entry(id.into())
            .or_insert_with(|| {
                Rc::new(GroupHandle {
                    group: RefCell::new(Group::new(id.into(), now_ms())),
                    changed: Changed::default(),
                })
            })
            .clone()
    }

    pub fn all(&self) -> Vec<GroupRef> {
        self.table.borrow().values().cloned().collect()
    }

    /// Forgets a group that never had members and holds no offsets.
    pub fn remove_if_removable(&self, id: &str) {
        let mut t = self.table.borrow_mut();
        if t.get(id).is_some_and(|h| h.group.borrow().is_removable()) {
            t.remove(id);
        }
    }

    pub fn remove(&self, id: &str) {
        self.table.borrow_mut().remove(id);
    }
}

/// Kafka's placement of a group: `abs(hashCode(group)) % partitions`.
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for u in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(u));
    }
    (h & 0x7fff_ffff) % partitions.max(1)
}

/// The shard that coordinates `group` and the offsets partition it writes.
pub fn coordinator_of<S: GroupHost>(shard: &Shard<S>, group: &str) -> Option<(ShardId, i32)> {
    let n = shard.meta().topic(OFFSETS_TOPIC)?.partitions;
    let p = partition_for(group, n);
    Some((shard.owner_of(OFFSETS_TOPIC, p), p))
}

/// The live broker that coordinates `group`: the leader of the group's
/// offsets partition, and that partition.
pub fn coordinator_broker<'a>(
    snapshot: &'a crate::meta::Snapshot,
    group: &str,
) -> Option<(&'a crate::image::BrokerMeta, i32)> {
    coordinator_in(snapshot, OFFSETS_TOPIC, group)
}

/// The live leader of `key`'s partition of the coordinating `topic`
/// (`__consumer_offsets` for groups, `__transaction_state` for
/// transactional ids), and that partition.
pub fn coordinator_in<'a>(
    snapshot: &'a crate::meta::Snapshot,
    topic: &str,
    key: &str,
) -> Option<(&'a crate::image::BrokerMeta, i32)> {
    let t = snapshot.topic(topic)?;
    let partition = partition_for(key, t.partitions);
    let leader = t.leader(partition)?;
    snapshot
        .brokers
        .get(&leader)
        .filter(|b| !b.fenced)
        .map(|b| (b, partition))
}

/// Runs `f` with the group's coordinator shard. `COORDINATOR_NOT_AVAILABLE`
/// when there is no offsets topic or the coordinator stopped;
/// `NOT_COORDINATOR` when another broker leads the group's offsets
/// partition.
pub async fn on_coordinator<S: GroupHost, T, F, Fut>(shard: &Shard<S>, group: &str, f: F) -> Result<T, ErrorCode>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard<S>>, i32) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
{
    let (owner, partition) = coordinator_of(shard, group).ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let leader = shard.meta().topic(OFFSETS_TOPIC).and_then(|t| t.leader(partition));
    if leader != Some(shard.config().node_id) {
        return Err(ErrorCode::NotCoordinator);
    }
    shard
        .submit_to(owner, move |s| async move {
            // A new coordinator serves once its offsets partition's high
            // watermark reaches its epoch's start: before, what it loaded
            // may hold commits its followers do not have.
            if s.partition(OFFSETS_TOPIC, partition)
                .is_some_and(|p| !p.epoch_settled())
            {
                return Err(ErrorCode::CoordinatorLoadInProgress);
            }
            Ok(f(s, partition).await)
        })
        .await
        .map_err(|_| ErrorCode::CoordinatorNotAvailable)?
}

/// Makes sure the group's timer runs and sees the group's current
/// deadlines. Call after every change to a group.
pub fn kick<S: GroupHost>(shard: &Rc<Shard<S>>, h: &GroupRef) {
    let start = {
        let mut g = h.group.borrow_mut();
        if g.timer_running {
            false
        } else if g.next_deadline().is_some() {
            g.timer_running = true;
            true
        } else {
            false
        }
    };
    if start {
        compio::runtime::spawn(run_timer(shard.clone(), h.clone())).detach();
    } else {
        h.changed.notify();
    }
    let id = h.group.borrow().id.clone();
    shard.services.groups().remove_if_removable(&id);
}

async fn run_timer<S: GroupHost>(shard: Rc<Shard<S>>, h: GroupRef) {
    loop {
        let Some(deadline) = h.group.borrow().next_deadline() else {
            break;
        };
        let now = Instant::now();
        if deadline > now {
            let sleep = compio::runtime::time::sleep(deadline - now);
            if race(sleep, h.changed.next()).await.is_err() {
                // A request moved the deadlines: look again.
                continue;
            }
        }
        let (id, records) = {
            let mut g = h.group.borrow_mut();
            let now = Instant::now();
            let cfg = &shard.config().groups;
            g.on_timer(now, cfg);
            let id = g.id.clone();
            let records = match g.consumer.as_mut() {
                Some(c) => c.on_timer(&id, &shard.meta(), now, cfg),
                None => Vec::new(),
            };
            (id, records)
        };
        if !records.is_empty()
            && let Some((_, partition)) = coordinator_of(&shard, &id)
            && let Err(e) = append_consumer(&shard, partition, &h, &records)
        {
            tracing::warn!(group = %id, error = ?e, "writing a consumer group's expired members");
        }
    }
    let id = {
        let mut g = h.group.borrow_mut();
        g.timer_running = false;
        g.id.clone()
    };
    shard.services.groups().remove_if_removable(&id);
}

/// Appends offset records for `group` to its offsets partition, waits
/// until they are synced and replicated, and only then applies them to the
/// group (so no fetch sees a commit a failover could take back); records
/// that complete out of log order do not undo newer ones.
pub async fn write_offsets<S: GroupHost>(
    shard: &Rc<Shard<S>>,
    partition: i32,
    h: &GroupRef,
    records: Vec<OffsetRecord>,
) -> Result<(), ErrorCode> {
    if records.is_empty() {
        return Ok(());
    }
    let p = shard
        .partition(OFFSETS_TOPIC, partition)
        .ok_or(ErrorCode::NotCoordinator)?;
    let info = p
        .log
        .append(records::batch_of(&records, now_ms()), p.leader_epoch().max(0))
        .map_err(|e| error_codes::for_log_error(&e))?;
    let at = info.base_offset;
    // In the log from here on: a rewrite of the offsets log that starts
    // before this write finishes must carry these values, not older ones.
    let keys: Vec<(Arc<str>, i32)> = records
        .iter()
        .map(|r| (Arc::from(r.topic.as_str()), r.partition))
        .collect();
    {
        let mut g = h.group.borrow_mut();
        for (key, r) in keys.iter().zip(&records) {
            g.unapplied.insert(key.clone(), (at, r.value.clone()));
        }
    }
    let end = info.last_offset + 1;
    let written = settle(shard, &p, end).await;
    let mut g = h.group.borrow_mut();
    for key in &keys {
        if g.unapplied.get(key).is_some_and(|(newest, _)| *newest == at) {
            g.unapplied.remove(key);
        }
    }
    written?;
    if g.state != group::State::Dead {
        for r in records {
            apply(&mut g, r, at);
        }
    }
    Ok(())
}

/// Waits until the records below `end` are synced and on the ISR.
async fn settle<S: GroupHost>(shard: &Shard<S>, p: &Partition, end: i64) -> Result<(), ErrorCode> {
    p.log
        .wait(end, Durability::Synced)
        .await
        .map_err(|e| match error_codes::for_log_error(&e) {
            ErrorCode::NotLeaderOrFollower => ErrorCode::NotCoordinator,
            other => other,
        })?;
    wait_replicated(shard, p, end).await
}

/// TxnOffsetCommit (KIP-447), on the group's coordinator: checks the
/// member as OffsetCommit does, appends the offsets as a transactional
/// batch of the producer, and once it is synced and replicated holds them
/// as the producer's pending offsets; its marker in this partition applies
/// or drops them ([`complete_txn`]).
#[allow(clippy::too_many_arguments)]
pub async fn txn_commit<S: GroupHost>(
    shard: Rc<Shard<S>>,
    partition: i32,
    group_id: String,
    producer: (i64, i16),
    generation: i32,
    member_id: String,
    instance_id: Option<String>,
    offsets: Vec<(String, i32, OffsetValue)>,
) -> Option<ErrorCode> {
    // A commit without generation and member (TxnOffsetCommit before v3)
    // is taken as Kafka takes it; with them, they are checked.
    let unchecked = generation < 0 && member_id.is_empty();
    let h = match committing_group(
        &shard,
        &group_id,
        generation,
        &member_id,
        instance_id.as_deref(),
        unchecked,
    ) {
        Ok(h) => h,
        Err(e) => return Some(e),
    };
    let Some(p) = shard.partition(OFFSETS_TOPIC, partition) else {
        return Some(ErrorCode::NotCoordinator);
    };
    let records = OffsetRecord::commits(&group_id, offsets);
    let (producer_id, epoch) = producer;
    let b = records::txn_batch_of(&records, now_ms(), producer_id, epoch);
    let facts = match sluice_engine::batch::BatchHeader::parse(&b) {
        Ok(header) => crate::producer_state::BatchFacts::of(&header, &b),
        Err(_) => return Some(ErrorCode::UnknownServerError),
    };
    let info = match p.log.append(b, p.leader_epoch().max(0)) {
        Ok(info) => info,
        Err(e) => return Some(error_codes::for_log_error(&e)),
    };
    p.producers
        .borrow_mut()
        .apply(&facts, info.base_offset, info.last_offset);
    if let Err(e) = settle(&shard, &p, info.last_offset + 1).await {
        return Some(e);
    }
    let mut g = h.group.borrow_mut();
    let pending = g.pending_txn.entry(producer_id).or_default();
    for r in records {
        if let Some(v) = r.value {
            pending.insert((Arc::from(r.topic.as_str()), r.partition), (v, info.base_offset));
        }
    }
    None
}

/// The transaction of `producer_id` ended in offsets partition
/// `partition` (its marker is written, synced and replicated): its pending
/// offsets in every group of the partition are applied (`commit`) or
/// dropped.
pub fn complete_txn<S: GroupHost>(shard: &Shard<S>, partition: i32, producer_id: i64, commit: bool) {
    for h in shard.services.groups().all() {
        let mut g = h.group.borrow_mut();
        if coordinator_of(shard, &g.id).map(|(_, i)| i) != Some(partition) {
            continue;
        }
        let Some(pending) = g.pending_txn.remove(&producer_id) else {
            continue;
        };
        if commit {
            for ((topic, p), (value, at)) in pending {
                let r = OffsetRecord {
                    group: g.id.to_string(),
                    topic: topic.to_string(),
                    partition: p,
                    value: Some(value),
                };
                apply(&mut g, r, at);
            }
        }
    }
}

/// Waits until every in-sync replica of a replicated offsets partition
/// holds the records below `end`, mapping failures as Kafka's coordinator
/// does: both retriable for the client.
async fn wait_replicated<S: GroupHost>(shard: &Shard<S>, p: &Partition, end: i64) -> Result<(), ErrorCode> {
    if p.replica.borrow().replicas.len() < 2 {
        return Ok(());
    }
    let deadline = Instant::now() + std::time::Duration::from_millis(shard.config().groups.offsets_commit_timeout_ms);
    p.wait_replicated(end, p.leader_epoch(), deadline)
        .await
        .map_err(|r| match r.code {
            ErrorCode::NotLeaderOrFollower | ErrorCode::KafkaStorageError => ErrorCode::NotCoordinator,
            _ => ErrorCode::CoordinatorNotAvailable,
        })
}

/// Applies one offsets record written at log offset `at`, unless a newer
/// record of the same partition is already applied.
fn apply(g: &mut Group, r: OffsetRecord, at: i64) {
    let key = (Arc::<str>::from(r.topic.as_str()), r.partition);
    if g.offsets_at.get(&key).is_some_and(|&newer| newer > at) {
        return;
    }
    g.offsets_at.insert(key.clone(), at);
    match r.value {
        Some(v) => {
            g.offsets.insert(key, v);
        }
        None => {
            g.offsets.remove(&key);
        }
    }
}

/// Replays one offsets partition into the shard's groups. Runs when the
/// shard opens the partition, before it serves requests.
pub fn load<S: GroupHost>(shard: &Rc<Shard<S>>, p: &Partition) -> Result<usize, String> {
    let mut count = 0;
    // Offsets of transactions not ended yet, by producer, in log order.
    let mut open: HashMap<i64, Vec<(OffsetRecord, i64)>> = HashMap::new();
    p.log
        .for_each_batch(0, |h, batch| {
            if h.is_control() {
                // A marker applies or drops its producer's offsets.
                let Some(pending) = open.remove(&h.producer_id()) else {
                    return;
                };
                if sluice_engine::batch::marker(batch) == Some(sluice_engine::batch::Marker::Commit) {
                    for (r, at) in pending {
                        let g = shard.services.groups().get_or_create(&r.group);
                        apply(&mut g.group.borrow_mut(), r, at);
                        count += 1;
                    }
                }
                return;
            }
            let read = records::for_each_record(batch, |k, v| match records::decode(k, v) {
                Ok(Some(r)) if h.is_transactional() => open.entry(h.producer_id()).or_default().push((r, h.base_offset())),
                Ok(Some(r)) => {
                    let g = shard.services.groups().get_or_create(&r.group);
                    apply(&mut g.group.borrow_mut(), r, h.base_offset());
                    count += 1;
                }
                Ok(None) => match records::decode_consumer(k, v) {
                    Ok(Some((group, r))) => {
                        apply_consumer(shard, &group, &r);
                        count += 1;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(topic = %p.topic, partition = p.index, offset = h.base_offset(), error = %e, "skipping unreadable consumer group record"),
                },
                Err(e) => tracing::warn!(topic = %p.topic, partition = p.index, offset = h.base_offset(), error = %e, "skipping unreadable offsets record"),
            });
            if let Err(e) = read {
                tracing::warn!(topic = %p.topic, partition = p.index, offset = h.base_offset(), error = %e, "skipping unreadable offsets batch");
            }
        })
        .map_err(|e| e.to_string())?;
    // What is still open waits for its marker.
    for (producer_id, pending) in open {
        for (r, at) in pending {
            let Some(value) = r.value else {
                continue;
            };
            let g = shard.services.groups().get_or_create(&r.group);
            g.group
                .borrow_mut()
                .pending_txn
                .entry(producer_id)
                .or_default()
                .insert((Arc::from(r.topic.as_str()), r.partition), (value, at));
        }
    }
    // Groups whose every offset was deleted are gone; consumer-protocol
    // members get a fresh session, timed from now.
    for h in shard.services.groups().all() {
        let id = h.group.borrow().id.clone();
        shard.services.groups().remove_if_removable(&id);
        if h.group.borrow().consumer.is_some() {
            if let Some(c) = h.group.borrow_mut().consumer.as_mut() {
                c.renew_sessions(Instant::now(), &shard.config().groups);
            }
            kick(shard, &h);
        }
    }
    Ok(count)
}

/// Applies one replayed consumer-protocol record to its group.
fn apply_consumer<S: GroupHost>(shard: &Shard<S>, group: &str, r: &consumer::Record) {
    let h = shard.services.groups().get_or_create(group);
    let mut g = h.group.borrow_mut();
    match r {
        consumer::Record::Group(None) => g.consumer = None,
        _ => g
            .consumer
            .get_or_insert_default()
            .apply(r, Instant::now(), &shard.config().groups),
    }
}

/// Appends consumer-protocol records of group `h` to its offsets
/// partition (they are already applied to the group), and returns the log
/// end to wait for before answering: after these records, or after the
/// group's last ones when there are none.
pub fn append_consumer<S: GroupHost>(
    shard: &Shard<S>,
    partition: i32,
    h: &GroupRef,
    records: &[consumer::Record],
) -> Result<i64, ErrorCode> {
    let mut g = h.group.borrow_mut();
    if records.is_empty() {
        return Ok(g.written_end);
    }
    let p = shard
        .partition(OFFSETS_TOPIC, partition)
        .ok_or(ErrorCode::NotCoordinator)?;
    let info = p
        .log
        .append(
            records::consumer_batch_of(&g.id, records, now_ms()),
            p.leader_epoch().max(0),
        )
        .map_err(|e| match error_codes::for_log_error(&e) {
            ErrorCode::NotLeaderOrFollower => ErrorCode::NotCoordinator,
            other => other,
        })?;
    g.written_end = info.last_offset + 1;
    if g.consumer.as_ref().is_some_and(|c| c.members.is_empty()) {
        g.empty_since_ms = now_ms();
    }
    Ok(g.written_end)
}

/// Waits until a group's records below `end` are synced and replicated.
pub async fn settle_consumer<S: GroupHost>(shard: &Shard<S>, partition: i32, end: i64) -> Result<(), ErrorCode> {
    if end <= 0 {
        return Ok(());
    }
    let p = shard
        .partition(OFFSETS_TOPIC, partition)
        .ok_or(ErrorCode::NotCoordinator)?;
    settle(shard, &p, end).await
}

/// ConsumerGroupHeartbeat (KIP-848), on the group's coordinator: the group
/// changes, its records are appended, and the answer goes out once they
/// are durable. A classic group with members refuses
/// (INCONSISTENT_GROUP_PROTOCOL); an empty one becomes a consumer group
/// and keeps its offsets.
pub async fn consumer_heartbeat<S: GroupHost>(
    shard: Rc<Shard<S>>,
    partition: i32,
    group_id: String,
    req: consumer::Heartbeat,
) -> Result<consumer::Answer, consumer::Refusal> {
    let h = shard.services.groups().get_or_create(&group_id);
    let snapshot = shard.meta();
    let mut out = Vec::new();
    let answer = {
        let mut g = h.group.borrow_mut();
        if g.state == group::State::Dead {
            Err((
                ErrorCode::CoordinatorNotAvailable,
                "the group was just deleted".to_string(),
            ))
        } else if g.consumer.is_none() && (g.has_members() || g.state != group::State::Empty) {
            Err((
                ErrorCode::InconsistentGroupProtocol,
                format!("group {group_id} is a classic group with members; it takes the consumer protocol once empty"),
            ))
        } else {
            g.consumer.get_or_insert_default().heartbeat(
                req,
                &snapshot,
                Instant::now(),
                &shard.config().groups,
                &mut out,
            )
        }
    };
    let end = append_consumer(&shard, partition, &h, &out);
    kick(&shard, &h);
    let end = end.map_err(|e| (e, "writing the group's records failed".to_string()))?;
    settle_consumer(&shard, partition, end)
        .await
        .map_err(|e| (e, "the group's records are not durable".to_string()))?;
    answer
}

/// A classic JoinGroup to a consumer-protocol group: refused while the
/// group has members (INCONSISTENT_GROUP_PROTOCOL); an empty one becomes a
/// classic group, its record deleted, its offsets kept.
pub fn to_classic<S: GroupHost>(shard: &Shard<S>, partition: i32, h: &GroupRef) -> Result<(), ErrorCode> {
    match &h.group.borrow().consumer {
        None => return Ok(()),
        Some(c) if !c.members.is_empty() => return Err(ErrorCode::InconsistentGroupProtocol),
        Some(_) => {}
    }
    append_consumer(shard, partition, h, &[consumer::Record::Group(None)])?;
    h.group.borrow_mut().consumer = None;
    Ok(())
}

/// Forgets the groups of offsets partition `partition` (its leadership
/// moved away, or it is about to be replayed).
pub fn unload<S: GroupHost>(shard: &Shard<S>, partition: i32) {
    let Some(n) = shard.meta().topic(OFFSETS_TOPIC).map(|t| t.partitions) else {
        return;
    };
    for h in shard.services.groups().all() {
        let id = h.group.borrow().id.clone();
        if partition_for(&id, n) == partition {
            shard.services.groups().remove(&id);
        }
    }
}

/// Deletes the offsets of empty groups that have been empty for
/// `offsets.retention.minutes` since their last commit, then forgets
/// empty groups left with no offsets. Runs from the shard's housekeeping
/// every `offsets.retention.check.interval.ms`.
pub async fn expire_offsets<S: GroupHost>(shard: &Rc<Shard<S>>) {
    let retention = shard.config().groups.offsets_retention_ms;
    let now = now_ms();
    for h in shard.services.groups().all() {
        let (id, expired) = {
            let g = h.group.borrow();
            if g.state != group::State::Empty || g.has_members() {
                continue;
            }
            let expired: Vec<OffsetRecord> = g
                .offsets
                .iter()
                .filter(|(_, v)| now.saturating_sub(v.commit_ms.max(g.empty_since_ms)) >= retention)
                .map(|((topic, partition), _)| OffsetRecord {
                    group: g.id.to_string(),
                    topic: topic.to_string(),
                    partition: *partition,
                    value: None,
                })
                .collect();
            (g.id.clone(), expired)
        };
        if expired.is_empty() {
            if h.group.borrow().is_expirable() {
                forget(shard, &h, &id);
            }
            continue;
        }
        let Some((_, partition)) = coordinator_of(shard, &id) else {
            continue;
        };
        let n = expired.len();
        match write_offsets(shard, partition, &h, expired).await {
            Ok(()) => tracing::info!(group = %id, offsets = n, "expired committed offsets"),
            Err(e) => tracing::warn!(group = %id, error = ?e, "expiring offsets"),
        }
        if h.group.borrow().is_expirable() {
            forget(shard, &h, &id);
        }
    }
}

/// Forgets an expired group; a consumer-protocol group's record is deleted
/// first (a group whose deletion cannot be written stays).
fn forget<S: GroupHost>(shard: &Shard<S>, h: &GroupRef, id: &str) {
    if h.group.borrow().consumer.is_some() {
        let Some((_, partition)) = coordinator_of(shard, id) else {
            return;
        };
        if let Err(e) = to_classic(shard, partition, h) {
            tracing::warn!(group = %id, error = ?e, "deleting an expired consumer group");
            return;
        }
    }
    shard.services.groups().remove(id);
}

/// Bounds the offsets log: when an offsets partition has rolled to a new
/// segment, the live offsets of its groups (applied ones, and those of
/// writes still syncing, which are already in the log) are written again at
/// the log end
/// (one batch per group and at most `REWRITE_BATCH` records; values keep
/// their commit times), synced, and the log start moves to the first
/// rewritten record, which deletes every older segment. Replay after that
/// starts at the rewrite, which holds the whole state. Runs from the shard's
/// housekeeping; the snapshot and its append happen in one step, so a commit
/// that arrives while the rewrite syncs lands after it and wins.
pub async fn compact_offsets<S: GroupHost>(shard: &Rc<Shard<S>>, owned: &[Rc<Partition>]) {
    const REWRITE_BATCH: usize = 1000;
    for p in owned {
        if &*p.topic != OFFSETS_TOPIC || p.log.segment_count() < 2 || p.log.is_poisoned() || !p.is_leader() {
            continue;
        }
        // Offsets of a transaction not ended yet live only in their batch
        // and wait for its marker: the rewrite would delete them.
        if p.producers.borrow().first_unstable_offset().is_some() {
            continue;
        }
        let start = p.log.log_end_offset();
        let mut end = start;
        let mut failed = None;
        let mut written = 0usize;
        for h in shard.services.groups().all() {
            let g = h.group.borrow();
            if coordinator_of(shard, &g.id).map(|(_, i)| i) != Some(p.index) {
                continue;
            }
            let live: Vec<OffsetRecord> = g
                .live_offsets()
                .into_iter()
                .map(|((topic, partition), v)| OffsetRecord {
                    group: g.id.to_string(),
                    topic: topic.to_string(),
                    partition,
                    value: Some(v),
                })
                .collect();
            for chunk in live.chunks(REWRITE_BATCH) {
                match p
                    .log
                    .append(records::batch_of(chunk, now_ms()), p.leader_epoch().max(0))
                {
                    Ok(info) => end = info.last_offset + 1,
                    Err(e) => failed = Some(e),
                }
                written += chunk.len();
            }
            // A consumer-protocol group's state, whole.
            let state = g.consumer.as_ref().map(|c| c.live_records()).unwrap_or_default();
            for chunk in state.chunks(REWRITE_BATCH) {
                match p.log.append(
                    records::consumer_batch_of(&g.id, chunk, now_ms()),
                    p.leader_epoch().max(0),
                ) {
                    Ok(info) => end = info.last_offset + 1,
                    Err(e) => failed = Some(e),
                }
                written += chunk.len();
            }
        }
        if let Some(e) = failed {
            tracing::error!(partition = p.index, error = %e, "rewriting committed offsets");
            continue;
        }
        let timeout = std::time::Duration::from_millis(shard.config().groups.offsets_commit_timeout_ms);
        match p.drop_before_rewrite(start, end, p.leader_epoch(), timeout).await {
            Ok(_) => tracing::info!(
                partition = p.index,
                offsets = written,
                log_start_offset = start,
                segments = p.log.segment_count(),
                "compacted the offsets log"
            ),
            Err(e) => tracing::error!(partition = p.index, error = %e, "compacting the offsets log"),
        }
    }
}

/// The group a commit goes to, its member checked (unless `unchecked`). A
/// group-less consumer (no generation, no member) commits into a new,
/// empty group.
fn committing_group<S: GroupHost>(
    shard: &Shard<S>,
    group_id: &str,
    generation: i32,
    member_id: &str,
    instance_id: Option<&str>,
    unchecked: bool,
) -> Result<GroupRef, ErrorCode> {
    let h = match shard.services.groups().get(group_id) {
        Some(h) => h,
        None if generation < 0 && member_id.is_empty() => shard.services.groups().get_or_create(group_id),
        None if member_id.is_empty() => return Err(ErrorCode::IllegalGeneration),
        None => return Err(ErrorCode::UnknownMemberId),
    };
    if unchecked {
        return Ok(h);
    }
    let refused = h
        .group
        .borrow_mut()
        .check_commit(generation, member_id, instance_id, Instant::now());
    match refused {
        Some(e) => {
            shard.services.groups().remove_if_removable(group_id);
            Err(e)
        }
        None => Ok(h),
    }
}

/// Offsets of a commit request, checked against the group and written.
/// `Ok(None)` when the group refused the commit with that error for all.
pub async fn commit<S: GroupHost>(
    shard: Rc<Shard<S>>,
    partition: i32,
    group_id: String,
    generation: i32,
    member_id: String,
    instance_id: Option<String>,
    offsets: Vec<(String, i32, OffsetValue)>,
) -> Option<ErrorCode> {
    let h = match committing_group(&shard, &group_id, generation, &member_id, instance_id.as_deref(), false) {
        Ok(h) => h,
        Err(e) => return Some(e),
    };
    let records = OffsetRecord::commits(&group_id, offsets);
    let r = write_offsets(&shard, partition, &h, records).await;
    kick(&shard, &h);
    r.err()
}

/// What hosts the group coordinator: the services a node runs on each
/// shard hold the groups that shard coordinates.
pub trait GroupHost: crate::shard::Services {
    fn groups(&self) -> &Groups;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_matches_javas_string_hash() {
        // "hello".hashCode() == 99162322 in Java.
        assert_eq!(partition_for("hello", 50), 99_162_322 % 50);
        // A negative hash is masked, as Kafka's Utils.abs does.
        let h = "polygenelubricants"
            .encode_utf16()
            .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)));
        assert!(h < 0);
        assert_eq!(partition_for("polygenelubricants", 50), (h & 0x7fff_ffff) % 50);
        assert_eq!(partition_for("", 50), 0);
    }
}
