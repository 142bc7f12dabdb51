//! One request to another broker and its answer, on a connection kept by
//! the caller: what the replica fetchers and the transaction coordinator
//! (its markers) send to other nodes. On an SSL or SASL_SSL inter-broker
//! listener the connection runs inside TLS (the broker's certificate is
//! its client certificate); on a SASL one a new connection first
//! authenticates as the broker's own user.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use sluice_metadata::scram::ScramClient;
use sluice_metadata::security::ScramMechanism;

use crate::config::BrokerConfig;
use crate::config::security::{Login, Mechanism};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use crate::protocol::link::Link;
use crate::util::race;

/// How this broker reaches the inter-broker listener of the others.
#[derive(Debug, Clone, Default)]
pub struct PeerSecurity {
    /// The client side of TLS, when the listener is SSL or SASL_SSL.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The broker's own SASL login, when the listener is SASL.
    pub login: Option<Login>,
}

impl PeerSecurity {
    /// From the inter-broker listener's settings.
    pub fn from_config(config: &BrokerConfig) -> Result<Self, String> {
        let tls = if config.inter_broker().protocol.tls() {
            Some(crate::security::tls::client_config(&config.security.ssl)?)
        } else {
            None
        };
        Ok(Self {
            tls,
            login: config.security.inter_broker.clone(),
        })
    }
}

/// A request to another node: its API, version and who sends it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub key: ApiKey,
    pub version: i16,
    pub client_id: &'a str,
    pub correlation: i32,
    /// The largest answer accepted.
    pub max_answer_bytes: usize,
    pub timeout: Duration,
    /// TLS and the broker's own SASL login on the inter-broker listener:
    /// a new connection runs the handshake and authenticates first.
    pub security: &'a PeerSecurity,
}

/// Sends `req` on `conn` (connecting to `addr` when there is none) and
/// decodes the answer. Any error leaves the connection to the caller,
/// who drops it: its stream position is unknown.
pub async fn call<Req: Encodable, Resp: Decodable>(
    conn: &mut Option<Link>,
    addr: &str,
    c: Call<'_>,
    req: &Req,
) -> Result<Resp, String> {
    let work = async {
        if conn.is_none() {
            let mut s = Link::connect(addr, c.security.tls.as_ref())
                .await
                .map_err(|e| format!("connect: {e}"))?;
            if let Some(login) = &c.security.login {
                authenticate(&mut s, &c, login).await?;
            }
            *conn = Some(s);
        }
        let stream = conn.as_mut().ok_or("no connection")?;
        roundtrip(stream, &c, req).await
    };
    match race(work, compio::runtime::time::sleep(c.timeout)).await {
        Ok(r) => r,
        Err(()) => Err(format!("no answer within {:?}", c.timeout)),
    }
}

/// Sends one request and reads its answer.
async fn roundtrip<Req: Encodable, Resp: Decodable>(
    stream: &mut Link,
    c: &Call<'_>,
    req: &Req,
) -> Result<Resp, String> {
    let frame = encode(c, req)?;
    stream.write_all(frame).await.map_err(|e| format!("send: {e}"))?;
    let len = stream.read_array::<4>().await.map_err(|e| format!("receive: {e}"))?;
    let len = usize::try_from(i32::from_be_bytes(len)).map_err(|_| "negative frame size")?;
    if len > c.max_answer_bytes {
        return Err(format!("answer of {len} bytes is over {}", c.max_answer_bytes));
    }
    let body = stream.read_vec(len).await.map_err(|e| format!("receive: {e}"))?;
    decode(c, Bytes::from(body))
}

/// SaslHandshake v1 and SaslAuthenticate v2 as the broker's own user.
async fn authenticate(stream: &mut Link, c: &Call<'_>, login: &Login) -> Result<(), String> {
    let at = |key: ApiKey, version: i16, correlation: i32| Call {
        key,
        version,
        correlation,
        ..*c
    };
    let mut h = SaslHandshakeRequest::default();
    h.mechanism = StrBytes::from_static_str(login.mechanism.name());
    let r: SaslHandshakeResponse = roundtrip(stream, &at(ApiKey::SaslHandshake, 1, -2), &h).await?;
    if r.error_code != 0 {
        return Err(format!("SASL handshake refused (error {})", r.error_code));
    }
    let mut correlation = -3;
    let mut step = async |token: Vec<u8>| -> Result<Vec<u8>, String> {
        let mut a = SaslAuthenticateRequest::default();
        a.auth_bytes = token.into();
        let r: SaslAuthenticateResponse = roundtrip(stream, &at(ApiKey::SaslAuthenticate, 2, correlation), &a).await?;
        correlation -= 1;
        if r.error_code != 0 {
            return Err(format!(
                "SASL authentication as `{}` refused (error {}): {}",
                login.user,
                r.error_code,
                r.error_message.as_ref().map_or("", |m| m.as_str())
            ));
        }
        Ok(r.auth_bytes.to_vec())
    };
    match login.mechanism {
        Mechanism::Plain => {
            step(format!("\0{}\0{}", login.user, login.password.0).into_bytes()).await?;
        }
        m => {
            let sm = if m == Mechanism::ScramSha256 {
                ScramMechanism::Sha256
            } else {
                ScramMechanism::Sha512
            };
            let mut client = ScramClient::new(sm, &login.user, &login.password.0);
            let first = step(client.first()).await?;
            let last = client.last(&first).map_err(|e| e.to_string())?;
            let fin = step(last).await?;
            client
                .verify(&fin)
                .map_err(|e| format!("the other broker's SCRAM proof: {e}"))?;
        }
    }
    Ok(())
}

fn encode<Req: Encodable>(c: &Call<'_>, req: &Req) -> Result<BytesMut, String> {
    let mut header = RequestHeader::default();
    header.request_api_key = c.key as i16;
    header.request_api_version = c.version;
    header.correlation_id = c.correlation;
    header.client_id = Some(StrBytes::from_string(c.client_id.to_string()));
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    header
        .encode(&mut buf, c.key.request_header_version(c.version))
        .map_err(|e| format!("encoding a {:?} header: {e}", c.key))?;
    req.encode(&mut buf, c.version)
        .map_err(|e| format!("encoding a {:?}: {e}", c.key))?;
    let len = i32::try_from(buf.len() - 4).map_err(|_| format!("{:?} too large", c.key))?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

fn decode<Resp: Decodable>(c: &Call<'_>, mut body: Bytes) -> Result<Resp, String> {
    let header = ResponseHeader::decode(&mut body, c.key.response_header_version(c.version))
        .map_err(|e| format!("decoding a {:?} answer header: {e}", c.key))?;
    if header.correlation_id != c.correlation {
        return Err(format!(
            "answer to request {} where {} was expected",
            header.correlation_id, c.correlation
        ));
    }
    let resp = Resp::decode(&mut body, c.version).map_err(|e| format!("decoding a {:?} answer: {e}", c.key))?;
    if body.has_remaining() {
        return Err(format!("{} bytes after the {:?} answer", body.remaining(), c.key));
    }
    Ok(resp)
}
