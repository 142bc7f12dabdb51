//! The state machine of the metadata log: the [`Image`], the last applied
//! log id and the quorum's membership, with snapshots on disk.
//!
//! Each applied batch bumps the snapshot version and, once the node is
//! live, hands the new image to the publisher (the controller shard, which
//! installs it on every shard) before the writers of the batch are
//! answered.

use std::cell::{Cell, OnceCell, RefCell};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::LocalBoxFuture;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder, StoredMembership};
use serde::{Deserialize, Serialize};

use super::store::save_json;
use super::{MetaRaft, Reply};
use crate::base::files::read_json;
use crate::image::Image;
use crate::meta::Snapshot;

type LogId = LogIdOf<MetaRaft>;
type Membership = StoredMembershipOf<MetaRaft>;
type SnapshotMeta = SnapshotMetaOf<MetaRaft>;

/// Installs a new image on the broker; the error says why it could not.
pub type Publisher = Rc<dyn Fn(Arc<Snapshot>) -> LocalBoxFuture<'static, Result<(), String>>>;

/// Reads the quorum's current leader.
pub type LeaderNow = Box<dyn Fn() -> Option<u64>>;

/// What the machine holds, shared with the quorum handle.
#[derive(Debug, Default)]
pub struct MachineState {
    pub image: Image,
    pub applied: Option<LogId>,
    pub membership: Membership,
}

impl MachineState {
    /// The version shards see: the index of the last applied entry, so it
    /// grows with every batch and is the same on every node.
    pub fn version(&self) -> u64 {
        self.applied.map_or(0, |l| l.index)
    }

    pub fn snapshot(&self) -> Snapshot {
        self.image.snapshot(self.version())
    }
}

/// A quorum leader as a broker id in Metadata; -1 for none.
pub fn leader_id(leader: Option<u64>) -> i32 {
    leader.map_or(-1, |l| i32::try_from(l).unwrap_or(-1))
}

/// The snapshot shards read, with the controller id clients are given:
/// the quorum `leader` when it is a live broker; when it is not (yet) a
/// registered broker, this node, which forwards admin changes to it; -1
/// while no leader is elected.
pub fn with_controller(state: &MachineState, leader: i32, node_id: i32) -> Snapshot {
    let mut s = state.snapshot();
    let live = |id: i32| s.brokers.get(&id).is_some_and(|b| !b.fenced);
    s.controller_id = if leader < 0 || live(leader) {
        leader
    } else if live(node_id) {
        node_id
    } else {
        -1
    };
    s
}

/// The snapshot file: where the image stood after `meta.last_log_id`.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    image: Image,
}

/// The state machine handed to the Raft library; clones share the state.
#[derive(Clone)]
pub struct Machine {
    dir: PathBuf,
    pub state: Rc<RefCell<MachineState>>,
    publisher: Publisher,
    /// Set once the node has caught up at start; before that, applied
    /// batches are not published one by one.
    pub live: Rc<Cell<bool>>,
    /// The quorum's leader as the Raft node sees it at this moment,
    /// installed once the node exists (none before). Snapshots take the
    /// controller from it, so the first ones published after an election
    /// (the library's blank entry, the brokers' registrations) already
    /// name the new leader.
    pub leader_now: Rc<OnceCell<LeaderNow>>,
    /// This node's id.
    node_id: i32,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Machine {
    /// Opens the machine in `dir`, starting from its snapshot if it has one.
    pub fn open(dir: &Path, node_id: i32, publisher: Publisher) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let state = match read_json::<SnapshotFile>(&dir.join("snapshot"))? {
            Some(s) => MachineState {
                image: s.image,
                applied: s.meta.last_log_id,
                membership: s.meta.last_membership,
            },
            None => MachineState::default(),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            state: Rc::new(RefCell::new(state)),
            publisher,
            live: Rc::new(Cell::new(false)),
            leader_now: Rc::new(OnceCell::new()),
            node_id,
        })
    }

    /// What shards read, with the controller id clients are given (see
    /// [`with_controller`]).
    pub fn snapshot(&self) -> Snapshot {
        with_controller(&self.state.borrow(), leader_id(self.leader()), self.node_id)
    }

    /// The quorum's leader as the Raft node sees it now (none before the
    /// node exists).
    pub fn leader(&self) -> Option<u64> {
        self.leader_now.get().and_then(|now| now())
    }

    fn snapshot_file(&self) -> io::Result<Option<SnapshotFile>> {
        read_json(&self.dir.join("snapshot"))
    }
}

