//! `sluice-wire-fuzz`: sends mutated request frames to a running broker
//! over TCP and checks, after every `--check-every` frames, that a fresh
//! connection is answered within `--check-timeout-ms` and that a connection
//! opened at the start still works. Exits 1 on the first failed check (a
//! hang or a crash) with the seed and frame count to replay it.
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use sluice_tools::Connection;
use sluice_tools::fuzz::{Mutator, default_frames, framed, load_corpus};

#[derive(Debug, Parser)]
#[command(
    name = "sluice-wire-fuzz",
    version,
    about = "Mutated Kafka requests over TCP, with liveness checks"
)]
struct Args {
    /// Broker address.
    #[arg(short, long, default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Frames to send.
    #[arg(long, default_value_t = 1_000_000)]
    frames: u64,
    /// Mutator seed (default: the time); printed so a run can be replayed.
    #[arg(long)]
    seed: Option<u64>,
    /// Directory of captured `*.frames` seed files.
    #[arg(long, default_value = "tests/fuzz/corpus")]
    corpus: PathBuf,
    /// Frames sent on one connection before a new one is opened.
    #[arg(long, default_value_t = 200)]
    frames_per_connection: u64,
    /// Frames between liveness checks.
    #[arg(long, default_value_t = 1000)]
    check_every: u64,
    /// How long a check waits for its answer.
    #[arg(long, default_value_t = 1000)]
    check_timeout_ms: u64,
    /// How long each frame waits for an answer or a close before the next.
    #[arg(long, default_value_t = 10)]
    frame_wait_ms: u64,
    /// Threads sending frames at once, each with its own connections and
    /// a mutator seeded `seed + worker`.
    #[arg(long, default_value_t = 8)]
    workers: u64,
}

/// ApiVersions v3 on `conn`, answered within `timeout`.
fn api_versions(conn: &mut Connection, timeout: Duration) -> Result<ApiVersionsResponse, String> {
    conn.set_timeout(timeout).map_err(|e| e.to_string())?;
    conn.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default())
        .map_err(|e| e.to_string())
}

/// A fresh checked connection answering ApiVersions within `timeout`.
fn fresh_api_versions(addr: &str, timeout: Duration) -> Result<ApiVersionsResponse, String> {
    let mut conn = Connection::connect(addr).map_err(|e| e.to_string())?;
    api_versions(&mut conn, timeout)
}

fn connect(addr: &str) -> Result<TcpStream, String> {
    let s = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// Connects from a rotating loopback source address (127.0.0.2 up to
/// 127.0.0.241) when the broker is on loopback: a million short
/// connections would otherwise run out of ephemeral ports while their
/// closed ends wait out TIME_WAIT.
fn connect_spread(addr: &str, n: u64) -> Result<TcpStream, String> {
    let target: std::net::SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(_) => return connect(addr),
    };
    if !target.ip().is_loopback() || !target.is_ipv4() {
        return connect(addr);
    }
    let source = std::net::SocketAddr::from(([127, 0, 0, 2 + (n % 240) as u8], 0));
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).map_err(|e| e.to_string())?;
    sock.bind(&source.into()).map_err(|e| format!("bind {source}: {e}"))?;
    sock.connect(&target.into())
        .map_err(|e| format!("connect {addr} from {source}: {e}"))?;
    let s: TcpStream = sock.into();
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// What became of a frame on its connection.
enum After {
    /// Bytes came back (its answer, or an earlier held request's).
    Answered,
    /// Nothing within the wait: a held request (long poll, group wait) or
    /// a request Kafka answers with silence (acks=0).
    Quiet,
    /// The broker closed the connection.
    Closed,
}

/// Waits up to `wait` for the broker to answer or close.
fn after(s: &mut TcpStream, buf: &mut [u8], wait: Duration, received: &mut u64) -> After {
    if s.set_read_timeout(Some(wait)).is_err() {
        return After::Closed;
    }
    match s.read(buf) {
        Ok(0) => After::Closed,
        Ok(n) => {
            *received += n as u64;
            After::Answered
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => After::Quiet,
        Err(_) => After::Closed,
    }
}

/// What one worker counted.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    connections: u64,
    answered: u64,
    quiet: u64,
    closed: u64,
    misframed: u64,
    received: u64,
}

