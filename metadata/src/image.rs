//! The cluster metadata image and the records that change it.
//!
//! Every change to the cluster's metadata is a [`MetaRecord`] appended to
//! the metadata log (the controller quorum's log) and applied by one
//! function, [`Image::apply`]. Ids, epochs and times are chosen by the
//! controller before a record is written, never inside `apply`, so every
//! node that replays the log reaches the same image. `apply` checks what
//! the image alone decides (a name taken, an unknown topic, a stale
//! partition epoch) and refuses the record without changing anything, the
//! same way on every node; checks that depend on settings (partition caps,
//! replication factor against live brokers) belong to the controller,
//! before it writes.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ErrorCode;
use crate::security::{Acl, ScramCredential, ScramMechanism, SecurityImage};
use crate::topics::{
    MetaError, Snapshot, TopicIds, TopicMap, TopicMeta, is_internal, validate_topic_config, validate_topic_name,
};

/// No leader: the partition has no live in-sync replica.
pub const NO_LEADER: i32 = -1;

/// Where one partition lives and who leads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Brokers holding a replica, in preference order.
    pub replicas: Vec<i32>,
    /// The in-sync replicas, a subset of `replicas`.
    pub isr: Vec<i32>,
    /// The leader's broker id, or [`NO_LEADER`].
    pub leader: i32,
    /// Grows whenever the leader changes.
    pub leader_epoch: i32,
    /// Grows with every change to this partition's state.
    pub partition_epoch: i32,
    /// Eligible leader replicas (Kafka's KIP-966): replicas that left the
    /// ISR while it was below `min.insync.replicas`. The leader's high
    /// watermark stands still then, so they hold every acknowledged write
    /// and may lead when no ISR member is live. Disjoint from the ISR;
    /// empty whenever the ISR is at `min.insync.replicas` or above.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub elr: Vec<i32>,
}

impl PartitionState {
    /// A new partition: `replicas[0]` leads, every replica in sync.
    pub fn new(replicas: Vec<i32>) -> Self {
        Self {
            leader: replicas.first().copied().unwrap_or(NO_LEADER),
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            elr: Vec::new(),
        }
    }

    /// Checks what must hold of every partition state; a record that
    /// breaks it is refused.
    pub fn check(&self) -> Result<(), String> {
        if self.replicas.is_empty() {
            return Err("a partition needs at least one replica".into());
        }
        let mut sorted = self.replicas.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("replicas {:?} name a broker twice", self.replicas));
        }
        if let Some(b) = self.isr.iter().find(|b| !self.replicas.contains(b)) {
            return Err(format!("ISR member {b} is not a replica"));
        }
        if self.leader != NO_LEADER && !self.isr.contains(&self.leader) {
            return Err(format!("leader {} is not in the ISR {:?}", self.leader, self.isr));
        }
        if let Some(b) = self
            .elr
            .iter()
            .find(|b| !self.replicas.contains(b) || self.isr.contains(b))
        {
            return Err(format!("eligible leader replica {b} is not a replica outside the ISR"));
        }
        let mut elr = self.elr.clone();
        elr.sort_unstable();
        if elr.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("eligible leader replicas {:?} name a broker twice", self.elr));
        }
        Ok(())
    }

    /// The ISR and eligible leader replicas once `broker` is known to have
    /// restarted without a clean shutdown (it may have lost its logs'
    /// unsynced tail): it is no longer eligible, and it leaves the ISR it is
    /// the last member of while other replicas are eligible. `None` when
    /// nothing changes, and when it is the partition's last candidate (it
    /// keeps its place: nobody is known to hold more).
    pub fn after_unclean_restart(&self, broker: i32) -> Option<(Vec<i32>, Vec<i32>)> {
        let elr: Vec<i32> = self.elr.iter().copied().filter(|&r| r != broker).collect();
        let isr = if self.isr == [broker] && !elr.is_empty() {
            Vec::new()
        } else {
            self.isr.clone()
        };
        let changed = elr != self.elr || isr != self.isr;
        (changed && !(isr.is_empty() && elr.is_empty())).then_some((isr, elr))
    }
}

/// One registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerMeta {
    pub id: i32,
    /// Chosen by the broker process at start; a new one means a restart.
    pub incarnation: Uuid,
    /// Chosen by the controller at registration; grows with every
    /// registration of any broker.
    pub epoch: i64,
    /// The advertised address clients and other brokers use.
    pub host: String,
    pub port: u16,
    pub shards: u32,
    /// Fenced brokers lead nothing and are out of every ISR.
    pub fenced: bool,
    /// When the controller registered it, in ms since the epoch.
    pub registered_ms: i64,
    /// Fenced by its own controlled shutdown: a heartbeat still in flight
    /// does not unfence it; only a new registration does.
    #[serde(default)]
    pub shut_down: bool,
    /// This incarnation found its logs closed by a clean shutdown of the
    /// previous one (every write synced). One that did not may have lost
    /// the unsynced tail of its logs, so it is no longer an eligible leader
    /// of any partition.
    #[serde(default)]
    pub clean_start: bool,
    /// The advertised endpoint of each of its listeners. Empty in
    /// registrations written before listeners had names: then `host` and
    /// `port` serve every listener.
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
}

