//! A node's shard: the shard core ([`crate::shard`]) with the services the
//! node runs on it. The controller (shard 0), the group coordinator and
//! the replica fetchers are each handed the shard through their host
//! trait (`ControllerHost`, `GroupHost`, `FetcherHost`); [`Services`]
//! is the one type that implements them all, and the API layer above
//! works with [`Shard`], the core with these services.
//!
//! One [`Services`] per shard, on the shard's thread. Periodic work is in
//! [`tasks`], one file per task.

pub mod tasks;

use std::cell::OnceCell;
use std::rc::Rc;

use crate::controller::{Controller, ControllerHost};
use crate::groups::{GroupHost, Groups};
use crate::meta::{OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC};
use crate::partition::{Partition, RoleChange};
use crate::replication::{FetcherHost, Fetchers};
use crate::txn::{Transactions, TxnHost};

/// A shard of this node: the core with the node's services.
pub type Shard = crate::shard::Shard<Services>;
/// The state every shard of this node shares.
pub type Common = crate::shard::Common<Services>;
/// Work for one of this node's shards.
pub type Job = crate::shard::Job<Services>;

/// What a node runs on each shard besides its partitions.
#[derive(Debug, Default)]
pub struct Services {
    /// The controller; on shard 0 only, once it has started.
    controller: OnceCell<Controller>,
    /// The consumer groups this shard coordinates.
    pub groups: Groups,
    /// The fetchers of the partitions this shard follows.
    pub fetchers: Fetchers,
    /// The transactional ids this shard coordinates.
    pub transactions: Transactions,
}

impl Services {
    /// The controller, on shard 0 once it has started.
    pub fn controller(&self) -> Option<&Controller> {
        self.controller.get()
    }
}

impl crate::shard::Services for Services {
    fn role_changed(shard: &Rc<Shard>, p: &Rc<Partition>, change: RoleChange) {
        let fetchers = &shard.services.fetchers;
        match change {
            RoleChange::BecameFollower { leader } | RoleChange::NewLeader { leader } => {
                fetchers.follow(shard, p.topic.clone(), p.index, leader);
            }
            _ => fetchers.unfollow(&p.topic, p.index),
        }
        // The groups of an offsets partition live with its leader: any
        // change forgets them, and a new leader replays the partition.
        if &*p.topic == OFFSETS_TOPIC {
            crate::groups::unload(shard, p.index);
            if change == RoleChange::BecameLeader {
                match crate::groups::load(shard, p) {
                    Ok(n) if n > 0 => tracing::info!(partition = p.index, records = n, "loaded committed offsets"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(partition = p.index, error = %e, "loading committed offsets"),
                }
            }
        }
        // Transactional ids too: any change forgets them, and a new leader
        // replays the partition and finishes what it finds prepared.
        if &*p.topic == TRANSACTION_STATE_TOPIC {
            shard.services.transactions.unload(p.index);
            if change == RoleChange::BecameLeader {
                match crate::txn::load(shard, p) {
                    Ok(n) if n > 0 => tracing::info!(partition = p.index, records = n, "loaded transaction states"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(partition = p.index, error = %e, "loading transaction states"),
                }
            }
        }
    }

    fn closing(shard: &Shard, p: &Partition) {
        if &*p.topic == TRANSACTION_STATE_TOPIC {
            shard.services.transactions.unload(p.index);
        }
        shard.services.fetchers.unfollow(&p.topic, p.index);
    }
}

impl ControllerHost for Services {
    fn controller(&self) -> Option<&Controller> {
        Services::controller(self)
    }

    fn set_controller(&self, controller: Controller) -> Result<(), String> {
        self.controller
            .set(controller)
            .map_err(|_| "the controller was started twice".to_string())
    }
}

impl GroupHost for Services {
    fn groups(&self) -> &Groups {
        &self.groups
    }
}

impl TxnHost for Services {
    fn transactions(&self) -> &Transactions {
        &self.transactions
    }
}

impl FetcherHost for Services {
    fn fetchers(&self) -> &Fetchers {
        &self.fetchers
    }
}
