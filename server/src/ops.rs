//! The operators' HTTP listener (`sluice.admin.listen`): `/metrics` in the
//! OpenMetrics text format, `/health` (the process serves HTTP) and
//! `/ready` (started, listening, and registered and unfenced). It runs on
//! a thread of its own with blocking sockets, off the shards: a probe gets
//! an answer while the shards start, stop or are busy, and a scrape asks
//! each shard for its report through its inbox, so no shard shares a
//! counter with it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::metrics::{ClusterReport, Report, ShardReport};
use crate::node::{Common, Shard};

/// The longest request head read, and how long a client may take to send
/// it.
const MAX_HEAD: usize = 8192;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a scrape waits for the shards' reports.
const SCRAPE_WAIT: Duration = Duration::from_secs(5);

/// The running listener.
#[derive(Debug)]
pub struct OpsServer {
    addr: SocketAddr,
    /// A second descriptor of the listening socket, to stop it from the
    /// broker's thread.
    listener: TcpListener,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OpsServer {
    /// Binds `addr` and serves on a new thread.
    pub fn start(addr: SocketAddr, common: Arc<Common>) -> io::Result<Self> {
        let listener = crate::base::sockets::listen_socket(addr, false)?;
        listener.set_nonblocking(false)?;
        let addr = listener.local_addr()?;
        let serving = listener.try_clone()?;
        let thread = std::thread::Builder::new()
            .name("sluice-admin-http".into())
            .spawn(move || serve(serving, common))?;
        tracing::info!(%addr, "admin HTTP listener (/metrics, /health, /ready)");
        Ok(Self {
            addr,
            listener,
            thread: Some(thread),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and joins the thread (after the request it is
    /// answering, if any).
    pub fn stop(mut self) {
        let _ = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Read);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(listener: TcpListener, common: Arc<Common>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, &common) {
                    tracing::debug!(error = %e, "admin HTTP request");
                }
            }
            // A shut-down listener fails its accepts: stop.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => return,
            Err(e) => {
                if listener.local_addr().is_err() {
                    return;
                }
                tracing::debug!(error = %e, "admin HTTP accept");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Reads one request head, answers it, and closes the connection.
fn answer(mut stream: TcpStream, common: &Arc<Common>) -> io::Result<()> {
    stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    stream.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return respond(&mut stream, 431, "text/plain", b"request head too large\n", false);
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    if method != "GET" && !head_only {
        return respond(&mut stream, 405, "text/plain", b"only GET and HEAD\n", false);
    }
    match path {
        "/health" => respond(&mut stream, 200, "text/plain", b"ok\n", head_only),
        "/ready" => {
            let (code, body) = readiness(common);
            respond(&mut stream, code, "text/plain", body.as_bytes(), head_only)
        }
        "/metrics" => {
            // OpenMetrics for scrapers that ask for it (Prometheus does);
            // the classic text format for the rest (curl, promtool).
            let open_metrics = header(&head, "accept").is_some_and(|a| a.contains("application/openmetrics-text"));
            let report = gather(common);
            match report.encode() {
                Ok(text) if open_metrics => respond(
                    &mut stream,
                    200,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text.as_bytes(),
                    head_only,
                ),
                Ok(text) => respond(
                    &mut stream,
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    crate::metrics::to_classic(&text).as_bytes(),
                    head_only,
                ),
                Err(_) => respond(
                    &mut stream,
                    500,
                    "text/plain",
                    b"encoding the metrics failed\n",
                    head_only,
                ),
            }
        }
        _ => respond(
            &mut stream,
            404,
            "text/plain",
            b"not found: try /metrics, /health or /ready\n",
            head_only,
        ),
    }
}

/// The value of header `name` (lower case) in a request head.
fn header(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).split("\r\n").skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// `/ready`'s status and the reason when not ready.
fn readiness(common: &Common) -> (u16, String) {
    use std::sync::atomic::Ordering::Relaxed;
    if common.shutting_down.load(Relaxed) {
        (503, "shutting down\n".into())
    } else if !common.started.load(Relaxed) {
        (503, "starting\n".into())
    } else if !common.registered.load(Relaxed) {
        (503, "not registered with the controller, or fenced\n".into())
    } else {
        (200, "ready\n".into())
    }
}

fn respond(stream: &mut TcpStream, code: u16, kind: &str, body: &[u8], head_only: bool) -> io::Result<()> {
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    let mut out = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    stream.write_all(&out)?;
    stream.flush()
}

/// Asks every shard for its report; a shard that does not answer within
/// [`SCRAPE_WAIT`] is left out (and counted as missing).
fn gather(common: &Arc<Common>) -> Report {
    let (tx, rx) = mpsc::channel::<(ShardReport, Option<ClusterReport>)>();
    for inbox in common.inboxes.iter() {
        let tx = tx.clone();
        inbox.push(Box::new(move |shard: &Rc<Shard>| {
            let cluster = (shard.id.0 == 0).then(|| crate::metrics::cluster_report(shard));
            let _ = tx.send((crate::metrics::shard_report(shard), cluster));
        }));
    }
    drop(tx);
    let deadline = Instant::now() + SCRAPE_WAIT;
    let mut report = Report::default();
    report.cluster.node_id = common.config.node_id;
    report.cluster.ready = common.ready();
    for _ in 0..common.inboxes.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((shard, cluster)) => {
                if let Some(c) = cluster {
                    report.cluster = c;
                }
                report.shards.push(shard);
            }
            Err(_) => break,
        }
    }
    report.missing_shards = (common.inboxes.len() - report.shards.len()) as u64;
    report.shards.sort_by_key(|s| s.shard);
    report
}