impl BrokerMeta {
    /// The host and port clients of listener `listener` reach this broker
    /// at; `None` when it has no such listener.
    pub fn endpoint(&self, listener: &str) -> Option<(&str, u16)> {
        if self.endpoints.is_empty() {
            return Some((self.host.as_str(), self.port));
        }
        self.endpoints
            .iter()
            .find(|e| e.listener == listener)
            .map(|e| (e.host.as_str(), e.port))
    }

    /// The ports of its shards' own endpoints on `listener`, one per
    /// shard (`sluice.shard.listeners`); empty when it has none.
    pub fn shard_ports(&self, listener: &str) -> &[u16] {
        self.endpoints
            .iter()
            .find(|e| e.listener == listener)
            .map_or(&[], |e| e.shard_ports.as_slice())
    }
}

/// One listener of a broker, as registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The listener's name, upper case.
    pub listener: String,
    pub host: String,
    pub port: u16,
    /// Kafka's id of its security protocol (0 PLAINTEXT, 1 SSL,
    /// 2 SASL_PLAINTEXT, 3 SASL_SSL).
    pub security_protocol: i16,
    /// With `sluice.shard.listeners`, the advertised port of each shard's
    /// own endpoint on this listener (same host), in shard order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shard_ports: Vec<u16>,
}

/// A change to the cluster metadata, as written to the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetaRecord {
    /// A broker joins (or rejoins after a restart, with a new incarnation
    /// and epoch). It starts fenced until its first heartbeat is answered.
    RegisterBroker(BrokerMeta),
    FenceBroker {
        id: i32,
        epoch: i64,
        /// The broker's own controlled shutdown.
        #[serde(default)]
        shutdown: bool,
    },
    UnfenceBroker {
        id: i32,
        epoch: i64,
    },
    CreateTopic {
        name: String,
        id: Uuid,
        configs: BTreeMap<String, String>,
        partitions: Vec<PartitionState>,
    },
    DeleteTopic {
        id: Uuid,
    },
    /// Partitions appended to a topic.
    CreatePartitions {
        id: Uuid,
        partitions: Vec<PartitionState>,
    },
    /// Takes back the last partitions of a topic: written only to undo a
    /// CreatePartitions whose partitions no broker could open.
    RemovePartitions {
        id: Uuid,
        count: i32,
    },
    /// A new leader, ISR or replica set for one partition. `state`'s
    /// partition epoch must be one above the current one.
    ChangePartition {
        id: Uuid,
        partition: i32,
        state: PartitionState,
    },
    /// The whole set of a topic's config overrides.
    SetTopicConfigs {
        id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// A block of producer ids for one broker; `first` must be the next id
    /// never handed out.
    ProducerIds {
        broker: i32,
        first: i64,
        count: i64,
    },
    /// A user's SCRAM credential for one mechanism, set or replaced.
    SetScramCredential {
        user: String,
        mechanism: ScramMechanism,
        credential: ScramCredential,
    },
    /// A user's SCRAM credential for one mechanism removed; refused when
    /// there is none.
    RemoveScramCredential {
        user: String,
        mechanism: ScramMechanism,
    },
    /// An ACL added (adding one that exists changes nothing).
    CreateAcl(Acl),
    /// An ACL removed; refused when there is no such ACL.
    RemoveAcl(Acl),
}

/// The cluster metadata: the state machine of the metadata log.
///
/// Its topic maps are persistent ([`TopicMap`]): cloning the image, as
/// each draft of a change and each snapshot does, costs the same at 50
/// topics and at 5,000. Beside the topics it keeps two indexes that
/// `apply` maintains and a snapshot on disk leaves out: topic names by id,
/// and for each broker the topics with a replica on it, so that fencing a
/// broker looks at its topics alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Stored")]
pub struct Image {
    pub brokers: BTreeMap<i32, BrokerMeta>,
    topics: TopicMap,
    /// The first producer id no block has covered yet.
    pub next_producer_id: i64,
    /// The epoch the next broker registration gets.
    pub next_broker_epoch: i64,
    /// Credentials (and, shared with every snapshot, what else security
    /// needs).
    #[serde(default)]
    pub security: Arc<SecurityImage>,
    #[serde(skip)]
    ids: TopicIds,
    #[serde(skip)]
    on_broker: imbl::HashMap<i32, imbl::OrdSet<Arc<str>>>,
    #[serde(skip)]
    partitions: i64,
}

