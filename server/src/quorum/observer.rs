//! A broker-only node's view of the metadata log (`process.roles=broker`):
//! it is not a Raft member. It pulls the applied image from the voters
//! (preferring the leader they name) every `POLL` and installs each newer
//! one on its shards; its own writes (registration, producer-id blocks,
//! admin changes drafted here) go to the leader as forwarded entries. The
//! last image is kept in `meta/observer-image.json`, so a restart without
//! a reachable quorum serves what the node last saw.

use std::cell::{Cell, Ref, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::machine::{MachineState, Publisher, leader_id, with_controller};
use super::net::Peer;
use super::store::replace_file;
use super::{Command, Heartbeats, Quorum, QuorumError, QuorumSettings, Reply};
use crate::base::files::read_json;
use crate::image::Image;
use crate::meta::Snapshot;

/// How often an observer asks for a newer image.
const POLL: Duration = Duration::from_millis(100);

#[derive(Serialize, Deserialize)]
struct ImageFile {
    applied: Option<openraft::alias::LogIdOf<super::MetaRaft>>,
    image: Image,
}

/// [`Quorum`] for a node that is not a voter.
#[derive(Debug, Clone)]
pub struct ObserverQuorum {
    inner: Rc<Inner>,
    /// Never filled: observers do not lead.
    pub heartbeats: Heartbeats,
}

#[derive(Debug)]
struct Inner {
    settings: QuorumSettings,
    file: PathBuf,
    state: RefCell<MachineState>,
    leader: Cell<Option<u64>>,
}

impl ObserverQuorum {
    /// Loads the last image seen and starts following the voters; returns
    /// once a voter has answered, or after `recovery`.
    pub async fn start(
        meta_dir: &Path,
        settings: QuorumSettings,
        publisher: Publisher,
        recovery: Duration,
    ) -> Result<Self, String> {
        let file = meta_dir.join("observer-image.json");
        let mut state = MachineState::default();
        if let Some(f) = read_json::<ImageFile>(&file).map_err(|e| e.to_string())? {
            state.image = f.image;
            state.applied = f.applied;
        }
        let q = Self {
            inner: Rc::new(Inner {
                settings,
                file,
                state: RefCell::new(state),
                leader: Cell::new(None),
            }),
            heartbeats: Heartbeats::default(),
        };
        let first = Rc::new(crate::util::Flag::default());
        compio::runtime::spawn(follow(Rc::downgrade(&q.inner), publisher, first.clone())).detach();
        if crate::util::race(first.wait(), compio::runtime::time::sleep(recovery))
            .await
            .is_err()
        {
            tracing::warn!("no controller answered within {recovery:?}; serving the metadata last seen");
        }
        Ok(q)
    }

    pub fn node_id(&self) -> u64 {
        self.inner.settings.node_id
    }

    pub fn address_of(&self, id: u64) -> Option<&str> {
        self.inner.settings.voters.get(&id).map(String::as_str)
    }

    /// The snapshot shards read, naming the leader the voters last gave.
    pub fn snapshot(&self) -> Snapshot {
        with_controller(
            &self.inner.state.borrow(),
            leader_id(self.inner.leader.get()),
            self.node_id() as i32,
        )
    }
}

/// Asks the leader (or, not knowing it, each voter in turn) for a newer
/// image until the node stops.
async fn follow(inner: std::rc::Weak<Inner>, publisher: Publisher, first: Rc<crate::util::Flag>) {
    let mut peers: BTreeMap<u64, Peer> = BTreeMap::new();
    let mut turn = 0usize;
    loop {
        let Some(q) = inner.upgrade() else {
            return;
        };
        let voters: Vec<u64> = q.settings.voters.keys().copied().collect();
        let target = q.leader.get().unwrap_or_else(|| {
            turn += 1;
            voters[turn % voters.len()]
        });
        let known = q.state.borrow().applied.map(|l| l.index);
        let addr = q.settings.voters.get(&target).cloned().unwrap_or_default();
        let peer = peers
            .entry(target)
            .or_insert_with(|| Peer::new(addr, q.settings.transport.clone()));
        match peer.image(known, POLL * 10).await {
            Ok((leader, newer)) => {
                first.set();
                q.leader.set(leader);
                if let Some((applied, image)) = newer {
                    let file = ImageFile { applied, image };
                    if let Err(e) = serde_json::to_vec(&file)
                        .map_err(std::io::Error::other)
                        .and_then(|b| replace_file(&q.file, &b))
                    {
                        tracing::warn!(error = %e, "keeping the metadata image");
                    }
                    // Installed on the shards first, then visible as
                    // applied: a write waiting for this index is answered
                    // only once the shards have it.
                    let next = MachineState {
                        image: file.image,
                        applied,
                        membership: Default::default(),
                    };
                    let snapshot = with_controller(&next, leader_id(q.leader.get()), q.settings.node_id as i32);
                    if let Err(e) = publisher(Arc::new(snapshot)).await {
                        tracing::error!(error = %e, "installing metadata from the controller");
                    }
                    *q.state.borrow_mut() = next;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, voter = target, "asking for metadata");
                q.leader.set(None);
            }
        }
        drop(q);
        compio::runtime::time::sleep(POLL).await;
    }
}

impl Quorum for ObserverQuorum {
    async fn write(&self, command: Command) -> Result<Reply, QuorumError> {
        if command.leader_only {
            return Err(QuorumError::NoLeader("an observer never leads the quorum".into()));
        }
        let ttl = self.inner.settings.write_timeout;
        let deadline = Instant::now() + ttl;
        // Wait a little for a leader to be known (a start, an election).
        let known_by = deadline.min(Instant::now() + POLL * 30);
        while self.inner.leader.get().is_none() && Instant::now() < known_by {
            compio::runtime::time::sleep(POLL).await;
        }
        let leader = self
            .inner
            .leader
            .get()
            .ok_or_else(|| QuorumError::NoLeader("no controller leader is known".into()))?;
        let addr = self.address_of(leader).unwrap_or_default().to_string();
        let reply = Peer::new(addr, self.inner.settings.transport.clone())
            .write(command, ttl)
            .await
            .map_err(QuorumError::NoLeader)?;
        // Answer once this node has seen the change too, as a voter would.
        let wanted = reply.applied_index;
        let deadline = Instant::now() + ttl;
        while self.inner.state.borrow().applied.map(|l| l.index) < Some(wanted) {
            if Instant::now() >= deadline {
                return Err(QuorumError::TimedOut("the change did not reach this broker".into()));
            }
            compio::runtime::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(reply)
    }

    fn state(&self) -> Ref<'_, MachineState> {
        self.inner.state.borrow()
    }

    fn leader(&self) -> Option<u64> {
        self.inner.leader.get()
    }
}
