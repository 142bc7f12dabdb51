//! Connections: the accept loop of each shard, the per-connection read loop
//! (framing, limits, back-pressure) and the writer that sends responses in
//! request order, moving file parts to the socket with sendfile (or splice
//! when the bytes must first come from the disk).
//!
//! Each connection lives on the shard that accepted it. Its read loop
//! spawns one task per request (so pipelined requests run concurrently) and
//! hands the task's handle to the writer through a bounded FIFO; the writer
//! awaits the handles in order, which keeps responses in request order.

use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use compio::BufResult;
use compio::buf::{IntoInner, IoBufMut};
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use compio::runtime::JoinHandle;
use compio_driver::op::{Interest, PollOnce, Splice, SpliceFlags};
use rustix::io::Errno;
use sluice_engine::FileSlice;

use kafka_protocol::messages::ApiKey;

use crate::handlers::{self, Outcome};
use crate::node::Shard;
use crate::protocol::{Part, Response};
use crate::util::{Flag, LocalQueue, Permit, race};

mod tls;

/// Bytes asked of the socket per read when no frame size is known yet.
const READ_CHUNK: usize = 64 * 1024;
/// Smallest request: api key, api version, correlation id.
const MIN_FRAME: usize = 8;
/// Pipe size asked for splice transfers.
const PIPE_BYTES: usize = 1 << 20;

/// Accepts connections on the listener `config.listeners[index]` until the
/// shard stops. The shard that accepts a connection owns it for its
/// lifetime.
pub async fn accept_loop(shard: Rc<Shard>, index: usize, listener: TcpListener) {
    let Some(l) = shard.config().listeners.get(index) else {
        tracing::error!(index, "no such listener");
        return;
    };
    let name: Rc<str> = l.name.as_str().into();
    let protocol = l.protocol;
    loop {
        let accepted = match race(listener.accept(), shard.stopping.wait()).await {
            Ok(a) => a,
            Err(()) => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            // Shutdown stopped the listener before this shard saw the flag.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) => break,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // Out of descriptors and the like: do not spin.
                compio::runtime::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        // io_uring's socket operations wait for readiness whatever this flag
        // says; it is for the sendfile and splice calls made on the shard,
        // which must return rather than block when the send buffer is full.
        if let Err(e) = set_nonblocking(&stream) {
            tracing::warn!(%peer, error = %e, "cannot make the socket non-blocking; closing it");
            continue;
        }
        let common = &shard.common;
        let open = common.connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if open >= shard.config().max_connections {
            common.connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(%peer, limit = shard.config().max_connections, "max.connections reached; closing new connection");
            crate::base::counters::ShardMetrics::bump(&shard.metrics.connections_refused);
            drop(stream);
            continue;
        }
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "set_nodelay");
        }
        shard.live_connections.set(shard.live_connections.get() + 1);
        crate::base::counters::ShardMetrics::bump(&shard.metrics.connections_accepted);
        let s = shard.clone();
        // Kafka reports a member's host as `/address`.
        let host: Rc<str> = format!("/{}", peer.ip()).into();
        let conn = Rc::new(handlers::Conn::new(host, name.clone(), protocol));
        compio::runtime::spawn(async move {
            connection(s.clone(), stream, conn).await;
            s.common.connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            s.live_connections.set(s.live_connections.get() - 1);
            s.connections_changed.notify();
        })
        .detach();
    }
}

fn set_nonblocking(stream: &TcpStream) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(stream)?;
    rustix::fs::fcntl_setfl(stream, flags | rustix::fs::OFlags::NONBLOCK)?;
    Ok(())
}

type InFlight = JoinHandle<(Outcome, Permit)>;

