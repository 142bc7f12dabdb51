//! The transaction coordinator.
//!
//! Placement: a transactional id hashes (as a group id does) to one
//! partition of `__transaction_state`; the leader of that partition is the
//! id's coordinator, and on it the shard that owns the partition. The ids'
//! state lives only there; requests from connections on other shards
//! travel to it as jobs.
//!
//! Storage: every change of an id's state is one record (the whole state,
//! [`records`]) appended to its partition, synced and replicated to the
//! ISR before the change is applied in memory and answered. When a shard
//! becomes the leader of a transaction-state partition it replays the log
//! (the latest record of each id wins) before it serves; transactions it
//! finds prepared get their markers sent again and are completed.
//!
//! Work per id is one at a time: while a record is being written or a
//! prepared transaction's markers are on their way, the id is busy; other
//! requests for it wait until it is free, up to
//! `sluice.transaction.busy.wait.ms`, then are answered
//! CONCURRENT_TRANSACTIONS, which clients retry.

pub mod markers;
pub mod records;
pub mod state;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_engine::Durability;

use crate::base::clock::now_ms;
use crate::controller::{ControllerHost, InternalTopic};
use crate::error_codes::{self, ErrorCode};
use crate::groups::{GroupHost, partition_for};
use crate::meta::TRANSACTION_STATE_TOPIC;
use crate::partition::Partition;
use crate::shard::{Shard, ShardId};
use state::{End, Init, TxnMeta, TxnPartition};

/// The ids this shard coordinates.
#[derive(Debug, Default)]
pub struct Transactions {
    table: RefCell<HashMap<Arc<str>, (TxnMeta, i32)>>,
    /// Ids with a write or markers in flight.
    busy: RefCell<HashSet<Arc<str>>>,
    /// Told each time an id is released.
    released: crate::util::Changed,
}

impl Transactions {
    pub fn get(&self, id: &str) -> Option<TxnMeta> {
        self.table.borrow().get(id).map(|(m, _)| m.clone())
    }

    /// Every id with the transaction-state partition it lives in.
    pub fn all(&self) -> Vec<(TxnMeta, i32)> {
        self.table.borrow().values().cloned().collect()
    }

    fn is_busy(&self, id: &str) -> bool {
        self.busy.borrow().contains(id)
    }

    /// Marks `id` busy; false when it already was.
    fn take(&self, id: &Arc<str>) -> bool {
        self.busy.borrow_mut().insert(id.clone())
    }

    fn release(&self, id: &str) {
        self.busy.borrow_mut().remove(id);
        self.released.notify();
    }

    /// Waits, up to `max`, until `id` is not busy: a request that arrives
    /// while the markers of the id's last transaction are on their way
    /// (a producer starting its next transaction right after EndTxn) is
    /// served when they are written instead of being told
    /// CONCURRENT_TRANSACTIONS and retrying after the client's backoff.
    /// False when it is still busy.
    async fn wait_until_free(&self, id: &str, max: Duration) -> bool {
        let deadline = Instant::now() + max;
        while self.is_busy(id) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let _ = crate::util::race(self.released.next(), compio::runtime::time::sleep(left)).await;
        }
        true
    }

    fn apply(&self, id: &Arc<str>, state: Option<TxnMeta>, partition: i32) {
        let mut t = self.table.borrow_mut();
        match state {
            Some(m) => {
                t.insert(id.clone(), (m, partition));
            }
            None => {
                t.remove(id);
            }
        }
    }

    /// Forgets the ids of transaction-state partition `partition` (its
    /// leadership moved away, or it is about to be replayed).
    pub fn unload(&self, partition: i32) {
        let gone: Vec<Arc<str>> = {
            let mut t = self.table.borrow_mut();
            let gone = t
                .iter()
                .filter(|(_, (_, p))| *p == partition)
                .map(|(id, _)| id.clone())
                .collect();
            t.retain(|_, (_, p)| *p != partition);
            gone
        };
        let mut busy = self.busy.borrow_mut();
        for id in gone {
            busy.remove(&id);
        }
    }
}

/// What a shard that hosts the coordinator provides.
pub trait TxnHost: GroupHost + ControllerHost {
    fn transactions(&self) -> &Transactions;
}

