//! Authentication settings: the SASL mechanisms, PLAIN's users, session
//! lifetimes and the delay after a failed authentication.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::listeners::ControllerListener;
use super::{ConfigError, Listener, invalid};

/// A SASL mechanism the broker can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub const ALL: [Self; 3] = [Self::Plain, Self::ScramSha256, Self::ScramSha512];

    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == s.trim())
    }
}

/// A SASL login: the mechanism, the user and the password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login {
    pub mechanism: Mechanism,
    pub user: String,
    pub password: Secret,
}

/// A password that `Debug` does not print.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[hidden]")
    }
}

/// Authentication settings, with Kafka's names where Kafka has them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityConfig {
    /// `sasl.enabled.mechanisms`, in the order given.
    pub sasl_mechanisms: Vec<Mechanism>,
    /// PLAIN's users and passwords by listener name (upper case), from
    /// `listener.name.<listener>.plain.sasl.jaas.config`; the entry under
    /// `""` (from `sluice.sasl.plain.users.file`) serves every listener.
    pub plain_users: BTreeMap<String, BTreeMap<String, Secret>>,
    /// `connections.max.reauth.ms`: how long an authenticated SASL session
    /// lasts before the client must authenticate again (0: for ever).
    pub max_reauth_ms: i64,
    /// `connection.failed.authentication.delay.ms`: how long the answer to
    /// a failed authentication is held before the connection closes.
    pub failed_authentication_delay_ms: u64,
    /// `sasl.server.max.receive.size`: the largest SASL token accepted
    /// before authentication.
    pub sasl_max_receive_size: usize,
    /// TLS of the SSL and SASL_SSL listeners.
    pub ssl: SslConfig,
    /// The broker's own SASL logins, by listener (upper case) and
    /// mechanism: the `username`/`password` options of
    /// `listener.name.<l>.<mechanism>.sasl.jaas.config`.
    pub logins: BTreeMap<String, BTreeMap<Mechanism, Login>>,
    /// `sasl.mechanism.inter.broker.protocol`.
    pub inter_broker_mechanism: Mechanism,
    /// The login the broker's own connections to other brokers use (set
    /// by [`SecurityConfig::check`] when the inter-broker listener is
    /// SASL_PLAINTEXT).
    pub inter_broker: Option<Login>,
    /// `sasl.mechanism.controller.protocol`.
    pub controller_mechanism: Mechanism,
    /// The node's own login on a SASL controller listener (derived).
    pub controller_login: Option<Login>,
    /// ACLs.
    pub authorizer: AuthorizerConfig,
}

/// The authorizer's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizerConfig {
    /// `authorizer.class.name` names Kafka's StandardAuthorizer (or
    /// AclAuthorizer): ACLs are enforced. Unset: everything is allowed.
    pub enabled: bool,
    /// `super.users`: principals allowed everything (`User:admin;User:ops`).
    pub super_users: Vec<String>,
    /// `allow.everyone.if.no.acl.found`: a resource no ACL covers is open.
    pub allow_if_no_acl: bool,
}

/// The `authorizer.class.name` values taken: Kafka's own authorizers,
/// whose rules Sluice's follows.
pub const AUTHORIZERS: &[&str] = &[
    "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
    "kafka.security.authorizer.AclAuthorizer",
];

/// `ssl.client.auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    /// A certificate is asked for; a client without one is anonymous.
    Requested,
    /// A client without a trusted certificate is refused.
    Required,
}

/// One rule of `ssl.principal.mapping.rules`.
#[derive(Debug, Clone)]
pub enum PrincipalRule {
    /// The whole subject name.
    Default,
    /// `RULE:pattern/replacement/[LU]`: a pattern matching the whole name,
    /// the replacement (`$1`...), and an optional change of case.
    Rule {
        pattern: regex::Regex,
        replacement: String,
        case: Option<char>,
    },
}

impl PartialEq for PrincipalRule {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Default, Self::Default) => true,
            (
                Self::Rule {
                    pattern: a,
                    replacement: ra,
                    case: ca,
                },
                Self::Rule {
                    pattern: b,
                    replacement: rb,
                    case: cb,
                },
            ) => a.as_str() == b.as_str() && ra == rb && ca == cb,
            _ => false,
        }
    }
}

