//! Every `log.retention.check.interval.ms`: segments past a partition's
//! retention by time or size are deleted.

use crate::node::Shard;

pub fn tick(shard: &Shard) {
    for p in &shard.owned_partitions() {
        match p.log.enforce_retention() {
            Ok(removed) if !removed.is_empty() => {
                tracing::info!(topic = %p.topic, partition = p.index, segments = removed.len(), "retention removed segments");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(topic = %p.topic, partition = p.index, error = %e, "retention"),
        }
    }
}
