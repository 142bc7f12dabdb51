//! The consumer group protocol's APIs (KIP-848): ConsumerGroupHeartbeat
//! and ConsumerGroupDescribe. Requests are checked here, on the
//! connection's shard; the group's work runs on its coordinator shard
//! ([`crate::groups::consumer_heartbeat`]).

use bytes::BytesMut;
use kafka_protocol::messages::consumer_group_describe_response::{self as describe, DescribedGroup};
use kafka_protocol::messages::consumer_group_heartbeat_response::{self as heartbeat, Assignment};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatRequest,
    ConsumerGroupHeartbeatResponse, TopicName,
};
use uuid::Uuid;

use sluice_metadata::security::Operation;

use super::{Ctx, OPS_NOT_REQUESTED, Outcome, str_bytes};
use crate::error_codes::ErrorCode;
use crate::groups::assignors::Parts;
use crate::groups::consumer::{self, Heartbeat, LEAVE_EPOCH, STATIC_LEAVE_EPOCH};
use crate::groups::{self, on_coordinator};
use crate::meta::Snapshot;

/// Partitions grouped by topic id, in order.
fn by_topic(parts: &Parts) -> Vec<(Uuid, Vec<i32>)> {
    let mut out: Vec<(Uuid, Vec<i32>)> = Vec::new();
    for (t, p) in parts {
        match out.last_mut() {
            Some((last, ps)) if last == t => ps.push(*p),
            _ => out.push((*t, vec![*p])),
        }
    }
    out
}

/// The request's checks that need no group, as Kafka makes them; `Err`
/// is INVALID_REQUEST or UNSUPPORTED_ASSIGNOR with its message.
fn check(ctx: &Ctx, req: &ConsumerGroupHeartbeatRequest) -> Result<(), (ErrorCode, String)> {
    let invalid = |why: &str| Err((ErrorCode::InvalidRequest, why.to_string()));
    if req.group_id.0.is_empty() {
        return invalid("GroupId can't be empty.");
    }
    if req.instance_id.as_ref().is_some_and(|i| i.is_empty()) {
        return invalid("InstanceId can't be empty.");
    }
    if req.rack_id.as_ref().is_some_and(|r| r.is_empty()) {
        return invalid("RackId can't be empty.");
    }
    if req.member_id.is_empty() && (ctx.version >= 1 || req.member_epoch != 0) {
        return invalid("MemberId can't be empty.");
    }
    match req.member_epoch {
        0 => {
            if req.rebalance_timeout_ms == -1 {
                return invalid("RebalanceTimeoutMs must be provided in first request.");
            }
            if req.topic_partitions.as_ref().is_none_or(|t| !t.is_empty()) {
                return invalid("TopicPartitions must be empty when (re-)joining.");
            }
            if req.subscribed_topic_names.is_none() && req.subscribed_topic_regex.is_none() {
                return invalid("SubscribedTopicNames or SubscribedTopicRegex must be set in first request.");
            }
        }
        STATIC_LEAVE_EPOCH if req.instance_id.is_none() => {
            return invalid("InstanceId can't be null when leaving as a static member.");
        }
        e if e < STATIC_LEAVE_EPOCH => return invalid("MemberEpoch is invalid."),
        _ => {}
    }
    let assignors = &ctx.shard.config().groups.consumer_assignors;
    if let Some(a) = &req.server_assignor
        && !assignors.iter().any(|n| n.as_str() == a.as_str())
    {
        return Err((
            ErrorCode::UnsupportedAssignor,
            format!(
                "ServerAssignor {a} is not supported; supported assignors: {}",
                assignors.join(", ")
            ),
        ));
    }
    Ok(())
}

