//! The controller: it turns admin requests into metadata records and
//! writes them to the controller quorum's log. It runs on shard 0.
//!
//! A change is drafted on a copy of the image: each request's resource is
//! checked, its ids chosen, its record built and applied to the draft, so
//! later resources of the same request see it. The records then go to the
//! quorum as one log entry; each resource is answered with what applying
//! its record did (the log's answer wins over the draft's). Once applied,
//! the new image is installed on every shard before the answer. If a shard
//! cannot open a partition the change made, the change is undone with
//! records that reverse it, and the resource gets KAFKA_STORAGE_ERROR.
//! Changes are serialised on the controller.
//!
//! What is drafted, and how, is pure and lives in the metadata crate
//! (`sluice_metadata::controller`, re-exported here); this module is what
//! runs it on shard 0: the quorum, the change lock, the duties loop.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error_codes::ErrorCode;
use crate::image::{BrokerMeta, MetaRecord, PartitionState};
use crate::meta::{MetaError, OFFSETS_TOPIC};
use crate::quorum::{
    AnyQuorum, Command, ObserverQuorum, Peer, Publisher, Quorum, QuorumError, QuorumSettings, RaftQuorum,
};
use crate::shard::{Shard, ShardGone, ShardId};
use crate::util::Changed;

/// The controller's state machine lives in the metadata crate; its
/// requests, drafts and records are named here as before.
pub use sluice_metadata::controller::*;

/// Producer ids a broker takes from the controller at a time.
const PRODUCER_ID_BLOCK: i64 = 1000;

/// Free bytes the metadata log's disk must keep before a change is
/// written: a write that fails for space would stop the quorum.
const METADATA_HEADROOM: u64 = 1 << 20;

/// How long a start waits for the quorum to elect a leader and replay the
/// log before it serves the metadata it has.
const RECOVERY_WAIT: Duration = Duration::from_secs(10);

/// The controller's state, on shard 0 only.
#[derive(Debug)]
pub struct Controller {
    quorum: AnyQuorum,
    node_id: i32,
    /// `sluice.max.partitions`: partitions of all topics together.
    max_partitions: i64,
    /// `default.replication.factor`.
    default_replication_factor: i16,
    /// Set while a change is being written and installed; others wait.
    busy: Cell<bool>,
    done: Changed,
    /// This broker's block of producer ids: the next to hand out and the
    /// end of the block.
    producer_ids: Cell<(i64, i64)>,
    /// This broker's epoch once it has registered.
    epoch: Cell<Option<i64>>,
    /// Set by a clean shutdown once this broker has fenced itself: no more
    /// heartbeats.
    leaving: Cell<bool>,
    /// How partition leaders are elected.
    rules: Rules,
    /// Set once `__consumer_offsets` is known to exist.
    offsets_ready: Cell<bool>,
    /// How this node's connections to the voters are secured.
    transport: Arc<crate::quorum::Transport>,
}

