//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks
//! them: the broker's side of the exchange, the client's (for the CLI and
//! tests), and the derivations a client makes from a password. Pure
//! functions of the credentials this crate stores.
//!
//! The broker stores only the salt, the iteration count, StoredKey and
//! ServerKey; a client proves it knows the password without sending it.
//! An unknown user gets a made-up salt and fails at the proof, like a
//! wrong password, so the exchange does not tell which users exist.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{EagerHash, Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};

use crate::security::{ScramCredential, ScramMechanism};

fn hmac_with<D: EagerHash>(key: &[u8], data: &[u8]) -> Vec<u8>
where
    Hmac<D>: KeyInit + Mac,
{
    let Ok(mut mac) = <Hmac<D> as KeyInit>::new_from_slice(key) else {
        unreachable!("HMAC takes keys of any length")
    };
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// HMAC of `data` under `key` with the mechanism's hash.
pub fn hmac(m: ScramMechanism, key: &[u8], data: &[u8]) -> Vec<u8> {
    match m {
        ScramMechanism::Sha256 => hmac_with::<Sha256>(key, data),
        ScramMechanism::Sha512 => hmac_with::<Sha512>(key, data),
    }
}

/// The mechanism's hash of `data`.
pub fn hash(m: ScramMechanism, data: &[u8]) -> Vec<u8> {
    match m {
        ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
        ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
    }
}

/// SaltedPassword: PBKDF2 of the password with the mechanism's HMAC.
pub fn salted_password(m: ScramMechanism, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    match m {
        ScramMechanism::Sha256 => {
            let mut out = vec![0u8; 32];
            pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
            out
        }
        ScramMechanism::Sha512 => {
            let mut out = vec![0u8; 64];
            pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out);
            out
        }
    }
}

/// The credential stored for a salted password (what
/// AlterUserScramCredentials carries).
pub fn credential(m: ScramMechanism, salted: &[u8], salt: &[u8], iterations: i32) -> ScramCredential {
    let client_key = hmac(m, salted, b"Client Key");
    ScramCredential {
        salt: salt.to_vec(),
        stored_key: hash(m, &client_key),
        server_key: hmac(m, salted, b"Server Key"),
        iterations,
    }
}

/// `len` random bytes from the operating system.
pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    if let Err(e) = getrandom::fill(&mut out) {
        // Without randomness no nonce or salt is safe to hand out.
        panic!("the operating system gave no random bytes: {e}");
    }
    out
}

/// A printable nonce (RFC 5802: any printable ASCII but `,`).
fn nonce() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(24))
}

/// Compares without stopping at the first difference.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why an exchange failed; the client is told only that it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("invalid credentials")]
    BadProof,
    #[error("channel binding is not supported")]
    ChannelBinding,
    #[error("SCRAM extensions are not supported: {0}")]
    Extension(String),
}

/// The server's side of one exchange.
#[derive(Debug)]
pub enum ScramServer {
    /// Waiting for client-first-message.
    Start {
        mechanism: ScramMechanism,
    },
    /// Waiting for client-final-message.
    SentFirst {
        mechanism: ScramMechanism,
        user: String,
        /// The user's credential; `None` for an unknown user (the
        /// exchange goes on with a made-up salt and fails at the proof).
        credential: Option<ScramCredential>,
        nonce: String,
        client_first_bare: String,
        server_first: String,
    },
    Done,
}

/// The value of attribute `name` (`n=...`) at the start of `part`.
fn attr(part: Option<&str>, name: char) -> Result<&str, ScramError> {
    part.and_then(|p| p.strip_prefix(name))
        .and_then(|p| p.strip_prefix('='))
        .ok_or(ScramError::Malformed("an attribute is missing or out of order"))
}

/// A SCRAM user name with `=2C` and `=3D` decoded.
fn decode_name(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 3)
            .ok_or(ScramError::Malformed("bad escape in the user name"))?;
        out.push(match code {
            "2C" => ',',
            "3D" => '=',
            _ => return Err(ScramError::Malformed("bad escape in the user name")),
        });
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

impl ScramServer {
    pub fn new(mechanism: ScramMechanism) -> Self {
        Self::Start { mechanism }
    }

    /// The user named in the client's first message, once it came.
    pub fn user(&self) -> Option<&str> {
        match self {
            Self::SentFirst { user, .. } => Some(user),
            _ => None,
        }
    }

