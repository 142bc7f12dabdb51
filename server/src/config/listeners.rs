//! Listeners as Kafka names them: `listeners`, `advertised.listeners`,
//! `listener.security.protocol.map` and `inter.broker.listener.name`.
//!
//! The settings may come in any order (a TOML file is applied in name
//! order), so each keeps what it was given and [`resolve`] builds the
//! listeners once all are known.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::{ConfigError, invalid};

/// How a listener's connections are secured, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub const ALL: [Self; 4] = [Self::Plaintext, Self::Ssl, Self::SaslPlaintext, Self::SaslSsl];

    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    /// Kafka's id of the protocol (`SecurityProtocol.id`), as broker
    /// registrations carry it.
    pub fn id(self) -> i16 {
        match self {
            Self::Plaintext => 0,
            Self::Ssl => 1,
            Self::SaslPlaintext => 2,
            Self::SaslSsl => 3,
        }
    }

    pub fn from_id(id: i16) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.id() == id)
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether the connection runs inside TLS.
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether the client must authenticate with SASL first.
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// One listener, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The listener's name, upper case (`PLAINTEXT`, `CLIENT`, ...).
    pub name: String,
    /// Where every shard binds (SO_REUSEPORT).
    pub addr: SocketAddr,
    pub protocol: SecurityProtocol,
    /// What Metadata gives clients that connected through this listener.
    pub advertised_host: String,
    pub advertised_port: u16,
    /// With `sluice.shard.listeners`, each shard's own advertised port
    /// (filled in when the broker binds them).
    pub shard_ports: Vec<u16>,
}

/// One entry of `listeners` or `advertised.listeners` as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// What the listener settings were given, before [`resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    /// `listeners`.
    pub listeners: Vec<ListenerSpec>,
    /// `advertised.listeners`.
    pub advertised: Vec<ListenerSpec>,
    /// `listener.security.protocol.map`; empty: each listener is named
    /// after its protocol.
    pub protocol_map: BTreeMap<String, SecurityProtocol>,
    /// `inter.broker.listener.name`; `None`: the first listener.
    pub inter_broker: Option<String>,
    /// `controller.listener.names`; `None`: the quorum's transport is
    /// PLAINTEXT.
    pub controller: Option<String>,
}

/// The controller quorum's listener: every voter serves it on its entry of
/// `controller.quorum.voters`, and every node connects to the voters
/// through it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerListener {
    /// Its name (`CONTROLLER`); PLAIN's users and the node's own login are
    /// the `listener.name.<name>.…` settings.
    pub name: String,
    pub protocol: SecurityProtocol,
}

impl Default for ControllerListener {
    fn default() -> Self {
        Self {
            name: "CONTROLLER".into(),
            protocol: SecurityProtocol::Plaintext,
        }
    }
}

/// The protocol of listener `name`: the map's entry, or the name itself
/// when the map is empty and the name is a protocol's.
fn protocol_of(s: &ListenerSettings, name: &str) -> Result<SecurityProtocol, ConfigError> {
    match s.protocol_map.get(name) {
        Some(p) => Ok(*p),
        None if s.protocol_map.is_empty() => SecurityProtocol::parse(name).ok_or_else(|| {
            invalid(
                "listener.security.protocol.map",
                format!("listener `{name}` is not named after a security protocol; map it to one"),
            )
        }),
        None => Err(invalid(
            "listener.security.protocol.map",
            format!("does not map listener `{name}`"),
        )),
    }
}

/// The controller quorum's listener. Its address is each voter's entry of
/// `controller.quorum.voters`; `listeners` may name it too (as Kafka's
/// combined nodes do), and Kafka clients are not served on it.
pub fn resolve_controller(s: &ListenerSettings) -> Result<ControllerListener, ConfigError> {
    match &s.controller {
        None => Ok(ControllerListener::default()),
        Some(name) => Ok(ControllerListener {
            name: name.clone(),
            protocol: protocol_of(s, name)?,
        }),
    }
}

impl Default for ListenerSettings {
    fn default() -> Self {
        Self {
            listeners: vec![ListenerSpec {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9092,
            }],
            advertised: Vec::new(),
            protocol_map: BTreeMap::new(),
            inter_broker: None,
            controller: None,
        }
    }
}