async fn connection(shard: Rc<Shard>, stream: TcpStream, conn: Rc<handlers::Conn>) {
    let tls = if conn.protocol.tls() {
        match tls::handshake(&shard, &stream, &conn).await {
            Ok(t) => Some(t),
            Err(reason) => {
                tracing::info!(peer = %conn.peer, listener = %conn.listener, %reason, "closing connection");
                let mut stream = stream;
                let _ = stream.shutdown().await;
                return;
            }
        }
    } else {
        None
    };
    let closing = Rc::new(Flag::default());
    let peer_gone = Rc::new(Flag::default());
    let queue: Rc<LocalQueue<InFlight>> = LocalQueue::new(shard.config().max_inflight_requests_per_connection);
    let writer = compio::runtime::spawn(write_loop(
        shard.clone(),
        stream.clone(),
        queue.clone(),
        closing.clone(),
        peer_gone.clone(),
        tls.as_ref().map(|t| t.tls.clone()),
    ));
    match read_loop(&shard, stream, &queue, &closing, conn, tls).await {
        // Shutdown or a failed write: the writer finishes what it can.
        Ok(()) => {}
        // The client closed its end (or the read failed): nobody will read
        // the answers, so the writer stops waiting for requests still held
        // (a JoinGroup can be held for its rebalance timeout) and the socket
        // closes now, as Kafka closes the channel.
        Err(ReadEnd::PeerGone(reason)) => {
            tracing::debug!(%reason, "client went away");
            peer_gone.set();
        }
        Err(ReadEnd::Bad(reason)) => tracing::debug!(%reason, "closing connection"),
    }
    queue.close();
    let _ = writer.await;
}

/// Why a read loop ended other than by shutdown or a failed write.
#[derive(Debug)]
enum ReadEnd {
    /// EOF (between frames or inside one), or a failed read: the client is
    /// gone.
    PeerGone(String),
    /// A frame the protocol cannot answer: earlier requests are answered,
    /// then the connection closes.
    Bad(String),
}

/// Reads frames and spawns their handling until EOF, a bad frame, a write
/// failure (`closing`) or broker shutdown. In-flight requests are left to the
/// writer to finish.
async fn read_loop(
    shard: &Rc<Shard>,
    mut stream: TcpStream,
    queue: &Rc<LocalQueue<InFlight>>,
    closing: &Flag,
    conn: Rc<handlers::Conn>,
    mut tls: Option<tls::TlsRead>,
) -> Result<(), ReadEnd> {
    let max_frame = shard.config().socket_request_max_bytes as usize;
    let max_sasl_frame = shard.config().security.sasl_max_receive_size.min(max_frame);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        if !fill(&mut stream, &mut buf, 4, shard, closing, &mut tls).await? {
            return Ok(());
        }
        let unauthenticated = conn.needs_authentication();
        let limit = if unauthenticated { max_sasl_frame } else { max_frame };
        let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let size = usize::try_from(size).map_err(|_| ReadEnd::Bad(format!("negative frame size {size}")))?;
        let raw = unauthenticated && conn.sasl.borrow().raw_tokens();
        if size < MIN_FRAME && !raw {
            return Err(ReadEnd::Bad(format!(
                "frame of {size} bytes is shorter than a request header"
            )));
        }
        if size > limit {
            return Err(ReadEnd::Bad(if unauthenticated {
                format!("frame of {size} bytes before authentication exceeds sasl.server.max.receive.size ({limit})")
            } else {
                format!("frame of {size} bytes exceeds socket.request.max.bytes ({limit})")
            }));
        }
        let total = 4 + size;
        // Back-pressure: wait for room in the shard's budget before reading
        // the body.
        let permit = match race(shard.budget.acquire(total as u64), closing.wait()).await {
            Ok(p) => p,
            Err(()) => return Ok(()),
        };
        if !fill(&mut stream, &mut buf, total, shard, closing, &mut tls).await? {
            return Ok(());
        }
        let mut frame = buf.split_to(total);
        frame.advance(4);
        if unauthenticated {
            // Until the client has authenticated, one request at a time,
            // and only the ones that authenticate.
            let outcome = if raw {
                handlers::sasl::raw_token(shard, &conn, frame).await
            } else {
                match crate::protocol::peek(&frame).and_then(|(k, _, _)| ApiKey::try_from(k).ok()) {
                    Some(ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) => {
                        handlers::dispatch(shard.clone(), frame, conn.clone()).await
                    }
                    other => {
                        return Err(ReadEnd::Bad(format!(
                            "{} before SASL authentication",
                            other.map_or("an unknown request".to_string(), |k| format!("{k:?}"))
                        )));
                    }
                }
            };
            let last = matches!(outcome, Outcome::Close(_) | Outcome::RespondThenClose(..));
            let handle = compio::runtime::spawn(async move { (outcome, permit) });
            if race(queue.push(handle), closing.wait()).await.is_err() {
                return Ok(());
            }
            if last {
                return Err(ReadEnd::Bad("authentication failed".into()));
            }
            continue;
        }
        // KIP-368: once a session has ended, only a re-authentication is
        // served; anything else closes the connection.
        if conn.protocol.sasl() && conn.sasl.borrow().expired(std::time::Instant::now()) {
            let key = crate::protocol::peek(&frame).and_then(|(k, _, _)| ApiKey::try_from(k).ok());
            if !matches!(key, Some(ApiKey::SaslHandshake | ApiKey::SaslAuthenticate)) {
                return Err(ReadEnd::Bad(
                    "the SASL session expired (connections.max.reauth.ms) without a re-authentication".into(),
                ));
            }
        }
        // One task per request; the permit is released when the writer has
        // sent its response.
        let dispatch = handlers::dispatch(shard.clone(), frame, conn.clone());
        let handle = compio::runtime::spawn(async move { (dispatch.await, permit) });
        if race(queue.push(handle), closing.wait()).await.is_err() {
            return Ok(());
        }
    }
}

