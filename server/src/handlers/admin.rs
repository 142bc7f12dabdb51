//! CreateTopics, DeleteTopics and CreatePartitions. Every change runs on the
//! controller shard (shard 0), one at a time, and is answered only after
//! every shard has installed the new metadata and opened or removed its
//! partitions.

use bytes::BytesMut;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, TopicName,
};

use kafka_protocol::protocol::StrBytes;

use sluice_metadata::security::Operation;

use super::{Ctx, Outcome, str_bytes};
use crate::controller::{ControllerAnswer, ControllerRequest, ask};
use crate::error_codes::ErrorCode;
use crate::meta::MetaError;
use crate::node::Shard;
use crate::shard::ShardId;

/// The error code and message fields of a per-resource admin answer.
pub fn error_fields(e: &MetaError) -> (i16, Option<StrBytes>) {
    (e.code.code(), Some(str_bytes(&e.message)))
}

/// A request's replica assignment, by partition index, as node ids (a
/// client names the brokers it sees: `to_node` maps them back); the
/// indexes must be 0, 1, 2, ... in some order.
fn assignments(
    t: &kafka_protocol::messages::create_topics_request::CreatableTopic,
    to_node: impl Fn(i32) -> i32,
) -> Result<Vec<Vec<i32>>, MetaError> {
    let mut by_index: Vec<(i32, Vec<i32>)> = t
        .assignments
        .iter()
        .map(|a| (a.partition_index, a.broker_ids.iter().map(|b| to_node(b.0)).collect()))
        .collect();
    by_index.sort_by_key(|(i, _)| *i);
    if by_index
        .iter()
        .enumerate()
        .any(|(want, (i, _))| usize::try_from(*i).ok() != Some(want))
    {
        return Err(MetaError {
            code: ErrorCode::InvalidReplicaAssignment,
            message: "assignment partition indexes must be 0, 1, 2, ... without gaps".into(),
        });
    }
    Ok(by_index.into_iter().map(|(_, b)| b).collect())
}

/// The controller request for one topic of a CreateTopics request, or
/// what the controller cannot see refuses it: a name the request already
/// gave (`seen`), an assignment whose indexes have gaps.
fn create_request(
    t: &kafka_protocol::messages::create_topics_request::CreatableTopic,
    (default_partitions, validate_only): (i32, bool),
    seen: &mut std::collections::HashSet<String>,
    ids: super::ids::Ids<'_>,
) -> Result<ControllerRequest, MetaError> {
    let name = t.name.0.to_string();
    if !seen.insert(name.clone()) {
        return Err(MetaError {
            code: ErrorCode::InvalidRequest,
            message: format!("topic `{name}` appears more than once in the request"),
        });
    }
    let partitions = if t.num_partitions == -1 && t.assignments.is_empty() {
        default_partitions
    } else {
        t.num_partitions
    };
    Ok(ControllerRequest::CreateTopic {
        name,
        partitions,
        replication_factor: t.replication_factor,
        assignments: assignments(t, |id| ids.to_node(id))?,
        configs: t
            .configs
            .iter()
            .filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string())))
            .collect(),
        validate_only,
    })
}

/// TOPIC_AUTHORIZATION_FAILED, as an answer in place of the controller's.
fn unauthorized() -> MetaError {
    MetaError {
        code: ErrorCode::TopicAuthorizationFailed,
        message: "Topic authorization failed".into(),
    }
}

pub async fn create_topics(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: CreateTopicsRequest = decode_or_return!(ctx, body);
    let default_partitions = ctx.shard.config().num_partitions;
    let validate_only = req.validate_only;
    let mut seen = std::collections::HashSet::new();
    // Kafka's authorization: CREATE on the cluster or on the topic.
    let access = ctx.access();
    let any = access.cluster(Operation::Create);
    let snapshot = ctx.shard.meta();
    let ids = super::ids::Ids::new(&snapshot, ctx.shard.config(), &ctx.conn.listener);
    let requests = req
        .topics
        .iter()
        .map(|t| {
            if any || access.topic(Operation::Create, t.name.0.as_str()) {
                create_request(t, (default_partitions, validate_only), &mut seen, ids)
            } else {
                Err(unauthorized())
            }
        })
        .collect();
    let answers = ask(&ctx.shard, requests).await;
    let mut resp = CreateTopicsResponse::default();
    for (t, answer) in req.topics.iter().zip(answers) {
        let mut r = CreatableTopicResult::default();
        r.name = t.name.clone();
        match answer {
            Ok(ControllerAnswer::Topic {
                id,
                partitions,
                replication_factor,
            }) => {
                r.topic_id = id;
                r.num_partitions = partitions;
                r.replication_factor = replication_factor;
            }
            Ok(a) => unreachable!("a topic creation answered {a:?}"),
            Err(e) => {
                (r.error_code, r.error_message) = error_fields(&e);
                r.num_partitions = -1;
                r.replication_factor = -1;
            }
        }
        resp.topics.push(r);
    }
    ctx.respond(&resp)
}