pub async fn consumer_group_heartbeat(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: ConsumerGroupHeartbeatRequest = decode_or_return!(ctx, body);
    let cfg = &ctx.shard.config().groups;
    let mut resp = ConsumerGroupHeartbeatResponse::default();
    resp.heartbeat_interval_ms = i32::try_from(cfg.consumer_heartbeat_interval_ms).unwrap_or(i32::MAX);
    let checked = if !cfg.consumer_protocol {
        Err((
            ErrorCode::UnsupportedVersion,
            "the consumer group protocol is off (group.coordinator.rebalance.protocols)".to_string(),
        ))
    } else if !ctx.access().group(Operation::Read, req.group_id.0.as_str()) {
        Err((
            ErrorCode::GroupAuthorizationFailed,
            "Group authorization failed".to_string(),
        ))
    } else {
        check(&ctx, &req)
    };
    if let Err((code, why)) = checked {
        resp.error_code = code.code();
        resp.error_message = Some(str_bytes(&why));
        return ctx.respond(&resp);
    }
    let member_id = if req.member_id.is_empty() {
        // v0 only: the coordinator names a joining member.
        Uuid::new_v4().to_string()
    } else {
        req.member_id.to_string()
    };
    let beat = Heartbeat {
        member_id,
        epoch: req.member_epoch,
        instance_id: req.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: req.rack_id.as_ref().map(|s| s.to_string()),
        rebalance_timeout_ms: req.rebalance_timeout_ms,
        topics: req
            .subscribed_topic_names
            .as_ref()
            .map(|ts| ts.iter().map(|t| t.0.to_string()).collect()),
        regex: req.subscribed_topic_regex.as_ref().map(|s| s.to_string()),
        assignor: req.server_assignor.as_ref().map(|s| s.to_string()),
        owned: req.topic_partitions.as_ref().map(|ts| {
            ts.iter()
                .flat_map(|t| t.partitions.iter().map(|p| (t.topic_id, *p)))
                .collect()
        }),
        client_id: ctx.client_id(),
        client_host: ctx.conn.peer.to_string(),
    };
    let group_id = req.group_id.0.to_string();
    let r = on_coordinator(&ctx.shard, &group_id.clone(), move |shard, partition| {
        groups::consumer_heartbeat(shard, partition, group_id, beat)
    })
    .await
    .unwrap_or_else(|e| Err((e, String::new())));
    match r {
        Err((code, why)) => {
            resp.error_code = code.code();
            resp.error_message = (!why.is_empty()).then(|| str_bytes(&why));
        }
        Ok(a) => {
            resp.member_id = Some(str_bytes(&a.member_id));
            resp.member_epoch = a.epoch;
            if a.epoch == LEAVE_EPOCH || a.epoch == STATIC_LEAVE_EPOCH {
                resp.heartbeat_interval_ms = 0;
            }
            resp.assignment = a.assignment.map(|parts| {
                let mut out = Assignment::default();
                out.topic_partitions = by_topic(&parts)
                    .into_iter()
                    .map(|(t, ps)| {
                        let mut tp = heartbeat::TopicPartitions::default();
                        tp.topic_id = t;
                        tp.partitions = ps;
                        tp
                    })
                    .collect();
                out
            });
        }
    }
    ctx.respond(&resp)
}

/// An assignment as ConsumerGroupDescribe shows it: by topic id and name.
fn described(parts: &Parts, snapshot: &Snapshot) -> describe::Assignment {
    let mut out = describe::Assignment::default();
    out.topic_partitions = by_topic(parts)
        .into_iter()
        .map(|(t, ps)| {
            let mut tp = describe::TopicPartitions::default();
            tp.topic_id = t;
            tp.topic_name = TopicName(str_bytes(
                snapshot.topic_by_id(&t).map(|m| &*m.name).unwrap_or_default(),
            ));
            tp.partitions = ps;
            tp
        })
        .collect();
    out
}

/// One consumer group as ConsumerGroupDescribe reports it.
fn describe_group(c: &consumer::ConsumerGroup, snapshot: &Snapshot, version: i16) -> DescribedGroup {
    let mut out = DescribedGroup::default();
    out.group_state = str_bytes(c.state_name());
    out.group_epoch = c.epoch;
    out.assignment_epoch = c.assignment_epoch;
    out.assignor_name = str_bytes(&c.assignor);
    out.members = c
        .members
        .iter()
        .map(|(member_id, m)| {
            let mut d = describe::Member::default();
            d.member_id = str_bytes(member_id);
            d.instance_id = m.instance_id.as_deref().map(str_bytes);
            d.rack_id = m.rack_id.as_deref().map(str_bytes);
            d.member_epoch = m.epoch;
            d.client_id = str_bytes(&m.client_id);
            d.client_host = str_bytes(&m.client_host);
            d.subscribed_topic_names = m.topics.iter().map(|t| TopicName(str_bytes(t))).collect();
            d.subscribed_topic_regex = m.regex.as_deref().map(str_bytes);
            d.assignment = described(&m.assigned, snapshot);
            d.target_assignment = described(&m.target, snapshot);
            if version >= 1 {
                // 1: a member of the consumer protocol.
                d.member_type = 1;
            }
            d
        })
        .collect();
    out
}

pub async fn consumer_group_describe(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: ConsumerGroupDescribeRequest = decode_or_return!(ctx, body);
    let mut resp = ConsumerGroupDescribeResponse::default();
    let version = ctx.version;
    for gid in &req.group_ids {
        let id = gid.0.to_string();
        let found = if id.is_empty() {
            Err(ErrorCode::InvalidGroupId)
        } else if !ctx.access().group(Operation::Describe, &id) {
            Err(ErrorCode::GroupAuthorizationFailed)
        } else {
            on_coordinator(&ctx.shard, &id.clone(), move |shard, _| async move {
                let h = shard.services.groups.get(&id)?;
                let g = h.group.borrow();
                g.consumer.as_ref().map(|c| describe_group(c, &shard.meta(), version))
            })
            .await
        };
        let mut out = match found {
            Ok(Some(d)) => d,
            Ok(None) => {
                let mut d = DescribedGroup::default();
                d.error_code = ErrorCode::GroupIdNotFound.code();
                d.error_message = Some(str_bytes(&format!("Group {} is not a consumer group.", gid.0.as_str())));
                d.group_state = str_bytes("Dead");
                d
            }
            Err(e) => {
                let mut d = DescribedGroup::default();
                d.error_code = e.code();
                d.group_state = str_bytes("Dead");
                d
            }
        };
        out.group_id = gid.clone();
        out.authorized_operations = OPS_NOT_REQUESTED;
        resp.groups.push(out);
    }
    ctx.respond(&resp)
}
