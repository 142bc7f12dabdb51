//! Consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup, OffsetCommit, OffsetFetch, OffsetDelete, ListGroups,
//! DescribeGroups and DeleteGroups (for groups of either protocol; the
//! consumer protocol's own APIs are in `consumer_groups`). Each request is
//! decoded on the connection's shard and its group work runs on the
//! group's coordinator shard (see [`crate::groups`]).

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse,
    OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};

use sluice_metadata::security::Operation;

use super::ids::Ids;
use super::{Ctx, OPS_NOT_REQUESTED, Outcome, str_bytes};
use crate::base::clock::now_ms;
use crate::error_codes::{self, ErrorCode};
use crate::groups::group::{JoinAnswer, JoinRequest, State, Step, SyncAnswer, SyncRequest};
use crate::groups::records::{OffsetRecord, OffsetValue};
use crate::groups::{self, GroupRef, kick, on_coordinator};
use crate::node::Shard;
use crate::shard::ShardId;

fn opt_str(s: &Option<kafka_protocol::protocol::StrBytes>) -> Option<String> {
    s.as_ref().map(|s| s.to_string())
}

pub fn find_coordinator(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: FindCoordinatorRequest = decode_or_return!(ctx, body);
    let snapshot = ctx.shard.meta();
    // A group's coordinator is the leader of its `__consumer_offsets`
    // partition, a transactional id's the leader of its
    // `__transaction_state` partition. That topic is created at the first
    // ask for a transaction coordinator, as in Kafka; until it shows, the
    // answer is COORDINATOR_NOT_AVAILABLE, which clients retry.
    if req.key_type == 1 && snapshot.topic(crate::meta::TRANSACTION_STATE_TOPIC).is_none() {
        crate::txn::create_topic(&ctx.shard);
    }
    // (error code, message, node id, host, port) for one key.
    let answer = |key: &str| -> (i16, Option<&'static str>, i32, String, i32) {
        let refuse = |code: ErrorCode, msg: Option<&'static str>| (code.code(), msg, -1, String::new(), -1);
        let access = ctx.access();
        match req.key_type {
            0 if !access.group(Operation::Describe, key) => {
                return refuse(ErrorCode::GroupAuthorizationFailed, None);
            }
            1 if !access.transactional_id(Operation::Describe, key) => {
                return refuse(ErrorCode::TransactionalIdAuthorizationFailed, None);
            }
            _ => {}
        }
        let coordinator_topic = match req.key_type {
            0 => crate::meta::OFFSETS_TOPIC,
            _ => crate::meta::TRANSACTION_STATE_TOPIC,
        };
        let found = match req.key_type {
            0 => crate::groups::coordinator_broker(&snapshot, key)
                .ok_or("the group's offsets partition has no live leader"),
            1 => crate::txn::coordinator_broker(&snapshot, key)
                .ok_or("the transactional id's partition of __transaction_state has no live leader"),
            _ => return refuse(ErrorCode::InvalidRequest, Some("unknown coordinator key type")),
        };
        let ids = Ids::new(&snapshot, ctx.shard.config(), &ctx.conn.listener);
        match found.and_then(|(b, partition)| {
            let id = ids.replica(b.id, coordinator_topic, partition);
            ids.endpoint(id)
                .map(|(host, port)| (id, host.to_string(), i32::from(port)))
                .ok_or("the coordinator has no endpoint on this listener")
        }) {
            Ok((id, host, port)) => (0, None, id, host, port),
            Err(why) => refuse(ErrorCode::CoordinatorNotAvailable, Some(why)),
        }
    };
    let mut resp = FindCoordinatorResponse::default();
    if ctx.version >= 4 {
        resp.coordinators = req
            .coordinator_keys
            .iter()
            .map(|k| {
                let (code, msg, node, host, port) = answer(k.as_str());
                let mut c = Coordinator::default();
                c.key = k.clone();
                c.error_code = code;
                c.error_message = msg.map(str_bytes);
                c.node_id = BrokerId(node);
                c.host = str_bytes(&host);
                c.port = port;
                c
            })
            .collect();
    } else {
        let (code, msg, node, host, port) = answer(req.key.as_str());
        resp.error_code = code;
        resp.error_message = msg.map(str_bytes);
        resp.node_id = BrokerId(node);
        resp.host = str_bytes(&host);
        resp.port = port;
    }
    ctx.respond(&resp)
}

