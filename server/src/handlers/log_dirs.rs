//! DescribeLogDirs: the one data directory, with the size of each partition
//! it holds (asked of each partition's owner) and, from v4, the
//! filesystem's total and usable bytes.

use std::collections::{BTreeMap, HashSet};

use bytes::BytesMut;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};

use super::{Ctx, Outcome, str_bytes};
use crate::shard::ShardId;

pub async fn describe_log_dirs(ctx: Ctx, body: BytesMut) -> Outcome {
    let req: DescribeLogDirsRequest = decode_or_return!(ctx, body);
    // Kafka's authorization: DESCRIBE on the cluster.
    if !ctx.access().cluster(sluice_metadata::security::Operation::Describe) {
        let mut resp = DescribeLogDirsResponse::default();
        resp.error_code = crate::error_codes::ErrorCode::ClusterAuthorizationFailed.code();
        return ctx.respond(&resp);
    }
    // None: every partition; else the named ones.
    let filter: Option<HashSet<(String, i32)>> = req.topics.as_ref().map(|topics| {
        topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.topic.0.to_string(), *p)))
            .collect()
    });
    let mut sizes: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for s in 0..ctx.shard.shard_count() {
        let filter = filter.clone();
        let owned = ctx
            .shard
            .submit_to(ShardId(s), move |shard| async move {
                shard
                    .owned_partitions()
                    .iter()
                    .filter(|p| {
                        filter
                            .as_ref()
                            .is_none_or(|f| f.contains(&(p.topic.to_string(), p.index)))
                    })
                    .map(|p| (p.topic.to_string(), p.index, p.log.size_bytes() as i64))
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
        for (topic, index, size) in owned {
            sizes.entry(topic).or_default().push((index, size));
        }
    }
    let dir = &ctx.shard.config().data_dir;
    let path = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    let mut result = DescribeLogDirsResult::default();
    result.log_dir = str_bytes(&path.display().to_string());
    let (total, usable) = crate::disk::filesystem_bytes(dir).map_or((-1, -1), |(t, u)| {
        (
            i64::try_from(t).unwrap_or(i64::MAX),
            i64::try_from(u).unwrap_or(i64::MAX),
        )
    });
    result.total_bytes = total;
    result.usable_bytes = usable;
    result.topics = sizes
        .into_iter()
        .map(|(topic, mut parts)| {
            parts.sort_unstable();
            let mut t = DescribeLogDirsTopic::default();
            t.name = TopicName(str_bytes(&topic));
            t.partitions = parts
                .into_iter()
                .map(|(index, size)| {
                    let mut p = DescribeLogDirsPartition::default();
                    p.partition_index = index;
                    p.partition_size = size;
                    p.offset_lag = 0;
                    p
                })
                .collect();
            t
        })
        .collect();
    let mut resp = DescribeLogDirsResponse::default();
    resp.results = vec![result];
    ctx.respond(&resp)
}