/// The image as a metadata snapshot stores it: without its indexes.
#[derive(Deserialize)]
struct Stored {
    brokers: BTreeMap<i32, BrokerMeta>,
    topics: BTreeMap<Arc<str>, Arc<TopicMeta>>,
    next_producer_id: i64,
    next_broker_epoch: i64,
    #[serde(default)]
    security: Arc<SecurityImage>,
}

impl From<Stored> for Image {
    fn from(s: Stored) -> Self {
        let mut image = Image {
            brokers: s.brokers,
            next_producer_id: s.next_producer_id,
            next_broker_epoch: s.next_broker_epoch,
            security: s.security,
            ..Image::default()
        };
        for t in s.topics.into_values() {
            image.put(Arc::unwrap_or_clone(t));
        }
        image
    }
}

/// The brokers holding a replica of some partition of `topic`.
fn replica_brokers(topic: Option<&TopicMeta>) -> std::collections::BTreeSet<i32> {
    topic
        .into_iter()
        .flat_map(|t| t.partition_states.iter().flat_map(|p| p.replicas.iter().copied()))
        .collect()
}

fn refuse(code: ErrorCode, message: impl Into<String>) -> MetaError {
    MetaError {
        code,
        message: message.into(),
    }
}

impl Image {
    /// Whether `broker` may lead and take replicas: registered, not fenced.
    pub fn is_live(&self, broker: i32) -> bool {
        self.brokers.get(&broker).is_some_and(|b| !b.fenced)
    }

    /// A partition `broker` leads, or whose ISR it shares with others;
    /// none once it is fenced. With `unclean`, also one whose ISR or
    /// eligible replicas a broker that may have lost its logs' tail must
    /// leave ([`PartitionState::after_unclean_restart`]).
    pub fn held_by(&self, broker: i32, unclean: bool) -> Option<(&str, usize)> {
        self.topics_on(broker).find_map(|t| {
            t.partition_states
                .iter()
                .position(|p| {
                    p.leader == broker
                        || (p.isr.contains(&broker) && p.isr.len() > 1)
                        || (unclean && p.after_unclean_restart(broker).is_some())
                })
                .map(|i| (&*t.name, i))
        })
    }

    /// Partitions of all topics together.
    pub fn partition_count(&self) -> i64 {
        self.partitions
    }