/// Builds snapshots from the machine's current state.
#[derive(Debug, Clone)]
pub struct Builder(Machine);

impl RaftSnapshotBuilder<MetaRaft> for Builder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<MetaRaft, Vec<u8>>, io::Error> {
        let (meta, image) = {
            let st = self.0.state.borrow();
            let meta = SnapshotMeta {
                last_log_id: st.applied,
                last_membership: st.membership.clone(),
            };
            (meta, st.image.clone())
        };
        let data = serde_json::to_vec(&image).map_err(io::Error::other)?;
        let file = SnapshotFile {
            meta: meta.clone(),
            image,
        };
        save_json("metadata snapshot", self.0.dir.join("snapshot"), &file).await?;
        Ok(openraft::Snapshot { meta, snapshot: data })
    }
}

impl RaftStateMachine<MetaRaft> for Machine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = Builder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), io::Error> {
        let st = self.state.borrow();
        Ok((st.applied, st.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: futures_util::Stream<Item = Result<EntryResponder<MetaRaft>, io::Error>> + Unpin,
    {
        let mut answers = Vec::new();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let mut st = self.state.borrow_mut();
            if let Some(applied) = st.applied {
                assert!(
                    entry.log_id.index > applied.index,
                    "entry {} applied twice",
                    entry.log_id
                );
            }
            st.applied = Some(entry.log_id);
            let results = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(command) => st.image.apply_changes(&command.records, &command.changes),
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(entry.log_id), m);
                    Vec::new()
                }
            };
            if let Some(r) = responder {
                answers.push((r, results, entry.log_id.index));
            }
        }
        let published = if self.live.get() {
            let snapshot = Arc::new(self.snapshot());
            (self.publisher)(snapshot).await
        } else {
            Ok(())
        };
        for (responder, results, applied_index) in answers {
            responder.send(Reply {
                results,
                not_installed: published.as_ref().err().cloned(),
                applied_index,
            });
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Builder(self.clone())
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<(), io::Error> {
        let image: Image = serde_json::from_slice(&data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let file = SnapshotFile {
            meta: meta.clone(),
            image: image.clone(),
        };
        save_json("metadata snapshot", self.dir.join("snapshot"), &file).await?;
        {
            let mut st = self.state.borrow_mut();
            st.image = image;
            st.applied = meta.last_log_id;
            st.membership = meta.last_membership.clone();
        }
        if self.live.get() {
            let snapshot = Arc::new(self.snapshot());
            if let Err(e) = (self.publisher)(snapshot).await {
                tracing::error!(error = %e, "installing the metadata snapshot from the controller");
            }
        }
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<MetaRaft, Vec<u8>>>, io::Error> {
        let Some(file) = self.snapshot_file()? else {
            return Ok(None);
        };
        let data = serde_json::to_vec(&file.image).map_err(io::Error::other)?;
        Ok(Some(openraft::Snapshot {
            meta: file.meta,
            snapshot: data,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::image::{BrokerMeta, MetaRecord};

    /// The controller in a snapshot is the leader the Raft node sees when
    /// the snapshot is made, not the one the controller's duties loop last
    /// noted: registrations applied right after an election are published
    /// naming the new leader (clients that saw -1 there waited for a
    /// controller that Metadata did not name).
    #[test]
    fn snapshots_name_the_leader_the_raft_node_sees_now() {
        let dir = tempfile::tempdir().unwrap();
        let publisher: Publisher = Rc::new(|_| Box::pin(async { Ok(()) }));
        let machine = Machine::open(dir.path(), 2, publisher).unwrap();
        machine
            .state
            .borrow_mut()
            .image
            .apply(&MetaRecord::RegisterBroker(BrokerMeta {
                id: 2,
                incarnation: uuid::Uuid::nil(),
                epoch: 0,
                host: "127.0.0.1".into(),
                port: 9092,
                shards: 1,
                fenced: false,
                registered_ms: 0,
                shut_down: false,
                clean_start: false,
                endpoints: Vec::new(),
            }))
            .unwrap();
        // Before the Raft node exists: none.
        assert_eq!(machine.snapshot().controller_id, -1);
        let leader = Rc::new(Cell::new(Some(2u64)));
        let seen = leader.clone();
        assert!(machine.leader_now.set(Box::new(move || seen.get())).is_ok());
        // As soon as the Raft node sees a leader (the controller's duties
        // loop notices only at its next tick).
        assert_eq!(machine.snapshot().controller_id, 2);
        leader.set(None);
        assert_eq!(machine.snapshot().controller_id, -1);
    }
}
