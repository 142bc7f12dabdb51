//! A shard's periodic work, off every request path: the free-space
//! probe, offsets expiry and compaction, idle files, reopening logs a full
//! disk poisoned, the ISR lag check, high-watermark checkpoints,
//! flush-interval syncs and retention.

use std::rc::Rc;

use crate::meta;

use super::Shard;

/// Runs periodic work on this shard's partitions: flush-interval syncs,
/// retention, expiry and compaction of committed offsets. Not on any request path.
pub async fn run(shard: Rc<Shard>) {
    let tick = std::time::Duration::from_millis(100);
    let retention_every = std::time::Duration::from_millis(shard.config().log_retention_check_interval_ms);
    let offsets_every = std::time::Duration::from_millis(shard.config().groups.offsets_retention_check_interval_ms);
    let mut last_retention = std::time::Instant::now();
    let mut last_offsets_expiry = std::time::Instant::now();
    let hw_every = std::time::Duration::from_millis(shard.config().replica_hw_checkpoint_interval_ms);
    let mut last_hw_checkpoint = std::time::Instant::now();
    // The few partitions each tick must visit, rebuilt when the layout
    // changes: a shard of many idle partitions does not walk them all
    // ten times a second.
    let mut lists_version = u64::MAX;
    let (mut timed_flush, mut offsets) = (Vec::new(), Vec::new());
    let mut ticks = 0u64;
    while !shard.stopping.is_set() {
        compio::runtime::time::sleep(tick).await;
        ticks += 1;
        shard.disk.refresh();
        if last_offsets_expiry.elapsed() >= offsets_every {
            last_offsets_expiry = std::time::Instant::now();
            crate::groups::expire_offsets(&shard).await;
        }
        shard.check_files();
        if lists_version != shard.layout_version() {
            lists_version = shard.layout_version();
            let all = shard.owned_partitions();
            timed_flush = all
                .iter()
                .filter(|p| matches!(p.log.config().flush, sluice_engine::FlushPolicy::IntervalMs(_)))
                .cloned()
                .collect();
            offsets = all.into_iter().filter(|p| &*p.topic == meta::OFFSETS_TOPIC).collect();
        }
        // Once a second: logs a full disk or a want of descriptors
        // poisoned come back when there is room.
        if ticks.is_multiple_of(10) && shard.disk.has_room() {
            for p in shard
                .owned_partitions()
                .iter()
                .filter(|p| p.log.is_poisoned_reopenable())
            {
                shard.reopen(p).await;
            }
        }
        // Once a second: leaders drop followers that lag too long
        // from the ISR.
        if ticks.is_multiple_of(10) {
            let now = crate::base::clock::now_ms_u64();
            let lag = shard.config().replica_lag_time_max_ms;
            for p in shard.owned_partitions() {
                if let Some(isr) = p.shrunk_isr(now, lag) {
                    crate::replication::propose_isr(&shard, &p, isr);
                }
            }
        }
        if last_hw_checkpoint.elapsed() >= hw_every {
            last_hw_checkpoint = std::time::Instant::now();
            crate::partition::checkpoint_high_watermarks(&shard.owned_partitions());
        }
        crate::groups::compact_offsets(&shard, &offsets).await;
        for p in &timed_flush {
            if let Err(e) = p.log.sync_if_due().await {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "interval sync");
            }
        }
        if last_retention.elapsed() >= retention_every {
            last_retention = std::time::Instant::now();
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
    }
}