fn join_response(ctx: &Ctx, a: JoinAnswer) -> Outcome {
    let mut resp = JoinGroupResponse::default();
    resp.error_code = error_codes::code(a.error);
    resp.generation_id = a.generation;
    // Before v7 the protocol name is not nullable.
    if ctx.version >= 7 {
        resp.protocol_type = a.protocol_type.as_deref().map(str_bytes);
    }
    resp.protocol_name = match a.protocol_name.as_deref() {
        Some(n) => Some(str_bytes(n)),
        None if ctx.version < 7 => Some(str_bytes("")),
        None => None,
    };
    resp.leader = str_bytes(&a.leader);
    resp.skip_assignment = a.skip_assignment && ctx.version >= 9;
    resp.member_id = str_bytes(&a.member_id);
    resp.members = a
        .members
        .into_iter()
        .map(|m| {
            let mut r = JoinGroupResponseMember::default();
            r.member_id = str_bytes(&m.member_id);
            if ctx.version >= 5 {
                r.group_instance_id = m.instance_id.as_deref().map(str_bytes);
            }
            r.metadata = m.metadata;
            r
        })
        .collect();
    ctx.respond(&resp)
}

pub async fn join_group(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: JoinGroupRequest = decode_or_return!(ctx, body);
    let g = &ctx.shard.config().groups;
    let group_id = req.group_id.0.to_string();
    let fail = |e: ErrorCode| join_response(&ctx, JoinAnswer::error(e, &req.member_id));
    if group_id.is_empty() {
        return fail(ErrorCode::InvalidGroupId);
    }
    if !ctx.access().group(Operation::Read, &group_id) {
        return fail(ErrorCode::GroupAuthorizationFailed);
    }
    if req.session_timeout_ms < g.min_session_timeout_ms || req.session_timeout_ms > g.max_session_timeout_ms {
        return fail(ErrorCode::InvalidSessionTimeout);
    }
    let join = JoinRequest {
        member_id: req.member_id.to_string(),
        instance_id: opt_str(&req.group_instance_id),
        client_id: ctx.client_id(),
        client_host: ctx.conn.peer.to_string(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if ctx.version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        require_known_member_id: ctx.version >= 4,
        version: ctx.version,
    };
    let member_id = join.member_id.clone();
    let r = on_coordinator(&ctx.shard, &group_id.clone(), move |shard, partition| async move {
        let h = shard.services.groups.get_or_create(&group_id);
        if let Err(e) = groups::to_classic(&shard, partition, &h) {
            return JoinAnswer::error(e, &member_id);
        }
        let step = h.group.borrow_mut().join(join, Instant::now(), &shard.config().groups);
        kick(&shard, &h);
        match step {
            Step::Now(a) => a,
            Step::Wait(rx) => rx
                .await
                .unwrap_or_else(|_| JoinAnswer::error(ErrorCode::UnknownMemberId, &member_id)),
        }
    })
    .await;
    match r {
        Ok(a) => join_response(&ctx, a),
        Err(e) => fail(e),
    }
}

pub async fn sync_group(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: SyncGroupRequest = decode_or_return!(ctx, body);
    let group_id = req.group_id.0.to_string();
    let answer = if group_id.is_empty() {
        SyncAnswer::error(ErrorCode::InvalidGroupId)
    } else if !ctx.access().group(Operation::Read, &group_id) {
        SyncAnswer::error(ErrorCode::GroupAuthorizationFailed)
    } else {
        let member = req.member_id.to_string();
        let instance = opt_str(&req.group_instance_id);
        let (pt, pn) = (opt_str(&req.protocol_type), opt_str(&req.protocol_name));
        let assignments: Vec<(String, Bytes)> = req
            .assignments
            .iter()
            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
            .collect();
        let generation = req.generation_id;
        on_coordinator(&ctx.shard, &group_id.clone(), move |shard, _| async move {
            let Some(h) = shard.services.groups.get(&group_id) else {
                return SyncAnswer::error(ErrorCode::UnknownMemberId);
            };
            let req = SyncRequest {
                member_id: member,
                instance_id: instance,
                generation,
                protocol_type: pt,
                protocol_name: pn,
                assignments,
            };
            let step = h.group.borrow_mut().sync(req, Instant::now());
            kick(&shard, &h);
            match step {
                Step::Now(a) => a,
                Step::Wait(rx) => rx
                    .await
                    .unwrap_or_else(|_| SyncAnswer::error(ErrorCode::RebalanceInProgress)),
            }
        })
        .await
        .unwrap_or_else(SyncAnswer::error)
    };
    let mut resp = SyncGroupResponse::default();
    resp.error_code = error_codes::code(answer.error);
    if ctx.version >= 5 {
        resp.protocol_type = answer.protocol_type.as_deref().map(str_bytes);
        resp.protocol_name = answer.protocol_name.as_deref().map(str_bytes);
    }
    resp.assignment = answer.assignment;
    ctx.respond(&resp)
}

pub async fn heartbeat(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: HeartbeatRequest = decode_or_return!(ctx, body);
    let group_id = req.group_id.0.to_string();
    let error = if group_id.is_empty() {
        Some(ErrorCode::InvalidGroupId)
    } else if !ctx.access().group(Operation::Read, &group_id) {
        Some(ErrorCode::GroupAuthorizationFailed)
    } else {
        let member = req.member_id.to_string();
        let instance = opt_str(&req.group_instance_id);
        let generation = req.generation_id;
        on_coordinator(&ctx.shard, &group_id.clone(), move |shard, _| async move {
            let Some(h) = shard.services.groups.get(&group_id) else {
                return Some(ErrorCode::UnknownMemberId);
            };
            let e = h
                .group
                .borrow_mut()
                .heartbeat(&member, instance.as_deref(), generation, Instant::now());
            kick(&shard, &h);
            e
        })
        .await
        .unwrap_or_else(Some)
    };
    let mut resp = HeartbeatResponse::default();
    resp.error_code = error_codes::code(error);
    ctx.respond(&resp)
}

pub async fn leave_group(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: LeaveGroupRequest = decode_or_return!(ctx, body);
    let group_id = req.group_id.0.to_string();
    let members: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        req.members
            .iter()
            .map(|m| (m.member_id.to_string(), opt_str(&m.group_instance_id)))
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let asked = members.clone();
    let r: Result<Vec<Option<ErrorCode>>, ErrorCode> = if group_id.is_empty() {
        Err(ErrorCode::InvalidGroupId)
    } else if !ctx.access().group(Operation::Read, &group_id) {
        Err(ErrorCode::GroupAuthorizationFailed)
    } else {
        on_coordinator(&ctx.shard, &group_id.clone(), move |shard, _| async move {
            let Some(h) = shard.services.groups.get(&group_id) else {
                return members.iter().map(|_| Some(ErrorCode::UnknownMemberId)).collect();
            };
            let cfg = &shard.config().groups;
            let out = members
                .iter()
                .map(|(id, instance)| h.group.borrow_mut().leave(id, instance.as_deref(), Instant::now(), cfg))
                .collect();
            kick(&shard, &h);
            out
        })
        .await
    };
    let mut resp = LeaveGroupResponse::default();
    match r {
        Err(e) => resp.error_code = e.code(),
        Ok(errors) if ctx.version >= 3 => {
            resp.members = asked
                .iter()
                .zip(errors)
                .map(|((id, instance), e)| {
                    let mut m = MemberResponse::default();
                    m.member_id = str_bytes(id);
                    m.group_instance_id = instance.as_deref().map(str_bytes);
                    m.error_code = error_codes::code(e);
                    m
                })
                .collect();
        }
        Ok(errors) => resp.error_code = error_codes::code(errors.into_iter().next().flatten()),
    }
    ctx.respond(&resp)
}

/// A partition of a commit: refused here, or the value to write.
type Checked = (i32, Result<OffsetValue, ErrorCode>);

/// Per topic, per partition: refused, or deleted.
type DeleteResults = Result<Vec<Vec<Option<ErrorCode>>>, ErrorCode>;

pub async fn offset_commit(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: OffsetCommitRequest = decode_or_return!(ctx, body);
    let group_id = req.group_id.0.to_string();
    let snapshot = ctx.shard.meta();
    let max_meta = ctx.shard.config().groups.offset_metadata_max_bytes;
    let now = now_ms();
    // Per partition: an error found here, or the value to commit.
    let mut checked: Vec<(String, Vec<Checked>)> = Vec::new();
    let mut to_write = Vec::new();
    // Kafka's authorization: READ on the group (else every partition is
    // GROUP_AUTHORIZATION_FAILED) and on each topic.
    let access = ctx.access();
    let group_denied = !group_id.is_empty() && !access.group(Operation::Read, &group_id);
    for t in &req.topics {
        let topic = t.name.0.to_string();
        let meta = snapshot.topic(&topic);
        let topic_denied = !access.topic(Operation::Read, &topic);
        let mut parts = Vec::new();
        for p in &t.partitions {
            let metadata = p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default();
            let r = if group_id.is_empty() {
                Err(ErrorCode::InvalidGroupId)
            } else if group_denied {
                Err(ErrorCode::GroupAuthorizationFailed)
            } else if topic_denied {
                Err(ErrorCode::TopicAuthorizationFailed)
            } else if !meta.is_some_and(|m| (0..m.partitions).contains(&p.partition_index)) {
                Err(ErrorCode::UnknownTopicOrPartition)
            } else if metadata.len() > max_meta {
                Err(ErrorCode::OffsetMetadataTooLarge)
            } else {
                let v = OffsetValue {
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata,
                    commit_ms: now,
                };
                to_write.push((topic.clone(), p.partition_index, v.clone()));
                Ok(v)
            };
            parts.push((p.partition_index, r));
        }
        checked.push((topic, parts));
    }
    let group_error = if to_write.is_empty() {
        None
    } else {
        let (generation, member) = (req.generation_id_or_member_epoch, req.member_id.to_string());
        let instance = opt_str(&req.group_instance_id);
        let gid = group_id.clone();
        on_coordinator(&ctx.shard, &group_id.clone(), move |shard, partition| {
            groups::commit(shard, partition, gid, generation, member, instance, to_write)
        })
        .await
        .unwrap_or_else(Some)
    };
    let mut resp = OffsetCommitResponse::default();
    for (topic, parts) in checked {
        let mut t = OffsetCommitResponseTopic::default();
        t.name = TopicName(str_bytes(&topic));
        for (index, r) in parts {
            let mut p = OffsetCommitResponsePartition::default();
            p.partition_index = index;
            p.error_code = match r {
                Err(e) => e.code(),
                Ok(_) => error_codes::code(group_error),
            };
            t.partitions.push(p);
        }
        resp.topics.push(t);
    }
    ctx.respond(&resp)
}

/// Committed offsets of one group: for the listed topics and partitions, or
/// all of them when `topics` is `None`; each with its own error code (with
/// `require_stable`, UNSTABLE_OFFSET_COMMIT while a transaction that has
/// not ended holds an offset of the partition).
type FetchedTopic = (String, Vec<(i32, Option<OffsetValue>, i16)>);

/// [`fetch_offsets`] as Kafka authorizes it: DESCRIBE on the group
/// (GROUP_AUTHORIZATION_FAILED), and topics without DESCRIBE left out of
/// an all-topics answer or, when named, answered
/// TOPIC_AUTHORIZATION_FAILED.
async fn fetch_authorized(
    ctx: &Ctx,
    group_id: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
    member: Option<(String, i32)>,
) -> Result<Vec<FetchedTopic>, ErrorCode> {
    let access = ctx.access();
    if !group_id.is_empty() && !access.group(Operation::Describe, &group_id) {
        return Err(ErrorCode::GroupAuthorizationFailed);
    }
    let named = topics.is_some();
    let mut found = fetch_offsets(&ctx.shard, group_id, topics, require_stable, member).await?;
    if access.unrestricted() {
        return Ok(found);
    }
    if named {
        for (topic, parts) in &mut found {
            if !access.topic(Operation::Describe, topic) {
                for p in parts.iter_mut() {
                    *p = (p.0, None, ErrorCode::TopicAuthorizationFailed.code());
                }
            }
        }
    } else {
        found.retain(|(topic, _)| access.topic(Operation::Describe, topic));
    }
    Ok(found)
}

async fn fetch_offsets(
    shard: &Shard,
    group_id: String,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
    member: Option<(String, i32)>,
) -> Result<Vec<FetchedTopic>, ErrorCode> {
    if group_id.is_empty() {
        return Err(ErrorCode::InvalidGroupId);
    }
    on_coordinator(shard, &group_id.clone(), move |shard, _| async move {
        let h = shard.services.groups.get(&group_id);
        let g = h.as_ref().map(|h| h.group.borrow());
        // v9+: a consumer-protocol member's fetch carries its id and
        // epoch, checked as a commit's are.
        if let Some((member_id, epoch)) = &member
            && let Some(e) = g
                .as_ref()
                .and_then(|g| g.consumer.as_ref())
                .and_then(|c| c.check_commit(member_id, *epoch))
        {
            return Err(e);
        }
        let get = |topic: &str, p: i32| -> (i32, Option<OffsetValue>, i16) {
            let key = (Arc::<str>::from(topic), p);
            match &g {
                Some(g) if require_stable && g.has_pending_txn_offset(&key) => {
                    (p, None, ErrorCode::UnstableOffsetCommit.code())
                }
                Some(g) => (p, g.offsets.get(&key).cloned(), 0),
                None => (p, None, 0),
            }
        };
        Ok(match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(t, parts)| {
                    let values = parts.into_iter().map(|p| get(&t, p)).collect();
                    (t, values)
                })
                .collect(),
            None => {
                let mut by_topic: std::collections::BTreeMap<String, Vec<(i32, Option<OffsetValue>, i16)>> =
                    Default::default();
                if let Some(g) = &g {
                    for (t, p) in g.offsets.keys() {
                        by_topic.entry(t.to_string()).or_default().push(get(t, *p));
                    }
                }
                by_topic
                    .into_iter()
                    .map(|(t, mut v)| {
                        v.sort_by_key(|(p, ..)| *p);
                        (t, v)
                    })
                    .collect()
            }
        })
    })
    .await?
}

