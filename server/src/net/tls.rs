//! TLS on a connection: the handshake, decrypting what the socket brings
//! into the read loop's buffer, and encrypting responses on their way out.
//!
//! rustls keeps the connection's state; the read loop and the writer are
//! tasks of one shard thread and take it in turns (`RefCell`), never across
//! an await. A fetch over TLS cannot use sendfile: its file parts are read
//! from the page cache into a buffer the connection reuses (one copy), then
//! sealed into TLS records by rustls (a second copy, which the encryption
//! needs anyway), which the kernel copies into the socket (the third).
//! Plaintext listeners keep their zero-copy path.

use std::cell::RefCell;
use std::io::{self, BufRead, Write};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use compio::BufResult;
use compio::buf::{IntoInner, IoBufMut};
use compio::io::AsyncRead;
use compio::net::TcpStream;
use rustls::ServerConnection;

use crate::handlers::Conn;
use crate::node::Shard;
use crate::protocol::{Part, Response};
use crate::util::race;

/// One connection's TLS state.
pub type Tls = Rc<RefCell<ServerConnection>>;

/// Ciphertext asked of the socket per read.
const CIPHER_CHUNK: usize = 64 * 1024;
/// Plaintext of a file part read per step, and the most ciphertext held
/// before it is written to the socket.
const PLAIN_CHUNK: usize = 256 * 1024;

/// The read side: the connection and the ciphertext not yet fed to it.
#[derive(Debug)]
pub struct TlsRead {
    pub tls: Tls,
    cipher: BytesMut,
}

/// What [`drain`] found.
pub enum Drained {
    /// Plaintext moved (or none was there).
    Some,
    /// The client closed the TLS session (`close_notify`).
    Closed,
}

