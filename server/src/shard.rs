//! Shards: one pinned thread per core, each with its own io_uring runtime,
//! its own connections and the partitions the placement table gives it.
//!
//! Cross-shard work travels only as jobs through the target shard's
//! [`Inbox`]: a closure that runs on the owner's thread with the owner's
//! [`Shard`]. [`Shard::submit_to`] sends one and awaits its result. No lock
//! guards partition state; only the shard that owns a partition touches it.
//!
//! This is the shard *core*: the partition table, the metadata snapshot,
//! the inbox and the shard's budgets. The services a node runs on each
//! shard (the controller, the group coordinator, the replica fetchers) are
//! its `S` ([`Services`]), defined above it in `node`; the core tells them
//! what changed through that trait and never names them.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::task::Poll;

use atomic_waker::AtomicWaker;
use crossbeam_queue::SegQueue;
use sluice_engine::{Env, Log, LogConfig, OpenFiles};

use crate::config::BrokerConfig;
use crate::meta::{self, Snapshot, TopicMeta};
use crate::partition::{Partition, RoleChange};
use crate::producer_state::ProducerStates;
use crate::util::{Budget, Changed, Flag};

/// Index of a shard, `0..shard_count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

/// The shard that owns a partition: the topic's hash picks the shard of
/// partition 0 and the partitions follow round-robin, so a topic's
/// partitions spread evenly over the shards. Every shard computes the same
/// answer from the same inputs; this is the placement table.
pub fn owner_of(topic: &str, partition: i32, shards: usize) -> ShardId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let shards = shards.max(1) as u64;
    ShardId(((h % shards + u64::from(partition.unsigned_abs())) % shards) as usize)
}

/// What a node runs on each shard besides its partitions (the controller,
/// the group coordinator, the replica fetchers: `node::Services`). The
/// shard core owns one and tells it what changed; it never names the
/// services themselves. One per shard, on the shard's thread.
pub trait Services: std::fmt::Debug + Sized + 'static {
    /// A replica's role changed: an installed snapshot made it leader,
    /// follower of another leader, or offline; or a reopened replica took
    /// up its role again.
    fn role_changed(shard: &Rc<Shard<Self>>, p: &Rc<Partition>, change: RoleChange);
    /// A partition is closing for good: its topic was deleted, or its
    /// creation undone.
    fn closing(shard: &Shard<Self>, p: &Partition);
}

/// A shard with no services (the core's own tests).
impl Services for () {
    fn role_changed(_: &Rc<Shard<Self>>, _: &Rc<Partition>, _: RoleChange) {}
    fn closing(_: &Shard<Self>, _: &Partition) {}
}

/// Work for a shard: runs on the shard's thread, with the shard.
pub type Job<S> = Box<dyn FnOnce(&Rc<Shard<S>>) + Send>;

/// A shard's mailbox: a lock-free MPSC queue plus the waker of the shard's
/// inbox task. Shared by all shards (and the main thread) behind an `Arc`.
pub struct Inbox<S> {
    queue: SegQueue<Job<S>>,
    waker: AtomicWaker,
}

impl<S> Default for Inbox<S> {
    fn default() -> Self {
        Self {
            queue: SegQueue::new(),
            waker: AtomicWaker::new(),
        }
    }
}

impl<S> std::fmt::Debug for Inbox<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox").field("queued", &self.queue.len()).finish()
    }
}

impl<S> Inbox<S> {
    pub fn push(&self, job: Job<S>) {
        self.queue.push(job);
        self.waker.wake();
    }

    async fn next(&self) -> Job<S> {
        std::future::poll_fn(|cx| {
            if let Some(job) = self.queue.pop() {
                return Poll::Ready(job);
            }
            self.waker.register(cx.waker());
            match self.queue.pop() {
                Some(job) => Poll::Ready(job),
                None => Poll::Pending,
            }
        })
        .await
    }
}

/// Where the answer of [`Shard::call`] or [`Shard::run_on`] comes from.
enum Answer<H, T> {
    /// Computed on this shard (a value, or a future to await here).
    Here(H),
    /// Sent by another shard.
    There(futures_channel::oneshot::Receiver<T>),
}

/// A request's items gathered per owner shard, so that each owner gets
/// one job carrying all of its items.
#[derive(Debug)]
pub struct ByOwner<T>(Vec<Vec<T>>);