/// Reads until `buf` holds at least `want` bytes. `Ok(false)` when the
/// writer failed (`closing`), or at shutdown before any byte of a new frame;
/// EOF is [`ReadEnd::PeerGone`].
async fn fill(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    want: usize,
    shard: &Shard,
    closing: &Flag,
    tls: &mut Option<tls::TlsRead>,
) -> Result<bool, ReadEnd> {
    while buf.len() < want {
        if let Some(t) = tls.as_ref() {
            // Plaintext rustls decrypted earlier comes first.
            match tls::drain(&t.tls, buf) {
                Ok(tls::Drained::Some) => {}
                Ok(tls::Drained::Closed) => return Err(ReadEnd::PeerGone("TLS close_notify".into())),
                Err(e) => return Err(ReadEnd::PeerGone(format!("TLS: {e}"))),
            }
            if buf.len() >= want {
                break;
            }
        }
        let between_frames = buf.is_empty();
        let stop = async {
            // Stop reading new requests at shutdown, but only between
            // frames; a frame half read is finished first.
            if between_frames {
                shard.stopping.wait().await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        if let Some(t) = tls.as_mut() {
            let read = race(t.read_once(stream, Some(&mut *buf)), race(closing.wait(), stop)).await;
            match read {
                Err(_) => return Ok(false),
                Ok(Ok(true)) => continue,
                Ok(Ok(false)) if between_frames => return Err(ReadEnd::PeerGone("EOF".into())),
                Ok(Ok(false)) => return Err(ReadEnd::PeerGone("EOF inside a frame".into())),
                Ok(Err(e)) => return Err(ReadEnd::Bad(format!("TLS: {e}"))),
            }
        }
        let missing = want - buf.len();
        if buf.capacity() - buf.len() < missing.min(READ_CHUNK) {
            buf.reserve(missing.max(READ_CHUNK));
        }
        let owned = std::mem::take(buf);
        // Read into the spare capacity after the bytes already held.
        let read = race(stream.read(owned.uninit()), race(closing.wait(), stop)).await;
        let BufResult(res, back) = match read {
            Ok(r) => r,
            Err(_) => return Ok(false),
        };
        *buf = back.into_inner();
        match res {
            Ok(0) if buf.is_empty() => return Err(ReadEnd::PeerGone("EOF".into())),
            Ok(0) => return Err(ReadEnd::PeerGone("EOF inside a frame".into())),
            Ok(_) => {}
            Err(e) => return Err(ReadEnd::PeerGone(format!("read: {e}"))),
        }
    }
    Ok(true)
}

/// Sends responses in request order. Stops at the first `Close` outcome or
/// write error, and sets `closing` so the read loop stops too.
async fn write_loop(
    shard: Rc<Shard>,
    mut stream: TcpStream,
    queue: Rc<LocalQueue<InFlight>>,
    closing: Rc<Flag>,
    peer_gone: Rc<Flag>,
    tls: Option<tls::Tls>,
) {
    let zero_copy = shard.config().fetch_zero_copy;
    let mut pipe: Option<Pipe> = None;
    // The buffer a TLS connection reads file parts into.
    let mut scratch = Vec::new();
    while let Some(mut handle) = queue.pop().await {
        let done = match race(&mut handle, peer_gone.wait()).await {
            Ok(done) => done,
            Err(()) => {
                // Held requests finish on their own (their state changes
                // must complete); their answers are dropped.
                handle.detach();
                while let Some(h) = queue.try_pop() {
                    h.detach();
                }
                break;
            }
        };
        let Ok((outcome, _permit)) = done else {
            tracing::error!("request task failed; closing connection");
            break;
        };
        match outcome {
            Outcome::Silent => {}
            Outcome::Close(reason) => {
                tracing::info!(%reason, "closing connection");
                break;
            }
            Outcome::RespondThenClose(resp, reason) => {
                let sent = match &tls {
                    Some(t) => tls::send(&stream, t, resp, &mut scratch).await,
                    None => send(&mut stream, resp, &mut pipe, zero_copy).await,
                };
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "write failed");
                }
                tracing::info!(%reason, "closing connection");
                break;
            }
            Outcome::Respond(resp) => {
                let sent = match &tls {
                    Some(t) => tls::send(&stream, t, resp, &mut scratch).await,
                    None => send(&mut stream, resp, &mut pipe, zero_copy).await,
                };
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "write failed");
                    break;
                }
            }
        }
    }
    closing.set();
    if let Some(t) = &tls {
        t.borrow_mut().send_close_notify();
        let _ = tls::flush(&stream, t).await;
    }
    let _ = stream.shutdown().await;
}

