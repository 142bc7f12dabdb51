//! Every tick: logs under a flush interval (`flush.ms`,
//! `log.flush.interval.ms`) are synced when their interval has passed
//! without an append to carry the sync.

use std::rc::Rc;

use crate::partition::Partition;

pub async fn tick(timed_flush: &[Rc<Partition>]) {
    for p in timed_flush {
        if let Err(e) = p.log.sync_if_due().await {
            tracing::error!(topic = %p.topic, partition = p.index, error = %e, "interval sync");
        }
    }
}