/// Moves the plaintext rustls holds into `plain`.
pub fn drain(tls: &RefCell<ServerConnection>, plain: &mut BytesMut) -> Result<Drained, String> {
    let mut t = tls.borrow_mut();
    let mut reader = t.reader();
    loop {
        match reader.fill_buf() {
            Ok([]) => return Ok(Drained::Closed),
            Ok(chunk) => {
                let n = chunk.len();
                plain.extend_from_slice(chunk);
                reader.consume(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Drained::Some),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Feeds `cipher` to rustls, moving what it decrypts into `plain` (when
/// given) as it goes, so its plaintext buffer never fills.
fn feed(
    tls: &RefCell<ServerConnection>,
    cipher: &mut BytesMut,
    mut plain: Option<&mut BytesMut>,
) -> Result<(), String> {
    while !cipher.is_empty() {
        let n = {
            let mut t = tls.borrow_mut();
            let n = t.read_tls(&mut &cipher[..]).map_err(|e| e.to_string())?;
            t.process_new_packets().map_err(|e| e.to_string())?;
            n
        };
        cipher.advance(n);
        if let Some(p) = plain.as_deref_mut()
            && let Drained::Closed = drain(tls, p)?
        {
            return Ok(());
        }
        if n == 0 {
            break;
        }
    }
    Ok(())
}

impl TlsRead {
    /// Reads once from the socket into the ciphertext buffer and feeds it
    /// to rustls, decrypted bytes going to `plain`. `Ok(false)` on EOF.
    pub async fn read_once(&mut self, stream: &mut TcpStream, plain: Option<&mut BytesMut>) -> Result<bool, String> {
        if self.cipher.capacity() - self.cipher.len() < CIPHER_CHUNK {
            self.cipher.reserve(CIPHER_CHUNK);
        }
        let owned = std::mem::take(&mut self.cipher);
        let BufResult(res, back) = stream.read(owned.uninit()).await;
        self.cipher = back.into_inner();
        match res {
            Ok(0) => return Ok(false),
            Ok(_) => {}
            Err(e) => return Err(format!("read: {e}")),
        }
        feed(&self.tls, &mut self.cipher, plain)?;
        Ok(true)
    }
}

/// A non-blocking `io::Write` over the socket, for rustls's `write_tls`.
struct SocketWriter<'a>(&'a TcpStream);

impl Write for SocketWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(rustix::net::send(self.0, buf, rustix::net::SendFlags::NOSIGNAL)?)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        Ok(rustix::net::sendmsg(
            self.0,
            bufs,
            &mut rustix::net::SendAncillaryBuffer::default(),
            rustix::net::SendFlags::NOSIGNAL,
        )?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes every TLS record rustls holds to the socket, waiting for it to
/// drain while it is full.
pub async fn flush(stream: &TcpStream, tls: &RefCell<ServerConnection>) -> io::Result<()> {
    loop {
        if !tls.borrow().wants_write() {
            return Ok(());
        }
        let r = tls.borrow_mut().write_tls(&mut SocketWriter(stream));
        match r {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => super::writable(stream).await?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Encrypts `data`, writing records out whenever rustls's buffer is full.
async fn write_plain(stream: &TcpStream, tls: &RefCell<ServerConnection>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = tls.borrow_mut().writer().write(data)?;
        data = &data[n..];
        if !data.is_empty() {
            flush(stream, tls).await?;
        }
    }
    Ok(())
}

/// Sends a response through TLS. File parts are read in steps of
/// [`PLAIN_CHUNK`] into `scratch`, which the connection keeps.
pub async fn send(
    stream: &TcpStream,
    tls: &RefCell<ServerConnection>,
    resp: Response,
    scratch: &mut Vec<u8>,
) -> io::Result<()> {
    for part in resp.parts {
        match part {
            Part::Mem(b) => write_plain(stream, tls, &b).await?,
            Part::File(slice) => {
                if scratch.len() < PLAIN_CHUNK {
                    scratch.resize(PLAIN_CHUNK, 0);
                }
                let mut position = slice.position;
                let end = slice.position + slice.len;
                while position < end {
                    let want = ((end - position) as usize).min(PLAIN_CHUNK);
                    let got = rustix::io::pread(&*slice.file, &mut scratch[..want], position)?;
                    if got == 0 {
                        return Err(super::short_file());
                    }
                    write_plain(stream, tls, &scratch[..got]).await?;
                    position += got as u64;
                }
            }
        }
    }
    flush(stream, tls).await
}

/// Runs the TLS handshake of a new connection and sets the connection's
/// principal from the client's certificate, if it sent one. Bounded by
/// `sluice.ssl.handshake.timeout.ms` and by shutdown.
pub async fn handshake(shard: &Shard, stream: &TcpStream, conn: &Conn) -> Result<TlsRead, String> {
    let config: Arc<rustls::ServerConfig> = shard.common.tls.clone().ok_or("a TLS listener without a TLS config")?;
    let mut server = ServerConnection::new(config).map_err(|e| e.to_string())?;
    server.set_buffer_limit(Some(PLAIN_CHUNK));
    let mut read = TlsRead {
        tls: Rc::new(RefCell::new(server)),
        cipher: BytesMut::new(),
    };
    let mut reader = stream.clone();
    let work = async {
        loop {
            // Whatever the step, its records go out first (an alert too).
            let fed = if read.tls.borrow().is_handshaking() {
                flush(stream, &read.tls).await.map_err(|e| format!("write: {e}"))?;
                read.read_once(&mut reader, None).await
            } else {
                flush(stream, &read.tls).await.map_err(|e| format!("write: {e}"))?;
                return Ok(());
            };
            match fed {
                Ok(true) => {}
                Ok(false) => return Err("EOF during the TLS handshake".to_string()),
                Err(e) => {
                    // Tell the client why, if rustls has an alert for it.
                    let _ = flush(stream, &read.tls).await;
                    return Err(e);
                }
            }
        }
    };
    let timeout = shard.config().security.ssl.handshake_timeout;
    match race(compio::runtime::time::timeout(timeout, work), shard.stopping.wait()).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(format!("TLS handshake: {e}")),
        Ok(Err(_)) => return Err(format!("TLS handshake not finished within {timeout:?}")),
        Err(()) => return Err("shutting down".into()),
    }
    let subject = read
        .tls
        .borrow()
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|der| crate::security::tls::subject_name(der));
    if let Some(subject) = subject {
        let rules = &shard.config().security.ssl.principal_rules;
        let name = crate::security::tls::map_principal(&subject?, rules)?;
        tracing::debug!(peer = %conn.peer, listener = %conn.listener, principal = %format!("User:{name}"), "TLS client certificate accepted");
        *conn.tls_principal.borrow_mut() = Some(name);
    }
    Ok(read)
}