impl<T> ByOwner<T> {
    pub fn new(shards: usize) -> Self {
        Self((0..shards).map(|_| Vec::new()).collect())
    }

    pub fn push(&mut self, owner: ShardId, item: T) {
        self.0[owner.0].push(item);
    }

    /// Each owner with its items so far (owners without any included).
    pub fn owners(&self) -> impl Iterator<Item = (ShardId, &[T])> {
        self.0
            .iter()
            .enumerate()
            .map(|(owner, items)| (ShardId(owner), items.as_slice()))
    }

    pub fn items_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.0.iter_mut().flatten()
    }

    /// Keeps the items `keep` says yes to, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        for items in &mut self.0 {
            items.retain(&mut keep);
        }
    }

    /// The owners that got items, each with its items in push order.
    pub fn into_jobs(self) -> impl Iterator<Item = (ShardId, Vec<T>)> {
        self.0
            .into_iter()
            .enumerate()
            .filter(|(_, items)| !items.is_empty())
            .map(|(owner, items)| (ShardId(owner), items))
    }
}

/// The owner shard went away (broker shutting down) before answering.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("shard stopped before answering")]
pub struct ShardGone;

/// A shard's partitions: topic name -> slot per partition index.
type PartitionTable = HashMap<Arc<str>, Vec<Option<Rc<Partition>>>>;

/// Broker-wide state every shard shares: immutable config and counters
/// that are atomics.
#[derive(Debug)]
pub struct Common<S> {
    pub config: Arc<BrokerConfig>,
    pub inboxes: Arc<[Inbox<S>]>,
    pub connections: AtomicUsize,
    /// This process's incarnation: the controller fences the broker's
    /// earlier incarnations when this one registers, and the shards lead
    /// nothing until the image shows it registered.
    pub incarnation: uuid::Uuid,
    /// Every shard has started and listens (set once by `Broker::start`).
    pub started: std::sync::atomic::AtomicBool,
    /// Shard 0 has started the controller (and, unless no quorum leader
    /// answered in time, registered the broker): the other shards accept
    /// clients from then on.
    pub controller_started: std::sync::atomic::AtomicBool,
    /// The image shows this incarnation registered and unfenced.
    pub registered: std::sync::atomic::AtomicBool,
    /// Shutdown has begun.
    pub shutting_down: std::sync::atomic::AtomicBool,
    /// The previous process closed this data directory cleanly (see
    /// `broker::CLEAN_SHUTDOWN_MARKER`): its logs lost nothing.
    pub clean_start: bool,
    /// A shard failed to close a log at shutdown: no clean-shutdown marker.
    pub close_failed: std::sync::atomic::AtomicBool,
    /// The TLS server config of the SSL and SASL_SSL listeners.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// How this broker connects to the others' inter-broker listener.
    pub peers: crate::protocol::peer::PeerSecurity,
}

impl<S> Common<S> {
    /// The shared state of a broker of `shards` shards, not yet started.
    pub fn new(config: BrokerConfig, shards: usize, clean_start: bool) -> Self {
        Self {
            config: Arc::new(config),
            inboxes: (0..shards).map(|_| Inbox::default()).collect(),
            connections: AtomicUsize::new(0),
            incarnation: uuid::Uuid::new_v4(),
            started: Default::default(),
            controller_started: Default::default(),
            registered: Default::default(),
            shutting_down: Default::default(),
            clean_start,
            close_failed: Default::default(),
            tls: None,
            peers: Default::default(),
        }
    }

    /// Ready for clients: started, registered and unfenced, not stopping.
    pub fn ready(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.started.load(Relaxed) && self.registered.load(Relaxed) && !self.shutting_down.load(Relaxed)
    }
}

