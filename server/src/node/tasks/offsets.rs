//! Committed offsets: expiry every `offsets.retention.check.interval.ms`,
//! and compaction of the offsets partitions this shard owns every tick
//! (it rewrites a partition only once it has rolled a segment).

use std::rc::Rc;

use crate::node::Shard;
use crate::partition::Partition;

pub async fn expire(shard: &Rc<Shard>) {
    crate::groups::expire_offsets(shard).await;
}

pub async fn compact(shard: &Rc<Shard>, offsets: &[Rc<Partition>]) {
    crate::groups::compact_offsets(shard, offsets).await;
}
