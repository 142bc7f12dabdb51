//! Sockets every layer opens the same way: listeners (the client port on
//! every shard, the quorum port) and connections to other nodes (replica
//! fetchers, quorum peers) from the node's outbound address.

use std::io;

use compio::net::TcpStream;

/// A non-blocking listening socket on `addr` with SO_REUSEADDR (a port
/// whose old connections sit in TIME_WAIT binds at once) and, with
/// `reuse_port`, SO_REUSEPORT (every shard binds the client port; without
/// it a second listener on the port is refused).
pub fn listen_socket(addr: std::net::SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The local address this process's connections to other nodes start
/// from (`sluice.outbound.address`), set once at start-up.
static OUTBOUND: std::sync::OnceLock<std::net::IpAddr> = std::sync::OnceLock::new();

/// Makes connections to other nodes start from `ip`. The first call wins;
/// a process is one node.
pub fn set_outbound_address(ip: std::net::IpAddr) {
    let _ = OUTBOUND.set(ip);
}

/// Connects to another node (`host:port`), from the outbound address when
/// one is set.
pub async fn connect_node(addr: &str) -> io::Result<TcpStream> {
    let Some(&local) = OUTBOUND.get() else {
        return TcpStream::connect(addr).await;
    };
    use compio::net::ToSocketAddrsAsync;
    let mut last = io::Error::new(io::ErrorKind::InvalidInput, format!("{addr}: no address"));
    for remote in addr.to_socket_addrs_async().await? {
        let socket = if remote.is_ipv4() {
            compio::net::TcpSocket::new_v4().await?
        } else {
            compio::net::TcpSocket::new_v6().await?
        };
        socket.bind(std::net::SocketAddr::new(local, 0)).await?;
        match socket.connect(remote).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}
