//! Start-up and shut-down, in one place: binds one SO_REUSEPORT listener per
//! shard, starts each shard on its own pinned thread with its own io_uring
//! runtime, opens each shard's partitions, and stops them in two phases
//! (stop reading requests and drain connections; then flush and close the
//! logs).

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use crate::config::BrokerConfig;
use crate::meta::Snapshot;
use crate::node::{Common, Job, Services, Shard};
use crate::shard::ShardId;
use crate::util::Flag;

/// Why the broker did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("data directory {0} is in use by another broker")]
    Locked(PathBuf),
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("sluice.admin.listen {addr}: {source}")]
    AdminListen { addr: SocketAddr, source: std::io::Error },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("shard {shard}: {reason}")]
    Shard { shard: usize, reason: String },
}

/// A running broker. Dropping it without [`Broker::shutdown`] leaves the
/// shard threads running until the process exits.
#[derive(Debug)]
pub struct Broker {
    /// The inter-broker listener's address.
    addr: SocketAddr,
    /// Every listener's name and address.
    addrs: Vec<(String, SocketAddr)>,
    common: Arc<Common>,
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Second descriptors of the shards' listening sockets, so shutdown can
    /// stop them listening from this thread even when a shard is stuck.
    listeners: Vec<std::net::TcpListener>,
    /// The operators' HTTP listener, when on.
    ops: Option<crate::ops::OpsServer>,
    lock: File,
}

/// Raises the soft limit on open files to the hard limit, logs both, and
/// returns the soft limit now in force.
fn raise_open_file_limit() -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let before = getrlimit(Resource::Nofile);
    let (soft, hard) = (before.current.unwrap_or(u64::MAX), before.maximum.unwrap_or(u64::MAX));
    let mut now = soft;
    if soft < hard {
        let raised = rustix::process::Rlimit {
            current: before.maximum,
            maximum: before.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => now = hard,
            Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
        }
    }
    tracing::info!(soft_before = soft, soft = now, hard, "open-file limit");
    usize::try_from(now).unwrap_or(usize::MAX).min(1 << 24)
}

/// Written into the data directory as the last step of a clean shutdown,
/// once every log is closed and synced, and removed (durably) at the next
/// start before anything is written: its presence at start means the
/// previous process lost no unsynced write.
pub const CLEAN_SHUTDOWN_MARKER: &str = ".clean-shutdown";

