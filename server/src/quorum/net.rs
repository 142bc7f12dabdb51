//! The controller quorum's transport: Raft RPCs and forwarded metadata
//! writes between controllers, over TCP on each voter's entry of
//! `controller.quorum.voters`.
//!
//! A frame is a little-endian u32 length and a JSON body. A connection
//! carries one request at a time and its answer; a client keeps one
//! connection per peer and opens a new one after any error.
//!
//! The connection is secured as the controller listener says
//! (`controller.listener.names`, [`Transport`]): inside TLS (the node's
//! certificate is its client certificate), and on a SASL listener the
//! first frame logs in with PLAIN. With an authorizer every request needs
//! CLUSTER_ACTION on the cluster, as Kafka's controller RPCs do: only the
//! cluster's own nodes (super users, in practice) may vote, append,
//! register, heartbeat or read the image.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::sync::Arc;

use compio::BufResult;
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, VoteOf};
use openraft::errors::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::{BasicNode, Raft, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::machine::Machine;
use super::{Command, Heartbeats, MetaRaft, Reply};
use crate::config::BrokerConfig;
use crate::config::listeners::SecurityProtocol;
use crate::image::Image;
use crate::protocol::link::Link;
use crate::security::authorizer::Requester;
use sluice_metadata::security::{Operation, ResourceType};

/// How the quorum's connections are secured: the controller listener's
/// protocol, with what each side needs for it.
#[derive(Debug, Default)]
pub struct Transport {
    /// TLS as a client of the voters, and as a voter.
    client_tls: Option<Arc<rustls::ClientConfig>>,
    server_tls: Option<Arc<rustls::ServerConfig>>,
    /// The controller listener, the node's own login, PLAIN's users, the
    /// authorizer and the delays.
    config: Arc<BrokerConfig>,
}

impl Transport {
    /// From the controller listener's settings.
    pub fn from_config(config: &Arc<BrokerConfig>) -> Result<Self, String> {
        let (client_tls, server_tls) = if config.controller_listener.protocol.tls() {
            (
                Some(crate::security::tls::client_config(&config.security.ssl)?),
                Some(crate::security::tls::server_config(&config.security.ssl)?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            client_tls,
            server_tls,
            config: config.clone(),
        })
    }

    /// The controller listener's name (PLAIN's users are its JAAS line's).
    pub fn listener(&self) -> &str {
        &self.config.controller_listener.name
    }

    fn protocol(&self) -> SecurityProtocol {
        self.config.controller_listener.protocol
    }

    /// Whether requests are authorized: only once the controller listener
    /// is named (`controller.listener.names`); the default transport is
    /// unauthenticated, as it always was, and serves every node.
    fn authorize(&self) -> bool {
        self.config.listener_settings.controller.is_some()
    }

    /// The voter's side of a new connection: TLS, then the login on a SASL
    /// listener. Gives the connection and who it acts for.
    async fn accept(&self, stream: TcpStream) -> Result<(Link, Requester), String> {
        let host = stream.peer_addr().map(|a| a.ip().to_string()).unwrap_or_default();
        let ssl = &self.config.security.ssl;
        let mut link = match &self.server_tls {
            None => Link::plain(stream),
            Some(tls) => compio::runtime::time::timeout(ssl.handshake_timeout, Link::accept_tls(stream, tls.clone()))
                .await
                .map_err(|_| format!("TLS handshake not finished within {:?}", ssl.handshake_timeout))?
                .map_err(|e| format!("TLS handshake: {e}"))?,
        };
        let mut principal = match link.peer_certificate() {
            Some(der) => {
                let subject = crate::security::tls::subject_name(der)?;
                format!(
                    "User:{}",
                    crate::security::tls::map_principal(&subject, &ssl.principal_rules)?
                )
            }
            None => crate::security::ANONYMOUS.to_string(),
        };
        if self.protocol().sasl() {
            let first = compio::runtime::time::timeout(ssl.handshake_timeout, read_frame::<Rpc>(&mut link))
                .await
                .map_err(|_| "no login in time".to_string())?
                .map_err(|e| format!("reading the login: {e}"))?;
            let Rpc::Login {
                mechanism,
                user,
                password,
            } = first
            else {
                return Err("the first request on a SASL controller listener is not a login".into());
            };
            let known = self.config.security.plain_password(self.listener(), &user);
            let ok = mechanism == "PLAIN"
                && known.is_some_and(|k| crate::security::scram::same(k.as_bytes(), password.0.as_bytes()));
            if !ok {
                compio::runtime::time::sleep(Duration::from_millis(
                    self.config.security.failed_authentication_delay_ms,
                ))
                .await;
                let _ = write_frame(
                    &mut link,
                    &RpcReply::Failed("authentication failed: invalid username or password".into()),
                )
                .await;
                return Err(format!("login as `{user}` refused"));
            }
            write_frame(&mut link, &RpcReply::LoggedIn)
                .await
                .map_err(|e| e.to_string())?;
            principal = format!("User:{user}");
        }
        let mut who = Requester::new(&self.config.security.authorizer, principal, host);
        who.unrestricted |= !self.authorize();
        Ok((link, who))
    }

    /// The client's side of a new connection to the voter at `addr`.
    async fn connect(&self, addr: &str) -> io::Result<Link> {
        let mut link = Link::connect(addr, self.client_tls.as_ref()).await?;
        if let Some(login) = &self.config.security.controller_login {
            let rpc = Rpc::Login {
                mechanism: login.mechanism.name().to_string(),
                user: login.user.clone(),
                password: Password(login.password.0.clone()),
            };
            write_frame(&mut link, &rpc).await?;
            match read_frame::<RpcReply>(&mut link).await? {
                RpcReply::LoggedIn => {}
                RpcReply::Failed(why) => return Err(io::Error::new(io::ErrorKind::PermissionDenied, why)),
                other => return Err(io::Error::other(format!("unexpected answer to a login: {other:?}"))),
            }
        }
        Ok(link)
    }
}

/// A password in a login frame, kept out of logs.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[hidden]")
    }
}