/// Builds OffsetFetch topics in either layout (v8+ per group, or the older
/// single group) from what the coordinator found, with `error` on every
/// partition.
macro_rules! fetched_topics {
    ($found:expr, $topic:ty, $part:ty, $error:expr, $with_epoch:expr) => {
        $found
            .into_iter()
            .map(|(t, parts)| {
                let mut rt = <$topic>::default();
                rt.name = TopicName(str_bytes(&t));
                rt.partitions = parts
                    .into_iter()
                    .map(|(p, v, e): (i32, Option<OffsetValue>, i16)| {
                        let mut rp = <$part>::default();
                        rp.partition_index = p;
                        rp.committed_offset = v.as_ref().map_or(-1, |v| v.offset);
                        if $with_epoch {
                            rp.committed_leader_epoch = v.as_ref().map_or(-1, |v| v.leader_epoch);
                        }
                        rp.metadata = Some(str_bytes(v.as_ref().map_or("", |v| &v.metadata)));
                        rp.error_code = if e != 0 { e } else { $error };
                        rp
                    })
                    .collect();
                rt
            })
            .collect()
    };
}

pub async fn offset_fetch(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: OffsetFetchRequest = decode_or_return!(ctx, body);
    let mut resp = OffsetFetchResponse::default();
    if ctx.version >= 8 {
        for g in &req.groups {
            let topics = g.topics.as_ref().map(|ts| {
                ts.iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                    .collect::<Vec<_>>()
            });
            let mut out = OffsetFetchResponseGroup::default();
            out.group_id = g.group_id.clone();
            let member = g
                .member_id
                .as_ref()
                .filter(|_| g.member_epoch >= 0)
                .map(|m| (m.to_string(), g.member_epoch));
            match fetch_authorized(&ctx, g.group_id.0.to_string(), topics, req.require_stable, member).await {
                Err(e) => out.error_code = e.code(),
                Ok(found) => {
                    out.topics =
                        fetched_topics!(found, OffsetFetchResponseTopics, OffsetFetchResponsePartitions, 0, true)
                }
            }
            resp.groups.push(out);
        }
        return ctx.respond(&resp);
    }
    let topics = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect::<Vec<_>>()
    });
    let require_stable = ctx.version >= 7 && req.require_stable;
    match fetch_authorized(&ctx, req.group_id.0.to_string(), topics.clone(), require_stable, None).await {
        Ok(found) => {
            resp.topics = fetched_topics!(
                found,
                OffsetFetchResponseTopic,
                OffsetFetchResponsePartition,
                0,
                ctx.version >= 5
            );
        }
        Err(e) => {
            if ctx.version >= 2 {
                resp.error_code = e.code();
            }
            // v1 has no top-level error: report it on every partition.
            if ctx.version < 2 {
                let none = topics
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(t, parts)| (t, parts.into_iter().map(|p| (p, None, 0)).collect::<Vec<_>>()));
                resp.topics = fetched_topics!(
                    none,
                    OffsetFetchResponseTopic,
                    OffsetFetchResponsePartition,
                    e.code(),
                    false
                );
            }
        }
    }
    ctx.respond(&resp)
}

