//! Every `replica.high.watermark.checkpoint.interval.ms`: the high
//! watermarks of replicated partitions that moved are written.

use crate::node::Shard;

pub fn tick(shard: &Shard) {
    crate::partition::checkpoint_high_watermarks(&shard.owned_partitions());
}