impl Controller {
    /// Starts the controller on shard 0: opens the metadata quorum, brings
    /// topics from an older data directory into it, installs the image on
    /// every shard, registers this broker and makes sure the offsets topic
    /// exists. The broker serves nothing before this returns.
    pub async fn start<S: ControllerHost>(shard: &Rc<Shard<S>>) -> Result<(), String> {
        let config = shard.config();
        let meta_dir = config.data_dir.join("meta");
        let weak = Rc::downgrade(shard);
        let publisher: Publisher = Rc::new(move |snapshot| {
            let weak = weak.clone();
            Box::pin(async move {
                match weak.upgrade() {
                    Some(s) => s.publish(snapshot).await,
                    None => Err("the controller shard stopped".into()),
                }
            })
        });
        let node_id = u64::try_from(config.node_id).map_err(|_| format!("node.id {} is negative", config.node_id))?;
        let fresh = check_identity(&meta_dir, &config.cluster_id, config.node_id)?;
        let transport = Arc::new(crate::quorum::Transport::from_config(&shard.common.config)?);
        let voters = if config.quorum_voters.is_empty() {
            // One voter, in this process: it needs no address.
            BTreeMap::from([(node_id, String::new())])
        } else {
            config
                .quorum_voters
                .iter()
                .map(|(id, addr)| (*id as u64, addr.clone()))
                .collect()
        };
        let settings = QuorumSettings {
            node_id,
            voters,
            snapshot_every: config.metadata_snapshot_records,
            write_timeout: Duration::from_millis(config.controller_write_timeout_ms),
            transport: transport.clone(),
        };
        let quorum = if config.roles.controller {
            let listener = crate::quorum::bind(&settings).await?;
            let dir = meta_dir.join("quorum");
            AnyQuorum::Voter(RaftQuorum::start(&dir, listener, settings, publisher, RECOVERY_WAIT).await?)
        } else {
            std::fs::create_dir_all(&meta_dir).map_err(|e| format!("{}: {e}", meta_dir.display()))?;
            AnyQuorum::Observer(ObserverQuorum::start(&meta_dir, settings, publisher, RECOVERY_WAIT).await?)
        };
        if fresh {
            write_identity(&meta_dir, &config.cluster_id, config.node_id)?;
        }
        let controller = Self {
            quorum,
            node_id: config.node_id,
            max_partitions: i64::try_from(config.max_partitions).unwrap_or(i64::MAX),
            default_replication_factor: config.default_replication_factor,
            busy: Cell::new(false),
            done: Changed::default(),
            producer_ids: Cell::new((0, 0)),
            epoch: Cell::new(None),
            leaving: Cell::new(false),
            rules: Rules {
                unclean: config.unclean_leader_election,
                min_isr: usize::try_from(config.min_insync_replicas).unwrap_or(1),
            },
            offsets_ready: Cell::new(false),
            transport,
        };
        if shard.id != ShardId(0) {
            return Err(format!("the controller runs on shard 0, not {}", shard.id.0));
        }
        shard.services.set_controller(controller)?;
        let c = shard.services.controller().ok_or("the controller was not installed")?;
        c.migrate(&meta_dir).await?;
        let leader = c.quorum.leader();
        shard.publish(Arc::new(c.quorum.snapshot())).await?;
        // A one-voter quorum always leads: register and create the offsets
        // topic before serving. With several voters a node may start
        // without a reachable leader; it then serves the metadata it has
        // and its duties loop registers it once a leader answers.
        if config.quorum_voters.is_empty() {
            c.register(shard).await?;
            c.ensure_offsets_topic(shard).await?;
        } else {
            // Serve once registered, as Kafka's brokers do; without a
            // leader for RECOVERY_WAIT, serve the metadata this node has
            // and let the duties loop register it later.
            let deadline = Instant::now() + RECOVERY_WAIT;
            while let Err(e) = c.register(shard).await {
                if Instant::now() >= deadline {
                    tracing::warn!(error = %e, "not registered yet; serving the metadata this node has");
                    break;
                }
                compio::runtime::time::sleep(Duration::from_millis(100)).await;
            }
        }
        compio::runtime::spawn(duties(shard.clone(), leader)).detach();
        Ok(())
    }

