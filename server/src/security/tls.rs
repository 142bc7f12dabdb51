//! TLS for SSL and SASL_SSL listeners, with rustls: the server config
//! built from the PEM key store and trust store, a certificate that is
//! reloaded when its file changes, and the principal of a client
//! certificate (`ssl.principal.mapping.rules`); and the client config of
//! the broker's own connections to other nodes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::ResolvesClientCert;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::config::security::{ClientAuth, PrincipalRule, SslConfig};

/// Reads the key store: a PEM file holding the certificate chain (the
/// broker's own certificate first) and its private key.
fn load_certified_key(path: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let shown = path.display();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("ssl.keystore.location {shown}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("ssl.keystore.location {shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("ssl.keystore.location {shown}: no certificate"));
    }
    let key = PrivateKeyDer::from_pem_file(path)
        .map_err(|e| format!("ssl.keystore.location {shown}: no usable private key ({e})"))?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| format!("ssl.keystore.location {shown}: {e}"))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The broker's certificate, read again when its file changes: each
/// handshake looks at the file's modification time, at most once every
/// `check_every`. A file that no longer loads keeps the certificate in
/// use (and says so in the log).
#[derive(Debug)]
struct Reloading {
    path: PathBuf,
    check_every: Duration,
    provider: Arc<CryptoProvider>,
    current: Mutex<Current>,
}

#[derive(Debug)]
struct Current {
    checked: Instant,
    modified: Option<SystemTime>,
    key: Arc<CertifiedKey>,
}

impl Reloading {
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        // Only handshakes take this lock, never a request.
        let mut c = self.current.lock().ok()?;
        if c.checked.elapsed() >= self.check_every {
            c.checked = Instant::now();
            let now = modified(&self.path);
            if now != c.modified {
                match load_certified_key(&self.path, &self.provider) {
                    Ok(key) => {
                        tracing::info!(path = %self.path.display(), "reloaded the TLS certificate");
                        c.key = Arc::new(key);
                        c.modified = now;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "the changed key store does not load; keeping the certificate in use")
                    }
                }
            }
        }
        Some(c.key.clone())
    }

    fn open(path: &Path, check_every: Duration, provider: &Arc<CryptoProvider>) -> Result<Self, String> {
        let key = load_certified_key(path, provider)?;
        Ok(Self {
            path: path.to_path_buf(),
            check_every,
            provider: provider.clone(),
            current: Mutex::new(Current {
                checked: Instant::now(),
                modified: modified(path),
                key: Arc::new(key),
            }),
        })
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// The broker's certificate is also its client certificate when it
/// connects to another node over TLS.
impl ResolvesClientCert for Reloading {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn provider() -> Arc<CryptoProvider> {
    // ring, not aws-lc-rs: no C toolchain beyond `cc` and a shorter build
    // (ADR 0022). rustls marks ring's provider deprecated because ring has
    // no post-quantum key exchange.
    #[allow(deprecated)]
    Arc::new(rustls::crypto::ring::default_provider())
}

fn versions(c: &SslConfig) -> Vec<&'static rustls::SupportedProtocolVersion> {
    let mut versions = Vec::new();
    if c.tls12 {
        versions.push(&rustls::version::TLS12);
    }
    if c.tls13 {
        versions.push(&rustls::version::TLS13);
    }
    versions
}

/// The certificates of the trust store.
fn load_roots(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs =
        CertificateDer::pem_file_iter(path).map_err(|e| format!("ssl.truststore.location {}: {e}", path.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("ssl.truststore.location {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("ssl.truststore.location {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("ssl.truststore.location {}: no certificate", path.display()));
    }
    Ok(roots)
}

/// Checks another node's certificate chain and dates but not the name it
/// was issued for (`ssl.endpoint.identification.algorithm` empty).
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The rustls client config of the broker's own TLS connections (to the
/// inter-broker listener of other brokers, to the controllers): the trust
/// store verifies the other node, the key store is this broker's client
/// certificate.
pub fn client_config(c: &SslConfig) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let truststore = c
        .truststore
        .as_ref()
        .ok_or("TLS between the cluster's nodes needs ssl.truststore.location (the authorities that sign the nodes' certificates)")?;
    let roots = Arc::new(load_roots(truststore)?);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(c))
        .map_err(|e| format!("ssl.enabled.protocols: {e}"))?;
    let builder = if c.verify_hostname {
        builder.with_root_certificates(roots)
    } else {
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| format!("ssl.truststore.location: {e}"))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyName(verifier)))
    };
    let config = match &c.keystore {
        Some(path) => builder.with_client_cert_resolver(Arc::new(Reloading::open(path, c.reload_check, &provider)?)),
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The rustls server config of every TLS listener.
pub fn server_config(c: &SslConfig) -> Result<Arc<ServerConfig>, String> {
    let provider = provider();
    let keystore = c
        .keystore
        .as_ref()
        .ok_or("a TLS listener needs ssl.keystore.location")?;
    let resolver = Reloading::open(keystore, c.reload_check, &provider)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(c))
        .map_err(|e| format!("ssl.enabled.protocols: {e}"))?;
    let builder = match c.client_auth {
        ClientAuth::None => builder.with_no_client_auth(),
        auth => {
            let path = c
                .truststore
                .as_ref()
                .ok_or("ssl.client.auth requested or required needs ssl.truststore.location")?;
            let roots = load_roots(path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Requested {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| format!("ssl.truststore.location: {e}"))?)
        }
    };
    Ok(Arc::new(builder.with_cert_resolver(Arc::new(resolver))))
}