/// A voter's answer to an observer: the leader it knows, and the applied
/// image with its log id when newer than what the observer has.
pub type ImageAnswer = (Option<u64>, Option<(Option<LogIdOf<MetaRaft>>, Image)>);

/// Frames above this are refused.
const MAX_FRAME: usize = 256 << 20;

#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
enum Rpc {
    Append(AppendEntriesRequest<MetaRaft>),
    Vote(VoteRequest<MetaRaft>),
    Snapshot {
        vote: VoteOf<MetaRaft>,
        meta: SnapshotMetaOf<MetaRaft>,
        data: String,
    },
    /// A metadata write from a controller that does not lead.
    Write(Command),
    /// A broker is alive, with the epoch of its registration.
    Heartbeat {
        broker: i32,
        epoch: i64,
    },
    /// An observer asks for the applied image if it is newer than the
    /// entry index it has.
    Image {
        known: Option<u64>,
    },
    /// The first frame on a SASL controller listener.
    Login {
        mechanism: String,
        user: String,
        password: Password,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(bound = "")]
enum RpcReply {
    Append(AppendEntriesResponse<MetaRaft>),
    Vote(VoteResponse<MetaRaft>),
    Snapshot(SnapshotResponse<MetaRaft>),
    Write(Reply),
    Heartbeat,
    /// The leader this voter knows, and its image when newer.
    Image {
        leader: Option<u64>,
        newer: Option<(Option<LogIdOf<MetaRaft>>, Box<Image>)>,
    },
    /// The receiver could not serve the request (it is shutting down, it
    /// no longer leads, the sender may not ask it); the text says why.
    Failed(String),
    /// The login was accepted.
    LoggedIn,
}

async fn write_frame<T: Serialize>(stream: &mut Link, value: &T) -> io::Result<()> {
    let body = serde_json::to_vec(value).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(|_| io::Error::other("frame above 4 GiB"))?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&body);
    stream.write_all(buf).await
}

