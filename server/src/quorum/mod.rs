//! The controller quorum: one replicated metadata log whose state machine
//! is the cluster's [`Image`](crate::image::Image).
//!
//! The controller talks to it through [`Quorum`], a small trait of ours;
//! [`RaftQuorum`] implements it with the `openraft` library (ADR 0012) on
//! the controller shard's runtime. The log, the vote and snapshots live in
//! `<data dir>/meta/quorum/`.

use std::cell::{Ref, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};

use crate::image::MetaRecord;
use crate::meta::MetaError;

pub mod machine;
mod net;
mod observer;
mod store;

pub use observer::ObserverQuorum;

pub use net::{Peer, Transport};

pub use sluice_metadata::controller::Liveness;

/// Shared by a voter's transport (which records) and its controller duties
/// (which fence).
pub type Heartbeats = Rc<RefCell<Liveness>>;

pub use machine::{MachineState, Publisher};
pub use store::replace_file;

use machine::Machine;

/// One entry of the metadata log: records applied in order by
/// [`crate::image::Image::apply_changes`]. Consecutive records with the same
/// number in `changes` are one change, applied all or none (a change
/// drafted on an image that has moved since is refused whole, not in
/// part); without `changes` each record stands on its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub records: Vec<MetaRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<u32>,
    /// Appended only by this node as the quorum's leader, never forwarded:
    /// for decisions only the active controller may take (fencing on
    /// missed heartbeats), which a deposed leader cut off from the others
    /// would otherwise hand to the new one, drafted on what it last saw.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leader_only: bool,
}

impl Command {
    /// Records that each stand on their own.
    pub fn each(records: Vec<MetaRecord>) -> Self {
        Self {
            records,
            changes: Vec::new(),
            leader_only: false,
        }
    }

    /// Records that form one change: applied all or none.
    pub fn atomic(records: Vec<MetaRecord>) -> Self {
        Self {
            changes: vec![0; records.len()],
            records,
            leader_only: false,
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} metadata record(s)", self.records.len())
    }
}

/// What applying a [`Command`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// One per record, in order.
    pub results: Vec<Result<(), MetaError>>,
    /// Set when the node that applied it could not install the new image
    /// on its shards (a partition that cannot be opened); says why.
    pub not_installed: Option<String>,
    /// The index of the log entry.
    pub applied_index: u64,
}

openraft::declare_raft_types!(
    /// The controller quorum's types for the Raft library.
    pub MetaRaft:
        D = Command,
        R = Reply,
        NodeId = u64,
        Node = BasicNode,
        AsyncRuntime = openraft_rt_compio::CompioRuntime,
);

/// Why a write did not reach the metadata log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QuorumError {
    /// No controller leads now (no majority of voters is reachable), or
    /// the leader did not answer.
    #[error("the controller quorum has no reachable leader: {0}")]
    NoLeader(String),
    /// No answer within the write timeout: the write may still be
    /// committed later.
    #[error("the controller quorum did not answer in time: {0}")]
    TimedOut(String),
    /// The quorum is stopping or its storage failed.
    #[error("the controller quorum is not available: {0}")]
    Unavailable(String),
}

/// The controller's view of the metadata quorum.
#[allow(async_fn_in_trait, reason = "used on one thread; no Send bound is wanted")]
pub trait Quorum {
    /// Appends `command` to the metadata log (through the leader) and
    /// answers once it is committed and applied on the leader.
    async fn write(&self, command: Command) -> Result<Reply, QuorumError>;
    /// The state as applied on this node.
    fn state(&self) -> Ref<'_, MachineState>;
    /// The node that leads the quorum now, if known.
    fn leader(&self) -> Option<u64>;
}

/// Settings of the quorum.
#[derive(Debug, Clone)]
pub struct QuorumSettings {
    /// This node's id (`node.id`).
    pub node_id: u64,
    /// The voters and their controller addresses
    /// (`controller.quorum.voters`).
    pub voters: BTreeMap<u64, String>,
    /// Entries between snapshots of the image.
    pub snapshot_every: u64,
    /// How long a write waits for its answer.
    pub write_timeout: Duration,
    /// How connections between the nodes and the voters are secured.
    pub transport: Arc<Transport>,
}

/// [`Quorum`] on `openraft`.
#[derive(Debug, Clone)]
pub struct RaftQuorum {
    raft: Raft<MetaRaft, Machine>,
    machine: Machine,
    settings: QuorumSettings,
    /// Heartbeats received while leading (from peers over the transport,
    /// and this node's own).
    pub heartbeats: Heartbeats,
}