/// A pipe for splicing file bytes to a socket; one per connection, made on
/// first use.
#[derive(Debug)]
struct Pipe {
    read: Rc<OwnedFd>,
    write: Rc<OwnedFd>,
    capacity: usize,
}

impl Pipe {
    fn new() -> io::Result<Self> {
        let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let capacity = match rustix::pipe::fcntl_setpipe_size(&write, PIPE_BYTES) {
            Ok(n) => n,
            // Above /proc/sys/fs/pipe-max-size for this user: keep the default.
            Err(_) => rustix::pipe::fcntl_getpipe_size(&write)?,
        };
        Ok(Self {
            read: Rc::new(read),
            write: Rc::new(write),
            capacity,
        })
    }
}

async fn send(stream: &mut TcpStream, resp: Response, pipe: &mut Option<Pipe>, zero_copy: bool) -> io::Result<()> {
    let has_file = resp.parts.iter().any(|p| matches!(p, Part::File(_)));
    if zero_copy && has_file {
        return send_with_files(stream, resp, pipe).await;
    }
    let mut mem: Vec<Bytes> = Vec::new();
    for part in resp.parts {
        match part {
            Part::Mem(b) => mem.push(b),
            Part::File(slice) => {
                // The copying path (`sluice.fetch.zero.copy=false`, kept
                // for comparison benchmarks): pread into memory, then write.
                flush_mem(stream, &mut mem).await?;
                let bytes = slice.to_bytes()?;
                let BufResult(r, _) = stream.write_all(bytes).await;
                r?;
            }
        }
    }
    flush_mem(stream, &mut mem).await
}

/// A response with file parts: everything goes out on the shard, memory
/// parts by `sendmsg` flagged `MSG_MORE` while file bytes follow (so the
/// kernel packs them into the file's segments) and file parts by
/// [`send_file`]; no io_uring round trip between the parts.
async fn send_with_files(stream: &TcpStream, resp: Response, pipe: &mut Option<Pipe>) -> io::Result<()> {
    let mut mem: Vec<Bytes> = Vec::new();
    for part in resp.parts {
        match part {
            Part::Mem(b) => mem.push(b),
            Part::File(slice) => {
                send_mem_now(stream, &mut mem, true).await?;
                send_file(stream, pipe, &slice).await?;
            }
        }
    }
    send_mem_now(stream, &mut mem, false).await
}

