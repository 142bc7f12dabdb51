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

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::error_codes::ErrorCode;
use crate::image::{BrokerMeta, Image, MetaRecord, NO_LEADER, PartitionState};
use crate::meta::{
    MetaError, OFFSETS_TOPIC, TopicMeta, is_internal, topic_config, validate_topic_config, validate_topic_name,
};
use crate::quorum::{
    AnyQuorum, Command, Liveness, ObserverQuorum, Peer, Publisher, Quorum, QuorumError, QuorumSettings, RaftQuorum,
};
use crate::shard::{Shard, ShardGone, ShardId};
use crate::util::Changed;

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
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> MetaError {
    MetaError {
        code,
        message: message.into(),
    }
}

fn unknown_topic(name: &str) -> MetaError {
    refuse(
        ErrorCode::UnknownTopicOrPartition,
        format!("topic `{name}` does not exist"),
    )
}

fn refuse_internal(name: &str) -> Result<(), MetaError> {
    if is_internal(name) {
        return Err(refuse(
            ErrorCode::InvalidTopicException,
            format!("`{name}` is an internal topic"),
        ));
    }
    Ok(())
}

/// What the controller can be asked. The requests of one call are drafted
/// in order, each against the image with the earlier ones applied, and
/// written as one metadata log entry ([`Draft::handle`]); a request
/// refused leaves nothing behind. Ids and times are chosen here or while
/// drafting, before the records are written.
#[derive(Debug, Clone)]
pub enum ControllerRequest {
    /// CreateTopics, a Metadata request's auto-creation, the offsets
    /// topic: `assignments` empty to place the partitions, else the
    /// replicas of each (with `partitions` and `replication_factor` -1).
    CreateTopic {
        name: String,
        partitions: i32,
        replication_factor: i16,
        assignments: Vec<Vec<i32>>,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    },
    DeleteTopic {
        name: String,
    },
    /// CreatePartitions: the topic grows to `count` partitions.
    CreatePartitions {
        name: String,
        count: i32,
        validate_only: bool,
    },
    /// AlterConfigs (`incremental` false: the overrides are replaced) and
    /// IncrementalAlterConfigs; each change sets (`Some`) or removes a key.
    AlterTopicConfigs {
        name: String,
        changes: Vec<(String, Option<String>)>,
        incremental: bool,
        validate_only: bool,
    },
    /// A partition leader's AlterPartition.
    AlterIsr(IsrChange),
    /// A broker's clean shutdown: it fences itself and its partitions get
    /// new leaders from their ISRs.
    ControlledShutdown {
        broker: i32,
    },
    /// The controller's own session check: fences brokers whose session
    /// expired or whose process is gone, unfences fenced brokers that
    /// heartbeat again.
    CheckSessions(SessionCheck),
}

/// What an accepted [`ControllerRequest`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerAnswer {
    /// The topic created, deleted, grown or reconfigured (with
    /// `validate_only`, the one that would be; a topic only validated for
    /// creation has the nil id).
    Topic {
        id: Uuid,
        partitions: i32,
        replication_factor: i16,
    },
    Done,
}

impl ControllerAnswer {
    fn topic(t: &TopicMeta) -> Self {
        Self::Topic {
            id: t.id,
            partitions: t.partitions,
            replication_factor: t.partition_states.first().map_or(0, |p| p.replicas.len() as i16),
        }
    }
}

/// What a session check decides from: each broker's liveness as this
/// voter has seen it, the times of the check, and the settings.
#[derive(Debug, Clone)]
pub struct SessionCheck {
    pub liveness: Liveness,
    /// When the check runs, by the monotonic and by the wall clock.
    pub now: Instant,
    pub wall_ms: i64,
    /// When this node began to lead the quorum.
    pub since: Instant,
    /// `broker.session.timeout.ms`.
    pub session: Duration,
    /// `sluice.fence.gone.brokers`.
    pub fence_gone: bool,
}

/// A change being drafted: the image as it will be, and the records that
/// make it so, each with the resource it answers and the record that
/// would reverse it.
#[derive(Debug)]
pub struct Draft {
    image: Image,
    max_partitions: i64,
    default_replication_factor: i16,
    rules: Rules,
    slot: usize,
    records: Vec<Drafted>,
}

#[derive(Debug)]
struct Drafted {
    slot: usize,
    record: MetaRecord,
    undo: Option<MetaRecord>,
}

impl Draft {
    /// A draft over `image` with the controller's settings (the controller
    /// makes its own from the quorum's image; benchmarks and tests make
    /// theirs).
    pub fn new(image: Image, max_partitions: i64, default_replication_factor: i16, rules: Rules) -> Self {
        Self {
            image,
            max_partitions,
            default_replication_factor,
            rules,
            slot: 0,
            records: Vec::new(),
        }
    }

    /// The records drafted, in order.
    pub fn into_records(self) -> Vec<MetaRecord> {
        self.records.into_iter().map(|d| d.record).collect()
    }

    /// Drafts one request: the records it writes go into the draft, and
    /// the answer comes back; a refusal changes nothing in the draft.
    pub fn handle(&mut self, request: ControllerRequest) -> Result<ControllerAnswer, MetaError> {
        let (image, drafted) = (self.image.clone(), self.records.len());
        let answer = self.draft_one(request);
        if answer.is_err() {
            self.image = image;
            self.records.truncate(drafted);
        }
        answer
    }

    fn draft_one(&mut self, request: ControllerRequest) -> Result<ControllerAnswer, MetaError> {
        use ControllerRequest as R;
        match request {
            R::CreateTopic {
                name,
                partitions,
                replication_factor,
                assignments,
                configs,
                validate_only,
            } => {
                if !validate_only {
                    let t = self.create_topic(&name, partitions, configs, replication_factor, &assignments)?;
                    return Ok(ControllerAnswer::topic(&t));
                }
                let states = self.check_create(&name, partitions, &configs, replication_factor, &assignments)?;
                Ok(ControllerAnswer::Topic {
                    id: Uuid::nil(),
                    partitions: states.len() as i32,
                    replication_factor: states.first().map_or(0, |p| p.replicas.len() as i16),
                })
            }
            R::DeleteTopic { name } => self.delete_topic(&name).map(|t| ControllerAnswer::topic(&t)),
            R::CreatePartitions {
                name,
                count,
                validate_only,
            } => if validate_only {
                self.check_partitions(&name, count)
            } else {
                self.create_partitions(&name, count)
            }
            .map(|t| ControllerAnswer::topic(&t)),
            R::AlterTopicConfigs {
                name,
                changes,
                incremental,
                validate_only,
            } => self
                .alter_configs(&name, &changes, incremental, validate_only)
                .map(|t| ControllerAnswer::topic(&t)),
            R::AlterIsr(change) => {
                let record = alter_isr(&self.image, &change, self.rules)?;
                self.push(record, None)?;
                Ok(ControllerAnswer::Done)
            }
            R::ControlledShutdown { broker } => {
                fence_records_for(&self.image, broker, self.rules, true)
                    .into_iter()
                    .try_for_each(|r| self.push(r, None))?;
                Ok(ControllerAnswer::Done)
            }
            R::CheckSessions(check) => {
                self.check_sessions(&check)?;
                Ok(ControllerAnswer::Done)
            }
        }
    }

