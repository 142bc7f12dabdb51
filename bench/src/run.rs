//! Runs one workload against one broker: topics, producer and consumer
//! tasks on generator threads (each a compio event loop, optionally
//! pinned), warm-up, measurement, drain, and the figures.
//!
//! Latency is taken from each message's *intended* send time. At a fixed
//! rate, message k of a producer is due at `start + k / rate` whether or
//! not the broker has answered the earlier ones, so a stall shows up in
//! every message scheduled during it (no coordinated omission). At the
//! maximum rate the intended time is when the message was generated.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use compio::BufResult;
use compio::io::{AsyncWrite, AsyncWriteExt};
use compio::net::TcpStream;
use hdrhistogram::Histogram;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use serde::{Deserialize, Serialize};

use crate::admin::{self, Versions};
use crate::latency::{self, Clock, Latency};
use crate::wire::{self, Codec, FrameReader, OpenBatch, PartitionBatch};
use crate::workload::{KeyDistributor, Workload};

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;
const ABORT: u8 = 3;

/// Largest response a generator connection accepts.
const MAX_RESPONSE: usize = 256 << 20;
/// How long in-flight requests and consumers may take to finish after the
/// measurement ends.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Generator threads; tasks are spread over them.
    pub threads: usize,
    /// Cores to pin generator threads to, in turn; empty: not pinned.
    pub cores: Vec<usize>,
    /// Seconds between progress lines; 0: none.
    pub progress_secs: f64,
    pub keep_topics: bool,
    /// Overrides of the workload's durations.
    pub test_secs: Option<f64>,
    pub warmup_secs: Option<f64>,
    /// Processes to sample CPU (summed) and memory (the largest) of: a
    /// spawned broker, or the brokers of a cluster named by `--broker-pids`.
    pub broker_pids: Vec<u32>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            cores: Vec::new(),
            progress_secs: 5.0,
            keep_topics: false,
            test_secs: None,
            warmup_secs: None,
            broker_pids: Vec::new(),
        }
    }
}

/// The figures of one workload on one broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadResult {
    pub workload: String,
    /// "A" for the main target, "B" for `--vs`.
    pub target: String,
    pub bootstrap: String,
    /// Index of the A/B pair in a `--vs` run.
    pub pair: usize,
    pub test_seconds: f64,
    pub publish_rate: f64,
    pub publish_mb_per_s: f64,
    pub consume_rate: f64,
    pub consume_mb_per_s: f64,
    /// Messages acknowledged but not yet consumed (per subscription) when
    /// the measurement ended.
    pub backlog: i64,
    pub publish_errors: u64,
    /// Kafka error code of the last failed produce, 0 when none failed.
    pub last_publish_error_code: i16,
    pub consume_errors: u64,
    pub publish_latency_ms: Latency,
    pub end_to_end_latency_ms: Latency,
    /// CPU seconds of this generator during the measurement.
    pub generator_cpu_seconds: f64,
    /// CPU seconds and peak RSS of the broker, when it was spawned here.
    pub broker_cpu_seconds: Option<f64>,
    pub broker_peak_rss_bytes: Option<u64>,
}

#[derive(Debug)]
struct Shared {
    phase: AtomicU8,
    measure_from_us: AtomicU64,
    measure_to_us: AtomicU64,
    sent: AtomicU64,
    acked: AtomicU64,
    acked_bytes: AtomicU64,
    consumed: AtomicU64,
    consumed_bytes: AtomicU64,
    publish_errors: AtomicU64,
    last_publish_error: AtomicI32,
    consume_errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    subscriptions: u64,
    max_backlog: u64,
    /// Producers still running (sending or waiting for their answers):
    /// consumers drain only after the last one, so a produce answered late
    /// is still read and timed.
    producing: AtomicU64,
}

impl Shared {
    fn fail(&self, msg: String) {
        if let Ok(mut e) = self.first_error.lock()
            && e.is_none()
        {
            *e = Some(msg);
        }
    }

    fn in_window(&self, intended_us: u64) -> bool {
        intended_us >= self.measure_from_us.load(Relaxed) && intended_us < self.measure_to_us.load(Relaxed)
    }

    fn phase(&self) -> u8 {
        self.phase.load(Relaxed)
    }
}