/// Parses a comma-separated list of `NAME://host:port` (a bare
/// `host:port` is the `PLAINTEXT` listener). Names are upper-cased;
/// a name given twice is refused.
pub fn parse_specs(key: &str, value: &str) -> Result<Vec<ListenerSpec>, ConfigError> {
    let mut out: Vec<ListenerSpec> = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, rest) = match entry.split_once("://") {
            Some((n, r)) => (n.trim().to_ascii_uppercase(), r),
            None => ("PLAINTEXT".to_string(), entry),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(invalid(
                key,
                format!("`{entry}`: a listener name is letters, digits, `_` and `-`"),
            ));
        }
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid(key, format!("`{entry}`: expected NAME://host:port")))?;
        let port: u16 = port
            .trim()
            .parse()
            .map_err(|e| invalid(key, format!("`{entry}`: port: {e}")))?;
        if out.iter().any(|s| s.name == name) {
            return Err(invalid(key, format!("listener `{name}` is named twice")));
        }
        out.push(ListenerSpec {
            name,
            host: host.trim().trim_matches(['[', ']']).to_string(),
            port,
        });
    }
    if out.is_empty() {
        return Err(invalid(key, "names no listener"));
    }
    Ok(out)
}

/// Parses `NAME:PROTOCOL,...`.
pub fn parse_protocol_map(key: &str, value: &str) -> Result<BTreeMap<String, SecurityProtocol>, ConfigError> {
    let mut out = BTreeMap::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (name, proto) = entry
            .split_once(':')
            .ok_or_else(|| invalid(key, format!("`{entry}`: expected NAME:PROTOCOL")))?;
        let protocol = SecurityProtocol::parse(proto).ok_or_else(|| {
            invalid(
                key,
                format!("`{proto}` is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"),
            )
        })?;
        out.insert(name.trim().to_ascii_uppercase(), protocol);
    }
    Ok(out)
}

/// The address a listener binds: `localhost` is the loopback address and
/// an empty host every address.
fn bind_addr(spec: &ListenerSpec) -> Result<SocketAddr, ConfigError> {
    let host = match spec.host.as_str() {
        "" => "0.0.0.0",
        "localhost" => "127.0.0.1",
        h => h,
    };
    let text = if host.contains(':') {
        format!("[{host}]:{}", spec.port)
    } else {
        format!("{host}:{}", spec.port)
    };
    text.parse().map_err(|e: std::net::AddrParseError| {
        invalid(
            "listeners",
            format!(
                "`{}://{}:{}`: {e} (a listener binds an IP address)",
                spec.name, spec.host, spec.port
            ),
        )
    })
}