pub async fn offset_delete(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: OffsetDeleteRequest = decode_or_return!(ctx, body);
    let group_id = req.group_id.0.to_string();
    let asked: Vec<(String, Vec<i32>)> = req
        .topics
        .iter()
        .map(|t| {
            (
                t.name.0.to_string(),
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let work = asked.clone();
    let r: Result<DeleteResults, ErrorCode> = if group_id.is_empty() {
        Err(ErrorCode::InvalidGroupId)
    } else if !ctx.access().group(Operation::Delete, &group_id) {
        Err(ErrorCode::GroupAuthorizationFailed)
    } else {
        on_coordinator(&ctx.shard, &group_id.clone(), move |shard, partition| async move {
            let Some(h) = shard.services.groups.get(&group_id) else {
                return Err(ErrorCode::GroupIdNotFound);
            };
            let (subscribed, refused) = {
                let g = h.group.borrow();
                let consumer = g.protocol_type.as_deref().is_none_or(|t| t == "consumer");
                let refused = (!g.members.is_empty() && !consumer).then_some(ErrorCode::NonEmptyGroup);
                let subscribed = match &g.consumer {
                    Some(c) => c.subscribed_names(&shard.meta()),
                    None if g.members.is_empty() => Vec::new(),
                    None => g.subscribed_topics(),
                };
                (subscribed, refused)
            };
            if let Some(e) = refused {
                return Err(e);
            }
            let mut errors = Vec::new();
            let mut tombstones = Vec::new();
            for (topic, parts) in work {
                let busy = subscribed.contains(&topic);
                errors.push(
                    parts
                        .iter()
                        .map(|&p| {
                            if busy {
                                Some(ErrorCode::GroupSubscribedToTopic)
                            } else {
                                tombstones.push(OffsetRecord {
                                    group: group_id.clone(),
                                    topic: topic.clone(),
                                    partition: p,
                                    value: None,
                                });
                                None
                            }
                        })
                        .collect(),
                );
            }
            let written = groups::write_offsets(&shard, partition, &h, tombstones).await;
            kick(&shard, &h);
            written.map(|()| errors)
        })
        .await
    };
    let mut resp = OffsetDeleteResponse::default();
    match r.and_then(|x| x) {
        Err(e) => resp.error_code = e.code(),
        Ok(errors) => {
            for ((topic, parts), errs) in asked.into_iter().zip(errors) {
                let mut t = OffsetDeleteResponseTopic::default();
                t.name = TopicName(str_bytes(&topic));
                t.partitions = parts
                    .into_iter()
                    .zip(errs)
                    .map(|(p, e)| {
                        let mut rp = OffsetDeleteResponsePartition::default();
                        rp.partition_index = p;
                        rp.error_code = error_codes::code(e);
                        rp
                    })
                    .collect();
                resp.topics.push(t);
            }
        }
    }
    ctx.respond(&resp)
}

/// A group as ListGroups and DescribeGroups report it.
#[derive(Debug, Clone)]
struct GroupView {
    id: String,
    state: State,
    /// `classic` or `consumer` (KIP-848).
    group_type: &'static str,
    /// Kafka's name of the state, as ListGroups shows it.
    state_name: &'static str,
    protocol_type: String,
    protocol: String,
    members: Vec<MemberView>,
}

#[derive(Debug, Clone)]
struct MemberView {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    metadata: Bytes,
    assignment: Bytes,
}

fn view(h: &GroupRef) -> GroupView {
    let g = h.group.borrow();
    let protocol = g.protocol.clone().unwrap_or_default();
    let (group_type, state_name, protocol_type) = match &g.consumer {
        Some(c) => ("consumer", c.state_name(), "consumer".to_string()),
        None => ("classic", g.state.name(), g.protocol_type.clone().unwrap_or_default()),
    };
    GroupView {
        id: g.id.to_string(),
        state: g.state,
        group_type,
        state_name,
        protocol_type,
        members: g
            .members
            .iter()
            .map(|m| MemberView {
                id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m.metadata_for(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect(),
        protocol,
    }
}

pub async fn list_groups(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: ListGroupsRequest = decode_or_return!(ctx, body);
    let states: Vec<String> = req.states_filter.iter().map(|s| s.to_lowercase()).collect();
    let types: Vec<String> = req.types_filter.iter().map(|s| s.to_lowercase()).collect();
    let mut resp = ListGroupsResponse::default();
    // Kafka's authorization: DESCRIBE on the cluster lists every group,
    // else the groups with DESCRIBE on them.
    let access = ctx.access();
    let all = access.cluster(Operation::Describe);
    for s in 0..ctx.shard.shard_count() {
        let views = ctx
            .shard
            .submit_to(ShardId(s), |shard| async move {
                shard.services.groups.all().iter().map(view).collect::<Vec<_>>()
            })
            .await;
        let Ok(views) = views else {
            resp.error_code = ErrorCode::CoordinatorNotAvailable.code();
            break;
        };
        for v in views {
            if !all && !access.group(Operation::Describe, &v.id) {
                continue;
            }
            if !states.is_empty() && !states.contains(&v.state_name.to_lowercase()) {
                continue;
            }
            if !types.is_empty() && !types.iter().any(|t| t == v.group_type) {
                continue;
            }
            let mut g = ListedGroup::default();
            g.group_id = GroupId(str_bytes(&v.id));
            g.protocol_type = str_bytes(&v.protocol_type);
            if ctx.version >= 4 {
                g.group_state = str_bytes(v.state_name);
            }
            if ctx.version >= 5 {
                g.group_type = str_bytes(v.group_type);
            }
            resp.groups.push(g);
        }
    }
    resp.groups.sort_by(|a, b| a.group_id.0.cmp(&b.group_id.0));
    ctx.respond(&resp)
}

pub async fn describe_groups(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: DescribeGroupsRequest = decode_or_return!(ctx, body);
    let mut resp = DescribeGroupsResponse::default();
    for gid in &req.groups {
        let id = gid.0.to_string();
        let mut out = DescribedGroup::default();
        out.group_id = gid.clone();
        out.authorized_operations = OPS_NOT_REQUESTED;
        let found = if id.is_empty() {
            Err(ErrorCode::InvalidGroupId)
        } else if !ctx.access().group(Operation::Describe, &id) {
            Err(ErrorCode::GroupAuthorizationFailed)
        } else {
            on_coordinator(&ctx.shard, &id.clone(), move |shard, _| async move {
                shard.services.groups.get(&id).map(|h| view(&h))
            })
            .await
        };
        match found {
            Err(e) => {
                out.error_code = e.code();
                out.group_state = str_bytes(State::Dead.name());
            }
            Ok(None) => {
                out.group_state = str_bytes(State::Dead.name());
                if ctx.version >= 6 {
                    out.error_code = ErrorCode::GroupIdNotFound.code();
                    out.error_message = Some(str_bytes("group does not exist"));
                }
            }
            Ok(Some(v)) if v.group_type != "classic" => {
                // As Kafka: DescribeGroups describes classic groups;
                // ConsumerGroupDescribe the others.
                out.group_state = str_bytes(State::Dead.name());
                out.error_code = ErrorCode::GroupIdNotFound.code();
                if ctx.version >= 6 {
                    out.error_message = Some(str_bytes(&format!("Group {} is not a classic group.", v.id)));
                }
            }
            Ok(Some(v)) => {
                out.group_state = str_bytes(v.state.name());
                out.protocol_type = str_bytes(&v.protocol_type);
                out.protocol_data = str_bytes(&v.protocol);
                let stable = v.state == State::Stable;
                out.members = v
                    .members
                    .into_iter()
                    .map(|m| {
                        let mut d = DescribedGroupMember::default();
                        d.member_id = str_bytes(&m.id);
                        if ctx.version >= 4 {
                            d.group_instance_id = m.instance_id.as_deref().map(str_bytes);
                        }
                        d.client_id = str_bytes(&m.client_id);
                        d.client_host = str_bytes(&m.client_host);
                        d.member_metadata = m.metadata;
                        // Kafka shows assignments only once they are final.
                        d.member_assignment = if stable { m.assignment } else { Bytes::new() };
                        d
                    })
                    .collect();
            }
        }
        resp.groups.push(out);
    }
    ctx.respond(&resp)
}

pub async fn delete_groups(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: DeleteGroupsRequest = decode_or_return!(ctx, body);
    let mut resp = DeleteGroupsResponse::default();
    for gid in &req.groups_names {
        let id = gid.0.to_string();
        let r = if id.is_empty() {
            Some(ErrorCode::InvalidGroupId)
        } else if !ctx.access().group(Operation::Delete, &id) {
            Some(ErrorCode::GroupAuthorizationFailed)
        } else {
            on_coordinator(&ctx.shard, &id.clone(), move |shard, partition| async move {
                let Some(h) = shard.services.groups.get(&id) else {
                    return Some(ErrorCode::GroupIdNotFound);
                };
                let tombstones: Vec<OffsetRecord> = {
                    let g = h.group.borrow();
                    if g.has_members() || g.state != State::Empty {
                        return Some(ErrorCode::NonEmptyGroup);
                    }
                    g.offsets
                        .keys()
                        .map(|(t, p)| OffsetRecord {
                            group: id.clone(),
                            topic: t.to_string(),
                            partition: *p,
                            value: None,
                        })
                        .collect()
                };
                let mut r = groups::write_offsets(&shard, partition, &h, tombstones).await.err();
                if r.is_none() {
                    // A consumer-protocol group's own record goes too.
                    r = groups::to_classic(&shard, partition, &h).err();
                }
                if r.is_none() {
                    h.group.borrow_mut().kill();
                    shard.services.groups.remove(&id);
                }
                r
            })
            .await
            .unwrap_or_else(Some)
        };
        let mut out = DeletableGroupResult::default();
        out.group_id = gid.clone();
        out.error_code = error_codes::code(r);
        resp.results.push(out);
    }
    ctx.respond(&resp)
}
