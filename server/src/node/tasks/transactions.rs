//! Every `transaction.abort.timed.out.transaction.cleanup.interval.ms`:
//! the transactions this shard coordinates that are open past their
//! timeout are aborted; every
//! `transaction.remove.expired.transaction.cleanup.interval.ms`, the
//! transactional ids idle past `transactional.id.expiration.ms` are
//! removed; every tick, the transaction-state partitions this shard
//! leads are compacted once they have rolled a segment.

use std::rc::Rc;

use crate::node::Shard;
use crate::partition::Partition;

pub fn abort_timed_out(shard: &Rc<Shard>) {
    crate::txn::abort_timed_out(shard);
}

pub fn expire(shard: &Rc<Shard>) {
    crate::txn::expire(shard);
}

pub async fn compact(shard: &Rc<Shard>, txn_state: &[Rc<Partition>]) {
    crate::txn::compact(shard, txn_state).await;
}
