//! Followers: each shard fetches the partitions it owns and follows from
//! their leaders, with the ordinary Fetch API (v15, ReplicaState), one
//! long-polled connection per (shard, leader broker) carrying all of that
//! shard's partitions led there. Answers are applied on the shard that owns
//! the partitions, with no locks: truncation at a diverging epoch, follower
//! appends that keep the leader's offsets and epochs (CRC-checked by the
//! engine), the leader's high watermark and log start.
//!
//! The leader side is in the Fetch handler: a fetch with a replica id reads
//! up to the log end (the same zero-copy file path as consumers) and tells
//! the partition where the follower is, which moves the high watermark and
//! the ISR ([`crate::partition::Partition::follower_fetched`]).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse};
use sluice_engine::Durability;

use crate::error_codes::ErrorCode;
use crate::partition::{Partition, Role};
use crate::protocol::peer::{self, Call};
use crate::shard::Shard;
use crate::util::{Changed, race};

/// The Fetch version followers speak: topic ids and ReplicaState.
pub const FETCH_VERSION: i16 = 15;
/// Largest answer a follower reads (a bound on what a bad peer can make it
/// allocate); the leader's answers stay within
/// `replica.fetch.response.max.bytes` plus one batch.
const MAX_ANSWER_BYTES: usize = 256 << 20;

/// The fetchers of one shard, by leader broker.
#[derive(Debug, Default)]
pub struct Fetchers {
    by_leader: RefCell<HashMap<i32, Rc<Fetcher>>>,
}

#[derive(Debug)]
struct Fetcher {
    leader: i32,
    partitions: RefCell<BTreeSet<(Arc<str>, i32)>>,
    changed: Changed,
    /// A partition was added: a fetch in flight without it is abandoned,
    /// so a new leader's followers reach it without waiting out a long
    /// poll of `replica.fetch.wait.max.ms` (its high watermark, and the
    /// acks=all writes it answers, wait for them).
    grew: Changed,
    correlation: Cell<i32>,
}

impl Fetchers {
    /// Fetches `topic`-`index` from `leader` from now on (and from no one
    /// else).
    pub fn follow<S: FetcherHost>(&self, shard: &Rc<Shard<S>>, topic: Arc<str>, index: i32, leader: i32) {
        self.unfollow(&topic, index);
        let mut table = self.by_leader.borrow_mut();
        let f = table.entry(leader).or_insert_with(|| {
            let f = Rc::new(Fetcher {
                leader,
                partitions: RefCell::default(),
                changed: Changed::default(),
                grew: Changed::default(),
                correlation: Cell::new(0),
            });
            compio::runtime::spawn(run(shard.clone(), f.clone())).detach();
            f
        });
        if f.partitions.borrow_mut().insert((topic, index)) {
            f.grew.notify();
        }
        f.changed.notify();
    }

    /// Stops fetching `topic`-`index`.
    pub fn unfollow(&self, topic: &Arc<str>, index: i32) {
        for f in self.by_leader.borrow().values() {
            if f.partitions.borrow_mut().remove(&(topic.clone(), index)) {
                f.changed.notify();
            }
        }
    }
}

/// One partition of a fetch, as it was when the fetch was sent.
struct Sent {
    partition: Rc<Partition>,
    leader_epoch: i32,
    fetch_offset: i64,
}

async fn run<S: FetcherHost>(shard: Rc<Shard<S>>, f: Rc<Fetcher>) {
    let config = shard.common.config.clone();
    let backoff = Duration::from_millis(config.replica_fetch_backoff_ms.max(10));
    let mut conn: Option<crate::protocol::link::Link> = None;
    tracing::debug!(shard = shard.id.0, leader = f.leader, "replica fetcher started");
    loop {
        if shard.stopping.is_set() {
            break;
        }
        let wanted: Vec<(Arc<str>, i32)> = f.partitions.borrow().iter().cloned().collect();
        if wanted.is_empty() {
            let mut table = shard.services.fetchers().by_leader.borrow_mut();
            if table.get(&f.leader).is_some_and(|cur| Rc::ptr_eq(cur, &f)) && f.partitions.borrow().is_empty() {
                table.remove(&f.leader);
                break;
            }
            continue;
        }
        // Armed before the request is built: a partition added from here
        // on ends the fetch below.
        let grew = f.grew.next();
        let snapshot = shard.meta();
        let Some(addr) = snapshot
            .brokers
            .get(&f.leader)
            .map(|b| leader_address(b, &config, shard.id.0, shard.shard_count()))
        else {
            let _ = race(compio::runtime::time::sleep(backoff), f.changed.next()).await;
            continue;
        };
        let (req, mut sent) = fetch_request(&shard, &f, &snapshot, &wanted);
        if sent.is_empty() {
            // Roles not applied yet (or the topic is gone): wait for a change.
            let _ = race(compio::runtime::time::sleep(backoff), f.changed.next()).await;
            continue;
        }
        let correlation = f.correlation.get().wrapping_add(1);
        f.correlation.set(correlation);
        let timeout = Duration::from_millis(config.replica_fetch_wait_max_ms + 30_000);
        let answer = race(
            exchange(
                &mut conn,
                &addr,
                correlation,
                config.node_id,
                &req,
                timeout,
                &shard.common.peers,
            ),
            race(shard.stopping.wait(), grew),
        )
        .await;
        let resp = match answer {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(leader = f.leader, %addr, error = %e, "replica fetch failed");
                conn = None;
                let _ = race(compio::runtime::time::sleep(backoff), shard.stopping.wait()).await;
                continue;
            }
            Err(Ok(())) => break,
            Err(Err(())) => {
                // Its answer would come on this connection after the long
                // poll: drop it and fetch again with the new partition.
                conn = None;
                continue;
            }
        };
        let pause = take_answer(&f, resp, &mut sent, &config, backoff).await;
        if let Some(pause) = pause {
            let _ = race(compio::runtime::time::sleep(pause), f.changed.next()).await;
        }
    }
    tracing::debug!(shard = shard.id.0, leader = f.leader, "replica fetcher stopped");
}

