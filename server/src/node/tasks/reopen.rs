//! Once a second: logs a full disk or a want of descriptors poisoned come
//! back when there is room again.

use crate::node::Shard;

pub async fn tick(shard: &Shard) {
    if !shard.disk.has_room() {
        return;
    }
    for p in shard
        .owned_partitions()
        .iter()
        .filter(|p| p.log.is_poisoned_reopenable())
    {
        shard.reopen(p).await;
    }
}