    /// Starts an empty quorum from `meta/topics.json` and
    /// `meta/producer-ids`, the metadata files of a broker from before the
    /// quorum, keeping topic ids; the old files are renamed once the
    /// records are written.
    async fn migrate(&self, meta_dir: &Path) -> Result<(), String> {
        let Some((topics, reserved)) =
            crate::meta::read_legacy(meta_dir).map_err(|e| format!("reading old metadata: {e}"))?
        else {
            return Ok(());
        };
        let image_empty = {
            let st = self.quorum.state();
            st.image.topics().is_empty() && st.image.next_producer_id == 0
        };
        if image_empty {
            let mut records: Vec<MetaRecord> = topics
                .into_iter()
                .map(|t| MetaRecord::CreateTopic {
                    name: t.name.to_string(),
                    id: t.id,
                    configs: t.configs,
                    partitions: (0..t.partitions)
                        .map(|_| PartitionState::new(vec![self.node_id]))
                        .collect(),
                })
                .collect();
            if reserved > 0 {
                records.push(MetaRecord::ProducerIds {
                    broker: self.node_id,
                    first: 0,
                    count: reserved,
                });
            }
            let n = records.len();
            let reply = self
                .quorum
                .write(Command::each(records))
                .await
                .map_err(|e| format!("writing old metadata to the quorum: {e}"))?;
            if let Some(e) = reply.results.iter().find_map(|r| r.as_ref().err()) {
                return Err(format!("old metadata refused: {}", e.message));
            }
            tracing::info!(records = n, "moved meta/topics.json into the metadata log");
        }
        crate::meta::retire_legacy(meta_dir).map_err(|e| format!("renaming old metadata files: {e}"))
    }

    /// Registers this process's incarnation of the broker with a new epoch,
    /// unfenced: it is the controller's own process. See
    /// [`registration_records`] for what happens to an earlier incarnation.
    async fn register<S: ControllerHost>(&self, shard: &Shard<S>) -> Result<(), String> {
        let config = shard.config();
        for _ in 0..5 {
            let broker = BrokerMeta {
                id: self.node_id,
                incarnation: shard.incarnation(),
                epoch: -1, // chosen while drafting
                host: config.inter_broker().advertised_host.clone(),
                port: config.inter_broker().advertised_port,
                shards: u32::try_from(shard.shard_count()).unwrap_or(u32::MAX),
                fenced: true,
                registered_ms: crate::base::clock::now_ms(),
                shut_down: false,
                clean_start: shard.clean_start(),
                endpoints: config
                    .listeners
                    .iter()
                    .map(|l| crate::image::Endpoint {
                        listener: l.name.clone(),
                        host: l.advertised_host.clone(),
                        port: l.advertised_port,
                        security_protocol: l.protocol.id(),
                        shard_ports: l.shard_ports.clone(),
                    })
                    .collect(),
            };
            // One change, all or none: a fence record refused because the
            // image moved meanwhile refuses the registration with it, and
            // the next try drafts from the newer image.
            let answer = self
                .change(shard, vec![Ok(ControllerRequest::RegisterBroker(broker))], false)
                .await;
            match answer.into_iter().next() {
                Some(Ok(ControllerAnswer::Registered { epoch })) => {
                    self.epoch.set(Some(epoch));
                    return Ok(());
                }
                Some(Err(e))
                    if matches!(
                        e.code,
                        ErrorCode::StaleBrokerEpoch
                            | ErrorCode::InvalidRequest
                            | ErrorCode::InvalidUpdateVersion
                            | ErrorCode::FencedLeaderEpoch
                    ) =>
                {
                    // Another registration took the epoch, or the image
                    // moved under the fencing: draft again once it shows.
                    compio::runtime::time::sleep(Duration::from_millis(50)).await;
                }
                Some(Err(e)) => return Err(format!("registering broker {}: {}", self.node_id, e.message)),
                Some(Ok(a)) => unreachable!("a registration answered {a:?}"),
                None => return Err("registration written without an answer".into()),
            }
        }
        Err(format!("registering broker {}: the epoch kept moving", self.node_id))
    }

    /// Creates `__consumer_offsets` if it does not exist yet. Its partition
    /// count never changes afterwards: it decides which partition, and so
    /// which shard, coordinates each group.
    async fn ensure_offsets_topic<S: ControllerHost>(&self, shard: &Shard<S>) -> Result<(), String> {
        let groups = &shard.config().groups;
        let spec = InternalTopic {
            name: OFFSETS_TOPIC,
            partitions: groups.offsets_partitions,
            replication_factor: groups.offsets_replication_factor,
            segment_bytes: groups.offsets_segment_bytes,
        };
        self.ensure_internal_topic(shard, spec).await
    }