/// Sends `mem` (and empties it) with non-blocking `sendmsg` calls on the
/// shard, waiting for the socket to drain when it is full.
async fn send_mem_now(stream: &TcpStream, mem: &mut Vec<Bytes>, more: bool) -> io::Result<()> {
    let flags = if more {
        rustix::net::SendFlags::MORE | rustix::net::SendFlags::NOSIGNAL
    } else {
        rustix::net::SendFlags::NOSIGNAL
    };
    let mut first = 0;
    while first < mem.len() {
        let sent = on_shard(stream, || {
            let slices: Vec<io::IoSlice<'_>> = mem[first..].iter().map(|b| io::IoSlice::new(b)).collect();
            rustix::net::sendmsg(stream, &slices, &mut rustix::net::SendAncillaryBuffer::default(), flags)
        })
        .await?;
        if sent == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "socket accepted no bytes"));
        }
        // Drop what went out; a part sent in part keeps its rest.
        let mut left = sent;
        while left > 0 && first < mem.len() {
            let n = mem[first].len();
            if left >= n {
                left -= n;
                first += 1;
            } else {
                mem[first].advance(left);
                left = 0;
            }
        }
        while first < mem.len() && mem[first].is_empty() {
            first += 1;
        }
    }
    mem.clear();
    Ok(())
}

async fn flush_mem(stream: &mut TcpStream, mem: &mut Vec<Bytes>) -> io::Result<()> {
    match mem.len() {
        0 => Ok(()),
        1 => {
            let b = mem.pop().unwrap_or_default();
            let BufResult(r, _) = stream.write_all(b).await;
            r
        }
        _ => {
            let parts = std::mem::take(mem);
            let BufResult(r, _) = stream.write_vectored_all(parts).await;
            r
        }
    }
}

/// Moves a file slice to the socket without the bytes entering user space.
///
/// Where the slice's pages are in the page cache (the usual case: consumers
/// read what was just written), `sendfile` runs right here on the shard:
/// one system call, no io_uring worker hand-off. io_uring runs splice only
/// in its worker threads, which would cost two thread wake-ups per fetch on
/// the shard's own core. Where a page is not cached, one pipe-full goes
/// file -> pipe by io_uring splice (a worker waits for the disk, not the
/// shard), then pipe -> socket here. The socket is non-blocking (set at
/// accept), so a full send buffer means waiting for it to drain, not
/// blocking the shard.
async fn send_file(stream: &TcpStream, pipe: &mut Option<Pipe>, slice: &FileSlice) -> io::Result<()> {
    let mut position = slice.position;
    let end = slice.position + slice.len;
    while position < end {
        let left = (end - position) as usize;
        if slice.recent || (page_cached(&slice.file, position) && page_cached(&slice.file, end - 1)) {
            let sent = on_shard(stream, || {
                rustix::fs::sendfile(stream, &*slice.file, Some(&mut position), left)
            })
            .await?;
            if sent == 0 {
                return Err(short_file());
            }
            continue;
        }
        // The pipe is made on the first part that needs it.
        let pipe = match pipe {
            Some(p) => p,
            None => pipe.insert(Pipe::new()?),
        };
        let into_pipe = Splice::new(
            slice.file.clone(),
            position as i64,
            pipe.write.clone(),
            -1,
            left.min(pipe.capacity),
            SpliceFlags::MOVE,
        );
        let BufResult(r, _) = compio::runtime::submit(into_pipe).await;
        let n = r?;
        if n == 0 {
            return Err(short_file());
        }
        let mut in_pipe = n;
        while in_pipe > 0 {
            let k = on_shard(stream, || {
                rustix::pipe::splice(
                    &*pipe.read,
                    None,
                    stream,
                    None,
                    in_pipe,
                    rustix::pipe::SpliceFlags::MOVE,
                )
            })
            .await?;
            if k == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "socket accepted no bytes"));
            }
            in_pipe -= k;
        }
        position += n as u64;
    }
    Ok(())
}