impl Eq for PrincipalRule {}

/// TLS settings, with Kafka's names. One key store and trust store serve
/// every TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslConfig {
    /// `ssl.keystore.location`: a PEM file with the certificate chain and
    /// the private key (`ssl.keystore.type=PEM`).
    pub keystore: Option<PathBuf>,
    /// `ssl.truststore.location`: PEM certificates of the authorities that
    /// sign client certificates.
    pub truststore: Option<PathBuf>,
    /// `ssl.client.auth`.
    pub client_auth: ClientAuth,
    /// `ssl.enabled.protocols`: TLSv1.2 and TLSv1.3.
    pub tls12: bool,
    pub tls13: bool,
    /// `ssl.principal.mapping.rules`.
    pub principal_rules: Vec<PrincipalRule>,
    /// `sluice.ssl.keystore.reload.check.ms`: how often (at most, and only
    /// when a client connects) the key store file is looked at for a new
    /// certificate.
    pub reload_check: Duration,
    /// `sluice.ssl.handshake.timeout.ms`: a TLS handshake not finished by
    /// then closes the connection.
    pub handshake_timeout: Duration,
    /// `ssl.endpoint.identification.algorithm`: `https` (the default)
    /// checks that another node's certificate names the host this broker
    /// connected to; empty checks only its signature and dates.
    pub verify_hostname: bool,
}

impl Default for SslConfig {
    fn default() -> Self {
        Self {
            keystore: None,
            truststore: None,
            client_auth: ClientAuth::None,
            tls12: true,
            tls13: true,
            principal_rules: vec![PrincipalRule::Default],
            reload_check: Duration::from_millis(10_000),
            handshake_timeout: Duration::from_millis(10_000),
            verify_hostname: true,
        }
    }
}

/// Parses `ssl.principal.mapping.rules`: `RULE:pattern/replacement/[LU]`
/// and `DEFAULT`, comma-separated (a pattern may hold commas and escaped
/// slashes).
pub fn parse_principal_rules(key: &str, value: &str) -> Result<Vec<PrincipalRule>, ConfigError> {
    /// The text up to the next unescaped `/`, unescaped, and the rest
    /// after that `/`.
    fn part(s: &str) -> Option<(String, &str)> {
        let mut out = String::new();
        let mut chars = s.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, '/')) => out.push('/'),
                    Some((_, other)) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => return None,
                },
                '/' => return Some((out, &s[i + 1..])),
                c => out.push(c),
            }
        }
        None
    }
    let mut rules = Vec::new();
    let mut rest = value.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t', '\n']);
        if rest.is_empty() {
            break;
        }
        if let Some(r) = rest.strip_prefix("DEFAULT") {
            rules.push(PrincipalRule::Default);
            rest = r;
        } else if let Some(r) = rest.strip_prefix("RULE:") {
            let bad = || invalid(key, format!("`{rest}`: expected RULE:pattern/replacement/[LU]"));
            let (pattern, r) = part(r).ok_or_else(bad)?;
            let (replacement, r) = part(r).ok_or_else(bad)?;
            let (case, r) = match r.chars().next() {
                Some(c @ ('L' | 'U')) => (Some(c), &r[1..]),
                _ => (None, r),
            };
            let pattern = regex::Regex::new(&pattern).map_err(|e| invalid(key, format!("pattern `{pattern}`: {e}")))?;
            rules.push(PrincipalRule::Rule {
                pattern,
                replacement,
                case,
            });
            rest = r;
        } else {
            return Err(invalid(key, format!("`{rest}`: each rule is RULE:... or DEFAULT")));
        }
        rest = rest.trim_start();
        if !rest.is_empty() && !rest.starts_with(',') {
            return Err(invalid(key, format!("`{rest}`: rules are separated by commas")));
        }
    }
    if rules.is_empty() {
        return Err(invalid(key, "names no rule"));
    }
    Ok(rules)
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            sasl_mechanisms: Mechanism::ALL.to_vec(),
            plain_users: BTreeMap::new(),
            max_reauth_ms: 0,
            failed_authentication_delay_ms: 100,
            sasl_max_receive_size: 524_288,
            ssl: SslConfig::default(),
            authorizer: AuthorizerConfig::default(),
            logins: BTreeMap::new(),
            inter_broker_mechanism: Mechanism::Plain,
            inter_broker: None,
            controller_mechanism: Mechanism::Plain,
            controller_login: None,
        }
    }
}