    /// Creates an internal topic (kept forever, never deleted) if it does
    /// not exist yet; its replication factor defaults to 3, or the number
    /// of controller voters when fewer.
    pub async fn ensure_internal_topic<S: ControllerHost>(
        &self,
        shard: &Shard<S>,
        spec: InternalTopic,
    ) -> Result<(), String> {
        if self.quorum.state().image.topic(spec.name).is_some() {
            return Ok(());
        }
        let configs = BTreeMap::from([
            ("retention.ms".to_string(), "-1".to_string()),
            ("retention.bytes".to_string(), "-1".to_string()),
            (
                "segment.bytes".to_string(),
                spec.segment_bytes.clamp(1024, i32::MAX as u64).to_string(),
            ),
        ]);
        let voters = i16::try_from(shard.config().quorum_voters.len())
            .unwrap_or(i16::MAX)
            .max(1);
        let create = ControllerRequest::CreateTopic {
            name: spec.name.into(),
            partitions: spec.partitions,
            replication_factor: spec.replication_factor.unwrap_or(voters.min(3)),
            assignments: Vec::new(),
            configs,
            validate_only: false,
        };
        let answer = self.change(shard, vec![Ok(create)], false).await;
        match answer.into_iter().next() {
            Some(Ok(_))
            | Some(Err(MetaError {
                code: ErrorCode::TopicAlreadyExists,
                ..
            })) => Ok(()),
            Some(Err(e)) => Err(format!("creating {}: {}", spec.name, e.message)),
            None => Err(format!("creating {}: no answer", spec.name)),
        }
    }

    fn draft(&self) -> Draft {
        Draft::new(
            self.quorum.state().image.clone(),
            self.max_partitions,
            self.default_replication_factor,
            self.rules,
        )
    }

    async fn lock(&self) {
        while self.busy.get() {
            self.done.next().await;
        }
        self.busy.set(true);
    }

    fn unlock(&self) {
        self.busy.set(false);
        self.done.notify();
    }

    /// Drafts each request ([`Draft::handle`]; an `Err` item is answered
    /// as it is), writes the records as one log entry, installs the
    /// result, and answers each request. With `leader_only`, written only
    /// if this node still leads the quorum (see [`Command::leader_only`]).
    async fn change<S: ControllerHost>(
        &self,
        shard: &Shard<S>,
        requests: Vec<Result<ControllerRequest, MetaError>>,
        leader_only: bool,
    ) -> Vec<Result<ControllerAnswer, MetaError>> {
        self.lock().await;
        let answers = self.change_locked(shard, requests, leader_only).await;
        self.unlock();
        answers
    }

    /// [`Self::change`] with the controller's lock held.
    async fn change_locked<S: ControllerHost>(
        &self,
        shard: &Shard<S>,
        requests: Vec<Result<ControllerRequest, MetaError>>,
        leader_only: bool,
    ) -> Vec<Result<ControllerAnswer, MetaError>> {
        let headroom = requests.iter().flatten().any(ControllerRequest::needs_headroom);
        let mut draft = self.draft();
        let mut answers: Vec<Result<ControllerAnswer, MetaError>> = requests
            .into_iter()
            .enumerate()
            .map(|(i, request)| {
                draft.set_slot(i);
                request.and_then(|r| draft.handle(r))
            })
            .collect();
        let drafted = draft.into_drafted();
        if !drafted.is_empty() {
            self.write(shard, drafted, &mut answers, headroom, leader_only).await;
        }
        answers
    }

