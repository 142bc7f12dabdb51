//! One connection's SASL authentication: the mechanism chosen by
//! SaslHandshake, the tokens of SaslAuthenticate (or, after a v0
//! handshake, raw tokens), the principal it ends with and how long the
//! session lasts (KIP-368: the client authenticates again before it
//! ends).

use std::time::{Duration, Instant};

use sluice_metadata::security::{ScramMechanism, SecurityImage};

use super::scram::{ScramError, ScramServer, same};
use crate::config::security::{Mechanism, SecurityConfig};

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The mechanism is not enabled (UNSUPPORTED_SASL_MECHANISM).
    Unsupported,
    /// A handshake in the middle of an exchange, or a re-authentication
    /// with another mechanism (ILLEGAL_SASL_STATE).
    IllegalState,
}

/// What a token leads to.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// More is needed: send this challenge.
    Challenge(Vec<u8>),
    /// Authenticated: send this last message.
    Success(Vec<u8>),
    /// Refused: the message tells the client why, without saying whether
    /// the user exists.
    Failure(String),
}

#[derive(Debug)]
enum State {
    /// No mechanism chosen yet.
    Start,
    /// Chosen, no token yet.
    Chosen(Mechanism),
    Scram(Mechanism, ScramServer),
    /// The exchange ended (successfully or not).
    Done,
}

/// What a token is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub config: &'a SecurityConfig,
    /// The listener the connection came through (PLAIN's users may be
    /// per listener).
    pub listener: &'a str,
    pub security: &'a SecurityImage,
}

/// A connection's authentication state.
#[derive(Debug)]
pub struct Session {
    state: State,
    /// The last handshake was v0: tokens come without Kafka headers.
    raw: bool,
    /// The mechanism of the last successful authentication.
    mechanism: Option<Mechanism>,
    /// The user, once authenticated.
    user: Option<String>,
    /// When the session ends (`connections.max.reauth.ms`).
    expires: Option<Instant>,
}

impl Default for Session {
    fn default() -> Self {
        Self {
            state: State::Start,
            raw: false,
            mechanism: None,
            user: None,
            expires: None,
        }
    }
}

/// A salt for a user without a credential: the same on every try (so
/// asking twice does not tell), different for each user, unknown outside
/// this process.
fn fake_salt(user: &str) -> Vec<u8> {
    static KEY: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| super::scram::random_bytes(32));
    let mut salt = super::scram::hmac(ScramMechanism::Sha256, key, user.as_bytes());
    salt.truncate(16);
    salt
}

fn scram_of(m: Mechanism) -> Option<ScramMechanism> {
    match m {
        Mechanism::ScramSha256 => Some(ScramMechanism::Sha256),
        Mechanism::ScramSha512 => Some(ScramMechanism::Sha512),
        Mechanism::Plain => None,
    }
}

impl Session {
    /// The authenticated user, once the first authentication succeeded.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn authenticated(&self) -> bool {
        self.user.is_some()
    }

    /// Whether the next frame is a raw token (after a v0 handshake, until
    /// the exchange ends).
    pub fn raw_tokens(&self) -> bool {
        self.raw && !matches!(self.state, State::Start | State::Done)
    }

    /// Whether the session has ended and the client has not
    /// re-authenticated.
    pub fn expired(&self, now: Instant) -> bool {
        self.expires.is_some_and(|e| now >= e)
    }

    /// Whether an exchange is under way (between a handshake and its
    /// last token).
    pub fn exchanging(&self) -> bool {
        !matches!(self.state, State::Start | State::Done)
    }

    /// SaslHandshake: picks `mechanism` if `enabled` has it. A handshake
    /// after an authentication starts a re-authentication, with the same
    /// mechanism.
    pub fn handshake(
        &mut self,
        mechanism: &str,
        enabled: &[Mechanism],
        version: i16,
    ) -> Result<Mechanism, HandshakeError> {
        if self.exchanging() {
            return Err(HandshakeError::IllegalState);
        }
        let m = Mechanism::parse(mechanism)
            .filter(|m| enabled.contains(m))
            .ok_or(HandshakeError::Unsupported)?;
        if self.mechanism.is_some_and(|old| old != m) {
            return Err(HandshakeError::IllegalState);
        }
        self.raw = version == 0;
        self.state = State::Chosen(m);
        Ok(m)
    }

    /// One token of the exchange.
    pub fn token(&mut self, token: &[u8], ctx: Context<'_>) -> Step {
        let state = std::mem::replace(&mut self.state, State::Done);
        let (mechanism, user, out) = match state {
            State::Start | State::Done => return Step::Failure("no SASL handshake precedes this token".into()),
            State::Chosen(Mechanism::Plain) => match plain(token, ctx) {
                Ok(user) => (Mechanism::Plain, user, Vec::new()),
                Err(why) => return Step::Failure(why),
            },
            State::Chosen(m) => {
                let Some(sm) = scram_of(m) else {
                    return Step::Failure("no such mechanism".into());
                };
                let mut server = ScramServer::new(sm);
                return match server.first(token, |u| ctx.security.scram(u, sm).cloned(), fake_salt) {
                    Ok(challenge) => {
                        self.state = State::Scram(m, server);
                        Step::Challenge(challenge)
                    }
                    Err(e) => Step::Failure(scram_failure(m, &e)),
                };
            }
            State::Scram(m, mut server) => {
                let user = server.user().unwrap_or_default().to_string();
                match server.last(token) {
                    Ok(fin) => (m, user, fin),
                    Err(e) => return Step::Failure(scram_failure(m, &e)),
                }
            }
        };
        if self.user.as_ref().is_some_and(|u| *u != user) {
            return Step::Failure("a re-authentication must be as the same user".into());
        }
        self.user = Some(user);
        self.mechanism = Some(mechanism);
        self.expires = (ctx.config.max_reauth_ms > 0)
            .then(|| Instant::now() + Duration::from_millis(ctx.config.max_reauth_ms as u64));
        Step::Success(out)
    }
}