/// The transaction-state partition of `id`.
pub fn coordinator_of<S: TxnHost>(shard: &Shard<S>, id: &str) -> Option<(ShardId, i32)> {
    let n = shard.meta().topic(TRANSACTION_STATE_TOPIC)?.partitions;
    let p = partition_for(id, n);
    Some((shard.owner_of(TRANSACTION_STATE_TOPIC, p), p))
}

/// The live broker that coordinates `id`: the leader of its partition.
pub fn coordinator_broker<'a>(
    snapshot: &'a crate::meta::Snapshot,
    id: &str,
) -> Option<(&'a crate::image::BrokerMeta, i32)> {
    crate::groups::coordinator_in(snapshot, TRANSACTION_STATE_TOPIC, id)
}

/// Has the controller create `__transaction_state` (on the first
/// FindCoordinator for a transactional id, as Kafka does). Returns at
/// once; the topic shows in a later metadata snapshot.
pub fn create_topic<S: TxnHost>(shard: &Shard<S>) {
    let config = &shard.config().transactions;
    let spec = InternalTopic {
        name: TRANSACTION_STATE_TOPIC,
        partitions: config.log_partitions,
        replication_factor: config.log_replication_factor,
        segment_bytes: config.log_segment_bytes,
    };
    let job = shard.run_on(ShardId(0), move |s| {
        let s = s.clone();
        async move {
            let Some(c) = s.services.controller() else {
                return;
            };
            if let Err(e) = c.ensure_internal_topic(&s, spec).await {
                tracing::warn!(error = %e, "creating {TRANSACTION_STATE_TOPIC}");
            }
        }
    });
    compio::runtime::spawn(async move {
        let _ = job.await;
    })
    .detach();
}

/// Runs `f` on the shard that coordinates `id`, with the id's partition.
/// `COORDINATOR_NOT_AVAILABLE` when there is no transaction-state topic
/// or the shard stopped; `NOT_COORDINATOR` when another broker leads the
/// id's partition; `COORDINATOR_LOAD_IN_PROGRESS` while a new leader's
/// high watermark is short of its epoch's start.
pub async fn on_coordinator<S: TxnHost, T, F, Fut>(shard: &Shard<S>, id: &str, f: F) -> Result<T, ErrorCode>
where
    T: Send + 'static,
    F: FnOnce(Rc<Shard<S>>, i32) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, ErrorCode>> + 'static,
{
    let (owner, partition) = coordinator_of(shard, id).ok_or(ErrorCode::CoordinatorNotAvailable)?;
    let leader = shard
        .meta()
        .topic(TRANSACTION_STATE_TOPIC)
        .and_then(|t| t.leader(partition));
    if leader != Some(shard.config().node_id) {
        return Err(ErrorCode::NotCoordinator);
    }
    shard
        .submit_to(owner, move |s| async move {
            match s.partition(TRANSACTION_STATE_TOPIC, partition) {
                Some(p) if p.is_leader() && p.epoch_settled() => f(s, partition).await,
                Some(p) if p.is_leader() => Err(ErrorCode::CoordinatorLoadInProgress),
                _ => Err(ErrorCode::NotCoordinator),
            }
        })
        .await
        .map_err(|_| ErrorCode::CoordinatorNotAvailable)?
}

/// The leader epoch of this shard's transaction-state partition: the
/// coordinator epoch its markers carry. `None` when it no longer leads.
fn leading(shard: &Shard<impl TxnHost>, partition: i32) -> Option<(Rc<Partition>, i32)> {
    let p = shard.partition(TRANSACTION_STATE_TOPIC, partition)?;
    let epoch = p.leader_epoch();
    p.is_leader().then_some((p, epoch))
}