impl SecurityConfig {
    /// Checks the settings against the listeners.
    pub fn check(&self, listeners: &[Listener], controller: &ControllerListener) -> Result<(), ConfigError> {
        if let Some(inter) = listeners.first()
            && inter.protocol.tls()
            && self.ssl.truststore.is_none()
        {
            return Err(invalid(
                "ssl.truststore.location",
                format!(
                    "the inter-broker listener `{}` is {}: the brokers check each other's certificates against the trust store",
                    inter.name,
                    inter.protocol.name()
                ),
            ));
        }
        self.check_controller(controller)?;
        if let Some(inter) = listeners.first()
            && inter.protocol.sasl()
        {
            let m = self.inter_broker_mechanism;
            if !self.sasl_mechanisms.contains(&m) {
                return Err(invalid(
                    "sasl.mechanism.inter.broker.protocol",
                    format!("{} is not in sasl.enabled.mechanisms", m.name()),
                ));
            }
            if self.logins.get(&inter.name).and_then(|l| l.get(&m)).is_none() {
                return Err(invalid(
                    &format!(
                        "listener.name.{}.{}.sasl.jaas.config",
                        inter.name.to_ascii_lowercase(),
                        m.name().to_ascii_lowercase()
                    ),
                    "the inter-broker listener is SASL: give the broker's own username and password",
                ));
            }
        }
        let tls = listeners
            .iter()
            .map(|l| (&l.name, l.protocol))
            .chain([(&controller.name, controller.protocol)])
            .find(|(_, p)| p.tls());
        if let Some((name, protocol)) = tls {
            if self.ssl.keystore.is_none() {
                return Err(invalid(
                    "ssl.keystore.location",
                    format!("listener `{name}` ({}) needs a key store", protocol.name()),
                ));
            }
            if self.ssl.client_auth != ClientAuth::None && self.ssl.truststore.is_none() {
                return Err(invalid(
                    "ssl.truststore.location",
                    "ssl.client.auth requested or required needs the certificates that sign clients",
                ));
            }
            if !self.ssl.tls12 && !self.ssl.tls13 {
                return Err(invalid("ssl.enabled.protocols", "enables no protocol"));
            }
        }
        if (listeners.iter().any(|l| l.protocol.sasl()) || controller.protocol.sasl())
            && self.sasl_mechanisms.is_empty()
        {
            return Err(invalid(
                "sasl.enabled.mechanisms",
                "a SASL listener needs at least one mechanism",
            ));
        }
        if let Some(name) = self
            .plain_users
            .keys()
            .find(|n| !n.is_empty() && **n != controller.name && !listeners.iter().any(|l| &l.name == *n))
        {
            return Err(invalid(
                &format!("listener.name.{}.plain.sasl.jaas.config", name.to_ascii_lowercase()),
                "names no listener",
            ));
        }
        Ok(())
    }

    /// The controller listener's needs: PLAIN (SCRAM's credentials are
    /// metadata, which the controllers could not read before they form a
    /// quorum), enabled, and the node's own login; with TLS, the trust
    /// store that checks the voters' certificates.
    fn check_controller(&self, controller: &ControllerListener) -> Result<(), ConfigError> {
        if controller.protocol.tls() && self.ssl.truststore.is_none() {
            return Err(invalid(
                "ssl.truststore.location",
                format!(
                    "the controller listener `{}` is {}: the nodes check the voters' certificates against the trust store",
                    controller.name,
                    controller.protocol.name()
                ),
            ));
        }
        if !controller.protocol.sasl() {
            return Ok(());
        }
        let m = self.controller_mechanism;
        if m != Mechanism::Plain {
            return Err(invalid(
                "sasl.mechanism.controller.protocol",
                format!(
                    "{}: the controller listener takes PLAIN (SCRAM's credentials live in the metadata the controllers replicate)",
                    m.name()
                ),
            ));
        }
        if !self.sasl_mechanisms.contains(&m) {
            return Err(invalid(
                "sasl.mechanism.controller.protocol",
                format!("{} is not in sasl.enabled.mechanisms", m.name()),
            ));
        }
        if self.controller_login(controller).is_none() {
            return Err(invalid(
                &format!(
                    "listener.name.{}.plain.sasl.jaas.config",
                    controller.name.to_ascii_lowercase()
                ),
                "the controller listener is SASL: give the node's own username and password",
            ));
        }
        Ok(())
    }

