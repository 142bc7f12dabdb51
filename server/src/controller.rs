//! The controller: the one writer of the cluster metadata. It runs on
//! shard 0, holds the metadata store, serialises changes, and publishes
//! each new snapshot to every shard (`Shard::publish`). Today the store is
//! a local file; the controller quorum will put a replicated log behind
//! the same entry points.

use std::cell::{Cell, RefCell};

use crate::error_codes::ErrorCode;
use crate::meta::{MetaError, MetaStore};
use crate::shard::{Shard, ShardGone, ShardId};
use crate::util::Changed;

/// The controller's state, on shard 0 only.
#[derive(Debug)]
pub struct Controller {
    pub store: RefCell<MetaStore>,
    /// Set while a change is being applied and published; changes wait.
    busy: Cell<bool>,
    done: Changed,
}

impl Controller {
    pub fn new(store: MetaStore) -> Self {
        Self {
            store: RefCell::new(store),
            busy: Cell::new(false),
            done: Changed::default(),
        }
    }

    /// Allocates a producer id.
    pub fn allocate_producer_id(&self) -> Result<i64, String> {
        self.store
            .borrow_mut()
            .allocate_producer_id()
            .map_err(|e| e.to_string())
    }
}

/// What [`controller`] did with a change.
#[derive(Debug)]
pub struct Applied<T> {
    /// What the change function returned.
    pub out: T,
    /// Set when a shard could not open the partitions the change made: the
    /// change was undone (the old topics persisted and installed again) and
    /// this says why. Nothing it created is left.
    pub undone: Option<String>,
}

/// Runs `f` on the controller's metadata store, then publishes the result to
/// every shard if it changed anything. If a shard cannot open a partition
/// the change made (no disk space, no file descriptors), the change is
/// undone. Admin changes are serialised.
pub async fn controller<T, F>(shard: &Shard, f: F) -> Result<Applied<T>, ShardGone>
where
    T: Send + 'static,
    F: FnOnce(&mut MetaStore) -> T + Send + 'static,
{
    shard
        .submit_to(ShardId(0), move |ctl| async move {
            let c = ctl.controller.as_ref()?;
            while c.busy.get() {
                c.done.next().await;
            }
            c.busy.set(true);
            let (out, before) = {
                let mut store = c.store.borrow_mut();
                let (version, topics) = (store.version(), store.topics());
                let out = f(&mut store);
                (Some(out), (store.version() != version).then_some(topics))
            };
            let mut undone = None;
            if let Some(before) = before
                && let Err(e) = ctl.publish().await
            {
                tracing::error!(error = %e, "installing new metadata; undoing the change");
                let restored = c.store.borrow_mut().restore(before);
                match restored {
                    Ok(()) => {
                        if let Err(e) = ctl.publish().await {
                            tracing::error!(error = %e, "installing the metadata from before the change");
                        }
                    }
                    Err(e) => tracing::error!(error = %e.message, "undoing the change"),
                }
                undone = Some(e);
            }
            c.busy.set(false);
            c.done.notify();
            out.map(|out| Applied { out, undone })
        })
        .await?
        .ok_or(ShardGone)
}

/// [`controller`] for a change with one answer per resource: when the
/// controller is gone, each of the `n` resources gets NOT_CONTROLLER; when
/// the change was undone, each that succeeded gets KAFKA_STORAGE_ERROR.
pub async fn controller_each<T, F>(shard: &Shard, n: usize, f: F) -> Vec<Result<T, MetaError>>
where
    T: Send + 'static,
    F: FnOnce(&mut MetaStore) -> Vec<Result<T, MetaError>> + Send + 'static,
{
    match controller(shard, f).await {
        Ok(Applied { out, undone: None }) => out,
        Ok(Applied { out, undone: Some(why) }) => out
            .into_iter()
            .map(|r| {
                r.and_then(|_| {
                    Err(MetaError {
                        code: ErrorCode::KafkaStorageError,
                        message: format!("partitions could not be opened, nothing was changed: {why}"),
                    })
                })
            })
            .collect(),
        Err(ShardGone) => (0..n)
            .map(|_| {
                Err(MetaError {
                    code: ErrorCode::NotController,
                    message: "the controller shard is not available".into(),
                })
            })
            .collect(),
    }
}