    async fn write<S: ControllerHost, T>(
        &self,
        shard: &Shard<S>,
        drafted: Vec<Drafted>,
        answers: &mut [Result<T, MetaError>],
        headroom: bool,
        leader_only: bool,
    ) {
        let fail_all = |answers: &mut [Result<T, MetaError>], e: MetaError| {
            for d in &drafted {
                answers[d.slot] = Err(e.clone());
            }
        };
        if headroom && let Err(e) = disk_headroom(&shard.config().data_dir) {
            return fail_all(answers, e);
        }
        let command = Command {
            records: drafted.iter().map(|d| d.record.clone()).collect(),
            changes: drafted
                .iter()
                .map(|d| u32::try_from(d.slot).unwrap_or(u32::MAX))
                .collect(),
            leader_only,
        };
        let reply = match self.quorum.write(command).await {
            Ok(r) => r,
            Err(e) => {
                let code = match e {
                    QuorumError::NoLeader(_) => ErrorCode::NotController,
                    QuorumError::TimedOut(_) => ErrorCode::RequestTimedOut,
                    QuorumError::Unavailable(_) => ErrorCode::KafkaStorageError,
                };
                return fail_all(answers, refuse(code, e.to_string()));
            }
        };
        for (d, r) in drafted.iter().zip(&reply.results) {
            if let Err(e) = r {
                answers[d.slot] = Err(e.clone());
            }
        }
        let Some(why) = reply.not_installed else {
            return;
        };
        tracing::error!(error = %why, "installing new metadata; undoing the change");
        let undo: Vec<MetaRecord> = drafted
            .iter()
            .zip(&reply.results)
            .rev()
            .filter(|(_, r)| r.is_ok())
            .filter_map(|(d, _)| d.undo.clone())
            .collect();
        if !undo.is_empty() {
            match self.quorum.write(Command::each(undo)).await {
                Ok(r) => {
                    if let Some(e) = r.not_installed {
                        tracing::error!(error = %e, "installing the metadata from before the change");
                    }
                }
                Err(e) => tracing::error!(error = %e, "undoing the change"),
            }
        }
        for (d, r) in drafted.iter().zip(&reply.results) {
            if r.is_ok() {
                answers[d.slot] = Err(refuse(
                    ErrorCode::KafkaStorageError,
                    format!("partitions could not be opened, nothing was changed: {why}"),
                ));
            }
        }
    }

    /// Hands out a producer id never given before in the cluster: from this
    /// broker's block, or a new block from the quorum.
    pub async fn allocate_producer_id<S: ControllerHost>(&self, shard: &Shard<S>) -> Result<i64, String> {
        loop {
            let (next, end) = self.producer_ids.get();
            if next < end {
                self.producer_ids.set((next + 1, end));
                return Ok(next);
            }
            self.lock().await;
            let result = self.take_producer_ids(shard).await;
            self.unlock();
            result?;
        }
    }

    /// A new block of producer ids, unless another caller took one while
    /// this one waited for the lock.
    async fn take_producer_ids<S: ControllerHost>(&self, shard: &Shard<S>) -> Result<(), String> {
        for _ in 0..5 {
            if self.producer_ids.get().0 < self.producer_ids.get().1 {
                return Ok(());
            }
            let request = ControllerRequest::AllocateProducerIds {
                broker: self.node_id,
                count: PRODUCER_ID_BLOCK,
            };
            match self
                .change_locked(shard, vec![Ok(request)], false)
                .await
                .into_iter()
                .next()
            {
                Some(Ok(ControllerAnswer::ProducerIds { first, count })) => {
                    self.producer_ids.set((first, first + count));
                    return Ok(());
                }
                // The image this node drafted on was behind the quorum's
                // leader: draft again.
                Some(Err(e)) if e.code == ErrorCode::UnknownServerError => continue,
                Some(Err(e)) => return Err(e.message),
                Some(Ok(a)) => unreachable!("a producer id block answered {a:?}"),
                None => return Err("producer id block written without an answer".into()),
            }
        }
        Err("producer id blocks kept moving".into())
    }
}