/// The library's timing: heartbeats every 100 ms, elections after 500 to
/// 1000 ms without one.
fn raft_config(settings: &QuorumSettings) -> Result<openraft::Config, String> {
    let config = openraft::Config {
        cluster_name: "sluice-metadata".into(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(settings.snapshot_every),
        max_in_snapshot_log_to_keep: settings.snapshot_every / 10,
        ..Default::default()
    };
    config.validate().map_err(|e| e.to_string())
}

/// `1@127.0.0.1:19093,2@…`, or `this node alone` for the in-process voter.
fn show_voters(voters: &BTreeMap<u64, String>) -> String {
    if voters.len() == 1 && voters.values().all(String::is_empty) {
        return format!(
            "node {} alone (no voter list)",
            voters.keys().next().copied().unwrap_or(0)
        );
    }
    voters
        .iter()
        .map(|(id, addr)| format!("{id}@{addr}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Binds this voter's controller listener (none for the in-process
/// voter). Called before anything is written: a second process with this
/// node's id, and so its address, stops here.
pub async fn bind(settings: &QuorumSettings) -> Result<Option<compio::net::TcpListener>, String> {
    match settings.voters.get(&settings.node_id) {
        Some(addr) if settings.voters.len() > 1 => {
            // A killed predecessor's listener can outlive its process for a
            // moment (the kernel tears an io_uring down after the exit), so
            // "in use" is retried for a bounded time before it means a
            // second process.
            let mut tries = 0;
            loop {
                match listen(addr) {
                    Ok(l) => return Ok(Some(l)),
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < BIND_RETRIES => {
                        tries += 1;
                        compio::runtime::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(format!("controller listener on {addr}: {e}")),
                }
            }
        }
        _ => Ok(None),
    }
}

/// Tries of the controller listener's bind, 100 ms apart, while its port
/// is in use.
const BIND_RETRIES: u32 = 30;

/// Listens on `addr` (SO_REUSEADDR, no SO_REUSEPORT: a second process
/// with this node's address is refused).
fn listen(addr: &str) -> std::io::Result<compio::net::TcpListener> {
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    compio::net::TcpListener::from_std(crate::base::sockets::listen_socket(addr, false)?)
}

impl RaftQuorum {
    /// Opens the quorum's storage in `dir` and starts the Raft node on this
    /// thread's runtime. A node that has never been part of the quorum
    /// forms it from the voter list. Returns once the node has applied what
    /// was committed before it stopped, or after `recovery` when no leader
    /// can be reached (it then serves what it has).
    pub async fn start(
        dir: &Path,
        listener: Option<compio::net::TcpListener>,
        settings: QuorumSettings,
        publisher: Publisher,
        recovery: Duration,
    ) -> Result<Self, String> {
        let log = store::LogStore::open(dir).map_err(|e| format!("metadata log in {}: {e}", dir.display()))?;
        let pristine = log.is_pristine();
        let machine = Machine::open(dir, settings.node_id as i32, publisher)
            .map_err(|e| format!("metadata snapshot in {}: {e}", dir.display()))?;
        let stored = log.last_membership().or_else(|| {
            let st = machine.state.borrow();
            let m = &st.membership;
            m.log_id()
                .is_some()
                .then(|| m.nodes().map(|(id, n)| (*id, n.addr.clone())).collect())
        });
        if let Some(stored) = stored
            && stored != settings.voters
        {
            return Err(format!(
                "the data directory belongs to a controller quorum of voters {}, but controller.quorum.voters says {}",
                show_voters(&stored),
                show_voters(&settings.voters)
            ));
        }
        let config = Arc::new(raft_config(&settings)?);
        let raft = Raft::new(
            settings.node_id,
            config,
            net::Peers(settings.transport.clone()),
            log,
            machine.clone(),
        )
        .await
        .map_err(|e| format!("starting the controller quorum: {e}"))?;
        let metrics = raft.metrics();
        let _ = machine.leader_now.set(Box::new(move || {
            use openraft::async_runtime::WatchReceiver;
            metrics.borrow_watched().current_leader
        }));
        let nodes: BTreeMap<u64, BasicNode> = settings
            .voters
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        // Only a pristine node forms the quorum; forming it again is
        // refused by the library and changes nothing.
        if pristine && let Err(e) = raft.initialize(nodes).await {
            tracing::debug!(error = %e, "forming the controller quorum");
        }
        let heartbeats = Heartbeats::default();
        if let Some(listener) = listener {
            compio::runtime::spawn(net::serve(
                listener,
                raft.clone(),
                machine.clone(),
                heartbeats.clone(),
                settings.transport.clone(),
            ))
            .detach();
        }
        if let Err(e) = raft.wait_for_recovery(Some(recovery)).await {
            tracing::warn!(error = %e, "no controller leader within {recovery:?}; serving the metadata this node has");
        }
        machine.live.set(true);
        Ok(Self {
            raft,
            machine,
            settings,
            heartbeats,
        })
    }

    /// This node's id in the quorum.
    pub fn node_id(&self) -> u64 {
        self.settings.node_id
    }

    /// The transport address of voter `id`.
    pub fn address_of(&self, id: u64) -> Option<&str> {
        self.settings.voters.get(&id).map(String::as_str)
    }

    /// The snapshot shards read, with the controller id.
    pub fn snapshot(&self) -> crate::meta::Snapshot {
        self.machine.snapshot()
    }
}

impl Quorum for RaftQuorum {
    async fn write(&self, command: Command) -> Result<Reply, QuorumError> {
        let ttl = self.settings.write_timeout;
        let attempt = compio::runtime::time::timeout(ttl, self.raft.client_write(command.clone())).await;
        let err = match attempt {
            Ok(Ok(r)) => return Ok(r.data),
            Ok(Err(e)) => e,
            Err(_) => return Err(QuorumError::TimedOut(format!("no answer within {ttl:?}"))),
        };
        let Some(forward) = err.forward_to_leader() else {
            return Err(QuorumError::Unavailable(err.to_string()));
        };
        if command.leader_only {
            return Err(QuorumError::NoLeader("this node no longer leads the quorum".into()));
        }
        let Some(node) = forward.leader_node.clone() else {
            return Err(QuorumError::NoLeader("no leader is elected".into()));
        };
        let mut peer = net::Peer::new(node.addr, self.settings.transport.clone());
        let reply = peer.write(command, ttl).await.map_err(QuorumError::NoLeader)?;
        // Answer once this node has applied the entry too (and so installed
        // it on its shards), as the leader does before it answers.
        self.raft
            .wait(Some(ttl))
            .applied_index_at_least(Some(reply.applied_index), "a forwarded write applied here")
            .await
            .map_err(|e| QuorumError::TimedOut(format!("the change did not reach this node: {e}")))?;
        Ok(reply)
    }

    fn state(&self) -> Ref<'_, MachineState> {
        self.machine.state.borrow()
    }

    fn leader(&self) -> Option<u64> {
        self.machine.leader()
    }
}

/// The quorum a node takes part in: as a voter, or as an observer
/// (`process.roles=broker`).
#[derive(Debug, Clone)]
pub enum AnyQuorum {
    Voter(RaftQuorum),
    Observer(ObserverQuorum),
}

impl AnyQuorum {
    /// Checks in the background whether `broker`'s process is gone (its
    /// address refuses connections) and records it in the heartbeats'
    /// [`Liveness::gone`]; at most one check per broker at a time, and one
    /// per `every`. Only voters check (only a voter leads).
    pub fn probe(&self, broker: i32, epoch: i64, every: Duration) {
        let Self::Voter(q) = self else { return };
        {
            let mut l = q.heartbeats.borrow_mut();
            if l.probed
                .get(&broker)
                .is_some_and(|(t, running)| *running || t.elapsed() < every)
            {
                return;
            }
            l.probed.insert(broker, (Instant::now(), true));
        }
        let (machine, heartbeats) = (q.machine.clone(), q.heartbeats.clone());
        compio::runtime::spawn(async move {
            net::probe_gone(&machine, &heartbeats, broker, epoch).await;
            if let Some((_, running)) = heartbeats.borrow_mut().probed.get_mut(&broker) {
                *running = false;
            }
        })
        .detach();
    }

    pub fn node_id(&self) -> u64 {
        match self {
            Self::Voter(q) => q.node_id(),
            Self::Observer(q) => q.node_id(),
        }
    }

    pub fn address_of(&self, id: u64) -> Option<&str> {
        match self {
            Self::Voter(q) => q.address_of(id),
            Self::Observer(q) => q.address_of(id),
        }
    }

    pub fn snapshot(&self) -> crate::meta::Snapshot {
        match self {
            Self::Voter(q) => q.snapshot(),
            Self::Observer(q) => q.snapshot(),
        }
    }

    /// Heartbeats received while leading (always empty on an observer).
    pub fn heartbeats(&self) -> &Heartbeats {
        match self {
            Self::Voter(q) => &q.heartbeats,
            Self::Observer(q) => &q.heartbeats,
        }
    }
}

impl Quorum for AnyQuorum {
    async fn write(&self, command: Command) -> Result<Reply, QuorumError> {
        match self {
            Self::Voter(q) => q.write(command).await,
            Self::Observer(q) => q.write(command).await,
        }
    }

    fn state(&self) -> Ref<'_, MachineState> {
        match self {
            Self::Voter(q) => q.state(),
            Self::Observer(q) => q.state(),
        }
    }

    fn leader(&self) -> Option<u64> {
        match self {
            Self::Voter(q) => q.leader(),
            Self::Observer(q) => q.leader(),
        }
    }
}
