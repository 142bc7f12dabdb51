//! The client side of a secured listener for the tools: TLS (rustls) and
//! SASL (PLAIN, SCRAM-SHA-256/512), configured with Kafka's client
//! property names, as `--command-config FILE` gives them:
//!
//! ```text
//! security.protocol=SASL_SSL
//! sasl.mechanism=SCRAM-SHA-512
//! sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="admin-secret";
//! ssl.truststore.location=/etc/sluice/ca.pem
//! ```
//!
//! librdkafka's names are taken too (`sasl.mechanisms`, `sasl.username`,
//! `sasl.password`, `ssl.ca.location`, `ssl.certificate.location`,
//! `ssl.key.location`). Stores are PEM files.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sluice_metadata::scram::ScramClient;
use sluice_metadata::security::ScramMechanism;

use crate::{Connection, Error};

/// How to reach a secured listener.
#[derive(Debug, Clone, Default)]
pub struct ClientSecurity {
    /// TLS, when the protocol is SSL or SASL_SSL.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// SASL mechanism, user and password, when SASL_*.
    pub sasl: Option<(String, String, String)>,
}

/// The `username="..."` and `password="..."` options of a JAAS line.
fn jaas_option(jaas: &str, name: &str) -> Option<String> {
    let start = jaas.find(&format!("{name}=\""))? + name.len() + 2;
    let end = jaas[start..].find('"')?;
    Some(jaas[start..start + end].to_string())
}

impl ClientSecurity {
    /// Reads a Java-style properties file (`key=value` lines, `#`
    /// comments).
    pub fn from_file(path: &std::path::Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Protocol(format!("--command-config {}: {e}", path.display())))?;
        let props: std::collections::BTreeMap<String, String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        Self::from_properties(&props)
    }

    /// From Kafka (or librdkafka) client properties.
    pub fn from_properties(props: &std::collections::BTreeMap<String, String>) -> Result<Self, Error> {
        let get = |k: &str| props.get(k).map(String::as_str);
        let bad = |m: String| Error::Protocol(format!("client security: {m}"));
        let protocol = get("security.protocol").unwrap_or("PLAINTEXT").to_ascii_uppercase();
        let (tls, sasl) = match protocol.as_str() {
            "PLAINTEXT" => (false, false),
            "SSL" => (true, false),
            "SASL_PLAINTEXT" => (false, true),
            "SASL_SSL" => (true, true),
            other => return Err(bad(format!("security.protocol `{other}`"))),
        };
        let mut out = Self::default();
        if sasl {
            let mechanism = get("sasl.mechanism")
                .or(get("sasl.mechanisms"))
                .unwrap_or("GSSAPI")
                .to_string();
            let jaas = get("sasl.jaas.config").unwrap_or("");
            let user = get("sasl.username")
                .map(str::to_string)
                .or_else(|| jaas_option(jaas, "username"));
            let password = get("sasl.password")
                .map(str::to_string)
                .or_else(|| jaas_option(jaas, "password"));
            let (Some(user), Some(password)) = (user, password) else {
                return Err(bad(
                    "a SASL protocol needs a user and password (sasl.jaas.config, or sasl.username and sasl.password)"
                        .into(),
                ));
            };
            if !matches!(mechanism.as_str(), "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") {
                return Err(bad(format!(
                    "sasl.mechanism `{mechanism}`: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                )));
            }
            out.sasl = Some((mechanism, user, password));
        }
        if tls {
            #[allow(deprecated)] // ring: see the broker's ADR 0022
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut roots = rustls::RootCertStore::empty();
            let ca = get("ssl.truststore.location")
                .or(get("ssl.ca.location"))
                .ok_or_else(|| bad("TLS needs ssl.truststore.location (a PEM file)".into()))?;
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(format!("{ca}: {e}")))? {
                roots
                    .add(cert.map_err(|e| bad(format!("{ca}: {e}")))?)
                    .map_err(|e| bad(format!("{ca}: {e}")))?;
            }
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| bad(e.to_string()))?
                .with_root_certificates(roots);
            // A client certificate: one PEM key store (Java's), or a
            // certificate and a key file (librdkafka's).
            let (cert, key) = match (
                get("ssl.keystore.location"),
                get("ssl.certificate.location"),
                get("ssl.key.location"),
            ) {
                (Some(both), _, _) => (Some(both), Some(both)),
                (None, Some(c), Some(k)) => (Some(c), Some(k)),
                _ => (None, None),
            };
            let config = match (cert, key) {
                (Some(c), Some(k)) => {
                    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(c)
                        .map_err(|e| bad(format!("{c}: {e}")))?
                        .collect::<Result<_, _>>()
                        .map_err(|e| bad(format!("{c}: {e}")))?;
                    let key = PrivateKeyDer::from_pem_file(k).map_err(|e| bad(format!("{k}: {e}")))?;
                    builder
                        .with_client_auth_cert(chain, key)
                        .map_err(|e| bad(e.to_string()))?
                }
                _ => builder.with_no_client_auth(),
            };
            out.tls = Some(Arc::new(config));
        }
        Ok(out)
    }

    pub fn is_plaintext(&self) -> bool {
        self.tls.is_none() && self.sasl.is_none()
    }
}