/// The controller's periodic work on shard 0, for the life of the broker:
/// follow who leads the quorum (Metadata names it), register this broker
/// and create the offsets topic once a leader answers, send heartbeats,
/// and, while leading, fence brokers whose session ran out and unfence
/// those that are back, electing partition leaders as they go.
async fn duties<S: ControllerHost>(shard: Rc<Shard<S>>, mut known_leader: Option<u64>) {
    let tick = Duration::from_millis(100);
    let config = shard.config().clone();
    let beat_every = Duration::from_millis(config.broker_heartbeat_interval_ms);
    let session = Duration::from_millis(config.broker_session_timeout_ms);
    let mut last_beat: Option<Instant> = None;
    let mut last_complaint: Option<Instant> = None;
    // Heartbeats go to every voter, each from its own task (a paused voter
    // must not hold up the others), so that a newly elected controller
    // knows when each broker was last heard from: a dead broker is then
    // fenced a session after its last heartbeat, not after the election.
    for (id, addr) in &config.quorum_voters {
        if *id != config.node_id {
            compio::runtime::spawn(heartbeat_voter(shard.clone(), addr.clone())).detach();
        }
    }
    let mut leading_since: Option<Instant> = None;
    while !shard.stopping.is_set() {
        compio::runtime::time::sleep(tick).await;
        let Some(c) = shard.services.controller() else {
            return;
        };
        let leader = c.quorum.leader();
        if leader != known_leader {
            known_leader = leader;
            tracing::info!(leader = ?leader, "the controller quorum's leader changed");
            // Snapshots name the leader when they are made; this one
            // carries a change that came without a new metadata entry.
            if let Err(e) = shard.publish(Arc::new(c.quorum.snapshot())).await {
                tracing::warn!(error = %e, "installing metadata after a leader change");
            }
        }
        let leading = leader == Some(c.quorum.node_id());
        leading_since = if leading {
            leading_since.or(Some(Instant::now()))
        } else {
            None
        };
        if c.epoch.get().is_none() || !c.offsets_ready.get() {
            let r = match c.epoch.get() {
                None => c.register(&shard).await,
                Some(_) => c.ensure_offsets_topic(&shard).await,
            };
            if let Err(e) = r
                && last_complaint.is_none_or(|t| t.elapsed() > Duration::from_secs(5))
            {
                last_complaint = Some(Instant::now());
                tracing::warn!(error = %e, "controller: will retry");
            }
        }
        if let Some(epoch) = c.epoch.get()
            && !c.leaving.get()
            && last_beat.is_none_or(|t| t.elapsed() >= beat_every)
        {
            last_beat = Some(Instant::now());
            // This node's own voter (if it is one) hears it directly.
            c.quorum
                .heartbeats()
                .borrow_mut()
                .beats
                .insert(c.node_id, (epoch, Instant::now()));
        }
        if let Some(since) = leading_since {
            c.check_sessions(&shard, since, session).await;
        }
    }
}

/// Sends this broker's heartbeat to the voter at `addr` every
/// `broker.heartbeat.interval.ms` while it is registered and not leaving.
/// The first heartbeat of a new registration goes out at once, so the
/// broker is unfenced without waiting a whole interval.
async fn heartbeat_voter<S: ControllerHost>(shard: Rc<Shard<S>>, addr: String) {
    let every = Duration::from_millis(shard.config().broker_heartbeat_interval_ms);
    let tick = Duration::from_millis(100).min(every);
    let mut peer: Option<Peer> = None;
    let mut last: Option<(i64, Instant)> = None;
    while !shard.stopping.is_set() {
        compio::runtime::time::sleep(tick).await;
        let Some(c) = shard.services.controller() else { continue };
        let Some(epoch) = c.epoch.get() else { continue };
        let peer = peer.get_or_insert_with(|| Peer::new(addr.clone(), c.transport.clone()));
        let due = last.is_none_or(|(e, t)| e != epoch || t.elapsed() >= every);
        if c.leaving.get() || !due {
            continue;
        }
        last = Some((epoch, Instant::now()));
        if let Err(e) = peer.heartbeat(c.node_id, epoch, every).await {
            tracing::debug!(voter = peer.addr(), error = %e, "heartbeat to a controller voter");
        }
    }
}