/// One per shard thread. Owns the shard's connections (through their
/// tasks), its partitions and the node's services on it (`services`).
#[derive(Debug)]
pub struct Shard<S> {
    pub id: ShardId,
    pub common: Arc<Common<S>>,
    /// The newest metadata snapshot this shard has installed.
    meta: RefCell<Arc<Snapshot>>,
    /// Held while a snapshot is installed (or a topic's data is freed for
    /// a deletion): installs run one at a time, in the order they reach
    /// the shard.
    installing: futures_util::lock::Mutex<()>,
    partitions: RefCell<PartitionTable>,
    /// Topics with a partition this shard failed to open: the next install
    /// visits them again.
    failed_opens: RefCell<Vec<Arc<str>>>,
    /// Set once this shard has installed the metadata the controller
    /// recovered at start; it serves clients only after that.
    pub installed: Flag,
    /// Request bytes in flight on this shard's connections.
    pub budget: Rc<Budget>,
    /// Set when the broker stops accepting and reading requests.
    pub stopping: Flag,
    pub live_connections: Cell<usize>,
    pub connections_changed: Changed,
    /// What the node runs on this shard besides its partitions.
    pub services: S,
    /// This shard's view of the data directory's free space.
    pub disk: crate::disk::DiskSpace,
    /// This shard's counters for `/metrics`.
    pub metrics: crate::base::counters::ShardMetrics,
    /// Its logs' write, fdatasync and group-commit histograms.
    pub io_histograms: Rc<sluice_engine::stats::IoHistograms>,
    /// Staging buffers for the follower logs' direct writes (ADR 0017);
    /// idle ones are kept up to `replica.fetch.response.max.bytes`.
    direct_buffers: Rc<sluice_engine::DirectBuffers>,
    /// Files this shard's logs hold open, and the most they may hold:
    /// `sluice.max.open.files` over the shards.
    files: Rc<OpenFiles>,
    files_budget: usize,
    /// Bumped whenever partitions open, close or change config, so
    /// housekeeping knows to rebuild its short lists.
    layout_version: Cell<u64>,
    use_clock: Cell<u64>,
    releasing_files: Cell<bool>,
    me: Weak<Shard<S>>,
}

impl<S: Services> Shard<S> {
    pub fn new(id: ShardId, common: Arc<Common<S>>, snapshot: Arc<Snapshot>, services: S) -> Rc<Self> {
        let budget = Budget::new(common.config.queued_max_request_bytes);
        let files_budget = (common.config.max_open_files / common.inboxes.len().max(1)).max(16);
        let disk = crate::disk::DiskSpace::new(common.config.data_dir.clone(), common.config.storage_min_free_bytes);
        // Idle staging buffers kept: one follower fetch answer's worth.
        let direct_buffers = sluice_engine::DirectBuffers::new(
            usize::try_from(common.config.replica_fetch_response_max_bytes).unwrap_or(10 << 20),
        );
        Rc::new_cyclic(|me| Self {
            id,
            common,
            meta: RefCell::new(snapshot),
            installing: futures_util::lock::Mutex::new(()),
            partitions: RefCell::new(HashMap::new()),
            failed_opens: RefCell::default(),
            installed: Flag::default(),
            budget,
            stopping: Flag::default(),
            live_connections: Cell::new(0),
            connections_changed: Changed::default(),
            services,
            disk,
            metrics: Default::default(),
            io_histograms: Default::default(),
            direct_buffers,
            files: OpenFiles::new(),
            files_budget,
            layout_version: Cell::new(0),
            use_clock: Cell::new(0),
            releasing_files: Cell::new(false),
            me: me.clone(),
        })
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.common.config
    }

    pub fn shard_count(&self) -> usize {
        self.common.inboxes.len()
    }

    /// Whether the previous process closed the data directory cleanly
    /// (see [`Common::clean_start`]).
    pub fn clean_start(&self) -> bool {
        self.common.clean_start
    }

    /// This process's incarnation (see [`Common::incarnation`]).
    pub fn incarnation(&self) -> uuid::Uuid {
        self.common.incarnation
    }

    pub fn meta(&self) -> Arc<Snapshot> {
        self.meta.borrow().clone()
    }

    pub fn owner_of(&self, topic: &str, partition: i32) -> ShardId {
        owner_of(topic, partition, self.shard_count())
    }

