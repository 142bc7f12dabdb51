//! Every `log.retention.check.interval.ms`: segments past a partition's
//! retention by time or size are deleted, and with them the aborted
//! transactions whose markers they held.

use crate::node::Shard;

pub fn tick(shard: &Shard) {
    for p in &shard.owned_partitions() {
        match p.log.enforce_retention() {
            Ok(removed) if !removed.is_empty() => {
                p.producers.borrow_mut().trim_aborted(p.log.log_start_offset());
                tracing::info!(topic = %p.topic, partition = p.index, segments = removed.len(), "retention removed segments");
            }
            Ok(_) => {}
            Err(e) => tracing::error!(topic = %p.topic, partition = p.index, error = %e, "retention"),
        }
    }
}
