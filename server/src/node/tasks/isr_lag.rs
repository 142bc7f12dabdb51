//! Once a second: leaders ask the controller to drop from the ISR the
//! followers that have not caught up within `replica.lag.time.max.ms`.

use std::rc::Rc;

use crate::node::Shard;

pub fn tick(shard: &Rc<Shard>) {
    let now = crate::base::clock::now_ms_u64();
    let lag = shard.config().replica_lag_time_max_ms;
    for p in shard.owned_partitions() {
        if let Some(isr) = p.shrunk_isr(now, lag) {
            crate::replication::propose_isr(shard, &p, isr);
        }
    }
}