pub async fn delete_topics(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: DeleteTopicsRequest = decode_or_return!(ctx, body);
    // v0-5 name topics in `topic_names`; v6 uses `topics` (name or id).
    let snapshot = ctx.shard.meta();
    let targets: Vec<(Option<String>, uuid::Uuid)> = if ctx.version >= 6 {
        req.topics
            .iter()
            .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .iter()
            .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
            .collect()
    };
    let resolved: Vec<(Option<String>, uuid::Uuid, Option<String>)> = targets
        .into_iter()
        .map(|(name, id)| {
            let by_name = name
                .clone()
                .or_else(|| snapshot.topic_by_id(&id).map(|t| t.name.to_string()));
            (name, id, by_name)
        })
        .collect();
    // Kafka's authorization: DELETE on each topic.
    let access = ctx.access();
    let denied: Vec<bool> = resolved
        .iter()
        .map(|r| {
            let name = r.2.as_deref().or(r.0.as_deref()).unwrap_or_default();
            !access.topic(Operation::Delete, name)
        })
        .collect();
    let jobs: Vec<Option<String>> = resolved
        .iter()
        .zip(&denied)
        .map(|(r, d)| if *d { None } else { r.2.clone() })
        .collect();
    let mut answers = delete_on_controller(&ctx.shard, jobs.clone()).await;
    for (a, d) in answers.iter_mut().zip(&denied) {
        if *d {
            *a = Err(unauthorized());
        }
    }
    // A disk too full for the metadata write: free the topics' data, which
    // the deletion was going to remove anyway, and record it again.
    let retry: Vec<(usize, String, uuid::Uuid)> = answers
        .iter()
        .zip(&jobs)
        .enumerate()
        .filter_map(|(i, (a, name))| match (a, name) {
            (Err(e), Some(name)) if e.code == ErrorCode::KafkaStorageError => {
                snapshot.topic(name).map(|t| (i, name.clone(), t.id))
            }
            _ => None,
        })
        .collect();
    if !retry.is_empty() {
        for s in 0..ctx.shard.shard_count() {
            let topics: Vec<(String, uuid::Uuid)> = retry.iter().map(|(_, n, id)| (n.clone(), *id)).collect();
            let _ = ctx
                .shard
                .submit_to(ShardId(s), move |shard| async move {
                    for (name, id) in topics {
                        shard.free_topic_data(&name, id).await;
                    }
                })
                .await;
        }
        let again = delete_on_controller(&ctx.shard, retry.iter().map(|(_, n, _)| Some(n.clone())).collect()).await;
        for ((i, _, _), answer) in retry.into_iter().zip(again) {
            answers[i] = answer;
        }
    }
    let mut resp = DeleteTopicsResponse::default();
    for ((name, id, resolved_name), answer) in resolved.into_iter().zip(answers) {
        let mut r = DeletableTopicResult::default();
        r.name = resolved_name.or(name).map(|n| TopicName(str_bytes(&n)));
        r.topic_id = id;
        match answer {
            Ok(id) => r.topic_id = id,
            Err(e) => {
                (r.error_code, r.error_message) = error_fields(&e);
            }
        }
        resp.responses.push(r);
    }
    ctx.respond(&resp)
}

/// Deletes each named topic on the controller; `None` is an id that named
/// no topic.
async fn delete_on_controller(shard: &Shard, names: Vec<Option<String>>) -> Vec<Result<uuid::Uuid, MetaError>> {
    let requests = names
        .into_iter()
        .map(|name| match name {
            Some(name) => Ok(ControllerRequest::DeleteTopic { name }),
            None => Err(MetaError {
                code: ErrorCode::UnknownTopicId,
                message: "unknown topic id".into(),
            }),
        })
        .collect();
    ask(shard, requests)
        .await
        .into_iter()
        .map(|a| {
            a.map(|a| match a {
                ControllerAnswer::Topic { id, .. } => id,
                a => unreachable!("a topic deletion answered {a:?}"),
            })
        })
        .collect()
}

pub async fn create_partitions(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: CreatePartitionsRequest = decode_or_return!(ctx, body);
    let validate_only = req.validate_only;
    let jobs: Vec<(String, i32)> = req.topics.iter().map(|t| (t.name.0.to_string(), t.count)).collect();
    // Kafka's authorization: ALTER on each topic.
    let access = ctx.access();
    let requests = jobs
        .into_iter()
        .map(|(name, count)| {
            if !access.topic(Operation::Alter, &name) {
                return Err(unauthorized());
            }
            Ok(ControllerRequest::CreatePartitions {
                name,
                count,
                validate_only,
            })
        })
        .collect();
    let answers = ask(&ctx.shard, requests).await;
    let mut resp = CreatePartitionsResponse::default();
    for (t, answer) in req.topics.iter().zip(answers) {
        let mut r = CreatePartitionsTopicResult::default();
        r.name = t.name.clone();
        if let Err(e) = answer {
            (r.error_code, r.error_message) = error_fields(&e);
        }
        resp.results.push(r);
    }
    ctx.respond(&resp)
}
