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

use std::cell::{Cell, OnceCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::error_codes::ErrorCode;
use crate::image::{BrokerMeta, Image, MetaRecord, PartitionState};
use crate::meta::{
    MetaError, OFFSETS_TOPIC, TOPIC_CONFIGS, TopicMeta, is_internal, validate_topic_config, validate_topic_name,
};
use crate::quorum::{Command, Publisher, Quorum, QuorumError, QuorumSettings, RaftQuorum};
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
    quorum: RaftQuorum,
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

/// A change being drafted: the image as it will be, and the records that
/// make it so, each with the resource it answers and the record that
/// would reverse it.
#[derive(Debug)]
pub struct Draft {
    image: Image,
    max_partitions: i64,
    default_replication_factor: i16,
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
        let total: i64 = self.image.topics.values().map(|t| i64::from(t.partitions)).sum();
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

    /// Brokers that may take new replicas: registered and not fenced.
    fn live_brokers(&self) -> Vec<i32> {
        self.image
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect()
    }

    /// Replicas for partitions `first..first + count`: `rf` live brokers
    /// each, leaders spread round the brokers.
    fn place(&self, first: i32, count: i32, replication_factor: i16) -> Result<Vec<PartitionState>, MetaError> {
        let rf = if replication_factor == -1 {
            self.default_replication_factor
        } else {
            replication_factor
        };
        let live = self.live_brokers();
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
        let offset: i64 = self.image.topics.values().map(|t| i64::from(t.partitions)).sum();
        Ok((first..first + count)
            .map(|p| {
                let start = (offset + i64::from(p)) as usize % live.len();
                PartitionState::new((0..rf as usize).map(|k| live[(start + k) % live.len()]).collect())
            })
            .collect())
    }

    /// Partitions from a request's own replica assignment.
    fn assigned(&self, assignments: &[Vec<i32>]) -> Result<Vec<PartitionState>, MetaError> {
        let known: BTreeSet<i32> = self.image.brokers.keys().copied().collect();
        let rf = assignments.first().map_or(0, Vec::len);
        assignments
            .iter()
            .map(|replicas| {
                if replicas.len() != rf {
                    return Err(refuse(
                        ErrorCode::InvalidReplicaAssignment,
                        "every partition of an assignment needs the same number of replicas",
                    ));
                }
                if let Some(b) = replicas.iter().find(|b| !known.contains(b)) {
                    return Err(refuse(
                        ErrorCode::InvalidReplicaAssignment,
                        format!("broker {b} is not registered"),
                    ));
                }
                let state = PartitionState::new(replicas.clone());
                if replicas.iter().collect::<BTreeSet<_>>().len() != replicas.len() || replicas.is_empty() {
                    return Err(refuse(
                        ErrorCode::InvalidReplicaAssignment,
                        format!("replicas {replicas:?} are empty or name a broker twice"),
                    ));
                }
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
                    if !TOPIC_CONFIGS.contains(&k.as_str()) {
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
    pub async fn start(shard: &Rc<Shard>) -> Result<(), String> {
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
        let settings = QuorumSettings {
            node_id,
            // One voter, in this process: it needs no address.
            voters: BTreeMap::from([(node_id, String::new())]),
            snapshot_every: config.metadata_snapshot_records,
            write_timeout: Duration::from_millis(config.controller_write_timeout_ms),
        };
        let quorum = RaftQuorum::start(&meta_dir.join("quorum"), settings, publisher, RECOVERY_WAIT).await?;
        let controller = Self {
            quorum,
            node_id: config.node_id,
            max_partitions: i64::try_from(config.max_partitions).unwrap_or(i64::MAX),
            default_replication_factor: config.default_replication_factor,
            busy: Cell::new(false),
            done: Changed::default(),
            producer_ids: Cell::new((0, 0)),
        };
        shard.set_controller(controller)?;
        let c = shard.controller().ok_or("the controller was not installed")?;
        c.migrate(&meta_dir).await?;
        let snapshot = Arc::new(c.quorum.state().snapshot());
        shard.publish(snapshot).await?;
        c.register(shard).await?;
        c.ensure_offsets_topic(shard).await
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
                .write(Command { records })
                .await
                .map_err(|e| format!("writing old metadata to the quorum: {e}"))?;
            if let Some(e) = reply.results.iter().find_map(|r| r.as_ref().err()) {
                return Err(format!("old metadata refused: {}", e.message));
            }
            tracing::info!(records = n, "moved meta/topics.json into the metadata log");
        }
        crate::meta::retire_legacy(meta_dir).map_err(|e| format!("renaming old metadata files: {e}"))
    }

    /// Registers this broker with a new incarnation and epoch, unfenced:
    /// it is the controller's own process.
    async fn register(&self, shard: &Shard) -> Result<(), String> {
        let config = shard.config();
        for _ in 0..5 {
            let epoch = self.quorum.state().image.next_broker_epoch;
            let broker = BrokerMeta {
                id: self.node_id,
                incarnation: Uuid::new_v4(),
                epoch,
                host: config.advertised_host.clone(),
                port: config.advertised_port,
                shards: u32::try_from(shard.shard_count()).unwrap_or(u32::MAX),
                fenced: true,
                registered_ms: crate::groups::group::now_ms(),
            };
            let records = vec![
                MetaRecord::RegisterBroker(broker),
                MetaRecord::UnfenceBroker {
                    id: self.node_id,
                    epoch,
                },
            ];
            let reply = self
                .quorum
                .write(Command { records })
                .await
                .map_err(|e| format!("registering broker {}: {e}", self.node_id))?;
            match reply.results.first() {
                Some(Ok(())) => return Ok(()),
                Some(Err(e)) if e.code == ErrorCode::StaleBrokerEpoch => continue,
                Some(Err(e)) => return Err(format!("registering broker {}: {}", self.node_id, e.message)),
                None => return Err("registration written without an answer".into()),
            }
        }
        Err(format!("registering broker {}: the epoch kept moving", self.node_id))
    }

    /// Creates `__consumer_offsets` if it does not exist yet. Its partition
    /// count never changes afterwards: it decides which partition, and so
    /// which shard, coordinates each group.
    async fn ensure_offsets_topic(&self, shard: &Shard) -> Result<(), String> {
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
        let answer = self
            .change(shard, vec![()], move |draft, ()| {
                if draft.topic(OFFSETS_TOPIC).is_some() {
                    return Ok(());
                }
                draft
                    .create_topic(OFFSETS_TOPIC, partitions, configs.clone(), -1, &[])
                    .map(|_| ())
            })
            .await;
        match answer.into_iter().next() {
            Some(Ok(()))
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

    /// Drafts one answer per item with `f`, writes the records, installs
    /// the result, and answers each item.
    async fn change<I, T, F>(&self, shard: &Shard, items: Vec<I>, mut f: F) -> Vec<Result<T, MetaError>>
    where
        F: FnMut(&mut Draft, I) -> Result<T, MetaError>,
    {
        self.lock().await;
        let mut draft = self.draft();
        let mut answers: Vec<Result<T, MetaError>> = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                draft.slot = i;
                f(&mut draft, item)
            })
            .collect();
        if !draft.records.is_empty() {
            self.write(shard, draft.records, &mut answers).await;
        }
        self.unlock();
        answers
    }

    async fn write<T>(&self, shard: &Shard, drafted: Vec<Drafted>, answers: &mut [Result<T, MetaError>]) {
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
        };
        let reply = match self.quorum.write(command).await {
            Ok(r) => r,
            Err(e) => {
                let code = match e {
                    QuorumError::NoLeader(_) => ErrorCode::NotController,
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
            match self.quorum.write(Command { records: undo }).await {
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
                .write(Command { records: vec![record] })
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

/// Runs a change on the controller shard: `f` drafts each item's answer;
/// see [`Controller`]. When the controller is gone, each item gets
/// NOT_CONTROLLER.
pub async fn controller_each<I, T, F>(shard: &Shard, items: Vec<I>, f: F) -> Vec<Result<T, MetaError>>
where
    I: Send + 'static,
    T: Send + 'static,
    F: FnMut(&mut Draft, I) -> Result<T, MetaError> + Send + 'static,
{
    let n = items.len();
    let answer = shard
        .submit_to(ShardId(0), move |ctl| async move {
            let c = ctl.controller()?;
            Some(c.change(&ctl, items, f).await)
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

/// The controller slot of a shard: set on shard 0 at start.
pub type ControllerSlot = OnceCell<Controller>;