/// How many times a controlled shutdown drafts its fencing before it
/// gives up (and is fenced by its session instead).
const LEAVE_ATTEMPTS: u32 = 3;

impl Controller {
    /// A clean shutdown in a cluster (Kafka's controlled shutdown): this
    /// broker fences itself, stops heartbeating, and its partitions get new
    /// leaders from their ISRs before it stops serving. One node alone
    /// keeps its leadership: nobody could take it over. True when the
    /// fencing was written: this broker leads nothing any more.
    pub async fn leave<S: ControllerHost>(&self, shard: &Shard<S>) -> bool {
        if shard.config().quorum_voters.is_empty() || self.epoch.get().is_none() {
            return false;
        }
        self.leaving.set(true);
        let node = self.node_id;
        // Drafted here, on this node's image: a change refused because the
        // image moved meanwhile (it applies all or none) is drafted again
        // on the image that refused it, which this node has by then.
        for attempt in 1..=LEAVE_ATTEMPTS {
            let request = ControllerRequest::ControlledShutdown { broker: node };
            let answer = self.change(shard, vec![Ok(request)], false).await;
            match answer.into_iter().next() {
                Some(Err(e))
                    if attempt < LEAVE_ATTEMPTS
                        && matches!(
                            e.code,
                            ErrorCode::InvalidUpdateVersion
                                | ErrorCode::FencedLeaderEpoch
                                | ErrorCode::StaleBrokerEpoch
                        ) =>
                {
                    tracing::debug!(error = %e.message, "controlled shutdown: the metadata moved; drafting again");
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e.message, "controlled shutdown: leadership not moved");
                    return false;
                }
                _ => {
                    tracing::info!("controlled shutdown: this broker is fenced and leads nothing");
                    return true;
                }
            }
        }
        false
    }

    /// On the leader: checks the address of each live broker whose
    /// heartbeat is overdue (none for more than an interval and a half, or
    /// none yet), so that a process that died without closing a heartbeat
    /// connection to this voter (killed before its first heartbeat, or
    /// before this voter restarted) is found gone as well.
    fn probe_quiet_brokers<S: ControllerHost>(&self, shard: &Shard<S>, liveness: &Liveness) {
        let every = Duration::from_millis(shard.config().broker_heartbeat_interval_ms);
        let overdue = every + every / 2;
        for b in shard.meta().brokers.values() {
            if b.fenced || b.id == self.node_id {
                continue;
            }
            let quiet = liveness.last_beat(b.id, b.epoch).is_none_or(|t| t.elapsed() > overdue);
            if quiet {
                self.quorum.probe(b.id, b.epoch, every);
            }
        }
    }

    /// On the leader: fences registered brokers whose heartbeats stopped for
    /// `session` (counting from their registration, or from when this node
    /// began to lead, whichever is later, for brokers it has not heard
    /// from), and unfences fenced brokers that heartbeat again with their
    /// current epoch. Drafted under the change lock, on the image as it is.
    async fn check_sessions<S: ControllerHost>(&self, shard: &Shard<S>, since: Instant, session: Duration) {
        let fence_gone = shard.config().fence_gone_brokers;
        let liveness = self.quorum.heartbeats().borrow().clone();
        if fence_gone {
            self.probe_quiet_brokers(shard, &liveness);
        }
        let check = SessionCheck {
            liveness,
            now: Instant::now(),
            wall_ms: crate::base::clock::now_ms(),
            since,
            session,
            fence_gone,
        };
        let answer = self
            .change(shard, vec![Ok(ControllerRequest::CheckSessions(check))], true)
            .await;
        if let Some(Err(e)) = answer.first() {
            tracing::warn!(error = %e.message, "writing fencing and elections");
        }
    }
}

