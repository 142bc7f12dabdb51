//! `sluice topic|group|cluster ...`: administration of any Kafka-protocol
//! broker from a terminal, over the Kafka protocol (a blocking connection
//! to the first reachable broker of `--brokers`). Tables by default,
//! `--json` for scripts. Exit codes: 0 done, 1 the broker refused (the
//! Kafka error's name is printed), 3 no broker reachable or the
//! connection failed; clap answers bad usage with 2.

use std::collections::BTreeMap;
use std::process::ExitCode;

use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, CreateTopicsResponse, DeleteGroupsRequest, DeleteGroupsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FetchRequest, FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, OffsetCommitRequest, OffsetCommitResponse, ProduceRequest, ProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;
use sluice_tools::secure::ClientSecurity;

mod security;
use sluice_tools::{Connection, Error};

/// Where the brokers are, and how to print.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Brokers to try, in order: HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "SLUICE_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// JSON on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Client properties for a secured listener, Kafka's names
    /// (security.protocol, sasl.mechanism, sasl.jaas.config,
    /// ssl.truststore.location, ...; PEM stores).
    #[arg(long, env = "SLUICE_COMMAND_CONFIG")]
    command_config: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Topics: list, describe, create, alter-config, delete.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Consumer groups: list, describe (members and lag per partition).
    #[command(subcommand)]
    Group(GroupCommand),
    /// The cluster: brokers and the active controller.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Transactions: list the transactional ids the brokers coordinate,
    /// describe one.
    #[command(subcommand)]
    Txn(TxnCommand),
    /// Log segment files, offline.
    #[command(subcommand)]
    Log(LogCommand),
    /// ACLs: add, list, remove (with an authorizer, `docs/security.md`).
    #[command(subcommand)]
    Acl(security::AclCommand),
    /// Users' SCRAM credentials: set, list, delete.
    #[command(subcommand)]
    User(security::UserCommand),
    /// Prints a shell completion script for `sluice` (bash, zsh, fish,
    /// elvish, powershell).
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, clap::Subcommand)]
pub enum TxnCommand {
    /// Every transactional id of every broker, with its producer id and
    /// state (ListTransactions on each broker).
    List {
        #[command(flatten)]
        target: Target,
        /// Only ids in this state (Ongoing, PrepareCommit, ...); repeatable.
        #[arg(long = "state")]
        states: Vec<String>,
    },
    /// A transactional id's producer, epoch, state, timeout, start and the
    /// partitions of its open transaction (DescribeTransactions at its
    /// coordinator).
    Describe {
        #[command(flatten)]
        target: Target,
        transactional_id: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum LogCommand {
    /// Prints the record batches of a segment file and checks each one's
    /// CRC (Kafka's kafka-dump-log.sh); exits 1 when a batch is damaged.
    Dump {
        /// A segment file, `<partition dir>/<base offset>.log`.
        segment: std::path::PathBuf,
        /// Also print each record's offset, key and value sizes (batches
        /// without compression).
        #[arg(long)]
        records: bool,
        /// One JSON object per batch instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Every topic with its partition count and replication factor.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Each partition's leader, replicas and ISR.
    Describe {
        #[command(flatten)]
        target: Target,
        topics: Vec<String>,
    },
    /// Creates a topic.
    Create {
        #[command(flatten)]
        target: Target,
        topic: String,
        /// Partitions (the broker's num.partitions when left out).
        #[arg(long, short = 'p')]
        partitions: Option<i32>,
        /// Replicas of each partition (the broker's
        /// default.replication.factor when left out).
        #[arg(long, short = 'r')]
        replication_factor: Option<i16>,
        /// A topic config, KEY=VALUE; repeatable.
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// Sets or removes topic configs.
    AlterConfig {
        #[command(flatten)]
        target: Target,
        topic: String,
        /// KEY=VALUE to set; repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// KEY to return to the broker's default; repeatable.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Deletes topics.
    Delete {
        #[command(flatten)]
        target: Target,
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Writes each line of stdin as a record to one partition (acks=all).
    Produce {
        #[command(flatten)]
        target: Target,
        topic: String,
        #[arg(long, short = 'p', default_value_t = 0)]
        partition: i32,
        /// Split each line at the first SEP into key and value.
        #[arg(long, value_name = "SEP")]
        key_separator: Option<String>,
    },
    /// Prints the records of one partition, one value per line (with
    /// `--json`, one object per record).
    Consume {
        #[command(flatten)]
        target: Target,
        topic: String,
        #[arg(long, short = 'p', default_value_t = 0)]
        partition: i32,
        /// The first offset to read (default: the log start).
        #[arg(long)]
        offset: Option<i64>,
        /// Stop after this many records.
        #[arg(long)]
        max_messages: Option<u64>,
        /// Stop when no record arrives for this long.
        #[arg(long, default_value_t = 2000)]
        idle_ms: u64,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum GroupCommand {
    /// Every consumer group with its state.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// A group's state and members, and per partition its committed
    /// offset, the log end and the lag.
    Describe {
        #[command(flatten)]
        target: Target,
        group: String,
    },
    /// Moves an empty group's committed offsets on the partitions of
    /// `--topic` (all of them, or `TOPIC:0,2`).
    ResetOffsets {
        #[command(flatten)]
        target: Target,
        group: String,
        /// TOPIC or TOPIC:P,P,...; repeatable.
        #[arg(long = "topic", required = true)]
        topics: Vec<String>,
        #[command(flatten)]
        to: ResetTo,
        /// Print the new offsets without committing them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Deletes empty groups and their committed offsets.
    Delete {
        #[command(flatten)]
        target: Target,
        #[arg(required = true)]
        groups: Vec<String>,
    },
}

/// Where `reset-offsets` moves each partition; exactly one.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct ResetTo {
    /// The log start.
    #[arg(long)]
    to_earliest: bool,
    /// The high watermark.
    #[arg(long)]
    to_latest: bool,
    /// This offset, kept within the log start and the high watermark.
    #[arg(long)]
    to_offset: Option<i64>,
    /// The first offset whose timestamp is at or after this UTC time,
    /// `YYYY-MM-DDTHH:MM:SS[.mmm]Z` (the high watermark when none is).
    #[arg(long)]
    to_datetime: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// The cluster id, the brokers and the active controller.
    Info {
        #[command(flatten)]
        target: Target,
    },
    /// Healthy when there is an active controller, no broker is fenced,
    /// and every partition has a leader and its full ISR; exits 1 when
    /// not, naming what is wrong.
    Health {
        #[command(flatten)]
        target: Target,
    },
}

/// A failed command: what to print and the exit code.
#[derive(Debug)]
struct Failure {
    message: String,
    code: u8,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::Kafka { api, code } => Failure {
                message: format!("{api}: {}", error_name(code)),
                code: 1,
            },
            other => Failure {
                message: other.to_string(),
                code: 3,
            },
        }
    }
}

fn refused(what: &str, code: i16, message: Option<&StrBytes>) -> Failure {
    let detail = message.map(|m| format!(": {m}")).unwrap_or_default();
    Failure {
        message: format!("{what}: {}{detail}", error_name(code)),
        code: 1,
    }
}

/// Kafka's name of an error code (`UNKNOWN_TOPIC_OR_PARTITION`).
pub fn error_name(code: i16) -> String {
    crate::error_codes::kafka_name(code)
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// How the commands reach the brokers: `--command-config`, read once.
static SECURITY: std::sync::OnceLock<ClientSecurity> = std::sync::OnceLock::new();

fn security() -> &'static ClientSecurity {
    SECURITY.get_or_init(ClientSecurity::default)
}

/// Connects to the first reachable broker of `t`, secured as its
/// `--command-config` says.
fn connect_target(t: &Target) -> Result<Connection, Failure> {
    if let Some(path) = &t.command_config
        && SECURITY.get().is_none()
    {
        let s = ClientSecurity::from_file(path).map_err(|e| Failure {
            message: e.to_string(),
            code: 2,
        })?;
        let _ = SECURITY.set(s);
    }
    connect(&t.brokers)
}

/// Connects to one broker (one the cluster named), secured as the first
/// connection was.
fn connect_one(addr: &str) -> Result<Connection, Error> {
    Connection::connect_secured(addr, security())
}

fn connect(brokers: &str) -> Result<Connection, Failure> {
    let mut last = None;
    for b in brokers.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        match connect_one(b) {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(
        || Failure {
            message: "no broker given (--brokers)".into(),
            code: 3,
        },
        Failure::from,
    ))
}

fn key_value(kv: &str) -> Result<(String, String), Failure> {
    kv.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| Failure {
            message: format!("`{kv}`: expected KEY=VALUE"),
            code: 2,
        })
}

/// Prints rows as an aligned table under `head`.
fn table(head: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells.iter().zip(&width).map(|(c, w)| format!("{c:w$}")).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(head.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn ids(v: &[kafka_protocol::messages::BrokerId]) -> String {
    v.iter().map(|b| b.0.to_string()).collect::<Vec<_>>().join(",")
}

fn metadata(conn: &mut Connection, topics: Option<&[String]>) -> Result<MetadataResponse, Failure> {
    let mut req = MetadataRequest::default();
    req.topics = topics.map(|ts| {
        ts.iter()
            .map(|t| {
                let mut rt = MetadataRequestTopic::default();
                rt.name = Some(TopicName(s(t)));
                rt
            })
            .collect()
    });
    req.allow_auto_topic_creation = false;
    Ok(conn.call(ApiKey::Metadata, 12, &req)?)
}

/// Runs a subcommand; prints its result and returns the exit code.
pub fn run(cmd: Command) -> ExitCode {
    match dispatch(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("sluice: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn dispatch(cmd: Command) -> Result<(), Failure> {
    match cmd {
        Command::Acl(c) => security::dispatch(c),
        Command::User(c) => security::user_dispatch(c),
        Command::Topic(TopicCommand::List { target }) => topic_list(&target),
        Command::Topic(TopicCommand::Describe { target, topics }) => topic_describe(&target, &topics),
        Command::Topic(TopicCommand::Create {
            target,
            topic,
            partitions,
            replication_factor,
            configs,
        }) => topic_create(&target, &topic, partitions, replication_factor, &configs),
        Command::Topic(TopicCommand::AlterConfig {
            target,
            topic,
            set,
            delete,
        }) => topic_alter_config(&target, &topic, &set, &delete),
        Command::Topic(TopicCommand::Delete { target, topics }) => topic_delete(&target, &topics),
        Command::Topic(TopicCommand::Produce {
            target,
            topic,
            partition,
            key_separator,
        }) => topic_produce(&target, &topic, partition, key_separator.as_deref()),
        Command::Topic(TopicCommand::Consume {
            target,
            topic,
            partition,
            offset,
            max_messages,
            idle_ms,
        }) => topic_consume(&target, &topic, partition, offset, max_messages, idle_ms),
        Command::Group(GroupCommand::List { target }) => group_list(&target),
        Command::Group(GroupCommand::Describe { target, group }) => group_describe(&target, &group),
        Command::Group(GroupCommand::ResetOffsets {
            target,
            group,
            topics,
            to,
            dry_run,
        }) => group_reset_offsets(&target, &group, &topics, &to, dry_run),
        Command::Group(GroupCommand::Delete { target, groups }) => group_delete(&target, &groups),
        Command::Cluster(ClusterCommand::Info { target }) => cluster_info(&target),
        Command::Txn(TxnCommand::List { target, states }) => txn_list(&target, &states),
        Command::Txn(TxnCommand::Describe {
            target,
            transactional_id,
        }) => txn_describe(&target, &transactional_id),
        Command::Cluster(ClusterCommand::Health { target }) => cluster_health(&target),
        Command::Completions { .. } => Err(Failure {
            message: "completions are printed by the binary's entry point".into(),
            code: 2,
        }),
        Command::Log(LogCommand::Dump { segment, records, json }) => log_dump(&segment, records, json),
    }
}

/// `sluice log dump`: walks the segment batch by batch. A batch whose
/// length runs past the end, or a length of zero (the preallocated tail),
/// ends the walk; a batch with a bad CRC, magic or count is reported and
/// skipped by its length.
fn log_dump(path: &std::path::Path, records: bool, json: bool) -> Result<(), Failure> {
    use sluice_engine::batch::{self, BatchHeader, HEADER_BYTES, LOG_OVERHEAD_BYTES};
    let data = std::fs::read(path).map_err(|e| Failure {
        message: format!("{}: {e}", path.display()),
        code: 3,
    })?;
    let (mut pos, mut batches, mut damaged) = (0usize, 0u64, 0u64);
    let mut end_note = "end of file".to_string();
    while pos + LOG_OVERHEAD_BYTES <= data.len() {
        let rest = &data[pos..];
        let Ok(h) = BatchHeader::parse(rest) else {
            end_note = format!(
                "{} bytes at position {pos} are too short for a batch header",
                rest.len()
            );
            break;
        };
        let len = match h.total_len() {
            Some(LOG_OVERHEAD_BYTES) | None => {
                end_note = format!("no batch at position {pos} (zeros or a negative length): end of data");
                break;
            }
            Some(n) if n > rest.len() => {
                end_note = format!(
                    "batch at position {pos} claims {n} bytes; {} remain: truncated",
                    rest.len()
                );
                damaged += 1;
                break;
            }
            Some(n) => n,
        };
        let b = &rest[..len];
        // As stored: a compacted log's batches may hold fewer records
        // than their offsets span.
        let verdict = batch::validate_stored(b, usize::MAX);
        batches += 1;
        if verdict.is_err() {
            damaged += 1;
        }
        let status = verdict
            .as_ref()
            .map_or_else(|e| format!("DAMAGED: {e}"), |_| "ok".to_string());
        let mut recs = Vec::new();
        if records && verdict.is_ok() && h.compression() == 0 {
            let _ = batch::walk_records(&b[HEADER_BYTES..], h.records_count(), |r| {
                recs.push((
                    h.base_offset() + r.offset_delta,
                    r.key.map(<[u8]>::len),
                    r.value.map(<[u8]>::len),
                ));
            });
        }
        // Offsets the batch spans that hold no record: removed by the
        // log cleaner.
        let gaps = (h.last_offset() - h.base_offset() + 1 - i64::from(h.records_count())).max(0);
        if json {
            println!(
                "{}",
                json!({
                    "position": pos, "base_offset": h.base_offset(), "last_offset": h.last_offset(),
                    "count": h.records_count(), "size": len, "leader_epoch": h.partition_leader_epoch(),
                    "producer_id": h.producer_id(), "producer_epoch": h.producer_epoch(),
                    "base_sequence": h.base_sequence(), "compression": h.compression(),
                    "transactional": h.is_transactional(), "control": h.is_control(),
                    "max_timestamp": h.max_timestamp(), "crc": format!("{:#010x}", h.crc()),
                    "status": status, "gaps": gaps,
                    "records": recs.iter().map(|(o, k, v)| json!({"offset": o, "key_size": k, "value_size": v})).collect::<Vec<_>>(),
                })
            );
        } else {
            println!(
                "position {pos} offsets {}..{} count {} gaps {gaps} size {len} epoch {} producer {}/{} seq {} compression {} max_ts {} crc {:#010x} {status}",
                h.base_offset(),
                h.last_offset(),
                h.records_count(),
                h.partition_leader_epoch(),
                h.producer_id(),
                h.producer_epoch(),
                h.base_sequence(),
                h.compression(),
                h.max_timestamp(),
                h.crc(),
            );
            for (o, k, v) in &recs {
                let size = |s: &Option<usize>| s.map_or_else(|| "null".to_string(), |n| n.to_string());
                let tombstone = if v.is_none() { " (tombstone)" } else { "" };
                println!("  offset {o} key {} value {}{tombstone}", size(k), size(v));
            }
        }
        pos += len;
    }
    if !json {
        println!("{batches} batch(es), {damaged} damaged; {end_note}");
    }
    if damaged > 0 {
        return Err(Failure {
            message: format!("{}: {damaged} damaged batch(es)", path.display()),
            code: 1,
        });
    }
    Ok(())
}

fn topic_list(t: &Target) -> Result<(), Failure> {
    let mut conn = connect_target(t)?;
    let md = metadata(&mut conn, None)?;
    let mut rows: Vec<(String, usize, usize, bool)> = md
        .topics
        .iter()
        .map(|tp| {
            let name = tp.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
            let rf = tp.partitions.first().map_or(0, |p| p.replica_nodes.len());
            (name, tp.partitions.len(), rf, tp.is_internal)
        })
        .collect();
    rows.sort();
    if t.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(n, p, rf, i)| json!({"topic": n, "partitions": p, "replication_factor": rf, "internal": i}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        let cells: Vec<Vec<String>> = rows
            .iter()
            .map(|(n, p, rf, i)| vec![n.clone(), p.to_string(), rf.to_string(), i.to_string()])
            .collect();
        table(&["TOPIC", "PARTITIONS", "REPLICATION", "INTERNAL"], &cells);
    }
    Ok(())
}

fn topic_describe(t: &Target, topics: &[String]) -> Result<(), Failure> {
    let mut conn = connect_target(t)?;
    let md = metadata(&mut conn, (!topics.is_empty()).then_some(topics))?;
    let mut out = Vec::new();
    let mut rows = Vec::new();
    for tp in &md.topics {
        let name = tp.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        if tp.error_code != 0 {
            return Err(refused(&format!("topic `{name}`"), tp.error_code, None));
        }
        let mut parts: Vec<_> = tp.partitions.iter().collect();
        parts.sort_by_key(|p| p.partition_index);
        for p in parts {
            out.push(json!({
                "topic": name, "partition": p.partition_index, "leader": p.leader_id.0,
                "leader_epoch": p.leader_epoch,
                "replicas": p.replica_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                "isr": p.isr_nodes.iter().map(|b| b.0).collect::<Vec<_>>(),
                "offline": p.offline_replicas.iter().map(|b| b.0).collect::<Vec<_>>(),
            }));
            rows.push(vec![
                name.clone(),
                p.partition_index.to_string(),
                p.leader_id.0.to_string(),
                p.leader_epoch.to_string(),
                ids(&p.replica_nodes),
                ids(&p.isr_nodes),
                ids(&p.offline_replicas),
            ]);
        }
    }
    if t.json {
        println!("{}", serde_json::Value::Array(out));
    } else {
        table(
            &["TOPIC", "PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "OFFLINE"],
            &rows,
        );
    }
    Ok(())
}

fn topic_create(
    t: &Target,
    topic: &str,
    partitions: Option<i32>,
    rf: Option<i16>,
    configs: &[String],
) -> Result<(), Failure> {
    let mut ct = CreatableTopic::default();
    ct.name = TopicName(s(topic));
    ct.num_partitions = partitions.unwrap_or(-1);
    ct.replication_factor = rf.unwrap_or(-1);
    for kv in configs {
        let (k, v) = key_value(kv)?;
        let mut c = CreatableTopicConfig::default();
        c.name = s(&k);
        c.value = Some(s(&v));
        ct.configs.push(c);
    }
    let mut req = CreateTopicsRequest::default();
    req.topics = vec![ct];
    req.timeout_ms = 30_000;
    let mut conn = connect_target(t)?;
    let resp: CreateTopicsResponse = conn.call(ApiKey::CreateTopics, 7, &req)?;
    let r = resp.topics.first().ok_or_else(|| Failure {
        message: "CreateTopics: empty answer".into(),
        code: 1,
    })?;
    if r.error_code != 0 {
        return Err(refused(
            &format!("creating `{topic}`"),
            r.error_code,
            r.error_message.as_ref(),
        ));
    }
    if t.json {
        println!(
            "{}",
            json!({"topic": topic, "topic_id": r.topic_id.to_string(), "partitions": r.num_partitions, "replication_factor": r.replication_factor})
        );
    } else {
        println!(
            "created {topic}: {} partition(s), replication factor {}",
            r.num_partitions, r.replication_factor
        );
    }
    Ok(())
}

fn topic_alter_config(t: &Target, topic: &str, set: &[String], delete: &[String]) -> Result<(), Failure> {
    let mut res = AlterConfigsResource::default();
    res.resource_type = 2; // TOPIC
    res.resource_name = s(topic);
    for kv in set {
        let (k, v) = key_value(kv)?;
        let mut c = AlterableConfig::default();
        c.name = s(&k);
        c.config_operation = 0; // SET
        c.value = Some(s(&v));
        res.configs.push(c);
    }
    for k in delete {
        let mut c = AlterableConfig::default();
        c.name = s(k);
        c.config_operation = 1; // DELETE
        res.configs.push(c);
    }
    if res.configs.is_empty() {
        return Err(Failure {
            message: "nothing to change: give --set KEY=VALUE or --delete KEY".into(),
            code: 2,
        });
    }
    let mut req = IncrementalAlterConfigsRequest::default();
    req.resources = vec![res];
    let mut conn = connect_target(t)?;
    let resp: IncrementalAlterConfigsResponse = conn.call(ApiKey::IncrementalAlterConfigs, 1, &req)?;
    for r in &resp.responses {
        if r.error_code != 0 {
            return Err(refused(
                &format!("altering `{topic}`"),
                r.error_code,
                r.error_message.as_ref(),
            ));
        }
    }
    if t.json {
        println!("{}", json!({"topic": topic, "set": set, "deleted": delete}));
    } else {
        println!("altered {topic}");
    }
    Ok(())
}

fn topic_delete(t: &Target, topics: &[String]) -> Result<(), Failure> {
    let mut req = DeleteTopicsRequest::default();
    req.topics = topics
        .iter()
        .map(|n| {
            let mut d = DeleteTopicState::default();
            d.name = Some(TopicName(s(n)));
            d
        })
        .collect();
    req.timeout_ms = 30_000;
    let mut conn = connect_target(t)?;
    let resp: DeleteTopicsResponse = conn.call(ApiKey::DeleteTopics, 6, &req)?;
    let mut first_error = None;
    let mut out = Vec::new();
    for r in &resp.responses {
        let name = r.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        out.push(json!({"topic": name, "error": (r.error_code != 0).then(|| error_name(r.error_code))}));
        if r.error_code != 0 {
            first_error
                .get_or_insert_with(|| refused(&format!("deleting `{name}`"), r.error_code, r.error_message.as_ref()));
        } else if !t.json {
            println!("deleted {name}");
        }
    }
    if t.json {
        println!("{}", serde_json::Value::Array(out));
    }
    first_error.map_or(Ok(()), Err)
}

/// A connection to the leader of `topic`-`partition`.
fn leader_of(t: &Target, topic: &str, partition: i32) -> Result<Connection, Failure> {
    let mut conn = connect_target(t)?;
    let md = metadata(&mut conn, Some(&[topic.to_string()]))?;
    let tp = md.topics.first().ok_or_else(|| Failure {
        message: format!("no metadata for `{topic}`"),
        code: 1,
    })?;
    if tp.error_code != 0 {
        return Err(refused(&format!("topic `{topic}`"), tp.error_code, None));
    }
    let p = tp
        .partitions
        .iter()
        .find(|p| p.partition_index == partition)
        .ok_or_else(|| refused(&format!("{topic}-{partition}"), 3, None))?;
    let b = md
        .brokers
        .iter()
        .find(|b| b.node_id == p.leader_id)
        .ok_or_else(|| refused(&format!("{topic}-{partition}"), 5, None))?;
    Ok(connect_one(&format!("{}:{}", b.host, b.port))?)
}

fn topic_produce(t: &Target, topic: &str, partition: i32, sep: Option<&str>) -> Result<(), Failure> {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    use std::io::BufRead;
    let mut conn = leader_of(t, topic, partition)?;
    let lines: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .collect::<Result<_, _>>()
        .map_err(|e| Failure {
            message: format!("reading stdin: {e}"),
            code: 3,
        })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let (mut sent, mut first) = (0usize, None);
    for chunk in lines.chunks(1000) {
        let records: Vec<Record> = chunk
            .iter()
            .enumerate()
            .map(|(i, line)| {
                let (key, value) = match sep.and_then(|s| line.split_once(s)) {
                    Some((k, v)) => (Some(bytes::Bytes::from(k.to_string())), v.to_string()),
                    None => (None, line.clone()),
                };
                Record {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: -1,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: i as i64,
                    sequence: -1,
                    timestamp: now,
                    key,
                    value: Some(bytes::Bytes::from(value)),
                    headers: Default::default(),
                }
            })
            .collect();
        let mut buf = bytes::BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).map_err(|e| Failure {
            message: format!("encoding records: {e}"),
            code: 3,
        })?;
        let mut pd = PartitionProduceData::default();
        pd.index = partition;
        pd.records = Some(buf.freeze());
        let mut td = TopicProduceData::default();
        td.name = TopicName(s(topic));
        td.partition_data = vec![pd];
        let mut req = ProduceRequest::default();
        req.acks = -1;
        req.timeout_ms = 30_000;
        req.topic_data = vec![td];
        let resp: ProduceResponse = conn.call(ApiKey::Produce, 9, &req)?;
        for tr in &resp.responses {
            for pr in &tr.partition_responses {
                if pr.error_code != 0 {
                    return Err(refused(
                        &format!("producing to {topic}-{partition}"),
                        pr.error_code,
                        pr.error_message.as_ref(),
                    ));
                }
                first.get_or_insert(pr.base_offset);
            }
        }
        sent += chunk.len();
    }
    if t.json {
        println!(
            "{}",
            json!({"topic": topic, "partition": partition, "records": sent, "base_offset": first})
        );
    } else {
        println!(
            "produced {sent} record(s) to {topic}-{partition}{}",
            first.map(|o| format!(" from offset {o}")).unwrap_or_default()
        );
    }
    Ok(())
}

fn topic_consume(
    t: &Target,
    topic: &str,
    partition: i32,
    offset: Option<i64>,
    max: Option<u64>,
    idle_ms: u64,
) -> Result<(), Failure> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::records::RecordBatchDecoder;
    let mut conn = leader_of(t, topic, partition)?;
    let mut next = match offset {
        Some(o) => o,
        None => {
            let parts = BTreeMap::from([(topic.to_string(), vec![partition])]);
            list_offsets(&mut conn, &parts, -2)?
                .get(&(topic.to_string(), partition))
                .copied()
                .unwrap_or(0)
        }
    };
    let (mut printed, mut idle_since) = (0u64, std::time::Instant::now());
    loop {
        if max.is_some_and(|m| printed >= m) || idle_since.elapsed().as_millis() as u64 >= idle_ms {
            return Ok(());
        }
        let mut fp = FetchPartition::default();
        fp.partition = partition;
        fp.fetch_offset = next;
        fp.partition_max_bytes = 1 << 20;
        fp.current_leader_epoch = -1;
        fp.last_fetched_epoch = -1;
        let mut ft = FetchTopic::default();
        ft.topic = TopicName(s(topic));
        ft.partitions = vec![fp];
        let mut req = FetchRequest::default();
        req.replica_id = kafka_protocol::messages::BrokerId(-1);
        req.max_wait_ms = 500;
        req.min_bytes = 1;
        req.max_bytes = 1 << 20;
        req.topics = vec![ft];
        let resp: FetchResponse = conn.call(ApiKey::Fetch, 12, &req)?;
        if resp.error_code != 0 {
            return Err(refused("Fetch", resp.error_code, None));
        }
        for tr in resp.responses {
            for pd in tr.partitions {
                if pd.error_code != 0 {
                    return Err(refused(&format!("fetching {topic}-{partition}"), pd.error_code, None));
                }
                let Some(mut data) = pd.records else { continue };
                while bytes::Buf::has_remaining(&data) {
                    let set = RecordBatchDecoder::decode(&mut data).map_err(|e| Failure {
                        message: format!("decoding records of {topic}-{partition}: {e}"),
                        code: 3,
                    })?;
                    for r in set.records {
                        if r.offset < next || r.control {
                            continue;
                        }
                        next = r.offset + 1;
                        idle_since = std::time::Instant::now();
                        let text =
                            |b: &Option<bytes::Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
                        if t.json {
                            println!(
                                "{}",
                                json!({"offset": r.offset, "timestamp": r.timestamp, "key": text(&r.key), "value": text(&r.value)})
                            );
                        } else {
                            println!("{}", text(&r.value).unwrap_or_default());
                        }
                        printed += 1;
                        if max.is_some_and(|m| printed >= m) {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

fn group_list(t: &Target) -> Result<(), Failure> {
    let mut conn = connect_target(t)?;
    let groups = sluice_tools::list_groups(&mut conn)?;
    let described = describe_groups(&mut conn, &groups)?;
    if t.json {
        let v: Vec<_> = described
            .iter()
            .map(|(g, d)| json!({"group": g, "protocol": d.protocol, "state": d.state, "members": d.members}))
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        let rows: Vec<Vec<String>> = described
            .iter()
            .map(|(g, d)| {
                vec![
                    g.clone(),
                    d.protocol.to_string(),
                    d.state.clone(),
                    d.members.to_string(),
                ]
            })
            .collect();
        table(&["GROUP", "PROTOCOL", "STATE", "MEMBERS"], &rows);
    }
    Ok(())
}

/// A group as `group list` and `group describe` show it.
#[derive(Debug, Clone, Default)]
struct GroupSummary {
    /// `classic`, or `consumer` (KIP-848).
    protocol: &'static str,
    state: String,
    members: usize,
    /// A consumer-protocol group's epochs, assignor and members.
    consumer: Option<kafka_protocol::messages::consumer_group_describe_response::DescribedGroup>,
}

/// Each group's protocol, state and members: DescribeGroups, and
/// ConsumerGroupDescribe for the groups it says are not classic.
fn describe_groups(conn: &mut Connection, groups: &[String]) -> Result<BTreeMap<String, GroupSummary>, Failure> {
    use kafka_protocol::messages::{ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse};
    let mut out = BTreeMap::new();
    if groups.is_empty() {
        return Ok(out);
    }
    let mut req = DescribeGroupsRequest::default();
    req.groups = groups.iter().map(|g| GroupId(s(g))).collect();
    let resp: DescribeGroupsResponse = conn.call(ApiKey::DescribeGroups, 5, &req)?;
    let mut others = Vec::new();
    for g in resp.groups {
        if g.error_code == kafka_protocol::ResponseError::GroupIdNotFound.code() {
            others.push(g.group_id);
            continue;
        }
        if g.error_code != 0 {
            return Err(refused(&format!("group `{}`", &*g.group_id), g.error_code, None));
        }
        let summary = GroupSummary {
            protocol: "classic",
            state: g.group_state.to_string(),
            members: g.members.len(),
            consumer: None,
        };
        out.insert(g.group_id.to_string(), summary);
    }
    if !others.is_empty() {
        let mut req = ConsumerGroupDescribeRequest::default();
        req.group_ids = others;
        let resp: ConsumerGroupDescribeResponse = conn.call(ApiKey::ConsumerGroupDescribe, 0, &req)?;
        for g in resp.groups {
            if g.error_code != 0 {
                return Err(refused(
                    &format!("group `{}`", &*g.group_id),
                    g.error_code,
                    g.error_message.as_ref(),
                ));
            }
            let summary = GroupSummary {
                protocol: "consumer",
                state: g.group_state.to_string(),
                members: g.members.len(),
                consumer: None,
            };
            out.insert(
                g.group_id.to_string(),
                GroupSummary {
                    consumer: Some(g),
                    ..summary
                },
            );
        }
    }
    Ok(out)
}

/// `topic-partition` names of a consumer-protocol assignment.
fn assignment_names(a: &kafka_protocol::messages::consumer_group_describe_response::Assignment) -> Vec<String> {
    a.topic_partitions
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| format!("{}-{p}", &*t.topic_name)))
        .collect()
}

fn group_describe(t: &Target, group: &str) -> Result<(), Failure> {
    let mut conn = connect_target(t)?;
    let described = describe_groups(&mut conn, &[group.to_string()])?;
    let d = described.get(group).cloned().unwrap_or_default();
    let rows = sluice_tools::lag(&coordinator(t, group)?, &[group.to_string()])?;
    let members: Vec<_> = d
        .consumer
        .iter()
        .flat_map(|c| &c.members)
        .map(|m| {
            json!({"member_id": m.member_id.as_str(), "instance_id": m.instance_id.as_deref(),
                   "client_id": m.client_id.as_str(), "member_epoch": m.member_epoch,
                   "assigned": assignment_names(&m.assignment), "target": assignment_names(&m.target_assignment)})
        })
        .collect();
    if t.json {
        let mut v = json!({"group": group, "protocol": d.protocol, "state": d.state, "members": d.members,
                           "partitions": rows});
        if let Some(c) = &d.consumer {
            v["group_epoch"] = json!(c.group_epoch);
            v["assignment_epoch"] = json!(c.assignment_epoch);
            v["assignor"] = json!(c.assignor_name.as_str());
            v["member_assignments"] = json!(members);
        }
        println!("{v}");
    } else {
        println!(
            "group {group}: {} ({} protocol), {} member(s)",
            d.state, d.protocol, d.members
        );
        if let Some(c) = &d.consumer {
            println!(
                "group epoch {}, assignment epoch {}, assignor {}",
                c.group_epoch, c.assignment_epoch, &*c.assignor_name
            );
            let member_rows: Vec<Vec<String>> = c
                .members
                .iter()
                .map(|m| {
                    vec![
                        m.member_id.to_string(),
                        m.instance_id.as_deref().unwrap_or("-").to_string(),
                        m.member_epoch.to_string(),
                        assignment_names(&m.assignment).join(","),
                        assignment_names(&m.target_assignment).join(","),
                    ]
                })
                .collect();
            table(&["MEMBER", "INSTANCE", "EPOCH", "ASSIGNED", "TARGET"], &member_rows);
        }
        print!("{}", sluice_tools::table(&rows));
    }
    Ok(())
}

/// The address of `group`'s coordinator (FindCoordinator through any
/// broker of `--brokers`).
fn coordinator(t: &Target, group: &str) -> Result<String, Failure> {
    let mut conn = connect_target(t)?;
    let mut req = FindCoordinatorRequest::default();
    req.key = s(group);
    let resp: FindCoordinatorResponse = conn.call(ApiKey::FindCoordinator, 3, &req)?;
    if resp.error_code != 0 {
        return Err(refused(
            &format!("finding the coordinator of `{group}`"),
            resp.error_code,
            resp.error_message.as_ref(),
        ));
    }
    Ok(format!("{}:{}", resp.host, resp.port))
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.mmm]Z`.
pub fn parse_utc(text: &str) -> Option<i64> {
    let t = text.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (h.next()??, h.next()??, h.next()??);
    let ms: i64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + hh) * 60 + mm) * 60_000 + ss * 1000 + ms)
}

/// ListOffsets at `timestamp` (-2 earliest, -1 latest) for `parts`.
fn list_offsets(
    conn: &mut Connection,
    parts: &BTreeMap<String, Vec<i32>>,
    timestamp: i64,
) -> Result<BTreeMap<(String, i32), i64>, Failure> {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let mut req = ListOffsetsRequest::default();
    req.replica_id = kafka_protocol::messages::BrokerId(-1);
    req.topics = parts
        .iter()
        .map(|(t, ps)| {
            let mut lt = ListOffsetsTopic::default();
            lt.name = TopicName(s(t));
            lt.partitions = ps
                .iter()
                .map(|&p| {
                    let mut lp = ListOffsetsPartition::default();
                    lp.partition_index = p;
                    lp.timestamp = timestamp;
                    lp
                })
                .collect();
            lt
        })
        .collect();
    let resp: ListOffsetsResponse = conn.call(ApiKey::ListOffsets, 7, &req)?;
    let mut out = BTreeMap::new();
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code != 0 {
                return Err(refused(
                    &format!("ListOffsets {}-{}", &*t.name, p.partition_index),
                    p.error_code,
                    None,
                ));
            }
            out.insert((t.name.to_string(), p.partition_index), p.offset);
        }
    }
    Ok(out)
}

fn group_reset_offsets(t: &Target, group: &str, topics: &[String], to: &ResetTo, dry_run: bool) -> Result<(), Failure> {
    let mut conn = connect_target(t)?;
    // The partitions: named ones, or all of the topic's.
    let mut parts: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for spec in topics {
        let (topic, list) = spec
            .split_once(':')
            .map_or((spec.as_str(), None), |(a, b)| (a, Some(b)));
        let ps: Vec<i32> = match list {
            Some(l) => l
                .split(',')
                .map(|p| {
                    p.trim().parse().map_err(|_| Failure {
                        message: format!("`{spec}`: expected TOPIC or TOPIC:P,P,..."),
                        code: 2,
                    })
                })
                .collect::<Result<_, _>>()?,
            None => {
                let md = metadata(&mut conn, Some(&[topic.to_string()]))?;
                let tp = md.topics.first().ok_or_else(|| Failure {
                    message: format!("no metadata for `{topic}`"),
                    code: 1,
                })?;
                if tp.error_code != 0 {
                    return Err(refused(&format!("topic `{topic}`"), tp.error_code, None));
                }
                tp.partitions.iter().map(|p| p.partition_index).collect()
            }
        };
        parts.entry(topic.to_string()).or_default().extend(ps);
    }
    let earliest = list_offsets(&mut conn, &parts, -2)?;
    let latest = list_offsets(&mut conn, &parts, -1)?;
    let at_time = match &to.to_datetime {
        Some(text) => {
            let ms = parse_utc(text).ok_or_else(|| Failure {
                message: format!("`{text}`: expected YYYY-MM-DDTHH:MM:SS[.mmm]Z"),
                code: 2,
            })?;
            Some(list_offsets(&mut conn, &parts, ms)?)
        }
        None => None,
    };
    let mut plan: Vec<(String, i32, i64)> = Vec::new();
    for (topic, ps) in &parts {
        for &p in ps {
            let k = (topic.clone(), p);
            let (lo, hi) = (
                earliest.get(&k).copied().unwrap_or(0),
                latest.get(&k).copied().unwrap_or(0),
            );
            let new = if to.to_earliest {
                lo
            } else if to.to_latest {
                hi
            } else if let Some(o) = to.to_offset {
                o.clamp(lo, hi)
            } else {
                // No record at or after the time: the high watermark.
                at_time
                    .as_ref()
                    .and_then(|m| m.get(&k).copied())
                    .filter(|&o| o >= 0)
                    .unwrap_or(hi)
            };
            plan.push((topic.clone(), p, new));
        }
    }
    if !dry_run {
        let mut coord = connect_one(&coordinator(t, group)?)?;
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(s(group));
        req.generation_id_or_member_epoch = -1;
        req.retention_time_ms = -1;
        for topic in parts.keys() {
            let mut rt = OffsetCommitRequestTopic::default();
            rt.name = TopicName(s(topic));
            for (_, p, o) in plan.iter().filter(|(tp, _, _)| tp == topic) {
                let mut rp = OffsetCommitRequestPartition::default();
                rp.partition_index = *p;
                rp.committed_offset = *o;
                rp.committed_leader_epoch = -1;
                rt.partitions.push(rp);
            }
            req.topics.push(rt);
        }
        let resp: OffsetCommitResponse = coord.call(ApiKey::OffsetCommit, 8, &req)?;
        for rt in &resp.topics {
            for rp in &rt.partitions {
                if rp.error_code != 0 {
                    return Err(refused(
                        &format!("committing {}-{} for `{group}`", &*rt.name, rp.partition_index),
                        rp.error_code,
                        None,
                    ));
                }
            }
        }
    }
    if t.json {
        let v: Vec<_> = plan
            .iter()
            .map(|(topic, p, o)| json!({"topic": topic, "partition": p, "offset": o}))
            .collect();
        println!("{}", json!({"group": group, "dry_run": dry_run, "partitions": v}));
    } else {
        let rows: Vec<Vec<String>> = plan
            .iter()
            .map(|(topic, p, o)| vec![topic.clone(), p.to_string(), o.to_string()])
            .collect();
        table(&["TOPIC", "PARTITION", "NEW-OFFSET"], &rows);
        if dry_run {
            println!("(dry run: nothing committed)");
        }
    }
    Ok(())
}

fn group_delete(t: &Target, groups: &[String]) -> Result<(), Failure> {
    let mut first_error = None;
    let mut out = Vec::new();
    for g in groups {
        let mut conn = connect_one(&coordinator(t, g)?)?;
        let mut req = DeleteGroupsRequest::default();
        req.groups_names = vec![GroupId(s(g))];
        let resp: DeleteGroupsResponse = conn.call(ApiKey::DeleteGroups, 2, &req)?;
        for r in resp.results {
            out.push(json!({"group": r.group_id.to_string(), "error": (r.error_code != 0).then(|| error_name(r.error_code))}));
            if r.error_code != 0 {
                first_error.get_or_insert_with(|| refused(&format!("deleting group `{g}`"), r.error_code, None));
            } else if !t.json {
                println!("deleted group {g}");
            }
        }
    }
    if t.json {
        println!("{}", serde_json::Value::Array(out));
    }
    first_error.map_or(Ok(()), Err)
}

/// DescribeCluster v2 with the fenced brokers included.
fn describe_cluster(conn: &mut Connection) -> Result<DescribeClusterResponse, Failure> {
    let mut req = DescribeClusterRequest::default();
    req.include_fenced_brokers = true;
    Ok(conn.call(ApiKey::DescribeCluster, 2, &req)?)
}

/// `sluice txn list`: ListTransactions on every live broker (each answers
/// for the ids it coordinates).
fn txn_list(t: &Target, states: &[String]) -> Result<(), Failure> {
    use kafka_protocol::messages::{ListTransactionsRequest, ListTransactionsResponse};
    let mut conn = connect_target(t)?;
    let cluster = describe_cluster(&mut conn)?;
    let mut rows: Vec<(String, i64, String, i32)> = Vec::new();
    for b in cluster.brokers.iter().filter(|b| !b.is_fenced) {
        let mut there = connect(&format!("{}:{}", b.host, b.port))?;
        let req = ListTransactionsRequest::default().with_state_filters(states.iter().map(|x| s(x)).collect());
        let resp: ListTransactionsResponse = there.call(ApiKey::ListTransactions, 1, &req)?;
        if resp.error_code != 0 {
            return Err(refused("ListTransactions", resp.error_code, None));
        }
        if let Some(unknown) = resp.unknown_state_filters.first() {
            return Err(Failure {
                message: format!("unknown transaction state `{unknown}`"),
                code: 2,
            });
        }
        for x in resp.transaction_states {
            rows.push((
                x.transactional_id.to_string(),
                x.producer_id.0,
                x.transaction_state.to_string(),
                b.broker_id.0,
            ));
        }
    }
    rows.sort();
    if t.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(id, pid, state, coordinator)| {
                json!({"transactional_id": id, "producer_id": pid, "state": state, "coordinator": coordinator})
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        let rows: Vec<Vec<String>> = rows
            .into_iter()
            .map(|(id, pid, state, c)| vec![id, pid.to_string(), state, c.to_string()])
            .collect();
        table(&["TRANSACTIONAL ID", "PRODUCER", "STATE", "COORDINATOR"], &rows);
    }
    Ok(())
}

/// `sluice txn describe ID`: FindCoordinator, then DescribeTransactions
/// there.
fn txn_describe(t: &Target, id: &str) -> Result<(), Failure> {
    use kafka_protocol::messages::{
        DescribeTransactionsRequest, DescribeTransactionsResponse, FindCoordinatorRequest, FindCoordinatorResponse,
        TransactionalId,
    };
    let mut conn = connect_target(t)?;
    let mut find = FindCoordinatorRequest::default();
    find.key_type = 1;
    find.coordinator_keys = vec![s(id)];
    let found: FindCoordinatorResponse = conn.call(ApiKey::FindCoordinator, 4, &find)?;
    let c = found.coordinators.first().ok_or_else(|| Failure {
        message: "FindCoordinator: empty answer".into(),
        code: 1,
    })?;
    if c.error_code != 0 {
        return Err(refused(
            &format!("finding the coordinator of `{id}`"),
            c.error_code,
            c.error_message.as_ref(),
        ));
    }
    let mut there = connect(&format!("{}:{}", c.host, c.port))?;
    let req = DescribeTransactionsRequest::default().with_transactional_ids(vec![TransactionalId(s(id))]);
    let resp: DescribeTransactionsResponse = there.call(ApiKey::DescribeTransactions, 0, &req)?;
    let x = resp.transaction_states.first().ok_or_else(|| Failure {
        message: "DescribeTransactions: empty answer".into(),
        code: 1,
    })?;
    if x.error_code != 0 {
        return Err(refused(&format!("describing `{id}`"), x.error_code, None));
    }
    let partitions: Vec<String> = x
        .topics
        .iter()
        .flat_map(|tp| tp.partitions.iter().map(move |p| format!("{}-{p}", &*tp.topic)))
        .collect();
    if t.json {
        println!(
            "{}",
            json!({"transactional_id": id, "coordinator": c.node_id.0, "state": x.transaction_state.to_string(),
                   "producer_id": x.producer_id.0, "producer_epoch": x.producer_epoch,
                   "timeout_ms": x.transaction_timeout_ms, "start_ms": x.transaction_start_time_ms,
                   "partitions": partitions})
        );
    } else {
        let rows = vec![
            vec!["coordinator".to_string(), c.node_id.0.to_string()],
            vec!["state".to_string(), x.transaction_state.to_string()],
            vec!["producer id".to_string(), x.producer_id.0.to_string()],
            vec!["producer epoch".to_string(), x.producer_epoch.to_string()],
            vec!["timeout ms".to_string(), x.transaction_timeout_ms.to_string()],
            vec!["started (ms)".to_string(), x.transaction_start_time_ms.to_string()],
            vec!["partitions".to_string(), partitions.join(", ")],
        ];
        table(&["TRANSACTIONAL ID", id], &rows);
    }
    Ok(())
}

fn cluster_info(t: &Target) -> Result<(), Failure> {
    let mut conn = connect_target(t)?;
    let resp = describe_cluster(&mut conn)?;
    if resp.error_code != 0 {
        return Err(refused("DescribeCluster", resp.error_code, resp.error_message.as_ref()));
    }
    let mut brokers: Vec<_> = resp.brokers.iter().collect();
    brokers.sort_by_key(|b| b.broker_id.0);
    if t.json {
        let v: Vec<_> = brokers
            .iter()
            .map(|b| json!({"id": b.broker_id.0, "host": b.host.to_string(), "port": b.port, "fenced": b.is_fenced}))
            .collect();
        println!(
            "{}",
            json!({"cluster_id": resp.cluster_id.to_string(), "controller": resp.controller_id.0, "brokers": v})
        );
    } else {
        println!(
            "cluster {}, active controller {}",
            resp.cluster_id, resp.controller_id.0
        );
        let rows: Vec<Vec<String>> = brokers
            .iter()
            .map(|b| {
                vec![
                    b.broker_id.0.to_string(),
                    format!("{}:{}", b.host, b.port),
                    b.is_fenced.to_string(),
                ]
            })
            .collect();
        table(&["BROKER", "ADDRESS", "FENCED"], &rows);
    }
    Ok(())
}

fn cluster_health(t: &Target) -> Result<(), Failure> {
    let mut conn = connect_target(t)?;
    let cluster = describe_cluster(&mut conn)?;
    if cluster.error_code != 0 {
        return Err(refused(
            "DescribeCluster",
            cluster.error_code,
            cluster.error_message.as_ref(),
        ));
    }
    let md = metadata(&mut conn, None)?;
    let fenced: Vec<i32> = cluster
        .brokers
        .iter()
        .filter(|b| b.is_fenced)
        .map(|b| b.broker_id.0)
        .collect();
    let (mut offline, mut under, mut total) = (Vec::new(), Vec::new(), 0usize);
    for tp in &md.topics {
        let name = tp.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
        for p in &tp.partitions {
            total += 1;
            if p.leader_id.0 < 0 {
                offline.push(format!("{name}-{}", p.partition_index));
            } else if p.isr_nodes.len() < p.replica_nodes.len() {
                under.push(format!("{name}-{}", p.partition_index));
            }
        }
    }
    offline.sort();
    under.sort();
    let mut problems = Vec::new();
    if cluster.controller_id.0 < 0 {
        problems.push("no active controller".to_string());
    }
    if !fenced.is_empty() {
        problems.push(format!("fenced brokers: {fenced:?}"));
    }
    if !offline.is_empty() {
        problems.push(format!(
            "{} partition(s) without a leader: {}",
            offline.len(),
            offline.join(" ")
        ));
    }
    if !under.is_empty() {
        problems.push(format!(
            "{} under-replicated partition(s): {}",
            under.len(),
            under.join(" ")
        ));
    }
    if t.json {
        println!(
            "{}",
            json!({
                "healthy": problems.is_empty(), "controller": cluster.controller_id.0,
                "brokers": cluster.brokers.len(), "fenced_brokers": fenced, "partitions": total,
                "offline_partitions": offline, "under_replicated_partitions": under,
            })
        );
    } else if problems.is_empty() {
        println!(
            "healthy: controller {}, {} broker(s), {total} partition(s) led with their full ISR",
            cluster.controller_id.0,
            cluster.brokers.len()
        );
    } else {
        for p in &problems {
            println!("unhealthy: {p}");
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            message: format!("cluster unhealthy: {}", problems.join("; ")),
            code: 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_datetimes_parse_to_epoch_milliseconds() {
        assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_utc("2026-11-28T16:39:32Z"), Some(1_795_883_972_000));
        assert_eq!(parse_utc("2000-02-29T12:00:00.5Z"), Some(951_825_600_500));
        assert_eq!(parse_utc("2026-13-01T00:00:00Z"), None);
        assert_eq!(parse_utc("2026-11-28 16:39:32"), None);
    }

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(-32000), "error code -32000");
    }
}