/// Reads and removes the clean-shutdown marker; true when it was there.
fn take_clean_marker(dir: &std::path::Path) -> Result<bool, StartError> {
    let err = |source| StartError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    match std::fs::remove_file(dir.join(CLEAN_SHUTDOWN_MARKER)) {
        Ok(()) => {
            File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(err(e)),
    }
}

/// Writes the clean-shutdown marker, synced with its directory entry.
fn write_clean_marker(dir: &std::path::Path) -> std::io::Result<()> {
    let f = File::create(dir.join(CLEAN_SHUTDOWN_MARKER))?;
    f.sync_all()?;
    File::open(dir)?.sync_all()
}

fn lock_data_dir(dir: &std::path::Path) -> Result<File, StartError> {
    let err = |source| StartError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let f = File::create(dir.join(".lock")).map_err(err)?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(|_| StartError::Locked(dir.to_path_buf()))?;
    Ok(f)
}

impl Broker {
    /// Starts the broker; returns once every shard listens and has opened
    /// its partitions. `config` must have been through
    /// [`BrokerConfig::finish`].
    pub fn start(config: BrokerConfig) -> Result<Self, StartError> {
        let lock = lock_data_dir(&config.data_dir)?;
        let clean_start = take_clean_marker(&config.data_dir)?;
        if config.unsafe_ack_before_replication {
            tracing::warn!(
                "sluice.unsafe.ack.before.replication is set: acks=all is answered before the ISR has the batch, \
                 and a leader's failure loses acknowledged writes (a setting for testing the history checker)"
            );
        }
        let mut config = config;
        if config.max_open_files == 0 {
            config.max_open_files = raise_open_file_limit() / 2;
        }
        let shards = config.shard_count();
        // For each listener, bind the first shard's socket (port 0 picks
        // one), then the other shards' to the same address.
        let mut per_shard: Vec<Vec<(usize, std::net::TcpListener)>> = (0..shards).map(|_| Vec::new()).collect();
        let mut listener_handles = Vec::new();
        let mut addrs = Vec::new();
        let (shard_listeners, port_offset) = (config.shard_listeners, u32::from(config.shard_port_offset));
        for (index, l) in config.listeners.iter_mut().enumerate() {
            let asked_port = l.addr.port();
            let first = crate::base::sockets::listen_socket(l.addr, true)
                .map_err(|source| StartError::Listen { addr: l.addr, source })?;
            let addr = first
                .local_addr()
                .map_err(|source| StartError::Listen { addr: l.addr, source })?;
            // Advertise the port actually bound when the listen port was 0
            // and no other port was asked for.
            if l.advertised_port == l.addr.port() {
                l.advertised_port = addr.port();
            }
            l.addr = addr;
            addrs.push((l.name.clone(), addr));
            let mut socket = Some(first);
            for shard in &mut per_shard {
                let s = match socket.take() {
                    Some(s) => s,
                    None => crate::base::sockets::listen_socket(addr, true)
                        .map_err(|source| StartError::Listen { addr, source })?,
                };
                listener_handles.push(s.try_clone().map_err(|source| StartError::Listen { addr, source })?);
                shard.push((index, s));
            }
            // Each shard's own endpoint: a socket only that shard accepts on.
            if shard_listeners {
                for (i, shard) in per_shard.iter_mut().enumerate() {
                    let port = if asked_port == 0 {
                        0
                    } else {
                        let p = u32::from(addr.port()) + port_offset + i as u32;
                        u16::try_from(p).map_err(|_| StartError::Listen {
                            addr,
                            source: std::io::Error::other("a shard port above 65535"),
                        })?
                    };
                    let want = SocketAddr::new(addr.ip(), port);
                    let s = crate::base::sockets::listen_socket(want, false)
                        .map_err(|source| StartError::Listen { addr: want, source })?;
                    let bound = s
                        .local_addr()
                        .map_err(|source| StartError::Listen { addr: want, source })?;
                    let advertised = if port == 0 {
                        bound.port()
                    } else {
                        let p = u32::from(l.advertised_port) + port_offset + i as u32;
                        u16::try_from(p).unwrap_or(bound.port())
                    };
                    l.shard_ports.push(advertised);
                    listener_handles.push(
                        s.try_clone()
                            .map_err(|source| StartError::Listen { addr: bound, source })?,
                    );
                    shard.push((index, s));
                }
            }
        }
        let addr = addrs[0].1;
        let tls = if config.listeners.iter().any(|l| l.protocol.tls()) {
            Some(crate::security::tls::server_config(&config.security.ssl).map_err(StartError::Tls)?)
        } else {
            None
        };
        let peers = crate::protocol::peer::PeerSecurity::from_config(&config).map_err(StartError::Tls)?;
        let mut common = Common::new(config, shards, clean_start);
        common.tls = tls;
        common.peers = peers;
        let common = Arc::new(common);
        // The operators' listener answers /health while the shards start.
        let ops = match common.config.admin_listen {
            None => None,
            Some(addr) => match crate::ops::OpsServer::start(addr, common.clone()) {
                Ok(s) => Some(s),
                Err(source) if !common.config.admin_listen_chosen => {
                    tracing::warn!(%addr, error = %source, "the default admin HTTP address is taken: no /metrics, /health or /ready (set sluice.admin.listen)");
                    None
                }
                Err(source) => return Err(StartError::AdminListen { addr, source }),
            },
        };
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (ready_tx, ready_rx) = mpsc::channel::<(usize, Result<(), String>)>();
        let mut threads = Vec::with_capacity(shards);
        for (i, listener) in per_shard.into_iter().enumerate() {
            let common = common.clone();
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            let ready = ready_tx.clone();
            let t = std::thread::Builder::new()
                .name(format!("sluice-shard-{i}"))
                .spawn(move || shard_thread(ShardId(i), common, listener, core, ready))
                .map_err(|e| StartError::Shard {
                    shard: i,
                    reason: e.to_string(),
                })?;
            threads.push(t);
        }
        drop(ready_tx);
        let broker = Self {
            addr,
            addrs,
            common,
            threads,
            listeners: listener_handles,
            ops,
            lock,
        };
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((shard, Err(reason))) => {
                    broker.shutdown();
                    return Err(StartError::Shard { shard, reason });
                }
                Err(_) => {
                    broker.shutdown();
                    return Err(StartError::Shard {
                        shard: 0,
                        reason: "a shard thread exited during start-up".into(),
                    });
                }
            }
        }
        broker.common.started.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(broker)
    }

    /// The operators' HTTP listener's address, when it is on.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.ops.as_ref().map(crate::ops::OpsServer::local_addr)
    }

    /// The address of the inter-broker listener (the first one unless
    /// `inter.broker.listener.name` names another), with the real port
    /// when the config asked for port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the listener named `name` (upper case).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// Whether this start found the previous process's clean-shutdown
    /// marker ([`CLEAN_SHUTDOWN_MARKER`]).
    pub fn clean_start(&self) -> bool {
        self.common.clean_start
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.common.config
    }

    /// Queues `job` on shard `shard`'s thread (it runs between that shard's
    /// tasks). For tests and tools that need to act on a shard from outside.
    pub fn run_on_shard(&self, shard: usize, job: Job) {
        self.common.inboxes[shard].push(job);
    }

    /// Runs `job` on every shard and waits (up to `timeout`) for each to
    /// report completion.
    fn on_every_shard(&self, timeout: Duration, job: fn(Rc<Shard>, mpsc::Sender<()>)) -> bool {
        let (tx, rx) = mpsc::channel();
        for inbox in self.common.inboxes.iter() {
            let tx = tx.clone();
            inbox.push(Box::new(move |shard: &Rc<Shard>| job(shard.clone(), tx)));
        }
        drop(tx);
        let deadline = std::time::Instant::now() + timeout;
        for _ in 0..self.common.inboxes.len() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if rx.recv_timeout(left).is_err() {
                return false;
            }
        }
        true
    }

    /// Stops accepting, lets connections finish their in-flight requests,
    /// then flushes and closes every partition and joins the shard threads.
    ///
    /// The listeners stop first, from this thread, so no connection can
    /// reach this broker once shutdown has begun, even on a shard that no
    /// longer runs its tasks. Draining waits up to `sluice.shutdown.drain.ms`
    /// and closing up to `sluice.shutdown.close.ms`; a shard that has not finished by then is left behind: this
    /// returns [`Stopped::Abandoned`] without joining it and keeps the data
    /// directory locked until the process exits, which the caller should
    /// then do.
    pub fn shutdown(mut self) -> Stopped {
        // /ready answers 503 from here on; /health until the end.
        self.common
            .shutting_down
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let ops = self.ops.take();
        // In a cluster, hand leadership over first (bounded: without a
        // quorum the broker stops anyway and is fenced by its session).
        if !self.common.config.quorum_voters.is_empty() {
            let (tx, rx) = mpsc::channel::<bool>();
            self.common.inboxes[0].push(Box::new(move |shard: &Rc<Shard>| {
                let shard = shard.clone();
                compio::runtime::spawn(async move {
                    let mut moved = false;
                    if let Some(c) = shard.services.controller() {
                        moved = compio::runtime::time::timeout(CONTROLLED_SHUTDOWN_WAIT, c.leave(&shard))
                            .await
                            .unwrap_or(false);
                    }
                    let _ = tx.send(moved);
                })
                .detach();
            }));
            match rx.recv_timeout(CONTROLLED_SHUTDOWN_WAIT + Duration::from_secs(1)) {
                // Leadership moved: keep answering a moment, so a client
                // still sending here is told where its partitions went
                // (NOT_LEADER_OR_FOLLOWER naming the new leader) rather
                // than finding its connection closed and waiting for its
                // next metadata refresh.
                Ok(true) => std::thread::sleep(Duration::from_millis(self.common.config.shutdown_linger_ms)),
                Ok(false) => {}
                Err(_) => tracing::warn!("controlled shutdown did not finish; stopping anyway"),
            }
        }
        for l in &self.listeners {
            // On Linux, shutting down a listening socket takes it out of
            // the SO_REUSEPORT group and fails its pending accepts.
            if let Err(e) = rustix::net::shutdown(l, rustix::net::Shutdown::Read) {
                tracing::warn!(error = %e, "stopping a listener");
            }
        }
        let drain_timeout = Duration::from_millis(self.common.config.shutdown_drain_ms);
        let close_timeout = Duration::from_millis(self.common.config.shutdown_close_ms);
        let drained = self.on_every_shard(drain_timeout, |shard, done| {
            shard.stopping.set();
            compio::runtime::spawn(async move {
                while shard.live_connections.get() > 0 {
                    shard.connections_changed.next().await;
                }
                let _ = done.send(());
            })
            .detach();
        });
        if !drained {
            tracing::warn!("connections still open after {drain_timeout:?}; closing logs anyway");
        }
        let closed = self.on_every_shard(close_timeout, |shard, done| {
            compio::runtime::spawn(async move {
                shard.close_partitions().await;
                EXIT.with(|f| f.set());
                let _ = done.send(());
            })
            .detach();
        });
        if !closed {
            tracing::error!("a shard did not close its logs within {close_timeout:?}; abandoning it");
            // The lock stays held until the process exits, so no other
            // broker opens the directory under a shard that may still write.
            std::mem::forget(self.lock);
            if let Some(o) = ops {
                o.stop();
            }
            return Stopped::Abandoned;
        }
        for t in self.threads {
            let _ = t.join();
        }
        if !self.common.close_failed.load(std::sync::atomic::Ordering::Relaxed)
            && let Err(e) = write_clean_marker(&self.common.config.data_dir)
        {
            tracing::warn!(error = %e, "writing the clean-shutdown marker");
        }
        if let Some(o) = ops {
            o.stop();
        }
        Stopped::Clean
    }
}