/// The pause after an answer that says the leader's metadata and this
/// broker's differ (they converge within the metadata propagation time).
const TRANSIENT_BACKOFF: Duration = Duration::from_millis(50);

/// Why a partition's answer was not applied.
enum Failure {
    /// The leader does not (yet, or any more) agree on the partition's
    /// leadership: retried after [`TRANSIENT_BACKOFF`].
    Transient(ErrorCode),
    Other(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Self::Other(e)
    }
}

/// What [`finish`] completes of an answer whose batches were queued.
struct Appended {
    /// The log end after the answer's batches.
    end: i64,
    high_watermark: i64,
    log_start_offset: i64,
}

/// Applies one partition's answer on the follower: truncates (done when
/// it returns `None`) or queues its batches for [`finish`].
async fn apply(s: &Sent, pd: PartitionData) -> Result<Option<Appended>, Failure> {
    let p = &s.partition;
    tracing::trace!(topic = %p.topic, partition = p.index, offset = s.fetch_offset, code = pd.error_code, hw = pd.high_watermark, div_epoch = pd.diverging_epoch.epoch, div_end = pd.diverging_epoch.end_offset, bytes = pd.records.as_ref().map_or(0, |r| r.len()), "replica fetch answer");
    match ErrorCode::try_from_code(pd.error_code) {
        None => {}
        Some(
            code @ (ErrorCode::NotLeaderOrFollower
            | ErrorCode::UnknownLeaderEpoch
            | ErrorCode::FencedLeaderEpoch
            | ErrorCode::UnknownTopicOrPartition
            | ErrorCode::UnknownTopicId
            | ErrorCode::StaleBrokerEpoch),
        ) => return Err(Failure::Transient(code)),
        Some(ErrorCode::OffsetOutOfRange) => {
            if pd.log_start_offset > p.log.log_end_offset() {
                tracing::info!(topic = %p.topic, partition = p.index, start = pd.log_start_offset, "behind the leader's log start: restarting the replica there");
                p.truncate_fully(pd.log_start_offset).await?;
                return Ok(None);
            }
            let hw = p.log.high_watermark();
            tracing::warn!(topic = %p.topic, partition = p.index, offset = s.fetch_offset, hw, "fetch offset past the leader's log end: truncating to the high watermark");
            p.truncate_to(hw).await?;
            return Ok(None);
        }
        Some(e) => return Err(Failure::Other(format!("leader answered {e:?}"))),
    }
    let div = &pd.diverging_epoch;
    if div.epoch >= 0 || div.end_offset >= 0 {
        let target = if div.epoch < 0 {
            p.log.high_watermark()
        } else {
            let mine = p.log.epoch_end(div.epoch);
            if mine.epoch < 0 {
                div.end_offset.min(p.log.high_watermark())
            } else {
                div.end_offset.min(mine.end_offset)
            }
        };
        let end = p.truncate_to(target).await?;
        tracing::info!(topic = %p.topic, partition = p.index, epoch = div.epoch, leader_end = div.end_offset, end, "truncated a diverging tail");
        return Ok(None);
    }
    let end = match pd.records.filter(|r| !r.is_empty()) {
        Some(records) => p.append_replicated(records).map_err(|e| e.to_string())?,
        None => s.fetch_offset,
    };
    Ok(Some(Appended {
        end,
        high_watermark: pd.high_watermark,
        log_start_offset: pd.log_start_offset,
    }))
}