/// The short names RFC 2253 gives attribute types; others are written as
/// their dotted OID.
fn attribute_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// A value escaped as RFC 2253 writes it.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, ch) in value.chars().enumerate() {
        let special = matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (ch == ' ' || ch == '#'))
            || (i + 1 == value.chars().count() && ch == ' ');
        if special {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// The subject of a DER certificate as Kafka's default principal builder
/// writes it (Java's `X500Principal.getName()`, RFC 2253): the most
/// specific name first, `CN=alice,OU=eng,O=Example,C=US`.
pub fn subject_name(der: &[u8]) -> Result<String, String> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("the client certificate does not parse: {e}"))?;
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        let mut parts = Vec::new();
        for attr in rdn.iter() {
            let oid = attr.attr_type().to_id_string();
            let value = attr
                .as_str()
                .map_err(|e| format!("a subject attribute {oid} is not a string: {e}"))?;
            let name = attribute_name(&oid).map_or(oid.clone(), str::to_string);
            parts.push(format!("{name}={}", escape(value)));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Ok(rdns.join(","))
}

/// Applies `ssl.principal.mapping.rules` to a subject name: the first rule
/// whose pattern matches the whole name gives the principal's name. None
/// matching refuses the client, as Kafka does.
pub fn map_principal(name: &str, rules: &[PrincipalRule]) -> Result<String, String> {
    for rule in rules {
        match rule {
            PrincipalRule::Default => return Ok(name.to_string()),
            PrincipalRule::Rule {
                pattern,
                replacement,
                case,
            } => {
                if let Some(caps) = pattern.captures(name)
                    && caps.get(0).is_some_and(|m| m.start() == 0 && m.end() == name.len())
                {
                    let mut out = String::new();
                    caps.expand(replacement, &mut out);
                    return Ok(match case {
                        Some('L') => out.to_lowercase(),
                        Some('U') => out.to_uppercase(),
                        _ => out,
                    });
                }
            }
        }
    }
    Err(format!("no ssl.principal.mapping.rules rule applies to `{name}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::security::parse_principal_rules;

    #[test]
    fn principal_rules_as_kafka_writes_them() {
        let rules = parse_principal_rules(
            "k",
            r"RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/, RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L, DEFAULT",
        )
        .unwrap();
        assert_eq!(
            map_principal("CN=kafka1,OU=ServiceUsers,O=Org,C=US", &rules).unwrap(),
            "kafka1"
        );
        assert_eq!(
            map_principal(
                "CN=Duke,OU=JavaSoft,O=Sun Microsystems,L=Santa Clara,ST=CA,C=US",
                &rules
            )
            .unwrap(),
            "duke@javasoft"
        );
        assert_eq!(map_principal("CN=other", &rules).unwrap(), "CN=other");
        let strict = parse_principal_rules("k", r"RULE:^CN=([^,]*)$/$1/U").unwrap();
        assert_eq!(map_principal("CN=alice", &strict).unwrap(), "ALICE");
        assert!(map_principal("CN=alice,O=x", &strict).is_err());
        assert!(parse_principal_rules("k", "RULE:broken").is_err());
        assert!(parse_principal_rules("k", "NOPE").is_err());
    }

    #[test]
    fn values_are_escaped_as_rfc_2253_writes_them() {
        assert_eq!(escape("a,b"), "a\\,b");
        assert_eq!(escape(" x "), "\\ x\\ ");
        assert_eq!(escape("#1"), "\\#1");
        assert_eq!(escape("plain"), "plain");
    }
}