/// Writes `id`'s new state (or its removal) to its partition, waits until
/// it is synced and on the ISR, then applies it.
async fn write<S: TxnHost>(
    shard: &Rc<Shard<S>>,
    partition: i32,
    id: &Arc<str>,
    state: Option<&TxnMeta>,
) -> Result<(), ErrorCode> {
    let (p, epoch) = leading(shard, partition).ok_or(ErrorCode::NotCoordinator)?;
    p.check_min_isr().map_err(|_| ErrorCode::CoordinatorNotAvailable)?;
    let info = p
        .log
        .append(records::batch_of(id, state, now_ms()), epoch.max(0))
        .map_err(|e| error_codes::for_log_error(&e))?;
    let end = info.last_offset + 1;
    let not_coordinator = |code| match code {
        ErrorCode::NotLeaderOrFollower | ErrorCode::KafkaStorageError => ErrorCode::NotCoordinator,
        _ => ErrorCode::CoordinatorNotAvailable,
    };
    p.log
        .wait(end, Durability::Synced)
        .await
        .map_err(|e| not_coordinator(error_codes::for_log_error(&e)))?;
    if p.replica.borrow().replicas.len() > 1 {
        let deadline = Instant::now() + Duration::from_millis(shard.config().transactions.marker_timeout_ms);
        p.wait_replicated(end, epoch, deadline)
            .await
            .map_err(|r| not_coordinator(r.code))?;
    }
    shard.services.transactions().apply(id, state.cloned(), partition);
    Ok(())
}

/// Allocates a producer id through this broker's controller duties.
async fn new_producer_id<S: TxnHost>(shard: &Shard<S>) -> Result<i64, ErrorCode> {
    match shard
        .submit_to(ShardId(0), |s0| async move {
            crate::controller::allocate_producer_id(&s0).await
        })
        .await
    {
        Ok(Ok(id)) => Ok(id),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "allocating a producer id for a transactional id");
            Err(ErrorCode::CoordinatorNotAvailable)
        }
        Err(_) => Err(ErrorCode::CoordinatorNotAvailable),
    }
}

/// InitProducerId for a transactional id, on its coordinator: the
/// producer id and epoch, once written.
pub async fn init_producer_id<S: TxnHost>(
    shard: Rc<Shard<S>>,
    partition: i32,
    id: Arc<str>,
    timeout_ms: i32,
    expected: (i64, i16),
) -> Result<(i64, i16), ErrorCode> {
    if timeout_ms <= 0 || timeout_ms > shard.config().transactions.max_timeout_ms {
        return Err(ErrorCode::InvalidTransactionTimeout);
    }
    let txns = shard.services.transactions();
    if !txns.wait_until_free(&id, busy_wait(&shard)).await {
        return Err(ErrorCode::ConcurrentTransactions);
    }
    let fresh = if state::needs_new_producer_id(txns.get(&id).as_ref()) {
        Some(new_producer_id(&shard).await?)
    } else {
        None
    };
    let txns = shard.services.transactions();
    let decision = state::init(txns.get(&id).as_ref(), &id, timeout_ms, fresh, expected, now_ms())?;
    if !txns.take(&id) {
        return Err(ErrorCode::ConcurrentTransactions);
    }
    match decision {
        Init::Write(m) => {
            let written = write(&shard, partition, &id, Some(&m)).await;
            shard.services.transactions().release(&id);
            written.map(|()| (m.producer_id, m.epoch))
        }
        Init::AbortFirst(m) => {
            tracing::info!(transactional_id = %id, producer_id = m.producer_id, epoch = m.epoch, "aborting the open transaction of a new producer's transactional id");
            prepare_and_finish(&shard, partition, m).await?;
            Err(ErrorCode::ConcurrentTransactions)
        }
    }
}

/// Writes the prepared state `m` (the id already taken), then sends its
/// markers and completes it in the background; the id is released when
/// that is done. An error here releases it at once.
async fn prepare_and_finish<S: TxnHost>(shard: &Rc<Shard<S>>, partition: i32, m: TxnMeta) -> Result<(), ErrorCode> {
    if let Err(e) = write(shard, partition, &m.id, Some(&m)).await {
        shard.services.transactions().release(&m.id);
        return Err(e);
    }
    compio::runtime::spawn(finish(shard.clone(), partition, m)).detach();
    Ok(())
}