fn scram_failure(m: Mechanism, e: &ScramError) -> String {
    match e {
        ScramError::BadProof => format!(
            "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
            m.name()
        ),
        other => format!("Authentication failed: {other}"),
    }
}

/// PLAIN (RFC 4616): `authzid NUL authcid NUL passwd`.
fn plain(token: &[u8], ctx: Context<'_>) -> Result<String, String> {
    let mut parts = token.split(|&b| b == 0);
    let (Some(authzid), Some(user), Some(password), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("Authentication failed: the PLAIN message is not authzid NUL user NUL password".into());
    };
    let user =
        std::str::from_utf8(user).map_err(|_| "Authentication failed: the user name is not UTF-8".to_string())?;
    if user.is_empty() {
        return Err("Authentication failed: username not specified".into());
    }
    if !authzid.is_empty() && authzid != user.as_bytes() {
        return Err(
            "Authentication failed: Client requested an authorization id that is different from username".into(),
        );
    }
    match ctx.config.plain_password(ctx.listener, user) {
        Some(want) if same(want.as_bytes(), password) => Ok(user.to_string()),
        _ => Err("Authentication failed: Invalid username or password".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::scram::{ScramClient, credential, random_bytes, salted_password};

    fn config() -> SecurityConfig {
        let mut c = SecurityConfig::default();
        c.plain_users.insert(
            String::new(),
            [(
                "alice".to_string(),
                crate::config::security::Secret("alice-secret".into()),
            )]
            .into(),
        );
        c
    }

    #[test]
    fn plain_checks_user_password_and_authzid() {
        let config = config();
        let security = SecurityImage::default();
        let ctx = Context {
            config: &config,
            listener: "SASL_PLAINTEXT",
            security: &security,
        };
        let run = |token: &[u8]| {
            let mut s = Session::default();
            s.handshake("PLAIN", &Mechanism::ALL, 1).unwrap();
            let step = s.token(token, ctx);
            (step, s.user().map(str::to_string))
        };
        assert_eq!(
            run(b"\0alice\0alice-secret"),
            (Step::Success(Vec::new()), Some("alice".into()))
        );
        assert_eq!(run(b"alice\0alice\0alice-secret").1, Some("alice".into()));
        for bad in [
            &b"\0alice\0wrong"[..],
            b"\0bob\0alice-secret",
            b"bob\0alice\0alice-secret",
            b"alice-secret",
            b"\0\0x",
        ] {
            let (step, user) = run(bad);
            assert!(matches!(step, Step::Failure(_)), "{bad:?}");
            assert_eq!(user, None);
        }
    }

    #[test]
    fn handshakes_pick_enabled_mechanisms_and_reauthentication_keeps_the_user() {
        let config = config();
        let mut s = Session::default();
        assert_eq!(
            s.handshake("GSSAPI", &Mechanism::ALL, 1),
            Err(HandshakeError::Unsupported)
        );
        assert_eq!(
            s.handshake("PLAIN", &[Mechanism::ScramSha512], 1),
            Err(HandshakeError::Unsupported)
        );
        assert_eq!(s.handshake("PLAIN", &Mechanism::ALL, 0), Ok(Mechanism::Plain));
        assert!(s.raw_tokens());
        assert_eq!(
            s.handshake("PLAIN", &Mechanism::ALL, 0),
            Err(HandshakeError::IllegalState)
        );
        let security = SecurityImage::default();
        let ctx = Context {
            config: &config,
            listener: "X",
            security: &security,
        };
        assert!(matches!(s.token(b"\0alice\0alice-secret", ctx), Step::Success(_)));
        assert!(!s.raw_tokens());
        // Re-authentication: another mechanism is refused, another user fails.
        assert_eq!(
            s.handshake("SCRAM-SHA-512", &Mechanism::ALL, 1),
            Err(HandshakeError::IllegalState)
        );
        let mut config = config.clone();
        config
            .plain_users
            .get_mut("")
            .unwrap()
            .insert("bob".into(), crate::config::security::Secret("b".into()));
        let ctx = Context { config: &config, ..ctx };
        s.handshake("PLAIN", &Mechanism::ALL, 1).unwrap();
        assert!(matches!(s.token(b"\0bob\0b", ctx), Step::Failure(_)));
        assert_eq!(s.user(), Some("alice"));
    }

    #[test]
    fn scram_sessions_end_after_the_reauthentication_interval() {
        let mut config = config();
        config.max_reauth_ms = 1;
        let mut security = SecurityImage::default();
        let m = ScramMechanism::Sha256;
        let salt = random_bytes(16);
        security
            .scram
            .entry("carol".into())
            .or_default()
            .insert(m, credential(m, &salted_password(m, b"pw", &salt, 4096), &salt, 4096));
        let ctx = Context {
            config: &config,
            listener: "X",
            security: &security,
        };
        let mut s = Session::default();
        s.handshake("SCRAM-SHA-256", &Mechanism::ALL, 1).unwrap();
        let mut client = ScramClient::new(m, "carol", "pw");
        let Step::Challenge(first) = s.token(&client.first(), ctx) else {
            panic!()
        };
        let last = client.last(&first).unwrap();
        let Step::Success(fin) = s.token(&last, ctx) else {
            panic!()
        };
        client.verify(&fin).unwrap();
        assert_eq!(s.user(), Some("carol"));
        std::thread::sleep(Duration::from_millis(5));
        assert!(s.expired(Instant::now()));
    }
}