    /// The node's own login on a SASL controller listener.
    pub fn controller_login(&self, controller: &ControllerListener) -> Option<Login> {
        if !controller.protocol.sasl() {
            return None;
        }
        self.logins
            .get(&controller.name)
            .and_then(|l| l.get(&self.controller_mechanism))
            .cloned()
    }

    /// The broker's own login on the inter-broker listener (the first).
    pub fn inter_broker_login(&self, listeners: &[Listener]) -> Option<Login> {
        let inter = listeners.first().filter(|l| l.protocol.sasl())?;
        self.logins
            .get(&inter.name)
            .and_then(|l| l.get(&self.inter_broker_mechanism))
            .cloned()
    }

    /// PLAIN's password of `user` on `listener`: the listener's own JAAS
    /// users first, then the users file.
    pub fn plain_password(&self, listener: &str, user: &str) -> Option<&str> {
        self.plain_users
            .get(listener)
            .and_then(|u| u.get(user))
            .or_else(|| self.plain_users.get("").and_then(|u| u.get(user)))
            .map(|s| s.0.as_str())
    }
}

/// Parses `sasl.enabled.mechanisms`.
pub fn parse_mechanisms(key: &str, value: &str) -> Result<Vec<Mechanism>, ConfigError> {
    let mut out = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let m = Mechanism::parse(name).ok_or_else(|| {
            invalid(
                key,
                format!("`{name}` is not supported (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)"),
            )
        })?;
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

/// The users of a Kafka JAAS line for PLAIN:
/// `org.apache.kafka.common.security.plain.PlainLoginModule required
/// user_alice="alice-secret" user_bob="bob-secret";`. The broker's own
/// `username`/`password` options (for its client side) are ignored.
pub fn parse_plain_jaas(key: &str, value: &str) -> Result<BTreeMap<String, Secret>, ConfigError> {
    let v = value.trim().trim_end_matches(';').trim();
    let rest = v
        .strip_prefix("org.apache.kafka.common.security.plain.PlainLoginModule")
        .ok_or_else(|| invalid(key, "expected org.apache.kafka.common.security.plain.PlainLoginModule"))?
        .trim_start();
    let mut rest = rest
        .strip_prefix("required")
        .ok_or_else(|| invalid(key, "expected `required` after the login module"))?;
    let mut users = BTreeMap::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| invalid(key, "expected name=\"value\" options"))?;
        let after = after
            .trim_start()
            .strip_prefix('"')
            .ok_or_else(|| invalid(key, format!("option `{}`: the value must be quoted", name.trim())))?;
        let end = after
            .find('"')
            .ok_or_else(|| invalid(key, format!("option `{}`: unterminated value", name.trim())))?;
        let value = &after[..end];
        rest = &after[end + 1..];
        if let Some(user) = name.trim().strip_prefix("user_") {
            if user.is_empty() {
                return Err(invalid(key, "an empty user name"));
            }
            users.insert(user.to_string(), Secret(value.to_string()));
        }
    }
    Ok(users)
}

