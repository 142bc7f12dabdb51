//! Authentication settings: the SASL mechanisms, PLAIN's users, session
//! lifetimes and the delay after a failed authentication.

use std::collections::BTreeMap;

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
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            sasl_mechanisms: Mechanism::ALL.to_vec(),
            plain_users: BTreeMap::new(),
            max_reauth_ms: 0,
            failed_authentication_delay_ms: 100,
            sasl_max_receive_size: 524_288,
        }
    }
}

impl SecurityConfig {
    /// Checks the settings against the listeners.
    pub fn check(&self, listeners: &[Listener]) -> Result<(), ConfigError> {
        if let Some(l) = listeners.iter().find(|l| l.protocol.tls()) {
            return Err(invalid(
                "listener.security.protocol.map",
                format!("listener `{}`: {} is not served yet", l.name, l.protocol.name()),
            ));
        }
        if listeners.iter().any(|l| l.protocol.sasl()) && self.sasl_mechanisms.is_empty() {
            return Err(invalid(
                "sasl.enabled.mechanisms",
                "a SASL listener needs at least one mechanism",
            ));
        }
        if let Some(name) = self
            .plain_users
            .keys()
            .find(|n| !n.is_empty() && !listeners.iter().any(|l| &l.name == *n))
        {
            return Err(invalid(
                &format!("listener.name.{}.plain.sasl.jaas.config", name.to_ascii_lowercase()),
                "names no listener",
            ));
        }
        Ok(())
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
