//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs: topic configs
//! are read and changed (through the controller); broker configs are
//! described read-only.

use bytes::BytesMut;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, alter_configs_response,
    incremental_alter_configs_response,
};

use sluice_metadata::security::Operation;

use super::{Ctx, Outcome, admin, str_bytes};
use crate::config::BrokerConfig;
use crate::controller::ControllerRequest;
use crate::error_codes::ErrorCode;
use crate::meta::{MetaError, TOPIC_CONFIGS};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
const SOURCE_DYNAMIC_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// The value of the broker setting a topic config overrides (the
/// table's `broker_setting`), as a topic without an override takes it.
fn topic_default(config: &BrokerConfig, broker_setting: &str) -> String {
    match broker_setting {
        "log.cleanup.policy" => {
            let c = config.cleaner.defaults.cleanup;
            match (c.compact, c.delete) {
                (true, true) => "compact,delete",
                (true, false) => "compact",
                _ => "delete",
            }
            .into()
        }
        "log.cleaner.min.cleanable.ratio" => config.cleaner.defaults.min_cleanable_ratio.to_string(),
        "log.cleaner.min.compaction.lag.ms" => config.cleaner.defaults.min_lag_ms.to_string(),
        "log.cleaner.max.compaction.lag.ms" => config.cleaner.defaults.max_lag_ms.to_string(),
        "log.cleaner.delete.retention.ms" => config.cleaner.defaults.delete_retention_ms.to_string(),
        "log.retention.ms" => config.log_retention_ms.to_string(),
        "log.retention.bytes" => config.log_retention_bytes.to_string(),
        "log.segment.bytes" => config.log_segment_bytes.to_string(),
        "log.roll.ms" => config.log_roll_ms.to_string(),
        "message.max.bytes" => config.message_max_bytes.to_string(),
        // Kafka's flush.ms default: never.
        "log.flush.interval.ms" => config
            .log_flush_interval_ms
            .map_or_else(|| i64::MAX.to_string(), |v| v.to_string()),
        "min.insync.replicas" => config.min_insync_replicas.to_string(),
        _ => String::new(),
    }
}

/// Broker settings described read-only.
fn broker_entries(config: &BrokerConfig) -> Vec<(&'static str, String)> {
    vec![
        ("node.id", config.node_id.to_string()),
        ("min.insync.replicas", config.min_insync_replicas.to_string()),
        ("replica.lag.time.max.ms", config.replica_lag_time_max_ms.to_string()),
        ("num.partitions", config.num_partitions.to_string()),
        ("auto.create.topics.enable", config.auto_create_topics.to_string()),
        ("message.max.bytes", config.message_max_bytes.to_string()),
        ("log.segment.bytes", config.log_segment_bytes.to_string()),
        ("log.roll.ms", config.log_roll_ms.to_string()),
        ("log.retention.ms", config.log_retention_ms.to_string()),
        ("log.retention.bytes", config.log_retention_bytes.to_string()),
        (
            "log.flush.interval.ms",
            config
                .log_flush_interval_ms
                .map_or_else(|| "null".into(), |v| v.to_string()),
        ),
        ("socket.request.max.bytes", config.socket_request_max_bytes.to_string()),
        ("max.connections", config.max_connections.to_string()),
        ("queued.max.request.bytes", config.queued_max_request_bytes.to_string()),
        ("log.dirs", config.data_dir.display().to_string()),
    ]
}

fn entry(name: &str, value: &str, read_only: bool, source: i8) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default();
    e.name = str_bytes(name);
    e.value = Some(str_bytes(value));
    e.read_only = read_only;
    e.config_source = source;
    e
}

/// Whether a BROKER resource names this node: its id, or with
/// `sluice.shard.listeners` one of its shards' ids.
fn is_this_broker(name: &str, config: &crate::config::BrokerConfig) -> bool {
    match name.parse::<i32>() {
        Ok(id) if id == config.node_id => true,
        Ok(id) if config.shard_listeners && id >= 0 => id / crate::config::SHARD_ID_STRIDE == config.node_id,
        _ => false,
    }
}

pub fn describe_configs(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: DescribeConfigsRequest = decode_or_return!(ctx, body);
    let config = ctx.shard.config();
    let snapshot = ctx.shard.meta();
    let mut resp = DescribeConfigsResponse::default();
    // Kafka's authorization: DESCRIBE_CONFIGS on the topic (or the
    // cluster, for a broker).
    let access = ctx.access();
    for res in &req.resources {
        let mut out = DescribeConfigsResult::default();
        out.resource_type = res.resource_type;
        out.resource_name = res.resource_name.clone();
        let denied = match res.resource_type {
            RESOURCE_TOPIC if !access.topic(Operation::DescribeConfigs, res.resource_name.as_str()) => {
                Some(ErrorCode::TopicAuthorizationFailed)
            }
            RESOURCE_BROKER if !access.cluster(Operation::DescribeConfigs) => {
                Some(ErrorCode::ClusterAuthorizationFailed)
            }
            _ => None,
        };
        if let Some(code) = denied {
            out.error_code = code.code();
            out.error_message = Some(str_bytes(code.to_string().as_str()));
            resp.results.push(out);
            continue;
        }
        let wanted = |k: &str| {
            res.configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.is_empty() || keys.iter().any(|w| w.as_str() == k))
        };
        match res.resource_type {
            RESOURCE_TOPIC => match snapshot.topic(res.resource_name.as_str()) {
                Some(topic) => {
                    for c in TOPIC_CONFIGS.iter().filter(|c| wanted(c.key)) {
                        let e = match topic.configs.get(c.key) {
                            Some(v) => entry(c.key, v, false, SOURCE_DYNAMIC_TOPIC),
                            None => entry(c.key, &topic_default(config, c.broker_setting), false, SOURCE_DEFAULT),
                        };
                        out.configs.push(e);
                    }
                }
                None => {
                    out.error_code = ErrorCode::UnknownTopicOrPartition.code();
                    out.error_message = Some(str_bytes(&format!("unknown topic `{}`", res.resource_name.as_str())));
                }
            },
            RESOURCE_BROKER => {
                let name = res.resource_name.as_str();
                if name.is_empty() || is_this_broker(name, config) {
                    for (k, v) in broker_entries(config).into_iter().filter(|(k, _)| wanted(k)) {
                        out.configs.push(entry(k, &v, true, SOURCE_STATIC_BROKER));
                    }
                } else {
                    out.error_code = ErrorCode::InvalidRequest.code();
                    out.error_message = Some(str_bytes(&format!("unknown broker `{name}`")));
                }
            }
            other => {
                out.error_code = ErrorCode::InvalidRequest.code();
                out.error_message = Some(str_bytes(&format!("resource type {other} is not supported")));
            }
        }
        resp.results.push(out);
    }
    ctx.respond(&resp)
}