/// Checks that the data directory belongs to this cluster and node
/// (`meta/meta.properties`); a mismatch refuses the start before anything
/// is written. True when the directory has no such file yet.
fn check_identity(meta_dir: &Path, cluster_id: &str, node_id: i32) -> Result<bool, String> {
    let path = meta_dir.join("meta.properties");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    let (cluster, node) = (field("cluster.id"), field("node.id"));
    if cluster != cluster_id {
        return Err(format!(
            "{} belongs to cluster `{cluster}`, but cluster.id is `{cluster_id}`",
            path.display()
        ));
    }
    if node != node_id.to_string() {
        return Err(format!(
            "{} belongs to node {node}, but node.id is {node_id}",
            path.display()
        ));
    }
    Ok(false)
}

/// Writes `meta/meta.properties` on a fresh data directory.
fn write_identity(meta_dir: &Path, cluster_id: &str, node_id: i32) -> Result<(), String> {
    let path = meta_dir.join("meta.properties");
    let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
    crate::quorum::replace_file(&path, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))
}

/// Refuses a metadata write when the disk is nearly full: KAFKA_STORAGE_ERROR
/// (a deletion frees the topic's data first and retries).
fn disk_headroom(data_dir: &Path) -> Result<(), MetaError> {
    match crate::disk::filesystem_bytes(data_dir) {
        Ok((_, free)) if free < METADATA_HEADROOM => Err(refuse(
            ErrorCode::KafkaStorageError,
            format!("{free} bytes free on the disk of the metadata log; {METADATA_HEADROOM} are kept for it"),
        )),
        _ => Ok(()),
    }
}

/// Asks the controller (on shard 0) for `requests`, drafted and written
/// together ([`ControllerRequest`]); an `Err` item (refused before it
/// reached the controller) is answered as it is. When the controller is
/// gone, each request gets NOT_CONTROLLER.
pub async fn ask<S: ControllerHost>(
    shard: &Shard<S>,
    requests: Vec<Result<ControllerRequest, MetaError>>,
) -> Vec<Result<ControllerAnswer, MetaError>> {
    let n = requests.len();
    let answer = shard
        .submit_to(ShardId(0), move |ctl| async move {
            let c = ctl.services.controller()?;
            Some(c.change(&ctl, requests, false).await)
        })
        .await;
    match answer {
        Ok(Some(out)) => out,
        Ok(None) | Err(ShardGone) => (0..n)
            .map(|_| {
                Err(refuse(
                    ErrorCode::NotController,
                    "the controller shard is not available",
                ))
            })
            .collect(),
    }
}

/// What hosts the controller: the services a node runs on each shard, of
/// which shard 0's holds the controller once it has started.
pub trait ControllerHost: crate::shard::Services {
    /// The controller, on shard 0 once it has started.
    fn controller(&self) -> Option<&Controller>;
    /// Installs the controller; once.
    fn set_controller(&self, controller: Controller) -> Result<(), String>;
}

/// An internal topic the broker creates for a service of its own.
#[derive(Debug, Clone, Copy)]
pub struct InternalTopic {
    pub name: &'static str,
    pub partitions: i32,
    /// `None`: 3, or the number of controller voters when fewer.
    pub replication_factor: Option<i16>,
    pub segment_bytes: u64,
}

/// Allocates a producer id; on the controller's shard only.
pub async fn allocate_producer_id<S: ControllerHost>(shard: &Shard<S>) -> Result<i64, String> {
    shard
        .services
        .controller()
        .ok_or("not the controller shard")?
        .allocate_producer_id(shard)
        .await
}