/// A connection's byte stream: TCP, or TLS over it.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => s.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}

/// Wraps `tcp` in TLS for `host` when asked.
pub(crate) fn wrap(tcp: TcpStream, host: &str, security: &ClientSecurity) -> Result<Stream, Error> {
    let Some(config) = &security.tls else {
        return Ok(Stream::Plain(tcp));
    };
    let name = ServerName::try_from(host.to_string()).map_err(|e| Error::Protocol(format!("{host}: {e}")))?;
    let conn = rustls::ClientConnection::new(config.clone(), name).map_err(|e| Error::Protocol(e.to_string()))?;
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
}

/// SaslHandshake v1 and SaslAuthenticate v2 with the connection's
/// mechanism.
pub(crate) fn authenticate(conn: &mut Connection, security: &ClientSecurity) -> Result<(), Error> {
    let Some((mechanism, user, password)) = &security.sasl else {
        return Ok(());
    };
    let refused = |what: &str, code: i16, msg: Option<&StrBytes>| {
        Error::Protocol(format!(
            "{what} refused (error {code}){}",
            msg.map(|m| format!(": {}", m.as_str())).unwrap_or_default()
        ))
    };
    let mut h = SaslHandshakeRequest::default();
    h.mechanism = StrBytes::from_string(mechanism.clone());
    let r: SaslHandshakeResponse = conn.call(ApiKey::SaslHandshake, 1, &h)?;
    if r.error_code != 0 {
        return Err(refused("the SASL mechanism", r.error_code, None));
    }
    let mut step = |token: Vec<u8>| -> Result<Vec<u8>, Error> {
        let mut a = SaslAuthenticateRequest::default();
        a.auth_bytes = token.into();
        let r: SaslAuthenticateResponse = conn.call(ApiKey::SaslAuthenticate, 2, &a)?;
        if r.error_code != 0 {
            return Err(refused("SASL authentication", r.error_code, r.error_message.as_ref()));
        }
        Ok(r.auth_bytes.to_vec())
    };
    match mechanism.as_str() {
        "PLAIN" => {
            step(format!("\0{user}\0{password}").into_bytes())?;
        }
        m => {
            let m = if m == "SCRAM-SHA-256" {
                ScramMechanism::Sha256
            } else {
                ScramMechanism::Sha512
            };
            let mut client = ScramClient::new(m, user, password);
            let first = step(client.first())?;
            let last = client.last(&first).map_err(|e| Error::Protocol(e.to_string()))?;
            let fin = step(last)?;
            client
                .verify(&fin)
                .map_err(|e| Error::Protocol(format!("the broker's SCRAM proof: {e}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_as_kafka_and_librdkafka_name_them() {
        let props = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let s = ClientSecurity::from_properties(&props(&[
            ("security.protocol", "SASL_PLAINTEXT"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            (
                "sasl.jaas.config",
                r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="s3cret";"#,
            ),
        ]))
        .unwrap();
        assert_eq!(s.sasl, Some(("SCRAM-SHA-512".into(), "admin".into(), "s3cret".into())));
        assert!(s.tls.is_none());
        let s = ClientSecurity::from_properties(&props(&[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanisms", "PLAIN"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ]))
        .unwrap();
        assert_eq!(s.sasl, Some(("PLAIN".into(), "u".into(), "p".into())));
        assert!(ClientSecurity::from_properties(&props(&[("security.protocol", "SASL_PLAINTEXT")])).is_err());
        assert!(
            ClientSecurity::from_properties(&props(&[("security.protocol", "SSL")])).is_err(),
            "no trust store"
        );
        assert!(ClientSecurity::from_properties(&props(&[("security.protocol", "TLS")])).is_err());
        assert!(ClientSecurity::from_properties(&props(&[])).unwrap().is_plaintext());
    }
}