/// Sends the markers of the prepared transaction `m` (the id taken), then
/// writes it complete and releases the id. Stops when this shard no longer
/// leads the id's partition: the next coordinator finishes it from the log.
async fn finish<S: TxnHost>(shard: Rc<Shard<S>>, partition: i32, m: TxnMeta) {
    let Some((_, epoch)) = leading(&shard, partition) else {
        return;
    };
    let still = || leading(&shard, partition).is_some_and(|(_, e)| e == epoch);
    if !markers::mark_all(&shard, &m, epoch, still).await {
        return;
    }
    loop {
        let done = state::complete(&m, now_ms());
        match write(&shard, partition, &m.id, Some(&done)).await {
            Ok(()) => break,
            Err(ErrorCode::NotCoordinator) => return,
            Err(e) => {
                tracing::info!(transactional_id = %m.id, error = ?e, "completing a transaction; will retry");
                compio::runtime::time::sleep(Duration::from_millis(100)).await;
                if !still() {
                    return;
                }
            }
        }
    }
    shard.services.transactions().release(&m.id);
}

/// How long a request waits for its id to be free
/// (`sluice.transaction.busy.wait.ms`).
fn busy_wait<S: TxnHost>(shard: &Shard<S>) -> Duration {
    Duration::from_millis(shard.config().transactions.busy_wait_ms)
}

/// Checks out `id` for a change: present, and free (after waiting up to
/// `sluice.transaction.busy.wait.ms` for it).
async fn current<S: TxnHost>(shard: &Shard<S>, id: &str) -> Result<TxnMeta, ErrorCode> {
    let txns = shard.services.transactions();
    if !txns.wait_until_free(id, busy_wait(shard)).await {
        return Err(ErrorCode::ConcurrentTransactions);
    }
    txns.get(id).ok_or(ErrorCode::InvalidProducerIdMapping)
}

/// AddPartitionsToTxn and AddOffsetsToTxn, on the coordinator.
pub async fn add_partitions<S: TxnHost>(
    shard: Rc<Shard<S>>,
    partition: i32,
    id: Arc<str>,
    producer_id: i64,
    epoch: i16,
    partitions: Vec<TxnPartition>,
) -> Result<(), ErrorCode> {
    let m = current(&shard, &id).await?;
    let Some(next) = state::add_partitions(&m, producer_id, epoch, &partitions, now_ms())? else {
        return Ok(());
    };
    let txns = shard.services.transactions();
    if !txns.take(&id) {
        return Err(ErrorCode::ConcurrentTransactions);
    }
    let written = write(&shard, partition, &id, Some(&next)).await;
    shard.services.transactions().release(&id);
    written
}

/// AddPartitionsToTxn's verification (KIP-890): whether the open
/// transaction of the producer holds `partition`.
pub fn verify<S: TxnHost>(
    shard: &Shard<S>,
    id: &str,
    producer_id: i64,
    epoch: i16,
    partition: &TxnPartition,
) -> Result<(), ErrorCode> {
    let m = shard
        .services
        .transactions()
        .get(id)
        .ok_or(ErrorCode::InvalidProducerIdMapping)?;
    state::verify(&m, producer_id, epoch, partition)
}

/// EndTxn, on the coordinator: answered once the prepared state is
/// written; the markers follow.
pub async fn end_txn<S: TxnHost>(
    shard: Rc<Shard<S>>,
    partition: i32,
    id: Arc<str>,
    producer_id: i64,
    epoch: i16,
    commit: bool,
) -> Result<(), ErrorCode> {
    let m = current(&shard, &id).await?;
    match state::end(&m, producer_id, epoch, commit, now_ms())? {
        End::Done => Ok(()),
        End::Prepare(next) => {
            if !shard.services.transactions().take(&id) {
                return Err(ErrorCode::ConcurrentTransactions);
            }
            prepare_and_finish(&shard, partition, next).await
        }
    }
}

/// Replays transaction-state partition `p` into the shard's table, then
/// sends again the markers of the transactions it finds prepared. Runs
/// when the shard becomes the partition's leader, before it serves.
pub fn load<S: TxnHost>(shard: &Rc<Shard<S>>, p: &Partition) -> Result<usize, String> {
    let txns = shard.services.transactions();
    txns.unload(p.index);
    let mut count = 0;
    p.log
        .for_each_batch(0, |h, batch| {
            if h.is_control() {
                return;
            }
            let read = crate::groups::records::for_each_record(batch, |k, v| match records::decode(k, v) {
                Ok((id, state)) => {
                    txns.apply(&id, state, p.index);
                    count += 1;
                }
                Err(e) => tracing::warn!(partition = p.index, offset = h.base_offset(), error = %e, "skipping unreadable transaction record"),
            });
            if let Err(e) = read {
                tracing::warn!(partition = p.index, offset = h.base_offset(), error = %e, "skipping unreadable transaction batch");
            }
        })
        .map_err(|e| e.to_string())?;
    for (m, partition) in txns.all() {
        if partition == p.index && m.status.is_prepared() && txns.take(&m.id) {
            compio::runtime::spawn(finish(shard.clone(), partition, m)).detach();
        }
    }
    Ok(count)
}

