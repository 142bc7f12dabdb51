//! Every `transaction.abort.timed.out.transaction.cleanup.interval.ms`:
//! the transactions this shard coordinates that are open past their
//! timeout are aborted; every
//! `transaction.remove.expired.transaction.cleanup.interval.ms`, the
//! transactional ids idle past `transactional.id.expiration.ms` are
//! removed.

use std::rc::Rc;

use crate::node::Shard;

pub fn abort_timed_out(shard: &Rc<Shard>) {
    crate::txn::abort_timed_out(shard);
}

pub fn expire(shard: &Rc<Shard>) {
    crate::txn::expire(shard);
}
