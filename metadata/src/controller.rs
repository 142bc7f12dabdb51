//! The controller's state machine: what it can be asked
//! ([`ControllerRequest`]), how a request is drafted into metadata records
//! against the image ([`Draft::handle`]), and the records of elections,
//! ISR changes, fencing and registration. Pure: it reads the image and the
//! controller's settings and returns records; the broker's controller
//! (on shard 0) writes them through the quorum and answers. Ids and times
//! are chosen here, before a record is written.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::ErrorCode;
use crate::image::{BrokerMeta, Image, MetaRecord, NO_LEADER, PartitionState};
use crate::security::{Acl, ScramCredential, ScramMechanism};
use crate::topics::{MetaError, TopicMeta, is_internal, topic_config, validate_topic_config, validate_topic_name};

/// What a voter has seen of each broker's liveness.
#[derive(Debug, Default, Clone)]
pub struct Liveness {
    /// The last heartbeat from each broker: its epoch and when.
    pub beats: HashMap<i32, (i64, Instant)>,
    /// Brokers whose process is gone: the connection that carried their
    /// heartbeats closed and then nothing listened at their address (the
    /// connection was refused). Epoch and when it was found.
    pub gone: HashMap<i32, (i64, Instant)>,
    /// When a check of each broker's address last started, and whether it
    /// is still running.
    pub probed: HashMap<i32, (Instant, bool)>,
}

impl Liveness {
    /// When the last heartbeat of `broker` at `epoch` arrived.
    pub fn last_beat(&self, broker: i32, epoch: i64) -> Option<Instant> {
        self.beats.get(&broker).filter(|(e, _)| *e == epoch).map(|(_, t)| *t)
    }
}

pub fn refuse(code: ErrorCode, message: impl Into<String>) -> MetaError {
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
    /// A broker process registers (see [`registration_records`]). Its
    /// epoch is chosen while drafting (the image's next broker epoch,
    /// whatever `epoch` says) and it is registered fenced, then unfenced
    /// in the same change.
    RegisterBroker(BrokerMeta),
    /// A block of `count` producer ids for `broker`, starting at the
    /// image's next free id.
    AllocateProducerIds {
        broker: i32,
        count: i64,
    },
    /// CreateAcls: the ACLs added (those that exist already stay).
    CreateAcls(Vec<Acl>),
    /// DeleteAcls: the ACLs removed (each must exist in the image).
    DeleteAcls(Vec<Acl>),
    /// AlterUserScramCredentials, one user and mechanism: the credential
    /// set (`Some`) or removed.
    AlterScram {
        user: String,
        mechanism: ScramMechanism,
        credential: Option<ScramCredential>,
    },
}