/// Bounds the transaction-state log as the offsets log is bounded: once a
/// partition this shard leads has rolled to a new segment, the current
/// state of each of its ids is written again at the log end, synced and
/// replicated, and the log start moves to the first rewritten record,
/// which deletes every older segment. Replay after that starts at the
/// rewrite, which holds the whole state. A partition with an id whose
/// write is in flight waits for a later tick: that write is in the log but
/// not yet in the table the rewrite copies. Writes after the rewrite land
/// after it and win. From the shard's periodic tasks.
pub async fn compact<S: TxnHost>(shard: &Rc<Shard<S>>, owned: &[Rc<Partition>]) {
    for p in owned {
        if p.log.segment_count() < 2 || p.log.is_poisoned() {
            continue;
        }
        let Some((_, epoch)) = leading(shard, p.index) else {
            continue;
        };
        let txns = shard.services.transactions();
        let ids: Vec<TxnMeta> = txns
            .all()
            .into_iter()
            .filter(|(_, partition)| *partition == p.index)
            .map(|(m, _)| m)
            .collect();
        if ids.iter().any(|m| txns.is_busy(&m.id)) {
            continue;
        }
        let start = p.log.log_end_offset();
        let mut end = start;
        for m in &ids {
            match p.log.append(records::batch_of(&m.id, Some(m), now_ms()), epoch.max(0)) {
                Ok(info) => end = info.last_offset + 1,
                Err(e) => {
                    tracing::error!(partition = p.index, error = %e, "rewriting transaction states");
                    break;
                }
            }
        }
        if end - start != ids.len() as i64 {
            continue;
        }
        let timeout = Duration::from_millis(shard.config().transactions.marker_timeout_ms);
        match p.drop_before_rewrite(start, end, epoch, timeout).await {
            Ok(_) => tracing::info!(
                partition = p.index,
                ids = ids.len(),
                log_start_offset = start,
                segments = p.log.segment_count(),
                "compacted the transaction-state log"
            ),
            Err(e) => tracing::warn!(partition = p.index, error = %e, "compacting the transaction-state log"),
        }
    }
}

/// Aborts the transactions open past their timeout (with the epoch
/// bumped, which fences their producers); on the housekeeping tick.
pub fn abort_timed_out<S: TxnHost>(shard: &Rc<Shard<S>>) {
    let now = now_ms();
    let txns = shard.services.transactions();
    for (m, partition) in txns.all() {
        let Some(abort) = state::abort_timed_out(&m, now) else {
            continue;
        };
        if !txns.take(&m.id) {
            continue;
        }
        tracing::info!(transactional_id = %m.id, producer_id = m.producer_id, timeout_ms = m.timeout_ms, "aborting a transaction past its timeout");
        let shard = shard.clone();
        compio::runtime::spawn(async move {
            if let Err(e) = prepare_and_finish(&shard, partition, abort).await {
                tracing::info!(error = ?e, "aborting a timed-out transaction; will retry at the next check");
            }
        })
        .detach();
    }
}

/// Removes the ids idle past `transactional.id.expiration.ms`.
pub fn expire<S: TxnHost>(shard: &Rc<Shard<S>>) {
    let now = now_ms();
    let expiration = shard.config().transactions.id_expiration_ms;
    let txns = shard.services.transactions();
    for (m, partition) in txns.all() {
        if !state::expired(&m, now, expiration) || !txns.take(&m.id) {
            continue;
        }
        let shard = shard.clone();
        compio::runtime::spawn(async move {
            if let Err(e) = write(&shard, partition, &m.id, None).await {
                tracing::info!(transactional_id = %m.id, error = ?e, "removing an expired transactional id");
            }
            shard.services.transactions().release(&m.id);
        })
        .detach();
    }
}