    /// Takes client-first-message; answers server-first-message.
    /// `lookup` finds the user's credential; `fake_salt` gives the salt
    /// shown for a user without one.
    pub fn first(
        &mut self,
        message: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
        fake_salt: impl FnOnce(&str) -> Vec<u8>,
    ) -> Result<Vec<u8>, ScramError> {
        let Self::Start { mechanism } = *self else {
            return Err(ScramError::Malformed("client-first-message out of turn"));
        };
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        // gs2-header: "n," or "y," (no channel binding), an optional
        // authzid, then ",".
        let (cbind, rest) = text.split_once(',').ok_or(ScramError::Malformed("no GS2 header"))?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("bad GS2 header")),
        }
        let (_authzid, bare) = rest.split_once(',').ok_or(ScramError::Malformed("no GS2 header"))?;
        let mut parts = bare.split(',');
        let first = parts.next();
        if first.is_some_and(|p| p.starts_with("m=")) {
            return Err(ScramError::Extension("m".into()));
        }
        let user = decode_name(attr(first, 'n')?)?;
        let client_nonce = attr(parts.next(), 'r')?;
        if client_nonce.is_empty() {
            return Err(ScramError::Malformed("empty nonce"));
        }
        // Kafka's extensions (`tokenauth=true` for delegation tokens) are
        // not served.
        if let Some(ext) = parts.next() {
            return Err(ScramError::Extension(ext.split('=').next().unwrap_or("").to_string()));
        }
        let credential = lookup(&user);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (fake_salt(&user), ScramMechanism::MIN_ITERATIONS),
        };
        let nonce = format!("{client_nonce}{}", nonce());
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(salt));
        let out = server_first.clone().into_bytes();
        *self = Self::SentFirst {
            mechanism,
            user,
            credential,
            nonce,
            client_first_bare: bare.to_string(),
            server_first,
        };
        Ok(out)
    }

    /// Takes client-final-message; answers server-final-message when the
    /// proof holds.
    pub fn last(&mut self, message: &[u8]) -> Result<Vec<u8>, ScramError> {
        let Self::SentFirst {
            mechanism,
            credential,
            nonce,
            client_first_bare,
            server_first,
            ..
        } = std::mem::replace(self, Self::Done)
        else {
            return Err(ScramError::Malformed("client-final-message out of turn"));
        };
        let text = std::str::from_utf8(message).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let (without_proof, proof) = text.rsplit_once(",p=").ok_or(ScramError::Malformed("no proof"))?;
        let mut parts = without_proof.split(',');
        let binding = attr(parts.next(), 'c')?;
        let binding = B64
            .decode(binding)
            .map_err(|_| ScramError::Malformed("bad channel binding"))?;
        // The GS2 header again, without channel data.
        if !(binding.starts_with(b"n,") || binding.starts_with(b"y,")) {
            return Err(ScramError::ChannelBinding);
        }
        // As Kafka checks it: the client's final nonce must end with the
        // one the server sent (librdkafka before 2.1 sends its own nonce
        // in front of it a second time).
        if !attr(parts.next(), 'r')?.ends_with(&nonce) {
            return Err(ScramError::Malformed("the nonce changed"));
        }
        let proof = B64.decode(proof).map_err(|_| ScramError::Malformed("bad proof"))?;
        let Some(credential) = credential else {
            return Err(ScramError::BadProof);
        };
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(mechanism, &credential.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(ScramError::BadProof);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        if !same(&hash(mechanism, &client_key), &credential.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(mechanism, &credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// The client's side, for the CLI and tests.
#[derive(Debug)]
pub struct ScramClient {
    mechanism: ScramMechanism,
    user: String,
    password: String,
    nonce: String,
    /// What the server must sign, once the final message is made.
    expected: Option<Vec<u8>>,
}

impl ScramClient {
    pub fn new(mechanism: ScramMechanism, user: &str, password: &str) -> Self {
        Self {
            mechanism,
            user: user.replace('=', "=3D").replace(',', "=2C"),
            password: password.to_string(),
            nonce: nonce(),
            expected: None,
        }
    }

    fn first_bare(&self) -> String {
        format!("n={},r={}", self.user, self.nonce)
    }

    pub fn first(&self) -> Vec<u8> {
        format!("n,,{}", self.first_bare()).into_bytes()
    }

    /// Answers server-first-message with client-final-message.
    pub fn last(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let text = std::str::from_utf8(server_first).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let mut parts = text.split(',');
        let nonce = attr(parts.next(), 'r')?;
        if !nonce.starts_with(&self.nonce) {
            return Err(ScramError::Malformed("the server's nonce does not extend ours"));
        }
        let salt = B64
            .decode(attr(parts.next(), 's')?)
            .map_err(|_| ScramError::Malformed("bad salt"))?;
        let iterations: u32 = attr(parts.next(), 'i')?
            .parse()
            .map_err(|_| ScramError::Malformed("bad iteration count"))?;
        let m = self.mechanism;
        let salted = salted_password(m, self.password.as_bytes(), &salt, iterations);
        let client_key = hmac(m, &salted, b"Client Key");
        let stored_key = hash(m, &client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{text},{without_proof}", self.first_bare());
        let signature = hmac(m, &stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(k, s)| k ^ s).collect();
        let server_key = hmac(m, &salted, b"Server Key");
        self.expected = Some(hmac(m, &server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks server-final-message.
    pub fn verify(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let text = std::str::from_utf8(server_final).map_err(|_| ScramError::Malformed("not UTF-8"))?;
        let v = attr(Some(text), 'v')?;
        let got = B64
            .decode(v)
            .map_err(|_| ScramError::Malformed("bad server signature"))?;
        match &self.expected {
            Some(want) if same(want, &got) => Ok(()),
            _ => Err(ScramError::BadProof),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(m: ScramMechanism, password: &str) -> ScramCredential {
        let salt = random_bytes(16);
        credential(m, &salted_password(m, password.as_bytes(), &salt, 4096), &salt, 4096)
    }

    fn exchange(m: ScramMechanism, known: Option<ScramCredential>, password: &str) -> Result<(), ScramError> {
        let mut client = ScramClient::new(m, "al,i=ce", password);
        let mut server = ScramServer::new(m);
        let first = server.first(
            &client.first(),
            |u| {
                assert_eq!(u, "al,i=ce");
                known
            },
            |_| vec![7; 16],
        )?;
        let last = client.last(&first)?;
        let fin = server.last(&last)?;
        client.verify(&fin)
    }

    #[test]
    fn a_right_password_passes_and_a_wrong_one_fails() {
        for m in ScramMechanism::ALL {
            let c = stored(m, "pencil");
            assert_eq!(exchange(m, Some(c.clone()), "pencil"), Ok(()));
            assert_eq!(exchange(m, Some(c), "pen"), Err(ScramError::BadProof));
            assert_eq!(exchange(m, None, "pencil"), Err(ScramError::BadProof));
        }
    }

    /// RFC 7677's example exchange for SCRAM-SHA-256.
    #[test]
    fn rfc_7677_example() {
        let m = ScramMechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let c = credential(m, &salted_password(m, b"pencil", &salt, 4096), &salt, 4096);
        let mut server = ScramServer::Start { mechanism: m };
        let first = server
            .first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO", |_| Some(c), |_| Vec::new())
            .unwrap();
        let first = String::from_utf8(first).unwrap();
        // Our nonce differs from the RFC's; rebuild the exchange with it.
        let nonce = first.split(',').next().unwrap().trim_start_matches("r=").to_string();
        assert!(nonce.starts_with("rOprNGfwEbeRWgbNEkqO"));
        assert!(first.ends_with(",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"), "{first}");
        let mut client = ScramClient {
            mechanism: m,
            user: "user".into(),
            password: "pencil".into(),
            nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            expected: None,
        };
        let last = client.last(first.as_bytes()).unwrap();
        let fin = server.last(&last).unwrap();
        client.verify(&fin).unwrap();
        // With the RFC's own nonces, the RFC's proof.
        let mut client = ScramClient {
            nonce: "rOprNGfwEbeRWgbNEkqO".into(),
            ..client
        };
        let last = client
            .last(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
    }

    #[test]
    fn malformed_messages_are_refused() {
        let m = ScramMechanism::Sha512;
        for bad in [
            &b"n=user,r=abc"[..],
            b"p=tls-unique,,n=user,r=abc",
            b"n,,r=abc,n=user",
            b"n,,n=user,r=",
            b"n,,n=user,r=abc,tokenauth=true",
            b"n,,m=ext,n=user,r=abc",
            b"n,,n=us=ZZer,r=abc",
            b"\xff",
        ] {
            let mut s = ScramServer::new(m);
            assert!(
                s.first(bad, |_| None, |_| vec![1]).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut s = ScramServer::new(m);
        s.first(b"n,,n=user,r=abc", |_| None, |_| vec![1]).unwrap();
        assert!(s.last(b"c=biws,r=other,p=AAAA").is_err());
        assert!(
            s.last(b"c=biws,r=abc,p=AAAA").is_err(),
            "a finished exchange takes nothing more"
        );
    }
}