async fn read_frame<T: DeserializeOwned>(stream: &mut Link) -> io::Result<T> {
    let len = stream.read_array::<4>().await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("controller frame of {len} bytes"),
        ));
    }
    let body = stream.read_vec(len).await?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Serves the quorum's RPCs on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    raft: Raft<MetaRaft, Machine>,
    machine: Machine,
    heartbeats: Heartbeats,
    transport: Arc<Transport>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a controller connection");
                compio::runtime::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let raft = raft.clone();
        let heartbeats = heartbeats.clone();
        let machine = machine.clone();
        let transport = transport.clone();
        compio::runtime::spawn(async move {
            let (link, who) = match transport.accept(stream).await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::info!(%peer, listener = %transport.listener(), error = %e, "controller connection refused");
                    return;
                }
            };
            let mut carried = None;
            let authorizer = &transport.config.security.authorizer;
            if let Err(e) = serve_one(link, &raft, &machine, &heartbeats, &mut carried, (&who, authorizer)).await
                && e.kind() != io::ErrorKind::UnexpectedEof
            {
                tracing::debug!(%peer, error = %e, "controller connection closed");
            }
            tracing::debug!(%peer, ?carried, "controller connection ended");
            if let Some((broker, epoch)) = carried {
                probe_gone(&machine, &heartbeats, broker, epoch).await;
            }
        })
        .detach();
    }
}

/// The check that a broker is gone: how long it waits for a connection or
/// an answer, and how many times it looks.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
const PROBE_ATTEMPTS: u32 = 5;
/// ApiVersions v0 with correlation id 1 and no client id: any Kafka
/// broker that serves answers it at once.
const PROBE_REQUEST: [u8; 14] = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];