/// Builds the listeners from the settings; the inter-broker listener is
/// first.
pub fn resolve(s: &ListenerSettings) -> Result<Vec<Listener>, ConfigError> {
    let mut out = Vec::with_capacity(s.listeners.len());
    for spec in s.listeners.iter().filter(|l| s.controller.as_ref() != Some(&l.name)) {
        let protocol = protocol_of(s, &spec.name)?;
        let addr = bind_addr(spec)?;
        if let Some(other) = out.iter().find(|l: &&Listener| l.addr == addr && addr.port() != 0) {
            return Err(invalid(
                "listeners",
                format!("`{}` and `{}` bind the same address {addr}", other.name, spec.name),
            ));
        }
        let (advertised_host, advertised_port) = match s.advertised.iter().find(|a| a.name == spec.name) {
            Some(a) => (a.host.clone(), a.port),
            None => (
                match addr.ip() {
                    ip if ip.is_unspecified() => "127.0.0.1".to_string(),
                    ip => ip.to_string(),
                },
                spec.port,
            ),
        };
        out.push(Listener {
            name: spec.name.clone(),
            addr,
            protocol,
            advertised_host,
            advertised_port,
            shard_ports: Vec::new(),
        });
    }
    if out.is_empty() {
        return Err(invalid(
            "listeners",
            "names only the controller listener: Kafka clients need one more",
        ));
    }
    if let Some(name) = &s.inter_broker
        && s.controller.as_ref() == Some(name)
    {
        return Err(invalid(
            "inter.broker.listener.name",
            format!("`{name}` is the controller listener (controller.listener.names)"),
        ));
    }
    if let Some(a) = s.advertised.iter().find(|a| !out.iter().any(|l| l.name == a.name)) {
        return Err(invalid(
            "advertised.listeners",
            format!("names `{}`, which is not in listeners", a.name),
        ));
    }
    let inter = match &s.inter_broker {
        Some(name) => out
            .iter()
            .position(|l| &l.name == name)
            .ok_or_else(|| invalid("inter.broker.listener.name", format!("`{name}` is not in listeners")))?,
        None => 0,
    };
    let first = out.remove(inter);
    out.insert(0, first);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(listeners: &str) -> ListenerSettings {
        ListenerSettings {
            listeners: parse_specs("listeners", listeners).unwrap(),
            ..ListenerSettings::default()
        }
    }

    #[test]
    fn listeners_are_named_after_their_protocols_unless_mapped() {
        let s = settings("PLAINTEXT://127.0.0.1:9092,sasl_ssl://0.0.0.0:9093, SSL://[::1]:9094");
        let l = resolve(&s).unwrap();
        assert_eq!(
            l.iter().map(|l| (l.name.as_str(), l.protocol)).collect::<Vec<_>>(),
            vec![
                ("PLAINTEXT", SecurityProtocol::Plaintext),
                ("SASL_SSL", SecurityProtocol::SaslSsl),
                ("SSL", SecurityProtocol::Ssl)
            ]
        );
        // An unspecified address is advertised as the loopback one.
        assert_eq!(
            (l[1].advertised_host.as_str(), l[1].advertised_port),
            ("127.0.0.1", 9093)
        );
        assert_eq!(l[2].addr.to_string(), "[::1]:9094");

        let mut s = settings("CLIENT://127.0.0.1:9092,INTERNAL://127.0.0.1:9093");
        assert!(resolve(&s).is_err(), "names that are no protocol need a map");
        s.protocol_map = parse_protocol_map("m", "client:SASL_SSL,INTERNAL:plaintext").unwrap();
        s.inter_broker = Some("INTERNAL".into());
        s.advertised = parse_specs("advertised.listeners", "CLIENT://kafka.example:19092").unwrap();
        let l = resolve(&s).unwrap();
        assert_eq!(l[0].name, "INTERNAL", "the inter-broker listener comes first");
        assert_eq!(l[1].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(
            (l[1].advertised_host.as_str(), l[1].advertised_port),
            ("kafka.example", 19092)
        );
    }

    #[test]
    fn bad_listener_settings_are_refused() {
        assert!(parse_specs("listeners", "PLAINTEXT://a:1,plaintext://b:2").is_err());
        assert!(parse_specs("listeners", "PLAIN TEXT://a:1").is_err());
        assert!(parse_specs("listeners", "PLAINTEXT://a").is_err());
        assert!(parse_specs("listeners", "").is_err());
        assert!(parse_protocol_map("m", "A:TLS").is_err());
        assert!(
            resolve(&settings("PLAINTEXT://kafka.example:9092")).is_err(),
            "binds an IP"
        );
        assert!(resolve(&settings("PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9092")).is_err());
        let mut s = settings("PLAINTEXT://127.0.0.1:9092");
        s.inter_broker = Some("SSL".into());
        assert!(resolve(&s).is_err());
        let mut s = settings("PLAINTEXT://127.0.0.1:9092");
        s.advertised = parse_specs("a", "SSL://h:1").unwrap();
        assert!(resolve(&s).is_err());
        let mut s = settings("PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9093");
        s.protocol_map = parse_protocol_map("m", "PLAINTEXT:PLAINTEXT").unwrap();
        assert!(resolve(&s).is_err(), "a map given must name every listener");
        // Port 0 twice is two listeners on ports chosen at start.
        assert!(resolve(&settings("PLAINTEXT://127.0.0.1:0,SSL://127.0.0.1:0")).is_ok());
    }
}