/// Runs a non-blocking transfer into the socket on the shard, waiting for
/// the socket to drain while it would block, and retrying on a signal.
async fn on_shard(stream: &TcpStream, mut op: impl FnMut() -> rustix::io::Result<usize>) -> io::Result<usize> {
    loop {
        match op() {
            Ok(n) => return Ok(n),
            Err(Errno::AGAIN) => writable(stream).await?,
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn short_file() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "segment file shorter than its slice")
}

/// Whether the page holding `position` is in the page cache: a one-byte
/// read that the kernel refuses (`RWF_NOWAIT`) rather than wait for the
/// disk. Pages of a slice age together, so its first and last page stand
/// for it; any other answer (an unsupported flag, an error) says no, which
/// only picks the path that cannot block.
fn page_cached(file: &std::fs::File, position: u64) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        rustix::io::preadv2(
            file,
            &mut [io::IoSliceMut::new(&mut byte)],
            position,
            rustix::io::ReadWriteFlags::NOWAIT
        ),
        Ok(1)
    )
}

/// Waits until the socket can take more bytes.
async fn writable(stream: &TcpStream) -> io::Result<()> {
    let BufResult(r, _) = compio::runtime::submit(PollOnce::new(stream.clone(), Interest::Writable)).await;
    r.map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use compio::io::AsyncReadExt;

    use super::*;

    /// A segment-like file of `len` pseudo-random bytes, synced so its
    /// pages are clean and can be dropped from the page cache.
    fn file_of(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&data).unwrap();
        f.as_file().sync_all().unwrap();
        (f, data)
    }

    /// Sends `slice` over a loopback connection whose reader starts only
    /// after a pause (so the socket buffers fill, 32 MiB being more than
    /// loopback buffers hold, and the writer must wait). Returns the
    /// sender's result, every byte the reader got before the close, and
    /// whether the sender made a pipe.
    fn send_over_tcp(slice: FileSlice) -> (io::Result<()>, Vec<u8>, bool) {
        compio::runtime::Runtime::new().unwrap().block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let reader = compio::runtime::spawn(async move {
                let mut client = TcpStream::connect(addr).await.unwrap();
                compio::runtime::time::sleep(std::time::Duration::from_millis(50)).await;
                let BufResult(r, buf) = client.read_to_end(Vec::new()).await;
                r.unwrap();
                buf
            });
            let (server, _) = listener.accept().await.unwrap();
            set_nonblocking(&server).unwrap();
            let mut pipe = None;
            let sent = send_file(&server, &mut pipe, &slice).await;
            drop(server);
            (sent, reader.await.unwrap(), pipe.is_some())
        })
    }

    #[test]
    fn cached_slices_go_out_with_sendfile_and_wait_for_a_full_socket() {
        let (f, data) = file_of(32 << 20);
        let file = Arc::new(f.reopen().unwrap());
        // Freshly written: in the page cache.
        assert!(page_cached(&file, 0) && page_cached(&file, (32 << 20) - 1));
        let (sent, got, piped) = send_over_tcp(FileSlice {
            file,
            position: 1000,
            len: (32 << 20) - 3000,
            recent: false,
        });
        sent.unwrap();
        assert!(!piped, "cached parts need no pipe");
        assert_eq!(got, data[1000..(32 << 20) - 2000]);
    }

    #[test]
    fn slices_not_in_the_page_cache_are_spliced_from_the_disk() {
        let (f, data) = file_of(4 << 20);
        let file = Arc::new(f.reopen().unwrap());
        // The kernel may keep a page another reader just touched; ask again.
        for _ in 0..50 {
            rustix::fs::fadvise(&*file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
            if !page_cached(&file, 4096) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            !page_cached(&file, 4096),
            "the synced pages were dropped from the cache"
        );
        let (sent, got, piped) = send_over_tcp(FileSlice {
            file: file.clone(),
            position: 4096,
            len: (4 << 20) - 4096,
            recent: false,
        });
        sent.unwrap();
        assert!(piped);
        assert_eq!(got, data[4096..]);
        // Past the end of the file: reported, not looped on.
        let (sent, got, _) = send_over_tcp(FileSlice {
            file,
            position: (4 << 20) - 10,
            len: 100,
            recent: false,
        });
        assert_eq!(got, data[(4 << 20) - 10..], "what the file has goes out");
        let err = sent.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }
}