    /// The fence and unfence records a session check calls for, drafted
    /// on the image as it is.
    fn check_sessions(&mut self, c: &SessionCheck) -> Result<(), MetaError> {
        let brokers: Vec<BrokerMeta> = self.image.brokers.values().cloned().collect();
        for b in brokers {
            let seen = c.liveness.last_beat(b.id, b.epoch);
            // Its process is gone (and has not heartbeat since): no need
            // to wait out the session.
            let gone = c.fence_gone
                && c.liveness
                    .gone
                    .get(&b.id)
                    .is_some_and(|(e, t)| *e == b.epoch && seen.is_none_or(|s| *t > s));
            // A registration counts as a heartbeat: a broker that has just
            // (re)registered gets a whole session to send its first one.
            let registered_ago = Duration::from_millis(u64::try_from(c.wall_ms - b.registered_ms).unwrap_or(0));
            let registered = c.now.checked_sub(registered_ago).unwrap_or(c.since);
            // A heartbeat this node received before it led counts if it was
            // still within the session when it began to lead (voters
            // receive every broker's heartbeats); otherwise the broker gets
            // a whole session from then.
            let last = match seen {
                Some(t) if c.since.saturating_duration_since(t) < c.session => t,
                _ => c.since,
            }
            .max(registered);
            let alive = !gone && c.now.duration_since(last) < c.session;
            let records = match (b.fenced, alive) {
                (false, false) if gone => {
                    tracing::warn!(broker = b.id, "its process is gone: fencing it");
                    fence_records(&self.image, b.id, self.rules)
                }
                (false, false) => {
                    tracing::warn!(
                        broker = b.id,
                        "no heartbeat within broker.session.timeout.ms: fencing it"
                    );
                    fence_records(&self.image, b.id, self.rules)
                }
                // A broker that shut itself down comes back only by
                // registering again.
                (true, true) if seen.is_some() && !b.shut_down => {
                    tracing::info!(broker = b.id, "heartbeat from a fenced broker: unfencing it");
                    unfence_records(&self.image, b.id, self.rules)
                }
                _ => continue,
            };
            records.into_iter().try_for_each(|r| self.push(r, None))?;
        }
        Ok(())
    }

    fn push(&mut self, record: MetaRecord, undo: Option<MetaRecord>) -> Result<(), MetaError> {
        self.image.apply(&record)?;
        self.records.push(Drafted {
            slot: self.slot,
            record,
            undo,
        });
        Ok(())
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.image.topics.get(name)
    }

    fn existing(&self, name: &str) -> Result<Arc<TopicMeta>, MetaError> {
        self.topic(name).cloned().ok_or_else(|| unknown_topic(name))
    }

    /// Refuses a change that adds `more` partitions past the cap.
    fn check_room(&self, more: i32) -> Result<(), MetaError> {
        let total = self.image.partition_count();
        if total + i64::from(more) > self.max_partitions {
            return Err(refuse(
                ErrorCode::PolicyViolation,
                format!(
                    "the cluster has {total} partitions; {more} more would pass sluice.max.partitions ({})",
                    self.max_partitions
                ),
            ));
        }
        Ok(())
    }