/// Waits for a partition's queued batches to reach `durability`, then
/// takes the leader's high watermark and log start.
async fn finish(s: &Sent, a: &Appended, durability: Durability) -> Result<(), String> {
    let p = &s.partition;
    if a.end > s.fetch_offset {
        p.log.wait(a.end, durability).await.map_err(|e| e.to_string())?;
    }
    if a.high_watermark >= 0 {
        p.log.set_hw_limit(a.high_watermark);
    }
    if a.log_start_offset > p.log.log_start_offset() && a.log_start_offset <= p.log.high_watermark() {
        p.log
            .advance_log_start_offset(a.log_start_offset)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Where a follower's shard fetches from `leader`: with
/// `sluice.shard.listeners`, when the leader has as many shards as this
/// node (so its shard of the same index owns the same partitions), that
/// shard's own endpoint on the inter-broker listener, so the fetch is
/// served without a hop between its shards; else its registered address.
fn leader_address(
    leader: &crate::image::BrokerMeta,
    config: &crate::config::BrokerConfig,
    me: usize,
    shards: usize,
) -> String {
    let ports = leader.shard_ports(&config.inter_broker().name);
    match ports.get(me) {
        Some(port) if config.shard_listeners && ports.len() == shards => format!("{}:{port}", leader.host),
        _ => format!("{}:{}", leader.host, leader.port),
    }
}

/// Sends one fetch on the connection (opening it when there is none) and
/// reads its answer.
async fn exchange(
    conn: &mut Option<crate::protocol::link::Link>,
    addr: &str,
    correlation: i32,
    me: i32,
    req: &FetchRequest,
    timeout: Duration,
    security: &peer::PeerSecurity,
) -> Result<FetchResponse, String> {
    let client_id = format!("sluice-replica-{me}");
    let call = Call {
        security,
        key: ApiKey::Fetch,
        version: FETCH_VERSION,
        client_id: &client_id,
        correlation,
        max_answer_bytes: MAX_ANSWER_BYTES,
        timeout,
    };
    let resp: FetchResponse = peer::call(conn, addr, call, req).await?;
    if resp.error_code != 0 {
        return Err(format!("fetch refused with error {}", resp.error_code));
    }
    Ok(resp)
}

/// How long a leader waits after a refused ISR change before asking again.
const ISR_RETRY: Duration = Duration::from_secs(1);

/// Leader: asks the controller for `isr` as the ISR of `p`, unless another
/// change is in flight; the answer arrives as a new image. One ask per
/// partition at a time.
pub fn propose_isr<S: FetcherHost>(shard: &Rc<Shard<S>>, p: &Rc<Partition>, isr: Vec<i32>) {
    let change = {
        let mut r = p.replica.borrow_mut();
        if r.role != Role::Leader || !r.may_ask() {
            return;
        }
        let Some(topic) = shard.meta().topic(&p.topic).map(|t| t.id) else {
            return;
        };
        let broker_epoch = shard.meta().brokers.get(&r.me).map_or(-1, |b| b.epoch);
        r.pending_isr = Some(isr.clone());
        crate::controller::IsrChange {
            broker: r.me,
            broker_epoch,
            topic,
            partition: p.index,
            leader_epoch: r.leader_epoch,
            partition_epoch: r.partition_epoch,
            isr,
        }
    };
    tracing::info!(topic = %p.topic, partition = p.index, isr = ?change.isr, "asking the controller for an ISR change");
    let (shard, p) = (shard.clone(), p.clone());
    compio::runtime::spawn(async move {
        let asked = change.isr.clone();
        let before = p.replica.borrow().isr.len();
        let answer = crate::controller::ask(&shard, vec![Ok(crate::controller::ControllerRequest::AlterIsr(change))]).await;
        let failed = answer.into_iter().next().and_then(|r| r.err());
        let mut r = p.replica.borrow_mut();
        if r.pending_isr.as_ref() == Some(&asked) {
            // Done either way: the image carries the result, or the next
            // fetch or lag check asks again (not before a second, when
            // refused).
            r.pending_isr = None;
            if failed.is_some() {
                r.isr_retry_at = Some(std::time::Instant::now() + ISR_RETRY);
            }
        }
        drop(r);
        if let Some(e) = failed {
            tracing::warn!(topic = %p.topic, partition = p.index, isr = ?asked, error = %e.message, "ISR change refused");
        } else if asked.len() < before {
            crate::base::counters::ShardMetrics::bump(&shard.metrics.isr_shrinks);
        } else if asked.len() > before {
            crate::base::counters::ShardMetrics::bump(&shard.metrics.isr_expands);
        }
        // The high watermark waits for the maximal ISR; recompute it.
        p.refresh_hw();
    })
    .detach();
}

/// The fetch for the partitions of `wanted` this shard still follows from
/// `f`'s leader, each from its log end, and what was asked of each.
fn fetch_request<S: FetcherHost>(
    shard: &Shard<S>,
    f: &Fetcher,
    snapshot: &crate::meta::Snapshot,
    wanted: &[(Arc<str>, i32)],
) -> (FetchRequest, HashMap<(uuid::Uuid, i32), Sent>) {
    let config = &shard.common.config;
    let my_epoch = snapshot.brokers.get(&config.node_id).map_or(-1, |b| b.epoch);
    let mut sent: HashMap<(uuid::Uuid, i32), Sent> = HashMap::new();
    let mut req = FetchRequest::default();
    req.replica_id = BrokerId(-1);
    req.replica_state = ReplicaState::default()
        .with_replica_id(BrokerId(config.node_id))
        .with_replica_epoch(my_epoch);
    req.max_wait_ms = i32::try_from(config.replica_fetch_wait_max_ms).unwrap_or(i32::MAX);
    req.min_bytes = 1;
    req.max_bytes = i32::try_from(config.replica_fetch_response_max_bytes).unwrap_or(i32::MAX);
    req.session_id = 0;
    req.session_epoch = -1;
    for (topic, index) in wanted {
        let (Some(meta), Some(p)) = (snapshot.topic(topic), shard.partition(topic, *index)) else {
            continue;
        };
        if p.replica.borrow().role != (Role::Follower { leader: f.leader }) {
            continue;
        }
        let fetch_offset = p.log.log_end_offset();
        let part = FetchPartition::default()
            .with_partition(*index)
            .with_current_leader_epoch(p.leader_epoch())
            .with_fetch_offset(fetch_offset)
            .with_last_fetched_epoch(p.log.latest_epoch())
            .with_log_start_offset(p.log.log_start_offset())
            .with_partition_max_bytes(i32::try_from(config.replica_fetch_max_bytes).unwrap_or(i32::MAX));
        match req.topics.iter_mut().find(|t| t.topic_id == meta.id) {
            Some(t) => t.partitions.push(part),
            None => req
                .topics
                .push(FetchTopic::default().with_topic_id(meta.id).with_partitions(vec![part])),
        }
        sent.insert(
            (meta.id, *index),
            Sent {
                leader_epoch: p.leader_epoch(),
                partition: p,
                fetch_offset,
            },
        );
    }
    (req, sent)
}

/// Applies a fetch answer: each partition's batches queued, then every
/// write waited for together. The pause before the next fetch, when a
/// partition's answer asks for one.
async fn take_answer(
    f: &Fetcher,
    resp: FetchResponse,
    sent: &mut HashMap<(uuid::Uuid, i32), Sent>,
    config: &crate::config::BrokerConfig,
    backoff: Duration,
) -> Option<Duration> {
    let mut pause = None;
    let mut note = |s: &Sent, failure: Failure| match failure {
        // The two brokers' metadata differ for a moment: look again
        // soon.
        Failure::Transient(code) => {
            tracing::debug!(topic = %s.partition.topic, partition = s.partition.index, leader = f.leader, ?code, "replica fetch answer");
            pause = Some(pause.map_or(TRANSIENT_BACKOFF, |p: Duration| p.max(TRANSIENT_BACKOFF)));
        }
        Failure::Other(e) => {
            tracing::warn!(topic = %s.partition.topic, partition = s.partition.index, leader = f.leader, error = %e, "replica fetch answer");
            pause = Some(backoff);
        }
    };
    let mut appended = Vec::new();
    for t in resp.responses {
        for pd in t.partitions {
            let Some(s) = sent.remove(&(t.topic_id, pd.partition_index)) else {
                continue;
            };
            // The role may have changed while the fetch was out.
            if s.partition.leader_epoch() != s.leader_epoch
                || !f
                    .partitions
                    .borrow()
                    .contains(&(s.partition.topic.clone(), s.partition.index))
            {
                continue;
            }
            match apply(&s, pd).await {
                Ok(Some(a)) => appended.push((s, a)),
                Ok(None) => {}
                Err(failure) => note(&s, failure),
            }
        }
    }
    // Every partition's batches are queued before any write is waited
    // for, so the rounds of all partitions go to the disk together; the
    // next fetch (whose offsets tell the leader what is written here)
    // waits for all of them.
    let durability = if config.replica_fsync_before_ack {
        Durability::Synced
    } else {
        Durability::Written
    };
    let finished = futures_util::future::join_all(appended.iter().map(|(s, a)| finish(s, a, durability))).await;
    for ((s, _), r) in appended.iter().zip(finished) {
        if let Err(e) = r {
            note(s, Failure::Other(e));
        }
    }
    pause
}

/// What hosts the replica fetchers: the services a node runs on each
/// shard hold the fetchers of the partitions that shard follows (and
/// reach the controller, which ISR changes go to).
pub trait FetcherHost: crate::controller::ControllerHost {
    fn fetchers(&self) -> &Fetchers;
}