/// The connection that carried a broker's heartbeats has closed: if its
/// registered address now refuses connections, its process is gone (a
/// crash or kill, not a pause or a cut link, which refuse nothing), and
/// the controller may fence it without waiting out its session.
///
/// A dead process's listener can outlive it briefly (its ring's pending
/// accept holds it while the kernel tears the ring down) and take a
/// connection that nobody will serve: the check asks for the broker's API
/// versions, and looks again while it gets no answer. An answer ends the
/// check (alive); so does a connection that neither fails nor is refused
/// within the attempts (a paused process or a lost host: the session
/// decides).
pub(super) async fn probe_gone(machine: &Machine, heartbeats: &Heartbeats, broker: i32, epoch: i64) {
    for attempt in 0..PROBE_ATTEMPTS {
        // Its registration may not have reached this voter's image yet
        // (a broker killed right after it registered): look again.
        let addr = machine
            .state
            .borrow()
            .image
            .brokers
            .get(&broker)
            .map(|b| format!("{}:{}", b.host, b.port));
        tracing::debug!(broker, attempt, ?addr, "probe");
        if let Some(addr) = addr {
            match compio::runtime::time::timeout(PROBE_TIMEOUT, crate::base::sockets::connect_node(&addr)).await {
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    tracing::info!(broker, %addr, "its heartbeat connection closed and its address refuses connections");
                    heartbeats.borrow_mut().gone.insert(broker, (epoch, Instant::now()));
                    return;
                }
                Ok(Ok(mut stream)) => {
                    let asked = async {
                        let BufResult(w, _) = stream.write_all(PROBE_REQUEST.to_vec()).await;
                        w?;
                        let BufResult(r, _) = stream.read(Vec::with_capacity(4)).await;
                        r
                    };
                    if let Ok(Ok(n)) = compio::runtime::time::timeout(PROBE_TIMEOUT, asked).await
                        && n > 0
                    {
                        tracing::debug!(broker, "probe: it answers");
                        return;
                    }
                }
                Ok(Err(e)) => tracing::debug!(broker, error = %e, "probe: connect failed"),
                // Not even a connection within the time: the session decides.
                Err(_) => return,
            }
        }
        compio::runtime::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Serves one connection's RPCs in order. `carried` is the broker whose
/// heartbeats came on it, with the epoch of the last one.
async fn serve_one(
    mut stream: Link,
    raft: &Raft<MetaRaft, Machine>,
    machine: &Machine,
    heartbeats: &Heartbeats,
    carried: &mut Option<(i32, i64)>,
    (who, authorizer): (&Requester, &crate::config::security::AuthorizerConfig),
) -> io::Result<()> {
    loop {
        let rpc: Rpc = read_frame(&mut stream).await?;
        let allowed = who.unrestricted || {
            let security = machine.state.borrow().image.security.clone();
            who.allows(
                &security,
                authorizer,
                Operation::ClusterAction,
                ResourceType::Cluster,
                crate::security::authorizer::CLUSTER_RESOURCE,
            )
        };
        if !allowed {
            tracing::warn!(principal = %who.principal, host = %who.host, "a controller request without CLUSTER_ACTION on the cluster refused");
            let why = format!("{} may not act for the cluster (CLUSTER_ACTION)", who.principal);
            write_frame(&mut stream, &RpcReply::Failed(why)).await?;
            return Ok(());
        }
        let reply = match rpc {
            Rpc::Append(req) => raft
                .append_entries(req)
                .await
                .map_or_else(|e| RpcReply::Failed(e.to_string()), RpcReply::Append),
            Rpc::Vote(req) => raft
                .vote(req)
                .await
                .map_or_else(|e| RpcReply::Failed(e.to_string()), RpcReply::Vote),
            Rpc::Snapshot { vote, meta, data } => {
                let snapshot = openraft::Snapshot {
                    meta,
                    snapshot: data.into_bytes(),
                };
                raft.install_full_snapshot(vote, snapshot)
                    .await
                    .map_or_else(|e| RpcReply::Failed(e.to_string()), RpcReply::Snapshot)
            }
            Rpc::Write(command) => match raft.client_write(command).await {
                Ok(r) => RpcReply::Write(r.data),
                Err(e) => RpcReply::Failed(e.to_string()),
            },
            Rpc::Heartbeat { broker, epoch } => {
                heartbeats.borrow_mut().beats.insert(broker, (epoch, Instant::now()));
                *carried = Some((broker, epoch));
                RpcReply::Heartbeat
            }
            Rpc::Image { known } => {
                use openraft::async_runtime::WatchReceiver;
                let leader = raft.metrics().borrow_watched().current_leader;
                let st = machine.state.borrow();
                let newer = (st.applied.map(|l| l.index) > known).then(|| (st.applied, Box::new(st.image.clone())));
                RpcReply::Image { leader, newer }
            }
            Rpc::Login { .. } => RpcReply::Failed("already logged in".into()),
        };
        write_frame(&mut stream, &reply).await?;
    }
}

/// A client of one peer.
#[derive(Debug)]
pub struct Peer {
    addr: String,
    conn: Option<Link>,
    transport: Arc<Transport>,
}

impl Peer {
    pub fn new(addr: String, transport: Arc<Transport>) -> Self {
        Self {
            addr,
            conn: None,
            transport,
        }
    }

    async fn call_inner(&mut self, rpc: &Rpc) -> io::Result<RpcReply> {
        let mut stream = match self.conn.take() {
            Some(s) => s,
            None => {
                let addr: SocketAddr = self
                    .addr
                    .parse()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{}: {e}", self.addr)))?;
                self.transport.connect(&addr.to_string()).await?
            }
        };
        write_frame(&mut stream, rpc).await?;
        let reply = read_frame(&mut stream).await?;
        self.conn = Some(stream);
        Ok(reply)
    }

    /// Sends `rpc` and waits up to `ttl` for the answer.
    async fn call(&mut self, rpc: &Rpc, ttl: Duration) -> Result<RpcReply, String> {
        match compio::runtime::time::timeout(ttl, self.call_inner(rpc)).await {
            Ok(Ok(RpcReply::Failed(why))) => Err(why),
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => {
                self.conn = None;
                Err(format!("{}: {e}", self.addr))
            }
            Err(_) => {
                self.conn = None;
                Err(format!("{}: no answer within {ttl:?}", self.addr))
            }
        }
    }

    /// [`Peer::call`], taking the answer of the kind `pick` accepts; any
    /// other answer is an error.
    async fn ask<T>(
        &mut self,
        rpc: &Rpc,
        ttl: Duration,
        pick: fn(RpcReply) -> Result<T, RpcReply>,
    ) -> Result<T, String> {
        pick(self.call(rpc, ttl).await?).map_err(|other| format!("unexpected answer {other:?}"))
    }

    /// Tells the leader at this peer that `broker` is alive.
    pub async fn heartbeat(&mut self, broker: i32, epoch: i64, ttl: Duration) -> Result<(), String> {
        self.ask(&Rpc::Heartbeat { broker, epoch }, ttl, |r| match r {
            RpcReply::Heartbeat => Ok(()),
            other => Err(other),
        })
        .await
    }

    /// The leader the voter at this peer knows, and its applied image when
    /// it is past entry `known`.
    pub async fn image(&mut self, known: Option<u64>, ttl: Duration) -> Result<ImageAnswer, String> {
        self.ask(&Rpc::Image { known }, ttl, |r| match r {
            RpcReply::Image { leader, newer } => Ok((leader, newer.map(|(at, image)| (at, *image)))),
            other => Err(other),
        })
        .await
    }

    /// The address this peer was made for.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Forwards a metadata write to the leader at this peer.
    pub async fn write(&mut self, command: Command, ttl: Duration) -> Result<Reply, String> {
        self.ask(&Rpc::Write(command), ttl, |r| match r {
            RpcReply::Write(r) => Ok(r),
            other => Err(other),
        })
        .await
    }
}

fn unreachable(why: String) -> Unreachable<MetaRaft> {
    Unreachable::from_string(why)
}

impl RaftNetworkV2<MetaRaft> for Peer {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<MetaRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<MetaRaft>, RPCError<MetaRaft>> {
        self.ask(&Rpc::Append(rpc), option.hard_ttl(), |r| match r {
            RpcReply::Append(a) => Ok(a),
            other => Err(other),
        })
        .await
        .map_err(|why| RPCError::Unreachable(unreachable(why)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<MetaRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<MetaRaft>, RPCError<MetaRaft>> {
        self.ask(&Rpc::Vote(rpc), option.hard_ttl(), |r| match r {
            RpcReply::Vote(v) => Ok(v),
            other => Err(other),
        })
        .await
        .map_err(|why| RPCError::Unreachable(unreachable(why)))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<MetaRaft>,
        snapshot: SnapshotOf<MetaRaft, Vec<u8>>,
        _cancel: impl Future<Output = ReplicationClosed> + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<MetaRaft>, StreamingError<MetaRaft>> {
        let data = String::from_utf8(snapshot.snapshot)
            .map_err(|e| StreamingError::Unreachable(unreachable(format!("snapshot is not JSON: {e}"))))?;
        let rpc = Rpc::Snapshot {
            vote,
            meta: snapshot.meta,
            data,
        };
        self.ask(&rpc, option.hard_ttl(), |r| match r {
            RpcReply::Snapshot(s) => Ok(s),
            other => Err(other),
        })
        .await
        .map_err(|why| StreamingError::Unreachable(unreachable(why)))
    }
}

/// Makes a [`Peer`] for each voter the library talks to.
#[derive(Debug, Clone, Default)]
pub struct Peers(pub Arc<Transport>);

impl RaftNetworkFactory<MetaRaft> for Peers {
    type Network = Peer;

    async fn new_client(&mut self, _target: u64, node: &BasicNode) -> Peer {
        Peer::new(node.addr.clone(), self.0.clone())
    }
}
