//! A connection between nodes for one request and its answer at a time,
//! plain or inside TLS: what the replica fetchers, the transaction
//! coordinator's markers and the controller quorum's transport speak
//! over. Unlike a client connection (`net::tls`) nothing else reads or
//! writes it meanwhile, so one owner drives rustls directly.
//!
//! Over TLS an answer is copied from the socket's ciphertext into rustls,
//! decrypted into the link's plaintext buffer and copied once more into
//! the buffer handed to the caller; a plain link reads into the caller's
//! buffer directly.

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use compio::BufResult;
use compio::buf::{IntoInner, IoBuf, IoBufMut};
use compio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use rustls_pki_types::ServerName;

/// Ciphertext asked of the socket per read.
const CIPHER_CHUNK: usize = 64 * 1024;

/// One link to or from another node.
#[derive(Debug)]
pub struct Link {
    stream: TcpStream,
    tls: Option<Box<Tls>>,
}

#[derive(Debug)]
struct Tls {
    conn: Connection,
    /// Ciphertext read from the socket, not yet taken by rustls.
    cipher: BytesMut,
    /// Plaintext decrypted, not yet read by the owner.
    plain: BytesMut,
    /// Records to send, sealed by rustls.
    out: Vec<u8>,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Link {
    /// A plain link over `stream`.
    pub fn plain(stream: TcpStream) -> Self {
        Self { stream, tls: None }
    }

    /// Connects to `addr` (`host:port`); with `tls`, runs the handshake
    /// as a client, verifying the other node's certificate for `host`.
    pub async fn connect(addr: &str, tls: Option<&Arc<ClientConfig>>) -> io::Result<Self> {
        let stream = crate::base::sockets::connect_node(addr).await?;
        let _ = stream.set_nodelay(true);
        match tls {
            None => Ok(Self::plain(stream)),
            Some(config) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_matches(['[', ']']);
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{host}: {e}")))?;
                let conn = ClientConnection::new(config.clone(), name).map_err(invalid)?;
                Self::handshake(stream, Connection::Client(conn)).await
            }
        }
    }

    /// Runs the server side of the TLS handshake on an accepted stream.
    pub async fn accept_tls(stream: TcpStream, config: Arc<ServerConfig>) -> io::Result<Self> {
        let conn = ServerConnection::new(config).map_err(invalid)?;
        Self::handshake(stream, Connection::Server(conn)).await
    }

    async fn handshake(stream: TcpStream, conn: Connection) -> io::Result<Self> {
        let mut link = Self {
            stream,
            tls: Some(Box::new(Tls {
                conn,
                cipher: BytesMut::new(),
                plain: BytesMut::new(),
                out: Vec::new(),
            })),
        };
        loop {
            link.flush().await?;
            let handshaking = link.tls.as_ref().is_some_and(|t| t.conn.is_handshaking());
            if !handshaking {
                return Ok(link);
            }
            if let Err(e) = link.read_more().await {
                // Send the alert that says why, if rustls has one.
                let _ = link.flush().await;
                return Err(e);
            }
        }
    }

    /// The first certificate the other side presented, if any.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        self.tls
            .as_ref()
            .and_then(|t| t.conn.peer_certificates())
            .and_then(|c| c.first())
            .map(|c| c.as_ref())
    }

    /// The socket's peer address.
    pub fn peer_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.stream.peer_addr()
    }

    /// Writes out the records rustls has sealed.
    async fn flush(&mut self) -> io::Result<()> {
        let Some(t) = self.tls.as_mut() else { return Ok(()) };
        while t.conn.wants_write() {
            t.conn.write_tls(&mut t.out)?;
        }
        if t.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut t.out);
        let BufResult(r, mut back) = self.stream.write_all(out).await;
        back.clear();
        if let Some(t) = self.tls.as_mut() {
            t.out = back;
        }
        r
    }

    /// Reads once from the socket and feeds rustls, moving what it
    /// decrypts into the plaintext buffer. EOF is an error: the owner
    /// always expects more.
    async fn read_more(&mut self) -> io::Result<()> {
        let t = self.tls.as_mut().ok_or_else(|| invalid("not a TLS link"))?;
        if t.cipher.capacity() - t.cipher.len() < CIPHER_CHUNK {
            t.cipher.reserve(CIPHER_CHUNK);
        }
        let owned = std::mem::take(&mut t.cipher);
        let BufResult(r, back) = self.stream.read(owned.uninit()).await;
        let t = self.tls.as_mut().ok_or_else(|| invalid("not a TLS link"))?;
        t.cipher = back.into_inner();
        if r? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // rustls holds a bounded amount of plaintext: take it as it comes.
        while !t.cipher.is_empty() {
            let n = t.conn.read_tls(&mut &t.cipher[..])?;
            t.cipher.advance(n);
            t.conn.process_new_packets().map_err(invalid)?;
            let mut reader = t.conn.reader();
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(k) => t.plain.extend_from_slice(&chunk[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if n == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Sends `buf` whole.
    pub async fn write_all<B: IoBuf>(&mut self, buf: B) -> io::Result<()> {
        match self.tls.as_mut() {
            None => {
                let BufResult(r, _) = self.stream.write_all(buf).await;
                r
            }
            Some(t) => {
                t.conn.writer().write_all(buf.as_init())?;
                self.flush().await
            }
        }
    }

    /// Reads exactly `N` bytes.
    pub async fn read_array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        if self.tls.is_none() {
            let BufResult(r, a) = self.stream.read_exact([0u8; N]).await;
            return r.map(|_| a);
        }
        let bytes = self.read_vec(N).await?;
        let mut a = [0u8; N];
        a.copy_from_slice(&bytes);
        Ok(a)
    }

    /// Reads exactly `len` bytes into a new buffer.
    pub async fn read_vec(&mut self, len: usize) -> io::Result<Vec<u8>> {
        if self.tls.is_none() {
            let BufResult(r, v) = self.stream.read_exact(Vec::with_capacity(len)).await;
            return r.map(|_| v);
        }
        loop {
            let t = self.tls.as_mut().ok_or_else(|| invalid("not a TLS link"))?;
            if t.plain.len() >= len {
                return Ok(t.plain.split_to(len).to_vec());
            }
            self.read_more().await?;
        }
    }
}