/// The broker's own `username` and `password` options of a JAAS line
/// (PlainLoginModule or ScramLoginModule), if both are there.
pub fn parse_jaas_login(key: &str, value: &str, mechanism: Mechanism) -> Result<Option<Login>, ConfigError> {
    let v = value.trim().trim_end_matches(';').trim();
    let module = match mechanism {
        Mechanism::Plain => "org.apache.kafka.common.security.plain.PlainLoginModule",
        _ => "org.apache.kafka.common.security.scram.ScramLoginModule",
    };
    let rest = v
        .strip_prefix(module)
        .ok_or_else(|| invalid(key, format!("expected {module}")))?
        .trim_start();
    if !rest.starts_with("required") {
        return Err(invalid(key, "expected `required` after the login module"));
    }
    let option = |name: &str| {
        let start = rest.find(&format!("{name}=\""))? + name.len() + 2;
        let end = rest[start..].find('"')?;
        Some(rest[start..start + end].to_string())
    };
    Ok(match (option("username"), option("password")) {
        (Some(user), Some(password)) => Some(Login {
            mechanism,
            user,
            password: Secret(password),
        }),
        _ => None,
    })
}

/// Reads `sluice.sasl.plain.users.file`: one `user=password` a line;
/// blank lines and lines starting with `#` are skipped.
pub fn read_plain_users(key: &str, path: &str) -> Result<BTreeMap<String, Secret>, ConfigError> {
    let text = std::fs::read_to_string(path.trim()).map_err(|e| invalid(key, format!("{path}: {e}")))?;
    let mut users = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, password) = line
            .split_once('=')
            .ok_or_else(|| invalid(key, format!("{path} line {}: expected user=password", n + 1)))?;
        if user.trim().is_empty() {
            return Err(invalid(key, format!("{path} line {}: an empty user name", n + 1)));
        }
        users.insert(user.trim().to_string(), Secret(password.to_string()));
    }
    Ok(users)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jaas_lines_give_plain_users_and_hide_them_from_debug() {
        let users = parse_plain_jaas(
            "k",
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="x" user_admin="admin secret" user_alice="a=b";"#,
        )
        .unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users["admin"].0, "admin secret");
        assert_eq!(users["alice"].0, "a=b");
        assert!(!format!("{users:?}").contains("secret"));
        assert!(parse_plain_jaas("k", "Other required user_a=\"b\";").is_err());
        assert!(
            parse_plain_jaas(
                "k",
                "org.apache.kafka.common.security.plain.PlainLoginModule required user_a=b;"
            )
            .is_err()
        );
        assert!(
            parse_plain_jaas(
                "k",
                "org.apache.kafka.common.security.plain.PlainLoginModule required user_a=\"b"
            )
            .is_err()
        );
    }

    #[test]
    fn mechanisms_are_kafkas_names() {
        assert_eq!(
            parse_mechanisms("k", "SCRAM-SHA-512, PLAIN").unwrap(),
            vec![Mechanism::ScramSha512, Mechanism::Plain]
        );
        assert!(parse_mechanisms("k", "GSSAPI").is_err());
    }
}

#[cfg(test)]
mod tls_settings {
    use crate::config::BrokerConfig;

    #[test]
    fn the_controller_listener_is_secured_as_mapped() {
        let mut c = BrokerConfig::default();
        c.set(
            "listeners",
            "CLIENT://127.0.0.1:9092,INTERNAL://127.0.0.1:9094,CONTROLLER://127.0.0.1:9093",
        )
        .unwrap();
        c.set(
            "listener.security.protocol.map",
            "CLIENT:SASL_SSL,INTERNAL:SSL,CONTROLLER:SASL_SSL",
        )
        .unwrap();
        c.set("inter.broker.listener.name", "INTERNAL").unwrap();
        c.set("controller.listener.names", "controller").unwrap();
        c.set("ssl.keystore.location", "/etc/sluice/broker.pem").unwrap();
        c.set("ssl.truststore.location", "/etc/sluice/ca.pem").unwrap();
        let err = c.clone().finish().unwrap_err().to_string();
        assert!(err.contains("listener.name.controller.plain.sasl.jaas.config"), "{err}");
        c.set(
            "listener.name.controller.plain.sasl.jaas.config",
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="broker" password="b-secret" user_broker="b-secret";"#,
        )
        .unwrap();
        let mut done = c.clone();
        done.finish().unwrap();
        // Kafka clients are not served on the controller listener.
        assert_eq!(
            done.listeners.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
            ["INTERNAL", "CLIENT"]
        );
        assert_eq!(
            done.controller_listener.protocol,
            crate::config::listeners::SecurityProtocol::SaslSsl
        );
        assert_eq!(
            done.security.controller_login.as_ref().map(|l| l.user.as_str()),
            Some("broker")
        );
        let mut scram = c.clone();
        scram
            .set("sasl.mechanism.controller.protocol", "SCRAM-SHA-512")
            .unwrap();
        assert!(scram.finish().is_err(), "SCRAM cannot secure the controllers");
        let mut no_trust = c.clone();
        no_trust.security.ssl.truststore = None;
        assert!(no_trust.finish().is_err());
        let mut same = c.clone();
        same.set("inter.broker.listener.name", "CONTROLLER").unwrap();
        assert!(same.finish().is_err(), "the controller listener is not the brokers'");
        let mut unmapped = c;
        unmapped.set("controller.listener.names", "QUORUM").unwrap();
        assert!(unmapped.finish().is_err(), "a controller listener the map leaves out");
    }