    /// Replicas for partitions `first..first + count`: `rf` live brokers
    /// each, leaders spread round the brokers.
    fn place(&self, first: i32, count: i32, replication_factor: i16) -> Result<Vec<PartitionState>, MetaError> {
        let rf = if replication_factor == -1 {
            self.default_replication_factor
        } else {
            replication_factor
        };
        let live: Vec<i32> = self
            .image
            .brokers
            .keys()
            .copied()
            .filter(|&b| self.image.is_live(b))
            .collect();
        if rf < 1 || rf as usize > live.len() {
            return Err(refuse(
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "replication factor {rf} needs that many live brokers; {} are live",
                    live.len()
                ),
            ));
        }
        // Start where the cluster's partition count leaves off, so the
        // leaders of many small topics do not all land on one broker.
        let offset = self.image.partition_count();
        Ok((first..first + count)
            .map(|p| {
                let start = (offset + i64::from(p)) as usize % live.len();
                PartitionState::new((0..rf as usize).map(|k| live[(start + k) % live.len()]).collect())
            })
            .collect())
    }

    /// Partitions from a request's own replica assignment: registered
    /// brokers, the same number for every partition, each broker once.
    fn assigned(&self, assignments: &[Vec<i32>]) -> Result<Vec<PartitionState>, MetaError> {
        let rf = assignments.first().map_or(0, Vec::len);
        assignments
            .iter()
            .map(|replicas| {
                let bad = |m: String| refuse(ErrorCode::InvalidReplicaAssignment, m);
                if replicas.len() != rf {
                    return Err(bad(
                        "every partition of an assignment needs the same number of replicas".into(),
                    ));
                }
                if let Some(b) = replicas.iter().find(|b| !self.image.brokers.contains_key(b)) {
                    return Err(bad(format!("broker {b} is not registered")));
                }
                let state = PartitionState::new(replicas.clone());
                state.check().map_err(bad)?;
                Ok(state)
            })
            .collect()
    }

    /// Checks a topic creation and returns its partitions, without
    /// changing the draft.
    pub fn check_create(
        &self,
        name: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
        replication_factor: i16,
        assignments: &[Vec<i32>],
    ) -> Result<Vec<PartitionState>, MetaError> {
        validate_topic_name(name).map_err(|m| refuse(ErrorCode::InvalidTopicException, m))?;
        if self.image.topics.contains_key(name) {
            return Err(refuse(
                ErrorCode::TopicAlreadyExists,
                format!("topic `{name}` already exists"),
            ));
        }
        for (k, v) in configs {
            validate_topic_config(k, v).map_err(|m| refuse(ErrorCode::InvalidConfig, m))?;
        }
        let states = if assignments.is_empty() {
            if partitions < 1 {
                return Err(refuse(
                    ErrorCode::InvalidPartitions,
                    format!("partition count {partitions} is below 1"),
                ));
            }
            // Before placing: a request may ask for millions.
            self.check_room(partitions)?;
            self.place(0, partitions, replication_factor)?
        } else {
            if partitions != -1 || replication_factor != -1 {
                return Err(refuse(
                    ErrorCode::InvalidRequest,
                    "a replica assignment comes with partition count and replication factor -1",
                ));
            }
            self.assigned(assignments)?
        };
        self.check_room(i32::try_from(states.len()).unwrap_or(i32::MAX))?;
        Ok(states)
    }

    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        replication_factor: i16,
        assignments: &[Vec<i32>],
    ) -> Result<Arc<TopicMeta>, MetaError> {
        let states = self.check_create(name, partitions, &configs, replication_factor, assignments)?;
        let id = Uuid::new_v4();
        self.push(
            MetaRecord::CreateTopic {
                name: name.into(),
                id,
                configs,
                partitions: states,
            },
            Some(MetaRecord::DeleteTopic { id }),
        )?;
        self.existing(name)
    }

    pub fn delete_topic(&mut self, name: &str) -> Result<Arc<TopicMeta>, MetaError> {
        refuse_internal(name)?;
        let topic = self.existing(name)?;
        self.push(MetaRecord::DeleteTopic { id: topic.id }, None)?;
        Ok(topic)
    }

    pub fn check_partitions(&self, name: &str, count: i32) -> Result<Arc<TopicMeta>, MetaError> {
        refuse_internal(name)?;
        let topic = self.existing(name)?;
        if count < topic.partitions {
            return Err(refuse(
                ErrorCode::InvalidPartitions,
                format!("topic has {} partitions; the count can only grow", topic.partitions),
            ));
        }
        if count == topic.partitions {
            return Err(refuse(
                ErrorCode::InvalidPartitions,
                format!("topic already has {count} partitions"),
            ));
        }
        self.check_room(count - topic.partitions)?;
        Ok(topic)
    }

    pub fn create_partitions(&mut self, name: &str, count: i32) -> Result<Arc<TopicMeta>, MetaError> {
        let topic = self.check_partitions(name, count)?;
        let rf = topic.partition_states.first().map_or(-1, |p| p.replicas.len() as i16);
        let added = count - topic.partitions;
        let states = self.place(topic.partitions, added, rf)?;
        self.push(
            MetaRecord::CreatePartitions {
                id: topic.id,
                partitions: states,
            },
            Some(MetaRecord::RemovePartitions {
                id: topic.id,
                count: added,
            }),
        )?;
        self.existing(name)
    }

    /// Replaces (`incremental == false`) or edits a topic's overrides. Each
    /// change is `(key, Some(value))` to set or `(key, None)` to remove.
    pub fn alter_configs(
        &mut self,
        name: &str,
        changes: &[(String, Option<String>)],
        incremental: bool,
        validate_only: bool,
    ) -> Result<Arc<TopicMeta>, MetaError> {
        let topic = self.existing(name)?;
        let mut configs = if incremental {
            topic.configs.clone()
        } else {
            BTreeMap::new()
        };
        for (k, v) in changes {
            match v {
                Some(v) => {
                    validate_topic_config(k, v).map_err(|m| refuse(ErrorCode::InvalidConfig, m))?;
                    configs.insert(k.clone(), v.clone());
                }
                None => {
                    if topic_config(k).is_none() {
                        return Err(refuse(ErrorCode::InvalidConfig, format!("unknown topic config `{k}`")));
                    }
                    configs.remove(k);
                }
            }
        }
        if validate_only {
            return Ok(topic);
        }
        self.push(
            MetaRecord::SetTopicConfigs { id: topic.id, configs },
            Some(MetaRecord::SetTopicConfigs {
                id: topic.id,
                configs: topic.configs.clone(),
            }),
        )?;
        self.existing(name)
    }
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
            st.image.topics.is_empty() && st.image.next_producer_id == 0
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
            let image = self.quorum.state().image.clone();
            let broker = BrokerMeta {
                id: self.node_id,
                incarnation: shard.incarnation(),
                epoch: image.next_broker_epoch,
                host: config.advertised_host.clone(),
                port: config.advertised_port,
                shards: u32::try_from(shard.shard_count()).unwrap_or(u32::MAX),
                fenced: true,
                registered_ms: crate::base::clock::now_ms(),
                shut_down: false,
                clean_start: shard.clean_start(),
            };
            let epoch = broker.epoch;
            let Ok((records, at)) = registration_records(image, broker, self.rules) else {
                compio::runtime::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let reply = self
                .quorum
                .write(Command::atomic(records))
                .await
                .map_err(|e| format!("registering broker {}: {e}", self.node_id))?;
            // One change, all or none: a fence record refused because the
            // image moved meanwhile refuses the registration with it, and
            // the next try drafts from the newer image.
            match reply.results.get(at) {
                Some(Ok(())) => {
                    self.epoch.set(Some(epoch));
                    return Ok(());
                }
                Some(Err(e)) if matches!(e.code, ErrorCode::StaleBrokerEpoch | ErrorCode::InvalidRequest) => {
                    // Another registration took the epoch, or the image
                    // moved under the fencing: draft again once it shows.
                    compio::runtime::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Some(Err(e)) => return Err(format!("registering broker {}: {}", self.node_id, e.message)),
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
        let configs = BTreeMap::from([
            ("retention.ms".to_string(), "-1".to_string()),
            ("retention.bytes".to_string(), "-1".to_string()),
            (
                "segment.bytes".to_string(),
                groups.offsets_segment_bytes.clamp(1024, i32::MAX as u64).to_string(),
            ),
        ]);
        let partitions = groups.offsets_partitions;
        let voters = i16::try_from(shard.config().quorum_voters.len())
            .unwrap_or(i16::MAX)
            .max(1);
        let rf = groups.offsets_replication_factor.unwrap_or(voters.min(3));
        if self.quorum.state().image.topics.contains_key(OFFSETS_TOPIC) {
            return Ok(());
        }
        let create = ControllerRequest::CreateTopic {
            name: OFFSETS_TOPIC.into(),
            partitions,
            replication_factor: rf,
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
            Some(Err(e)) => Err(format!("creating {OFFSETS_TOPIC}: {}", e.message)),
            None => Err(format!("creating {OFFSETS_TOPIC}: no answer")),
        }
    }

    fn draft(&self) -> Draft {
        Draft {
            image: self.quorum.state().image.clone(),
            max_partitions: self.max_partitions,
            default_replication_factor: self.default_replication_factor,
            rules: self.rules,
            slot: 0,
            records: Vec::new(),
        }
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
        let mut draft = self.draft();
        let mut answers: Vec<Result<ControllerAnswer, MetaError>> = requests
            .into_iter()
            .enumerate()
            .map(|(i, request)| {
                draft.slot = i;
                request.and_then(|r| draft.handle(r))
            })
            .collect();
        if !draft.records.is_empty() {
            self.write(shard, draft.records, &mut answers, leader_only).await;
        }
        self.unlock();
        answers
    }

    async fn write<S: ControllerHost, T>(
        &self,
        shard: &Shard<S>,
        drafted: Vec<Drafted>,
        answers: &mut [Result<T, MetaError>],
        leader_only: bool,
    ) {
        let fail_all = |answers: &mut [Result<T, MetaError>], e: MetaError| {
            for d in &drafted {
                answers[d.slot] = Err(e.clone());
            }
        };
        if let Err(e) = headroom(&shard.config().data_dir) {
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
    pub async fn allocate_producer_id(&self) -> Result<i64, String> {
        loop {
            let (next, end) = self.producer_ids.get();
            if next < end {
                self.producer_ids.set((next + 1, end));
                return Ok(next);
            }
            self.lock().await;
            let result = self.take_producer_ids().await;
            self.unlock();
            result?;
        }
    }

    async fn take_producer_ids(&self) -> Result<(), String> {
        if self.producer_ids.get().0 < self.producer_ids.get().1 {
            return Ok(());
        }
        for _ in 0..5 {
            let first = self.quorum.state().image.next_producer_id;
            let record = MetaRecord::ProducerIds {
                broker: self.node_id,
                first,
                count: PRODUCER_ID_BLOCK,
            };
            let reply = self
                .quorum
                .write(Command::each(vec![record]))
                .await
                .map_err(|e| e.to_string())?;
            match reply.results.first() {
                Some(Ok(())) => {
                    self.producer_ids.set((first, first + PRODUCER_ID_BLOCK));
                    return Ok(());
                }
                Some(Err(_)) => continue,
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
    let mut peer = Peer::new(addr);
    let mut last: Option<(i64, Instant)> = None;
    while !shard.stopping.is_set() {
        compio::runtime::time::sleep(tick).await;
        let Some(c) = shard.services.controller() else { continue };
        let Some(epoch) = c.epoch.get() else { continue };
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

/// An ISR change asked by a partition's leader (Kafka's AlterPartition).
#[derive(Debug, Clone)]
pub struct IsrChange {
    pub broker: i32,
    pub broker_epoch: i64,
    pub topic: Uuid,
    pub partition: i32,
    /// The leader epoch and partition epoch the leader holds.
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// Checks an ISR change against the image, as Kafka's controller does, and
/// returns the record that makes it: the asker must be the partition's
/// leader with its current broker epoch, at the current leader and
/// partition epochs; the new ISR holds the leader, only replicas, and only
/// unfenced brokers among those it adds.
pub fn alter_isr(image: &Image, change: &IsrChange, rules: Rules) -> Result<MetaRecord, MetaError> {
    let broker = image
        .brokers
        .get(&change.broker)
        .filter(|b| b.epoch == change.broker_epoch);
    if broker.is_none_or(|b| b.fenced) {
        return Err(refuse(
            ErrorCode::StaleBrokerEpoch,
            format!(
                "broker {} has no live registration with epoch {}",
                change.broker, change.broker_epoch
            ),
        ));
    }
    let topic = image
        .topic_by_id(&change.topic)
        .ok_or_else(|| refuse(ErrorCode::UnknownTopicId, format!("no topic has id {}", change.topic)))?;
    let now = usize::try_from(change.partition)
        .ok()
        .and_then(|i| topic.partition_states.get(i))
        .ok_or_else(|| {
            refuse(
                ErrorCode::UnknownTopicOrPartition,
                format!("`{}` has no partition {}", topic.name, change.partition),
            )
        })?;
    if now.leader != change.broker {
        return Err(refuse(
            ErrorCode::NotLeaderOrFollower,
            format!(
                "broker {} does not lead {}-{}",
                change.broker, topic.name, change.partition
            ),
        ));
    }
    if change.leader_epoch != now.leader_epoch {
        return Err(refuse(
            ErrorCode::FencedLeaderEpoch,
            format!(
                "leader epoch {} is not the current {}",
                change.leader_epoch, now.leader_epoch
            ),
        ));
    }
    if change.partition_epoch != now.partition_epoch {
        return Err(refuse(
            ErrorCode::InvalidUpdateVersion,
            format!(
                "partition epoch {} is not the current {}",
                change.partition_epoch, now.partition_epoch
            ),
        ));
    }
    if !change.isr.contains(&change.broker) || change.isr.iter().any(|b| !now.replicas.contains(b)) {
        return Err(refuse(
            ErrorCode::InvalidRequest,
            format!(
                "ISR {:?} must hold the leader and only replicas {:?}",
                change.isr, now.replicas
            ),
        ));
    }
    if let Some(b) = change.isr.iter().find(|b| !now.isr.contains(b) && !image.is_live(**b)) {
        return Err(refuse(
            ErrorCode::IneligibleReplica,
            format!("broker {b} is fenced or not registered and cannot join the ISR"),
        ));
    }
    let mut isr = change.isr.clone();
    isr.dedup();
    let elr = next_elr(now, &isr, rules.min_isr(topic));
    Ok(MetaRecord::ChangePartition {
        id: topic.id,
        partition: change.partition,
        state: PartitionState {
            replicas: now.replicas.clone(),
            isr,
            leader: now.leader,
            leader_epoch: now.leader_epoch,
            partition_epoch: now.partition_epoch + 1,
            elr,
        },
    })
}

/// What elections depend on besides the image: the controller's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// `unclean.leader.election.enable`.
    pub unclean: bool,
    /// The broker's `min.insync.replicas` (a topic's override wins).
    pub min_isr: usize,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            unclean: false,
            min_isr: 1,
        }
    }
}

impl Rules {
    fn min_isr(&self, topic: &TopicMeta) -> usize {
        crate::meta::topic_min_insync_replicas(self.min_isr, topic)
    }
}

/// The eligible leader replicas once the ISR is `isr` (KIP-966): while the
/// ISR is below `min.insync.replicas` the leader's high watermark stands
/// still, so the replicas that leave the ISR then hold every acknowledged
/// write and stay electable; at `min.insync.replicas` or above none are
/// kept. Replica order. The minimum is the effective one (see
/// [`crate::meta::effective_min_isr`]), as Kafka's controller takes it.
fn next_elr(now: &PartitionState, isr: &[i32], min_isr: usize) -> Vec<i32> {
    if isr.len() >= crate::meta::effective_min_isr(min_isr, now.replicas.len()) {
        return Vec::new();
    }
    now.replicas
        .iter()
        .copied()
        .filter(|r| !isr.contains(r) && (now.isr.contains(r) || now.elr.contains(r)))
        .collect()
}

/// The next state of a partition, or `None` when nothing changes: the
/// leader epoch grows when the leader changes, the partition epoch always.
fn next_state(now: &PartitionState, isr: Vec<i32>, leader: i32, elr: Vec<i32>) -> Option<PartitionState> {
    if isr == now.isr && leader == now.leader && elr == now.elr {
        return None;
    }
    let next = PartitionState {
        replicas: now.replicas.clone(),
        isr,
        leader,
        leader_epoch: now.leader_epoch + i32::from(leader != now.leader),
        partition_epoch: now.partition_epoch + 1,
        elr,
    };
    if let Err(e) = next.check() {
        panic!("the controller built a broken partition state from {now:?}: {e}: {next:?}");
    }
    Some(next)
}

/// Fences `broker` and moves what it held: it leaves every ISR (unless it
/// is the last member, which keeps the partition's acknowledged data),
/// and each partition it led gets the first live ISR member in replica
/// order as leader, else the first live eligible leader replica; none → no
/// leader, unless unclean election is on, when the first live replica
/// leads alone.
pub fn fence_records(image: &Image, broker: i32, rules: Rules) -> Vec<MetaRecord> {
    fence_records_for(image, broker, rules, false)
}

/// [`fence_records`], marking a broker's own controlled shutdown when
/// `shutdown`.
pub fn fence_records_for(image: &Image, broker: i32, rules: Rules, shutdown: bool) -> Vec<MetaRecord> {
    let Some(b) = image.brokers.get(&broker) else {
        return Vec::new();
    };
    let mut records = vec![MetaRecord::FenceBroker {
        id: broker,
        epoch: b.epoch,
        shutdown,
    }];
    let live = |id: i32| id != broker && image.is_live(id);
    for t in image.topics.values() {
        let min_isr = rules.min_isr(t);
        for (i, p) in t.partition_states.iter().enumerate() {
            if p.leader != broker && !p.isr.contains(&broker) {
                continue;
            }
            let mut isr: Vec<i32> = p.isr.iter().copied().filter(|&r| r != broker).collect();
            if isr.is_empty() {
                isr = vec![broker];
            }
            let mut leader = p.leader;
            let mut unclean = false;
            if leader == broker || leader == NO_LEADER {
                leader = p
                    .replicas
                    .iter()
                    .copied()
                    .find(|&r| isr.contains(&r) && live(r))
                    .unwrap_or(NO_LEADER);
                if leader == NO_LEADER
                    && let Some(r) = p.replicas.iter().copied().find(|&r| p.elr.contains(&r) && live(r))
                {
                    leader = r;
                    isr = vec![r];
                }
                if leader == NO_LEADER
                    && rules.unclean
                    && let Some(r) = p.replicas.iter().copied().find(|&r| live(r))
                {
                    leader = r;
                    isr = vec![r];
                    unclean = true;
                }
            }
            // An unclean leader's followers truncate to its log: nobody
            // else is eligible any more.
            let elr = if unclean {
                Vec::new()
            } else {
                next_elr(p, &isr, min_isr)
            };
            if let Some(state) = next_state(p, isr, leader, elr) {
                records.push(MetaRecord::ChangePartition {
                    id: t.id,
                    partition: i as i32,
                    state,
                });
            }
        }
    }
    records
}

/// The records that register `broker` (fenced, as drafted) and unfence
/// it, and the index of the registration among them. An earlier
/// incarnation of the broker in `image` is fenced first: a restarted broker
/// may have lost the unsynced tail of its logs, so it gives up what it led
/// and leaves every ISR it is not the last member of; it catches up as a
/// follower before its leaders take it back. Unless its previous
/// incarnation shut down cleanly (`clean_start`), it also stops being an
/// eligible leader replica, and leaves the ISR even as its last member
/// when other replicas are eligible: those hold what it may have lost.
pub fn registration_records(
    mut image: Image,
    broker: BrokerMeta,
    rules: Rules,
) -> Result<(Vec<MetaRecord>, usize), MetaError> {
    let mut records = Vec::new();
    if image
        .brokers
        .get(&broker.id)
        .is_some_and(|b| b.incarnation != broker.incarnation)
    {
        for r in fence_records(&image, broker.id, rules) {
            image.apply(&r)?;
            records.push(r);
        }
        if !broker.clean_start {
            for r in forget_tail_records(&image, broker.id) {
                image.apply(&r)?;
                records.push(r);
            }
        }
    }
    let id = broker.id;
    let register = MetaRecord::RegisterBroker(broker);
    image.apply(&register)?;
    let at = records.len();
    records.push(register);
    // Unfenced with the elections that brings: the partitions left without
    // a leader whose ISR it is in.
    records.extend(unfence_records(&image, id, rules));
    Ok((records, at))
}

/// A fenced `broker` that may have lost its logs' unsynced tail is no
/// longer an eligible leader replica, and leaves the ISR it is the last
/// member of while other replicas are eligible (the partition waits,
/// leaderless, for one of those); see
/// [`PartitionState::after_unclean_restart`].
fn forget_tail_records(image: &Image, broker: i32) -> Vec<MetaRecord> {
    let mut records = Vec::new();
    for t in image.topics.values() {
        for (i, p) in t.partition_states.iter().enumerate() {
            let Some((isr, elr)) = p.after_unclean_restart(broker) else {
                continue;
            };
            if let Some(state) = next_state(p, isr, p.leader, elr) {
                assert!(
                    state.leader == NO_LEADER || state.leader != broker,
                    "a fenced broker leads {}-{i}",
                    t.name
                );
                records.push(MetaRecord::ChangePartition {
                    id: t.id,
                    partition: i as i32,
                    state,
                });
            }
        }
    }
    records
}

/// Unfences `broker` and gives it the partitions that have no leader and
/// keep it in their ISR or among their eligible leader replicas (or, with
/// unclean election, hold a replica on it).
pub fn unfence_records(image: &Image, broker: i32, rules: Rules) -> Vec<MetaRecord> {
    let Some(b) = image.brokers.get(&broker) else {
        return Vec::new();
    };
    let mut records = vec![MetaRecord::UnfenceBroker {
        id: broker,
        epoch: b.epoch,
    }];
    for t in image.topics.values() {
        let min_isr = rules.min_isr(t);
        for (i, p) in t.partition_states.iter().enumerate() {
            if p.leader != NO_LEADER || !p.replicas.contains(&broker) {
                continue;
            }
            let state = if p.isr.contains(&broker) {
                next_state(p, p.isr.clone(), broker, p.elr.clone())
            } else if p.elr.contains(&broker) {
                next_state(p, vec![broker], broker, next_elr(p, &[broker], min_isr))
            } else if rules.unclean {
                next_state(p, vec![broker], broker, Vec::new())
            } else {
                None
            };
            if let Some(state) = state {
                records.push(MetaRecord::ChangePartition {
                    id: t.id,
                    partition: i as i32,
                    state,
                });
            }
        }
    }
    records
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
fn headroom(data_dir: &Path) -> Result<(), MetaError> {
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

/// Allocates a producer id; on the controller's shard only.
pub async fn allocate_producer_id<S: ControllerHost>(shard: &Shard<S>) -> Result<i64, String> {
    shard
        .services
        .controller()
        .ok_or("not the controller shard")?
        .allocate_producer_id()
        .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn image(brokers: &[(i32, bool)], partitions: Vec<PartitionState>) -> Image {
        let mut image = Image::default();
        for (i, &(id, fenced)) in brokers.iter().enumerate() {
            image
                .apply(&MetaRecord::RegisterBroker(BrokerMeta {
                    id,
                    incarnation: Uuid::nil(),
                    epoch: i as i64,
                    host: "h".into(),
                    port: 1,
                    shards: 1,
                    fenced,
                    registered_ms: 0,
                    shut_down: false,
                    clean_start: false,
                }))
                .unwrap();
        }
        image
            .apply(&MetaRecord::CreateTopic {
                name: "t".into(),
                id: Uuid::from_u128(1),
                configs: BTreeMap::new(),
                partitions,
            })
            .unwrap();
        image
    }

    fn state(replicas: &[i32], isr: &[i32], leader: i32) -> PartitionState {
        PartitionState {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            leader,
            leader_epoch: 4,
            partition_epoch: 7,
            elr: Vec::new(),
        }
    }

    /// A request for millions of partitions is refused by the cap before
    /// any partition is placed (placing them first stalled the shard).
    #[test]
    fn the_partition_cap_is_checked_before_partitions_are_placed() {
        let draft = Draft {
            image: image(&[(1, false)], vec![state(&[1], &[1], 1)]),
            max_partitions: 10,
            default_replication_factor: 1,
            rules: Rules::default(),
            slot: 0,
            records: Vec::new(),
        };
        // Replication factor 3 with one live broker: placing would fail
        // with INVALID_REPLICATION_FACTOR, so the cap must answer first.
        let err = draft
            .check_create("big", 4_194_305, &BTreeMap::new(), 3, &[])
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::PolicyViolation, "{}", err.message);
        let err = draft.check_partitions("t", i32::MAX).unwrap_err();
        assert_eq!(err.code, ErrorCode::PolicyViolation, "{}", err.message);
        // Within the cap the placement is what answers.
        let err = draft.check_create("small", 2, &BTreeMap::new(), 3, &[]).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidReplicationFactor, "{}", err.message);
    }

    /// Typed requests draft in order against the image with the earlier
    /// ones applied, and a refused one leaves nothing in the draft.
    #[test]
    fn requests_draft_in_order_and_a_refused_one_leaves_nothing() {
        let mut draft = Draft {
            image: image(&[(1, false)], vec![state(&[1], &[1], 1)]),
            max_partitions: 100,
            default_replication_factor: 1,
            rules: Rules::default(),
            slot: 0,
            records: Vec::new(),
        };
        let create = |name: &str, partitions: i32| ControllerRequest::CreateTopic {
            name: name.into(),
            partitions,
            replication_factor: 1,
            assignments: Vec::new(),
            configs: BTreeMap::new(),
            validate_only: false,
        };
        let created = draft.handle(create("orders", 2)).unwrap();
        assert!(matches!(
            created,
            ControllerAnswer::Topic {
                partitions: 2,
                replication_factor: 1,
                ..
            }
        ));
        // The second request sees the first: the name is taken.
        let again = draft.handle(create("orders", 3)).unwrap_err();
        assert_eq!(again.code, ErrorCode::TopicAlreadyExists);
        // A config change refused half-way (the second key is unknown)
        // drafts nothing.
        let before = draft.records.len();
        let refused = draft
            .handle(ControllerRequest::AlterTopicConfigs {
                name: "orders".into(),
                changes: vec![
                    ("retention.ms".into(), Some("1000".into())),
                    ("no.such.key".into(), Some("1".into())),
                ],
                incremental: true,
                validate_only: false,
            })
            .unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidConfig);
        assert_eq!(draft.records.len(), before);
        assert!(draft.topic("orders").unwrap().configs.is_empty());
        // Growing and deleting it answer with the topic.
        let grown = draft
            .handle(ControllerRequest::CreatePartitions {
                name: "orders".into(),
                count: 4,
                validate_only: false,
            })
            .unwrap();
        assert!(matches!(grown, ControllerAnswer::Topic { partitions: 4, .. }));
        let ControllerAnswer::Topic { id, .. } = created else {
            unreachable!()
        };
        let deleted = draft
            .handle(ControllerRequest::DeleteTopic { name: "orders".into() })
            .unwrap();
        assert!(matches!(deleted, ControllerAnswer::Topic { id: d, .. } if d == id));
        assert!(draft.topic("orders").is_none());
        // Create, grow, delete: three records, each with its undo where
        // one exists.
        assert_eq!(draft.records.len(), 3);
    }

    /// Applies `records` and returns the partition states after.
    fn after(mut image: Image, records: &[MetaRecord]) -> Vec<PartitionState> {
        for r in records {
            image.apply(r).unwrap();
        }
        image.topics["t"].partition_states.clone()
    }

    #[test]
    fn fencing_the_leader_elects_the_first_live_isr_member_in_replica_order() {
        let img = image(
            &[(1, false), (2, false), (3, false)],
            vec![
                state(&[1, 2, 3], &[1, 3, 2], 1),
                state(&[2, 1, 3], &[2, 1], 2),
                state(&[1, 2], &[1], 1),
            ],
        );
        let records = fence_records(&img, 1, Rules::default());
        let p = after(img.clone(), &records);
        // Replica order, not ISR order: 2 comes before 3.
        assert_eq!((p[0].leader, p[0].isr.clone()), (2, vec![3, 2]));
        assert_eq!((p[0].leader_epoch, p[0].partition_epoch), (5, 8));
        // A follower leaves the ISR; the leader stays, its epoch too.
        assert_eq!((p[1].leader, p[1].isr.clone(), p[1].leader_epoch), (2, vec![2], 4));
        // The last ISR member keeps its place: no leader, nothing lost.
        assert_eq!(
            (p[2].leader, p[2].isr.clone(), p[2].leader_epoch),
            (NO_LEADER, vec![1], 5)
        );
        // With unclean election the live out-of-sync replica leads alone.
        let p = after(
            img.clone(),
            &fence_records(
                &img,
                1,
                Rules {
                    unclean: true,
                    ..Rules::default()
                },
            ),
        );
        assert_eq!((p[2].leader, p[2].isr.clone()), (2, vec![2]));
    }

    #[test]
    fn isr_changes_are_checked_against_leader_broker_and_partition_epochs() {
        let img = image(
            &[(1, false), (2, false), (3, true)],
            vec![state(&[1, 2, 3], &[1, 2], 1)],
        );
        let ask = |broker: i32, broker_epoch: i64, leader_epoch: i32, partition_epoch: i32, isr: &[i32]| {
            alter_isr(
                &img,
                &IsrChange {
                    broker,
                    broker_epoch,
                    topic: Uuid::from_u128(1),
                    partition: 0,
                    leader_epoch,
                    partition_epoch,
                    isr: isr.to_vec(),
                },
                Rules::default(),
            )
        };
        let code = |r: Result<MetaRecord, MetaError>| r.unwrap_err().code;
        // The leader shrinks the ISR at the current epochs.
        let ok = ask(1, 0, 4, 7, &[1]).unwrap();
        let p = after(img.clone(), &[ok]);
        assert_eq!(
            (p[0].isr.clone(), p[0].leader_epoch, p[0].partition_epoch),
            (vec![1], 4, 8)
        );
        assert_eq!(
            code(ask(2, 1, 4, 7, &[2])),
            ErrorCode::NotLeaderOrFollower,
            "only the leader asks"
        );
        assert_eq!(
            code(ask(1, 5, 4, 7, &[1])),
            ErrorCode::StaleBrokerEpoch,
            "a past registration"
        );
        assert_eq!(code(ask(1, 0, 3, 7, &[1])), ErrorCode::FencedLeaderEpoch);
        assert_eq!(
            code(ask(1, 0, 4, 6, &[1])),
            ErrorCode::InvalidUpdateVersion,
            "one change at a time"
        );
        assert_eq!(
            code(ask(1, 0, 4, 7, &[2])),
            ErrorCode::InvalidRequest,
            "the ISR holds the leader"
        );
        assert_eq!(
            code(ask(1, 0, 4, 7, &[1, 9])),
            ErrorCode::InvalidRequest,
            "only replicas"
        );
        assert_eq!(
            code(ask(1, 0, 4, 7, &[1, 2, 3])),
            ErrorCode::IneligibleReplica,
            "3 is fenced"
        );
    }

    #[test]
    fn a_fenced_isr_member_is_not_elected() {
        let img = image(
            &[(1, false), (2, true), (3, false)],
            vec![state(&[1, 2, 3], &[1, 2, 3], 1)],
        );
        let p = after(img.clone(), &fence_records(&img, 1, Rules::default()));
        assert_eq!(p[0].leader, 3);
    }

    #[test]
    fn a_restarted_broker_gives_up_what_its_previous_incarnation_held() {
        let img = image(
            &[(1, false), (2, false), (3, false)],
            vec![
                state(&[1, 2, 3], &[1, 2, 3], 1),
                state(&[2, 1, 3], &[2, 1, 3], 2),
                state(&[1], &[1], 1),
            ],
        );
        let again = BrokerMeta {
            incarnation: Uuid::from_u128(9),
            epoch: img.next_broker_epoch,
            ..img.brokers[&1].clone()
        };
        // Registered straight over the old incarnation, it would lead with
        // whatever tail of its log survived: the image refuses that.
        let mut direct = img.clone();
        let refused = direct.apply(&MetaRecord::RegisterBroker(again.clone())).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidRequest);
        assert_eq!(direct, img, "a refused record changes nothing");

        let (records, at) = registration_records(img.clone(), again.clone(), Rules::default()).unwrap();
        assert!(matches!(records[0], MetaRecord::FenceBroker { id: 1, epoch: 0, .. }));
        assert!(matches!(&records[at], MetaRecord::RegisterBroker(b) if b.incarnation == again.incarnation));
        let mut done = img.clone();
        for r in &records {
            done.apply(r).unwrap();
        }
        let p = &done.topics["t"].partition_states;
        // It led with followers in sync: one of them leads now, and the
        // restarted broker is out of every ISR it shared.
        assert_eq!((p[0].leader, p[0].isr.clone(), p[0].leader_epoch), (2, vec![2, 3], 5));
        assert_eq!((p[1].leader, p[1].isr.clone(), p[1].leader_epoch), (2, vec![2, 3], 4));
        // The only copy: it leads it again, at a new epoch.
        assert_eq!((p[2].leader, p[2].isr.clone()), (1, vec![1]));
        assert!(p[2].leader_epoch > 4);
        assert!(done.is_live(1) && done.brokers[&1].incarnation == again.incarnation);
        assert_eq!(
            done.held_by(1, false),
            Some(("t", 2)),
            "only the partition it alone holds"
        );

        // The same incarnation registering again fences nothing.
        let twice = BrokerMeta {
            epoch: done.next_broker_epoch,
            ..again
        };
        let (records, at) = registration_records(done.clone(), twice, Rules::default()).unwrap();
        assert_eq!(at, 0);
        assert!(!records.iter().any(|r| matches!(r, MetaRecord::FenceBroker { .. })));
    }

    #[test]
    fn an_unfenced_broker_leads_the_partitions_left_without_a_leader() {
        let img = image(
            &[(1, false), (2, false)],
            vec![state(&[1, 2], &[1], 1), state(&[2, 1], &[2], 2)],
        );
        let mut fenced = img.clone();
        for r in fence_records(&img, 1, Rules::default()) {
            fenced.apply(&r).unwrap();
        }
        assert_eq!(fenced.topics["t"].partition_states[0].leader, NO_LEADER);
        let p = after(fenced.clone(), &unfence_records(&fenced, 1, Rules::default()));
        assert_eq!((p[0].leader, p[0].leader_epoch), (1, 6));
        // A partition it holds but is out of sync for stays as it is.
        assert_eq!(p[1].leader, 2);
    }

    const MIN2: Rules = Rules {
        unclean: false,
        min_isr: 2,
    };

    fn shrink(img: &Image, leader: i32, isr: &[i32]) -> Image {
        let p = &img.topics["t"].partition_states[0];
        let record = alter_isr(
            img,
            &IsrChange {
                broker: leader,
                broker_epoch: img.brokers[&leader].epoch,
                topic: Uuid::from_u128(1),
                partition: 0,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr: isr.to_vec(),
            },
            MIN2,
        )
        .unwrap();
        let mut img = img.clone();
        img.apply(&record).unwrap();
        img
    }

    #[test]
    fn a_replica_that_leaves_an_isr_below_min_insync_stays_eligible() {
        let img = image(
            &[(1, false), (2, false), (3, false)],
            vec![state(&[1, 2, 3], &[1, 2, 3], 1)],
        );
        // At min.insync.replicas the high watermark still moves: 3 misses
        // what is acknowledged from here on and is not eligible.
        let img = shrink(&img, 1, &[1, 2]);
        assert_eq!(img.topics["t"].partition_states[0].elr, Vec::<i32>::new());
        // Below it the high watermark stands still: 2 holds all of it.
        let img = shrink(&img, 1, &[1]);
        let p = &img.topics["t"].partition_states[0];
        assert_eq!((p.isr.clone(), p.elr.clone()), (vec![1], vec![2]));
        // Back at min.insync.replicas, nobody outside the ISR is eligible.
        let back = shrink(&img, 1, &[1, 3]);
        assert_eq!(back.topics["t"].partition_states[0].elr, Vec::<i32>::new());

        // The leader fails: the eligible replica leads, and the old leader,
        // last of the ISR, becomes eligible in its place.
        let p = after(img.clone(), &fence_records(&img, 1, MIN2));
        assert_eq!((p[0].leader, p[0].isr.clone(), p[0].elr.clone()), (2, vec![2], vec![1]));
        assert_eq!(p[0].leader_epoch, 5);
    }

    #[test]
    fn a_last_isr_member_that_lost_its_tail_waits_for_an_eligible_replica() {
        // The ISR is down to 1, and 2 and 3 (eligible, holding everything
        // acknowledged) are fenced; 1 restarts after a kill.
        let mut st = state(&[1, 2, 3], &[1], 1);
        st.elr = vec![2, 3];
        let img = image(&[(1, false), (2, true), (3, true)], vec![st]);
        let again = BrokerMeta {
            incarnation: Uuid::from_u128(9),
            epoch: img.next_broker_epoch,
            ..img.brokers[&1].clone()
        };
        // Straight over the old incarnation the image refuses it.
        let mut direct = img.clone();
        assert!(direct.apply(&MetaRecord::RegisterBroker(again.clone())).is_err());
        let (records, _) = registration_records(img.clone(), again.clone(), MIN2).unwrap();
        let mut done = img.clone();
        for r in &records {
            done.apply(r).unwrap();
        }
        let p = &done.topics["t"].partition_states[0];
        // It does not lead what it may have lost: the partition is offline.
        assert_eq!(
            (p.leader, p.isr.clone(), p.elr.clone()),
            (NO_LEADER, vec![], vec![2, 3])
        );
        assert!(done.is_live(1));
        // An eligible replica comes back and leads.
        let p = after(done.clone(), &unfence_records(&done, 3, MIN2));
        assert_eq!((p[0].leader, p[0].isr.clone(), p[0].elr.clone()), (3, vec![3], vec![2]));

        // After a clean shutdown its log lost nothing: it leads again.
        let clean = BrokerMeta {
            clean_start: true,
            ..again
        };
        let (records, _) = registration_records(img.clone(), clean, MIN2).unwrap();
        let p = after(img.clone(), &records);
        assert_eq!(
            (p[0].leader, p[0].isr.clone(), p[0].elr.clone()),
            (1, vec![1], vec![2, 3])
        );
    }

    #[test]
    fn a_restarted_eligible_replica_that_lost_its_tail_is_no_longer_eligible() {
        let mut st = state(&[1, 2, 3], &[1], NO_LEADER);
        st.elr = vec![2, 3];
        let img = image(&[(1, true), (2, true), (3, true)], vec![st]);
        let again = BrokerMeta {
            incarnation: Uuid::from_u128(9),
            epoch: img.next_broker_epoch,
            ..img.brokers[&2].clone()
        };
        let (records, _) = registration_records(img.clone(), again, MIN2).unwrap();
        let p = after(img.clone(), &records);
        assert_eq!(
            (p[0].leader, p[0].isr.clone(), p[0].elr.clone()),
            (NO_LEADER, vec![1], vec![3])
        );
    }

    #[test]
    fn the_last_candidate_keeps_its_place_after_an_unclean_restart() {
        // 1 left the ISR after its own unclean restart; 2, the one eligible
        // replica left, restarts uncleanly too: nobody is known to hold
        // more, so it stays eligible and leads rather than leave the
        // partition without any candidate.
        let mut st = state(&[1, 2, 3], &[], NO_LEADER);
        st.elr = vec![2];
        let img = image(&[(1, false), (2, true), (3, false)], vec![st]);
        let again = BrokerMeta {
            incarnation: Uuid::from_u128(9),
            epoch: img.next_broker_epoch,
            ..img.brokers[&2].clone()
        };
        let (records, _) = registration_records(img.clone(), again, MIN2).unwrap();
        let p = after(img.clone(), &records);
        assert_eq!((p[0].leader, p[0].isr.clone(), p[0].elr.clone()), (2, vec![2], vec![]));
    }
}