    /// The topics by name.
    pub fn topics(&self) -> &TopicMap {
        &self.topics
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicMeta>> {
        self.ids.get(id).and_then(|name| self.topics.get(name))
    }

    /// The topics with a partition that has a replica on `broker`, in
    /// name order (a broker leads, and is in the ISR and the eligible
    /// replicas of, only partitions it has a replica of).
    pub fn topics_on(&self, broker: i32) -> impl Iterator<Item = &Arc<TopicMeta>> {
        self.on_broker
            .get(&broker)
            .into_iter()
            .flat_map(|names| names.iter())
            .filter_map(|name| self.topics.get(name))
    }

    /// Adds `topic`, or replaces the topic of its name, keeping the
    /// indexes. For what builds an image directly (tests, benchmarks);
    /// the metadata log changes it through [`Image::apply`] alone.
    pub fn put(&mut self, topic: TopicMeta) {
        assert_eq!(
            usize::try_from(topic.partitions).ok(),
            Some(topic.partition_states.len()),
            "topic `{}`: partition count and states disagree",
            topic.name
        );
        let old = self.topics.get(&topic.name).cloned();
        self.unindex(old.as_deref(), Some(&topic));
        self.ids.insert(topic.id, topic.name.clone());
        self.partitions += i64::from(topic.partitions);
        self.topics.insert(topic.name.clone(), Arc::new(topic));
    }

    /// Removes the topic `name`, keeping the indexes.
    fn remove(&mut self, name: &str) {
        let Some(old) = self.topics.remove(name) else {
            return;
        };
        self.unindex(Some(&old), None);
    }

    /// Takes `old`'s entries out of the indexes, moving its brokers' to
    /// `new` (which the caller then adds).
    fn unindex(&mut self, old: Option<&TopicMeta>, new: Option<&TopicMeta>) {
        if let Some(old) = old {
            self.ids.remove(&old.id);
            self.partitions -= i64::from(old.partitions);
        }
        let (before, after) = (replica_brokers(old), replica_brokers(new));
        for b in before.difference(&after) {
            if let Some(names) = self.on_broker.get_mut(b) {
                old.map(|t| names.remove(&t.name));
                if names.is_empty() {
                    self.on_broker.remove(b);
                }
            }
        }
        if let Some(new) = new {
            for b in after.difference(&before) {
                self.on_broker.entry(*b).or_default().insert(new.name.clone());
            }
        }
    }

    fn topic_named_by_id(&self, id: &Uuid) -> Result<Arc<TopicMeta>, MetaError> {
        self.topic_by_id(id)
            .cloned()
            .ok_or_else(|| refuse(ErrorCode::UnknownTopicId, format!("no topic has id {id}")))
    }

    /// Applies a log entry's records (the quorum's `Command`):
    /// consecutive records with the same number in `changes` all or none,
    /// each record on its own when `changes` does not number them all.
    pub fn apply_changes(&mut self, records: &[MetaRecord], changes: &[u32]) -> Vec<Result<(), MetaError>> {
        if changes.len() != records.len() {
            return records.iter().map(|r| self.apply(r)).collect();
        }
        let mut results = Vec::with_capacity(records.len());
        let mut start = 0;
        while start < records.len() {
            let n = changes[start..].iter().take_while(|&&c| c == changes[start]).count();
            let group = &records[start..start + n];
            start += n;
            if let [one] = group {
                results.push(self.apply(one));
                continue;
            }
            let mut next = self.clone();
            let done: Vec<Result<(), MetaError>> = group.iter().map(|r| next.apply(r)).collect();
            match done.iter().find_map(|r| r.as_ref().err()).cloned() {
                None => {
                    *self = next;
                    results.extend(done);
                }
                Some(e) => results.extend(done.into_iter().map(|r| {
                    r.and_then(|()| {
                        Err(refuse(
                            e.code,
                            format!("not applied: another record of its change was refused: {}", e.message),
                        ))
                    })
                })),
            }
        }
        results
    }

    /// Applies one record. A refused record changes nothing; the same
    /// record refused here is refused on every node.
    pub fn apply(&mut self, record: &MetaRecord) -> Result<(), MetaError> {
        match record {
            MetaRecord::RegisterBroker(b) => self.register_broker(b),
            MetaRecord::FenceBroker { id, epoch, shutdown } => self.set_fenced(id, epoch, true, *shutdown),
            MetaRecord::UnfenceBroker { id, epoch } => self.set_fenced(id, epoch, false, false),
            MetaRecord::CreateTopic {
                name,
                id,
                configs,
                partitions,
            } => self.create_topic(name, id, configs, partitions),
            MetaRecord::DeleteTopic { id } => self.delete_topic(id),
            MetaRecord::CreatePartitions { id, partitions } => self.create_partitions(id, partitions),
            MetaRecord::RemovePartitions { id, count } => self.remove_partitions(id, count),
            MetaRecord::ChangePartition { id, partition, state } => self.change_partition(id, partition, state),
            MetaRecord::SetTopicConfigs { id, configs } => self.set_topic_configs(id, configs),
            MetaRecord::ProducerIds { broker, first, count } => self.producer_ids(broker, first, count),
            MetaRecord::SetScramCredential {
                user,
                mechanism,
                credential,
            } => self.set_scram(user, *mechanism, Some(credential)),
            MetaRecord::RemoveScramCredential { user, mechanism } => self.set_scram(user, *mechanism, None),
            MetaRecord::CreateAcl(acl) => {
                if !acl.principal.contains(':') {
                    return Err(refuse(
                        ErrorCode::InvalidRequest,
                        format!("principal `{}` is not TYPE:NAME", acl.principal),
                    ));
                }
                Arc::make_mut(&mut self.security).acls.insert(acl.clone());
                Ok(())
            }
            MetaRecord::RemoveAcl(acl) => {
                if !self.security.acls.contains(acl) {
                    return Err(refuse(ErrorCode::ResourceNotFound, "no such ACL"));
                }
                Arc::make_mut(&mut self.security).acls.remove(acl);
                Ok(())
            }
        }
    }

    /// Registers a broker (a new incarnation gets a new epoch).
    fn register_broker(&mut self, b: &BrokerMeta) -> Result<(), MetaError> {
        if b.epoch < self.next_broker_epoch {
            return Err(refuse(
                ErrorCode::StaleBrokerEpoch,
                format!("broker epoch {} below {}", b.epoch, self.next_broker_epoch),
            ));
        }
        if self
            .brokers
            .get(&b.id)
            .is_some_and(|old| old.incarnation != b.incarnation)
            && let Some((t, i)) = self.held_by(b.id, !b.clean_start)
        {
            return Err(refuse(
                ErrorCode::InvalidRequest,
                format!(
                    "broker {}'s previous incarnation still holds `{t}` partition {i}: fence it first",
                    b.id
                ),
            ));
        }
        self.next_broker_epoch = b.epoch + 1;
        self.brokers.insert(b.id, b.clone());
        Ok(())
    }

    /// Fences or unfences a broker at its current epoch.
    fn set_fenced(&mut self, id: &i32, epoch: &i64, fenced: bool, shutdown: bool) -> Result<(), MetaError> {
        let b = self
            .brokers
            .get_mut(id)
            .filter(|b| b.epoch == *epoch)
            .ok_or_else(|| refuse(ErrorCode::StaleBrokerEpoch, format!("broker {id} has no epoch {epoch}")))?;
        b.fenced = fenced;
        b.shut_down = shutdown;
        Ok(())
    }

    /// Adds a topic under a name and id not taken.
    fn create_topic(
        &mut self,
        name: &str,
        id: &Uuid,
        configs: &BTreeMap<String, String>,
        partitions: &[PartitionState],
    ) -> Result<(), MetaError> {
        validate_topic_name(name).map_err(|m| refuse(ErrorCode::InvalidTopicException, m))?;
        if self.topics.contains_key(name) {
            return Err(refuse(
                ErrorCode::TopicAlreadyExists,
                format!("topic `{name}` already exists"),
            ));
        }
        if id.is_nil() || self.topic_by_id(id).is_some() {
            return Err(refuse(ErrorCode::InvalidRequest, format!("topic id {id} is taken")));
        }
        if partitions.is_empty() {
            return Err(refuse(ErrorCode::InvalidPartitions, "a topic needs a partition"));
        }
        for (k, v) in configs {
            validate_topic_config(k, v).map_err(|m| refuse(ErrorCode::InvalidConfig, m))?;
        }
        for p in partitions {
            p.check().map_err(|m| refuse(ErrorCode::InvalidReplicaAssignment, m))?;
        }
        self.put(TopicMeta {
            name: name.into(),
            id: *id,
            partitions: i32::try_from(partitions.len())
                .map_err(|_| refuse(ErrorCode::InvalidPartitions, "too many partitions"))?,
            configs: configs.clone(),
            partition_states: partitions.to_vec(),
        });
        Ok(())
    }

    /// Removes a topic (never an internal one).
    fn delete_topic(&mut self, id: &Uuid) -> Result<(), MetaError> {
        let t = self.topic_named_by_id(id)?;
        if is_internal(&t.name) {
            return Err(refuse(
                ErrorCode::InvalidTopicException,
                format!("`{}` is an internal topic", t.name),
            ));
        }
        self.remove(&t.name);
        Ok(())
    }

    /// Appends partitions to a topic.
    fn create_partitions(&mut self, id: &Uuid, partitions: &[PartitionState]) -> Result<(), MetaError> {
        let t = self.topic_named_by_id(id)?;
        if partitions.is_empty() {
            return Err(refuse(ErrorCode::InvalidPartitions, "no partitions to add"));
        }
        for p in partitions {
            p.check().map_err(|m| refuse(ErrorCode::InvalidReplicaAssignment, m))?;
        }
        let mut states = t.partition_states.clone();
        states.extend(partitions.iter().cloned());
        let count =
            i32::try_from(states.len()).map_err(|_| refuse(ErrorCode::InvalidPartitions, "too many partitions"))?;
        self.put(TopicMeta {
            partitions: count,
            partition_states: states,
            ..(*t).clone()
        });
        Ok(())
    }

    /// Takes back a topic's last partitions (the undo of a creation).
    fn remove_partitions(&mut self, id: &Uuid, count: &i32) -> Result<(), MetaError> {
        let t = self.topic_named_by_id(id)?;
        if *count < 1 || *count >= t.partitions {
            return Err(refuse(
                ErrorCode::InvalidPartitions,
                format!("cannot remove {count} of {} partitions", t.partitions),
            ));
        }
        let keep = (t.partitions - count) as usize;
        self.put(TopicMeta {
            partitions: t.partitions - count,
            partition_states: t.partition_states[..keep].to_vec(),
            ..(*t).clone()
        });
        Ok(())
    }

    /// Replaces one partition's state: the partition epoch follows the
    /// current one, the leader epoch never goes back and grows with a new
    /// leader.
    fn change_partition(&mut self, id: &Uuid, partition: &i32, state: &PartitionState) -> Result<(), MetaError> {
        let t = self.topic_named_by_id(id)?;
        let now = usize::try_from(*partition)
            .ok()
            .and_then(|i| t.partition_states.get(i))
            .ok_or_else(|| {
                refuse(
                    ErrorCode::UnknownTopicOrPartition,
                    format!("`{}` has no partition {partition}", t.name),
                )
            })?;
        if state.partition_epoch != now.partition_epoch + 1 {
            return Err(refuse(
                ErrorCode::InvalidUpdateVersion,
                format!(
                    "partition epoch {} does not follow {}",
                    state.partition_epoch, now.partition_epoch
                ),
            ));
        }
        let leader_moved = state.leader != now.leader;
        if state.leader_epoch < now.leader_epoch || (leader_moved && state.leader_epoch == now.leader_epoch) {
            return Err(refuse(
                ErrorCode::FencedLeaderEpoch,
                format!(
                    "leader epoch {} after {} (leader {} → {})",
                    state.leader_epoch, now.leader_epoch, now.leader, state.leader
                ),
            ));
        }
        state
            .check()
            .map_err(|m| refuse(ErrorCode::InvalidReplicaAssignment, m))?;
        let mut states = t.partition_states.clone();
        states[*partition as usize] = state.clone();
        self.put(TopicMeta {
            partition_states: states,
            ..(*t).clone()
        });
        Ok(())
    }

    /// Replaces a topic's config overrides.
    fn set_topic_configs(&mut self, id: &Uuid, configs: &BTreeMap<String, String>) -> Result<(), MetaError> {
        let t = self.topic_named_by_id(id)?;
        for (k, v) in configs {
            validate_topic_config(k, v).map_err(|m| refuse(ErrorCode::InvalidConfig, m))?;
        }
        self.put(TopicMeta {
            configs: configs.clone(),
            ..(*t).clone()
        });
        Ok(())
    }

    /// Hands a block of producer ids to a broker; it starts at the next
    /// free id.
    fn producer_ids(&mut self, broker: &i32, first: &i64, count: &i64) -> Result<(), MetaError> {
        if *first != self.next_producer_id || *count < 1 {
            return Err(refuse(
                ErrorCode::UnknownServerError,
                format!(
                    "producer id block {first}+{count} for broker {broker}: the next free id is {}",
                    self.next_producer_id
                ),
            ));
        }
        self.next_producer_id = first + count;
        Ok(())
    }

    fn set_scram(
        &mut self,
        user: &str,
        mechanism: ScramMechanism,
        credential: Option<&ScramCredential>,
    ) -> Result<(), MetaError> {
        if user.is_empty() {
            return Err(refuse(ErrorCode::UnacceptableCredential, "the user name is empty"));
        }
        match credential {
            Some(c) => {
                if !(ScramMechanism::MIN_ITERATIONS..=ScramMechanism::MAX_ITERATIONS).contains(&c.iterations) {
                    return Err(refuse(
                        ErrorCode::UnacceptableCredential,
                        format!(
                            "{} iterations: between {} and {} are accepted",
                            c.iterations,
                            ScramMechanism::MIN_ITERATIONS,
                            ScramMechanism::MAX_ITERATIONS
                        ),
                    ));
                }
                Arc::make_mut(&mut self.security)
                    .scram
                    .entry(user.to_string())
                    .or_default()
                    .insert(mechanism, c.clone());
            }
            None => {
                let security = Arc::make_mut(&mut self.security);
                let Some(user_creds) = security.scram.get_mut(user) else {
                    return Err(refuse(
                        ErrorCode::ResourceNotFound,
                        format!("user `{user}` has no SCRAM credential"),
                    ));
                };
                if user_creds.remove(&mechanism).is_none() {
                    return Err(refuse(
                        ErrorCode::ResourceNotFound,
                        format!("user `{user}` has no {} credential", mechanism.name()),
                    ));
                }
                if user_creds.is_empty() {
                    security.scram.remove(user);
                }
            }
        }
        Ok(())
    }

    /// What shards read: the topics, brokers and security state, stamped
    /// with `version`.
    pub fn snapshot(&self, version: u64) -> Snapshot {
        let mut s = Snapshot::of(version, self.topics.clone(), self.ids.clone(), self.brokers.clone());
        s.security = self.security.clone();
        s
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use proptest::prelude::*;

    use super::*;

    fn uuid(n: u8) -> Uuid {
        Uuid::from_bytes([n.wrapping_add(1); 16])
    }

    fn broker(id: i32, epoch: i64) -> BrokerMeta {
        BrokerMeta {
            id,
            incarnation: uuid(id as u8),
            epoch,
            host: "127.0.0.1".into(),
            port: 9092,
            shards: 2,
            fenced: true,
            registered_ms: 1_700_000_000_000,
            shut_down: false,
            clean_start: false,
            endpoints: Vec::new(),
        }
    }

    #[test]
    fn a_refused_record_changes_nothing() {
        let mut image = Image::default();
        image
            .apply(&MetaRecord::CreateTopic {
                name: "a".into(),
                id: uuid(1),
                configs: BTreeMap::new(),
                partitions: vec![PartitionState::new(vec![1, 2])],
            })
            .unwrap();
        let before = image.clone();
        let bad = [
            MetaRecord::CreateTopic {
                name: "a".into(),
                id: uuid(2),
                configs: BTreeMap::new(),
                partitions: vec![PartitionState::new(vec![1])],
            },
            MetaRecord::CreateTopic {
                name: "b".into(),
                id: uuid(1),
                configs: BTreeMap::new(),
                partitions: vec![PartitionState::new(vec![1])],
            },
            MetaRecord::CreateTopic {
                name: "c".into(),
                id: uuid(3),
                configs: BTreeMap::new(),
                partitions: vec![PartitionState::new(vec![1, 1])],
            },
            MetaRecord::DeleteTopic { id: uuid(9) },
            MetaRecord::RemovePartitions { id: uuid(1), count: 1 },
            MetaRecord::ProducerIds {
                broker: 1,
                first: 5,
                count: 10,
            },
            MetaRecord::FenceBroker {
                id: 1,
                epoch: 0,
                shutdown: false,
            },
        ];
        for r in &bad {
            assert!(image.apply(r).is_err(), "{r:?}");
            assert_eq!(image, before, "{r:?}");
        }
    }

    #[test]
    fn a_change_applies_all_or_none_of_its_records() {
        let mut image = Image::default();
        image.apply(&MetaRecord::RegisterBroker(broker(1, 0))).unwrap();
        image.apply(&MetaRecord::RegisterBroker(broker(2, 1))).unwrap();
        image.apply(&MetaRecord::UnfenceBroker { id: 1, epoch: 0 }).unwrap();
        image.apply(&MetaRecord::UnfenceBroker { id: 2, epoch: 1 }).unwrap();
        let before = image.clone();
        let fence = |id, epoch| MetaRecord::FenceBroker {
            id,
            epoch,
            shutdown: false,
        };
        // The second record was drafted on an image where broker 2 had
        // epoch 0: the first, valid on its own, is not applied either.
        let records = [fence(1, 0), fence(2, 0), fence(2, 1)];
        let results = image.apply_changes(&records, &[0, 0, 1]);
        assert!(results[0].is_err() && results[1].is_err(), "{results:?}");
        assert!(results[2].is_ok());
        assert!(!image.brokers[&1].fenced, "the refused change left nothing");
        assert!(image.brokers[&2].fenced);
        // Without change numbers every record stands on its own.
        let mut each = before.clone();
        let results = each.apply_changes(&records[..2], &[]);
        assert!(results[0].is_ok() && results[1].is_err());
        assert!(each.brokers[&1].fenced);
    }

    #[test]
    fn partition_changes_are_checked_against_epochs() {
        let mut image = Image::default();
        let id = uuid(1);
        image
            .apply(&MetaRecord::CreateTopic {
                name: "t".into(),
                id,
                configs: BTreeMap::new(),
                partitions: vec![PartitionState::new(vec![1, 2, 3])],
            })
            .unwrap();
        let change = |leader: i32, isr: Vec<i32>, leader_epoch, partition_epoch| MetaRecord::ChangePartition {
            id,
            partition: 0,
            state: PartitionState {
                replicas: vec![1, 2, 3],
                isr,
                leader,
                leader_epoch,
                partition_epoch,
                elr: Vec::new(),
            },
        };
        // A shrink by the same leader: partition epoch +1, leader epoch kept.
        image.apply(&change(1, vec![1, 2], 0, 1)).unwrap();
        // The same epoch again is stale.
        let e = image.apply(&change(1, vec![1], 0, 1)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidUpdateVersion);
        // A new leader must bump the leader epoch.
        let e = image.apply(&change(2, vec![2], 0, 2)).unwrap_err();
        assert_eq!(e.code, ErrorCode::FencedLeaderEpoch);
        image.apply(&change(2, vec![2], 1, 2)).unwrap();
        // A leader outside the ISR is refused.
        let e = image.apply(&change(3, vec![2], 2, 3)).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidReplicaAssignment);
        let p = &image.topics()["t"].partition_states[0];
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 2));
    }

    #[test]
    fn brokers_register_fence_and_unfence_by_epoch() {
        let mut image = Image::default();
        image.apply(&MetaRecord::RegisterBroker(broker(1, 0))).unwrap();
        assert!(image.apply(&MetaRecord::UnfenceBroker { id: 1, epoch: 0 }).is_ok());
        assert!(!image.brokers[&1].fenced);
        // A re-registration after a restart gets a higher epoch; the old
        // epoch no longer fences it.
        image.apply(&MetaRecord::RegisterBroker(broker(1, 1))).unwrap();
        assert!(
            image
                .apply(&MetaRecord::FenceBroker {
                    id: 1,
                    epoch: 0,
                    shutdown: false
                })
                .is_err()
        );
        assert!(image.apply(&MetaRecord::RegisterBroker(broker(2, 1))).is_err());
        assert_eq!(image.next_broker_epoch, 2);
    }

    /// Any record, valid or not against the image it meets.
    fn record() -> impl Strategy<Value = MetaRecord> {
        let ids = 0u8..6;
        let replicas = proptest::collection::vec(1i32..5, 1..4);
        let state = (replicas.clone(), 0usize..3, 0i32..4, 0i32..4).prop_map(|(replicas, isr_len, le, pe)| {
            let isr: Vec<i32> = replicas.iter().copied().take(isr_len.max(1)).collect();
            PartitionState {
                leader: isr[0],
                isr,
                replicas,
                leader_epoch: le,
                partition_epoch: pe,
                elr: Vec::new(),
            }
        });
        prop_oneof![
            (1i32..4, 0i64..6).prop_map(|(id, epoch)| MetaRecord::RegisterBroker(broker(id, epoch))),
            (1i32..4, 0i64..6, any::<bool>()).prop_map(|(id, epoch, shutdown)| MetaRecord::FenceBroker {
                id,
                epoch,
                shutdown
            }),
            (1i32..4, 0i64..6).prop_map(|(id, epoch)| MetaRecord::UnfenceBroker { id, epoch }),
            (ids.clone(), proptest::collection::vec(replicas.clone(), 1..4)).prop_map(|(n, parts)| {
                MetaRecord::CreateTopic {
                    name: format!("t{n}"),
                    id: uuid(n),
                    configs: BTreeMap::from([("retention.ms".to_string(), format!("{n}000"))]),
                    partitions: parts.into_iter().map(PartitionState::new).collect(),
                }
            }),
            ids.clone().prop_map(|n| MetaRecord::DeleteTopic { id: uuid(n) }),
            (ids.clone(), replicas).prop_map(|(n, r)| MetaRecord::CreatePartitions {
                id: uuid(n),
                partitions: vec![PartitionState::new(r)],
            }),
            (ids.clone(), 1i32..3).prop_map(|(n, count)| MetaRecord::RemovePartitions { id: uuid(n), count }),
            (ids.clone(), 0i32..3, state).prop_map(|(n, partition, state)| MetaRecord::ChangePartition {
                id: uuid(n),
                partition,
                state,
            }),
            (ids, 0i64..100).prop_map(|(n, v)| MetaRecord::SetTopicConfigs {
                id: uuid(n),
                configs: BTreeMap::from([("segment.ms".to_string(), (v + 1).to_string())]),
            }),
            (0i64..3000).prop_map(|first| MetaRecord::ProducerIds {
                broker: 1,
                first: first / 1000 * 1000,
                count: 1000,
            }),
        ]
    }

    proptest! {
        /// Replaying the log from any snapshot point (the image written to
        /// bytes and read back, then the rest of the records) gives the same
        /// image and the same answers as replaying it from the start.
        #[test]
        fn replay_from_any_snapshot_point_gives_the_same_image(
            records in proptest::collection::vec(record(), 0..60),
            cut in 0usize..60,
        ) {
            let cut = cut.min(records.len());
            let mut whole = Image::default();
            let answers: Vec<bool> = records.iter().map(|r| whole.apply(r).is_ok()).collect();
            let mut head = Image::default();
            for r in &records[..cut] {
                let _ = head.apply(r);
            }
            let bytes = serde_json::to_vec(&head).unwrap();
            let mut resumed: Image = serde_json::from_slice(&bytes).unwrap();
            prop_assert_eq!(&resumed, &head);
            let rest: Vec<bool> = records[cut..].iter().map(|r| resumed.apply(r).is_ok()).collect();
            prop_assert_eq!(&rest[..], &answers[cut..]);
            prop_assert_eq!(&resumed, &whole);
            // The indexes agree with a walk over every topic.
            for b in 0..6 {
                let indexed: Vec<&str> = whole.topics_on(b).map(|t| &*t.name).collect();
                let walked: Vec<&str> = whole
                    .topics
                    .values()
                    .filter(|t| t.partition_states.iter().any(|p| p.replicas.contains(&b)))
                    .map(|t| &*t.name)
                    .collect();
                prop_assert_eq!(indexed, walked);
            }
            let partitions: i64 = whole.topics.values().map(|t| i64::from(t.partitions)).sum();
            prop_assert_eq!(whole.partition_count(), partitions);
            prop_assert_eq!(whole.ids.len(), whole.topics.len());
            for t in whole.topics.values() {
                prop_assert_eq!(whole.topic_by_id(&t.id).map(|t| &t.name), Some(&t.name));
            }
            // Every partition state in the image keeps its rules.
            for t in whole.topics.values() {
                prop_assert_eq!(t.partitions as usize, t.partition_states.len());
                for p in &t.partition_states {
                    prop_assert!(p.check().is_ok());
                }
            }
        }
    }
}