/// Sends `frames` mutated frames, each on a connection of its own once the
/// last one ended or held its request; counts into `sent` as it goes.
fn worker(
    args: &Args,
    mut mutator: Mutator,
    frames: u64,
    sent: &AtomicU64,
    stop: &AtomicBool,
) -> Result<Counts, String> {
    let mut c = Counts::default();
    let mut buf = vec![0u8; 1 << 16];
    let mut conn: Option<TcpStream> = None;
    let mut on_conn = 0u64;
    let wait = Duration::from_millis(args.frame_wait_ms);
    for _ in 0..frames {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if conn.is_none() || on_conn >= args.frames_per_connection {
            conn = Some(connect_spread(&args.bootstrap, c.connections)?);
            c.connections += 1;
            on_conn = 0;
        }
        let frame = mutator.next_frame();
        let wire = framed(&frame, mutator.rng());
        let length_kept = wire[..4] == (frame.len() as u32).to_be_bytes();
        if let Some(s) = conn.as_mut() {
            on_conn += 1;
            let outcome = match s.write_all(&wire) {
                // A wrong length leaves the stream unparseable: the next
                // frame starts on a new connection.
                Ok(()) if !length_kept => {
                    c.misframed += 1;
                    After::Closed
                }
                Ok(()) => after(s, &mut buf, wait, &mut c.received),
                Err(_) => After::Closed,
            };
            match outcome {
                After::Answered => c.answered += 1,
                // Responses go out in request order: later frames on this
                // connection would wait behind the held one.
                After::Quiet => {
                    c.quiet += 1;
                    conn = None;
                }
                After::Closed => {
                    c.closed += 1;
                    conn = None;
                }
            }
        }
        sent.fetch_add(1, Ordering::Relaxed);
    }
    Ok(c)
}

fn run(args: &Args) -> Result<String, String> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!(
        "sluice-wire-fuzz: {} frames to {} from {} workers, --seed {seed}",
        args.frames, args.bootstrap, args.workers
    );
    let timeout = Duration::from_millis(args.check_timeout_ms);
    let mut idle = Connection::connect(&args.bootstrap).map_err(|e| e.to_string())?;
    let versions = api_versions(&mut idle, timeout)?;
    let apis: Vec<(i16, i16, i16)> = versions
        .api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect();
    let mut seeds = load_corpus(&args.corpus).map_err(|e| format!("corpus {}: {e}", args.corpus.display()))?;
    let captured = seeds.len();
    seeds.extend(default_frames(&apis));
    eprintln!(
        "seeds: {captured} captured frames, {} default requests",
        seeds.len() - captured
    );
    let sent = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let workers = args.workers.max(1);
    let start = Instant::now();
    let (counts, checks) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let share = args.frames / workers + u64::from(w < args.frames % workers);
                let mutator = Mutator::new(seeds.clone(), seed.wrapping_add(w));
                let (sent, stop) = (&sent, &stop);
                scope.spawn(move || worker(args, mutator, share, sent, stop))
            })
            .collect();
        // The liveness checks, every `check_every` frames sent.
        let mut checks = 0u64;
        let mut failure = None;
        loop {
            let done = handles.iter().all(|h| h.is_finished());
            let n = sent.load(Ordering::Relaxed);
            if n >= (checks + 1) * args.check_every || (done && n > checks * args.check_every) {
                let check = fresh_api_versions(&args.bootstrap, timeout)
                    .map_err(|e| format!("a fresh connection: {e}"))
                    .and_then(|_| api_versions(&mut idle, timeout).map_err(|e| format!("the idle connection: {e}")));
                if let Err(e) = check {
                    // How long the broker took after all, if it answers.
                    let t0 = Instant::now();
                    let late = fresh_api_versions(&args.bootstrap, Duration::from_secs(30)).map_or_else(
                        |e| format!("still no answer after 30 s: {e}"),
                        |_| {
                            format!(
                                "a fresh connection was answered {:.1} s later",
                                t0.elapsed().as_secs_f64()
                            )
                        },
                    );
                    failure = Some(format!("after {n} frames, --seed {seed}: {e}; {late}"));
                    stop.store(true, Ordering::Relaxed);
                    break;
                }
                checks += 1;
                continue;
            }
            if done {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut total = Counts::default();
        for h in handles {
            match h.join() {
                Ok(Ok(c)) => {
                    total.connections += c.connections;
                    total.answered += c.answered;
                    total.quiet += c.quiet;
                    total.closed += c.closed;
                    total.misframed += c.misframed;
                    total.received += c.received;
                }
                Ok(Err(e)) => {
                    failure.get_or_insert(format!("--seed {seed}: {e}"));
                }
                Err(_) => {
                    failure.get_or_insert("a worker panicked".into());
                }
            }
        }
        match failure {
            Some(f) => Err(f),
            None => Ok((total, checks)),
        }
    })?;
    let secs = start.elapsed().as_secs_f64();
    let n = sent.load(Ordering::Relaxed);
    Ok(format!(
        "{n} frames in {secs:.1} s ({:.0}/s) over {} connections: {} answered, {} quiet (held or silent), {} ended \
         their connection ({} of them with a wrong length); {} response bytes; {checks} liveness checks passed; \
         0 crashes, 0 hangs (--seed {seed}, {workers} workers)",
        n as f64 / secs,
        counts.connections,
        counts.answered,
        counts.quiet,
        counts.closed,
        counts.misframed,
        counts.received,
    ))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice-wire-fuzz: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