impl ControllerRequest {
    /// Whether the request is refused when the disk of the metadata log is
    /// nearly full. A broker's registration and its producer ids are not:
    /// a broker with a full disk must still be able to rejoin and let its
    /// topics be deleted.
    pub fn needs_headroom(&self) -> bool {
        !matches!(self, Self::RegisterBroker(_) | Self::AllocateProducerIds { .. })
    }
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
    /// The broker registered, at this epoch.
    Registered {
        epoch: i64,
    },
    /// A block of producer ids: `first` to `first + count - 1`.
    ProducerIds {
        first: i64,
        count: i64,
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

/// One drafted record: the request it answers (its place in the list),
/// and the record that would reverse it.
#[derive(Debug)]
pub struct Drafted {
    pub slot: usize,
    pub record: MetaRecord,
    pub undo: Option<MetaRecord>,
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

    /// The records drafted, in order, each with its request and undo.
    pub fn into_drafted(self) -> Vec<Drafted> {
        self.records
    }

    /// Drafts what follows for the request at `slot` of the list.
    pub fn set_slot(&mut self, slot: usize) {
        self.slot = slot;
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
            R::CreateAcls(acls) => {
                for acl in acls {
                    self.push(MetaRecord::CreateAcl(acl), None)?;
                }
                Ok(ControllerAnswer::Done)
            }
            R::DeleteAcls(acls) => {
                for acl in acls {
                    self.push(MetaRecord::RemoveAcl(acl), None)?;
                }
                Ok(ControllerAnswer::Done)
            }
            R::AlterScram {
                user,
                mechanism,
                credential,
            } => {
                let record = match credential {
                    Some(credential) => MetaRecord::SetScramCredential {
                        user,
                        mechanism,
                        credential,
                    },
                    None => MetaRecord::RemoveScramCredential { user, mechanism },
                };
                self.push(record, None)?;
                Ok(ControllerAnswer::Done)
            }
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
            R::RegisterBroker(broker) => self.register(broker),
            R::AllocateProducerIds { broker, count } => {
                let first = self.image.next_producer_id;
                self.push(MetaRecord::ProducerIds { broker, first, count }, None)?;
                Ok(ControllerAnswer::ProducerIds { first, count })
            }
        }
    }

    /// Registers `broker` at the image's next epoch (see
    /// [`registration_records`]).
    fn register(&mut self, mut broker: BrokerMeta) -> Result<ControllerAnswer, MetaError> {
        broker.epoch = self.image.next_broker_epoch;
        broker.fenced = true;
        let epoch = broker.epoch;
        let (records, _) = registration_records(self.image.clone(), broker, self.rules)?;
        records.into_iter().try_for_each(|r| self.push(r, None))?;
        Ok(ControllerAnswer::Registered { epoch })
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
        self.image.topic(name)
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
        if self.image.topic(name).is_some() {
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
        crate::topics::topic_min_insync_replicas(self.min_isr, topic)
    }
}

/// The eligible leader replicas once the ISR is `isr` (KIP-966): while the
/// ISR is below `min.insync.replicas` the leader's high watermark stands
/// still, so the replicas that leave the ISR then hold every acknowledged
/// write and stay electable; at `min.insync.replicas` or above none are
/// kept. Replica order. The minimum is the effective one (see
/// [`crate::topics::effective_min_isr`]), as Kafka's controller takes it.
fn next_elr(now: &PartitionState, isr: &[i32], min_isr: usize) -> Vec<i32> {
    if isr.len() >= crate::topics::effective_min_isr(min_isr, now.replicas.len()) {
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
    for t in image.topics_on(broker) {
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
    for t in image.topics_on(broker) {
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
    for t in image.topics_on(broker) {
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
                    endpoints: Vec::new(),
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
        image.topics()["t"].partition_states.clone()
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
        let p = &done.topics()["t"].partition_states;
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
        assert_eq!(fenced.topics()["t"].partition_states[0].leader, NO_LEADER);
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
        let p = &img.topics()["t"].partition_states[0];
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
        assert_eq!(img.topics()["t"].partition_states[0].elr, Vec::<i32>::new());
        // Below it the high watermark stands still: 2 holds all of it.
        let img = shrink(&img, 1, &[1]);
        let p = &img.topics()["t"].partition_states[0];
        assert_eq!((p.isr.clone(), p.elr.clone()), (vec![1], vec![2]));
        // Back at min.insync.replicas, nobody outside the ISR is eligible.
        let back = shrink(&img, 1, &[1, 3]);
        assert_eq!(back.topics()["t"].partition_states[0].elr, Vec::<i32>::new());

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
        let p = &done.topics()["t"].partition_states[0];
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
            endpoints: Vec::new(),
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

    /// A registration and a producer id block are requests like the others:
    /// drafted against the image, ids chosen while drafting, answered with
    /// what was chosen, and a refusal leaves the draft as it was.
    #[test]
    fn registration_and_producer_ids_are_drafted_with_their_ids() {
        let img = image(&[(1, false), (2, false)], vec![state(&[1, 2], &[1, 2], 1)]);
        let next = img.next_broker_epoch;
        let mut draft = Draft::new(img.clone(), 1000, 1, Rules::default());
        let again = BrokerMeta {
            incarnation: Uuid::from_u128(7),
            epoch: -1,
            fenced: false,
            ..img.brokers[&1].clone()
        };
        assert_eq!(
            draft.handle(ControllerRequest::RegisterBroker(again)),
            Ok(ControllerAnswer::Registered { epoch: next })
        );
        let ids = ControllerRequest::AllocateProducerIds { broker: 1, count: 10 };
        assert_eq!(
            draft.handle(ids.clone()),
            Ok(ControllerAnswer::ProducerIds { first: 0, count: 10 })
        );
        assert_eq!(
            draft.handle(ids),
            Ok(ControllerAnswer::ProducerIds { first: 10, count: 10 })
        );
        let zero = ControllerRequest::AllocateProducerIds { broker: 1, count: 0 };
        assert!(draft.handle(zero).is_err());
        let records = draft.into_records();
        // The restart fenced the old incarnation first; the new one is
        // registered and unfenced.
        assert!(matches!(records[0], MetaRecord::FenceBroker { id: 1, .. }));
        let mut done = img;
        for r in &records {
            done.apply(r).unwrap();
        }
        assert_eq!(done.brokers[&1].epoch, next);
        assert_eq!(done.brokers[&1].incarnation, Uuid::from_u128(7));
        assert!(done.is_live(1));
        assert_eq!(done.next_producer_id, 20);
        assert!(!ControllerRequest::AllocateProducerIds { broker: 1, count: 1 }.needs_headroom());
    }
}