/// How [`Broker::shutdown`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every shard closed its logs and its thread ended.
    Clean,
    /// A shard did not finish in time; its thread still exists.
    Abandoned,
}

/// How long a clean shutdown waits for the controller to move this
/// broker's leadership away.
const CONTROLLED_SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

thread_local! {
    /// Set on a shard thread when its runtime should return.
    static EXIT: Rc<Flag> = Rc::new(Flag::default());
}

fn shard_thread(
    id: ShardId,
    common: Arc<Common>,
    listeners: Vec<(usize, std::net::TcpListener)>,
    core: Option<core_affinity::CoreId>,
    ready: mpsc::Sender<(usize, Result<(), String>)>,
) {
    if let Some(core) = core
        && !core_affinity::set_for_current(core)
    {
        tracing::warn!(shard = id.0, "could not pin the shard thread to its core");
    }
    let runtime = match compio::runtime::RuntimeBuilder::new().build() {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send((id.0, Err(format!("io_uring runtime: {e}"))));
            return;
        }
    };
    runtime.block_on(async move {
        let shard = Shard::new(id, common, Arc::new(Snapshot::default()), Services::default());
        compio::runtime::spawn(shard.clone().run_inbox()).detach();
        let mut sockets = Vec::with_capacity(listeners.len());
        for (index, l) in listeners {
            match compio::net::TcpListener::from_std(l) {
                Ok(l) => sockets.push((index, l)),
                Err(e) => {
                    let _ = ready.send((id.0, Err(format!("listener: {e}"))));
                    return;
                }
            }
        }
        // Shard 0 starts the controller, which installs the recovered
        // metadata on every shard and registers the broker; the others
        // wait for both. No shard accepts clients before that: an
        // unregistered broker's image has no live broker, not even itself.
        let exit = EXIT.with(Rc::clone);
        let started = if id == ShardId(0) {
            match crate::util::race(crate::controller::Controller::start(&shard), exit.wait()).await {
                Ok(r) => {
                    shard
                        .common
                        .controller_started
                        .store(r.is_ok(), std::sync::atomic::Ordering::Release);
                    r
                }
                Err(()) => return,
            }
        } else {
            if crate::util::race(shard.installed.wait(), exit.wait()).await.is_err() {
                return;
            }
            // Start-up only: a short poll of shard 0's flag.
            while !shard
                .common
                .controller_started
                .load(std::sync::atomic::Ordering::Acquire)
            {
                if exit.is_set() {
                    return;
                }
                compio::runtime::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            Ok(())
        };
        let ok = started.is_ok();
        let _ = ready.send((id.0, started));
        if ok {
            compio::runtime::spawn(crate::node::tasks::run(shard.clone())).detach();
            compio::runtime::spawn(crate::node::tasks::cleaner::run(shard.clone())).detach();
            for (index, socket) in sockets {
                compio::runtime::spawn(crate::net::accept_loop(shard.clone(), index, socket)).detach();
            }
        }
        exit.wait().await;
    });
}