/// One resource's change: (type, name, changes, incremental).
type Change = (i8, String, Result<Vec<(String, Option<String>)>, MetaError>);

async fn apply(ctx: &Ctx, changes: Vec<Change>, incremental: bool, validate_only: bool) -> Vec<Result<(), MetaError>> {
    // Kafka's authorization: ALTER_CONFIGS on the topic (or the cluster,
    // for a broker).
    let access = ctx.access();
    let requests = changes
        .into_iter()
        .map(|(kind, name, ops)| {
            let changes = ops?;
            if kind == RESOURCE_TOPIC && !access.topic(Operation::AlterConfigs, &name) {
                return Err(MetaError {
                    code: ErrorCode::TopicAuthorizationFailed,
                    message: "Topic authorization failed".into(),
                });
            }
            if kind == RESOURCE_BROKER && !access.cluster(Operation::AlterConfigs) {
                return Err(MetaError {
                    code: ErrorCode::ClusterAuthorizationFailed,
                    message: "Cluster authorization failed".into(),
                });
            }
            match kind {
                RESOURCE_TOPIC => Ok(ControllerRequest::AlterTopicConfigs {
                    name,
                    changes,
                    incremental,
                    validate_only,
                }),
                RESOURCE_BROKER => Err(MetaError {
                    code: ErrorCode::InvalidRequest,
                    message: "broker configs are read-only: set them at startup".into(),
                }),
                other => Err(MetaError {
                    code: ErrorCode::InvalidRequest,
                    message: format!("resource type {other} is not supported"),
                }),
            }
        })
        .collect();
    crate::controller::ask(&ctx.shard, requests)
        .await
        .into_iter()
        .map(|a| a.map(|_| ()))
        .collect()
}

pub async fn alter_configs(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: AlterConfigsRequest = decode_or_return!(ctx, body);
    let changes = req
        .resources
        .iter()
        .map(|r| {
            let ops = r
                .configs
                .iter()
                .map(|c| (c.name.to_string(), c.value.as_ref().map(|v| v.to_string())))
                .collect();
            (r.resource_type, r.resource_name.to_string(), Ok(ops))
        })
        .collect();
    let answers = apply(&ctx, changes, false, req.validate_only).await;
    let mut resp = AlterConfigsResponse::default();
    for (r, a) in req.resources.iter().zip(answers) {
        let mut out = alter_configs_response::AlterConfigsResourceResponse::default();
        out.resource_type = r.resource_type;
        out.resource_name = r.resource_name.clone();
        if let Err(e) = a {
            (out.error_code, out.error_message) = admin::error_fields(&e);
        }
        resp.responses.push(out);
    }
    ctx.respond(&resp)
}

pub async fn incremental_alter_configs(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: IncrementalAlterConfigsRequest = decode_or_return!(ctx, body);
    let changes = req
        .resources
        .iter()
        .map(|r| {
            let ops: Result<Vec<_>, MetaError> = r
                .configs
                .iter()
                .map(|c| match c.config_operation {
                    0 => Ok((
                        c.name.to_string(),
                        Some(c.value.as_ref().map(|v| v.to_string()).unwrap_or_default()),
                    )),
                    1 => Ok((c.name.to_string(), None)),
                    op => Err(MetaError {
                        code: ErrorCode::InvalidRequest,
                        message: format!(
                            "operation {op} on `{}`: only SET and DELETE apply to these configs",
                            c.name.as_str()
                        ),
                    }),
                })
                .collect();
            (r.resource_type, r.resource_name.to_string(), ops)
        })
        .collect();
    let answers = apply(&ctx, changes, true, req.validate_only).await;
    let mut resp = IncrementalAlterConfigsResponse::default();
    for (r, a) in req.resources.iter().zip(answers) {
        let mut out = incremental_alter_configs_response::AlterConfigsResourceResponse::default();
        out.resource_type = r.resource_type;
        out.resource_name = r.resource_name.clone();
        if let Err(e) = a {
            (out.error_code, out.error_message) = admin::error_fields(&e);
        }
        resp.responses.push(out);
    }
    ctx.respond(&resp)
}