/// What each generator thread hands back.
#[derive(Debug)]
struct Hists {
    publish: Histogram<u64>,
    e2e: Histogram<u64>,
}

struct Thread {
    shared: Arc<Shared>,
    clock: Clock,
    hists: RefCell<Hists>,
    /// Each partition's leader address, by topic.
    routes: Arc<HashMap<String, Vec<String>>>,
    workload: Workload,
    produce_version: i16,
    fetch_version: i16,
}

#[derive(Debug, Clone)]
struct ProducerPlan {
    index: u32,
    topic: String,
    rate: f64,
}

#[derive(Debug, Clone)]
struct ConsumerPlan {
    topic: String,
    partitions: Vec<i32>,
    /// Their leader's address.
    addr: String,
}

/// Runs `w` against `bootstrap` and returns its figures. `label` and
/// `pair` only name the result.
pub fn run_workload(
    w: &Workload,
    bootstrap: &str,
    label: &str,
    pair: usize,
    opts: &RunOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<WorkloadResult, String> {
    let test_secs = opts.test_secs.unwrap_or_else(|| w.test_seconds());
    let warmup_secs = opts.warmup_secs.unwrap_or_else(|| w.warmup_seconds());
    let mut conn = sluice_tools::Connection::connect(bootstrap).map_err(|e| e.to_string())?;
    let versions = Versions::fetch(&mut conn).map_err(|e| e.to_string())?;
    let produce_version = versions.pick(ApiKey::Produce, 3, 8).map_err(|e| e.to_string())?;
    // v11: the last without tagged fields, which some brokers fill beyond
    // what their version allows.
    let fetch_version = versions.pick(ApiKey::Fetch, 4, 11).map_err(|e| e.to_string())?;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let topics: Vec<String> = (0..w.topics)
        .map(|i| format!("sluice-bench-{}-{i}", &tag[..8]))
        .collect();
    let layout = admin::create_topics(
        &mut conn,
        &versions,
        &topics,
        w.partitions_per_topic,
        w.replication_factor,
        bootstrap,
    )
    .map_err(|e| e.to_string())?;
    let routes = Arc::new(layout.routes().map_err(|e| e.to_string())?);

    let mut producers = Vec::new();
    let per_producer_rate = w.producer_rate / f64::from(w.producers());
    for t in &topics {
        for i in 0..w.producers_per_topic {
            producers.push(ProducerPlan {
                index: i,
                topic: t.clone(),
                rate: per_producer_rate,
            });
        }
    }
    let mut consumers = Vec::new();
    for t in &topics {
        for _ in 0..w.subscriptions_per_topic {
            for c in 0..w.consumer_per_subscription {
                let partitions: Vec<i32> = (0..w.partitions_per_topic)
                    .filter(|p| p % w.consumer_per_subscription == c)
                    .map(|p| p as i32)
                    .collect();
                // One fetch connection per leader address its partitions
                // have (one, unless shards are brokers of their own).
                let mut by_leader: Vec<(String, Vec<i32>)> = Vec::new();
                for p in partitions {
                    let addr = routes[t][p as usize].clone();
                    match by_leader.iter_mut().find(|(a, _)| *a == addr) {
                        Some((_, ps)) => ps.push(p),
                        None => by_leader.push((addr, vec![p])),
                    }
                }
                for (addr, partitions) in by_leader {
                    consumers.push(ConsumerPlan {
                        topic: t.clone(),
                        partitions,
                        addr,
                    });
                }
            }
        }
    }

    let shared = Arc::new(Shared {
        phase: AtomicU8::new(WARMUP),
        measure_from_us: AtomicU64::new(u64::MAX),
        measure_to_us: AtomicU64::new(u64::MAX),
        sent: AtomicU64::new(0),
        acked: AtomicU64::new(0),
        acked_bytes: AtomicU64::new(0),
        consumed: AtomicU64::new(0),
        consumed_bytes: AtomicU64::new(0),
        publish_errors: AtomicU64::new(0),
        last_publish_error: AtomicI32::new(0),
        consume_errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
        // Each subscription reads every message once; with no consumers
        // nothing is read.
        subscriptions: if consumers.is_empty() {
            0
        } else {
            u64::from(w.subscriptions_per_topic)
        },
        max_backlog: w.max_backlog_messages,
        producing: AtomicU64::new(producers.len() as u64),
    });
    let clock = Clock::new();
    let threads = opts.threads.max(1).min(producers.len() + consumers.len());
    let mut handles = Vec::new();
    for t in 0..threads {
        let mine_p: Vec<ProducerPlan> = producers.iter().skip(t).step_by(threads).cloned().collect();
        let mine_c: Vec<ConsumerPlan> = consumers.iter().skip(t).step_by(threads).cloned().collect();
        let shared = shared.clone();
        let routes = routes.clone();
        let w = w.clone();
        let core = (!opts.cores.is_empty()).then(|| opts.cores[t % opts.cores.len()]);
        let h = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || {
                if let Some(id) = core {
                    core_affinity::set_for_current(core_affinity::CoreId { id });
                }
                let th = Rc::new(Thread {
                    shared,
                    clock,
                    hists: RefCell::new(Hists {
                        publish: latency::histogram(),
                        e2e: latency::histogram(),
                    }),
                    routes,
                    workload: w,
                    produce_version,
                    fetch_version,
                });
                let rt = compio::runtime::Runtime::new().map_err(|e| format!("runtime: {e}"))?;
                rt.block_on(thread_main(th.clone(), mine_p, mine_c));
                let h = th.hists.replace(Hists {
                    publish: latency::histogram(),
                    e2e: latency::histogram(),
                });
                Ok::<Hists, String>(h)
            })
            .map_err(|e| format!("spawning a generator thread: {e}"))?;
        handles.push(h);
    }

    // Warm-up, then the measurement window.
    let failed = |s: &Shared| s.first_error.lock().ok().and_then(|e| e.clone());
    let sleep_checking = |secs: f64, s: &Shared, tick: &mut dyn FnMut()| -> Result<(), String> {
        let end = Instant::now() + Duration::from_secs_f64(secs);
        let mut next_tick = Instant::now() + Duration::from_secs_f64(opts.progress_secs.max(0.001));
        while Instant::now() < end {
            if let Some(e) = failed(s) {
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())));
            if opts.progress_secs > 0.0 && Instant::now() >= next_tick {
                tick();
                next_tick += Duration::from_secs_f64(opts.progress_secs);
            }
        }
        Ok(())
    };
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64, 0u64, 0u64);
    let mut report = |phase: &str, s: &Shared| {
        let now = Instant::now();
        let (acked, bytes, consumed) = (
            s.acked.load(Relaxed),
            s.acked_bytes.load(Relaxed),
            s.consumed.load(Relaxed),
        );
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
        progress(&format!(
            "{:<28} {label} {phase:<7} {:>5.0}s  pub {:>9.0} msg/s {:>8.1} MB/s  cons {:>9.0} msg/s  backlog {:>8}  errors {}",
            w.name,
            now.duration_since(started).as_secs_f64(),
            (acked - last.1) as f64 / dt,
            (bytes - last.2) as f64 / dt / 1e6,
            (consumed - last.3) as f64 / dt,
            backlog(s),
            s.publish_errors.load(Relaxed) + s.consume_errors.load(Relaxed),
        ));
        last = (now, acked, bytes, consumed);
    };
    let outcome = (|| {
        sleep_checking(warmup_secs, &shared, &mut || report("warmup", &shared))?;
        let cpu0 = own_cpu_seconds();
        let broker0 = brokers_cpu_seconds(&opts.broker_pids);
        let base = Snapshot::take(&shared);
        shared.measure_from_us.store(clock.now_us(), Relaxed);
        shared.phase.store(MEASURE, Relaxed);
        sleep_checking(test_secs, &shared, &mut || report("measure", &shared))?;
        shared.measure_to_us.store(clock.now_us(), Relaxed);
        let end = Snapshot::take(&shared);
        let end_backlog = backlog(&shared);
        let cpu = own_cpu_seconds() - cpu0;
        let broker_cpu = brokers_cpu_seconds(&opts.broker_pids).zip(broker0).map(|(b, a)| b - a);
        shared.phase.store(STOP, Relaxed);
        Ok::<_, String>((base, end, end_backlog, cpu, broker_cpu))
    })();
    if outcome.is_err() {
        shared.phase.store(ABORT, Relaxed);
    }
    let mut publish = latency::histogram();
    let mut e2e = latency::histogram();
    for h in handles {
        match h.join() {
            Ok(Ok(hs)) => {
                let _ = publish.add(&hs.publish);
                let _ = e2e.add(&hs.e2e);
            }
            Ok(Err(e)) => shared.fail(e),
            Err(_) => shared.fail("a generator thread panicked".into()),
        }
    }
    if !opts.keep_topics {
        let _ = admin::delete_topics(&mut conn, &versions, &topics);
    }
    let (base, end, end_backlog, cpu, broker_cpu) = outcome?;
    if let Some(e) = failed(&shared) {
        return Err(e);
    }
    let dt = test_secs;
    Ok(WorkloadResult {
        workload: w.name.clone(),
        target: label.to_string(),
        bootstrap: bootstrap.to_string(),
        pair,
        test_seconds: dt,
        publish_rate: (end.acked - base.acked) as f64 / dt,
        publish_mb_per_s: (end.acked_bytes - base.acked_bytes) as f64 / dt / 1e6,
        consume_rate: (end.consumed - base.consumed) as f64 / dt,
        consume_mb_per_s: (end.consumed_bytes - base.consumed_bytes) as f64 / dt / 1e6,
        backlog: end_backlog,
        publish_errors: shared.publish_errors.load(Relaxed),
        last_publish_error_code: shared.last_publish_error.load(Relaxed) as i16,
        consume_errors: shared.consume_errors.load(Relaxed),
        publish_latency_ms: Latency::of(&publish),
        end_to_end_latency_ms: Latency::of(&e2e),
        generator_cpu_seconds: cpu,
        broker_cpu_seconds: broker_cpu,
        broker_peak_rss_bytes: opts.broker_pids.iter().filter_map(|&p| proc_peak_rss(p)).max(),
    })
}