    /// A partition this shard owns, if open.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Rc<Partition>> {
        let map = self.partitions.borrow();
        let slots = map.get(topic)?;
        usize::try_from(index)
            .ok()
            .and_then(|i| slots.get(i))
            .cloned()
            .flatten()
    }

    /// Marks `p` as just used, and starts closing the files of the least
    /// recently used partitions when this shard's logs hold more files than
    /// their budget.
    pub fn touch(&self, p: &Partition) {
        let now = self.use_clock.get() + 1;
        self.use_clock.set(now);
        p.last_used.set(now);
        self.check_files();
    }

    /// Bumped whenever partitions open, close or change config.
    pub fn layout_version(&self) -> u64 {
        self.layout_version.get()
    }

    fn bump_layout(&self) {
        self.layout_version.set(self.layout_version.get() + 1);
    }

    /// Files this shard's logs hold open now.
    pub fn open_files(&self) -> usize {
        self.files.get()
    }

    /// Starts releasing idle partitions' files when this shard's logs
    /// hold more than their budget.
    pub fn check_files(&self) {
        if self.files.get() > self.files_budget && !self.releasing_files.get() {
            self.releasing_files.set(true);
            compio::runtime::spawn(self.rc().release_idle_files()).detach();
        }
    }

    /// Releases the files of idle partitions, least recently used first,
    /// until the shard holds three quarters of its budget.
    async fn release_idle_files(self: Rc<Self>) {
        let target = self.files_budget * 3 / 4;
        let mut parts: Vec<Rc<Partition>> = self
            .owned_partitions()
            .into_iter()
            .filter(|p| p.log.open_files() > 0)
            .collect();
        parts.sort_by_key(|p| p.last_used.get());
        let mut released = 0usize;
        for p in parts {
            if self.files.get() <= target {
                break;
            }
            if p.log.release_files().await {
                released += 1;
            }
        }
        tracing::debug!(
            released,
            open_files = self.files.get(),
            budget = self.files_budget,
            "released idle partitions' files"
        );
        self.releasing_files.set(false);
    }

    pub fn owned_partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().flatten().flatten().cloned().collect()
    }

    fn rc(&self) -> Rc<Shard<S>> {
        // `me` points at the Rc this shard lives in; a `&self` exists only
        // while that Rc does.
        self.me
            .upgrade()
            .unwrap_or_else(|| unreachable!("shard used after drop"))
    }

    /// Runs `f` on shard `target` and returns its result, lazily: nothing
    /// is sent until the returned future is first polled (the form admin
    /// and group work use). Otherwise as [`Shard::run_on`].
    pub async fn submit_to<T, F, Fut>(&self, target: ShardId, f: F) -> Result<T, ShardGone>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard<S>>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        self.run_on(target, move |s| f(s.clone())).await
    }

    /// Runs the synchronous `f` on shard `target` and returns its result:
    /// here and now when `target` is this shard, otherwise inside the
    /// target's inbox loop, with no task spawned there. The job is sent
    /// before this returns (the returned future only waits for the
    /// answer), so work sent by one task reaches each shard in the order
    /// it was sent.
    pub fn call<T, F>(&self, target: ShardId, f: F) -> impl Future<Output = Result<T, ShardGone>> + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Rc<Shard<S>>) -> T + Send + 'static,
    {
        let answer = if target == self.id {
            Answer::Here(f(&self.rc()))
        } else {
            Answer::There(self.send_job(target, move |shard, tx| {
                let _ = tx.send(f(shard));
            }))
        };
        async move {
            match answer {
                Answer::Here(v) => Ok(v),
                Answer::There(rx) => rx.await.map_err(|_| ShardGone),
            }
        }
    }

    /// Like [`Shard::call`], for work that must wait on the target: `f`
    /// runs at once (here, or when the target takes the job from its
    /// inbox) and the future it returns is awaited there, in one task per
    /// call on a remote shard.
    pub fn run_on<T, F, Fut>(&self, target: ShardId, f: F) -> impl Future<Output = Result<T, ShardGone>> + 'static
    where
        T: Send + 'static,
        F: FnOnce(&Rc<Shard<S>>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let answer = if target == self.id {
            Answer::Here(f(&self.rc()))
        } else {
            Answer::There(self.send_job(target, move |shard, tx| {
                let fut = f(shard);
                compio::runtime::spawn(async move {
                    let _ = tx.send(fut.await);
                })
                .detach();
            }))
        };
        async move {
            match answer {
                Answer::Here(fut) => Ok(fut.await),
                Answer::There(rx) => rx.await.map_err(|_| ShardGone),
            }
        }
    }

    /// Pushes `job` to shard `target`'s inbox with the sending half of a
    /// oneshot channel for its answer, and returns the receiving half.
    fn send_job<T: Send + 'static>(
        &self,
        target: ShardId,
        job: impl FnOnce(&Rc<Shard<S>>, futures_channel::oneshot::Sender<T>) + Send + 'static,
    ) -> futures_channel::oneshot::Receiver<T> {
        crate::base::counters::ShardMetrics::bump(&self.metrics.handoffs);
        let (tx, rx) = futures_channel::oneshot::channel();
        self.common.inboxes[target.0].push(Box::new(move |shard: &Rc<Shard<S>>| job(shard, tx)));
        rx
    }

    /// Runs jobs sent to this shard until the shard's runtime stops.
    pub async fn run_inbox(self: Rc<Self>) {
        let inbox = &self.common.inboxes[self.id.0];
        loop {
            let job = inbox.next().await;
            job(&self);
        }
    }

    /// Installs a metadata snapshot and brings this shard's partitions in
    /// line with it: opens partitions it now owns, applies config changes,
    /// closes and removes partitions of deleted topics. Returns the first
    /// error opening a log, after trying all of them.
    ///
    /// Snapshots published from the quorum's applies and from a leader
    /// change can cross on their way to a shard, and an install awaits
    /// opening and removing logs: installs run one at a time, and one made
    /// before the snapshot this shard has is passed over. Going back would
    /// close the partitions of a topic just created and undo leaderships.
    pub async fn install(&self, snapshot: Arc<Snapshot>) -> Result<(), String> {
        let _turn = self.installing.lock().await;
        if snapshot.made < self.meta().made {
            return Ok(());
        }
        // Snapshots are made from one image that only moves forward: one
        // made later never holds an older metadata offset.
        assert!(
            snapshot.version >= self.meta().version,
            "shard {}: a snapshot at metadata offset {} made after the installed one at {}",
            self.id.0,
            snapshot.version,
            self.meta().version
        );
        let old = self.meta.replace(snapshot.clone());
        self.bump_layout();
        // Only what changed is visited (a topic's metadata is replaced as a
        // whole when it changes), plus topics whose partitions failed to
        // open before: the cost of an install is the size of the change.
        let mut changed = snapshot.changed_topics(&old);
        changed.extend(self.failed_opens.take());
        changed.sort_unstable();
        changed.dedup();
        let mut first_error = None;
        for name in &changed {
            self.install_topic(&old, &snapshot, name, &mut first_error).await;
        }
        // This broker's own registration decides every leadership it holds.
        let me = self.config().node_id;
        if old.brokers.get(&me) != snapshot.brokers.get(&me) {
            self.apply_roles(&snapshot, None);
        } else {
            self.apply_roles(&snapshot, Some(&changed));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Brings this shard's partitions of topic `name` in line with
    /// `snapshot`: closes and removes them when the topic is gone (or was
    /// recreated with a new id) or a partition creation was undone, opens
    /// those it now owns, applies config changes.
    async fn install_topic(
        &self,
        old: &Snapshot,
        snapshot: &Snapshot,
        name: &Arc<str>,
        first_error: &mut Option<String>,
    ) {
        let before = old.topic(name).map(|t| t.id);
        let now = snapshot.topic(name);
        if before.is_some() && now.map(|t| t.id) != before {
            self.remove_partitions(name).await;
        }
        let Some(topic) = now else {
            return;
        };
        // Fewer partitions than this shard has open: a CreatePartitions
        // that was undone.
        let extra: Vec<Rc<Partition>> = self
            .partitions
            .borrow_mut()
            .get_mut(name)
            .map(|slots| {
                let keep = usize::try_from(topic.partitions).unwrap_or(0).min(slots.len());
                slots.drain(keep..).flatten().collect()
            })
            .unwrap_or_default();
        for p in extra {
            S::closing(self, &p);
            let _ = p.log.close().await;
            if let Err(e) = std::fs::remove_dir_all(p.log.dir()) {
                tracing::warn!(dir = %p.log.dir().display(), error = %e, "removing an undone partition");
            }
        }
        let config = meta::log_config(self.config(), topic);
        let shards = self.shard_count();
        for index in 0..topic.partitions {
            if owner_of(&topic.name, index, shards) != self.id || !topic.has_replica(index, self.config().node_id) {
                continue;
            }
            if let Some(p) = self.partition(&topic.name, index) {
                if p.log.config() != config
                    && let Err(e) = p.log.set_config(config.clone())
                {
                    first_error.get_or_insert(format!("{}-{index}: {e}", topic.name));
                }
                continue;
            }
            match self.open_partition(topic, index, config.clone()).await {
                Ok(p) => {
                    // Replays on open read the log; a start-up or a
                    // creation of many partitions must not keep them all.
                    if self.files.get() > self.files_budget * 3 / 4 {
                        p.log.release_files().await;
                    }
                    let mut map = self.partitions.borrow_mut();
                    let slots = map.entry(topic.name.clone()).or_default();
                    let i = index as usize;
                    if slots.len() <= i {
                        slots.resize(i + 1, None);
                    }
                    slots[i] = Some(p);
                }
                Err(e) => {
                    tracing::error!(topic = %topic.name, partition = index, error = %e, "opening partition");
                    first_error.get_or_insert(format!("{}-{index}: {e}", topic.name));
                    self.failed_opens.borrow_mut().push(topic.name.clone());
                }
            }
        }
    }

    /// Brings each owned partition's replica state in line with the
    /// snapshot: leaders start a new epoch, followers fetch from their
    /// leader, and the group coordinator follows the leadership of its
    /// offsets partitions.
    fn apply_roles(&self, snapshot: &Snapshot, topics: Option<&[Arc<str>]>) {
        let me = self.config().node_id;
        let now = crate::base::clock::now_ms_u64();
        let shard = self.rc();
        // A restarted broker may have lost the unsynced tail of its logs:
        // it leads nothing from the image it replayed until the controller
        // has registered this incarnation (which moves its leaderships and
        // takes it out of the ISRs it held before) and unfenced it.
        let registered = snapshot
            .brokers
            .get(&me)
            .is_some_and(|b| b.incarnation == self.incarnation() && !b.fenced);
        if self.id == ShardId(0) {
            self.common
                .registered
                .store(registered, std::sync::atomic::Ordering::Relaxed);
        }
        let parts = match topics {
            None => self.owned_partitions(),
            Some(names) => {
                let map = self.partitions.borrow();
                names
                    .iter()
                    .filter_map(|n| map.get(n))
                    .flatten()
                    .flatten()
                    .cloned()
                    .collect()
            }
        };
        for p in parts {
            let Some(topic) = snapshot.topic(&p.topic) else {
                continue;
            };
            let Some(state) = usize::try_from(p.index)
                .ok()
                .and_then(|i| topic.partition_states.get(i))
            else {
                continue;
            };
            let min_isr = meta::min_insync_replicas(self.config(), topic);
            let change = if state.leader == me && !registered {
                let offline = crate::image::PartitionState {
                    leader: crate::image::NO_LEADER,
                    ..state.clone()
                };
                p.apply_state(&offline, me, min_isr, now)
            } else {
                p.apply_state(state, me, min_isr, now)
            };
            if change != RoleChange::None {
                tracing::info!(topic = %p.topic, partition = p.index, ?change, leader_epoch = state.leader_epoch, isr = ?state.isr, "replica role");
            }
            if change == RoleChange::None {
                continue;
            }
            p.log
                .set_direct_writes(self.config().replica_direct_writes && !p.is_leader());
            S::role_changed(&shard, &p, change);
        }
    }

    /// Closes this shard's partitions of topic `name` and removes their
    /// directories.
    async fn remove_partitions(&self, name: &str) {
        let slots = self.partitions.borrow_mut().remove(name).unwrap_or_default();
        self.bump_layout();
        for p in slots.into_iter().flatten() {
            S::closing(self, &p);
            if let Err(e) = p.log.close().await {
                tracing::warn!(topic = %name, partition = p.index, error = %e, "closing deleted partition");
            }
            if let Err(e) = std::fs::remove_dir_all(p.log.dir()) {
                tracing::warn!(dir = %p.log.dir().display(), error = %e, "removing deleted partition");
            }
        }
    }

    /// DeleteTopics on a disk too full to record the deletion: frees the
    /// data of topic `name` (if it still has id `id`) before the metadata
    /// write is tried again. The topic stays in this shard's snapshot until
    /// that write succeeds; a partition of it opened meanwhile starts empty.
    pub async fn free_topic_data(&self, name: &str, id: uuid::Uuid) {
        let _turn = self.installing.lock().await;
        if self.meta().topic(name).is_some_and(|t| t.id == id) {
            tracing::warn!(topic = %name, "no space to record a topic deletion: removing its data first");
            self.remove_partitions(name).await;
        }
    }

    async fn open_partition(&self, topic: &TopicMeta, index: i32, config: LogConfig) -> Result<Rc<Partition>, String> {
        let dir: PathBuf = meta::partition_dir(&self.config().data_dir, &topic.name, index);
        let env = Env {
            open_files: Some(self.files.clone()),
            histograms: Some(self.io_histograms.clone()),
            direct_buffers: Some(self.direct_buffers.clone()),
            ..Env::default()
        };
        let log = Log::open(&dir, config, env).await.map_err(|e| e.to_string())?;
        let producers = ProducerStates::load(&log).map_err(|e| e.to_string())?;
        let p = Rc::new(Partition::new(
            topic.name.clone(),
            index,
            log,
            producers,
            self.use_clock.get(),
        ));
        // An offsets partition's groups load when it becomes leader.
        Ok(p)
    }

    /// Installs `snapshot` on every shard and waits until each has opened
    /// and removed its partitions. Runs on the controller (shard 0).
    pub async fn publish(&self, snapshot: Arc<Snapshot>) -> Result<(), String> {
        let mut first_error = None;
        for s in 0..self.shard_count() {
            let snap = snapshot.clone();
            let r = self
                .submit_to(ShardId(s), move |shard| async move {
                    let r = shard.install(snap).await;
                    shard.installed.set();
                    r
                })
                .await;
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Reopens a partition whose log a full disk poisoned, as a restart
    /// would: recovery cuts a torn tail and producer state is rebuilt from
    /// the log. The offsets topic is left alone: its groups have applied
    /// the failed commits in memory, so only a restart makes them agree
    /// with the log again.
    pub async fn reopen(&self, old: &Rc<Partition>) {
        if &*old.topic == meta::OFFSETS_TOPIC {
            return;
        }
        let Some(topic) = self.meta().topic(&old.topic).cloned() else {
            return;
        };
        let config = meta::log_config(self.config(), &topic);
        match self.open_partition(&topic, old.index, config).await {
            Ok(p) => {
                let mut map = self.partitions.borrow_mut();
                if let Some(slot) = map.get_mut(&old.topic).and_then(|s| s.get_mut(old.index as usize))
                    && slot.as_ref().is_some_and(|cur| Rc::ptr_eq(cur, old))
                {
                    *slot = Some(p);
                    self.bump_layout();
                    tracing::info!(topic = %old.topic, partition = old.index, "reopened a partition after the disk had space again");
                    drop(map);
                    // The new replica takes up the old one's role.
                    self.apply_roles(&self.meta(), Some(std::slice::from_ref(&old.topic)));
                }
            }
            Err(e) => {
                tracing::warn!(topic = %old.topic, partition = old.index, error = %e, "reopening a partition poisoned by a full disk");
            }
        }
    }

    /// Closes every partition this shard owns (final flush and sync); a
    /// failure is logged and noted in [`Common::close_failed`].
    pub async fn close_partitions(&self) {
        let parts = self.owned_partitions();
        crate::partition::checkpoint_high_watermarks(&parts);
        for p in parts {
            if let Err(e) = p.producers.borrow_mut().save(&p.log) {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "saving producer state");
            }
            if let Err(e) = p.log.close().await {
                tracing::error!(topic = %p.topic, partition = p.index, error = %e, "closing partition");
                self.common
                    .close_failed
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn placement_spreads_a_topics_partitions_evenly() {
        for shards in 1..=8 {
            let mut counts = vec![0; shards];
            for p in 0..(shards as i32 * 3) {
                counts[owner_of("orders", p, shards).0] += 1;
            }
            assert!(counts.iter().all(|&c| c == 3), "{shards}: {counts:?}");
        }
        assert_eq!(owner_of("t", 5, 4), owner_of("t", 5, 4));
    }

    /// The one shard of a broker with data in `dir`, and the broker's id.
    fn lone_shard(dir: &std::path::Path) -> (Rc<Shard<()>>, i32) {
        let config = BrokerConfig {
            data_dir: dir.to_path_buf(),
            ..BrokerConfig::default()
        };
        let me = config.node_id;
        let common = Arc::new(Common::new(config, 1, true));
        (Shard::new(ShardId(0), common, Arc::new(Snapshot::default()), ()), me)
    }

    #[test]
    fn a_shard_never_goes_back_to_a_snapshot_made_before_the_one_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let (shard, me) = lone_shard(dir.path());
        // Made first: the image before a topic was created (as a leader
        // change's republish may take it), then the image with the topic.
        let before = Arc::new(Snapshot::build(4, Vec::<Arc<TopicMeta>>::new(), BTreeMap::new()));
        let topic = TopicMeta {
            name: "t".into(),
            id: uuid::Uuid::from_u128(7),
            partitions: 1,
            configs: BTreeMap::new(),
            partition_states: vec![crate::image::PartitionState::new(vec![me])],
        };
        let after = Arc::new(Snapshot::build(5, [Arc::new(topic)], BTreeMap::new()));
        compio::runtime::Runtime::new().unwrap().block_on(async {
            shard.install(after.clone()).await.unwrap();
            let log_dir = shard.partition("t", 0).expect("opened").log.dir().to_path_buf();
            assert!(log_dir.exists());
            // The earlier one arrives late: passed over.
            shard.install(before).await.unwrap();
            assert_eq!(shard.meta().made, after.made);
            assert!(
                shard.partition("t", 0).is_some(),
                "the new topic's partition stays open"
            );
            assert!(log_dir.exists(), "and its data stays");
        });
    }

    #[test]
    #[should_panic(expected = "made after the installed one")]
    fn a_later_snapshot_at_an_older_metadata_offset_is_a_bug() {
        let dir = tempfile::tempdir().unwrap();
        let (shard, _) = lone_shard(dir.path());
        let newer = Arc::new(Snapshot::build(9, Vec::<Arc<TopicMeta>>::new(), BTreeMap::new()));
        let older_made_later = Arc::new(Snapshot::build(8, Vec::<Arc<TopicMeta>>::new(), BTreeMap::new()));
        compio::runtime::Runtime::new().unwrap().block_on(async {
            shard.install(newer).await.unwrap();
            let _ = shard.install(older_made_later).await;
        });
    }

    #[test]
    fn an_install_visits_the_topics_that_changed_and_brings_them_in_line() {
        let dir = tempfile::tempdir().unwrap();
        let (shard, me) = lone_shard(dir.path());
        let topic = |name: &str, id: u128, partitions: i32, retention: Option<&str>| {
            Arc::new(TopicMeta {
                name: name.into(),
                id: uuid::Uuid::from_u128(id),
                partitions,
                configs: retention
                    .map(|r| BTreeMap::from([("retention.ms".to_string(), r.to_string())]))
                    .unwrap_or_default(),
                partition_states: (0..partitions)
                    .map(|_| crate::image::PartitionState::new(vec![me]))
                    .collect(),
            })
        };
        let snap = |v: u64, topics: Vec<Arc<TopicMeta>>| Arc::new(Snapshot::build(v, topics, BTreeMap::new()));
        let kept = topic("kept", 1, 2, None);
        compio::runtime::Runtime::new().unwrap().block_on(async {
            shard
                .install(snap(1, vec![kept.clone(), topic("doomed", 2, 1, None)]))
                .await
                .unwrap();
            let doomed_dir = shard.partition("doomed", 0).expect("opened").log.dir().to_path_buf();
            let kept_log = shard.partition("kept", 1).expect("opened");
            // Deleted: its partition closes and its data goes; the
            // unchanged topic is left as it was.
            shard.install(snap(2, vec![kept.clone()])).await.unwrap();
            assert!(shard.partition("doomed", 0).is_none() && !doomed_dir.exists());
            assert!(Rc::ptr_eq(&shard.partition("kept", 1).unwrap(), &kept_log));
            // Grown, with a new retention: the new partition opens and
            // every partition takes the config.
            shard
                .install(snap(3, vec![topic("kept", 1, 3, Some("60000"))]))
                .await
                .unwrap();
            let grown = shard.partition("kept", 2).expect("the new partition");
            assert_eq!(kept_log.log.config().retention_ms, Some(60_000));
            // The growth undone: the new partition closes and goes.
            shard
                .install(snap(4, vec![topic("kept", 1, 2, Some("60000"))]))
                .await
                .unwrap();
            assert!(shard.partition("kept", 2).is_none() && !grown.log.dir().exists());
            assert!(Rc::ptr_eq(&shard.partition("kept", 1).unwrap(), &kept_log));
        });
    }
}