    #[test]
    fn tls_listeners_need_their_stores() {
        let mut c = BrokerConfig::default();
        c.set("listeners", "SSL://127.0.0.1:9093").unwrap();
        c.set("ssl.keystore.location", "/etc/sluice/broker.pem").unwrap();
        assert!(
            c.clone().finish().is_err(),
            "a TLS inter-broker listener needs the trust store that checks the other brokers"
        );
        c.set("ssl.truststore.location", "/etc/sluice/ca.pem").unwrap();
        assert!(c.clone().finish().is_ok());
        let mut c = crate::config::BrokerConfig::default();
        c.set("listeners", "PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9093")
            .unwrap();
        assert!(c.clone().finish().is_err(), "no key store");
        c.set("ssl.keystore.location", "/etc/sluice/broker.pem").unwrap();
        assert!(c.clone().finish().is_ok());
        c.set("ssl.client.auth", "required").unwrap();
        assert!(c.clone().finish().is_err(), "client certificates need a trust store");
        c.set("ssl.truststore.location", "/etc/sluice/ca.pem").unwrap();
        assert!(c.clone().finish().is_ok());
        assert!(c.set("ssl.keystore.type", "JKS").is_err());
        assert!(c.set("ssl.client.auth", "maybe").is_err());
        assert!(c.set("ssl.enabled.protocols", "TLSv1.1").is_err());
        c.set("ssl.enabled.protocols", "").unwrap();
        assert!(c.finish().is_err(), "no protocol left");
    }
}

#[cfg(test)]
mod inter_broker {
    use crate::config::BrokerConfig;

    #[test]
    fn a_sasl_inter_broker_listener_needs_the_brokers_own_login() {
        let mut c = BrokerConfig::default();
        c.set("listeners", "INTERNAL://127.0.0.1:9093,CLIENT://127.0.0.1:9092")
            .unwrap();
        c.set(
            "listener.security.protocol.map",
            "INTERNAL:SASL_PLAINTEXT,CLIENT:PLAINTEXT",
        )
        .unwrap();
        c.set("inter.broker.listener.name", "INTERNAL").unwrap();
        assert!(c.clone().finish().is_err(), "no login for PLAIN");
        c.set(
            "listener.name.internal.scram-sha-512.sasl.jaas.config",
            r#"org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="pw";"#,
        )
        .unwrap();
        assert!(
            c.clone().finish().is_err(),
            "the login is for SCRAM, the mechanism is PLAIN"
        );
        c.set("sasl.mechanism.inter.broker.protocol", "SCRAM-SHA-512").unwrap();
        let mut done = c.clone();
        done.finish().unwrap();
        let login = done.security.inter_broker.unwrap();
        assert_eq!((login.user.as_str(), login.password.0.as_str()), ("broker", "pw"));
        c.set("sasl.enabled.mechanisms", "PLAIN").unwrap();
        assert!(c.clone().finish().is_err(), "the mechanism must be enabled");
        assert!(c.set("listener.name.internal.gssapi.sasl.jaas.config", "x").is_err());
    }
}