struct Snapshot {
    acked: u64,
    acked_bytes: u64,
    consumed: u64,
    consumed_bytes: u64,
}

impl Snapshot {
    fn take(s: &Shared) -> Self {
        Self {
            acked: s.acked.load(Relaxed),
            acked_bytes: s.acked_bytes.load(Relaxed),
            consumed: s.consumed.load(Relaxed),
            consumed_bytes: s.consumed_bytes.load(Relaxed),
        }
    }
}

fn backlog(s: &Shared) -> i64 {
    if s.subscriptions == 0 {
        return 0;
    }
    (s.sent.load(Relaxed) * s.subscriptions) as i64 - s.consumed.load(Relaxed) as i64
}

/// CPU seconds (user + system) this process has used.
pub fn own_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// CPU seconds of all of `pids` together; `None` when there are none or one
/// is gone.
fn brokers_cpu_seconds(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| proc_cpu_seconds(p)).sum()
}

/// CPU seconds of another process, from `/proc/PID/stat`.
pub fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are
    // the 14th and 15th fields of the whole line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten()? as f64;
    Some(ticks / hz)
}

/// Peak resident set (`VmHWM`) of a process, in bytes.
pub fn proc_peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

async fn thread_main(th: Rc<Thread>, producers: Vec<ProducerPlan>, consumers: Vec<ConsumerPlan>) {
    let mut tasks = Vec::new();
    for p in producers {
        let th = th.clone();
        tasks.push(compio::runtime::spawn(async move {
            if let Err(e) = producer(th.clone(), p).await {
                th.shared.fail(e);
            }
            th.shared.producing.fetch_sub(1, Relaxed);
        }));
    }
    for c in consumers {
        let th = th.clone();
        tasks.push(compio::runtime::spawn(async move {
            if let Err(e) = consumer(th.clone(), c).await {
                th.shared.fail(e);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

async fn connect(addr: &str) -> Result<TcpStream, String> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(s)
}

/// Requests a producer may have unanswered; only its writer waits on it.
#[derive(Debug)]
struct Window {
    free: Cell<usize>,
    size: usize,
    waker: RefCell<Option<Waker>>,
}

impl Window {
    fn new(size: usize) -> Self {
        Self {
            free: Cell::new(size),
            size,
            waker: RefCell::new(None),
        }
    }

    async fn acquire(&self) {
        poll_fn(|cx| {
            if self.free.get() > 0 {
                self.free.set(self.free.get() - 1);
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }

    fn release(&self) {
        self.free.set(self.free.get() + 1);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    /// Waits until every request is answered.
    async fn drained(&self) {
        poll_fn(|cx| {
            if self.free.get() == self.size {
                Poll::Ready(())
            } else {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

/// One sent request, waiting for its answer.
#[derive(Debug)]
struct Sent {
    correlation: i32,
    times: Vec<u64>,
    bytes: u64,
}

fn payload_pool(w: &Workload, seed: u64) -> Vec<Vec<u8>> {
    let mut x = seed | 1;
    let random = (w.message_size as f64 * w.random_bytes_ratio) as usize;
    (0..w.randomized_payload_pool_size)
        .map(|_| {
            (0..w.message_size)
                .map(|i| {
                    if i < random {
                        // xorshift64
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        x as u8
                    } else {
                        0
                    }
                })
                .collect()
        })
        .collect()
}

/// One connection of a producer to a leader, with its requests in flight
/// and the task that reads their answers.
struct Link {
    wr: TcpStream,
    window: Rc<Window>,
    in_flight: Rc<RefCell<VecDeque<Sent>>>,
    reader: Option<compio::runtime::JoinHandle<Result<(), String>>>,
}

async fn open_link(th: &Rc<Thread>, addr: &str, pool_times: &Rc<RefCell<Vec<Vec<u64>>>>) -> Result<Link, String> {
    let w = &th.workload;
    let stream = connect(addr).await?;
    let (mut rd, wr) = stream.into_split();
    let window = Rc::new(Window::new(w.max_in_flight));
    let in_flight: Rc<RefCell<VecDeque<Sent>>> = Rc::new(RefCell::new(VecDeque::new()));
    let reader = (w.acks != 0).then(|| {
        let (th, window, in_flight, pool_times) = (th.clone(), window.clone(), in_flight.clone(), pool_times.clone());
        let version = th.produce_version;
        compio::runtime::spawn(async move {
            let mut frames = FrameReader::new(MAX_RESPONSE);
            loop {
                let frame = match frames.next(&mut rd).await {
                    Ok(Some(f)) => f,
                    Ok(None) => return Ok(()),
                    Err(_) if th.shared.phase() >= STOP && in_flight.borrow().is_empty() => return Ok(()),
                    Err(e) => return Err(format!("produce connection: {e}")),
                };
                let Some(sent) = in_flight.borrow_mut().pop_front() else {
                    return Err("a Produce response nobody asked for".into());
                };
                let now = th.clock.now_us();
                let code = produce_error(frame, version, sent.correlation)?;
                let ok = code == 0;
                let n = sent.times.len() as u64;
                if ok {
                    th.shared.acked.fetch_add(n, Relaxed);
                    th.shared.acked_bytes.fetch_add(sent.bytes, Relaxed);
                    let mut h = th.hists.borrow_mut();
                    for &t in &sent.times {
                        if th.shared.in_window(t) {
                            latency::record(&mut h.publish, now.saturating_sub(t), 1);
                        }
                    }
                } else {
                    th.shared.publish_errors.fetch_add(n, Relaxed);
                    th.shared.last_publish_error.store(i32::from(code), Relaxed);
                }
                pool_times.borrow_mut().push(sent.times);
                window.release();
            }
        })
    });
    Ok(Link {
        wr,
        window,
        in_flight,
        reader,
    })
}

async fn producer(th: Rc<Thread>, plan: ProducerPlan) -> Result<(), String> {
    let w = &th.workload;
    let shared = &th.shared;
    let pool_times: Rc<RefCell<Vec<Vec<u64>>>> = Rc::new(RefCell::new(Vec::new()));
    let acks = w.acks;
    // A connection per leader address, and each partition's link.
    let route = th.routes.get(&plan.topic).ok_or("a topic without leaders")?;
    let mut links: Vec<Link> = Vec::new();
    let mut addrs: Vec<&str> = Vec::new();
    let mut link_of: Vec<usize> = Vec::with_capacity(route.len());
    for addr in route {
        let i = match addrs.iter().position(|a| *a == addr.as_str()) {
            Some(i) => i,
            None => {
                links.push(open_link(&th, addr, &pool_times).await?);
                addrs.push(addr);
                addrs.len() - 1
            }
        };
        link_of.push(i);
    }
    let mut mine: Vec<u32> = Vec::new();

    let partitions = w.partitions_per_topic;
    let payloads = payload_pool(w, 0x9e37_79b9_7f4a_7c15 ^ u64::from(plan.index));
    let round_robin_keys: Vec<Vec<u8>> = (0..1000).map(|i| format!("key-{i:04}").into_bytes()).collect();
    let mut open: Vec<OpenBatch> = (0..partitions).map(|_| OpenBatch::default()).collect();
    let mut sticky = plan.index % partitions;
    let per_batch = (w.batch_size_bytes / w.message_size).max(1) as u32;
    let linger_us = (w.linger_ms * 1000.0) as u64;
    let interval_us = if plan.rate > 0.0 { 1e6 / plan.rate } else { 0.0 };
    let start_us = th.clock.now_us();
    let mut seq: u64 = 0;
    let mut correlation = 0i32;
    let mut out = BytesMut::with_capacity(w.batch_size_bytes + 4096);
    let mut codec = Codec::default();
    let mut random_key: u64 = 0x2545_f491_4f6c_dd1d ^ u64::from(plan.index);
    let mut ready: Vec<u32> = Vec::with_capacity(partitions as usize);
    let max_backlog_gate = plan.rate == 0.0 && shared.subscriptions > 0;

    'outer: loop {
        loop {
            if shared.phase() >= STOP {
                break 'outer;
            }
            let now = th.clock.now_us();
            let due = if plan.rate > 0.0 {
                ((now - start_us) as f64 / interval_us) as u64 + 1
            } else {
                u64::MAX
            };
            let mut gated = false;
            let mut full = false;
            while seq < due && !full {
                if max_backlog_gate {
                    let consumed = shared.consumed.load(Relaxed) / shared.subscriptions.max(1);
                    if shared.acked.load(Relaxed).saturating_sub(consumed) >= shared.max_backlog {
                        gated = true;
                        break;
                    }
                }
                let intended = if plan.rate > 0.0 {
                    start_us + (seq as f64 * interval_us) as u64
                } else {
                    now
                };
                let payload = &payloads[(seq % payloads.len() as u64) as usize];
                let mut key_buf = [0u8; 16];
                let (key, p): (Option<&[u8]>, u32) = match w.key_distributor {
                    KeyDistributor::NoKey => (None, sticky),
                    KeyDistributor::KeyRoundRobin => {
                        let k = &round_robin_keys[(seq % 1000) as usize];
                        (Some(&k[..]), wire::partition_for_key(k, partitions))
                    }
                    KeyDistributor::RandomNano => {
                        // splitmix64 of a counter, written as 16 hex digits.
                        random_key = random_key.wrapping_add(0x9e37_79b9_7f4a_7c15);
                        let mut z = random_key;
                        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                        z ^= z >> 31;
                        for (i, b) in key_buf.iter_mut().enumerate() {
                            *b = b"0123456789abcdef"[((z >> (60 - 4 * i)) & 0xf) as usize];
                        }
                        (Some(&key_buf[..]), wire::partition_for_key(&key_buf, partitions))
                    }
                };
                let b = &mut open[p as usize];
                b.push(key, intended, payload);
                seq += 1;
                if b.count >= per_batch || b.records.len() >= w.batch_size_bytes {
                    full = true;
                    if w.key_distributor == KeyDistributor::NoKey {
                        sticky = (sticky + 1) % partitions;
                    }
                }
            }
            ready.clear();
            for (i, b) in open.iter().enumerate() {
                if !b.is_empty()
                    && (b.count >= per_batch || b.records.len() >= w.batch_size_bytes || now >= b.first_us + linger_us)
                {
                    ready.push(i as u32);
                }
            }
            if !ready.is_empty() {
                if w.key_distributor == KeyDistributor::NoKey && !full {
                    sticky = (sticky + 1) % partitions;
                }
                // One request per leader among the ready partitions.
                for (l, link) in links.iter_mut().enumerate() {
                    mine.clear();
                    mine.extend(ready.iter().copied().filter(|&i| link_of[i as usize] == l));
                    if mine.is_empty() {
                        continue;
                    }
                    link.window.acquire().await;
                    correlation = correlation.wrapping_add(1);
                    let mut times = pool_times.borrow_mut().pop().unwrap_or_default();
                    times.clear();
                    let mut bytes = 0;
                    {
                        let batches: Vec<PartitionBatch<'_>> = mine
                            .iter()
                            .map(|&i| PartitionBatch {
                                partition: i as i32,
                                batch: &open[i as usize],
                            })
                            .collect();
                        for b in &batches {
                            times.extend_from_slice(&b.batch.times);
                            bytes += b.batch.payload_bytes;
                        }
                        wire::produce_request(
                            &mut out,
                            th.produce_version,
                            correlation,
                            acks,
                            30_000,
                            &plan.topic,
                            &batches,
                            (th.clock.now_us() / 1000) as i64,
                            w.compression,
                            &mut codec,
                        )
                        .map_err(|e| format!("encoding a batch: {e}"))?;
                    }
                    for &i in &mine {
                        open[i as usize].clear();
                    }
                    shared.sent.fetch_add(times.len() as u64, Relaxed);
                    let n = times.len() as u64;
                    let sent = Sent {
                        correlation,
                        times,
                        bytes,
                    };
                    let unanswered = if acks != 0 {
                        link.in_flight.borrow_mut().push_back(sent);
                        None
                    } else {
                        Some(sent)
                    };
                    let BufResult(r, back) = link.wr.write_all(std::mem::take(&mut out)).await;
                    out = back;
                    r.map_err(|e| format!("produce connection: {e}"))?;
                    if let Some(sent) = unanswered {
                        // Nothing comes back: the write is the acknowledgement.
                        let now = th.clock.now_us();
                        shared.acked.fetch_add(n, Relaxed);
                        shared.acked_bytes.fetch_add(bytes, Relaxed);
                        let mut h = th.hists.borrow_mut();
                        for &t in &sent.times {
                            if shared.in_window(t) {
                                latency::record(&mut h.publish, now.saturating_sub(t), 1);
                            }
                        }
                        pool_times.borrow_mut().push(sent.times);
                        link.window.release();
                    }
                }
                break;
            }
            // Nothing to send yet. Messages are stamped with their due time
            // whenever they are generated, so there is no need to wake for
            // each: sleep until a batch's linger ends or a full batch's worth
            // is due, whichever is sooner.
            let mut wake = if gated || plan.rate == 0.0 {
                now + 1000
            } else {
                let next_due = start_us + (seq as f64 * interval_us) as u64;
                let batch_due = start_us + ((seq + u64::from(per_batch) - 1) as f64 * interval_us) as u64;
                if open.iter().all(OpenBatch::is_empty) {
                    batch_due.min(next_due + linger_us)
                } else {
                    batch_due
                }
            };
            for b in &open {
                if !b.is_empty() {
                    wake = wake.min(b.first_us + linger_us);
                }
            }
            if wake > now {
                compio::runtime::time::sleep(Duration::from_micros(wake - now)).await;
            }
        }
    }
    // Let the answers to what was sent arrive.
    for mut link in links {
        let drained = compio::runtime::time::timeout(DRAIN, link.window.drained()).await;
        let _ = link.wr.shutdown().await;
        if let Some(r) = link.reader {
            match compio::runtime::time::timeout(DRAIN, r).await {
                Ok(Ok(r)) => r?,
                Ok(Err(_)) => return Err("the produce reader panicked".into()),
                Err(_) => {}
            }
        }
        if drained.is_err() && shared.phase() != ABORT {
            return Err(format!(
                "{} Produce requests unanswered after the run",
                link.in_flight.borrow().len()
            ));
        }
    }
    Ok(())
}

/// The first partition error of a Produce response, or 0.
fn produce_error(mut frame: Bytes, version: i16, correlation: i32) -> Result<i16, String> {
    let h = ResponseHeader::decode(&mut frame, 0).map_err(|e| format!("Produce response header: {e}"))?;
    if h.correlation_id != correlation {
        return Err(format!(
            "Produce response for request {} while waiting for {correlation}",
            h.correlation_id
        ));
    }
    let r = ProduceResponse::decode(&mut frame, version).map_err(|e| format!("Produce response: {e}"))?;
    Ok(r.responses
        .iter()
        .flat_map(|t| &t.partition_responses)
        .map(|p| p.error_code)
        .find(|&c| c != 0)
        .unwrap_or(0))
}

async fn consumer(th: Rc<Thread>, plan: ConsumerPlan) -> Result<(), String> {
    let w = &th.workload;
    let shared = &th.shared;
    let mut stream = connect(&plan.addr).await?;
    let mut frames = FrameReader::new(MAX_RESPONSE);
    let mut offsets: Vec<i64> = vec![0; plan.partitions.len()];
    let mut scratch = Vec::new();
    let mut correlation = 0;
    let version = th.fetch_version;
    let flexible = version >= 12;
    let mut buf = BytesMut::new();
    let mut drain_deadline = None;
    loop {
        match shared.phase() {
            ABORT => return Ok(()),
            STOP => {
                let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + DRAIN);
                let want = shared.acked.load(Relaxed) * shared.subscriptions;
                let produced = shared.producing.load(Relaxed) == 0;
                if (produced && shared.consumed.load(Relaxed) >= want) || Instant::now() > deadline {
                    return Ok(());
                }
            }
            _ => {}
        }
        correlation += 1;
        let mut req = FetchRequest::default();
        req.replica_id = BrokerId(-1);
        req.max_wait_ms = w.fetch_max_wait_ms;
        req.min_bytes = 1;
        req.max_bytes = 64 << 20;
        req.session_epoch = -1;
        let mut t = FetchTopic::default();
        t.topic = TopicName(StrBytes::from_string(plan.topic.clone()));
        t.partitions = plan
            .partitions
            .iter()
            .zip(&offsets)
            .map(|(&p, &o)| {
                let mut fp = FetchPartition::default();
                fp.partition = p;
                fp.fetch_offset = o;
                fp.log_start_offset = -1;
                fp.partition_max_bytes = w.fetch_max_partition_bytes;
                fp
            })
            .collect();
        req.topics = vec![t];
        let mut header = RequestHeader::default();
        header.request_api_key = ApiKey::Fetch as i16;
        header.request_api_version = version;
        header.correlation_id = correlation;
        header.client_id = Some(StrBytes::from_static_str("sluice-bench"));
        buf.clear();
        buf.extend_from_slice(&[0; 4]);
        let enc = |e: String| format!("encoding Fetch: {e}");
        header
            .encode(&mut buf, if flexible { 2 } else { 1 })
            .map_err(|e| enc(e.to_string()))?;
        req.encode(&mut buf, version).map_err(|e| enc(e.to_string()))?;
        wire::end_frame(&mut buf);
        let BufResult(r, back) = stream.write_all(std::mem::take(&mut buf)).await;
        buf = back;
        r.map_err(|e| format!("fetch connection: {e}"))?;
        let mut frame = frames
            .next(&mut stream)
            .await
            .map_err(|e| format!("fetch connection: {e}"))?
            .ok_or("the broker closed the fetch connection")?;
        let h = ResponseHeader::decode(&mut frame, if flexible { 1 } else { 0 })
            .map_err(|e| format!("Fetch response header: {e}"))?;
        if h.correlation_id != correlation {
            return Err("Fetch response out of order".into());
        }
        let resp = FetchResponse::decode(&mut frame, version).map_err(|e| format!("Fetch response: {e}"))?;
        if resp.error_code != 0 {
            shared.consume_errors.fetch_add(1, Relaxed);
            compio::runtime::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let now = th.clock.now_us();
        for pr in resp.responses.iter().flat_map(|t| &t.partitions) {
            let Some(i) = plan.partitions.iter().position(|&p| p == pr.partition_index) else {
                continue;
            };
            if pr.error_code != 0 {
                shared.consume_errors.fetch_add(1, Relaxed);
                continue;
            }
            let Some(records) = &pr.records else { continue };
            let mut h = th.hists.borrow_mut();
            let walked = wire::walk_records(records.chunk(), &mut scratch, |t| {
                if shared.in_window(t) {
                    latency::record(&mut h.e2e, now.saturating_sub(t), 1);
                }
            })
            .map_err(|e| format!("records of {} partition {}: {e}", plan.topic, pr.partition_index))?;
            if let Some(next) = walked.next_offset {
                offsets[i] = offsets[i].max(next);
            }
            shared.consumed.fetch_add(walked.records, Relaxed);
            shared.consumed_bytes.fetch_add(walked.bytes, Relaxed);
        }
    }
}
